//! Peak heap while parsing hostile input stays under the documented budget
//! ([`cloud_metadata::MEMORY_BUDGET`]).
//!
//! A counting global allocator records the live heap and its peak. Each allocation is counted
//! as its size plus 16 bytes (a malloc chunk header); a `realloc` is counted as the change of
//! size (large blocks are remapped by the allocator, not copied). The input buffer is built
//! before the measurement starts and is not counted: the budget is what parsing adds.
//!
//! Everything runs in one `#[test]`: the counters are global, and tests of one binary run on
//! parallel threads.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cloud_metadata::cloud_config::parse_cloud_config;
use cloud_metadata::value::{parse_json, parse_yaml};
use cloud_metadata::write_files::decode_content;
use cloud_metadata::{
    CloudConfig, Datasource, Limits, MEMORY_BUDGET, MetadataError, nocloud, parse_user_data,
};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
const HEADER: usize = 16;

fn grow(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size() + HEADER);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size() + HEADER);
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() + HEADER, Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            grow(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Relaxed);
        }
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning its result, the peak heap it added and how long it took.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, Duration) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    let peak = PEAK.load(Relaxed).saturating_sub(base);
    (out, peak, took)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

struct Report {
    rows: Vec<String>,
}

impl Report {
    /// Checks one case: peak under `max` (at most the budget) and time under `time`.
    fn check<T>(
        &mut self,
        name: &str,
        max: usize,
        time: Duration,
        (out, peak, took): (T, usize, Duration),
    ) -> T {
        assert!(max <= MEMORY_BUDGET);
        self.rows.push(format!(
            "{name:<48} peak {:>9.1} KiB  {:>8.1} ms",
            peak as f64 / 1024.0,
            took.as_secs_f64() * 1000.0
        ));
        assert!(
            peak <= max,
            "{name}: peak heap {peak} bytes over the {max}-byte bound"
        );
        assert!(took <= time, "{name}: took {took:?}, more than {time:?}");
        out
    }
}

const MIB: usize = 1 << 20;

