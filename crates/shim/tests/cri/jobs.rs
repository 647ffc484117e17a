//! Run-to-completion Wasm containers (what Jobs run) report their exit code
//! through ContainerStatus, and kubelet's restart (a new container of the
//! same name, next attempt, same sandbox) works for commands and HTTP apps.

use wisp_test_guests as guests;

use std::time::{Duration, Instant};

use crate::host::shim_tree;
use crate::support::{Cri, WISP, WISP_NODE, container, env, http_get, wait_ready};

#[test]
fn command_containers_report_exit_codes_through_container_status() {
    exit_codes(WISP);
}

/// In node mode the node process runs commands itself, as it serves apps.
#[test]
fn command_containers_report_exit_codes_in_node_mode() {
    let cri = exit_codes(WISP_NODE);
    let echo = cri.import_wasm_app("echo", &guests::echo(), &[]);
    let pod = cri.run_pod("sleeper", WISP_NODE);
    let mut sleeper = container("sleeper", &echo);
    sleeper.args = ["sleep", "60"].map(String::from).to_vec();
    let id = cri.run(&pod, sleeper);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cri.status(&id).state, 1, "running");
    // No container process: the node process runs the command.
    let tree = shim_tree("containerd-shim-wisp", &cri.address().to_string_lossy());
    let children: Vec<_> = tree
        .iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--wisp-container"))
        })
        .collect();
    assert_eq!(children, Vec::<&u32>::new());
    // A command has no handler for SIGTERM: it stops at once, as a process would.
    let started = Instant::now();
    cri.stop_container(&id, 30);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(cri.status(&id).exit_code, 143);
    cri.remove_pod(&pod.id);
}

fn exit_codes(handler: &str) -> Cri {
    let cri = Cri::start();
    let echo = cri.import_wasm_app("echo", &guests::echo(), &[]);
    let trap = cri.import_wasm_app("trap", &guests::trap(), &[]);
    let pod = cri.run_pod("job", handler);

    let mut ok = container("ok", &echo);
    ok.args = ["args", "a", "b"].map(String::from).to_vec();
    let id = cri.run(&pod, ok.clone());
    let s = cri.wait_exited(&id);
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
    // Both stamped; not ordered: containerd stamps StartedAt with its own
    // clock after Start returns, and a command that exits sooner finishes
    // "before" it (runc's `/bin/true`: 26 of 100 runs).
    assert!(s.finished_at > 0 && s.started_at > 0, "{s:?}");
    let out: Vec<_> = cri
        .log_lines_at_least(&pod, &ok, 3)
        .into_iter()
        .map(|l| (l.stream, l.text))
        .collect();
    assert_eq!(
        out,
        ["args", "a", "b"].map(|t| ("stdout".to_string(), t.to_string()))
    );

    let mut fail = container("fail", &echo);
    fail.args = ["exit", "3"].map(String::from).to_vec();
    let id = cri.run(&pod, fail);
    let s = cri.wait_exited(&id);
    assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"), "{s:?}");

    // A trap: wisp's documented 134, the reason in the container's log.
    let crash = container("crash", &trap);
    let id = cri.run(&pod, crash.clone());
    let s = cri.wait_exited(&id);
    assert_eq!(s.exit_code, 134, "{s:?}");
    let log = cri.log_lines_at_least(&pod, &crash, 1);
    assert!(
        log.iter()
            .any(|l| l.stream == "stderr" && l.text.contains("unreachable")),
        "{log:?}"
    );
    cri.remove_pod(&pod.id);
    cri
}

#[test]
fn kubelet_restarts_exited_containers_in_the_same_sandbox() {
    restarts(WISP);
}

#[test]
fn kubelet_restarts_exited_containers_in_node_mode() {
    restarts(WISP_NODE);
}

fn restarts(handler: &str) {
    let cri = Cri::start();
    let echo = cri.import_wasm_app("echo", &guests::echo(), &[]);
    let web = cri.import_wasm_app("web", &guests::http_echo(), &[]);
    let pod = cri.run_pod("restarts", handler);

    // A failing command, restarted twice (attempts 0, 1, 2), as a Job's
    // pod with restartPolicy OnFailure is.
    for attempt in 0..3u32 {
        let mut job = container("job", &echo);
        job.metadata.as_mut().unwrap().attempt = attempt;
        job.log_path = format!("job/{attempt}.log");
        job.args = ["stderr", &format!("attempt {attempt}")]
            .map(String::from)
            .to_vec();
        let id = cri.run(&pod, job.clone());
        let s = cri.wait_exited(&id);
        assert_eq!(s.exit_code, 0, "{s:?}");
        let log = cri.log_lines_at_least(&pod, &job, 1);
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0].text, format!("attempt {attempt}"));
        // kubelet removes dead containers older than the last one.
        if attempt > 0 {
            cri.remove_container(&previous_job(&cri, &pod.id, attempt - 1));
        }
    }

    // An HTTP app killed and started again serves on the same pod IP.
    let mut app = container("app", &web);
    env(&mut app, &[("PORT", "8080")]);
    let first = cri.run(&pod, app.clone());
    assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from wisp\n");
    cri.stop_container(&first, 0);
    assert_eq!(http_get(&pod.ip, 8080, "/"), None);
    app.metadata.as_mut().unwrap().attempt = 1;
    app.log_path = "app/1.log".into();
    let second = cri.run(&pod, app);
    assert_ne!(first, second);
    assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from wisp\n");
    cri.remove_container(&first);
    assert_eq!(
        http_get(&pod.ip, 8080, "/"),
        Some((200, "hello from wisp\n".into()))
    );
    cri.remove_pod(&pod.id);
}

/// The id of the `job` container of `attempt` in the sandbox.
fn previous_job(cri: &Cri, pod: &str, attempt: u32) -> String {
    cri.containers(pod)
        .into_iter()
        .find(|c| {
            c.metadata
                .as_ref()
                .is_some_and(|m| m.name == "job" && m.attempt == attempt)
        })
        .map(|c| c.id)
        .expect("the previous attempt is listed")
}
