//! NoCloud `meta-data` (YAML or JSON), strict and lenient, and a whole NoCloud seed.
//!
//! Run with inputs large enough for expansion bombs (see `fuzz/options/`):
//! `cargo fuzz run -s none metadata_nocloud_meta_data -- -max_len=1048576 -max_total_time=60`
#![no_main]

use cloud_metadata::nocloud::{self, NoCloudFiles};
use cloud_metadata::{Datasource, Limits, hostname};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(md) = nocloud::parse_meta_data(data, &limits) {
        assert!(!md.instance_id.is_empty());
        let _ = md.to_query_json();
    }
    let md = nocloud::parse_meta_data_lenient(data, Datasource::NoCloud, None, &limits);
    assert!(!md.instance_id.is_empty());
    // Whatever the input, no hostname that is not RFC 1123 and no multi-line problem.
    assert!(md.local_hostname.as_deref().is_none_or(hostname::is_valid));
    assert!(md.problems.iter().all(|p| !p.to_string().contains('\n')));
    // The same bytes as every file of a seed: never discarded.
    let files = NoCloudFiles {
        meta_data: data,
        user_data: Some(data),
        vendor_data: Some(data),
        network_config: Some(data),
        platform_id: std::str::from_utf8(data).ok(),
    };
    let md = nocloud::assemble(files, Datasource::NoCloud, &limits);
    assert!(!md.instance_id.is_empty());
});
