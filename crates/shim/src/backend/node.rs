//! Node mode: every Wasm HTTP app of the node served by one process.
//!
//! containerd starts the shim as `containerd-shim-wisp-node-v1` (runtime
//! type `io.containerd.wisp-node.v1`, the same binary under a second name).
//! `start` then groups every container of the containerd namespace into one
//! daemon, and that daemon serves Wasm HTTP apps itself instead of starting
//! a process per container: one engine, one compiled-code cache and one
//! instance pool for the node.
//!
//! Each hosted app keeps its pod's semantics:
//! - its listeners are bound inside the pod's network namespace (a helper
//!   thread `setns`es, binds, and exits; the sockets stay in that netns),
//!   and its serving threads join that netns too, so outgoing connections
//!   leave from the pod;
//! - its env, preopens, args and per-instance memory cap come from its own
//!   spec, and its guests' stdout/stderr go to its own FIFOs;
//! - it is served by threads of its own, one per CPU of its limit (rounded
//!   up; one without a limit, where a per-pod app takes every CPU). Each is a
//!   current-thread runtime with its own listener in one SO_REUSEPORT group,
//!   all in the container's CPU cgroups. So a kill drops exactly its
//!   connections and instances, and a busy app competes with the others
//!   through the kernel's scheduler only;
//! - its memory and CPU are metered per app (`wisp_runtime::meter`) for
//!   Stats, since it has no cgroup of its own.
//!
//! Execs, commands that read stdin, and Linux containers still run as
//! processes.

