//! What confines a Wasm container's process, read from the OCI spec as runc
//! reads it: its mount namespace with the rootfs and the spec's mounts, its
//! pid, uts, ipc and cgroup namespaces, its user and groups, the five
//! capability sets, no_new_privs, the seccomp profile, AppArmor, rlimits,
//! oom_score_adj, masked and read-only paths and sysctls.
//!
//! A field this runtime cannot honour fails Create naming it: a Wasm
//! container never runs less confined than its spec asks. The container
//! process applies the result (`backend/confine.rs`).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};
use serde::{Deserialize, Serialize};

use crate::os::creds::{Caps, Creds, rlimit_resource};
use crate::os::seccomp::{self, Filter};

/// Why a spec cannot be confined as it asks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct Refused {
    pub field: String,
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> Refused {
    Refused {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The pid namespace the process is created in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PidNs {
    /// The spec names no pid namespace: the host's (`hostPID`).
    #[default]
    Host,
    /// A new one, the process its pid 1.
    New,
    /// This one (a pod's shared namespace, an exec's init's).
    Join(PathBuf),
}

/// One of the spec's mounts, ready for mount(2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountStep {
    pub destination: String,
    /// The filesystem type; `bind` for a bind mount whatever the spec said.
    pub kind: String,
    pub source: String,
    /// MS_* flags, propagation excluded.
    pub flags: u64,
    /// MS_SHARED, MS_SLAVE, MS_PRIVATE or MS_UNBINDABLE (with MS_REC), or 0.
    pub propagation: u64,
    /// Options mount(2) takes as data (`mode=755`, `size=65536k`).
    pub data: String,
}

/// The container's own root: set up in a fresh mount namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    pub rootfs: PathBuf,
    pub readonly: bool,
    /// The propagation of `/` once set up (`linux.rootfsPropagation`).
    pub propagation: u64,
    pub mounts: Vec<MountStep>,
    pub masked: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// Set in a UTS namespace of the container's own.
    pub hostname: Option<String>,
    /// (`/proc/sys/...` path, value).
    pub sysctls: Vec<(String, String)>,
    pub new_uts: bool,
    pub new_ipc: bool,
    pub new_cgroup: bool,
}

/// Everything that confines one process (a container's init or an exec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// An init's own root; `None` for an exec, which joins its init's
    /// namespaces (`join_late`).
    pub root: Option<Root>,
    /// Namespaces joined once the app is loaded (an exec's init's mount and
    /// cgroup namespaces: the module and the cache are host paths).
    pub join_late: Vec<PathBuf>,
    pub pid: PidNs,
    pub creds: Creds,
    pub no_new_privs: bool,
    /// (resource, soft, hard).
    pub rlimits: Vec<(i32, u64, u64)>,
    pub oom_score_adj: Option<i32>,
    pub seccomp: Option<Filter>,
    pub apparmor: Option<String>,
    pub cwd: String,
}

/// The devices every container's `/dev` has (runc's default set): the
/// process's `/dev`, when the spec mounts a tmpfs there, gets these, bound
/// from the host's.
pub const DEFAULT_DEVICES: [(&str, i64, i64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Whether this host enforces AppArmor.
pub fn host_has_apparmor() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
}

/// The process-level part, shared by an init and an exec.
fn process_part(process: &Process, apparmor_on_host: bool) -> Result<Confinement, Refused> {
    if process
        .selinux_label()
        .as_ref()
        .is_some_and(|l| !l.is_empty())
    {
        return Err(refuse(
            "process.selinuxLabel",
            "SELinux labels are not supported for Wasm containers",
        ));
    }
    let apparmor = process
        .apparmor_profile()
        .clone()
        .filter(|p| !p.is_empty() && p != "unconfined");
    if apparmor.is_some() && !apparmor_on_host {
        return Err(refuse(
            "process.apparmorProfile",
            "AppArmor is not enabled on this host",
        ));
    }
    if process.io_priority().is_some() {
        return Err(refuse("process.ioPriority", "not supported"));
    }
    if process.scheduler().is_some() {
        return Err(refuse("process.scheduler", "not supported"));
    }
    let user = process.user();
    let cwd = process.cwd().to_string_lossy().into_owned();
    Ok(Confinement {
        root: None,
        join_late: Vec::new(),
        pid: PidNs::Host,
        creds: Creds {
            uid: user.uid(),
            gid: user.gid(),
            groups: user.additional_gids().clone().unwrap_or_default(),
            caps: process.capabilities().as_ref().map(Caps::from_spec),
        },
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        rlimits: process
            .rlimits()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|r| (rlimit_resource(r.typ()), r.soft(), r.hard()))
            .collect(),
        oom_score_adj: process.oom_score_adj(),
        seccomp: None,
        apparmor,
        cwd: if cwd.is_empty() { "/".into() } else { cwd },
    })
}

