//! The zygote: Wasm container processes started without an exec.
//!
//! Executing the shim binary again for every container process costs 2 to 3
//! ms on these machines (the kernel, the dynamic loader, glibc's CPU probing
//! and the first touches of the code) on the path of every Create. A process
//! forked from the daemon could skip all of that, but the daemon has threads
//! (its runtime, the reaper, the blocking pool), and a fork of a threaded
//! process may only call async-signal-safe functions until it execs: another
//! thread may have held malloc's lock at the fork.
//!
//! So the daemon forks one process while it still has a single thread, the
//! zygote, before anything else. On request the zygote forks the container
//! process, which then runs [`crate::backend::child`] directly, as the executed binary
//! would. The zygote forks twice and lets the middle process exit, so the
//! container process is reparented to the daemon (a child subreaper): its exit
//! reaches the daemon's reaper like any other child's.
//!
//! The daemon sends the zygote the process's five descriptors (stdin, stdout,
//! stderr, the control and status pipes) over a `SOCK_SEQPACKET` pair, with
//! the cgroup v1 `tasks` files the process moves itself into. The zygote
//! answers with the pid, or the error number of what failed. When the zygote
//! is gone (killed, or the spawn path disabled), the daemon executes the
//! binary as before.
//!
//! The zygote costs little: it is a copy of the daemon as it was at its
//! start, sharing every page it does not write.

use std::ffi::{CStr, CString};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::unistd::{ForkResult, Pid, fork};

use crate::backend::child::{CONTROL_FD, STATUS_FD};

/// Set (to anything) in the daemon's environment, the daemon starts no
/// zygote and executes the binary for every container process.
pub const DISABLE_ENV: &str = "WISP_NO_ZYGOTE";

/// The descriptors a request carries, in the order they get in the process:
/// 0, 1, 2, [`CONTROL_FD`], [`STATUS_FD`].
const FDS: usize = 5;
/// A request's first byte, so that a request is never an empty datagram
/// (which reads like the end of the stream). It also names the process's
/// pid namespace: this one is the daemon's,
const REQUEST: u8 = b'W';
/// this one a new one,
const REQUEST_NEW_PID: u8 = b'N';
/// and this one that of a sixth descriptor.
const REQUEST_JOIN_PID: u8 = b'J';

/// Longest request: the `tasks` files of every cgroup v1 controller.
const MAX_REQUEST: usize = 64 * 1024;

/// The pid namespace a container process is created in.
#[derive(Clone, Copy)]
pub enum PidRequest<'a> {
    /// The daemon's.
    Host,
    /// A new one, the process its pid 1.
    New,
    /// This one's.
    Join(BorrowedFd<'a>),
}

static ZYGOTE: OnceLock<Zygote> = OnceLock::new();

/// The daemon's end.
struct Zygote {
    pid: Pid,
    /// `None` once the zygote is known to be gone: every request after that
    /// executes the binary.
    sock: Mutex<Option<OwnedFd>>,
    /// The daemon's reaper took its exit: its pid may belong to another
    /// process by now.
    reaped: std::sync::atomic::AtomicBool,
}

/// Forks the zygote. The caller must have a single thread and must already
/// be the child subreaper that container processes are reparented to.
///
/// # Safety
/// The process must have a single thread: the zygote runs arbitrary code
/// after the fork.
pub unsafe fn start() -> io::Result<()> {
    if std::env::var_os(DISABLE_ENV).is_some() {
        return Ok(());
    }
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let daemon = nix::unistd::getpid();
    // SAFETY: the caller guarantees a single thread, so the child inherits
    // no lock another thread held and may run any code.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(ours);
            zygote(theirs, daemon)
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            let _ = ZYGOTE.set(Zygote {
                pid: child,
                sock: Mutex::new(Some(ours)),
                reaped: std::sync::atomic::AtomicBool::new(false),
            });
            Ok(())
        }
    }
}

/// Ends the zygote (the daemon is exiting), so no process of the shim
/// outlives the daemon even briefly.
pub fn stop() {
    let Some(z) = ZYGOTE.get() else { return };
    let sock = z.sock.lock().unwrap_or_else(|p| p.into_inner()).take();
    drop(sock);
    if z.reaped.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let _ = nix::sys::signal::kill(z.pid, nix::sys::signal::SIGKILL);
    // The reaper may take it first: then this finds no child, and it is gone.
    let _ = nix::sys::wait::waitpid(z.pid, None);
}

