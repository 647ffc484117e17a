//! The stdio containerd names for a process (FIFOs, files, `/dev/null`),
//! and helper commands run to completion.
//!
//! The shim is a child subreaper and the `containerd-shim` crate reaps every
//! child on SIGCHLD and reports exits through its monitor. Nothing here calls
//! `wait` itself (that would race the reaper); helper commands learn their
//! exit from the monitor.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::process::{Command, Stdio};

use containerd_shim::monitor::Topic;
use containerd_shim::synchronous::monitor::{monitor_subscribe, wait_pid};
use nix::fcntl::OFlag;
use nix::unistd::pipe2;

/// The stdio paths containerd gave for a process.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
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

/// The stdout and stderr files of `paths` (None where it names none).
pub fn open_outputs(paths: &StdioPaths) -> io::Result<(Option<File>, Option<File>)> {
    Ok((
        open_output_file(&paths.stdout)?,
        open_output_file(&paths.stderr)?,
    ))
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
