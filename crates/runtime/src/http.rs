//! Serving HTTP: one fresh, isolated instance per request.
//!
//! Two executors sit behind one server:
//! - **proxy**: a `wasi:http/proxy` component, called through `wasi:http/incoming-handler`;
//! - **WAGI**: a WASI preview1 command module run CGI-style: CGI variables and request
//!   headers in the environment, query parameters as arguments, the body on stdin,
//!   and a CGI response (headers, blank line, body) on stdout.
//!
//! Compilation and `instantiate_pre` happen once in [`HttpServer::new`]; each request
//! gets its own `Store` from the pooling allocator and drops it when done, so an idle
//! server holds zero instances. A semaphore bounds requests executing at once; a
//! request that cannot get a slot within `queue-timeout` is answered `503` with
//! `Retry-After`. Each instance runs under the per-instance memory cap and deadline.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::app::{App, AppShape, Code};
use crate::command::{HasLimits, new_store, with_deadline};
use crate::config::{Config, ServerConfig};
use crate::engine::Engine;
use crate::lane;
use crate::meter::{CpuTimed, Meter, MeteredLimits, Usage};
use crate::wasi::Grants;

mod cgi;
mod error;
mod listen;
mod respond;
mod state;

pub use cgi::{CgiError, MAX_CGI_HEAD, MAX_CGI_HEADERS, cgi_args, cgi_env, parse_cgi};
pub use error::ServeError;
pub use listen::{bind, bind_group};
pub use respond::ResponseBody;
use respond::{guest_failure, respond, text};
pub use state::{GuestOutput, ProxyState, WagiState};
use state::{LiveGuard, Queued};

/// Where a proxy guest sends its response head.
type ResponseTx = tokio::sync::oneshot::Sender<
    Result<Response<ResponseBody>, wasmtime_wasi_http::p2::bindings::http::types::ErrorCode>,
>;

/// How a proxy instance ended, for a request whose response it never set.
enum ProxyEnd {
    /// Its handler returned.
    Returned,
    /// It trapped, failed or ran past its deadline.
    Failed(wasmtime::Error),
    /// It was never started: the host answers this instead.
    Refused(Response<ResponseBody>),
}

/// Path answered by the host itself, without an instance, even under full load.
pub const HEALTH_PATH: &str = "/.well-known/wisp/health";
/// Path answered by the host with the server's load as JSON, without an
/// instance: `{"live_instances":N,"executing":N,"queued":N}`.
pub const STATS_PATH: &str = "/.well-known/wisp/stats";
/// Largest request body a WAGI module is handed on stdin.
pub const MAX_WAGI_BODY: usize = 16 << 20;
/// Largest CGI output a WAGI module may write.
pub const MAX_WAGI_OUTPUT: usize = 64 << 20;

enum Executor {
    Proxy(ProxyPre<ProxyState>),
    Wagi(wasmtime::InstancePre<WagiState>),
}

struct Inner {
    engine: Engine,
    executor: Executor,
    grants: Grants,
    /// Linear-memory cap of each new instance; `usize::MAX` for none.
    /// Changeable while serving (a container's Update).
    max_memory: AtomicUsize,
    timeout: Option<Duration>,
    queue_timeout: Duration,
    slots: Arc<Semaphore>,
    /// The slots' number, to tell how many are taken.
    max_slots: usize,
    /// Requests waiting for a slot.
    queued: AtomicUsize,
    /// Concurrent streams per HTTP/2 connection.
    max_streams_per_connection: u32,
    header_read_timeout: Duration,
    live: Arc<AtomicUsize>,
    listen: SocketAddr,
    /// Usage of the instances, counted only for a hosted app (see
    /// [`HttpServer::hosted`]): its CPU clock costs a system call per poll.
    meter: Option<Arc<Meter>>,
    output: GuestOutput,
}

/// A prepared HTTP app. Cheap to clone; clones share the instance slots.
#[derive(Clone)]
pub struct HttpServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("live_instances", &self.live_instances())
            .finish()
    }
}

impl HttpServer {
    /// Links and pre-instantiates `app` once; every request reuses the result.
    pub fn new(engine: &Engine, app: &App, config: &Config) -> Result<Self, ServeError> {
        Self::build(engine, app, config, GuestOutput::default(), None)
    }

