//! CGI as WAGI speaks it: a request's arguments and environment, and the
//! parsing of a guest's CGI response.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// WAGI arguments: the path, then each query parameter (`a=b&c` gives `a=b`, `c`),
/// percent-decoded.
pub fn cgi_args(uri: &http::Uri) -> Vec<String> {
    let mut args = vec![uri.path().to_owned()];
    if let Some(q) = uri.query() {
        args.extend(q.split('&').filter(|p| !p.is_empty()).map(percent_decode));
    }
    args
}

/// The CGI/1.1 environment of a request (RFC 3875, plus WAGI's `X_FULL_URL`),
/// with each request header as `HTTP_<NAME>`.
pub fn cgi_env(
    parts: &http::request::Parts,
    content_length: usize,
    listen: SocketAddr,
    remote: Option<SocketAddr>,
) -> Vec<(String, String)> {
    let uri = &parts.uri;
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| listen.to_string());
    let (server_name, server_port) = match host.rsplit_once(':') {
        Some((n, p)) if p.parse::<u16>().is_ok() => (n.to_owned(), p.to_owned()),
        _ => (host.clone(), listen.port().to_string()),
    };
    let header = |name: HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut env = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        (
            "SERVER_SOFTWARE".into(),
            concat!("wisp/", env!("CARGO_PKG_VERSION")).into(),
        ),
        ("SERVER_PROTOCOL".into(), format!("{:?}", parts.version)),
        ("SERVER_NAME".into(), server_name),
        ("SERVER_PORT".into(), server_port),
        ("REQUEST_METHOD".into(), parts.method.as_str().into()),
        ("SCRIPT_NAME".into(), String::new()),
        ("PATH_INFO".into(), uri.path().into()),
        ("PATH_TRANSLATED".into(), uri.path().into()),
        ("QUERY_STRING".into(), uri.query().unwrap_or("").into()),
        ("CONTENT_LENGTH".into(), content_length.to_string()),
        ("CONTENT_TYPE".into(), header(http::header::CONTENT_TYPE)),
        (
            "REMOTE_ADDR".into(),
            remote.map(|r| r.ip().to_string()).unwrap_or_default(),
        ),
        (
            "REMOTE_HOST".into(),
            remote.map(|r| r.ip().to_string()).unwrap_or_default(),
        ),
        ("X_MATCHED_ROUTE".into(), "/...".into()),
        (
            "X_FULL_URL".into(),
            format!(
                "http://{host}{}",
                uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
            ),
        ),
    ];
    for (name, value) in &parts.headers {
        // Content-Type and -Length have their own variables; Authorization is
        // withheld, as CGI servers do; `Proxy` would become HTTP_PROXY, which
        // HTTP libraries read as their proxy (httpoxy, CVE-2016-5385).
        if name == http::header::AUTHORIZATION
            || name == http::header::CONTENT_TYPE
            || name == http::header::CONTENT_LENGTH
            || name.as_str() == "proxy"
        {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        let key = format!(
            "HTTP_{}",
            name.as_str().to_ascii_uppercase().replace('-', "_")
        );
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(value);
            }
            None => env.push((key, value.to_owned())),
        }
    }
    env
}

/// Most header lines a guest's CGI response may have.
pub const MAX_CGI_HEADERS: usize = 100;
/// Largest header block (everything before the blank line) of a CGI response.
pub const MAX_CGI_HEAD: usize = 64 << 10;

/// Headers a guest may not set: the host frames the body and owns the
/// connection. Copied through, a guest's `Content-Length` made the host send
/// one length and a body of another, and a keep-alive client read the rest
/// as the answer to its next request (response splitting).
const HOST_OWNED: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// Errors of parsing a CGI response.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CgiError {
    /// No blank line ends the header block.
    #[error("no blank line after the CGI headers")]
    NoHeaderEnd,
    /// A header line without a colon, or not valid as an HTTP header.
    #[error("invalid CGI header line `{0}`")]
    BadHeader(String),
    /// A `Status` header that is not `NNN [reason]` with NNN in 200-599.
    #[error("invalid CGI Status `{0}` (a final status, 200 to 599, is required)")]
    BadStatus(String),
    /// More than [`MAX_CGI_HEADERS`] header lines.
    #[error("more than {MAX_CGI_HEADERS} CGI header lines")]
    TooManyHeaders,
    /// A header block over [`MAX_CGI_HEAD`] bytes.
    #[error("CGI headers over {MAX_CGI_HEAD} bytes")]
    HeadTooLarge,
}

/// Parses CGI output: header lines, a blank line, then the body. `Status: NNN`
/// sets the status; a `Location` without one means `302 Found` (RFC 3875 §6.2.3).
pub fn parse_cgi(out: &[u8]) -> Result<Response<Full<Bytes>>, CgiError> {
    let (head, body) = match split_head(out) {
        Some((head, _)) if head.len() > MAX_CGI_HEAD => return Err(CgiError::HeadTooLarge),
        Some(split) => split,
        None if out.len() > MAX_CGI_HEAD => return Err(CgiError::HeadTooLarge),
        None => return Err(CgiError::NoHeaderEnd),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = 0;
    let mut status = None;
    let mut headers = HeaderMap::new();
    for line in head
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
    {
        lines += 1;
        if lines > MAX_CGI_HEADERS {
            return Err(CgiError::TooManyHeaders);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| CgiError::BadHeader(line.to_owned()))?;
        let value = value.trim();
        if HOST_OWNED
            .iter()
            .any(|h| name.trim().eq_ignore_ascii_case(h))
        {
            tracing::debug!(
                header = name.trim(),
                "a framing header of the guest's CGI response is the host's to set; ignored"
            );
            continue;
        }
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            let code = code
                .parse::<u16>()
                .ok()
                .filter(|c| (200..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| CgiError::BadStatus(value.to_owned()))?;
            status = Some(code);
            continue;
        }
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| CgiError::BadHeader(line.to_owned()))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| CgiError::BadHeader(line.to_owned()))?;
        headers.append(name, value);
    }
    let status = status.unwrap_or(if headers.contains_key(http::header::LOCATION) {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(body)));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

fn split_head(out: &[u8]) -> Option<(&[u8], &[u8])> {
    // The header block ends at the first empty line, "\n\n" or "\r\n\r\n".
    let mut i = 0;
    while i < out.len() {
        if out[i] == b'\n' {
            let rest = &out[i + 1..];
            if rest.starts_with(b"\n") {
                return Some((&out[..i], &rest[1..]));
            }
            if rest.starts_with(b"\r\n") {
                return Some((&out[..i], &rest[2..]));
            }
        }
        i += 1;
    }
    None
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
