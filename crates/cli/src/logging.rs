//! The tracing subscriber: the binary installs it, the library only emits.

use tracing_subscriber::EnvFilter;

/// Environment variable holding the log filter (`info`, `wisp_runtime=debug`, ...).
pub const LOG_ENV: &str = "WISP_LOG";

/// Logs to stderr, filtered by `WISP_LOG` (default `default_level`), in colour only
/// when stderr is a terminal.
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}
