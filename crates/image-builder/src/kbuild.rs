//! The lean kernel (`[kernel] source = "build"`): Debian's `linux-source` package, of the same
//! version as the Debian kernel it stands in for, compiled with virga's configuration fragments
//! (`kernel/*.config` in the repository) on top of `make tinyconfig`, every driver built in.
//!
//! Built once per (source package and SHA-256, resulting settings, toolchain) and cached in
//! `<cache>/kernels/<key>/`. A build runs in `<cache>/kernels/tmp-…/` and is renamed into place
//! only when complete, under a lock, so an interrupted or failed build never leaves a kernel in
//! the cache that looks finished; leftovers of a killed build are removed by the next one.
//! The build is reproducible: fixed `KBUILD_BUILD_TIMESTAMP`, user, host and version, a clean
//! environment, and an out-of-tree build directory whose path does not reach the image.
//! Reference: `docs/kernel.md`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::apt::{FetchedPackage, PackageCache, PackageRecord, pinned_dependency, sanitize};
use crate::kconfig::{self, KernelConfig, Setting};
use crate::{BuildError, Progress};

/// The repository's `cloud` fragment.
pub const CLOUD_CONFIG: &str = include_str!("../../../kernel/cloud.config");
/// The repository's `container-host` fragment (applied on top of `cloud`).
pub const CONTAINER_HOST_CONFIG: &str = include_str!("../../../kernel/container-host.config");

/// Bump when the build recipe changes in a way that changes its output (commands, variables):
/// it is part of the cache key.
const RECIPE: &str = "virga-kernel-build 1: tinyconfig + fragments, olddefconfig, bzImage";

/// `KBUILD_BUILD_TIMESTAMP`: what `uname -v` shows instead of the build's date.
pub const BUILD_TIMESTAMP: &str = "Thu Jan  1 00:00:00 UTC 1970";
/// `KBUILD_BUILD_USER` and `KBUILD_BUILD_HOST`.
pub const BUILD_USER_HOST: &str = "virga";

/// Free space a build directory needs (a `cloud` build tree is about 200 MB; with margin).
const BUILD_SPACE: u64 = 1 << 30;
/// Free space unpacking the source needs (the tree is about 1.5 GiB).
const SOURCE_SPACE: u64 = 2048 << 20;
/// Compile steps of a build, when no earlier build says better (the `cloud` profile).
const DEFAULT_STEPS: usize = 2000;

/// A configuration fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// `cloud`, `container-host`, or the file name of the user's fragment.
    pub name: String,
    /// Its text.
    pub text: String,
}

/// One of the repository's fragments, by name.
pub fn builtin_fragment(name: &str) -> Option<&'static str> {
    match name {
        "cloud" => Some(CLOUD_CONFIG),
        "container-host" => Some(CONTAINER_HOST_CONFIG),
        _ => None,
    }
}

/// The fragments for `kernel.config`, in the order they apply: `container-host` brings
/// `cloud` first; other entries are paths (relative to `base_dir`). Each is parsed here, so a
/// syntax error names the file and line before anything is downloaded.
pub fn fragments(configs: &[String], base_dir: &Path) -> Result<Vec<Fragment>, BuildError> {
    let mut out: Vec<Fragment> = Vec::new();
    let mut push = |f: Fragment| {
        if !out.iter().any(|o| o.name == f.name) {
            out.push(f);
        }
    };
    for c in configs {
        if let Some(text) = builtin_fragment(c) {
            if c == "container-host" {
                push(Fragment {
                    name: "cloud".into(),
                    text: CLOUD_CONFIG.into(),
                });
            }
            push(Fragment {
                name: c.clone(),
                text: text.into(),
            });
        } else {
            let path = base_dir.join(c);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                BuildError::Kernel(format!(
                    "kernel.config: cannot read the fragment {}: {e}",
                    path.display()
                ))
            })?;
            push(Fragment {
                name: path.display().to_string(),
                text,
            });
        }
    }
    for f in &out {
        kconfig::parse_fragment(&f.text, &fragment_origin(&f.name))
            .map_err(|e| BuildError::Kernel(format!("kernel config fragment {e}")))?;
    }
    Ok(out)
}

fn fragment_origin(name: &str) -> String {
    if builtin_fragment(name).is_some() {
        format!("kernel/{name}.config")
    } else {
        name.to_owned()
    }
}

