//! User-data decoding: gzip, MIME multipart, cloud-config-archive, then cloud-config merge.
#![no_main]

use cloud_metadata::{CloudConfig, Limits, parse_user_data};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_decoded_bytes: 1 << 20, ..Limits::default() };
    if let Ok(ud) = parse_user_data(data, &limits) {
        assert!(ud.parts.len() <= limits.max_user_data_parts);
        for part in &ud.parts {
            let _ = part.include_urls();
        }
        let _ = CloudConfig::from_user_data(&ud, Some(0), &limits);
    }
});
