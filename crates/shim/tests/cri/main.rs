//! The CRI tier: Wasm pods through containerd's CRI plugin, driven over the
//! CRI gRPC API exactly as kubelet drives it, on a CNI bridge network of the
//! test's own. Needs root, containerd, runc, the CNI plugins, busybox-static
//! and a C compiler for the pause binary (scripts/test.sh installs them).

#[path = "../common/host.rs"]
mod host;
#[path = "../common/layouts.rs"]
mod layouts;
mod support;

mod confined;
mod containerd2;
mod jobs;
mod mixed;
mod node;
mod pods;
mod sandbox;
