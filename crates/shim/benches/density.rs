//! Density: the memory of idle pods, printed as figures from one run.
//!
//! For each runtime handler, starts N idle HTTP pods through CRI (the CRI
//! tier's harness), each a pause container plus one app container, waits
//! until every pod answers on its IP, and sums the PSS
//! (`/proc/PID/smaps_rollup`) of every shim process of the containerd and
//! all their descendants (pause processes, app processes). Measured at N/2
//! and at N pods, so the marginal cost of a pod shows apart from the fixed
//! cost of a node process. containerd itself is the same for all and is not
//! counted.
//!
//! - `wisp`: per-pod mode, Wasm `http-hello`;
//! - `wisp-node`: node mode, the same app;
//! - `runc`: busybox httpd, the same-shaped pod with a native server.
//!
//! `WISP_BENCH_PODS` sets N (default 100); `WISP_BENCH_HANDLERS` (comma-
//! separated) picks handlers. Needs what the CRI tier needs.

#[path = "../tests/common/host.rs"]
mod host;
#[path = "../tests/common/layouts.rs"]
#[allow(dead_code)]
mod layouts;
#[path = "../tests/cri/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use host::{pss_kib, shim_tree};
use support::{Cri, Pod, RUNC, WISP, WISP_NODE, wait_ready, web_container};
use wisp_test_guests as guests;

/// (processes, PSS KiB, open fds) of every shim tree of `cri`'s containerd.
fn footprint(cri: &Cri, pods: usize) -> (usize, u64, usize) {
    std::thread::sleep(Duration::from_secs(2));
    let tree = shim_tree("containerd-shim-", &cri.address().to_string_lossy());
    let fds = tree
        .iter()
        .map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).map_or(0, |d| d.count()))
        .sum();
    // Mappings of the busiest process (vm.max_map_count bounds each process).
    let maps = tree
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/maps")).map_or(0, |m| m.lines().count())
        })
        .max()
        .unwrap_or(0);
    eprintln!("  (largest process: {maps} mappings)");
    if let Ok(path) = std::env::var("WISP_BENCH_MAPS_DUMP")
        && let Some(p) = tree.iter().max_by_key(|p| {
            std::fs::read_to_string(format!("/proc/{p}/maps")).map_or(0, |m| m.lines().count())
        })
    {
        let _ = std::fs::copy(format!("/proc/{p}/maps"), format!("{path}.{pods}"));
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .collect();
        let _ = std::fs::write(format!("{path}.{pods}.threads"), names.concat());
    }
    (tree.len(), tree.iter().map(|p| pss_kib(*p)).sum(), fds)
}

fn start(cri: &Cri, handler: &str, image: &str, from: usize, to: usize) -> Vec<Pod> {
    (from..to)
        .map(|i| {
            let pod = cri.run_pod(&format!("{handler}-{i}"), handler);
            cri.run(&pod, web_container(handler, image));
            wait_ready(&pod.ip, 8080, "/");
            pod
        })
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("WISP_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let half = n / 2;
    let cri = Cri::start();
    let wasm = cri.import_wasm_app("web", &guests::http_hello(), &[]);
    let busybox = cri.import_busybox();
    println!("idle HTTP pods (pause + app), PSS of the shim process trees:");
    println!(
        "  {:<10} {:>6} {:>10} {:>12} {:>12} {:>14} {:>12} {:>8}",
        "handler",
        "pods",
        "processes",
        "total MiB",
        "MiB/pod",
        "marginal MiB",
        "start s",
        "fds/pod"
    );
    let only = std::env::var("WISP_BENCH_HANDLERS").unwrap_or_default();
    for (handler, image) in [(WISP_NODE, &wasm), (WISP, &wasm), (RUNC, &busybox)] {
        if !only.is_empty() && !only.split(',').any(|h| h == handler) {
            continue;
        }
        let started = Instant::now();
        let mut pods = start(&cri, handler, image, 0, half);
        let (_, at_half, _) = footprint(&cri, half);
        pods.extend(start(&cri, handler, image, half, n));
        let took = started.elapsed().as_secs_f64();
        let (procs, total, fds) = footprint(&cri, n);
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "  {handler:<10} {n:>6} {procs:>10} {:>12.1} {:>12.2} {:>14.2} {took:>12.1} {:>8.1}",
            mib(total),
            mib(total) / n as f64,
            mib(total.saturating_sub(at_half)) / (n - half) as f64,
            fds as f64 / n as f64,
        );
        for pod in pods {
            cri.remove_pod(&pod.id);
        }
    }
}
