//! Turning granted capabilities into WASI contexts, default deny.
//!
//! A guest gets no environment, no directories and no network unless the
//! [`Capabilities`] grant them. Outbound HTTP goes through [`OutboundPolicy`], which
//! answers a denied request with `HTTP-request-denied` in the guest; sockets go
//! through a `socket_addr_check` built from the same patterns.

use std::sync::Arc;

use wasmtime_wasi::filesystem::WasiFilesystemCtx;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_http::{RequestOptions, WasiHttpHooks};

use crate::config::{Capabilities, OutboundPattern};

/// Errors of preparing a guest's context.
#[derive(Debug, thiserror::Error)]
pub enum WasiError {
    /// A granted directory could not be opened.
    #[error("failed to open directory `{}` for the guest", path.display())]
    Preopen {
        /// The host path.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: wasmtime::Error,
    },
}

/// The capabilities of an app, prepared once and applied to every instance.
///
/// The granted directories are opened once, here, and every instance's
/// context shares those descriptors (wasmtime-wasi keeps a preopen as an
/// `Arc` of its descriptor, and every path under it is resolved relative to
/// it, with no state of its own: a directory listing opens a descriptor of
/// its own). Opening them per instance cost two open files per live instance
/// of a container (its rootfs and `/dev/shm`), so the open-file limit, not
/// memory, bounded the instances alive at once; and a system call each.
#[derive(Clone)]
pub struct Grants {
    caps: Arc<Capabilities>,
    env: Arc<[(String, String)]>,
    dirs: WasiFilesystemCtx,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl Grants {
    /// Prepares `caps`, opening its directories.
    pub fn new(caps: &Capabilities) -> Result<Self, WasiError> {
        let mut builder = WasiCtxBuilder::new();
        for dir in &caps.dirs {
            let perms = if dir.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|source| WasiError::Preopen {
                    path: dir.host.clone(),
                    source,
                })?;
        }
        let dirs = builder.build().filesystem().clone();
        Ok(Self {
            env: caps
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            caps: Arc::new(caps.clone()),
            dirs,
        })
    }

    /// The granted environment.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The outbound policy for wasi:http.
    pub fn outbound(&self) -> OutboundPolicy {
        OutboundPolicy {
            patterns: self.caps.clone(),
        }
    }

    /// Gives `wasi`, built from a builder that [`apply`](Self::apply) prepared,
    /// the granted directories: the descriptors opened once, shared. This
    /// replaces the context's whole filesystem part, so a builder's
    /// `allow_blocking_current_thread` (which wisp leaves at its default) is
    /// reset with it.
    pub fn give_dirs(&self, wasi: &mut WasiCtx) {
        *wasi.filesystem() = self.dirs.clone();
    }

    /// Applies env and network rules to `builder`; the directories come with
    /// [`give_dirs`](Self::give_dirs) once it is built. Stdio and args are the
    /// caller's business.
    pub fn apply(&self, builder: &mut WasiCtxBuilder) {
        builder.envs(&self.env);
        let patterns = &self.caps.allow_outbound;
        let socket_patterns: Vec<OutboundPattern> = patterns
            .iter()
            .filter(|p| matches!(p.scheme(), None | Some("tcp" | "udp")))
            .cloned()
            .collect();
        if !socket_patterns.is_empty() {
            let tcp = socket_patterns
                .iter()
                .any(|p| matches!(p.scheme(), None | Some("tcp")));
            let udp = socket_patterns
                .iter()
                .any(|p| matches!(p.scheme(), None | Some("udp")));
            builder
                .allow_tcp(tcp)
                .allow_udp(udp)
                .allow_ip_name_lookup(true);
            let socket_patterns = Arc::new(socket_patterns);
            builder.socket_addr_check(move |addr, usage| {
                let allowed = socket_allowed(&socket_patterns, addr, usage);
                Box::pin(async move { allowed })
            });
        }
    }
}

