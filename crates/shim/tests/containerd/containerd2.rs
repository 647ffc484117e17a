//! containerd 2.x, built from the Go module proxy by
//! `scripts/install-containerd2.sh`: there unpacking skips layers that are not
//! tarballs, so `ctr run` takes the raw-layer image shapes directly and the
//! shim reads their Wasm from the content store. The shim's task API (v2) is
//! the one 1.6 speaks; 2.x accepts it.

use wisp_oci::Shape;
use wisp_test_guests as guests;

use crate::support::{Containerd, WISP, stderr, stdout};
use wisp_test_guests::registry::TestRegistry;

#[test]
fn ctr_run_takes_every_image_shape_on_containerd_2() {
    let c = Containerd::start_v2();
    let version = c.ok(&["version"]);
    assert!(version.contains("Version:  2."), "{version}");

    for shape in [Shape::Image, Shape::Runwasi, Shape::WasmContent] {
        let image = c.import_wasm(&format!("echo-{shape}"), &guests::echo(), shape);
        let id = format!("run-{shape}");
        let out = c.run(WISP, &image, &id, &["/app.wasm", "args", "hello"]);
        assert!(out.status.success(), "{shape}: {}", stderr(&out));
        assert_eq!(stdout(&out), "args\nhello\n", "{shape}");
    }

    let image = c.import_wasm("exit", &guests::echo_component(), Shape::Runwasi);
    let out = c.run(WISP, &image, "exit", &["/app.wasm", "exit", "3"]);
    // A WASI 0.2 command reports only success or failure.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(c.exit_of("exit"), 1);

    // The CNCF artifact's config is not an image config, so ctr cannot make
    // a spec from it (ctr's limit, not the shim's); a client that writes its
    // own spec runs it.
    let artifact = c.import_wasm("artifact", &guests::echo(), Shape::Artifact);
    let out = c.run(WISP, &artifact, "artifact", &[]);
    assert!(
        stderr(&out).contains("unknown image config media type"),
        "{}",
        stderr(&out)
    );
    c.create_container(&artifact, "grpc", &["app.wasm", "args", "x"], &[], None);
    assert_eq!(stdout(&c.start_created("grpc")), "args\nx\n");
}

#[test]
fn ctr_pulls_raw_layer_images_from_a_registry_on_containerd_2() {
    let c = Containerd::start_v2();
    let registry = TestRegistry::start(&c.dir.path().join("registry"), &[]);
    for shape in [Shape::Runwasi, Shape::WasmContent] {
        let image = c.pull_pushed_wasm(&registry, &format!("echo-{shape}"), &guests::echo(), shape);
        let id = format!("pulled-{shape}");
        let out = c.run(WISP, &image, &id, &["/app.wasm", "args", "pulled"]);
        assert!(out.status.success(), "{shape}: {}", stderr(&out));
        assert_eq!(stdout(&out), "args\npulled\n", "{shape}");
    }
}
