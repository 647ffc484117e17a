//! A burst load generator: `N` requests in flight at once against one server,
//! each (on Wisp) in an instance of its own, with the server's instance count,
//! memory and responsiveness sampled throughout.
//!
//! A burst runs in phases:
//! 1. **Connect**: `N` connections are opened and left idle, from as many
//!    loopback source addresses as the ephemeral port range needs (the kernel
//!    picks ports per destination with `IP_BIND_ADDRESS_NO_PORT`). Front
//!    proxies and load balancers hold such pools of connections; opening them
//!    is not what the burst measures.
//! 2. **Burst**: at "go" every connection sends its request (all at once, or
//!    spread over `ramp`). A request that holds its instance (`/sleep?ms=N`)
//!    keeps it alive until the hold ends.
//! 3. **Drain**: the responses come back; sampling goes on until the server
//!    reports zero live instances and its memory is back near idle, or
//!    `settle_timeout` passes.
//!
//! Meanwhile one thread of its own samples the server's load endpoint
//! (`/.well-known/wisp/stats`, answered without an instance) and the server
//! process's resident memory, and times a ping (the health endpoint) on a
//! connection of its own every `ping_interval`.

mod procfs;
mod report;

pub use procfs::{cpu_and_faults, rss_bytes};
pub use report::{
    BurstOptions, BurstReport, CONNECTIONS_PER_SOURCE, HEALTH_PATH, LoadError, Pings, STATS_PATH,
    Sample, Target,
};

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// State shared by the client tasks and the sampler thread.
struct Shared {
    /// When the burst began (the sampler's clock until go is known).
    start: Instant,
    go: OnceLock<Instant>,
    sent: AtomicUsize,
    done: AtomicUsize,
    stop: AtomicBool,
    samples: Mutex<Vec<Sample>>,
    /// (ms from go, latency ms or None for a failed ping).
    pings: Mutex<Vec<(f64, Option<f64>)>>,
}

impl Shared {
    /// ms since the burst began (before go is set, the only clock there is).
    fn since_start(&self, at: Instant) -> f64 {
        (at - self.start).as_secs_f64() * 1000.0
    }

    /// ms from go; called only once go is set.
    fn since_go(&self, at: Instant) -> f64 {
        let go = *self.go.get().expect("go is set");
        self.since_start(at) - self.since_start(go)
    }
}

/// How one request ended.
enum Outcome {
    Ok(Instant),
    Failed(String, Option<Instant>),
}

impl Outcome {
    /// A request that got `res` (its status, or why not) by its deadline, at `at`.
    fn of(res: Result<io::Result<u16>, tokio::time::error::Elapsed>, at: Instant) -> Self {
        match res {
            Ok(Ok(200)) => Self::Ok(at),
            Ok(Ok(status)) => Self::Failed(format!("status {status}"), Some(at)),
            Ok(Err(e)) => Self::Failed(format!("request: {}", io_kind(&e)), Some(at)),
            Err(_) => Self::Failed("timeout".into(), Some(at)),
        }
    }
}

/// When request `i` of `n` starts, after go, spread evenly over `ramp`.
fn ramp_delay(ramp: Duration, i: usize, n: usize) -> Duration {
    if n > 1 {
        ramp.mul_f64(i as f64 / (n - 1) as f64)
    } else {
        Duration::ZERO
    }
}

