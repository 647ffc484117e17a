//! A real OCI registry for tests: the CNCF Distribution registry
//! (`scripts/install-registry.sh`, found through `WISP_REGISTRY_BIN`), serving
//! plain HTTP on a loopback port of its own choosing, with its storage in a
//! directory the test owns. Killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running registry.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    addr: String,
    log: PathBuf,
    /// The token service of [`Auth::Token`].
    tokens: Option<TokenService>,
}

impl TestRegistry {
    /// Starts a registry storing under `dir`. With `users`, every request
    /// needs one of these `(user, password)` pairs (htpasswd, bcrypt).
    pub fn start(dir: &Path, users: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(dir).expect("create the registry's directory");
        let mut auth = String::new();
        if !users.is_empty() {
            let htpasswd = dir.join("htpasswd");
            let lines: String = users
                .iter()
                .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).expect("bcrypt")))
                .collect();
            std::fs::write(&htpasswd, lines).expect("write htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: wisp-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        Self::start_configured(dir, &auth)
    }

    /// Starts the registry with `auth`, the YAML of its `auth` section.
    fn start_configured(dir: &Path, auth: &str) -> Self {
        let bin = std::env::var_os("WISP_REGISTRY_BIN")
            .map(|d| PathBuf::from(d).join("registry"))
            .filter(|b| b.is_file())
            .expect(
                "WISP_REGISTRY_BIN names no registry build: run \
                 `export WISP_REGISTRY_BIN=$(bash scripts/install-registry.sh)`",
            );
        std::fs::create_dir_all(dir).expect("create the registry's directory");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:0\n  secret: wisp-test\n{auth}",
                dir.join("data").display()
            ),
        )
        .expect("write the registry config");
        let log = dir.join("registry.log");
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        // The registry logs the address it bound (`listening on 127.0.0.1:N`);
        // the rest of its log goes to a file for failures to show.
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&log_path).ok();
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if let Some(rest) = line.split("msg=\"listening on ").nth(1)
                    && let Some(t) = tx.take()
                {
                    let _ = t.send(rest.split('"').next().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the registry did not listen within {START_TIMEOUT:?}; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Self {
            child,
            addr,
            log,
            tokens: None,
        }
    }

    /// `127.0.0.1:PORT`: the registry part of references to it.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a [`TestRegistry`] lets clients in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Every request carries a user's password (HTTP Basic, htpasswd).
    Basic,
    /// Docker's token flow, as Docker Hub, GHCR and Harbor run it: the
    /// registry answers `401` with a `Bearer realm=...` challenge, the client
    /// gets a signed token for a scope from the realm (with the user's
    /// password, or none), and presents it.
    Token,
}

impl TestRegistry {
    /// Starts a registry storing under `dir` whose users log in through
    /// `auth`. Under [`Auth::Token`] an anonymous client gets a token that
    /// grants nothing, and a wrong password gets no token.
    pub fn start_with(dir: &Path, users: &[(&str, &str)], auth: Auth) -> Self {
        match auth {
            Auth::Basic => Self::start(dir, users),
            Auth::Token => {
                let tokens = TokenService::start(users);
                std::fs::create_dir_all(dir).expect("create the registry's directory");
                let jwks = dir.join("jwks.json");
                std::fs::write(&jwks, tokens.jwks()).expect("write the JWKS");
                let auth = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: {}\n    \
                     issuer: {}\n    jwks: {}\n",
                    tokens.addr,
                    token::SERVICE,
                    token::ISSUER,
                    jwks.display()
                );
                let mut registry = Self::start_configured(dir, &auth);
                registry.tokens = Some(tokens);
                registry
            }
        }
    }
}

