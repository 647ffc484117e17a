//! `wisp node`: enable a node to run Wasm pods.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use wisp_k8s::install::{Options, install};

/// Set up this node for Wasm pods.
#[derive(Debug, Args)]
pub struct NodeCommand {
    #[command(subcommand)]
    command: NodeSubcommand,
}

#[derive(Debug, Subcommand)]
enum NodeSubcommand {
    Install(InstallCommand),
}

impl NodeCommand {
    pub fn execute(self) -> Result<()> {
        match self.command {
            NodeSubcommand::Install(c) => c.execute(),
        }
    }
}

/// Install the shim under both its names (per-pod and node mode) and add the
/// `wisp` and `wisp-node` runtime handlers to containerd's config.
///
/// Idempotent: a second run changes nothing. Says what it changed and whether
/// containerd must be restarted (it must when its config changed).
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    wisp node install\n  \
    wisp node install --dry-run\n  \
    wisp node install --root /host --wait        (in the installer DaemonSet)")]
pub struct InstallCommand {
    /// The host's root directory; the other paths are inside it.
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,

    /// containerd's config file.
    #[arg(
        long,
        default_value = "/etc/containerd/config.toml",
        value_name = "FILE"
    )]
    config: PathBuf,

    /// Where containerd finds shims (a directory on its PATH).
    #[arg(long, default_value = "/usr/local/bin", value_name = "DIR")]
    bin_dir: PathBuf,

    /// The shim binary to install [default: containerd-shim-wisp-v1 next to
    /// this `wisp`].
    #[arg(long, value_name = "FILE")]
    shim: Option<PathBuf>,

    /// Config version for a new or empty config file: 2 for containerd 1.x,
    /// 3 for containerd 2.x. An existing config keeps its own.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i64).range(1..=3))]
    config_version: i64,

    /// Print what would change; change nothing.
    #[arg(long)]
    dry_run: bool,

    /// Stay running after installing (a DaemonSet's pod must not exit).
    #[arg(long)]
    wait: bool,
}

impl InstallCommand {
    fn execute(self) -> Result<()> {
        let shim = match self.shim {
            Some(s) => s,
            None => std::env::current_exe()
                .context("cannot locate the wisp binary")?
                .with_file_name(wisp_k8s::PER_POD.binary),
        };
        let report = install(&Options {
            root: self.root,
            config: self.config,
            bin_dir: self.bin_dir,
            shim,
            new_config_version: self.config_version,
            dry_run: self.dry_run,
        })?;
        print!("{report}");
        if self.wait {
            loop {
                std::thread::park();
            }
        }
        Ok(())
    }
}
