//! `wisp k8s manifests` and `wisp node install`, as a person runs them.

use crate::support::{Sandbox, s};

#[test]
fn manifests_print_both_runtime_classes_and_the_installer() {
    let sb = Sandbox::new();
    let out = sb.run(["k8s", "manifests"]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert_eq!(out.stdout.matches("kind: RuntimeClass").count(), 2);
    assert!(!out.stdout.contains("DaemonSet"));
    let out = sb.run(["k8s", "manifests", "--installer-image", "local/wisp:1"]);
    assert!(out.stdout.contains("kind: DaemonSet"), "{}", out.describe());
}

#[test]
fn node_install_is_idempotent_and_says_when_containerd_must_restart() {
    let sb = Sandbox::new();
    let root = sb.path("root");
    let shim = env!("CARGO_BIN_EXE_wisp");
    let args = [
        "node",
        "install",
        "--root",
        s(&root),
        "--shim",
        shim,
        "--config-version",
        "3",
    ];
    let first = sb.run(args);
    assert_eq!(first.code, Some(0), "{}", first.describe());
    assert!(
        first.stdout.contains("containerd must be restarted"),
        "{}",
        first.describe()
    );
    let config = std::fs::read_to_string(root.join("etc/containerd/config.toml")).unwrap();
    assert!(config.contains("io.containerd.cri.v1.runtime"), "{config}");
    let second = sb.run(args);
    assert_eq!(second.code, Some(0));
    assert!(second.stdout.contains("containerd needs no restart"));
    assert!(!second.stdout.contains("installed") && !second.stdout.contains("added"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/containerd/config.toml")).unwrap(),
        config
    );
}

#[test]
fn node_install_refuses_a_broken_config_and_touches_nothing() {
    let sb = Sandbox::new();
    let root = sb.path("root");
    std::fs::create_dir_all(root.join("etc/containerd")).unwrap();
    std::fs::write(root.join("etc/containerd/config.toml"), "version = [\n").unwrap();
    let shim = env!("CARGO_BIN_EXE_wisp");
    let out = sb.run(["node", "install", "--root", s(&root), "--shim", shim]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stderr.starts_with("error: "), "{}", out.describe());
    assert!(
        out.stderr.contains("config.toml is not valid TOML"),
        "{}",
        out.describe()
    );
    assert!(!root.join("usr").exists());
    let out = sb.run(["node", "install", "--config-version", "7"]);
    assert_eq!(out.code, Some(2), "{}", out.describe());
}
