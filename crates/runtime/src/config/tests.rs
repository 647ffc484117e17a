use super::*;

#[test]
fn dir_grants_parse() {
    let d: DirGrant = "/data".parse().unwrap();
    assert_eq!(
        (d.host.to_str().unwrap(), d.guest.as_str(), d.read_only),
        ("/data", "/data", false)
    );
    let d: DirGrant = "./x::/y:ro".parse().unwrap();
    assert_eq!(
        (d.host.to_str().unwrap(), d.guest.as_str(), d.read_only),
        ("./x", "/y", true)
    );
    let d: DirGrant = "/a:ro".parse().unwrap();
    assert_eq!((d.guest.as_str(), d.read_only), ("/a", true));
    assert!("::/y".parse::<DirGrant>().is_err());
    assert!("/x::".parse::<DirGrant>().is_err());
    assert!("".parse::<DirGrant>().is_err());
}

#[test]
fn unusable_dirs_are_rejected() {
    let mut c = Config::default();
    c.capabilities
        .dirs
        .push("/definitely/not/here".parse().unwrap());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("/definitely/not/here"), "{e}");
    let f = tempfile::NamedTempFile::new().unwrap();
    c.capabilities.dirs = vec![DirGrant {
        host: f.path().into(),
        guest: "/f".into(),
        read_only: false,
    }];
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("not a directory")
    );
}

#[test]
fn env_pairs_parse() {
    assert_eq!(parse_env_pair("A=b=c").unwrap(), ("A".into(), "b=c".into()));
    assert_eq!(parse_env_pair("A=").unwrap(), ("A".into(), "".into()));
    assert!(parse_env_pair("=x").is_err());
    assert!(parse_env_pair("noequals").is_err());
}

#[test]
fn sizes_parse() {
    assert_eq!("65536".parse::<ByteSize>().unwrap().0, 65536);
    assert_eq!("64K".parse::<ByteSize>().unwrap().0, 64 << 10);
    assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 << 20);
    assert_eq!("1.5g".parse::<ByteSize>().unwrap().0, 3 << 29);
    for bad in ["", "M", "12Q", "-1", "1e3", "99999999999999999999T"] {
        assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
    }
    assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
}

#[test]
fn a_pool_larger_than_the_address_space_is_refused() {
    let mut c = Config::default();
    c.server.max_concurrent_requests = 100_000;
    c.engine.pooling.total_instances = 100_000;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("needs 806250GiB"), "{err}");
    assert!(err.contains("lower memory-reservation"), "{err}");
    // What the burst benchmark uses: 100,000 instances in 3.2TiB.
    c.engine.pooling.memory_reservation = ByteSize(16 << 20);
    c.engine.pooling.memory_guard = ByteSize(0);
    c.validate().unwrap();
}

#[test]
fn durations_parse() {
    assert_eq!(
        "250ms".parse::<HumanDuration>().unwrap().0,
        Duration::from_millis(250)
    );
    assert_eq!(
        "2s".parse::<HumanDuration>().unwrap().0,
        Duration::from_secs(2)
    );
    assert_eq!(
        "1.5s".parse::<HumanDuration>().unwrap().0,
        Duration::from_millis(1500)
    );
    assert_eq!(
        "2m".parse::<HumanDuration>().unwrap().0,
        Duration::from_secs(120)
    );
    for bad in ["", "10", "s", "5 parsecs", "-1s"] {
        assert!(bad.parse::<HumanDuration>().is_err(), "{bad}");
    }
}

#[test]
fn outbound_patterns_match() {
    let p: OutboundPattern = "http://127.0.0.1:8080".parse().unwrap();
    assert!(p.allows("http", "127.0.0.1", 8080));
    assert!(!p.allows("http", "127.0.0.1", 8081));
    assert!(!p.allows("https", "127.0.0.1", 8080));
    let p: OutboundPattern = "https://*.example.com".parse().unwrap();
    assert!(p.allows("https", "api.example.com", 443));
    assert!(!p.allows("https", "example.com", 443));
    assert!(!p.allows("https", "badexample.com", 443));
    assert!(!p.allows("https", "api.example.com", 8443));
    let p: OutboundPattern = "*://localhost:*".parse().unwrap();
    assert!(p.allows("http", "localhost", 1) && p.allows("tcp", "LOCALHOST", 9));
    let p: OutboundPattern = "tcp://[::1]:5432".parse().unwrap();
    assert!(p.allows("tcp", "::1", 5432) && p.allows("tcp", "[::1]", 5432));
    let all: OutboundPattern = "*".parse().unwrap();
    assert!(all.allows("udp", "10.1.2.3", 53));
    for bad in [
        "localhost",
        "ftp://x",
        "http://a/b",
        "tcp://x",
        "http://a:99999",
        "http://a*b",
        "http://",
    ] {
        assert!(bad.parse::<OutboundPattern>().is_err(), "{bad}");
    }
}

#[test]
fn toml_fills_the_same_model() {
    let c = Config::from_toml_str(
        r#"
        [capabilities]
        dirs = ["/tmp::/data:ro"]
        env = { GREETING = "hi" }
        allow-outbound = ["http://127.0.0.1:*"]
        [limits]
        max-memory = "32MiB"
        timeout = "2s"
        [server]
        listen = "127.0.0.1:0"
        max-connections = 10
        max-concurrent-requests = 5
        queue-timeout = "1s"
        drain-timeout = "5s"
        backlog = 128
        [engine.pooling]
        total-instances = 100
        memory-reservation = "8MiB"
        memory-guard = "64KiB"
        keep-resident = 0
        memory-init = "copy"
        "#,
    )
    .unwrap();
    assert!(c.capabilities.dirs[0].read_only);
    assert_eq!(c.capabilities.env["GREETING"], "hi");
    assert_eq!(c.limits.max_memory, Some(ByteSize(32 << 20)));
    assert_eq!(c.server.max_concurrent_requests, 5);
    assert_eq!(c.engine.pooling.memory_reservation.0, 8 << 20);
    assert_eq!(c.engine.pooling.memory_init, MemoryInit::Copy);
    c.validate().unwrap();
    assert!(
        Config::from_toml_str("[engine.pooling]\nmemory-init = \"eager\"")
            .unwrap_err()
            .to_string()
            .contains("eager")
    );
    assert!(Config::from_toml_str("[limits]\nmax-memory = \"lots\"").is_err());
    assert!(Config::from_toml_str("[server]\nlisten = \"nowhere\"").is_err());
    assert!(Config::from_toml_str("[limits]\nbogus = 1").is_err());
}

#[test]
fn bad_combinations_fail_validation() {
    let mut c = Config::default();
    c.server.max_concurrent_requests = 2000;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("total-instances")
    );
    let mut c = Config::default();
    c.limits.max_memory = Some(ByteSize(1000));
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.limits.timeout = Some(HumanDuration(Duration::ZERO));
    assert!(c.validate().is_err());
}
