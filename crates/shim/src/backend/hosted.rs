//! A Wasm app served by the node-mode process itself: no process of its
//! own, its threads in the pod's CPU cgroup and network namespace; the
//! container's cgroup holds only its execs.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim::protos::cgroups::metrics::Metrics;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process};

use crate::backend::api::{Backend, CreateCtx, Created, OnExit, Register};
use crate::backend::node::{HostedApp, NodeHost};
use crate::backend::proc::Proc;
use crate::backend::wasm::{release, spawn_exec};
use crate::bundle::plan::WasmPlan;
use crate::bundle::state::StateRecord;
use crate::error::{TaskError, TaskResult};
use crate::os::cgroup::ContainerCgroup;
use crate::os::metrics;
use crate::os::stdio::open_outputs;

pub struct Hosted {
    app: HostedApp,
    plan: WasmPlan,
    cgroup: ContainerCgroup,
    rootfs: PathBuf,
    id: String,
}

impl Hosted {
    /// The app of `plan` prepared by the node's engine, or `Err(cgroup)`
    /// back when this plan runs as a process of its own (a command given a
    /// stdin).
    pub fn create(
        ctx: &CreateCtx<'_>,
        node: &NodeHost,
        plan: WasmPlan,
        cgroup: ContainerCgroup,
    ) -> TaskResult<Result<Created, (WasmPlan, ContainerCgroup)>> {
        let netns = ctx
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .into_iter()
            .flatten()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .and_then(|n| n.path().clone())
            .filter(|p| !p.as_os_str().is_empty());
        let prepared = node.prepare(&plan, netns, !ctx.paths.stdin.is_empty(), || {
            open_outputs(ctx.paths)
        });
        let app = match prepared {
            Ok(Some(app)) => app,
            Ok(None) => return Ok(Err((plan, cgroup))),
            Err(e) => {
                let _ = cgroup.delete();
                return Err(TaskError::invalid(e.to_string()));
            }
        };
        tracing::info!(id = ctx.id, "run by the node process");
        if let Some(r) = ctx.resources()
            && let Err(e) = cgroup.apply_cpu(r)
        {
            let _ = cgroup.delete();
            return Err(TaskError::invalid(e.to_string()));
        }
        ctx.init.lock().pid = std::process::id();
        let record = StateRecord {
            linux: false,
            pid: 0,
            cgroup: Some(cgroup.path().into()),
            mounted: None,
        };
        let oom_dir = cgroup.memory_dir();
        Ok(Ok(Created {
            backend: Box::new(Self {
                app,
                plan,
                cgroup,
                rootfs: ctx.rootfs.into(),
                id: ctx.id.into(),
            }),
            record,
            feeder: None,
            oom_dir,
        }))
    }
}

/// Hosted apps have no process of their own: these calls would act on the
/// whole node process.
fn not_in_node_mode(what: &str) -> TaskError {
    TaskError::unimplemented(format!(
        "{what} is not supported for apps served in node mode"
    ))
}

impl Backend for Hosted {
    fn cgroup(&self) -> Option<&ContainerCgroup> {
        Some(&self.cgroup)
    }

    fn start(&self, _init: &Arc<Proc>, on_exit: OnExit) -> TaskResult<()> {
        self.app
            .start(&self.id, self.cgroup.cpu_thread_files(), on_exit)
            .map_err(|e| TaskError::internal(format!("failed to start: {e}")))
    }

    fn exec(
        &self,
        proc: &Arc<Proc>,
        process: &Process,
        _spec_json: Vec<u8>,
        init_pid: u32,
        register: Register<'_>,
    ) -> TaskResult<()> {
        // The init is the node process, in the host's namespaces: an exec
        // joins the pod's, from the spec, instead.
        spawn_exec(
            &self.plan,
            &self.cgroup,
            &self.rootfs,
            proc,
            process,
            init_pid,
            Some(self.plan.join.clone()),
            register,
        )
    }

    fn start_exec(&self, proc: &Arc<Proc>, _register: Register<'_>) -> TaskResult<()> {
        release(proc)
    }

    fn signal_init(
        &self,
        _init: &Proc,
        sig: nix::sys::signal::Signal,
        all: bool,
    ) -> TaskResult<bool> {
        self.app.signal(sig as i32);
        Ok(all)
    }

    fn pids(&self, _init_pid: u32) -> Vec<u32> {
        let mut pids = vec![std::process::id()];
        pids.extend(self.cgroup.procs());
        pids
    }

    fn stats(&self, _init_pid: u32) -> io::Result<Metrics> {
        Ok(metrics::hosted(self.app.usage()))
    }

    /// A hosted app's limits are its threads' CPU cgroup and its instances'
    /// memory cap, not the node process's cgroups.
    fn update(&self, resources: &LinuxResources, _json: &[u8]) -> TaskResult<()> {
        self.cgroup
            .apply_cpu(resources)
            .map_err(|e| TaskError::internal(e.to_string()))?;
        if let Some(limit) = resources.memory().as_ref().and_then(|m| m.limit()) {
            self.app.set_max_memory((limit > 0).then_some(limit as u64));
        }
        Ok(())
    }

    fn pause(&self) -> TaskResult<()> {
        Err(not_in_node_mode("pause"))
    }

    fn resume(&self) -> TaskResult<()> {
        Err(not_in_node_mode("resume"))
    }

    fn hosted(&self) -> bool {
        true
    }

    fn execs_die_with_init(&self) -> bool {
        true
    }
}