#[test]
fn bombs_stay_inside_the_memory_budget() {
    let l = Limits::default();
    let mut r = Report { rows: Vec::new() };
    let quick = Duration::from_secs(20);

    // The measured incident: ~16 KiB of gzip holding a #cloud-config that is one long flow
    // list, just under 16 MiB decompressed.
    let flow = {
        let mut doc = String::from("#cloud-config\nruncmd: [");
        while doc.len() < (16 << 20) - 64 {
            doc.push_str("a, ");
        }
        doc.push_str("a]\n");
        doc.into_bytes()
    };
    let flow_gz = gzip(&flow);
    assert!(flow_gz.len() < 20 * 1024, "{}", flow_gz.len());
    let err = r
        .check(
            "gzip #cloud-config flow list (user-data)",
            2 * MIB,
            quick,
            measure(|| parse_user_data(&flow_gz, &l)),
        )
        .unwrap_err();
    assert!(
        matches!(err, MetadataError::CompressionRatio { .. }),
        "{err}"
    );
    // Uncompressed, the same document reaches the YAML parser: the node limit stops it while
    // streaming, before a list of events or nodes is built.
    let err = r
        .check(
            "16 MiB flow list (cloud-config)",
            12 * MIB,
            quick,
            measure(|| parse_cloud_config(&flow, &l)),
        )
        .unwrap_err();
    assert!(matches!(err, MetadataError::TooManyNodes { .. }), "{err}");
    // …and through user-data, where the part is classified (streamed) and then merged.
    let (ud, _, _) = measure(|| parse_user_data(&flow, &l).unwrap());
    let cc = r.check(
        "16 MiB flow list (user-data + merge)",
        12 * MIB,
        quick,
        measure(|| CloudConfig::from_user_data(&ud, None, &l)),
    );
    assert!(cc.warnings.iter().any(|w| w.contains("nodes")), "{cc:?}");
    drop(ud);
    let flow_map = {
        let mut doc = String::from("{");
        while doc.len() < (16 << 20) - 64 {
            doc.push_str("a: b, ");
        }
        doc.push_str("a: b}\n");
        doc.into_bytes()
    };
    r.check(
        "16 MiB flow mapping",
        12 * MIB,
        quick,
        measure(|| parse_cloud_config(&flow_map, &l)),
    )
    .unwrap_err();

    // Nested lists: refused at the depth limit.
    let nested = format!("{}{}", "[".repeat(8 << 20), "]".repeat(8 << 20)).into_bytes();
    let err = r
        .check(
            "16 MiB nested flow lists (YAML)",
            MIB,
            quick,
            measure(|| parse_cloud_config(&nested, &l)),
        )
        .unwrap_err();
    assert!(matches!(err, MetadataError::TooDeep { .. }), "{err}");
    let block_nested: String = (0..5000)
        .map(|i| format!("{}- \n", " ".repeat(i)))
        .collect();
    r.check(
        "5000 nested block lists (YAML)",
        MIB,
        quick,
        measure(|| parse_yaml(block_nested.as_bytes(), "t", &l)),
    )
    .unwrap_err();

    // Deep JSON.
    let deep_json = format!("{}{}", "[".repeat(512 << 10), "]".repeat(512 << 10)).into_bytes();
    let err = r
        .check(
            "1 MiB nested JSON arrays",
            MIB,
            quick,
            measure(|| parse_json(&deep_json, "t", &l)),
        )
        .unwrap_err();
    assert!(matches!(err, MetadataError::TooDeep { .. }), "{err}");

    // Billion laughs: ten levels of ten aliases each.
    let mut laughs = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = format!("*a{}", i - 1);
        laughs.push_str(&format!("a{i}: &a{i} [{}]\n", vec![p; 10].join(", ")));
    }
    let err = r
        .check(
            "billion laughs (10^10 nodes)",
            8 * MIB,
            quick,
            measure(|| parse_cloud_config(laughs.as_bytes(), &l)),
        )
        .unwrap_err();
    assert!(matches!(err, MetadataError::TooManyNodes { .. }), "{err}");
    // Laughs with big strings: few nodes, many bytes.
    let big = "x".repeat(MIB);
    let bytes_bomb = format!(
        "a: &a \"{big}\"\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nd: [*c, *c, *c, *c]\n"
    );
    let err = r
        .check(
            "aliases of a 1 MiB string (64 MiB expanded)",
            16 * MIB,
            quick,
            measure(|| parse_cloud_config(bytes_bomb.as_bytes(), &l)),
        )
        .unwrap_err();
    assert!(matches!(err, MetadataError::TooManyNodes { .. }), "{err}");

    // 10,000-part MIME: refused after the 257th delimiter.
    let mut mime = String::from("Content-Type: multipart/mixed; boundary=b\nMIME-Version: 1.0\n\n");
    for _ in 0..10_000 {
        mime.push_str("--b\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n");
    }
    mime.push_str("--b--\n");
    let err = r
        .check(
            "10,000-part MIME",
            MIB,
            quick,
            measure(|| parse_user_data(mime.as_bytes(), &l)),
        )
        .unwrap_err();
    assert!(matches!(err, MetadataError::Mime { .. }), "{err}");
    // Four million empty parts in 16 MiB.
    let mut many = String::from("Content-Type: multipart/mixed; boundary=b\nMIME-Version: 1.0\n\n");
    while many.len() < (16 << 20) - 16 {
        many.push_str("--b\n");
    }
    r.check(
        "16 MiB of MIME delimiters",
        MIB,
        quick,
        measure(|| parse_user_data(many.as_bytes(), &l)),
    )
    .unwrap_err();

    // gzip bombs: top level, inside MIME, in write_files, several members.
    let zeros_gz = gzip(&vec![0u8; 64 << 20]);
    let err = r
        .check(
            "gzip bomb 64 MiB (user-data)",
            8 * MIB,
            quick,
            measure(|| parse_user_data(&zeros_gz, &l)),
        )
        .unwrap_err();
    assert!(
        matches!(err, MetadataError::CompressionRatio { .. }),
        "{err}"
    );
    let permissive = Limits {
        max_decompression_ratio: usize::MAX,
        ..l
    };
    let err = r
        .check(
            "gzip bomb 64 MiB, no ratio limit",
            17 * MIB + MIB / 2,
            quick,
            measure(|| parse_user_data(&zeros_gz, &permissive)),
        )
        .unwrap_err();
    assert!(matches!(err, MetadataError::TooLarge { .. }), "{err}");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&zeros_gz);
    let mime_gz = format!(
        "Content-Type: multipart/mixed; boundary=b\nMIME-Version: 1.0\n\n--b\nContent-Type: application/x-gzip\nContent-Transfer-Encoding: base64\n\n{b64}\n--b--\n"
    );
    r.check(
        "gzip bomb in a base64 MIME part",
        8 * MIB,
        quick,
        measure(|| parse_user_data(mime_gz.as_bytes(), &l)),
    )
    .unwrap_err();
    let members: Vec<u8> = (0..64).flat_map(|_| gzip(&vec![0u8; MIB])).collect();
    r.check(
        "64 concatenated gzip members of 1 MiB",
        8 * MIB,
        quick,
        measure(|| parse_user_data(&members, &l)),
    )
    .unwrap_err();
    let wf = format!(
        "write_files:\n  - path: /x\n    encoding: gz+b64\n    content: {}\n",
        b64
    );
    let (cc, _, _) = measure(|| parse_cloud_config(wf.as_bytes(), &l).unwrap());
    r.check(
        "gzip bomb in write_files (gz+b64)",
        8 * MIB,
        quick,
        measure(|| decode_content(&cc.write_files[0], &l)),
    )
    .unwrap_err();

    // NoCloud seed whose files are all bombs: the seed still yields its metadata.
    let md = r.check(
        "NoCloud seed of bombs",
        8 * MIB,
        quick,
        measure(|| {
            nocloud::assemble(
                nocloud::NoCloudFiles {
                    meta_data: &nested,
                    user_data: Some(&flow_gz),
                    vendor_data: Some(&zeros_gz),
                    network_config: Some(laughs.as_bytes()),
                    platform_id: None,
                },
                Datasource::NoCloud,
                &l,
            )
        }),
    );
    assert!(md.instance_id.starts_with("iid-nocloud-"));
    assert_eq!(md.problems.len(), 3, "{:?}", md.problems);
    assert!(
        md.user_data.is_some() && md.vendor_data.is_some(),
        "kept raw, decoded later"
    );
    drop(md);

    // The worst legitimate inputs at the size limits, to show the budget holds for them too:
    // one 16 MiB scalar, and 200,000 small nodes.
    let mut one_scalar = String::from("#cloud-config\nfinal_message: |\n");
    while one_scalar.len() < (16 << 20) - 128 {
        one_scalar.push_str("  0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n");
    }
    let cc = r.check(
        "16 MiB block scalar (cloud-config)",
        MEMORY_BUDGET,
        quick,
        measure(|| parse_cloud_config(one_scalar.as_bytes(), &l)),
    );
    assert!(cc.unwrap().final_message.unwrap().len() > 15 << 20);
    let (ud, _, _) = measure(|| parse_user_data(one_scalar.as_bytes(), &l).unwrap());
    r.check(
        "16 MiB block scalar (user-data + merge)",
        MEMORY_BUDGET,
        quick,
        measure(|| CloudConfig::from_user_data(&ud, None, &l)),
    );
    drop(ud);
    r.check(
        "16 MiB block scalar (user-data decode)",
        MEMORY_BUDGET,
        quick,
        measure(|| parse_user_data(one_scalar.as_bytes(), &l)),
    )
    .unwrap();
    let many_nodes: String = {
        let mut s = String::from("runcmd:\n");
        for i in 0..(l.max_nodes / 2 - 10) {
            s.push_str(&format!("  - c{i}\n"));
        }
        s
    };
    let cc = r.check(
        "100,000 list items (cloud-config)",
        MEMORY_BUDGET / 2,
        quick,
        measure(|| parse_cloud_config(many_nodes.as_bytes(), &l)),
    );
    assert!(cc.unwrap().runcmd.len() > 90_000);
    let many_keys: String = (0..(l.max_nodes / 2 - 10))
        .map(|i| format!("k{i}: v\n"))
        .collect();
    r.check(
        "100,000 mapping entries (YAML)",
        MEMORY_BUDGET / 2,
        quick,
        measure(|| {
            parse_yaml(
                many_keys.as_bytes(),
                "t",
                &Limits {
                    max_metadata_bytes: 16 << 20,
                    ..l
                },
            )
        }),
    )
    .unwrap();
    let big_user_data = vec![b'#'; 16 << 20];
    r.check(
        "16 MiB plain user-data",
        MEMORY_BUDGET,
        quick,
        measure(|| parse_user_data(&big_user_data, &l)),
    )
    .unwrap();

    eprintln!("{}", r.rows.join("\n"));
}
