//! Kernel configuration text: `.config` files, configuration fragments, and the checks built on
//! them. Sans-IO: everything here takes and returns text, so it is tested without a kernel tree.
//!
//! - A **fragment** (`kernel/cloud.config`) is a strict list of `CONFIG_X=value` and
//!   `# CONFIG_X is not set` lines with comments; anything else is an error naming the line.
//! - [`merge`] applies fragments on top of a base `.config` (`make tinyconfig`'s output) before
//!   `make olddefconfig` resolves the dependencies.
//! - [`verify`] checks that every setting of the fragments survived into the final `.config`:
//!   an option the kernel version does not have, or one a missing dependency turned off, is
//!   reported by name. This is how a fragment that does not fit a `linux-source` version fails.
//! - [`check_features`] checks an image's required options against a kernel's `.config`.

use std::collections::BTreeMap;
use std::fmt;

/// What went wrong with a fragment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KconfigError {
    /// A line is neither a setting, a comment nor blank.
    #[error("{origin}:{line}: `{text}` is not `CONFIG_NAME=value` or `# CONFIG_NAME is not set`")]
    Syntax {
        /// Fragment name.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// The same option is set twice in one fragment.
    #[error("{origin}:{line}: {name} is already set on line {first}")]
    Duplicate {
        /// Fragment name.
        origin: String,
        /// 1-based line number of the second setting.
        line: usize,
        /// Line of the first setting.
        first: usize,
        /// The option.
        name: String,
    },
}

/// One setting of a fragment: `CONFIG_X=value`, or `value == "n"` for `# CONFIG_X is not set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Option name with the `CONFIG_` prefix.
    pub name: String,
    /// `y`, `m`, `n`, a number, or a quoted string, as written.
    pub value: String,
    /// Where it was set: `cloud.config:42`.
    pub origin: String,
}

impl Setting {
    /// The `.config` line for this setting.
    pub fn line(&self) -> String {
        if self.value == "n" {
            format!("# {} is not set", self.name)
        } else {
            format!("{}={}", self.name, self.value)
        }
    }
}

/// Whether `name` is a Kconfig option name with its `CONFIG_` prefix (`CONFIG_DM_VERITY`).
pub fn is_option_name(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// Parses one `.config`-style line into `(name, value)`; `# CONFIG_X is not set` gives `"n"`.
fn parse_line(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("# ") {
        let name = rest.strip_suffix(" is not set")?;
        return is_option_name(name).then_some((name, "n"));
    }
    let (name, value) = line.split_once('=')?;
    if !is_option_name(name) || value.is_empty() {
        return None;
    }
    let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    (quoted || !value.contains(char::is_whitespace)).then_some((name, value))
}

/// Parses a fragment strictly. `origin` names it in errors and in each [`Setting`].
pub fn parse_fragment(text: &str, origin: &str) -> Result<Vec<Setting>, KconfigError> {
    let mut out: Vec<Setting> = Vec::new();
    let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Some((name, value)) => {
                let value = if value == "n" { "n" } else { value };
                if let Some(first) = first_line.get(name) {
                    return Err(KconfigError::Duplicate {
                        origin: origin.to_owned(),
                        line: n,
                        first: *first,
                        name: name.to_owned(),
                    });
                }
                first_line.insert(name.to_owned(), n);
                out.push(Setting {
                    name: name.to_owned(),
                    value: value.to_owned(),
                    origin: format!("{origin}:{n}"),
                });
            }
            None if line.starts_with('#') => {}
            None => {
                return Err(KconfigError::Syntax {
                    origin: origin.to_owned(),
                    line: n,
                    text: line.chars().take(80).collect(),
                });
            }
        }
    }
    Ok(out)
}

/// Setting lines of a fragment that have no comment saying why: a setting must follow a
/// comment line, directly or after other settings of the same block (no blank line between).
/// Returns their line numbers. The repository's fragments are held to this by a test.
pub fn uncommented_settings(text: &str) -> Vec<usize> {
    let mut commented = false;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            commented = false;
        } else if parse_line(line).is_some() {
            if !commented {
                out.push(i + 1);
            }
        } else if line.starts_with('#') {
            commented = true;
        }
    }
    out
}

/// Settings of several fragments applied in order: a later fragment's setting of an option
/// replaces an earlier one (as `merge_config.sh` does).
pub fn combine(fragments: &[Vec<Setting>]) -> Vec<Setting> {
    let mut out: Vec<Setting> = Vec::new();
    for s in fragments.iter().flatten() {
        out.retain(|o| o.name != s.name);
        out.push(s.clone());
    }
    out
}

