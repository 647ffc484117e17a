//! From an OCI bundle to what runs: a Wasm plan or a Linux container.
//!
//! Everything here is pure (files are only read), so the rules that decide
//! what a guest sees are unit-tested without containerd.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};
use serde::{Deserialize, Serialize};

/// Annotation that marks the CRI sandbox (pause) container.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";
/// Annotation naming the pod sandbox a CRI container belongs to.
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// Guest env var picking how a module runs: `command`, `wagi` or `http`.
pub const EXECUTOR_ENV: &str = "WISP_EXECUTOR";
/// Guest env var with the full listen address of an HTTP app.
pub const LISTEN_ENV: &str = "WISP_LISTEN";
/// Guest env var with the listen port of an HTTP app (Knative/Cloud Run style).
pub const PORT_ENV: &str = "PORT";
/// Guest env var granting outbound destinations (wasi:http, wasi:sockets):
/// comma-separated `SCHEME://HOST[:PORT]` patterns, as `wisp run
/// --allow-outbound` takes them. Unset, the guest reaches nothing.
pub const ALLOW_OUTBOUND_ENV: &str = "WISP_ALLOW_OUTBOUND";
/// Guest env var bounding one HTTP request's time in its instance (`30s`,
/// `500ms`, `5m`): past it the instance is stopped and the client gets 504.
/// Bounds what a looping guest holds: an instance slot and a CPU.
pub const REQUEST_TIMEOUT_ENV: &str = "WISP_REQUEST_TIMEOUT";
/// The request deadline when the env names none: Knative's and Cloud Run's
/// default request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Guest env var bounding an HTTP app's requests in instances at once; more
/// wait for a slot (up to the queue timeout, then 503). In per-pod mode it is
/// also the size of the pod's instance pool; in node mode the node's pool
/// (`WISP_NODE_CONFIG`) bounds every app together.
pub const MAX_CONCURRENT_REQUESTS_ENV: &str = "WISP_MAX_CONCURRENT_REQUESTS";
/// Requests in instances at once when the env names no number: a pod is one
/// replica, and a smaller pool starts faster and reserves less address space
/// than `wisp serve`'s.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: u32 = 100;
/// Where an HTTP app listens when its env names no address or port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

/// Errors that make Create fail; the message reaches `ctr`.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the OCI spec has no process")]
    NoProcess,
    #[error(
        "the container has no entrypoint (process.args is empty) and the image has no Wasm layer"
    )]
    NoEntrypoint,
    #[error("entrypoint `{0}` does not exist in the container's rootfs")]
    NotFound(String),
    #[error("entrypoint `{0}` resolves outside the container's rootfs")]
    OutsideRootfs(String),
    #[error("failed to read entrypoint `{path}`")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "entrypoint `{path}` is neither a Wasm module nor a Linux executable (starts with {magic})"
    )]
    UnknownFormat { path: String, magic: String },
    #[error("invalid {name} `{value}` in the container's env: {reason}")]
    BadEnv {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// What a container's entrypoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entrypoint {
    /// A Wasm module or component at this host path.
    Wasm(PathBuf),
    /// An ELF binary or a `#!` script: run by runc.
    Linux,
    /// The CRI's pod sandbox, made by the shim itself (see `sandbox.rs`).
    Sandbox,
}

/// How a Wasm container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// Components exporting `wasi:http/incoming-handler` are served; everything
    /// else runs to completion.
    Auto,
    /// Run to completion (`_start` / `wasi:cli/run`).
    Command,
    /// Serve HTTP: a preview1 module as WAGI (CGI), a component as wasi:http.
    Http,
}

