//! wisp-k8s: what a Kubernetes cluster needs to run Wisp.
//!
//! - [`manifests`]: the `RuntimeClass` objects (per-pod and node mode) and
//!   the installer `DaemonSet`, as YAML.
//! - [`install`]: the node installer: puts the shim on the node under both
//!   of its names and adds the runtime handlers to containerd's config,
//!   idempotently, saying what it changed and whether containerd must be
//!   restarted.

pub mod handlers;
pub mod install;
pub mod manifests;

pub use handlers::{HANDLERS, Handler, NODE, NODE_LABEL, NODE_LABEL_VALUE, PER_POD};
