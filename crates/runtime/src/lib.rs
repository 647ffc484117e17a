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
pub mod error;
pub mod http;
pub mod lane;
pub mod meter;
pub mod rlimit;
pub mod wasi;

pub use app::{App, AppShape, LoadError};
pub use config::Config;
pub use engine::{Engine, EngineSettings};

pub use error::error_chain;
pub use rlimit::raise_file_limit;
