//! A private containerd with the CRI plugin, driven over the CRI gRPC API the
//! way kubelet drives it (crates.io `k8s-cri`, API v1).
//!
//! Each [`Cri`] owns: a work dir under /tmp (containerd's root, state,
//! sockets, the CNI config and IPAM data, pod logs), a CNI bridge of its own
//! on a private /16 that exists only inside this VM, a static pause image in
//! the `k8s.io` namespace, the `wisp` and `wisp-node` handlers (containerd-shim-wisp-v1 first
//! on containerd's PATH) and the `runc` handler, and a cgroup parent of its
//! own. Drop tears down in the order `../shared/notes/cri.md` gives: pods
//! through CRI, then containerd, then mounts, cgroups and the bridge.

use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

use crate::host::disabled_plugins;
#[path = "calls.rs"]
mod calls;
#[path = "specs.rs"]
mod specs;

// Each includer (this tier, the cluster tier, the benches) uses a part.
pub use crate::host::processes_matching;
use crate::layouts::{Entry, busybox_entries, layer_image, layer_image_as, linux_image};
use specs::kubelet_namespaces;
#[allow(unused_imports)]
pub use specs::{
    LogLine, container, env, http_get, parse_cri_log, share_pids, wait_ready, web_container,
};

/// The RuntimeClass handlers this containerd knows.
pub const WISP: &str = "wisp";
pub const RUNC: &str = "runc";
/// Node mode: one process serves every Wasm HTTP app of the node.
pub const WISP_NODE: &str = "wisp-node";

/// The sandbox image (CRI's `sandbox_image`), imported at start.
pub const PAUSE_IMAGE: &str = "docker.io/wisp-test/pause:3.10";
/// The user of upstream's pause images, which containerd gives the sandbox.
pub const PAUSE_USER: &str = "65535:65535";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Which containerd a [`Cri`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containerd {
    /// Debian's 1.6.20 (config version 2, the `io.containerd.grpc.v1.cri` plugin).
    V1,
    /// 2.1.4 built by `scripts/install-containerd2.sh`, whose bin directory
    /// `WISP_CONTAINERD2_BIN` names (config version 3, the CRI plugin split
    /// into `io.containerd.cri.v1.images` and `io.containerd.cri.v1.runtime`).
    V2,
}

impl Containerd {
    /// The directory of its `containerd` and `ctr`; None: on PATH.
    fn bin(self) -> Option<PathBuf> {
        (self == Self::V2).then(|| {
            std::env::var_os("WISP_CONTAINERD2_BIN")
                .map(PathBuf::from)
                .filter(|b| b.join("containerd").is_file())
                .expect(
                    "WISP_CONTAINERD2_BIN names no containerd 2.x build: run \
                     `export WISP_CONTAINERD2_BIN=$(bash scripts/install-containerd2.sh)`",
                )
        })
    }

    fn tool(self, name: &str) -> PathBuf {
        self.bin().map_or_else(|| name.into(), |b| b.join(name))
    }

    /// The table the runtime handlers go under.
    pub fn runtime_plugin(self) -> &'static str {
        match self {
            Self::V1 => "io.containerd.grpc.v1.cri",
            Self::V2 => "io.containerd.cri.v1.runtime",
        }
    }
}

pub struct Cri {
    pub dir: tempfile::TempDir,
    pub containerd: Containerd,
    daemon: Option<Child>,
    /// The CNI bridge (also the host's route to the pods).
    pub bridge: String,
    /// Top cgroup of every pod of this instance (cgroupfs driver).
    pub cgroup_root: String,
    /// The pod network's /16, as `10.N` (the cluster tier puts its node
    /// address there).
    #[allow(dead_code)]
    pub subnet: String,
    rt: tokio::runtime::Runtime,
    rs: RuntimeServiceClient<Channel>,
}

/// A pod started with RunPodSandbox.
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
    pub ip: String,
}

impl Cri {
    pub fn start() -> Self {
        Self::start_with(true, |_, _| {})
    }

