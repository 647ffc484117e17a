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
use oci_spec::runtime::Spec;

use crate::cgroup::ContainerCgroup;
use crate::events::Events;
use crate::plan::SANDBOX_ID_ANNOTATION;
use crate::runc::Runc;
use crate::service::{STATE_FILE, Service, StateRecord, timestamp};

/// The runtime type containerd is configured with.
pub const RUNTIME_ID: &str = "io.containerd.wisp.v1";

pub struct WispShim {
    namespace: String,
    /// containerd's gRPC address.
    address: String,
    /// The ttrpc socket this daemon serves (`unix:///run/containerd/s/...`).
    socket: String,
    id: String,
    exit: Arc<ExitSignal>,
    /// Started as `containerd-shim-wisp-node-v1`: one daemon for the node.
    node: bool,
}

/// The crate's `run` handles `start` and `delete` only; the daemon is
/// [`crate::daemon`], which serves [`Service`] with the async ttrpc server.
/// The crate's synchronous server, the only user of `Shim::T`, never runs.
pub struct NotServed;

impl containerd_shim::Task for NotServed {}

impl Shim for WispShim {
    type T = NotServed;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Self {
            namespace: args.namespace.clone(),
            address: args.address.clone(),
            socket: args.socket.clone(),
            id: args.id.clone(),
            exit: Arc::default(),
            node: crate::node::is_node_mode(),
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
            .or_else(|| {
                Spec::load("config.json")
                    .ok()
                    .and_then(|s| s.annotations().clone())
                    .and_then(|a| a.get(SANDBOX_ID_ANNOTATION).cloned())
            })
            .unwrap_or_else(|| opts.id.clone());
        // A daemon already serving the group (the pod's, or in node mode the
        // node's) answers on its socket: hand containerd that address without
        // spawning a second daemon, which would only find the socket taken
        // and exit. Besides saving an exec, this avoids a hang: the crate's
        // signal pipe is torn down as `start` returns, and a SIGCHLD from that
        // short-lived child arriving then made the signal handler's write
        // raise SIGPIPE, whose handler wrote again, forever.
        let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &grouping);
        if containerd_shim::protos::ttrpc::Client::connect(&address).is_ok() {
            write_address(&address)?;
            return Ok(address);
        }
        // Nothing here needs SIGPIPE; as a signal it can only feed the loop above.
        // SAFETY: setting a signal's disposition to SIG_IGN is async-signal-safe
        // and touches no memory.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        // One malloc arena: the daemon's threads mostly sleep, and glibc's
        // per-thread arenas would cost resident memory per container.
        let mut vars = vec![("MALLOC_ARENA_MAX", "1")];
        if self.node {
            vars.push((crate::node::NODE_ENV, "1"));
        }
        let (_, address) = spawn(opts, &grouping, vars)?;
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
        // The crate removes the socket after this returns, from the address
        // it reads back from the bundle; containerd deletes the bundle right
        // after Shutdown, and when it wins that race the socket leaks. The
        // flag has the same address and needs no file.
        let path = self.socket.trim_start_matches("unix://");
        if !path.is_empty() && Path::new(path).exists() {
            let _ = std::fs::remove_file(path);
        }
    }

    fn create_task_service(&self, _: RemotePublisher) -> NotServed {
        NotServed
    }
}

impl WispShim {
    /// The Task service of this daemon, publishing events through `publisher`.
    pub fn service(&self, publisher: RemotePublisher) -> Service {
        let address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
        let events = Events::start(publisher, self.namespace.clone(), address);
        Service::new(
            events,
            &self.namespace,
            &self.address,
            self.exit.clone(),
            self.node,
        )
    }
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
