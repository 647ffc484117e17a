//! `wisp serve`: wasi:http and WAGI apps over real sockets, failure isolation,
//! limits, outbound policy, health, shutdown and admission control.

use std::time::{Duration, Instant};

use crate::support::{Sandbox, Server, UPSTREAM_BODY, Upstream, http, s, try_http};
use wisp_test_guests as guests;

/// `wisp serve --listen 127.0.0.1:0 EXTRA... APP`.
fn serve(sb: &Sandbox, app: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    args.push(s(app));
    Server::start(sb.cmd(args))
}

#[test]
fn http_hello_answers_200() {
    let sb = Sandbox::new();
    let server = serve(&sb, &guests::http_hello(), &[]);
    assert!(server.addr.ip().is_loopback());
    let r = server.get("/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "hello from wisp\n");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // Another request gets a fresh instance and the same answer.
    let r = server.get("/some/other/path?x=1");
    assert_eq!((r.status, r.body.as_str()), (200, "hello from wisp\n"));
}

#[test]
fn http_echo_echoes_method_path_headers_and_body() {
    let sb = Sandbox::new();
    let server = serve(&sb, &guests::http_echo(), &[]);
    let r = server.request(
        "POST",
        "/echo?q=1",
        &[("X-Test", "abc")],
        b"ping body\nline 2",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-wisp-echo"), Some("1"), "{r:?}");
    assert!(r.body.starts_with("POST /echo?q=1\n"), "{r:?}");
    assert!(r.body.contains("\nx-test: abc\n"), "{r:?}");
    assert!(r.body.ends_with("\n\nping body\nline 2"), "{r:?}");
}

#[test]
fn a_trap_gives_500_and_the_server_keeps_serving() {
    let sb = Sandbox::new();
    let server = serve(&sb, &guests::http_echo(), &[]);
    let r = server.get("/trap");
    assert_eq!(r.status, 500, "{r:?}");
    server.assert_serves_hello();
}

#[test]
fn timeout_stops_a_looping_request_while_others_are_served() {
    let sb = Sandbox::new();
    let server = serve(&sb, &guests::http_echo(), &["--timeout", "300ms"]);
    let addr = server.addr;
    let looping = std::thread::spawn(move || http(addr, "GET", "/loop", &[], b""));
    std::thread::sleep(Duration::from_millis(150));
    // While the loop spins, another request is still answered, and promptly.
    server.assert_serves_hello();
    let r = looping.join().expect("loop request thread");
    assert!(matches!(r.status, 504 | 500), "{r:?}");
    assert!(
        r.elapsed >= Duration::from_millis(250),
        "stopped before the timeout: {r:?}"
    );
    assert!(
        r.elapsed < Duration::from_millis(2500),
        "not stopped within ~2s: {r:?}"
    );
    // The server is still fine.
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn max_memory_stops_a_memory_bomb_request() {
    let sb = Sandbox::new();
    let server = serve(&sb, &guests::http_echo(), &["--max-memory", "4MiB"]);
    let r = server.get("/bomb");
    assert_eq!(r.status, 500, "{r:?}");
    server.assert_serves_hello();
}

#[test]
fn outbound_http_is_denied_by_default() {
    let sb = Sandbox::new();
    let upstream = Upstream::start();
    let server = serve(&sb, &guests::http_echo(), &[]);
    let r = server.get(&format!("/outbound?url={}", upstream.encoded_url("/x")));
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("HTTP-request-denied"), "{r:?}");
    assert_eq!(
        upstream.hits(),
        0,
        "the denied request reached the upstream"
    );
}

#[test]
fn outbound_http_is_allowed_when_granted() {
    let sb = Sandbox::new();
    let upstream = Upstream::start();
    let allow = format!("http://127.0.0.1:{}", upstream.addr.port());
    let server = serve(&sb, &guests::http_echo(), &["--allow-outbound", &allow]);
    let r = server.get(&format!("/outbound?url={}", upstream.encoded_url("/x")));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, format!("upstream status 200\n{UPSTREAM_BODY}"));
    assert_eq!(upstream.hits(), 1);

    // The grant is for that port only: another loopback port stays denied.
    let other = Upstream::start();
    let r = server.get(&format!("/outbound?url={}", other.encoded_url("/x")));
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("HTTP-request-denied"), "{r:?}");
    assert_eq!(other.hits(), 0);
}