/// Applies `settings` to a base `.config`: lines of the options they set are dropped from the
/// base and the settings appended, so that `make olddefconfig` sees exactly one value for each.
pub fn merge(base: &str, settings: &[Setting]) -> String {
    let set: std::collections::BTreeSet<&str> = settings.iter().map(|s| s.name.as_str()).collect();
    let mut out = String::with_capacity(base.len() + settings.len() * 40);
    for line in base.lines() {
        if let Some((name, _)) = parse_line(line)
            && set.contains(name)
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("# virga kernel configuration fragments\n");
    for s in settings {
        out.push_str(&s.line());
        out.push('\n');
    }
    out
}

/// A kernel's `.config`, parsed leniently (it is the kernel's own output).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig {
    values: BTreeMap<String, String>,
}

impl KernelConfig {
    /// Parses `.config` text: `CONFIG_X=value` lines; everything else is ignored.
    pub fn parse(text: &str) -> Self {
        let values = text
            .lines()
            .filter_map(parse_line)
            .filter(|(_, v)| *v != "n")
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { values }
    }

    /// The value of an option; `None` when it is not set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value, with `n` for an option that is not set (how fragments spell it).
    pub fn value(&self, name: &str) -> &str {
        self.get(name).unwrap_or("n")
    }

    /// Number of options set.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A fragment setting that did not survive into the final `.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The setting as the fragment wants it.
    pub wanted: Setting,
    /// What the final `.config` has (`n`: not set, or not an option of this kernel).
    pub got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) wants {}, the kernel config has {}",
            self.wanted.name,
            self.wanted.origin,
            self.wanted.value,
            if self.got == "n" {
                "it unset (renamed, removed, or a dependency is off)".to_owned()
            } else {
                self.got.clone()
            }
        )
    }
}

/// Every setting that the final `.config` does not hold as the fragments set it.
pub fn verify(config: &KernelConfig, settings: &[Setting]) -> Vec<Mismatch> {
    settings
        .iter()
        .filter(|s| config.value(&s.name) != s.value)
        .map(|s| Mismatch {
            wanted: s.clone(),
            got: config.value(&s.name).to_owned(),
        })
        .collect()
}

pub use image_spec::KernelFeature;

/// A required option the kernel does not provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFeature {
    /// The requirement.
    pub feature: KernelFeature,
    /// What the kernel's config has: `n` (not set) or `m` (a module the image does not carry).
    pub got: String,
    /// For `m`: the module names that would provide it.
    pub modules: Vec<String>,
}

impl fmt::Display for MissingFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (needed by {}): ",
            self.feature.option, self.feature.needed_by
        )?;
        match self.got.as_str() {
            "n" => write!(f, "not set"),
            "m" => write!(
                f,
                "a module, not in the image; add `{}` to kernel.modules",
                self.modules
                    .first()
                    .map(String::as_str)
                    .unwrap_or("its module")
            ),
            other => write!(f, "set to {other}"),
        }
    }
}

/// Module names that may provide a Kconfig option built as `=m`: the usual spellings (the
/// option's name in lower case, without `_FS`), and a table of the common exceptions.
pub fn module_candidates(option: &str) -> Vec<String> {
    const EXCEPTIONS: &[(&str, &str)] = &[
        ("ISO9660_FS", "isofs"),
        ("BLK_DEV_SR", "sr_mod"),
        ("BLK_DEV_SD", "sd_mod"),
        ("BLK_DEV_NVME", "nvme"),
        ("BLK_DEV_DM", "dm_mod"),
        ("BLK_DEV_LOOP", "loop"),
        ("ENA_ETHERNET", "ena"),
        ("SCSI_VIRTIO", "virtio_scsi"),
        ("HW_RANDOM_VIRTIO", "virtio_rng"),
        ("VLAN_8021Q", "8021q"),
        ("ACPI_BUTTON", "button"),
        ("INPUT_EVDEV", "evdev"),
        ("SATA_AHCI", "ahci"),
        ("IP_NF_IPTABLES", "ip_tables"),
        ("IP_NF_FILTER", "iptable_filter"),
        ("IP_NF_NAT", "iptable_nat"),
        ("IP6_NF_IPTABLES", "ip6_tables"),
        ("FUSE_FS", "fuse"),
        ("NET_9P", "9pnet"),
        ("NET_9P_VIRTIO", "9pnet_virtio"),
        ("9P_FS", "9p"),
        ("ATA", "libata"),
        ("SCSI", "scsi_mod"),
        ("VIRTIO_PCI", "virtio_pci"),
    ];
    let bare = option.strip_prefix("CONFIG_").unwrap_or(option);
    let mut out: Vec<String> = EXCEPTIONS
        .iter()
        .filter(|(o, _)| *o == bare)
        .map(|(_, m)| (*m).to_owned())
        .collect();
    if let Some(nls) = bare.strip_prefix("NLS_CODEPAGE_") {
        out.push(format!("nls_cp{}", nls.to_ascii_lowercase()));
    }
    for prefix in ["NETFILTER_XT_MATCH_", "NETFILTER_XT_TARGET_"] {
        if let Some(x) = bare.strip_prefix(prefix) {
            out.push(format!("xt_{}", x.to_ascii_lowercase()));
        }
    }
    let lower = bare.to_ascii_lowercase();
    if let Some(fs) = lower.strip_suffix("_fs") {
        out.push(fs.to_owned());
    }
    out.push(lower);
    out.dedup();
    out
}

