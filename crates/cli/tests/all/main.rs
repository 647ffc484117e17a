//! Process-level tests of the `wisp` binary: every test spawns the real CLI
//! (`CARGO_BIN_EXE_wisp`) with its own temporary code cache, and bounds every wait.
//!
//! One binary, one module per area; shared helpers live in `support`.

mod support;

mod burst;
mod cache;
mod compile;
mod config;
mod errors;
mod k8s;
mod oci;
mod registry;
mod run;
mod serve;
