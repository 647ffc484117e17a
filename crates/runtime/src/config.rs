//! The one configuration model of a Wisp app.
//!
//! Every front door fills [`Config`]: the CLI's flags (with `WISP_*` environment
//! fallbacks), an optional TOML file, and later the shim (OCI spec + annotations) and
//! the operator (CRD spec). Values are parsed strictly: a value that does not parse is
//! an error naming the value, never a silent default. [`Config::validate`] checks the
//! combinations and the host paths before anything is compiled or bound.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// Default address `wisp serve` listens on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
/// Default cap on concurrently open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on requests executing at once (each holds one instance).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: u32 = 1_000;
/// How long in-flight requests may run after SIGTERM/SIGINT before the server exits.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// A request's header block must arrive within this (nginx's
/// `client_header_timeout` is 60 s, Go's servers often use 10 to 30 s).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default listen backlog: large enough that a burst of connects is queued by the
/// kernel rather than refused (the kernel clamps it to `net.core.somaxconn`).
pub const DEFAULT_BACKLOG: u32 = 4096;
/// Default concurrent streams per HTTP/2 connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 1000;
/// Default linear-memory reservation per pooled memory slot. 4 GiB lets Cranelift
/// elide bounds checks for 32-bit memories (the guard pages do the checking).
pub const DEFAULT_MEMORY_RESERVATION: u64 = 4 << 30;
/// Default bytes of each pooled memory and table kept resident between instances.
/// Resetting them with memset is cheaper than returning them to the kernel, whose
/// `madvise` costs a TLB shootdown on every core (measured: 64KiB gave 10k req/s,
/// 512KiB 15k req/s for a small C wasi:http app on 2 cores).
pub const DEFAULT_KEEP_RESIDENT: u64 = 512 << 10;
/// Default guard region after each linear memory.
pub const DEFAULT_MEMORY_GUARD: u64 = 32 << 20;
/// Address space the instance pool may reserve: half of x86-64's 128TiB.
pub const MAX_POOL_ADDRESS_SPACE: u64 = 64 << 40;

/// A whole app configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// What the guest may touch.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Per-instance resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// HTTP serving settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Engine and code-cache settings.
    #[serde(default)]
    pub engine: EngineConfig,
}

/// Capabilities granted to a guest. Everything not listed is denied.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Capabilities {
    /// Host directories made visible to the guest.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Environment variables given to the guest (nothing is inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Outbound destinations the guest may reach (wasi:http and wasi:sockets).
    #[serde(default)]
    pub allow_outbound: Vec<OutboundPattern>,
}

/// Limits applied to every instance.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// Cap on the linear memory of each instance; growing past it traps.
    pub max_memory: Option<ByteSize>,
    /// Wall-clock budget of one request (serve) or of the whole run (run).
    pub timeout: Option<HumanDuration>,
}

/// HTTP serving settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    /// Socket address to listen on.
    pub listen: SocketAddr,
    /// Connections held open at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Requests executing at once; further ones queue until `queue_timeout`.
    pub max_concurrent_requests: u32,
    /// How long a request may wait for an execution slot before it is answered
    /// `503 Service Unavailable` with `Retry-After`.
    pub queue_timeout: HumanDuration,
    /// How long in-flight requests may finish after SIGTERM/SIGINT.
    pub drain_timeout: HumanDuration,
    /// Listen backlog.
    pub backlog: u32,
    /// Requests one HTTP/2 connection may have in flight at once (h2c with
    /// prior knowledge; HTTP/1.1 carries one at a time).
    pub max_streams_per_connection: u32,
    /// How long a client has to send a request's whole header block; past
    /// it the connection is closed. Without it a client that sends a few
    /// bytes and stalls holds a connection slot forever (slowloris).
    pub header_read_timeout: HumanDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            queue_timeout: HumanDuration(Duration::from_secs(10)),
            drain_timeout: HumanDuration(DEFAULT_DRAIN_TIMEOUT),
            backlog: DEFAULT_BACKLOG,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            header_read_timeout: HumanDuration(DEFAULT_HEADER_READ_TIMEOUT),
        }
    }
}

