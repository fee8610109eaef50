//! Output formats: the raw disk converted with `qemu-img` (package `qemu-utils`), made
//! reproducible where qemu-img stamps run-time values, and the KubeVirt containerDisk
//! ([`crate::oci`]).
//!
//! | format | how | notes |
//! |---|---|---|
//! | raw | the assembled disk | sparse file |
//! | qcow2 | `qemu-img convert -O qcow2 -c` | compressed clusters (zlib, readable by every qemu) |
//! | vmdk | `qemu-img convert -O vmdk -o subformat=streamOptimized` | the VMDK that OVA/ESXi and cloud importers take; the random content ID (`CID=`) is replaced by one derived from the image |
//! | vhd | `qemu-img convert -O vpc -o subformat=fixed,force_size=on` | fixed, size a whole MiB (Azure); the footer's timestamp and UUID are replaced by derived values and its checksum recomputed |
//! | containerdisk | OCI image archive, layer `disk/virga.qcow2` (107:107, 0440) | what KubeVirt's containerDisk volumes expect |

use std::path::Path;
use std::process::Command;

use crate::{DiskImageError, tools};

/// Debian package with `qemu-img`.
pub const QEMU_IMG_PACKAGE: &str = "qemu-utils";

/// A disk image format `virga build --format` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiskFormat {
    /// Raw disk.
    Raw,
    /// QEMU copy-on-write v2, compressed.
    Qcow2,
    /// VMware stream-optimised VMDK.
    Vmdk,
    /// Fixed VHD (Azure, Hyper-V).
    Vhd,
    /// KubeVirt containerDisk: an OCI image archive holding the qcow2.
    ContainerDisk,
}

/// Every format, in build order (qcow2 before the containerDisk that wraps it).
pub const ALL: [DiskFormat; 5] = [
    DiskFormat::Raw,
    DiskFormat::Qcow2,
    DiskFormat::Vmdk,
    DiskFormat::Vhd,
    DiskFormat::ContainerDisk,
];

impl DiskFormat {
    /// The name on the command line and in the spec.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vhd => "vhd",
            DiskFormat::ContainerDisk => "containerdisk",
        }
    }

    /// The file it is written to inside the output directory.
    pub fn file_name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "virga.raw",
            DiskFormat::Qcow2 => "virga.qcow2",
            DiskFormat::Vmdk => "virga.vmdk",
            DiskFormat::Vhd => "virga.vhd",
            DiskFormat::ContainerDisk => "virga.containerdisk.tar",
        }
    }
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DiskFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|f| f.name()).collect();
            format!(
                "unknown disk format `{s}`; use one of: {}",
                names.join(", ")
            )
        })
    }
}

fn qemu_img(args: &[&str], src: &Path, out: &Path) -> Result<(), DiskImageError> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-q", "-f", "raw"])
        .args(args)
        .arg(src)
        .arg(out);
    tools::run(&mut cmd, "qemu-img", QEMU_IMG_PACKAGE)?;
    Ok(())
}

/// Converts the raw disk `raw` to `format` at `out` (raw: a copy). `seed` derives the values
/// qemu-img would draw at random; `mtime` is the VHD's timestamp (Unix seconds).
pub fn convert(
    raw: &Path,
    format: DiskFormat,
    out: &Path,
    seed: &[u8],
    mtime: u64,
) -> Result<(), DiskImageError> {
    match format {
        DiskFormat::Raw => {
            // A sparse copy via qemu-img keeps holes (std::fs::copy may not).
            qemu_img(&["-O", "raw", "-S", "4k"], raw, out)
        }
        DiskFormat::Qcow2 => qemu_img(
            &["-O", "qcow2", "-c", "-o", "compression_type=zlib"],
            raw,
            out,
        ),
        DiskFormat::Vmdk => {
            qemu_img(&["-O", "vmdk", "-o", "subformat=streamOptimized"], raw, out)?;
            fix_vmdk_cid(out, seed)
        }
        DiskFormat::Vhd => {
            qemu_img(
                &["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
                raw,
                out,
            )?;
            fix_vhd_footer(out, seed, mtime)
        }
        DiskFormat::ContainerDisk => Err(DiskImageError::Invalid(
            "a containerDisk is made from the qcow2 (oci::write_containerdisk)".into(),
        )),
    }
}

/// Replaces the VMDK descriptor's random content ID (`CID=` line, written by qemu-img as
/// 1-8 hex digits) with a derived 8-digit one. The embedded descriptor is found through the
/// sparse header (`descriptorOffset`, `descriptorSize`, in sectors) and rewritten in place,
/// NUL-padded to its area.
fn fix_vmdk_cid(path: &Path, seed: &[u8]) -> Result<(), DiskImageError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let io = |e| DiskImageError::io(path, e);
    let bad = |m: &str| DiskImageError::Invalid(format!("{}: {m}", path.display()));
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut header = [0u8; 512];
    f.read_exact(&mut header).map_err(io)?;
    if &header[..4] != b"KDMV" {
        return Err(bad("not a sparse VMDK"));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let (desc_sector, desc_sectors) = (u64_at(28), u64_at(36));
    if desc_sector == 0 || desc_sectors == 0 || desc_sectors > 2048 {
        return Err(bad("no embedded VMDK descriptor"));
    }
    let mut area = vec![0u8; (desc_sectors * 512) as usize];
    f.seek(SeekFrom::Start(desc_sector * 512)).map_err(io)?;
    f.read_exact(&mut area).map_err(io)?;
    let len = area.iter().position(|b| *b == 0).unwrap_or(area.len());
    let text = std::str::from_utf8(&area[..len]).map_err(|_| bad("descriptor is not text"))?;
    let cid = format!("CID={:08x}", crate::guid::volume_id(seed, "vmdk-cid"));
    let mut found = false;
    let new: Vec<String> = text
        .split('\n')
        .map(|line| {
            let hex = line.strip_prefix("CID=");
            match hex {
                Some(h)
                    if !found
                        && !h.is_empty()
                        && h.len() <= 8
                        && h.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    found = true;
                    cid.clone()
                }
                _ => line.to_owned(),
            }
        })
        .collect();
    if !found {
        return Err(bad("no CID= line in the VMDK descriptor"));
    }
    let new = new.join("\n");
    if new.len() >= area.len() {
        return Err(bad("the VMDK descriptor does not fit its area"));
    }
    area.fill(0);
    area[..new.len()].copy_from_slice(new.as_bytes());
    f.seek(SeekFrom::Start(desc_sector * 512)).map_err(io)?;
    f.write_all(&area).map_err(io)?;
    Ok(())
}

