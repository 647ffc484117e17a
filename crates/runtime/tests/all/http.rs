//! The HTTP executors, driven through `HttpServer::handle` without sockets (except
//! a loopback upstream for outbound calls).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use wisp_runtime::Config;
use wisp_runtime::config::{ByteSize, HumanDuration};
use wisp_runtime::http::{HEALTH_PATH, HttpServer, ResponseBody, STATS_PATH};
use wisp_test_guests as guests;

use crate::{engine, load};

fn server(path: &std::path::Path, config: &Config) -> HttpServer {
    let e = engine(true, None);
    let app = load(&e, path);
    HttpServer::new(&e, &app, config).expect("server")
}

fn req(method: &str, uri: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "wisp.test")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

async fn body(resp: Response<ResponseBody>) -> (StatusCode, http::HeaderMap, String) {
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

async fn get(s: &HttpServer, uri: &str) -> (StatusCode, String) {
    let (status, _, text) = body(s.handle(req("GET", uri, ""), None).await).await;
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_hello_and_zero_instances_when_idle() {
    let s = server(&guests::http_hello(), &Config::default());
    assert_eq!(s.live_instances(), 0);
    for _ in 0..3 {
        assert_eq!(
            get(&s, "/").await,
            (StatusCode::OK, "hello from wisp\n".into())
        );
    }
    // Each request's store is gone once its response is complete.
    let deadline = Instant::now() + Duration::from_secs(2);
    while s.live_instances() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s.live_instances(), 0);
}

/// With `memory-init = copy` the data segments are copied, not mapped: the
/// guest still finds its static data (the body below lives in it), in every
/// instance, fresh slot or reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_init_copy_gives_each_instance_its_data() {
    let mut config = Config::default();
    config.engine.pooling.memory_init = wisp_runtime::config::MemoryInit::Copy;
    config.engine.pooling.total_instances = 8;
    config.engine.cache_dir = None;
    let e = wisp_runtime::Engine::new(&wisp_runtime::EngineSettings::for_serve(&config))
        .expect("engine");
    let s = HttpServer::new(&e, &load(&e, &guests::http_hello()), &config).expect("server");
    let mut gets = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let s = s.clone();
        gets.spawn(async move { get(&s, "/").await });
    }
    for r in gets.join_all().await {
        assert_eq!(r, (StatusCode::OK, "hello from wisp\n".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_echo_sees_method_path_headers_body() {
    let s = server(&guests::http_echo(), &Config::default());
    let mut r = req("PUT", "/echo?x=1&y=two", "the body");
    r.headers_mut()
        .insert("x-custom", "value-1".parse().unwrap());
    let (status, headers, text) = body(s.handle(r, None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-wisp-echo"], "1");
    let (head, rest) = text.split_once("\n\n").expect("report has a blank line");
    assert!(head.starts_with("PUT /echo?x=1&y=two\n"), "{head}");
    assert!(head.contains("x-custom: value-1"), "{head}");
    assert_eq!(rest, "the body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_is_500_and_the_next_request_is_fine() {
    let s = server(&guests::http_echo(), &Config::default());
    assert_eq!(get(&s, "/trap").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        get(&s, "/").await,
        (StatusCode::OK, "hello from wisp\n".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_stops_a_spinning_guest_without_hurting_others() {
    let mut config = Config::default();
    config.limits.timeout = Some(HumanDuration(Duration::from_millis(300)));
    let s = server(&guests::http_echo(), &config);
    let spinning = {
        let s = s.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            (get(&s, "/loop").await.0, start.elapsed())
        })
    };
    // While one guest spins, others are served promptly.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..5 {
        assert_eq!(get(&s, "/").await.0, StatusCode::OK);
    }
    let (status, took) = spinning.await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_is_500_and_the_server_keeps_serving() {
    let mut config = Config::default();
    config.limits.max_memory = Some(ByteSize(8 << 20));
    let s = server(&guests::http_echo(), &config);
    assert_eq!(get(&s, "/bomb").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(get(&s, "/").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_is_granted() {
    let mut config = Config::default();
    config
        .capabilities
        .env
        .insert("GREETING".into(), "hi".into());
    let s = server(&guests::http_echo(), &config);
    assert_eq!(
        get(&s, "/env?name=GREETING").await,
        (StatusCode::OK, "hi".into())
    );
    assert_eq!(get(&s, "/env?name=HOME").await.0, StatusCode::NOT_FOUND);
}

/// Descriptors of this process open on `dir`.
fn fds_on(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == dir)
        .count()
}

/// A granted directory is opened once, when the app is prepared, and every
/// instance shares that descriptor: live instances do not hold open files
/// of their own (which bounded a node's live instances by its file limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_dirs_are_opened_once_for_all_live_instances() {
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().canonicalize().unwrap();
    let mut config = Config::default();
    config
        .capabilities
        .dirs
        .push(format!("{}::/data", dir.display()).parse().unwrap());
    let s = server(&guests::http_echo(), &config);
    assert_eq!(fds_on(&dir), 1, "opened when the app is prepared");
    let held: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { get(&s, "/sleep?ms=1000").await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.live_instances() < 20 {
        assert!(Instant::now() < deadline, "20 instances never alive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(fds_on(&dir), 1, "with 20 instances alive");
    for h in held {
        assert_eq!(h.await.unwrap(), (StatusCode::OK, "slept 1000\n".into()));
    }
    drop(s);
    assert_eq!(fds_on(&dir), 0, "closed with the app");
}

/// A directory that cannot be opened fails the app's preparation, naming it.
#[test]
fn a_granted_dir_that_cannot_be_opened_fails_the_server() {
    let mut config = Config::default();
    config
        .capabilities
        .dirs
        .push("/nonexistent/wisp-test::/data".parse().unwrap());
    let e = engine(true, None);
    let app = load(&e, &guests::http_echo());
    let Err(err) = HttpServer::new(&e, &app, &config) else {
        panic!("a server with a missing directory");
    };
    assert!(err.to_string().contains("/nonexistent/wisp-test"), "{err}");
}

/// A one-connection-at-a-time HTTP upstream on loopback.
fn upstream(body: &'static str) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(false).unwrap();
    let h = std::thread::spawn(move || {
        // Serve at most one request; the test ends the thread by connecting.
        if let Ok((mut c, _)) = l.accept() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, h)
}

fn pct(s: &str) -> String {
    s.replace(':', "%3A").replace('/', "%2F")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_is_denied_by_default_and_allowed_by_pattern() {
    let (port, h) = upstream("from upstream");
    let url = format!("http://127.0.0.1:{port}/x");
    let s = server(&guests::http_echo(), &Config::default());
    let (status, text) = get(&s, &format!("/outbound?url={}", pct(&url))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(text.contains("HTTP-request-denied"), "{text}");

    let mut config = Config::default();
    config
        .capabilities
        .allow_outbound
        .push(format!("http://127.0.0.1:{port}").parse().unwrap());
    let s = server(&guests::http_echo(), &config);
    let (status, text) = get(&s, &format!("/outbound?url={}", pct(&url))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(text, "upstream status 200\nfrom upstream");
    h.join().unwrap();

    // Another port on the same host stays denied.
    let (status, text) = get(
        &s,
        &format!(
            "/outbound?url={}",
            pct(&format!("http://127.0.0.1:{}/", port.wrapping_add(1)))
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(text.contains("HTTP-request-denied"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wagi_module_gets_cgi_env_args_and_body() {
    let s = server(&guests::wagi_echo(), &Config::default());
    let mut r = req("POST", "/some/path?a=1&b=two%20words", "posted body");
    r.headers_mut().insert("x-test", "tv".parse().unwrap());
    let (status, headers, text) = body(s.handle(r, None).await).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["x-wagi"], "1");
    for line in [
        "method=POST",
        "path=/some/path",
        "query=a=1&b=two%20words",
        "args=a=1,b=two words",
        "x-test=tv",
        "body=posted body",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    let (status, _, _) = body(s.handle(req("GET", "/x?status=201", ""), None).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(get(&s, "/exit").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(s.live_instances(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wagi_deadline() {
    let mut config = Config::default();
    config.limits.timeout = Some(HumanDuration(Duration::from_millis(200)));
    let s = server(&guests::wagi_echo(), &config);
    assert_eq!(get(&s, "/loop").await.0, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(get(&s, "/ok").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_capacity_is_503_with_retry_after_and_health_still_answers() {
    let mut config = Config::default();
    config.server.max_concurrent_requests = 1;
    config.server.queue_timeout = HumanDuration(Duration::from_millis(300));
    let s = server(&guests::http_echo(), &config);
    let busy = {
        let s = s.clone();
        tokio::spawn(async move { get(&s, "/sleep?ms=1200").await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(s.live_instances(), 1);
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move { body(s.handle(req("GET", "/", ""), None).await).await })
    };
    // The stats path answers without a slot, and counts the one waiting.
    let mut seen = Vec::new();
    while !waiting.is_finished() {
        let (status, headers, text) = body(s.handle(req("GET", STATS_PATH, ""), None).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/json");
        seen.push(text);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        seen.iter()
            .any(|t| t == "{\"live_instances\":1,\"executing\":1,\"queued\":1}\n"),
        "{seen:?}"
    );
    let (status, headers, _) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(get(&s, HEALTH_PATH).await, (StatusCode::OK, "ok\n".into()));
    assert_eq!(busy.await.unwrap(), (StatusCode::OK, "slept 1200\n".into()));
    // The guest's task drops its store just after the body's last byte.
    let idle = "{\"live_instances\":0,\"executing\":0,\"queued\":0}\n";
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while get(&s, STATS_PATH).await.1 != idle {
        assert!(std::time::Instant::now() < deadline, "never back to idle");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The slot is free again.
    assert_eq!(get(&s, "/").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_host_gets_the_listen_authority() {
    let s = server(&guests::http_hello(), &Config::default());
    let r = Request::builder()
        .uri("/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, text) = body(s.handle(r, None).await).await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::OK, "hello from wisp\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_component_cannot_be_served() {
    let e = engine(true, None);
    let app = load(&e, &guests::echo_component());
    let err = HttpServer::new(&e, &app, &Config::default()).unwrap_err();
    assert!(err.to_string().contains("wisp run"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_goes_to_the_given_files_and_usage_is_metered() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let e = engine(true, None);
    let app = load(&e, &guests::http_echo());
    let output = wisp_runtime::http::GuestOutput::files(
        Some(std::fs::File::create(&out).unwrap()),
        Some(std::fs::File::create(&err).unwrap()),
    );
    let s = HttpServer::hosted(&e, &app, &Config::default(), output).expect("server");
    assert_eq!(s.usage(), Default::default());
    for tag in ["a", "b"] {
        assert_eq!(
            get(&s, &format!("/log?n=2&tag={tag}")).await,
            (StatusCode::OK, "logged 2\n".into())
        );
    }
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "a out 0\na out 1\nb out 0\nb out 1\n"
    );
    assert_eq!(
        std::fs::read_to_string(&err).unwrap(),
        "a err 0\na err 1\nb err 0\nb err 1\n"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while s.live_instances() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let u = s.usage();
    assert_eq!(u.instances, 2, "{u:?}");
    assert!(u.cpu_ns > 0, "{u:?}");
    // The guest's linear memory was counted while it lived, and released.
    assert!(u.peak_memory_bytes >= 65536, "{u:?}");
    assert_eq!(u.memory_bytes, 0, "{u:?}");
}
