//! Density: the memory of idle pods, printed as figures from one run.
//!
//! For each runtime handler, starts N idle HTTP pods through CRI (the CRI
//! tier's harness), each a pause container plus one app container, waits
//! until every pod answers on its IP, and sums the PSS
//! (`/proc/PID/smaps_rollup`) of every shim process of the containerd and
//! all their descendants (pause processes, app processes). Measured at N/2
//! and at N pods (or between consecutive counts), so the marginal cost of a
//! pod shows apart from the fixed cost of a node process. containerd itself is the same for all and is not
//! counted.
//!
//! - `wisp`: per-pod mode, Wasm `http-hello`;
//! - `wisp-node`: node mode, the same app;
//! - `runc`: busybox httpd, the same-shaped pod with a native server.
//!
//! `WISP_BENCH_PODS` lists the pod counts to measure at (default `100`;
//! `100,1000` adds pods up to 100, measures, then up to 1,000), and
//! `WISP_BENCH_HANDLERS` (comma-separated) picks handlers. Needs what the
//! CRI tier needs; 1,000 pods need about 12,000 pids and 20,000 open files
//! for containerd.

#[path = "../tests/common/figures.rs"]
#[allow(dead_code)]
mod figures;
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

/// What the shim trees of a containerd cost at one moment.
struct Footprint {
    processes: usize,
    pss_kib: u64,
    fds: usize,
    /// Mappings of the busiest process (`vm.max_map_count` bounds each).
    max_maps: usize,
}

fn footprint(cri: &Cri, pods: usize) -> Footprint {
    std::thread::sleep(Duration::from_secs(2));
    let tree = shim_tree("containerd-shim-", &cri.address().to_string_lossy());
    let fds = tree
        .iter()
        .map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).map_or(0, |d| d.count()))
        .sum();
    let maps = |p: &u32| {
        std::fs::read_to_string(format!("/proc/{p}/maps")).map_or(0, |m| m.lines().count())
    };
    let busiest = tree.iter().max_by_key(|p| maps(p));
    if let Ok(path) = std::env::var("WISP_BENCH_MAPS_DUMP")
        && let Some(p) = busiest
    {
        // The busiest process's mappings and thread names, to see what grows.
        let _ = std::fs::copy(format!("/proc/{p}/maps"), format!("{path}.{pods}"));
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .collect();
        let _ = std::fs::write(format!("{path}.{pods}.threads"), names.concat());
    }
    Footprint {
        processes: tree.len(),
        pss_kib: tree.iter().map(|p| pss_kib(*p)).sum(),
        fds,
        max_maps: busiest.map_or(0, maps),
    }
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
    // Pod counts to measure at, ascending: pods are added up to each in turn.
    let mut counts: Vec<usize> = std::env::var("WISP_BENCH_PODS")
        .unwrap_or_else(|_| "100".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("WISP_BENCH_PODS: pod counts, e.g. 100,1000")
        })
        .collect();
    counts.sort_unstable();
    counts.dedup();
    let cri = Cri::start();
    let wasm = cri.import_wasm_app("web", &guests::http_hello(), &[]);
    let busybox = cri.import_busybox();
    println!("idle HTTP pods (pause + app), PSS of the shim process trees:");
    println!(
        "  {:<10} {:>6} {:>10} {:>12} {:>12} {:>14} {:>12} {:>8} {:>9}",
        "handler",
        "pods",
        "processes",
        "total MiB",
        "MiB/pod",
        "marginal MiB",
        "start s",
        "fds/pod",
        "max maps"
    );
    let only = std::env::var("WISP_BENCH_HANDLERS").unwrap_or_default();
    let names: Vec<String> = counts
        .iter()
        .flat_map(|n| [format!("per pod at {n}"), format!("marginal at {n}")])
        .collect();
    let mut bars: Vec<(&str, Vec<f64>)> = Vec::new();
    for (handler, image) in [(WISP_NODE, &wasm), (WISP, &wasm), (RUNC, &busybox)] {
        if !only.is_empty() && !only.split(',').any(|h| h == handler) {
            continue;
        }
        let started = Instant::now();
        let mut pods = Vec::new();
        // The marginal cost of a pod: from half the first count to it, then
        // from each count to the next.
        let first = counts[0];
        pods.extend(start(&cri, handler, image, 0, first / 2));
        let mut last = footprint(&cri, first / 2);
        let mut last_n = first / 2;
        let mut values = Vec::new();
        for &n in &counts {
            pods.extend(start(&cri, handler, image, pods.len(), n));
            let took = started.elapsed().as_secs_f64();
            let now = footprint(&cri, n);
            let mib = |kib: u64| kib as f64 / 1024.0;
            println!(
                "  {handler:<10} {n:>6} {:>10} {:>12.1} {:>12.2} {:>14.2} {took:>12.1} {:>8.1} {:>9}",
                now.processes,
                mib(now.pss_kib),
                mib(now.pss_kib) / n as f64,
                mib(now.pss_kib.saturating_sub(last.pss_kib)) / (n - last_n) as f64,
                now.fds as f64 / n as f64,
                now.max_maps,
            );
            values.push(mib(now.pss_kib) / n as f64);
            values.push(mib(now.pss_kib.saturating_sub(last.pss_kib)) / (n - last_n) as f64);
            last = now;
            last_n = n;
        }
        bars.push((handler, values));
        for pod in pods {
            cri.remove_pod(&pod.id);
        }
    }
    let bars: Vec<(&str, Vec<(&str, f64)>)> = bars
        .iter()
        .map(|(h, v)| {
            (
                *h,
                names
                    .iter()
                    .map(String::as_str)
                    .zip(v.iter().copied())
                    .collect(),
            )
        })
        .collect();
    figures::write_bars(
        "density",
        "Idle HTTP pods: PSS of the shim process trees per pod (MiB)",
        "MiB",
        &bars,
    );
}
