use super::*;

/// A container spec shaped as containerd's CRI plugin writes one for a pod
/// with the `restricted` profile.
fn restricted() -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 1000, "gid": 3000, "additionalGids": [2000]},
            "args": ["/app.wasm"],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": [], "inheritable": []},
            "noNewPrivileges": true,
            "oomScoreAdj": 1000,
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}]
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/data", "type": "bind", "source": "/var/lib/kubelet/x",
             "options": ["rbind", "rprivate", "ro"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "ipc", "path": "/proc/7/ns/ipc"},
                {"type": "uts", "path": "/proc/7/ns/uts"}, {"type": "mount"},
                {"type": "network", "path": "/var/run/netns/cni-1"}
            ],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
            "sysctl": {"net.ipv4.ip_unprivileged_port_start": "0"},
            "seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
                        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}
        }
    })
}

fn spec(v: serde_json::Value) -> Spec {
    serde_json::from_value(v).unwrap()
}

#[test]
fn a_restricted_pod_is_confined_as_it_asks() {
    let c = for_init(&spec(restricted()), Path::new("/b/rootfs"), false).unwrap();
    assert_eq!(c.creds.uid, 1000);
    assert_eq!(c.creds.gid, 3000);
    assert_eq!(c.creds.groups, vec![2000]);
    assert_eq!(c.creds.caps, Some(Caps::default()));
    assert!(c.no_new_privs);
    assert_eq!(c.oom_score_adj, Some(1000));
    assert_eq!(c.rlimits, vec![(libc::RLIMIT_NOFILE as i32, 512, 1024)]);
    assert_eq!(c.pid, PidNs::New);
    assert!(c.seccomp.is_some());
    let root = c.root.unwrap();
    assert!(root.readonly);
    assert!(!root.new_uts && !root.new_ipc, "joined by path");
    assert_eq!(root.masked, vec!["/proc/kcore"]);
    assert_eq!(
        root.sysctls,
        vec![(
            "/proc/sys/net/ipv4/ip_unprivileged_port_start".to_string(),
            "0".to_string()
        )]
    );
    let data = &root.mounts[2];
    assert_eq!(data.kind, "bind");
    assert_eq!(
        data.flags,
        libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY,
        "rbind and ro"
    );
    assert_eq!(data.propagation, libc::MS_PRIVATE | libc::MS_REC);
    let dev = &root.mounts[1];
    assert_eq!(dev.data, "mode=755,size=65536k");
    assert_eq!(dev.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
}

#[test]
fn what_cannot_be_honoured_fails_naming_the_field() {
    let refused = |patch: &dyn Fn(&mut serde_json::Value)| {
        let mut v = restricted();
        patch(&mut v);
        for_init(&spec(v), Path::new("/b/rootfs"), false)
            .unwrap_err()
            .field
    };
    assert_eq!(
        refused(&|v| v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}))),
        "linux.namespaces[user]"
    );
    assert_eq!(
        refused(&|v| v["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0".into()),
        "process.selinuxLabel"
    );
    assert_eq!(
        refused(&|v| v["process"]["apparmorProfile"] = "cri-containerd.apparmor.d".into()),
        "process.apparmorProfile"
    );
    assert_eq!(
        refused(&|v| v["linux"]["devices"] = serde_json::json!(
            [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]
        )),
        "linux.devices"
    );
    assert_eq!(
        refused(&|v| v["linux"]["seccomp"]["syscalls"][0]["action"] = "SCMP_ACT_NOTIFY".into()),
        "linux.seccomp"
    );
    assert_eq!(
        refused(&|v| v["mounts"][2]["options"] = serde_json::json!(["rbind", "idmap"])),
        "mounts[2]"
    );
    // The default devices are made anyway; listing them is fine.
    let mut v = restricted();
    v["linux"]["devices"] =
        serde_json::json!([{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}]);
    assert!(for_init(&spec(v), Path::new("/r"), false).is_ok());
    // An AppArmor profile on a host that enforces AppArmor is applied.
    let mut v = restricted();
    v["process"]["apparmorProfile"] = "cri-containerd.apparmor.d".into();
    let c = for_init(&spec(v), Path::new("/r"), true).unwrap();
    assert_eq!(c.apparmor.as_deref(), Some("cri-containerd.apparmor.d"));
}

#[test]
fn an_exec_joins_its_init_and_keeps_the_containers_seccomp() {
    let init = for_init(&spec(restricted()), Path::new("/r"), false).unwrap();
    let process: Process = serde_json::from_value(serde_json::json!({
        "user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/tmp",
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                         "permitted": ["CAP_KILL"]}
    }))
    .unwrap();
    let exec = for_exec(&init, &process, 42, false).unwrap();
    assert!(exec.root.is_none());
    assert_eq!(exec.pid, PidNs::Join("/proc/42/ns/pid".into()));
    assert_eq!(
        exec.join_late,
        vec![
            PathBuf::from("/proc/42/ns/mnt"),
            "/proc/42/ns/cgroup".into()
        ]
    );
    assert_eq!(exec.seccomp, init.seccomp);
    assert_eq!(exec.creds.uid, 0);
    assert_eq!(exec.creds.caps.unwrap().effective, 1 << 5);
    assert!(!exec.no_new_privs);
    assert_eq!(exec.cwd, "/tmp");
}
