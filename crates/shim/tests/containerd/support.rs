//! A private containerd for each test, with containerd-shim-wisp-v1 first on
//! its PATH (runtime_path is broken in containerd 1.6.20), and images built
//! in the test: Wasm ones by wisp-oci, a busybox one from busybox-static.

use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::host::disabled_plugins;
use crate::layouts::{busybox_entries, linux_image};

static NEXT_NS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
pub const WISP: &str = "io.containerd.wisp.v1";
/// Node mode: one daemon per namespace hosts the Wasm containers.
pub const WISP_NODE: &str = "io.containerd.wisp-node.v1";
pub const RUNC: &str = "io.containerd.runc.v2";

pub struct Containerd {
    pub dir: tempfile::TempDir,
    /// The containerd namespace: unique per test, so cgroup paths
    /// (`/<namespace>/<id>` from ctr) never collide between parallel tests.
    pub ns: String,
    daemon: Option<Child>,
    events: Option<Child>,
    /// Where `containerd` and `ctr` come from: PATH (Debian's 1.6), or a
    /// containerd 2.x build (see `start_v2`).
    bin: Option<PathBuf>,
}

impl Containerd {
    pub fn start() -> Self {
        Self::start_from(None, "info")
    }

    /// A containerd at debug level, which passes `-debug` to its shims: they
    /// then log at debug level too (into the work dir's containerd.log).
    pub fn start_debug() -> Self {
        Self::start_from(None, "debug")
    }

    /// A containerd 2.x built by `scripts/install-containerd2.sh`, whose bin
    /// directory `WISP_CONTAINERD2_BIN` names (scripts/test.sh sets it).
    pub fn start_v2() -> Self {
        let bin = std::env::var_os("WISP_CONTAINERD2_BIN")
            .map(PathBuf::from)
            .filter(|b| b.join("containerd").is_file())
            .expect(
                "WISP_CONTAINERD2_BIN names no containerd 2.x build: run \
                 `export WISP_CONTAINERD2_BIN=$(bash scripts/install-containerd2.sh)`",
            );
        Self::start_from(Some(bin), "info")
    }

