//! `wisp run`: run a command module or component to completion.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use wisp_runtime::command::{self, Outcome, Stdio};
use wisp_runtime::{App, Engine, EngineSettings};

use crate::options::{AppOptions, validate};

/// Run a WASI command: a preview1 module (`_start`) or a 0.2 component (`wasi:cli/run`).
///
/// The exit status is the guest's: `exit(42)` exits 42. A trap exits 134 with the
/// trap and its Wasm backtrace on stderr; a guest stopped by --timeout exits 124.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    wisp run hello.wasm\n  \
    wisp run --dir ./data::/data:ro --env NAME=value app.wasm -- arg1 arg2")]
pub struct RunCommand {
    #[command(flatten)]
    options: AppOptions,

    /// The app: a .wasm module or component (or .wat text).
    #[arg(value_name = "APP")]
    app: PathBuf,

    /// Arguments passed to the guest (after `--`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

impl RunCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let config = self.options.to_config()?;
        validate(&config, self.options.config.as_ref())?;
        let engine = Engine::new(&EngineSettings::for_run(&config))?;
        let app = App::load(&engine, &self.app, self.options.allow_precompiled)?;
        let argv0 = self
            .app
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "main.wasm".into());
        let mut args = vec![argv0];
        args.extend(self.args);

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?;
        let outcome = rt
            .block_on(command::run(&engine, &app, &config, &args, Stdio::Inherit))
            .with_context(|| format!("failed to run `{}`", self.app.display()))?;
        // A guest stopped by its deadline may leave a host read (stdin) parked on a
        // worker thread; do not wait for it.
        rt.shutdown_background();
        match &outcome {
            Outcome::Exited(_) => {}
            Outcome::Trapped(e) => {
                eprintln!(
                    "error: `{}` trapped: {}",
                    self.app.display(),
                    command::describe_trap(e)
                );
            }
            Outcome::TimedOut(t) => {
                eprintln!(
                    "error: `{}` stopped: exceeded the timeout of {}",
                    self.app.display(),
                    humanize(*t)
                );
            }
        }
        // Exit statuses are 8 bits wide; `exit(256)` shows up as 0 in a shell too.
        Ok(ExitCode::from(outcome.exit_code() as u8))
    }
}

fn humanize(d: std::time::Duration) -> String {
    wisp_runtime::config::HumanDuration(d).to_string()
}
