//! GRUB from Debian's packages, installed without `grub-install` or devices.
//!
//! - UEFI: `grub-mkimage -O x86_64-efi` (package `grub-efi-amd64-bin`) makes one EFI binary with
//!   every module it needs built in, written to `/EFI/BOOT/BOOTX64.EFI` on the ESP (the removable
//!   media path firmware boots without NVRAM entries). Its prefix is `/grub` on the partition it
//!   was loaded from.
//! - BIOS: `grub-mkimage -O i386-pc` (package `grub-pc-bin`) makes `core.img` with the same
//!   modules plus `biosdisk`; it goes into the BIOS boot partition. `boot.img` goes into the
//!   protective MBR's 440 code bytes. What `grub-bios-setup` would patch is patched here:
//!   boot.img's first-sector pointer (LBA of core.img), its boot-drive byte (0xff: the drive the
//!   BIOS booted from) and the drive-check jump (disabled for hard disks), and the blocklist at
//!   the end of core.img's first sector (`diskboot.img`) that loads the rest of core.img. The
//!   prefix `(,gpt2)/grub` means "partition 2 (the ESP) of the boot drive".
//! - Both read the same `/grub/grub.cfg` and `/grub/grubenv` on the ESP.
//!
//! Slot selection is RAUC's GRUB scheme with stock GRUB commands only (`load_env`, `save_env`
//! with a variable whitelist, `for`, `[ ]`): see [`grub_cfg`] and `docs/disk-layout.md`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::DiskImageError;

/// Where Debian's GRUB packages put their module directories.
pub const GRUB_LIB: &str = "/usr/lib/grub";
/// Debian package with the BIOS GRUB modules and boot.img.
pub const BIOS_PACKAGE: &str = "grub-pc-bin";
/// Debian package with the UEFI GRUB modules.
pub const EFI_PACKAGE: &str = "grub-efi-amd64-bin";
/// Debian package with `grub-mkimage` and `grub-editenv`.
pub const COMMON_PACKAGE: &str = "grub-common";

/// Modules built into both GRUB images: GPT, FAT, the script commands grub.cfg uses, the
/// environment block, the Linux loader, SMBIOS (extra kernel arguments from the hypervisor) and
/// the serial console.
pub const MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "normal",
    "configfile",
    "echo",
    "test",
    "loadenv",
    "linux",
    "regexp",
    "smbios",
    "serial",
    "terminal",
    "sleep",
    "halt",
    "reboot",
];
/// Extra modules for BIOS (`biosdisk` reads the disk through INT 13h; `boot` is built into
/// the EFI kernel but a module on i386-pc).
pub const BIOS_MODULES: &[&str] = &["biosdisk", "boot"];
/// Extra modules for UEFI.
pub const EFI_MODULES: &[&str] = &[];

/// Size of a GRUB environment block (the codec is `update::grubenv`, shared with the guest).
pub use update::grubenv::ENV_BLOCK_SIZE;

/// Where the ESP files live (paths inside the FAT filesystem, without a leading slash).
pub mod paths {
    /// The UEFI loader on the removable-media path.
    pub const EFI_LOADER: &str = "EFI/BOOT/BOOTX64.EFI";
    /// GRUB's configuration.
    pub const GRUB_CFG: &str = "grub/grub.cfg";
    /// GRUB's environment block (the slot state).
    pub const GRUB_ENV: &str = "grub/grubenv";
    /// A slot's kernel: `vmlinuz-a`, `vmlinuz-b`.
    pub fn kernel(slot: char) -> String {
        format!("vmlinuz-{}", slot.to_ascii_lowercase())
    }
    /// A slot's initramfs: `initrd-a`, `initrd-b`.
    pub fn initrd(slot: char) -> String {
        format!("initrd-{}", slot.to_ascii_lowercase())
    }
}

