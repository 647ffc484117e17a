//! Bad input of every kind: a non-zero exit, one `error: ...` line first that names
//! the offending input, and never a panic.

use std::net::TcpListener;
use std::path::PathBuf;

use crate::support::{Output, Sandbox, WISP, s};
use wisp_test_guests as guests;

/// Checks the shape of a user-facing failure and returns the first line.
#[track_caller]
fn assert_clean_error(out: &Output, needle: &str) -> String {
    assert!(out.code.is_some(), "killed by a signal: {}", out.describe());
    assert_ne!(out.code, Some(0), "{}", out.describe());
    assert!(
        !out.stderr.contains("panicked"),
        "panic: {}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("RUST_BACKTRACE"),
        "panic hint: {}",
        out.describe()
    );
    assert_eq!(out.stdout, "", "{}", out.describe());
    let first = out.stderr.lines().next().unwrap_or("").to_owned();
    assert!(
        first.starts_with("error: "),
        "first stderr line is not `error: ...`: {}",
        out.describe()
    );
    let error_lines = out
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("error:"))
        .count();
    assert_eq!(
        error_lines,
        1,
        "more than one `error:` line: {}",
        out.describe()
    );
    assert!(
        first.contains(needle),
        "first line does not name `{needle}`: {}",
        out.describe()
    );
    first
}

fn hello() -> String {
    s(&guests::hello()).to_owned()
}

#[test]
fn missing_file() {
    let sb = Sandbox::new();
    let missing = sb.path("no-such-app.wasm");
    let out = sb.run(["run", s(&missing)]);
    assert_clean_error(&out, s(&missing));
}

#[test]
fn text_file() {
    let sb = Sandbox::new();
    let toml = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = sb.run(["run", s(&toml)]);
    let first = assert_clean_error(&out, s(&toml));
    assert!(
        first.contains("not a WebAssembly file"),
        "{}",
        out.describe()
    );
}

#[test]
fn elf_executable() {
    let sb = Sandbox::new();
    let out = sb.run(["run", WISP]);
    let first = assert_clean_error(&out, WISP);
    assert!(first.contains("ELF"), "{}", out.describe());
}

#[test]
fn truncated_module() {
    let sb = Sandbox::new();
    let bytes = std::fs::read(guests::hello()).unwrap();
    let truncated = sb.path("truncated.wasm");
    std::fs::write(&truncated, &bytes[..100]).unwrap();
    let out = sb.run(["run", s(&truncated)]);
    assert_clean_error(&out, s(&truncated));
}

#[test]
fn empty_file() {
    let sb = Sandbox::new();
    let empty = sb.path("empty.wasm");
    std::fs::write(&empty, b"").unwrap();
    let out = sb.run(["run", s(&empty)]);
    let first = assert_clean_error(&out, s(&empty));
    assert!(first.contains("empty"), "{}", out.describe());
}

#[test]
fn reactor_module() {
    let sb = Sandbox::new();
    let reactor = guests::reactor();
    let out = sb.run(["run", s(&reactor)]);
    let first = assert_clean_error(&out, s(&reactor));
    assert!(first.contains("reactor"), "{}", out.describe());
}

#[test]
fn empty_component() {
    let sb = Sandbox::new();
    let component = guests::empty_component();
    let out = sb.run(["run", s(&component)]);
    assert_clean_error(&out, s(&component));
    // Serving it is refused the same way.
    let out = sb.run(["serve", "--listen", "127.0.0.1:0", s(&component)]);
    assert_clean_error(&out, s(&component));
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let sb = Sandbox::new();
    let out = sb.run(["run", "--no-such-flag", &hello()]);
    out.expect_code(2);
    assert_clean_error(&out, "--no-such-flag");
}

#[test]
fn dir_that_does_not_exist() {
    let sb = Sandbox::new();
    let missing = sb.path("nonexistent");
    let out = sb.run(["run", "--dir", s(&missing), &hello()]);
    assert_clean_error(&out, s(&missing));
}

#[test]
fn dir_that_is_a_regular_file() {
    let sb = Sandbox::new();
    let file = sb.path("plain-file");
    std::fs::write(&file, "x").unwrap();
    let out = sb.run(["run", "--dir", s(&file), &hello()]);
    assert_clean_error(&out, s(&file));
    assert!(out.stderr.contains("not a directory"), "{}", out.describe());
}

#[test]
fn max_memory_without_a_number() {
    let sb = Sandbox::new();
    let out = sb.run(["run", "--max-memory", "lots", &hello()]);
    assert_clean_error(&out, "lots");
}

#[test]
fn timeout_without_a_unit() {
    let sb = Sandbox::new();
    let out = sb.run(["run", "--timeout", "10", &hello()]);
    let first = assert_clean_error(&out, "'10'");
    assert!(first.contains("--timeout"), "{}", out.describe());
}

#[test]
fn outbound_pattern_with_an_unknown_scheme() {
    let sb = Sandbox::new();
    let out = sb.run(["run", "--allow-outbound", "ftp://x", &hello()]);
    assert_clean_error(&out, "ftp://x");
}

#[test]
fn env_without_a_key() {
    let sb = Sandbox::new();
    let out = sb.run(["run", "--env", "=x", &hello()]);
    assert_clean_error(&out, "=x");
}

#[test]
fn listen_address_that_does_not_parse() {
    let sb = Sandbox::new();
    let out = sb.run(["serve", "--listen", "nonsense", s(&guests::http_hello())]);
    assert_clean_error(&out, "nonsense");
}

#[test]
fn config_file_with_an_unknown_key() {
    let sb = Sandbox::new();
    let config = sb.path("wisp.toml");
    std::fs::write(&config, "[limits]\nbogus-limit = 1\n").unwrap();
    let out = sb.run(["run", "--config", s(&config), &hello()]);
    assert_clean_error(&out, s(&config));
    assert!(
        out.stderr.contains("bogus-limit"),
        "should name the key: {}",
        out.describe()
    );
}

#[test]
fn config_file_with_a_bad_value() {
    let sb = Sandbox::new();
    let config = sb.path("wisp.toml");
    std::fs::write(&config, "[limits]\nmax-memory = \"lots\"\n").unwrap();
    let out = sb.run(["run", "--config", s(&config), &hello()]);
    assert_clean_error(&out, s(&config));
    assert!(
        out.stderr.contains("lots"),
        "should quote the value: {}",
        out.describe()
    );
}

#[test]
fn config_file_that_does_not_exist() {
    let sb = Sandbox::new();
    let config = sb.path("missing.toml");
    let out = sb.run(["run", "--config", s(&config), &hello()]);
    assert_clean_error(&out, s(&config));
}

#[test]
fn serve_of_a_command_component() {
    let sb = Sandbox::new();
    let app = guests::echo_component();
    let out = sb.run(["serve", "--listen", "127.0.0.1:0", s(&app)]);
    assert_clean_error(&out, s(&app));
    assert!(!out.stderr.contains("Serving HTTP"), "{}", out.describe());
}

#[test]
fn serve_on_a_port_already_in_use() {
    let sb = Sandbox::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = sb.run(["serve", "--listen", &addr, s(&guests::http_hello())]);
    assert_clean_error(&out, &addr);
    assert!(!out.stderr.contains("Serving HTTP"), "{}", out.describe());
    drop(taken);
}