/// The settings of `fragments` combined (later ones win).
pub fn settings(fragments: &[Fragment]) -> Result<Vec<Setting>, BuildError> {
    let parsed = fragments
        .iter()
        .map(|f| kconfig::parse_fragment(&f.text, &fragment_origin(&f.name)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BuildError::Kernel(format!("kernel config fragment {e}")))?;
    Ok(kconfig::combine(&parsed))
}

/// The kernel series of a Debian kernel image package: `linux-image-6.1.0-57-cloud-amd64` →
/// `6.1`.
pub fn series_of(image_package: &str) -> Option<String> {
    let rest = image_package.strip_prefix("linux-image-")?;
    let mut parts = rest.split(['.', '-']);
    let major = parts
        .next()
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty())?;
    let minor = parts
        .next()
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty())?;
    Some(format!("{major}.{minor}"))
}

/// Which `linux-source` package and version stand in for `package` (`kernel.package`): a
/// `linux-source-*` package as named; a kernel image package or meta-package (followed to the
/// image package it pins, without downloading it) gives `linux-source-<series>` at the same
/// version. Returns the source package's record (resolved, not downloaded) and whether apt was
/// unreachable.
pub fn source_record(
    cache: &PackageCache,
    package: &str,
    version: Option<&str>,
) -> Result<(PackageRecord, bool), BuildError> {
    if package.starts_with("linux-source-") {
        return cache.resolve(package, version);
    }
    let (mut record, mut offline) = cache.resolve(package, version)?;
    for _ in 0..2 {
        if series_of(&record.package).is_some() {
            break;
        }
        let Some((dep, dep_version)) = pinned_dependency(&record.depends, "linux-image-") else {
            break;
        };
        let (r, o) = cache.resolve(&dep, Some(&dep_version))?;
        record = r;
        offline |= o;
    }
    let series = series_of(&record.package).ok_or_else(|| BuildError::Package {
        package: package.to_owned(),
        message: "with source = \"build\", kernel.package must be a Debian kernel image package \
                  (linux-image-…, e.g. linux-image-cloud-amd64) or a linux-source-… package"
            .into(),
    })?;
    let source = format!("linux-source-{series}");
    let (r, o) = cache
        .resolve(&source, Some(&record.version))
        .map_err(|e| match e {
            BuildError::Package { message, .. } => BuildError::Package {
                package: format!("{source}={}", record.version),
                message: format!(
                    "the kernel source matching {} {} is not available: {message}",
                    record.package, record.version
                ),
            },
            other => other,
        })?;
    Ok((r, offline || o))
}

/// The compiler, linker and make that build the kernel, by their `--version` lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toolchain {
    /// `gcc --version`, first line.
    pub gcc: String,
    /// `ld --version`, first line.
    pub ld: String,
    /// `make --version`, first line.
    pub make: String,
}

/// Debian packages a kernel build needs, for error messages (also in `./dev`'s lists).
pub const BUILD_DEPENDENCIES: &str = "gcc make flex bison bc libelf-dev xz-utils";

impl Toolchain {
    /// Asks the tools on PATH for their versions.
    pub fn detect() -> Result<Self, BuildError> {
        let first_line = |tool: &str| -> Result<String, BuildError> {
            let out = Command::new(tool)
                .arg("--version")
                .env("LC_ALL", "C")
                .output()
                .map_err(|e| {
                    BuildError::Kernel(format!(
                        "cannot run `{tool}` ({e}); building the kernel needs {BUILD_DEPENDENCIES} \
                         (apt-get install {BUILD_DEPENDENCIES}, or `./dev deps`)"
                    ))
                })?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned())
        };
        Ok(Self {
            gcc: first_line("gcc")?,
            ld: first_line("ld")?,
            make: first_line("make")?,
        })
    }
}

/// The cache key of a build: SHA-256 over the recipe, the source package (name, version,
/// SHA-256), the combined settings (comments and order of unrelated lines do not matter) and
/// the toolchain.
pub fn cache_key(source: &PackageRecord, settings: &[Setting], toolchain: &Toolchain) -> String {
    let mut h = Sha256::new();
    let mut line = |s: &str| {
        h.update(s.as_bytes());
        h.update(b"\n");
    };
    line(RECIPE);
    line(&format!(
        "{}={} {}",
        source.package, source.version, source.sha256
    ));
    let mut lines: Vec<String> = settings.iter().map(Setting::line).collect();
    lines.sort();
    for l in &lines {
        line(l);
    }
    line(&toolchain.gcc);
    line(&toolchain.ld);
    line(&toolchain.make);
    hex::encode(h.finalize())
}

