//! cgroups of Wasm containers (runc manages those of Linux containers).
//!
//! The container process is placed in the spec's `cgroupsPath` in every
//! controller, the spec's resources are applied to it, and the cgroup is
//! removed on Delete. cgroup v1 (including the hybrid layout of these
//! machines) and v2 are handled by `cgroups-rs`.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use cgroups_rs::freezer::FreezerController;
use cgroups_rs::{Cgroup, CgroupPid, Hierarchy, MaxValue, Subsystem, hierarchies};
use oci_spec::runtime::LinuxResources;

/// The cgroup hierarchies of this machine, found once per process.
///
/// `hierarchies::auto()` parses the mount table on every call, 0.2 to 0.3 ms
/// in a young daemon, and a container's Create, resources and Delete each
/// needed it. Controllers are mounted at boot and stay where they are.
fn hierarchy() -> Box<dyn Hierarchy> {
    // `None`: the unified (v2) hierarchy.
    static V1: OnceLock<Option<hierarchies::V1>> = OnceLock::new();
    let v1 =
        V1.get_or_init(|| (!hierarchies::is_cgroup2_unified_mode()).then(hierarchies::V1::new));
    match v1 {
        Some(v1) => Box::new(v1.clone()),
        None => Box::new(hierarchies::V2::new()),
    }
}

/// Finds the hierarchies now, so the first Create does not wait for it.
pub fn prepare() {
    drop(hierarchy());
}

/// Where a container's cgroup is, from the spec's `cgroupsPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPlace {
    /// The path below each hierarchy's root.
    pub path: String,
    /// `cgroupsPath` was in the systemd driver's form (`slice:prefix:name`).
    pub systemd: bool,
}

/// The cgroup path for a container: the spec's `cgroupsPath`, or
/// `/wisp/<namespace>/<id>` when it has none. The systemd driver's form
/// `slice:prefix:name` is placed where runc's systemd driver puts it: the
/// slice expanded into its parents (`a-b.slice` is `/a.slice/a-b.slice`),
/// then `prefix-name.scope` (or `name` when it is itself a `.slice`).
pub fn container_path(
    spec_path: Option<&str>,
    namespace: &str,
    id: &str,
) -> Result<CgroupPlace, String> {
    let fs = |path: String| CgroupPlace {
        path,
        systemd: false,
    };
    match spec_path.filter(|p| !p.is_empty()) {
        Some(p) if !p.starts_with('/') && p.split(':').count() == 3 => {
            let parts: Vec<&str> = p.split(':').collect();
            let slice = if parts[0].is_empty() {
                "system.slice"
            } else {
                parts[0]
            };
            let parent = expand_slice(slice).map_err(|e| format!("cgroupsPath `{p}`: {e}"))?;
            let unit = if parts[2].ends_with(".slice") {
                // A slice of its own: its path is its expansion.
                return Ok(CgroupPlace {
                    path: expand_slice(parts[2]).map_err(|e| format!("cgroupsPath `{p}`: {e}"))?,
                    systemd: true,
                });
            } else if parts[1].is_empty() {
                format!("{}.scope", parts[2])
            } else {
                format!("{}-{}.scope", parts[1], parts[2])
            };
            Ok(CgroupPlace {
                path: format!("{}/{unit}", parent.trim_end_matches('/')),
                systemd: true,
            })
        }
        Some(p) => Ok(fs(format!("/{}", p.trim_start_matches('/')))),
        None => Ok(fs(format!("/wisp/{namespace}/{id}"))),
    }
}

