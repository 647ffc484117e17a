use super::*;

#[test]
fn cgi_output_parses() {
    let r = parse_cgi(b"Content-Type: text/plain\nX-A: 1\n\nbody\n").unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["x-a"], "1");
    let r = parse_cgi(b"Status: 201 Created\r\nContent-Type: a/b\r\n\r\nx").unwrap();
    assert_eq!(r.status(), 201);
    let r = parse_cgi(b"Location: /elsewhere\n\n").unwrap();
    assert_eq!(r.status(), 302);
    assert!(matches!(
        parse_cgi(b"Content-Type: x\nno end"),
        Err(CgiError::NoHeaderEnd)
    ));
    assert!(matches!(
        parse_cgi(b"garbage\n\n"),
        Err(CgiError::BadHeader(_))
    ));
    assert!(matches!(
        parse_cgi(b"Status: abc\n\n"),
        Err(CgiError::BadStatus(_))
    ));
    assert!(matches!(
        parse_cgi(b"Status: 99\n\n"),
        Err(CgiError::BadStatus(_))
    ));
}

#[test]
fn cgi_args_and_env() {
    let uri: http::Uri = "/p/q?a=b%20c&&d+e&f%zz".parse().unwrap();
    assert_eq!(cgi_args(&uri), vec!["/p/q", "a=b c", "d e", "f%zz"]);
    let req = Request::builder()
        .method("POST")
        .uri("/x?y=1")
        .header("host", "example.test:8080")
        .header("x-test", "one")
        .header("x-test", "two")
        .header("authorization", "secret")
        .header("content-type", "text/plain")
        .body(())
        .unwrap();
    let (parts, ()) = req.into_parts();
    let env = cgi_env(
        &parts,
        5,
        "127.0.0.1:3000".parse().unwrap(),
        Some("127.0.0.9:5555".parse().unwrap()),
    );
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("REQUEST_METHOD"), Some("POST"));
    assert_eq!(get("PATH_INFO"), Some("/x"));
    assert_eq!(get("QUERY_STRING"), Some("y=1"));
    assert_eq!(get("SERVER_NAME"), Some("example.test"));
    assert_eq!(get("SERVER_PORT"), Some("8080"));
    assert_eq!(get("CONTENT_LENGTH"), Some("5"));
    assert_eq!(get("CONTENT_TYPE"), Some("text/plain"));
    assert_eq!(get("HTTP_X_TEST"), Some("one, two"));
    assert_eq!(get("REMOTE_ADDR"), Some("127.0.0.9"));
    assert_eq!(get("X_FULL_URL"), Some("http://example.test:8080/x?y=1"));
    assert_eq!(get("HTTP_AUTHORIZATION"), None);
}

/// The host frames a WAGI response: a guest's framing and hop-by-hop
/// headers are dropped, only final statuses pass, and the header block is
/// bounded in lines and bytes.
#[test]
fn cgi_output_cannot_frame_the_response() {
    let r = parse_cgi(
        b"Content-Length: 5\nTransfer-Encoding: chunked\nConnection: keep-alive\n\
          Keep-Alive: timeout=5\nUpgrade: h2c\nTE: trailers\nTrailer: x\n\
          Proxy-Connection: keep-alive\nX-Kept: 1\n\nhello and more",
    )
    .unwrap();
    let names: Vec<_> = r.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-kept"]);
    for status in ["100", "101", "199", "600", "999"] {
        assert!(
            matches!(
                parse_cgi(format!("Status: {status}\n\n").as_bytes()),
                Err(CgiError::BadStatus(_))
            ),
            "{status}"
        );
    }
    assert_eq!(parse_cgi(b"Status: 599\n\n").unwrap().status(), 599);
    let many: String = (0..=MAX_CGI_HEADERS)
        .map(|i| format!("X-{i}: v\n"))
        .collect();
    assert_eq!(
        parse_cgi(format!("{many}\n").as_bytes()).unwrap_err(),
        CgiError::TooManyHeaders
    );
    let long = format!("X-Big: {}\n\n", "a".repeat(MAX_CGI_HEAD));
    assert_eq!(
        parse_cgi(long.as_bytes()).unwrap_err(),
        CgiError::HeadTooLarge
    );
    // No end of the headers within the bound: too large, not "no end" later.
    let endless = "a".repeat(MAX_CGI_HEAD + 1);
    assert_eq!(
        parse_cgi(endless.as_bytes()).unwrap_err(),
        CgiError::HeadTooLarge
    );
}

/// A `Proxy` request header never becomes HTTP_PROXY (httpoxy).
#[test]
fn the_proxy_header_is_not_passed_to_cgi() {
    let req = Request::builder()
        .uri("/")
        .header("proxy", "http://evil.test:3128")
        .header("x-other", "kept")
        .body(())
        .unwrap();
    let (parts, ()) = req.into_parts();
    let env = cgi_env(&parts, 0, "127.0.0.1:3000".parse().unwrap(), None);
    assert!(env.iter().all(|(k, _)| k != "HTTP_PROXY"), "{env:?}");
    assert!(env.iter().any(|(k, v)| k == "HTTP_X_OTHER" && v == "kept"));
}
