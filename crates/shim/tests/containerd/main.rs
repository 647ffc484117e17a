//! The containerd tier: containerd-shim-wisp-v1 under a real, private
//! containerd (Debian's 1.6), driven with `ctr` as a user would. Needs root,
//! containerd, runc, busybox-static and iproute2 (scripts/test.sh installs them).

#[path = "../common/host.rs"]
mod host;
#[path = "../common/layouts.rs"]
mod layouts;
mod support;

mod containerd2;
mod images;
mod lifecycle;
mod linux;
mod wasm;
