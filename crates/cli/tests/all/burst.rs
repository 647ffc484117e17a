//! The burst benchmark in its CI-sized smoke form: 10,000 requests in flight
//! at once against `wisp serve`, each holding its own instance, through the
//! load tool (`wisp-load`). No timing assertions: it must complete with zero
//! errors, every request's instance alive at once, and the server back to
//! zero instances and near its idle memory. The full 100,000 run is `benches/burst.sh`.

use std::time::Duration;

use wisp_load::{BurstOptions, Target};
use wisp_test_guests as guests;

use crate::support::{Sandbox, Server, s};

#[test]
fn ten_thousand_requests_in_flight_then_back_to_zero() {
    const N: usize = 10_000;
    let sb = Sandbox::new();
    let server = Server::start(sb.cmd([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--max-connections",
        "12000",
        "--max-concurrent-requests",
        "10000",
        "--memory-reservation",
        "16MiB",
        "--memory-guard",
        "0",
        "--keep-resident",
        "0",
        "--memory-init",
        "copy",
        s(&guests::http_echo()),
    ]));
    // Long enough a hold that every instance is alive at once even on a slow,
    // shared machine running a debug build.
    let target: Target = format!("http://{}/sleep?ms=15000", server.addr)
        .parse()
        .unwrap();
    let mut opts = BurstOptions::new(target, N);
    opts.server_pid = Some(server.pid());
    opts.request_timeout = Duration::from_secs(120);
    opts.settle_timeout = Duration::from_secs(30);
    let report = wisp_load::burst(&opts).expect("burst");
    eprintln!("{report}");
    assert_eq!(report.ok, N, "{report}");
    assert_eq!(report.errors_total(), 0, "{report}");
    assert_eq!(report.peak_live, N, "{report}");
    assert!(report.to_zero_ms.is_some(), "never back to zero: {report}");
    // The instances' memory went back to the kernel (pool slots, fiber stacks,
    // the allocator's free pages).
    assert!(
        report.memory_settled_ms.is_some(),
        "memory never back near idle: {report}"
    );
    // The host answered pings all along.
    assert!(
        report.pings.count > 0 && report.pings.errors == 0,
        "{report}"
    );
}

#[test]
fn http2_streams_share_two_connections() {
    // h2c with prior knowledge: 400 requests in flight on two connections,
    // each in an instance of its own.
    const N: usize = 400;
    let sb = Sandbox::new();
    let server = Server::start(sb.cmd([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--max-streams-per-connection",
        "200",
        s(&guests::http_echo()),
    ]));
    let target: Target = format!("http://{}/sleep?ms=3000", server.addr)
        .parse()
        .unwrap();
    let mut opts = BurstOptions::new(target, N);
    opts.http2_connections = Some(2);
    opts.server_pid = Some(server.pid());
    opts.settle_timeout = Duration::from_secs(5);
    let report = wisp_load::burst(&opts).expect("burst");
    eprintln!("{report}");
    assert_eq!(report.ok, N, "{report}");
    assert_eq!(report.errors_total(), 0, "{report}");
    assert_eq!(report.peak_live, N, "{report}");
}