/// What a cached kernel records about its build (`build.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// Kernel release (`6.1.192-virga-cloud`).
    pub release: String,
    /// `linux-source-6.1`.
    pub source_package: String,
    /// `6.1.192-3`.
    pub source_version: String,
    /// SHA-256 of the source `.deb`.
    pub source_sha256: String,
    /// Fragment names, in order.
    pub configs: Vec<String>,
    /// The cache key.
    pub key: String,
    /// The tools.
    pub toolchain: Toolchain,
    /// Wall time of the build (configuration + compilation), seconds.
    pub seconds: f64,
    /// `make -j` jobs.
    pub jobs: usize,
    /// Kbuild steps (`CC`, `LD`, … lines) the compilation printed.
    pub steps: usize,
    /// 1-minute load average when the build finished (the machine may be shared).
    pub load_average: Option<f64>,
}

/// A lean kernel in the cache.
#[derive(Debug, Clone)]
pub struct BuiltKernel {
    /// `<cache>/kernels/<key>`.
    pub dir: PathBuf,
    /// What `build.json` says.
    pub info: BuildInfo,
    /// Whether it was already in the cache.
    pub cached: bool,
    /// Whether apt was unreachable and cached records were used.
    pub offline: bool,
}

impl BuiltKernel {
    /// The bzImage.
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    /// The final `.config`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }
    /// `lib/modules/<release>` (holds `modules.builtin`: every driver is built in).
    pub fn modules_dir(&self) -> PathBuf {
        self.dir.join("lib/modules").join(&self.info.release)
    }
}

/// Inputs of [`build`].
#[derive(Debug, Clone)]
pub struct KernelRequest {
    /// `kernel.package`.
    pub package: String,
    /// `kernel.version`.
    pub version: Option<String>,
    /// The fragments, from [`fragments`].
    pub fragments: Vec<Fragment>,
    /// `make -j`; `None`: `$VIRGA_KERNEL_JOBS`, else the number of CPUs.
    pub jobs: Option<usize>,
}

/// The cache directory of lean kernels.
pub fn kernels_dir(cache: &PackageCache) -> PathBuf {
    cache.dir().join("kernels")
}