/// Checks required options against a kernel's config. Built in (`=y`) always counts; a module
/// (`=m`) counts only when one of its [`module_candidates`] is in `carried` (the image's
/// module closure, canonical names). Returns what is missing, in the order asked.
pub fn check_features(
    config: &KernelConfig,
    features: &[KernelFeature],
    carried: &[String],
) -> Vec<MissingFeature> {
    let carries = |m: &str| carried.iter().any(|c| c.eq_ignore_ascii_case(m));
    let mut seen = std::collections::BTreeSet::new();
    features
        .iter()
        .filter(|f| seen.insert(f.option.clone()))
        .filter_map(|f| {
            let got = config.value(&f.option);
            let modules = module_candidates(&f.option);
            let ok = match got {
                "y" => true,
                "m" => modules.iter().any(|m| carries(m)),
                _ => false,
            };
            (!ok).then(|| MissingFeature {
                feature: f.clone(),
                got: got.to_owned(),
                modules: if got == "m" { modules } else { Vec::new() },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Excerpts of Debian's `config-6.1.0-57-cloud-amd64` (linux-image-cloud-amd64 6.1.192-3).
    const DEBIAN: &str = include_str!("../tests/fixtures/kconfig/debian-cloud-excerpt.config");
    /// Excerpts of a lean `cloud` kernel's final `.config`.
    const LEAN: &str = include_str!("../tests/fixtures/kconfig/lean-cloud-excerpt.config");

    fn settings(text: &str) -> Vec<Setting> {
        parse_fragment(text, "t.config").unwrap()
    }

    #[test]
    fn fragment_lines_parse() {
        let s = settings(
            "# why\nCONFIG_A=y\n# CONFIG_B is not set\n\n# c\nCONFIG_LOCALVERSION=\"-x y\"\nCONFIG_NR_CPUS=256\n",
        );
        let got: Vec<(&str, &str, &str)> = s
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_str(), s.origin.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("CONFIG_A", "y", "t.config:2"),
                ("CONFIG_B", "n", "t.config:3"),
                ("CONFIG_LOCALVERSION", "\"-x y\"", "t.config:6"),
                ("CONFIG_NR_CPUS", "256", "t.config:7"),
            ]
        );
        assert_eq!(s[1].line(), "# CONFIG_B is not set");
    }

    #[test]
    fn fragment_errors_name_the_line() {
        let e = parse_fragment("# ok\nCONFIG_A=y\nDM_VERITY=y\n", "f.config").unwrap_err();
        assert_eq!(
            e,
            KconfigError::Syntax {
                origin: "f.config".into(),
                line: 3,
                text: "DM_VERITY=y".into()
            }
        );
        assert!(
            e.to_string().starts_with("f.config:3: `DM_VERITY=y`"),
            "{e}"
        );
        for bad in [
            "CONFIG_a=y",
            "CONFIG_A=",
            "CONFIG_A = y",
            "CONFIG_=y",
            "# CONFIG_A is set",
        ] {
            // A comment that is not a setting is a comment; the others are errors.
            let r = parse_fragment(bad, "f");
            if bad.starts_with('#') {
                assert_eq!(r, Ok(Vec::new()), "{bad}");
            } else {
                assert!(r.is_err(), "{bad}");
            }
        }
        let e = parse_fragment("CONFIG_A=y\n# x\nCONFIG_A=m\n", "f").unwrap_err();
        assert!(e.to_string().contains("already set on line 1"), "{e}");
    }

    #[test]
    fn uncommented_settings_are_found() {
        let text = "# why\nCONFIG_A=y\nCONFIG_B=y\n\nCONFIG_C=y\n# why\n# CONFIG_D is not set\n";
        assert_eq!(uncommented_settings(text), [5]);
    }

    #[test]
    fn later_fragments_win() {
        let a = parse_fragment("CONFIG_A=y\nCONFIG_B=y\n", "a").unwrap();
        let b = parse_fragment("# CONFIG_A is not set\nCONFIG_C=y\n", "b").unwrap();
        let c = combine(&[a, b]);
        let lines: Vec<String> = c.iter().map(Setting::line).collect();
        assert_eq!(lines, ["CONFIG_B=y", "# CONFIG_A is not set", "CONFIG_C=y"]);
        assert_eq!(c[1].origin, "b:1");
    }

    #[test]
    fn merge_replaces_base_lines() {
        let base = "CONFIG_KERNEL_XZ=y\n# CONFIG_SLUB is not set\nCONFIG_SLOB=y\n# comment\n";
        let s = settings("# CONFIG_SLOB is not set\nCONFIG_SLUB=y\n");
        let merged = merge(base, &s);
        assert_eq!(
            merged,
            "CONFIG_KERNEL_XZ=y\n# comment\n# virga kernel configuration fragments\n\
             # CONFIG_SLOB is not set\nCONFIG_SLUB=y\n"
        );
        let cfg = KernelConfig::parse(&merged);
        assert_eq!(cfg.get("CONFIG_SLUB"), Some("y"));
        assert_eq!(cfg.get("CONFIG_SLOB"), None);
    }

    #[test]
    fn verify_names_options_that_did_not_survive() {
        let cfg = KernelConfig::parse(LEAN);
        // Everything the lean excerpt has is what a matching fragment asks for.
        let ok = settings(
            "CONFIG_VIRTIO_NET=y\n# CONFIG_MODULES is not set\nCONFIG_LOCALVERSION=\"-virga-cloud\"\n",
        );
        assert_eq!(verify(&cfg, &ok), []);
        // A renamed or removed option, and one whose dependency is off, come back by name.
        let bad = settings("CONFIG_VIRTIO_NETT=y\nCONFIG_VETH=y\nCONFIG_NR_CPUS=64\n");
        let m = verify(&cfg, &bad);
        let names: Vec<&str> = m.iter().map(|m| m.wanted.name.as_str()).collect();
        assert_eq!(
            names,
            ["CONFIG_VIRTIO_NETT", "CONFIG_VETH", "CONFIG_NR_CPUS"]
        );
        assert!(m[0].to_string().contains("t.config:1"), "{}", m[0]);
        assert!(m[0].to_string().contains("renamed, removed"), "{}", m[0]);
        assert!(m[2].to_string().ends_with("has 256"), "{}", m[2]);
    }

    #[test]
    fn config_parsing_is_lenient_and_total() {
        let cfg = KernelConfig::parse("garbage\nCONFIG_A=y\n# CONFIG_B is not set\n=\n\n");
        assert_eq!(cfg.len(), 1);
        assert_eq!(cfg.value("CONFIG_B"), "n");
        assert_eq!(cfg.value("CONFIG_C"), "n");
    }

    #[test]
    fn features_built_in_or_carried() {
        let debian = KernelConfig::parse(DEBIAN);
        let want = [
            KernelFeature::new("CONFIG_DM_VERITY", "kernel.features[0]"),
            KernelFeature::new("CONFIG_EXT4_FS", "kernel.features[1]"),
            KernelFeature::new("CONFIG_ISO9660_FS", "kernel.features[2]"),
            KernelFeature::new("CONFIG_NO_SUCH_THING", "kernel.features[3]"),
        ];
        // dm-verity and isofs are modules in Debian's kernel: missing unless carried.
        let missing = check_features(&debian, &want, &["virtio_net".into()]);
        let names: Vec<&str> = missing.iter().map(|m| m.feature.option.as_str()).collect();
        assert_eq!(
            names,
            [
                "CONFIG_DM_VERITY",
                "CONFIG_ISO9660_FS",
                "CONFIG_NO_SUCH_THING"
            ]
        );
        assert!(
            missing[0]
                .to_string()
                .contains("add `dm_verity` to kernel.modules"),
            "{}",
            missing[0]
        );
        assert!(
            missing[2].to_string().ends_with("not set"),
            "{}",
            missing[2]
        );
        let carried = ["dm_verity".to_owned(), "isofs".to_owned()];
        let missing = check_features(&debian, &want, &carried);
        assert_eq!(missing.len(), 1);
        // The lean kernel has them built in.
        let lean = KernelConfig::parse(LEAN);
        assert_eq!(check_features(&lean, &want[..3], &[]), []);
    }

    #[test]
    fn module_names_for_options() {
        assert_eq!(
            module_candidates("CONFIG_ISO9660_FS"),
            ["isofs", "iso9660", "iso9660_fs"]
        );
        assert!(module_candidates("CONFIG_OVERLAY_FS").contains(&"overlay".to_owned()));
        assert!(module_candidates("CONFIG_VETH").contains(&"veth".to_owned()));
        assert!(module_candidates("CONFIG_NLS_CODEPAGE_437").contains(&"nls_cp437".to_owned()));
        assert!(
            module_candidates("CONFIG_NETFILTER_XT_MATCH_ADDRTYPE")
                .contains(&"xt_addrtype".to_owned())
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,400}") {
            let _ = parse_fragment(&text, "p");
            let cfg = KernelConfig::parse(&text);
            let _ = uncommented_settings(&text);
            let _ = merge(&text, &[]);
            let _ = verify(&cfg, &[]);
        }
    }
}
