//! Running commands: stdio, args, env, dirs, exit codes, traps, limits.

use std::time::{Duration, Instant};

use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wisp_runtime::command::{self, Outcome, Stdio, TIMEOUT_EXIT_CODE, TRAP_EXIT_CODE};
use wisp_runtime::config::{ByteSize, HumanDuration};
use wisp_runtime::{App, Config, Engine};
use wisp_test_guests as guests;

use crate::{engine, load};

/// Runs `app` with `args` after argv[0]; returns the outcome and stdout.
pub fn run_captured(
    engine: &Engine,
    app: &App,
    config: &Config,
    args: &[&str],
) -> (Outcome, String) {
    let (outcome, out, _) = run_full(engine, app, config, args, b"");
    (outcome, out)
}

fn run_full(
    engine: &Engine,
    app: &App,
    config: &Config,
    args: &[&str],
    stdin: &[u8],
) -> (Outcome, String, String) {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let stderr = MemoryOutputPipe::new(1 << 20);
    let mut argv = vec!["app.wasm".to_owned()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt
        .block_on(command::run(
            engine,
            app,
            config,
            &argv,
            Stdio::Custom {
                stdin: Box::new(MemoryInputPipe::new(stdin.to_vec())),
                stdout: Box::new(stdout.clone()),
                stderr: Box::new(stderr.clone()),
            },
        ))
        .expect("run");
    let s = |p: &MemoryOutputPipe| String::from_utf8_lossy(&p.contents()).into_owned();
    (outcome, s(&stdout), s(&stderr))
}

fn echo(config: &Config, args: &[&str]) -> (Outcome, String, String) {
    let e = engine(false, None);
    let app = load(&e, &guests::echo());
    run_full(&e, &app, config, args, b"")
}

#[test]
fn hello_prints_and_exits_zero() {
    let e = engine(false, None);
    let (o, out) = run_captured(&e, &load(&e, &guests::hello()), &Config::default(), &[]);
    assert!(matches!(o, Outcome::Exited(0)), "{o:?}");
    assert_eq!(out, "hello from wisp\n");
}

#[test]
fn args_and_stdin_pass_through() {
    let (_, out, _) = echo(&Config::default(), &["args", "A", "b c"]);
    assert_eq!(out, "args\nA\nb c\n");
    let e = engine(false, None);
    let app = load(&e, &guests::echo());
    let (o, out, _) = run_full(
        &e,
        &app,
        &Config::default(),
        &["stdin"],
        b"line one\nline two\n",
    );
    assert_eq!(o.exit_code(), 0);
    assert_eq!(out, "line one\nline two\n");
}

#[test]
fn exit_codes_are_exact() {
    // wasmtime accepts proc_exit codes 0..=125 (126+ are reserved for shells).
    for code in ["0", "1", "3", "42", "125"] {
        let (o, _, _) = echo(&Config::default(), &["exit", code]);
        assert_eq!(o.exit_code(), code.parse::<i32>().unwrap(), "{o:?}");
    }
    let e = engine(false, None);
    let (o, _) = run_captured(&e, &load(&e, &guests::exit42()), &Config::default(), &[]);
    assert!(matches!(o, Outcome::Exited(42)), "{o:?}");
}

#[test]
fn env_is_granted_never_inherited() {
    // SAFETY-free: set in this process, must not reach the guest.
    let mut config = Config::default();
    config.capabilities.env.insert("GIVEN".into(), "yes".into());
    let (o, out, _) = echo(&config, &["env", "GIVEN"]);
    assert_eq!((o.exit_code(), out.as_str()), (0, "GIVEN=yes\n"));
    let (o, out, _) = echo(&config, &["env", "PATH"]);
    assert_eq!(
        (o.exit_code(), out.as_str()),
        (3, "PATH unset\n"),
        "host env leaked"
    );
}

#[test]
fn dirs_are_granted_with_their_permissions() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "from host\n").unwrap();
    let mut config = Config::default();
    config
        .capabilities
        .dirs
        .push(format!("{}::/data", host.path().display()).parse().unwrap());
    let (o, out, _) = echo(&config, &["cat", "/data/in.txt"]);
    assert_eq!((o.exit_code(), out.as_str()), (0, "from host\n"));
    let (o, _, _) = echo(&config, &["write", "/data/out.txt", "written"]);
    assert_eq!(o.exit_code(), 0);
    assert_eq!(
        std::fs::read_to_string(host.path().join("out.txt")).unwrap(),
        "written"
    );

    let mut ro = Config::default();
    ro.capabilities.dirs.push(
        format!("{}::/data:ro", host.path().display())
            .parse()
            .unwrap(),
    );
    let (o, out, _) = echo(&ro, &["cat", "/data/in.txt"]);
    assert_eq!((o.exit_code(), out.as_str()), (0, "from host\n"));
    let (o, _, err) = echo(&ro, &["write", "/data/new.txt", "x"]);
    assert_eq!(
        o.exit_code(),
        2,
        "write to a read-only dir must fail: {err}"
    );
    assert!(!host.path().join("new.txt").exists());
}

