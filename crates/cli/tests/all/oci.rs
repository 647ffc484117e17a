//! `wisp oci build` and `wisp oci inspect`: both shapes, reproducible output,
//! and bad input that fails with one `error:` line and leaves no file behind.

use std::path::Path;

use crate::support::{Output, PROCESS_TIMEOUT, Sandbox, output, s};
use wisp_test_guests as guests;

/// Runs `wisp ARGS` in the sandbox's scratch directory (where default outputs go).
fn run_in_scratch(sb: &Sandbox, args: &[&str]) -> Output {
    let mut cmd = sb.cmd(args);
    cmd.current_dir(sb.scratch());
    output(cmd, None, PROCESS_TIMEOUT)
}

/// Names in `dir`, sorted.
pub(crate) fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A failure: non-zero exit, nothing on stdout, exactly one `error:` line, first,
/// mentioning `needle` somewhere in the cause chain.
#[track_caller]
pub(crate) fn assert_clean_error(out: &Output, needle: &str) {
    assert!(out.code.is_some_and(|c| c != 0), "{}", out.describe());
    assert_eq!(out.stdout, "", "{}", out.describe());
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    assert!(out.stderr.starts_with("error: "), "{}", out.describe());
    assert_eq!(
        out.stderr.matches("error:").count(),
        1,
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains(needle),
        "error does not mention `{needle}`: {}",
        out.describe()
    );
}

#[test]
fn builds_an_image_to_the_default_path_and_inspects_it() {
    let sb = Sandbox::new();
    let out = run_in_scratch(
        &sb,
        &[
            "oci",
            "build",
            s(&guests::hello()),
            "--name",
            "hello:latest",
            "--env",
            "A=b",
            "--",
            "x",
            "y",
        ],
    );
    out.expect_code(0);
    let archive = sb.path("hello_latest.oci.tar");
    assert!(archive.is_file(), "{}", out.describe());
    assert_eq!(
        entries(sb.scratch()),
        ["hello_latest.oci.tar"],
        "temp files left behind"
    );
    assert!(
        out.stdout.contains("hello_latest.oci.tar"),
        "{}",
        out.describe()
    );
    assert!(
        out.stdout.contains("docker.io/library/hello:latest"),
        "{}",
        out.describe()
    );

    // The printed digest is the manifest's, as the library reads it back.
    let layout = wisp_oci::read_layout_tar(&archive).unwrap();
    let images = layout.images().unwrap();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert!(
        out.stdout.contains(&image.descriptor.digest),
        "{}",
        out.describe()
    );
    assert_eq!(
        image.name.as_deref(),
        Some("docker.io/library/hello:latest")
    );
    let config = layout
        .image_config(&image.manifest)
        .unwrap()
        .config
        .unwrap();
    assert_eq!(config.entrypoint.unwrap(), ["/app.wasm"]);
    assert_eq!(config.env.unwrap(), ["A=b"]);
    assert_eq!(config.cmd.unwrap(), ["x", "y"]);
    assert_eq!(
        layout.wasm(&image.manifest).unwrap(),
        std::fs::read(guests::hello()).unwrap()
    );

    let out = sb.run(["oci", "inspect", s(&archive)]);
    out.expect_code(0);
    for expected in [
        "docker.io/library/hello:latest",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "platform: wasi/wasm",
        "wasm layers: none",
        "core module",
        "kind:     image (1 filesystem layer, 0 Wasm layers)",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing `{expected}`: {}",
            out.describe()
        );
    }
}

#[test]
fn builds_an_artifact_of_a_component_and_inspects_it() {
    let sb = Sandbox::new();
    let archive = sb.path("echo.tar");
    let out = sb.run([
        "oci",
        "build",
        s(&guests::echo_component()),
        "--name",
        "ghcr.io/wisp/echo:v1",
        "--shape",
        "artifact",
        "-o",
        s(&archive),
    ]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("ghcr.io/wisp/echo:v1"),
        "{}",
        out.describe()
    );
    assert!(out.stdout.contains("wasip2/wasm"), "{}", out.describe());

    let layout = wisp_oci::read_layout_tar(&archive).unwrap();
    let image = layout.images().unwrap().remove(0);
    let config = layout.wasm_config(&image.manifest).unwrap();
    assert_eq!(
        (config.os.as_str(), config.architecture.as_str()),
        ("wasip2", "wasm")
    );
    let component = config
        .component
        .expect("a component's config lists its world");
    assert!(
        component
            .exports
            .iter()
            .any(|e| e.starts_with("wasi:cli/run@0.2")),
        "{component:?}"
    );

    let out = sb.run(["oci", "inspect", s(&archive)]);
    out.expect_code(0);
    for expected in [
        "application/vnd.wasm.config.v0+json",
        "wasm layer: application/wasm sha256:",
        "platform: wasip2/wasm",
        "component",
        "kind:     Wasm artifact (1 Wasm layer)",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing `{expected}`: {}",
            out.describe()
        );
    }
}

