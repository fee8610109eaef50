//! Debian packages: resolve with `apt-cache`, fetch with `apt-get download`, check the SHA-256
//! against apt's (signed) index, cache under the XDG cache directory, unpack with `dpkg-deb`,
//! and reuse the cache when apt cannot be reached.
//!
//! No root is needed: packages are downloaded and unpacked, never installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::BuildError;

/// virga's cache directory: `$XDG_CACHE_HOME/virga`, else `~/.cache/virga`.
pub fn cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("VIRGA_CACHE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(x);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("virga");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("virga")
}

/// What apt's index says about one package version (the fields virga uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// Package name.
    pub package: String,
    /// Exact version, with epoch (`1:1.35.0-4`).
    pub version: String,
    /// Architecture (`amd64`, `all`).
    pub architecture: String,
    /// SHA-256 of the `.deb`, from apt's index.
    pub sha256: String,
    /// The `Depends:` field, verbatim.
    #[serde(default)]
    pub depends: String,
}

/// A `.deb` on disk, checked.
#[derive(Debug, Clone)]
pub struct FetchedPackage {
    /// What apt said about it.
    pub record: PackageRecord,
    /// The `.deb` in the cache.
    pub deb: PathBuf,
    /// Whether it was already in the cache.
    pub cached: bool,
    /// Whether apt could not be asked and the cache record was used instead.
    pub offline: bool,
}

/// Parses the first stanza of `apt-cache show` output.
pub fn parse_stanza(text: &str) -> Option<PackageRecord> {
    let field = |name: &str| -> Option<String> {
        text.lines()
            .take_while(|l| !l.trim().is_empty())
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(':')
                    .map(|v| v.trim().to_owned())
            })
    };
    Some(PackageRecord {
        package: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture").unwrap_or_else(|| "amd64".into()),
        sha256: field("SHA256")?,
        depends: field("Depends").unwrap_or_default(),
    })
}

/// From a `Depends:` field, the first dependency whose name starts with `prefix` and that pins
/// an exact version (`name (= version)`), as Debian's kernel meta-packages do.
pub fn pinned_dependency(depends: &str, prefix: &str) -> Option<(String, String)> {
    depends
        .split(',')
        .flat_map(|alt| alt.split('|'))
        .find_map(|dep| {
            let dep = dep.trim();
            let (name, rest) = dep.split_once(' ')?;
            let version = rest.trim().strip_prefix("(=")?.strip_suffix(')')?.trim();
            name.starts_with(prefix)
                .then(|| (name.to_owned(), version.to_owned()))
        })
}

/// Downloads and caches Debian packages.
#[derive(Debug, Clone)]
pub struct PackageCache {
    dir: PathBuf,
}

