//! A real single-node Kubernetes, from upstream sources, on the CRI tier's
//! private containerd.
//!
//! - Binaries: `WISP_K8S_BIN` (kube-apiserver, kube-controller-manager,
//!   kube-scheduler, kubelet, kubectl), built once by
//!   `scripts/build-kubernetes.sh`; etcd from Debian's `etcd-server`.
//! - The node is enabled as a user would: containerd starts from a config
//!   without the wisp handlers, `wisp_k8s::install` (what `wisp node
//!   install` runs) puts the shim in containerd's bin dir and the handlers
//!   in its config, and `wisp k8s manifests`' RuntimeClasses are applied.
//! - Certificates are made with `openssl`: a CA, the apiserver's serving
//!   certificate, client certificates for the admin, the controller manager,
//!   the scheduler, the kubelet (`system:node:<node>`) and the apiserver's
//!   kubelet client, and a service-account key pair.
//! - Everything listens on free loopback ports except what must not: the
//!   apiserver advertises, and kubelet serves on, a node address (the
//!   `kubernetes` Endpoints object rejects 127/8) on a bridge link of the
//!   test's own (this kernel has no dummy module), removed on teardown with
//!   everything else.
//! - kubelet's cgroup root is the CRI harness's, so its teardown removes the
//!   pods' cgroups too; its root, pod logs and certificates are in the work
//!   dir. No kube-proxy and no DNS: pods are reached by pod IP.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Cri, RUNC};

/// The node's name (the hostname resolves to 127.0.0.1 here; kubelet is told).
pub const NODE: &str = "wisp-node-0";