#[test]
fn env_flag_reaches_the_http_guest() {
    let sb = Sandbox::new();
    let server = serve(&sb, &guests::http_echo(), &["--env", "GREETING=hi"]);
    let r = server.get("/env?name=GREETING");
    assert_eq!((r.status, r.body.as_str()), (200, "hi"), "{r:?}");
    // Nothing else is there, host variables included.
    let r = server.get("/env?name=PATH");
    assert_eq!((r.status, r.body.as_str()), (404, "unset\n"), "{r:?}");
}

#[test]
fn wagi_echo_sees_the_cgi_request() {
    let sb = Sandbox::new();
    let server = serve(&sb, &guests::wagi_echo(), &[]);
    let r = server.request("POST", "/path?a=1&b=2", &[("X-Test", "t")], b"the body");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-wagi"), Some("1"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{r:?}");
    let expected = "method=POST\npath=/path\nquery=a=1&b=2\nargs=a=1,b=2\nx-test=t\nbody=the body";
    assert_eq!(r.body, expected, "{r:?}");
}

#[test]
fn wagi_status_header_failure_exit_and_timeout() {
    let sb = Sandbox::new();
    let server = serve(&sb, &guests::wagi_echo(), &["--timeout", "500ms"]);
    let r = server.get("/created?status=201");
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.body.starts_with("method=GET\npath=/created\n"), "{r:?}");
    let r = server.get("/exit");
    assert_eq!(r.status, 500, "{r:?}");
    let r = server.get("/loop");
    assert!(matches!(r.status, 504 | 500), "{r:?}");
    assert!(r.elapsed < Duration::from_millis(2500), "{r:?}");
    // And it keeps serving.
    assert_eq!(server.get("/").status, 200);
}

