//! Terminals (`tty: true`) of the Linux containers and execs the shim hands
//! to runc, as containerd's runc shim gives them.
//!
//! runc makes the pty inside the container and sends its master over a Unix
//! socket (`--console-socket`). The shim copies the container's stdin FIFO
//! into the master and the master into its stdout FIFO (a terminal has one
//! output stream), and ResizePty sets the master's window size. The copy out
//! ends when the last process holding the slave ends (a read of the master
//! fails with EIO), which closes the stdout FIFO: the client's end of file.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

/// How long runc has to send the master once it has returned.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A socket for runc's `--console-socket`, in a directory of its own under
/// the temp dir (a bundle's path is too long for a Unix socket's 108 bytes).
pub struct ConsoleSocket {
    dir: tempfile::TempDir,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("wisp-pty").tempdir()?;
        let listener = UnixListener::bind(dir.path().join("pty.sock"))?;
        Ok(Self { dir, listener })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("pty.sock")
    }

    /// The pty master runc sent, once the runc command that was given
    /// [`Self::path`] has succeeded (its connection is queued by then).
    pub fn receive(&self) -> io::Result<OwnedFd> {
        self.listener.set_nonblocking(true)?;
        let deadline = Instant::now() + RECEIVE_TIMEOUT;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("runc sent no terminal over its console socket: {e}"),
                    ));
                }
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(RECEIVE_TIMEOUT))?;
        let mut name = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg
                && let Some(&fd) = fds.first()
            {
                // SAFETY: the kernel just installed this descriptor in our
                // table for us (SCM_RIGHTS); nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        Err(io::Error::other(
            "runc's console socket message carried no terminal",
        ))
    }
}

/// A process's terminal: the pty master, with its copies running.
#[derive(Debug)]
pub struct Console {
    master: File,
}

impl Console {
    /// Starts copying the `stdin` FIFO (none if empty) into `master` and
    /// `master` into `stdout` (drained if None, so the process never blocks
    /// on a full terminal).
    pub fn start(master: OwnedFd, stdin: &str, stdout: Option<File>) -> io::Result<Arc<Self>> {
        let master = File::from(master);
        let mut from_master = master.try_clone()?;
        std::thread::Builder::new()
            .name("wisp-tty-out".into())
            .spawn(move || {
                // Ends with EIO when the slave's last holder is gone.
                let _ = match stdout {
                    Some(mut out) => io::copy(&mut from_master, &mut out),
                    None => io::copy(&mut from_master, &mut io::sink()),
                };
            })?;
        if !stdin.is_empty() {
            let fifo = stdin.to_string();
            let mut to_master = master.try_clone()?;
            std::thread::Builder::new()
                .name("wisp-tty-in".into())
                .spawn(move || {
                    // Blocks until the client opens its end; its close (or
                    // the process's end: EIO on the master) ends the copy.
                    if let Ok(mut f) = File::open(&fifo) {
                        let _ = io::copy(&mut f, &mut to_master);
                    }
                })?;
        }
        Ok(Arc::new(Self { master }))
    }

    /// Sets the terminal's size (columns, rows), as a terminal emulator does.
    pub fn resize(&self, width: u32, height: u32) -> io::Result<()> {
        let size = libc::winsize {
            ws_row: height.min(u16::MAX.into()) as u16,
            ws_col: width.min(u16::MAX.into()) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which
        // points to a live local of that type.
        if unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Runs `make(console_socket)` (a runc command given `--console-socket`) and
/// starts the terminal runc sent (see [`Console::start`]); returns what
/// `make` returned.
pub fn with_console<T>(
    stdin: &str,
    stdout: Option<File>,
    make: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<(T, Arc<Console>)> {
    let socket = ConsoleSocket::new()?;
    let made = make(&socket.path())?;
    let console = Console::start(socket.receive()?, stdin, stdout)?;
    Ok((made, console))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// A pty master sent as runc sends it comes out of the socket, and the
    /// console copies both ways and sets the window size.
    #[test]
    fn a_master_sent_over_the_socket_is_copied_both_ways_and_resized() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let socket = ConsoleSocket::new().unwrap();
        {
            let peer = UnixStream::connect(socket.path()).unwrap();
            let fds = [pty.master.as_raw_fd()];
            nix::sys::socket::sendmsg::<()>(
                peer.as_raw_fd(),
                &[io::IoSlice::new(b"/dev/ptmx")],
                &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        }
        let master = socket.receive().unwrap();
        drop(pty.master);

        let dir = tempfile::tempdir().unwrap();
        let stdin = dir.path().join("stdin");
        nix::unistd::mkfifo(&stdin, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let stdout = dir.path().join("stdout");
        let out = File::create(&stdout).unwrap();
        let console = Console::start(master, &stdin.display().to_string(), Some(out)).unwrap();
        console.resize(132, 43).unwrap();
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` to a live local.
        assert_eq!(
            unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) },
            0
        );
        assert_eq!((size.ws_col, size.ws_row), (132, 43));

        // The client types; the process reads it from its terminal.
        let mut slave = File::from(pty.slave);
        let termios = nix::sys::termios::tcgetattr(&slave).unwrap();
        let mut raw = termios.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &raw).unwrap();
        File::options()
            .write(true)
            .open(&stdin)
            .unwrap()
            .write_all(b"typed")
            .unwrap();
        let mut got = [0u8; 5];
        slave.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"typed");
        // The process writes; it reaches stdout, which ends with the slave.
        slave.write_all(b"shown").unwrap();
        drop(slave);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read(&stdout).unwrap_or_default() != b"shown" {
            assert!(Instant::now() < deadline, "{:?}", std::fs::read(&stdout));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
