//! `wisp k8s`: what a Kubernetes cluster needs, printed for `kubectl apply`.

use anyhow::Result;
use clap::{Args, Subcommand};

/// Print the Kubernetes objects that enable Wisp in a cluster.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    wisp k8s manifests | kubectl apply -f -\n  \
    wisp k8s manifests --installer-image registry.example/wisp:0.1 | kubectl apply -f -\n  \
    kubectl label node NODE runtime.wisp.dev/enabled=true")]
pub struct K8sCommand {
    #[command(subcommand)]
    command: K8sSubcommand,
}

#[derive(Debug, Subcommand)]
enum K8sSubcommand {
    Manifests(ManifestsCommand),
}

impl K8sCommand {
    pub fn execute(self) -> Result<()> {
        match self.command {
            K8sSubcommand::Manifests(c) => c.execute(),
        }
    }
}

/// Print the RuntimeClasses `wisp` (a shim per pod) and `wisp-node` (one
/// process per node), which schedule Wasm pods onto nodes labelled
/// runtime.wisp.dev/enabled=true, and optionally the installer DaemonSet
/// that enables those nodes.
#[derive(Debug, Args)]
pub struct ManifestsCommand {
    /// Also print the installer DaemonSet, running `wisp node install` from
    /// this image (which holds `wisp` and the shim) on every labelled node.
    #[arg(long, value_name = "IMAGE")]
    installer_image: Option<String>,

    /// Namespace of the installer DaemonSet.
    #[arg(long, default_value = "kube-system", value_name = "NAMESPACE")]
    namespace: String,
}

impl ManifestsCommand {
    fn execute(self) -> Result<()> {
        print!("{}", wisp_k8s::manifests::runtime_classes());
        if let Some(image) = &self.installer_image {
            print!(
                "---\n{}",
                wisp_k8s::manifests::installer(image, &self.namespace)
            );
        }
        Ok(())
    }
}
