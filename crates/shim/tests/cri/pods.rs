//! A Wasm HTTP app as a pod, through the kubelet's calls: served on the pod
//! IP, probed, logged, exec'd, measured, stopped and removed without
//! leftovers. The runc control pod goes through the same harness.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use wisp_test_guests as guests;

use crate::support::{
    Cri, Pod, RUNC, WISP, WISP_NODE, container, env, http_get, wait_ready, web_container,
};

/// Asserts that nothing of `pod` is left: no shim serving it, no mount, no
/// netns, no container cgroup, no answer on its IP.
fn assert_nothing_left(cri: &Cri, pod: &Pod, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cri.shims().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cri.shims(), Vec::<u32>::new(), "shims left");
    assert_eq!(cri.mounts(), Vec::<String>::new(), "mounts left");
    assert_eq!(
        cri.container_cgroups(),
        Vec::<std::path::PathBuf>::new(),
        "container cgroups left"
    );
    let netns = cri.dir.path().join("state/io.containerd.grpc.v1.cri/netns");
    let left: Vec<_> = std::fs::read_dir(&netns)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "netns left: {left:?}");
    assert_eq!(
        http_get(&pod.ip, port, "/"),
        None,
        "the pod IP still answers"
    );
}

#[test]
fn a_wasm_http_pod_serves_logs_execs_reports_stats_and_stops_clean() {
    http_pod(WISP);
}

/// The same pod with its app served by the node process.
#[test]
fn the_same_pod_in_node_mode() {
    http_pod(WISP_NODE);
}

fn http_pod(handler: &str) {
    let cri = Cri::start();
    let app = cri.import_wasm_app(
        "web",
        &guests::http_echo(),
        &[("echo.wasm", &guests::echo())],
    );
    let pod = cri.run_pod("web", handler);
    let mut config = container("app", &app);
    env(&mut config, &[("PORT", "8080"), ("GREETING", "pod")]);
    let id = cri.create(&pod, config.clone());

    // Readiness: nothing answers before StartContainer, then the app does.
    assert_eq!(http_get(&pod.ip, 8080, "/"), None, "served before start");
    cri.start_container(&id);
    assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from wisp\n");
    assert_eq!(
        http_get(&pod.ip, 8080, "/env?name=GREETING"),
        Some((200, "pod".into()))
    );

    // Logs: a burst from concurrent instances, every line in the CRI log
    // file once, whole (F), on its own stream.
    const REQUESTS: usize = 8;
    const LINES: usize = 500;
    let ip = pod.ip.clone();
    let handles: Vec<_> = (0..REQUESTS)
        .map(|r| {
            let ip = ip.clone();
            std::thread::spawn(move || http_get(&ip, 8080, &format!("/log?n={LINES}&tag=r{r}")))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Some((200, format!("logged {LINES}\n"))));
    }
    let want: HashSet<(String, String)> = (0..REQUESTS)
        .flat_map(|r| {
            (0..LINES).flat_map(move |i| {
                [
                    ("stdout".to_string(), format!("r{r} out {i}")),
                    ("stderr".to_string(), format!("r{r} err {i}")),
                ]
            })
        })
        .collect();
    // The burst's lines (the log also holds the app's own, e.g. where it listens).
    let burst = || {
        let mut lines = cri.log_lines(&pod, &config);
        lines.retain(|l| l.text.starts_with('r'));
        lines
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = burst();
        if lines.len() >= want.len() || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), want.len(), "log lines");
    assert!(lines.iter().all(|l| l.tag == "F"), "partial lines");
    let got: HashSet<(String, String)> = lines.into_iter().map(|l| (l.stream, l.text)).collect();
    assert_eq!(got, want);

    // ExecSync: a WASI command from the container's filesystem, with the
    // container's env; output and exit code come back.
    let r = cri.exec_sync(&id, &["/tools/echo.wasm", "env", "GREETING"]);
    assert_eq!((r.exit_code, &r.stdout[..]), (0, &b"GREETING=pod\n"[..]));
    let r = cri.exec_sync(&id, &["/tools/echo.wasm", "stderr", "to stderr"]);
    assert_eq!((r.exit_code, &r.stderr[..]), (0, &b"to stderr\n"[..]));
    let r = cri.exec_sync(&id, &["/tools/echo.wasm", "exit", "7"]);
    assert_eq!(r.exit_code, 7);

    // Stats: real CPU and memory of the Wasm container.
    let stats = cri.stats(&id);
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value);
    let mem = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value);
    assert!(cpu.unwrap_or(0) > 0, "cpu: {cpu:?}");
    // In node mode an idle app holds no instance, so no linear memory: its
    // memory is only non-zero while requests run.
    if handler == WISP {
        assert!(mem.unwrap_or(0) > 0, "memory: {mem:?}");
    }
    let listed = cri.list_stats(&pod);
    let ours = listed
        .iter()
        .find(|s| s.attributes.as_ref().is_some_and(|a| a.id == id))
        .expect("ListContainerStats lists the container");
    assert!(
        ours.cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds)
            .is_some_and(|v| v.value > 0)
    );

    // StopContainer with a grace period while a request is in flight: the
    // app drains it and exits on SIGTERM (143), well before the SIGKILL (137).
    let ip = pod.ip.clone();
    let slow = std::thread::spawn(move || http_get(&ip, 8080, "/sleep?ms=1500"));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    cri.stop_container(&id, 30);
    let took = started.elapsed();
    assert_eq!(slow.join().unwrap(), Some((200, "slept 1500\n".into())));
    let status = cri.status(&id);
    assert_eq!(status.exit_code, 143, "{status:?}");
    assert!(took < Duration::from_secs(30), "stop took the whole grace");
    eprintln!("StopContainer with a 1.5 s request in flight: {took:?}");

    cri.remove_pod(&pod.id);
    assert_nothing_left(&cri, &pod, 8080);
}

#[test]
fn a_runc_control_pod_goes_through_the_same_harness() {
    let cri = Cri::start();
    let busybox = cri.import_busybox();
    let pod = cri.run_pod("control", RUNC);
    let id = cri.run(&pod, web_container(RUNC, &busybox));
    assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from busybox\n");
    let r = cri.exec_sync(&id, &["/bin/cat", "/www/index.html"]);
    assert_eq!(
        (r.exit_code, &r.stdout[..]),
        (0, &b"hello from busybox\n"[..])
    );
    let stats = cri.stats(&id);
    assert!(
        stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .is_some_and(|v| v.value > 0)
    );
    // httpd is pid 1 of its pid namespace and has no SIGTERM handler: the
    // kernel ignores the signal, and the grace period ends in SIGKILL.
    cri.stop_container(&id, 1);
    assert_eq!(cri.status(&id).exit_code, 137);
    cri.remove_pod(&pod.id);
    assert_nothing_left(&cri, &pod, 8080);
}
