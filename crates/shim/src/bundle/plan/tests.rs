use super::*;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, SpecBuilder,
};
use std::collections::HashMap;

fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::write(dir.path().join("bin/sh"), b"\x7fELF....").unwrap();
    std::fs::write(dir.path().join("bin/script"), b"#!/bin/sh\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    std::os::unix::fs::symlink("/app.wasm", dir.path().join("bin/app")).unwrap();
    std::os::unix::fs::symlink("../../../../etc/passwd", dir.path().join("escape")).unwrap();
    dir
}

fn spec(args: &[&str], env: &[&str]) -> Spec {
    let process = ProcessBuilder::default()
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .env(env.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .cwd("/")
        .build()
        .unwrap();
    SpecBuilder::default().process(process).build().unwrap()
}

#[test]
fn classifies_by_magic() {
    let r = rootfs();
    let wasm = classify(&spec(&["/app.wasm"], &[]), r.path()).unwrap();
    assert_eq!(wasm, Entrypoint::Wasm(r.path().join("app.wasm")));
    assert_eq!(
        classify(&spec(&["/bin/sh"], &[]), r.path()).unwrap(),
        Entrypoint::Linux
    );
    assert_eq!(
        classify(&spec(&["script"], &["PATH=/bin"]), r.path()).unwrap(),
        Entrypoint::Linux
    );
    // A symlink to the module is followed inside the rootfs.
    assert_eq!(
        classify(&spec(&["app"], &["PATH=/bin"]), r.path()).unwrap(),
        Entrypoint::Wasm(r.path().join("app.wasm"))
    );
    let err = classify(&spec(&["/notes.txt"], &[]), r.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("neither a Wasm module nor a Linux executable"),
        "{err}"
    );
    let err = classify(&spec(&["/missing.wasm"], &[]), r.path()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = classify(&spec(&[], &[]), r.path()).unwrap_err();
    assert!(matches!(err, PlanError::NoEntrypoint));
}

#[test]
fn symlinks_and_dotdot_stay_in_rootfs() {
    let r = rootfs();
    // `../../../../etc/passwd` from the rootfs root is `/etc/passwd` of the
    // rootfs, which does not exist there.
    assert!(matches!(
        resolve_in_rootfs(r.path(), "/escape", "/"),
        Err(PlanError::NotFound(_))
    ));
    assert_eq!(
        resolve_in_rootfs(r.path(), "../../app.wasm", "/bin").unwrap(),
        r.path().join("app.wasm")
    );
}

#[test]
fn sandbox_is_always_linux() {
    let r = rootfs();
    let mut s = spec(&["/pause"], &[]);
    s.set_annotations(Some(HashMap::from([(
        CONTAINER_TYPE_ANNOTATION.to_string(),
        "sandbox".to_string(),
    )])));
    assert_eq!(classify(&s, r.path()).unwrap(), Entrypoint::Linux);
}

#[test]
fn plan_from_spec() {
    let r = rootfs();
    let data = tempfile::tempdir().unwrap();
    let mut s = spec(&["/app.wasm", "a"], &["PORT=9000", "A=1", "A=2"]);
    s.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(true)
            .build()
            .unwrap(),
    ));
    s.set_mounts(Some(vec![
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source(data.path())
            .options(vec!["rbind".to_string(), "ro".to_string()])
            .build()
            .unwrap(),
        MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source("proc")
            .build()
            .unwrap(),
        MountBuilder::default()
            .destination("/etc/hosts")
            .typ("bind")
            .source(r.path().join("notes.txt"))
            .options(vec!["rbind".to_string()])
            .build()
            .unwrap(),
    ]));
    let linux = LinuxBuilder::default()
        .namespaces(vec![
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path("/var/run/netns/x")
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Uts)
                .build()
                .unwrap(),
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Mount)
                .build()
                .unwrap(),
        ])
        .resources(
            LinuxResourcesBuilder::default()
                .memory(
                    LinuxMemoryBuilder::default()
                        .limit(64 << 20)
                        .build()
                        .unwrap(),
                )
                .cpu(
                    LinuxCpuBuilder::default()
                        .quota(150_000)
                        .period(100_000u64)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    s.set_linux(Some(linux));
    let host = HostSettings {
        cache_dir: Some("/var/lib/wisp/cache".into()),
        cpus: 8,
    };
    let plan = wasm_plan("c1", &s, r.path(), r.path().join("app.wasm"), &host).unwrap();
    assert_eq!(plan.args, ["/app.wasm", "a"]);
    assert_eq!(plan.env.get("A").map(String::as_str), Some("2"));
    assert_eq!(plan.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(plan.max_memory, Some(64 << 20));
    assert_eq!(plan.threads, 2);
    assert!(plan.cpu_limited);
    assert_eq!(plan.join, [PathBuf::from("/var/run/netns/x")]);
    assert!(plan.unshare_uts && !plan.unshare_net && !plan.unshare_ipc);
    assert_eq!(
        plan.dirs,
        [
            Preopen {
                host: r.path().to_path_buf(),
                guest: "/".into(),
                read_only: true
            },
            Preopen {
                host: data.path().to_path_buf(),
                guest: "/data".into(),
                read_only: true
            },
        ]
    );
}

#[test]
fn listen_and_executor_from_env() {
    let r = rootfs();
    let host = HostSettings::default();
    let plan = |env: &[&str]| {
        wasm_plan(
            "c",
            &spec(&["/app.wasm"], env),
            r.path(),
            "/m".into(),
            &host,
        )
    };
    assert_eq!(plan(&[]).unwrap().listen, DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(
        plan(&["WISP_LISTEN=127.0.0.1:81", "PORT=9"])
            .unwrap()
            .listen,
        "127.0.0.1:81".parse().unwrap()
    );
    assert_eq!(
        plan(&["WISP_EXECUTOR=wagi"]).unwrap().executor,
        Executor::Http
    );
    let err = plan(&["PORT=http"]).unwrap_err().to_string();
    assert!(err.contains("invalid PORT `http`"), "{err}");
    let err = plan(&["WISP_EXECUTOR=fast"]).unwrap_err().to_string();
    assert!(err.contains("WISP_EXECUTOR"), "{err}");
    assert!(plan(&[]).unwrap().allow_outbound.is_empty());
    assert_eq!(plan(&[]).unwrap().request_timeout, DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(
        plan(&["WISP_REQUEST_TIMEOUT=1.5s"])
            .unwrap()
            .request_timeout
            .as_millis(),
        1500
    );
    assert_eq!(
        plan(&[]).unwrap().max_concurrent_requests,
        DEFAULT_MAX_CONCURRENT_REQUESTS
    );
    assert_eq!(
        plan(&["WISP_MAX_CONCURRENT_REQUESTS=5000"])
            .unwrap()
            .max_concurrent_requests,
        5000
    );
    // More than the instance pool's address space allows: refused at Create
    // (the app's server would fail to start), naming why.
    let err = plan(&["WISP_MAX_CONCURRENT_REQUESTS=100000"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("total-instances (100000)"), "{err}");
    for bad in ["0", "-1", "many"] {
        let err = plan(&[&format!("WISP_MAX_CONCURRENT_REQUESTS={bad}")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("invalid WISP_MAX_CONCURRENT_REQUESTS `{bad}`")),
            "{err}"
        );
    }
    for bad in ["WISP_REQUEST_TIMEOUT=0s", "WISP_REQUEST_TIMEOUT=soon"] {
        let err = plan(&[bad]).unwrap_err().to_string();
        assert!(err.contains("invalid WISP_REQUEST_TIMEOUT"), "{err}");
    }
    assert_eq!(
        plan(&["WISP_ALLOW_OUTBOUND=http://localhost:8081, https://*.example.com"])
            .unwrap()
            .allow_outbound,
        ["http://localhost:8081", "https://*.example.com"]
    );
    let err = plan(&["WISP_ALLOW_OUTBOUND=localhost"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid WISP_ALLOW_OUTBOUND `localhost`"),
        "{err}"
    );
}

#[test]
fn exec_runs_a_wasm_file_or_the_app() {
    let r = rootfs();
    let init = wasm_plan(
        "c",
        &spec(&["/app.wasm"], &[]),
        r.path(),
        PathBuf::from("/store/app.wasm"),
        &HostSettings::default(),
    )
    .unwrap();
    let process = |args: &[&str]| {
        ProcessBuilder::default()
            .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .env(vec!["X=1".to_string()])
            .cwd("/")
            .build()
            .unwrap()
    };
    let p = exec_plan(&init, &process(&["/app.wasm", "x"]), r.path(), 42).unwrap();
    assert_eq!(p.module, r.path().join("app.wasm"));
    let p = exec_plan(&init, &process(&["env", "X"]), r.path(), 42).unwrap();
    assert_eq!(p.module, PathBuf::from("/store/app.wasm"));
    assert_eq!(p.args, ["env", "X"]);
    assert_eq!(p.executor, Executor::Command);
    assert_eq!(p.join[0], PathBuf::from("/proc/42/ns/net"));
}

/// A pod limit above what one linear memory can address caps each instance
/// at 4 GiB (the runtime refuses more); a granted directory that is not
/// there fails the plan naming it, as the CLI's `--dir` does.
#[test]
fn plans_are_checked_as_the_runtime_checks_its_config() {
    let r = rootfs();
    let host = HostSettings {
        cache_dir: None,
        cpus: 2,
    };
    let mut s = spec(&["/app.wasm"], &[]);
    s.set_linux(Some(
        LinuxBuilder::default()
            .resources(
                LinuxResourcesBuilder::default()
                    .memory(
                        LinuxMemoryBuilder::default()
                            .limit(8i64 << 30)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    ));
    let plan = wasm_plan("c1", &s, r.path(), r.path().join("app.wasm"), &host).unwrap();
    assert_eq!(plan.max_memory, Some(4 << 30));
    assert_eq!(
        plan.serve_config().unwrap().limits.max_memory.map(|m| m.0),
        Some(4 << 30)
    );

    s.set_mounts(Some(vec![
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source("/nonexistent/wisp-data")
            .options(vec!["rbind".to_string()])
            .build()
            .unwrap(),
    ]));
    let err = wasm_plan("c1", &s, r.path(), r.path().join("app.wasm"), &host).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/wisp-data"), "{err}");
}

/// One choice between serving and running, for the container process and
/// node mode alike.
#[test]
fn executor_decides_serving_from_the_shape() {
    use wisp_runtime::AppShape::{HttpProxy, P1Command, P2Command};
    assert!(Executor::Auto.serves(HttpProxy, "m").unwrap());
    assert!(!Executor::Auto.serves(P1Command, "m").unwrap());
    assert!(!Executor::Auto.serves(P2Command, "m").unwrap());
    assert!(Executor::Http.serves(P1Command, "m").unwrap());
    assert!(!Executor::Command.serves(P2Command, "m").unwrap());
    let err = Executor::Command.serves(HttpProxy, "m.wasm").unwrap_err();
    assert!(
        err.to_string()
            .contains("`m.wasm` is a wasi:http component"),
        "{err}"
    );
}