    /// [`Self::new`] for one of many apps in a process (the shim's node
    /// mode): the guests' stdout and stderr go to `output`, and their memory
    /// and CPU time are counted in [`Self::usage`], since the process has no
    /// cgroup per app to read them from.
    pub fn hosted(
        engine: &Engine,
        app: &App,
        config: &Config,
        output: GuestOutput,
    ) -> Result<Self, ServeError> {
        Self::build(engine, app, config, output, Some(Arc::default()))
    }

    fn build(
        engine: &Engine,
        app: &App,
        config: &Config,
        output: GuestOutput,
        meter: Option<Arc<Meter>>,
    ) -> Result<Self, ServeError> {
        let wt = engine.wasmtime();
        let prepare = |source| ServeError::Prepare {
            path: app.path().to_owned(),
            source,
        };
        let executor = match (app.shape(), app.code()) {
            (AppShape::HttpProxy, Code::Component(component)) => {
                let mut linker = wasmtime::component::Linker::<ProxyState>::new(wt);
                wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(prepare)?;
                wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
                    .map_err(prepare)?;
                let pre = linker.instantiate_pre(component).map_err(prepare)?;
                Executor::Proxy(ProxyPre::new(pre).map_err(prepare)?)
            }
            (AppShape::P1Command, Code::Module(module)) => {
                let mut linker = wasmtime::Linker::<WagiState>::new(wt);
                wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| &mut s.wasi)
                    .map_err(prepare)?;
                Executor::Wagi(linker.instantiate_pre(module).map_err(prepare)?)
            }
            (shape, _) => {
                return Err(ServeError::NotHttp {
                    path: app.path().to_owned(),
                    shape,
                });
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                engine: engine.clone(),
                executor,
                grants: Grants::new(&config.capabilities)?,
                max_memory: AtomicUsize::new(
                    config
                        .limits
                        .max_memory
                        .map_or(usize::MAX, |m| m.0 as usize),
                ),
                timeout: config.limits.timeout.map(|t| t.0),
                queue_timeout: config.server.queue_timeout.0,
                slots: Arc::new(Semaphore::new(
                    config.server.max_concurrent_requests as usize,
                )),
                max_slots: config.server.max_concurrent_requests as usize,
                queued: AtomicUsize::new(0),
                max_streams_per_connection: config.server.max_streams_per_connection,
                header_read_timeout: config.server.header_read_timeout.0,
                live: Arc::new(AtomicUsize::new(0)),
                listen: config.server.listen,
                meter,
                output,
            }),
        })
    }

    /// Sets the linear-memory cap of instances created from now on (`None`
    /// lifts it); instances already running keep theirs.
    pub fn set_max_memory(&self, max: Option<u64>) {
        let max = max.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        self.inner.max_memory.store(max, Ordering::Relaxed);
    }

    /// Memory and CPU time of this app's instances: all zero unless built
    /// with [`Self::hosted`].
    pub fn usage(&self) -> Usage {
        self.inner
            .meter
            .as_ref()
            .map(|m| m.usage())
            .unwrap_or_default()
    }

    /// Instances alive right now (zero when idle).
    pub fn live_instances(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Requests holding an execution slot right now.
    pub fn executing(&self) -> usize {
        self.inner.max_slots - self.inner.slots.available_permits()
    }

    /// Requests waiting for an execution slot right now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    fn stats_response(&self) -> Response<ResponseBody> {
        let body = format!(
            "{{\"live_instances\":{},\"executing\":{},\"queued\":{}}}\n",
            self.live_instances(),
            self.executing(),
            self.queued()
        );
        respond(StatusCode::OK, "application/json", Bytes::from(body))
    }

    /// Creates one instance exactly as a request would (fresh store, pooled slot,
    /// limits, WASI context) and drops it without calling the guest. Used as a
    /// start-up check, so an app that cannot instantiate fails before the server
    /// reports ready, and by the instantiation benchmark.
    pub async fn instantiate_once(&self) -> Result<(), wasmtime::Error> {
        let mut builder = WasiCtxBuilder::new();
        self.inner.grants.apply(&mut builder);
        match &self.inner.executor {
            Executor::Proxy(pre) => {
                let mut store = self.new_store(self.proxy_state(builder));
                pre.instantiate_async(&mut store).await?;
            }
            Executor::Wagi(pre) => {
                let mut store = self.new_store(self.wagi_state(builder));
                pre.instantiate_async(&mut store).await?;
            }
        }
        Ok(())
    }

    fn proxy_state(&self, mut builder: WasiCtxBuilder) -> ProxyState {
        let mut wasi = builder.build();
        self.inner.grants.give_dirs(&mut wasi);
        ProxyState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: self.inner.grants.outbound(),
            limits: self.limits(),
            _live: LiveGuard::new(&self.inner.live),
            _epoch: self.inner.engine.running(),
        }
    }

    fn wagi_state(&self, mut builder: WasiCtxBuilder) -> WagiState {
        let mut wasi = builder.build_p1();
        self.inner.grants.give_dirs(wasi.ctx().ctx);
        WagiState {
            wasi,
            limits: self.limits(),
            _live: LiveGuard::new(&self.inner.live),
            _epoch: self.inner.engine.running(),
        }
    }

    /// Handles one request: the whole per-request path, without sockets.
    pub async fn handle<B>(
        &self,
        mut req: Request<B>,
        remote: Option<SocketAddr>,
    ) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error> + std::error::Error + Send + Sync + 'static,
    {
        match req.uri().path() {
            HEALTH_PATH => return text(StatusCode::OK, "ok\n"),
            STATS_PATH => return self.stats_response(),
            _ => {}
        }
        // HTTP/1.0 clients may omit Host; wasi:http needs an authority.
        if req.uri().authority().is_none() && !req.headers().contains_key(http::header::HOST) {
            let host = HeaderValue::from_str(&self.inner.listen.to_string())
                .expect("address is a valid header");
            req.headers_mut().insert(http::header::HOST, host);
        }
        let queued = Queued::new(&self.inner.queued);
        let permit = match tokio::time::timeout(
            self.inner.queue_timeout,
            self.inner.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            _ => {
                let mut resp = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server busy, retry later\n",
                );
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return resp;
            }
        };
        drop(queued);
        match &self.inner.executor {
            Executor::Proxy(pre) => self.handle_proxy(pre, req, permit).await,
            Executor::Wagi(pre) => self.handle_wagi(pre, req, remote, permit).await,
        }
    }

    fn limits(&self) -> MeteredLimits {
        let mut b = StoreLimitsBuilder::new().trap_on_grow_failure(true);
        let max = self.inner.max_memory.load(Ordering::Relaxed);
        if max != usize::MAX {
            b = b.memory_size(max);
        }
        MeteredLimits::new(b.build(), self.inner.meter.as_ref())
    }

    fn new_store<T: HasLimits + Send + 'static>(&self, data: T) -> Store<T> {
        new_store(self.inner.engine.wasmtime(), data, self.inner.timeout)
    }

    /// Runs a guest's future in the thread's lane (see `lane`), its CPU time
    /// metered, holding its execution slot until it ends.
    fn spawn_guest<F>(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        guest: F,
    ) -> impl Future<Output = Result<F::Output, lane::GuestTaskFailed>> + use<F>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        lane::spawn_guest(CpuTimed::new(
            async move {
                let _permit = permit;
                guest.await
            },
            self.inner.meter.clone(),
        ))
    }

    async fn handle_proxy<B>(
        &self,
        pre: &ProxyPre<ProxyState>,
        req: Request<B>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The guest runs apart from this request's task, in the thread's lane
        // (see `lane`): it may keep streaming the body after it has handed
        // over the response head. The permit and the store live as long as
        // the guest does.
        let guest = self.spawn_guest(permit, self.clone().run_proxy(pre.clone(), req, tx));
        match rx.await {
            Ok(Ok(resp)) => resp,
            Ok(Err(code)) => {
                tracing::warn!(error = ?code, "guest answered with an error code");
                text(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
            }
            // The guest dropped the response outparam without setting it: it
            // returned early or failed, or never started. Its end says which.
            Err(_) => match guest.await {
                Ok(ProxyEnd::Returned) => {
                    tracing::error!("guest returned without setting a response");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
                }
                Ok(ProxyEnd::Failed(e)) => guest_failure(&e),
                Ok(ProxyEnd::Refused(resp)) => resp,
                Err(e) => {
                    tracing::error!(error = %e, "guest task failed");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
                }
            },
        }
    }

    /// One instance of a proxy component, from its store to the end of the
    /// guest's handler; the response head goes out through `tx`.
    async fn run_proxy<B>(
        self,
        pre: ProxyPre<ProxyState>,
        req: Request<B>,
        tx: ResponseTx,
    ) -> ProxyEnd
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut builder = WasiCtxBuilder::new();
        self.inner.output.apply(&mut builder);
        self.inner.grants.apply(&mut builder);
        let mut store = self.new_store(self.proxy_state(builder));
        let resources = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .and_then(|req| {
                let out = store.data_mut().http().new_response_outparam(tx)?;
                Ok((req, out))
            });
        let (req, out) = match resources {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "bad request");
                return ProxyEnd::Refused(text(StatusCode::BAD_REQUEST, "bad request\n"));
            }
        };
        let run = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        };
        match with_deadline(self.inner.timeout, run).await {
            Ok(()) => ProxyEnd::Returned,
            Err(e) => ProxyEnd::Failed(e),
        }
    }

    async fn handle_wagi<B>(
        &self,
        pre: &wasmtime::InstancePre<WagiState>,
        req: Request<B>,
        remote: Option<SocketAddr>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_WAGI_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let too_large = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                return if too_large {
                    text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
                } else {
                    text(StatusCode::BAD_REQUEST, "failed to read request body\n")
                };
            }
        };
        // Run through the thread's lane (see `lane`), like a proxy instance.
        let guest = self.spawn_guest(
            permit,
            self.clone().run_wagi(pre.clone(), parts, body, remote),
        );
        let stdout = match guest.await {
            Ok(Ok(stdout)) => stdout,
            Ok(Err(resp)) => return resp,
            Err(e) => {
                tracing::error!(error = %e, "guest task failed");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n");
            }
        };
        match parse_cgi(&stdout) {
            Ok(resp) => resp.map(|b| b.map_err(|n: Infallible| match n {}).boxed_unsync()),
            Err(e) => {
                tracing::error!(error = %e, "WAGI module wrote an invalid CGI response");
                text(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
            }
        }
    }

    /// One instance of a WAGI module, from its store to its exit: its
    /// standard output, or the response to give instead.
    async fn run_wagi(
        self,
        pre: wasmtime::InstancePre<WagiState>,
        parts: http::request::Parts,
        body: Bytes,
        remote: Option<SocketAddr>,
    ) -> Result<Bytes, Response<ResponseBody>> {
        let stdout = MemoryOutputPipe::new(MAX_WAGI_OUTPUT);
        let mut builder = WasiCtxBuilder::new();
        builder
            .args(&cgi_args(&parts.uri))
            .envs(&cgi_env(&parts, body.len(), self.inner.listen, remote))
            .stdin(MemoryInputPipe::new(body))
            .stdout(stdout.clone());
        self.inner.output.apply_stderr(&mut builder);
        self.inner.grants.apply(&mut builder);
        let mut store = self.new_store(self.wagi_state(builder));
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        };
        let result = with_deadline(self.inner.timeout, run).await;
        drop(store);
        match result {
            Ok(()) => {}
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => {}
                Some(I32Exit(code)) => {
                    tracing::error!(code, "WAGI module exited with a failure status");
                    return Err(text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal server error\n",
                    ));
                }
                None => return Err(guest_failure(&e)),
            },
        }
        Ok(stdout.contents())
    }

    /// Serves connections from `listener` until `shutdown` resolves, then stops
    /// accepting and lets in-flight requests finish for up to `drain`.
    pub async fn serve(
        self,
        listener: TcpListener,
        max_connections: usize,
        drain: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> DrainReport {
        let conns = Arc::new(Semaphore::new(max_connections));
        self.serve_sharing(listener, conns, drain, shutdown).await
    }

    /// Serves on `threads` single-threaded runtimes ("thread per core") that
    /// share one listening socket, the connection limit and the request slots.
    /// A connection and every instance it creates stay on the thread that
    /// accepted it, so a request never wakes another thread (cross-thread
    /// wakeups showed up as the largest kernel cost in profiles of the
    /// multi-threaded runtime).
    ///
    /// `on_bound` is called with the bound address before serving starts; the
    /// server drains and returns once `shutdown` (polled on the calling thread)
    /// resolves.
    pub fn serve_per_core(
        self,
        server: &ServerConfig,
        threads: usize,
        on_bound: impl FnOnce(SocketAddr),
        shutdown: impl Future<Output = ()>,
    ) -> Result<DrainReport, ServeError> {
        let threads = threads.max(1);
        let (listen, drain) = (server.listen, server.drain_timeout.0);
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| ServeError::Bind {
                    addr: listen,
                    source,
                })
        };
        let main_rt = runtime()?;
        // A listening socket per thread in one SO_REUSEPORT group: the kernel
        // spreads connections over the threads by their addresses. (Threads
        // sharing one socket accepted greedily: the first one woken drained
        // the queue, so a burst of a few long HTTP/2 connections all landed
        // on one thread, and its streams with them.)
        let reuseport = threads > 1;
        // A group would also take in another process's listener on the port
        // (of the same user): find the port with a plain socket first, so a
        // port in use is an error as it always was.
        let listen = if reuseport {
            std::net::TcpListener::bind(listen)
                .and_then(|probe| probe.local_addr())
                .map_err(|source| ServeError::Bind {
                    addr: listen,
                    source,
                })?
        } else {
            listen
        };
        let listener = main_rt.block_on(async { bind_group(listen, server.backlog, reuseport) })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
        let std_listener = listener
            .into_std()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let conns = Arc::new(Semaphore::new(server.max_connections));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for i in 1..threads {
            let l = main_rt
                .block_on(async { bind_group(addr, server.backlog, true) })?
                .into_std()
                .map_err(|source| ServeError::Bind { addr, source })?;
            let rt = runtime()?;
            let (server, conns, mut stop) = (self.clone(), conns.clone(), stop_rx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("wisp-serve-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(l).expect("listener from std");
                        let stopped = async move {
                            let _ = stop.wait_for(|s| *s).await;
                        };
                        server.serve_sharing(listener, conns, drain, stopped).await
                    })
                })
                .map_err(|source| ServeError::Bind { addr, source })?;
            workers.push(handle);
        }
        on_bound(addr);
        let mut report = main_rt.block_on(async {
            let listener = TcpListener::from_std(std_listener).expect("listener from std");
            let stopped = async {
                shutdown.await;
                let _ = stop_tx.send(true);
            };
            self.clone()
                .serve_sharing(listener, conns, drain, stopped)
                .await
        });
        for w in workers {
            let r = w.join().expect("serving thread panicked");
            report.drained &= r.drained;
        }
        report.live_instances = self.live_instances();
        Ok(report)
    }

    /// [`serve`](Self::serve), with the connection limit shared with other
    /// threads serving this app (each on its own listener of one SO_REUSEPORT
    /// group, see [`bind_group`]).
    pub async fn serve_sharing(
        self,
        listener: TcpListener,
        conns: Arc<Semaphore>,
        drain: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> DrainReport {
        // On a current-thread runtime, instances start behind the thread's
        // other work (see `lane`); it outlives the drain below.
        let _lane = lane::Lane::install();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        // hyper's timeouts need a timer: without one the header-read
        // timeout is inert and a client that stalls mid-header holds its
        // connection slot forever.
        builder
            .http1()
            .keep_alive(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.inner.header_read_timeout);
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(self.inner.max_streams_per_connection);
        // Shared by every connection's task, which starts serving only once
        // its first byte has come.
        let builder = Arc::new(builder);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // Take a connection slot before accepting: past the limit, new
            // connections wait in the kernel's backlog instead of being accepted
            // and starved.
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                p = conns.clone().acquire_owned() => p.expect("semaphore never closed"),
            };
            let (stream, remote) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning; the
                        // connection stays in the backlog.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            // Responses are written whole; Nagle would hold small ones back until
            // the client's delayed ACK.
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(req, Some(remote)).await) }
            });
            // HTTP/1.1, or HTTP/2 when the client opens with its preface (h2c
            // with prior knowledge, as proxies and gRPC clients speak to a
            // backend): many requests in flight on one connection.
            let builder = Arc::clone(&builder);
            let watcher = graceful.watcher();
            let first_byte = self.inner.header_read_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                // A connection that sends nothing at all would wait in the
                // protocol detection, where no hyper timer runs, holding its
                // slot forever: it gets the header-read timeout too. (Once
                // bytes come, hyper's own timer bounds each header block,
                // the wait for the next request on a kept-alive connection
                // included.)
                let mut byte = [0u8; 1];
                if tokio::time::timeout(first_byte, stream.peek(&mut byte))
                    .await
                    .is_err()
                {
                    tracing::debug!(%remote, "connection sent nothing in time; closed");
                    return;
                }
                let conn = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, %remote, "connection ended with an error");
                }
            });
        }
        drop(listener);
        let open = graceful.count();
        tracing::info!(
            open_connections = open,
            "shutting down: draining in-flight requests"
        );
        let drained = tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_ok();
        DrainReport {
            drained,
            live_instances: self.live_instances(),
        }
    }
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Whether every connection finished within the drain timeout.
    pub drained: bool,
    /// Instances still alive when `serve` returned.
    pub live_instances: usize,
}

#[cfg(test)]
mod tests;
