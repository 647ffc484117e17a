//! wisp-runtime: Wisp's Wasm runtime, independent of any front end.
//!
//! - [`config`]: the one validated configuration model every front door fills;
//! - [`engine`]: the configured wasmtime engine, its epoch ticker and [`cache`];
//! - [`app`]: loading an app and detecting what it is (command module, command
//!   component, `wasi:http` component);
//! - [`command`]: running commands to completion with exact exit codes;
//! - [`http`]: serving HTTP with a fresh instance per request (`wasi:http` and WAGI);
//! - [`wasi`]: capabilities (dirs, env, outbound allow-list) as WASI contexts.
//!
//! The library knows nothing of the CLI, containerd or Kubernetes.

pub mod app;
pub mod cache;
pub mod command;
pub mod config;
pub mod engine;
pub mod http;
pub mod lane;
pub mod meter;
pub mod wasi;

pub use app::{App, AppShape, LoadError};
pub use config::Config;
pub use engine::{Engine, EngineSettings};

/// Formats an error with its whole `source()` chain on one line: `a: b: c`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Raises this process's open-file limit to `want` if it is lower: the hard
/// limit too where allowed (root), else as far as the hard limit goes.
/// Returns the soft limit now in force.
pub fn raise_file_limit(want: u64) -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(want);
    }
    // Not allowed past the hard limit: go as far as it.
    let capped = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(capped.rlim_cur)
}
