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