/// Engine settings: compiled-code cache and the pooling allocator.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EngineConfig {
    /// Where compiled code is cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Pooling allocator sizes; used by `serve` (a single `run` allocates on demand).
    pub pooling: PoolingConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            pooling: PoolingConfig::default(),
        }
    }
}

/// The pooling allocator's sizes. Each live request holds one instance slot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PoolingConfig {
    /// Component (or module) instances alive at once.
    pub total_instances: u32,
    /// Address space reserved per linear memory.
    pub memory_reservation: ByteSize,
    /// Guard region after each linear memory.
    pub memory_guard: ByteSize,
    /// Bytes of each memory slot kept resident between instances instead of being
    /// returned to the kernel (saves a `madvise` and page faults per request).
    pub keep_resident: ByteSize,
    /// How a new instance's linear memory gets the module's data.
    pub memory_init: MemoryInit,
}

/// How a new instance's linear memory gets the module's initial data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryInit {
    /// Map the module's memory image copy-on-write into the slot: nothing is
    /// copied, however large the image; a slot reused by the same module
    /// keeps the mapping. The default.
    #[default]
    Cow,
    /// Copy the data segments into the slot on each instantiation. For a
    /// small image on fresh slots (a burst) it is cheaper: no `mmap` per
    /// slot, and no copy-on-write faults, each of which flushes the TLBs of
    /// every core running the process (a 30,000-request burst took 22 % less
    /// CPU). A large image (an interpreter's heap snapshot) is copied whole
    /// every time: keep `cow` there.
    Copy,
}

impl std::str::FromStr for MemoryInit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cow" => Ok(Self::Cow),
            "copy" => Ok(Self::Copy),
            _ => Err(format!(
                "unknown memory init `{s}`: expected `cow` or `copy`"
            )),
        }
    }
}

impl Default for PoolingConfig {
    fn default() -> Self {
        Self {
            total_instances: DEFAULT_MAX_CONCURRENT_REQUESTS,
            memory_reservation: ByteSize(DEFAULT_MEMORY_RESERVATION),
            memory_guard: ByteSize(DEFAULT_MEMORY_GUARD),
            keep_resident: ByteSize(DEFAULT_KEEP_RESIDENT),
            memory_init: MemoryInit::default(),
        }
    }
}

/// The per-user cache directory: `$XDG_CACHE_HOME/wisp`,
/// else `$HOME/.cache/wisp`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("wisp"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".cache").join("wisp"))
}

/// Errors of parsing or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A `--dir` value that does not parse.
    #[error("invalid directory grant `{0}`: expected HOST[::GUEST][:ro]")]
    DirSyntax(String),
    /// A `--dir` whose host side cannot be used.
    #[error("unusable directory `{}`: {reason}", path.display())]
    DirUnusable {
        /// The host path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A `--env` value that does not parse.
    #[error("invalid environment variable `{0}`: expected KEY=VALUE with a non-empty KEY")]
    EnvSyntax(String),
    /// An outbound pattern that does not parse.
    #[error("invalid outbound pattern `{pattern}`: {reason}")]
    Outbound {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A size that does not parse.
    #[error(
        "invalid size `{0}`: expected a number with an optional unit (B, K, KiB, M, MiB, G, GiB)"
    )]
    Size(String),
    /// A duration that does not parse.
    #[error("invalid duration `{0}`: expected a number with a unit (ms, s, m, h), e.g. `500ms`")]
    Duration(String),
    /// A combination or value out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The TOML file cannot be read.
    #[error("failed to read config file `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML file does not parse.
    #[error("invalid config file `{}`", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: toml::de::Error,
    },
}

