//! Every Wasm image form: the raw-layer ones (CNCF artifact, runwasi's
//! component layer, Spin's / wasm-to-oci's content layer) that containerd
//! 1.6.20 stores without unpacking, read by the shim from the content store.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use wisp_oci::Shape;
use wisp_test_guests as guests;

use crate::layouts::write_layout;
use crate::support::{Containerd, NetNs, stderr, stdout, wait_status};
use wisp_test_guests::registry::TestRegistry;

/// Compiled modules in the node's cache: (path, mtime).
fn compiled(cache: &Path) -> Vec<(PathBuf, SystemTime)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "cwasm") {
                out.push((f.path(), f.metadata().unwrap().modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_raw_layer_form_runs_from_the_content_store() {
    let c = Containerd::start();
    for (shape, guest) in [
        (Shape::Artifact, guests::echo()),
        (Shape::Artifact, guests::echo_component()),
        (Shape::Runwasi, guests::echo_component()),
        (Shape::WasmContent, guests::echo()),
    ] {
        let name = format!("{shape}-{}", guest.file_stem().unwrap().to_string_lossy());
        let image = c.import_wasm(&name, &guest, shape);
        c.create_container(
            &image,
            &name,
            &["app.wasm", "args", "one", "two words"],
            &[],
            None,
        );
        let out = c.start_created(&name);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(stdout(&out), "args\none\ntwo words\n", "{name}");

        // The layer is kept on the node under its digest.
        let bytes = std::fs::read(&guest).unwrap();
        let digest = wisp_oci::sha256_digest(&bytes);
        let blob = c
            .dir
            .path()
            .join("cache/blobs/sha256")
            .join(&digest["sha256:".len()..]);
        assert_eq!(std::fs::read(&blob).unwrap(), bytes, "{name}");
    }

    // Env from the container and exit codes, as with any image.
    let image = c.import_wasm("exit", &guests::echo(), Shape::Artifact);
    c.create_container(&image, "exit", &["app.wasm", "exit", "42"], &[], None);
    assert_eq!(c.start_created("exit").status.code(), Some(42));
    c.create_container(
        &image,
        "env",
        &["app.wasm", "env", "MODE"],
        &["MODE=prod"],
        None,
    );
    assert_eq!(stdout(&c.start_created("env")), "MODE=prod\n");
}

#[test]
fn compiled_code_is_cached_by_digest_across_shims() {
    let c = Containerd::start();
    let cache = c.dir.path().join("cache");
    let artifact = c.import_wasm("cached", &guests::echo(), Shape::Artifact);
    c.create_container(&artifact, "first", &["app.wasm", "args", "1"], &[], None);
    let out = c.start_created("first");
    assert!(out.status.success(), "{}", stderr(&out));
    let after_first = compiled(&cache);
    assert_eq!(after_first.len(), 1, "{after_first:?}");

    // Another container is another shim process: it compiles nothing, even
    // from an image of another form holding the same bytes.
    c.create_container(&artifact, "second", &["app.wasm", "args", "2"], &[], None);
    assert_eq!(stdout(&c.start_created("second")), "args\n2\n");
    let image = c.import_wasm("cached-image", &guests::echo(), Shape::Image);
    let out = c.run(
        crate::support::WISP,
        &image,
        "third",
        &["/app.wasm", "args", "3"],
    );
    assert_eq!(stdout(&out), "args\n3\n", "{}", stderr(&out));
    assert_eq!(compiled(&cache), after_first);
}

#[test]
fn an_http_component_from_a_runwasi_image_serves() {
    let c = Containerd::start();
    let netns = NetNs::new("img-http");
    let image = c.import_wasm("http", &guests::http_hello(), Shape::Runwasi);
    // No args at all: the module's title becomes argv[0].
    c.create_container(&image, "web", &[], &["PORT=8081"], Some(&netns.path()));
    c.ok(&["tasks", "start", "-d", "web"]);
    wait_status(&c, "web", "RUNNING");
    let reply = netns.wait_get(8081, "/");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("hello from wisp"), "{reply}");
    assert_eq!(c.kill_and_delete("web"), 137);
    c.ok(&["containers", "rm", "web"]);
}

#[test]
fn bad_images_fail_create_naming_the_image_and_the_problem() {
    let c = Containerd::start();
    let import = |name: &str, config: (&str, &[u8]), layers: &[(&str, &[u8])]| {
        let reference = format!("docker.io/wisp-test/{name}:latest");
        let tar = c.dir.path().join(format!("{name}.tar"));
        write_layout(&reference, &tar, config, layers, ("wasi", "wasm"));
        c.ok(&[
            "images",
            "import",
            "--all-platforms",
            "--no-unpack",
            tar.to_str().unwrap(),
        ]);
        reference
    };
    let oci_config = (
        wisp_oci::media_type::OCI_CONFIG,
        &br#"{"architecture":"wasm","os":"wasi","rootfs":{"type":"layers","diff_ids":[]}}"#[..],
    );
    let wasm_config = (
        wisp_oci::media_type::WASM_CONFIG,
        &br#"{"architecture":"wasm","os":"wasip1","layerDigests":[]}"#[..],
    );

    let unknown = import(
        "unknown",
        oci_config,
        &[("application/vnd.example.unknown", b"\0asm\x01\0\0\0")],
    );
    c.create_container(&unknown, "unknown", &["app.wasm"], &[], None);
    let out = c.start_created("unknown");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("image `{unknown}`"))
            && err.contains("unknown layer media type `application/vnd.example.unknown`"),
        "{err}"
    );

    let broken = import(
        "broken",
        wasm_config,
        &[(
            wisp_oci::media_type::WASM_LAYER,
            b"\0asm\x01\0\0\0\x01\xffbroken",
        )],
    );
    c.create_container(&broken, "broken", &[], &[], None);
    let out = c.start_created("broken");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("failed to load `"), "{err}");

    let two = import(
        "two",
        wasm_config,
        &[
            (wisp_oci::media_type::WASM_LAYER, b"\0asm\x01\0\0\0"),
            (wisp_oci::media_type::WASM_LAYER, b"\0asm\x01\0\0\0\0\x01\0"),
        ],
    );
    c.create_container(&two, "two", &["other.wasm"], &[], None);
    let err = stderr(&c.start_created("two"));
    assert!(err.contains("has 2 Wasm layers"), "{err}");

    // A Linux image whose entrypoint is missing has no Wasm to fall back on.
    let busybox = c.import_busybox();
    let out = c.run(crate::support::WISP, &busybox, "missing", &["/missing"]);
    let err = stderr(&out);
    assert!(
        err.contains("entrypoint `/missing` does not exist")
            && err.contains(&format!("image `{busybox}` has no Wasm layer")),
        "{err}"
    );
    // No shim of these failed containers stays behind.
    let address = c.address().to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !crate::host::processes_matching("containerd-shim-wisp-v1", &address).is_empty() {
        assert!(std::time::Instant::now() < deadline, "a shim is left");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn ctr_pulls_an_image_pushed_to_a_registry_and_runs_it() {
    let c = Containerd::start();
    let registry = TestRegistry::start(&c.dir.path().join("registry"), &[]);
    // containerd's own pull, over the distribution API, unpacking the layer.
    let image = c.pull_pushed_wasm(&registry, "echo", &guests::echo(), Shape::Image);
    let out = c.run(
        crate::support::WISP,
        &image,
        "pulled",
        &["/app.wasm", "args", "pulled"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "args\npulled\n");
}
