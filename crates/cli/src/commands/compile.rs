//! `wisp compile`: precompile an app ahead of time.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use wisp_runtime::{Engine, EngineSettings, app};

use crate::options::{AppOptions, validate};

/// Compile an app to native code ahead of time.
///
/// The artifact loads with `wisp run --allow-precompiled` or `wisp serve
/// --allow-precompiled`, skipping compilation. It is tied to this wisp version and
/// to the engine settings it was compiled with.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  wisp compile app.wasm -o app.cwasm && wisp serve --allow-precompiled app.cwasm"
)]
pub struct CompileCommand {
    #[command(flatten)]
    options: AppOptions,

    /// The app to compile.
    #[arg(value_name = "APP")]
    app: PathBuf,

    /// Where to write the artifact.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
}

impl CompileCommand {
    pub fn execute(self) -> Result<()> {
        let mut config = self.options.to_config()?;
        validate(&config, self.options.config.as_ref())?;
        // The artifact goes to -o; the cache is not involved.
        config.engine.cache_dir = None;
        let engine = Engine::new(&EngineSettings::for_serve(&config))?;
        let wasm = std::fs::read(&self.app)
            .with_context(|| format!("failed to read `{}`", self.app.display()))?;
        let artifact = app::precompile(&engine, &self.app, &wasm)?;
        // Write beside the target and rename, so a failed write leaves no
        // half-written artifact behind.
        let dir = match self.output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .with_context(|| format!("failed to write `{}`", self.output.display()))?;
        tmp.write_all(&artifact)
            .and_then(|()| tmp.as_file().sync_data())
            .with_context(|| format!("failed to write `{}`", self.output.display()))?;
        tmp.persist(&self.output)
            .with_context(|| format!("failed to write `{}`", self.output.display()))?;
        eprintln!(
            "compiled `{}` to `{}` ({} bytes)",
            self.app.display(),
            self.output.display(),
            artifact.len()
        );
        Ok(())
    }
}
