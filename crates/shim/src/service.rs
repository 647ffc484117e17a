//! The ttrpc Task service: containerd's calls on Wasm and Linux containers.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::ExitSignal;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, Status,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::monitor::Topic;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::shim::shim::CheckpointTaskRequest;
use containerd_shim::protos::topics::{
    TASK_CREATE_EVENT_TOPIC, TASK_DELETE_EVENT_TOPIC, TASK_EXEC_ADDED_EVENT_TOPIC,
    TASK_EXEC_STARTED_EVENT_TOPIC, TASK_EXIT_EVENT_TOPIC, TASK_OOM_EVENT_TOPIC,
    TASK_PAUSED_EVENT_TOPIC, TASK_RESUMED_EVENT_TOPIC, TASK_START_EVENT_TOPIC,
};
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::synchronous::monitor::monitor_subscribe;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process, Spec};
use serde::{Deserialize, Serialize};

use crate::cgroup::{ContainerCgroup, container_path};
use crate::console::with_console;
use crate::events::Events;
use crate::image::ImageSource;
use crate::node::{HostedApp, NodeHost};
use crate::oom::OomWatcher;
use crate::plan::{self, Entrypoint, HostSettings, PlanError, WasmPlan};
use crate::process::{
    PidTable, Proc, StdioPaths, open_output_file, open_stdio, pid_of, spawn_wasm,
};
use crate::runc::{Runc, RuncIo};
use crate::sandbox;

/// File in the bundle recording what `delete` must clean up if the shim dies.
pub const STATE_FILE: &str = "wisp-state.json";

/// What runs a container.
enum Kind {
    Wasm {
        plan: Box<WasmPlan>,
        cgroup: ContainerCgroup,
        rootfs: PathBuf,
        /// Served by this (node-mode) process instead of a process of its
        /// own; the cgroup then holds only the container's execs.
        hosted: Option<HostedApp>,
    },
    Linux {
        runc: Runc,
        /// Exec process specs waiting for Start (runc execs them then).
        pending: Mutex<HashMap<String, Vec<u8>>>,
    },
    /// The CRI's pod sandbox, made by the shim (see [`crate::sandbox`]).
    Sandbox {
        cgroup: ContainerCgroup,
        /// The process's start and status pipes, until Start.
        start: Mutex<Option<(File, File)>>,
    },
}

struct Container {
    id: String,
    bundle: PathBuf,
    kind: Kind,
    init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    /// Where we mounted the rootfs, to unmount on Delete.
    mounted: Option<PathBuf>,
}

/// Cleanup record kept in the bundle (see [`STATE_FILE`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct StateRecord {
    pub linux: bool,
    pub pid: u32,
    pub cgroup: Option<String>,
    pub mounted: Option<PathBuf>,
}

struct Inner {
    namespace: String,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    pids: Mutex<PidTable>,
    events: Events,
    exit: Arc<ExitSignal>,
    host: HostSettings,
    images: ImageSource,
    /// Node mode's engine for hosted apps.
    node: Option<NodeHost>,
    /// None if the watcher could not start (logged).
    oom: Option<OomWatcher>,
}

/// The Task service.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