/// A WAGI guest cannot frame the host's response: its `Content-Length`,
/// `Connection` and `Transfer-Encoding` are dropped, so the bytes it writes
/// after its body stay in that body, and the next request on the keep-alive
/// connection gets its own answer, not the guest's forged second response.
/// A client that sends part of a request's headers and stalls (slowloris),
/// or sends nothing at all, loses its connection after
/// --header-read-timeout, so it cannot hold a connection slot.
#[test]
fn a_client_that_stalls_mid_header_is_cut_off() {
    use std::io::{Read, Write};
    let sb = Sandbox::new();
    let server = serve(
        &sb,
        &guests::http_hello(),
        &["--header-read-timeout", "300ms"],
    );
    let mut silent = std::net::TcpStream::connect(server.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut stalled = std::net::TcpStream::connect(server.addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .unwrap();
    let mut got = Vec::new();
    // EOF (or a 408 then EOF) before the read timeout: closed by the server.
    let read = stalled.read_to_end(&mut got);
    assert!(
        read.is_ok(),
        "the stalled connection was never closed: {read:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    let read = silent.read_to_end(&mut got);
    assert!(
        read.is_ok(),
        "the silent connection was never closed: {read:?}"
    );
    let r = server.get("/");
    assert_eq!((r.status, r.body.as_str()), (200, "hello from wisp\n"));
    // Refused rather than ignored: 0 would mean no timeout at all.
    let out = sb
        .cmd([
            "serve",
            "--header-read-timeout",
            "0s",
            s(&guests::http_hello()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("header-read-timeout"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_wagi_guest_cannot_split_the_response() {
    use std::io::{BufRead, BufReader, Read, Write};
    let sb = Sandbox::new();
    let server = serve(&sb, &guests::wagi_echo(), &[]);
    let mut conn = std::net::TcpStream::connect(server.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(
        b"GET /split HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /second HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut reader = BufReader::new(conn);
    // One response, framed as HTTP/1.1 frames it: by its Content-Length.
    let mut read_response = || {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push(line.trim_end().to_ascii_lowercase());
        }
        let len: usize = head
            .iter()
            .find_map(|h| h.strip_prefix("content-length: "))
            .map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        (head, String::from_utf8_lossy(&body).into_owned())
    };
    let (head, body) = read_response();
    assert!(head[0].starts_with("http/1.1 200"), "{head:?}");
    assert_eq!(
        body, "helloHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
        "{head:?}"
    );
    let (head, body) = read_response();
    assert!(head[0].starts_with("http/1.1 200"), "{head:?}");
    assert!(
        body.starts_with("method=GET\npath=/second\n"),
        "{head:?} {body:?}"
    );
}

#[test]
fn health_endpoint_is_answered_by_the_host() {
    let sb = Sandbox::new();
    // A WAGI app that would answer anything else with its own text.
    let server = serve(&sb, &guests::wagi_hello(), &[]);
    let r = server.get("/.well-known/wisp/health");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body.trim(), "ok", "{r:?}");
    server.assert_serves_hello();
}

#[test]
fn listen_address_falls_back_to_wisp_listen() {
    let sb = Sandbox::new();
    let mut cmd = sb.cmd(["serve", s(&guests::http_hello())]);
    cmd.env("WISP_LISTEN", "127.0.0.1:0");
    let server = Server::start(cmd);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    assert_ne!(
        server.addr.port(),
        3000,
        "WISP_LISTEN ignored: bound the default port"
    );
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_0() {
    let sb = Sandbox::new();
    let mut server = serve(&sb, &guests::http_echo(), &[]);
    let addr = server.addr;
    let started = Instant::now();
    let in_flight = std::thread::spawn(move || http(addr, "GET", "/sleep?ms=800", &[], b""));
    // Long enough for the request to be read (a connection without a request is
    // simply closed on shutdown), well short of its 800 ms.
    std::thread::sleep(Duration::from_millis(250));
    server.signal("TERM");
    let signalled = Instant::now();
    let status = server.wait_exit(Duration::from_secs(5));
    let r = in_flight.join().expect("in-flight request thread");
    assert_eq!((r.status, r.body.as_str()), (200, "slept 800\n"), "{r:?}");
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr:\n{}",
        server.stderr()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "exited before the in-flight request could finish"
    );
    assert!(signalled.elapsed() < Duration::from_secs(5));
}

#[test]
fn sigint_exits_0() {
    let sb = Sandbox::new();
    let mut server = serve(&sb, &guests::http_hello(), &[]);
    assert_eq!(server.get("/").status, 200);
    server.signal("INT");
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr:\n{}",
        server.stderr()
    );
}

#[test]
fn drain_timeout_bounds_shutdown() {
    let sb = Sandbox::new();
    let mut server = serve(&sb, &guests::http_echo(), &["--drain-timeout", "200ms"]);
    let addr = server.addr;
    // Its outcome does not matter: the server gives up on it.
    let in_flight = std::thread::spawn(move || try_http(addr, "GET", "/sleep?ms=3000", &[], b""));
    std::thread::sleep(Duration::from_millis(250));
    server.signal("TERM");
    let signalled = Instant::now();
    let status = server.wait_exit(Duration::from_secs(5));
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr:\n{}",
        server.stderr()
    );
    assert!(
        took < Duration::from_millis(1800),
        "drain took {took:?} despite --drain-timeout 200ms"
    );
    if let Ok(r) = in_flight.join().expect("in-flight thread") {
        assert_ne!(
            r.body, "slept 3000\n",
            "the request was not cut short: {r:?}"
        );
    }
}

#[test]
fn excess_requests_get_503_with_retry_after() {
    let sb = Sandbox::new();
    let server = serve(
        &sb,
        &guests::http_echo(),
        &["--max-concurrent-requests", "1", "--queue-timeout", "100ms"],
    );
    let addr = server.addr;
    let started = Instant::now();
    let busy = std::thread::spawn(move || http(addr, "GET", "/sleep?ms=1000", &[], b""));
    std::thread::sleep(Duration::from_millis(250));

    // While the only slot is busy, a request waits --queue-timeout, then gets 503.
    // (Retried briefly in case the busy request had not taken the slot yet.)
    let r = loop {
        let r = server.get("/");
        if r.status == 503 || started.elapsed() > Duration::from_millis(700) {
            break r;
        }
        assert_eq!(r.status, 200, "{r:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r.status, 503, "no 503 while the only slot was busy: {r:?}");
    assert!(
        r.header("retry-after").is_some(),
        "503 without Retry-After: {r:?}"
    );
    assert!(
        r.elapsed >= Duration::from_millis(80),
        "did not queue for --queue-timeout: {r:?}"
    );
    assert!(
        r.elapsed < Duration::from_millis(700),
        "waited for the busy slot instead of 503: {r:?}"
    );

    // The host answers health checks without a slot.
    let h = server.get("/.well-known/wisp/health");
    assert_eq!(h.status, 200, "{h:?}");

    let r = busy.join().expect("busy request thread");
    assert_eq!((r.status, r.body.as_str()), (200, "slept 1000\n"), "{r:?}");
    // The slot is free again.
    assert_eq!(server.get("/").status, 200);
}
