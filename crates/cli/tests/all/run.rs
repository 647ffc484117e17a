//! `wisp run`: output, arguments, stdin, exit codes, traps, limits and capabilities.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{ChildGuard, PROCESS_TIMEOUT, Sandbox, output, s};
use wisp_test_guests as guests;

#[test]
fn hello_prints_exactly_its_greeting() {
    let sb = Sandbox::new();
    let out = sb.run(["run", s(&guests::hello())]);
    out.expect_code(0);
    assert_eq!(out.stdout, "hello from wisp\n", "{}", out.describe());
    // `run` is quiet by default: stderr belongs to the guest.
    assert_eq!(out.stderr, "", "{}", out.describe());
}

#[test]
fn args_after_double_dash_reach_the_guest() {
    let sb = Sandbox::new();
    let out = sb.run(["run", s(&guests::echo()), "--", "args", "A", "B"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "args\nA\nB\n", "{}", out.describe());
}

#[test]
fn stdin_passes_through() {
    let sb = Sandbox::new();
    let input = b"first line\nsecond line, no newline at the end";
    let out = output(
        sb.cmd(["run", s(&guests::echo()), "--", "stdin"]),
        Some(input),
        PROCESS_TIMEOUT,
    );
    out.expect_code(0);
    assert_eq!(out.stdout.as_bytes(), input, "{}", out.describe());
}

#[test]
fn exit_codes_are_exact() {
    let sb = Sandbox::new();
    let echo = guests::echo();
    for code in [42, 3, 0] {
        let out = sb.run(["run", s(&echo), "--", "exit", &code.to_string()]);
        out.expect_code(code);
    }
    // A bare proc_exit(42) from a hand-written module.
    sb.run(["run", s(&guests::exit42())]).expect_code(42);
}

#[test]
fn trap_exits_134_with_the_trap_and_a_backtrace() {
    let sb = Sandbox::new();
    let out = sb.run(["run", s(&guests::trap())]);
    out.expect_code(134);
    for needle in ["unreachable", "wasm backtrace", "inner"] {
        assert!(
            out.stderr.contains(needle),
            "stderr lacks `{needle}`: {}",
            out.describe()
        );
    }
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
}

#[test]
fn timeout_stops_an_infinite_loop_with_124() {
    let sb = Sandbox::new();
    let out = sb.run(["run", "--timeout", "200ms", s(&guests::spin())]);
    out.expect_code(124);
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?}: {}",
        out.elapsed,
        out.describe()
    );
    assert!(
        out.stderr.contains("timeout"),
        "stderr should mention the timeout: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("200ms"),
        "stderr should name the budget: {}",
        out.describe()
    );
}

#[test]
fn max_memory_stops_a_memory_bomb() {
    let sb = Sandbox::new();
    let out = sb.run(["run", "--max-memory", "2MiB", s(&guests::membomb())]);
    out.expect_code(134);
    assert!(
        out.stderr.contains("memory"),
        "stderr should mention memory: {}",
        out.describe()
    );
    assert!(out.elapsed < Duration::from_secs(10), "{}", out.describe());
}