fn err(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

fn not_found(what: &str) -> ttrpc::Error {
    err(Code::NOT_FOUND, format!("{what}: not found"))
}

pub(crate) fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The node's compiled-code cache (and, under `blobs/`, the Wasm layers read
/// from containerd's content store) when `WISP_CACHE_DIR` is unset.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/wisp/cache";

/// The host settings of the shim: the node's code cache and CPU count.
pub fn host_settings() -> HostSettings {
    HostSettings {
        cache_dir: Some(
            std::env::var_os("WISP_CACHE_DIR")
                .filter(|d| !d.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR), PathBuf::from),
        ),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

impl Service {
    pub fn new(
        events: Events,
        namespace: &str,
        address: &str,
        exit: Arc<ExitSignal>,
        node: bool,
    ) -> Self {
        let host = host_settings();
        let images = ImageSource {
            address: address.into(),
            namespace: namespace.into(),
            blobs: host
                .cache_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
                .join("blobs"),
        };
        let oom_events = events.clone();
        let oom = OomWatcher::start(move |container| {
            oom_events.send(
                TASK_OOM_EVENT_TOPIC,
                TaskOOM {
                    container_id: container.into(),
                    ..Default::default()
                },
            );
        })
        .inspect_err(|e| tracing::error!(error = %e, "OOM kills will not be reported"))
        .ok();
        let inner = Arc::new(Inner {
            namespace: namespace.into(),
            containers: Mutex::default(),
            pids: Mutex::default(),
            events,
            exit,
            host,
            images,
            node: node.then(NodeHost::default),
            oom,
        });
        // Subscribed before any process exists, so no exit is missed.
        let sub = monitor_subscribe(Topic::All).expect("monitor subscription");
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("wisp-exits".into())
            .spawn(move || {
                for ev in sub.rx.iter() {
                    let Some(inner) = weak.upgrade() else { break };
                    if let Some(pid) = pid_of(&ev.subject) {
                        inner.on_exit(pid, ev.exit_code);
                    }
                }
            })
            .expect("failed to start the exit thread");
        Self { inner }
    }
}

impl Inner {
    fn on_exit(&self, pid: u32, code: i32) {
        let Some(proc) = lock(&self.pids).exited(pid, code) else {
            return;
        };
        self.exited(&proc, pid, code);
    }

    fn exited(&self, proc: &Arc<Proc>, pid: u32, code: i32) {
        {
            let mut s = proc.lock();
            if s.starting {
                // Start publishes this once TaskStart is queued.
                s.deferred_exit = Some((pid, code));
                return;
            }
        }
        if !proc.set_exited(code) {
            return;
        }
        let exit = proc.lock().exit.expect("just set");
        log::debug!("{} (pid {pid}) exited with {}", proc.event_id(), exit.code);
        self.events.send(
            TASK_EXIT_EVENT_TOPIC,
            TaskExit {
                container_id: proc.container_id.clone(),
                id: proc.event_id().into(),
                pid,
                exit_status: exit.code,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            },
        );
        // Execs of a Wasm container do not outlive its init, as in a pid
        // namespace whose init died.
        if proc.exec_id.is_empty()
            && let Some(c) = lock(&self.containers).get(&proc.container_id).cloned()
            && matches!(c.kind, Kind::Wasm { .. })
        {
            for e in lock(&c.execs).values() {
                signal_proc(e, Signal::SIGKILL);
            }
        }
    }

    fn container(&self, id: &str) -> ttrpc::Result<Arc<Container>> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(&format!("container {id}")))
    }

    fn process(&self, id: &str, exec_id: &str) -> ttrpc::Result<(Arc<Container>, Arc<Proc>)> {
        let c = self.container(id)?;
        if exec_id.is_empty() {
            let p = c.init.clone();
            return Ok((c, p));
        }
        let p = lock(&c.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| not_found(&format!("exec {exec_id} in container {id}")))?;
        Ok((c, p))
    }

    /// Registers `pid`; a process that is already gone gets its exit now.
    fn register(&self, pid: u32, proc: &Arc<Proc>) {
        proc.lock().pid = pid;
        let early = lock(&self.pids).register(pid, proc);
        if let Some(code) = early {
            // Rare and worth seeing: a stale exit of an earlier process with
            // the same pid would stop this one (see the node-mode density run).
            log::warn!(
                "{} (pid {pid}) had exited ({code}) before it was registered",
                proc.event_id()
            );
            self.exited(proc, pid, code);
        }
    }

    fn create(&self, req: &CreateTaskRequest) -> ttrpc::Result<u32> {
        let bundle = PathBuf::from(&req.bundle);
        let spec = Spec::load(bundle.join("config.json")).map_err(|e| {
            err(
                Code::INVALID_ARGUMENT,
                format!("invalid OCI spec {}/config.json: {e}", req.bundle),
            )
        })?;
        let mut mounted = None;
        let rootfs = if req.rootfs.is_empty() {
            let root = spec
                .root()
                .as_ref()
                .map_or_else(|| PathBuf::from("rootfs"), |r| r.path().clone());
            bundle.join(root)
        } else {
            let target = bundle.join("rootfs");
            std::fs::create_dir_all(&target)
                .map_err(|e| err(Code::INTERNAL, format!("failed to create rootfs dir: {e}")))?;
            for m in &req.rootfs {
                mount_rootfs(m, &target).map_err(|e| {
                    unmount(&target);
                    err(Code::INTERNAL, format!("failed to mount the rootfs: {e}"))
                })?;
                mounted = Some(target.clone());
            }
            target
        };
        let result = self.create_in(req, &bundle, &spec, &rootfs, mounted.clone());
        if result.is_err()
            && let Some(m) = &mounted
        {
            unmount(m);
        }
        result
    }

    fn create_in(
        &self,
        req: &CreateTaskRequest,
        bundle: &Path,
        spec: &Spec,
        rootfs: &Path,
        mounted: Option<PathBuf>,
    ) -> ttrpc::Result<u32> {
        let id = req.id.as_str();
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let invalid = |e: &(dyn std::error::Error + 'static)| {
            err(Code::INVALID_ARGUMENT, wisp_runtime::error_chain(e))
        };
        // The name argv[0] gets when the spec has no args (an artifact).
        let mut module_name = None;
        let native_sandbox = plan::is_sandbox(spec)
            && match sandbox::unsupported(spec) {
                None => true,
                Some(why) => {
                    tracing::info!(
                        id,
                        why,
                        "the spec asks for what runc applies: the pod sandbox goes to runc"
                    );
                    false
                }
            };
        let classified = if native_sandbox {
            Ok(Entrypoint::Sandbox)
        } else {
            plan::classify(spec, rootfs)
        };
        let entry = match classified {
            Ok(entry) => entry,
            // Nothing to run in the rootfs: the Wasm may be a raw layer of the
            // image, which containerd stored but did not unpack.
            Err(e @ (PlanError::NotFound(_) | PlanError::NoEntrypoint)) => {
                let program = spec
                    .process()
                    .as_ref()
                    .and_then(|p| p.args().as_ref())
                    .and_then(|a| a.first())
                    .map(String::as_str);
                match self.images.module_of(id, program) {
                    Ok(Some(m)) => {
                        tracing::info!(id, image = %m.image, layer = %m.digest, media_type = %m.media_type, "Wasm from the image's layer");
                        module_name = m.title;
                        Entrypoint::Wasm(m.path)
                    }
                    Ok(None) => return Err(invalid(&e)),
                    Err(image_err) => {
                        return Err(err(
                            Code::INVALID_ARGUMENT,
                            format!(
                                "{}; {}",
                                wisp_runtime::error_chain(&e),
                                wisp_runtime::error_chain(&image_err)
                            ),
                        ));
                    }
                }
            }
            Err(e) => return Err(invalid(&e)),
        };
        let init = Proc::new(id, "", paths.clone());
        let stdio_err = |e: std::io::Error| {
            err(
                Code::INVALID_ARGUMENT,
                format!("failed to open the container's stdio: {e}"),
            )
        };
        let open = || open_stdio(&paths).map_err(stdio_err);
        let mut feeder = None;
        let (kind, record) = match entry {
            Entrypoint::Wasm(_) if paths.terminal => {
                return Err(no_wasm_terminal("containers"));
            }
            Entrypoint::Wasm(module) => {
                let mut plan = plan::wasm_plan(id, spec, rootfs, module, &self.host)
                    .map_err(|e| invalid(&e))?;
                if plan.args.is_empty() {
                    // An artifact without a process: argv[0] is the module's name.
                    plan.args = vec![module_name.unwrap_or_else(|| "app.wasm".into())];
                }
                let linux = spec.linux().as_ref();
                let cgroup = self.spec_cgroup(spec, id)?;
                if let Some(node) = &self.node {
                    let netns = linux
                        .and_then(|l| l.namespaces().as_ref())
                        .into_iter()
                        .flatten()
                        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
                        .and_then(|n| n.path().clone())
                        .filter(|p| !p.as_os_str().is_empty());
                    let prepared = node.prepare(&plan, netns, !paths.stdin.is_empty(), || {
                        open_outputs(&paths)
                    });
                    match prepared {
                        Ok(Some(app)) => {
                            tracing::info!(id, "run by the node process");
                            if let Some(r) = linux.and_then(|l| l.resources().as_ref())
                                && let Err(e) = cgroup.apply_cpu(r)
                            {
                                let _ = cgroup.delete();
                                return Err(err(Code::INVALID_ARGUMENT, e.to_string()));
                            }
                            init.lock().pid = std::process::id();
                            let record = StateRecord {
                                linux: false,
                                pid: 0,
                                cgroup: Some(cgroup.path().into()),
                                mounted: mounted.clone(),
                            };
                            return self.created(
                                req,
                                bundle,
                                Kind::Wasm {
                                    plan: Box::new(plan),
                                    cgroup,
                                    rootfs: rootfs.into(),
                                    hosted: Some(app),
                                },
                                init,
                                None,
                                record,
                                mounted,
                            );
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let _ = cgroup.delete();
                            return Err(err(Code::INVALID_ARGUMENT, e.to_string()));
                        }
                    }
                }
                // Limits first, as runc sets them: the process is charged
                // under them from its first page.
                apply_limits(&cgroup, spec)?;
                let mut stdio = match open() {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = cgroup.delete();
                        return Err(e);
                    }
                };
                feeder = stdio.feeder.take();
                let spawned = spawn_wasm(&plan, stdio, &cgroup, |pid| {
                    self.register(pid, &init);
                    Ok(())
                });
                let spawned = match spawned {
                    Ok(s) => s,
                    Err(e) => {
                        let pid = init.lock().pid;
                        lock(&self.pids).forget(pid);
                        let _ = init.wait_timeout(Duration::from_secs(5));
                        let _ = cgroup.delete();
                        return Err(err(Code::INVALID_ARGUMENT, e.to_string()));
                    }
                };
                init.lock().control = Some(spawned.control);
                let record = StateRecord {
                    linux: false,
                    pid: spawned.pid,
                    cgroup: Some(cgroup.path().into()),
                    mounted: mounted.clone(),
                };
                (
                    Kind::Wasm {
                        plan: Box::new(plan),
                        cgroup,
                        rootfs: rootfs.into(),
                        hosted: None,
                    },
                    record,
                )
            }
            Entrypoint::Linux => {
                let runc = Runc::new(id, bundle);
                let created = if paths.terminal {
                    open_output_file(&paths.stdout)
                        .and_then(|out| {
                            with_console(&paths.stdin, out, |socket| {
                                runc.create(RuncIo::Console(socket))
                            })
                        })
                        .map(|(pid, console)| (pid, Some(console)))
                } else {
                    let mut stdio = open()?;
                    feeder = stdio.feeder.take();
                    runc.create(RuncIo::Stdio(stdio)).map(|pid| (pid, None))
                };
                let (pid, console) = created.map_err(|e| {
                    let _ = runc.delete();
                    err(Code::INVALID_ARGUMENT, e.to_string())
                })?;
                init.lock().console = console;
                self.register(pid, &init);
                // runc made the cgroup at the spec's path.
                self.watch_oom(
                    id,
                    ContainerCgroup::load(&self.cgroup_path(spec, id)).memory_dir(),
                );
                let record = StateRecord {
                    linux: true,
                    pid,
                    cgroup: None,
                    mounted: mounted.clone(),
                };
                (
                    Kind::Linux {
                        runc,
                        pending: Mutex::default(),
                    },
                    record,
                )
            }
            Entrypoint::Sandbox => {
                let cgroup = self.spec_cgroup(spec, id)?;
                apply_limits(&cgroup, spec)?;
                let spawned = open_outputs(&paths)
                    .map_err(stdio_err)
                    .and_then(|(out, errs)| {
                        sandbox::spawn(spec, rootfs, &cgroup, out, errs)
                            .map_err(|e| err(Code::INVALID_ARGUMENT, e.to_string()))
                    });
                let spawned = match spawned {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = cgroup.delete();
                        return Err(e);
                    }
                };
                self.register(spawned.pid, &init);
                let record = StateRecord {
                    linux: false,
                    pid: spawned.pid,
                    cgroup: Some(cgroup.path().into()),
                    mounted: mounted.clone(),
                };
                (
                    Kind::Sandbox {
                        cgroup,
                        start: Mutex::new(Some((spawned.control, spawned.status))),
                    },
                    record,
                )
            }
        };
        self.created(req, bundle, kind, init, feeder, record, mounted)
    }

    /// The container's cgroup: the spec's `cgroupsPath`.
    fn cgroup_path(&self, spec: &Spec, id: &str) -> String {
        container_path(
            spec.linux()
                .as_ref()
                .and_then(|l| l.cgroups_path().as_ref())
                .and_then(|p| p.to_str()),
            &self.namespace,
            id,
        )
    }

    /// Creates the container's cgroup at the spec's `cgroupsPath`.
    fn spec_cgroup(&self, spec: &Spec, id: &str) -> ttrpc::Result<ContainerCgroup> {
        ContainerCgroup::create(&self.cgroup_path(spec, id))
            .map_err(|e| err(Code::INTERNAL, e.to_string()))
    }

    /// Reports the OOM kills in the memory cgroup `dir` of container `id`.
    fn watch_oom(&self, id: &str, dir: Option<PathBuf>) {
        let (Some(oom), Some(dir)) = (&self.oom, dir) else {
            return;
        };
        if let Err(e) = oom.watch(id, &dir) {
            tracing::warn!(id, error = %e, dir = %dir.display(), "OOM kills of this container will not be reported");
        }
    }

    /// Records a created container and announces it.
    #[allow(clippy::too_many_arguments)]
    fn created(
        &self,
        req: &CreateTaskRequest,
        bundle: &Path,
        kind: Kind,
        init: Arc<Proc>,
        feeder: Option<crate::process::StdinFeeder>,
        record: StateRecord,
        mounted: Option<PathBuf>,
    ) -> ttrpc::Result<u32> {
        let id = req.id.as_str();
        init.lock().stdin = feeder;
        if let Ok(json) = serde_json::to_vec(&record) {
            let _ = std::fs::write(bundle.join(STATE_FILE), json);
        }
        let pid = init.lock().pid.max(record.pid);
        let container = Arc::new(Container {
            id: id.into(),
            bundle: bundle.into(),
            kind,
            init,
            execs: Mutex::default(),
            mounted,
        });
        if let Kind::Wasm { cgroup, .. } | Kind::Sandbox { cgroup, .. } = &container.kind {
            self.watch_oom(id, cgroup.memory_dir());
        }
        lock(&self.containers).insert(id.into(), container);
        self.events.send(
            TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: id.into(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            },
        );
        Ok(pid)
    }
}

