//! The pod sandbox (the CRI's pause container), run by the shim itself.
//!
//! The sandbox's process only holds the pod's namespaces for the other
//! containers to join, and reaps orphans when the pod shares a pid
//! namespace. runc makes that process the way it makes any container: two
//! execs of runc and the `runc init` handshake, about half of what a Wasm
//! pod costs to start. The shim makes the same container directly with one
//! `clone`: new mount, pid, uts and ipc namespaces (as the spec asks), the
//! pod's network namespace joined, the container's cgroup, its hostname,
//! the image's rootfs as `/` (pivot_root), the spec's sysctls, user,
//! capabilities, rlimits, no_new_privs and oom_score_adj, then the image's
//! entrypoint (`/pause`).
//!
//! A spec asking for what this path does not apply (seccomp, AppArmor,
//! SELinux, user namespaces, devices, a terminal, joining a mount or pid
//! namespace)
//! goes to runc instead, so nothing the spec says is silently dropped: see
//! [`unsupported`].

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::bundle::plan::{PlanError, env_map, resolve_in_rootfs};
use crate::os::cgroup::ContainerCgroup;
use crate::os::creds::{self, Caps, CredStep, Creds, cap_last, rlimit_resource};

/// Why the shim leaves a sandbox spec to runc, if it does.
pub fn unsupported(spec: &Spec) -> Option<&'static str> {
    let process = spec.process().as_ref()?;
    if process.terminal() == Some(true) {
        return Some("a terminal");
    }
    if process
        .apparmor_profile()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return Some("an AppArmor profile");
    }
    if process
        .selinux_label()
        .as_ref()
        .is_some_and(|l| !l.is_empty())
    {
        return Some("an SELinux label");
    }
    let linux = spec.linux().as_ref()?;
    if linux.seccomp().is_some() {
        return Some("a seccomp profile");
    }
    if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Some("devices");
    }
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        let joins = ns
            .path()
            .as_ref()
            .is_some_and(|p| !p.as_os_str().is_empty());
        match ns.typ() {
            LinuxNamespaceType::User => return Some("a user namespace"),
            LinuxNamespaceType::Mount | LinuxNamespaceType::Pid if joins => {
                return Some("joining a mount or pid namespace");
            }
            _ => {}
        }
    }
    None
}

/// A started sandbox process, waiting for Start before it execs.
pub struct SpawnedSandbox {
    pub pid: u32,
    /// Written once to let the process exec its entrypoint.
    pub control: File,
    /// EOF once the process has exec'd; an error record if it failed.
    pub status: File,
}

/// Everything the cloned child needs, prepared before the clone: the child
/// must not allocate (another thread may hold the allocator's lock).
struct Prepared {
    rootfs: CString,
    readonly_root: bool,
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    hostname: Option<CString>,
    /// Namespaces to join: (fd, CLONE_NEW* type).
    join: Vec<(OwnedFd, libc::c_int)>,
    cgroup_files: Vec<CString>,
    oom_score_adj: Option<CString>,
    /// (`/proc/sys/...` path, value), written inside the new namespaces.
    sysctls: Vec<(CString, CString)>,
    rlimits: Vec<(libc::c_int, libc::rlimit)>,
    creds: Creds,
    no_new_privs: bool,
    stdout: RawFd,
    stderr: RawFd,
    control: RawFd,
    /// The shim's end of the control pipe, which the child closes so that
    /// the shim's close is an EOF it can see.
    control_peer: RawFd,
    status: RawFd,
    cap_last: u32,
}

/// The steps of the child, reported with errno when one fails.
const STEPS: &[&str] = &[
    "join the cgroup",
    "join a namespace",
    "set the hostname",
    "make the mounts private",
    "bind the rootfs",
    "pivot_root into the rootfs",
    "set oom_score_adj",
    "set a sysctl",
    "set an rlimit",
    "set the user",
    "set capabilities",
    "set no_new_privs",
    "change to the working directory",
    "set up stdio",
    "exec the entrypoint",
];

