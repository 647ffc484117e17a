use super::*;
use crate::os::creds::cap_number;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxNamespaceBuilder, LinuxSeccompBuilder, ProcessBuilder,
    SpecBuilder,
};

fn spec(linux: LinuxBuilder, terminal: bool) -> Spec {
    SpecBuilder::default()
        .process(
            ProcessBuilder::default()
                .args(vec!["/pause".to_string()])
                .terminal(terminal)
                .build()
                .unwrap(),
        )
        .linux(linux.build().unwrap())
        .build()
        .unwrap()
}

fn ns(typ: LinuxNamespaceType, path: Option<&str>) -> oci_spec::runtime::LinuxNamespace {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p);
    }
    b.build().unwrap()
}

#[test]
fn what_goes_to_runc() {
    let cri_like = || {
        LinuxBuilder::default().namespaces(vec![
            ns(LinuxNamespaceType::Network, Some("/run/netns/x")),
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Ipc, None),
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Mount, None),
        ])
    };
    assert_eq!(unsupported(&spec(cri_like(), false)), None);
    assert_eq!(unsupported(&spec(cri_like(), true)), Some("a terminal"));
    let seccomp = LinuxSeccompBuilder::default().build().unwrap();
    assert_eq!(
        unsupported(&spec(cri_like().seccomp(seccomp), false)),
        Some("a seccomp profile")
    );
    let device = oci_spec::runtime::LinuxDeviceBuilder::default()
        .path("/dev/fuse")
        .typ(oci_spec::runtime::LinuxDeviceType::C)
        .major(10)
        .minor(229)
        .build()
        .unwrap();
    assert_eq!(
        unsupported(&spec(cri_like().devices(vec![device]), false)),
        Some("devices")
    );
    let userns = LinuxBuilder::default().namespaces(vec![ns(LinuxNamespaceType::User, None)]);
    assert_eq!(unsupported(&spec(userns, false)), Some("a user namespace"));
    let join_pid = LinuxBuilder::default()
        .namespaces(vec![ns(LinuxNamespaceType::Pid, Some("/proc/1/ns/pid"))]);
    assert_eq!(
        unsupported(&spec(join_pid, false)),
        Some("joining a mount or pid namespace")
    );
}

#[test]
fn capability_numbers_are_the_kernels() {
    assert_eq!(cap_number(Capability::Chown), 0);
    assert_eq!(cap_number(Capability::NetBindService), 10);
    assert_eq!(cap_number(Capability::SysAdmin), 21);
    assert_eq!(cap_number(Capability::CheckpointRestore), 40);
}

/// containerd's default capability set (what CRI gives a pod's sandbox).
const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// The sandbox spec CRI makes from upstream's pause image (`USER
/// 65535:65535`): new pid, ipc, uts and mount namespaces, the default
/// capabilities, that user.
fn non_root_sandbox() -> Spec {
    use oci_spec::runtime::{LinuxCapabilitiesBuilder, UserBuilder};
    let caps: std::collections::HashSet<_> = DEFAULT_CAPS.iter().copied().collect();
    let process = ProcessBuilder::default()
        .args(vec!["/pause".to_string()])
        .user(
            UserBuilder::default()
                .uid(65535u32)
                .gid(65535u32)
                .additional_gids(vec![65535u32])
                .build()
                .unwrap(),
        )
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(std::collections::HashSet::new())
                .ambient(std::collections::HashSet::new())
                .build()
                .unwrap(),
        )
        .no_new_privileges(true)
        .build()
        .unwrap();
    let linux = LinuxBuilder::default().namespaces(vec![
        ns(LinuxNamespaceType::Pid, None),
        ns(LinuxNamespaceType::Ipc, None),
        ns(LinuxNamespaceType::Uts, None),
        ns(LinuxNamespaceType::Mount, None),
    ]);
    SpecBuilder::default()
        .process(process)
        .linux(linux.build().unwrap())
        .build()
        .unwrap()
}

fn status(pid: u32) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Kills every child of this process (a sandbox child that hung).
fn kill_children() {
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace().filter_map(|p| p.parse().ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
}

/// Upstream's pause image runs as 65535:65535. 500 sandboxes of that user
/// are spawned while other threads of this process are being created and
/// joined, as the shim's threads are. Every one of them must come up with
/// the ids, groups and capabilities runc gives that spec, and none may hang.
/// (The child used glibc's setgroups/setgid/setuid, which wait on threads
/// that a cloned child does not have; and it dropped the bounding set after
/// the switch to 65535, which fails with EPERM.)
#[test]
fn non_root_sandboxes_start_while_threads_come_and_go() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: spawning a sandbox needs root");
        return;
    }
    let rootfs = tempfile::tempdir().unwrap();
    let pause = rootfs.path().join("pause");
    std::fs::write(&pause, b"").unwrap();
    std::fs::set_permissions(&pause, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cgroup =
        ContainerCgroup::create(&format!("/wisp-test-sandbox-{}", std::process::id())).unwrap();
    let spec = non_root_sandbox();
    let want_caps = format!(
        "{:016x}",
        DEFAULT_CAPS
            .iter()
            .fold(0u64, |m, c| m | 1 << cap_number(*c))
    );

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let churn: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::spawn(|| {}).join().unwrap();
                }
            })
        })
        .collect();
    let mut failure = None;
    std::thread::scope(|scope| {
        for i in 0..500 {
            let (tx, rx) = std::sync::mpsc::channel();
            let (spec, rootfs, cgroup) = (&spec, rootfs.path(), &cgroup);
            scope.spawn(move || {
                let _ = tx.send(spawn(spec, rootfs, cgroup, None, None));
            });
            let spawned = match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    failure = Some(format!("sandbox {i} failed: {e}"));
                    break;
                }
                Err(_) => {
                    kill_children();
                    failure = Some(format!("sandbox {i} hangs"));
                    break;
                }
            };
            let st = status(spawned.pid);
            let want = [
                ("Uid", "65535\t65535\t65535\t65535"),
                ("Gid", "65535\t65535\t65535\t65535"),
                ("Groups", "65535"),
                ("CapInh", "0000000000000000"),
                ("CapPrm", &want_caps),
                ("CapEff", &want_caps),
                ("CapBnd", &want_caps),
                ("CapAmb", "0000000000000000"),
                ("NoNewPrivs", "1"),
            ];
            for (field, value) in want {
                if st.get(field).map(String::as_str) != Some(value) {
                    failure = Some(format!(
                        "sandbox {i}: {field} is {:?}, not {value}",
                        st.get(field)
                    ));
                }
            }
            // EOF on control: the child exits without its exec.
            let pid = spawned.pid;
            drop(spawned);
            nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
            if failure.is_some() {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    for t in churn {
        t.join().unwrap();
    }
    cgroup.delete().unwrap();
    if let Some(f) = failure {
        panic!("{f}");
    }
}
