//! The engine built ahead of a fork (the shim's zygote) goes to exactly one
//! run engine. A test binary of its own: the slot is process-wide, and other
//! tests' engines would race for it.

use wisp_runtime::engine::{prebuild_for_run, prebuilt_for_run};
use wisp_runtime::{Config, Engine, EngineSettings};

#[test]
fn a_prebuilt_engine_goes_to_one_run_engine_only() {
    assert!(!prebuilt_for_run());
    prebuild_for_run().unwrap();
    assert!(prebuilt_for_run());
    // Serving engines pool their instances: another configuration.
    let _serve = Engine::new(&EngineSettings::for_serve(&Config::default())).unwrap();
    assert!(prebuilt_for_run(), "a serving engine took the run engine");
    let first = Engine::new(&EngineSettings::for_run(&Config::default())).unwrap();
    assert!(!prebuilt_for_run(), "the run engine did not take it");
    // A second run engine is a new one: sharing the first's epoch counter
    // would let each engine's ticker advance the other's deadlines.
    let second = Engine::new(&EngineSettings::for_run(&Config::default())).unwrap();
    assert!(!wasmtime::Engine::same(first.wasmtime(), second.wasmtime()));
}