/// The container's stdout and stderr as files, for processes and apps the
/// shim starts without `Command`.
/// A Wasm process has no terminal: WASI's `wasi:cli/terminal-*` interfaces
/// only say whether a stream is one, and the guest could neither size nor
/// drive a pty, so a `tty: true` container or exec is refused, not faked.
fn no_wasm_terminal(what: &str) -> ttrpc::Error {
    err(
        Code::UNIMPLEMENTED,
        format!(
            "terminal (tty) {what} are not supported for Wasm: only Linux containers of the pod \
             (run by runc) get one"
        ),
    )
}

fn open_outputs(paths: &StdioPaths) -> std::io::Result<(Option<File>, Option<File>)> {
    Ok((
        open_output_file(&paths.stdout)?,
        open_output_file(&paths.stderr)?,
    ))
}

/// Mounts one of containerd's rootfs mounts on `target`. An overlay whose
/// options are all plain data (the overlayfs snapshotter's) is mounted here,
/// directly: the crate's `mount_rootfs` forks a child for every mount (so it
/// can chdir for long lowerdir lists) and waits for its exit through the
/// reaper, which cost 1.2 ms of every Create. Anything else goes to the crate.
fn mount_rootfs(
    m: &containerd_shim::protos::types::mount::Mount,
    target: &Path,
) -> containerd_shim::Result<()> {
    use nix::mount::MsFlags;
    let page = 4096;
    let direct = m.type_ == "overlay"
        && m.options.iter().map(|o| o.len() + 1).sum::<usize>() < page - 512
        && m.options
            .iter()
            .all(|o| o.contains('=') || o == "ro" || o == "rw");
    if !direct {
        return containerd_shim::mount::mount_rootfs(
            Some(m.type_.as_str()).filter(|t| !t.is_empty()),
            Some(m.source.as_str()),
            &m.options,
            target,
        );
    }
    let flags = if m.options.iter().any(|o| o == "ro") {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let data: Vec<&str> = m
        .options
        .iter()
        .filter(|o| o.contains('='))
        .map(String::as_str)
        .collect();
    nix::mount::mount(
        Some(m.source.as_str()),
        target,
        Some("overlay"),
        flags,
        Some(data.join(",").as_str()),
    )
    .map_err(|e| containerd_shim::Error::IoError {
        context: format!("mount overlay on {}", target.display()),
        err: e.into(),
    })
}

/// Writes the spec's resources to a new cgroup, before its process exists;
/// on failure the cgroup is removed and Create fails.
fn apply_limits(cgroup: &ContainerCgroup, spec: &Spec) -> ttrpc::Result<()> {
    let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
        return Ok(());
    };
    cgroup.apply(r).map_err(|e| {
        let _ = cgroup.delete();
        err(
            Code::INVALID_ARGUMENT,
            format!("failed to apply the spec's resources: {e}"),
        )
    })
}