#[test]
fn env_flag_is_visible_to_the_guest() {
    let sb = Sandbox::new();
    let out = sb.run(["run", "--env", "K=V", s(&guests::echo()), "--", "env", "K"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "K=V\n", "{}", out.describe());
}

#[test]
fn host_env_is_not_inherited() {
    let sb = Sandbox::new();
    let mut cmd = sb.cmd(["run", s(&guests::echo()), "--", "env", "FOO"]);
    cmd.env("FOO", "leaked");
    let out = output(cmd, None, PROCESS_TIMEOUT);
    out.expect_code(3);
    assert_eq!(out.stdout, "FOO unset\n", "{}", out.describe());
}

#[test]
fn dir_grant_allows_read_and_write() {
    let sb = Sandbox::new();
    let host = sb.path("data");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in.txt"), "file contents\n").unwrap();
    let grant = format!("{}::/data", s(&host));
    let echo = guests::echo();

    let out = sb.run([
        "run",
        "--dir",
        &grant,
        s(&echo),
        "--",
        "cat",
        "/data/in.txt",
    ]);
    out.expect_code(0);
    assert_eq!(out.stdout, "file contents\n", "{}", out.describe());

    let out = sb.run([
        "run",
        "--dir",
        &grant,
        s(&echo),
        "--",
        "write",
        "/data/out.txt",
        "written by the guest",
    ]);
    out.expect_code(0);
    let written =
        std::fs::read_to_string(host.join("out.txt")).expect("guest created the file on the host");
    assert_eq!(written, "written by the guest");

    let out = sb.run(["run", "--dir", &grant, s(&echo), "--", "ls", "/data"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "in.txt\nout.txt\n", "{}", out.describe());
}

#[test]
fn read_only_dir_grant_refuses_writes() {
    let sb = Sandbox::new();
    let host = sb.path("data");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in.txt"), "readable\n").unwrap();
    let grant = format!("{}::/data:ro", s(&host));
    let echo = guests::echo();

    let out = sb.run([
        "run",
        "--dir",
        &grant,
        s(&echo),
        "--",
        "write",
        "/data/new.txt",
        "nope",
    ]);
    out.expect_code(2);
    assert!(out.stderr.contains("error:"), "{}", out.describe());
    assert!(
        !host.join("new.txt").exists(),
        "a read-only grant let the guest create a file"
    );

    // Overwriting an existing file is refused too, and leaves it intact.
    let out = sb.run([
        "run",
        "--dir",
        &grant,
        s(&echo),
        "--",
        "write",
        "/data/in.txt",
        "clobbered",
    ]);
    out.expect_code(2);
    assert_eq!(
        std::fs::read_to_string(host.join("in.txt")).unwrap(),
        "readable\n"
    );

    // Reading still works.
    let out = sb.run([
        "run",
        "--dir",
        &grant,
        s(&echo),
        "--",
        "cat",
        "/data/in.txt",
    ]);
    out.expect_code(0);
    assert_eq!(out.stdout, "readable\n", "{}", out.describe());
}

#[test]
fn paths_outside_preopens_are_not_readable() {
    let sb = Sandbox::new();
    let host = sb.path("data");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(sb.path("secret.txt"), "top secret\n").unwrap();
    let grant = format!("{}::/data", s(&host));
    let echo = guests::echo();

    // The host path of a file next to the grant, a `..` escape out of the grant,
    // and a system file: none is reachable.
    let secret = sb.path("secret.txt");
    for path in [s(&secret), "/data/../secret.txt", "/etc/passwd"] {
        let out = sb.run(["run", "--dir", &grant, s(&echo), "--", "cat", path]);
        out.expect_code(2);
        assert_eq!(out.stdout, "", "guest read `{path}`: {}", out.describe());
        assert!(out.stderr.contains("error:"), "{}", out.describe());
    }
    // No grant at all: not even the granted path is readable.
    let out = sb.run(["run", s(&echo), "--", "cat", "/data/../secret.txt"]);
    out.expect_code(2);
    assert_eq!(out.stdout, "");
}

#[test]
fn p2_command_component_runs() {
    let sb = Sandbox::new();
    let app = guests::echo_component();
    let out = sb.run(["run", s(&app), "--", "args", "X"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "args\nX\n", "{}", out.describe());
    // wasi:cli/exit@0.2 carries only ok/err: a failure surfaces as exit 1.
    sb.run(["run", s(&app), "--", "exit", "7"]).expect_code(1);
}

/// `--timeout` is the budget of the whole run, including time the guest spends
/// blocked in a host call (here: reading a stdin that never closes).
#[test]
fn timeout_stops_a_guest_blocked_on_stdin() {
    let sb = Sandbox::new();
    let mut cmd = sb.cmd([
        "run",
        "--timeout",
        "300ms",
        s(&guests::echo()),
        "--",
        "stdin",
    ]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = std::time::Instant::now();
    let mut child = ChildGuard::new(cmd.spawn().expect("spawn wisp"));
    // Hold stdin open (and empty) for the whole test.
    let _stdin = child.child().stdin.take();
    let status = child.wait_timeout(Duration::from_secs(8));
    assert!(
        status.is_some(),
        "still running {:?} after start despite --timeout 300ms",
        start.elapsed()
    );
    assert_eq!(status.unwrap().code(), Some(124));
}

#[test]
fn run_of_an_http_component_points_to_serve() {
    let sb = Sandbox::new();
    let app = guests::http_hello();
    let out = sb.run(["run", s(&app)]);
    assert_ne!(out.code, Some(0), "{}", out.describe());
    let first = out.stderr.lines().next().unwrap_or("");
    assert!(first.starts_with("error:"), "{}", out.describe());
    assert!(
        out.stderr.contains("wisp serve"),
        "should tell to use `wisp serve`: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains(s(&app)),
        "should name the app: {}",
        out.describe()
    );
    assert_eq!(out.stdout, "");
}
