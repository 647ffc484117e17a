//! The CRI's pod sandbox (pause) as a process the shim makes itself (see
//! [`crate::backend::sandbox`]): started at Create, let go at Start.

use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};

use oci_spec::runtime::Process;

use crate::backend::api::{Backend, CreateCtx, Created, OnExit, Register, stdio_error};
use crate::backend::proc::Proc;
use crate::backend::sandbox;
use crate::bundle::state::StateRecord;
use crate::error::{TaskError, TaskResult};
use crate::os::cgroup::ContainerCgroup;
use crate::os::stdio::open_outputs;
use crate::os::threads::lock;

pub struct PodSandbox {
    cgroup: ContainerCgroup,
    /// The process's start and status pipes, until Start.
    start: Mutex<Option<(File, File)>>,
}

impl PodSandbox {
    pub fn create(ctx: &CreateCtx<'_>) -> TaskResult<Created> {
        let cgroup = ctx.create_cgroup()?;
        ctx.apply_limits(&cgroup)?;
        let spawned = open_outputs(ctx.paths)
            .map_err(stdio_error("container"))
            .and_then(|(out, errs)| {
                sandbox::spawn(ctx.spec, ctx.rootfs, &cgroup, out, errs)
                    .map_err(|e| TaskError::invalid(e.to_string()))
            });
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                let _ = cgroup.delete();
                return Err(e);
            }
        };
        ctx.register.register(spawned.pid, ctx.init);
        let record = StateRecord {
            linux: false,
            pid: spawned.pid,
            cgroup: Some(cgroup.path().into()),
            mounted: None,
        };
        let oom_dir = cgroup.memory_dir();
        Ok(Created {
            backend: Box::new(Self {
                cgroup,
                start: Mutex::new(Some((spawned.control, spawned.status))),
            }),
            record,
            feeder: None,
            oom_dir,
        })
    }
}

impl Backend for PodSandbox {
    fn cgroup(&self) -> Option<&ContainerCgroup> {
        Some(&self.cgroup)
    }

    fn start(&self, _init: &Arc<Proc>, _on_exit: OnExit) -> TaskResult<()> {
        match lock(&self.start).take() {
            Some((mut control, mut status)) => sandbox::start(&mut control, &mut status),
            None => Err(io::Error::other("the sandbox was started already")),
        }
        .map_err(|e| TaskError::internal(format!("failed to start: {e}")))
    }

    fn exec(
        &self,
        _proc: &Arc<Proc>,
        _process: &Process,
        _spec_json: Vec<u8>,
        _init_pid: u32,
        _register: Register<'_>,
    ) -> TaskResult<()> {
        Err(TaskError::unimplemented(
            "exec into a pod sandbox is not supported",
        ))
    }

    fn start_exec(&self, _proc: &Arc<Proc>, _register: Register<'_>) -> TaskResult<()> {
        Err(TaskError::unimplemented(
            "exec into a pod sandbox is not supported",
        ))
    }
}
