//! The shim binary's lifecycle: `start` (one shim per pod), `delete`
//! (cleanup after a shim died), and the daemon that serves the Task API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{Config, ExitSignal, Flags, Shim, StartOpts, spawn};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::backend::runc::Runc;
use crate::bundle::plan::SANDBOX_ID_ANNOTATION;
use crate::bundle::state::{STATE_FILE, StateRecord};
use crate::os::cgroup::ContainerCgroup;
use crate::os::threads::single_threaded;
use crate::task::events::timestamp;

/// The runtime type containerd is configured with.
pub const RUNTIME_ID: &str = wisp_k8s::PER_POD.runtime_type;

pub struct WispShim {
    /// The ttrpc socket this daemon serves (`unix:///run/containerd/s/...`).
    socket: String,
    id: String,
    exit: Arc<ExitSignal>,
    /// Started as `containerd-shim-wisp-node-v1`: one daemon for the node.
    node: bool,
}

/// The crate's `run` handles `start` and `delete` only; the daemon is
/// [`crate::lifecycle::daemon`], which serves [`Service`] with the async ttrpc server.
/// The crate's synchronous server, the only user of `Shim::T`, never runs.
pub struct NotServed;

impl containerd_shim::Task for NotServed {}

impl Shim for WispShim {
    type T = NotServed;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Self {
            socket: args.socket.clone(),
            id: args.id.clone(),
            exit: Arc::default(),
            node: crate::backend::node::is_node_mode(),
        }
    }

    /// Containers of one pod share a shim, as with containerd's runc shim:
    /// the socket address derives from the pod's sandbox id, and a second
    /// `start` for the same pod finds the running shim and returns its address.
    ///
    /// In node mode every container of the namespace shares one daemon.
    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = if self.node {
            Some("wisp-node".to_string())
        } else {
            None
        };
        let grouping = grouping
            .or_else(sandbox_id)
            .unwrap_or_else(|| opts.id.clone());
        // A daemon already serving the group (the pod's, or in node mode the
        // node's) answers on its socket: hand containerd that address without
        // starting a second daemon, which would only find the socket taken.
        let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &grouping);
        let path = address.trim_start_matches("unix://");
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            write_address(&address)?;
            return Ok(address);
        }
        // Writing the address to a containerd that went away fails with an
        // error rather than killing `start`; the daemon installs its own
        // SIGPIPE handler.
        // SAFETY: setting a signal's disposition to SIG_IGN is async-signal-safe
        // and touches no memory.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        if single_threaded() {
            // Bound here, before the daemon exists, as containerd's own shims
            // do: containerd's connection waits in the socket's backlog while
            // the daemon starts, so `start` returns without waiting for it.
            let listener = crate::lifecycle::daemon::listen(&address).map_err(|e| {
                containerd_shim::Error::IoError {
                    context: "the shim socket".into(),
                    err: std::io::Error::other(e.to_string()),
                }
            })?;
            // None: a racing `start` bound it first, and its daemon answers.
            if let Some(listener) = listener {
                fork_daemon(&opts, &address, listener, self.node)?;
            }
        } else {
            // One malloc arena: the daemon's threads mostly sleep, and glibc's
            // per-thread arenas would cost resident memory per container.
            let mut vars = vec![("MALLOC_ARENA_MAX", "1")];
            if self.node {
                vars.push((crate::backend::node::NODE_ENV, "1"));
            }
            spawn(opts, &grouping, vars)?;
        }
        write_address(&address)?;
        Ok(address)
    }

    /// Runs in the bundle after the shim process is gone: kills what is left
    /// of the container and removes its cgroup and rootfs mount.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let record: Option<StateRecord> = std::fs::read(bundle.join(STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut pid = 0;
        if let Some(r) = record {
            pid = r.pid;
            if r.linux {
                let _ = Runc::new(&self.id, &bundle).delete();
            } else {
                if pid != 0 {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    wait_gone(pid);
                }
                if let Some(cg) = r.cgroup {
                    let _ = ContainerCgroup::load(&cg).delete();
                }
            }
            if let Some(m) = r.mounted {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
            let _ = std::fs::remove_file(bundle.join(STATE_FILE));
        }
        Ok(DeleteResponse {
            pid,
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: MessageField::some(timestamp(SystemTime::now())),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
        crate::lifecycle::daemon::remove_socket(&self.socket);
    }

    fn create_task_service(&self, _: RemotePublisher) -> NotServed {
        NotServed
    }
}

/// `start` without the crate's bootstrap, which first installs signal
/// handlers and makes this short-lived process a subreaper, for nothing: this
/// process only finds or starts the daemon and prints its address.
pub fn start(runtime_id: &str, flags: Flags) -> containerd_shim::Result<()> {
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS")?,
        namespace: flags.namespace.clone(),
        debug: flags.debug,
    };
    let mut shim = WispShim::new(runtime_id, &flags, &mut Config::default());
    let address = shim.start_shim(opts)?;
    write_stdout(address.as_bytes())
}