#[test]
fn nothing_outside_the_grants_is_visible() {
    let (o, _, err) = echo(&Config::default(), &["cat", "/etc/hostname"]);
    assert_eq!(o.exit_code(), 2, "{err}");
    let host = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config
        .capabilities
        .dirs
        .push(format!("{}::/data", host.path().display()).parse().unwrap());
    let (o, _, err) = echo(&config, &["cat", "/data/../../etc/passwd"]);
    assert_eq!(o.exit_code(), 2, "escape through ..: {err}");
}

#[test]
fn p2_command_component_runs() {
    let e = engine(false, None);
    let app = load(&e, &guests::echo_component());
    let (o, out) = run_captured(&e, &app, &Config::default(), &["args", "X"]);
    assert_eq!(o.exit_code(), 0);
    assert_eq!(out, "args\nX\n");
    let (o, _) = run_captured(&e, &app, &Config::default(), &["exit", "7"]);
    // wasi:cli/exit@0.2 carries only ok/err: any failure is 1.
    assert_eq!(o.exit_code(), 1);
}

#[test]
fn trap_reports_reason_and_backtrace() {
    let e = engine(false, None);
    let (o, _) = run_captured(&e, &load(&e, &guests::trap()), &Config::default(), &[]);
    assert_eq!(o.exit_code(), TRAP_EXIT_CODE);
    let Outcome::Trapped(err) = o else {
        panic!("{o:?}")
    };
    let text = command::describe_trap(&err);
    assert!(text.contains("unreachable"), "{text}");
    assert!(
        text.contains("wasm backtrace") && text.contains("inner") && text.contains("outer"),
        "{text}"
    );
}

#[test]
fn timeout_stops_an_infinite_loop() {
    let e = engine(false, None);
    let mut config = Config::default();
    config.limits.timeout = Some(HumanDuration(Duration::from_millis(100)));
    let start = Instant::now();
    let (o, _) = run_captured(&e, &load(&e, &guests::spin()), &config, &[]);
    assert!(matches!(o, Outcome::TimedOut(_)), "{o:?}");
    assert_eq!(o.exit_code(), TIMEOUT_EXIT_CODE);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

/// The shim prepares a container's command at Create and runs it at Start,
/// which may come much later: the deadline counts from the run. Counted from
/// the preparation, it would have passed during the guest's 1 s sleep, and
/// the guest's next epoch check would stop it.
#[test]
fn a_prepared_commands_deadline_counts_from_its_run() {
    let e = engine(false, None);
    let app = load(&e, &guests::echo());
    let mut config = Config::default();
    config.limits.timeout = Some(HumanDuration(Duration::from_millis(1500)));
    let args: Vec<String> = ["echo", "sleep", "1"].map(String::from).to_vec();
    let prepared = command::prepare(&e, &app, &config, &args, Stdio::files(None, None)).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(prepared.run()).expect("run");
    assert!(matches!(outcome, Outcome::Exited(0)), "{outcome:?}");
}

#[test]
fn memory_cap_traps_growth() {
    let e = engine(false, None);
    let mut config = Config::default();
    config.limits.max_memory = Some(ByteSize(4 << 20));
    let (o, _) = run_captured(&e, &load(&e, &guests::membomb()), &config, &[]);
    let Outcome::Trapped(err) = &o else {
        panic!("{o:?}")
    };
    assert!(
        command::describe_trap(err).contains("memory"),
        "{}",
        command::describe_trap(err)
    );
}

#[test]
fn http_component_is_not_a_command() {
    let e = engine(false, None);
    let app = load(&e, &guests::http_hello());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(command::run(
            &e,
            &app,
            &Config::default(),
            &["x".into()],
            Stdio::Inherit,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("wisp serve"), "{err}");
}
