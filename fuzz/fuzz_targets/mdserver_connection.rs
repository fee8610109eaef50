//! A whole connection: arbitrary client bytes through the connection loop (pipelining,
//! bodies, `Expect`) into the EC2/OpenStack routing over a small metadata tree, with IMDSv2
//! tokens on. Must never panic, and must never serve a file from outside the tree.
#![no_main]

use std::io::Cursor;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use metadata_server::{
    Cloud, ImdsMode, InstanceSpec, Layout, MetadataService, ServerConfig, TokenKey,
    serve_connection, write_tree,
};

struct Fixture {
    _dir: std::path::PathBuf,
    service: MetadataService,
    cfg: ServerConfig,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Fixed path: parallel jobs write identical files, and runs do not pile up directories.
        let base = std::env::temp_dir().join("virga-mdserver-fuzz");
        let dir = base.join("md");
        let mut spec = InstanceSpec::new("i-0123456789abcdef0", "fuzz");
        spec.user_data = Some(b"#!/bin/sh\n".to_vec());
        write_tree(&spec.generate(Layout::OpenStackService).unwrap(), &dir).unwrap();
        // A secret next to (outside) the tree: it must never appear in a response.
        std::fs::write(base.join("outside-secret"), "OUTSIDE-SECRET").unwrap();
        let service = MetadataService::new(
            Cloud::OpenStack,
            &dir,
            ImdsMode::V1AndV2,
            Some(TokenKey::from_bytes([9; 32])),
        )
        .unwrap();
        let cfg = ServerConfig {
            idle_timeout: Duration::from_millis(50),
            request_timeout: Duration::from_millis(50),
            ..ServerConfig::default()
        };
        Fixture {
            _dir: base,
            service,
            cfg,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut out = Vec::new();
    let summary = serve_connection(
        Cursor::new(data.to_vec()),
        &mut out,
        &f.service,
        &f.cfg,
        "fuzz",
    );
    assert!(summary.requests <= data.len());
    assert!(
        !out.windows(14).any(|w| w == b"OUTSIDE-SECRET"),
        "served a file from outside the metadata directory"
    );
});
