//! The compiled-code cache as seen from the CLI: entries written, reused,
//! verified against corruption, and bypassed with `--no-cache`.

use std::path::{Path, PathBuf};

use crate::support::{Output, PROCESS_TIMEOUT, Sandbox, cache_files, output, s};
use wisp_test_guests as guests;

const CACHE_HIT: &str = "loaded compiled code from cache";

fn with_ext(files: &[PathBuf], ext: &str) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .cloned()
        .collect()
}

/// `wisp run hello.wasm` with `WISP_LOG=log` (or the default filter).
fn run_hello(sb: &Sandbox, log: Option<&str>) -> Output {
    let mut cmd = sb.cmd(["run", s(&guests::hello())]);
    if let Some(level) = log {
        cmd.env("WISP_LOG", level);
    }
    let out = output(cmd, None, PROCESS_TIMEOUT);
    out.expect_code(0);
    assert_eq!(out.stdout, "hello from wisp\n", "{}", out.describe());
    out
}

fn single(files: Vec<PathBuf>, what: &str, dir: &Path) -> PathBuf {
    assert_eq!(
        files.len(),
        1,
        "expected one {what} in {}: {files:?}",
        dir.display()
    );
    files.into_iter().next().unwrap()
}

#[test]
fn entries_are_written_reused_and_verified() {
    let sb = Sandbox::new();
    let dir = sb.cache_dir();

    // 1. Cold: compiles and writes an entry (artifact + digest).
    let out = run_hello(&sb, Some("debug"));
    assert!(
        !out.stderr.contains(CACHE_HIT),
        "cold run claims a cache hit: {}",
        out.describe()
    );
    let files = cache_files(dir);
    let cwasm = single(with_ext(&files, "cwasm"), "*.cwasm", dir);
    let sha = single(with_ext(&files, "sha256"), "*.sha256", dir);
    assert_eq!(
        cwasm.file_stem(),
        sha.file_stem(),
        "artifact and digest belong to different entries"
    );
    let good = std::fs::read(&cwasm).unwrap();
    assert!(!good.is_empty());

    // 2. Warm: loaded from the cache.
    let out = run_hello(&sb, Some("debug"));
    assert!(
        out.stderr.contains(CACHE_HIT),
        "warm run did not use the cache: {}",
        out.describe()
    );

    // 3. Corrupt the artifact in the middle: detected, rebuilt, still runs.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 16] {
        *b ^= 0xA5;
    }
    std::fs::write(&cwasm, &bad).unwrap();
    let out = run_hello(&sb, None);
    assert!(
        out.stderr.contains("digest") && out.stderr.contains("rebuilding"),
        "corruption not reported: {}",
        out.describe()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    assert_ne!(
        std::fs::read(&cwasm).unwrap(),
        bad,
        "the corrupt entry was not replaced"
    );

    // 4. The rebuilt entry is used again, silently.
    let out = run_hello(&sb, Some("debug"));
    assert!(
        out.stderr.contains(CACHE_HIT),
        "rebuilt entry not used: {}",
        out.describe()
    );
    assert!(!out.stderr.contains("digest check"), "{}", out.describe());
}

#[test]
fn deleted_digest_means_a_recompile() {
    let sb = Sandbox::new();
    run_hello(&sb, None);
    let sha = single(
        with_ext(&cache_files(sb.cache_dir()), "sha256"),
        "*.sha256",
        sb.cache_dir(),
    );
    std::fs::remove_file(&sha).unwrap();
    let out = run_hello(&sb, Some("debug"));
    assert!(
        !out.stderr.contains(CACHE_HIT),
        "an entry without digest was trusted: {}",
        out.describe()
    );
    assert!(sha.is_file(), "entry not rewritten");
}

#[test]
fn no_cache_writes_nothing() {
    let sb = Sandbox::new();
    run_hello(&sb, None);
    assert!(
        !cache_files(sb.cache_dir()).is_empty(),
        "sanity: the cache is in use by default"
    );

    let sb = Sandbox::new();
    let mut cmd = sb.cmd(["run", "--no-cache", s(&guests::hello())]);
    cmd.env("WISP_LOG", "debug");
    let out2 = output(cmd, None, PROCESS_TIMEOUT);
    out2.expect_code(0);
    assert_eq!(out2.stdout, "hello from wisp\n");
    assert_eq!(
        cache_files(sb.cache_dir()),
        Vec::<PathBuf>::new(),
        "--no-cache wrote to the cache"
    );
    assert!(!out2.stderr.contains(CACHE_HIT), "{}", out2.describe());
}

#[test]
fn concurrent_cold_runs_leave_one_whole_entry() {
    let sb = Sandbox::new();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let cmd = sb.cmd(["run", s(&guests::hello())]);
            std::thread::spawn(move || output(cmd, None, PROCESS_TIMEOUT))
        })
        .collect();
    for run in runs {
        let out = run.join().expect("run thread");
        out.expect_code(0);
        assert_eq!(out.stdout, "hello from wisp\n", "{}", out.describe());
        assert_eq!(out.stderr, "", "{}", out.describe());
    }
    // Exactly one entry, and no temporary files left over by the racing writers.
    let files = cache_files(sb.cache_dir());
    assert_eq!(with_ext(&files, "cwasm").len(), 1, "{files:?}");
    assert_eq!(with_ext(&files, "sha256").len(), 1, "{files:?}");
    assert_eq!(files.len(), 2, "stray files in the cache: {files:?}");
    let out = run_hello(&sb, Some("debug"));
    assert!(out.stderr.contains(CACHE_HIT), "{}", out.describe());
}