    fn start_from(bin: Option<PathBuf>, level: &str) -> Self {
        // Unix socket paths are limited to 108 bytes: keep the dir short.
        let dir = tempfile::Builder::new()
            .prefix("wctd-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [{disabled}]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[debug]
  level = "{level}"
"#,
            d = d.display(),
            disabled = disabled_plugins(false, bin.is_some()),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        std::fs::create_dir_all(d.join("bin")).unwrap();
        // Per-pod and node mode: one binary under both names.
        for name in ["containerd-shim-wisp-v1", "containerd-shim-wisp-node-v1"] {
            symlink(
                env!("CARGO_BIN_EXE_containerd-shim-wisp-v1"),
                d.join("bin").join(name),
            )
            .unwrap();
        }
        let n = NEXT_NS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let ns = format!("wisp-test-{}-{n}", std::process::id());
        let mut c = Self {
            dir,
            ns,
            daemon: None,
            events: None,
            bin,
        };
        c.spawn_daemon();
        c
    }

    fn spawn_daemon(&mut self) {
        let d = self.dir.path();
        let path = format!(
            "{}:{}",
            d.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("containerd.log"))
            .unwrap();
        let child = Command::new(self.tool("containerd"))
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .env("WISP_CACHE_DIR", d.join("cache"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd is installed (apt-get install containerd)");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.ctr(&["version"]).status.success() {
                self.record_events();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not start: {}", self.log());
    }

    /// Records `ctr events` to a file: the exits containerd was told about.
    fn record_events(&mut self) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("events.log"))
            .unwrap();
        let child = self
            .unbounded_cmd(&["events"])
            .stdout(file)
            .spawn()
            .unwrap();
        self.events = Some(child);
        // `ctr events` subscribes asynchronously; give it a moment.
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Exit statuses containerd received in `/tasks/exit` events for a
    /// process id (the container id for an init).
    pub fn exits(&self, id: &str) -> Vec<u32> {
        let log = std::fs::read_to_string(self.dir.path().join("events.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(" /tasks/exit "))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l[l.find('{')?..]).ok())
            .filter(|v| v["id"] == id)
            // protobuf's JSON leaves out a zero exit status.
            .map(|v| v["exit_status"].as_u64().unwrap_or(0) as u32)
            .collect()
    }

    /// Waits for the one exit event of `id` and returns its status.
    #[track_caller]
    pub fn exit_of(&self, id: &str) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let exits = self.exits(id);
            if let [code] = exits[..] {
                return code;
            }
            assert!(exits.len() < 2, "{id} exited more than once: {exits:?}");
            assert!(Instant::now() < deadline, "no exit event for {id}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A ttrpc client of the shim serving `id`, for Task calls that ctr 1.6
    /// has no command for (Update).
    pub fn shim(&self, id: &str) -> containerd_shim_protos::TaskClient {
        let bundle = self
            .dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.ns)
            .join(id);
        let address = std::fs::read_to_string(bundle.join("address")).unwrap();
        let client = containerd_shim_protos::Client::connect(address.trim()).unwrap();
        containerd_shim_protos::TaskClient::new(client)
    }

    /// Stops containerd (SIGTERM) and starts it again; shims keep running.
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.spawn_daemon();
    }

    /// Stops containerd (its shims live on) until [`Self::start_again`].
    pub fn stop(&mut self) {
        self.stop_daemon();
    }

    pub fn start_again(&mut self) {
        self.spawn_daemon();
    }

    fn stop_daemon(&mut self) {
        if let Some(mut e) = self.events.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
        if let Some(mut c) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// `containerd` or `ctr` of this instance's version.
    fn tool(&self, name: &str) -> PathBuf {
        self.bin
            .as_ref()
            .map_or_else(|| PathBuf::from(name), |b| b.join(name))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn address(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("60")
            .arg(self.tool("ctr"))
            .args(self.ctr_args(args))
            .stdin(Stdio::null());
        cmd
    }

    /// ctr itself, with no time limit: for `ctr events`, which runs as long
    /// as this containerd and is killed (it, not a `timeout` above it, which
    /// would leave it behind) when the daemon stops.
    fn unbounded_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.tool("ctr"));
        cmd.args(self.ctr_args(args)).stdin(Stdio::null());
        cmd
    }

    /// ctr's arguments for this containerd and namespace, then `args`.
    fn ctr_args(&self, args: &[&str]) -> Vec<std::ffi::OsString> {
        let mut all: Vec<std::ffi::OsString> = vec![
            "--address".into(),
            self.address().into(),
            "-n".into(),
            (&self.ns).into(),
        ];
        all.extend(args.iter().map(Into::into));
        all
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs ctr and returns stdout; panics with stderr on failure.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr run --rm --runtime RUNTIME IMAGE ID ARGS..`: ctr waits for the task
    /// and exits with its status.
    pub fn run(&self, runtime: &str, image: &str, id: &str, args: &[&str]) -> Output {
        let mut a = vec!["run", "--rm", "--runtime", runtime, image, id];
        a.extend_from_slice(args);
        self.ctr(&a)
    }

    /// `ctr run -d`, then waits until the task is RUNNING.
    #[track_caller]
    pub fn start_task(&self, runtime: &str, image: &str, id: &str, args: &[&str]) {
        let mut a = vec!["run", "-d", "--runtime", runtime, image, id];
        a.extend_from_slice(args);
        self.ok(&a);
        wait_status(self, id, "RUNNING");
    }

    /// SIGKILLs a task, waits for its one exit event and deletes it; returns
    /// the exit status containerd was told.
    #[track_caller]
    pub fn kill_and_delete(&self, id: &str) -> u32 {
        self.ok(&["tasks", "kill", "-s", "SIGKILL", id]);
        wait_status(self, id, "STOPPED");
        let code = self.exit_of(id);
        self.ok(&["tasks", "delete", id]);
        code
    }

    pub fn import(&self, tar: &Path) {
        self.ok(&["images", "import", "--all-platforms", tar.to_str().unwrap()]);
    }

    /// Builds an image of `shape` around a guest, pushes it to `registry`
    /// (`wisp oci push`'s path) and has this containerd pull it over the
    /// distribution API (`ctr images pull`); returns the reference.
    pub fn pull_pushed_wasm(
        &self,
        registry: &wisp_test_guests::registry::TestRegistry,
        name: &str,
        wasm: &Path,
        shape: wisp_oci::Shape,
    ) -> String {
        let reference: wisp_oci::Reference = format!("{}/wisp-test/{name}:v1", registry.addr())
            .parse()
            .unwrap();
        let opts = wisp_oci::BuildOptions::new(reference.clone(), shape);
        let image = wisp_oci::build_image(&std::fs::read(wasm).unwrap(), &opts).unwrap();
        let client = wisp_oci::Registry::new(&wisp_oci::RegistryOptions {
            plain_http: true,
            credentials: None,
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(client.push(&wisp_oci::Image::from_archive(&image), &reference))
            .unwrap_or_else(|e| panic!("push {reference}: {e:?}\n{}", registry.log()));
        let reference = reference.to_string();
        self.ok(&[
            "images",
            "pull",
            "--plain-http",
            "--platform",
            "wasi/wasm",
            &reference,
        ]);
        reference
    }

    /// Builds an image of `shape` around a guest and imports it.
    pub fn import_wasm(&self, name: &str, wasm: &Path, shape: wisp_oci::Shape) -> String {
        let reference = format!("docker.io/wisp-test/{name}:latest");
        let opts = wisp_oci::BuildOptions {
            reference: reference.parse().unwrap(),
            shape,
            env: Vec::new(),
            args: Vec::new(),
            created: 0,
            author: None,
        };
        let bytes = std::fs::read(wasm).unwrap();
        let image = wisp_oci::build_image(&bytes, &opts).unwrap();
        let tar = self.dir.path().join(format!("{name}.tar"));
        image.write_tar(&tar).unwrap();
        let mut args = vec!["images", "import", "--all-platforms"];
        if shape != wisp_oci::Shape::Image {
            // containerd 1.6.20 cannot unpack raw Wasm layers.
            args.push("--no-unpack");
        }
        args.push(tar.to_str().unwrap());
        self.ok(&args);
        reference
    }

    /// Creates container `id` of `image` through containerd's gRPC API, as a
    /// client that does not unpack images would (and as ctr 1.6.20 cannot:
    /// it unpacks first, which fails for raw Wasm layers): an empty overlayfs
    /// snapshot as the rootfs and `ctr oci spec`'s default spec with these
    /// args, env and netns. Run it with `ctr tasks start`.
    pub fn create_container(
        &self,
        image: &str,
        id: &str,
        args: &[&str],
        env: &[&str],
        netns: Option<&str>,
    ) {
        use containerd_client::services::v1::leases_client::LeasesClient;
        use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
        use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
        use containerd_client::services::v1::{
            Container, CreateContainerRequest, container::Runtime,
            containers_client::ContainersClient,
        };
        use containerd_client::services::v1::{CreateRequest, DeleteRequest};
        use containerd_client::tonic::Request;

        let mut spec: serde_json::Value = serde_json::from_str(&self.ok(&["oci", "spec"])).unwrap();
        spec["process"]["args"] = serde_json::json!(args);
        // ctr's default spec has no env; ctr run adds PATH, as do we.
        let mut all_env = vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"];
        all_env.extend_from_slice(env);
        spec["process"]["env"] = serde_json::json!(all_env);
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{}/{id}", self.ns));
        if let Some(path) = netns {
            for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
                if ns["type"] == "network" {
                    ns["path"] = serde_json::json!(path);
                }
            }
        }
        // The lease keeps containerd's garbage collector off the snapshot
        // until the container references it, as containerd's own client does.
        let lease = format!("wisp-test-{id}");
        fn request<T>(ns: &str, lease: Option<&str>, msg: T) -> Request<T> {
            let mut req = Request::new(msg);
            req.metadata_mut()
                .insert("containerd-namespace", ns.parse().unwrap());
            if let Some(l) = lease {
                req.metadata_mut()
                    .insert("containerd-lease", l.parse().unwrap());
            }
            req
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let channel = containerd_client::connect(self.address()).await.unwrap();
            let mut leases = LeasesClient::new(channel.clone());
            let create = CreateRequest {
                id: lease.clone(),
                ..Default::default()
            };
            leases
                .create(request(&self.ns, None, create))
                .await
                .unwrap();
            SnapshotsClient::new(channel.clone())
                .prepare(request(
                    &self.ns,
                    Some(&lease),
                    PrepareSnapshotRequest {
                        snapshotter: "overlayfs".into(),
                        key: id.into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
            ContainersClient::new(channel.clone())
                .create(request(
                    &self.ns,
                    Some(&lease),
                    CreateContainerRequest {
                        container: Some(Container {
                            id: id.into(),
                            image: image.into(),
                            runtime: Some(Runtime {
                                name: WISP.into(),
                                options: None,
                            }),
                            spec: Some(prost_types::Any {
                                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec"
                                    .into(),
                                value: serde_json::to_vec(&spec).unwrap(),
                            }),
                            snapshotter: "overlayfs".into(),
                            snapshot_key: id.into(),
                            ..Default::default()
                        }),
                    },
                ))
                .await
                .unwrap();
            // The container holds the snapshot now.
            let delete = DeleteRequest {
                id: lease.clone(),
                sync: false,
            };
            leases
                .delete(request(&self.ns, None, delete))
                .await
                .unwrap();
        });
    }

    /// `ctr tasks start` of a created container (ctr waits and exits with
    /// its status), then removes the container and its snapshot.
    pub fn start_created(&self, id: &str) -> Output {
        let out = self.ctr(&["tasks", "start", id]);
        self.ok(&["containers", "rm", id]);
        out
    }

    /// An image with busybox-static as /bin/busybox, /bin/sh and friends.
    pub fn import_busybox(&self) -> String {
        let reference = "docker.io/wisp-test/busybox:latest".to_string();
        let tar = self.dir.path().join("busybox.tar");
        linux_image(&reference, &tar, &busybox_entries(), &["/bin/sh"]);
        self.import(&tar);
        reference
    }

    /// Kills and removes every task and container left in the namespace.
    pub fn clean(&self) {
        let tasks = String::from_utf8_lossy(&self.ctr(&["tasks", "ls", "-q"]).stdout).into_owned();
        for t in tasks.lines().filter(|l| !l.is_empty()) {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", t]);
            let _ = self.ctr(&["tasks", "delete", "-f", t]);
        }
        let containers =
            String::from_utf8_lossy(&self.ctr(&["containers", "ls", "-q"]).stdout).into_owned();
        for c in containers.lines().filter(|l| !l.is_empty()) {
            let _ = self.ctr(&["containers", "rm", c]);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.clean();
        self.stop_daemon();
        // ctr's cgroupsPath is /<namespace>/<id>: the namespace level is
        // created on the way (by runc or the shim) and left, empty, as runc
        // leaves it. It is this test's, so remove it.
        if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in controllers.flatten() {
                let _ = std::fs::remove_dir(c.path().join(&self.ns));
            }
        }
        // Unmount anything containerd left under the work dir (snapshots).
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let dir = self.dir.path().to_string_lossy().into_owned();
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if m.starts_with(&dir) {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// A network namespace of the test's own, with `lo` up; removed on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> Self {
        let name = format!("wisp-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        let ok = Command::new("ip")
            .args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(ok.success());
        Self { name }
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// An HTTP GET from inside the namespace; None until something listens.
    pub fn get(&self, port: u16, path: &str) -> Option<String> {
        let ns = self.path();
        let path = path.to_string();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            use std::io::Read;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        })
        .join()
        .unwrap()
    }

    /// Polls until the app answers.
    pub fn wait_get(&self, port: u16, path: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = self.get(port, path) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on {port} in {}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Parses `ctr task ls` into (status) for `id`.
pub fn task_status(c: &Containerd, id: &str) -> Option<String> {
    let out = c.ok(&["tasks", "ls"]);
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2).map(String::from))
}

/// Parses `ctr task ls` into the pid of `id`.
pub fn task_pid(c: &Containerd, id: &str) -> Option<u32> {
    let out = c.ok(&["tasks", "ls"]);
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Waits until `ctr task ls` shows `status` for `id`.
pub fn wait_status(c: &Containerd, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while task_status(c, id).as_deref() != Some(status) {
        assert!(
            Instant::now() < deadline,
            "task {id} is {:?}, not {status}",
            task_status(c, id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
