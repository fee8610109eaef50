//! Kernel command-line keys read by the guest, and a total parser for the command line.
//!
//! The kernel splits its command line on spaces, keeping double-quoted runs together; a
//! parameter is `key` or `key=value`. The keys virga reads all start with `virga.`; their
//! meaning is documented in `docs/kernel-cmdline.md`.

/// `virga.shell=0|1`: run (1) or do not run (0) a root shell on the console, overriding the image.
pub const SHELL: &str = "virga.shell";
/// `virga.log=error|warn|info|debug|trace`: guest log level on the console (default `info`).
pub const LOG: &str = "virga.log";
/// `virga.hostname=NAME`: hostname to use when no datasource provides one.
pub const HOSTNAME: &str = "virga.hostname";
/// `virga.ds=a,b,…`: datasources to try, in order (e.g. `nocloud,configdrive,ec2,none`).
pub const DATASOURCES: &str = "virga.ds";
/// `virga.stage_timeout=SECONDS`: ceiling for any single boot stage (default 30).
pub const STAGE_TIMEOUT: &str = "virga.stage_timeout";
/// `virga.state=auto|none`: look for the `virga-state` disk (`auto`, the default: after the
/// storage drivers of the devices present have loaded) or run without persistent state
/// (`none`: nothing is searched, nothing is waited for).
pub const STATE: &str = "virga.state";

/// `virga.slot=A|B`: the system slot GRUB booted (disk images; set by grub.cfg after any
/// hypervisor-supplied arguments, so it cannot be overridden from there).
pub const SLOT: &str = "virga.slot";
/// `virga.boot=try|fallback`: how GRUB chose the slot: `try` = the first good, untried slot in
/// `ORDER` (marked tried before boot; the system marks it good); `fallback` = every good slot
/// had been tried without being marked good since, so the first good one booted anyway.
pub const BOOT_MODE: &str = "virga.boot";

/// One `key` or `key=value` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'a> {
    /// The part before the first `=`.
    pub key: &'a str,
    /// The part after the first `=`, with surrounding double quotes removed; `None` for a bare key.
    pub value: Option<&'a str>,
}

/// A parsed kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline<'a> {
    params: Vec<Param<'a>>,
}

impl<'a> Cmdline<'a> {
    /// Splits `line` the way the kernel does. Never fails: an unterminated quote runs to the end.
    pub fn parse(line: &'a str) -> Self {
        let mut params = Vec::new();
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= bytes.len() {
                break;
            }
            let start = i;
            let mut quoted = false;
            while i < bytes.len() && (quoted || !bytes[i].is_ascii_whitespace()) {
                if bytes[i] == b'"' {
                    quoted = !quoted;
                }
                i += 1;
            }
            // Splits only at ASCII bytes, so both ends are char boundaries.
            let word = &line[start..i];
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(strip_quotes(v))),
                None => (strip_quotes(word), None),
            };
            params.push(Param { key, value });
        }
        Cmdline { params }
    }

    /// All parameters in order.
    pub fn params(&self) -> &[Param<'a>] {
        &self.params
    }

    /// The value of the last occurrence of `key` (the kernel's own rule: later wins).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.params
            .iter()
            .rev()
            .find(|p| p.key == key)
            .and_then(|p| p.value)
    }

    /// Whether `key` occurs at all, with or without a value.
    pub fn has(&self, key: &str) -> bool {
        self.params.iter().any(|p| p.key == key)
    }

    /// A boolean key: `1`, `y`, `yes`, `true`, `on` or a bare key are true; `0`, `n`, `no`,
    /// `false`, `off` are false; absent or anything else is `None`.
    pub fn flag(&self, key: &str) -> Option<bool> {
        let p = self.params.iter().rev().find(|p| p.key == key)?;
        match p.value.map(str::to_ascii_lowercase).as_deref() {
            None | Some("1" | "y" | "yes" | "true" | "on") => Some(true),
            Some("0" | "n" | "no" | "false" | "off") => Some(false),
            Some(_) => None,
        }
    }
}

fn strip_quotes(s: &str) -> &str {
    let s = s.strip_prefix('"').unwrap_or(s);
    s.strip_suffix('"').unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_like_the_kernel() {
        let c = Cmdline::parse(r#"console=ttyS0  quiet virga.ds=nocloud,none x="a b" virga.shell"#);
        assert_eq!(c.get("console"), Some("ttyS0"));
        assert_eq!(c.get(DATASOURCES), Some("nocloud,none"));
        assert_eq!(c.get("x"), Some("a b"));
        assert!(c.has("quiet"));
        assert_eq!(c.get("quiet"), None);
        assert_eq!(c.flag(SHELL), Some(true));
        assert_eq!(c.params().len(), 5);
    }

    #[test]
    fn later_values_win() {
        let c = Cmdline::parse("virga.shell=1 virga.shell=0");
        assert_eq!(c.flag(SHELL), Some(false));
    }

    #[test]
    fn unknown_flag_value_is_none() {
        assert_eq!(Cmdline::parse("virga.shell=maybe").flag(SHELL), None);
        assert_eq!(Cmdline::parse("").flag(SHELL), None);
    }

    proptest! {
        #[test]
        fn never_panics_and_keys_have_no_spaces(s in ".{0,200}") {
            let c = Cmdline::parse(&s);
            for p in c.params() {
                prop_assert!(!p.key.is_empty() || p.value.is_some() || s.contains('"'));
            }
        }

        #[test]
        fn simple_words_round_trip(words in proptest::collection::vec("[a-z.]{1,8}(=[a-z0-9,]{0,8})?", 0..10)) {
            let line = words.join(" ");
            let c = Cmdline::parse(&line);
            prop_assert_eq!(c.params().len(), words.len());
        }
    }
}
