//! One file per subcommand, each with `execute(self)`.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod compile;
mod k8s;
mod node;
mod oci;
mod run;
mod serve;

/// Run and serve WebAssembly apps, fast and sandboxed.
#[derive(Debug, Parser)]
#[command(name = "wisp", version, propagate_version = true)]
#[command(after_help = "Examples:\n  \
    wisp run app.wasm -- --flag arg\n  \
    wisp serve examples/hello.wasm --listen 127.0.0.1:3000\n  \
    wisp compile app.wasm -o app.cwasm\n  \
    wisp oci build app.wasm --name hello:latest\n  \
    wisp k8s manifests | kubectl apply -f -\n  \
    wisp node install\n\n\
    Logging: set WISP_LOG (e.g. WISP_LOG=debug).")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::RunCommand),
    Serve(serve::ServeCommand),
    Compile(compile::CompileCommand),
    Oci(oci::OciCommand),
    K8s(k8s::K8sCommand),
    Node(node::NodeCommand),
}

impl Cli {
    /// The log level when `WISP_LOG` is unset: quiet for `run`, whose stderr is
    /// the guest's; informative for `serve`.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Serve(_) => "info",
            _ => "warn",
        }
    }

    /// Runs the chosen subcommand; the exit code is the guest's for `run`.
    pub fn execute(self) -> Result<ExitCode> {
        match self.command {
            Command::Run(c) => c.execute(),
            Command::Serve(c) => c.execute().map(|()| ExitCode::SUCCESS),
            Command::Compile(c) => c.execute().map(|()| ExitCode::SUCCESS),
            Command::Oci(c) => c.execute().map(|()| ExitCode::SUCCESS),
            Command::K8s(c) => c.execute().map(|()| ExitCode::SUCCESS),
            Command::Node(c) => c.execute().map(|()| ExitCode::SUCCESS),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }
}
