//! Booting a disk image through firmware — SeaBIOS (QEMU's default BIOS) or OVMF (UEFI, from
//! Debian's `ovmf` package) — instead of `-kernel`/`-initrd`.
//!
//! The kernel command line then comes from the disk's own `grub.cfg`; what the host adds
//! (datasources, `panic=-1`, `--append`) travels as one SMBIOS OEM string (type 11)
//! `virga.cmdline=ARGS`, which the image's GRUB appends before its slot keys
//! (docs/disk-layout.md).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::VmError;

/// OVMF firmware code (read-only pflash), Debian package `ovmf`.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The template of OVMF's variable store; each VM gets a writable copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Prefix of the SMBIOS OEM string GRUB reads extra kernel arguments from.
pub const SMBIOS_CMDLINE_PREFIX: &str = "virga.cmdline=";

/// Which firmware boots the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// SeaBIOS: legacy BIOS, boots GRUB's boot.img from the MBR.
    #[default]
    Bios,
    /// OVMF: UEFI, boots `/EFI/BOOT/BOOTX64.EFI` from the ESP.
    Uefi,
}

/// A disk to boot from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskBoot {
    /// The image QEMU opens (read-write: GRUB writes its environment block, the guest its
    /// state; use [`overlay`] to keep a built image pristine).
    pub image: PathBuf,
    /// QEMU format name: `qcow2`, `raw`, `vmdk` or `vpc`.
    pub format: String,
    /// The firmware.
    pub firmware: Firmware,
    /// UEFI: this VM's writable copy of the OVMF variable store.
    pub ovmf_vars: Option<PathBuf>,
}

/// The QEMU format of an image file, from its content: qcow2 and VMDK by magic, a fixed VHD
/// by its footer, anything else raw.
pub fn detect_format(path: &Path) -> Result<&'static str, VmError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e| VmError::io(format!("reading {}", path.display()), e);
    let mut f = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            VmError::Missing {
                path: path.to_owned(),
            }
        } else {
            io(e)
        }
    })?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head).map_err(io)?;
    if n == 4 && &head == b"QFI\xfb" {
        return Ok("qcow2");
    }
    if n == 4 && &head == b"KDMV" {
        return Ok("vmdk");
    }
    let len = f.seek(SeekFrom::End(0)).map_err(io)?;
    if len >= 512 {
        let mut footer = [0u8; 8];
        f.seek(SeekFrom::Start(len - 512)).map_err(io)?;
        f.read_exact(&mut footer).map_err(io)?;
        if &footer == b"conectix" {
            return Ok("vpc");
        }
    }
    Ok("raw")
}

/// Creates a qcow2 overlay at `path` whose backing file is `base` (absolute), so the VM's
/// writes land in the overlay.
pub fn overlay(base: &Path, base_format: &str, path: &Path) -> Result<(), VmError> {
    let base = base
        .canonicalize()
        .map_err(|e| VmError::io(format!("{}", base.display()), e))?;
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", base_format, "-b"])
        .arg(&base)
        .arg(path)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                VmError::Config(
                    "qemu-img not found; install it with `apt-get install qemu-utils`".into(),
                )
            } else {
                VmError::io("qemu-img create", e)
            }
        })?;
    if !out.status.success() {
        return Err(VmError::Config(format!(
            "qemu-img create {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl DiskBoot {
    /// Boots `image` with `firmware`; for UEFI a copy of the OVMF variable store is made in
    /// `runtime` (a directory that outlives the VM).
    pub fn new(image: &Path, firmware: Firmware, runtime: &Path) -> Result<Self, VmError> {
        let format = detect_format(image)?.to_owned();
        let ovmf_vars = match firmware {
            Firmware::Bios => None,
            Firmware::Uefi => {
                for p in [OVMF_CODE, OVMF_VARS] {
                    if !Path::new(p).is_file() {
                        return Err(VmError::Config(format!(
                            "{p} not found: UEFI boots need OVMF; install it with `apt-get install ovmf`"
                        )));
                    }
                }
                let vars = runtime.join("OVMF_VARS.fd");
                std::fs::copy(OVMF_VARS, &vars)
                    .map_err(|e| VmError::io(format!("copying {OVMF_VARS}"), e))?;
                Some(vars)
            }
        };
        Ok(DiskBoot {
            image: image.to_owned(),
            format,
            firmware,
            ovmf_vars,
        })
    }

    /// QEMU arguments: firmware, the boot disk (virtio-blk, boot index 0) and the SMBIOS
    /// string carrying `cmdline` (the host's extra kernel arguments).
    pub fn qemu_args(&self, cmdline: &str) -> Vec<String> {
        let mut a = Vec::new();
        if let (Firmware::Uefi, Some(vars)) = (self.firmware, &self.ovmf_vars) {
            a.push("-drive".into());
            a.push(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ));
            a.push("-drive".into());
            a.push(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.to_string_lossy().replace(',', ",,")
            ));
        }
        a.push("-drive".into());
        a.push(format!(
            "file={},format={},if=none,id=boot0",
            self.image.to_string_lossy().replace(',', ",,"),
            self.format
        ));
        a.push("-device".into());
        a.push("virtio-blk-pci,drive=boot0,bootindex=0".into());
        let cmdline = cmdline.trim();
        if !cmdline.is_empty() {
            a.push("-smbios".into());
            a.push(format!(
                "type=11,value={SMBIOS_CMDLINE_PREFIX}{}",
                cmdline.replace(',', ",,")
            ));
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected() {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("a");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(detect_format(&q).unwrap(), "qcow2");
        let mut vhd = vec![0u8; 4096];
        vhd[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
        std::fs::write(&q, &vhd).unwrap();
        assert_eq!(detect_format(&q).unwrap(), "vpc");
        std::fs::write(&q, vec![0u8; 4096]).unwrap();
        assert_eq!(detect_format(&q).unwrap(), "raw");
        let e = detect_format(&d.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing") && e.contains("virga build"), "{e}");
    }

    #[test]
    fn args_carry_firmware_disk_and_cmdline() {
        let db = DiskBoot {
            image: "/x/virga.qcow2".into(),
            format: "qcow2".into(),
            firmware: Firmware::Uefi,
            ovmf_vars: Some("/run/v.fd".into()),
        };
        let a = db.qemu_args("panic=-1 virga.ds=nocloud,none").join(" ");
        assert!(
            a.contains(
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
            ),
            "{a}"
        );
        assert!(
            a.contains("if=pflash,format=raw,unit=1,file=/run/v.fd"),
            "{a}"
        );
        assert!(
            a.contains("file=/x/virga.qcow2,format=qcow2,if=none,id=boot0"),
            "{a}"
        );
        assert!(a.contains("virtio-blk-pci,drive=boot0,bootindex=0"), "{a}");
        assert!(
            a.contains("type=11,value=virga.cmdline=panic=-1 virga.ds=nocloud,,none"),
            "{a}"
        );
        let bios = DiskBoot {
            firmware: Firmware::Bios,
            ovmf_vars: None,
            ..db
        };
        assert!(!bios.qemu_args("").join(" ").contains("pflash"));
        assert!(!bios.qemu_args("").join(" ").contains("smbios"));
    }
}
