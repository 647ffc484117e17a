//! wisp-runtime's integration tests: the library driven as a front end would,
//! without sockets where possible (HTTP handlers are called directly).

mod cache;
mod command;
mod http;
mod load;

use std::path::Path;

use wisp_runtime::engine::{Allocation, EngineSettings};
use wisp_runtime::{App, Config, Engine};

/// An engine for tests: on-demand or pooling, with the cache in `cache_dir`.
pub fn engine(pooling: bool, cache_dir: Option<&Path>) -> Engine {
    let config = Config::default();
    let mut settings = if pooling {
        EngineSettings::for_serve(&config)
    } else {
        EngineSettings::for_run(&config)
    };
    if let Allocation::Pooling(p) = &mut settings.allocation {
        // Small pool: tests run in parallel, each with its own engine.
        p.total_instances = 64;
    }
    // Tests that do not study the cache share one per test process, so each guest
    // is compiled once rather than once per test.
    settings.cache_dir = Some(match cache_dir {
        Some(d) => d.to_owned(),
        None => shared_cache().to_owned(),
    });
    Engine::new(&settings).expect("engine")
}

fn shared_cache() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp cache dir"))
        .path()
}

/// Loads a guest.
pub fn load(engine: &Engine, path: &Path) -> App {
    App::load(engine, path, false)
        .unwrap_or_else(|e| panic!("load {}: {}", path.display(), wisp_runtime::error_chain(&e)))
}