/// The token service of a registry under [`Auth::Token`]: an HTTP server on
/// a loopback port that answers `GET /token?service=..&scope=..` with an
/// ES256 JWT, whose key the registry trusts through a JWKS file.
#[derive(Debug)]
struct TokenService {
    addr: std::net::SocketAddr,
    public_key: Vec<u8>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenService {
    fn start(users: &[(&str, &str)]) -> Self {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("load the P-256 key");
        let public_key = key.public_key().as_ref().to_vec();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the token service");
        let addr = listener.local_addr().expect("token service address");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let _ = token::answer(conn, &users, &key, &rng);
                    }
                }
            })
        };
        Self {
            addr,
            public_key,
            stop,
            thread: Some(thread),
        }
    }

    /// The key set the registry verifies tokens with.
    fn jwks(&self) -> String {
        // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
        let (x, y) = self.public_key[1..].split_at(32);
        format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"{}","x":"{}","y":"{}"}}]}}"#,
            token::KEY_ID,
            token::b64(x),
            token::b64(y)
        )
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept.
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

mod token {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::time::{SystemTime, UNIX_EPOCH};

    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use ring::signature::EcdsaKeyPair;

    pub const SERVICE: &str = "wisp-test-registry";
    pub const ISSUER: &str = "wisp-test-tokens";
    pub const KEY_ID: &str = "wisp-test-key";

    pub fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// One request, one answer, then the connection closes.
    pub fn answer(
        conn: TcpStream,
        users: &[(String, String)],
        key: &EcdsaKeyPair,
        rng: &ring::rand::SystemRandom,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let mut authorization = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("authorization")
            {
                authorization = Some(value.trim().to_owned());
            }
        }
        let target = request_line.split(' ').nth(1).unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let (status, body) = if path != "/token" {
            ("404 Not Found", String::from("{}"))
        } else {
            match subject(authorization.as_deref(), users) {
                Err(()) => (
                    "401 Unauthorized",
                    r#"{"details":"wrong user name or password"}"#.to_owned(),
                ),
                Ok(user) => {
                    let token = sign(key, rng, user.as_deref(), query);
                    (
                        "200 OK",
                        format!(
                            r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#
                        ),
                    )
                }
            }
        };
        let mut conn = conn;
        write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )?;
        conn.flush()
    }

    /// The user a request authenticates as: `Ok(None)` when it names none.
    fn subject(
        authorization: Option<&str>,
        users: &[(String, String)],
    ) -> Result<Option<String>, ()> {
        let Some(value) = authorization else {
            return Ok(None);
        };
        let encoded = value.strip_prefix("Basic ").ok_or(())?;
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| ())?;
        let decoded = String::from_utf8(decoded).map_err(|_| ())?;
        let (user, password) = decoded.split_once(':').ok_or(())?;
        users
            .iter()
            .any(|(u, p)| u == user && p == password)
            .then(|| Some(user.to_owned()))
            .ok_or(())
    }

    /// A JWT granting `user` every action of every scope it asked for, or
    /// nothing when anonymous.
    fn sign(
        key: &EcdsaKeyPair,
        rng: &ring::rand::SystemRandom,
        user: Option<&str>,
        query: &str,
    ) -> String {
        let mut access = Vec::new();
        for (name, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            if name != "scope" || user.is_none() {
                continue;
            }
            let scope = percent_decode(value);
            // repository:NAME:ACTION[,ACTION]; NAME may hold ':' only in a
            // port, which a repository name has not.
            let mut parts = scope.splitn(3, ':');
            let (Some(kind), Some(repo), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let actions: Vec<String> = actions.split(',').map(|a| format!("\"{a}\"")).collect();
            access.push(format!(
                r#"{{"type":"{kind}","name":"{repo}","actions":[{}]}}"#,
                actions.join(",")
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time after 1970")
            .as_secs();
        let header = format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{KEY_ID}"}}"#);
        let claims = format!(
            r#"{{"iss":"{ISSUER}","sub":"{}","aud":"{SERVICE}","exp":{},"nbf":{},"iat":{now},"jti":"{now}-{}","access":[{}]}}"#,
            user.unwrap_or(""),
            now + 300,
            now - 10,
            access.len(),
            access.join(",")
        );
        let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let signature = key.sign(rng, input.as_bytes()).expect("sign the token");
        format!("{input}.{}", b64(signature.as_ref()))
    }

    fn percent_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                },
                b'+' => out.push(b' '),
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
