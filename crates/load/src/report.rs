//! What a burst is asked to do and what it reports: targets, options,
//! samples and the report with its text form.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

/// Where the server answers its load, without an instance.
pub const STATS_PATH: &str = "/.well-known/wisp/stats";
/// Where the server answers a ping, without an instance.
pub const HEALTH_PATH: &str = "/.well-known/wisp/health";
/// Connections per loopback source address: the default ephemeral port range
/// (32768-60999) has 28,232 ports per destination, and some are in use.
pub const CONNECTIONS_PER_SOURCE: usize = 25_000;

/// Errors that stop a burst before it starts.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("`{0}` is not an http://HOST:PORT/PATH URL with a numeric IPv4 host")]
    Url(String),
    #[error(
        "{want} open files are needed for {requests} requests' connections, but the limit \
         can only go to {have}; raise `ulimit -n` (its hard limit) or use fewer connections \
         (HTTP/2)"
    )]
    FileLimit {
        want: u64,
        have: u64,
        requests: usize,
    },
    #[error("the load endpoint {addr}{STATS_PATH} did not answer: {source}")]
    Stats { addr: SocketAddr, source: io::Error },
    #[error("failed to start the client runtime")]
    Runtime(#[source] io::Error),
}

/// An `http://IP:PORT/PATH` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl std::str::FromStr for Target {
    type Err = LoadError;

    fn from_str(url: &str) -> Result<Self, LoadError> {
        let bad = || LoadError::Url(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = authority.parse().map_err(|_| bad())?;
        if !addr.is_ipv4() {
            return Err(bad());
        }
        Ok(Self {
            addr,
            path: path.to_string(),
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BurstOptions {
    pub target: Target,
    /// Requests in flight at once (one connection each).
    pub requests: usize,
    /// Source addresses; empty picks 127.0.0.1, 127.0.0.2, ... as needed.
    pub sources: Vec<Ipv4Addr>,
    /// Spread the requests' start over this long (zero: all at once).
    pub ramp: Duration,
    /// The server's pid, for its resident memory.
    pub server_pid: Option<u32>,
    /// How often the server's load and memory are sampled.
    pub sample_interval: Duration,
    /// How often a ping is timed.
    pub ping_interval: Duration,
    /// Connects in progress at once during the connect phase.
    pub connect_parallelism: usize,
    /// The longest any request may take, from go to its last byte.
    pub request_timeout: Duration,
    /// How long to wait, after the first response, for zero instances and
    /// memory back near idle.
    pub settle_timeout: Duration,
    /// Client worker threads (the sampler has a thread of its own).
    pub threads: usize,
    /// Send the requests as HTTP/2 streams (h2c, prior knowledge) over this
    /// many connections instead of one HTTP/1.1 connection per request: how a
    /// front proxy talks to a backend, and how a process limited in open
    /// files (on both ends) holds 100,000 requests in flight.
    pub http2_connections: Option<usize>,
}

impl BurstOptions {
    pub fn new(target: Target, requests: usize) -> Self {
        Self {
            target,
            requests,
            sources: Vec::new(),
            ramp: Duration::ZERO,
            server_pid: None,
            sample_interval: Duration::from_millis(5),
            ping_interval: Duration::from_millis(10),
            connect_parallelism: 512,
            request_timeout: Duration::from_secs(120),
            settle_timeout: Duration::from_secs(10),
            threads: 1,
            http2_connections: None,
        }
    }

    /// Connections the burst opens.
    pub(crate) fn connections(&self) -> usize {
        self.http2_connections.unwrap_or(self.requests).max(1)
    }

    pub(crate) fn sources(&self) -> Vec<Ipv4Addr> {
        if !self.sources.is_empty() {
            return self.sources.clone();
        }
        // Loopback sources reach only loopback: anywhere else (a pod IP, say)
        // the kernel picks the source, and each connection its own port.
        if !self.target.addr.ip().is_loopback() {
            return vec![Ipv4Addr::UNSPECIFIED];
        }
        let n = self.connections().div_ceil(CONNECTIONS_PER_SOURCE).max(1);
        (0..n)
            .map(|i| Ipv4Addr::new(127, 0, ((i + 1) >> 8) as u8, (i + 1) as u8))
            .collect()
    }
}

/// One sample of the server, in ms from go (negative before it).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_ms: f64,
    pub live_instances: usize,
    pub executing: usize,
    pub queued: usize,
    /// The server process's resident memory, if its pid was given.
    pub rss_bytes: Option<u64>,
    /// The server process's CPU time (user + system) and minor page faults
    /// so far, if its pid was given.
    pub cpu_ms: Option<f64>,
    pub minor_faults: Option<u64>,
    /// Requests sent and responses completed so far.
    pub sent: usize,
    pub done: usize,
}

/// Latencies of the pings made between go and the last response.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pings {
    pub count: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What a burst measured. Times are ms.
#[derive(Debug, Clone, Serialize)]
pub struct BurstReport {
    pub requests: usize,
    pub sources: usize,
    /// Responses with status 200.
    pub ok: usize,
    /// Everything else, by kind ("status 503", "connect: ...", "timeout", ...).
    pub errors: BTreeMap<String, usize>,
    /// The connect phase.
    pub connect_ms: f64,
    /// Go to the last request written.
    pub sent_ms: f64,
    /// Most instances alive at once, as sampled.
    pub peak_live: usize,
    /// Go to the first sample with every request's instance alive.
    pub all_live_ms: Option<f64>,
    /// The server's CPU time and minor page faults from the last sample
    /// before go to the first with every instance alive, per instance: what
    /// starting an instance cost in the burst.
    pub ramp_cpu_us_per_instance: Option<f64>,
    pub ramp_faults_per_instance: Option<f64>,
    /// Go to the first and the last response.
    pub first_response_ms: f64,
    pub last_response_ms: f64,
    /// First response to the first sample with zero instances alive.
    pub to_zero_ms: Option<f64>,
    /// Last response (the burst's end) to the first sample with zero
    /// instances alive, and to memory within 10% of idle (negative: before it).
    pub to_zero_after_last_ms: Option<f64>,
    pub memory_settled_after_last_ms: Option<f64>,
    /// Server memory: before go, the highest, and the last sample.
    pub idle_rss: Option<u64>,
    pub peak_rss: Option<u64>,
    pub final_rss: Option<u64>,
    /// First response to the first sample within 10% of idle memory (with
    /// zero instances alive).
    pub memory_settled_ms: Option<f64>,
    pub pings: Pings,
    pub samples: Vec<Sample>,
    /// Every ping: ms from go, and its latency in ms (`None`: it failed).
    pub ping_samples: Vec<(f64, Option<f64>)>,
}

impl BurstReport {
    pub fn errors_total(&self) -> usize {
        self.errors.values().sum()
    }
}

impl std::fmt::Display for BurstReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: Option<f64>| v.map_or("never".into(), |v| format!("{v:.0} ms"));
        let mib =
            |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.1} MiB", v as f64 / 1048576.0));
        writeln!(
            f,
            "burst of {} requests from {} source address(es)",
            self.requests, self.sources
        )?;
        writeln!(f, "  connect phase            {:.0} ms", self.connect_ms)?;
        writeln!(f, "  go to all sent           {:.0} ms", self.sent_ms)?;
        writeln!(
            f,
            "  go to all {} live   {}   (peak live {})",
            self.requests,
            ms(self.all_live_ms),
            self.peak_live
        )?;
        writeln!(
            f,
            "  responses                first {:.0} ms, last {:.0} ms",
            self.first_response_ms, self.last_response_ms
        )?;
        writeln!(
            f,
            "  back to zero instances   {} after the first response, {} after the last",
            ms(self.to_zero_ms),
            ms(self.to_zero_after_last_ms)
        )?;
        writeln!(
            f,
            "  server memory            idle {}, peak {}, end {}",
            mib(self.idle_rss),
            mib(self.peak_rss),
            mib(self.final_rss),
        )?;
        writeln!(
            f,
            "  within 10% of idle       {} after the first response, {} after the last",
            ms(self.memory_settled_ms),
            ms(self.memory_settled_after_last_ms)
        )?;
        writeln!(
            f,
            "  ping during the burst    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} pings, {} failed)",
            self.pings.p50_ms,
            self.pings.p99_ms,
            self.pings.max_ms,
            self.pings.count,
            self.pings.errors
        )?;
        if let (Some(cpu), Some(faults)) =
            (self.ramp_cpu_us_per_instance, self.ramp_faults_per_instance)
        {
            writeln!(
                f,
                "  server, go to all live   {cpu:.0} µs of CPU and {faults:.1} minor faults per instance"
            )?;
        }
        write!(f, "  ok {}, errors {}", self.ok, self.errors_total())?;
        for (kind, n) in &self.errors {
            write!(f, "\n    {n} x {kind}")?;
        }
        Ok(())
    }
}
