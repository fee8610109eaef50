//! Update manifests: the whole check on fetched bytes (size, depth, envelope, signature, body,
//! consistency, channel, clock, expiry, version). Mode byte: 0 raw bytes as fetched; 1 the
//! bytes signed by the trusted key (so the body parser and every later check are reached);
//! 2 a valid manifest body with the input spliced in, then signed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use update::envelope::{self, MANIFEST_CONTEXT};

include!("../common/update_release.rs");

fuzz_target!(|data: &[u8]| {
    let r = release();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let doc = match mode % 3 {
        0 => rest.to_vec(),
        1 => envelope::seal(rest, MANIFEST_CONTEXT, &[&r.key]),
        _ => {
            let Some((&at, rest)) = rest.split_first() else {
                return;
            };
            let j = &r.body_json;
            let start = (usize::from(at) * j.len() / 256).min(j.len());
            let end = (start + rest.len().min(16)).min(j.len());
            let mut body = j[..start].to_vec();
            body.extend_from_slice(rest);
            body.extend_from_slice(&j[end..]);
            envelope::seal(&body, MANIFEST_CONTEXT, &[&r.key])
        }
    };
    if let Ok(out) = update::manifest::check(&doc, &ctx(&r.keys)) {
        // Whatever passes is internally consistent.
        let m = match &out {
            Outcome::Update { manifest, .. } | Outcome::UpToDate(manifest) => {
                manifest
            }
        };
        m.body().validate().expect("a checked manifest validates");
        let _ = update::StreamVerifier::new(m);
    }
    if let Ok(b) = ManifestBody::from_json(rest) {
        let _ = b.validate();
    }
});