/// Whether a wasi:sockets use of `addr` is allowed by `patterns` (`tcp://`,
/// `udp://` or `*://` patterns with IP hosts).
pub fn socket_allowed(
    patterns: &[OutboundPattern],
    addr: std::net::SocketAddr,
    usage: SocketAddrUse,
) -> bool {
    let (scheme, bind) = match usage {
        SocketAddrUse::TcpBind => ("tcp", true),
        SocketAddrUse::UdpBind => ("udp", true),
        SocketAddrUse::UdpSend => ("udp", false),
        _ => ("tcp", false),
    };
    // An ephemeral bind (port 0) is what every connect does implicitly: harmless
    // on its own, and the connect itself is checked.
    let host = addr.ip().to_string();
    (bind && addr.port() == 0)
        || patterns
            .iter()
            .any(|p| p.allows(scheme, &host, addr.port()))
}

/// wasi:http hooks that refuse requests outside the allow-list.
pub struct OutboundPolicy {
    patterns: Arc<Capabilities>,
}

impl OutboundPolicy {
    /// Whether `uri` may be requested.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("http");
        let Some(host) = uri.host() else {
            return false;
        };
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        self.patterns
            .allow_outbound
            .iter()
            .filter(|p| matches!(p.scheme(), None | Some("http" | "https")))
            .any(|p| p.allows(scheme, host, port))
    }
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let allowed = self.allows(request.uri());
        if !allowed {
            tracing::info!(uri = %request.uri(), "outbound request denied: not in allow-outbound");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_policy_checks_scheme_host_port() {
        let mut caps = Capabilities::default();
        let policy = Grants::new(&caps).unwrap().outbound();
        assert!(
            !policy.allows(&"http://127.0.0.1:8080/".parse().unwrap()),
            "default deny"
        );
        caps.allow_outbound = vec![
            "http://127.0.0.1:8080".parse().unwrap(),
            "tcp://127.0.0.1:*".parse().unwrap(),
        ];
        let policy = Grants::new(&caps).unwrap().outbound();
        assert!(policy.allows(&"http://127.0.0.1:8080/x?y".parse().unwrap()));
        assert!(!policy.allows(&"http://127.0.0.1:8081/".parse().unwrap()));
        assert!(!policy.allows(&"https://127.0.0.1:8080/".parse().unwrap()));
        assert!(!policy.allows(&"http://localhost:8080/".parse().unwrap()));
        assert!(!policy.allows(&"/relative".parse().unwrap()));
    }

    #[test]
    fn sockets_follow_tcp_and_udp_patterns() {
        let p: Vec<OutboundPattern> = vec![
            "tcp://127.0.0.1:5432".parse().unwrap(),
            "udp://10.0.0.53:53".parse().unwrap(),
        ];
        let a = |s: &str| s.parse().unwrap();
        assert!(socket_allowed(
            &p,
            a("127.0.0.1:5432"),
            SocketAddrUse::TcpConnect
        ));
        assert!(!socket_allowed(
            &p,
            a("127.0.0.1:5433"),
            SocketAddrUse::TcpConnect
        ));
        assert!(!socket_allowed(
            &p,
            a("127.0.0.2:5432"),
            SocketAddrUse::TcpConnect
        ));
        assert!(!socket_allowed(
            &p,
            a("127.0.0.1:5432"),
            SocketAddrUse::UdpSend
        ));
        assert!(socket_allowed(
            &p,
            a("10.0.0.53:53"),
            SocketAddrUse::UdpSend
        ));
        assert!(
            socket_allowed(&p, a("0.0.0.0:0"), SocketAddrUse::TcpBind),
            "implicit bind of a connect"
        );
        assert!(
            !socket_allowed(&p, a("0.0.0.0:8080"), SocketAddrUse::TcpBind),
            "listening needs a grant"
        );
        assert!(
            !socket_allowed(&[], a("127.0.0.1:5432"), SocketAddrUse::TcpConnect),
            "default deny"
        );
    }
}
