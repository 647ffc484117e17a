//! `native-hello`: the native baseline for the HTTP benchmarks (`benches/http-load.sh`).
//!
//! A plain hyper HTTP/1 server with no Wasm at all, answering every request
//! `200 text/plain` `hello from wisp\n` — the same bytes as the `http-hello` guest —
//! on a multi-thread tokio runtime with one worker per core, keep-alive and
//! `TCP_NODELAY`, the same front end `wisp serve` uses. Comparing against it shows
//! what the per-request Wasm instance costs.
//!
//! Usage: `native-hello --listen ADDR` (port 0 picks a free port). Prints
//! `Serving HTTP on http://ADDR/` on stderr once bound.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

const BODY: &[u8] = b"hello from wisp\n";

fn usage() -> ! {
    eprintln!("usage: native-hello --listen ADDR");
    std::process::exit(2);
}

fn parse_args() -> SocketAddr {
    let mut args = std::env::args().skip(1);
    let mut listen = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next(),
            s if s.starts_with("--listen=") => listen = Some(s["--listen=".len()..].to_owned()),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let Some(listen) = listen else { usage() };
    listen.parse().unwrap_or_else(|e| {
        eprintln!("native-hello: invalid --listen `{listen}`: {e}");
        std::process::exit(2);
    })
}

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}

fn main() -> std::io::Result<()> {
    let addr = parse_args();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("Serving HTTP on http://{}/", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("native-hello: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper::service::service_fn(hello),
                    )
                    .await;
            });
        }
    })
}
