//! The same pods on containerd 2.x (2.1.4 from the Go module proxy, config
//! version 3, the CRI plugin split into `io.containerd.cri.v1.images` and
//! `io.containerd.cri.v1.runtime`): the sandbox's identity against runc's in
//! both modes, a Wasm app with a busybox sidecar in both modes, OOMKilled
//! and terminals in both modes.

use crate::mixed::{mixed_pod, oom_killed_sidecars, terminals};
use crate::sandbox::ids_groups_and_capabilities_are_runcs;
use crate::support::{Containerd, Cri, WISP, WISP_NODE};

fn containerd_2() -> Cri {
    let cri = Cri::start_v2();
    assert_eq!(cri.containerd, Containerd::V2);
    let version = cri.ctr(&["version"]);
    assert!(version.contains("Version:  2."), "{version}");
    cri
}

#[test]
fn pods_and_their_sandboxes_on_containerd_2() {
    let cri = containerd_2();
    ids_groups_and_capabilities_are_runcs(&cri);
    mixed_pod(&cri, WISP);
    // containerd 2 waits for the end of file on a container's FIFOs before
    // it deletes the task: a node-hosted app's StopContainer hung until the
    // node process let go of them at its exit.
    mixed_pod(&cri, WISP_NODE);
}

#[test]
fn oomkilled_and_terminals_on_containerd_2() {
    let cri = containerd_2();
    oom_killed_sidecars(&cri);
    terminals(&cri);
}
