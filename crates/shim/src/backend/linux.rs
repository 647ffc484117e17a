//! A Linux container of a Wasm pod (a sidecar), given to runc as
//! containerd's runc shim gives it; its terminals through [`console`].

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use containerd_shim::protos::cgroups::metrics::Metrics;
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, Process};

use crate::backend::api::{Backend, CreateCtx, Created, OnExit, Register, stdio_error};
use crate::backend::console::with_console;
use crate::backend::proc::Proc;
use crate::backend::runc::{Runc, RuncIo};
use crate::bundle::state::StateRecord;
use crate::error::{TaskError, TaskResult};
use crate::os::cgroup::ContainerCgroup;
use crate::os::metrics;
use crate::os::stdio::{StdioPaths, open_output_file, open_stdio};
use crate::os::threads::lock;

pub struct Linux {
    runc: Runc,
    /// Exec process specs waiting for Start (runc execs them then).
    pending: Mutex<HashMap<String, Vec<u8>>>,
}

impl Linux {
    /// `runc create`, with a terminal if the container asks for one.
    pub fn create(ctx: &CreateCtx<'_>) -> TaskResult<Created> {
        let place = ctx.cgroup_place()?;
        let mut runc = Runc::new(ctx.id, ctx.bundle);
        runc.systemd_cgroup = place.systemd;
        let mut feeder = None;
        let created = if ctx.paths.terminal {
            open_output_file(&ctx.paths.stdout)
                .and_then(|out| {
                    with_console(&ctx.paths.stdin, out, |socket| {
                        runc.create(RuncIo::Console(socket))
                    })
                })
                .map(|(pid, console)| (pid, Some(console)))
        } else {
            let mut stdio = open_stdio(ctx.paths).map_err(stdio_error("container"))?;
            feeder = stdio.feeder.take();
            runc.create(RuncIo::Stdio(stdio)).map(|pid| (pid, None))
        };
        let (pid, console) = created.map_err(|e| {
            let _ = runc.delete();
            TaskError::invalid(e.to_string())
        })?;
        ctx.init.lock().console = console;
        ctx.register.register(pid, ctx.init);
        // runc made the cgroup at the spec's path.
        let oom_dir = ContainerCgroup::load(&place.path).memory_dir();
        Ok(Created {
            backend: Box::new(Self {
                runc,
                pending: Mutex::default(),
            }),
            record: StateRecord {
                linux: true,
                pid,
                cgroup: None,
                mounted: None,
            },
            feeder,
            oom_dir,
        })
    }
}

fn host_error(e: io::Error) -> TaskError {
    TaskError::internal(e.to_string())
}

impl Backend for Linux {
    fn start(&self, _init: &Arc<Proc>, _on_exit: OnExit) -> TaskResult<()> {
        self.runc
            .start()
            .map_err(|e| TaskError::internal(format!("failed to start: {e}")))
    }

    fn exec(
        &self,
        proc: &Arc<Proc>,
        _process: &Process,
        spec_json: Vec<u8>,
        _init_pid: u32,
        _register: Register<'_>,
    ) -> TaskResult<()> {
        lock(&self.pending).insert(proc.exec_id.clone(), spec_json);
        Ok(())
    }

    fn start_exec(&self, proc: &Arc<Proc>, register: Register<'_>) -> TaskResult<()> {
        let spec = lock(&self.pending)
            .remove(&proc.exec_id)
            .unwrap_or_default();
        let exec_id = &proc.exec_id;
        let paths: &StdioPaths = &proc.stdio;
        if paths.terminal {
            open_output_file(&paths.stdout)
                .and_then(|out| {
                    with_console(&paths.stdin, out, |socket| {
                        self.runc.exec(exec_id, &spec, RuncIo::Console(socket))
                    })
                })
                .map(|(pid, console)| {
                    proc.lock().console = Some(console);
                    register.register(pid, proc);
                })
        } else {
            open_stdio(paths).and_then(|mut stdio| {
                let feeder = stdio.feeder.take();
                let pid = self.runc.exec(exec_id, &spec, RuncIo::Stdio(stdio))?;
                proc.lock().stdin = feeder;
                register.register(pid, proc);
                Ok(())
            })
        }
        .map_err(|e| TaskError::internal(format!("failed to start: {e}")))
    }

    fn signal_init(&self, init: &Proc, sig: Signal, all: bool) -> TaskResult<bool> {
        if all {
            // runc signals every process of the container, execs included.
            self.runc.kill_all(sig as u32).map_err(host_error)?;
            return Ok(false);
        }
        init.signal(sig);
        Ok(false)
    }

    fn pids(&self, init_pid: u32) -> Vec<u32> {
        linux_pids(init_pid)
    }

    fn stats(&self, init_pid: u32) -> io::Result<Metrics> {
        metrics::collect(init_pid)
    }

    fn update(&self, _resources: &LinuxResources, json: &[u8]) -> TaskResult<()> {
        self.runc.update(json).map_err(host_error)
    }

    fn pause(&self) -> TaskResult<()> {
        self.runc.pause().map_err(host_error)
    }

    fn resume(&self) -> TaskResult<()> {
        self.runc.resume().map_err(host_error)
    }

    fn delete(&self) -> TaskResult<()> {
        self.runc.delete().map_err(host_error)
    }
}

/// Pids of a runc container: every process in its init's cgroup (the v1
/// `pids` controller's, or the v2 unified one's).
fn linux_pids(init: u32) -> Vec<u32> {
    let procs = metrics::cgroup_dir(init, "pids")
        .and_then(|d| std::fs::read_to_string(Path::new(&d).join("cgroup.procs")).ok());
    match procs {
        Some(p) => {
            let mut pids: Vec<u32> = p.lines().filter_map(|l| l.parse().ok()).collect();
            pids.sort_unstable();
            pids
        }
        None => vec![init],
    }
}
