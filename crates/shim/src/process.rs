//! Processes the shim supervises: state, exits, stdio and spawning.
//!
//! The shim is a child subreaper and the `containerd-shim` crate reaps every
//! child on SIGCHLD and reports exits through its monitor. Nothing here calls
//! `wait` itself (that would race the reaper); helper commands and container
//! processes alike learn their exit from the monitor.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim::monitor::{Subject, Topic};
use containerd_shim::protos::api::Status;
use containerd_shim::synchronous::monitor::{monitor_subscribe, wait_pid};
use nix::fcntl::OFlag;
use nix::unistd::pipe2;

use crate::cgroup::ContainerCgroup;
use crate::child::{CHILD_ARG, CONTROL_FD, STATUS_FD};
use crate::plan::WasmPlan;

/// The stdio paths containerd gave for a process.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

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
    pub console: Option<Arc<crate::console::Console>>,
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

/// The three streams a container process gets (/dev/null where containerd
/// named none).
pub struct ChildStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub feeder: Option<StdinFeeder>,
}

/// Copies the stdin FIFO into a pipe: reading a FIFO directly would see EOF
/// before the client has opened its end, and closing the pipe is how
/// CloseIO reaches the process.
#[derive(Debug)]
pub struct StdinFeeder {
    fifo: String,
}

impl StdinFeeder {
    /// Lets a feeder still waiting for a writer go: it sees EOF and closes the
    /// process's stdin.
    pub fn close(&self) {
        let _ = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.fifo);
    }
}

impl Drop for StdinFeeder {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens the stdio containerd named. Empty paths are /dev/null.
pub fn open_stdio(paths: &StdioPaths) -> io::Result<ChildStdio> {
    let (stdin, feeder) = if paths.stdin.is_empty() {
        (dev_null()?, None)
    } else {
        let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
        let fifo = paths.stdin.clone();
        let mut w = File::from(w);
        std::thread::Builder::new()
            .name("wisp-stdin".into())
            .spawn({
                let fifo = fifo.clone();
                move || {
                    // Blocks until the client opens its end (or close() does).
                    if let Ok(mut f) = File::open(&fifo) {
                        let _ = io::copy(&mut f, &mut w);
                    }
                }
            })?;
        (r, Some(StdinFeeder { fifo }))
    };
    Ok(ChildStdio {
        stdin,
        stdout: open_output(&paths.stdout)?,
        stderr: open_output(&paths.stderr)?,
        feeder,
    })
}

/// Opens an output: a FIFO read-write (the open never blocks and the process
/// never gets EPIPE while the client reconnects), a `file://` URI or a path
/// for append.
fn open_output(path: &str) -> io::Result<OwnedFd> {
    match open_output_file(path)? {
        Some(f) => Ok(f.into()),
        None => dev_null(),
    }
}

fn dev_null() -> io::Result<OwnedFd> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

/// [`open_output`]'s file; None for an empty path.
pub fn open_output_file(path: &str) -> io::Result<Option<File>> {
    if path.is_empty() {
        return Ok(None);
    }
    if let Some(rest) = path.strip_prefix("binary://") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("binary log URIs (binary://{rest}) are not supported by wisp"),
        ));
    }
    let path = path.strip_prefix("file://").unwrap_or(path);
    let is_fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
    let f = if is_fifo {
        OpenOptions::new().read(true).write(true).open(path)?
    } else {
        OpenOptions::new().create(true).append(true).open(path)?
    };
    Ok(Some(f))
}

/// A Wasm container process that has loaded its app and waits for Start.
pub struct SpawnedWasm {
    pub pid: u32,
    pub control: File,
}

