//! The shim benchmark, printed as figures from one run on one machine:
//!
//! 1. wall time of `ctr run --rm` of a Wasm hello (wisp) against a busybox
//!    hello (runc's own shim), runs interleaved;
//! 2. memory (PSS, from /proc/PID/smaps_rollup) of the shim process trees per
//!    idle container: Wasm HTTP apps and Wasm commands under wisp, busybox
//!    `sleep` under runc.
//!
//! Needs what the containerd test tier needs (root, containerd, runc,
//! busybox-static). `WISP_BENCH_RUNS` and `WISP_BENCH_IDLE` set the sizes.

#[path = "../tests/common/figures.rs"]
mod figures;
#[path = "../tests/common/host.rs"]
mod host;
#[path = "../tests/common/layouts.rs"]
#[allow(dead_code)]
mod layouts;
#[path = "../tests/containerd/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use figures::summary;

use host::{pss_kib, shim_tree};
use support::{Containerd, RUNC, WISP};
use wisp_oci::Shape;
use wisp_test_guests as guests;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The binary containerd runs for a runtime type: `io.containerd.X.vN` is
/// `containerd-shim-X-vN`.
fn shim_binary(runtime: &str) -> String {
    let rest = runtime.trim_start_matches("io.containerd.");
    let (name, version) = rest.rsplit_once('.').expect("runtime type name.version");
    format!("containerd-shim-{name}-{version}")
}

/// Starts `n` idle containers of `image` and prints the PSS of the process
/// trees of the shim serving them.
/// Starts `n` idle containers; prints and returns their PSS per container (MiB).
fn idle_memory(
    c: &Containerd,
    label: &str,
    runtime: &str,
    n: usize,
    image: &str,
    args: &[&str],
) -> f64 {
    let shim = shim_binary(runtime);
    let ids: Vec<String> = (0..n).map(|i| format!("{label}-{i}")).collect();
    for id in &ids {
        c.start_task(runtime, image, id, args);
    }
    // Let start-up work settle (compilation, first allocations).
    std::thread::sleep(Duration::from_secs(2));
    let needle = c.address().to_string_lossy().into_owned();
    let tree = shim_tree(&shim, &needle);
    let total: u64 = tree.iter().map(|p| pss_kib(*p)).sum();
    println!(
        "  {label:<28} {n} idle containers: {} processes, PSS total {:.1} MiB, {:.2} MiB per container",
        tree.len(),
        total as f64 / 1024.0,
        total as f64 / 1024.0 / n as f64
    );
    for id in &ids {
        c.kill_and_delete(id);
        c.ok(&["containers", "rm", id]);
    }
    total as f64 / 1024.0 / n as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs = env_usize("WISP_BENCH_RUNS", 30);
    let idle = env_usize("WISP_BENCH_IDLE", 10);
    let c = Containerd::start();
    let hello = c.import_wasm("hello", &guests::hello(), Shape::Image);
    let http = c.import_wasm("http-hello", &guests::http_hello(), Shape::Image);
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    let busybox = c.import_busybox();

    println!("ctr run --rm of a hello container, interleaved, {runs} runs each:");
    let run = |runtime: &str, image: &str, id: &str, args: &[&str]| {
        let t = Instant::now();
        let out = c.run(runtime, image, id, args);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ms
    };
    // Warm-up: compile the module into the node cache, page in binaries.
    run(WISP, &hello, "warm-wasm", &[]);
    run(RUNC, &busybox, "warm-runc", &["echo", "hello"]);
    let (mut wasm, mut runc) = (Vec::new(), Vec::new());
    for i in 0..runs {
        wasm.push(run(WISP, &hello, &format!("wasm-{i}"), &[]));
        runc.push(run(
            RUNC,
            &busybox,
            &format!("runc-{i}"),
            &["echo", "hello"],
        ));
    }
    // Each wisp run against the runc run right after it: on a shared
    // machine whose speed drifts, a pair sees the same drift, and the median
    // of the pairs' ratios is steadier than the ratio of the two medians.
    let mut pairs: Vec<f64> = wasm.iter().zip(&runc).map(|(w, r)| w / r).collect();
    pairs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let w = summary("wasm hello (wisp)", wasm);
    let r = summary("busybox hello (runc)", runc);
    println!(
        "  ratio wisp/runc: {:.2} of the medians; per pair median {:.2} (p10 {:.2}, p90 {:.2}); target <= 0.50",
        w / r,
        figures::percentile(&pairs, 0.5),
        figures::percentile(&pairs, 0.1),
        figures::percentile(&pairs, 0.9),
    );

    println!("\nmemory of idle containers (shim process trees, PSS):");
    let http_pss = idle_memory(&c, "wasm-http", WISP, idle, &http, &[]);
    let sleep = ["/app.wasm", "sleep", "600"];
    let command_pss = idle_memory(&c, "wasm-command", WISP, idle, &echo, &sleep);
    let sleep = ["sleep", "600"];
    let runc_pss = idle_memory(&c, "runc-busybox", RUNC, idle, &busybox, &sleep);
    figures::write_bars(
        "ctr",
        "ctr run --rm of a hello container (median, ms) and idle container PSS (MiB)",
        "ms / MiB",
        &[
            (
                "wisp (Wasm)",
                vec![
                    ("ctr run --rm, ms", w),
                    ("idle HTTP app, MiB", http_pss),
                    ("idle command, MiB", command_pss),
                ],
            ),
            (
                "runc (busybox)",
                vec![
                    ("ctr run --rm, ms", r),
                    ("idle HTTP app, MiB", runc_pss),
                    ("idle command, MiB", runc_pss),
                ],
            ),
        ],
    );
}
