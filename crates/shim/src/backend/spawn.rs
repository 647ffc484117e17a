//! Spawning a Wasm container process: forked by the zygote, or this binary
//! executed again, loaded with its plan before Create returns.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::pipe2;

use crate::backend::child::{CHILD_ARG, CONTROL_FD, STATUS_FD};
use crate::backend::zygote::PidRequest;
use crate::bundle::confine::PidNs;
use crate::bundle::plan::WasmPlan;
use crate::os::cgroup::ContainerCgroup;
use crate::os::stdio::ChildStdio;

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
    let pid_ns = plan.confine.as_ref().map(|c| &c.pid);
    let ns_file = match pid_ns {
        Some(PidNs::Join(path)) => Some(File::open(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("failed to open pid namespace `{}`: {e}", path.display()),
            )
        })?),
        _ => None,
    };
    let pid_request = match (pid_ns, &ns_file) {
        (Some(PidNs::New), _) => PidRequest::New,
        (_, Some(f)) => PidRequest::Join(f.as_fd()),
        _ => PidRequest::Host,
    };
    let spawned_at = std::time::Instant::now();
    let forked = crate::backend::zygote::spawn(
        [
            stdio.stdin.as_fd(),
            stdio.stdout.as_fd(),
            stdio.stderr.as_fd(),
            ctl_r.as_fd(),
            st_w.as_fd(),
        ],
        thread_files.as_deref().unwrap_or_default(),
        pid_request,
    );
    let pid = match forked {
        Some(pid) => pid,
        None => exec_wasm(stdio, &ctl_r, &st_w, thread_files, pid_request),
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
    tracing::debug!("Wasm process {pid} spawned in {:?}", spawned_at.elapsed());
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
    tracing::debug!(
        "Wasm process {pid} loaded the app, {:?} after spawning",
        spawned_at.elapsed()
    );
    Ok(SpawnedWasm { pid, control })
}

/// Starts a container process by executing this binary, where there is no
/// zygote (see [`crate::backend::zygote`]). Returns its pid.
fn exec_wasm(
    stdio: ChildStdio,
    ctl_r: &OwnedFd,
    st_w: &OwnedFd,
    thread_files: Option<Vec<CString>>,
    pid_ns: PidRequest<'_>,
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
    if let PidRequest::Host = pid_ns {
        return Ok(cmd.spawn()?.id());
    }
    // A process is made in its creator's pid namespace for children: a
    // thread of its own enters it (only that thread's children are made
    // there), forks, and ends.
    std::thread::scope(|s| {
        s.spawn(|| {
            match pid_ns {
                PidRequest::New => unshare(CloneFlags::CLONE_NEWPID)?,
                PidRequest::Join(ns) => setns(ns, CloneFlags::CLONE_NEWPID)?,
                PidRequest::Host => {}
            }
            Ok(cmd.spawn()?.id())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the spawning thread panicked")))
    })
}
