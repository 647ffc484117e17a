//! `--config FILE`: a TOML file fills the same configuration as the flags, and
//! flags override it.

use crate::support::{Sandbox, Server, s};
use wisp_test_guests as guests;

const CONFIG: &str = r#"
[capabilities]
env = { GREETING = "from-file" }

[server]
listen = "127.0.0.1:0"
"#;

fn config_file(sb: &Sandbox) -> std::path::PathBuf {
    let path = sb.path("wisp.toml");
    std::fs::write(&path, CONFIG).unwrap();
    path
}

#[test]
fn config_file_sets_env_and_listen_address() {
    let sb = Sandbox::new();
    let config = config_file(&sb);
    // No --listen: the address comes from the file (port 0, not the default 3000).
    let server = Server::start(sb.cmd(["serve", "--config", s(&config), s(&guests::http_echo())]));
    assert!(server.addr.ip().is_loopback());
    assert_ne!(server.addr.port(), 3000, "[server] listen ignored");
    let r = server.get("/env?name=GREETING");
    assert_eq!((r.status, r.body.as_str()), (200, "from-file"), "{r:?}");
}

#[test]
fn flags_override_the_config_file() {
    let sb = Sandbox::new();
    let config = config_file(&sb);
    let server = Server::start(sb.cmd([
        "serve",
        "--config",
        s(&config),
        "--env",
        "GREETING=from-flag",
        s(&guests::http_echo()),
    ]));
    let r = server.get("/env?name=GREETING");
    assert_eq!((r.status, r.body.as_str()), (200, "from-flag"), "{r:?}");
}

#[test]
fn config_file_applies_to_run() {
    let sb = Sandbox::new();
    let config = config_file(&sb);
    let out = sb.run([
        "run",
        "--config",
        s(&config),
        s(&guests::echo()),
        "--",
        "env",
        "GREETING",
    ]);
    out.expect_code(0);
    assert_eq!(out.stdout, "GREETING=from-file\n", "{}", out.describe());
}
