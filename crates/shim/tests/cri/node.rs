//! Node mode (handler `wisp-node`): one shim process serves the Wasm HTTP
//! apps of every pod, each still behaving like a pod.

use std::time::{Duration, Instant};

use wisp_test_guests as guests;

use crate::support::{Cri, WISP_NODE, container, env, http_get, processes_matching, wait_ready};

/// The long-lived shim daemons of this containerd (not `start`/`delete`).
fn daemons(cri: &Cri) -> Vec<u32> {
    let address = cri.address().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<u32> = processes_matching("containerd-shim-wisp", &address)
            .into_iter()
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<_> = cmdline.split(|b| *b == 0).collect();
                !args.iter().any(|a| *a == b"start" || *a == b"delete")
            })
            .collect();
        if pids.len() <= 1 || Instant::now() > deadline {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn node_mode_serves_three_pods_of_two_apps_from_one_process() {
    let cri = Cri::start();
    let echo = cri.import_wasm_app(
        "echo-app",
        &guests::http_echo(),
        &[("echo.wasm", &guests::echo())],
    );
    let hello = cri.import_wasm_app("hello-app", &guests::http_hello(), &[]);
    let pods: Vec<_> = [("a", &echo), ("b", &echo), ("c", &hello)]
        .into_iter()
        .map(|(name, image)| {
            let pod = cri.run_pod(name, WISP_NODE);
            let mut config = container("app", image);
            env(&mut config, &[("PORT", "8080"), ("POD", name)]);
            let id = cri.run(&pod, config.clone());
            (pod, id, config)
        })
        .collect();
    for (pod, _, _) in &pods {
        assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from wisp\n");
    }
    let (a, b, c) = (&pods[0], &pods[1], &pods[2]);

    // One process serves them all, and the apps are not processes: their
    // containers' cgroups hold nothing; the pause containers are the
    // daemon's children.
    let node = daemons(&cri);
    assert_eq!(node.len(), 1, "shim daemons: {node:?}");
    for (pod, _, _) in &pods {
        let pause = cri.sandbox_pid(&pod.id);
        let status = std::fs::read_to_string(format!("/proc/{pause}/status")).unwrap();
        assert!(
            status.contains(&format!("PPid:\t{}\n", node[0])),
            "{status}"
        );
    }
    // (In cpu and cpuacct the app's serving thread is there: cgroup.procs
    // then names the node process.)
    for cg in cri.container_cgroups() {
        let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
        let procs = procs.trim();
        let is_sandbox = pods.iter().any(|(p, _, _)| cg.ends_with(&p.id));
        assert!(
            is_sandbox || procs.is_empty() || procs == node[0].to_string(),
            "{}: {procs}",
            cg.display()
        );
    }

    // Per-pod env, and logs in each pod's own log file.
    for (pod, _, _) in [a, b] {
        let name = &pod.config.metadata.as_ref().unwrap().name;
        assert_eq!(
            http_get(&pod.ip, 8080, "/env?name=POD"),
            Some((200, name.clone()))
        );
        assert_eq!(
            http_get(&pod.ip, 8080, &format!("/log?n=3&tag={name}")),
            Some((200, "logged 3\n".into()))
        );
    }
    for (pod, _, config) in [a, b] {
        let name = &pod.config.metadata.as_ref().unwrap().name;
        let lines = cri.log_lines_at_least(pod, config, 6);
        let mut texts: Vec<_> = lines
            .iter()
            .map(|l| (l.stream.as_str(), l.text.as_str()))
            .collect();
        texts.sort();
        let mut want: Vec<(&str, String)> = (0..3)
            .flat_map(|i| {
                [
                    ("stderr", format!("{name} err {i}")),
                    ("stdout", format!("{name} out {i}")),
                ]
            })
            .collect();
        want.sort();
        let want: Vec<(&str, &str)> = want.iter().map(|(s, t)| (*s, t.as_str())).collect();
        assert_eq!(texts, want, "pod {name}'s log");
    }

    // Exec runs a WASI command in the pod's context.
    let r = cri.exec_sync(&a.1, &["/tools/echo.wasm", "env", "POD"]);
    assert_eq!((r.exit_code, &r.stdout[..]), (0, &b"POD=a\n"[..]));

    // Per-pod stats: pod a did work, pod c only answered probes.
    for _ in 0..200 {
        http_get(&a.0.ip, 8080, "/log?n=20&tag=busy").unwrap();
    }
    let cpu = |id: &str| {
        cri.stats(id)
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map_or(0, |v| v.value)
    };
    let (cpu_a, cpu_c) = (cpu(&a.1), cpu(&c.1));
    assert!(cpu_a > 0 && cpu_c > 0, "cpu a {cpu_a}, c {cpu_c}");
    assert!(cpu_a > 2 * cpu_c, "cpu a {cpu_a} vs c {cpu_c}");

    // A graceful stop of one pod's app: 143, the others keep serving.
    let ip = b.0.ip.clone();
    let slow = std::thread::spawn(move || http_get(&ip, 8080, "/sleep?ms=800"));
    std::thread::sleep(Duration::from_millis(200));
    cri.stop_container(&b.1, 30);
    assert_eq!(slow.join().unwrap(), Some((200, "slept 800\n".into())));
    assert_eq!(cri.status(&b.1).exit_code, 143);
    assert_eq!(http_get(&b.0.ip, 8080, "/"), None);
    cri.remove_pod(&b.0.id);
    for (pod, _, _) in [a, c] {
        assert_eq!(
            http_get(&pod.ip, 8080, "/"),
            Some((200, "hello from wisp\n".into()))
        );
    }
    assert_eq!(daemons(&cri), node, "the node process is the same");

    // The last pods gone, the node process exits; nothing is left.
    cri.remove_pod(&a.0.id);
    cri.remove_pod(&c.0.id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cri.shims().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cri.shims(), Vec::<u32>::new());
    assert_eq!(cri.mounts(), Vec::<String>::new());
    assert!(cri.container_cgroups().is_empty());
}

#[test]
fn a_hostile_pod_in_node_mode_does_not_disturb_its_neighbour() {
    let cri = Cri::start();
    let echo = cri.import_wasm_app("echo-app", &guests::http_echo(), &[]);
    let healthy = cri.run_pod("healthy", WISP_NODE);
    let mut config = container("app", &echo);
    env(&mut config, &[("PORT", "8080")]);
    cri.run(&healthy, config.clone());
    let hostile = cri.run_pod("hostile", WISP_NODE);
    // The spec's memory limit caps each of the hostile app's instances.
    config
        .linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .memory_limit_in_bytes = 64 << 20;
    // And the spec's CPU limit (half a core) holds its app thread.
    let resources = config.linux.as_mut().unwrap().resources.as_mut().unwrap();
    resources.cpu_period = 100_000;
    resources.cpu_quota = 50_000;
    // And its request deadline stops the loops, freeing their instances.
    env(&mut config, &[("WISP_REQUEST_TIMEOUT", "2s")]);
    let hostile_id = cri.run(&hostile, config);
    assert_eq!(wait_ready(&healthy.ip, 8080, "/"), "hello from wisp\n");
    assert_eq!(wait_ready(&hostile.ip, 8080, "/"), "hello from wisp\n");
    assert_eq!(daemons(&cri).len(), 1);

    // Infinite loops, memory bombs and traps, all at once and repeatedly.
    let ip = hostile.ip.clone();
    let attack = std::thread::spawn(move || {
        let loops: Vec<_> = (0..2)
            .map(|_| {
                let ip = ip.clone();
                std::thread::spawn(move || http_get(&ip, 8080, "/loop"))
            })
            .collect();
        let mut failures = 0;
        for _ in 0..10 {
            for path in ["/bomb", "/trap"] {
                if let Some((500, _)) = http_get(&ip, 8080, path) {
                    failures += 1;
                }
            }
        }
        (failures, loops)
    });
    // Meanwhile every request to the healthy pod succeeds.
    let started = Instant::now();
    let mut served = 0;
    while !attack.is_finished() || served < 200 {
        assert_eq!(
            http_get(&healthy.ip, 8080, "/"),
            Some((200, "hello from wisp\n".into()))
        );
        served += 1;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the attack never ended"
        );
    }
    let (failures, loops) = attack.join().unwrap();
    assert_eq!(failures, 20, "every bomb and trap answers 500");
    let cpu_cgroup = cri
        .container_cgroups()
        .into_iter()
        .find(|c| c.ends_with(&hostile_id) && c.starts_with("/sys/fs/cgroup/cpu/"))
        .expect("the hostile container's cpu cgroup");
    let read = |f: &str| std::fs::read_to_string(cpu_cgroup.join(f)).unwrap();
    assert_eq!(read("cpu.cfs_quota_us").trim(), "50000");
    assert!(
        !read("tasks").trim().is_empty(),
        "the app thread is in the cgroup"
    );
    let throttled: u64 = read("cpu.stat")
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        throttled > 0,
        "the looping app was throttled: {}",
        read("cpu.stat")
    );
    let stats = cri.stats(&hostile_id);
    let hostile_cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .unwrap()
        .value;
    assert!(hostile_cpu > 0);

    // The loops were stopped at the deadline (504), and the hostile app,
    // its instances returned, serves again; its stop drains at once.
    for l in loops {
        assert_eq!(
            l.join().unwrap(),
            Some((504, "request timed out\n".into())),
            "the looping request hit its deadline"
        );
    }
    assert_eq!(
        http_get(&hostile.ip, 8080, "/"),
        Some((200, "hello from wisp\n".into()))
    );
    cri.stop_container(&hostile_id, 10);
    assert_eq!(cri.status(&hostile_id).exit_code, 143);
    assert_eq!(
        http_get(&healthy.ip, 8080, "/"),
        Some((200, "hello from wisp\n".into()))
    );
    eprintln!("healthy requests served during the attack: {served}");
}

