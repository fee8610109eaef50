//! cloud-config YAML, write_files planning and merging.
//!
//! Run with inputs large enough for expansion bombs (see `fuzz/options/`):
//! `cargo fuzz run -s none metadata_cloud_config -- -max_len=1048576 -max_total_time=60`
#![no_main]

use cloud_metadata::cloud_config::parse_cloud_config;
use cloud_metadata::write_files::plan;
use cloud_metadata::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_decoded_bytes: 1 << 20, ..Limits::default() };
    if let Ok(cc) = parse_cloud_config(data, &limits) {
        for f in &cc.write_files {
            if let Ok(p) = plan(f, &limits) {
                assert!(!p.components.iter().any(|c| c == ".." || c.is_empty()));
            }
        }
        let mut merged = cc.clone();
        merged.merge(cc);
    }
});