#[test]
fn builds_are_reproducible_and_follow_source_date_epoch() {
    let sb = Sandbox::new();
    let build = |name: &str, epoch: Option<&str>| {
        let path = sb.path(name);
        let mut cmd = sb.cmd([
            "oci",
            "build",
            s(&guests::hello()),
            "--name",
            "hello",
            "-o",
            s(&path),
        ]);
        if let Some(e) = epoch {
            cmd.env("SOURCE_DATE_EPOCH", e);
        }
        output(cmd, None, PROCESS_TIMEOUT).expect_code(0);
        std::fs::read(path).unwrap()
    };
    let a = build("a.tar", None);
    let b = build("b.tar", None);
    assert!(a == b, "two builds of the same input differ");
    let c = build("c.tar", Some("1700000000"));
    let d = build("d.tar", Some("1700000000"));
    assert!(c == d, "two builds with the same SOURCE_DATE_EPOCH differ");
    assert!(a != c, "SOURCE_DATE_EPOCH had no effect");

    let mut cmd = sb.cmd([
        "oci",
        "build",
        s(&guests::hello()),
        "--name",
        "hello",
        "-o",
        s(&sb.path("e.tar")),
    ]);
    cmd.env("SOURCE_DATE_EPOCH", "yesterday");
    let out = output(cmd, None, PROCESS_TIMEOUT);
    assert_clean_error(&out, "SOURCE_DATE_EPOCH `yesterday`");
    assert!(!sb.path("e.tar").exists());
}

#[test]
fn non_wasm_input_fails_naming_it_and_writes_nothing() {
    let sb = Sandbox::new();
    let input = sb.path("notes.txt");
    std::fs::write(&input, "just some text, not a module\n").unwrap();
    let out = run_in_scratch(&sb, &["oci", "build", s(&input), "--name", "notes"]);
    assert_clean_error(&out, s(&input));
    assert!(
        out.stderr.contains("not a WebAssembly binary"),
        "{}",
        out.describe()
    );
    assert_eq!(entries(sb.scratch()), ["notes.txt"], "files left behind");
}

#[test]
fn bad_arguments_fail_cleanly_and_write_nothing() {
    let sb = Sandbox::new();
    let hello = s(&guests::hello()).to_owned();
    let missing = sb.path("missing.wasm");
    let cases: [(&[&str], &str); 5] = [
        (
            &["oci", "build", &hello, "--name", "Hello:latest"],
            "invalid image reference `Hello:latest`",
        ),
        (
            &["oci", "build", &hello, "--name", "hello@sha256:00"],
            "digest references are not supported",
        ),
        (
            &["oci", "build", s(&missing), "--name", "hello"],
            s(&missing),
        ),
        (
            &[
                "oci", "build", &hello, "--name", "hello", "--shape", "artifact", "--env", "A=b",
            ],
            "use the image shape",
        ),
        (
            &[
                "oci", "build", &hello, "--name", "hello", "--shape", "artifact", "--", "arg",
            ],
            "use the image shape",
        ),
    ];
    for (args, needle) in cases {
        let out = run_in_scratch(&sb, args);
        assert_clean_error(&out, needle);
        assert_eq!(
            entries(sb.scratch()),
            Vec::<String>::new(),
            "files left behind by {args:?}"
        );
    }
    // Output into a directory that does not exist.
    let out = sb.run([
        "oci",
        "build",
        &hello,
        "--name",
        "hello",
        "-o",
        s(&sb.path("no/such/dir/x.tar")),
    ]);
    assert_clean_error(&out, "x.tar");
}

#[test]
fn inspect_refuses_what_is_not_an_image_layout() {
    let sb = Sandbox::new();
    let text = sb.path("notes.txt");
    std::fs::write(&text, "just some text, not a tar archive\n").unwrap();
    let out = sb.run(["oci", "inspect", s(&text)]);
    assert_clean_error(&out, s(&text));

    let empty_dir = sb.path("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let out = sb.run(["oci", "inspect", s(&empty_dir)]);
    assert_clean_error(&out, "`oci-layout` is missing");

    let missing = sb.path("missing.tar");
    let out = sb.run(["oci", "inspect", s(&missing)]);
    assert_clean_error(&out, s(&missing));
}
