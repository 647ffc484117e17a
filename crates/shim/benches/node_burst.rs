//! The burst in node mode: zero to N live instances of one pod's app in the
//! node process, and back, through the kubelet's path.
//!
//! Starts a private containerd with the CRI plugin (the CRI test tier's
//! harness) whose node process reads a node config sizing its pool for N
//! (16 MiB reservation, no guard, `keep-resident 0`, `memory-init copy`), runs
//! one `wisp-node` pod of the http-echo app with `WISP_MAX_CONCURRENT_REQUESTS=N`,
//! then points `wisp-load` at the pod IP: N requests `GET /sleep?ms=HOLD` as
//! HTTP/2 streams over 100 connections, the node process's RSS and the app's
//! load endpoint sampled every 5 ms, a ping every 10 ms. Prints the report and
//! writes it to `target/bench/node-burst-N.json` for `benches/plot.py`.
//!
//! The pod has no CPU limit, so its app is served by one thread of the node
//! process (a thread per CPU of a limit otherwise).
//!
//! Open files no longer bound N: each live instance of a CRI container used
//! to hold two directory descriptors (its preopens, the rootfs and
//! `/dev/shm`), and this VM's hard limit of 20,000 files stopped the node at
//! about 9,000 instances. The app now opens them once and every instance
//! shares them (`wisp_runtime::wasi::Grants`).
//!
//! Needs what the CRI test tier needs, and root to raise `vm.max_map_count`
//! for the run (restored after). Environment: `WISP_BENCH_N` (default
//! 100000), `WISP_BENCH_HOLD_MS` (default 45000: the app's one thread starts
//! instances in arrival order, about 37 s for 100,000 here, and the first
//! must still hold when the last starts).

#[path = "../tests/common/host.rs"]
mod host;
#[path = "../tests/common/layouts.rs"]
#[allow(dead_code)]
mod layouts;
#[path = "../tests/cri/support.rs"]
#[allow(dead_code)]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{Cri, WISP_NODE, env, wait_ready, web_container};
use wisp_load::{BurstOptions, Target};
use wisp_test_guests as guests;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sets `vm.max_map_count` for the run and puts the old value back on drop.
struct MapCount(Option<String>);

impl MapCount {
    const PATH: &str = "/proc/sys/vm/max_map_count";

    fn at_least(n: usize) -> Self {
        let old = std::fs::read_to_string(Self::PATH).unwrap_or_default();
        if old.trim().parse::<usize>().is_ok_and(|have| have >= n) {
            return Self(None);
        }
        std::fs::write(Self::PATH, n.to_string())
            .unwrap_or_else(|e| panic!("{n} instances need vm.max_map_count >= {n}: {e}"));
        Self(Some(old))
    }
}

impl Drop for MapCount {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(Self::PATH, old.trim());
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo test --benches` only checks that it builds and starts.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = env_or("WISP_BENCH_N", 100_000);
    let hold_ms: u64 = env_or("WISP_BENCH_HOLD_MS", 45_000);
    // Pooled fiber stacks' guard pages and each live memory's mapping: about
    // 8 mappings per instance (see benches/burst.sh).
    let _maps = MapCount::at_least(n * 8 + 65_536);

    let dir = tempfile::tempdir().unwrap();
    let node_config = dir.path().join("node.toml");
    std::fs::write(
        &node_config,
        format!(
            "[engine.pooling]\ntotal-instances = {}\nmemory-reservation = \"16MiB\"\n\
             memory-guard = 0\nkeep-resident = 0\nmemory-init = \"copy\"\n",
            n + 100
        ),
    )
    .unwrap();
    // containerd passes its environment to the shims, and the node process
    // inherits it from the shim that starts it.
    // SAFETY: no other thread runs yet: the harness starts after this.
    unsafe { std::env::set_var(wisp_shim::backend::node::NODE_CONFIG_ENV, &node_config) };

    let cri = Cri::start();
    let image = cri.import_wasm_app("echo", &guests::http_echo(), &[]);
    let pod = cri.run_pod("burst", WISP_NODE);
    let mut web = web_container(WISP_NODE, &image);
    env(
        &mut web,
        &[
            ("WISP_MAX_CONCURRENT_REQUESTS", &n.to_string()),
            ("WISP_REQUEST_TIMEOUT", "5m"),
        ],
    );
    cri.run(&pod, web);
    wait_ready(&pod.ip, 8080, "/");
    // The node process: of this containerd's shim processes, the one holding
    // the engine (the most resident memory).
    let node = cri
        .shims()
        .into_iter()
        .max_by_key(|pid| wisp_load::rss_bytes(*pid).unwrap_or(0))
        .expect("a node process");

    let url = format!("http://{}:8080/sleep?ms={hold_ms}", pod.ip);
    let target: Target = url.parse().expect("target");
    // A warm-up burst, as burst.sh does: "idle" is that of a server that has
    // served before.
    let mut warm = BurstOptions::new(
        format!("http://{}:8080/sleep?ms=200", pod.ip)
            .parse()
            .unwrap(),
        1000,
    );
    warm.settle_timeout = Duration::from_secs(5);
    wisp_load::burst(&warm).expect("warm-up burst");

    let mut opts = BurstOptions::new(target, n);
    opts.server_pid = Some(node);
    opts.http2_connections = Some(100);
    opts.request_timeout = Duration::from_millis(hold_ms) * 3;
    opts.settle_timeout = Duration::from_secs(20);
    let report = wisp_load::burst(&opts).expect("burst");
    println!(
        "# wisp node-mode burst: N={n} HOLD={hold_ms}ms, one wisp-node pod, HTTP/2 streams over 100 connections, {} CPUs",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    println!("{report}");

    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let json = out.join(format!("node-burst-{n}.json"));
    std::fs::write(&json, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    println!("figures written to {}", json.display());
    if report.errors_total() > 0 {
        // What the node process said about them.
        let log = cri.log();
        for line in log
            .lines()
            .filter(|l| l.contains("level=error") || l.contains("ERROR"))
            .take(5)
        {
            eprintln!("{line}");
        }
    }
    cri.remove_pod(&pod.id);
    assert_eq!(report.errors_total(), 0, "errors in the burst");
}
