//! Flags shared by the subcommands, and how they fill the runtime's one
//! configuration model. Precedence: built-in defaults, then `--config FILE`, then
//! flags (each falling back to its `WISP_*` environment variable).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use wisp_runtime::config::{
    ByteSize, Config, DirGrant, HumanDuration, OutboundPattern, parse_env_pair,
};

/// Capabilities, limits and engine flags common to `run` and `serve`.
#[derive(Debug, Args)]
pub struct AppOptions {
    /// TOML file with the app's configuration; flags override it.
    #[arg(long, value_name = "FILE", env = "WISP_CONFIG")]
    pub config: Option<PathBuf>,

    /// Grant a host directory: HOST[::GUEST][:ro]. Repeatable.
    #[arg(long = "dir", value_name = "HOST[::GUEST][:ro]", value_parser = parse_dir)]
    pub dirs: Vec<DirGrant>,

    /// Give the guest an environment variable (nothing is inherited). Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Allow outbound connections matching SCHEME://HOST[:PORT] (`*` wildcards;
    /// schemes http, https, tcp, udp). Repeatable. Default: no network.
    #[arg(long = "allow-outbound", value_name = "PATTERN", value_parser = parse_outbound)]
    pub allow_outbound: Vec<OutboundPattern>,

    /// Cap on each instance's linear memory (e.g. 64MiB); growing past it traps.
    #[arg(long, value_name = "SIZE", env = "WISP_MAX_MEMORY", value_parser = parse_size)]
    pub max_memory: Option<ByteSize>,

    /// Wall-clock budget per request (serve) or for the whole run (e.g. 500ms, 10s).
    #[arg(long, value_name = "DURATION", env = "WISP_TIMEOUT", value_parser = parse_duration)]
    pub timeout: Option<HumanDuration>,

    /// Directory of the compiled-code cache [default: $XDG_CACHE_HOME/wisp or ~/.cache/wisp].
    #[arg(long, value_name = "DIR", env = "WISP_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile in memory only; neither read nor write the code cache.
    #[arg(long)]
    pub no_cache: bool,

    /// Accept precompiled artifacts from `wisp compile` (native code: trust it first).
    #[arg(long)]
    pub allow_precompiled: bool,
}

impl AppOptions {
    /// Builds the configuration: defaults, then the file, then these flags.
    pub fn to_config(&self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        let caps = &mut config.capabilities;
        caps.dirs.extend(self.dirs.iter().cloned());
        caps.env.extend(self.env.iter().cloned());
        caps.allow_outbound
            .extend(self.allow_outbound.iter().cloned());
        if let Some(m) = self.max_memory {
            config.limits.max_memory = Some(m);
        }
        if let Some(t) = self.timeout {
            config.limits.timeout = Some(t);
        }
        if let Some(dir) = &self.cache_dir {
            config.engine.cache_dir = Some(dir.clone());
        }
        if self.no_cache {
            config.engine.cache_dir = None;
        }
        Ok(config)
    }
}

/// Validates `config`; the error names the config file when one was used (the
/// value may come from it), else the offending value itself leads.
pub fn validate(config: &Config, file: Option<&PathBuf>) -> Result<()> {
    match file {
        Some(f) => config
            .validate()
            .with_context(|| format!("invalid configuration (flags and `{}`)", f.display())),
        None => Ok(config.validate()?),
    }
}

pub fn parse_dir(s: &str) -> Result<DirGrant, String> {
    s.parse()
        .map_err(|e: wisp_runtime::config::ConfigError| e.to_string())
}

pub fn parse_env(s: &str) -> Result<(String, String), String> {
    parse_env_pair(s).map_err(|e| e.to_string())
}

pub fn parse_outbound(s: &str) -> Result<OutboundPattern, String> {
    s.parse()
        .map_err(|e: wisp_runtime::config::ConfigError| e.to_string())
}

pub fn parse_size(s: &str) -> Result<ByteSize, String> {
    s.parse()
        .map_err(|e: wisp_runtime::config::ConfigError| e.to_string())
}

pub fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    s.parse()
        .map_err(|e: wisp_runtime::config::ConfigError| e.to_string())
}