/// Spawns the sandbox process of `spec`, stopped before its exec until
/// `control` is written.
pub fn spawn(
    spec: &Spec,
    rootfs: &Path,
    cgroup: &ContainerCgroup,
    stdout: Option<File>,
    stderr: Option<File>,
) -> io::Result<SpawnedSandbox> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| io::Error::other(PlanError::NoProcess))?;
    let args = process.args().as_deref().unwrap_or_default();
    let first = args
        .first()
        .ok_or_else(|| io::Error::other(PlanError::NoEntrypoint))?;
    let cwd = process.cwd().to_string_lossy().into_owned();
    // The program's path inside the container, found on the host side.
    let host_path = if first.contains('/') {
        resolve_in_rootfs(rootfs, first, &cwd).map_err(io::Error::other)?
    } else {
        let path_var = env_map(process)
            .remove("PATH")
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .find_map(|d| {
                resolve_in_rootfs(rootfs, &format!("{d}/{first}"), "/")
                    .ok()
                    .filter(|p| p.is_file())
            })
            .ok_or_else(|| io::Error::other(PlanError::NotFound(first.clone())))?
    };
    let in_container = Path::new("/").join(host_path.strip_prefix(rootfs).unwrap_or(&host_path));
    let cstr = |b: &[u8]| CString::new(b).map_err(io::Error::other);

    let linux = spec.linux().as_ref();
    let mut flags = libc::CLONE_NEWNS;
    let mut join = Vec::new();
    for ns in linux
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or_default()
    {
        let flag = match ns.typ() {
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
            // Mount is always new; user and joined mount/pid are refused
            // by `unsupported`.
            _ => continue,
        };
        match ns.path() {
            Some(p) if !p.as_os_str().is_empty() => {
                let f = File::open(p).map_err(|e| {
                    io::Error::new(e.kind(), format!("failed to open {}: {e}", p.display()))
                })?;
                join.push((OwnedFd::from(f), flag));
            }
            _ => flags |= flag,
        }
    }
    let hostname = spec
        .hostname()
        .as_ref()
        .filter(|h| !h.is_empty() && flags & libc::CLONE_NEWUTS != 0)
        .map(|h| cstr(h.as_bytes()))
        .transpose()?;
    let rlimits = process
        .rlimits()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                rlimit_resource(r.typ()),
                libc::rlimit {
                    rlim_cur: r.soft(),
                    rlim_max: r.hard(),
                },
            )
        })
        .collect();
    let caps = process.capabilities().as_ref().map(Caps::from_spec);
    let cap_last = cap_last();
    let cgroup_files = cgroup
        .thread_files()
        .unwrap_or_default()
        .into_iter()
        .map(|f| cstr(f.as_os_str().as_bytes()))
        .collect::<io::Result<_>>()?;

    let (ctl_r, ctl_w) = pipe2(OFlag::O_CLOEXEC)?;
    let (st_r, st_w) = pipe2(OFlag::O_CLOEXEC)?;
    let devnull = || File::options().write(true).open("/dev/null");
    let stdout = stdout.map_or_else(devnull, Ok)?;
    let stderr = stderr.map_or_else(devnull, Ok)?;
    let prepared = Prepared {
        rootfs: cstr(rootfs.as_os_str().as_bytes())?,
        readonly_root: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        program: cstr(in_container.as_os_str().as_bytes())?,
        argv: args
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<io::Result<_>>()?,
        envp: process
            .env()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|e| cstr(e.as_bytes()))
            .collect::<io::Result<_>>()?,
        cwd: cstr(if cwd.is_empty() { b"/" } else { cwd.as_bytes() })?,
        hostname,
        join,
        cgroup_files,
        oom_score_adj: process
            .oom_score_adj()
            .map(|v| cstr(v.to_string().as_bytes()))
            .transpose()?,
        sysctls: linux
            .and_then(|l| l.sysctl().as_ref())
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let path = format!("/proc/sys/{}", k.replace('.', "/"));
                Ok((cstr(path.as_bytes())?, cstr(v.as_bytes())?))
            })
            .collect::<io::Result<_>>()?,
        rlimits,
        creds: Creds {
            uid: process.user().uid(),
            gid: process.user().gid(),
            groups: process.user().additional_gids().clone().unwrap_or_default(),
            caps,
        },
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        stdout: stdout.as_raw_fd(),
        stderr: stderr.as_raw_fd(),
        control: ctl_r.as_raw_fd(),
        control_peer: ctl_w.as_raw_fd(),
        status: st_w.as_raw_fd(),
        cap_last,
    };
    let argv: Vec<*const libc::c_char> = prepared
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = prepared
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let ctx = ChildCtx {
        p: &prepared,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
    };

    const STACK: usize = 256 * 1024;
    let mut stack = vec![0u8; STACK];
    // SAFETY: the stack is a live allocation of STACK bytes and the child
    // gets the top of it, 16-byte aligned; without CLONE_VM the child runs on
    // its own copy of this address space, so `ctx` and everything it points
    // to stay valid in the child until it execs or exits, whatever the parent
    // does meanwhile. The child only makes system calls (see `child`).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(STACK);
        let top = top.sub(top as usize % 16);
        libc::clone(
            child,
            top.cast(),
            flags | libc::SIGCHLD,
            (&ctx as *const ChildCtx).cast_mut().cast(),
        )
    };
    if pid < 0 {
        return Err(io::Error::new(
            io::Error::last_os_error().kind(),
            format!(
                "failed to clone the sandbox process: {}",
                io::Error::last_os_error()
            ),
        ));
    }
    drop((ctl_r, st_w, stdout, stderr, prepared));
    let mut status = File::from(st_r);
    // The child reports "ready" (one byte) once set up, or a failure.
    let mut first = [0u8; 1];
    match status.read(&mut first) {
        Ok(1) if first[0] == READY => {}
        Ok(1) => return Err(read_failure(first[0], &mut status, pid)),
        _ => {
            return Err(io::Error::other(
                "the sandbox process died while it was being set up",
            ));
        }
    }
    Ok(SpawnedSandbox {
        pid: pid as u32,
        control: File::from(ctl_w),
        status,
    })
}

