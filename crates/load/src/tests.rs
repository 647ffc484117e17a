use super::*;
use crate::procfs::parse_stat;

#[test]
fn stat_fields_are_found_after_the_command_name() {
    // A command name with spaces and a parenthesis, as `wisp-serve-1) x`.
    let stat = "1234 (wisp (x) y) S 1 1234 1234 0 -1 4194560 5678 0 0 0 250 50 0 0 20 0 3 0";
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (cpu_ms, minflt) = parse_stat(stat).unwrap();
    assert_eq!(minflt, 5678);
    assert!((cpu_ms - 300.0 * 1000.0 / hz).abs() < 1e-9, "{cpu_ms}");
    assert_eq!(parse_stat("1234 (truncated"), None);
    let me = cpu_and_faults(std::process::id()).unwrap();
    assert!(me.1 > 0, "this process has faulted pages in");
}

#[test]
fn targets_parse() {
    let t: Target = "http://127.0.0.1:3000/sleep?ms=10".parse().unwrap();
    assert_eq!(t.addr, "127.0.0.1:3000".parse().unwrap());
    assert_eq!(t.path, "/sleep?ms=10");
    let t: Target = "http://127.0.0.1:80".parse().unwrap();
    assert_eq!(t.path, "/");
    for bad in [
        "127.0.0.1:3000/",
        "https://127.0.0.1:1/",
        "http://localhost:1/",
        "http://[::1]:1/",
    ] {
        assert!(bad.parse::<Target>().is_err(), "{bad}");
    }
}

#[test]
fn sources_cover_the_port_range() {
    let t: Target = "http://127.0.0.1:1/".parse().unwrap();
    assert_eq!(
        BurstOptions::new(t.clone(), 10).sources(),
        [Ipv4Addr::new(127, 0, 0, 1)]
    );
    let s = BurstOptions::new(t, 100_000).sources();
    assert_eq!(s.len(), 4);
    assert_eq!(s[3], Ipv4Addr::new(127, 0, 0, 4));
    let pod: Target = "http://10.88.0.5:8080/".parse().unwrap();
    assert_eq!(
        BurstOptions::new(pod, 100_000).sources(),
        [Ipv4Addr::UNSPECIFIED]
    );
}

#[test]
fn statuses_and_stats_parse() {
    assert_eq!(
        parse_status(b"HTTP/1.1 503 Service Unavailable\r\n").unwrap(),
        503
    );
    assert!(parse_status(b"SSH-2.0\r\n").is_err());
    assert_eq!(
        parse_stats(br#"{"live_instances":3,"executing":2,"queued":1}"#),
        Some((3, 2, 1))
    );
}

#[test]
fn ping_percentiles_count_failures_apart() {
    let p = ping_stats(&[1.0, 2.0, f64::NAN, 3.0, 4.0]);
    assert_eq!((p.count, p.errors), (5, 1));
    assert_eq!((p.p50_ms, p.max_ms), (3.0, 4.0));
}
