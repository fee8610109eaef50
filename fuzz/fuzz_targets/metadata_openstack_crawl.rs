//! The OpenStack / config drive crawler fed arbitrary outcomes (same script format as
//! metadata_ec2_responses, with longer bodies).
//!
//! Run with inputs large enough for expansion bombs (see `fuzz/options/`):
//! `cargo fuzz run -s none metadata_openstack_crawl -- -max_len=1048576 -max_total_time=60`
#![no_main]

use cloud_metadata::http::{Crawler, HttpOutcome, Step};
use cloud_metadata::openstack::{OpenstackConfig, OpenstackCrawler};
use libfuzzer_sys::fuzz_target;

fn next_outcome(data: &mut &[u8]) -> HttpOutcome {
    let Some((&kind, rest)) = data.split_first() else { return HttpOutcome::Failed("eof".into()) };
    *data = rest;
    let status = match kind % 4 {
        0 | 1 => 200,
        2 => 404,
        _ => 100 + u16::from(kind),
    };
    let len = u16::from_le_bytes([data.first().copied().unwrap_or(0), data.get(1).copied().unwrap_or(0)]) as usize;
    let start = 2.min(data.len());
    let end = (start + len).min(data.len());
    let body = data[start..end].to_vec();
    *data = &data[end..];
    HttpOutcome::Response { status, body }
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let mut crawler = OpenstackCrawler::new(OpenstackConfig::config_drive());
    let mut last = None;
    for _ in 0..300 {
        match crawler.step(last.take()) {
            Ok(Step::Send(req)) => {
                assert!(!req.path.split('/').any(|c| c == ".."));
                last = Some(next_outcome(&mut data));
            }
            Ok(Step::Done(_)) | Err(_) => break,
        }
    }
});
