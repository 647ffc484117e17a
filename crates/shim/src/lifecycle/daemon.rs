//! The shim daemon: the Task API served over ttrpc from one async runtime.
//!
//! `containerd-shim`'s own daemon serves ttrpc with the crate's synchronous
//! server, which gives every client connection six threads (a handler, a
//! reader, a writer and three workers). containerd holds one connection per
//! task, so a pod costs twelve threads, and a node-mode process hosting 1,000
//! pods would hold 12,000 threads and, with their stacks and signal stacks,
//! about 50,000 memory mappings, nearly `vm.max_map_count`'s default. Here
//! connections are tasks of one current-thread runtime instead; calls that
//! block (spawning, mounting, runc, waiting out a kill) run on a small
//! blocking pool that shrinks when idle, and Wait holds no thread at all.
//!
//! The rest of the daemon is what the crate's does: a child subreaper whose
//! SIGCHLD reaper feeds the crate's exit monitor, the crate's logger on the
//! bundle's `log` FIFO, the listener on `-socket`, and stdout closed once
//! serving so `start` returns.
//!
//! `start` and `delete` still run through `containerd_shim::run`.

use std::os::fd::IntoRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use containerd_shim::protos::shim::shim::CheckpointTaskRequest;
use containerd_shim::protos::shim_async::{Task, create_task};
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::protos::ttrpc::asynchronous::Server;
use containerd_shim::synchronous::monitor::monitor_notify_by_pid;
use containerd_shim::util::write_address;
use containerd_shim::{Config, ExitSignal, Flags};
use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGPIPE, SIGTERM};
use signal_hook::iterator::Signals;

use crate::backend::node::NODE_RUNTIME_ID;
use crate::error::TaskError;
use crate::task::events::Events;
use crate::task::service::Service;

/// Threads the blocking calls may use at once; idle ones exit after
/// [`BLOCKING_KEEP_ALIVE`].
const MAX_BLOCKING_THREADS: usize = 64;
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Errors that stop the daemon before it serves.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Shim(#[from] containerd_shim::Error),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("ttrpc: {0}")]
    Ttrpc(#[from] ttrpc::Error),
    #[error("the shim socket (-socket) is empty")]
    NoSocket,
    #[error("TTRPC_ADDRESS is not set")]
    NoTtrpcAddress,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Io { what, source }
}

/// Serves the Task API until the shim's last container is gone, on
/// `listener` if `start` bound it, else on the socket `-socket` names.
pub fn serve(
    runtime_id: &str,
    flags: Flags,
    listener: Option<std::os::unix::net::UnixListener>,
) -> Result<(), DaemonError> {
    if flags.socket.is_empty() {
        return Err(DaemonError::NoSocket);
    }
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| DaemonError::NoTtrpcAddress)?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| io("PR_SET_CHILD_SUBREAPER")(e.into()))?;
    // Forked first, with no handler, thread or log of the daemon's yet; the
    // subreaper bit is set, so the processes it forks come back to us.
    let zygote = if crate::os::threads::single_threaded() {
        // SAFETY: this process has a single thread (just checked).
        unsafe { crate::backend::zygote::start() }
    } else {
        Ok(())
    };
    // Registered before any container process exists, so no SIGCHLD is
    // missed.
    let signals = Signals::new([SIGTERM, SIGINT, SIGPIPE, SIGCHLD]).map_err(io("signals"))?;
    // Beside the start-up, rather than in the first Create. After the
    // zygote's fork, which needs this process single-threaded.
    let _ = std::thread::Builder::new()
        .name("wisp-cgroups".into())
        .spawn(crate::os::cgroup::prepare);
    let config = Config::default();
    containerd_shim::logger::init(
        flags.debug,
        &config.default_log_level,
        &flags.namespace,
        &flags.id,
    )?;
    if let Err(e) = zygote {
        tracing::warn!("no zygote ({e}): container processes are executed");
    }
    let exit = Arc::new(ExitSignal::default());
    let events = Events::start(flags.namespace.clone(), ttrpc_address);
    let service = Service::new(
        events,
        &flags.namespace,
        &flags.address,
        exit.clone(),
        runtime_id == NODE_RUNTIME_ID,
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .thread_name("wisp-task")
        .build()
        .map_err(io("runtime"))?;
    runtime.block_on(async move {
        let listener = match listener {
            Some(l) => Some(l),
            None => listen(&flags.socket)?,
        };
        let Some(listener) = listener else {
            // Another daemon serves this socket: containerd gets its address.
            server_started();
            return Ok(());
        };
        let tasks = create_task(Arc::new(TaskService(service)));
        let mut server = Server::new()
            .add_listener(listener.into_raw_fd())?
            .set_domain_unix()
            .register_service(tasks);
        server.start().await?;
        server_started();
        std::thread::Builder::new()
            .name("wisp-reaper".into())
            .spawn(move || reap(signals))
            .map_err(io("reaper thread"))?;
        tracing::info!("serving the Task API on {}", flags.socket);
        let socket = flags.socket.clone();
        let _ = tokio::task::spawn_blocking(move || {
            exit.wait();
            remove_socket(&socket);
        })
        .await;
        tracing::info!("shutting down");
        let _ = server.shutdown().await;
        crate::backend::zygote::stop();
        Ok(())
    })
}

