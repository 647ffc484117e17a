//! Per-request cost of `wisp serve` without sockets, on the `http-hello` guest.
//!
//! - `instantiate`: `HttpServer::instantiate_once` — a fresh store from the pooling
//!   allocator, WASI context, limits, and instantiation of the pre-linked component,
//!   dropped without calling the guest;
//! - `handle`: `HttpServer::handle` on a `GET /` — instantiation, the guest's
//!   `wasi:http/incoming-handler` call, and collecting the response body — on a
//!   current-thread tokio runtime, so the guest's task runs on the calling thread:
//!   the work of a request, without thread wake-ups;
//! - `handle_multi_thread`: the same on a multi-thread runtime like `wisp serve`'s.
//!   The guest runs in a spawned task on a worker and the body crosses threads, so
//!   an idle runtime adds a few thread wake-ups per request (a busy server's
//!   workers are awake): this is the latency of one request on an idle server.
//!
//! Each is measured by criterion, then by a plain loop of [`LOOP_ITERS`] timed calls
//! (after a warm-up) whose p50/p99/mean are printed directly in microseconds.
//!
//! Needs the test guests: `target/guests/http-hello.wasm` (else `examples/hello.wasm`).
//! Run with `cargo bench -p wisp-runtime --bench instantiate`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use http_body_util::{BodyExt, Full};
use wisp_runtime::http::HttpServer;
use wisp_runtime::{App, Config, Engine, EngineSettings};

/// Timed iterations of the plain loop (a handful under `cargo test --benches`).
const LOOP_ITERS: usize = 20_000;
/// Untimed iterations before the plain loop.
const WARMUP_ITERS: usize = 2_000;
const BODY: &[u8] = b"hello from wisp\n";

fn guest() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let built = root.join("target/guests/http-hello.wasm");
    if built.exists() {
        return built;
    }
    let example = root.join("examples/hello.wasm");
    assert!(
        example.exists(),
        "no guest: build the test guests (target/guests/http-hello.wasm)"
    );
    example
}

fn setup() -> HttpServer {
    let mut config = Config::default();
    config.engine.cache_dir = None;
    let engine = Engine::new(&EngineSettings::for_serve(&config)).expect("engine");
    let app = App::load(&engine, &guest(), false).expect("load guest");
    HttpServer::new(&engine, &app, &config).expect("prepare guest")
}

fn request() -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method("GET")
        .uri("/")
        .header(http::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

async fn instantiate(server: &HttpServer) {
    server.instantiate_once().await.expect("instantiate");
}

async fn handle(server: &HttpServer) -> Bytes {
    let resp = server.handle(request(), None).await;
    assert_eq!(resp.status(), 200);
    resp.into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes()
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn multi_thread_runtime() -> tokio::runtime::Runtime {
    // Like `wisp serve`: one worker per core.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Times `iters` calls one by one; prints p50, p99 and mean in microseconds.
fn plain_loop<F: Future>(
    rt: &tokio::runtime::Runtime,
    name: &str,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> F,
) -> (f64, f64) {
    for _ in 0..warmup {
        rt.block_on(f());
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        black_box(rt.block_on(f()));
        times.push(start.elapsed());
    }
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<20} n={iters:<6} p50 {:>8.1} us   p99 {:>8.1} us   mean {:>8.1} us   max {:>8.1} us",
        us(pct(0.50)),
        us(pct(0.99)),
        us(mean),
        us(*times.last().expect("at least one iteration")),
    );
    (us(pct(0.50)), us(pct(0.99)))
}

fn main() {
    let server = setup();
    let rt = current_thread_runtime();
    let mt = multi_thread_runtime();
    assert_eq!(
        rt.block_on(handle(&server)),
        BODY,
        "unexpected guest response"
    );

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    c.bench_function("instantiate", |b| {
        b.iter(|| rt.block_on(instantiate(&server)))
    });
    c.bench_function("handle", |b| {
        b.iter(|| black_box(rt.block_on(handle(&server))))
    });
    c.bench_function("handle_multi_thread", |b| {
        b.iter(|| black_box(mt.block_on(handle(&server))))
    });
    c.final_summary();

    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) just
    // check that the loop runs.
    let bench = std::env::args().any(|a| a == "--bench");
    let (warmup, iters) = if bench {
        (WARMUP_ITERS, LOOP_ITERS)
    } else {
        (10, 100)
    };
    println!("\nper-request path, plain loop ({iters} iterations after {warmup} warm-up):");
    let rows = [
        (
            "instantiate",
            plain_loop(&rt, "instantiate", warmup, iters, || instantiate(&server)),
        ),
        (
            "handle",
            plain_loop(&rt, "handle", warmup, iters, || handle(&server)),
        ),
        (
            "handle (multi-thread runtime)",
            plain_loop(&mt, "handle_multi_thread", warmup, iters, || {
                handle(&server)
            }),
        ),
    ];
    if bench {
        // For benches/plot.py: p50 and p99 of each path, in µs.
        let series: Vec<String> = rows
            .iter()
            .map(|(name, (p50, p99))| {
                format!("\"{name}\": {{\"p50\": {p50:.2}, \"p99\": {p99:.2}}}")
            })
            .collect();
        let json = format!(
            "{{\"kind\": \"bars\", \"title\": \"Per-request path, {iters} iterations (µs)\", \
             \"unit\": \"µs\", \"metrics\": [\"p50\", \"p99\"], \"series\": {{{}}}}}\n",
            series.join(", ")
        );
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
            .join("bench");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("instantiate.json");
        match std::fs::write(&path, json) {
            Ok(()) => println!("figures written to {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
    // `handle` returns once the response is complete; on the multi-thread runtime
    // the guest's task may still be dropping its store on a worker for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.live_instances() != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(server.live_instances(), 0, "instances leaked");
}
