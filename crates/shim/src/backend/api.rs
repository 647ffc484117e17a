//! The seam between the Task verbs and what runs a container: one
//! [`Backend`] per kind of container, made by that kind's `create`.
//!
//! The task layer owns the registry, the process states and the events;
//! a backend owns the host resources of one container (its cgroup, its runc
//! state, its hosted app) and acts on them. Process bookkeeping crosses the
//! seam as [`Proc`]s and the [`Register`] callback, so a backend never
//! publishes an event itself.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::protos::cgroups::metrics::Metrics;
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, Process, Spec};

use crate::backend::proc::Proc;
use crate::bundle::state::StateRecord;
use crate::error::{TaskError, TaskResult};
use crate::os::cgroup::{CgroupPlace, ContainerCgroup, container_path, systemd_running};
use crate::os::metrics;
use crate::os::stdio::{StdinFeeder, StdioPaths};

/// The task layer's table of pids: a backend registers each process it
/// starts, whose exit is reported from then on (at once if it already
/// exited), and forgets one it gives up on (its exit is then nobody's).
pub trait ProcessTable: Sync {
    fn register(&self, pid: u32, proc: &Arc<Proc>);
    fn forget(&self, pid: u32);
}

pub type Register<'a> = &'a dyn ProcessTable;

/// Reports the exit code of a process no reaper sees (a hosted app).
pub type OnExit = Box<dyn FnOnce(i32) + Send>;

/// What runs one container.
pub trait Backend: Send + Sync {
    /// Starts the created init process.
    fn start(&self, init: &Arc<Proc>, on_exit: OnExit) -> TaskResult<()>;

    /// Prepares exec `proc` (its `process` spec, as JSON in `spec_json`):
    /// a Wasm exec is spawned and loaded now, runc's waits for Start.
    fn exec(
        &self,
        proc: &Arc<Proc>,
        process: &Process,
        spec_json: Vec<u8>,
        init_pid: u32,
        register: Register<'_>,
    ) -> TaskResult<()>;

    /// Starts a prepared exec.
    fn start_exec(&self, proc: &Arc<Proc>, register: Register<'_>) -> TaskResult<()>;

    /// Signals the init process; with `all`, every process of the container.
    /// Returns whether the task layer must still signal the execs.
    fn signal_init(&self, init: &Proc, sig: Signal, all: bool) -> TaskResult<bool> {
        init.signal(sig);
        Ok(all)
    }

    /// The container's own cgroup, where the defaults below act (a Wasm
    /// process's, a pod sandbox's, a hosted app's execs').
    fn cgroup(&self) -> Option<&ContainerCgroup> {
        None
    }

    /// Every process of the container.
    fn pids(&self, init_pid: u32) -> Vec<u32> {
        self.cgroup().map_or_else(|| vec![init_pid], |c| c.procs())
    }

    /// The container's cgroup metrics.
    fn stats(&self, init_pid: u32) -> io::Result<Metrics> {
        metrics::collect(init_pid)
    }

    /// New resources (`json` is `resources` as containerd sent it).
    fn update(&self, resources: &LinuxResources, _json: &[u8]) -> TaskResult<()> {
        own_cgroup(self)?
            .apply(resources)
            .map_err(|e| TaskError::internal(format!("failed to update resources: {e}")))
    }

    fn pause(&self) -> TaskResult<()> {
        own_cgroup(self)?
            .freeze()
            .map_err(|e| TaskError::internal(e.to_string()))
    }

    fn resume(&self) -> TaskResult<()> {
        own_cgroup(self)?
            .thaw()
            .map_err(|e| TaskError::internal(e.to_string()))
    }

    /// Lets a frozen container act on a signal (a kill of a paused task);
    /// false if this backend has no freezer of its own to thaw (runc's
    /// container stays paused until Resume, as under runc's shim).
    fn thaw(&self) -> bool {
        self.cgroup().is_some_and(|c| {
            let _ = c.thaw();
            true
        })
    }

    /// Releases what the container holds on the host (cgroup, runc state).
    fn delete(&self) -> TaskResult<()> {
        match self.cgroup() {
            Some(c) => c.delete().map_err(|e| TaskError::internal(e.to_string())),
            None => Ok(()),
        }
    }

    /// The init is served by this process and has no pid of its own: a
    /// created one stops without a signal.
    fn hosted(&self) -> bool {
        false
    }

    /// Execs end with the init, as in a pid namespace whose init died.
    fn execs_die_with_init(&self) -> bool {
        false
    }
}

/// The cgroup a default method acts on; a backend without one overrides it.
fn own_cgroup<B: Backend + ?Sized>(b: &B) -> TaskResult<&ContainerCgroup> {
    b.cgroup()
        .ok_or_else(|| TaskError::internal("the container has no cgroup of its own"))
}

/// What a backend's `create` returns.
pub struct Created {
    pub backend: Box<dyn Backend>,
    /// What Delete must clean up if the shim dies (`mounted` is the task
    /// layer's to fill).
    pub record: StateRecord,
    pub feeder: Option<StdinFeeder>,
    /// The memory cgroup whose OOM kills are this container's.
    pub oom_dir: Option<PathBuf>,
}

/// What every backend's `create` is given.
pub struct CreateCtx<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub paths: &'a StdioPaths,
    pub init: &'a Arc<Proc>,
    pub register: Register<'a>,
    /// containerd's namespace, part of a cgroup path the spec leaves out.
    pub namespace: &'a str,
}

