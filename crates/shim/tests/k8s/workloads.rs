//! What users do with kubectl: Deployments, probes, logs, exec (-it), limits,
//! OOMKilled, Jobs, delete; each in both node modes, with a pause image
//! whose user is upstream's 65535:65535.

use std::time::{Duration, Instant};

use wisp_test_guests as guests;

use crate::cluster::{self, Cluster};
use crate::support::{WISP, WISP_NODE, http_get};

#[test]
fn workloads_through_kubectl_in_per_pod_mode() {
    workloads(WISP);
}

#[test]
fn workloads_through_kubectl_in_node_mode() {
    workloads(WISP_NODE);
}

fn workloads(handler: &str) {
    let k = Cluster::start();
    eprintln!("Kubernetes {} ({handler})", k.version());
    // The installer did its work once; its second run changed nothing.
    assert!(k.install.restart_needed, "{}", k.install);
    assert!(!k.reinstall.changed(), "{}", k.reinstall);
    k.apply(&wisp_k8s::manifests::runtime_classes());
    let app = k.cri.import_wasm_app(
        "echo-app",
        &guests::http_echo(),
        &[("echo.wasm", &guests::echo())],
    );
    let busybox = k.cri.import_busybox();
    let echo = k.cri.import_wasm_app("echo-cmd", &guests::echo(), &[]);

    // A Deployment becomes Available, serves on its pod IPs, scales 1 -> 5 -> 1.
    k.apply(&cluster::deployment("web", handler, &app, 1));
    k.wait_condition("deployment/web", "Available", 120);
    let ips = k.pod_ips("app=web");
    assert_eq!(ips.len(), 1);
    assert_eq!(
        http_get(&ips[0], 8080, "/"),
        Some((200, "hello from wisp\n".into()))
    );
    k.kubectl_ok(&["scale", "deployment/web", "--replicas=5"]);
    let ips = k.wait_for("5 ready replicas", 120, || {
        let ready = k.kubectl_ok(&[
            "get",
            "deployment/web",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ]);
        (ready == "5").then(|| k.pod_ips("app=web"))
    });
    assert_eq!(ips.len(), 5, "{ips:?}");
    for ip in &ips {
        assert_eq!(
            http_get(ip, 8080, "/"),
            Some((200, "hello from wisp\n".into())),
            "{ip}"
        );
    }
    k.kubectl_ok(&["scale", "deployment/web", "--replicas=1"]);
    k.wait_for("1 pod left", 120, || {
        let names = k.kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
        (names.lines().count() == 1).then_some(())
    });

    if handler == WISP {
        restricted_namespace(&k, handler, &app);
    }

    // A Wasm app with a busybox sidecar, Ready by its httpGet probe on the
    // app; logs, exec and its memory limit.
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: mixed
spec:
  runtimeClassName: {handler}
  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: {app}
    imagePullPolicy: Never
    env: [{{name: PORT, value: "8080"}}, {{name: GREETING, value: pod}}]
    resources:
      limits: {{memory: 64Mi, cpu: 500m}}
    readinessProbe:
      httpGet: {{path: /, port: 8080}}
      periodSeconds: 1
  - name: sidecar
    image: {busybox}
    imagePullPolicy: Never
    command: [/bin/httpd, -f, -p, "8081", -h, /www]
"#
    );
    k.apply(&pod);
    k.wait_condition("pod/mixed", "Ready", 120);
    let ip = k.kubectl_ok(&["get", "pod/mixed", "-o", "jsonpath={.status.podIP}"]);
    assert_eq!(
        http_get(&ip, 8081, "/index.html"),
        Some((200, "hello from busybox\n".into()))
    );
    assert_eq!(
        http_get(&ip, 8080, "/log?n=3&tag=kubectl"),
        Some((200, "logged 3\n".into()))
    );
    let logs = k.wait_for("the guest's output in kubectl logs", 30, || {
        let logs = k.kubectl_ok(&["logs", "mixed", "-c", "app"]);
        logs.contains("kubectl out 2").then_some(logs)
    });
    assert!(logs.contains("kubectl err 0"), "{logs}");
    // `kubectl exec` of a WASI command from the image, in the app's context.
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "mixed", "-c", "app", "--", "/tools/echo.wasm"];
        all.extend_from_slice(args);
        k.kubectl(&all)
    };
    let out = exec(&["env", "GREETING"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "GREETING=pod\n");
    let exec = exec(&["exit", "7"]);
    assert_eq!(exec.status.code(), Some(7));
    // `kubectl exec -it` into the sidecar gets a terminal (runc's, through
    // the shim); `script` gives kubectl the terminal it wants on its side.
    let kubectl = k.kubectl_cmd();
    let line = std::iter::once(kubectl.get_program())
        .chain(kubectl.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .chain(
            [
                "exec",
                "-it",
                "mixed",
                "-c",
                "sidecar",
                "--",
                "/bin/busybox",
                "tty",
            ]
            .map(String::from),
        )
        .collect::<Vec<_>>()
        .join(" ");
    // Its stdin stays open while it runs: at end of file, `script` types an
    // EOF into the terminal, whose echo could trail the output.
    let mut script = std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = script.stdin.take();
    let out = script.wait_with_output().unwrap();
    drop(stdin);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.trim_end().ends_with("/dev/pts/0"),
        "{:?}: {shown:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The pod spec's memory limit caps the app's instances.
    assert_eq!(http_get(&ip, 8080, "/alloc?mib=8").map(|r| r.0), Some(200));
    assert_eq!(http_get(&ip, 8080, "/alloc?mib=96").map(|r| r.0), Some(500));

    // A sidecar beside a Wasm app that outgrows its memory limit: the
    // kernel kills it and kubectl says OOMKilled (the shim's TaskOOM).
    let oom = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: oom
spec:
  runtimeClassName: {handler}
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: {app}
    imagePullPolicy: Never
  - name: hog
    image: {busybox}
    imagePullPolicy: Never
    command: [/bin/sh, -c, 'a=x; while :; do a=$a$a; done']
    resources:
      limits: {{memory: 32Mi}}
"#
    );
    k.apply(&oom);
    let reason = k.wait_for("the hog's end", 120, || {
        let reason = k.kubectl_ok(&[
            "get",
            "pod/oom",
            "-o",
            r#"jsonpath={.status.containerStatuses[?(@.name=="hog")].state.terminated.reason}"#,
        ]);
        (!reason.is_empty()).then_some(reason)
    });
    assert_eq!(reason, "OOMKilled");

    // Jobs: one completes; a failing one is retried, then fails.
    let job = |name: &str, args: &str, backoff: u32| {
        format!(
            r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  backoffLimit: {backoff}
  template:
    spec:
      runtimeClassName: {handler}
      restartPolicy: Never
      containers:
      - name: job
        image: {echo}
        imagePullPolicy: Never
        args: {args}
"#
        )
    };
    k.apply(&job("ok", r#"[args, done]"#, 0));
    k.apply(&job("fails", r#"[exit, "3"]"#, 1));
    k.wait_condition("job/ok", "Complete", 120);
    assert_eq!(k.kubectl_ok(&["logs", "job/ok"]), "args\ndone\n");
    k.wait_condition("job/fails", "Failed", 180);
    let codes = k.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "job-name=fails",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].state.terminated.exitCode}",
    ]);
    assert_eq!(
        codes.split_whitespace().collect::<Vec<_>>(),
        ["3", "3"],
        "retried once"
    );

    // kubectl delete: gone within the grace period, nothing left behind.
    let started = Instant::now();
    k.kubectl_ok(&[
        "delete",
        "deployment/web",
        "pod/mixed",
        "pod/oom",
        "job/ok",
        "job/fails",
        "--wait=true",
        "--timeout=60s",
    ]);
    k.wait_for("every pod gone", 60, || {
        k.kubectl_ok(&["get", "pods", "-o", "name"])
            .trim()
            .is_empty()
            .then_some(())
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    k.wait_for("no sandbox left in containerd", 60, || {
        k.cri.list_pods().is_empty().then_some(())
    });
    k.wait_for("no shim left", 30, || {
        k.cri.shims().is_empty().then_some(())
    });
    // kubelet keeps its root dir a (shared) mount of its own while it runs;
    // any mount below it (a pod's volumes) would be a leftover.
    let kubelet_root = k.dir.join("kubelet-root").display().to_string();
    let mounts: Vec<String> = k
        .cri
        .mounts()
        .into_iter()
        .filter(|m| *m != kubelet_root)
        .collect();
    assert_eq!(mounts, Vec::<String>::new());
}

/// A namespace enforcing the `restricted` Pod Security Standard admits a
/// Wasm Deployment that complies, and it serves: its process runs as the
/// pod's user with no capability, no_new_privs and RuntimeDefault seccomp
/// (the CRI tier checks those fields against runc's). Per-pod mode only:
/// node mode does not confine hosted apps yet (issue 22, item 3).
fn restricted_namespace(k: &Cluster, handler: &str, app: &str) {
    k.apply(&format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: restricted
  labels:
    pod-security.kubernetes.io/enforce: restricted
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: locked
  namespace: restricted
spec:
  replicas: 1
  selector:
    matchLabels: {{app: locked}}
  template:
    metadata:
      labels: {{app: locked}}
    spec:
      runtimeClassName: {handler}
      terminationGracePeriodSeconds: 5
      securityContext:
        runAsNonRoot: true
        runAsUser: 1000
        fsGroup: 2000
        seccompProfile: {{type: RuntimeDefault}}
      containers:
      - name: app
        image: {app}
        imagePullPolicy: Never
        env: [{{name: PORT, value: "8080"}}]
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
"#
    ));
    let waited = k.kubectl(&[
        "wait",
        "-n",
        "restricted",
        "--for=condition=Available",
        "deployment/locked",
        "--timeout=120s",
    ]);
    if !waited.status.success() {
        let describe = k.kubectl(&["describe", "pods", "-n", "restricted"]);
        panic!(
            "the restricted Deployment never got Available: {}\n{}\n--- containerd:\n{}",
            String::from_utf8_lossy(&waited.stderr),
            String::from_utf8_lossy(&describe.stdout),
            k.cri.log()
        );
    }
    let ip = k.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        "restricted",
        "-l",
        "app=locked",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    assert_eq!(
        http_get(&ip, 8080, "/"),
        Some((200, "hello from wisp\n".into()))
    );
    // A pod that asks for root is refused by admission, not by the runtime.
    let root = k.kubectl(&[
        "run",
        "-n",
        "restricted",
        "rooted",
        "--image",
        app,
        "--overrides",
        &format!(r#"{{"spec":{{"runtimeClassName":"{handler}"}}}}"#),
    ]);
    assert!(!root.status.success(), "a root pod was admitted");
    k.kubectl_ok(&["delete", "namespace", "restricted", "--wait=true"]);
}
