//! The kernel command-line parser (`boot-contract`), on any text the guest might find in
//! /proc/cmdline: never panics, never makes more parameters than there are words (quotes only
//! join them), keys never contain `=`, and every key found can be looked up again.
#![no_main]

use boot_contract::cmdline::{self, Cmdline};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    // The typed view PID 1 works from: total, and its timeouts always bounded.
    let p = cmdline::BootParams::parse(&line);
    assert!(p.stage_timeout().as_secs() <= cmdline::MAX_TIMEOUT_SECS.max(30));
    assert!(p.ds_timeout().as_secs() <= cmdline::MAX_TIMEOUT_SECS.max(60));
    let c = Cmdline::parse(&line);
    assert!(c.params().len() <= line.split_ascii_whitespace().count());
    for p in c.params() {
        assert!(!p.key.contains('='), "{:?}", p.key);
        assert!(c.has(p.key));
        let last = c.params().iter().rev().find(|q| q.key == p.key).unwrap();
        assert_eq!(c.get(p.key), last.value);
        let _ = c.flag(p.key);
    }
    for key in [
        cmdline::SHELL,
        cmdline::LOG,
        cmdline::HOSTNAME,
        cmdline::DATASOURCES,
        cmdline::STAGE_TIMEOUT,
        cmdline::STATE,
    ] {
        let _ = c.get(key);
        let _ = c.flag(key);
    }
});
