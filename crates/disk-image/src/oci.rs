//! KubeVirt containerDisk: an OCI image archive whose single layer holds the disk at
//! `/disk/virga.qcow2`, owned by 107:107 (KubeVirt's `qemu` user) with mode 0440, as KubeVirt's
//! containerDisk volumes expect. Written here (not with a container tool) so that it is
//! byte-for-byte reproducible: sorted entries, fixed owners, modes and timestamps, and no
//! creation date in the image config.
//!
//! Load it with `skopeo copy oci-archive:virga.containerdisk.tar docker://REGISTRY/virga:TAG`
//! or `podman load -i virga.containerdisk.tar`.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::DiskImageError;

/// Where the disk goes inside the image.
pub const DISK_PATH: &str = "disk/virga.qcow2";
/// KubeVirt's qemu user and group.
pub const KUBEVIRT_UID: u64 = 107;

const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn header(
    path: &str,
    size: u64,
    mode: u32,
    uid: u64,
    kind: tar::EntryType,
    mtime: u64,
) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(mtime);
    // Paths here are short ASCII; set_path cannot fail on them, checked by the tests.
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

/// A tar archive of `entries` (path, mode, uid/gid, contents; `None` = directory), in order.
fn tar(entries: &[(&str, u32, u64, Option<&[u8]>)], mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, uid, data) in entries {
        match data {
            None => {
                let h = header(path, 0, *mode, *uid, tar::EntryType::Directory, mtime);
                b.append(&h, std::io::empty())?;
            }
            Some(d) => {
                let h = header(
                    path,
                    d.len() as u64,
                    *mode,
                    *uid,
                    tar::EntryType::Regular,
                    mtime,
                );
                b.append(&h, *d)?;
            }
        }
    }
    b.into_inner()
}

fn digest(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", digest(data)),
        "size": data.len(),
    })
}

/// Builds the containerDisk archive for `qcow2` (the disk's bytes). `image_name` goes into the
/// index's `io.containerd.image.name` annotation; `mtime` stamps every tar entry.
pub fn containerdisk(
    qcow2: &[u8],
    image_name: &str,
    mtime: u64,
) -> Result<Vec<u8>, DiskImageError> {
    let io = |e| DiskImageError::io(Path::new("containerdisk"), e);
    let layer = tar(
        &[
            ("disk/", 0o555, 0, None),
            (DISK_PATH, 0o440, KUBEVIRT_UID, Some(qcow2)),
        ],
        mtime,
    )
    .map_err(io)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", digest(&layer))] },
    }))
    .map_err(|e| DiskImageError::Invalid(e.to_string()))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": descriptor(MT_CONFIG, &config),
        "layers": [descriptor(MT_LAYER, &layer)],
    }))
    .map_err(|e| DiskImageError::Invalid(e.to_string()))?;
    let mut m = descriptor(MT_MANIFEST, &manifest);
    m["annotations"] = serde_json::json!({
        "io.containerd.image.name": image_name,
        "org.opencontainers.image.ref.name": image_name.rsplit_once(':').map_or("latest", |(_, t)| t),
    });
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [m],
    }))
    .map_err(|e| DiskImageError::Invalid(e.to_string()))?;
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();
    let mut blobs: Vec<(String, &[u8])> = vec![
        (format!("blobs/sha256/{}", digest(&layer)), &layer),
        (format!("blobs/sha256/{}", digest(&config)), &config),
        (format!("blobs/sha256/{}", digest(&manifest)), &manifest),
    ];
    blobs.sort();
    let mut entries: Vec<(&str, u32, u64, Option<&[u8]>)> = vec![
        ("blobs/", 0o755, 0, None),
        ("blobs/sha256/", 0o755, 0, None),
    ];
    for (p, d) in &blobs {
        entries.push((p.as_str(), 0o644, 0, Some(d)));
    }
    entries.push(("index.json", 0o644, 0, Some(&index)));
    entries.push(("oci-layout", 0o644, 0, Some(&layout)));
    tar(&entries, mtime).map_err(io)
}

/// One entry of a layer: path, uid, gid, mode, size.
pub type LayerEntry = (String, u64, u64, u32, u64);

/// The manifest's layer, read back from an archive written by [`containerdisk`]: the layer
/// tar's entries as (path, uid, gid, mode, size). For tests and checks.
pub fn read_layer_entries(archive: &[u8]) -> Result<Vec<LayerEntry>, DiskImageError> {
    let bad = |m: &str| DiskImageError::Invalid(format!("containerDisk archive: {m}"));
    let mut files = std::collections::BTreeMap::new();
    let mut a = tar::Archive::new(archive);
    for e in a.entries().map_err(|_| bad("not a tar"))? {
        let mut e = e.map_err(|_| bad("bad tar entry"))?;
        let path = e
            .path()
            .map_err(|_| bad("bad path"))?
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).map_err(|_| bad("short entry"))?;
        files.insert(path, data);
    }
    let blob = |digest: &str| -> Result<&Vec<u8>, DiskImageError> {
        let hexd = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| bad("digest is not sha256"))?;
        let b = files
            .get(&format!("blobs/sha256/{hexd}"))
            .ok_or_else(|| bad("missing blob"))?;
        if self::digest(b) != hexd {
            return Err(bad("blob digest mismatch"));
        }
        Ok(b)
    };
    let index: serde_json::Value = serde_json::from_slice(
        files
            .get("index.json")
            .ok_or_else(|| bad("no index.json"))?,
    )
    .map_err(|_| bad("index.json is not JSON"))?;
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| bad("no manifest"))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(blob(mdigest)?).map_err(|_| bad("manifest is not JSON"))?;
    let ldigest = manifest["layers"][0]["digest"]
        .as_str()
        .ok_or_else(|| bad("no layer"))?;
    let layer = blob(ldigest)?;
    let mut out = Vec::new();
    let mut a = tar::Archive::new(&layer[..]);
    for e in a.entries().map_err(|_| bad("layer is not a tar"))? {
        let e = e.map_err(|_| bad("bad layer entry"))?;
        let h = e.header();
        out.push((
            e.path()
                .map_err(|_| bad("bad path"))?
                .to_string_lossy()
                .into_owned(),
            h.uid().unwrap_or(u64::MAX),
            h.gid().unwrap_or(u64::MAX),
            h.mode().unwrap_or(0),
            h.size().unwrap_or(0),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_what_kubevirt_expects_and_reproducible() {
        let disk = b"QFI\xfbfake qcow2".repeat(100);
        let a = containerdisk(&disk, "virga/test:latest", 0).unwrap();
        assert_eq!(a, containerdisk(&disk, "virga/test:latest", 0).unwrap());
        let entries = read_layer_entries(&a).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[1],
            (DISK_PATH.to_owned(), 107, 107, 0o440, disk.len() as u64)
        );
        assert_ne!(a, containerdisk(&disk, "virga/test:latest", 1).unwrap());
    }
}
