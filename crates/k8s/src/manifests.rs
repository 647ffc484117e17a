//! The objects a cluster needs, as YAML for `kubectl apply -f -`.

use crate::handlers::{HANDLERS, NODE_LABEL, NODE_LABEL_VALUE};

/// The `RuntimeClass` objects, one per handler. Their `scheduling` sends Wasm
/// pods only to nodes labelled [`NODE_LABEL`], where the installer has put
/// the shim.
pub fn runtime_classes() -> String {
    HANDLERS
        .iter()
        .map(|h| {
            format!(
                "apiVersion: node.k8s.io/v1\n\
                 kind: RuntimeClass\n\
                 metadata:\n  \
                   name: {name}\n  \
                   labels:\n    \
                     app.kubernetes.io/part-of: wisp\n  \
                   annotations:\n    \
                     wisp.dev/description: \"{about}\"\n\
                 handler: {name}\n\
                 scheduling:\n  \
                   nodeSelector:\n    \
                     {NODE_LABEL}: \"{NODE_LABEL_VALUE}\"\n",
                name = h.name,
                about = h.about,
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The installer: a DaemonSet on the labelled nodes whose pod runs `wisp node
/// install` from `image` against the host's root (mounted at `/host`), then
/// stays (a DaemonSet pod that exits is restarted). `image` must hold `wisp`
/// and the shim side by side.
pub fn installer(image: &str, namespace: &str) -> String {
    format!(
        "apiVersion: apps/v1\n\
kind: DaemonSet\n\
metadata:\n  \
  name: wisp-node-installer\n  \
  namespace: {namespace}\n  \
  labels:\n    \
    app.kubernetes.io/name: wisp-node-installer\n    \
    app.kubernetes.io/part-of: wisp\n\
spec:\n  \
  selector:\n    \
    matchLabels:\n      \
      app.kubernetes.io/name: wisp-node-installer\n  \
  template:\n    \
    metadata:\n      \
      labels:\n        \
        app.kubernetes.io/name: wisp-node-installer\n    \
    spec:\n      \
      nodeSelector:\n        \
        {NODE_LABEL}: \"{NODE_LABEL_VALUE}\"\n      \
      hostPID: true\n      \
      containers:\n      \
      - name: install\n        \
        image: {image}\n        \
        command: [\"wisp\", \"node\", \"install\", \"--root\", \"/host\", \"--wait\"]\n        \
        securityContext:\n          \
          privileged: true\n        \
        volumeMounts:\n        \
        - name: host\n          \
          mountPath: /host\n      \
      volumes:\n      \
      - name: host\n        \
        hostPath:\n          \
          path: /\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_classes_name_both_handlers_and_schedule_on_enabled_nodes() {
        let y = runtime_classes();
        assert_eq!(y.matches("kind: RuntimeClass").count(), 2);
        assert!(y.contains("handler: wisp\n"));
        assert!(y.contains("handler: wisp-node\n"));
        assert_eq!(
            y.matches("runtime.wisp.dev/enabled: \"true\"").count(),
            2,
            "{y}"
        );
        assert_eq!(y.matches("---\n").count(), 1);
    }

    #[test]
    fn installer_runs_wisp_node_install_on_the_hosts_root() {
        let y = installer("registry.local/wisp:1", "kube-system");
        assert!(y.contains("image: registry.local/wisp:1\n"), "{y}");
        assert!(y.contains("namespace: kube-system\n"));
        assert!(y.contains("\"--root\", \"/host\""));
        assert!(y.contains("path: /\n"));
    }
}