/// The node process's threads serving the container `id` (named
/// `wisp-app-` and the id's start, cut to the kernel's 15 characters), with
/// their CPU time so far in ns (`schedstat`).
fn app_threads(node: u32, id: &str) -> Vec<(u32, u64)> {
    let comm = format!("wisp-app-{}", &id[..6]);
    std::fs::read_dir(format!("/proc/{node}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|tid| {
            std::fs::read_to_string(format!("/proc/{node}/task/{tid}/comm"))
                .is_ok_and(|c| c.trim() == comm)
        })
        .map(|tid| {
            let ns = std::fs::read_to_string(format!("/proc/{node}/task/{tid}/schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            (tid, ns)
        })
        .collect()
}

/// An app in node mode is served by a thread per CPU of its limit (one
/// without a limit): every one of them serves, and every one is in the
/// container's CPU cgroup.
#[test]
fn a_node_mode_app_is_served_by_a_thread_per_cpu_of_its_limit() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let want = cpus.min(2);
    let cri = Cri::start();
    let echo = cri.import_wasm_app("echo-app", &guests::http_echo(), &[]);
    let wide_pod = cri.run_pod("wide", WISP_NODE);
    let mut wide = container("app", &echo);
    env(&mut wide, &[("PORT", "8080")]);
    let resources = wide.linux.as_mut().unwrap().resources.as_mut().unwrap();
    resources.cpu_period = 100_000;
    resources.cpu_quota = 150_000;
    let wide_id = cri.run(&wide_pod, wide);
    let narrow_pod = cri.run_pod("narrow", WISP_NODE);
    let mut narrow = container("app", &echo);
    env(&mut narrow, &[("PORT", "8080")]);
    let narrow_id = cri.run(&narrow_pod, narrow);
    assert_eq!(wait_ready(&wide_pod.ip, 8080, "/"), "hello from wisp\n");
    assert_eq!(wait_ready(&narrow_pod.ip, 8080, "/"), "hello from wisp\n");
    let node = daemons(&cri)[0];

    assert_eq!(app_threads(node, &narrow_id).len(), 1, "no limit");
    let before = app_threads(node, &wide_id);
    assert_eq!(before.len(), want, "a 1.5-CPU limit on {cpus} CPUs");
    // Connections are spread over the threads' listeners by their addresses;
    // with 100 of them, each thread gets some.
    for _ in 0..100 {
        assert_eq!(http_get(&wide_pod.ip, 8080, "/").map(|r| r.0), Some(200));
    }
    let after = app_threads(node, &wide_id);
    for (tid, ns) in &before {
        let now = after
            .iter()
            .find(|(t, _)| t == tid)
            .expect("thread still there")
            .1;
        assert!(
            now - ns >= 1_000_000,
            "thread {tid} ran {} µs for 100 requests: {before:?} -> {after:?}",
            (now - ns) / 1000
        );
        let cgroups = std::fs::read_to_string(format!("/proc/{node}/task/{tid}/cgroup")).unwrap();
        let cpu = cgroups
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == "cpu"))
            })
            .unwrap_or_default();
        assert!(cpu.ends_with(&wide_id), "thread {tid}: {cpu}");
    }
    cri.remove_pod(&wide_pod.id);
    cri.remove_pod(&narrow_pod.id);
    assert!(
        app_threads(node, &wide_id).is_empty(),
        "threads gone with the pod"
    );
}

