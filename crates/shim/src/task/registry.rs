//! The containers of this shim and their processes: the registry, the pid
//! table, and the one place an exit becomes a TaskExit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use containerd_shim::ExitSignal;
use containerd_shim::monitor::Subject;
use containerd_shim::protos::events::task::TaskExit;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics::TASK_EXIT_EVENT_TOPIC;
use nix::sys::signal::Signal;

use crate::backend::api::{Backend, Factory, ProcessTable};
use crate::backend::proc::{PidTable, Proc};
use crate::error::{TaskError, TaskResult};
use crate::os::oom::OomWatcher;
use crate::os::threads::lock;
use crate::task::events::{Events, timestamp};

/// A container: what runs it and its processes.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub backend: Box<dyn Backend>,
    pub init: Arc<Proc>,
    pub execs: Mutex<HashMap<String, Arc<Proc>>>,
    /// Where we mounted the rootfs, to unmount on Delete.
    pub mounted: Option<PathBuf>,
}

/// The state every Task verb shares.
pub struct Registry {
    pub namespace: String,
    pub containers: Mutex<HashMap<String, Arc<Container>>>,
    pub pids: Mutex<PidTable>,
    pub events: Events,
    pub exit: Arc<ExitSignal>,
    /// Makes the backend of each new container.
    pub factory: Box<dyn Factory>,
    /// None if the watcher could not start (logged).
    pub oom: Option<OomWatcher>,
}

/// The pid a reaper event is about (exec events carry none).
pub fn pid_of(subject: &Subject) -> Option<u32> {
    match subject {
        Subject::Pid(p) => Some(*p as u32),
        _ => None,
    }
}

impl Registry {
    /// A reaped pid: the exit of the process registered under it, if any.
    pub fn on_exit(&self, pid: u32, code: i32) {
        let Some(proc) = lock(&self.pids).exited(pid, code) else {
            return;
        };
        self.exited(&proc, pid, code);
    }

    /// Records `proc`'s exit and publishes TaskExit, once per process, never
    /// before its TaskStart.
    pub fn exited(&self, proc: &Arc<Proc>, pid: u32, code: i32) {
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
        tracing::debug!(id = proc.event_id(), pid, code = exit.code, "exited");
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
        if proc.exec_id.is_empty()
            && let Some(c) = lock(&self.containers).get(&proc.container_id).cloned()
            && c.backend.execs_die_with_init()
        {
            for e in lock(&c.execs).values() {
                e.signal(Signal::SIGKILL);
            }
        }
    }

    pub fn container(&self, id: &str) -> TaskResult<Arc<Container>> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| TaskError::not_found(&format!("container {id}")))
    }

    /// A container and one of its processes (the init for an empty exec id).
    pub fn process(&self, id: &str, exec_id: &str) -> TaskResult<(Arc<Container>, Arc<Proc>)> {
        let c = self.container(id)?;
        if exec_id.is_empty() {
            let p = c.init.clone();
            return Ok((c, p));
        }
        let p = lock(&c.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| TaskError::not_found(&format!("exec {exec_id} in container {id}")))?;
        Ok((c, p))
    }
}

impl ProcessTable for Registry {
    /// Registers `pid`; a process that is already gone gets its exit now.
    fn register(&self, pid: u32, proc: &Arc<Proc>) {
        proc.lock().pid = pid;
        let early = lock(&self.pids).register(pid, proc);
        if let Some(code) = early {
            // Rare and worth seeing: a stale exit of an earlier process with
            // the same pid would stop this one (see the node-mode density run).
            tracing::warn!(
                id = proc.event_id(),
                pid,
                code,
                "the process had exited before it was registered"
            );
            self.exited(proc, pid, code);
        }
    }

    fn forget(&self, pid: u32) {
        lock(&self.pids).forget(pid);
    }
}
