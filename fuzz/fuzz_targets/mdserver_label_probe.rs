//! The guest's filesystem label prober (ISO9660, FAT, ext2/3/4 superblocks): arbitrary
//! device bytes never panic, and a found label is short.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(p) = seed_image::probe(data) {
        if let Some(label) = &p.label {
            // The longest label field is ISO9660's 32 bytes (UTF-8 replacement chars aside).
            assert!(label.chars().count() <= 32, "{label:?}");
        }
    }
});
