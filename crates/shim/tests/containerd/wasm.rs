//! Wasm containers run to completion: output, exit codes, errors, sandboxing.

use wisp_oci::Shape;
use wisp_test_guests as guests;

use crate::support::{Containerd, WISP, WISP_NODE, stderr, stdout};

#[test]
fn output_args_env_and_exit_codes() {
    let c = Containerd::start();
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    let run = |id: &str, extra: &[&str], args: &[&str]| {
        let mut a = vec!["run", "--rm", "--runtime", WISP];
        a.extend_from_slice(extra);
        a.push(&echo);
        a.push(id);
        a.push("/app.wasm");
        a.extend_from_slice(args);
        c.ctr(&a)
    };
    let out = run("args", &[], &["args", "one", "two words"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "args\none\ntwo words\n");

    let out = run("env", &["--env", "GREETING=hi"], &["env", "GREETING"]);
    assert_eq!(stdout(&out), "GREETING=hi\n");
    // Nothing of the shim's or containerd's environment leaks in.
    let out = run("noenv", &[], &["env", "WISP_CACHE_DIR"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));

    let out = run("exit", &[], &["exit", "42"]);
    assert_eq!(out.status.code(), Some(42));
    let out = run("stderr", &[], &["stderr", "to stderr"]);
    assert_eq!(stderr(&out), "to stderr\n");
}

/// ctr attaches stdin, so node mode runs the command as a process of its own,
/// as per-pod mode does; deciding that must not cost the output (a FIFO the
/// node process opened and closed again gave ctr end-of-file early).
#[test]
fn node_mode_commands_under_ctr_print_their_output() {
    let c = Containerd::start();
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    // The early end-of-file was a race: several runs catch it.
    for i in 0..10 {
        let id = format!("node-args-{i}");
        let out = c.run(WISP_NODE, &echo, &id, &["/app.wasm", "args", "a", "b"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), "args\na\nb\n", "run {i}");
    }
    let out = c.run(WISP_NODE, &echo, "node-exit", &["/app.wasm", "exit", "3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn stdin_reaches_the_guest() {
    let c = Containerd::start();
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    let mut cmd = c.cmd(&[
        "run",
        "--rm",
        "--runtime",
        WISP,
        &echo,
        "stdin",
        "/app.wasm",
        "stdin",
    ]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"line one\nline two\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "line one\nline two\n");
}

#[test]
fn a_trap_exits_134_with_the_reason_on_stderr() {
    let c = Containerd::start();
    let trap = c.import_wasm("trap", &guests::trap(), Shape::Image);
    let out = c.ctr(&["run", "--rm", "--runtime", WISP, &trap, "trap"]);
    assert_eq!(out.status.code(), Some(134), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("trapped") && err.contains("unreachable"),
        "{err}"
    );
}

#[test]
fn the_spec_memory_limit_holds() {
    let c = Containerd::start();
    let bomb = c.import_wasm("membomb", &guests::membomb(), Shape::Image);
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        WISP,
        "--memory-limit",
        "33554432",
        &bomb,
        "bomb",
    ]);
    // Growth past the limit fails inside the guest (a trap), long before the
    // cgroup's OOM killer would have to act.
    assert_eq!(out.status.code(), Some(134), "{}", stderr(&out));
}

#[test]
fn only_the_rootfs_and_declared_mounts_are_visible() {
    let c = Containerd::start();
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("note.txt"), "from the host").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let ro_mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        data.path().display()
    );
    let rw_mount = format!(
        "type=bind,src={},dst=/out,options=rbind:rw",
        rw.path().display()
    );
    let run = |id: &str, args: &[&str]| {
        let mut a = vec![
            "run",
            "--rm",
            "--runtime",
            WISP,
            "--mount",
            &ro_mount,
            "--mount",
            &rw_mount,
            &echo,
            id,
            "/app.wasm",
        ];
        a.extend_from_slice(args);
        c.ctr(&a)
    };
    // WASI lists a directory's own entries: mount points are separate
    // preopens. The process made its mount points in the rootfs, as runc
    // does, but the guest's `/` is the rootfs without the container's
    // mounts: its /proc, /sys and /dev are empty directories to the guest.
    let out = run("ls", &["ls", "/"]);
    assert_eq!(
        stdout(&out),
        "app.wasm\ndata\ndev\nout\nproc\nrun\nsys\n",
        "{}",
        stderr(&out)
    );
    for dir in ["/proc", "/sys", "/dev"] {
        let out = run("lsmnt", &["ls", dir]);
        assert_eq!(stdout(&out), "", "{dir}: {}", stderr(&out));
    }
    assert_eq!(stdout(&run("lsdata", &["ls", "/data"])), "note.txt\n");
    assert_eq!(
        stdout(&run("cat", &["cat", "/data/note.txt"])),
        "from the host"
    );
    // Read-only stays read-only.
    let out = run("ro", &["write", "/data/new.txt", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!data.path().join("new.txt").exists());
    let out = run("rw", &["write", "/out/new.txt", "written"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(rw.path().join("new.txt")).unwrap(),
        "written"
    );
    // Host paths outside the grants do not exist for the guest.
    let out = run("escape", &["cat", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run("dotdot", &["cat", "/../../etc/passwd"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_input_fails_create_with_a_message_ctr_shows() {
    let c = Containerd::start();
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    let run = |id: &str, args: &[&str]| {
        let mut a = vec!["run", "--rm", "--runtime", WISP, &echo, id];
        a.extend_from_slice(args);
        c.ctr(&a)
    };
    let out = run("missing", &["/missing.wasm"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("entrypoint `/missing.wasm` does not exist"),
        "{}",
        stderr(&out)
    );
    // A file that is neither Wasm nor a Linux executable.
    let out = run("notwasm", &["/dev/null"]);
    assert!(!out.status.success());

    // Invalid Wasm: a module header followed by garbage.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff").unwrap();
    let out = c.ctr(&["images", "ls", "-q"]);
    assert!(out.status.success());
    let bytes = std::fs::read(&broken).unwrap();
    // wisp-oci refuses to package it, so build the rootfs by hand: a plain
    // rootfs directory run with --rootfs.
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(rootfs.join("app.wasm"), &bytes).unwrap();
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        WISP,
        "--rootfs",
        rootfs.to_str().unwrap(),
        "broken",
        "/app.wasm",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("failed to load `") && err.contains("app.wasm"),
        "{err}"
    );

    // A bad PORT in the env.
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        WISP,
        "--env",
        "PORT=http",
        &echo,
        "port",
    ]);
    assert!(
        stderr(&out).contains("invalid PORT `http`"),
        "{}",
        stderr(&out)
    );
    // Nothing is left of the failed creates.
    assert_eq!(c.ok(&["tasks", "ls", "-q"]), "");
}

#[test]
fn components_run_as_commands() {
    let c = Containerd::start();
    let echo = c.import_wasm("echo-component", &guests::echo_component(), Shape::Image);
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        WISP,
        &echo,
        "cmp",
        "/app.wasm",
        "args",
        "x",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "args\nx\n");
}

/// A cgroupsPath in the systemd driver's form, on a node without systemd,
/// fails Create naming the field and the way out, for a Wasm container and
/// a Linux one alike (runc would need systemd for `--systemd-cgroup`).
#[test]
fn a_systemd_cgroup_path_without_systemd_fails_create() {
    if std::path::Path::new("/run/systemd/system").is_dir() {
        eprintln!("skipped: systemd runs here");
        return;
    }
    let c = Containerd::start();
    let echo = c.import_wasm("echo", &guests::echo(), Shape::Image);
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        WISP,
        "--cgroup",
        "kubepods-besteffort.slice:cri-containerd:sd1",
        &echo,
        "sd1",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("linux.cgroupsPath") && err.contains("no systemd"),
        "{err}"
    );
}