/// Runs one burst and reports it.
pub fn burst(opts: &BurstOptions) -> Result<BurstReport, LoadError> {
    let want = opts.connections() as u64 + 1024;
    let have = wisp_runtime::raise_file_limit(want).unwrap_or(0);
    if have < want {
        return Err(LoadError::FileLimit {
            want,
            have,
            requests: opts.requests,
        });
    }
    let shared = Arc::new(Shared {
        start: Instant::now(),
        go: OnceLock::new(),
        sent: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        samples: Mutex::new(Vec::new()),
        pings: Mutex::new(Vec::new()),
    });
    // The sampler first: it must see the server idle, and answer at once.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sampler = {
        let (shared, opts) = (shared.clone(), opts.clone());
        std::thread::Builder::new()
            .name("wisp-load-sampler".into())
            .spawn(move || sampler(&opts, &shared, ready_tx))
            .map_err(LoadError::Runtime)?
    };
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(source)) => {
            return Err(LoadError::Stats {
                addr: opts.target.addr,
                source,
            });
        }
        Err(_) => {
            return Err(LoadError::Stats {
                addr: opts.target.addr,
                source: io::Error::other("the sampler thread ended"),
            });
        }
    }
    let idle_rss = opts.server_pid.and_then(rss_bytes);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    let sources = opts.sources();
    let (outcomes, connect_ms) = match opts.http2_connections {
        None => rt.block_on(run_clients(opts, &sources, &shared)),
        Some(k) => rt.block_on(run_http2_clients(opts, k.max(1), &sources, &shared)),
    };
    let go = *shared.go.get().expect("go was set");

    let mut ok = 0;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    for o in &outcomes {
        let at = match o {
            Outcome::Ok(at) => {
                ok += 1;
                Some(*at)
            }
            Outcome::Failed(kind, at) => {
                *errors.entry(kind.clone()).or_default() += 1;
                *at
            }
        };
        if let Some(at) = at {
            first = Some(first.map_or(at, |f| f.min(at)));
            last = Some(last.map_or(at, |l| l.max(at)));
        }
    }
    let first = first.unwrap_or(go);
    let last = last.unwrap_or(go);
    let first_ms = shared.since_go(first);
    let first_on_start_clock = shared.since_start(first);

    // Let the sampler watch the server settle: zero instances, memory near idle.
    let settle_deadline = Instant::now() + opts.settle_timeout;
    loop {
        let settled = {
            let samples = shared.samples.lock().unwrap();
            samples.iter().rev().take(1).any(|s| {
                s.t_ms > first_on_start_clock
                    && s.live_instances == 0
                    && match (s.rss_bytes, idle_rss) {
                        (Some(now), Some(idle)) => now as f64 <= idle as f64 * 1.1,
                        _ => true,
                    }
            })
        };
        if settled || Instant::now() > settle_deadline {
            break;
        }
        std::thread::sleep(opts.sample_interval);
    }
    shared.stop.store(true, Ordering::Release);
    let _ = sampler.join();

    // Sampled on the burst's own clock; from here on, ms from go.
    let offset = shared.since_start(go);
    let mut samples = std::mem::take(&mut *shared.samples.lock().unwrap());
    samples.iter_mut().for_each(|s| s.t_ms -= offset);
    let last_ms = shared.since_go(last);
    let mut ping_samples = std::mem::take(&mut *shared.pings.lock().unwrap());
    ping_samples.iter_mut().for_each(|p| p.0 -= offset);
    let pings: Vec<f64> = ping_samples
        .iter()
        .filter(|(t, _)| *t >= 0.0 && *t <= last_ms)
        .map(|(_, l)| l.unwrap_or(f64::NAN))
        .collect();
    let to_zero = samples
        .iter()
        .find(|s| s.t_ms > first_ms && s.live_instances == 0)
        .map(|s| s.t_ms);
    let settled = idle_rss.and_then(|idle| {
        samples
            .iter()
            .find(|s| {
                s.t_ms > first_ms
                    && s.live_instances == 0
                    && s.rss_bytes.is_some_and(|r| r as f64 <= idle as f64 * 1.1)
            })
            .map(|s| s.t_ms)
    });
    let all_live = samples.iter().find(|s| s.live_instances >= opts.requests);
    let before_go = samples.iter().rev().find(|s| s.t_ms <= 0.0);
    let per_instance = |f: fn(&Sample) -> Option<f64>| {
        let (a, b) = (f(before_go?)?, f(all_live?)?);
        Some((b - a) / opts.requests.max(1) as f64)
    };
    let ramp_cpu_us_per_instance = per_instance(|s| s.cpu_ms).map(|ms| ms * 1000.0);
    let ramp_faults_per_instance = per_instance(|s| s.minor_faults.map(|n| n as f64));
    Ok(BurstReport {
        requests: opts.requests,
        sources: sources.len(),
        ok,
        errors,
        connect_ms,
        sent_ms: samples
            .iter()
            .find(|s| s.sent >= opts.requests)
            .map_or(f64::NAN, |s| s.t_ms),
        peak_live: samples.iter().map(|s| s.live_instances).max().unwrap_or(0),
        all_live_ms: all_live.map(|s| s.t_ms),
        ramp_cpu_us_per_instance,
        ramp_faults_per_instance,
        first_response_ms: first_ms,
        last_response_ms: last_ms,
        to_zero_ms: to_zero.map(|t| t - first_ms),
        idle_rss,
        peak_rss: samples.iter().filter_map(|s| s.rss_bytes).max(),
        final_rss: samples.last().and_then(|s| s.rss_bytes),
        memory_settled_ms: settled.map(|t| t - first_ms),
        to_zero_after_last_ms: to_zero.map(|t| t - last_ms),
        memory_settled_after_last_ms: settled.map(|t| t - last_ms),
        pings: ping_stats(&pings),
        samples,
        ping_samples,
    })
}