/// Returns the lean kernel for `req`, building it first unless the cache has it.
pub fn build(
    cache: &PackageCache,
    req: &KernelRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuiltKernel, BuildError> {
    let settings = settings(&req.fragments)?;
    let (record, offline) = source_record(cache, &req.package, req.version.as_deref())?;
    let toolchain = Toolchain::detect()?;
    let key = cache_key(&record, &settings, &toolchain);
    let root = kernels_dir(cache);
    let dir = root.join(&key[..16]);
    let configs: Vec<String> = req.fragments.iter().map(|f| f.name.clone()).collect();
    if let Some(info) = load_cached(&dir, &key) {
        return Ok(BuiltKernel {
            dir,
            info,
            cached: true,
            offline,
        });
    }
    std::fs::create_dir_all(&root).map_err(|e| BuildError::io(&root, e))?;
    let _lock = lock(&root, progress)?;
    // Another process may have built it while we waited.
    if let Some(info) = load_cached(&dir, &key) {
        return Ok(BuiltKernel {
            dir,
            info,
            cached: true,
            offline,
        });
    }
    remove_stale(&root);
    let fetched = cache.fetch(&record.package, Some(&record.version))?;
    progress(Progress::Detail(format!(
        "building Linux from {} {} with {} (once; cached in {})",
        record.package,
        record.version,
        configs.join(" + "),
        dir.display()
    )));
    let src = unpack_source(&root, &fetched, progress)?;
    let jobs = req.jobs.unwrap_or_else(default_jobs);
    let tmp = crate::apt::tempdir_in(&root)?;
    let result = (|| -> Result<BuildInfo, BuildError> {
        need_space(&tmp, BUILD_SPACE, "building the kernel")?;
        let estimate = previous_steps(&root).unwrap_or(DEFAULT_STEPS);
        let t = Instant::now();
        let out = build_tree(&src, &settings, &tmp, jobs, estimate, progress)?;
        let info = BuildInfo {
            release: out.release.clone(),
            source_package: record.package.clone(),
            source_version: record.version.clone(),
            source_sha256: record.sha256.clone(),
            configs: configs.clone(),
            key: key.clone(),
            toolchain: toolchain.clone(),
            seconds: t.elapsed().as_secs_f64(),
            jobs,
            steps: out.steps,
            load_average: load_average(),
        };
        collect(&out, &info, &tmp.join("out"))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(tmp.join("out"), &dir).map_err(|e| BuildError::io(&dir, e))?;
        Ok(info)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    let info = result?;
    Ok(BuiltKernel {
        dir,
        info,
        cached: false,
        offline,
    })
}

/// The unpacked source tree of `package` (a `linux-source-*` package) at `version`: fetched
/// and unpacked into the cache unless it is there already. For tests that compile the same
/// source again elsewhere.
pub fn prepare_source(
    cache: &PackageCache,
    package: &str,
    version: &str,
) -> Result<PathBuf, BuildError> {
    let root = kernels_dir(cache);
    std::fs::create_dir_all(&root).map_err(|e| BuildError::io(&root, e))?;
    let fetched = cache.fetch(package, Some(version))?;
    let _lock = lock(&root, &mut |_| {})?;
    unpack_source(&root, &fetched, &mut |_| {})
}

fn default_jobs() -> usize {
    std::env::var("VIRGA_KERNEL_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn load_cached(dir: &Path, key: &str) -> Option<BuildInfo> {
    let text = std::fs::read_to_string(dir.join("build.json")).ok()?;
    let info: BuildInfo = serde_json::from_str(&text).ok()?;
    (info.key == key && dir.join("vmlinuz").is_file() && dir.join("config").is_file())
        .then_some(info)
}

/// Compile steps of the most recent cached build, as the progress estimate.
fn previous_steps(root: &Path) -> Option<usize> {
    let mut best: Option<(std::time::SystemTime, usize)> = None;
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let p = e.path().join("build.json");
        let (Ok(meta), Ok(text)) = (std::fs::metadata(&p), std::fs::read_to_string(&p)) else {
            continue;
        };
        let Ok(info) = serde_json::from_str::<BuildInfo>(&text) else {
            continue;
        };
        let when = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        if best.is_none_or(|(w, _)| when > w) && info.steps > 0 {
            best = Some((when, info.steps));
        }
    }
    best.map(|(_, s)| s)
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Holds `<root>/.lock` for the whole build: one kernel build at a time per cache.
fn lock(root: &Path, progress: &mut dyn FnMut(Progress)) -> Result<std::fs::File, BuildError> {
    let path = root.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BuildError::io(&path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            progress(Progress::Detail(format!(
                "waiting for another virga kernel build to finish ({})",
                path.display()
            )));
            f.lock().map_err(|e| BuildError::io(&path, e))?;
            Ok(f)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(BuildError::io(&path, e)),
    }
}

/// Removes what an interrupted build left behind: temporary directories (the caller holds the
/// lock, so no build is using them).
fn remove_stale(root: &Path) {
    for dir in [root.to_owned(), root.join("src")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("tmp-") {
                tracing::info!(
                    "removing {} (left by an interrupted build)",
                    e.path().display()
                );
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Free bytes on the filesystem holding `path`.
pub fn free_space(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    #[allow(clippy::unnecessary_cast)]
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

fn need_space(path: &Path, need: u64, what: &str) -> Result<(), BuildError> {
    match free_space(path) {
        Some(free) if free < need => Err(BuildError::KernelBuild {
            step: what.to_owned(),
            message: format!(
                "not enough disk space in {}: {:.1} GiB free, about {:.1} GiB needed. Free some \
                 space, or set VIRGA_CACHE_DIR to a larger disk",
                path.display(),
                free as f64 / (1u64 << 30) as f64,
                need as f64 / (1u64 << 30) as f64
            ),
            log: None,
        }),
        _ => Ok(()),
    }
}

/// Unpacks the source package's `linux-source-*.tar.xz` once into `<root>/src/…`.
fn unpack_source(
    root: &Path,
    p: &FetchedPackage,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, BuildError> {
    let parent = root.join("src");
    let dest = parent.join(format!(
        "{}_{}_{}",
        p.record.package,
        sanitize(&p.record.version),
        &p.record.sha256[..16.min(p.record.sha256.len())]
    ));
    if dest.join(".complete").exists()
        && let Some(tree) = source_tree(&dest)
    {
        return Ok(tree);
    }
    std::fs::create_dir_all(&parent).map_err(|e| BuildError::io(&parent, e))?;
    need_space(&parent, SOURCE_SPACE, "unpacking the kernel source")?;
    progress(Progress::Detail(format!(
        "unpacking {} {} (once)",
        p.record.package, p.record.version
    )));
    let tmp = crate::apt::tempdir_in(&parent)?;
    let result = (|| {
        let debdir = tmp.join("deb");
        run_quiet(
            "unpacking the kernel source package",
            Command::new("dpkg-deb").arg("-x").arg(&p.deb).arg(&debdir),
        )?;
        let usr_src = debdir.join("usr/src");
        let tarball = std::fs::read_dir(&usr_src)
            .map_err(|e| BuildError::io(&usr_src, e))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("linux-source-") && n.ends_with(".tar.xz"))
            })
            .ok_or_else(|| BuildError::Package {
                package: p.record.package.clone(),
                message: "no /usr/src/linux-source-*.tar.xz in the package".into(),
            })?;
        run_quiet(
            "unpacking the kernel source (tar -xJf)",
            Command::new("tar")
                .arg("-xJf")
                .arg(&tarball)
                .arg("-C")
                .arg(&tmp),
        )?;
        std::fs::remove_dir_all(&debdir).map_err(|e| BuildError::io(&debdir, e))?;
        std::fs::write(tmp.join(".complete"), b"").map_err(|e| BuildError::io(&tmp, e))?;
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::rename(&tmp, &dest).map_err(|e| BuildError::io(&dest, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    source_tree(&dest).ok_or_else(|| BuildError::Package {
        package: p.record.package.clone(),
        message: format!("{} holds no kernel source tree", dest.display()),
    })
}

/// The `linux-source-*` directory (with a top-level Makefile) inside an unpacked source.
fn source_tree(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("Makefile").is_file() && p.join("Kconfig").is_file())
}

/// What [`build_tree`] produced.
#[derive(Debug, Clone)]
pub struct TreeBuild {
    /// The out-of-tree build directory.
    pub build_dir: PathBuf,
    /// Kernel release.
    pub release: String,
    /// Kbuild steps printed.
    pub steps: usize,
}

impl TreeBuild {
    /// The bzImage.
    pub fn bzimage(&self) -> PathBuf {
        self.build_dir.join("arch/x86/boot/bzImage")
    }
}

/// Configures and compiles the kernel in `src` with `settings` into `<work>/build`: `make
/// tinyconfig`, the settings merged in, `make olddefconfig`, every setting verified, `make
/// bzImage`. Logs go to `<work>/*.log`. Public so that tests can build the same kernel in
/// another directory and compare.
pub fn build_tree(
    src: &Path,
    settings: &[Setting],
    work: &Path,
    jobs: usize,
    estimate: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<TreeBuild, BuildError> {
    let build_dir = work.join("build");
    std::fs::create_dir_all(&build_dir).map_err(|e| BuildError::io(&build_dir, e))?;
    let make = |targets: &[&str]| {
        let mut c = Command::new("make");
        c.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", work)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env("KBUILD_BUILD_TIMESTAMP", BUILD_TIMESTAMP)
            .env("KBUILD_BUILD_USER", BUILD_USER_HOST)
            .env("KBUILD_BUILD_HOST", BUILD_USER_HOST)
            .env("KBUILD_BUILD_VERSION", "1")
            // Set (even empty), so no `+` is appended to the release for an unclean SCM tree.
            .env("LOCALVERSION", "")
            .arg("-C")
            .arg(src)
            .arg(format!("O={}", build_dir.display()))
            .arg("ARCH=x86_64")
            .args(targets);
        c
    };
    progress(Progress::Detail(format!(
        "configuring: make tinyconfig, {} settings from the fragments, make olddefconfig",
        settings.len()
    )));
    run_logged(
        "make tinyconfig",
        &mut make(&["tinyconfig"]),
        &work.join("tinyconfig.log"),
        &mut |_| {},
    )?;
    let config_path = build_dir.join(".config");
    let base =
        std::fs::read_to_string(&config_path).map_err(|e| BuildError::io(&config_path, e))?;
    std::fs::write(&config_path, kconfig::merge(&base, settings))
        .map_err(|e| BuildError::io(&config_path, e))?;
    run_logged(
        "make olddefconfig",
        &mut make(&["olddefconfig"]),
        &work.join("olddefconfig.log"),
        &mut |_| {},
    )?;
    let final_text =
        std::fs::read_to_string(&config_path).map_err(|e| BuildError::io(&config_path, e))?;
    let mismatches = kconfig::verify(&KernelConfig::parse(&final_text), settings);
    if !mismatches.is_empty() {
        return Err(BuildError::KernelConfig {
            source_dir: src.to_owned(),
            mismatches: mismatches.iter().map(ToString::to_string).collect(),
        });
    }
    let t = Instant::now();
    let mut steps = 0usize;
    let mut last = Instant::now() - Duration::from_secs(60);
    progress(Progress::Detail(format!(
        "compiling: make -j{jobs} bzImage (about {estimate} steps)"
    )));
    run_logged(
        "make bzImage",
        make(&["bzImage"]).arg(format!("-j{jobs}")),
        &work.join("make.log"),
        &mut |line| {
            if is_kbuild_step(line) {
                steps += 1;
                if last.elapsed() >= Duration::from_millis(250) {
                    last = Instant::now();
                    progress(Progress::Status(progress_line(
                        steps,
                        estimate,
                        t.elapsed(),
                        line,
                    )));
                }
            }
        },
    )?;
    progress(Progress::Detail(format!(
        "compiled in {} ({steps} steps)",
        human_duration(t.elapsed())
    )));
    let release_path = build_dir.join("include/config/kernel.release");
    let release = std::fs::read_to_string(&release_path)
        .map_err(|e| BuildError::io(&release_path, e))?
        .trim()
        .to_owned();
    Ok(TreeBuild {
        build_dir,
        release,
        steps,
    })
}

/// Whether a line of kbuild's output is one build step (`  CC      kernel/fork.o`).
pub fn is_kbuild_step(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("  ") else {
        return false;
    };
    let word: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    !word.is_empty()
        && word.len() <= 10
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && rest.len() > word.len()
}

/// `make bzImage: 812/~2000 steps (41%), 4m10s, about 6m left — CC kernel/fork.o`.
pub fn progress_line(done: usize, estimate: usize, elapsed: Duration, line: &str) -> String {
    let total = estimate.max(done).max(1);
    let pct = done * 100 / total;
    let left = if done >= 20 && done < total {
        let per = elapsed.as_secs_f64() / done as f64;
        format!(
            ", about {} left",
            human_duration(Duration::from_secs_f64(per * (total - done) as f64))
        )
    } else {
        String::new()
    };
    let what: String = line.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        "make bzImage: {done}/~{total} steps ({pct}%), {}{left} — {what}",
        human_duration(elapsed)
    )
}

/// `4m10s`, `12s`, `1h02m`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Copies what the image and the checks need out of the build tree.
fn collect(out: &TreeBuild, info: &BuildInfo, dest: &Path) -> Result<(), BuildError> {
    let modules = dest.join("lib/modules").join(&out.release);
    std::fs::create_dir_all(&modules).map_err(|e| BuildError::io(&modules, e))?;
    let copy = |from: PathBuf, to: PathBuf| -> Result<(), BuildError> {
        std::fs::copy(&from, &to)
            .map(drop)
            .map_err(|e| BuildError::KernelBuild {
                step: "copying the kernel into the cache".into(),
                message: format!("{} → {}: {e}", from.display(), to.display()),
                log: None,
            })
    };
    copy(out.bzimage(), dest.join("vmlinuz"))?;
    copy(out.build_dir.join(".config"), dest.join("config"))?;
    copy(
        out.build_dir.join("modules.builtin"),
        modules.join("modules.builtin"),
    )?;
    let json = serde_json::to_string_pretty(info).unwrap_or_default();
    crate::apt::write_atomic(&dest.join("build.json"), json.as_bytes())
}

/// Runs a short command, failing with its stderr.
fn run_quiet(step: &str, cmd: &mut Command) -> Result<(), BuildError> {
    let out = cmd.output().map_err(|e| BuildError::KernelBuild {
        step: step.to_owned(),
        message: format!("cannot run {:?}: {e}", cmd.get_program()),
        log: None,
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(BuildError::KernelBuild {
        step: step.to_owned(),
        message: failure_message(&out.status.to_string(), &stderr),
        log: None,
    })
}

/// Runs a command with stdout and stderr into `log`, passing each line to `on_line`; a failure
/// names the step and shows the end of the log.
fn run_logged(
    step: &str,
    cmd: &mut Command,
    log: &Path,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), BuildError> {
    let mut file = std::fs::File::create(log).map_err(|e| BuildError::io(log, e))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BuildError::KernelBuild {
            step: step.to_owned(),
            message: format!(
                "cannot run {:?} ({e}); building the kernel needs {BUILD_DEPENDENCIES}",
                cmd.get_program()
            ),
            log: None,
        })?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        }));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        }));
    }
    drop(tx);
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut write_error = None;
    for line in rx {
        if write_error.is_none()
            && let Err(e) = writeln!(file, "{line}")
        {
            write_error = Some(e);
        }
        on_line(&line);
        if tail.len() == 400 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().map_err(|e| BuildError::KernelBuild {
        step: step.to_owned(),
        message: format!("waiting for make: {e}"),
        log: None,
    })?;
    if status.success() {
        if let Some(e) = write_error {
            return Err(BuildError::io(log, e));
        }
        return Ok(());
    }
    let text: Vec<String> = tail.into_iter().collect();
    Err(BuildError::KernelBuild {
        step: step.to_owned(),
        message: failure_message(&status.to_string(), &text.join("\n")),
        log: Some(log.to_owned()),
    })
}

/// `exit status: 2`, then what the output says: out of disk space in so many words, else its
/// last lines with errors first.
fn failure_message(status: &str, output: &str) -> String {
    if output.contains("No space left on device") {
        return format!(
            "{status}: out of disk space (\"No space left on device\"). Free some space, or set \
             VIRGA_CACHE_DIR to a larger disk"
        );
    }
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("error") || l.contains("Error"))
        .take(10)
        .collect();
    let tail = &lines[lines.len().saturating_sub(15)..];
    let mut msg = status.to_owned();
    if !errors.is_empty() {
        msg.push_str("; errors:\n    ");
        msg.push_str(&errors.join("\n    "));
    }
    msg.push_str("\n  last lines of output:\n    ");
    msg.push_str(&tail.join("\n    "));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_fragments_parse_and_every_setting_says_why() {
        for name in ["cloud", "container-host"] {
            let text = builtin_fragment(name).unwrap();
            let s = kconfig::parse_fragment(text, name).unwrap();
            assert!(s.len() > 10, "{name}");
            assert_eq!(
                kconfig::uncommented_settings(text),
                Vec::<usize>::new(),
                "kernel/{name}.config: settings without a comment saying why"
            );
        }
        // The cloud profile builds everything in: nothing in it is a module.
        let cloud = kconfig::parse_fragment(CLOUD_CONFIG, "cloud").unwrap();
        assert!(cloud.iter().all(|s| s.value != "m"));
        assert!(
            cloud
                .iter()
                .any(|s| s.name == "CONFIG_LOCALVERSION" && s.value == "\"-virga-cloud\"")
        );
    }

    #[test]
    fn container_host_brings_cloud_first() {
        let f = fragments(&["container-host".into()], Path::new(".")).unwrap();
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["cloud", "container-host"]);
        let f = fragments(&["cloud".into(), "container-host".into()], Path::new(".")).unwrap();
        assert_eq!(f.len(), 2);
        let s = settings(&f).unwrap();
        let local = s.iter().find(|s| s.name == "CONFIG_LOCALVERSION").unwrap();
        assert_eq!(local.value, "\"-virga-container-host\"");
    }

    #[test]
    fn user_fragments_are_read_and_checked() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("extra.config"), "# why\nCONFIG_VETH=y\n").unwrap();
        std::fs::write(d.path().join("bad.config"), "# why\nVETH=y\n").unwrap();
        let f = fragments(&["cloud".into(), "extra.config".into()], d.path()).unwrap();
        assert_eq!(f.len(), 2);
        assert!(
            settings(&f)
                .unwrap()
                .iter()
                .any(|s| s.name == "CONFIG_VETH")
        );
        let e = fragments(&["bad.config".into()], d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.config:2") && e.contains("VETH=y"), "{e}");
        let e = fragments(&["missing.config".into()], d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.config"), "{e}");
    }

    #[test]
    fn series_from_image_packages() {
        assert_eq!(
            series_of("linux-image-6.1.0-57-cloud-amd64").as_deref(),
            Some("6.1")
        );
        assert_eq!(
            series_of("linux-image-6.12.9+bpo-cloud-amd64").as_deref(),
            Some("6.12")
        );
        assert_eq!(series_of("linux-image-cloud-amd64"), None);
        assert_eq!(series_of("busybox"), None);
    }

    #[test]
    fn cache_key_ignores_comments_and_order_but_not_settings() {
        let rec = PackageRecord {
            package: "linux-source-6.1".into(),
            version: "6.1.192-3".into(),
            architecture: "all".into(),
            sha256: "ab".repeat(32),
            depends: String::new(),
        };
        let tc = Toolchain {
            gcc: "gcc 12".into(),
            ld: "ld 2.40".into(),
            make: "make 4.3".into(),
        };
        let a = kconfig::parse_fragment("# x\nCONFIG_A=y\nCONFIG_B=y\n", "a").unwrap();
        let b = kconfig::parse_fragment("CONFIG_B=y\n# other words\nCONFIG_A=y\n", "b").unwrap();
        let c = kconfig::parse_fragment("CONFIG_A=y\n# CONFIG_B is not set\n", "c").unwrap();
        assert_eq!(cache_key(&rec, &a, &tc), cache_key(&rec, &b, &tc));
        assert_ne!(cache_key(&rec, &a, &tc), cache_key(&rec, &c, &tc));
        let tc2 = Toolchain {
            gcc: "gcc 13".into(),
            ..tc.clone()
        };
        assert_ne!(cache_key(&rec, &a, &tc), cache_key(&rec, &a, &tc2));
        let rec2 = PackageRecord {
            version: "6.1.192-4".into(),
            ..rec.clone()
        };
        assert_ne!(cache_key(&rec, &a, &tc), cache_key(&rec2, &a, &tc));
    }

    #[test]
    fn kbuild_steps_and_progress() {
        assert!(is_kbuild_step("  CC      kernel/fork.o"));
        assert!(is_kbuild_step("  LD      vmlinux.o"));
        assert!(is_kbuild_step("  HOSTCC  scripts/basic/fixdep"));
        assert!(!is_kbuild_step("make[1]: Entering directory"));
        assert!(!is_kbuild_step("  "));
        assert!(!is_kbuild_step("kernel/fork.c:12: error: x"));
        let l = progress_line(
            500,
            2000,
            Duration::from_secs(100),
            "  CC      kernel/fork.o",
        );
        assert!(
            l.starts_with("make bzImage: 500/~2000 steps (25%), 1m40s"),
            "{l}"
        );
        assert!(l.contains("about 5m00s left"), "{l}");
        assert!(l.ends_with("CC kernel/fork.o"), "{l}");
        // Past the estimate: the total follows the count.
        let l = progress_line(2100, 2000, Duration::from_secs(10), "  LD x");
        assert!(l.contains("2100/~2100 steps (100%)"), "{l}");
    }

    #[test]
    fn failures_say_what_happened() {
        let m = failure_message(
            "exit status: 2",
            "  CC a.o\nfs/x.c:1:1: error: boom\nmake[2]: *** [x] Error 1\n",
        );
        assert!(m.contains("errors:\n    fs/x.c:1:1: error: boom"), "{m}");
        let m = failure_message("exit status: 2", "cc1: No space left on device\n");
        assert!(m.contains("out of disk space"), "{m}");
    }

    #[test]
    fn disk_space_check_names_the_directory() {
        let d = tempfile::tempdir().unwrap();
        assert!(need_space(d.path(), 1, "x").is_ok());
        let e = need_space(d.path(), u64::MAX / 2, "building the kernel")
            .unwrap_err()
            .to_string();
        assert!(e.contains("building the kernel"), "{e}");
        assert!(e.contains("not enough disk space"), "{e}");
        assert!(e.contains("VIRGA_CACHE_DIR"), "{e}");
    }

    #[test]
    fn stale_temporaries_are_removed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tmp-123-0/build")).unwrap();
        std::fs::create_dir_all(d.path().join("src/tmp-9-1")).unwrap();
        std::fs::create_dir_all(d.path().join("0123456789abcdef")).unwrap();
        remove_stale(d.path());
        assert!(!d.path().join("tmp-123-0").exists());
        assert!(!d.path().join("src/tmp-9-1").exists());
        assert!(d.path().join("0123456789abcdef").exists());
    }

    #[test]
    fn a_cached_kernel_needs_its_files_and_key() {
        let d = tempfile::tempdir().unwrap();
        let info = BuildInfo {
            release: "6.1.192-virga-cloud".into(),
            source_package: "linux-source-6.1".into(),
            source_version: "6.1.192-3".into(),
            source_sha256: "00".into(),
            configs: vec!["cloud".into()],
            key: "k1".into(),
            toolchain: Toolchain {
                gcc: String::new(),
                ld: String::new(),
                make: String::new(),
            },
            seconds: 1.0,
            jobs: 2,
            steps: 1234,
            load_average: None,
        };
        std::fs::write(
            d.path().join("build.json"),
            serde_json::to_string(&info).unwrap(),
        )
        .unwrap();
        // A half-written kernel (no vmlinuz) is not a cached kernel.
        assert_eq!(load_cached(d.path(), "k1"), None);
        std::fs::write(d.path().join("vmlinuz"), b"x").unwrap();
        std::fs::write(d.path().join("config"), b"x").unwrap();
        assert_eq!(load_cached(d.path(), "k1"), Some(info));
        assert_eq!(load_cached(d.path(), "k2"), None);
    }

    #[test]
    fn progress_estimate_comes_from_the_last_build() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(previous_steps(d.path()), None);
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a/build.json"), "not json").unwrap();
        std::fs::create_dir(d.path().join("b")).unwrap();
        std::fs::write(
            d.path().join("b/build.json"),
            r#"{"release":"r","source_package":"p","source_version":"v","source_sha256":"s",
               "configs":["cloud"],"key":"k","toolchain":{"gcc":"","ld":"","make":""},
               "seconds":1.0,"jobs":2,"steps":1777,"load_average":null}"#,
        )
        .unwrap();
        assert_eq!(previous_steps(d.path()), Some(1777));
    }
}