/// Detaches every mount stacked on `target`, leaving the release of their
/// filesystems to a thread.
///
/// Unmounting an overlay syncs its upper filesystem (on ext4, a journal
/// commit): 1 to 4 ms here, on the path of every Delete, so of every
/// `ctr run --rm` and pod teardown. A lazy unmount detaches the mount from the
/// namespace at once, and when a descriptor still refers to it the filesystem
/// is released, synced, by that descriptor's close. The mount is gone from
/// every mount table when Delete answers; its sync runs beside the reply.
fn unmount(target: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut held = Vec::new();
    // Bounded: a target with more mounts stacked than this is not ours.
    for _ in 0..16 {
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(target);
        if nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
        held.extend(fd.ok());
    }
    if !held.is_empty() {
        let spawned = std::thread::Builder::new()
            .name("wisp-unmount".into())
            .spawn(move || drop(held));
        // Without a thread the descriptors close here, which only costs time.
        drop(spawned);
    }
}

/// Hosted apps have no process of their own: these calls would act on the
/// whole node process.
fn not_in_node_mode(c: &Container, what: &str) -> ttrpc::Result<()> {
    match c.kind {
        Kind::Wasm {
            hosted: Some(_), ..
        } => Err(err(
            Code::UNIMPLEMENTED,
            format!("{what} is not supported for apps served in node mode"),
        )),
        _ => Ok(()),
    }
}

