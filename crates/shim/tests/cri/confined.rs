//! Issue 22: a Wasm pod is never less confined than the runc pod it
//! replaces. A pod with the `restricted` Pod Security Standard's settings,
//! its Wasm app under wisp beside a busybox sidecar under runc in the same
//! pod: the process running guest code has what runc gives the sidecar.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use wisp_test_guests as guests;

use crate::sandbox::{IDENTITY, status_field};
use crate::support::{Cri, WISP, container, env, wait_ready};

/// The container securityContext of the `restricted` profile, as kubelet
/// sends it: uid 1000, gid 3000, the pod's fsGroup 2000 as a supplemental
/// group, every capability dropped, RuntimeDefault seccomp, no privilege
/// escalation, a read-only root.
fn restricted(config: &mut ContainerConfig) {
    let sc = config
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap();
    sc.run_as_user = Some(Int64Value { value: 1000 });
    sc.run_as_group = Some(Int64Value { value: 3000 });
    sc.supplemental_groups = vec![2000];
    sc.capabilities = Some(Capability {
        drop_capabilities: vec!["ALL".into()],
        ..Default::default()
    });
    sc.seccomp = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    sc.no_new_privs = true;
    sc.readonly_rootfs = true;
}

/// An emptyDir as kubelet makes one for fsGroup 2000 (group-owned, setgid,
/// writable), mounted at `/data`.
fn fs_group_volume() -> (tempfile::TempDir, Mount) {
    let volume = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(volume.path(), Some(0), Some(2000)).unwrap();
    std::fs::set_permissions(volume.path(), std::fs::Permissions::from_mode(0o2777)).unwrap();
    let mount = Mount {
        container_path: "/data".into(),
        host_path: volume.path().to_string_lossy().into_owned(),
        ..Default::default()
    };
    (volume, mount)
}

/// The one process in a container's cgroups.
fn container_pid(cri: &Cri, id: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut pids: Vec<u32> = cri
            .container_cgroups()
            .into_iter()
            .filter(|p| p.ends_with(id))
            .flat_map(|p| {
                std::fs::read_to_string(p.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        if let [pid] = pids[..] {
            return pid;
        }
        assert!(Instant::now() < deadline, "processes of {id}: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_restricted_wasm_pod_is_confined_as_its_runc_sidecar() {
    let cri = Cri::start();
    let app = cri.import_wasm_app(
        "web",
        &guests::http_echo(),
        &[("echo.wasm", &guests::echo())],
    );
    let busybox = cri.import_busybox();
    let mut pod_config = cri.pod_config("restricted");
    pod_config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    // A namespaced sysctl, which containerd writes into every container's
    // spec too (containerd 2 adds this one to every pod): set in the pod's
    // netns before /proc/sys becomes read-only.
    pod_config.linux.as_mut().unwrap().sysctls = [(
        "net.ipv4.ip_unprivileged_port_start".to_string(),
        "80".to_string(),
    )]
    .into();
    let pod = cri.run_pod_with(pod_config, WISP);

    let (volume, data) = fs_group_volume();

    let mut web = container("app", &app);
    env(&mut web, &[("PORT", "8080")]);
    web.mounts.push(data.clone());
    restricted(&mut web);
    let web_id = cri.run(&pod, web);
    assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from wisp\n");

    let mut sidecar = container("sidecar", &busybox);
    sidecar.command = vec!["/bin/sleep".into(), "3600".into()];
    sidecar.mounts.push(data);
    restricted(&mut sidecar);
    let sidecar_id = cri.run(&pod, sidecar);

    let wasm = container_pid(&cri, &web_id);
    let runc = container_pid(&cri, &sidecar_id);
    // runc's process is the sleep once it has exec'd.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_link(format!("/proc/{runc}/exe")).is_ok_and(|e| e.ends_with("busybox")) {
        assert!(Instant::now() < deadline, "the sidecar never ran busybox");
        std::thread::sleep(Duration::from_millis(10));
    }
    for field in IDENTITY {
        assert_eq!(
            status_field(wasm, field),
            status_field(runc, field),
            "{field} of the Wasm process {wasm} and the runc process {runc}"
        );
    }
    assert_eq!(status_field(wasm, "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(status_field(wasm, "CapEff"), "0000000000000000");
    assert_eq!(status_field(wasm, "NoNewPrivs"), "1");
    assert_eq!(status_field(wasm, "Seccomp"), "2");
    // Every thread, the serving ones included.
    for task in std::fs::read_dir(format!("/proc/{wasm}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
        assert!(status.contains("Seccomp:\t2"), "{status}");
    }
    for ns in ["mnt", "pid"] {
        let own = std::fs::read_link(format!("/proc/{wasm}/ns/{ns}")).unwrap();
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(own, host, "{ns} namespace");
    }
    let resolv = std::fs::read_to_string(format!("/proc/{wasm}/root/etc/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");

    // A file a guest creates in the emptyDir belongs to the pod's user and
    // fsGroup; the read-only root takes nothing.
    let r = cri.exec_sync(
        &web_id,
        &["/tools/echo.wasm", "write", "/data/by-wasm.txt", "x"],
    );
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    let md = std::fs::metadata(volume.path().join("by-wasm.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 2000));
    let r = cri.exec_sync(&web_id, &["/tools/echo.wasm", "write", "/new.txt", "x"]);
    assert_ne!(r.exit_code, 0, "wrote into a read-only root");
    cri.remove_pod(&pod.id);
}

/// A spec field the shim cannot honour fails the task's Create naming it.
#[test]
fn a_field_a_wasm_container_cannot_honour_fails_create_naming_it() {
    let cri = Cri::start();
    let app = cri.import_wasm_app("web", &guests::http_echo(), &[]);
    let pod = cri.run_pod("devices", WISP);
    let mut web = container("app", &app);
    web.devices.push(Device {
        container_path: "/dev/host-null".into(),
        host_path: "/dev/null".into(),
        permissions: "rwm".into(),
    });
    // CreateContainer only records it; the task (the shim's Create) is made
    // at StartContainer.
    let id = cri.create(&pod, web);
    let err = cri.try_start_container(&id).unwrap_err();
    assert!(
        err.message().contains("linux.devices") && err.message().contains("/dev/host-null"),
        "{}",
        err.message()
    );
    cri.remove_pod(&pod.id);
}

/// In node mode the app runs in the node process (not yet confined: issue
/// 22, item 3), but an exec is a process of its own: it gets the
/// container's root, mounts, user and groups as in per-pod mode.
#[test]
fn a_node_mode_exec_runs_as_the_pods_user() {
    let cri = Cri::start();
    let app = cri.import_wasm_app(
        "web",
        &guests::http_echo(),
        &[("echo.wasm", &guests::echo())],
    );
    let pod = cri.run_pod("restricted-node", crate::support::WISP_NODE);
    let (volume, data) = fs_group_volume();
    let mut web = container("app", &app);
    env(&mut web, &[("PORT", "8080")]);
    web.mounts.push(data);
    restricted(&mut web);
    let id = cri.run(&pod, web);
    assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from wisp\n");
    let r = cri.exec_sync(
        &id,
        &["/tools/echo.wasm", "write", "/data/by-exec.txt", "x"],
    );
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    let md = std::fs::metadata(volume.path().join("by-exec.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 2000));
    cri.remove_pod(&pod.id);
}