/// runc's `ExpandSlice`: `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice`;
/// `-.slice` is the root.
pub fn expand_slice(slice: &str) -> Result<String, String> {
    let Some(name) = slice.strip_suffix(".slice") else {
        return Err(format!("`{slice}` is not a slice (no .slice suffix)"));
    };
    if slice.contains('/') {
        return Err(format!("`{slice}` contains a /"));
    }
    if name == "-" {
        return Ok("/".into());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if part.is_empty() {
            return Err(format!("`{slice}` has an empty component"));
        }
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// Whether systemd manages this node (sd_booted(3)'s test).
pub fn systemd_running() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// A container's cgroup.
#[derive(Debug)]
pub struct ContainerCgroup {
    path: String,
    cg: Cgroup,
}

impl ContainerCgroup {
    /// Creates the cgroup (in every v1 controller, or the v2 unified tree).
    pub fn create(path: &str) -> io::Result<Self> {
        let rel = path.trim_start_matches('/');
        let cg = Cgroup::new(hierarchy(), rel)
            .map_err(|e| io::Error::other(format!("failed to create cgroup {path}: {e}")))?;
        Ok(Self {
            path: path.into(),
            cg,
        })
    }

    /// Loads an existing cgroup (cleanup after a shim restart).
    pub fn load(path: &str) -> Self {
        Self {
            path: path.into(),
            cg: Cgroup::load(hierarchy(), path.trim_start_matches('/')),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The per-controller `tasks` files of a v1 cgroup, `None` on v2.
    ///
    /// A process that writes `0` to `tasks` moves its calling thread, and
    /// the kernel takes no global lock for that; writing a pid to
    /// `cgroup.procs` (what [`Self::add`] does) write-locks
    /// `cgroup_threadgroup_rwsem`, which waits for an RCU grace period when
    /// no migration ran just before: 13 ms on these machines, a tenth of a
    /// whole `ctr run`. So a freshly forked, single-threaded container
    /// process moves itself (see `process::spawn_wasm`).
    pub fn thread_files(&self) -> Option<Vec<std::path::PathBuf>> {
        if self.cg.v2() {
            return None;
        }
        Some(
            self.cg
                .subsystems()
                .iter()
                .map(|s| s.to_controller().path().join("tasks"))
                .collect(),
        )
    }

    /// The cgroup's directory in the memory hierarchy (the unified one on
    /// v2), where its OOM kills are counted.
    pub fn memory_dir(&self) -> Option<std::path::PathBuf> {
        self.cg
            .subsystems()
            .iter()
            .find(|s| matches!(s, Subsystem::Mem(_)))
            .map(|s| s.to_controller().path().to_path_buf())
    }

    pub fn add(&self, pid: u32) -> io::Result<()> {
        self.cg
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|e| io::Error::other(format!("failed to join cgroup {}: {e}", self.path)))
    }

    /// Pids of the processes in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.cg.procs().into_iter().map(|p| p.pid as u32).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Applies a spec's resources (pids, memory, cpuset, CPU as
    /// [`Self::apply_cpu`], huge pages) to the cgroup, as the shim crate's
    /// `update_resources` does for the cgroup of a pid, without finding the hierarchies and the process's cgroup
    /// again: Create applies them before the container process exists.
    pub fn apply(&self, resources: &LinuxResources) -> io::Result<()> {
        let fail = |what: &str, e: cgroups_rs::error::Error| {
            io::Error::other(format!("failed to {what} of {}: {e}", self.path))
        };
        for subsystem in self.cg.subsystems() {
            match subsystem {
                Subsystem::Pid(ctl) => {
                    if let Some(pids) = resources.pids() {
                        ctl.set_pid_max(MaxValue::Value(pids.limit()))
                            .map_err(|e| fail("set the pid limit", e))?;
                    }
                }
                Subsystem::Mem(ctl) => {
                    let Some(memory) = resources.memory() else {
                        continue;
                    };
                    // Swap (memory plus swap) can never be below the limit:
                    // raising both raises swap first.
                    if let (Some(limit), Some(swap)) = (memory.limit(), memory.swap())
                        && ctl.memory_stat().limit_in_bytes < swap
                    {
                        ctl.set_memswap_limit(swap)
                            .map_err(|e| fail("set the memory+swap limit", e))?;
                        ctl.set_limit(limit)
                            .map_err(|e| fail("set the memory limit", e))?;
                    }
                    if let Some(limit) = memory.limit() {
                        ctl.set_limit(limit)
                            .map_err(|e| fail("set the memory limit", e))?;
                    }
                    if let Some(swap) = memory.swap() {
                        ctl.set_memswap_limit(swap)
                            .map_err(|e| fail("set the memory+swap limit", e))?;
                    }
                }
                Subsystem::CpuSet(ctl) => {
                    let Some(cpu) = resources.cpu() else {
                        continue;
                    };
                    if let Some(cpus) = cpu.cpus() {
                        ctl.set_cpus(cpus).map_err(|e| fail("set the CPU set", e))?;
                    }
                    if let Some(mems) = cpu.mems() {
                        ctl.set_mems(mems)
                            .map_err(|e| fail("set the memory nodes", e))?;
                    }
                }
                Subsystem::Cpu(_) => self.apply_cpu(resources)?,
                Subsystem::HugeTlb(ctl) => {
                    for limit in resources.hugepage_limits().iter().flatten() {
                        ctl.set_limit_in_bytes(limit.page_size(), limit.limit() as u64)
                            .map_err(|e| fail("set a huge page limit", e))?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies the CPU part of `resources` to the cgroup itself (for node
    /// mode's app threads, which have no process of their own).
    pub fn apply_cpu(&self, resources: &oci_spec::runtime::LinuxResources) -> io::Result<()> {
        let Some(cpu) = resources.cpu() else {
            return Ok(());
        };
        let ctl = self
            .cg
            .subsystems()
            .iter()
            .find_map(|s| match s {
                Subsystem::Cpu(c) => Some(c),
                _ => None,
            })
            .ok_or_else(|| io::Error::other("no cpu controller for this cgroup"))?;
        let fail = |e| io::Error::other(format!("failed to set cpu limits of {}: {e}", self.path));
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            ctl.set_shares(shares).map_err(fail)?;
        }
        ctl.set_cfs_quota_and_period(
            cpu.quota().filter(|q| *q != 0),
            cpu.period().filter(|p| *p > 0),
        )
        .map_err(fail)
    }

    /// The `tasks` files of the CPU controllers (v1), for a thread to join:
    /// cgroup v1 places threads one by one in `cpu` and `cpuacct`, so an
    /// app thread of the node process gets the container's CPU limit and
    /// accounting. Empty on v2, where only whole processes join.
    pub fn cpu_thread_files(&self) -> Vec<std::path::PathBuf> {
        if self.cg.v2() {
            return Vec::new();
        }
        self.cg
            .subsystems()
            .iter()
            .filter(|s| matches!(s, Subsystem::Cpu(_) | Subsystem::CpuAcct(_)))
            .map(|s| s.to_controller().path().join("tasks"))
            .collect()
    }

    fn freezer(&self) -> io::Result<&FreezerController> {
        self.cg
            .subsystems()
            .iter()
            .find_map(|s| match s {
                Subsystem::Freezer(f) => Some(f),
                _ => None,
            })
            .ok_or_else(|| io::Error::other("no freezer controller for this cgroup"))
    }

    pub fn freeze(&self) -> io::Result<()> {
        self.freezer()?
            .freeze()
            .map_err(|e| io::Error::other(format!("failed to freeze {}: {e}", self.path)))
    }

    pub fn thaw(&self) -> io::Result<()> {
        self.freezer()?
            .thaw()
            .map_err(|e| io::Error::other(format!("failed to thaw {}: {e}", self.path)))
    }

    /// Removes the cgroup. Its processes have been reaped, but the kernel can
    /// take a moment to let go of the last one, so EBUSY is retried briefly.
    pub fn delete(&self) -> io::Result<()> {
        if !self.cg.exists() {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..50 {
            match self.cg.delete() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::other(format!(
            "failed to remove cgroup {}: {}",
            self.path,
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::{CgroupPlace, container_path, expand_slice};

    fn place(path: &str, systemd: bool) -> Result<CgroupPlace, String> {
        Ok(CgroupPlace {
            path: path.into(),
            systemd,
        })
    }

    #[test]
    fn paths() {
        assert_eq!(
            container_path(Some("/default/c1"), "default", "c1"),
            place("/default/c1", false)
        );
        assert_eq!(
            container_path(Some("kubepods/x/c1"), "k8s.io", "c1"),
            place("/kubepods/x/c1", false)
        );
        assert_eq!(
            container_path(None, "default", "c1"),
            place("/wisp/default/c1", false)
        );
    }

    /// runc's systemd driver's placement (libcontainer/cgroups/systemd:
    /// ExpandSlice and getUnitName), as kubelet's systemd driver names pods.
    #[test]
    fn systemd_paths_as_runc_expands_them() {
        assert_eq!(
            container_path(Some("system.slice:cri-containerd:c1"), "k8s.io", "c1"),
            place("/system.slice/cri-containerd-c1.scope", true)
        );
        assert_eq!(
            container_path(
                Some("kubepods-burstable-pod1a2b.slice:cri-containerd:c1"),
                "k8s.io",
                "c1"
            ),
            place(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b.slice/cri-containerd-c1.scope",
                true
            )
        );
        assert_eq!(
            container_path(Some(":cri-containerd:c1"), "k8s.io", "c1"),
            place("/system.slice/cri-containerd-c1.scope", true)
        );
        assert_eq!(
            container_path(Some("-.slice:docker:c1"), "k8s.io", "c1"),
            place("/docker-c1.scope", true)
        );
        assert_eq!(
            container_path(Some("kubepods.slice::pod.slice"), "k8s.io", "c1"),
            place("/pod.slice", true)
        );
        assert_eq!(
            expand_slice("a-b-c.slice").unwrap(),
            "/a.slice/a-b.slice/a-b-c.slice"
        );
        assert!(expand_slice("a--b.slice").is_err());
        assert!(expand_slice("a-b").is_err());
        assert!(expand_slice("a/b.slice").is_err());
        assert!(
            container_path(Some("nope:cri-containerd:c1"), "k8s.io", "c1")
                .unwrap_err()
                .contains("not a slice")
        );
    }
}
