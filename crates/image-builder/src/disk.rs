//! The bootable disk: the slot's verified system filesystem, then the disk around the kernel
//! and initramfs (layout, GRUB, ESP, state) in the requested formats. The low-level pieces are
//! in the `disk-image` crate; this module decides what goes where (docs/disk-layout.md).

use std::path::{Path, PathBuf};

use boot_contract::SystemImage;
use disk_image::formats::DiskFormat;
use disk_image::layout::{self, Layout, LayoutParams, Role};
use disk_image::sysfs::SystemFs;
use disk_image::{grub, guid, verity};
use image_spec::{DiskInfo, ImageSpec, PartitionInfo, SlotContents, VerityInfo};
use seed_image::{SeedTree, VfatOptions};
use sha2::{Digest, Sha256};

use crate::tree::{Node, Tree};
use crate::{BuildError, Progress};

/// Modules the initramfs needs to mount the slot (besides the disk drivers): dm-verity and
/// the slot's filesystem.
pub fn slot_modules(spec: &ImageSpec) -> Vec<String> {
    vec!["dm_verity".into(), system_fs(spec).name().into()]
}

fn system_fs(spec: &ImageSpec) -> SystemFs {
    match spec.disk.system_fs {
        image_spec::SystemFs::Squashfs => SystemFs::Squashfs,
        image_spec::SystemFs::Erofs => SystemFs::Erofs,
    }
}

/// The slot's system filesystem, verified.
#[derive(Debug)]
pub struct SystemBuild {
    /// Filesystem image (a multiple of 4096 bytes).
    pub image: Vec<u8>,
    /// Hash device: verity superblock + tree.
    pub hash_dev: Vec<u8>,
    /// Verity parameters.
    pub verity: verity::VerityParams,
    /// What it holds.
    pub contents: SlotContents,
    /// What the initramfs gets to find and verify it.
    pub system: SystemImage,
}