#[test]
fn update_in_node_mode_sets_the_apps_cpu_limit_and_instance_memory_cap() {
    let cri = Cri::start();
    let echo = cri.import_wasm_app("echo-app", &guests::http_echo(), &[]);
    let pod = cri.run_pod("resized", WISP_NODE);
    let mut config = container("app", &echo);
    env(&mut config, &[("PORT", "8080")]);
    let resources = config.linux.as_mut().unwrap().resources.as_mut().unwrap();
    resources.memory_limit_in_bytes = 128 << 20;
    let id = cri.run(&pod, config);
    assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from wisp\n");
    let alloc = |mib: u32| http_get(&pod.ip, 8080, &format!("/alloc?mib={mib}")).map(|r| r.0);
    assert_eq!(alloc(48), Some(200), "48 MiB fit under 128 MiB");

    // An in-place resize, as kubelet sends it.
    cri.update_resources(
        &id,
        k8s_cri::v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 20_000,
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        },
    );
    assert_eq!(alloc(48), Some(500), "48 MiB no longer fit under 32 MiB");
    assert_eq!(alloc(8), Some(200));
    let cpu_cgroup = cri
        .container_cgroups()
        .into_iter()
        .find(|c| c.ends_with(&id) && c.starts_with("/sys/fs/cgroup/cpu/"))
        .expect("the container's cpu cgroup");
    let quota = std::fs::read_to_string(cpu_cgroup.join("cpu.cfs_quota_us")).unwrap();
    assert_eq!(quota.trim(), "20000");
    // The node process itself was not limited.
    let node = daemons(&cri)[0];
    let own = std::fs::read_to_string(format!("/proc/{node}/cgroup")).unwrap();
    assert!(!own.contains(&id), "{own}");
}