impl Config {
    /// Reads a TOML config file. Unknown keys are errors.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|source| ConfigError::Toml {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks value ranges, combinations and host paths. Call before compiling or
    /// binding anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for dir in &self.capabilities.dirs {
            dir.check_host()?;
        }
        if self.server.max_concurrent_requests == 0 {
            return Err(ConfigError::Invalid(
                "max-concurrent-requests must be at least 1".into(),
            ));
        }
        if self.server.max_streams_per_connection == 0 {
            return Err(ConfigError::Invalid(
                "max-streams-per-connection must be at least 1".into(),
            ));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max-connections must be at least 1".into(),
            ));
        }
        if self.server.header_read_timeout.0.is_zero() {
            return Err(ConfigError::Invalid(
                "header-read-timeout must be greater than 0".into(),
            ));
        }
        if self.engine.pooling.total_instances == 0 {
            return Err(ConfigError::Invalid(
                "pooling total-instances must be at least 1".into(),
            ));
        }
        if self.engine.pooling.total_instances < self.server.max_concurrent_requests {
            return Err(ConfigError::Invalid(format!(
                "pooling total-instances ({}) is smaller than max-concurrent-requests ({}): \
                 every executing request needs an instance slot",
                self.engine.pooling.total_instances, self.server.max_concurrent_requests
            )));
        }
        // The pool reserves its slots' address space up front: two linear
        // memories per instance (see engine.rs), each its reservation plus guard.
        // x86-64 user space is 128TiB; leave half for everything else.
        let p = &self.engine.pooling;
        let slot = p.memory_reservation.0.saturating_add(p.memory_guard.0);
        let total = slot.saturating_mul(2 * u64::from(p.total_instances));
        if total > MAX_POOL_ADDRESS_SPACE {
            return Err(ConfigError::Invalid(format!(
                "pooling total-instances ({}) x 2 memories x (memory-reservation {} + memory-guard {}) \
                 needs {} of address space, more than the {} a pool may take: lower \
                 memory-reservation (e.g. 16MiB, which adds bounds checks) or total-instances",
                p.total_instances,
                p.memory_reservation,
                p.memory_guard,
                ByteSize(total),
                ByteSize(MAX_POOL_ADDRESS_SPACE)
            )));
        }
        if let Some(max) = self.limits.max_memory {
            if max.0 < 64 << 10 {
                return Err(ConfigError::Invalid(format!(
                    "max-memory {max} is below one Wasm page (64KiB)"
                )));
            }
            if max.0 > 4 << 30 {
                return Err(ConfigError::Invalid(format!(
                    "max-memory {max} exceeds the 4GiB a 32-bit linear memory can address"
                )));
            }
        }
        if let Some(t) = self.limits.timeout
            && t.0.is_zero()
        {
            return Err(ConfigError::Invalid(
                "timeout must be greater than 0".into(),
            ));
        }
        Ok(())
    }
}

/// A host directory granted to the guest: `HOST[::GUEST][:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// Directory on the host.
    pub host: PathBuf,
    /// Path the guest sees.
    pub guest: String,
    /// Whether the guest may only read.
    pub read_only: bool,
}

impl DirGrant {
    fn check_host(&self) -> Result<(), ConfigError> {
        let unusable = |reason: String| ConfigError::DirUnusable {
            path: self.host.clone(),
            reason,
        };
        let meta = std::fs::metadata(&self.host).map_err(|e| unusable(e.to_string()))?;
        if !meta.is_dir() {
            return Err(unusable("not a directory".into()));
        }
        std::fs::read_dir(&self.host).map_err(|e| unusable(e.to_string()))?;
        Ok(())
    }
}

impl FromStr for DirGrant {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (rest, read_only) = match s.strip_suffix(":ro") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let (host, guest) = match rest.split_once("::") {
            Some((host, guest)) => (host, guest),
            None => (rest, rest),
        };
        if host.is_empty() || guest.is_empty() {
            return Err(ConfigError::DirSyntax(s.to_owned()));
        }
        Ok(Self {
            host: PathBuf::from(host),
            guest: guest.to_owned(),
            read_only,
        })
    }
}

impl<'de> Deserialize<'de> for DirGrant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses `KEY=VALUE`.
pub fn parse_env_pair(s: &str) -> Result<(String, String), ConfigError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(ConfigError::EnvSyntax(s.to_owned())),
    }
}

