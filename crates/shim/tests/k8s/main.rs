//! The cluster tier: Wisp workloads through a real single-node Kubernetes
//! built from upstream sources (see `cluster.rs`), driven with kubectl, in
//! per-pod and node mode. Needs what the CRI tier needs plus `WISP_K8S_BIN`
//! (scripts/build-kubernetes.sh), etcd (Debian `etcd-server`) and openssl.

#[path = "../common/host.rs"]
mod host;
#[path = "../common/layouts.rs"]
#[allow(dead_code)]
mod layouts;
#[path = "../cri/support.rs"]
#[allow(dead_code)]
mod support;

mod cluster;
mod workloads;