/// `delete` without the crate's bootstrap (signal handlers, a subreaper, a
/// signal thread), which containerd runs after every shim it disconnects
/// from and waits for before it answers the task's deletion.
pub fn delete(runtime_id: &str, flags: Flags) -> containerd_shim::Result<()> {
    use containerd_shim::protos::protobuf::Message;
    let mut shim = WispShim::new(runtime_id, &flags, &mut Config::default());
    write_stdout(&shim.delete_shim()?.write_to_bytes()?)
}

/// What containerd reads back from `start` and `delete`.
fn write_stdout(bytes: &[u8]) -> containerd_shim::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|err| containerd_shim::Error::IoError {
            context: "write stdout".into(),
            err,
        })
}

/// The CRI sandbox id among the bundle's annotations. Only the annotations
/// are decoded: the full OCI spec's deserializers are a lot of code to page
/// in for one field, in a process that lives a few milliseconds.
fn sandbox_id() -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    let bytes = std::fs::read("config.json").ok()?;
    let mut spec: Annotated = serde_json::from_slice(&bytes).ok()?;
    spec.annotations.remove(SANDBOX_ID_ANNOTATION)
}

/// Starts the daemon, serving `listener`, as a fork of this `start` process
/// rather than a new execution of the binary, as the crate's `spawn` does.
/// An exec costs 2 to 3 ms here (the kernel, the dynamic loader, glibc's CPU
/// probing and the first touches of the code), on the path of every pod
/// start. The child gets what `spawn` gives the new process: the bundle as
/// its working directory, the standard streams on /dev/null (containerd
/// reads `start`'s output until every holder has closed it), and one malloc
/// arena (the daemon's threads mostly sleep, and glibc's per-thread arenas
/// would cost resident memory per container).
fn fork_daemon(
    opts: &StartOpts,
    address: &str,
    listener: std::os::unix::net::UnixListener,
    node: bool,
) -> containerd_shim::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|err| containerd_shim::Error::IoError {
            context: "open /dev/null".into(),
            err,
        })?;
    // SAFETY: this process has a single thread (the caller checked), so
    // the child inherits no lock held by another thread and may run any code.
    let forked = unsafe { nix::unistd::fork() }.map_err(|e| containerd_shim::Error::IoError {
        context: "fork the daemon".into(),
        err: e.into(),
    })?;
    match forked {
        nix::unistd::ForkResult::Child => {
            // SAFETY: dup2 onto the standard descriptors, which no Rust
            // handle owns; mallopt before this process starts any thread.
            let ok = unsafe {
                libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) >= 0
                    && libc::dup2(null.as_raw_fd(), libc::STDIN_FILENO) >= 0
                    && libc::dup2(null.as_raw_fd(), libc::STDERR_FILENO) >= 0
                    && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
            };
            drop(null);
            if !ok {
                std::process::exit(1);
            }
            blank_start_action();
            let flags = Flags {
                namespace: opts.namespace.clone(),
                id: opts.id.clone(),
                address: opts.address.clone(),
                socket: address.to_string(),
                debug: opts.debug,
                ..Default::default()
            };
            let runtime_id = if node {
                crate::backend::node::NODE_RUNTIME_ID
            } else {
                RUNTIME_ID
            };
            let code = match crate::lifecycle::daemon::serve(runtime_id, flags, Some(listener)) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("{runtime_id}: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
        nix::unistd::ForkResult::Parent { .. } => Ok(()),
    }
}

/// The forked daemon's command line is still the `start` command's, ending
/// in `start`, which people reading `ps` (and tools) take for the
/// short-lived start command. That last argument is blanked, so the daemon
/// shows its flags and no action, like a daemon the crate would have
/// executed.
fn blank_start_action() {
    crate::os::proctitle::blank_last("start");
}

/// Waits (briefly) until `pid` has been reaped or is gone.
fn wait_gone(pid: u32) {
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