use std::fs::File;
use std::io::{self, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sched::{CloneFlags, setns, unshare};
use wisp_runtime::command;
use wisp_runtime::config::Config;
use wisp_runtime::http::{GuestOutput, HttpServer};
use wisp_runtime::meter::{Meter, Usage};
use wisp_runtime::{App, Engine, EngineSettings};

use crate::bundle::plan::{Executor, WasmPlan};
use crate::os::threads::{current_thread, lock};

/// The name the binary is installed under for node mode.
pub const NODE_BINARY: &str = wisp_k8s::NODE.binary;
/// The runtime type of node mode.
pub const NODE_RUNTIME_ID: &str = wisp_k8s::NODE.runtime_type;

/// Instance slots of the node's pool, shared by every hosted app, unless the
/// node config says otherwise.
const NODE_INSTANCES: u32 = 1000;
/// Env var naming the node config: a `wisp` config file (TOML) whose
/// `[engine.pooling]` section sizes the node's one pool (its other sections
/// are not used). Unset, the file
/// [`DEFAULT_NODE_CONFIG`] is read if it exists.
pub const NODE_CONFIG_ENV: &str = "WISP_NODE_CONFIG";
/// The node config read when [`NODE_CONFIG_ENV`] is unset.
pub const DEFAULT_NODE_CONFIG: &str = "/etc/wisp/node.toml";
/// Connections one hosted app serves at once.
const APP_MAX_CONNECTIONS: usize = 1024;
/// How long a SIGTERM'd app drains before it exits anyway.
const DRAIN: Duration = Duration::from_secs(30);

/// Set by `start` for the node-mode daemon it spawns: the daemon is spawned
/// from `/proc/self/exe`, which has the binary's real name, not the one
/// containerd ran.
pub const NODE_ENV: &str = "WISP_NODE_MODE";

/// Whether this process was started as the node-mode shim.
pub fn is_node_mode() -> bool {
    if std::env::var_os(NODE_ENV).is_some_and(|v| v == "1") {
        return true;
    }
    std::env::args_os()
        .next()
        .and_then(|a| PathBuf::from(a).file_name().map(|n| n == NODE_BINARY))
        .unwrap_or(false)
}

/// The node's engine, created with the first hosted app, and the apps it
/// loaded, by content digest: N pods of one app share one compiled app (its
/// code mapped once, its instances reusing the same pool slots), which also
/// keeps the process's memory mappings from growing with every pod.
#[derive(Default)]
pub struct NodeHost {
    engine: OnceLock<Engine>,
    apps: Mutex<std::collections::HashMap<String, App>>,
}

impl NodeHost {
    fn engine(&self, cache_dir: Option<PathBuf>) -> io::Result<&Engine> {
        if let Some(e) = self.engine.get() {
            return Ok(e);
        }
        let mut config = node_config()?;
        config.engine.cache_dir = cache_dir;
        let engine = Engine::new(&EngineSettings::for_serve(&config))
            .map_err(|e| io::Error::other(format!("failed to create the node's engine: {e}")))?;
        Ok(self.engine.get_or_init(|| engine))
    }

    /// Loads `plan`'s app and prepares it to run here: an HTTP app to be
    /// served, or a command to be run to completion. `None` when it must run
    /// as a process instead (a command reading stdin).
    ///
    /// `outputs` opens the container's stdout and stderr, and is called only
    /// once the app is to run here: a FIFO opened and closed again would give
    /// its reader (ctr) end-of-file before the process that runs instead
    /// writes a byte.
    pub fn prepare(
        &self,
        plan: &WasmPlan,
        netns: Option<PathBuf>,
        stdin: bool,
        outputs: impl FnOnce() -> io::Result<(Option<File>, Option<File>)>,
    ) -> io::Result<Option<HostedApp>> {
        if plan.executor == Executor::Command && stdin {
            return Ok(None);
        }
        let engine = self.engine(plan.cache_dir.clone())?;
        let module = plan.module.display().to_string();
        let bytes = std::fs::read(&plan.module)
            .map_err(|e| io::Error::new(e.kind(), format!("failed to read `{module}`: {e}")))?;
        let digest = wisp_oci::sha256_digest(&bytes);
        let cached = lock(&self.apps).get(&digest).cloned();
        let app = match cached {
            Some(app) => app,
            None => {
                let app = App::from_bytes(engine, &plan.module, &bytes, false).map_err(|e| {
                    io::Error::other(format!(
                        "failed to load `{module}`: {}",
                        wisp_runtime::error_chain(&e)
                    ))
                })?;
                lock(&self.apps).insert(digest, app.clone());
                app
            }
        };
        let serve = plan
            .executor
            .serves(app.shape(), &module)
            .map_err(io::Error::other)?;
        if !serve {
            if stdin {
                return Ok(None);
            }
            let (stdout, stderr) = outputs()?;
            return Ok(Some(HostedApp {
                work: Work::Run(Mutex::new(Some(Box::new(Command {
                    engine: engine.clone(),
                    app,
                    config: plan.config().map_err(io::Error::other)?,
                    args: plan.args.clone(),
                    stdout,
                    stderr,
                })))),
                meter: Arc::default(),
                running: Mutex::new(None),
            }));
        }
        let config = plan.serve_config().map_err(io::Error::other)?;
        let (stdout, stderr) = outputs()?;
        let server = HttpServer::hosted(engine, &app, &config, GuestOutput::files(stdout, stderr))
            .map_err(|e| {
                io::Error::other(format!(
                    "`{module}` cannot be served: {}",
                    wisp_runtime::error_chain(&e)
                ))
            })?;
        let rt = current_thread()?;
        rt.block_on(server.instantiate_once())
            .map_err(|e| io::Error::other(format!("failed to instantiate `{module}`: {e:#}")))?;
        // One listener per serving thread, in one SO_REUSEPORT group: the
        // kernel spreads the connections over them. A thread per CPU of the
        // container's limit, rounded up; one without a limit. Unlike a per-pod
        // app, which then takes every CPU, a node hosts many apps, and each
        // idle thread costs about 90 KiB of PSS (0.17 -> 0.26 MiB marginal per
        // idle pod in the density bench).
        let threads = if plan.cpu_limited { plan.threads } else { 1 };
        let (listener, netns) = bind_in_netns(netns, plan.listen, threads, config.server.backlog)?;
        Ok(Some(HostedApp {
            work: Work::Serve {
                server: Arc::new(Mutex::new(Some(server))),
                listener: Mutex::new(Some((listener, netns))),
            },
            meter: Arc::default(),
            running: Mutex::new(None),
        }))
    }
}

/// The node's config: the file [`NODE_CONFIG_ENV`] names, else
/// [`DEFAULT_NODE_CONFIG`] if it exists, else the defaults with a pool of
/// [`NODE_INSTANCES`]. A file that does not parse or validate fails the
/// container that would have created the engine, naming the file.
fn node_config() -> io::Result<Config> {
    let path = match std::env::var_os(NODE_CONFIG_ENV).filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::from(DEFAULT_NODE_CONFIG)).filter(|p| p.exists()),
    };
    node_config_from(path.as_deref())
}