fn ping_stats(all: &[f64]) -> Pings {
    let mut ok: Vec<f64> = all.iter().copied().filter(|l| !l.is_nan()).collect();
    ok.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| {
        if ok.is_empty() {
            f64::NAN
        } else {
            ok[((ok.len() - 1) as f64 * p).round() as usize]
        }
    };
    Pings {
        count: all.len(),
        errors: all.len() - ok.len(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: ok.last().copied().unwrap_or(f64::NAN),
    }
}

/// Opens every connection, fires go once all are open, and collects how each
/// request ended. Returns the outcomes and the connect phase's length in ms.
async fn run_clients(
    opts: &BurstOptions,
    sources: &[Ipv4Addr],
    shared: &Arc<Shared>,
) -> (Vec<Outcome>, f64) {
    let n = opts.requests;
    let connect_slots = Arc::new(tokio::sync::Semaphore::new(opts.connect_parallelism.max(1)));
    let connected = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let request: Arc<[u8]> = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        opts.target.path, opts.target.addr
    )
    .into_bytes()
    .into();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let src = SocketAddr::new(IpAddr::V4(sources[i % sources.len()]), 0);
        let dst = opts.target.addr;
        let (slots, connected, mut go_rx) =
            (connect_slots.clone(), connected.clone(), go_rx.clone());
        let (shared, request) = (shared.clone(), request.clone());
        let delay = ramp_delay(opts.ramp, i, n);
        let timeout = opts.request_timeout;
        tasks.push(tokio::spawn(async move {
            let stream = {
                let _slot = slots.acquire().await.expect("never closed");
                let r = connect(src, dst).await;
                connected.fetch_add(1, Ordering::Release);
                r
            };
            let _ = go_rx.wait_for(|go| *go).await;
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => return Outcome::Failed(format!("connect: {}", io_kind(&e)), None),
            };
            let go = *shared.go.get().expect("go is set before the signal");
            if !delay.is_zero() {
                tokio::time::sleep_until((go + delay).into()).await;
            }
            let deadline = go + delay + timeout;
            let res = tokio::time::timeout_at(deadline.into(), async {
                stream.write_all(&request).await?;
                shared.sent.fetch_add(1, Ordering::Relaxed);
                read_status_to_eof(&mut stream).await
            })
            .await;
            shared.done.fetch_add(1, Ordering::Relaxed);
            Outcome::of(res, Instant::now())
        }));
    }
    while connected.load(Ordering::Acquire) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let connect_ms = started.elapsed().as_secs_f64() * 1000.0;
    let _ = shared.go.set(Instant::now());
    let _ = go_tx.send(true);
    let mut outcomes = Vec::with_capacity(n);
    for t in tasks {
        outcomes.push(
            t.await
                .unwrap_or_else(|e| Outcome::Failed(format!("client task: {e}"), None)),
        );
    }
    (outcomes, connect_ms)
}