/// A directory the guest sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// Everything the Wasm container process needs; sent to it as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WasmPlan {
    /// The container id (for messages).
    pub id: String,
    /// Host path of the module.
    pub module: PathBuf,
    /// argv, `args[0]` included.
    pub args: Vec<String>,
    /// The guest's whole environment.
    pub env: BTreeMap<String, String>,
    pub dirs: Vec<Preopen>,
    /// Namespace files to join (`setns`), e.g. the pod's netns.
    pub join: Vec<PathBuf>,
    /// Namespaces to create afresh (`unshare`): the spec asked for one without a path.
    pub unshare_net: bool,
    pub unshare_uts: bool,
    pub unshare_ipc: bool,
    pub executor: Executor,
    pub listen: SocketAddr,
    /// Outbound destinations granted (validated patterns).
    pub allow_outbound: Vec<String>,
    /// Linear-memory cap per instance, from the spec's memory limit.
    pub max_memory: Option<u64>,
    /// Deadline of one HTTP request (unused by commands, which run until
    /// they exit or are killed, as any container process).
    pub request_timeout: std::time::Duration,
    /// Compiled-code cache shared by every container on the node.
    pub cache_dir: Option<PathBuf>,
    /// Serving threads (the CPU limit, rounded up; the host's CPUs without one).
    pub threads: usize,
    /// Whether the spec sets a CPU limit (a CFS quota).
    pub cpu_limited: bool,
    /// Requests in instances at once (HTTP apps).
    pub max_concurrent_requests: u32,
}

/// Resolves `path` inside `rootfs` the way the kernel would inside a chroot:
/// `..` and absolute symlinks never leave `rootfs`.
pub fn resolve_in_rootfs(rootfs: &Path, path: &str, cwd: &str) -> Result<PathBuf, PlanError> {
    let start = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(if cwd.is_empty() { "/" } else { cwd }).join(path)
    };
    let mut resolved = PathBuf::from("/");
    let mut pending: Vec<String> = start
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let host = rootfs.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(PlanError::OutsideRootfs(path.into()));
                }
                let target = std::fs::read_link(&host).map_err(|source| PlanError::Read {
                    path: path.into(),
                    source,
                })?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(s) => pending.push(s.to_string_lossy().into_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => resolved = candidate,
            Err(_) => return Err(PlanError::NotFound(path.into())),
        }
    }
    Ok(rootfs.join(resolved.strip_prefix("/").unwrap_or(&resolved)))
}

/// Finds the program `args[0]` names: a path, or a name looked up in the
/// container's `PATH` as execve would.
fn find_program(rootfs: &Path, process: &Process) -> Result<PathBuf, PlanError> {
    let args = process.args().as_deref().unwrap_or_default();
    let program = args.first().ok_or(PlanError::NoEntrypoint)?;
    let cwd = process.cwd().to_string_lossy().into_owned();
    if program.contains('/') {
        return resolve_in_rootfs(rootfs, program, &cwd);
    }
    let path_var = env_map(process)
        .remove("PATH")
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        if let Ok(found) = resolve_in_rootfs(rootfs, &format!("{dir}/{program}"), "/")
            && found.is_file()
        {
            return Ok(found);
        }
    }
    Err(PlanError::NotFound(program.clone()))
}

/// Decides whether the container is Wasm or Linux from its entrypoint's bytes.
pub fn classify(spec: &Spec, rootfs: &Path) -> Result<Entrypoint, PlanError> {
    if is_sandbox(spec) {
        return Ok(Entrypoint::Linux);
    }
    let process = spec.process().as_ref().ok_or(PlanError::NoProcess)?;
    let program = find_program(rootfs, process)?;
    let shown = || {
        process
            .args()
            .as_ref()
            .and_then(|a| a.first().cloned())
            .unwrap_or_default()
    };
    let magic = read_magic(&program).map_err(|source| PlanError::Read {
        path: shown(),
        source,
    })?;
    let magic = magic.as_slice();
    if magic == b"\0asm" {
        Ok(Entrypoint::Wasm(program))
    } else if magic == b"\x7fELF" || magic.starts_with(b"#!") {
        Ok(Entrypoint::Linux)
    } else {
        Err(PlanError::UnknownFormat {
            path: shown(),
            magic: describe_magic(magic),
        })
    }
}

/// The first (up to) four bytes of a file.
fn read_magic(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut magic = Vec::with_capacity(4);
    std::fs::File::open(path)?.take(4).read_to_end(&mut magic)?;
    Ok(magic)
}

fn describe_magic(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "nothing: the file is empty".into();
    }
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("bytes {}", hex.join(" "))
}

/// Whether this is the CRI's sandbox (pause) container.
pub fn is_sandbox(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINER_TYPE_ANNOTATION))
        .is_some_and(|t| t == "sandbox")
}

