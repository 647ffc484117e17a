//! Pod start latency through the kubelet's path, printed as figures from one
//! run: from RunPodSandbox to the first HTTP 200 from the pod IP, for a Wasm
//! HTTP pod (handler `wisp`) and the same-shaped pod with a native HTTP
//! server (busybox httpd, handler `runc`), pods interleaved. Each pod is
//! removed before the next starts.
//!
//! Needs what the CRI test tier needs (root, containerd, runc, the CNI
//! plugins, busybox-static, cc). `WISP_BENCH_PODS` sets the pods per kind.

#[path = "../tests/common/figures.rs"]
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

use figures::summary;

use support::{Cri, RUNC, WISP, http_get, web_container};
use wisp_test_guests as guests;

/// The phases of one pod start, in ms.
struct Start {
    sandbox: f64,
    containers: f64,
    first_200: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn start_pod(cri: &Cri, handler: &str, image: &str, n: usize) -> Start {
    let t0 = Instant::now();
    let pod = cri.run_pod(&format!("{handler}-{n}"), handler);
    let t1 = Instant::now();
    cri.run(&pod, web_container(handler, image));
    let t2 = Instant::now();
    // A readiness probe's loop, tighter than kubelet's period.
    while !matches!(http_get(&pod.ip, 8080, "/"), Some((200, _))) {
        assert!(
            t2.elapsed() < Duration::from_secs(30),
            "no 200 from {handler} pod"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    let t3 = Instant::now();
    cri.remove_pod(&pod.id);
    Start {
        sandbox: ms(t1 - t0),
        containers: ms(t2 - t1),
        first_200: ms(t3 - t0),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pods: usize = std::env::var("WISP_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cri = Cri::start();
    let wasm = cri.import_wasm_app("web", &guests::http_hello(), &[]);
    let busybox = cri.import_busybox();
    // Warm-up: compiles the app into the node's code cache, loads the CNI
    // plugins and runc into the page cache.
    start_pod(&cri, WISP, &wasm, 0);
    start_pod(&cri, RUNC, &busybox, 0);

    let (mut wisp, mut runc) = (Vec::new(), Vec::new());
    for n in 1..=pods {
        wisp.push(start_pod(&cri, WISP, &wasm, n));
        runc.push(start_pod(&cri, RUNC, &busybox, n));
    }
    println!("pod start, RunPodSandbox to the first HTTP 200 from the pod IP ({pods} pods each):");
    let w = summary(
        "wisp (Wasm http-hello)",
        wisp.iter().map(|s| s.first_200).collect(),
    );
    let r = summary(
        "runc (busybox httpd)",
        runc.iter().map(|s| s.first_200).collect(),
    );
    println!("  ratio wisp/runc (medians)            {:.2}", w / r);
    println!("phases (medians):");
    let mut bars = Vec::new();
    for (name, set, total) in [
        ("wisp (Wasm http-hello)", &wisp, w),
        ("runc (busybox httpd)", &runc, r),
    ] {
        let sandbox = summary(
            &format!("{name} RunPodSandbox"),
            set.iter().map(|s| s.sandbox).collect(),
        );
        let containers = summary(
            &format!("{name} Create+StartContainer"),
            set.iter().map(|s| s.containers).collect(),
        );
        let serving = summary(
            &format!("{name} StartContainer to 200"),
            set.iter()
                .map(|s| s.first_200 - s.sandbox - s.containers)
                .collect(),
        );
        bars.push((
            name,
            vec![
                ("RunPodSandbox to first 200", total),
                ("RunPodSandbox", sandbox),
                ("Create+StartContainer", containers),
                ("to first 200", serving),
            ],
        ));
    }
    figures::write_bars(
        "cri",
        &format!("Pod start through CRI, median of {pods} pods (ms)"),
        "ms",
        &bars,
    );
}
