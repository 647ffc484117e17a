//! The pod sandbox of a wisp pod is made by the shim itself (no runc): the
//! image's /pause, pid 1 of its own pid namespace, in the pod's network,
//! uts and ipc namespaces that the other containers join, in its cgroup,
//! with the spec's capabilities and the pod's sysctls.

use wisp_test_guests as guests;

use crate::support::{
    Cri, RUNC, WISP, WISP_NODE, container, env, processes_matching, share_pids, wait_ready,
};

pub fn status_field(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

#[test]
fn the_shim_makes_the_pod_sandbox_that_every_container_joins() {
    let cri = Cri::start();
    let app = cri.import_wasm_app("web", &guests::http_echo(), &[]);
    let busybox = cri.import_busybox();
    // A pod sharing one pid namespace (shareProcessNamespace: true).
    let mut config = cri.pod_config("shared");
    share_pids(Some(&mut config), None);
    // Namespaced sysctls, which the sandbox sets inside the pod's net and
    // ipc namespaces.
    config.linux.as_mut().unwrap().sysctls = [
        ("net.ipv4.ip_unprivileged_port_start", "80"),
        ("kernel.shmmni", "1234"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let pod = cri.run_pod_with(config, WISP);
    let pid = cri.sandbox_pid(&pod.id);

    // The image's /pause, a child of the wisp shim: no runc in between.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.ends_with("pause"), "{}", exe.display());
    let parent: u32 = status_field(pid, "PPid").parse().unwrap();
    let shims = processes_matching("containerd-shim-wisp-v1", &cri.address().to_string_lossy());
    assert!(shims.contains(&parent), "parent {parent}, shims {shims:?}");
    // pid 1 of a pid namespace of its own.
    let nspid = status_field(pid, "NSpid");
    assert_eq!(nspid, format!("{pid}\t1"));
    // The default capability set containerd's spec gives, no more.
    assert_eq!(status_field(pid, "CapBnd"), "00000000a80425fb");
    // In the sandbox's cgroup under the pod's parent.
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory = cgroups.lines().find(|l| l.contains(":memory:")).unwrap();
    assert!(
        memory.ends_with(&format!(
            "/{}/pod{}/{}",
            cri.cgroup_root,
            pod.config.metadata.as_ref().unwrap().uid,
            pod.id
        )),
        "{memory}"
    );
    // Its root is the pause image's rootfs.
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(root, ["pause"]);

    // The containers join its namespaces: the sidecar sees the pod's
    // hostname and the pause as pid 1, the Wasm app serves on the pod IP.
    let mut wasm = container("app", &app);
    env(&mut wasm, &[("PORT", "8080")]);
    cri.run(&pod, wasm);
    let mut sidecar = container("sidecar", &busybox);
    sidecar.command = ["/bin/sleep", "3600"].map(String::from).to_vec();
    share_pids(None, Some(&mut sidecar));
    let sidecar_id = cri.run(&pod, sidecar);
    assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from wisp\n");
    let r = cri.exec_sync(&sidecar_id, &["/bin/hostname"]);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "shared\n");
    let r = cri.exec_sync(&sidecar_id, &["/bin/cat", "/proc/1/cmdline"]);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "/pause\0");
    for (file, want) in [
        ("/proc/sys/net/ipv4/ip_unprivileged_port_start", "80\n"),
        ("/proc/sys/kernel/shmmni", "1234\n"),
    ] {
        let r = cri.exec_sync(&sidecar_id, &["/bin/cat", file]);
        assert_eq!(String::from_utf8_lossy(&r.stdout), want, "{file}");
    }
    for ns in ["net", "uts", "ipc", "pid"] {
        let sandbox = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(sandbox, host, "{ns} namespace is the host's");
    }

    // StopPodSandbox: SIGTERM makes the pause exit 0 and takes the pod down.
    cri.remove_pod(&pod.id);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn a_sandbox_asking_for_seccomp_goes_to_runc_which_applies_it() {
    let cri = Cri::start();
    let app = cri.import_wasm_app("web", &guests::http_echo(), &[]);
    let mut config = cri.pod_config("confined");
    config
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .seccomp = Some(k8s_cri::v1::SecurityProfile {
        profile_type: k8s_cri::v1::security_profile::ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    let pod = cri.run_pod_with(config, WISP);
    let pid = cri.sandbox_pid(&pod.id);
    // Mode 2: a seccomp filter is installed, which only runc does here.
    assert_eq!(status_field(pid, "Seccomp"), "2");
    let mut wasm = container("app", &app);
    env(&mut wasm, &[("PORT", "8080")]);
    cri.run(&pod, wasm);
    assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from wisp\n");
    cri.remove_pod(&pod.id);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// The fields of /proc/PID/status that say who a process is and what it may.
pub const IDENTITY: &[&str] = &[
    "Uid",
    "Gid",
    "Groups",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
];

/// Read once the process is the pause: `runc start` returns before its
/// init's exec, and a non-root process loses its capabilities at exec.
fn identity(pid: u32) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.ends_with("pause")) {
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} never ran /pause"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    IDENTITY
        .iter()
        .map(|f| (f.to_string(), status_field(pid, f)))
        .collect()
}

/// The sandbox image says `User: 65535:65535`, as upstream's pause does; a
/// pod's securityContext may name another user (root included) and groups.
/// Whatever the user, the wisp handlers' sandbox process has the ids,
/// groups and capabilities runc gives the same pod.
#[test]
fn sandboxes_get_the_ids_groups_and_capabilities_runc_gives() {
    ids_groups_and_capabilities_are_runcs(&Cri::start());
}

pub fn ids_groups_and_capabilities_are_runcs(cri: &Cri) {
    // (uid, gid, supplemental groups) of the pod's securityContext.
    type RunAs = Option<(i64, i64, Vec<i64>)>;
    let cases: [(&str, RunAs); 3] = [
        ("image-user", None),
        ("run-as-1000", Some((1000, 3000, vec![4000, 5000]))),
        ("run-as-root", Some((0, 0, vec![]))),
    ];
    for (name, user) in cases {
        let mut seen = Vec::new();
        for handler in [RUNC, WISP, WISP_NODE] {
            let mut config = cri.pod_config(name);
            if let Some((uid, gid, groups)) = &user {
                let ctx = config
                    .linux
                    .as_mut()
                    .unwrap()
                    .security_context
                    .as_mut()
                    .unwrap();
                ctx.run_as_user = Some(k8s_cri::v1::Int64Value { value: *uid });
                ctx.run_as_group = Some(k8s_cri::v1::Int64Value { value: *gid });
                ctx.supplemental_groups = groups.clone();
            }
            let pod = cri.run_pod_with(config, handler);
            let pid = cri.sandbox_pid(&pod.id);
            seen.push((handler, identity(pid)));
            cri.remove_pod(&pod.id);
        }
        let (_, runc) = &seen[0];
        let uid = &runc[0].1;
        match &user {
            None => assert_eq!(uid, "65535\t65535\t65535\t65535", "{name}: {runc:?}"),
            Some((u, ..)) => assert!(uid.starts_with(&format!("{u}\t")), "{name}: {runc:?}"),
        }
        for (handler, got) in &seen[1..] {
            assert_eq!(got, runc, "{name}: {handler} differs from runc");
        }
    }
}

/// Upstream's pause user, 500 times on the wisp handler: every RunPodSandbox
/// succeeds and none hangs (about 1 in 100 hung in the cloned child's glibc
/// setuid, and every one failed to drop its bounding set after the switch).
#[test]
fn five_hundred_non_root_sandboxes_start_and_none_hangs() {
    let cri = Cri::start();
    let limit = std::time::Duration::from_secs(60);
    let started = std::time::Instant::now();
    for i in 0..500 {
        let handler = if i % 2 == 0 { WISP } else { WISP_NODE };
        let req = k8s_cri::v1::RunPodSandboxRequest {
            config: Some(cri.pod_config(&format!("many-{i}"))),
            runtime_handler: handler.into(),
        };
        let id = cri
            .call_within(limit, async |mut rs| rs.run_pod_sandbox(req).await)
            .unwrap_or_else(|e| panic!("RunPodSandbox {i} ({handler}): {e}\n{}", cri.log()))
            .pod_sandbox_id;
        let pid = cri.sandbox_pid(&id);
        assert_eq!(status_field(pid, "Uid"), "65535\t65535\t65535\t65535");
        cri.remove_pod(&id);
    }
    eprintln!(
        "500 sandboxes started and removed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