/// Starts a container process for `plan`. `before_load` runs once the pid is
/// known and before the app is loaded (registering the pid, joining the
/// cgroup), so loading is charged to the container. Fails with the child's
/// own message if loading fails.
pub fn spawn_wasm(
    plan: &WasmPlan,
    stdio: ChildStdio,
    cgroup: &ContainerCgroup,
    before_load: impl FnOnce(u32) -> io::Result<()>,
) -> io::Result<SpawnedWasm> {
    let (ctl_r, ctl_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (st_r, st_w) = pipe2(OFlag::O_CLOEXEC)?;
    // On cgroup v1 the new process, still single-threaded, joins the
    // container's cgroup itself (see `ContainerCgroup::thread_files`), so
    // everything it loads is charged there from the start.
    let thread_files: Option<Vec<CString>> = cgroup
        .thread_files()
        .map(|files| {
            files
                .into_iter()
                .map(|f| CString::new(f.into_os_string().into_vec()))
                .collect::<Result<_, _>>()
        })
        .transpose()
        .map_err(io::Error::other)?;
    let thread_files_used = thread_files.is_some();
    let spawned_at = std::time::Instant::now();
    let forked = crate::zygote::spawn(
        [
            stdio.stdin.as_fd(),
            stdio.stdout.as_fd(),
            stdio.stderr.as_fd(),
            ctl_r.as_fd(),
            st_w.as_fd(),
        ],
        thread_files.as_deref().unwrap_or_default(),
    );
    let pid = match forked {
        Some(pid) => pid,
        None => exec_wasm(stdio, &ctl_r, &st_w, thread_files),
    }
    .map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "failed to start the Wasm container process in cgroup {}: {e}",
                cgroup.path()
            ),
        )
    })?;
    log::debug!("Wasm process {pid} spawned in {:?}", spawned_at.elapsed());
    drop((ctl_r, st_w));
    let mut control = File::from(ctl_w);
    let mut status = File::from(st_r);
    let setup = if thread_files_used {
        Ok(())
    } else {
        cgroup.add(pid)
    }
    .and_then(|()| before_load(pid))
    .and_then(|()| {
        let mut line = serde_json::to_vec(plan).map_err(io::Error::other)?;
        line.push(b'\n');
        control.write_all(&line)
    });
    // Create fails: nothing would ever start or kill this child.
    let abandon = || {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGKILL,
        );
    };
    if let Err(e) = setup {
        abandon();
        return Err(e);
    }
    let mut reply = String::new();
    status.read_to_string(&mut reply)?;
    if reply != "ok" {
        abandon();
        let msg = if reply.is_empty() {
            "the Wasm container process exited before loading the app".to_string()
        } else {
            reply
        };
        return Err(io::Error::other(msg));
    }
    log::debug!(
        "Wasm process {pid} loaded the app, {:?} after spawning",
        spawned_at.elapsed()
    );
    Ok(SpawnedWasm { pid, control })
}

/// Starts a container process by executing this binary, where there is no
/// zygote (see [`crate::zygote`]). Returns its pid.
fn exec_wasm(
    stdio: ChildStdio,
    ctl_r: &OwnedFd,
    st_w: &OwnedFd,
    thread_files: Option<Vec<CString>>,
) -> io::Result<u32> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(CHILD_ARG)
        .env_clear()
        // See shim.rs: per-thread malloc arenas are resident memory per
        // container for no gain in an idle one.
        .env("MALLOC_ARENA_MAX", "1")
        .stdin(stdio.stdin)
        .stdout(stdio.stdout)
        .stderr(stdio.stderr)
        // Signals for the shim's process group are not the container's.
        .process_group(0);
    let (ctl_fd, st_fd) = (ctl_r.as_raw_fd(), st_w.as_raw_fd());
    // SAFETY: the closure only calls fcntl, dup2, open, write and close,
    // which are async-signal-safe, on memory allocated before the fork and
    // only read in the child.
    unsafe {
        cmd.pre_exec(move || {
            for file in thread_files.iter().flatten() {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(fd);
            }
            // Move both ends above the target numbers first, so dup2 cannot
            // overwrite one with the other; dup2 clears close-on-exec.
            let ctl = libc::fcntl(ctl_fd, libc::F_DUPFD_CLOEXEC, 10);
            let st = libc::fcntl(st_fd, libc::F_DUPFD_CLOEXEC, 10);
            if ctl < 0 || st < 0 || libc::dup2(ctl, CONTROL_FD) < 0 || libc::dup2(st, STATUS_FD) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd.spawn()?.id())
}

/// How a helper command ended, and what it printed on stderr.
pub struct CmdOutput {
    pub code: i32,
    pub stderr: Vec<u8>,
}

/// Runs a helper command (runc) to completion, learning its exit from the
/// reaper. Its stderr is captured unless the caller set stdio itself.
pub fn run_cmd(cmd: &mut Command, capture: bool) -> io::Result<CmdOutput> {
    let sub = monitor_subscribe(Topic::Pid).map_err(io::Error::other)?;
    if capture {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut stderr)?;
    }
    let code = wait_pid(pid, sub);
    Ok(CmdOutput { code, stderr })
}

/// The pid a reaper event is about (exec events carry none).
pub fn pid_of(subject: &Subject) -> Option<u32> {
    match subject {
        Subject::Pid(p) => Some(*p as u32),
        _ => None,
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
