//! A Wasm container in a process of its own (per-pod mode, and node mode's
//! commands): spawned and loaded at Create, released at Start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::Process;

use crate::backend::api::{
    Backend, CreateCtx, Created, OnExit, Register, no_wasm_terminal, stdio_error,
};
use crate::backend::proc::Proc;
use crate::backend::spawn::spawn_wasm;
use crate::bundle::plan::{self, WasmPlan};
use crate::bundle::state::StateRecord;
use crate::error::{TaskError, TaskResult};
use crate::os::cgroup::ContainerCgroup;
use crate::os::stdio::open_stdio;

pub struct WasmProcess {
    plan: WasmPlan,
    cgroup: ContainerCgroup,
    rootfs: PathBuf,
}

impl WasmProcess {
    /// Spawns the container's process for `plan` in `cgroup` (limits first,
    /// as runc sets them: the process is charged from its first page).
    pub fn create(
        ctx: &CreateCtx<'_>,
        plan: WasmPlan,
        cgroup: ContainerCgroup,
    ) -> TaskResult<Created> {
        ctx.apply_limits(&cgroup)?;
        let mut stdio = match open_stdio(ctx.paths) {
            Ok(s) => s,
            Err(e) => {
                let _ = cgroup.delete();
                return Err(stdio_error("container")(e));
            }
        };
        let feeder = stdio.feeder.take();
        let spawned = spawn_wasm(&plan, stdio, &cgroup, |pid| {
            ctx.register.register(pid, ctx.init);
            Ok(())
        });
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                // Forgotten first: an exit of a container never created is
                // not published.
                ctx.register.forget(ctx.init.lock().pid);
                let _ = ctx.init.wait_timeout(Duration::from_secs(5));
                let _ = cgroup.delete();
                return Err(TaskError::invalid(e.to_string()));
            }
        };
        ctx.init.lock().control = Some(spawned.control);
        let record = StateRecord {
            linux: false,
            pid: spawned.pid,
            cgroup: Some(cgroup.path().into()),
            mounted: None,
        };
        let oom_dir = cgroup.memory_dir();
        Ok(Created {
            backend: Box::new(Self {
                plan,
                cgroup,
                rootfs: ctx.rootfs.into(),
            }),
            record,
            feeder,
            oom_dir,
        })
    }
}

/// Spawns exec `proc` of a Wasm container whose init runs `init_plan`: a
/// command of the same app (or another module of the rootfs), in the init's
/// namespaces, or in `join` where given (a hosted app's init is the node
/// process, in the host's namespaces: the pod's, from the spec, instead).
#[allow(clippy::too_many_arguments)]
pub fn spawn_exec(
    init_plan: &WasmPlan,
    cgroup: &ContainerCgroup,
    rootfs: &Path,
    proc: &Arc<Proc>,
    process: &Process,
    init_pid: u32,
    join: Option<Vec<PathBuf>>,
    register: Register<'_>,
) -> TaskResult<()> {
    if proc.stdio.terminal {
        return Err(no_wasm_terminal("execs"));
    }
    let mut exec_plan = plan::exec_plan(init_plan, process, rootfs, init_pid)
        .map_err(|e| TaskError::invalid(e.to_string()))?;
    if let Some(join) = join {
        exec_plan.join = join;
        // The init is the node process, whose mount and pid namespaces are
        // the host's: the exec sets up the container's own root instead, as
        // the app's process would have in per-pod mode.
        if let (Some(c), Some(init)) = (exec_plan.confine.as_mut(), init_plan.confine.as_ref()) {
            c.root = init.root.clone();
            c.join_late.clear();
            c.pid = init.pid.clone();
        }
    }
    let mut stdio = open_stdio(&proc.stdio).map_err(stdio_error("exec"))?;
    let feeder = stdio.feeder.take();
    let spawned = spawn_wasm(&exec_plan, stdio, cgroup, |pid| {
        register.register(pid, proc);
        Ok(())
    })
    .map_err(|e| {
        register.forget(proc.lock().pid);
        TaskError::invalid(e.to_string())
    })?;
    let mut s = proc.lock();
    s.control = Some(spawned.control);
    s.stdin = feeder;
    Ok(())
}

/// Releases a created Wasm process.
pub fn release(proc: &Proc) -> TaskResult<()> {
    tracing::debug!(id = proc.event_id(), "starting");
    proc.release()
        .map_err(|e| TaskError::internal(format!("failed to start: {e}")))
}

impl Backend for WasmProcess {
    fn cgroup(&self) -> Option<&ContainerCgroup> {
        Some(&self.cgroup)
    }

    fn start(&self, init: &Arc<Proc>, _on_exit: OnExit) -> TaskResult<()> {
        release(init)
    }

    fn exec(
        &self,
        proc: &Arc<Proc>,
        process: &Process,
        _spec_json: Vec<u8>,
        init_pid: u32,
        register: Register<'_>,
    ) -> TaskResult<()> {
        spawn_exec(
            &self.plan,
            &self.cgroup,
            &self.rootfs,
            proc,
            process,
            init_pid,
            None,
            register,
        )
    }

    fn start_exec(&self, proc: &Arc<Proc>, _register: Register<'_>) -> TaskResult<()> {
        release(proc)
    }

    fn execs_die_with_init(&self) -> bool {
        true
    }
}