/// The HTTP/2 burst: `k` connections, then every request a stream on one of
/// them, all sent at go (or over the ramp).
async fn run_http2_clients(
    opts: &BurstOptions,
    k: usize,
    sources: &[Ipv4Addr],
    shared: &Arc<Shared>,
) -> (Vec<Outcome>, f64) {
    use http_body_util::BodyExt;
    let started = Instant::now();
    let mut senders = Vec::with_capacity(k);
    let mut failed_connects = Vec::new();
    for i in 0..k {
        let src = SocketAddr::new(IpAddr::V4(sources[i % sources.len()]), 0);
        let conn = async {
            let stream = connect(src, opts.target.addr).await?;
            let (sender, conn) =
                hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .handshake::<_, http_body_util::Empty<bytes::Bytes>>(
                        hyper_util::rt::TokioIo::new(stream),
                    )
                    .await
                    .map_err(io::Error::other)?;
            tokio::spawn(conn);
            Ok::<_, io::Error>(sender)
        };
        match conn.await {
            Ok(s) => senders.push(s),
            Err(e) => failed_connects.push(format!("connect: {}", io_kind(&e))),
        }
    }
    let connect_ms = started.elapsed().as_secs_f64() * 1000.0;
    let n = opts.requests;
    if senders.is_empty() {
        let kind = failed_connects.first().cloned().unwrap_or_default();
        let _ = shared.go.set(Instant::now());
        return (
            (0..n)
                .map(|_| Outcome::Failed(kind.clone(), None))
                .collect(),
            connect_ms,
        );
    }
    let go = Instant::now();
    let _ = shared.go.set(go);
    let uri = format!("http://{}{}", opts.target.addr, opts.target.path);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let mut sender = senders[i % senders.len()].clone();
        let shared = shared.clone();
        let delay = ramp_delay(opts.ramp, i, n);
        let deadline = go + delay + opts.request_timeout;
        let req = hyper::Request::get(uri.as_str())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("a valid request");
        tasks.push(tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep_until((go + delay).into()).await;
            }
            let res = tokio::time::timeout_at(deadline.into(), async {
                let resp = sender.send_request(req);
                shared.sent.fetch_add(1, Ordering::Relaxed);
                let resp = resp.await.map_err(io::Error::other)?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await.map_err(io::Error::other)?;
                Ok::<_, io::Error>(status)
            })
            .await;
            shared.done.fetch_add(1, Ordering::Relaxed);
            Outcome::of(res, Instant::now())
        }));
    }
    let mut outcomes: Vec<Outcome> = failed_connects
        .into_iter()
        .map(|kind| Outcome::Failed(kind, None))
        .collect();
    for t in tasks {
        outcomes.push(
            t.await
                .unwrap_or_else(|e| Outcome::Failed(format!("client task: {e}"), None)),
        );
    }
    (outcomes, connect_ms)
}

fn io_kind(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{} (os error {code})", e.kind()),
        None => e.to_string(),
    }
}

/// A connection from `src` (port chosen at connect time) to `dst`.
async fn connect(src: SocketAddr, dst: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if src.ip() != IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
        let one: libc::c_int = 1;
        // SAFETY: the fd is the socket's own and open; the option value is a
        // c_int we own, its size passed along.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        socket.bind(src)?;
    }
    let stream = socket.connect(dst).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads a response to EOF (`Connection: close`); its status code.
