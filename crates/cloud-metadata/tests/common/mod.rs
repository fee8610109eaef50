//! Helpers shared by the integration tests: fixture access and fake drivers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cloud_metadata::http::{HttpOutcome, HttpRequest};

/// Absolute path of a fixture.
pub fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A fixture's bytes.
pub fn read(rel: &str) -> Vec<u8> {
    std::fs::read(path(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// A file-backed driver, as the guest's config-drive / seed-directory driver behaves:
/// a path ending in `/` lists the directory, a file answers 200, anything missing 404.
pub fn dir_driver(root: PathBuf) -> impl FnMut(&HttpRequest) -> HttpOutcome {
    move |req: &HttpRequest| {
        assert!(
            !req.path.split('/').any(|c| c == ".."),
            "crawler asked for {:?}",
            req.path
        );
        let p = root.join(req.path.trim_start_matches('/'));
        if req.path.ends_with('/') {
            return match std::fs::read_dir(&p) {
                Ok(rd) => {
                    let mut names: Vec<String> = rd
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    HttpOutcome::ok(names.join("\n"))
                }
                Err(_) => HttpOutcome::status(404),
            };
        }
        match std::fs::read(&p) {
            Ok(b) => HttpOutcome::ok(b),
            Err(_) => HttpOutcome::status(404),
        }
    }
}