/// For the daemon's reaper: whether the exit of `pid` is the zygote's
/// (nobody's container's), which is then remembered, so that [`stop`]
/// never signals a later process that got the same pid.
pub fn reaped(pid: i32) -> bool {
    let Some(z) = ZYGOTE.get().filter(|z| z.pid.as_raw() == pid) else {
        return false;
    };
    z.reaped.store(true, std::sync::atomic::Ordering::SeqCst);
    true
}

/// Starts a container process through the zygote: its pid, an error, or
/// `None` when there is no zygote (the caller executes the binary instead).
///
/// `fds` become the process's 0, 1, 2, [`CONTROL_FD`] and [`STATUS_FD`];
/// the process writes `0` to each of `thread_files` before it reads its plan.
pub fn spawn(
    fds: [BorrowedFd<'_>; FDS],
    thread_files: &[CString],
    pid: PidRequest<'_>,
) -> Option<io::Result<u32>> {
    let z = ZYGOTE.get()?;
    let mut guard = z.sock.lock().unwrap_or_else(|p| p.into_inner());
    let sock = guard.as_ref()?;
    let mut raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut request = vec![match pid {
        PidRequest::Host => REQUEST,
        PidRequest::New => REQUEST_NEW_PID,
        PidRequest::Join(ns) => {
            raw.push(ns.as_raw_fd());
            REQUEST_JOIN_PID
        }
    }];
    for f in thread_files {
        request.extend_from_slice(f.as_bytes_with_nul());
    }
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&request)],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
    let mut reply = [0u8; 4];
    let got = sent.and_then(|_| nix::unistd::read(sock.as_raw_fd(), &mut reply));
    match got {
        Ok(4) => {}
        // The zygote died (or answered nonsense): execute from now on.
        other => {
            tracing::warn!("the zygote is gone ({other:?}); container processes are executed");
            *guard = None;
            return None;
        }
    }
    let n = i32::from_ne_bytes(reply);
    Some(if n > 0 {
        Ok(n as u32)
    } else {
        Err(io::Error::from_raw_os_error(-n))
    })
}

/// The zygote's life: answers requests until the daemon goes.
fn zygote(sock: OwnedFd, daemon: Pid) -> ! {
    // SAFETY: prctl with an integer argument; getppid reads no memory.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != daemon.as_raw() {
            libc::_exit(0);
        }
    }
    // Only the socket stays open: the daemon's listener, its log and the
    // like must not live on in container processes.
    let sock = keep_only(sock);
    default_signals();
    // The middle processes of the double fork are reaped by the kernel: the
    // zygote answers as soon as the container process reports, without
    // waiting for the middle one's exit.
    // SAFETY: setting a disposition; no handler runs.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    crate::os::proctitle::replace_args(b"--wisp-zygote");
    // Work every container process would repeat: the compiler's set-up for
    // a command's engine. Nothing depends on it succeeding.
    let _ = wisp_runtime::engine::prebuild_for_run();
    if !crate::os::threads::single_threaded() {
        // Building the engine started a thread: forks of this process could
        // inherit a held lock. The daemon executes the binary instead.
        std::process::exit(0);
    }
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let (len, fds) = match receive(&sock, &mut buf) {
            Ok(Some(r)) => r,
            // The daemon closed its end, or the socket broke: nothing more
            // will come.
            Ok(None) | Err(_) => std::process::exit(0),
        };
        let answer = match (len > 0).then(|| buf[0]) {
            Some(kind @ (REQUEST | REQUEST_NEW_PID | REQUEST_JOIN_PID)) => {
                fork_container(fds, kind, &buf[1..len]).unwrap_or_else(|e| -(e as i32))
            }
            _ => -libc::EINVAL,
        };
        if nix::unistd::write(&sock, &answer.to_ne_bytes()).is_err() {
            std::process::exit(0);
        }
    }
}

