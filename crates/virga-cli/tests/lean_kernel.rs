//! The lean kernel (`[kernel] source = "build"`): built once from Debian's `linux-source` with
//! `kernel/cloud.config` and cached; the default image boots on it to the ready line; its
//! minimum RAM; a second build in another directory is byte-identical; a fragment that does
//! not fit, and an interrupted build, leave nothing in the cache.
//!
//! The first test to run builds the kernel (minutes; once per cache). The rest of the
//! end-to-end suite runs on this kernel with `VIRGA_TEST_KERNEL=lean` (docs/kernel.md).

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use image_builder::{apt, kbuild};

/// The default image on the lean kernel (built once per test process; the kernel once per cache).
fn lean_image() -> PathBuf {
    image("lean-default", &["--spec", lean_spec().to_str().unwrap()])
}

fn cache() -> apt::PackageCache {
    apt::PackageCache::new(apt::cache_dir())
}

/// The cached kernel an image was built with (`kernel.origin_sha256` is the cache key).
#[cfg(feature = "slow-tests")]
fn cached_kernel(out: &Path) -> (PathBuf, kbuild::BuildInfo) {
    let m = image_spec::ImageManifest::load(out).unwrap();
    let dir = kbuild::kernels_dir(&cache()).join(&m.kernel.origin_sha256[..16]);
    let info = serde_json::from_str(&std::fs::read_to_string(dir.join("build.json")).unwrap())
        .expect("build.json");
    (dir, info)
}

#[cfg(feature = "slow-tests")]
fn sha256(path: &Path) -> String {
    apt::sha256_file(path).unwrap()
}

#[test]
#[ignore = "builds the lean kernel (minutes, once per cache) and boots QEMU; run with --include-ignored (./dev test)"]
fn lean_kernel_boots_the_default_image_without_modules() {
    let out = lean_image();
    let m = image_spec::ImageManifest::load(&out).unwrap();
    assert!(
        m.kernel.origin.starts_with("build:linux-source-6.1="),
        "{m:?}"
    );
    assert!(m.kernel.release.ends_with("-virga-cloud"), "{m:?}");
    // Every driver the default spec asks for is built in: nothing to carry, nothing to load.
    assert_eq!(m.modules, Vec::<String>::new());
    let spec = image_spec::ImageSpec::parse(&lean_spec_text(), "lean", Path::new(".")).unwrap();
    let mut want = spec.kernel.modules.clone();
    want.sort();
    let mut got = m.builtin_modules.clone();
    got.sort();
    assert_eq!(got, want);
    let size = m.artifact("vmlinuz").unwrap().size;
    assert!(
        size <= 3 << 20,
        "bzImage {size} bytes is over the 3 MiB budget"
    );
    let o = run(virga()
        .args([
            "run",
            "--expect-ready",
            "--quiet",
            "--json",
            "--timeout",
            "90",
            "--out",
        ])
        .arg(&out));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}\n{stderr}", o.status.code());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["powered_off"], true, "{v}");
    let report: boot_contract::ReadyReport =
        serde_json::from_value(v["ready"].clone()).expect("ready report");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.modules_pending, 0, "{report:?}");
    let modules = report.stages.iter().find(|s| s.name == "modules").unwrap();
    assert_eq!(modules.result, boot_contract::StageResult::Skipped);
}

/// Whether the image reaches the ready line with this much RAM (`virga run`, as a user boots
/// it: user-mode network, SSH on).
fn reaches_ready(out: &Path, mib: u32) -> bool {
    let o = run(virga()
        .args([
            "run",
            "--expect-ready",
            "--quiet",
            "--json",
            "--timeout",
            "60",
            "--memory",
            &mib.to_string(),
            "--out",
        ])
        .arg(out));
    let ready = serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .is_ok_and(|v| v["ready"].is_object());
    eprintln!(
        "{mib} MiB: {} (exit {:?})",
        if ready { "ready" } else { "no ready line" },
        o.status.code()
    );
    ready
}