/// The process's env as a map; later entries win, as in execve users.
pub fn env_map(process: &Process) -> BTreeMap<String, String> {
    process
        .env()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

/// The directories a guest sees: the rootfs as `/` and every bind mount of a
/// directory at its destination. Other mounts (proc, sysfs, tmpfs, devpts, and
/// bind mounts of single files such as `/etc/hosts`) have no WASI equivalent.
pub fn preopens(spec: &Spec, rootfs: &Path) -> Vec<Preopen> {
    let root_ro = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let mut dirs = vec![Preopen {
        host: rootfs.to_path_buf(),
        guest: "/".into(),
        read_only: root_ro,
    }];
    for m in spec.mounts().as_deref().unwrap_or_default() {
        if let Some(p) = bind_preopen(m) {
            dirs.push(p);
        }
    }
    dirs
}

fn bind_preopen(m: &Mount) -> Option<Preopen> {
    let options = m.options().as_deref().unwrap_or_default();
    let is_bind =
        m.typ().as_deref() == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind");
    let source = m.source().as_ref()?;
    if !is_bind || !source.is_dir() {
        return None;
    }
    Some(Preopen {
        host: source.clone(),
        guest: m.destination().to_string_lossy().into_owned(),
        read_only: options.iter().any(|o| o == "ro"),
    })
}

/// The host settings a plan takes from the shim's environment, not the spec.
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    pub cache_dir: Option<PathBuf>,
    pub cpus: usize,
}

/// Builds the plan of a Wasm container's init process.
pub fn wasm_plan(
    id: &str,
    spec: &Spec,
    rootfs: &Path,
    module: PathBuf,
    host: &HostSettings,
) -> Result<WasmPlan, PlanError> {
    let process = spec.process().as_ref().ok_or(PlanError::NoProcess)?;
    let env = env_map(process);
    let executor = match env.get(EXECUTOR_ENV).map(String::as_str) {
        None | Some("") | Some("auto") => Executor::Auto,
        Some("command") => Executor::Command,
        Some("http") | Some("wagi") => Executor::Http,
        Some(other) => {
            return Err(PlanError::BadEnv {
                name: EXECUTOR_ENV,
                value: other.into(),
                reason: "expected auto, command, http or wagi".into(),
            });
        }
    };
    let listen = listen_address(&env)?;
    let allow_outbound = allow_outbound(&env)?;
    let request_timeout = request_timeout(&env)?;
    let max_concurrent_requests = max_concurrent_requests(&env)?;
    let mut plan = WasmPlan {
        id: id.into(),
        module,
        args: process.args().clone().unwrap_or_default(),
        env,
        dirs: preopens(spec, rootfs),
        join: Vec::new(),
        unshare_net: false,
        unshare_uts: false,
        unshare_ipc: false,
        executor,
        listen,
        allow_outbound,
        max_memory: None,
        request_timeout,
        cache_dir: host.cache_dir.clone(),
        threads: host.cpus.max(1),
        cpu_limited: false,
        max_concurrent_requests,
    };
    if let Some(linux) = spec.linux() {
        for ns in linux.namespaces().as_deref().unwrap_or_default() {
            // Mount, pid, user and cgroup namespaces mean nothing to WASI.
            let fresh = match ns.typ() {
                LinuxNamespaceType::Network => &mut plan.unshare_net,
                LinuxNamespaceType::Uts => &mut plan.unshare_uts,
                LinuxNamespaceType::Ipc => &mut plan.unshare_ipc,
                _ => continue,
            };
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => plan.join.push(p.clone()),
                _ => *fresh = true,
            }
        }
        if let Some(res) = linux.resources() {
            plan.max_memory = res
                .memory()
                .as_ref()
                .and_then(|m| m.limit())
                .filter(|&l| l > 0)
                .map(|l| l as u64);
            if let Some(cpu) = res.cpu()
                && let (Some(quota), Some(period)) = (cpu.quota(), cpu.period())
                && quota > 0
                && period > 0
            {
                let cpus = (quota as u64).div_ceil(period) as usize;
                plan.threads = cpus.clamp(1, plan.threads);
                plan.cpu_limited = true;
            }
        }
    }
    Ok(plan)
}

