//! `wisp serve`: serve an HTTP app with a fresh instance per request.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use wisp_runtime::config::{ByteSize, HumanDuration, MemoryInit};
use wisp_runtime::http::HttpServer;
use wisp_runtime::{App, Engine, EngineSettings};

use crate::options::{AppOptions, parse_duration, parse_size, validate};

/// Serve HTTP with a `wasi:http/proxy` component or a WAGI (CGI-style) WASI module.
///
/// Each request runs in a fresh instance; none exist while idle. HTTP/1.1, and
/// HTTP/2 without TLS for clients that open with its preface (h2c with prior
/// knowledge). SIGTERM or SIGINT
/// stops accepting, lets in-flight requests finish (up to --drain-timeout), then
/// exits 0. `GET /.well-known/wisp/health` is answered by the host itself.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    wisp serve examples/hello.wasm\n  \
    wisp serve --listen 0.0.0.0:8080 --max-memory 64MiB --timeout 5s app.wasm\n  \
    wisp serve --allow-outbound 'https://*.example.com' app.wasm")]
pub struct ServeCommand {
    #[command(flatten)]
    options: AppOptions,

    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", env = "WISP_LISTEN")]
    listen: Option<SocketAddr>,

    /// Connections open at once; more wait in the kernel backlog.
    #[arg(long, value_name = "N", env = "WISP_MAX_CONNECTIONS")]
    max_connections: Option<usize>,

    /// Requests executing at once (one instance each); more queue.
    #[arg(long, value_name = "N", env = "WISP_MAX_CONCURRENT_REQUESTS")]
    max_concurrent_requests: Option<u32>,

    /// How long a queued request waits before it gets 503 with Retry-After.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    queue_timeout: Option<HumanDuration>,

    /// How long a client has to send a request's headers before the
    /// connection is closed.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    header_read_timeout: Option<HumanDuration>,

    /// How long in-flight requests may finish after SIGTERM/SIGINT.
    #[arg(long, value_name = "DURATION", env = "WISP_DRAIN_TIMEOUT", value_parser = parse_duration)]
    drain_timeout: Option<HumanDuration>,

    /// Instance slots of the pooling allocator (at least --max-concurrent-requests).
    #[arg(long, value_name = "N", env = "WISP_MAX_INSTANCES")]
    max_instances: Option<u32>,

    /// Address space reserved per linear memory in the pool (smaller fits more
    /// instances; below 4GiB adds bounds checks).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory_reservation: Option<ByteSize>,

    /// Guard region after each linear memory in the pool (0 with a small
    /// --memory-reservation fits the most instances).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory_guard: Option<ByteSize>,

    /// Bytes of each pool slot kept resident between instances (faster reuse;
    /// 0 returns all of an instance's memory to the kernel when it ends).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_resident: Option<ByteSize>,

    /// How a new instance's memory gets the module's data: `cow` maps the
    /// image copy-on-write (any image size), `copy` copies it (faster for
    /// small images on fresh slots, as in a burst).
    #[arg(long, value_name = "cow|copy")]
    memory_init: Option<MemoryInit>,

    /// Listen backlog.
    #[arg(long, value_name = "N")]
    backlog: Option<u32>,

    /// Requests one HTTP/2 (h2c) connection may have in flight at once.
    #[arg(long, value_name = "N")]
    max_streams_per_connection: Option<u32>,

    /// The app: a wasi:http component or a WASI preview1 command module (WAGI).
    #[arg(value_name = "APP")]
    app: PathBuf,
}

impl ServeCommand {
    pub fn execute(self) -> Result<()> {
        let mut config = self.options.to_config()?;
        let s = &mut config.server;
        if let Some(v) = self.listen {
            s.listen = v;
        }
        if let Some(v) = self.max_connections {
            s.max_connections = v;
        }
        if let Some(v) = self.max_concurrent_requests {
            s.max_concurrent_requests = v;
            // Grow the pool with the request limit unless it was set explicitly.
            if self.max_instances.is_none() && config.engine.pooling.total_instances < v {
                config.engine.pooling.total_instances = v;
            }
        }
        if let Some(v) = self.queue_timeout {
            config.server.queue_timeout = v;
        }
        if let Some(v) = self.drain_timeout {
            config.server.drain_timeout = v;
        }
        if let Some(v) = self.header_read_timeout {
            config.server.header_read_timeout = v;
        }
        if let Some(v) = self.backlog {
            config.server.backlog = v;
        }
        if let Some(v) = self.max_streams_per_connection {
            config.server.max_streams_per_connection = v;
        }
        if let Some(v) = self.max_instances {
            config.engine.pooling.total_instances = v;
        }
        if let Some(v) = self.memory_reservation {
            config.engine.pooling.memory_reservation = v;
        }
        if let Some(v) = self.memory_guard {
            config.engine.pooling.memory_guard = v;
        }
        if let Some(v) = self.keep_resident {
            config.engine.pooling.keep_resident = v;
        }
        if let Some(v) = self.memory_init {
            config.engine.pooling.memory_init = v;
        }
        validate(&config, self.options.config.as_ref())?;
        // Every connection is a file; so is each pool's backing. Go and nginx
        // raise the soft limit the same way.
        let want = config.server.max_connections as u64 + 1024;
        match wisp_runtime::raise_file_limit(want) {
            Ok(have) if have < want => tracing::warn!(
                open_files = have,
                max_connections = config.server.max_connections,
                "the open-file limit is below max-connections; raise `ulimit -n`"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
        }

        let engine = Engine::new(&EngineSettings::for_serve(&config))?;
        let app = App::load(&engine, &self.app, self.options.allow_precompiled)?;
        let server = HttpServer::new(&engine, &app, &config)?;

        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        // The start-up check needs an executor; the serving threads bring their own.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?
            .block_on(server.instantiate_once())
            .map_err(anyhow::Error::from)
            .with_context(|| format!("failed to instantiate `{}`", self.app.display()))?;
        let app_path = self.app.display().to_string();
        let report = server.serve_per_core(
            &config.server,
            threads,
            |addr| {
                eprintln!("Serving HTTP on http://{addr}/");
                tracing::info!(app = %app_path, shape = %app.shape(), cached = app.from_cache(), threads, "ready");
            },
            shutdown_signal(),
        )?;
        if report.drained {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!(
                live_instances = report.live_instances,
                "drain timeout reached; exiting with requests still in flight"
            );
        }
        Ok(())
    }
}

/// Resolves on the first SIGTERM (how Kubernetes stops a pod) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown requested");
}