/// The confinement of a Wasm container's init process.
pub fn for_init(
    spec: &Spec,
    rootfs: &Path,
    apparmor_on_host: bool,
) -> Result<Confinement, Refused> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| refuse("process", "missing"))?;
    let mut c = process_part(process, apparmor_on_host)?;
    let mut root = Root {
        rootfs: rootfs.to_path_buf(),
        readonly: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        propagation: 0,
        mounts: Vec::new(),
        masked: Vec::new(),
        readonly_paths: Vec::new(),
        hostname: None,
        sysctls: Vec::new(),
        new_uts: false,
        new_ipc: false,
        new_cgroup: false,
    };
    for (i, m) in spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        root.mounts
            .push(mount_step(m).map_err(|r| refuse(format!("mounts[{i}]"), r))?);
    }
    if let Some(linux) = spec.linux() {
        let set = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|v: &Vec<_>| !v.is_empty());
        if set(linux.uid_mappings()) || set(linux.gid_mappings()) {
            return Err(refuse(
                "linux.uidMappings",
                "user namespaces are not supported for Wasm containers",
            ));
        }
        for d in linux.devices().as_deref().unwrap_or_default() {
            let path = d.path().to_string_lossy();
            if !DEFAULT_DEVICES.contains(&(&*path, d.major(), d.minor())) {
                return Err(refuse(
                    "linux.devices",
                    format!(
                        "`{path}`: only the default devices ({}) are made in a Wasm container",
                        DEFAULT_DEVICES.map(|d| d.0).join(", ")
                    ),
                ));
            }
        }
        if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(refuse(
                "linux.mountLabel",
                "SELinux labels are not supported",
            ));
        }
        if linux.intel_rdt().is_some() {
            return Err(refuse("linux.intelRdt", "not supported"));
        }
        if linux.personality().is_some() {
            return Err(refuse("linux.personality", "not supported"));
        }
        if linux.time_offsets().as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(refuse("linux.timeOffsets", "not supported"));
        }
        for ns in linux.namespaces().as_deref().unwrap_or_default() {
            let path = ns.path().as_ref().filter(|p| !p.as_os_str().is_empty());
            let field = || format!("linux.namespaces[{}]", ns_name(ns.typ()));
            match (ns.typ(), path) {
                (LinuxNamespaceType::User, _) => {
                    return Err(refuse(
                        field(),
                        "user namespaces are not supported for Wasm containers",
                    ));
                }
                (LinuxNamespaceType::Time, _) => {
                    return Err(refuse(field(), "time namespaces are not supported"));
                }
                (LinuxNamespaceType::Mount, Some(_)) | (LinuxNamespaceType::Cgroup, Some(_)) => {
                    return Err(refuse(field(), "joining one by path is not supported"));
                }
                (LinuxNamespaceType::Pid, Some(p)) => c.pid = PidNs::Join(p.clone()),
                (LinuxNamespaceType::Pid, None) => c.pid = PidNs::New,
                (LinuxNamespaceType::Uts, None) => root.new_uts = true,
                (LinuxNamespaceType::Ipc, None) => root.new_ipc = true,
                (LinuxNamespaceType::Cgroup, None) => root.new_cgroup = true,
                // Network, and uts and ipc by path: joined with the plan's
                // `join`, before anything else.
                _ => {}
            }
        }
        if root.new_uts {
            root.hostname = spec.hostname().clone().filter(|h| !h.is_empty());
        }
        if let Some(p) = linux
            .rootfs_propagation()
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            root.propagation = propagation(p)
                .ok_or_else(|| refuse("linux.rootfsPropagation", format!("unknown `{p}`")))?;
        }
        root.masked = linux.masked_paths().clone().unwrap_or_default();
        root.readonly_paths = linux.readonly_paths().clone().unwrap_or_default();
        let mut sysctls: Vec<_> = linux
            .sysctl()
            .iter()
            .flatten()
            .map(|(k, v)| (format!("/proc/sys/{}", k.replace('.', "/")), v.clone()))
            .collect();
        sysctls.sort();
        root.sysctls = sysctls;
        if let Some(profile) = linux.seccomp() {
            c.seccomp = Some(seccomp::compile(profile).map_err(|e| {
                let text = e.to_string();
                let (field, reason) = text.split_once(": ").unwrap_or(("linux.seccomp", &text));
                refuse(field, reason)
            })?);
        }
    }
    c.root = Some(root);
    Ok(c)
}

