//! Payloads: the header parser, and the streaming verifier fed arbitrary bytes in arbitrary
//! pieces against a valid signed manifest. Nothing may reach the sink unless it is exactly the
//! release's bytes at that place.
#![no_main]

use libfuzzer_sys::fuzz_target;
use update::payload::{PayloadHeader, SegmentKind, Sink, StreamVerifier};

include!("../common/update_release.rs");

struct Check<'a>(&'a [u8], &'a ManifestBody);

impl Sink for Check<'_> {
    fn write(&mut self, s: SegmentKind, off: u64, d: &[u8]) -> std::io::Result<()> {
        let mut at = u64::from(self.1.payload.header.size);
        for seg in &self.1.segments {
            if seg.kind == s {
                break;
            }
            at += seg.size;
        }
        let at = (at + off) as usize;
        assert_eq!(&self.0[at..at + d.len()], d, "an unverified byte reached the sink");
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = PayloadHeader::parse(data) {
        assert_eq!(PayloadHeader::parse(&h.encode()).unwrap(), h);
    }
    let r = release();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Mode 0: the input as the payload; otherwise the real payload with the input XORed in at
    // an offset, fed in pieces of the mode's size.
    let mut v = StreamVerifier::new(&r.manifest);
    let mut sink = Check(&r.payload, &r.body);
    let bytes = if mode == 0 {
        rest.to_vec()
    } else {
        let mut p = r.payload.clone();
        let at = (usize::from(mode) * 997) % p.len();
        for (i, b) in rest.iter().enumerate() {
            let j = (at + i) % p.len();
            p[j] ^= b;
        }
        p
    };
    let piece = usize::from(mode).max(1) * 37;
    for chunk in bytes.chunks(piece) {
        if v.feed(chunk, &mut sink).is_err() {
            return;
        }
    }
    let _ = v.finish();
});