fn listen_address(env: &BTreeMap<String, String>) -> Result<SocketAddr, PlanError> {
    if let Some(addr) = env.get(LISTEN_ENV).filter(|v| !v.is_empty()) {
        return addr
            .parse()
            .map_err(|e: std::net::AddrParseError| PlanError::BadEnv {
                name: LISTEN_ENV,
                value: addr.clone(),
                reason: e.to_string(),
            });
    }
    if let Some(port) = env.get(PORT_ENV).filter(|v| !v.is_empty()) {
        let port: u16 = port.parse().map_err(|_| PlanError::BadEnv {
            name: PORT_ENV,
            value: port.clone(),
            reason: "expected a port number (0-65535)".into(),
        })?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    Ok(DEFAULT_LISTEN.parse().expect("valid default"))
}

fn request_timeout(env: &BTreeMap<String, String>) -> Result<std::time::Duration, PlanError> {
    let Some(value) = env.get(REQUEST_TIMEOUT_ENV).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_REQUEST_TIMEOUT);
    };
    let bad = |reason: String| PlanError::BadEnv {
        name: REQUEST_TIMEOUT_ENV,
        value: value.clone(),
        reason,
    };
    let t = value
        .parse::<wisp_runtime::config::HumanDuration>()
        .map_err(|e| bad(e.to_string()))?
        .0;
    if t.is_zero() {
        return Err(bad("must be greater than 0".into()));
    }
    Ok(t)
}

fn max_concurrent_requests(env: &BTreeMap<String, String>) -> Result<u32, PlanError> {
    let Some(value) = env
        .get(MAX_CONCURRENT_REQUESTS_ENV)
        .filter(|v| !v.is_empty())
    else {
        return Ok(DEFAULT_MAX_CONCURRENT_REQUESTS);
    };
    match value.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(PlanError::BadEnv {
            name: MAX_CONCURRENT_REQUESTS_ENV,
            value: value.clone(),
            reason: "expected a number greater than 0".into(),
        }),
    }
}

