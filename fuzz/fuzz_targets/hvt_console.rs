//! The hvt monitor's console sanitiser on arbitrary guest output cut into two PUTS calls:
//! nothing a terminal would interpret survives (only text, LF, TAB and CRLF), and the cut
//! changes nothing.
#![no_main]

use hvt_monitor::console::{ConsoleFilter, sanitize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut).min(bytes.len());
    let mut f = ConsoleFilter::new();
    let mut out = String::new();
    f.push(&bytes[..at], &mut out);
    f.push(&bytes[at..], &mut out);
    f.finish(&mut out);
    let whole = sanitize(bytes);
    assert_eq!(out, whole);
    let mut chars = whole.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => {}
            '\r' => assert_eq!(chars.peek(), Some(&'\n'), "lone CR in {whole:?}"),
            c => assert!(!c.is_control(), "{c:?} in {whole:?}"),
        }
    }
});
