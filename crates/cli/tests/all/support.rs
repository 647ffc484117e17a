//! Helpers shared by the tests: a per-test sandbox (own code cache), bounded
//! process runs, a server handle that kills its process on drop, a tiny HTTP/1.1
//! client and a fixed-answer upstream server. Everything binds to loopback only.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub const WISP: &str = env!("CARGO_BIN_EXE_wisp");
/// Upper bound for one `wisp run`/`compile` process; a hang fails the test.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to print its `Serving HTTP on` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Read/write timeout of one HTTP exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The line `wisp serve` prints once it accepts connections.
pub const READY_PREFIX: &str = "Serving HTTP on http://";

/// A per-test sandbox: a fresh code-cache directory and a scratch directory.
pub struct Sandbox {
    cache: tempfile::TempDir,
    scratch: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            cache: tempfile::Builder::new()
                .prefix("wisp-cache-")
                .tempdir()
                .expect("cache tempdir"),
            scratch: tempfile::Builder::new()
                .prefix("wisp-scratch-")
                .tempdir()
                .expect("scratch tempdir"),
        }
    }

    /// This test's `WISP_CACHE_DIR`.
    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    /// A path inside this test's scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// The scratch directory.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// `wisp ARGS` with a clean environment: nothing from the test process leaks
    /// in (no WISP_*, RUST_BACKTRACE, HOME), except this test's cache directory.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(WISP);
        cmd.env_clear()
            .env("WISP_CACHE_DIR", self.cache_dir())
            .args(args);
        cmd
    }

    /// Runs `wisp ARGS` to completion (bounded by [`PROCESS_TIMEOUT`]).
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output(self.cmd(args), None, PROCESS_TIMEOUT)
    }
}

/// A finished process.
#[derive(Debug)]
pub struct Output {
    /// Exit code; `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// For assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit code {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    /// Asserts the exit code and returns self for chaining.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code: {}",
            self.describe()
        );
        self
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so no
/// process outlives a test, even one that panics.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present until drop")
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("child present until drop").id()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // Killing an exited (but unreaped) child is harmless: its pid is ours
            // until `wait`.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `cmd` with `stdin` (or none), collecting its output; kills it and panics
/// if it runs longer than `timeout`.
pub fn output(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let start = Instant::now();
    let mut guard = ChildGuard::new(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")));
    let child = guard.child();
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            // The guest may exit without reading everything: ignore EPIPE.
            let _ = pipe.write_all(&bytes);
        })
    });
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let status = guard.wait_timeout(timeout);
    let elapsed = start.elapsed();
    if status.is_none() {
        let _ = guard.child().kill();
    }
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    if let Some(w) = writer {
        let _ = w.join();
    }
    let result = Output {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
        elapsed,
    };
    assert!(
        status.is_some(),
        "`{cmd:?}` did not finish within {timeout:?}; killed it. {}",
        result.describe()
    );
    result
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Sends `sig` (e.g. `TERM`, `INT`) to `pid` with kill(1).
pub fn send_signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{sig} {pid} failed: {status}");
}

/// A running `wisp serve`, killed on drop.
pub struct Server {
    child: ChildGuard,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Spawns `cmd` (a `wisp serve ...` command) and waits for its ready line.
    #[track_caller]
    pub fn start(cmd: Command) -> Self {
        match Self::try_start(cmd) {
            Ok(s) => s,
            Err(out) => panic!("server exited before it was ready: {}", out.describe()),
        }
    }

    /// Like [`Server::start`], but a process that exits before it is ready is
    /// returned as its [`Output`]. Not being ready within [`READY_TIMEOUT`] panics.
    pub fn try_start(mut cmd: Command) -> Result<Self, Output> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child =
            ChildGuard::new(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")));
        let pipe = child.child().stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        let deadline = start + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split(READY_PREFIX).nth(1) {
                        let addr = rest.trim_end().trim_end_matches('/');
                        let addr: SocketAddr = addr
                            .parse()
                            .unwrap_or_else(|e| panic!("bad address in ready line `{line}`: {e}"));
                        return Ok(Self {
                            child,
                            addr,
                            stderr,
                            stderr_reader: Some(reader),
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed: the process is exiting.
                    let status = child.wait_timeout(Duration::from_secs(10));
                    let _ = reader.join();
                    let stderr = stderr.lock().unwrap().clone();
                    return Err(Output {
                        code: status.and_then(|s| s.code()),
                        stdout: String::new(),
                        stderr,
                        elapsed: start.elapsed(),
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let stderr = stderr.lock().unwrap().clone();
                    panic!("server not ready within {READY_TIMEOUT:?}; stderr so far:\n{stderr}");
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, sig: &str) {
        send_signal(self.pid(), sig);
    }

    /// Waits for the process to exit; panics (and the drop kills it) after `timeout`.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.child.wait_timeout(timeout) {
            Some(status) => {
                if let Some(r) = self.stderr_reader.take() {
                    let _ = r.join();
                }
                status
            }
            None => panic!(
                "server still running {timeout:?} later; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Asserts that `GET /` answers 200 with the hello guests' body: the server
    /// is (still) serving.
    #[track_caller]
    pub fn assert_serves_hello(&self) {
        let r = self.get("/");
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "hello from wisp\n"),
            "{r:?}"
        );
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        http(self.addr, "GET", path, &[], b"")
    }

    #[track_caller]
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        http(self.addr, method, path, headers, body)
    }
}

/// An HTTP response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub elapsed: Duration,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 exchange on a fresh connection; panics on any I/O error or timeout.
#[track_caller]
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_http(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path} failed: {e}"))
}

/// One HTTP/1.1 exchange (`Connection: close`) on a fresh connection.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let mut resp = parse_response(&raw)?;
    resp.elapsed = start.elapsed();
    Ok(resp)
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            bad(format!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(raw)
            ))
        })?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("non-UTF-8 head"))?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line `{status_line}`")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let body = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if rest.len() < len {
            return Err(bad(format!(
                "body truncated: {} of {len} bytes",
                rest.len()
            )));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        elapsed: Duration::ZERO,
    })
}

fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunked body (no chunk size line)"))?;
        let size_line = std::str::from_utf8(&data[..eol]).map_err(|_| bad("bad chunk size"))?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| bad(format!("bad chunk size `{size_line}`")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(bad("truncated chunked body"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Body every [`Upstream`] answers with.
pub const UPSTREAM_BODY: &str = "hello from the upstream\n";

/// A loopback HTTP server answering every request `200` with [`UPSTREAM_BODY`].
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.is_empty() {
                    continue;
                }
                h.fetch_add(1, Ordering::SeqCst);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{UPSTREAM_BODY}",
                    UPSTREAM_BODY.len()
                );
                let _ = conn.write_all(resp.as_bytes());
                let _ = conn.flush();
            }
        });
        Self {
            addr,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:PORT/path`, %-encoded for a query parameter.
    pub fn encoded_url(&self, path: &str) -> String {
        format!(
            "http%3A%2F%2F127.0.0.1%3A{}{}",
            self.addr.port(),
            path.replace('/', "%2F")
        )
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every `*.cwasm` and `*.sha256` file under `dir` (recursively).
pub fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `path` as `&str` (test paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
