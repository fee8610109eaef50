//! The PCI bus as PID 1 sees it: device classes and `modalias` strings, read once per boot, and
//! the `fnmatch`-style matching of module alias patterns against them.

use std::sync::OnceLock;

/// A device on the PCI bus.
#[derive(Debug, Clone)]
pub(super) struct PciDevice {
    /// Base class (`0x01` storage, `0x02` network).
    pub(super) class: u8,
    /// Its `modalias` (`pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00`).
    pub(super) modalias: String,
}

/// The devices on the PCI bus, read once per boot (the kernel enumerated the bus before PID 1
/// started); `None` when there is no PCI bus to ask.
pub(super) fn pci_devices() -> Option<&'static [PciDevice]> {
    static DEVICES: OnceLock<Option<Vec<PciDevice>>> = OnceLock::new();
    DEVICES
        .get_or_init(|| {
            let entries = std::fs::read_dir("/sys/bus/pci/devices").ok()?;
            let devices: Vec<PciDevice> = entries
                .flatten()
                .filter_map(|e| {
                    let read = |f: &str| std::fs::read_to_string(e.path().join(f)).ok();
                    Some(PciDevice {
                        class: pci_base_class(&read("class")?)?,
                        modalias: read("modalias").unwrap_or_default().trim().to_owned(),
                    })
                })
                .collect();
            (!devices.is_empty()).then_some(devices)
        })
        .as_deref()
}

/// Whether the PCI bus has a device of `base_class` (`0x01` storage, `0x02` network). When
/// there is no PCI bus to ask (another platform), the answer is `true`: wait to be safe.
pub fn pci_class_present(base_class: u8) -> bool {
    pci_devices().is_none_or(|d| d.iter().any(|d| d.class == base_class))
}

/// Matches a module alias pattern against a device's `modalias`, as the kernel's tools do
/// (`fnmatch`): `*` any run of characters, `?` one character, `[…]` a set (`!` or `^`
/// negates, `a-z` ranges). Iterative, so every pattern is matched in linear-ish time.
pub(super) fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index it matched to).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => match_set(p, pi, t[ti]),
            Some(&c) if c == t[ti] => Some(pi + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ti += 1;
            }
            (None, Some((sp, st))) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// Matches byte `c` against the set starting at `p[open] == b'['`; returns the index after the
/// set when it matches. An unclosed set matches nothing.
fn match_set(p: &[u8], open: usize, c: u8) -> Option<usize> {
    let mut i = open + 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let &lo = p.get(i)?;
        if lo == b']' && !first {
            break;
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = p[i + 2];
            hit |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
    (hit != negate).then_some(i + 1)
}

/// The base class byte of a sysfs PCI `class` value (`0x020000` → `0x02`).
fn pci_base_class(text: &str) -> Option<u8> {
    let v = u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()?;
    u8::try_from(v >> 16).ok()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn pci_base_classes() {
        assert_eq!(pci_base_class("0x020000\n"), Some(0x02));
        assert_eq!(pci_base_class("0x010180"), Some(0x01));
        assert_eq!(pci_base_class("0x00ff00"), Some(0x00));
        assert_eq!(pci_base_class("junk"), None);
        assert_eq!(pci_base_class(""), None);
    }

    /// Real modalias values (QEMU's i440fx + PIIX IDE, and q35's AHCI) and real patterns from
    /// Debian's 6.1 cloud kernel.
    pub(in crate::init::modules) const PIIX_IDE: &str =
        "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80";
    pub(in crate::init::modules) const Q35_AHCI: &str =
        "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01";
    pub(in crate::init::modules) const VIRTIO_NET: &str =
        "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00";

    #[test]
    fn glob_matches_like_fnmatch() {
        assert!(glob_match("pci:v00008086d00007010sv*sd*bc*sc*i*", PIIX_IDE));
        assert!(!glob_match(
            "pci:v00008086d00007010sv*sd*bc*sc*i*",
            Q35_AHCI
        ));
        assert!(glob_match("pci:v*d*sv*sd*bc01sc06i01*", Q35_AHCI));
        assert!(!glob_match("pci:v*d*sv*sd*bc01sc06i01*", PIIX_IDE));
        assert!(glob_match("pci:v00001AF4d*sv*sd*bc*sc*i*", VIRTIO_NET));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("a[0-9]c", "a5c"));
        assert!(!glob_match("a[!0-9]c", "a5c"));
        assert!(glob_match("a[]]c", "a]c"));
        assert!(
            !glob_match("a[0-9", "a5"),
            "an unclosed set matches nothing"
        );
        assert!(glob_match("*", ""));
        assert!(glob_match("**a**", "xxaxx"));
        assert!(!glob_match("", "x"));
        assert!(!glob_match("abc", "abcd"));
    }

    proptest::proptest! {
        #[test]
        fn glob_is_total_and_literal_patterns_match_only_themselves(
            p in "[a-c*?\\[\\]!^-]{0,12}",
            t in "[a-c]{0,12}",
        ) {
            let _ = glob_match(&p, &t);
            proptest::prop_assert!(glob_match("*", &t));
            proptest::prop_assert!(glob_match(&t, &t));
            let (star_t, xy_t) = (format!("*{t}"), format!("xy{t}"));
            proptest::prop_assert!(glob_match(&star_t, &xy_t));
        }
    }
}
