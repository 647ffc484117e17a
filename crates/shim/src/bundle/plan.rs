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
use wisp_runtime::AppShape;
use wisp_runtime::config::{ByteSize, Config, DirGrant, HumanDuration};

use crate::bundle::confine::{self, Confinement};

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
    #[error("`{0}` is a wasi:http component; it cannot run as a command")]
    NotACommand(String),
    #[error("the container's settings are refused: {0}")]
    Config(String),
    #[error("the container's spec asks for what a Wasm container cannot honour: {0}")]
    Refused(#[from] crate::bundle::confine::Refused),
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

impl Executor {
    /// Whether a loaded app of `shape` is served (HTTP) or run to its end:
    /// the one place the choice is made, for a container process and a
    /// node-hosted app alike.
    pub fn serves(self, shape: AppShape, module: &str) -> Result<bool, PlanError> {
        match (self, shape) {
            (Executor::Http, _) | (Executor::Auto, AppShape::HttpProxy) => Ok(true),
            (Executor::Command, AppShape::HttpProxy) => {
                Err(PlanError::NotACommand(module.to_string()))
            }
            (_, AppShape::P1Command | AppShape::P2Command) => Ok(false),
        }
    }
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
    /// How the process confines itself (see `bundle/confine.rs`); `None`
    /// where no process of its own runs the app (node mode's hosted apps).
    pub confine: Option<Confinement>,
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
    // A bound file (/etc/hosts, a subPath file) is not a directory a guest
    // can be given (WASI preopens directories); a source that is not there
    // at all stays, so the plan's check fails Create naming it, as runc's
    // mount would.
    if !is_bind || std::fs::metadata(source).is_ok_and(|m| !m.is_dir()) {
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
        confine: Some(confine::for_init(
            spec,
            rootfs,
            confine::host_has_apparmor(),
        )?),
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
            // The pod's limit caps each instance too, up to what a 32-bit
            // linear memory can address (a pod may well have more).
            plan.max_memory = res
                .memory()
                .as_ref()
                .and_then(|m| m.limit())
                .filter(|&l| l > 0)
                .map(|l| (l as u64).min(MAX_LINEAR_MEMORY));
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
    // Checked as the CLI checks its config: a setting the runtime would
    // refuse fails Create here, naming it.
    plan.serve_config()?
        .validate()
        .map_err(|e| PlanError::Config(wisp_runtime::error_chain(&e)))?;
    Ok(plan)
}

/// The most one 32-bit linear memory can address.
const MAX_LINEAR_MEMORY: u64 = 4 << 30;

impl WasmPlan {
    /// The runtime's config for this plan: the one model every front door
    /// fills (the CLI from flags and files, the shim from the spec).
    pub fn config(&self) -> Result<Config, PlanError> {
        let mut config = Config::default();
        config.capabilities.dirs = self
            .dirs
            .iter()
            .map(|d| DirGrant {
                host: d.host.clone(),
                guest: d.guest.clone(),
                read_only: d.read_only,
            })
            .collect();
        config.capabilities.env = self.env.clone();
        config.capabilities.allow_outbound = self
            .allow_outbound
            .iter()
            .map(|p| {
                p.parse()
                    .map_err(|e: wisp_runtime::config::ConfigError| PlanError::BadEnv {
                        name: ALLOW_OUTBOUND_ENV,
                        value: p.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        config.limits.max_memory = self.max_memory.map(ByteSize);
        config.server.listen = self.listen;
        config.server.max_concurrent_requests = self.max_concurrent_requests;
        config.engine.pooling.total_instances = self.max_concurrent_requests;
        config.engine.cache_dir = self.cache_dir.clone();
        Ok(config)
    }

    /// [`Self::config`] plus what only serving uses: the request deadline.
    pub fn serve_config(&self) -> Result<Config, PlanError> {
        let mut config = self.config()?;
        config.limits.timeout = Some(HumanDuration(self.request_timeout));
        Ok(config)
    }
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
    plan.confine = init
        .confine
        .as_ref()
        .map(|c| confine::for_exec(c, process, init_pid, confine::host_has_apparmor()))
        .transpose()?;
    Ok(plan)
}

fn is_wasm_file(p: &Path) -> bool {
    read_magic(p).is_ok_and(|m| m == b"\0asm")
}

#[cfg(test)]
mod tests;
