//! Kernel acquisition: a Debian kernel package (meta-packages followed to the real image), or a
//! local vmlinuz with its modules directory.

use std::path::{Path, PathBuf};

use crate::BuildError;
use crate::apt::{FetchedPackage, PackageCache, pinned_dependency, sha256_file};

/// A kernel ready to go into an image.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    /// Kernel release (`6.1.0-56-cloud-amd64`).
    pub release: String,
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// `/lib/modules/<release>`, when there is one.
    pub modules_dir: Option<PathBuf>,
    /// `debian:<package>=<version>` or `local:<path>`.
    pub origin: String,
    /// SHA-256 of the package or of the vmlinuz.
    pub origin_sha256: String,
    /// Whether the package came from the cache without downloading.
    pub cached: bool,
    /// Whether apt was unreachable and a cached record was used.
    pub offline: bool,
    /// The kernel's configuration (`/boot/config-<release>` of a Debian package, the final
    /// `.config` of a lean kernel), when known: required features are checked against it.
    pub config: Option<PathBuf>,
    /// How long building it took, when it was built by this run (`source = "build"`).
    pub build_time: Option<std::time::Duration>,
}

/// Fetches a Debian kernel package; a meta-package (`linux-image-cloud-amd64`) is followed to
/// the versioned image package it pins.
pub fn debian(
    cache: &PackageCache,
    package: &str,
    version: Option<&str>,
) -> Result<KernelFiles, BuildError> {
    let mut fetched = cache.fetch(package, version)?;
    let mut dir = cache.unpack(&fetched)?;
    // Up to two hops: meta-package → versioned image package.
    for _ in 0..2 {
        if find_vmlinuz(&dir).is_some() {
            break;
        }
        let Some((dep, dep_version)) = pinned_dependency(&fetched.record.depends, "linux-image-")
        else {
            break;
        };
        let offline = fetched.offline;
        fetched = cache.fetch(&dep, Some(&dep_version))?;
        fetched.offline |= offline;
        dir = cache.unpack(&fetched)?;
    }
    from_unpacked(&dir, &fetched)
}

fn from_unpacked(dir: &Path, p: &FetchedPackage) -> Result<KernelFiles, BuildError> {
    let (vmlinuz, release) = find_vmlinuz(dir).ok_or_else(|| {
        BuildError::Kernel(format!(
            "package {} {} contains no /boot/vmlinuz-*; set kernel.package to a linux-image package",
            p.record.package, p.record.version
        ))
    })?;
    let modules_dir = dir.join("lib/modules").join(&release);
    let modules_dir = modules_dir.is_dir().then_some(modules_dir);
    let config = dir.join("boot").join(format!("config-{release}"));
    Ok(KernelFiles {
        config: config.is_file().then_some(config),
        release,
        vmlinuz,
        modules_dir,
        origin: format!("debian:{}={}", p.record.package, p.record.version),
        origin_sha256: p.record.sha256.clone(),
        cached: p.cached,
        offline: p.offline,
        build_time: None,
    })
}

