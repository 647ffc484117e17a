//! `wisp-load`: the burst load generator (see the library's docs).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use wisp_load::{BurstOptions, Target};

/// Holds N requests in flight at once against a Wisp server and reports how
/// fast its instances came and went, its memory, errors, and a ping's latency
/// during the burst.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Example:\n  \
    wisp serve --max-connections 110000 --max-concurrent-requests 100000 \\\n    \
    --memory-reservation 16MiB --memory-guard 0 guests/http-echo.wasm &\n  \
    wisp-load --requests 100000 --pid $! 'http://127.0.0.1:3000/sleep?ms=4000'"
)]
struct Cli {
    /// The request every connection sends: http://IP:PORT/PATH?QUERY.
    #[arg(value_name = "URL")]
    url: Target,

    /// Requests in flight at once, one connection each.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    requests: usize,

    /// Spread the requests' start over this long (e.g. 500ms); default all at once.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    ramp: Duration,

    /// Source addresses (comma-separated); default 127.0.0.1, .2, ... one per
    /// 25,000 connections.
    #[arg(long, value_delimiter = ',')]
    sources: Vec<Ipv4Addr>,

    /// The server's pid, to sample its resident memory.
    #[arg(long)]
    pid: Option<u32>,

    /// How long a request may take.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    request_timeout: Duration,

    /// How long to wait after the first response for the server to settle.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    settle_timeout: Duration,

    /// Client worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// Send the requests as HTTP/2 (h2c) streams over this many connections,
    /// instead of one HTTP/1.1 connection each.
    #[arg(long, value_name = "CONNECTIONS")]
    http2: Option<usize>,

    /// Also write the report, with every sample, as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, ""), |i| s.split_at(i));
    let n: f64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms or 2s"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}` is not a duration like 500ms or 2s")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut opts = BurstOptions::new(cli.url.clone(), cli.requests);
    opts.ramp = cli.ramp;
    opts.sources = cli.sources;
    opts.server_pid = cli.pid;
    opts.request_timeout = cli.request_timeout;
    opts.settle_timeout = cli.settle_timeout;
    opts.threads = cli.threads;
    opts.http2_connections = cli.http2;
    let report = wisp_load::burst(&opts)?;
    println!("{report}");
    if let Some(path) = &cli.json {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("failed to write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    if report.errors_total() > 0 {
        std::process::exit(1);
    }
    Ok(())
}