#[test]
fn when_the_node_process_dies_every_task_it_hosted_exits_and_new_pods_start_afresh() {
    let cri = Cri::start();
    let hello = cri.import_wasm_app("hello-app", &guests::http_hello(), &[]);
    let pods: Vec<_> = ["x", "y"]
        .into_iter()
        .map(|name| {
            let pod = cri.run_pod(name, WISP_NODE);
            let mut config = container("app", &hello);
            env(&mut config, &[("PORT", "8080")]);
            let id = cri.run(&pod, config);
            wait_ready(&pod.ip, 8080, "/");
            (pod, id)
        })
        .collect();
    let node = daemons(&cri);
    assert_eq!(node.len(), 1);
    let pauses: Vec<u32> = pods.iter().map(|(p, _)| cri.sandbox_pid(&p.id)).collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node[0] as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();

    // containerd sees every task exit: no container hangs as running.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (_, id) in &pods {
        let s = cri.wait_exited(id);
        assert_ne!(s.exit_code, 0, "{s:?}");
    }
    // Nor does any pause process outlive it.
    for pid in pauses {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                Instant::now() < deadline,
                "pause {pid} outlived the node process"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for (pod, _) in &pods {
        cri.remove_pod(&pod.id);
    }

    // The next pod starts a fresh node process, which serves.
    let pod = cri.run_pod("z", WISP_NODE);
    let mut config = container("app", &hello);
    env(&mut config, &[("PORT", "8080")]);
    cri.run(&pod, config);
    assert_eq!(wait_ready(&pod.ip, 8080, "/"), "hello from wisp\n");
    let fresh = daemons(&cri);
    assert_eq!(fresh.len(), 1);
    assert_ne!(fresh, node);
}
