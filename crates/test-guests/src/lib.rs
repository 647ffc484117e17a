//! Paths of the test guests built from `guests/` (see `guests/README.md`).
//!
//! C guests are built by `guests/build.sh` into `target/guests` (override with
//! `WISP_GUESTS_DIR`); WAT guests in `guests/wat` are assembled here on first use.
//! A missing guest is a loud test failure that says how to build it, never a skip.
//!
//! [`registry`] runs a real OCI registry for the push and pull tests.

use std::path::{Path, PathBuf};

pub mod registry;

/// The repository root.
///
/// From the running test's `CARGO_MANIFEST_DIR` (cargo sets it for test
/// processes; every crate sits two levels below the root) before this
/// crate's compile-time one: a build cache shared between clones at other
/// paths (CI's) may hold this crate compiled in another clone.
pub fn repo_root() -> PathBuf {
    let root = |dir: &Path| dir.ancestors().nth(2).map(Path::to_owned);
    std::env::var_os("CARGO_MANIFEST_DIR")
        .and_then(|d| root(Path::new(&d)))
        .filter(|r| r.join("guests").is_dir())
        .or_else(|| root(Path::new(env!("CARGO_MANIFEST_DIR"))))
        .expect("crates sit two levels below the root")
}

/// Directory of the built C guests.
pub fn dir() -> PathBuf {
    std::env::var_os("WISP_GUESTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target").join("guests"))
}

fn built(name: &str) -> PathBuf {
    let path = dir().join(name);
    assert!(
        path.is_file(),
        "test guest `{}` is missing: run `bash guests/install-toolchain.sh && bash guests/build.sh`",
        path.display()
    );
    path
}

/// Assembles `guests/wat/<name>.wat` into `<guests dir>/wat/<name>.wasm`.
fn from_wat(name: &str) -> PathBuf {
    let src = repo_root()
        .join("guests")
        .join("wat")
        .join(format!("{name}.wat"));
    let out_dir = dir().join("wat");
    let out = out_dir.join(format!("{name}.wasm"));
    let wasm =
        wat::parse_file(&src).unwrap_or_else(|e| panic!("assembling {}: {e}", src.display()));
    std::fs::create_dir_all(&out_dir).expect("create guests/wat output dir");
    // Write to a unique temp name and rename: test threads may race here.
    let tmp = out_dir.join(format!(
        ".{name}.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, wasm).expect("write assembled guest");
    std::fs::rename(&tmp, &out).expect("rename assembled guest");
    out
}

macro_rules! guests {
    ($($(#[$doc:meta])* $fn:ident => $how:ident($name:literal);)*) => {
        $( $(#[$doc])* pub fn $fn() -> PathBuf { $how($name) } )*
        /// Every guest, for tests that check them all.
        pub fn all() -> Vec<PathBuf> { vec![$($fn()),*] }
    };
}

guests! {
    /// p1 command printing `hello from wisp`.
    hello => built("hello.wasm");
    /// p1 command with modes: args, env, cat, write, ls, stdin, exit, stderr.
    echo => built("echo.wasm");
    /// `echo` as a WASI 0.2 command component.
    echo_component => built("echo-component.wasm");
    /// wasi:http component answering `hello from wisp`.
    http_hello => built("http-hello.wasm");
    /// wasi:http component with /echo, /sleep, /outbound, /trap, /loop, /bomb, /env.
    http_echo => built("http-echo.wasm");
    /// WAGI module echoing method, path, query, args, a header and the body.
    wagi_echo => built("wagi-echo.wasm");
    /// Minimal WAGI module.
    wagi_hello => built("wagi-hello.wasm");
    /// Traps two calls deep.
    trap => from_wat("trap");
    /// Infinite loop.
    spin => from_wat("loop");
    /// Grows memory until it fails.
    membomb => from_wat("membomb");
    /// Exits 42.
    exit42 => from_wat("exit");
    /// A reactor module (not runnable).
    reactor => from_wat("reactor");
    /// A component exporting nothing (not runnable).
    empty_component => from_wat("empty-component");
}
