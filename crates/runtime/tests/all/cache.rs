//! The compiled-code cache: hits, corruption, foreign entries.

use wisp_runtime::App;
use wisp_runtime::cache::CodeCache;
use wisp_test_guests as guests;

use crate::engine;

fn entries(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(dir).unwrap() {
        let sub = sub.unwrap().path();
        if sub.is_dir() {
            for f in std::fs::read_dir(&sub).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == ext) {
                    out.push(f);
                }
            }
        }
    }
    out
}

#[test]
fn second_load_comes_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(true, Some(dir.path()));
    let first = App::load(&e, &guests::http_hello(), false).unwrap();
    assert!(!first.from_cache());
    assert_eq!(entries(dir.path(), "cwasm").len(), 1);
    assert_eq!(entries(dir.path(), "sha256").len(), 1);
    // A new engine with the same settings (a second process start) hits.
    let e2 = engine(true, Some(dir.path()));
    let second = App::load(&e2, &guests::http_hello(), false).unwrap();
    assert!(second.from_cache());
}

#[test]
fn engine_settings_are_part_of_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pooled = engine(true, Some(dir.path()));
    App::load(&pooled, &guests::hello(), false).unwrap();
    let mut settings = wisp_runtime::EngineSettings::for_serve(&wisp_runtime::Config::default());
    if let wisp_runtime::engine::Allocation::Pooling(p) = &mut settings.allocation {
        p.total_instances = 8;
        p.memory_reservation = wisp_runtime::config::ByteSize(64 << 20);
    }
    settings.cache_dir = Some(dir.path().to_owned());
    let other = wisp_runtime::Engine::new(&settings).unwrap();
    let app = App::load(&other, &guests::hello(), false).unwrap();
    assert!(
        !app.from_cache(),
        "another engine configuration must not reuse the entry"
    );
    assert_eq!(entries(dir.path(), "cwasm").len(), 2);
}

#[test]
fn corrupt_entry_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(false, Some(dir.path()));
    App::load(&e, &guests::hello(), false).unwrap();
    let artifact = entries(dir.path(), "cwasm").pop().unwrap();
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&artifact, &bytes).unwrap();

    let app = App::load(&e, &guests::hello(), false).unwrap();
    assert!(!app.from_cache(), "a corrupt entry must not be loaded");
    // Rebuilt: the next load hits again and the app still runs.
    let app = App::load(&e, &guests::hello(), false).unwrap();
    assert!(app.from_cache());
    let (outcome, out) =
        crate::command::run_captured(&e, &app, &wisp_runtime::Config::default(), &[]);
    assert_eq!(outcome.exit_code(), 0);
    assert_eq!(out, "hello from wisp\n");
}

#[test]
fn foreign_entry_with_a_valid_digest_is_rebuilt() {
    // Bytes under this key whose digest checks out but which wasmtime refuses
    // (here: a cut-off artifact, as a foreign writer or a bug might leave).
    let dir = tempfile::tempdir().unwrap();
    let e = engine(false, Some(dir.path()));
    let wasm = std::fs::read(guests::hello()).unwrap();
    let key = CodeCache::key(e.wasmtime(), "module", &wasm);
    let good = e.wasmtime().precompile_module(&wasm).unwrap();
    e.cache()
        .unwrap()
        .store(&key, &good[..good.len() / 3])
        .unwrap();
    let app = App::load(&e, &guests::hello(), false).unwrap();
    assert!(!app.from_cache());
    assert!(App::load(&e, &guests::hello(), false).unwrap().from_cache());
}

#[test]
fn unwritable_cache_falls_back_to_memory() {
    let file = tempfile::NamedTempFile::new().unwrap();
    // A regular file where the cache directory should be: nothing can be written.
    let e = engine(false, Some(file.path()));
    let app = App::load(&e, &guests::hello(), false).unwrap();
    assert!(!app.from_cache());
}
