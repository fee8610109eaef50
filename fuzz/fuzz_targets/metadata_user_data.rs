//! User-data decoding: gzip, MIME multipart, cloud-config-archive, `#include` URLs, then
//! cloud-config merge.
//!
//! Run with inputs large enough for expansion bombs (see `fuzz/options/`):
//! `cargo fuzz run -s none metadata_user_data -- -max_len=1048576 -max_total_time=60`
#![no_main]

use cloud_metadata::{CloudConfig, Limits, parse_user_data};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_decoded_bytes: 1 << 20, ..Limits::default() };
    if let Ok(ud) = parse_user_data(data, &limits) {
        assert!(ud.parts.len() <= limits.max_user_data_parts);
        let decoded: usize = ud.parts.iter().map(|p| p.content.len()).sum();
        assert!(decoded <= limits.max_decoded_bytes.max(data.len()));
        for part in &ud.parts {
            let inc = part.include_urls(&limits);
            assert!(inc.urls.len() <= limits.max_include_urls);
            for u in &inc.urls {
                assert!(u.path.starts_with('/'));
                assert!(!u.url.chars().any(char::is_whitespace));
            }
        }
        let _ = CloudConfig::from_user_data(&ud, Some(0), &limits);
    }
});
