//! ISO9660 images through `hadris-iso`: Level 2 base names, plus Joliet (level 3) and Rock
//! Ridge so Linux, `isoinfo -R/-J` and `xorriso` all see the exact lowercase names with `-`,
//! `_` and `.`.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use hadris_iso::joliet::JolietLevel;
use hadris_iso::read::PathSeparator;
use hadris_iso::rrip::RripOptions;
use hadris_iso::write::options::{BaseIsoLevel, CreationFeatures, IsoFormatOptions};
use hadris_iso::write::{File as IsoFile, InputFiles, IsoImageWriter};

use crate::{SeedFormat, SeedImageError, SeedTree};

/// Longest ISO9660 volume identifier.
const MAX_LABEL: usize = 32;

/// Writes `tree` as an ISO9660 image with volume identifier `label` (stored verbatim, so
/// `blkid` reports `LABEL="cidata"`) to `out`; returns the image size.
pub fn write_iso(tree: &SeedTree, label: &str, out: &Path) -> Result<u64, SeedImageError> {
    check_label(label)?;
    let files = InputFiles {
        path_separator: PathSeparator::ForwardSlash,
        files: build_level(tree, ""),
    };
    let options = IsoFormatOptions {
        volume_name: label.to_owned(),
        system_id: Some("LINUX".to_owned()),
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: Some("VIRGA SEED-IMAGE".to_owned()),
        sector_size: 2048,
        path_separator: PathSeparator::ForwardSlash,
        features: CreationFeatures {
            filenames: BaseIsoLevel::Level2 {
                supports_lowercase: false,
                supports_rrip: true,
            },
            long_filenames: false,
            joliet: Some(JolietLevel::Level3),
            rock_ridge: Some(RripOptions {
                // Seeds are shallow; preserve nothing from the host (owner, modes).
                preserve_ownership: false,
                preserve_symlinks: false,
                preserve_devices: false,
                ..RripOptions::default()
            }),
            ..CreationFeatures::default()
        },
        strict_charset: false,
    };
    let mut image = Cursor::new(Vec::new());
    IsoImageWriter::create(&mut image, files, options)
        .map_err(|e| SeedImageError::Iso(e.to_string()))?;
    let bytes = image.into_inner();
    std::fs::write(out, &bytes)
        .map_err(|e| SeedImageError::io(format!("writing {}", out.display()), e))?;
    Ok(bytes.len() as u64)
}

fn check_label(label: &str) -> Result<(), SeedImageError> {
    let bad = |reason| {
        Err(SeedImageError::InvalidLabel {
            label: label.to_owned(),
            format: SeedFormat::Iso,
            reason,
        })
    };
    if label.is_empty() {
        return bad("empty");
    }
    if label.len() > MAX_LABEL {
        return bad("longer than 32 bytes");
    }
    if !label.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("only printable ASCII without spaces");
    }
    Ok(())
}

/// The entries directly under `dir` ("" = root): files, then sub-directories built
/// recursively. `SeedTree` keeps paths sorted, so the result is deterministic.
fn build_level(tree: &SeedTree, dir: &str) -> Vec<IsoFile> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut entries = Vec::new();
    let mut subdirs: Vec<&str> = Vec::new();
    for (path, contents) in tree.files() {
        let Some(rest) = path.strip_prefix(&prefix) else {
            continue;
        };
        match rest.split_once('/') {
            None => entries.push(IsoFile::File {
                name: Arc::new(rest.to_owned()),
                contents: contents.to_vec(),
            }),
            Some((sub, _)) => {
                if subdirs.last() != Some(&sub) {
                    subdirs.push(sub);
                }
            }
        }
    }
    subdirs.dedup();
    for sub in subdirs {
        entries.push(IsoFile::Directory {
            name: Arc::new(sub.to_owned()),
            children: build_level(tree, &format!("{prefix}{sub}")),
        });
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FsType, probe};

    #[test]
    fn iso_probe_round_trip() {
        let tree = SeedTree::from_files([
            ("meta-data", b"{\"instance-id\": \"i-0123\"}\n".to_vec()),
            ("user-data", b"#!/bin/sh\necho hi\n".to_vec()),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seed.iso");
        let size = write_iso(&tree, "cidata", &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(bytes.len() as u64, size);
        let p = probe(&bytes).unwrap();
        assert_eq!(p.fs_type, FsType::Iso9660);
        assert_eq!(p.label.as_deref(), Some("cidata"));
        // The file contents are stored verbatim somewhere on the image.
        let needle = b"#!/bin/sh\necho hi\n";
        assert!(bytes.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn labels_are_checked() {
        let tree = SeedTree::new();
        let out = tempfile::tempdir().unwrap();
        for bad in ["", "has space", &"x".repeat(33)] {
            let err = write_iso(&tree, bad, &out.path().join("x.iso")).unwrap_err();
            assert!(matches!(err, SeedImageError::InvalidLabel { .. }), "{err}");
        }
    }
}