fn signal_proc(p: &Proc, sig: Signal) -> bool {
    let s = p.lock();
    // A hosted app's pid is the node process's own: never signal ourselves.
    if s.exit.is_some() || s.pid == 0 || s.pid == std::process::id() {
        return false;
    }
    kill(Pid::from_raw(s.pid as i32), sig).is_ok()
}

fn start_wasm(p: &Proc) -> std::io::Result<()> {
    let mut s = p.lock();
    let control: &mut File = s
        .control
        .as_mut()
        .ok_or_else(|| std::io::Error::other("the process has no start channel"))?;
    control.write_all(b"S")?;
    s.control = None;
    Ok(())
}

/// The Task calls, answered synchronously; [`crate::daemon`] serves them
/// over ttrpc (the blocking ones on its blocking pool).
impl Service {
    pub fn create(&self, req: CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        let inner = &self.inner;
        if lock(&inner.containers).contains_key(&req.id) {
            return Err(err(
                Code::ALREADY_EXISTS,
                format!("container {} already exists", req.id),
            ));
        }
        let started = Instant::now();
        let pid = inner.create(&req)?;
        log::debug!("created {} (pid {pid}) in {:?}", req.id, started.elapsed());
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    pub fn start(&self, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let inner = &self.inner;
        let (c, p) = inner.process(&req.id, &req.exec_id)?;
        {
            let mut s = p.lock();
            if s.status != Status::CREATED {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    format!("process {} is {:?}, not created", p.event_id(), s.status),
                ));
            }
            s.starting = true;
        }
        let result = self.start_created(&c, &p, &req);
        // An exit that came while starting is published now, after TaskStart.
        let deferred = {
            let mut s = p.lock();
            s.starting = false;
            s.deferred_exit.take()
        };
        if let Some((pid, code)) = deferred {
            // TaskStart is queued, so this TaskExit follows it on the one
            // event thread: the order holds by construction. (No shim can
            // order the exit after CRI's StartedAt, which containerd stamps
            // with its own clock once Start has returned: runc's `/bin/true`
            // shows finishing before it started in 26 of 100 runs.)
            inner.exited(&p, pid, code);
        }
        result
    }

    fn start_created(
        &self,
        c: &Arc<Container>,
        p: &Arc<Proc>,
        req: &StartRequest,
    ) -> ttrpc::Result<StartResponse> {
        let inner = &self.inner;
        match &c.kind {
            Kind::Wasm {
                hosted: Some(app),
                cgroup,
                ..
            } if req.exec_id.is_empty() => {
                let weak = Arc::downgrade(inner);
                let proc = p.clone();
                app.start(&req.id, cgroup.cpu_thread_files(), move |code| {
                    if let Some(inner) = weak.upgrade() {
                        let pid = proc.lock().pid;
                        inner.exited(&proc, pid, code);
                    }
                })
            }
            Kind::Wasm { .. } => {
                log::debug!("starting {}", p.event_id());
                start_wasm(p)
            }
            Kind::Sandbox { start, .. } => match lock(start).take() {
                Some((mut control, mut status)) => sandbox::start(&mut control, &mut status),
                None => Err(std::io::Error::other("the sandbox was started already")),
            },
            Kind::Linux { runc, pending } => {
                if req.exec_id.is_empty() {
                    runc.start()
                } else {
                    let spec = lock(pending).remove(&req.exec_id).unwrap_or_default();
                    if p.stdio.terminal {
                        open_output_file(&p.stdio.stdout)
                            .and_then(|out| {
                                with_console(&p.stdio.stdin, out, |socket| {
                                    runc.exec(&req.exec_id, &spec, RuncIo::Console(socket))
                                })
                            })
                            .map(|(pid, console)| {
                                p.lock().console = Some(console);
                                inner.register(pid, p);
                            })
                    } else {
                        open_stdio(&p.stdio).and_then(|mut stdio| {
                            let feeder = stdio.feeder.take();
                            let pid = runc.exec(&req.exec_id, &spec, RuncIo::Stdio(stdio))?;
                            p.lock().stdin = feeder;
                            inner.register(pid, p);
                            Ok(())
                        })
                    }
                }
            }
        }
        .map_err(|e| err(Code::INTERNAL, format!("failed to start: {e}")))?;
        let pid = {
            let mut s = p.lock();
            if s.exit.is_none() {
                s.status = Status::RUNNING;
            }
            s.pid
        };
        if req.exec_id.is_empty() {
            inner.events.send(
                TASK_START_EVENT_TOPIC,
                TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                },
            );
        } else {
            inner.events.send(
                TASK_EXEC_STARTED_EVENT_TOPIC,
                TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid,
                    ..Default::default()
                },
            );
        }
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    pub fn state(&self, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let (c, p) = self.inner.process(&req.id, &req.exec_id)?;
        let s = p.lock();
        Ok(StateResponse {
            id: p.event_id().into(),
            bundle: c.bundle.display().to_string(),
            pid: s.pid,
            status: s.status.into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: s.exit.map_or(0, |e| e.code),
            exited_at: s.exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    pub async fn wait(&self, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let (_, p) = self.inner.process(&req.id, &req.exec_id)?;
        let exit = p.exited().await;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    pub fn kill(&self, req: KillRequest) -> ttrpc::Result<Empty> {
        let (c, p) = self.inner.process(&req.id, &req.exec_id)?;
        let sig = Signal::try_from(req.signal as i32).map_err(|_| {
            err(
                Code::INVALID_ARGUMENT,
                format!("invalid signal {}", req.signal),
            )
        })?;
        if p.lock().exit.is_some() {
            return Err(err(Code::NOT_FOUND, "process already finished"));
        }
        match &c.kind {
            Kind::Linux { runc, .. } if req.all && req.exec_id.is_empty() => runc
                .kill_all(req.signal)
                .map_err(|e| err(Code::INTERNAL, e.to_string()))?,
            _ => {
                match &c.kind {
                    Kind::Wasm {
                        hosted: Some(app), ..
                    } if req.exec_id.is_empty() => app.signal(sig as i32),
                    _ => {
                        signal_proc(&p, sig);
                    }
                }
                if req.all && req.exec_id.is_empty() {
                    for e in lock(&c.execs).values() {
                        signal_proc(e, sig);
                    }
                }
            }
        }
        // A frozen process cannot act on a signal: thaw it so kill works.
        if p.lock().status == Status::PAUSED
            && let Kind::Wasm { cgroup, .. } | Kind::Sandbox { cgroup, .. } = &c.kind
        {
            let _ = cgroup.thaw();
            p.lock().status = Status::RUNNING;
        }
        Ok(Empty::new())
    }

    pub fn delete(&self, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let inner = &self.inner;
        let (c, p) = inner.process(&req.id, &req.exec_id)?;
        let status = p.lock().status;
        if matches!(status, Status::RUNNING | Status::PAUSED) {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!(
                    "cannot delete {} while it is running; kill it first",
                    p.event_id()
                ),
            ));
        }
        let hosted_init = req.exec_id.is_empty()
            && matches!(
                c.kind,
                Kind::Wasm {
                    hosted: Some(_),
                    ..
                }
            );
        if status == Status::CREATED && hosted_init {
            // Nothing runs yet: it stops as a killed process would.
            let pid = p.lock().pid;
            inner.exited(&p, pid, 128 + libc::SIGKILL);
        } else if status == Status::CREATED {
            // Never started: containerd deletes it after a failed start.
            signal_proc(&p, Signal::SIGKILL);
            if p.wait_timeout(Duration::from_secs(10)).is_none() {
                return Err(err(
                    Code::DEADLINE_EXCEEDED,
                    "the process did not exit after SIGKILL",
                ));
            }
        }
        let exit = p.lock().exit.expect("stopped");
        let pid = p.lock().pid;
        lock(&inner.pids).forget(pid);
        if !req.exec_id.is_empty() {
            lock(&c.execs).remove(&req.exec_id);
        } else {
            for e in lock(&c.execs).values() {
                signal_proc(e, Signal::SIGKILL);
                let _ = e.wait_timeout(Duration::from_secs(5));
            }
            if let Some(oom) = &inner.oom {
                oom.forget(&c.id);
            }
            let started = Instant::now();
            let cleanup = match &c.kind {
                Kind::Wasm { cgroup, .. } | Kind::Sandbox { cgroup, .. } => cgroup.delete(),
                Kind::Linux { runc, .. } => runc.delete(),
            };
            log::debug!("removed the cgroup of {} in {:?}", c.id, started.elapsed());
            if let Some(m) = &c.mounted {
                unmount(m);
            }
            let _ = std::fs::remove_file(c.bundle.join(STATE_FILE));
            lock(&inner.containers).remove(&c.id);
            cleanup.map_err(|e| err(Code::INTERNAL, e.to_string()))?;
            inner.events.send(
                TASK_DELETE_EVENT_TOPIC,
                TaskDelete {
                    container_id: c.id.clone(),
                    pid,
                    exit_status: exit.code,
                    exited_at: MessageField::some(timestamp(exit.at)),
                    id: c.id.clone(),
                    ..Default::default()
                },
            );
        }
        Ok(DeleteResponse {
            pid,
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    pub fn exec(&self, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let inner = &self.inner;
        let c = inner.container(&req.id)?;
        if req.terminal && matches!(c.kind, Kind::Wasm { .. }) {
            return Err(no_wasm_terminal("execs"));
        }
        if lock(&c.execs).contains_key(&req.exec_id) {
            return Err(err(
                Code::ALREADY_EXISTS,
                format!("exec {} already exists", req.exec_id),
            ));
        }
        let init_pid = {
            let s = c.init.lock();
            if s.exit.is_some() {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    "the container is not running",
                ));
            }
            s.pid
        };
        let spec_json = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let process: Process = serde_json::from_slice(&spec_json).map_err(|e| {
            err(
                Code::INVALID_ARGUMENT,
                format!("invalid exec process spec: {e}"),
            )
        })?;
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let proc = Proc::new(&req.id, &req.exec_id, paths.clone());
        match &c.kind {
            Kind::Wasm {
                plan,
                cgroup,
                rootfs,
                hosted,
            } => {
                let mut exec_plan = plan::exec_plan(plan, &process, rootfs, init_pid)
                    .map_err(|e| err(Code::INVALID_ARGUMENT, e.to_string()))?;
                if hosted.is_some() {
                    // The init is the node process, in the host's namespaces:
                    // join the pod's, from the spec, instead.
                    exec_plan.join = plan.join.clone();
                }
                let mut stdio = open_stdio(&paths).map_err(|e| {
                    err(
                        Code::INVALID_ARGUMENT,
                        format!("failed to open the exec's stdio: {e}"),
                    )
                })?;
                let feeder = stdio.feeder.take();
                let spawned = spawn_wasm(&exec_plan, stdio, cgroup, |pid| {
                    inner.register(pid, &proc);
                    Ok(())
                })
                .map_err(|e| {
                    lock(&inner.pids).forget(proc.lock().pid);
                    err(Code::INVALID_ARGUMENT, e.to_string())
                })?;
                let mut s = proc.lock();
                s.control = Some(spawned.control);
                s.stdin = feeder;
            }
            Kind::Linux { pending, .. } => {
                lock(pending).insert(req.exec_id.clone(), spec_json);
            }
            Kind::Sandbox { .. } => {
                return Err(err(
                    Code::UNIMPLEMENTED,
                    "exec into a pod sandbox is not supported",
                ));
            }
        }
        lock(&c.execs).insert(req.exec_id.clone(), proc);
        inner.events.send(
            TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    pub fn pids(&self, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let c = self.inner.container(&req.id)?;
        let pids = match &c.kind {
            Kind::Wasm {
                cgroup,
                hosted: Some(_),
                ..
            } => {
                let mut pids = vec![std::process::id()];
                pids.extend(cgroup.procs());
                pids
            }
            Kind::Wasm { cgroup, .. } | Kind::Sandbox { cgroup, .. } => cgroup.procs(),
            Kind::Linux { .. } => linux_pids(c.init.lock().pid),
        };
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    pub fn stats(&self, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let c = self.inner.container(&req.id)?;
        let pid = {
            let s = c.init.lock();
            if s.exit.is_some() {
                return Err(err(Code::FAILED_PRECONDITION, "the task is not running"));
            }
            s.pid
        };
        let metrics = match &c.kind {
            Kind::Wasm {
                hosted: Some(app), ..
            } => Ok(crate::metrics::hosted(app.usage())),
            _ => crate::metrics::collect(pid),
        }
        .map_err(|e| {
            err(
                Code::INTERNAL,
                format!("failed to read cgroup metrics: {e}"),
            )
        })?;
        let mut any = Any::new();
        any.type_url = "io.containerd.cgroups.v1.Metrics".into();
        any.value = metrics
            .write_to_bytes()
            .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
        Ok(StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    pub fn update(&self, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let c = self.inner.container(&req.id)?;
        let json = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let resources: LinuxResources = serde_json::from_slice(&json)
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("invalid resources: {e}")))?;
        match &c.kind {
            // A hosted app's limits are its thread's CPU cgroup and its
            // instances' memory cap, not the node process's cgroups.
            Kind::Wasm {
                hosted: Some(app),
                cgroup,
                ..
            } => {
                cgroup
                    .apply_cpu(&resources)
                    .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
                if let Some(limit) = resources.memory().as_ref().and_then(|m| m.limit()) {
                    app.set_max_memory((limit > 0).then_some(limit as u64));
                }
                Ok(())
            }
            Kind::Wasm { cgroup, .. } | Kind::Sandbox { cgroup, .. } => cgroup
                .apply(&resources)
                .map_err(|e| err(Code::INTERNAL, format!("failed to update resources: {e}"))),
            Kind::Linux { runc, .. } => runc
                .update(&json)
                .map_err(|e| err(Code::INTERNAL, e.to_string())),
        }?;
        Ok(Empty::new())
    }

    pub fn pause(&self, req: PauseRequest) -> ttrpc::Result<Empty> {
        let c = self.inner.container(&req.id)?;
        not_in_node_mode(&c, "pause")?;
        if c.init.lock().status != Status::RUNNING {
            return Err(err(Code::FAILED_PRECONDITION, "the task is not running"));
        }
        match &c.kind {
            Kind::Wasm { cgroup, .. } | Kind::Sandbox { cgroup, .. } => cgroup.freeze(),
            Kind::Linux { runc, .. } => runc.pause(),
        }
        .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
        c.init.lock().status = Status::PAUSED;
        self.inner.events.send(
            TASK_PAUSED_EVENT_TOPIC,
            TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    pub fn resume(&self, req: ResumeRequest) -> ttrpc::Result<Empty> {
        let c = self.inner.container(&req.id)?;
        not_in_node_mode(&c, "resume")?;
        if c.init.lock().status != Status::PAUSED {
            return Err(err(Code::FAILED_PRECONDITION, "the task is not paused"));
        }
        match &c.kind {
            Kind::Wasm { cgroup, .. } | Kind::Sandbox { cgroup, .. } => cgroup.thaw(),
            Kind::Linux { runc, .. } => runc.resume(),
        }
        .map_err(|e| err(Code::INTERNAL, e.to_string()))?;
        c.init.lock().status = Status::RUNNING;
        self.inner.events.send(
            TASK_RESUMED_EVENT_TOPIC,
            TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    pub fn close_io(&self, req: CloseIORequest) -> ttrpc::Result<Empty> {
        let (_, p) = self.inner.process(&req.id, &req.exec_id)?;
        if req.stdin {
            // Dropping the feeder lets it reach EOF and close the pipe.
            p.lock().stdin.take();
        }
        Ok(Empty::new())
    }

    pub fn resize_pty(&self, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        let (_, p) = self.inner.process(&req.id, &req.exec_id)?;
        let console = p.lock().console.clone();
        let Some(console) = console else {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("process {} has no terminal", p.event_id()),
            ));
        };
        console.resize(req.width, req.height).map_err(|e| {
            err(
                Code::INTERNAL,
                format!("failed to resize the terminal of {}: {e}", p.event_id()),
            )
        })?;
        Ok(Empty::new())
    }

    pub fn checkpoint(&self, _req: CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        Err(err(
            Code::UNIMPLEMENTED,
            "checkpoint is not implemented by wisp",
        ))
    }

    pub fn connect(&self, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let c = self.inner.container(&req.id)?;
        let task_pid = c.init.lock().pid;
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    pub fn shutdown(&self, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        // One shim serves every container of a pod: it exits with the last.
        if lock(&self.inner.containers).is_empty() {
            self.inner.exit.signal();
        }
        Ok(Empty::new())
    }
}

/// Pids of a runc container: every process in its init's cgroup (the v1
/// `pids` controller's, or the v2 unified one's).
fn linux_pids(init: u32) -> Vec<u32> {
    let text = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap_or_default();
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let dir = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if unified && controllers.is_empty() {
            Some(format!("/sys/fs/cgroup/{path}"))
        } else if controllers.split(',').any(|c| c == "pids") {
            Some(format!("/sys/fs/cgroup/pids/{path}"))
        } else {
            None
        }
    });
    let procs = dir.and_then(|d| std::fs::read_to_string(Path::new(&d).join("cgroup.procs")).ok());
    match procs {
        Some(p) => {
            let mut pids: Vec<u32> = p.lines().filter_map(|l| l.parse().ok()).collect();
            pids.sort_unstable();
            pids
        }
        None => vec![init],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounted_at(target: &Path) -> usize {
        let target = target.to_string_lossy();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(&*target))
            .count()
    }

    /// Every mount stacked on the rootfs goes, the one in use included (its
    /// release is left to a thread).
    #[test]
    fn unmount_detaches_every_stacked_mount() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("rootfs");
        std::fs::create_dir(&target).unwrap();
        for size in ["size=1m", "size=2m"] {
            nix::mount::mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(size),
            )
            .unwrap();
        }
        let busy = File::create(target.join("busy")).unwrap();
        assert_eq!(mounted_at(&target), 2);
        unmount(&target);
        assert_eq!(mounted_at(&target), 0, "mounts left on {target:?}");
        drop(busy);
        // Nothing is mounted there now: a second call finds nothing to do.
        unmount(&target);
        assert!(std::fs::read_dir(&target).unwrap().next().is_none());
    }
}