/// Held while a kubelet starts (see `Cluster::start`).
static KUBELET_START: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Cluster {
    /// The private containerd (and the CNI network, the pause image).
    pub cri: Cri,
    pub dir: PathBuf,
    bin: PathBuf,
    daemons: Vec<(&'static str, Child)>,
    pub node_ip: String,
    link: String,
    /// The installer's report on its second run (it must change nothing).
    pub reinstall: wisp_k8s::install::Report,
    pub install: wisp_k8s::install::Report,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Cluster {
    pub fn start() -> Self {
        let bin = PathBuf::from(std::env::var("WISP_K8S_BIN").expect(
            "WISP_K8S_BIN names no Kubernetes build: run `export WISP_K8S_BIN=$(bash scripts/build-kubernetes.sh)`",
        ));
        let shim = PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-wisp-v1"));
        let mut reports = Vec::new();
        let cri = Cri::start_with(false, |config, bin_dir| {
            for _ in 0..2 {
                let opts = wisp_k8s::install::Options {
                    root: "/".into(),
                    config: config.into(),
                    bin_dir: bin_dir.into(),
                    shim: shim.clone(),
                    ..Default::default()
                };
                reports.push(wisp_k8s::install::install(&opts).expect("wisp node install"));
            }
        });
        let reinstall = reports.pop().unwrap();
        let install = reports.pop().unwrap();
        let dir = cri.dir.path().join("k8s");
        std::fs::create_dir_all(&dir).unwrap();

        // The node address: on a link of ours, in the CRI harness's
        // private /16 (its bridge holds .0.1; .255.254 is never leased).
        let node_ip = format!("{}.255.254", cri.subnet);
        let link = format!("{}k", cri.bridge);
        let _ = Command::new("ip").args(["link", "del", &link]).output();
        run(Command::new("ip").args(["link", "add", &link, "type", "bridge"]));
        run(Command::new("ip").args(["addr", "add", &format!("{node_ip}/32"), "dev", &link]));
        run(Command::new("ip").args(["link", "set", &link, "up"]));

        let mut cluster = Self {
            cri,
            dir,
            bin,
            daemons: Vec::new(),
            node_ip,
            link,
            reinstall,
            install,
        };
        cluster.certificates();
        cluster.control_plane();
        {
            // Every kubelet binds its device-plugin registry at the fixed
            // /var/lib/kubelet/device-plugins/kubelet.sock (`--root-dir` does
            // not move it) after removing what it finds there, so two starting
            // at once race: "bind: address already in use", and the loser
            // exits. Starts take turns; the clusters then run side by side.
            let _turn = KUBELET_START.lock().unwrap_or_else(|e| e.into_inner());
            cluster.kubelet();
            cluster.wait_node_ready();
        }
        cluster
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        run(Command::new("openssl").args(args).current_dir(&self.dir));
    }

    /// A key and a certificate signed by the CA, for `subject`.
    fn cert(&self, name: &str, subject: &str, ext: Option<&str>) {
        self.openssl(&["genrsa", "-out", &format!("{name}.key"), "2048"]);
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            subject,
            "-out",
            &format!("{name}.csr"),
        ]);
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if let Some(ext) = ext {
            std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
            args.extend(["-extfile".into(), format!("{name}.ext")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.openssl(&args);
    }

    fn certificates(&self) {
        self.openssl(&["genrsa", "-out", "ca.key", "2048"]);
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=wisp-test-ca",
            "-days",
            "2",
            "-out",
            "ca.crt",
        ]);
        let sans = format!(
            "subjectAltName=IP:127.0.0.1,IP:{},IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,\
             DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost\n\
             extendedKeyUsage=serverAuth\n",
            self.node_ip
        );
        self.cert("apiserver", "/CN=kube-apiserver", Some(&sans));
        let client = "extendedKeyUsage=clientAuth\n";
        self.cert("admin", "/O=system:masters/CN=admin", Some(client));
        self.cert(
            "controller-manager",
            "/CN=system:kube-controller-manager",
            Some(client),
        );
        self.cert("scheduler", "/CN=system:kube-scheduler", Some(client));
        self.cert(
            "kubelet",
            &format!("/O=system:nodes/CN=system:node:{NODE}"),
            Some(client),
        );
        self.cert(
            "apiserver-kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            Some(client),
        );
        let kubelet_sans = format!(
            "subjectAltName=IP:{},DNS:{NODE}\nextendedKeyUsage=serverAuth\n",
            self.node_ip
        );
        self.cert(
            "kubelet-serving",
            &format!("/CN={NODE}"),
            Some(&kubelet_sans),
        );
        self.openssl(&["genrsa", "-out", "sa.key", "2048"]);
        self.openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
    }

    fn kubeconfig(&self, name: &str, port: u16) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: wisp\n  cluster:\n    \
             certificate-authority: {ca}\n    server: https://127.0.0.1:{port}\n\
             users:\n- name: {name}\n  user:\n    client-certificate: {crt}\n    \
             client-key: {key}\ncontexts:\n- name: wisp\n  context:\n    cluster: wisp\n    \
             user: {name}\ncurrent-context: wisp\n",
            ca = self.path("ca.crt"),
            crt = self.path(&format!("{name}.crt")),
            key = self.path(&format!("{name}.key")),
        );
        std::fs::write(self.dir.join(format!("{name}.kubeconfig")), text).unwrap();
    }

    fn spawn(&mut self, name: &'static str, args: &[String]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let program = if name == "etcd" {
            PathBuf::from("etcd")
        } else {
            self.bin.join(name)
        };
        let child = Command::new(&program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        self.daemons.push((name, child));
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn control_plane(&mut self) {
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let dir = self.dir.clone();
        let d = |s: &str| dir.join(s).display().to_string();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = vec![
            format!("--data-dir={}", d("etcd")),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
        ];
        self.spawn("etcd", &etcd);
        let apiserver = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--advertise-address={}", self.node_ip),
            format!("--client-ca-file={}", d("ca.crt")),
            format!("--tls-cert-file={}", d("apiserver.crt")),
            format!("--tls-private-key-file={}", d("apiserver.key")),
            format!(
                "--kubelet-client-certificate={}",
                d("apiserver-kubelet-client.crt")
            ),
            format!("--kubelet-client-key={}", d("apiserver-kubelet-client.key")),
            format!("--kubelet-certificate-authority={}", d("ca.crt")),
            "--kubelet-preferred-address-types=InternalIP".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ];
        self.spawn("kube-apiserver", &apiserver);
        for name in ["admin", "controller-manager", "scheduler", "kubelet"] {
            self.kubeconfig(name, api_port);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.kubectl(&["get", "--raw", "/readyz"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "kube-apiserver never got ready:\n{}",
                tail(&self.log("kube-apiserver"))
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let cm = vec![
            format!("--kubeconfig={}", d("controller-manager.kubeconfig")),
            format!("--service-account-private-key-file={}", d("sa.key")),
            format!("--root-ca-file={}", d("ca.crt")),
            "--leader-elect=false".into(),
            "--use-service-account-credentials=true".into(),
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle".into(),
            format!("--secure-port={}", free_port()),
            "--bind-address=127.0.0.1".into(),
        ];
        self.spawn("kube-controller-manager", &cm);
        let scheduler = vec![
            format!("--kubeconfig={}", d("scheduler.kubeconfig")),
            "--leader-elect=false".into(),
            format!("--secure-port={}", free_port()),
            "--bind-address=127.0.0.1".into(),
        ];
        self.spawn("kube-scheduler", &scheduler);
    }

    fn kubelet(&mut self) {
        let dir = self.dir.clone();
        let d = |s: &str| dir.join(s).display().to_string();
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\n\
             kind: KubeletConfiguration\n\
             containerRuntimeEndpoint: unix://{socket}\n\
             cgroupDriver: cgroupfs\n\
             cgroupRoot: /{cgroup_root}\n\
             failSwapOn: false\n\
             failCgroupV1: false\n\
             address: {ip}\n\
             port: {port}\n\
             readOnlyPort: 0\n\
             healthzPort: 0\n\
             tlsCertFile: {serving_crt}\n\
             tlsPrivateKeyFile: {serving_key}\n\
             authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: false\n  \
               x509:\n    clientCAFile: {ca}\n\
             authorization:\n  mode: AlwaysAllow\n\
             imageGCHighThresholdPercent: 100\n\
             imageGCLowThresholdPercent: 99\n\
             evictionHard:\n  memory.available: \"100Mi\"\n  nodefs.available: \"1%\"\n  \
               nodefs.inodesFree: \"1%\"\n  imagefs.available: \"1%\"\n\
             podLogsDir: {logs}\n\
             enforceNodeAllocatable: []\n\
             registerNode: true\n\
             syncFrequency: 5s\n\
             fileCheckFrequency: 5s\n\
             nodeStatusUpdateFrequency: 5s\n\
             makeIPTablesUtilChains: false\n\
             resolvConf: /etc/resolv.conf\n",
            socket = self.cri.address().display(),
            cgroup_root = self.cri.cgroup_root,
            ip = self.node_ip,
            port = free_port(),
            serving_crt = d("kubelet-serving.crt"),
            serving_key = d("kubelet-serving.key"),
            ca = d("ca.crt"),
            logs = d("pod-logs"),
        );
        std::fs::create_dir_all(self.dir.join("pod-logs")).unwrap();
        // kubelet wants its cgroup root in every hierarchy already.
        for controller in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let _ = std::fs::create_dir_all(controller.path().join(&self.cri.cgroup_root));
        }
        std::fs::write(self.dir.join("kubelet.yaml"), config).unwrap();
        let args = vec![
            format!("--config={}", d("kubelet.yaml")),
            format!("--kubeconfig={}", d("kubelet.kubeconfig")),
            format!("--root-dir={}", d("kubelet-root")),
            format!("--cert-dir={}", d("kubelet-certs")),
            format!("--node-ip={}", self.node_ip),
            format!("--hostname-override={NODE}"),
            format!(
                "--node-labels={}={}",
                wisp_k8s::NODE_LABEL,
                wisp_k8s::NODE_LABEL_VALUE
            ),
        ];
        self.spawn("kubelet", &args);
    }

    fn wait_node_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let dead = self
                .daemons
                .iter_mut()
                .find_map(|(name, c)| c.try_wait().ok().flatten().map(|s| (*name, s)));
            if let Some((name, status)) = dead {
                panic!("{name} exited ({status}):\n{}", tail(&self.log(name)));
            }
            let out = self.kubectl(&[
                "get",
                "node",
                NODE,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            if String::from_utf8_lossy(&out.stdout) == "True" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the node never got Ready:\n{}",
                tail(&self.log("kubelet"))
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // Pods need their namespace's default service account.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .kubectl(&["get", "serviceaccount", "default"])
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "no default service account");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `kubectl ARGS` as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd().args(args).output().expect("kubectl")
    }

    pub fn kubectl_cmd(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg(format!("--kubeconfig={}", self.path("admin.kubeconfig")));
        cmd
    }

    /// The API server's version, as `kubectl version` reports it.
    pub fn version(&self) -> String {
        let out = self.kubectl_ok(&["version"]);
        out.lines()
            .find_map(|l| l.strip_prefix("Server Version: "))
            .unwrap_or("(unknown)")
            .to_string()
    }

    /// `kubectl ARGS`, which must succeed; its stdout.
    #[track_caller]
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl wait --for=condition=COND RESOURCE`; on a timeout, panics
    /// with what the pods, their events and kubelet say.
    #[track_caller]
    pub fn wait_condition(&self, resource: &str, condition: &str, secs: u64) {
        let out = self.kubectl(&[
            "wait",
            &format!("--for=condition={condition}"),
            resource,
            &format!("--timeout={secs}s"),
        ]);
        if !out.status.success() {
            let describe = self.kubectl(&["describe", "pods"]);
            panic!(
                "{resource} never got {condition}: {}\n{}\n--- controller manager:\n{}\n\
                 --- scheduler:\n{}\n--- kubelet:\n{}\n--- containerd:\n{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&describe.stdout),
                tail(&self.log("kube-controller-manager")),
                tail(&self.log("kube-scheduler")),
                tail(&self.log("kubelet")),
                tail(&self.cri.log()),
            );
        }
    }

    /// `kubectl apply -f -` of `yaml`.
    #[track_caller]
    pub fn apply(&self, yaml: &str) -> String {
        let mut child = self
            .kubectl_cmd()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `f` returns `Some`, or panics with `what` after `secs`.
    #[track_caller]
    pub fn wait_for<T>(&self, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}\n{}",
                self.kubectl_ok(&["get", "pods", "-A", "-o", "wide"]),
                tail(&self.log("kubelet"))
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// IPs of the running pods matching `selector`.
    pub fn pod_ips(&self, selector: &str) -> Vec<String> {
        let out = self.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            selector,
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ]);
        out.split_whitespace().map(String::from).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Pods first, while kubelet runs, so it stops them as it would.
        let _ = self.kubectl(&[
            "delete",
            "pods,deployments,jobs",
            "--all",
            "--grace-period=1",
            "--timeout=60s",
        ]);
        // kubelet before the control plane, the control plane before etcd.
        for (_, child) in self.daemons.iter_mut().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // kubelet's own mounts under its root dir.
        let root = self.dir.join("kubelet-root").display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut ours: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| m.starts_with(&root))
                .collect();
            ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in ours {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
        // Then the Cri's own teardown (pods, containerd, cgroups, bridge).
    }
}

/// A Deployment of `replicas` HTTP pods answering on 8080 with an httpGet
/// readiness probe, as a user would write it: a Wasm app under the RuntimeClass
/// `handler`, or for `RUNC` (the cluster's default handler) busybox httpd.
pub fn deployment(name: &str, handler: &str, image: &str, replicas: usize) -> String {
    let (class, command) = if handler == RUNC {
        (
            String::new(),
            "        command: [/bin/httpd, -f, -p, \"8080\", -h, /www]\n",
        )
    } else {
        (format!("      runtimeClassName: {handler}\n"), "")
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
{class}      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: {image}
        imagePullPolicy: Never
        env: [{{name: PORT, value: "8080"}}]
{command}        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
"#
    )
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
