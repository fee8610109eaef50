//! NoCloud `meta-data` (YAML or JSON) and a whole NoCloud seed.
#![no_main]

use cloud_metadata::nocloud::{self, NoCloudFiles};
use cloud_metadata::{Datasource, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(md) = nocloud::parse_meta_data(data, &limits) {
        assert!(!md.instance_id.is_empty());
        let _ = md.to_query_json();
    }
    // The same bytes as every file of a seed.
    let files = NoCloudFiles {
        meta_data: data,
        user_data: Some(data),
        vendor_data: Some(data),
        network_config: Some(data),
    };
    let _ = nocloud::assemble(files, Datasource::NoCloud, &limits);
});
