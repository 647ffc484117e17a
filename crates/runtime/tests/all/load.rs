//! Loading and shape detection, and refusals of what is not an app.

use wisp_runtime::app::{self, AppShape, LoadError};
use wisp_runtime::{App, error_chain};
use wisp_test_guests as guests;

use crate::engine;

#[test]
fn shapes_are_detected_from_bytes_and_exports() {
    let e = engine(false, None);
    for (path, shape) in [
        (guests::hello(), AppShape::P1Command),
        (guests::wagi_echo(), AppShape::P1Command),
        (guests::echo_component(), AppShape::P2Command),
        (guests::http_hello(), AppShape::HttpProxy),
        (guests::http_echo(), AppShape::HttpProxy),
        (guests::trap(), AppShape::P1Command),
    ] {
        assert_eq!(crate::load(&e, &path).shape(), shape, "{}", path.display());
    }
}

fn load_err(path: &std::path::Path) -> (LoadError, String) {
    let e = engine(false, None);
    let err = App::load(&e, path, false).expect_err("must be refused");
    let msg = error_chain(&err);
    (err, msg)
}

#[test]
fn reactor_module_is_refused_by_name() {
    let (err, msg) = load_err(&guests::reactor());
    assert!(matches!(err, LoadError::Unsupported { .. }), "{msg}");
    assert!(
        msg.contains("reactor") && msg.contains("_initialize"),
        "{msg}"
    );
    assert!(msg.contains("reactor.wasm"), "names the input: {msg}");
}

#[test]
fn component_exporting_no_known_world_is_refused() {
    let (err, msg) = load_err(&guests::empty_component());
    assert!(matches!(err, LoadError::Unsupported { .. }), "{msg}");
    assert!(
        msg.contains("wasi:cli/run") && msg.contains("exports: none"),
        "{msg}"
    );
}

#[test]
fn non_wasm_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 5] = [
        ("empty.wasm", b"", "empty"),
        ("notes.txt", b"just some text\n", "text"),
        ("prog", b"\x7fELF\x02\x01\x01\0\0\0\0\0", "ELF"),
        ("script.wasm", b"#!/bin/sh\necho hi\n", "script"),
        (
            "bin.wasm",
            &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4],
            "magic",
        ),
    ];
    for (name, bytes, what) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (err, msg) = load_err(&path);
        assert!(matches!(err, LoadError::NotWasm { .. }), "{name}: {msg}");
        assert!(msg.contains(name) && msg.contains(what), "{name}: {msg}");
    }
}

#[test]
fn truncated_module_reports_the_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guests::hello()).unwrap();
    let path = dir.path().join("cut.wasm");
    std::fs::write(&path, &bytes[..100]).unwrap();
    let (err, msg) = load_err(&path);
    assert!(matches!(err, LoadError::Invalid { .. }), "{msg}");
    assert!(
        msg.contains("cut.wasm") && msg.contains("end-of-file"),
        "{msg}"
    );
}

#[test]
fn missing_file_is_a_read_error() {
    let (err, msg) = load_err(std::path::Path::new("/no/such/app.wasm"));
    assert!(matches!(err, LoadError::Read { .. }), "{msg}");
    assert!(msg.contains("/no/such/app.wasm"), "{msg}");
}

#[test]
fn precompiled_artifacts_load_only_when_allowed() {
    let e = engine(true, None);
    let wasm = std::fs::read(guests::http_hello()).unwrap();
    let artifact = app::precompile(&e, &guests::http_hello(), &wasm).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.cwasm");
    std::fs::write(&path, artifact).unwrap();
    let err = App::load(&e, &path, false).unwrap_err();
    assert!(matches!(err, LoadError::PrecompiledNotAllowed { .. }));
    assert!(err.to_string().contains("--allow-precompiled"));
    let app = App::load(&e, &path, true).unwrap();
    assert_eq!(app.shape(), AppShape::HttpProxy);

    // The same artifact on an engine with other settings is refused by wasmtime,
    // with a clear error rather than undefined behaviour.
    let mut settings = wisp_runtime::EngineSettings::for_serve(&wisp_runtime::Config::default());
    if let wisp_runtime::engine::Allocation::Pooling(p) = &mut settings.allocation {
        p.total_instances = 8;
        p.memory_reservation = wisp_runtime::config::ByteSize(64 << 20);
    }
    settings.cache_dir = None;
    let other = wisp_runtime::Engine::new(&settings).unwrap();
    let err = App::load(&other, &path, true).unwrap_err();
    assert!(
        matches!(err, LoadError::Precompiled { .. }),
        "{}",
        error_chain(&err)
    );
}

#[test]
fn precompile_refuses_non_apps() {
    let e = engine(false, None);
    let path = guests::reactor();
    let err = app::precompile(&e, &path, &std::fs::read(&path).unwrap()).unwrap_err();
    assert!(error_chain(&err).contains("_initialize"));
}

#[test]
fn wat_text_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inline.wat");
    std::fs::write(&path, "(module (func (export \"_start\")))").unwrap();
    let e = engine(false, None);
    assert_eq!(crate::load(&e, &path).shape(), AppShape::P1Command);
}
