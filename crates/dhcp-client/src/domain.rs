//! RFC 1035 domain names as used by the domain search option (119, RFC 3397), with bounded
//! decompression.

use alloc::string::String;
use alloc::vec::Vec;

/// At most this many search domains are decoded; the rest of the option is ignored.
pub const MAX_SEARCH_DOMAINS: usize = 32;
/// Longest name in text form (RFC 1035: 255 octets on the wire).
const MAX_NAME_LEN: usize = 253;
/// Compression pointers followed per name. Pointers must also point strictly backwards, so the
/// walk terminates regardless; this bounds the work further.
const MAX_POINTER_HOPS: usize = 16;

/// True for the bytes a hostname label may hold here (letters, digits, `-`, `_`).
///
/// Stricter than DNS, on purpose: these names end up in `/etc/resolv.conf` and in the hostname,
/// so anything that could smuggle whitespace or control characters is refused.
pub(crate) fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Decodes the (already concatenated, RFC 3396) data of option 119.
///
/// Returns `None` if any name is malformed: a label running past the end, a reserved label type,
/// a forward or looping pointer, a name longer than 253 characters or a disallowed byte.
pub(crate) fn decode_search_list(data: &[u8]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    let mut pos = 0;
    while pos < data.len() && names.len() < MAX_SEARCH_DOMAINS {
        let (name, next) = decode_name(data, pos)?;
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
        pos = next;
    }
    Some(names)
}

/// Decodes one name starting at `start`; returns it and the offset just after it in the stream.
fn decode_name(data: &[u8], start: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut pos = start;
    let mut segment_start = start;
    let mut resume: Option<usize> = None;
    let mut hops = 0;
    loop {
        let len = *data.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                let next = resume.unwrap_or(pos + 1);
                return Some((out, next));
            }
            0x00 => {
                let len = usize::from(len);
                let label = data.get(pos + 1..pos + 1 + len)?;
                if !label.iter().all(|&b| is_label_byte(b)) {
                    return None;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                // All bytes are ASCII (checked above).
                out.extend(label.iter().map(|&b| char::from(b)));
                if out.len() > MAX_NAME_LEN {
                    return None;
                }
                pos += 1 + len;
            }
            0xC0 => {
                let low = usize::from(*data.get(pos + 1)?);
                let target = (usize::from(len & 0x3F) << 8) | low;
                if resume.is_none() {
                    resume = Some(pos + 2);
                }
                hops += 1;
                if target >= segment_start || hops > MAX_POINTER_HOPS {
                    return None;
                }
                segment_start = target;
                pos = target;
            }
            _ => return None,
        }
    }
}

/// Encodes names without compression (always valid RFC 1035). Names with an empty or over-long
/// label, or that are too long overall, are skipped.
pub(crate) fn encode_search_list(names: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for name in names {
        let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
        let valid = name.len() <= MAX_NAME_LEN
            && labels
                .iter()
                .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(is_label_byte));
        if !valid {
            continue;
        }
        for label in labels {
            // Checked above: at most 63, so the cast is exact.
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn rfc3397_example_with_compression() {
        // "eng.apple.com." and "marketing.apple.com." with the second compressed onto the first.
        let data = [
            3, b'e', b'n', b'g', 5, b'a', b'p', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 9, b'm',
            b'a', b'r', b'k', b'e', b't', b'i', b'n', b'g', 0xC0, 4,
        ];
        assert_eq!(
            decode_search_list(&data).unwrap(),
            vec![
                String::from("eng.apple.com"),
                String::from("marketing.apple.com")
            ]
        );
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_rejected() {
        assert_eq!(decode_search_list(&[0xC0, 0]), None, "self pointer");
        assert_eq!(
            decode_search_list(&[1, b'a', 0xC0, 0]),
            None,
            "pointer into own name"
        );
        assert_eq!(
            decode_search_list(&[0xC0, 2, 1, b'a', 0]),
            None,
            "forward pointer"
        );
        assert_eq!(decode_search_list(&[0x40]), None, "reserved label type");
        assert_eq!(decode_search_list(&[5, b'a']), None, "truncated label");
        assert_eq!(decode_search_list(&[1, b' ', 0]), None, "space in a label");
        assert_eq!(decode_search_list(&[1, b'a']), None, "missing terminator");
    }

    #[test]
    fn long_names_are_rejected() {
        let mut data = Vec::new();
        for _ in 0..5 {
            data.push(60);
            data.extend_from_slice(&[b'x'; 60]);
        }
        data.push(0);
        assert_eq!(decode_search_list(&data), None);
    }

    #[test]
    fn the_list_is_bounded() {
        let mut data = Vec::new();
        for i in 0..100u8 {
            data.extend_from_slice(&[2, b'd', b'a' + (i % 26), 1, b'a' + (i / 26), 0]);
        }
        assert_eq!(decode_search_list(&data).unwrap().len(), MAX_SEARCH_DOMAINS);
    }

    #[test]
    fn encode_then_decode() {
        let names = vec![
            String::from("example.org"),
            String::from("a.b.c"),
            String::from("bad name"),
        ];
        let enc = encode_search_list(&names);
        assert_eq!(decode_search_list(&enc).unwrap(), names[..2].to_vec());
    }
}
