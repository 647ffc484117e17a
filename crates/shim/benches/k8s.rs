//! Deployment start through a real single-node Kubernetes, printed as
//! figures from one run: from `kubectl apply` of an N-replica Deployment
//! (default 10) to every pod Ready, and to the first HTTP 200 from every pod
//! IP, for a Wasm HTTP app in per-pod mode (`wisp`), in node mode
//! (`wisp-node`) and for the same Deployment of a native HTTP server
//! (busybox httpd, runc, the cluster's default handler). Rounds are
//! interleaved; each Deployment is deleted, and its pods gone, before the next.
//!
//! Readiness is kubelet's: an httpGet readiness probe every second, as a user
//! would write it, so "all Ready" includes up to a probe period per pod. The
//! first 200 is the bench's own: it probes each pod IP every 5 ms from the
//! moment the API server reports the IP.
//!
//! Needs what the cluster tier needs (`WISP_K8S_BIN`, etcd, openssl, and
//! what the CRI tier needs). `WISP_BENCH_REPLICAS` (10) and
//! `WISP_BENCH_ROUNDS` (3) size it.

#[path = "../tests/k8s/cluster.rs"]
#[allow(dead_code)]
mod cluster;
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

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cluster::Cluster;
use figures::summary;
use support::{RUNC, WISP, WISP_NODE, http_get};
use wisp_test_guests as guests;

/// One Deployment start, in ms from `kubectl apply`.
struct Start {
    /// The Deployment's last pod turned Ready.
    all_ready: f64,
    /// The first pod answered 200.
    first_200: f64,
    /// Every pod answered 200.
    all_200: f64,
    /// From `kubectl delete` to every pod gone.
    delete: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What the watch reports about one pod.
enum Seen {
    Ip(String, String),
    Ready(String),
}

fn start_deployment(
    k: &Cluster,
    handler: &str,
    image: &str,
    replicas: usize,
    round: usize,
) -> Start {
    let name = format!("{}-{round}", handler.replace('_', "-"));
    // A watch of the Deployment's pods: one line per change, name, IP and
    // Ready, with no polling of the API server.
    let mut watch = k
        .kubectl_cmd()
        .args([
            "get",
            "pods",
            "-l",
            &format!("app={name}"),
            "--watch",
            "--output-watch-events=false",
            "-o",
            r#"jsonpath={.metadata.name}|{.status.podIP}|{.status.conditions[?(@.type=="Ready")].status}{"\n"}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get --watch");
    let (tx, rx) = mpsc::channel();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let f: Vec<&str> = line.trim().split('|').collect();
            let [pod, ip, ready] = f[..] else {
                continue;
            };
            if ip.is_empty() {
                continue;
            }
            if tx.send(Seen::Ip(pod.to_string(), ip.to_string())).is_err() {
                break;
            }
            if ready == "True" && tx.send(Seen::Ready(pod.to_string())).is_err() {
                break;
            }
        }
    });
    // The watch lists the (empty) set before it watches; give it a moment so
    // the clock starts on a live watch.
    std::thread::sleep(Duration::from_millis(300));

    let t0 = Instant::now();
    k.apply(&cluster::deployment(&name, handler, image, replicas));
    let (ok_tx, ok_rx) = mpsc::channel();
    let mut probing = HashMap::new();
    let mut ready = HashMap::new();
    let mut answered: HashMap<String, Duration> = HashMap::new();
    let deadline = t0 + Duration::from_secs(180);
    while ready.len() < replicas || answered.len() < replicas {
        assert!(
            Instant::now() < deadline,
            "{name}: {} ready, {} answered after 180 s",
            ready.len(),
            answered.len()
        );
        while let Ok((pod, at)) = ok_rx.try_recv() {
            answered.insert(pod, at);
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Seen::Ip(pod, ip)) => {
                if probing.insert(pod.clone(), ip.clone()).is_none() {
                    let ok_tx = ok_tx.clone();
                    std::thread::spawn(move || {
                        while !matches!(http_get(&ip, 8080, "/"), Some((200, _))) {
                            if t0.elapsed() > Duration::from_secs(180) {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        let _ = ok_tx.send((pod, t0.elapsed()));
                    });
                }
            }
            Ok(Seen::Ready(pod)) => {
                ready.entry(pod).or_insert_with(|| t0.elapsed());
            }
            Err(_) => {}
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();

    let t1 = Instant::now();
    k.kubectl_ok(&["delete", "deployment", &name, "--wait=true"]);
    k.wait_for("the Deployment's pods gone", 120, || {
        k.kubectl_ok(&["get", "pods", "-l", &format!("app={name}"), "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    let delete = ms(t1.elapsed());
    Start {
        all_ready: ms(*ready.values().max().unwrap()),
        first_200: ms(*answered.values().min().unwrap()),
        all_200: ms(*answered.values().max().unwrap()),
        delete,
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let replicas = env_usize("WISP_BENCH_REPLICAS", 10);
    let rounds = env_usize("WISP_BENCH_ROUNDS", 3);
    let k = Cluster::start();
    k.apply(&wisp_k8s::manifests::runtime_classes());
    let wasm = k.cri.import_wasm_app("web", &guests::http_hello(), &[]);
    let busybox = k.cri.import_busybox();
    let kinds = [
        (WISP, "wisp per-pod (Wasm http-hello)", &wasm),
        (WISP_NODE, "wisp node mode (Wasm http-hello)", &wasm),
        (RUNC, "runc (busybox httpd)", &busybox),
    ];
    // Warm-up: the app compiled into the node's code cache, the node-mode
    // daemon running, runc and the CNI plugins in the page cache.
    for (handler, _, image) in kinds {
        start_deployment(&k, handler, image, 1, 0);
    }
    let mut results: Vec<Vec<Start>> = kinds.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, (handler, _, image)) in kinds.iter().enumerate() {
            results[i].push(start_deployment(&k, handler, image, replicas, round));
        }
    }

    println!(
        "Deployment of {replicas} replicas through Kubernetes {} ({rounds} rounds each, ms from kubectl apply):",
        k.version()
    );
    let mut medians = Vec::new();
    for ((_, label, _), set) in kinds.iter().zip(&results) {
        println!("{label}");
        let ready = summary("all pods Ready", set.iter().map(|s| s.all_ready).collect());
        let first = summary("first HTTP 200", set.iter().map(|s| s.first_200).collect());
        let all = summary(
            "HTTP 200 from every pod",
            set.iter().map(|s| s.all_200).collect(),
        );
        summary(
            "kubectl delete to pods gone",
            set.iter().map(|s| s.delete).collect(),
        );
        medians.push((ready, first, all));
    }
    let bars: Vec<_> = kinds
        .iter()
        .zip(&medians)
        .map(|((_, label, _), m)| {
            (
                *label,
                vec![
                    ("all pods Ready", m.0),
                    ("first HTTP 200", m.1),
                    ("HTTP 200 from every pod", m.2),
                ],
            )
        })
        .collect();
    figures::write_bars(
        "k8s",
        &format!("kubectl apply of a {replicas}-replica Deployment, median of {rounds} (ms)"),
        "ms",
        &bars,
    );
    let runc = medians[2];
    for (i, name) in ["wisp per-pod", "wisp node mode"].iter().enumerate() {
        let m = medians[i];
        println!(
            "ratio {name}/runc (medians): all Ready {:.2}, first 200 {:.2}, every 200 {:.2}",
            m.0 / runc.0,
            m.1 / runc.1,
            m.2 / runc.2
        );
    }
}
