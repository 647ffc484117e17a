//! `native-burst`: the native floor of the burst benchmark (`benches/burst.sh`).
//!
//! A plain hyper server with no Wasm at all, speaking what `wisp serve` speaks
//! to the load tool: HTTP/1.1, or HTTP/2 with prior knowledge, on a
//! multi-thread tokio runtime with one worker per core. `GET /sleep?ms=N`
//! holds its request for N ms in a tokio timer and counts it live meanwhile;
//! the load endpoint (`/.well-known/wisp/stats`) and the health endpoint answer
//! as `wisp serve` answers them. Where this server cannot reach N requests in
//! flight in some time, no server on the same machine and client can: it is
//! the floor under wisp's figure.
//!
//! Usage: `native-burst --listen ADDR [--max-streams N]`. Prints
//! `Serving HTTP on http://ADDR/` on stderr once bound.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

fn usage() -> ! {
    eprintln!("usage: native-burst --listen ADDR [--max-streams N]");
    std::process::exit(2);
}

struct Args {
    listen: SocketAddr,
    max_streams: u32,
}

fn parse_args() -> Args {
    let mut args = std::env::args().skip(1);
    let mut listen = None;
    let mut max_streams = 1000u32;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next(),
            "--max-streams" => {
                let v = args.next().unwrap_or_else(|| usage());
                max_streams = v.parse().unwrap_or_else(|e| {
                    eprintln!("native-burst: invalid --max-streams `{v}`: {e}");
                    std::process::exit(2);
                });
            }
            _ => usage(),
        }
    }
    let Some(listen) = listen else { usage() };
    let listen = listen.parse().unwrap_or_else(|e| {
        eprintln!("native-burst: invalid --listen `{listen}`: {e}");
        std::process::exit(2);
    });
    Args {
        listen,
        max_streams,
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Decrements the live count when the request ends, however it ends.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle(
    req: Request<Incoming>,
    live: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path == "/.well-known/wisp/stats" {
        let n = live.load(Ordering::Relaxed);
        return Ok(text(
            StatusCode::OK,
            format!(r#"{{"live_instances":{n},"executing":{n},"queued":0}}"#),
        ));
    }
    if path == "/.well-known/wisp/health" {
        return Ok(text(StatusCode::OK, "ok\n".into()));
    }
    let ms = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ms=")))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    live.fetch_add(1, Ordering::Relaxed);
    let _live = Live(live);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(text(StatusCode::OK, format!("slept {ms} ms\n")))
}

fn main() -> std::io::Result<()> {
    let args = parse_args();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    let live = Arc::new(AtomicUsize::new(0));
    rt.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(args.listen)?;
        let listener: TcpListener = socket.listen(65535)?;
        eprintln!("Serving HTTP on http://{}/", listener.local_addr()?);
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder.http1().keep_alive(true);
        builder.http2().max_concurrent_streams(args.max_streams);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("native-burst: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let live = live.clone();
            let service = hyper::service::service_fn(move |req| handle(req, live.clone()));
            let conn = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
}