/// A request's length (0 if truncated) and its descriptors.
type Received = (usize, Vec<OwnedFd>);

/// One request; `None` at the end of the stream.
fn receive(sock: &OwnedFd, buf: &mut [u8]) -> nix::Result<Option<Received>> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; FDS + 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    if msg.bytes == 0 {
        return Ok(None);
    }
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    let mut received = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: SCM_RIGHTS installed these descriptors in this
            // process for this message; nothing else owns them.
            received.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let len = if truncated { 0 } else { msg.bytes };
    Ok(Some((len, received)))
}

/// Forks twice; the grandchild becomes the container process, reparented to
/// the daemon once the middle process exits. Returns its pid as soon as the
/// grandchild reports it: if the grandchild dies before the middle process
/// is gone, the kernel hands the zombie to the daemon, and notifies it, when
/// the middle process exits.
fn fork_container(
    mut fds: Vec<OwnedFd>,
    kind: u8,
    request: &[u8],
) -> Result<i32, nix::errno::Errno> {
    let pid_ns = match kind {
        REQUEST_JOIN_PID => Some(fds.pop().ok_or(nix::errno::Errno::EINVAL)?),
        _ => None,
    };
    let fds: [OwnedFd; FDS] = fds.try_into().map_err(|_| nix::errno::Errno::EINVAL)?;
    let thread_files: Vec<&CStr> = request
        .split_inclusive(|b| *b == 0)
        .map(CStr::from_bytes_with_nul)
        .collect::<Result<_, _>>()
        .map_err(|_| nix::errno::Errno::EINVAL)?;
    // The grandchild reports its pid, or why it could not join its cgroup,
    // on this pipe.
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the zygote has a single thread.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {}
        ForkResult::Child => {
            drop(report_r);
            // The grandchild is made in its pid namespace: a process cannot
            // move itself into one.
            let entered = match (kind, &pid_ns) {
                (REQUEST_NEW_PID, _) => nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID),
                (_, Some(ns)) => nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWPID),
                _ => Ok(()),
            };
            if let Err(e) = entered {
                let _ = nix::unistd::write(&report_w, &(-(e as i32)).to_ne_bytes());
                // SAFETY: as below.
                unsafe { libc::_exit(0) }
            }
            // SAFETY: still a single thread.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => become_container(fds, &thread_files, report_w),
                Ok(ForkResult::Parent { .. }) => drop(report_w),
                Err(e) => {
                    let _ = nix::unistd::write(&report_w, &(-(e as i32)).to_ne_bytes());
                }
            }
            // SAFETY: _exit ends this middle process without running the
            // zygote's exit handlers or flushing its buffers twice.
            unsafe { libc::_exit(0) }
        }
    }
    drop(report_w);
    drop(fds);
    drop(pid_ns);
    // Four bytes written at once to a pipe arrive at once; the zygote has no
    // signal handler to interrupt the read.
    let mut report = [0u8; 4];
    if nix::unistd::read(report_r.as_raw_fd(), &mut report)? != 4 {
        // The grandchild died before reporting.
        return Err(nix::errno::Errno::ECHILD);
    }
    match i32::from_ne_bytes(report) {
        pid if pid > 0 => Ok(pid),
        e => Err(nix::errno::Errno::from_raw(-e)),
    }
}