    /// A containerd whose config has the `wisp` handlers when `wisp` is set;
    /// `prepare(config, bin_dir)` runs before containerd starts (where a
    /// node installer adds them instead).
    pub fn start_with(wisp: bool, prepare: impl FnOnce(&Path, &Path)) -> Self {
        Self::start_on(Containerd::V1, wisp, prepare)
    }

    /// [`Self::start`] on containerd 2.x.
    pub fn start_v2() -> Self {
        Self::start_on(Containerd::V2, true, |_, _| {})
    }

    pub fn start_on(
        containerd: Containerd,
        wisp: bool,
        prepare: impl FnOnce(&Path, &Path),
    ) -> Self {
        // Unix socket paths are limited to 108 bytes: keep the dir short.
        let dir = tempfile::Builder::new()
            .prefix("wcri-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let bridge = format!("wcri{}-{n}", pid % 100_000);
        let subnet = free_subnet(pid, n);
        let cgroup_root = format!("wisp-cri-{pid}-{n}");
        for sub in ["bin", "cni", "ipam", "logs"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        for name in ["containerd-shim-wisp-v1", "containerd-shim-wisp-node-v1"] {
            if !wisp {
                break;
            }
            symlink(
                env!("CARGO_BIN_EXE_containerd-shim-wisp-v1"),
                d.join("bin").join(name),
            )
            .unwrap();
        }
        std::fs::write(
            d.join("cni/10-wisp.conflist"),
            serde_json::to_vec_pretty(&serde_json::json!({
                "cniVersion": "1.0.0",
                "name": format!("wisp-test-{pid}-{n}"),
                "plugins": [{
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("{subnet}.0.0/16")}]],
                        "dataDir": d.join("ipam"),
                    },
                }],
            }))
            .unwrap(),
        )
        .unwrap();
        let runtimes = containerd.runtime_plugin();
        let wisp_handlers = if wisp {
            format!(
                "    [plugins.\"{runtimes}\".containerd.runtimes.{WISP}]\n      \
                 runtime_type = \"io.containerd.wisp.v1\"\n    \
                 [plugins.\"{runtimes}\".containerd.runtimes.{WISP_NODE}]\n      \
                 runtime_type = \"io.containerd.wisp-node.v1\"\n"
            )
        } else {
            String::new()
        };
        let (version, opt, images, server) = match containerd {
            Containerd::V1 => (
                2,
                format!(
                    "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}/opt\"\n",
                    d.display()
                ),
                // The streaming server and the images are the CRI plugin's.
                format!(
                    "  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n  \
                     sandbox_image = \"{PAUSE_IMAGE}\"\n  [plugins.\"{runtimes}\".containerd]\n    \
                     snapshotter = \"overlayfs\"\n"
                ),
                String::new(),
            ),
            // 2.x has no `opt` plugin; images and the streaming server have
            // plugins of their own.
            Containerd::V2 => (
                3,
                String::new(),
                format!("  [plugins.\"{runtimes}\".containerd]\n"),
                format!(
                    "[plugins.\"io.containerd.cri.v1.images\"]\n  snapshotter = \"overlayfs\"\n  \
                     [plugins.\"io.containerd.cri.v1.images\".pinned_images]\n    sandbox = \"{PAUSE_IMAGE}\"\n\
                     [plugins.\"io.containerd.grpc.v1.cri\"]\n  stream_server_address = \"127.0.0.1\"\n  \
                     stream_server_port = \"0\"\n\
                     [plugins.\"io.containerd.nri.v1.nri\"]\n  socket_path = \"{}/nri.sock\"\n",
                    // NRI is on by default in 2.x, on a socket of the host's
                    // (/var/run/nri/nri.sock): two instances at once would
                    // fight over it, so each gets its own.
                    d.display()
                ),
            ),
        };
        let config = format!(
            r#"version = {version}
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [{disabled}]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
{opt}{server}[plugins."{runtimes}"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
{images}    default_runtime_name = "{RUNC}"
    [plugins."{runtimes}".containerd.runtimes.{RUNC}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."{runtimes}".containerd.runtimes.{RUNC}.options]
        Root = "{d}/runc"
{wisp_handlers}  [plugins."{runtimes}".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
    max_conf_num = 1
"#,
            d = d.display(),
            disabled = match containerd {
                Containerd::V1 => disabled_plugins(true, false),
                Containerd::V2 => format!(
                    "\"io.containerd.snapshotter.v1.erofs\", {}",
                    disabled_plugins(true, false)
                ),
            },
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        prepare(&d.join("config.toml"), &d.join("bin"));

        let path = format!(
            "{}:{}",
            d.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let daemon = Command::new(containerd.tool("containerd"))
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .env("WISP_CACHE_DIR", d.join("cache"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd is installed (scripts/install-containerd.sh)");

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = d.join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        let channel = loop {
            if socket.exists()
                && let Ok(ch) = rt.block_on(containerd_client::connect(&socket))
            {
                break ch;
            }
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        let cri = Self {
            rs: RuntimeServiceClient::new(channel),
            dir,
            containerd,
            daemon: Some(daemon),
            bridge,
            cgroup_root,
            subnet,
            rt,
        };
        // The CRI plugin serves once it has loaded (and found the CNI config).
        loop {
            let mut rs = cri.rs.clone();
            match cri
                .rt
                .block_on(rs.version(VersionRequest::default()))
                .map(|r| r.into_inner())
            {
                Ok(v) if !v.runtime_name.is_empty() => break,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "the CRI plugin did not start:\n{}",
                cri.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        cri.import_pause();
        cri
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn address(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// Runs a CRI call: `cri.call(|mut rs| async move { rs.x(req).await })`.
    pub fn call<T>(
        &self,
        f: impl AsyncFnOnce(RuntimeServiceClient<Channel>) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, tonic::Status> {
        self.rt
            .block_on(f(self.rs.clone()))
            .map(tonic::Response::into_inner)
    }

    /// [`Self::call`] that gives up after `limit` (for calls that could hang).
    pub fn call_within<T>(
        &self,
        limit: Duration,
        f: impl AsyncFnOnce(RuntimeServiceClient<Channel>) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, String> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(limit, f(self.rs.clone())).await })
        {
            Ok(r) => r
                .map(tonic::Response::into_inner)
                .map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer in {limit:?}")),
        }
    }

    /// `ctr -n k8s.io ARGS`, which must succeed.
    #[track_caller]
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .arg("60")
            .arg(self.containerd.tool("ctr"))
            .arg("--address")
            .arg(self.address())
            .args(["-n", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Imports an OCI image archive into the `k8s.io` namespace, where the
    /// CRI plugin sees it (`--all-platforms`: Wasm images are `wasi/wasm`).
    pub fn import(&self, tar: &Path) {
        self.ctr(&["images", "import", "--all-platforms", tar.to_str().unwrap()]);
    }

    /// The sandbox image, shaped as upstream's `registry.k8s.io/pause`: its
    /// config says `User: 65535:65535`, and containerd runs every pod's
    /// sandbox as that user (a root pause hides the sandbox's user and
    /// capability handling from every test).
    fn import_pause(&self) {
        let tar = self.dir.path().join("pause.tar");
        layer_image_as(
            PAUSE_IMAGE,
            &tar,
            &[Entry::file("pause", pause_binary().to_vec(), 0o755)],
            &[],
            &["/pause"],
            ("linux", "amd64"),
            Some(PAUSE_USER),
        );
        self.import(&tar);
    }

    /// A Wasm image (`wasi/wasm`) whose rootfs holds the app as `/app.wasm`
    /// (its entrypoint) and WASI commands under `/tools`, for exec.
    pub fn import_wasm_app(&self, name: &str, app: &Path, tools: &[(&str, &Path)]) -> String {
        let reference = format!("docker.io/wisp-test/{name}:latest");
        let tar = self.dir.path().join(format!("{name}.tar"));
        let mut entries = vec![
            Entry::file("app.wasm", std::fs::read(app).unwrap(), 0o644),
            Entry::Dir("tools/".into()),
        ];
        for (file, path) in tools {
            entries.push(Entry::file(
                &format!("tools/{file}"),
                std::fs::read(path).unwrap(),
                0o644,
            ));
        }
        layer_image(
            &reference,
            &tar,
            &entries,
            &["/app.wasm"],
            &[],
            ("wasi", "wasm"),
        );
        self.import(&tar);
        reference
    }

    /// busybox-static as a Linux image (sidecars, the runc control pod).
    pub fn import_busybox(&self) -> String {
        let reference = "docker.io/wisp-test/busybox:latest".to_string();
        let tar = self.dir.path().join("busybox.tar");
        let mut entries = busybox_entries();
        entries.push(Entry::Dir("www/".into()));
        entries.push(Entry::file(
            "www/index.html",
            b"hello from busybox\n".to_vec(),
            0o644,
        ));
        linux_image(&reference, &tar, &entries, &["/bin/sh"]);
        self.import(&tar);
        reference
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        // Pods first, through CRI, while containerd runs.
        let mut rs = self.rs.clone();
        if let Ok(pods) = self
            .rt
            .block_on(rs.list_pod_sandbox(ListPodSandboxRequest::default()))
        {
            for pod in pods.into_inner().items {
                let _ = self.rt.block_on(rs.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                }));
                let _ = self
                    .rt
                    .block_on(rs.remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: pod.id,
                    }));
            }
        }
        if let Some(mut c) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let _ = c.wait();
        }
        // A test that failed half-way may leave shims: they are ours.
        for pid in self.shims() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::SIGKILL,
            );
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        // Pod cgroups (kubelet's job) and anything a failed test left.
        for controller in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            remove_cgroup_tree(&controller.path().join(&self.cgroup_root));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Removes a cgroup directory and its children, deepest first, killing
/// whatever still runs in them: after a failed test (or a node process that
/// died with containerd already gone) pause processes may be left, orphaned.
fn remove_cgroup_tree(dir: &Path) {
    for child in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.path().is_dir() {
            remove_cgroup_tree(&child.path());
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<i32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
    for pid in &pids {
        // Never this test process itself (a node-mode app thread of ours
        // cannot be here: the node process is another process).
        if *pid as u32 != std::process::id() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL);
        }
    }
    for _ in 0..100 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() || pids.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A /16 (as `10.x`, room for the density benchmark's 1,000 pods) that no
/// route on this machine touches yet.
///
/// Taken subnets are also remembered in this process: a route only appears
/// with an instance's first pod, so two instances started together could
/// otherwise both skip the same leftover route onto the same /16, and a
/// test's requests would reach the other's pods.
fn free_subnet(pid: u32, n: u32) -> String {
    static TAKEN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let routes = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut k = (pid.wrapping_mul(7) + n) % 100;
    for _ in 0..100 {
        let subnet = format!("10.{}", 150 + k);
        if !taken.contains(&k) && !routes.contains(&format!("{subnet}.")) {
            taken.push(k);
            return subnet;
        }
        k = (k + 1) % 100;
    }
    panic!("no free /16 in 10.150-249 for a CRI instance: {routes}");
}

/// The static pause binary, compiled once per test process from pause.c.
fn pause_binary() -> &'static [u8] {
    static PAUSE: OnceLock<Vec<u8>> = OnceLock::new();
    PAUSE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pause");
        // The running test's package dir first (see wisp_test_guests::repo_root).
        let dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let src = Path::new(&dir).join("tests/cri/pause.c");
        let status = Command::new("cc")
            .args(["-static", "-Os", "-s", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("a C compiler (gcc, libc6-dev) is installed");
        assert!(status.success(), "cc -static {}", src.display());
        std::fs::read(&out).unwrap()
    })
}