/// The least RAM (MiB, a multiple of 4 between 16 and 128) with which `out` reaches ready,
/// by bisection.
pub fn minimum_ram(out: &Path) -> u32 {
    let (mut lo, mut hi) = (16u32, 128u32);
    assert!(reaches_ready(out, hi), "no ready line even with {hi} MiB");
    if reaches_ready(out, lo) {
        return lo;
    }
    while hi - lo > 4 {
        let mid = (lo + hi) / 2 / 4 * 4;
        if reaches_ready(out, mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

#[test]
#[ignore = "boots QEMU several times; run with --include-ignored (./dev test)"]
fn lean_kernel_reaches_ready_in_at_most_48_mib() {
    let out = lean_image();
    let min = minimum_ram(&out);
    eprintln!("minimum RAM for the default image on the lean kernel: {min} MiB");
    assert!(
        min <= 48,
        "the default image on the lean kernel needs {min} MiB to reach ready (limit 48 MiB)"
    );
}

/// Compiling the kernel a second time costs some 14 minutes on a 2-core machine, more than the
/// CI budget allows next to everything else: this test is compiled only with the `slow-tests`
/// feature (`./dev test --slow`), and is not part of `./dev test`.
#[cfg(feature = "slow-tests")]
#[test]
#[ignore = "builds the lean kernel a second time (minutes, once per target dir); run with ./dev test --slow"]
fn lean_kernel_build_is_reproducible() {
    let out = lean_image();
    let (dir, info) = cached_kernel(&out);
    // The same source, settings and toolchain compiled again in another directory, at another
    // time (kept under target/, so this costs one build per target directory).
    let work = scratch("kernel-repro").join(&info.key[..16]);
    let second = work.join("bzImage");
    if !second.is_file() {
        let src = kbuild::prepare_source(&cache(), &info.source_package, &info.source_version)
            .expect("kernel source");
        let fragments = kbuild::fragments(&info.configs, Path::new(".")).unwrap();
        let settings = kbuild::settings(&fragments).unwrap();
        let tree = work.join("tree");
        let _ = std::fs::remove_dir_all(&tree);
        let built = kbuild::build_tree(&src, &settings, &tree, info.jobs, info.steps, &mut |_| {})
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(built.release, info.release);
        std::fs::copy(built.bzimage(), &second).unwrap();
        std::fs::copy(built.build_dir.join(".config"), work.join("config")).unwrap();
        let _ = std::fs::remove_dir_all(&tree);
    }
    assert_eq!(
        std::fs::read_to_string(work.join("config")).unwrap(),
        std::fs::read_to_string(dir.join("config")).unwrap(),
        ".config differs between two builds"
    );
    assert_eq!(
        sha256(&second),
        sha256(&dir.join("vmlinuz")),
        "bzImage differs between two builds ({} and {})",
        second.display(),
        dir.join("vmlinuz").display()
    );
    // No trace of the build machine or time in the image.
    let image = std::fs::read(&second).unwrap();
    let header = image_builder::kernel::bzimage_release(&image).unwrap();
    assert_eq!(header, info.release);
}

/// A spec for the lean kernel with an extra fragment (written next to it).
fn spec_with_fragment(dir: &Path, fragment: &str) -> PathBuf {
    std::fs::write(dir.join("extra.config"), fragment).unwrap();
    let text = lean_spec_text().replacen(
        "\nconfig = \"cloud\"\n",
        "\nconfig = [\"cloud\", \"extra.config\"]\n",
        1,
    );
    assert!(
        text.contains("\"extra.config\"]"),
        "lean spec changed shape"
    );
    let spec = dir.join("virga.toml");
    std::fs::write(&spec, text).unwrap();
    spec
}

/// Kernel builds in the cache that used a fragment named `extra.config`.
fn cached_with_extra() -> Vec<PathBuf> {
    let root = kbuild::kernels_dir(&cache());
    std::fs::read_dir(&root)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    std::fs::read_to_string(p.join("build.json"))
                        .is_ok_and(|t| t.contains("extra.config"))
                        || p.join("vmlinuz").exists() && !p.join("build.json").exists()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn temporaries() -> Vec<String> {
    let root = kbuild::kernels_dir(&cache());
    [root.clone(), root.join("src")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|d| d.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp-"))
        .collect()
}

#[test]
#[ignore = "configures and partly compiles a kernel (minutes); run with --include-ignored (./dev test)"]
fn interrupted_and_misfitting_builds_leave_nothing_in_the_cache() {
    lean_image(); // the source is unpacked, the guest binary built
    let dir = tempfile::tempdir().unwrap();

    // 1. A build interrupted while compiling (Ctrl-C reaches virga and make alike).
    let spec = spec_with_fragment(
        dir.path(),
        "# a configuration of its own, so that this build is not in the cache\n\
         CONFIG_LOCALVERSION=\"-virga-interrupted\"\n",
    );
    let out = dir.path().join("out");
    let mut child = {
        use std::os::unix::process::CommandExt;
        // Through `env --default-signal=INT`: a runner that started these tests in the
        // background (a non-interactive shell's `&`) hands down SIGINT ignored, and the
        // interrupt would then test nothing.
        std::process::Command::new("env")
            .arg("--default-signal=INT")
            .arg(env!("CARGO_BIN_EXE_virga"))
            .args(["build", "--spec"])
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("compiling: make") => break,
            Ok(l) => seen.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("the build never started compiling:\n{}", seen.join("\n"));
            }
        }
    }
    std::thread::sleep(Duration::from_secs(10));
    let group = format!("-{}", child.id());
    let _ = std::process::Command::new("kill")
        .args(["-INT", "--", &group])
        .status();
    let status = child.wait().unwrap();
    assert!(!status.success());
    // Whatever make was still doing, stop it before looking.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &group])
        .status();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(cached_with_extra(), Vec::<PathBuf>::new());
    assert!(!out.exists(), "an interrupted build left {}", out.display());
    assert!(
        !temporaries().is_empty(),
        "expected the interrupted build's temporary directory"
    );

    // 2. A fragment that does not fit: a renamed option and one whose dependency is off. The
    //    error names both; the interrupted build's leftovers are gone; nothing is cached.
    let spec = spec_with_fragment(
        dir.path(),
        "# an option this kernel does not have\nCONFIG_VIRTIO_NETT=y\n\
         # needs CONFIG_NETFILTER, which the cloud profile leaves off\nCONFIG_BRIDGE_NETFILTER=y\n",
    );
    let o = run(virga()
        .args(["build", "-q", "--spec"])
        .arg(&spec)
        .arg("--out")
        .arg(&out));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("CONFIG_VIRTIO_NETT"), "{err}");
    assert!(err.contains("CONFIG_BRIDGE_NETFILTER"), "{err}");
    assert!(err.contains("extra.config:2"), "{err}");
    assert!(err.contains("docs/kernel.md"), "{err}");
    assert!(!out.exists());
    assert_eq!(cached_with_extra(), Vec::<PathBuf>::new());
    assert_eq!(temporaries(), Vec::<String>::new());
}

#[test]
#[ignore = "builds the lean kernel (minutes, once per cache); run with --include-ignored (./dev test)"]
fn missing_kernel_features_are_named() {
    lean_image();
    let dir = tempfile::tempdir().unwrap();
    // The cloud profile has dm-verity built in but no veth (that is container-host's).
    let text = lean_spec_text().replacen(
        "\nconfig = \"cloud\"\n",
        "\nconfig = \"cloud\"\nfeatures = [\"CONFIG_DM_VERITY\", \"CONFIG_VETH\", \"CONFIG_BRIDGE\"]\n",
        1,
    );
    assert!(text.contains("CONFIG_BRIDGE\"]"), "lean spec changed shape");
    let spec = dir.path().join("virga.toml");
    std::fs::write(&spec, text).unwrap();
    let out = dir.path().join("out");
    let o = run(virga()
        .args(["build", "-q", "--spec"])
        .arg(&spec)
        .arg("--out")
        .arg(&out));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("CONFIG_VETH (needed by kernel.features[1]): not set"),
        "{err}"
    );
    assert!(
        err.contains("CONFIG_BRIDGE (needed by kernel.features[2]): not set"),
        "{err}"
    );
    assert!(!err.contains("CONFIG_DM_VERITY ("), "{err}");
    assert!(err.contains("kernel config fragment"), "{err}");
    assert!(!out.exists());
}
