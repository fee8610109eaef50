//! `manifest.json`: what a build produced.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the manifest inside an output directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One built file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// File name inside the output directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// The kernel that went into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// Kernel release (`uname -r`), e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// Where it came from: `debian:<package>=<version>` or `local:<path>`.
    pub origin: String,
    /// SHA-256 of the package file (Debian) or of the vmlinuz (local).
    pub origin_sha256: String,
}

/// What `virga build` produced; written as `manifest.json` next to the artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    /// Version of the `virga` tool that built the image.
    pub virga_version: String,
    /// Image name from the spec.
    pub name: String,
    /// Profile from the spec.
    pub profile: String,
    /// SHA-256 of the spec's canonical form ([`crate::ImageSpec::hash`]).
    pub spec_sha256: String,
    /// The kernel.
    pub kernel: KernelInfo,
    /// Kernel command line to boot with.
    pub cmdline: String,
    /// Modules in the image, in the order PID 1 loads them.
    pub modules: Vec<String>,
    /// Requested modules that are built into the kernel (nothing to load).
    pub builtin_modules: Vec<String>,
    /// PID 1 program (`virga` or `busybox`).
    pub init: String,
    /// BusyBox version when the toolbox is in, e.g. `1:1.35.0-4+deb12u1+b1`.
    pub busybox: Option<String>,
    /// Size in bytes of the stripped guest binary, when it is in the image.
    pub guest_binary_size: Option<u64>,
    /// Files in the output directory: `vmlinuz`, `initramfs.img`.
    pub artifacts: Vec<Artifact>,
}

impl ImageManifest {
    /// Looks up an artifact by file name.
    pub fn artifact(&self, name: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// Reads `manifest.json` from an output directory.
    pub fn load(dir: &Path) -> Result<Self, std::io::Error> {
        let text = std::fs::read_to_string(dir.join(MANIFEST_FILE))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    /// Canonical JSON text (pretty, trailing newline) — byte-identical for identical builds.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}
