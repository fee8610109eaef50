//! The EC2 IMDS state machine fed arbitrary outcomes: the input is a script of responses
//! (a status byte pair, a length byte and a body, or a failure), consumed one per request.
//!
//! Run with inputs large enough for expansion bombs (see `fuzz/options/`):
//! `cargo fuzz run -s none metadata_ec2_responses -- -max_len=1048576 -max_total_time=60`
#![no_main]

use cloud_metadata::Limits;
use cloud_metadata::ec2::{Ec2Config, Ec2Crawler};
use cloud_metadata::http::{Crawler, HttpOutcome, Step};
use libfuzzer_sys::fuzz_target;

fn next_outcome(data: &mut &[u8]) -> HttpOutcome {
    let Some((&kind, rest)) = data.split_first() else { return HttpOutcome::Failed("eof".into()) };
    *data = rest;
    if kind == 0xff {
        return HttpOutcome::Failed("timeout".into());
    }
    let status = match kind % 8 {
        0..=3 => 200,
        4 => 404,
        5 => 401,
        6 => 403,
        _ => 100 + u16::from(kind),
    };
    let len = data.first().copied().unwrap_or(0) as usize;
    let body_end = (1 + len).min(data.len());
    let body = data.get(1..body_end).unwrap_or_default().to_vec();
    *data = data.get(body_end..).unwrap_or_default();
    HttpOutcome::Response { status, body }
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let limits = Limits { max_requests: 64, ..Limits::default() };
    let use_token = data.first().is_some_and(|b| b & 1 == 0);
    let mut crawler = Ec2Crawler::new(Ec2Config { use_token, limits, ..Ec2Config::default() });
    let mut last = None;
    for _ in 0..100 {
        match crawler.step(last.take()) {
            Ok(Step::Send(_req)) => last = Some(next_outcome(&mut data)),
            Ok(Step::Done(md)) => {
                assert!(!md.instance_id.is_empty());
                break;
            }
            Err(_) => break,
        }
    }
});
