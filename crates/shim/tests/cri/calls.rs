//! The CRI calls the tests make: pods, containers, logs, stats, and what
//! is left on the host.

use super::*;

impl Cri {
    /// The PodSandboxConfig kubelet sends for a pod `name` (cgroupfs driver,
    /// pod-wide network and ipc, a pid namespace per container).
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let uid = format!("{name}-uid-{n}");
        let log_directory = self.dir.path().join("logs").join(&uid);
        std::fs::create_dir_all(&log_directory).unwrap();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.clone(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), name.into()),
                ("io.kubernetes.pod.namespace".into(), "default".into()),
                ("io.kubernetes.pod.uid".into(), uid.clone()),
            ]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/pod{uid}", self.cgroup_root),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(kubelet_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox with `handler`, then the pod's IP from its status.
    pub fn run_pod(&self, name: &str, handler: &str) -> Pod {
        self.run_pod_with(self.pod_config(name), handler)
    }

    pub fn run_pod_with(&self, config: PodSandboxConfig, handler: &str) -> Pod {
        let name = config
            .metadata
            .as_ref()
            .map_or("", |m| m.name.as_str())
            .to_string();
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        let id = self
            .call(async |mut rs| rs.run_pod_sandbox(req).await)
            .unwrap_or_else(|e| panic!("RunPodSandbox {name} ({handler}): {e}\n{}", self.log()))
            .pod_sandbox_id;
        let ip = self.pod_ip(&id);
        Pod { id, config, ip }
    }

    pub fn pod_status(&self, id: &str) -> PodSandboxStatus {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        self.call(async |mut rs| rs.pod_sandbox_status(req).await)
            .unwrap()
            .status
            .expect("a pod status")
    }

    /// The pid of a pod's sandbox process (PodSandboxStatus, verbose).
    pub fn sandbox_pid(&self, id: &str) -> u32 {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        };
        let info = self
            .call(async |mut rs| rs.pod_sandbox_status(req).await)
            .unwrap()
            .info;
        let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        v["pid"].as_u64().expect("the sandbox's pid") as u32
    }

    pub fn pod_ip(&self, id: &str) -> String {
        self.pod_status(id)
            .network
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .expect("the pod has an IP")
    }

    /// CreateContainer in `pod`; returns the container id.
    #[track_caller]
    pub fn create(&self, pod: &Pod, config: ContainerConfig) -> String {
        self.try_create(pod, config)
            .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
    }

    pub fn try_create(&self, pod: &Pod, config: ContainerConfig) -> Result<String, tonic::Status> {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        self.call(async |mut rs| rs.create_container(req).await)
            .map(|r| r.container_id)
    }

    #[track_caller]
    pub fn start_container(&self, id: &str) {
        if let Err(e) = self.try_start_container(id) {
            panic!("StartContainer {id}: {e}");
        }
    }

    /// StartContainer, which creates the task (the shim's Create).
    pub fn try_start_container(&self, id: &str) -> Result<(), tonic::Status> {
        let req = StartContainerRequest {
            container_id: id.into(),
        };
        self.call(async |mut rs| rs.start_container(req).await)
            .map(drop)
    }

    /// CreateContainer + StartContainer.
    #[track_caller]
    pub fn run(&self, pod: &Pod, config: ContainerConfig) -> String {
        let id = self.create(pod, config);
        self.start_container(&id);
        id
    }

    pub fn status(&self, id: &str) -> ContainerStatus {
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.call(async |mut rs| rs.container_status(req).await)
            .unwrap()
            .status
            .expect("a container status")
    }

    /// Polls ContainerStatus until the container has exited.
    #[track_caller]
    pub fn wait_exited(&self, id: &str) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status(id);
            if s.state == ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(Instant::now() < deadline, "{id} did not exit: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> ExecSyncResponse {
        let req = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        self.call(async |mut rs| rs.exec_sync(req).await)
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"))
    }

    /// ListContainers of a sandbox.
    pub fn containers(&self, pod: &str) -> Vec<Container> {
        let req = ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.into(),
                ..Default::default()
            }),
        };
        self.call(async |mut rs| rs.list_containers(req).await)
            .unwrap()
            .containers
    }

    pub fn stop_container(&self, id: &str, grace_secs: i64) {
        let req = StopContainerRequest {
            container_id: id.into(),
            timeout: grace_secs,
        };
        self.call(async |mut rs| rs.stop_container(req).await)
            .unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
    }

    /// UpdateContainerResources, as kubelet sends it for an in-place resize.
    pub fn update_resources(&self, id: &str, linux: LinuxContainerResources) {
        let req = UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(linux),
            ..Default::default()
        };
        self.call(async |mut rs| rs.update_container_resources(req).await)
            .unwrap_or_else(|e| panic!("UpdateContainerResources {id}: {e}"));
    }

    pub fn remove_container(&self, id: &str) {
        let req = RemoveContainerRequest {
            container_id: id.into(),
        };
        self.call(async |mut rs| rs.remove_container(req).await)
            .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
    }

    pub fn stats(&self, id: &str) -> ContainerStats {
        let req = ContainerStatsRequest {
            container_id: id.into(),
        };
        self.call(async |mut rs| rs.container_stats(req).await)
            .unwrap_or_else(|e| panic!("ContainerStats {id}: {e}"))
            .stats
            .expect("stats")
    }

    pub fn list_stats(&self, pod: &Pod) -> Vec<ContainerStats> {
        let req = ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            }),
        };
        self.call(async |mut rs| rs.list_container_stats(req).await)
            .unwrap()
            .stats
    }

    /// StopPodSandbox + RemovePodSandbox.
    pub fn remove_pod(&self, id: &str) {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call(async |mut rs| rs.stop_pod_sandbox(req).await)
            .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}\n{}", self.log()));
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call(async |mut rs| rs.remove_pod_sandbox(req).await)
            .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}\n{}", self.log()));
    }

    /// The CRI log file of a container, as `(stream, tag, text)` per line.
    pub fn log_lines(&self, pod: &Pod, container: &ContainerConfig) -> Vec<LogLine> {
        let path = Path::new(&pod.config.log_directory).join(&container.log_path);
        parse_cri_log(&std::fs::read_to_string(&path).unwrap_or_default())
    }

    /// The log once it holds `n` lines (or what it holds after 10 s).
    /// containerd writes the file from a goroutine of its own that may still
    /// hold the last lines when the container is reported exited (its IO
    /// wait covers the FIFO copy, not the log writer): a full CI run read an
    /// empty log right after a one-line exit once.
    pub fn log_lines_at_least(
        &self,
        pod: &Pod,
        container: &ContainerConfig,
        n: usize,
    ) -> Vec<LogLine> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.log_lines(pod, container);
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything of this instance's pods still present in cgroupfs, below
    /// the pod level (container cgroups; pod cgroups are kubelet's).
    pub fn container_cgroups(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for controller in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let root = controller.path().join(&self.cgroup_root);
            for pod in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                for c in std::fs::read_dir(pod.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if c.path().is_dir() {
                        found.push(c.path());
                    }
                }
            }
        }
        found
    }

    /// Mounts under this instance's work dir (rootfs, netns, shm).
    /// Ids of the pod sandboxes containerd has (the cluster tier's check
    /// that kubelet removed every pod).
    #[allow(dead_code)]
    pub fn list_pods(&self) -> Vec<String> {
        self.call(async |mut rs| rs.list_pod_sandbox(ListPodSandboxRequest::default()).await)
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    pub fn mounts(&self) -> Vec<String> {
        let dir = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&dir))
            .map(String::from)
            .collect()
    }

    /// Shim processes (wisp or runc) serving this containerd.
    pub fn shims(&self) -> Vec<u32> {
        let address = self.address().to_string_lossy().into_owned();
        let mut pids = processes_matching("containerd-shim-wisp-v1", &address);
        pids.extend(processes_matching("containerd-shim-wisp-node-v1", &address));
        pids.extend(processes_matching("containerd-shim-runc-v2", &address));
        pids
    }
}
