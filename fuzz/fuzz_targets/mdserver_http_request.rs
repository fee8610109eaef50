//! The metadata server's HTTP request parser: arbitrary bytes never panic, a parsed head
//! never claims more bytes than it was given, and limits hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metadata_server::http::{Limits, parse_head};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_head: 2048,
        max_headers: 16,
        max_body: 256,
    };
    match parse_head(data, &limits) {
        Ok(Some((head, used))) => {
            assert!(used <= data.len());
            assert!(head.headers.len() <= limits.max_headers);
            assert!(head.content_length <= limits.max_body);
            assert!(head.path.starts_with('/'));
            let _ = head.keep_alive();
            let _ = head.expects_continue();
            let _ = head.header("x-aws-ec2-metadata-token");
        }
        Ok(None) => {
            let skip = data
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            assert!(data.len() - skip <= limits.max_head);
        }
        Err(e) => {
            let _ = e.status();
        }
    }
});
