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