/// The grandchild: takes its descriptors and cgroup, reports, and runs the
/// container process's code, as the executed binary would.
fn become_container(fds: [OwnedFd; FDS], thread_files: &[&CStr], report: OwnedFd) -> ! {
    // Where failures are reported: the descriptor moves below.
    let report_at = std::cell::Cell::new(report.as_raw_fd());
    let fail = |e: nix::errno::Errno| -> ! {
        let code = (-(e as i32)).to_ne_bytes();
        // SAFETY: write from a local buffer to the report pipe, then end this
        // process without the zygote's exit handlers.
        unsafe {
            libc::write(report_at.get(), code.as_ptr().cast(), code.len());
            libc::_exit(1)
        }
    };
    // Move every descriptor above the target numbers first, so one dup2
    // cannot overwrite another's source.
    let mut high = Vec::with_capacity(FDS + 1);
    for fd in fds.iter().chain(std::iter::once(&report)) {
        // SAFETY: fcntl on a descriptor this process owns.
        let h = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 16) };
        if h < 0 {
            fail(nix::errno::Errno::last());
        }
        high.push(h);
    }
    let targets = [0, 1, 2, CONTROL_FD, STATUS_FD];
    for (h, t) in high.iter().zip(targets) {
        // SAFETY: dup2 onto a standard or reserved number; the Rust handles
        // that owned the old descriptors are forgotten below.
        if unsafe { libc::dup2(*h, t) } < 0 {
            fail(nix::errno::Errno::last());
        }
    }
    let report_fd = high[FDS];
    report_at.set(report_fd);
    // Every owned handle now points at a number that is closed or reused
    // below: forget them rather than close a reused number later.
    std::mem::forget(fds);
    std::mem::forget(report);
    // SAFETY: takes ownership of the duplicate made above, which nothing
    // else owns.
    let report = unsafe { OwnedFd::from_raw_fd(report_fd) };
    close_from(STATUS_FD + 1, &[report_fd]);
    // SAFETY: setting a disposition; the zygote's SIG_IGN would otherwise
    // be inherited.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    // Signals for the daemon's process group are not the container's.
    if let Err(e) = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)) {
        fail(e);
    }
    // See `ContainerCgroup::thread_files`: moving the calling thread takes
    // no global lock, unlike moving another process.
    for file in thread_files {
        // SAFETY: open, write and close on a path and bytes this process
        // owns.
        unsafe {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(nix::errno::Errno::last());
            }
            libc::close(fd);
        }
    }
    // SAFETY: this process has a single thread, so nothing reads the
    // environment concurrently; the executed binary started with none.
    unsafe { libc::clearenv() };
    crate::os::proctitle::replace_args(crate::backend::child::CHILD_ARG.as_bytes());
    let pid = host_pid();
    if nix::unistd::write(&report, &pid.to_ne_bytes()).is_err() {
        // SAFETY: as in `fail`.
        unsafe { libc::_exit(1) }
    }
    drop(report);
    crate::backend::child::main()
}

/// This process's pid as the daemon sees it: `/proc` is still the host's
/// (the zygote's) and names it so, where getpid(2) answers in the pid
/// namespace the process was made in (1 in a new one).
fn host_pid() -> i32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse().ok())
        .unwrap_or(std::process::id() as i32)
}

/// Closes every descriptor from `low` up, except those in `keep`.
fn close_from(low: RawFd, keep: &[RawFd]) {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut from = low;
    for k in keep.into_iter().filter(|k| *k >= low) {
        if k > from {
            close_range(from, k - 1);
        }
        from = k + 1;
    }
    close_range(from, RawFd::MAX);
}

fn close_range(first: RawFd, last: RawFd) {
    // SAFETY: close_range only closes descriptors; no Rust handle owns the
    // ones in range (the callers forgot or never had them).
    unsafe {
        libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32);
    }
}

/// The zygote keeps only its socket, moved to fd 3.
fn keep_only(sock: OwnedFd) -> OwnedFd {
    let raw = sock.as_raw_fd();
    std::mem::forget(sock);
    // SAFETY: dup onto a number this process then owns alone.
    let fd = if raw == 3 {
        3
    } else {
        let d = unsafe { libc::dup2(raw, 3) };
        if d < 0 {
            // SAFETY: ends the zygote; the daemon executes instead.
            unsafe { libc::_exit(1) }
        }
        d
    };
    close_range(4, RawFd::MAX);
    // SAFETY: fd 3 now holds the socket and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Puts every signal the daemon handles back to its default, as an exec
/// would, and unblocks all. SIGPIPE stays ignored: a Rust program ignores it
/// from its start, and the executed binary did.
fn default_signals() {
    // SAFETY: sigaction and sigprocmask on this single-threaded process,
    // with no handler installed.
    unsafe {
        for sig in 1..libc::SIGRTMIN() {
            if matches!(
                sig,
                libc::SIGKILL | libc::SIGSTOP | libc::SIGSEGV | libc::SIGBUS | libc::SIGPIPE
            ) {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_sigaction != libc::SIG_DFL
            {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}
