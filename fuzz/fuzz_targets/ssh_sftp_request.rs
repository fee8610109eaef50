//! SFTP request parsing (ssh-server): arbitrary payloads must never panic. (Only the parser:
//! executing requests would touch the file system.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssh_server::sftp::parse_request;

fuzz_target!(|data: &[u8]| {
    let _ = parse_request(data);
});
