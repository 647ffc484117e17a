//! The runtime handlers Wisp installs and the node label that selects
//! the nodes having them: the names every other part of the crate uses.

/// The node label both the installer DaemonSet and the RuntimeClasses'
/// scheduling select: a node carrying it has (or is getting) the shim.
pub const NODE_LABEL: &str = "runtime.wisp.dev/enabled";
pub const NODE_LABEL_VALUE: &str = "true";

/// A runtime handler: the CRI handler name (a RuntimeClass's `handler`),
/// the containerd runtime type, and the shim binary containerd runs for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handler {
    pub name: &'static str,
    pub runtime_type: &'static str,
    pub binary: &'static str,
    /// What a person reads in `kubectl get runtimeclass`.
    pub about: &'static str,
}

/// One shim process per pod.
pub const PER_POD: Handler = Handler {
    name: "wisp",
    runtime_type: "io.containerd.wisp.v1",
    binary: "containerd-shim-wisp-v1",
    about: "Wasm pods, one shim process per pod",
};

/// One process for every Wasm pod of the node.
pub const NODE: Handler = Handler {
    name: "wisp-node",
    runtime_type: "io.containerd.wisp-node.v1",
    binary: "containerd-shim-wisp-node-v1",
    about: "Wasm pods, all of a node's in one process",
};

pub const HANDLERS: [Handler; 2] = [PER_POD, NODE];
