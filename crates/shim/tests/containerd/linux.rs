//! Linux containers beside Wasm: runc's own shim as the control, and the
//! same busybox image through wisp, which hands it to runc.

use crate::support::{Containerd, RUNC, WISP, stderr, stdout, task_status, wait_status};

#[test]
fn busybox_runs_under_runc_and_under_wisp_alike() {
    let c = Containerd::start();
    let busybox = c.import_busybox();
    for (runtime, id) in [(RUNC, "control"), (WISP, "linux")] {
        let out = c.run(
            runtime,
            &busybox,
            id,
            &["sh", "-c", "echo hello from $0; exit 5"],
        );
        assert_eq!(out.status.code(), Some(5), "{runtime}: {}", stderr(&out));
        assert_eq!(stdout(&out), "hello from sh\n", "{runtime}");
    }
}

#[test]
fn linux_container_lifecycle_through_wisp() {
    let c = Containerd::start();
    let busybox = c.import_busybox();
    c.start_task(WISP, &busybox, "side", &["sleep", "60"]);
    let out = c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e",
        "side",
        "sh",
        "-c",
        "echo in $0; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), "in sh\n");
    let metrics = c.ok(&["tasks", "metrics", "side"]);
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");
    c.ok(&["tasks", "pause", "side"]);
    wait_status(&c, "side", "PAUSED");
    // A signal to a frozen container does not thaw it: runc's freezer keeps
    // it, and the task says PAUSED still (the layering had once said RUNNING).
    c.ok(&["tasks", "kill", "--signal", "SIGTERM", "side"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(task_status(&c, "side").as_deref(), Some("PAUSED"));
    c.ok(&["tasks", "resume", "side"]);
    wait_status(&c, "side", "RUNNING");
    // `sleep` is pid 1 of its pid namespace and has no SIGTERM handler, so
    // only SIGKILL ends it: the kernel ignores default-action signals to init.
    assert_eq!(c.exit_of("e"), 4);
    assert_eq!(c.kill_and_delete("side"), 137);
}