/// An allowed outbound destination: `SCHEME://HOST[:PORT]`, where each part may be
/// `*`, and HOST may be `*.domain` (any subdomain). A missing port means the scheme's
/// default (80 for http, 443 for https); `*` alone allows everything.
///
/// Schemes: `http` and `https` gate wasi:http requests; `tcp` and `udp` gate
/// wasi:sockets; `*` gates all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundPattern {
    raw: String,
    scheme: Option<String>,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    Suffix(String),
}

impl OutboundPattern {
    /// Whether a request to `scheme://host:port` is allowed by this pattern.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if let Some(s) = &self.scheme
            && !s.eq_ignore_ascii_case(scheme)
        {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Suffix(sfx) => {
                host.len() > sfx.len()
                    && host[host.len() - sfx.len()..].eq_ignore_ascii_case(sfx)
                    && host.as_bytes()[host.len() - sfx.len() - 1] == b'.'
            }
        };
        if !host_ok {
            return false;
        }
        match self.port {
            None => true,
            Some(p) => p == port,
        }
    }

    /// The scheme this pattern is limited to, if any.
    pub fn scheme(&self) -> Option<&str> {
        self.scheme.as_deref()
    }
}

impl fmt::Display for OutboundPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for OutboundPattern {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ConfigError::Outbound {
            pattern: s.to_owned(),
            reason,
        };
        if s == "*" {
            return Ok(Self {
                raw: s.to_owned(),
                scheme: None,
                host: HostPattern::Any,
                port: None,
            });
        }
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| err("expected SCHEME://HOST[:PORT]"))?;
        let scheme = match scheme {
            "*" => None,
            "http" | "https" | "tcp" | "udp" => Some(scheme.to_owned()),
            _ => return Err(err("scheme must be http, https, tcp, udp or *")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(err("paths are not supported, only SCHEME://HOST[:PORT]"));
        }
        // Split the port off, minding bracketed IPv6 literals.
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| err("unclosed `[`"))?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':').ok_or_else(|| err("bad port"))?)),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| err("port must be 0-65535 or *"))?,
            ),
            None => match scheme.as_deref() {
                Some("http") => Some(80),
                Some("https") => Some(443),
                Some(_) => return Err(err("tcp and udp patterns need a port (or :*)")),
                None => None,
            },
        };
        let host = match host {
            "" => return Err(err("empty host")),
            "*" => HostPattern::Any,
            h if h.starts_with("*.") && h.len() > 2 => HostPattern::Suffix(h[2..].to_owned()),
            h if h.contains('*') => {
                return Err(err(
                    "`*` is allowed only as the whole host or as `*.domain`",
                ));
            }
            h => HostPattern::Exact(h.to_owned()),
        };
        Ok(Self {
            raw: s.to_owned(),
            scheme,
            host,
            port,
        })
    }
}

impl<'de> Deserialize<'de> for OutboundPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A size in bytes, written with an optional unit: `65536`, `64K`, `64KiB`, `1.5G`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ConfigError::Size(s.to_owned());
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(err()),
        };
        if num.is_empty() {
            return Err(err());
        }
        let bytes = if num.contains('.') {
            let f: f64 = num.parse().map_err(|_| err())?;
            let v = f * mult as f64;
            if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
                return Err(err());
            }
            v as u64
        } else {
            let n: u64 = num.parse().map_err(|_| err())?;
            n.checked_mul(mult).ok_or_else(err)?
        };
        Ok(Self(bytes))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, size) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if b >= size && b.is_multiple_of(size) {
                return write!(f, "{}{unit}", b / size);
            }
        }
        write!(f, "{b}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Self(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written with a unit: `250ms`, `10s`, `2m`, `1h`, or `1.5s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ConfigError::Duration(s.to_owned());
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| err())?;
        let secs = match unit.trim() {
            "us" | "µs" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(err()),
        };
        Duration::try_from_secs_f64(secs)
            .map(Self)
            .map_err(|_| err())
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