fn find_vmlinuz(dir: &Path) -> Option<(PathBuf, String)> {
    let boot = dir.join("boot");
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir(&boot)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            Some((e.path(), release))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The lean kernel: built from Debian's `linux-source` with the spec's fragments, or taken
/// from the cache.
pub fn build(
    cache: &PackageCache,
    req: &crate::kbuild::KernelRequest,
    progress: &mut dyn FnMut(crate::Progress),
) -> Result<KernelFiles, BuildError> {
    let t = std::time::Instant::now();
    let k = crate::kbuild::build(cache, req, progress)?;
    Ok(KernelFiles {
        release: k.info.release.clone(),
        vmlinuz: k.vmlinuz(),
        modules_dir: Some(k.modules_dir()),
        origin: format!(
            "build:{}={}+{}",
            k.info.source_package,
            k.info.source_version,
            k.info.configs.join("+")
        ),
        origin_sha256: k.info.key.clone(),
        cached: k.cached,
        offline: k.offline,
        config: Some(k.config()),
        build_time: (!k.cached).then(|| t.elapsed()),
    })
}

/// Uses a local kernel. The release comes from the modules directory's name, else from the
/// bzImage header.
pub fn local(vmlinuz: &Path, modules_dir: Option<&Path>) -> Result<KernelFiles, BuildError> {
    let header = read_prefix(vmlinuz, 64 * 1024)?;
    let header_release = bzimage_release(&header).ok_or_else(|| {
        BuildError::Kernel(format!(
            "{} is not an x86 Linux kernel image (no bzImage header); point kernel.vmlinuz at a vmlinuz",
            vmlinuz.display()
        ))
    })?;
    let release = match modules_dir {
        Some(m) => {
            if !m.is_dir() {
                return Err(BuildError::Kernel(format!(
                    "kernel.modules_dir {} is not a directory",
                    m.display()
                )));
            }
            m.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(&header_release)
                .to_owned()
        }
        None => header_release,
    };
    // Debian's /boot layout: config-<release> next to vmlinuz-<release>.
    let config = vmlinuz.with_file_name(format!("config-{release}"));
    Ok(KernelFiles {
        config: config.is_file().then_some(config),
        build_time: None,
        release,
        vmlinuz: vmlinuz.to_owned(),
        modules_dir: modules_dir.map(Path::to_owned),
        origin: format!("local:{}", vmlinuz.display()),
        origin_sha256: sha256_file(vmlinuz)?,
        cached: true,
        offline: false,
    })
}

fn read_prefix(path: &Path, n: usize) -> Result<Vec<u8>, BuildError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| BuildError::io(path, e))?;
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64)
        .read_to_end(&mut buf)
        .map_err(|e| BuildError::io(path, e))?;
    Ok(buf)
}

/// The release string of an x86 bzImage, from its boot-protocol header: magic `HdrS` at 0x202
/// and a pointer to the version string at 0x20e (relative to 0x200).
pub fn bzimage_release(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*image.get(0x20e)?, *image.get(0x20f)?]) as usize + 0x200;
    let tail = image.get(ptr..)?;
    let end = tail
        .iter()
        .position(|b| *b == 0 || *b == b' ')
        .unwrap_or(tail.len().min(64));
    let release = std::str::from_utf8(&tail[..end]).ok()?;
    (!release.is_empty()).then(|| release.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut img = vec![0u8; 0x1000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        let at = 0x800usize;
        img[0x20e..0x210].copy_from_slice(&((at - 0x200) as u16).to_le_bytes());
        img[at..at + version.len()].copy_from_slice(version.as_bytes());
        img
    }

    #[test]
    fn reads_release_from_header() {
        let img = fake_bzimage("6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP");
        assert_eq!(
            bzimage_release(&img).as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
        assert_eq!(bzimage_release(b"garbage"), None);
        let mut bad_ptr = fake_bzimage("x");
        bad_ptr[0x20e..0x210].copy_from_slice(&0xffffu16.to_le_bytes());
        assert_eq!(bzimage_release(&bad_ptr), None);
    }

    #[test]
    fn local_kernel_rejects_non_kernels() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vmlinuz");
        std::fs::write(&p, b"#!/bin/sh\necho not a kernel\n").unwrap();
        let err = local(&p, None).unwrap_err().to_string();
        assert!(err.contains("not an x86 Linux kernel image"), "{err}");
        let err = local(&d.path().join("missing"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn local_kernel_takes_release_from_modules_dir() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vmlinuz");
        std::fs::write(&p, fake_bzimage("6.1.0-x")).unwrap();
        let m = d.path().join("6.1.0-y");
        std::fs::create_dir(&m).unwrap();
        let k = local(&p, Some(&m)).unwrap();
        assert_eq!(k.release, "6.1.0-y");
        assert_eq!(local(&p, None).unwrap().release, "6.1.0-x");
    }
}