fn allow_outbound(env: &BTreeMap<String, String>) -> Result<Vec<String>, PlanError> {
    let Some(list) = env.get(ALLOW_OUTBOUND_ENV) else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<wisp_runtime::config::OutboundPattern>()
                .map(|_| p.to_string())
                .map_err(|e| PlanError::BadEnv {
                    name: ALLOW_OUTBOUND_ENV,
                    value: list.clone(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

/// Builds the plan of an exec'd WASI command from the init's plan: the same
/// preopens and namespaces, the exec spec's args and env. `args[0]` names a
/// Wasm file in the rootfs to run, or anything else to run the container's own
/// module with these args.
pub fn exec_plan(
    init: &WasmPlan,
    process: &Process,
    rootfs: &Path,
    init_pid: u32,
) -> Result<WasmPlan, PlanError> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(PlanError::NoEntrypoint);
    }
    let module = match find_program(rootfs, process) {
        Ok(p) if is_wasm_file(&p) => p,
        _ => init.module.clone(),
    };
    let mut plan = init.clone();
    plan.module = module;
    plan.args = args;
    plan.env = env_map(process);
    plan.executor = Executor::Command;
    // Join whatever namespaces the init process is in now, including ones it
    // created itself.
    plan.join = ["net", "uts", "ipc"]
        .iter()
        .map(|ns| PathBuf::from(format!("/proc/{init_pid}/ns/{ns}")))
        .collect();
    plan.unshare_net = false;
    plan.unshare_uts = false;
    plan.unshare_ipc = false;
    Ok(plan)
}

fn is_wasm_file(p: &Path) -> bool {
    read_magic(p).is_ok_and(|m| m == b"\0asm")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
        LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, SpecBuilder,
    };
    use std::collections::HashMap;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.wasm"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/sh"), b"\x7fELF....").unwrap();
        std::fs::write(dir.path().join("bin/script"), b"#!/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
        std::os::unix::fs::symlink("/app.wasm", dir.path().join("bin/app")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", dir.path().join("escape")).unwrap();
        dir
    }

    fn spec(args: &[&str], env: &[&str]) -> Spec {
        let process = ProcessBuilder::default()
            .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .env(env.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .cwd("/")
            .build()
            .unwrap();
        SpecBuilder::default().process(process).build().unwrap()
    }

    #[test]
    fn classifies_by_magic() {
        let r = rootfs();
        let wasm = classify(&spec(&["/app.wasm"], &[]), r.path()).unwrap();
        assert_eq!(wasm, Entrypoint::Wasm(r.path().join("app.wasm")));
        assert_eq!(
            classify(&spec(&["/bin/sh"], &[]), r.path()).unwrap(),
            Entrypoint::Linux
        );
        assert_eq!(
            classify(&spec(&["script"], &["PATH=/bin"]), r.path()).unwrap(),
            Entrypoint::Linux
        );
        // A symlink to the module is followed inside the rootfs.
        assert_eq!(
            classify(&spec(&["app"], &["PATH=/bin"]), r.path()).unwrap(),
            Entrypoint::Wasm(r.path().join("app.wasm"))
        );
        let err = classify(&spec(&["/notes.txt"], &[]), r.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("neither a Wasm module nor a Linux executable"),
            "{err}"
        );
        let err = classify(&spec(&["/missing.wasm"], &[]), r.path()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = classify(&spec(&[], &[]), r.path()).unwrap_err();
        assert!(matches!(err, PlanError::NoEntrypoint));
    }

    #[test]
    fn symlinks_and_dotdot_stay_in_rootfs() {
        let r = rootfs();
        // `../../../../etc/passwd` from the rootfs root is `/etc/passwd` of the
        // rootfs, which does not exist there.
        assert!(matches!(
            resolve_in_rootfs(r.path(), "/escape", "/"),
            Err(PlanError::NotFound(_))
        ));
        assert_eq!(
            resolve_in_rootfs(r.path(), "../../app.wasm", "/bin").unwrap(),
            r.path().join("app.wasm")
        );
    }

    #[test]
    fn sandbox_is_always_linux() {
        let r = rootfs();
        let mut s = spec(&["/pause"], &[]);
        s.set_annotations(Some(HashMap::from([(
            CONTAINER_TYPE_ANNOTATION.to_string(),
            "sandbox".to_string(),
        )])));
        assert_eq!(classify(&s, r.path()).unwrap(), Entrypoint::Linux);
    }

    #[test]
    fn plan_from_spec() {
        let r = rootfs();
        let data = tempfile::tempdir().unwrap();
        let mut s = spec(&["/app.wasm", "a"], &["PORT=9000", "A=1", "A=2"]);
        s.set_root(Some(
            RootBuilder::default()
                .path("rootfs")
                .readonly(true)
                .build()
                .unwrap(),
        ));
        s.set_mounts(Some(vec![
            MountBuilder::default()
                .destination("/data")
                .typ("bind")
                .source(data.path())
                .options(vec!["rbind".to_string(), "ro".to_string()])
                .build()
                .unwrap(),
            MountBuilder::default()
                .destination("/proc")
                .typ("proc")
                .source("proc")
                .build()
                .unwrap(),
            MountBuilder::default()
                .destination("/etc/hosts")
                .typ("bind")
                .source(r.path().join("notes.txt"))
                .options(vec!["rbind".to_string()])
                .build()
                .unwrap(),
        ]));
        let linux = LinuxBuilder::default()
            .namespaces(vec![
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .path("/var/run/netns/x")
                    .build()
                    .unwrap(),
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Uts)
                    .build()
                    .unwrap(),
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Mount)
                    .build()
                    .unwrap(),
            ])
            .resources(
                LinuxResourcesBuilder::default()
                    .memory(
                        LinuxMemoryBuilder::default()
                            .limit(64 << 20)
                            .build()
                            .unwrap(),
                    )
                    .cpu(
                        LinuxCpuBuilder::default()
                            .quota(150_000)
                            .period(100_000u64)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        s.set_linux(Some(linux));
        let host = HostSettings {
            cache_dir: Some("/var/lib/wisp/cache".into()),
            cpus: 8,
        };
        let plan = wasm_plan("c1", &s, r.path(), r.path().join("app.wasm"), &host).unwrap();
        assert_eq!(plan.args, ["/app.wasm", "a"]);
        assert_eq!(plan.env.get("A").map(String::as_str), Some("2"));
        assert_eq!(plan.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(plan.max_memory, Some(64 << 20));
        assert_eq!(plan.threads, 2);
        assert!(plan.cpu_limited);
        assert_eq!(plan.join, [PathBuf::from("/var/run/netns/x")]);
        assert!(plan.unshare_uts && !plan.unshare_net && !plan.unshare_ipc);
        assert_eq!(
            plan.dirs,
            [
                Preopen {
                    host: r.path().to_path_buf(),
                    guest: "/".into(),
                    read_only: true
                },
                Preopen {
                    host: data.path().to_path_buf(),
                    guest: "/data".into(),
                    read_only: true
                },
            ]
        );
    }

    #[test]
    fn listen_and_executor_from_env() {
        let r = rootfs();
        let host = HostSettings::default();
        let plan = |env: &[&str]| {
            wasm_plan(
                "c",
                &spec(&["/app.wasm"], env),
                r.path(),
                "/m".into(),
                &host,
            )
        };
        assert_eq!(plan(&[]).unwrap().listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(
            plan(&["WISP_LISTEN=127.0.0.1:81", "PORT=9"])
                .unwrap()
                .listen,
            "127.0.0.1:81".parse().unwrap()
        );
        assert_eq!(
            plan(&["WISP_EXECUTOR=wagi"]).unwrap().executor,
            Executor::Http
        );
        let err = plan(&["PORT=http"]).unwrap_err().to_string();
        assert!(err.contains("invalid PORT `http`"), "{err}");
        let err = plan(&["WISP_EXECUTOR=fast"]).unwrap_err().to_string();
        assert!(err.contains("WISP_EXECUTOR"), "{err}");
        assert!(plan(&[]).unwrap().allow_outbound.is_empty());
        assert_eq!(plan(&[]).unwrap().request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(
            plan(&["WISP_REQUEST_TIMEOUT=1.5s"])
                .unwrap()
                .request_timeout
                .as_millis(),
            1500
        );
        assert_eq!(
            plan(&[]).unwrap().max_concurrent_requests,
            DEFAULT_MAX_CONCURRENT_REQUESTS
        );
        assert_eq!(
            plan(&["WISP_MAX_CONCURRENT_REQUESTS=100000"])
                .unwrap()
                .max_concurrent_requests,
            100_000
        );
        for bad in ["0", "-1", "many"] {
            let err = plan(&[&format!("WISP_MAX_CONCURRENT_REQUESTS={bad}")])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("invalid WISP_MAX_CONCURRENT_REQUESTS `{bad}`")),
                "{err}"
            );
        }
        for bad in ["WISP_REQUEST_TIMEOUT=0s", "WISP_REQUEST_TIMEOUT=soon"] {
            let err = plan(&[bad]).unwrap_err().to_string();
            assert!(err.contains("invalid WISP_REQUEST_TIMEOUT"), "{err}");
        }
        assert_eq!(
            plan(&["WISP_ALLOW_OUTBOUND=http://localhost:8081, https://*.example.com"])
                .unwrap()
                .allow_outbound,
            ["http://localhost:8081", "https://*.example.com"]
        );
        let err = plan(&["WISP_ALLOW_OUTBOUND=localhost"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid WISP_ALLOW_OUTBOUND `localhost`"),
            "{err}"
        );
    }

    #[test]
    fn exec_runs_a_wasm_file_or_the_app() {
        let r = rootfs();
        let init = wasm_plan(
            "c",
            &spec(&["/app.wasm"], &[]),
            r.path(),
            PathBuf::from("/store/app.wasm"),
            &HostSettings::default(),
        )
        .unwrap();
        let process = |args: &[&str]| {
            ProcessBuilder::default()
                .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .env(vec!["X=1".to_string()])
                .cwd("/")
                .build()
                .unwrap()
        };
        let p = exec_plan(&init, &process(&["/app.wasm", "x"]), r.path(), 42).unwrap();
        assert_eq!(p.module, r.path().join("app.wasm"));
        let p = exec_plan(&init, &process(&["env", "X"]), r.path(), 42).unwrap();
        assert_eq!(p.module, PathBuf::from("/store/app.wasm"));
        assert_eq!(p.args, ["env", "X"]);
        assert_eq!(p.executor, Executor::Command);
        assert_eq!(p.join[0], PathBuf::from("/proc/42/ns/net"));
    }
}
