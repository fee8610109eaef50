//! The state partition's ext4 filesystem, made reproducibly with `mkfs.ext4`.
//!
//! mke2fs reads `/etc/mke2fs.conf`, which differs between distributions and releases; virga
//! gives it its own (`MKE2FS_CONFIG`) so the features are fixed: ext4 with 4 KiB blocks, a
//! journal, 64-bit and metadata checksums, and `resize_inode` so that the guest can grow it
//! online (`EXT4_IOC_RESIZE_FS`) after growing the partition. UUID and directory hash seed come
//! from the image's seed, every timestamp from `E2FSPROGS_FAKE_TIME`, inode tables and the
//! journal are written out (no lazy initialisation left for the first mount).

use std::path::Path;
use std::process::Command;

use uuid::Uuid;

use crate::{DiskImageError, tools};

/// virga's mke2fs configuration (replaces the host's `/etc/mke2fs.conf`).
pub const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 0

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// Writes an empty ext4 filesystem labelled `label`, `size` bytes, to `out` (a new file).
pub fn make(
    out: &Path,
    size: u64,
    label: &str,
    uuid: Uuid,
    hash_seed: Uuid,
    mtime: u64,
    tmp: &Path,
) -> Result<(), DiskImageError> {
    let conf = tmp.join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).map_err(|e| DiskImageError::io(&conf, e))?;
    let _ = std::fs::remove_file(out);
    let f = std::fs::File::create(out).map_err(|e| DiskImageError::io(out, e))?;
    f.set_len(size).map_err(|e| DiskImageError::io(out, e))?;
    drop(f);
    let mut cmd = Command::new("mkfs.ext4");
    cmd.env("MKE2FS_CONFIG", &conf)
        .env("E2FSPROGS_FAKE_TIME", mtime.max(1).to_string())
        .env_remove("MKE2FS_DEVICE_SECTSIZE")
        .env_remove("MKE2FS_DEVICE_PHYS_SECTSIZE")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", label])
        .arg("-U")
        .arg(uuid.to_string())
        .arg("-E")
        .arg(format!(
            "hash_seed={hash_seed},lazy_itable_init=0,lazy_journal_init=0,nodiscard,root_owner=0:0"
        ))
        .arg(out);
    tools::run(&mut cmd, "mkfs.ext4", "e2fsprogs")?;
    Ok(())
}
