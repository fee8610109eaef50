//! OpenStack / config drive `meta_data.json` and `vendor_data.json`.
#![no_main]

use cloud_metadata::{Datasource, Limits, openstack};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(md) = openstack::parse_meta_data(data, Datasource::ConfigDrive, &limits) {
        assert!(!md.instance_id.is_empty());
        let _ = serde_json::to_string(&md);
    }
    let _ = openstack::parse_vendor_data(data, &limits);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = openstack::version_order(text);
    }
});
