//! OpenStack / config drive `meta_data.json` (strict and lenient), `vendor_data.json`, and a
//! config drive assembled from the same bytes in every file.
//!
//! Run with inputs large enough for expansion bombs (see `fuzz/options/`):
//! `cargo fuzz run -s none metadata_openstack_meta_data -- -max_len=1048576 -max_total_time=60`
#![no_main]

use cloud_metadata::{Datasource, Limits, hostname, openstack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(md) = openstack::parse_meta_data(data, Datasource::ConfigDrive, &limits) {
        assert!(!md.instance_id.is_empty());
        let _ = serde_json::to_string(&md);
    }
    match openstack::parse_meta_data_lenient(data, Datasource::ConfigDrive, None, &limits) {
        Ok(md) => {
            assert!(!md.instance_id.is_empty());
            assert!(md.local_hostname.as_deref().is_none_or(hostname::is_valid));
        }
        Err(e) => panic!("a config drive is never discarded: {e}"),
    }
    let _ = openstack::parse_meta_data_lenient(data, Datasource::Openstack, None, &limits);
    let _ = openstack::parse_vendor_data(data, &limits);
    let md = openstack::assemble_config_drive(data, Some(data), Some(data), Some(data), &limits);
    assert!(!md.instance_id.is_empty());
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = openstack::version_order(text);
    }
});
