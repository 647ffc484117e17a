//! `wisp oci push` and `wisp oci pull` against a real OCI registry (CNCF
//! Distribution on loopback, `wisp_test_guests::registry`): every shape makes
//! the round trip byte for byte, auth works the ways users log in, and bad
//! input fails cleanly with nothing written.

use crate::oci::{assert_clean_error, entries};
use crate::support::{Output, PROCESS_TIMEOUT, Sandbox, output, s};
use wisp_test_guests as guests;
use wisp_test_guests::registry::{Auth, TestRegistry};

fn wisp(sb: &Sandbox, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = sb.cmd(args);
    cmd.current_dir(sb.scratch());
    output(cmd, stdin, PROCESS_TIMEOUT)
}

/// `args` as the registry user `ann`, her password on stdin.
fn as_ann(sb: &Sandbox, args: &[&str], password: &[u8]) -> Output {
    let mut all = args.to_vec();
    all.extend(["--plain-http", "--username", "ann", "--password-stdin"]);
    wisp(sb, &all, Some(password))
}

/// A push with no credentials fails, naming the reference.
fn assert_anonymous_push_refused(sb: &Sandbox, app: &std::path::Path, reference: &str) {
    let anonymous = wisp(
        sb,
        &["oci", "push", s(app), reference, "--plain-http"],
        None,
    );
    assert_clean_error(&anonymous, "failed to push");
    assert!(
        anonymous.stderr.contains(reference),
        "{}",
        anonymous.describe()
    );
}

/// `sha256:...` from a `pushed REF@sha256:...` line.
fn pushed_digest(out: &Output) -> String {
    out.stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("pushed ")?
                .split_once('@')
                .map(|(_, d)| d.to_owned())
        })
        .unwrap_or_else(|| panic!("no `pushed` line: {}", out.describe()))
}

#[test]
fn every_shape_makes_the_round_trip_through_a_registry_byte_for_byte() {
    let sb = Sandbox::new();
    let reg = TestRegistry::start(&sb.path("registry"), &[]);
    let app = guests::hello();
    for shape in ["image", "artifact", "runwasi", "wasm-content"] {
        let reference = format!("{}/wisp/hello-{shape}:v1", reg.addr());
        let built = format!("built-{shape}.tar");
        let pulled = format!("pulled-{shape}.tar");
        wisp(
            &sb,
            &[
                "oci",
                "build",
                s(&app),
                "--name",
                &reference,
                "--shape",
                shape,
                "-o",
                &built,
            ],
            None,
        )
        .expect_code(0);

        let push = wisp(
            &sb,
            &[
                "oci",
                "push",
                s(&app),
                &reference,
                "--shape",
                shape,
                "--plain-http",
            ],
            None,
        );
        push.expect_code(0);
        assert!(
            push.stdout.contains("2 uploaded, 0 already there"),
            "{}\n{}",
            push.describe(),
            reg.log()
        );

        // A platform the image is not for is refused.
        let other = wisp(
            &sb,
            &[
                "oci",
                "pull",
                &reference,
                "--plain-http",
                "--platform",
                "linux/amd64",
                "-o",
                &pulled,
            ],
            None,
        );
        assert_clean_error(&other, "has no manifest for linux/amd64; it has: w");
        let platform = if shape == "artifact" {
            "wasip1/wasm"
        } else {
            "wasi/wasm"
        };
        let pull = wisp(
            &sb,
            &[
                "oci",
                "pull",
                &reference,
                "--plain-http",
                "--platform",
                platform,
                "-o",
                &pulled,
            ],
            None,
        );
        pull.expect_code(0);
        assert!(
            pull.stdout.contains(&pushed_digest(&push)),
            "{}",
            pull.describe()
        );
        let (a, b) = (
            std::fs::read(sb.path(&built)).unwrap(),
            std::fs::read(sb.path(&pulled)).unwrap(),
        );
        assert!(
            a == b,
            "{shape}: the pulled archive differs from the built one"
        );

        // What was pulled is an image wisp reads: the Wasm is there.
        let inspect = wisp(&sb, &["oci", "inspect", &pulled], None);
        inspect.expect_code(0);
        assert!(
            inspect.stdout.contains("core module"),
            "{}",
            inspect.describe()
        );
    }

    // An archive is pushed as it is: same digest under another tag, and the
    // registry already has every blob.
    let again = format!("{}/wisp/hello-image:v2", reg.addr());
    let push = wisp(
        &sb,
        &["oci", "push", "built-image.tar", &again, "--plain-http"],
        None,
    );
    push.expect_code(0);
    assert!(
        push.stdout.contains("0 uploaded, 2 already there"),
        "{}",
        push.describe()
    );
    let first = wisp(
        &sb,
        &[
            "oci",
            "pull",
            &format!("{}/wisp/hello-image:v1", reg.addr()),
            "--plain-http",
            "-o",
            "v1.tar",
        ],
        None,
    );
    assert!(
        first.stdout.contains(&pushed_digest(&push)),
        "{}",
        first.describe()
    );
}