/// The confinement of an exec in a container whose init has `init`: the
/// exec's own user, capabilities, no_new_privs, AppArmor, rlimits and cwd;
/// the container's seccomp profile (runc applies the config's to execs);
/// the init's namespaces.
pub fn for_exec(
    init: &Confinement,
    process: &Process,
    init_pid: u32,
    apparmor_on_host: bool,
) -> Result<Confinement, Refused> {
    let mut c = process_part(process, apparmor_on_host)?;
    c.seccomp = init.seccomp.clone();
    c.pid = match init.pid {
        PidNs::Host => PidNs::Host,
        _ => PidNs::Join(format!("/proc/{init_pid}/ns/pid").into()),
    };
    c.join_late = ["mnt", "cgroup"]
        .iter()
        .map(|ns| PathBuf::from(format!("/proc/{init_pid}/ns/{ns}")))
        .collect();
    Ok(c)
}

fn ns_name(t: LinuxNamespaceType) -> &'static str {
    use LinuxNamespaceType as T;
    match t {
        T::Mount => "mount",
        T::Cgroup => "cgroup",
        T::Uts => "uts",
        T::Ipc => "ipc",
        T::User => "user",
        T::Pid => "pid",
        T::Network => "network",
        T::Time => "time",
    }
}

fn propagation(option: &str) -> Option<u64> {
    let rec = libc::MS_REC;
    Some(match option {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | rec,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | rec,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | rec,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | rec,
        _ => return None,
    })
}

/// A spec mount as mount(2) takes it, options mapped as runc maps them.
fn mount_step(m: &Mount) -> Result<MountStep, String> {
    let mut flags = 0u64;
    let mut prop = 0u64;
    let mut data = Vec::new();
    let mut bind = m.typ().as_deref() == Some("bind");
    for o in m.options().as_deref().unwrap_or_default() {
        let (set, clear) = match o.as_str() {
            "bind" => {
                bind = true;
                (libc::MS_BIND, 0)
            }
            "rbind" => {
                bind = true;
                (libc::MS_BIND | libc::MS_REC, 0)
            }
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "remount" => return Err("the `remount` option is not supported".into()),
            other => {
                if let Some(p) = propagation(other) {
                    prop = p;
                } else if other.starts_with("idmap") || other.starts_with("ridmap") {
                    return Err(format!("the `{other}` option is not supported"));
                } else {
                    data.push(other.to_string());
                }
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    let destination = m.destination().to_string_lossy().into_owned();
    if !destination.starts_with('/') {
        return Err(format!("destination `{destination}` is not absolute"));
    }
    let source = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = if bind {
        "bind".to_string()
    } else {
        m.typ().clone().unwrap_or_default()
    };
    if kind.is_empty() {
        return Err(format!("`{destination}` has no type"));
    }
    Ok(MountStep {
        destination,
        kind,
        source,
        flags,
        propagation: prop,
        data: data.join(","),
    })
}

#[cfg(test)]
mod tests;
