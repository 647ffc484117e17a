//! `first-response`: times a server from process start to its first `200` response.
//!
//! Part of the benchmark helpers (`benches/http-load.sh`). Spawns the given command,
//! then every 200µs tries to connect to `127.0.0.1:PORT` and send `GET /`; as soon
//! as a response's status line says `200`, it prints the elapsed milliseconds since
//! the spawn on stdout, kills the command (SIGKILL) and exits 0.
//!
//! Usage: `first-response [--host IP] --port PORT [--path /] [--timeout SECS]
//! [--show-output | --log FILE] -- CMD [ARGS...]`
//!
//! The port must be free beforehand (checked), so a stale server cannot answer.
//! The command's stdout and stderr are discarded, shown with `--show-output`, or
//! written to a file with `--log FILE`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_micros(200);

struct Args {
    addr: SocketAddr,
    path: String,
    timeout: Duration,
    show_output: bool,
    log: Option<std::path::PathBuf>,
    command: Vec<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: first-response [--host IP] --port PORT [--path /] [--timeout SECS] [--show-output | --log FILE] -- CMD [ARGS...]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut host = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut port = None;
    let mut path = "/".to_owned();
    let mut timeout = Duration::from_secs(60);
    let mut show_output = false;
    let mut log = None;
    let mut args = std::env::args().skip(1);
    let mut command = Vec::new();
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--host" => host = value().parse().unwrap_or_else(|_| usage()),
            "--port" => port = Some(value().parse::<u16>().unwrap_or_else(|_| usage())),
            "--path" => path = value(),
            "--timeout" => {
                timeout = Duration::from_secs_f64(value().parse().unwrap_or_else(|_| usage()))
            }
            "--show-output" => show_output = true,
            "--log" => log = Some(value().into()),
            "--" => {
                command.extend(args.by_ref());
                break;
            }
            _ => usage(),
        }
    }
    let (Some(port), false) = (port, command.is_empty()) else {
        usage()
    };
    Args {
        addr: SocketAddr::new(host, port),
        path,
        timeout,
        show_output,
        log,
        command,
    }
}

/// One attempt: connect, send `GET`, read the status line. `Some(status)` if a
/// response head arrived.
fn probe(addr: SocketAddr, path: &str, budget: Duration) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, budget.max(Duration::from_millis(1))).ok()?;
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(budget.max(Duration::from_millis(1))));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let mut len = 0;
    // "HTTP/1.1 200" is 12 bytes.
    while len < 12 {
        let n = s.read(&mut buf[len..]).ok()?;
        if n == 0 {
            return None;
        }
        len += n;
    }
    let line = std::str::from_utf8(&buf[..len]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> ExitCode {
    let args = parse_args();
    if TcpStream::connect_timeout(&args.addr, Duration::from_millis(100)).is_ok() {
        eprintln!(
            "first-response: {} is already in use; pick a free port",
            args.addr
        );
        return ExitCode::from(2);
    }
    let (out, err) = if let Some(path) = &args.log {
        let file = match std::fs::File::create(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("first-response: cannot create {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let copy = file.try_clone().expect("duplicate log file handle");
        (Stdio::from(file), Stdio::from(copy))
    } else if args.show_output {
        (Stdio::inherit(), Stdio::inherit())
    } else {
        (Stdio::null(), Stdio::null())
    };
    let start = Instant::now();
    let mut child = match Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("first-response: failed to start `{}`: {e}", args.command[0]);
            return ExitCode::from(2);
        }
    };
    let deadline = start + args.timeout;
    let result = loop {
        let now = Instant::now();
        if now >= deadline {
            break Err(format!(
                "no 200 from {} within {:?}",
                args.addr, args.timeout
            ));
        }
        match probe(args.addr, &args.path, deadline - now) {
            Some(200) => break Ok(start.elapsed()),
            Some(other) => break Err(format!("first response was {other}, not 200")),
            None => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("the command exited ({status}) before answering"));
        }
        std::thread::sleep(POLL);
    };
    let _ = child.kill();
    let _ = child.wait();
    match result {
        Ok(elapsed) => {
            println!("{:.1}", elapsed.as_secs_f64() * 1e3);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("first-response: {e}");
            ExitCode::FAILURE
        }
    }
}