fn node_config_from(path: Option<&Path>) -> io::Result<Config> {
    let Some(path) = path else {
        let mut config = Config::default();
        config.engine.pooling.total_instances = NODE_INSTANCES;
        return Ok(config);
    };
    let bad = |what: String| io::Error::other(format!("node config {}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut config = Config::from_toml_str(&text).map_err(|e| bad(e.to_string()))?;
    // Only `[engine.pooling]` is the node's; each app's concurrency comes from
    // its container (WISP_MAX_CONCURRENT_REQUESTS), so the check that the
    // pool holds `wisp serve`'s concurrency does not apply.
    config.server.max_concurrent_requests = config.engine.pooling.total_instances;
    config
        .validate()
        .map_err(|e| bad(wisp_runtime::error_chain(&e)))?;
    Ok(config)
}

/// A Wasm container run by the node process: an HTTP app it serves, or a
/// command it runs to completion.
pub struct HostedApp {
    work: Work,
    /// A command's instance counters (a served app's are its server's).
    meter: Arc<Meter>,
    running: Mutex<Option<Running>>,
}

enum Work {
    Serve {
        /// Until the app has stopped: the server holds the container's
        /// stdout and stderr FIFOs, which close with it, as a process's do
        /// at its exit (containerd 2 waits for their end of file before it
        /// deletes the task).
        server: Arc<Mutex<Option<HttpServer>>>,
        /// A listener per serving thread and the pod's netns, until Start.
        listener: Mutex<Option<(Vec<TcpListener>, File)>>,
    },
    /// Until Start.
    Run(Mutex<Option<Box<Command>>>),
}

struct Command {
    engine: Engine,
    app: App,
    config: Config,
    args: Vec<String>,
    stdout: Option<File>,
    stderr: Option<File>,
}

struct Running {
    /// The signal that stopped it (0 while running).
    signal: Arc<AtomicI32>,
    drain: Option<tokio::sync::oneshot::Sender<()>>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
}

impl HostedApp {
    /// Starts it on a thread of its own (an HTTP app: and one more per
    /// further listener, see [`serve_threads`]); `on_exit` gets the exit status
    /// (the command's, or 128 + the signal that stopped it) at the end.
    ///
    /// `cpu_tasks` are the container cgroup's CPU `tasks` files: the thread
    /// joins them, so the spec's CPU limit holds it and cpuacct counts it.
    pub fn start(
        &self,
        id: &str,
        cpu_tasks: Vec<PathBuf>,
        on_exit: impl FnOnce(i32) + Send + 'static,
    ) -> io::Result<()> {
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = Arc::new(AtomicI32::new(0));
        let got = signal.clone();
        let name = format!("wisp-app-{}", &id[..id.len().min(8)]);
        let join_cpu = move || {
            for tasks in &cpu_tasks {
                if let Err(e) = std::fs::write(tasks, "0") {
                    tracing::warn!(error = %e, file = %tasks.display(), "hosted app: CPU cgroup not joined");
                }
            }
        };
        match &self.work {
            Work::Serve { server, listener } => {
                let (listeners, netns) = lock(listener)
                    .take()
                    .ok_or_else(|| io::Error::other("the app was started already"))?;
                let slot = server.clone();
                let server = lock(server)
                    .clone()
                    .ok_or_else(|| io::Error::other("the app has stopped"))?;
                std::thread::Builder::new().name(name.clone()).spawn(move || {
                    // The app's threads live in the pod's netns, so the guests'
                    // outgoing connections (made on these threads, as are the
                    // resolver threads they start) leave from the pod, as they
                    // would from a container process.
                    if let Err(e) = setns(&netns, CloneFlags::CLONE_NEWNET) {
                        tracing::error!(error = %e, "hosted app: failed to join the pod's netns");
                        on_exit(1);
                        return;
                    }
                    drop(netns);
                    join_cpu();
                    let code = serve_threads(server, listeners, &name, drain_rx, kill_rx, &got);
                    // The last handle on the app's outputs goes before its exit
                    // is reported.
                    lock(&slot).take();
                    on_exit(code);
                })?;
            }
            Work::Run(command) => {
                let command = lock(command)
                    .take()
                    .ok_or_else(|| io::Error::other("the command was started already"))?;
                let meter = self.meter.clone();
                std::thread::Builder::new().name(name).spawn(move || {
                    join_cpu();
                    // No wait for Start to return: an exit during Start is
                    // published after TaskStart (`Service::start`), and the
                    // time CRI shows as started is containerd's own, stamped
                    // after Start returns, so a fast command (under runc too)
                    // may show finishing before it started.
                    let (code, _) = run_until_killed(kill_rx, &got, command.run(meter));
                    on_exit(code);
                })?;
            }
        }
        *lock(&self.running) = Some(Running {
            signal,
            drain: Some(drain_tx),
            kill: Some(kill_tx),
        });
        Ok(())
    }

    /// Delivers a signal as a process would take it. A Wasm guest has no
    /// signal handlers: SIGKILL stops at once; SIGTERM, SIGINT, SIGQUIT and
    /// SIGHUP stop a command at once and make an HTTP app drain its
    /// in-flight requests first; others are ignored.
    pub fn signal(&self, sig: i32) {
        let mut running = lock(&self.running);
        let Some(r) = running.as_mut() else { return };
        if !matches!(
            sig,
            libc::SIGKILL | libc::SIGTERM | libc::SIGINT | libc::SIGQUIT | libc::SIGHUP
        ) {
            return;
        }
        let _ = r
            .signal
            .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        let now = sig == libc::SIGKILL || matches!(self.work, Work::Run(_));
        let stop = if now { r.kill.take() } else { r.drain.take() };
        if let Some(s) = stop {
            let _ = s.send(());
        }
    }

    /// The memory cap of the app's instances from now on (a container
    /// Update); `None` lifts it. A running command keeps its own.
    pub fn set_max_memory(&self, max: Option<u64>) {
        if let Work::Serve { server, .. } = &self.work
            && let Some(server) = lock(server).as_ref()
        {
            server.set_max_memory(max);
        }
    }

    pub fn usage(&self) -> Usage {
        match &self.work {
            Work::Serve { server, .. } => lock(server)
                .as_ref()
                .map_or_else(Usage::default, HttpServer::usage),
            Work::Run(_) => self.meter.usage(),
        }
    }
}

impl Command {
    /// Runs the command to its end; its exit status.
    async fn run(self: Box<Self>, meter: Arc<Meter>) -> i32 {
        let Self {
            engine,
            app,
            config,
            args,
            stdout,
            stderr,
        } = *self;
        // A second handle on stderr for wisp's own message about a trap.
        let mut report = stderr.as_ref().and_then(|f| f.try_clone().ok());
        let stdio = command::Stdio::files(stdout, stderr);
        let program = args.first().map_or("guest", String::as_str);
        let (code, message) =
            match command::run_metered(&engine, &app, &config, &args, stdio, meter).await {
                Ok(outcome) => (
                    outcome.exit_code(),
                    crate::backend::child::outcome_message(program, &outcome),
                ),
                Err(e) => (1, Some(format!("wisp: {}", wisp_runtime::error_chain(&e)))),
            };
        if let (Some(m), Some(f)) = (message, report.as_mut()) {
            let _ = writeln!(f, "{m}");
        }
        code
    }
}

/// How the app's extra serving threads are told to stop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Serve,
    Drain,
    Kill,
}

/// Serves the app on this thread, with the first listener, and on a thread
/// per further listener. The extra threads are started from this one, so they
/// are in the pod's netns and the container's CPU cgroups as it is (a new
/// thread takes both from the thread that creates it). They share the app's
/// connection limit; a drain or a kill reaches all of them, and this returns
/// once every one has stopped: the exit status, as [`run_until_killed`].
fn serve_threads(
    server: HttpServer,
    listeners: Vec<TcpListener>,
    name: &str,
    drain_rx: tokio::sync::oneshot::Receiver<()>,
    kill_rx: tokio::sync::oneshot::Receiver<()>,
    got: &Arc<AtomicI32>,
) -> i32 {
    let conns = Arc::new(tokio::sync::Semaphore::new(APP_MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(Stop::Serve);
    let mut listeners = listeners.into_iter();
    let Some(first) = listeners.next() else {
        tracing::error!("hosted app: no listener");
        return 1;
    };
    let mut workers = Vec::new();
    for (i, l) in listeners.enumerate() {
        let (server, conns, stop) = (server.clone(), conns.clone(), stop_rx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{}", i + 1))
            .spawn(move || serve_worker(server, l, conns, stop));
        match spawned {
            Ok(h) => workers.push(h),
            // Fewer threads serve; the listener is closed, so the kernel
            // sends its connections to the others.
            Err(e) => tracing::warn!(error = %e, "hosted app: serving thread not started"),
        }
    }
    let drained = got.clone();
    let draining = stop_tx.clone();
    let serve = serve_on(server, first, conns, async move {
        let _ = drain_rx.await;
        let _ = draining.send(Stop::Drain);
    });
    let (code, killed) = run_until_killed(kill_rx, got, async move {
        if serve.await {
            128 + drained.load(Ordering::SeqCst)
        } else {
            1
        }
    });
    // Drained: the others drain too (told when this one began); killed, or
    // ended without a drain: they stop at once.
    if killed || *stop_tx.borrow() == Stop::Serve {
        let _ = stop_tx.send(Stop::Kill);
    }
    for w in workers {
        let _ = w.join();
    }
    code
}

/// One extra serving thread of a hosted app, until told to stop.
fn serve_worker(
    server: HttpServer,
    listener: TcpListener,
    conns: Arc<tokio::sync::Semaphore>,
    stop: tokio::sync::watch::Receiver<Stop>,
) {
    let Ok(rt) = current_thread() else { return };
    let mut killed = stop.clone();
    let mut drain = stop;
    // A closed channel (the app's thread is gone) stops it as a kill.
    rt.block_on(async move {
        tokio::select! {
            _ = serve_on(server, listener, conns, async move {
                let _ = drain.wait_for(|s| *s != Stop::Serve).await;
            }) => {}
            _ = killed.wait_for(|s| *s == Stop::Kill) => {}
        }
    });
}

/// Serves `listener` on this thread's runtime until `shutdown` and the
/// drain after it; false if the listener could not join the runtime.
async fn serve_on(
    server: HttpServer,
    listener: TcpListener,
    conns: Arc<tokio::sync::Semaphore>,
    shutdown: impl std::future::Future<Output = ()>,
) -> bool {
    match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => {
            server.serve_sharing(l, conns, DRAIN, shutdown).await;
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "hosted app: listener");
            false
        }
    }
}

/// Runs `work` on a current-thread runtime of this thread until it ends or
/// `kill` fires (then 128 + the signal recorded in `got`), and whether the
/// kill fired: a SIGKILL during a drain reports the SIGTERM that began it.
/// Dropping the runtime drops the work's connections and instances.
fn run_until_killed(
    kill: tokio::sync::oneshot::Receiver<()>,
    got: &AtomicI32,
    work: impl std::future::Future<Output = i32>,
) -> (i32, bool) {
    let Ok(rt) = current_thread() else {
        return (1, true);
    };
    let ended = rt.block_on(async move {
        tokio::select! {
            code = work => (code, false),
            _ = kill => (128 + got.load(Ordering::SeqCst), true),
        }
    });
    drop(rt);
    ended
}

/// Binds `count` listeners on `addr` (one SO_REUSEPORT group when there are
/// several) inside the network namespace at `netns`, or a fresh one when
/// there is none, from a helper thread: a netns is per thread, and a socket
/// keeps the one it was made in. Returns the listeners and the netns.
fn bind_in_netns(
    netns: Option<PathBuf>,
    addr: std::net::SocketAddr,
    count: usize,
    backlog: u32,
) -> io::Result<(Vec<TcpListener>, File)> {
    std::thread::Builder::new()
        .name("wisp-bind".into())
        .spawn(move || -> io::Result<(Vec<TcpListener>, File)> {
            match &netns {
                Some(path) => {
                    let f = File::open(path).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("failed to open netns {}: {e}", path.display()),
                        )
                    })?;
                    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| {
                        io::Error::other(format!("failed to join netns {}: {e}", path.display()))
                    })?;
                }
                None => {
                    unshare(CloneFlags::CLONE_NEWNET)
                        .map_err(|e| io::Error::other(format!("failed to create a netns: {e}")))?;
                    crate::os::netns::loopback_up()?;
                }
            }
            if count <= 1 {
                let l = TcpListener::bind(addr).map_err(|e| {
                    io::Error::new(e.kind(), format!("failed to listen on {addr}: {e}"))
                })?;
                l.set_nonblocking(true)?;
                return Ok((vec![l], File::open("/proc/thread-self/ns/net")?));
            }
            // tokio's socket options need a runtime to listen; the listeners
            // leave it as std ones.
            let rt = current_thread()?;
            let mut listeners = Vec::with_capacity(count);
            let mut at = addr;
            for _ in 0..count {
                let l = rt
                    .block_on(async { wisp_runtime::http::bind_group(at, backlog, true) })
                    .map_err(|e| {
                        let e = wisp_runtime::error_chain(&e);
                        io::Error::other(format!("failed to listen on {addr}: {e}"))
                    })?;
                // Port 0: the others join the port the first one got.
                at = l.local_addr()?;
                listeners.push(l.into_std()?);
            }
            Ok((listeners, File::open("/proc/thread-self/ns/net")?))
        })?
        .join()
        .map_err(|_| io::Error::other("the bind thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_runtime::config::MemoryInit;

    #[test]
    fn node_config_sizes_the_pool_and_bad_files_name_themselves() {
        let defaults = node_config_from(None).unwrap();
        assert_eq!(defaults.engine.pooling.total_instances, NODE_INSTANCES);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "[engine.pooling]\ntotal-instances = 100000\nmemory-reservation = \"16MiB\"\n\
             memory-guard = 0\nkeep-resident = 0\nmemory-init = \"copy\"\n",
        )
        .unwrap();
        let pool = node_config_from(Some(&file)).unwrap().engine.pooling;
        assert_eq!(pool.total_instances, 100_000);
        assert_eq!(pool.memory_reservation.0, 16 << 20);
        assert_eq!(pool.memory_init, MemoryInit::Copy);

        let cases = [
            ("[engine.pooling]\ntotal-instances = \"lots\"\n", "lots"),
            // 100,000 slots of the default 4 GiB reservation: too much
            // address space, and the message says what to lower.
            (
                "[engine.pooling]\ntotal-instances = 100000\n",
                "memory-reservation",
            ),
        ];
        for (text, says) in cases {
            std::fs::write(&file, text).unwrap();
            let err = node_config_from(Some(&file)).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("node config {}", file.display())),
                "{err}"
            );
            assert!(err.contains(says), "{err}");
        }
        let missing = dir.path().join("absent.toml");
        let err = node_config_from(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("absent.toml"), "{err}");
    }
}