/// The `/usr` tree of the slot, from the initramfs tree: BusyBox with its applet links (in
/// `bin/` and `sbin/`, relative links) and the modules (`lib/modules/<release>/…`), plus
/// `lib/os-release`. Returns the tree, a summary of what it holds, and the initramfs paths it
/// duplicates.
pub fn usr_tree(tree: &Tree) -> (Tree, Vec<String>, Vec<String>) {
    let mut usr = Tree::new();
    let (mut applets, mut modules) = (0usize, 0usize);
    let mut has_busybox = false;
    for (path, node) in tree.iter() {
        if let Some(rest) = path.strip_prefix("/lib/modules/") {
            if path.ends_with(".ko") {
                modules += 1;
            }
            let dest = format!("/lib/modules/{rest}");
            match node {
                Node::Dir { mode } => usr.dir(&dest, *mode),
                Node::File { data, mode } => usr.file(&dest, data.clone(), *mode),
                Node::Symlink { target } => usr.symlink(&dest, target),
                Node::CharDev { .. } => {}
            }
            continue;
        }
        match node {
            Node::File { data, mode } if path == "/bin/busybox" => {
                usr.file("/bin/busybox", data.clone(), *mode);
                has_busybox = true;
            }
            Node::Symlink { target } if target == "/bin/busybox" => {
                let name = path.rsplit('/').next().unwrap_or_default();
                let (dest, link) = if path.starts_with("/bin/") || path.starts_with("/usr/bin/") {
                    (format!("/bin/{name}"), "busybox")
                } else {
                    (format!("/sbin/{name}"), "../bin/busybox")
                };
                if !usr.contains(&dest) {
                    usr.symlink(&dest, link);
                    applets += 1;
                }
            }
            // Everything else the initramfs has under /usr (the `/usr/bin/virga` link, files a
            // spec adds there) stays visible once the slot is mounted over /usr.
            node if path.starts_with("/usr/") => {
                let dest = &path["/usr".len()..];
                if !usr.contains(dest) {
                    match node {
                        Node::Dir { mode } => usr.dir(dest, *mode),
                        Node::File { data, mode } => usr.file(dest, data.clone(), *mode),
                        Node::Symlink { target } => usr.symlink(dest, target),
                        Node::CharDev { .. } => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(Node::File { data, .. }) = tree.get("/etc/os-release") {
        usr.file("/lib/os-release", data.clone(), 0o644);
    }
    let mut holds = Vec::new();
    let mut dup = Vec::new();
    if has_busybox {
        holds.push(format!(
            "/usr/bin/busybox (+ {applets} applet links in /usr/bin, /usr/sbin)"
        ));
        dup.push("/bin/busybox and its applet links".to_owned());
    }
    if modules > 0 {
        holds.push(format!(
            "/usr/lib/modules ({modules} modules and modules.dep)"
        ));
        dup.push("/lib/modules".to_owned());
    }
    holds.push("/usr/lib/os-release".to_owned());
    (usr, holds, dup)
}

fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Builds the slot's filesystem from `tree` in `work` and its verity hash tree.
pub fn build_system(
    spec: &ImageSpec,
    tree: &Tree,
    work: &Path,
    mtime: u64,
) -> Result<SystemBuild, BuildError> {
    let (usr, holds, dup) = usr_tree(tree);
    let dir = work.join("usr");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| BuildError::io(&dir, e))?;
    usr.write_dir(&dir).map_err(|e| BuildError::io(&dir, e))?;
    let (mut files, mut file_bytes) = (0u64, 0u64);
    for (_, n) in usr.iter() {
        if let Node::File { data, .. } = n {
            files += 1;
            file_bytes += data.len() as u64;
        }
    }
    let spec_hash = spec.hash();
    let kind = system_fs(spec);
    let image = disk_image::sysfs::build(
        kind,
        &dir,
        &work.join("usr.img"),
        mtime,
        guid::derive(spec_hash.as_bytes(), "system-fs"),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    let usr_size = spec.disk.usr_bytes();
    if image.len() as u64 > usr_size {
        return Err(BuildError::Disk(disk_image::DiskImageError::TooSmall {
            what: format!(
                "the system filesystem ({} of {files} files, {file_bytes} bytes uncompressed)",
                kind.name()
            ),
            place: "each slot's system partition (disk.usr_size)".into(),
            need: image.len() as u64,
            have: usr_size,
            fix: "raise disk.usr_size in the spec".into(),
        }));
    }
    let salt = sha(&[
        b"virga verity salt\0",
        spec_hash.as_bytes(),
        &Sha256::digest(&image),
    ]);
    let uuid = guid::derive(spec_hash.as_bytes(), "verity-A").into_bytes();
    let (hash_dev, params) = verity::build(&image, &salt, uuid)?;
    let (usr_id, hash_id) = guid::from_root_hash(&params.root_hash);
    let system = SystemImage {
        filesystem: kind.name().into(),
        usr_partuuid: usr_id.to_string(),
        verity_partuuid: hash_id.to_string(),
        root_hash: params.root_hash_hex(),
        salt: params.salt_hex(),
        hash_algorithm: verity::ALGORITHM.into(),
        block_size: verity::BLOCK_SIZE,
        data_blocks: params.data_blocks,
        hash_offset: params.tree_offset(),
    };
    let contents = SlotContents {
        filesystem: kind.name().into(),
        filesystem_bytes: image.len() as u64,
        files,
        file_bytes,
        holds,
        also_in_initramfs: dup,
    };
    Ok(SystemBuild {
        image,
        hash_dev,
        verity: params,
        contents,
        system,
    })
}

/// What [`build_disk`] wrote.
#[derive(Debug)]
pub struct DiskBuild {
    /// For the manifest.
    pub info: DiskInfo,
    /// The files, in `formats` order: (format, path in the output directory under construction).
    pub files: Vec<(DiskFormat, PathBuf)>,
}

fn image_ref(name: &str) -> String {
    let clean: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("localhost/virga/{clean}:latest")
}

/// Builds the disk in `out` (the output directory under construction) in every format of
/// `formats`; intermediate files go to `work`.
#[allow(clippy::too_many_arguments)]
pub fn build_disk(
    spec: &ImageSpec,
    formats: &[DiskFormat],
    sys: &SystemBuild,
    vmlinuz: &[u8],
    initramfs: &[u8],
    out: &Path,
    work: &Path,
    mtime: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<DiskBuild, BuildError> {
    let d = &spec.disk;
    let seed = [spec.hash().as_bytes(), &sys.verity.root_hash[..]].concat();
    let params = LayoutParams {
        disk_size: d.size_bytes(),
        esp_size: d.esp_bytes(),
        usr_size: d.usr_bytes(),
        slots: d.slots,
    };
    let layout = Layout::plan(&params, &seed, &sys.verity.root_hash)?;
    let hash_part = layout.require(Role::UsrVerity('A'))?;
    if sys.hash_dev.len() as u64 > hash_part.size {
        return Err(BuildError::Disk(disk_image::DiskImageError::TooSmall {
            what: "slot A's verity hash tree".into(),
            place: format!("partition {}", hash_part.label),
            need: sys.hash_dev.len() as u64,
            have: hash_part.size,
            fix: "this is a bug in the layout's verity sizing".into(),
        }));
    }

    // GRUB for both firmware kinds.
    let bios_core = grub::mkimage(
        "i386-pc",
        &grub::bios_prefix(layout::ESP_PARTITION),
        &[grub::MODULES, grub::BIOS_MODULES].concat(),
        work,
    )?;
    let efi = grub::mkimage(
        "x86_64-efi",
        grub::EFI_PREFIX,
        &[grub::MODULES, grub::EFI_MODULES].concat(),
        work,
    )?;
    let boot_img = grub::boot_img()?;

    // The ESP.
    let cmdline = spec.kernel.cmdline.clone();
    let mut esp = SeedTree::new();
    let fat = disk_image::DiskImageError::Fat;
    esp.insert(grub::paths::EFI_LOADER, efi.clone())
        .map_err(fat)?;
    esp.insert(
        grub::paths::GRUB_CFG,
        grub::grub_cfg(&cmdline, d.slots).into_bytes(),
    )
    .map_err(fat)?;
    esp.insert(grub::paths::GRUB_ENV, grub::fresh_env_block(d.slots)?)
        .map_err(fat)?;
    esp.insert(&grub::paths::kernel('A'), vmlinuz.to_vec())
        .map_err(fat)?;
    esp.insert(&grub::paths::initrd('A'), initramfs.to_vec())
        .map_err(fat)?;
    let esp_part = layout.require(Role::Esp)?;
    let esp_img = seed_image::build_vfat_with(
        &esp,
        layout::ESP_FS_LABEL,
        VfatOptions {
            size: Some(esp_part.size),
            volume_id: Some(guid::volume_id(&seed, "esp-fat")),
        },
    )
    .map_err(|e| {
        BuildError::Disk(disk_image::DiskImageError::TooSmall {
            what: format!(
                "the ESP's files (GRUB {} + kernel {} + initramfs {} bytes, and room for slot B's) [{e}]",
                efi.len(),
                vmlinuz.len(),
                initramfs.len()
            ),
            place: "the EFI system partition (disk.esp_size)".into(),
            need: (efi.len() + vmlinuz.len() + initramfs.len()) as u64,
            have: esp_part.size,
            fix: "raise disk.esp_size".into(),
        })
    })?;
    let esp_free_needed = (vmlinuz.len() + initramfs.len()) as u64;
    if d.slots == 2 && (efi.len() as u64 + 2 * esp_free_needed + (1 << 20)) > esp_part.size {
        return Err(BuildError::Disk(disk_image::DiskImageError::TooSmall {
            what: "two slots' kernels and initramfs plus GRUB on the ESP".into(),
            place: "the EFI system partition (disk.esp_size)".into(),
            need: efi.len() as u64 + 2 * esp_free_needed + (1 << 20),
            have: esp_part.size,
            fix: "raise disk.esp_size".into(),
        }));
    }

    // The state partition: an empty ext4 labelled virga-state.
    let state_part = layout.require(Role::State)?;
    let state_img = work.join("state.ext4");
    disk_image::ext4::make(
        &state_img,
        state_part.size,
        layout::STATE_LABEL,
        guid::derive(&seed, "state-fs"),
        guid::derive(&seed, "state-hash-seed"),
        mtime,
        work,
    )?;

    progress(Progress::Detail(format!(
        "layout: {} MiB, {} partitions, disk GUID {}",
        layout.disk_size >> 20,
        layout.partitions.len(),
        layout.disk_guid
    )));
    let raw = out.join(DiskFormat::Raw.file_name());
    disk_image::writer::write_raw(
        &raw,
        &disk_image::writer::DiskContents {
            layout: &layout,
            boot_img: &boot_img,
            core_img: &bios_core,
            esp: &esp_img,
            usr_a: &sys.image,
            usr_a_verity: &sys.hash_dev,
            state: Some(&state_img),
        },
    )?;
    let _ = std::fs::remove_file(&state_img);

    let mut files = Vec::new();
    let mut qcow2_tmp = None;
    for &f in formats {
        let path = out.join(f.file_name());
        match f {
            DiskFormat::Raw => {}
            DiskFormat::ContainerDisk => {
                let q = if formats.contains(&DiskFormat::Qcow2) {
                    out.join(DiskFormat::Qcow2.file_name())
                } else {
                    let q = work.join("containerdisk.qcow2");
                    disk_image::formats::convert(&raw, DiskFormat::Qcow2, &q, &seed, mtime)?;
                    qcow2_tmp = Some(q.clone());
                    q
                };
                let qcow2 = std::fs::read(&q).map_err(|e| BuildError::io(&q, e))?;
                let archive =
                    disk_image::oci::containerdisk(&qcow2, &image_ref(&spec.name), mtime)?;
                std::fs::write(&path, archive).map_err(|e| BuildError::io(&path, e))?;
            }
            other => disk_image::formats::convert(&raw, other, &path, &seed, mtime)?,
        }
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        progress(Progress::Detail(format!(
            "{:<14} {:>12} bytes  {}",
            f.name(),
            size,
            f.file_name()
        )));
        files.push((f, path));
    }
    if let Some(q) = qcow2_tmp {
        let _ = std::fs::remove_file(q);
    }
    if !formats.contains(&DiskFormat::Raw) {
        std::fs::remove_file(&raw).map_err(|e| BuildError::io(&raw, e))?;
    }

    let v = &sys.verity;
    let info = DiskInfo {
        size: layout.disk_size,
        slots: d.slots,
        disk_guid: layout.disk_guid.to_string(),
        partitions: layout
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                number: p.number,
                label: p.label.clone(),
                type_guid: p.type_guid.to_string(),
                guid: p.guid.to_string(),
                start: p.start,
                size: p.size,
            })
            .collect(),
        verity: VerityInfo {
            root_hash: v.root_hash_hex(),
            salt: v.salt_hex(),
            hash_algorithm: verity::ALGORITHM.into(),
            data_block_size: verity::BLOCK_SIZE,
            hash_block_size: verity::BLOCK_SIZE,
            data_blocks: v.data_blocks,
            hash_offset: v.tree_offset(),
        },
        slot: sys.contents.clone(),
        cmdline,
        formats: formats.iter().map(|f| f.name().to_owned()).collect(),
    };
    Ok(DiskBuild { info, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usr_tree_takes_busybox_and_modules_only() {
        let mut t = Tree::new();
        t.file("/bin/busybox", b"bb".to_vec(), 0o755);
        t.symlink("/bin/sh", "/bin/busybox");
        t.symlink("/usr/sbin/chroot", "/bin/busybox");
        t.symlink("/usr/bin/virga", "/sbin/virga");
        t.symlink("/sbin/init", "virga");
        t.file("/sbin/virga", b"guest".to_vec(), 0o755);
        t.file("/lib/modules/6.1/kernel/a.ko", b"ko".to_vec(), 0o644);
        t.file("/lib/modules/6.1/modules.dep", b"".to_vec(), 0o644);
        t.file("/etc/os-release", b"ID=virga\n".to_vec(), 0o644);
        let (u, holds, dup) = usr_tree(&t);
        assert!(matches!(u.get("/bin/sh"), Some(Node::Symlink { target }) if target == "busybox"));
        assert!(
            matches!(u.get("/sbin/chroot"), Some(Node::Symlink { target }) if target == "../bin/busybox")
        );
        assert!(u.get("/sbin/init").is_none());
        assert!(u.get("/sbin/virga").is_none());
        assert!(u.contains("/lib/modules/6.1/kernel/a.ko"));
        assert!(
            matches!(u.get("/bin/virga"), Some(Node::Symlink { target }) if target == "/sbin/virga"),
            "the initramfs's own /usr entries are kept"
        );
        assert!(u.contains("/lib/os-release"));
        assert_eq!(holds.len(), 3, "{holds:?}");
        assert!(holds[1].contains("1 modules"), "{holds:?}");
        assert_eq!(dup.len(), 2);
    }

    #[test]
    fn every_spec_format_is_a_disk_format() {
        for f in image_spec::DISK_FORMATS {
            assert_eq!(f.parse::<DiskFormat>().unwrap().name(), *f);
        }
        assert_eq!(
            image_ref("Virga Default"),
            "localhost/virga/virga-default:latest"
        );
    }
}