impl PackageCache {
    /// A cache rooted at `dir` (usually `cache_dir()`).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The cache's root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_path(&self, package: &str, version: Option<&str>) -> PathBuf {
        let key = match version {
            Some(v) => format!("{package}={}", sanitize(v)),
            None => package.to_owned(),
        };
        self.dir.join("index").join(format!("{key}.json"))
    }

    fn deb_path(&self, r: &PackageRecord) -> PathBuf {
        self.dir.join("debs").join(format!(
            "{}_{}_{}.deb",
            r.package,
            sanitize(&r.version),
            r.architecture
        ))
    }

    /// Resolves `package` (at `version`, or apt's candidate), downloads it unless the cache has
    /// it, and checks its SHA-256. Without apt (offline, or no index), the last record cached for
    /// the same request is used, still checked against its recorded SHA-256.
    pub fn fetch(
        &self,
        package: &str,
        version: Option<&str>,
    ) -> Result<FetchedPackage, BuildError> {
        let spec = match version {
            Some(v) => format!("{package}={v}"),
            None => package.to_owned(),
        };
        let (record, offline) = self.resolve(package, version)?;
        let deb = self.deb_path(&record);
        if deb.exists() {
            if sha256_file(&deb)? == record.sha256 {
                self.save_record(package, version, &record)?;
                return Ok(FetchedPackage {
                    record,
                    deb,
                    cached: true,
                    offline,
                });
            }
            tracing::warn!("cached {} is corrupt; downloading it again", deb.display());
            let _ = std::fs::remove_file(&deb);
        }
        if offline {
            return Err(BuildError::Package {
                package: spec,
                message: "apt is unreachable and the cached .deb is missing or corrupt".into(),
            });
        }
        self.download(&record)?;
        self.save_record(package, version, &record)?;
        Ok(FetchedPackage {
            record,
            deb,
            cached: false,
            offline,
        })
    }

    /// What apt's index says about `package` (at `version`, or apt's candidate), without
    /// downloading it; the record is remembered for offline use. Without apt, the last record
    /// cached for the same request is returned with `true` (offline).
    pub fn resolve(
        &self,
        package: &str,
        version: Option<&str>,
    ) -> Result<(PackageRecord, bool), BuildError> {
        let spec = match version {
            Some(v) => format!("{package}={v}"),
            None => package.to_owned(),
        };
        match apt_cache_show(&spec) {
            Ok(r) => {
                self.save_record(package, version, &r)?;
                Ok((r, false))
            }
            Err(apt_err) => match self.load_record(package, version) {
                Some(r) => {
                    tracing::warn!(
                        "apt cannot resolve {spec} ({apt_err}); using the cached record"
                    );
                    Ok((r, true))
                }
                None => Err(BuildError::Package {
                    package: spec,
                    message: format!(
                        "{apt_err}; it is not in virga's cache either. Check the name, \
                         run `apt-get update`, or connect to the package mirror"
                    ),
                }),
            },
        }
    }

    fn download(&self, r: &PackageRecord) -> Result<(), BuildError> {
        let tmp_parent = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp_parent).map_err(|e| BuildError::io(&tmp_parent, e))?;
        let tmp = tempdir_in(&tmp_parent)?;
        let spec = format!("{}={}", r.package, r.version);
        let out = Command::new("apt-get")
            .args(["download", "-q", &spec])
            .current_dir(&tmp)
            .output()
            .map_err(|e| BuildError::Package {
                package: spec.clone(),
                message: format!("cannot run apt-get ({e}); virga needs Debian's apt"),
            })?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(BuildError::Package {
                package: spec,
                message: format!(
                    "apt-get download failed: {}",
                    last_line(&String::from_utf8_lossy(&out.stderr))
                ),
            });
        }
        let file = std::fs::read_dir(&tmp)
            .map_err(|e| BuildError::io(&tmp, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"));
        let result = match file {
            None => Err(BuildError::Package {
                package: spec.clone(),
                message: "apt-get download produced no .deb".into(),
            }),
            Some(file) => {
                let got = sha256_file(&file)?;
                if got != r.sha256 {
                    Err(BuildError::Package {
                        package: spec.clone(),
                        message: format!(
                            "SHA-256 mismatch: apt's index says {}, the download is {got}",
                            r.sha256
                        ),
                    })
                } else {
                    let dest = self.deb_path(r);
                    let parent = dest.parent().unwrap_or(Path::new("."));
                    std::fs::create_dir_all(parent).map_err(|e| BuildError::io(parent, e))?;
                    std::fs::rename(&file, &dest).map_err(|e| BuildError::io(&dest, e))
                }
            }
        };
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }

    fn load_record(&self, package: &str, version: Option<&str>) -> Option<PackageRecord> {
        let text = std::fs::read_to_string(self.record_path(package, version)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn save_record(
        &self,
        package: &str,
        version: Option<&str>,
        r: &PackageRecord,
    ) -> Result<(), BuildError> {
        let path = self.record_path(package, version);
        let json = serde_json::to_string_pretty(r).unwrap_or_default();
        write_atomic(&path, json.as_bytes())
    }

    /// Unpacks a fetched package (once) and returns the directory holding its files.
    pub fn unpack(&self, p: &FetchedPackage) -> Result<PathBuf, BuildError> {
        let dest = self.dir.join("unpacked").join(format!(
            "{}_{}_{}",
            p.record.package,
            sanitize(&p.record.version),
            &p.record.sha256[..16.min(p.record.sha256.len())]
        ));
        if dest.join(".complete").exists() {
            return Ok(dest);
        }
        let parent = self.dir.join("unpacked");
        std::fs::create_dir_all(&parent).map_err(|e| BuildError::io(&parent, e))?;
        let tmp = tempdir_in(&parent)?;
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&p.deb)
            .arg(&tmp)
            .output()
            .map_err(|e| BuildError::Package {
                package: p.record.package.clone(),
                message: format!("cannot run dpkg-deb ({e}); install dpkg"),
            })?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(BuildError::Package {
                package: p.record.package.clone(),
                message: format!(
                    "dpkg-deb -x failed: {}",
                    last_line(&String::from_utf8_lossy(&out.stderr))
                ),
            });
        }
        std::fs::write(tmp.join(".complete"), b"").map_err(|e| BuildError::io(&tmp, e))?;
        // Another build may have unpacked the same package meanwhile: a complete tree is never
        // removed (it may be in use); only an incomplete leftover is replaced.
        if dest.join(".complete").exists() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(dest);
        }
        let _ = std::fs::remove_dir_all(&dest);
        if let Err(e) = std::fs::rename(&tmp, &dest) {
            let _ = std::fs::remove_dir_all(&tmp);
            if dest.join(".complete").exists() {
                return Ok(dest);
            }
            return Err(BuildError::io(&dest, e));
        }
        Ok(dest)
    }
}

