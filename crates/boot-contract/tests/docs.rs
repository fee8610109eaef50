//! `docs/kernel-cmdline.md` lists exactly the keys the contract defines.

use std::collections::BTreeSet;

#[test]
fn kernel_cmdline_doc_lists_every_key_and_no_other() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/kernel-cmdline.md");
    let doc = std::fs::read_to_string(path).expect("docs/kernel-cmdline.md");
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `virga."))
        .filter_map(|rest| rest.split_once("=`").map(|(k, _)| format!("virga.{k}")))
        .collect();
    let defined: BTreeSet<String> = boot_contract::cmdline::KEYS
        .iter()
        .map(|k| k.name.to_owned())
        .collect();
    assert_eq!(
        documented, defined,
        "docs/kernel-cmdline.md's table and boot_contract::cmdline::KEYS differ"
    );
    for k in boot_contract::cmdline::KEYS {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}=`", k.name)))
            .unwrap();
        assert!(
            row.contains(&format!("| {} |", k.default))
                || row.contains(&format!("| `{}` |", k.default)),
            "{}: the doc's default column does not say {:?}: {row}",
            k.name,
            k.default
        );
    }
}
