//! Responses the host writes itself (health, stats, failures).

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use wasmtime::Trap;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The body type of every response.
pub type ResponseBody = HyperOutgoingBody;

pub(super) fn guest_failure(e: &wasmtime::Error) -> Response<ResponseBody> {
    if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
        tracing::error!("guest stopped: request deadline exceeded");
        return text(StatusCode::GATEWAY_TIMEOUT, "request timed out\n");
    }
    tracing::error!(error = ?e, "guest failed");
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
}

pub(super) fn text(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

/// A whole response the host answers itself.
pub(super) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<ResponseBody> {
    let mut resp = Response::new(
        Full::new(body)
            .map_err(|n: Infallible| match n {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    resp
}