async fn read_status_to_eof(stream: &mut TcpStream) -> io::Result<u16> {
    let mut buf = Vec::with_capacity(256);
    stream.read_to_end(&mut buf).await?;
    parse_status(&buf)
}

fn parse_status(head: &[u8]) -> io::Result<u16> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP response: {:?}", line.trim_end()),
        )),
    }
}

/// A keep-alive connection for small host-answered requests (stats, ping).
struct KeepAlive {
    stream: BufReader<TcpStream>,
    request: Vec<u8>,
}

impl KeepAlive {
    async fn open(addr: SocketAddr, path: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            request: format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes(),
        })
    }

    /// One request; the status and the body (Content-Length framed).
    async fn get(&mut self) -> io::Result<(u16, Vec<u8>)> {
        self.stream.get_mut().write_all(&self.request).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = parse_status(line.as_bytes())?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// Parses the stats endpoint's `{"live_instances":N,"executing":N,"queued":N}`.
fn parse_stats(body: &[u8]) -> Option<(usize, usize, usize)> {
    #[derive(serde::Deserialize)]
    struct Stats {
        live_instances: usize,
        executing: usize,
        queued: usize,
    }
    let s: Stats = serde_json::from_slice(body).ok()?;
    Some((s.live_instances, s.executing, s.queued))
}

/// The sampler thread: load and memory every `sample_interval`, a ping every
/// `ping_interval`, on a runtime of its own so a busy client never delays it.
fn sampler(
    opts: &BurstOptions,
    shared: &Arc<Shared>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async {
        let addr = opts.target.addr;
        let opened = async {
            let mut stats = KeepAlive::open(addr, STATS_PATH).await?;
            let ping = KeepAlive::open(addr, HEALTH_PATH).await?;
            let (status, body) = stats.get().await?;
            if status != 200 || parse_stats(&body).is_none() {
                return Err(io::Error::other(format!(
                    "status {status}, body {:?} (is this a wisp server?)",
                    String::from_utf8_lossy(&body)
                )));
            }
            Ok((stats, ping))
        }
        .await;
        let (mut stats, mut ping) = match opened {
            Ok(c) => {
                let _ = ready.send(Ok(()));
                c
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let pings = async {
            let mut tick = tokio::time::interval(opts.ping_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !shared.stop.load(Ordering::Acquire) {
                tick.tick().await;
                let t0 = Instant::now();
                let r = ping.get().await;
                let latency = match r {
                    Ok((200, _)) => Some(t0.elapsed().as_secs_f64() * 1000.0),
                    _ => None,
                };
                shared
                    .pings
                    .lock()
                    .unwrap()
                    .push((shared.since_start(t0), latency));
                if latency.is_none() {
                    // A broken connection: open another for the next ping.
                    match KeepAlive::open(addr, HEALTH_PATH).await {
                        Ok(c) => ping = c,
                        Err(_) => tokio::time::sleep(opts.ping_interval).await,
                    }
                }
            }
        };
        let samples = async {
            let mut tick = tokio::time::interval(opts.sample_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !shared.stop.load(Ordering::Acquire) {
                tick.tick().await;
                let Ok((200, body)) = stats.get().await else {
                    continue;
                };
                let Some((live, executing, queued)) = parse_stats(&body) else {
                    continue;
                };
                let usage = opts.server_pid.and_then(cpu_and_faults);
                let sample = Sample {
                    t_ms: shared.since_start(Instant::now()),
                    live_instances: live,
                    executing,
                    queued,
                    rss_bytes: opts.server_pid.and_then(rss_bytes),
                    cpu_ms: usage.map(|u| u.0),
                    minor_faults: usage.map(|u| u.1),
                    sent: shared.sent.load(Ordering::Relaxed),
                    done: shared.done.load(Ordering::Relaxed),
                };
                shared.samples.lock().unwrap().push(sample);
            }
        };
        tokio::join!(pings, samples);
    });
}

#[cfg(test)]
mod tests;