/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 00:00:00 UTC).
const VHD_EPOCH: u64 = 946_684_800;

/// Sets the fixed VHD footer's timestamp and UUID, recomputing its checksum.
fn fix_vhd_footer(path: &Path, seed: &[u8], mtime: u64) -> Result<(), DiskImageError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let io = |e| DiskImageError::io(path, e);
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let len = f.seek(SeekFrom::End(0)).map_err(io)?;
    let mut footer = [0u8; 512];
    f.seek(SeekFrom::Start(len - 512)).map_err(io)?;
    f.read_exact(&mut footer).map_err(io)?;
    if &footer[..8] != b"conectix" {
        return Err(DiskImageError::Invalid(format!(
            "{}: no VHD footer",
            path.display()
        )));
    }
    let ts = u32::try_from(mtime.saturating_sub(VHD_EPOCH)).unwrap_or(u32::MAX);
    footer[24..28].copy_from_slice(&ts.to_be_bytes());
    footer[68..84].copy_from_slice(crate::guid::derive(seed, "vhd").as_bytes());
    footer[64..68].fill(0);
    let sum = footer
        .iter()
        .fold(0u32, |s, b| s.wrapping_add(u32::from(*b)));
    footer[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f.seek(SeekFrom::Start(len - 512)).map_err(io)?;
    f.write_all(&footer).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// qemu-img writes the content ID without zero padding (`CID=%x`): 1 to 8 digits. Every
    /// length becomes the same derived 8 digits.
    #[test]
    fn vmdk_cid_of_any_length_becomes_the_derived_one() {
        let d = tempfile::tempdir().unwrap();
        let mut outputs = Vec::new();
        for cid in ["abc1234", "40d5c36e", "7"] {
            let mut img = vec![0u8; 4 * 512];
            img[..4].copy_from_slice(b"KDMV");
            img[28..36].copy_from_slice(&1u64.to_le_bytes());
            img[36..44].copy_from_slice(&2u64.to_le_bytes());
            let desc = format!("# Disk DescriptorFile\nversion=1\nCID={cid}\nparentCID=ffffffff\n");
            img[512..512 + desc.len()].copy_from_slice(desc.as_bytes());
            let p = d.path().join("x.vmdk");
            std::fs::write(&p, &img).unwrap();
            fix_vmdk_cid(&p, b"seed").unwrap();
            let out = std::fs::read(&p).unwrap();
            let text = String::from_utf8_lossy(&out[512..1536])
                .trim_end_matches('\0')
                .to_owned();
            assert!(text.contains("\nparentCID=ffffffff\n"), "{text}");
            outputs.push(out);
        }
        assert_eq!(outputs[0], outputs[1]);
        assert_eq!(outputs[1], outputs[2]);
        let p = d.path().join("y.vmdk");
        std::fs::write(&p, vec![0u8; 1024]).unwrap();
        assert!(fix_vmdk_cid(&p, b"seed").is_err());
    }

    #[test]
    fn names_round_trip_and_unknown_is_clear() {
        for f in ALL {
            assert_eq!(f.name().parse::<DiskFormat>().unwrap(), f);
        }
        let e = "vdi".parse::<DiskFormat>().unwrap_err();
        assert!(e.contains("vdi") && e.contains("qcow2, vmdk"), "{e}");
    }
}