#[test]
fn a_registry_with_auth_takes_flags_stdin_env_and_docker_login() {
    let sb = Sandbox::new();
    let reg = TestRegistry::start(&sb.path("registry"), &[("ann", "s3cret")]);
    let reference = format!("{}/team/app:v1", reg.addr());
    let app = guests::hello();

    assert_anonymous_push_refused(&sb, &app, &reference);
    let push_as_ann =
        |password: &[u8]| as_ann(&sb, &["oci", "push", s(&app), &reference], password);
    assert_clean_error(&push_as_ann(b"wrong\n"), "failed to push");
    let ok = push_as_ann(b"s3cret\n");
    ok.expect_code(0);

    // The environment.
    let mut cmd = sb.cmd(["oci", "pull", &reference, "--plain-http", "-o", "env.tar"]);
    cmd.current_dir(sb.scratch())
        .env("WISP_REGISTRY_USERNAME", "ann")
        .env("WISP_REGISTRY_PASSWORD", "s3cret");
    output(cmd, None, PROCESS_TIMEOUT).expect_code(0);

    // What `docker login` saved.
    let docker = sb.path("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YW5uOnMzY3JldA=="}}}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    let mut cmd = sb.cmd([
        "oci",
        "pull",
        &reference,
        "--plain-http",
        "-o",
        "docker.tar",
    ]);
    cmd.current_dir(sb.scratch()).env("DOCKER_CONFIG", &docker);
    output(cmd, None, PROCESS_TIMEOUT).expect_code(0);
    assert_eq!(
        std::fs::read(sb.path("env.tar")).unwrap(),
        std::fs::read(sb.path("docker.tar")).unwrap()
    );
}

/// Docker's token flow, which Docker Hub, GHCR and Harbor use: the registry
/// sends clients to a token service, and the token carries what they may do.
#[test]
fn a_token_auth_registry_gives_the_user_a_token_and_strangers_nothing() {
    let sb = Sandbox::new();
    let reg = TestRegistry::start_with(&sb.path("registry"), &[("ann", "s3cret")], Auth::Token);
    let reference = format!("{}/team/app:v1", reg.addr());
    let app = guests::hello();

    // No user: the token grants nothing, and the push says so.
    assert_anonymous_push_refused(&sb, &app, &reference);
    // A wrong password: the token service refuses.
    let wrong = as_ann(&sb, &["oci", "push", s(&app), &reference], b"wrong\n");
    assert_clean_error(&wrong, "failed to push");
    assert!(
        wrong.stderr.contains("wrong user name or password"),
        "{}",
        wrong.describe()
    );

    let pushed = as_ann(&sb, &["oci", "push", s(&app), &reference], b"s3cret\n");
    pushed.expect_code(0);
    let digest = pushed_digest(&pushed);
    assert!(
        reg.log().contains("authorized request"),
        "the registry saw no token: {}",
        reg.log()
    );

    let pulled = as_ann(
        &sb,
        &["oci", "pull", &reference, "-o", "app.tar"],
        b"s3cret\n",
    );
    pulled.expect_code(0);
    let built = wisp(
        &sb,
        &[
            "oci",
            "build",
            s(&app),
            "--name",
            &reference,
            "-o",
            "built.tar",
        ],
        None,
    );
    built.expect_code(0);
    assert_eq!(
        std::fs::read(sb.path("app.tar")).unwrap(),
        std::fs::read(sb.path("built.tar")).unwrap()
    );
    assert!(
        pulled.stdout.contains(digest.trim_start_matches("sha256:")),
        "{}",
        pulled.describe()
    );

    // Pulling needs a token too.
    let stranger = wisp(
        &sb,
        &[
            "oci",
            "pull",
            &reference,
            "--plain-http",
            "-o",
            "stranger.tar",
        ],
        None,
    );
    assert_clean_error(&stranger, "failed to pull");
    assert!(!sb.path("stranger.tar").exists());
}

