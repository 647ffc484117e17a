//! The processes the shim supervises: their state and exits, and which
//! process a pid belongs to.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim::protos::api::Status;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::backend::console::Console;
use crate::os::stdio::{StdinFeeder, StdioPaths};

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub code: u32,
    pub at: SystemTime,
}

/// Mutable state of a process.
#[derive(Debug)]
pub struct ProcState {
    pub pid: u32,
    pub status: Status,
    pub exit: Option<Exit>,
    /// Writing one byte here starts a created Wasm process.
    pub control: Option<File>,
    pub stdin: Option<StdinFeeder>,
    /// The terminal of a `tty: true` process run by runc.
    pub console: Option<Arc<Console>>,
    /// Start is publishing TaskStart: an exit seen meanwhile waits in
    /// `deferred_exit` (pid, code), so TaskExit never precedes TaskStart.
    pub starting: bool,
    pub deferred_exit: Option<(u32, i32)>,
}

/// A container's init process or one of its execs.
#[derive(Debug)]
pub struct Proc {
    pub container_id: String,
    /// Empty for the init process.
    pub exec_id: String,
    pub stdio: StdioPaths,
    pub state: Mutex<ProcState>,
    exited: Condvar,
    /// The same news for async waiters (containerd's Wait calls, which
    /// hold no thread while they wait).
    exited_async: tokio::sync::Notify,
}

impl Proc {
    pub fn new(container_id: &str, exec_id: &str, stdio: StdioPaths) -> Arc<Self> {
        Arc::new(Self {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            stdio,
            state: Mutex::new(ProcState {
                pid: 0,
                status: Status::CREATED,
                exit: None,
                control: None,
                stdin: None,
                console: None,
                starting: false,
                deferred_exit: None,
            }),
            exited: Condvar::new(),
            exited_async: tokio::sync::Notify::new(),
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, ProcState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the exit; returns false if it was already recorded.
    pub fn set_exited(&self, code: i32) -> bool {
        let mut s = self.lock();
        if s.exit.is_some() {
            return false;
        }
        s.exit = Some(Exit {
            code: code as u32,
            at: SystemTime::now(),
        });
        s.status = Status::STOPPED;
        s.control = None;
        s.stdin = None;
        self.exited.notify_all();
        self.exited_async.notify_waiters();
        true
    }

    /// Waits for the exit without holding a thread.
    pub async fn exited(&self) -> Exit {
        loop {
            // Registered before the check, so a notification between the
            // check and the await is not lost.
            let notified = self.exited_async.notified();
            let exit = self.lock().exit;
            if let Some(e) = exit {
                return e;
            }
            notified.await;
        }
    }

    /// Waits up to `timeout` for the exit.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        let s = self.lock();
        let (s, _) = self
            .exited
            .wait_timeout_while(s, timeout, |s| s.exit.is_none())
            .unwrap_or_else(|p| p.into_inner());
        s.exit
    }

    /// Sends `sig` to the process if it still runs; false if it could not.
    pub fn signal(&self, sig: Signal) -> bool {
        let s = self.lock();
        // A hosted app's pid is the node process's own: never signal ourselves.
        if s.exit.is_some() || s.pid == 0 || s.pid == std::process::id() {
            return false;
        }
        kill(Pid::from_raw(s.pid as i32), sig).is_ok()
    }

    /// Releases a created Wasm process (its start byte on the control pipe).
    pub fn release(&self) -> std::io::Result<()> {
        let mut s = self.lock();
        let control: &mut File = s
            .control
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the process has no start channel"))?;
        control.write_all(b"S")?;
        s.control = None;
        Ok(())
    }

    /// The id containerd uses for this process in events.
    pub fn event_id(&self) -> &str {
        if self.exec_id.is_empty() {
            &self.container_id
        } else {
            &self.exec_id
        }
    }
}

/// Which process a pid belongs to, plus exits that arrived before their pid
/// was registered (a container process can die before `spawn` returns).
#[derive(Default)]
pub struct PidTable {
    procs: HashMap<u32, Arc<Proc>>,
    early: HashMap<u32, (i32, std::time::Instant)>,
    early_order: std::collections::VecDeque<u32>,
}

/// Exits of pids nobody registered (helper commands such as `runc start`)
/// kept for late registration; bounded.
const EARLY_EXITS_KEPT: usize = 4096;
/// How long an early exit can belong to a process being registered: the
/// window between spawning a process and registering its pid is
/// milliseconds. Older ones are of an earlier process that had the same pid
/// (pids wrap at 32768 on small machines, and a node-mode shim lives long),
/// and would stop a live process.
const EARLY_EXIT_TTL: Duration = Duration::from_secs(10);

impl PidTable {
    /// Registers `proc` under `pid`; returns an exit code that already came in.
    pub fn register(&mut self, pid: u32, proc: &Arc<Proc>) -> Option<i32> {
        if let Some((code, at)) = self.early.remove(&pid)
            && at.elapsed() < EARLY_EXIT_TTL
        {
            return Some(code);
        }
        self.procs.insert(pid, proc.clone());
        None
    }

    /// Takes the process that `pid` was, or remembers the exit for later.
    pub fn exited(&mut self, pid: u32, code: i32) -> Option<Arc<Proc>> {
        if let Some(p) = self.procs.remove(&pid) {
            return Some(p);
        }
        if self
            .early
            .insert(pid, (code, std::time::Instant::now()))
            .is_none()
        {
            self.early_order.push_back(pid);
        }
        while self.early_order.len() > EARLY_EXITS_KEPT {
            if let Some(old) = self.early_order.pop_front() {
                self.early.remove(&old);
            }
        }
        None
    }

    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_exits_are_claimed_on_register() {
        let mut t = PidTable::default();
        let p = Proc::new("c", "", StdioPaths::default());
        assert!(t.exited(7, 3).is_none());
        assert_eq!(t.register(7, &p), Some(3));
        assert!(t.register(8, &p).is_none());
        assert!(t.exited(8, 0).is_some());
        // An exit of an earlier process with a reused pid is not claimed.
        assert!(t.exited(9, 1).is_none());
        t.early.get_mut(&9).unwrap().1 -= EARLY_EXIT_TTL;
        assert!(t.register(9, &p).is_none());
    }

    #[test]
    fn one_exit_per_process() {
        let p = Proc::new("c", "", StdioPaths::default());
        assert!(p.set_exited(137));
        assert!(!p.set_exited(0));
        assert_eq!(p.wait_timeout(Duration::from_secs(10)).unwrap().code, 137);
        assert_eq!(p.lock().status, Status::STOPPED);
    }
}
