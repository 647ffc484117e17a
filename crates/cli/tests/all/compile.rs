//! `wisp compile`: precompiled artifacts, the `--allow-precompiled` gate, and
//! refusals that leave nothing behind.

use crate::support::{Sandbox, Server, cache_files, s};
use wisp_test_guests as guests;

/// Names of the entries of `dir`, sorted.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn compiled_http_app_serves_only_with_allow_precompiled() {
    let sb = Sandbox::new();
    let artifact = sb.path("app.cwasm");
    let out = sb.run(["compile", s(&guests::http_hello()), "-o", s(&artifact)]);
    out.expect_code(0);
    let len = std::fs::metadata(&artifact)
        .expect("artifact written")
        .len();
    assert!(len > 0, "empty artifact");
    let wasm = std::fs::read(guests::http_hello()).unwrap();
    let cwasm = std::fs::read(&artifact).unwrap();
    assert_ne!(cwasm, wasm, "the artifact is just a copy of the Wasm");
    assert!(
        !cwasm.starts_with(b"\0asm"),
        "the artifact is Wasm, not native code"
    );

    // Refused without the flag: it is native code.
    let out = sb.run(["serve", "--listen", "127.0.0.1:0", s(&artifact)]);
    assert_ne!(out.code, Some(0), "{}", out.describe());
    let first = out.stderr.lines().next().unwrap_or("");
    assert!(first.starts_with("error:"), "{}", out.describe());
    assert!(
        first.contains(s(&artifact)),
        "error should name the file: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("--allow-precompiled"),
        "{}",
        out.describe()
    );
    assert!(!out.stderr.contains("Serving HTTP"), "{}", out.describe());

    // Served with it.
    let server = Server::start(sb.cmd([
        "serve",
        "--allow-precompiled",
        "--listen",
        "127.0.0.1:0",
        s(&artifact),
    ]));
    server.assert_serves_hello();
}

#[test]
fn compiled_command_runs_with_allow_precompiled() {
    let sb = Sandbox::new();
    let artifact = sb.path("hello.cwasm");
    sb.run(["compile", s(&guests::hello()), "-o", s(&artifact)])
        .expect_code(0);
    assert!(artifact.is_file());
    assert_eq!(
        cache_files(sb.cache_dir()),
        Vec::<std::path::PathBuf>::new(),
        "compile wrote to the code cache"
    );

    let out = sb.run(["run", "--allow-precompiled", s(&artifact)]);
    out.expect_code(0);
    assert_eq!(out.stdout, "hello from wisp\n", "{}", out.describe());

    let out = sb.run(["run", s(&artifact)]);
    assert_ne!(out.code, Some(0), "{}", out.describe());
    assert_eq!(
        out.stdout, "",
        "ran precompiled code without --allow-precompiled"
    );
    assert!(
        out.stderr.contains("--allow-precompiled"),
        "{}",
        out.describe()
    );
}

#[test]
fn compile_of_a_non_wasm_file_fails_and_writes_nothing() {
    let sb = Sandbox::new();
    let input = sb.path("notes.txt");
    std::fs::write(&input, "just some text, not a module\n").unwrap();
    let out_dir = sb.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let artifact = out_dir.join("notes.cwasm");

    let out = sb.run(["compile", s(&input), "-o", s(&artifact)]);
    assert_ne!(out.code, Some(0), "{}", out.describe());
    let first = out.stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with("error:") && first.contains(s(&input)),
        "{}",
        out.describe()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    assert!(
        !artifact.exists(),
        "an artifact was written for a non-Wasm input"
    );
    assert_eq!(
        entries(&out_dir),
        Vec::<String>::new(),
        "leftovers in the output directory"
    );
}

#[test]
fn compile_of_a_reactor_fails_naming_initialize() {
    let sb = Sandbox::new();
    let out_dir = sb.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let artifact = out_dir.join("reactor.cwasm");
    let reactor = guests::reactor();

    let out = sb.run(["compile", s(&reactor), "-o", s(&artifact)]);
    assert_ne!(out.code, Some(0), "{}", out.describe());
    let first = out.stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with("error:") && first.contains(s(&reactor)),
        "{}",
        out.describe()
    );
    assert!(out.stderr.contains("_initialize"), "{}", out.describe());
    assert!(!artifact.exists());
    assert_eq!(
        entries(&out_dir),
        Vec::<String>::new(),
        "leftovers in the output directory"
    );
}
