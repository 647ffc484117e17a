//! A mixed pod: a Wasm app and a busybox sidecar (a real Linux container run
//! by runc under the wisp shim) share the pod's network namespace.

use wisp_test_guests as guests;

use crate::support::{Cri, RUNC, WISP, WISP_NODE, container, env, http_get, wait_ready};

#[test]
fn a_wasm_app_and_a_busybox_sidecar_share_the_pod_network() {
    mixed_pod(&Cri::start(), WISP);
}

#[test]
fn the_same_mixed_pod_in_node_mode() {
    mixed_pod(&Cri::start(), WISP_NODE);
}

pub fn mixed_pod(cri: &Cri, handler: &str) {
    let app = cri.import_wasm_app("web", &guests::http_echo(), &[]);
    let busybox = cri.import_busybox();
    let pod = cri.run_pod("mixed", handler);

    let mut wasm = container("app", &app);
    env(
        &mut wasm,
        &[
            ("PORT", "8080"),
            ("WISP_ALLOW_OUTBOUND", "http://localhost:8081"),
        ],
    );
    let app_id = cri.run(&pod, wasm);
    let mut sidecar = container("sidecar", &busybox);
    sidecar.command = ["/bin/httpd", "-f", "-p", "8081", "-h", "/www"]
        .map(String::from)
        .to_vec();
    let sidecar_id = cri.run(&pod, sidecar);

    // The host reaches both through the pod IP.
    assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from wisp\n");
    assert_eq!(wait_ready(&pod.ip, 8081, "/"), "hello from busybox\n");

    // The sidecar reaches the Wasm app over localhost (exec runs in runc).
    let r = cri.exec_sync(
        &sidecar_id,
        &["/bin/wget", "-q", "-O", "-", "http://localhost:8080/"],
    );
    assert_eq!(
        (r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned()),
        (0, "hello from wisp\n".into()),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    // And the Wasm app the sidecar (an outgoing request from the guest,
    // granted by WISP_ALLOW_OUTBOUND); other destinations stay denied.
    let (status, body) = http_get(
        &pod.ip,
        8080,
        "/outbound?url=http%3A%2F%2Flocalhost%3A8081%2F",
    )
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "upstream status 200\nhello from busybox\n")
    );
    let (status, body) = http_get(
        &pod.ip,
        8080,
        "/outbound?url=http%3A%2F%2Flocalhost%3A8082%2F",
    )
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (502, "outbound error: HTTP-request-denied\n")
    );

    // Both containers are the pod's: their stats are listed under it.
    let listed = cri.list_stats(&pod);
    let mut ids: Vec<_> = listed
        .iter()
        .filter_map(|s| s.attributes.as_ref().map(|a| a.id.clone()))
        .collect();
    ids.sort();
    let mut want = vec![app_id.clone(), sidecar_id.clone()];
    want.sort();
    assert_eq!(ids, want);

    // Stopping the sidecar leaves the Wasm app serving.
    cri.stop_container(&sidecar_id, 1);
    assert_eq!(http_get(&pod.ip, 8081, "/"), None);
    assert_eq!(
        http_get(&pod.ip, 8080, "/"),
        Some((200, "hello from wisp\n".into()))
    );
    cri.remove_pod(&pod.id);
    assert!(
        cri.shims().is_empty() || wait_no_shims(cri),
        "{handler}: shims left after the pod's removal: {:?}\n{}",
        cri.shims(),
        cri.log()
    );
    assert_eq!(cri.mounts(), Vec::<String>::new());
    assert!(cri.container_cgroups().is_empty());
}

/// Whether the pod's shim exits within 30 s (a node-mode daemon once its
/// last container is gone), on a machine as loaded as a full test run.
fn wait_no_shims(cri: &Cri) -> bool {
    for _ in 0..1500 {
        if cri.shims().is_empty() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// A sidecar that outgrows its memory limit is killed by the kernel, and CRI
/// says so: reason `OOMKilled`, exit 137 (containerd's TaskOOM, published by
/// the shim for the container's memory cgroup), as it does under runc.
#[test]
fn an_oom_killed_sidecar_is_reported_oomkilled() {
    oom_killed_sidecars(&Cri::start());
}

pub fn oom_killed_sidecars(cri: &Cri) {
    let busybox = cri.import_busybox();
    for handler in [RUNC, WISP, WISP_NODE] {
        let pod = cri.run_pod("oom", handler);
        let mut hog = container("hog", &busybox);
        // A string that doubles until the cgroup's limit is reached.
        hog.command = ["/bin/sh", "-c", "a=x; while :; do a=$a$a; done"]
            .map(String::from)
            .to_vec();
        hog.linux.get_or_insert_default().resources = Some(k8s_cri::v1::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        });
        let id = cri.run(&pod, hog);
        let status = cri.wait_exited(&id);
        assert_eq!(
            (status.reason.as_str(), status.exit_code),
            ("OOMKilled", 137),
            "{handler}: {status:?}"
        );
        cri.remove_pod(&pod.id);
    }
}

/// `tty: true`: a Linux container of a Wasm pod gets a terminal from runc
/// (its output, one stream, reaches the CRI log); a Wasm container asking
/// for one is refused by name.
#[test]
fn a_sidecar_gets_a_terminal_and_a_wasm_container_is_refused_one() {
    terminals(&Cri::start());
}

pub fn terminals(cri: &Cri) {
    let busybox = cri.import_busybox();
    let app = cri.import_wasm_app("web", &guests::http_echo(), &[]);
    for handler in [WISP, WISP_NODE] {
        let pod = cri.run_pod("tty", handler);
        let mut term = container("term", &busybox);
        term.tty = true;
        term.stdin = true;
        term.command = ["/bin/busybox", "sh", "-c", "/bin/busybox tty; echo done"]
            .map(String::from)
            .to_vec();
        let id = cri.run(&pod, term.clone());
        let status = cri.wait_exited(&id);
        assert_eq!(status.exit_code, 0, "{handler}: {status:?}");
        let lines = cri.log_lines_at_least(&pod, &term, 2);
        let texts: Vec<&str> = lines
            .iter()
            .map(|l| l.text.trim_end_matches('\r'))
            .collect();
        assert_eq!(texts, ["/dev/pts/0", "done"], "{handler}: {lines:?}");
        assert!(lines.iter().all(|l| l.stream == "stdout"), "{lines:?}");

        let mut wasm = container("app", &app);
        wasm.tty = true;
        // CRI makes the task, where the shim decides, at StartContainer.
        let wasm_id = cri.create(&pod, wasm);
        let req = k8s_cri::v1::StartContainerRequest {
            container_id: wasm_id,
        };
        let refused = cri
            .call(async |mut rs| rs.start_container(req).await)
            .unwrap_err();
        assert!(
            refused
                .message()
                .contains("terminal (tty) containers are not supported for Wasm"),
            "{handler}: {refused}"
        );
        cri.remove_pod(&pod.id);
    }
}
