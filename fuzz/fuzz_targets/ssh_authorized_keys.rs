//! authorized_keys parsing (ssh-server): arbitrary text must never panic, the caps must hold,
//! and every accepted key must survive an OpenSSH-format round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssh_server::authorized_keys::{MAX_KEYS, check_key, parse_line, parse_text};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = parse_text(&text);
    assert!(parsed.keys.len() <= MAX_KEYS);
    for k in &parsed.keys {
        assert!(check_key(k.key.key_data()).is_ok());
        let line = k.key.to_openssh().expect("an accepted key encodes");
        let again = parse_line(&line)
            .expect("re-encoded key parses")
            .expect("not blank");
        assert!(again.matches(&k.key));
    }
    // One line with options in front, as a forced-command line would have them.
    let _ = parse_line(&format!(
        "command=\"{}\" {}",
        text.replace('"', "\\\""),
        text
    ));
});