fn apt_cache_show(spec: &str) -> Result<PackageRecord, String> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", spec])
        .output()
        .map_err(|e| format!("cannot run apt-cache: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apt does not know {spec}: {}",
            last_line(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    parse_stanza(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| format!("apt-cache show {spec} printed no usable record"))
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, BuildError> {
    let mut f = std::fs::File::open(path).map_err(|e| BuildError::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| BuildError::io(path, e))?;
    Ok(hex::encode(h.finalize()))
}

/// Writes a file by writing a sibling temporary file and renaming it into place.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), BuildError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| BuildError::io(parent, e))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    std::fs::write(&tmp, data).map_err(|e| BuildError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| BuildError::io(path, e))
}

pub(crate) fn tempdir_in(parent: &Path) -> Result<PathBuf, BuildError> {
    for n in 0..1000u32 {
        let p = parent.join(format!("tmp-{}-{n}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(BuildError::io(&p, e)),
        }
    }
    Err(BuildError::io(
        parent,
        std::io::Error::other("cannot create a temporary directory"),
    ))
}

pub(crate) fn sanitize(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+-.~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("W: Download is performed unsandboxed"))
        .unwrap_or("(no output)")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANZA: &str = "Package: linux-image-cloud-amd64\nSource: linux-signed-amd64 (6.1.192+2)\n\
Version: 6.1.192-2\nInstalled-Size: 13\nArchitecture: amd64\n\
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n\
SHA256: 7ee2f8d6a1e84ea5cd6d7f4a4dd5b4f1e7f2a5d1c3b0c6b5e4d3c2b1a0f9e8d7\n\
Description-en: Linux for x86-64 cloud (meta-package)\n\nPackage: other\nVersion: 1\n";

    #[test]
    fn parses_first_stanza() {
        let r = parse_stanza(STANZA).unwrap();
        assert_eq!(r.package, "linux-image-cloud-amd64");
        assert_eq!(r.version, "6.1.192-2");
        assert_eq!(r.architecture, "amd64");
        assert!(r.sha256.starts_with("7ee2"));
        assert!(r.depends.contains("(= 6.1.192-2)"));
        assert!(parse_stanza("Package: x\n").is_none());
        assert!(parse_stanza("").is_none());
    }

    #[test]
    fn finds_pinned_kernel_dependency() {
        let r = parse_stanza(STANZA).unwrap();
        assert_eq!(
            pinned_dependency(&r.depends, "linux-image-"),
            Some((
                "linux-image-6.1.0-56-cloud-amd64".into(),
                "6.1.192-2".into()
            ))
        );
        assert_eq!(
            pinned_dependency("kmod, linux-base (>= 4.3~)", "linux-image-"),
            None
        );
    }

    #[test]
    fn sanitizes_epochs() {
        assert_eq!(sanitize("1:1.35.0-4+deb12u1+b1"), "1_1.35.0-4+deb12u1+b1");
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"2").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
    }

    #[test]
    fn unknown_package_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let cache = PackageCache::new(d.path().to_owned());
        let err = cache
            .fetch("virga-no-such-package-xyz", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("virga-no-such-package-xyz"), "{err}");
        assert!(err.contains("not in virga's cache"), "{err}");
    }
}