impl CreateCtx<'_> {
    /// The container's cgroup: the spec's `cgroupsPath`. The systemd
    /// driver's form is refused where no systemd runs: nothing would own
    /// the units it names.
    pub fn cgroup_place(&self) -> TaskResult<CgroupPlace> {
        let place = container_path(
            self.spec
                .linux()
                .as_ref()
                .and_then(|l| l.cgroups_path().as_ref())
                .and_then(|p| p.to_str()),
            self.namespace,
            self.id,
        )
        .map_err(TaskError::invalid)?;
        if place.systemd && !systemd_running() {
            return Err(TaskError::invalid(format!(
                "linux.cgroupsPath is in the systemd cgroup driver's form, and no systemd \
                 runs on this node (/run/systemd/system is missing): use the cgroupfs \
                 driver (kubelet's cgroupDriver: cgroupfs, SystemdCgroup = false), or run \
                 systemd; cgroup {} would have no owner",
                place.path
            )));
        }
        Ok(place)
    }

    /// Creates the container's cgroup at the spec's `cgroupsPath`.
    pub fn create_cgroup(&self) -> TaskResult<ContainerCgroup> {
        let place = self.cgroup_place()?;
        ContainerCgroup::create(&place.path).map_err(|e| TaskError::internal(e.to_string()))
    }

    /// The spec's resources.
    pub fn resources(&self) -> Option<&LinuxResources> {
        self.spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
    }

    /// Writes the spec's resources to a new cgroup before its process
    /// exists, as runc does: the process is charged from its first page.
    /// On failure the cgroup is removed.
    pub fn apply_limits(&self, cgroup: &ContainerCgroup) -> TaskResult<()> {
        let Some(r) = self.resources() else {
            return Ok(());
        };
        cgroup.apply(r).map_err(|e| {
            let _ = cgroup.delete();
            TaskError::invalid(format!("failed to apply the spec's resources: {e}"))
        })
    }
}

/// The error for a stdio containerd named that cannot be opened.
pub fn stdio_error(what: &str) -> impl Fn(io::Error) -> TaskError + '_ {
    move |e| TaskError::invalid(format!("failed to open the {what}'s stdio: {e}"))
}

/// A Wasm process has no terminal: WASI's `wasi:cli/terminal-*` interfaces
/// only say whether a stream is one, and the guest could neither size nor
/// drive a pty, so a `tty: true` container or exec is refused, not faked.
pub fn no_wasm_terminal(what: &str) -> TaskError {
    TaskError::unimplemented(format!(
        "terminal (tty) {what} are not supported for Wasm: only Linux containers of the pod \
         (run by runc) get one"
    ))
}

/// Makes the backend of a new container: the task layer's choice of kind
/// (the real one classifies the bundle; the unit tier's is a stub).
pub trait Factory: Send + Sync {
    fn create(&self, ctx: &CreateCtx<'_>) -> TaskResult<Created>;
}
