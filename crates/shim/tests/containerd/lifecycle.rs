//! Long-running Wasm containers: kill, wait, HTTP in the container's netns,
//! exec, stats, pause/resume, update, delete and the leak check, and a
//! containerd restart under a running task.

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wisp_oci::Shape;
use wisp_test_guests as guests;

use crate::host::{ppid, processes_matching};
use crate::support::{Containerd, NetNs, WISP, stderr, stdout, task_pid, task_status, wait_status};

/// A rootfs directory holding the http-echo app and the echo command.
fn http_rootfs(dir: &Path) -> String {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::copy(guests::http_echo(), rootfs.join("app.wasm")).unwrap();
    std::fs::copy(guests::echo(), rootfs.join("echo.wasm")).unwrap();
    std::fs::write(rootfs.join("data.txt"), "in the rootfs").unwrap();
    rootfs.to_string_lossy().into_owned()
}

#[test]
fn kill_reports_128_plus_signal_and_wait_unblocks() {
    let c = Containerd::start();
    let spin = c.import_wasm("spin", &guests::spin(), Shape::Image);
    for (id, sig, code) in [
        ("term", "SIGTERM", 143),
        ("kill", "SIGKILL", 137),
        ("int", "SIGINT", 130),
    ] {
        // An attached `ctr run` is a Wait on the task: it returns the exit code.
        let run = c
            .cmd(&["run", "--rm", "--runtime", WISP, &spin, id])
            .spawn()
            .unwrap();
        wait_status(&c, id, "RUNNING");
        c.ok(&["tasks", "kill", "-s", sig, id]);
        let out = run.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{id}");
    }
    // Kill of a finished task is refused; Create twice with one id too.
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    c.ok(&[
        "run",
        "-d",
        "--runtime",
        WISP,
        &echo,
        "done",
        "/app.wasm",
        "exit",
        "3",
    ]);
    wait_status(&c, "done", "STOPPED");
    let out = c.ctr(&["tasks", "kill", "done"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("process already finished"),
        "{}",
        stderr(&out)
    );
    assert_eq!(c.exit_of("done"), 3);
    c.ok(&["tasks", "delete", "done"]);
    // The container record outlives its task: a second container with the id
    // is refused.
    let out = c.run(WISP, &echo, "done", &[]);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

#[test]
fn http_app_serves_in_its_netns_and_drains_on_sigterm() {
    let c = Containerd::start();
    let ns = NetNs::new("http");
    let dir = tempfile::tempdir().unwrap();
    let rootfs = http_rootfs(dir.path());
    let netns = format!("network:{}", ns.path());
    c.ok(&[
        "run",
        "-d",
        "--runtime",
        WISP,
        "--with-ns",
        &netns,
        "--env",
        "PORT=8081",
        "--env",
        "GREETING=pod",
        "--env",
        "WISP_REQUEST_TIMEOUT=3s",
        "--rootfs",
        &rootfs,
        "web",
        "/app.wasm",
    ]);
    let resp = ns.wait_get(8081, "/echo?x=1");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Nothing listens on the host side: the listener is in the netns.
    assert!(std::net::TcpStream::connect(("127.0.0.1", 8081)).is_err());
    // A request that never ends is stopped at the container's deadline.
    let resp = ns.wait_get(8081, "/loop");
    assert!(resp.starts_with("HTTP/1.1 504"), "{resp}");

    // Exec: a Wasm file from the container's rootfs, with its preopens.
    let out = c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "web",
        "/echo.wasm",
        "cat",
        "/data.txt",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "in the rootfs");
    let out = c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e2",
        "web",
        "/echo.wasm",
        "env",
        "GREETING",
    ]);
    assert_eq!(stdout(&out), "GREETING=pod\n");
    let out = c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e3",
        "web",
        "/echo.wasm",
        "exit",
        "7",
    ]);
    assert_eq!(out.status.code(), Some(7));

    // Stats: real cgroup figures of the container.
    let metrics = c.ok(&["tasks", "metrics", "web"]);
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert!(value("memory.usage_in_bytes") > 0, "{metrics}");
    assert!(value("cpuacct.usage") > 0, "{metrics}");
    let pids = c.ok(&["tasks", "ps", "web"]);
    assert!(pids.lines().count() >= 2, "{pids}");
    // The app process sits in the container's cgroup in every v1 hierarchy
    // (it moved itself there before loading the app).
    let pid = task_pid(&c, "web").expect("pid of web");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let expected = format!("/{}/web", c.ns);
    for line in cgroups.lines().filter(|l| !l.starts_with("0::")) {
        assert!(line.ends_with(&expected), "{line} in\n{cgroups}");
    }

    // Update: a new memory limit lands in the cgroup.
    let mut resources = containerd_shim_protos::protobuf::well_known_types::any::Any::new();
    resources.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    resources.value = br#"{"memory":{"limit":268435456}}"#.to_vec();
    let req = containerd_shim_protos::api::UpdateTaskRequest {
        id: "web".into(),
        resources: Some(resources).into(),
        ..Default::default()
    };
    let ctx = containerd_shim_protos::ttrpc::context::with_timeout(10_000_000_000);
    c.shim("web").update(ctx, &req).expect("Update");
    let metrics = c.ok(&["tasks", "metrics", "web"]);
    assert!(metrics.contains("268435456"), "{metrics}");

    // Pause freezes the app; resume thaws it.
    c.ok(&["tasks", "pause", "web"]);
    assert_eq!(task_status(&c, "web").as_deref(), Some("PAUSED"));
    c.ok(&["tasks", "resume", "web"]);
    assert!(ns.wait_get(8081, "/echo").starts_with("HTTP/1.1 200"));

    // SIGTERM while a slow request is in flight: it completes, then the task
    // exits 143.
    let slow = {
        let ns_path = ns.name.clone();
        std::thread::spawn(move || {
            let ns = NetNs { name: ns_path };
            let r = ns.get(8081, "/sleep?ms=1500");
            std::mem::forget(ns);
            r
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    c.ok(&["tasks", "kill", "-s", "SIGTERM", "web"]);
    let resp = slow.join().unwrap().expect("in-flight request answered");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(c.exit_of("web"), 143);
    c.ok(&["tasks", "delete", "web"]);
    c.ok(&["containers", "rm", "web"]);
}

#[test]
fn exec_runs_the_apps_own_module_with_other_args() {
    let c = Containerd::start();
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    c.start_task(WISP, &echo, "sleeper", &["/app.wasm", "sleep", "60"]);
    let out = c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "x",
        "sleeper",
        "echo",
        "args",
        "again",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "args\nagain\n");
    assert_eq!(c.exit_of("x"), 0, "the exec's own exit");
    assert_eq!(c.kill_and_delete("sleeper"), 137);
}

/// Container processes are forked by the shim's zygote (no exec), yet are
/// the daemon's children like executed ones; with the zygote gone, the
/// daemon executes its binary instead and nothing else changes.
#[test]
fn container_processes_come_from_the_zygote_and_outlive_its_loss() {
    let c = Containerd::start();
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    c.start_task(WISP, &echo, "z", &["/app.wasm", "sleep", "60"]);
    let daemons: Vec<u32> = shim_processes(&c)
        .into_iter()
        .filter(|p| !cmdline(*p).iter().any(|a| a == "start" || a == "delete"))
        .collect();
    assert_eq!(daemons.len(), 1, "one daemon: {daemons:?}");
    let daemon = daemons[0];
    let children = |arg: &str| -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .filter(|p| ppid(*p) == Some(daemon) && cmdline(*p).iter().any(|a| a == arg))
            .collect()
    };
    let zygote = children("--wisp-zygote");
    assert_eq!(zygote.len(), 1, "the daemon's zygote: {zygote:?}");
    let pid = task_pid(&c, "z").expect("the task's pid");
    assert_eq!(children("--wisp-container"), vec![pid]);
    // The zygote's fork, not an execution of the binary: it never ran the
    // dynamic loader, so its argv[0] is the daemon's, not /proc/self/exe.
    assert_eq!(cmdline(pid)[0], cmdline(daemon)[0]);

    // The zygote dies; the daemon reaps it and starts execs by executing.
    let zygote = zygote[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{zygote}")).exists() {
        assert!(Instant::now() < deadline, "the dead zygote was not reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "x",
        "z",
        "echo",
        "args",
        "after",
        "the",
        "zygote",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "args\nafter\nthe\nzygote\n");
    assert_eq!(c.exit_of("x"), 0);
    assert_eq!(task_status(&c, "z").as_deref(), Some("RUNNING"));
    assert_eq!(c.kill_and_delete("z"), 137);
    wait_no_shims(&c);
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn shim_processes(c: &Containerd) -> Vec<u32> {
    processes_matching("containerd-shim-wisp-v1", &c.address().to_string_lossy())
}

/// Waits (10 s at most) until no shim process of `c` is left.
fn wait_no_shims(c: &Containerd) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shim_processes(c).is_empty() {
        assert!(
            Instant::now() < deadline,
            "shims left: {:?}",
            shim_processes(c)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn shim_socket(c: &Containerd, id: &str) -> std::path::PathBuf {
    let key = format!("{}/{}/{id}", c.address().display(), c.ns);
    Path::new("/run/containerd/s").join(hex::encode(Sha256::digest(key.as_bytes())))
}

fn cgroup_children(c: &Containerd) -> Vec<String> {
    let mut left = Vec::new();
    for ctl in ["memory", "pids", "cpu", "cpuacct", "freezer", "unified"] {
        let dir = Path::new("/sys/fs/cgroup").join(ctl).join(&c.ns);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    left.push(e.path().display().to_string());
                }
            }
        }
    }
    left
}

#[test]
fn nothing_is_left_after_100_create_delete_cycles() {
    let c = Containerd::start();
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    let started = Instant::now();
    for i in 0..100 {
        let id = format!("cycle-{i}");
        let out = c.run(WISP, &echo, &id, &["/app.wasm", "args", "x"]);
        assert!(out.status.success(), "cycle {i}: {}", stderr(&out));
        assert_eq!(stdout(&out), "args\nx\n");
        // The shim removes its socket as it exits, just after ctr returns.
        let deadline = Instant::now() + Duration::from_secs(5);
        while shim_socket(&c, &id).exists() {
            assert!(
                Instant::now() < deadline,
                "socket of {id} left; shims: {:?}\n{}",
                shim_processes(&c),
                c.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    eprintln!("100 ctr run --rm cycles: {:?}", started.elapsed());
    // Shims exit after their last container is deleted.
    wait_no_shims(&c);
    assert_eq!(cgroup_children(&c), Vec::<String>::new(), "cgroups left");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let state = c.dir.path().join("state").to_string_lossy().into_owned();
    assert!(
        !mounts.lines().any(|l| l.contains(&state)),
        "mounts left under {state}"
    );
    assert_eq!(c.ok(&["tasks", "ls", "-q"]), "");
    assert_eq!(c.ok(&["containers", "ls", "-q"]), "");
}

#[test]
fn a_containerd_restart_does_not_lose_the_task() {
    let mut c = Containerd::start();
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    c.start_task(WISP, &echo, "survivor", &["/app.wasm", "sleep", "120"]);
    c.restart();
    wait_status(&c, "survivor", "RUNNING");
    // The exit that happens after the restart reaches the new containerd,
    // exactly once.
    assert_eq!(c.kill_and_delete("survivor"), 137);
}

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    fields.iter().sum()
}

/// With containerd away, its end of the shim's log FIFO is closed. A SIGPIPE
/// then must not set the shim writing to that log in a loop: at debug level
/// it logged every signal it received, each line's EPIPE raised the next
/// SIGPIPE, and the daemon kept a core busy for as long as containerd stayed
/// away (forever, had it never come back).
#[test]
fn a_shim_stays_idle_while_containerd_is_away() {
    let mut c = Containerd::start_debug();
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    c.start_task(WISP, &echo, "idle", &["/app.wasm", "sleep", "120"]);
    let needle = c.address().to_string_lossy().into_owned();
    let daemons = processes_matching("containerd-shim-wisp", &needle);
    assert_eq!(daemons.len(), 1, "shim daemons: {daemons:?}");
    let daemon = daemons[0];

    c.stop();
    for _ in 0..3 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon as i32),
            nix::sys::signal::SIGPIPE,
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(daemon);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(daemon) - before;
    // containerd back first, so that a failure still cleans up.
    c.start_again();
    // Idle is 0 ticks; the loop burnt 40 to 100 a second. 20 leaves room
    // for a busy machine.
    assert!(
        used < 20,
        "the shim used {used} ticks in 1 s with containerd away"
    );
    wait_status(&c, "idle", "RUNNING");
    assert_eq!(c.kill_and_delete("idle"), 137);
}

/// `-v` prints the version, revision and Wasmtime version and exits 0, as
/// `containerd-shim-runc-v2 -v` does, under both of the binary's names.
#[test]
fn dash_v_prints_the_version_under_both_names() {
    let shim = Path::new(env!("CARGO_BIN_EXE_containerd-shim-wisp-v1"));
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join(wisp_k8s::NODE.binary);
    std::os::unix::fs::symlink(shim, &node).unwrap();
    for (bin, name) in [
        (shim, wisp_k8s::PER_POD.binary),
        (&node, wisp_k8s::NODE.binary),
    ] {
        let out = std::process::Command::new(bin).arg("-v").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {out:?}");
        assert!(text.starts_with(&format!("{name}:\n")), "{text}");
        assert!(
            text.contains(&format!("Version:  {}", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        assert!(
            text.contains("Revision: ") && text.contains("Wasmtime: "),
            "{text}"
        );
    }
}
