//! Platform identification from DMI strings, and hostname validation.
//!
//! Run with inputs large enough for expansion bombs (see `fuzz/options/`):
//! `cargo fuzz run -s none metadata_platform -- -max_len=1048576 -max_total_time=60`
#![no_main]

use cloud_metadata::Datasource;
use cloud_metadata::hostname;
use cloud_metadata::platform::{DMI_FIELDS, Dmi, identify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\u{1f}');
    let values: Vec<String> = DMI_FIELDS.iter().map(|_| fields.next().unwrap_or("").to_owned()).collect();
    let mut dmi = Dmi::from_reader(|name| {
        DMI_FIELDS.iter().position(|f| *f == name).map(|i| values[i].clone())
    });
    dmi.hypervisor_uuid = fields.next().map(str::to_owned);
    let id = identify(&dmi);
    assert!(!id.reason.contains('\n'));
    let (kept, _) = id.filter(&[Datasource::NoCloud, Datasource::Openstack, Datasource::Ec2]);
    assert!(kept.contains(&Datasource::NoCloud));

    for candidate in text.split('\u{1f}').chain(std::iter::once(text.as_ref())) {
        if let Ok(h) = hostname::validate(candidate) {
            assert!(h.len() <= hostname::MAX_HOSTNAME_BYTES);
            assert!(h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
            assert!(h.split('.').all(|l| !l.is_empty() && l.len() <= hostname::MAX_LABEL_BYTES));
            assert_eq!(hostname::validate(h), Ok(h), "idempotent");
            let short = hostname::short_name(h).unwrap();
            assert!(!short.contains('.'));
        } else if let Err(e) = hostname::validate(candidate) {
            assert!(!e.to_string().contains('\n'));
        }
    }
});
