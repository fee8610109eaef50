//! `virga build`: reproducibility, manifest contents, and bad input.

mod common;

use common::*;

fn read_all(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "downloads Debian packages with apt; run with --include-ignored (./dev test)"]
fn two_builds_are_byte_identical_and_manifest_is_right() {
    let a = scratch("repro-a");
    let b = scratch("repro-b");
    for out in [&a, &b] {
        let o = run(virga().args(["build", "-q", "--out"]).arg(out));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let fa = read_all(&a);
    let fb = read_all(&b);
    let names: Vec<&str> = fa.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["initramfs.img", "manifest.json", "vmlinuz"]);
    for ((na, da), (_, db)) in fa.iter().zip(&fb) {
        assert!(da == db, "{na} differs between two builds of the same spec");
    }
    let m = image_spec::ImageManifest::load(&a).unwrap();
    assert!(m.kernel.release.contains("cloud-amd64"), "{m:?}");
    assert!(m.kernel.origin.starts_with("debian:linux-image-"), "{m:?}");
    for want in [
        "virtio_net",
        "virtio_pci",
        "virtio_blk",
        "isofs",
        "vfat",
        "ata_piix",
        "sr_mod",
        "ena",
        "gve",
    ] {
        assert!(
            m.modules.iter().any(|x| x == want),
            "{want} not in {:?}",
            m.modules
        );
    }
    // Dependencies come before dependents.
    let pos = |n: &str| m.modules.iter().position(|x| x == n).unwrap();
    assert!(pos("virtio") < pos("virtio_net"));
    assert!(pos("libata") < pos("ata_piix"));
    // NVMe is built into the cloud kernel: accepted, nothing to carry.
    assert!(m.builtin_modules.iter().any(|x| x == "nvme"), "{m:?}");
    // Only what the closure needs: the cloud kernel has hundreds of modules.
    assert!(m.modules.len() < 40, "{}", m.modules.len());
    for art in &m.artifacts {
        let data = std::fs::read(a.join(&art.name)).unwrap();
        assert_eq!(data.len() as u64, art.size);
    }
    let g = m.guest_binary_size.unwrap();
    // 3 MiB covered PID 1, metadata and networking; the SSH server (russh + ring) adds about
    // 1.9 MiB (measured in docs/benchmarks.md); the disk stages (verified /usr, state growth)
    // and the update agent add about 0.8 MiB (4.83 MB on 2026-12-07). The budget is a ceiling
    // against regressions, 5 MiB; shrinking to 3 MiB is open work (issue 14).
    assert!(
        g < 5 * 1024 * 1024,
        "guest binary {g} bytes is over the 5 MiB budget"
    );
}

#[test]
fn malformed_spec_fails_with_one_clear_line_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.toml");
    std::fs::write(
        &spec,
        "name = \"x\"\n[kernel]\nmodulez = [\"virtio_net\"]\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run(virga()
        .args(["build", "--spec"])
        .arg(&spec)
        .arg("--out")
        .arg(&out));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("modulez") && err.contains("line 3"), "{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("virga: error"))
            .count(),
        1,
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn missing_spec_file_is_named() {
    let o = run(virga().args(["build", "--spec", "/nonexistent/virga.toml"]));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/virga.toml"));
}

#[test]
#[ignore = "asks apt; run with --include-ignored (./dev test)"]
fn missing_kernel_package_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("s.toml");
    std::fs::write(
        &spec,
        "name = \"x\"\n[kernel]\npackage = \"linux-image-does-not-exist\"\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run(virga()
        .args(["build", "-q", "--spec"])
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .env("VIRGA_CACHE_DIR", dir.path().join("cache")));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("linux-image-does-not-exist") && err.contains("apt-get update"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
#[ignore = "downloads Debian packages with apt; run with --include-ignored (./dev test)"]
fn unknown_module_suggests_the_right_name_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("s.toml");
    std::fs::write(
        &spec,
        "name = \"x\"\n[kernel]\nmodules = [\"virtio_nett\"]\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run(virga()
        .args(["build", "-q", "--spec"])
        .arg(&spec)
        .arg("--out")
        .arg(&out));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("virtio_nett") && err.contains("did you mean `virtio_net`"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn missing_qemu_names_the_package() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["vmlinuz", "initramfs.img"] {
        std::fs::write(dir.path().join(f), b"x").unwrap();
    }
    let manifest = include_str!("fixtures/manifest.json");
    std::fs::write(dir.path().join("manifest.json"), manifest).unwrap();
    let o = run(virga()
        .args(["run", "--expect-ready", "--accel", "tcg", "--out"])
        .arg(dir.path())
        .env("PATH", "/nonexistent"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("apt-get install qemu-system-x86"), "{err}");
}

#[test]
fn run_without_build_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(virga()
        .args(["run", "--expect-ready", "--out"])
        .arg(dir.path().join("nothing")));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("virga build"));
}

/// With apt unreachable, a build reuses the cached, checked packages and says so.
#[test]
#[ignore = "downloads Debian packages with apt; run with --include-ignored (./dev test)"]
fn offline_build_reuses_the_cache() {
    // Populate the cache (a no-op when an earlier test or build already did).
    let first = scratch("offline-a");
    let o = run(virga().args(["build", "-q", "--out"]).arg(&first));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // apt-cache and apt-get that fail, first on PATH: as if the mirror were unreachable.
    let fake = tempfile::tempdir().unwrap();
    for tool in ["apt-cache", "apt-get"] {
        let p = fake.path().join(tool);
        std::fs::write(
            &p,
            "#!/bin/sh\necho 'E: Temporary failure resolving deb.debian.org' >&2\nexit 100\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let second = scratch("offline-b");
    let o = run(virga()
        .args(["build", "--out"])
        .arg(&second)
        .env("PATH", path));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("apt was unreachable; cached packages were used"),
        "{stdout}"
    );
    for f in ["vmlinuz", "initramfs.img"] {
        assert_eq!(
            std::fs::read(first.join(f)).unwrap(),
            std::fs::read(second.join(f)).unwrap(),
            "{f}"
        );
    }
}