/// GRUB's prefix for BIOS: partition 2 (the ESP) of the drive GRUB was loaded from.
pub fn bios_prefix(esp_partition: u32) -> String {
    format!("(,gpt{esp_partition})/grub")
}
/// GRUB's prefix for UEFI: the partition the EFI binary was loaded from.
pub const EFI_PREFIX: &str = "/grub";

/// GRUB's module directory: [`GRUB_LIB`], or `$VIRGA_GRUB_LIB` (tests use it to simulate a
/// missing loader package).
fn grub_lib() -> PathBuf {
    std::env::var_os("VIRGA_GRUB_LIB")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(GRUB_LIB))
}

/// What `grub-mkimage` needs to be found.
fn platform_dir(platform: &str) -> Result<PathBuf, DiskImageError> {
    let dir = grub_lib().join(platform);
    let package = if platform == "i386-pc" {
        BIOS_PACKAGE
    } else {
        EFI_PACKAGE
    };
    if !dir.join("moddep.lst").is_file() {
        return Err(DiskImageError::MissingTool {
            what: format!("GRUB for {platform} ({} is missing)", dir.display()),
            package: package.into(),
        });
    }
    Ok(dir)
}

/// Runs `grub-mkimage` for `platform` (`i386-pc` or `x86_64-efi`) and returns the image.
pub fn mkimage(
    platform: &str,
    prefix: &str,
    modules: &[&str],
    tmp: &Path,
) -> Result<Vec<u8>, DiskImageError> {
    let dir = platform_dir(platform)?;
    let out = tmp.join(format!("grub-{platform}.img"));
    let format = if platform == "i386-pc" {
        "i386-pc"
    } else {
        "x86_64-efi"
    };
    let mut cmd = Command::new("grub-mkimage");
    cmd.arg("-d")
        .arg(&dir)
        .args(["-O", format, "-p", prefix, "-o"])
        .arg(&out)
        .args(modules);
    crate::tools::run(&mut cmd, "grub-mkimage", COMMON_PACKAGE)?;
    std::fs::read(&out).map_err(|e| DiskImageError::io(&out, e))
}

/// boot.img from `grub-pc-bin`.
pub fn boot_img() -> Result<Vec<u8>, DiskImageError> {
    let dir = platform_dir("i386-pc")?;
    let p = dir.join("boot.img");
    let img = std::fs::read(&p).map_err(|e| DiskImageError::io(&p, e))?;
    if img.len() != 512 {
        return Err(DiskImageError::Invalid(format!(
            "{} is not 512 bytes",
            p.display()
        )));
    }
    Ok(img)
}

/// Offsets in boot.img (GRUB's `include/grub/i386/pc/boot.h`).
const KERNEL_SECTOR: usize = 0x5c;
const BOOT_DRIVE: usize = 0x64;
const DRIVE_CHECK: usize = 0x66;
/// Bytes of MBR boot code (the rest is the disk signature and the partition table).
const MBR_CODE: usize = 440;
/// A blocklist entry at the end of diskboot.img: start LBA (u64), sectors (u16), segment (u16).
const BLOCKLIST_ENTRY: usize = 12;
/// Where the second sector of core.img is loaded: GRUB_BOOT_I386_PC_KERNEL_SEG + 0x20.
const CORE_SEGMENT: u16 = 0x820;

