//! The small text parsers: SSH public keys, write_files paths, `ds=nocloud` seed strings,
//! frequencies, version listings.
//!
//! Run with inputs large enough for expansion bombs (see `fuzz/options/`):
//! `cargo fuzz run -s none metadata_small_parsers -- -max_len=1048576 -max_total_time=60`
#![no_main]

use cloud_metadata::frequency::{Frequency, RunContext, marker_name};
use cloud_metadata::nocloud::NoCloudSeed;
use cloud_metadata::{openstack, sshkey, write_files};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(k) = sshkey::parse_public_key(text) {
        assert_eq!(sshkey::parse_public_key(&k.to_line()).ok(), Some(k));
    }
    if let Ok(p) = write_files::validate_path(text) {
        assert_eq!(write_files::validate_path(&p).ok().as_deref(), Some(p.as_str()));
    }
    let _ = NoCloudSeed::from_cmdline(text);
    let _ = text.parse::<Frequency>();
    let ctx = RunContext { instance_id: text, boot_id: text };
    if let Ok(Some(m)) = marker_name(Frequency::PerInstance, "x", &ctx) {
        assert!(!m.contains('/'));
    }
    let _ = openstack::select_version(text);
});