/// Removes the daemon's socket once it stops serving. The crate removes it
/// from the address it reads back from the bundle; containerd deletes the
/// bundle right after Shutdown, and when it wins that race the socket
/// leaks. The flag has the same address and needs no file.
pub fn remove_socket(socket: &str) {
    let path = socket.trim_start_matches("unix://");
    if !path.is_empty() && Path::new(path).exists() {
        let _ = std::fs::remove_file(path);
    }
}

/// Binds the socket, or `None` when a live daemon already serves it (a
/// racing `start`); a stale socket is replaced.
pub fn listen(socket: &str) -> Result<Option<std::os::unix::net::UnixListener>, DaemonError> {
    let path = Path::new(socket.trim_start_matches("unix://"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating the socket's directory"))?;
    }
    match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            for _ in 0..5 {
                if ttrpc::Client::connect(socket).is_ok() {
                    write_address(socket)?;
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            std::fs::remove_file(path).map_err(io("removing a stale socket"))?;
            std::os::unix::net::UnixListener::bind(path)
                .map(Some)
                .map_err(io("binding the shim socket"))
        }
        Err(e) => Err(io("binding the shim socket")(e)),
    }
}

/// `start` waits for the daemon's stdout to close before it answers
/// containerd; it is pointed at stderr (containerd's log) instead.
fn server_started() {
    // SAFETY: dup2 on two descriptors this process owns; fd 1 is replaced
    // atomically and nothing holds a Rust handle that owns it.
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        tracing::error!(
            "failed to close stdout: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Reaps every child (the shim is their subreaper) and reports each exit to
/// the crate's monitor, where the service's exit thread and helper commands
/// learn of it.
fn reap(mut signals: Signals) {
    for sig in signals.forever() {
        if sig == SIGPIPE {
            // Expected (a stdin feeder writing to a process that exited, a log
            // line while containerd is away), and not worth a log line: with
            // containerd gone from the log FIFO, that line's own EPIPE raised
            // the next SIGPIPE, a loop that kept a core busy.
            continue;
        }
        if sig != SIGCHLD {
            tracing::debug!("received signal {sig}");
            continue;
        }
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!("waitpid: {e}");
                    continue;
                }
            };
            if crate::backend::zygote::reaped(pid.as_raw()) {
                continue;
            }
            if let Err(e) = monitor_notify_by_pid(pid.as_raw(), code) {
                tracing::error!("failed to report the exit of {pid}: {e}");
            }
        }
    }
}

/// The Task service as the async ttrpc server calls it.
struct TaskService(Service);

impl TaskService {
    /// Runs a call that may block (processes, mounts, runc, cgroups) on the
    /// blocking pool, so the runtime's thread keeps serving other calls.
    async fn blocking<R: Send + 'static>(
        &self,
        call: impl FnOnce(&Service) -> Result<R, TaskError> + Send + 'static,
    ) -> ttrpc::Result<R> {
        let service = self.0.clone();
        match tokio::task::spawn_blocking(move || call(&service)).await {
            Ok(result) => Ok(result?),
            Err(e) => Err(TaskError::internal(format!("the call failed: {e}")).into()),
        }
    }
}

#[async_trait]
impl Task for TaskService {
    async fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        Ok(self.0.state(req)?)
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        self.blocking(move |s| s.create(req)).await
    }

    async fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        self.blocking(move |s| s.start(req)).await
    }

    async fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        self.blocking(move |s| s.delete(req)).await
    }

    async fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        self.blocking(move |s| s.pids(req)).await
    }

    async fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |s| s.pause(req)).await
    }

    async fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |s| s.resume(req)).await
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        req: CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        Ok(self.0.checkpoint(req)?)
    }

    async fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |s| s.kill(req)).await
    }

    async fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |s| s.exec(req)).await
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        Ok(self.0.resize_pty(req)?)
    }

    async fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        Ok(self.0.close_io(req)?)
    }

    async fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        self.blocking(move |s| s.update(req)).await
    }

    async fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        Ok(self.0.wait(req).await?)
    }

    async fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        self.blocking(move |s| s.stats(req)).await
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        Ok(self.0.connect(req)?)
    }

    async fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        Ok(self.0.shutdown(req)?)
    }
}