/// Puts boot.img's code into `mbr` (a protective MBR; its partition table is kept) and points
/// it at core.img starting at `core_lba`; patches core.img's first-sector blocklist so that it
/// loads the remaining sectors from `core_lba + 1`. What `grub-bios-setup` does for a disk with
/// a BIOS boot partition, without Reed-Solomon redundancy (optional: its field stays 0).
pub fn install_bios(
    mbr: &mut [u8; 512],
    boot: &[u8],
    core: &mut Vec<u8>,
    core_lba: u64,
) -> Result<(), DiskImageError> {
    if boot.len() != 512 || core.len() < 1024 {
        return Err(DiskImageError::Invalid(
            "boot.img or core.img has the wrong size".into(),
        ));
    }
    core.resize(core.len().next_multiple_of(512), 0);
    let sectors = core.len() / 512;
    let rest = u16::try_from(sectors - 1)
        .map_err(|_| DiskImageError::Invalid(format!("core.img has {sectors} sectors")))?;
    mbr[..MBR_CODE].copy_from_slice(&boot[..MBR_CODE]);
    mbr[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    mbr[BOOT_DRIVE] = 0xff;
    // A hard disk: skip the check that would replace a bogus boot drive number with 0x80.
    mbr[DRIVE_CHECK] = 0x90;
    mbr[DRIVE_CHECK + 1] = 0x90;
    let at = 512 - BLOCKLIST_ENTRY;
    core[at..at + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    core[at + 8..at + 10].copy_from_slice(&rest.to_le_bytes());
    core[at + 10..at + 12].copy_from_slice(&CORE_SEGMENT.to_le_bytes());
    // The entry below terminates the list (length 0).
    core[at - BLOCKLIST_ENTRY..at].fill(0);
    Ok(())
}

/// The environment block a fresh image ships with `slots` slots (1 or 2): `ORDER="A B"`
/// (`"A"`), `A_OK=1 A_TRY=0 B_OK=0 B_TRY=0`. The slot variables and the block codec live in the
/// `update` crate (`update::slots`, `update::grubenv`), which the guest's update agent uses to
/// change them.
pub fn fresh_env_block(slots: u8) -> Result<Vec<u8>, DiskImageError> {
    update::slots::SlotEnv::factory(slots)
        .to_block()
        .render()
        .map_err(|e| DiskImageError::Invalid(e.to_string()))
}

/// Parses an environment block (as a test reads it back): its variables in order.
pub fn parse_env_block(block: &[u8]) -> Option<Vec<(String, String)>> {
    update::grubenv::EnvBlock::parse(block)
        .ok()
        .map(|b| b.vars().to_vec())
}

/// The kernel command-line key that names the booted slot.
pub const SLOT_KEY: &str = "virga.slot";
/// The key that says how the slot was chosen: `try` or `fallback`.
pub const BOOT_KEY: &str = "virga.boot";
/// The SMBIOS OEM string (type 11) prefix whose remainder GRUB adds to the command line.
pub const SMBIOS_CMDLINE_PREFIX: &str = "virga.cmdline=";

/// `grub.cfg`: RAUC-style A/B selection, then the chosen slot's kernel and initramfs.
/// `cmdline` is the image's kernel command line; `slots` the number of system slots.
pub fn grub_cfg(cmdline: &str, slots: u8) -> String {
    let mut s = String::new();
    s.push_str(
        r#"# virga: A/B slot selection with stock GRUB (RAUC's scheme). Written by `virga build`;
# an update changes only grubenv (ORDER, A_OK, A_TRY, B_OK, B_TRY), never this file.
# Protocol: docs/disk-layout.md.
set timeout=0
if [ "$grub_platform" = pc ]; then
  serial --unit=0 --speed=115200
  terminal_input serial console
  terminal_output serial console
fi

set ORDER="A"
set A_OK=1
set A_TRY=0
set B_OK=0
set B_TRY=0
load_env --file $prefix/grubenv ORDER A_OK A_TRY B_OK B_TRY

# The first slot in ORDER that is good (X_OK=1) and not yet tried (X_TRY=0) boots; it is
# marked tried before it starts. The booted system resets X_TRY to 0 once the boot is good.
set slot=
for s in $ORDER; do
  if [ "$s" = A -a "$A_OK" = 1 -a "$A_TRY" = 0 ]; then set slot=A; set A_TRY=1; break; fi
  if [ "$s" = B -a "$B_OK" = 1 -a "$B_TRY" = 0 ]; then set slot=B; set B_TRY=1; break; fi
done
if [ -n "$slot" ]; then
  set mode=try
  save_env --file $prefix/grubenv A_TRY B_TRY
else
  # Every good slot was tried and none was marked good since: boot the first good one
  # anyway (never brick), and tell the system so.
  set mode=fallback
  for s in $ORDER; do
    if [ "$s" = A -a "$A_OK" = 1 ]; then set slot=A; break; fi
    if [ "$s" = B -a "$B_OK" = 1 ]; then set slot=B; break; fi
  done
fi

# Extra kernel arguments from the hypervisor: one SMBIOS OEM string (type 11)
# "virga.cmdline=ARGS" (the string named by the count byte, i.e. the last one).
set extra=
if smbios --type 11 --get-string 4 --set oem; then
  regexp --set 1:extra '^virga\.cmdline=(.*)$' "$oem"
fi

"#,
    );
    for slot in ['A', 'B'].iter().take(usize::from(slots.clamp(1, 2))) {
        s.push_str(&format!(
            "if [ \"$slot\" = {slot} ]; then\n  echo \"virga: booting slot {slot} ($mode)\"\n  linux /{k} {cmdline} $extra {SLOT_KEY}={slot} {BOOT_KEY}=$mode\n  initrd /{i}\n  boot\nfi\n",
            k = paths::kernel(*slot),
            i = paths::initrd(*slot),
        ));
    }
    s.push_str(
        "echo \"virga: no bootable slot (ORDER=$ORDER A_OK=$A_OK B_OK=$B_OK)\"\nsleep 30\nreboot\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_block_is_1024_bytes_and_parses() {
        let b = fresh_env_block(2).unwrap();
        assert_eq!(b.len(), ENV_BLOCK_SIZE);
        let mut want =
            b"# GRUB Environment Block\nORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n".to_vec();
        want.resize(ENV_BLOCK_SIZE, b'#');
        assert_eq!(b, want, "the bytes images have always shipped");
        let back = parse_env_block(&b).unwrap();
        assert_eq!(back[0], ("ORDER".into(), "A B".into()));
        assert_eq!(back[1], ("A_OK".into(), "1".into()));
        assert_eq!(back[3], ("B_OK".into(), "0".into()));
        assert_eq!(
            parse_env_block(&fresh_env_block(1).unwrap()).unwrap()[0].1,
            "A"
        );
        assert!(parse_env_block(&b[..100]).is_none());
    }

    #[test]
    fn bios_install_patches_pointers() {
        let mut mbr = [0u8; 512];
        mbr[0x1be] = 0xee;
        mbr[510] = 0x55;
        let boot: Vec<u8> = (0..512).map(|i| i as u8).collect();
        let mut core = vec![0u8; 3000];
        install_bios(&mut mbr, &boot, &mut core, 2048).unwrap();
        assert_eq!(&mbr[..0x5c], &boot[..0x5c]);
        assert_eq!(&mbr[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(mbr[0x64], 0xff);
        assert_eq!(&mbr[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(mbr[0x1be], 0xee, "partition table kept");
        assert_eq!(mbr[510], 0x55);
        assert_eq!(core.len(), 3072);
        assert_eq!(&core[500..508], &2049u64.to_le_bytes());
        assert_eq!(&core[508..510], &5u16.to_le_bytes());
        assert_eq!(&core[510..512], &0x820u16.to_le_bytes());
        assert!(install_bios(&mut mbr, &boot[..10], &mut core, 1).is_err());
    }

    #[test]
    fn grub_cfg_has_both_slots_and_the_protocol() {
        let c = grub_cfg("console=ttyS0 quiet", 2);
        assert!(
            c.contains("linux /vmlinuz-a console=ttyS0 quiet $extra virga.slot=A virga.boot=$mode")
        );
        assert!(c.contains("initrd /initrd-b"));
        assert!(c.contains("save_env --file $prefix/grubenv A_TRY B_TRY"));
        let one = grub_cfg("console=ttyS0", 1);
        assert!(!one.contains("vmlinuz-b"));
    }
}