#[test]
fn bad_pushes_and_pulls_fail_naming_the_input_and_write_nothing() {
    let sb = Sandbox::new();
    let reg = TestRegistry::start(&sb.path("registry"), &[]);
    let reference = format!("{}/wisp/app:v1", reg.addr());
    std::fs::write(sb.path("notes.txt"), "not an image").unwrap();
    let before = entries(sb.scratch());

    let out = wisp(
        &sb,
        &["oci", "push", "notes.txt", &reference, "--plain-http"],
        None,
    );
    assert_clean_error(
        &out,
        "`notes.txt` is neither Wasm nor an image-layout archive",
    );
    let out = wisp(
        &sb,
        &["oci", "push", "missing.wasm", &reference, "--plain-http"],
        None,
    );
    assert_clean_error(&out, "failed to read `missing.wasm`");
    let out = wisp(
        &sb,
        &[
            "oci",
            "push",
            s(&guests::hello()),
            "Bad Ref",
            "--plain-http",
        ],
        None,
    );
    assert_clean_error(&out, "invalid image reference `Bad Ref`");

    let missing = format!("{}/wisp/missing:v1", reg.addr());
    let out = wisp(
        &sb,
        &["oci", "pull", &missing, "--plain-http", "-o", "m.tar"],
        None,
    );
    assert_clean_error(&out, &format!("`{missing}` is not in the registry"));
    let out = wisp(
        &sb,
        &[
            "oci",
            "pull",
            &missing,
            "--plain-http",
            "--platform",
            "wasi",
        ],
        None,
    );
    assert!(
        out.stderr.contains("`wasi` is not `os/arch[/variant]`"),
        "{}",
        out.describe()
    );
    // HTTPS against a plain-HTTP registry says what to do.
    let out = wisp(&sb, &["oci", "pull", &missing, "-o", "m.tar"], None);
    assert_clean_error(&out, "--plain-http");
    let out = wisp(
        &sb,
        &["oci", "pull", &missing, "--plain-http", "--username", "ann"],
        None,
    );
    assert_clean_error(&out, "--username `ann` needs a password");

    // A registry that is gone.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = wisp(
        &sb,
        &[
            "oci",
            "pull",
            &format!("{gone}/wisp/app:v1"),
            "--plain-http",
        ],
        None,
    );
    assert_clean_error(&out, &format!("failed to pull `{gone}/wisp/app:v1`"));

    // Packaging flags do not apply to an archive.
    wisp(
        &sb,
        &[
            "oci",
            "build",
            s(&guests::hello()),
            "--name",
            "a:v1",
            "-o",
            "a.tar",
        ],
        None,
    )
    .expect_code(0);
    let out = wisp(
        &sb,
        &[
            "oci",
            "push",
            "a.tar",
            &reference,
            "--plain-http",
            "--shape",
            "artifact",
        ],
        None,
    );
    assert_clean_error(&out, "apply to a `.wasm` SOURCE");

    let mut after = before;
    after.push("a.tar".to_owned());
    after.sort();
    assert_eq!(entries(sb.scratch()), after, "a failed command left files");
}