/// Lets a sandbox process exec its entrypoint; Err if the exec failed.
pub fn start(control: &mut File, status: &mut File) -> io::Result<()> {
    control.write_all(b"S")?;
    let mut first = [0u8; 1];
    match status.read(&mut first)? {
        0 => Ok(()),
        _ => Err(read_failure(first[0], status, 0)),
    }
}

const READY: u8 = 0xff;

fn read_failure(step: u8, status: &mut File, pid: i32) -> io::Error {
    let mut errno = [0u8; 4];
    let _ = status.read_exact(&mut errno);
    let os = io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
    let what = STEPS.get(step as usize).copied().unwrap_or("set up");
    if pid > 0 {
        // It exits right after reporting; the shim's reaper collects it.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    io::Error::new(
        os.kind(),
        format!("the sandbox process failed to {what}: {os}"),
    )
}

struct ChildCtx<'a> {
    p: &'a Prepared,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
}

/// The cloned child: system calls only, no allocation, no locks.
///
/// It is a one-thread copy of the multithreaded shim, so a lock another
/// thread held at the clone is held here forever. Every libc function it
/// calls is glibc's thin wrapper of one system call (open, read, write,
/// close, setns, sethostname, mount, umount2, chdir, prctl, setrlimit as
/// prlimit64, dup2, sigprocmask, signal as rt_sigaction, execve, _exit);
/// the set*id calls, whose glibc wrappers synchronise every thread, are
/// made raw (`syscall`), as runc's nsexec and crun make them.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildCtx` `spawn` passed to clone; this process
    // has its own copy of the memory it points to.
    let ctx = unsafe { &*(arg as *const ChildCtx) };
    let p = ctx.p;
    // SAFETY: every call below is a plain system call on pointers into
    // `Prepared` (NUL-terminated CStrings, live vectors), valid for the life
    // of this process; nothing here allocates or takes a lock (see above).
    unsafe {
        let fail = |step: u8| -> libc::c_int {
            let errno = *libc::__errno_location();
            let mut rec = [0u8; 5];
            rec[0] = step;
            rec[1..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(p.status, rec.as_ptr().cast(), rec.len());
            libc::_exit(127)
        };
        libc::close(p.control_peer);
        for f in &p.cgroup_files {
            let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return fail(0);
            }
            libc::close(fd);
        }
        for (fd, kind) in &p.join {
            if libc::setns(fd.as_raw_fd(), *kind) != 0 {
                return fail(1);
            }
        }
        if let Some(h) = &p.hostname
            && libc::sethostname(h.as_ptr(), h.as_bytes().len()) != 0
        {
            return fail(2);
        }
        // Through the host's /proc, while it is still reachable.
        if let Some(adj) = &p.oom_score_adj {
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            let len = adj.as_bytes().len();
            if fd < 0 || libc::write(fd, adj.as_ptr().cast(), len) != len as isize {
                return fail(6);
            }
            libc::close(fd);
        }
        // net.* and ipc sysctls act on the namespaces of the writer, which
        // are the pod's now.
        for (path, value) in &p.sysctls {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            let len = value.as_bytes().len();
            if fd < 0 || libc::write(fd, value.as_ptr().cast(), len) != len as isize {
                return fail(7);
            }
            libc::close(fd);
        }
        let none = std::ptr::null::<libc::c_char>();
        if libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return fail(3);
        }
        if libc::mount(
            p.rootfs.as_ptr(),
            p.rootfs.as_ptr(),
            none,
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            return fail(4);
        }
        // runc's pivot_root(".", "."): the old root ends up stacked on the
        // new one and is detached from it; no directory for it is needed.
        if libc::chdir(p.rootfs.as_ptr()) != 0
            || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0
            || libc::mount(
                none,
                c".".as_ptr(),
                none,
                libc::MS_SLAVE | libc::MS_REC,
                std::ptr::null(),
            ) != 0
            || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0
            || libc::chdir(c"/".as_ptr()) != 0
        {
            return fail(5);
        }
        if p.readonly_root
            && libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                std::ptr::null(),
            ) != 0
        {
            return fail(5);
        }
        for (resource, limit) in &p.rlimits {
            if libc::setrlimit(*resource as _, limit) != 0 {
                return fail(8);
            }
        }
        // Raw system calls, never glibc's setgroups/setgid/setuid: those
        // broadcast the change to every thread of glibc's thread list
        // (__nptl_setxid), which this process copied from the shim's many
        // threads; it takes a lock another thread may have held at the
        // clone and waits on threads that do not exist here, forever.
        match creds::apply(&p.creds, p.cap_last) {
            Ok(()) => {}
            Err(CredStep::User) => return fail(9),
            Err(CredStep::Caps) => return fail(10),
        }
        if p.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return fail(11);
        }
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            return fail(12);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        let stdin_ok = if null >= 0 {
            libc::dup2(null, 0) >= 0
        } else {
            libc::close(0) == 0
        };
        if !stdin_ok || libc::dup2(p.stdout, 1) < 0 || libc::dup2(p.stderr, 2) < 0 {
            return fail(13);
        }
        // Signals: the shim's threads block some and ignore SIGPIPE; an
        // exec keeps both.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::write(p.status, [READY].as_ptr().cast(), 1);
        // Wait for Start; EOF means the shim gave up on this container.
        let mut b = 0u8;
        if libc::read(p.control, (&mut b as *mut u8).cast(), 1) != 1 {
            libc::_exit(0);
        }
        libc::execve(p.program.as_ptr(), ctx.argv, ctx.envp);
        fail(14)
    }
}

#[cfg(test)]
mod tests;
