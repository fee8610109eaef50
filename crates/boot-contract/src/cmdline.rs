//! The kernel command line: every key virga reads ([`KEYS`]), a total parser ([`Cmdline`]), the
//! typed view the guest works from ([`BootParams`], parsed once per boot), and the builder every
//! host path uses to make a command line ([`KernelCmdline`]).
//!
//! The kernel splits its command line on spaces, keeping double-quoted runs together; a
//! parameter is `key` or `key=value`. The keys virga reads all start with `virga.`; their
//! meaning is documented in `docs/kernel-cmdline.md`, whose table is tested against [`KEYS`].

use std::time::Duration;

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
/// `virga.ds_timeout=SECONDS`: overall deadline of the network datasources (default 60).
pub const DS_TIMEOUT: &str = "virga.ds_timeout";
/// `virga.metadata_url=URL`: base URL of the EC2/OpenStack metadata services.
pub const METADATA_URL: &str = "virga.metadata_url";
/// `virga.dhcp_timeout=SECONDS`: how long boot waits for a DHCP lease (default 30).
pub const DHCP_TIMEOUT: &str = "virga.dhcp_timeout";
/// `virga.ssh=0|1`: run the SSH server, overriding the image.
pub const SSH: &str = "virga.ssh";
/// `panic=SECONDS`: the kernel's own key; `virga run` sets `panic=-1` so that a panicking guest
/// stops QEMU (which runs with `-no-reboot`) at once.
pub const PANIC: &str = "panic";

/// The default of `virga.stage_timeout=`.
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of `virga.ds_timeout=`.
pub const DEFAULT_DS_TIMEOUT: Duration = Duration::from_secs(60);
/// The default of `virga.dhcp_timeout=`.
pub const DEFAULT_DHCP_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of `virga.metadata_url=`: the link-local metadata service of EC2 and OpenStack.
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
/// The largest number of seconds a timeout key accepts; larger values are clamped to it.
pub const MAX_TIMEOUT_SECS: u64 = 3600;

/// Documentation of one key: what `docs/kernel-cmdline.md` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDoc {
    /// The key, without `=`.
    pub name: &'static str,
    /// The values it takes.
    pub values: &'static str,
    /// What applies when it is absent.
    pub default: &'static str,
}

/// Every `virga.` key the guest reads, in the order `docs/kernel-cmdline.md` lists them.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        name: LOG,
        values: "error, warn, info, debug, trace",
        default: "info",
    },
    KeyDoc {
        name: SHELL,
        values: "0/1 (no/yes, off/on; bare key = on)",
        default: "the image's console_shell",
    },
    KeyDoc {
        name: HOSTNAME,
        values: "RFC 1123 host name",
        default: "the image's hostname",
    },
    KeyDoc {
        name: STAGE_TIMEOUT,
        values: "seconds (1-3600)",
        default: "30",
    },
    KeyDoc {
        name: STATE,
        values: "auto, none",
        default: "auto",
    },
    KeyDoc {
        name: DATASOURCES,
        values: "comma list of datasource names",
        default: "the image's datasources",
    },
    KeyDoc {
        name: DS_TIMEOUT,
        values: "seconds (0-3600)",
        default: "60",
    },
    KeyDoc {
        name: METADATA_URL,
        values: "http:// URL",
        default: DEFAULT_METADATA_URL,
    },
    KeyDoc {
        name: DHCP_TIMEOUT,
        values: "seconds (0-3600)",
        default: "30",
    },
    KeyDoc {
        name: SSH,
        values: "0/1",
        default: "the image's userland.ssh (on)",
    },
    KeyDoc {
        name: SLOT,
        values: "A, B (set by a disk image's GRUB)",
        default: "—",
    },
    KeyDoc {
        name: BOOT_MODE,
        values: "try, fallback (set by a disk image's GRUB)",
        default: "—",
    },
];

/// Console log level of PID 1 (`virga.log=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    Info,
    /// Per-module load times and more.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn parse(v: &str) -> Option<Self> {
        Some(match v.to_ascii_lowercase().as_str() {
            "error" => Self::Error,
            "warn" | "warning" => Self::Warn,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
    }
}

/// Whether to look for the persistent state disk (`virga.state=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StateMode {
    /// Look for the disk labelled `virga-state` (the default).
    #[default]
    Auto,
    /// No persistent state: nothing is searched or waited for.
    None,
}

/// The `virga.` keys of a command line, typed and checked: what the guest works from. Parsed
/// once per boot; a bad value is reported in [`BootParams::problems`] and its default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    /// `virga.log=`.
    pub log: Option<LogLevel>,
    /// `virga.shell=`.
    pub shell: Option<bool>,
    /// `virga.hostname=`, as given (the guest validates host names with its hostname policy).
    pub hostname: Option<String>,
    /// `virga.ds=`: datasource names in order (split at commas, trimmed, empty ones dropped).
    pub datasources: Option<Vec<String>>,
    /// `virga.stage_timeout=` (1 s to [`MAX_TIMEOUT_SECS`]).
    pub stage_timeout: Option<Duration>,
    /// `virga.state=`.
    pub state: StateMode,
    /// `virga.ds_timeout=`.
    pub ds_timeout: Option<Duration>,
    /// `virga.metadata_url=`.
    pub metadata_url: Option<String>,
    /// `virga.dhcp_timeout=`.
    pub dhcp_timeout: Option<Duration>,
    /// `virga.ssh=`.
    pub ssh: Option<bool>,
    /// One line per bad value: `virga.KEY=VALUE: why; what applies instead`.
    pub problems: Vec<String>,
}

impl BootParams {
    /// Reads the `virga.` keys of `line`. Never fails: bad values become [`Self::problems`].
    pub fn parse(line: &str) -> Self {
        let c = Cmdline::parse(line);
        let mut p = BootParams::default();
        let mut problem = |key: &str, value: &str, why: &str| {
            p.problems.push(format!("{key}={value}: {why}"));
        };
        let flag = |key: &str, problem: &mut dyn FnMut(&str, &str, &str)| match c.flag(key) {
            Some(b) => Some(b),
            None => {
                if let Some(v) = c.get(key) {
                    problem(key, v, "not 0/1, yes/no or on/off; ignored");
                }
                None
            }
        };
        let shell = flag(SHELL, &mut problem);
        let ssh = flag(SSH, &mut problem);
        let log = c.get(LOG).and_then(|v| {
            let l = LogLevel::parse(v);
            if l.is_none() {
                problem(LOG, v, "not error, warn, info, debug or trace; using info");
            }
            l
        });
        let mut seconds = |key: &str, min: u64| {
            let v = c.get(key)?;
            match v.trim().parse::<u64>() {
                Ok(n) if n < min => {
                    problem(key, v, &format!("less than {min} s; using the default"));
                    None
                }
                Ok(n) if n > MAX_TIMEOUT_SECS => {
                    problem(
                        key,
                        v,
                        &format!("more than {MAX_TIMEOUT_SECS} s; using {MAX_TIMEOUT_SECS}"),
                    );
                    Some(Duration::from_secs(MAX_TIMEOUT_SECS))
                }
                Ok(n) => Some(Duration::from_secs(n)),
                Err(_) => {
                    problem(key, v, "not a whole number of seconds; using the default");
                    None
                }
            }
        };
        let stage_timeout = seconds(STAGE_TIMEOUT, 1);
        let ds_timeout = seconds(DS_TIMEOUT, 0);
        let dhcp_timeout = seconds(DHCP_TIMEOUT, 0);
        let state = match c.get(STATE) {
            None | Some("auto") => StateMode::Auto,
            Some("none") => StateMode::None,
            Some(other) => {
                problem(
                    STATE,
                    other,
                    "not auto or none; looking for the disk (auto)",
                );
                StateMode::Auto
            }
        };
        let metadata_url = c.get(METADATA_URL).and_then(|v| {
            if v.starts_with("http://") {
                Some(v.to_owned())
            } else {
                problem(METADATA_URL, v, "not an http:// URL; using the default");
                None
            }
        });
        p.log = log;
        p.shell = shell;
        p.ssh = ssh;
        p.stage_timeout = stage_timeout;
        p.ds_timeout = ds_timeout;
        p.dhcp_timeout = dhcp_timeout;
        p.state = state;
        p.metadata_url = metadata_url;
        p.hostname = c.get(HOSTNAME).map(str::to_owned);
        p.datasources = c.get(DATASOURCES).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        });
        p
    }

    /// `virga.stage_timeout=`, else its default.
    pub fn stage_timeout(&self) -> Duration {
        self.stage_timeout.unwrap_or(DEFAULT_STAGE_TIMEOUT)
    }

    /// `virga.ds_timeout=`, else its default.
    pub fn ds_timeout(&self) -> Duration {
        self.ds_timeout.unwrap_or(DEFAULT_DS_TIMEOUT)
    }

    /// `virga.dhcp_timeout=`, else its default.
    pub fn dhcp_timeout(&self) -> Duration {
        self.dhcp_timeout.unwrap_or(DEFAULT_DHCP_TIMEOUT)
    }

    /// `virga.metadata_url=`, else its default.
    pub fn metadata_url(&self) -> &str {
        self.metadata_url.as_deref().unwrap_or(DEFAULT_METADATA_URL)
    }
}

/// A kernel command line under construction: the one way host code makes one (`virga run`,
/// `vm-runner`, tests, benchmarks), so that the keys it sets are the keys the guest reads.
/// Words keep the order they were added in; [`KernelCmdline::set`] replaces an earlier value
/// of the same key in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    words: Vec<String>,
}

impl KernelCmdline {
    /// Starts from an image's command line (the manifest's `cmdline`), split like the kernel does.
    pub fn new(base: &str) -> Self {
        let mut c = Self::default();
        c.append(base);
        c
    }

    /// Appends text verbatim (the user's `--append`), split into words like the kernel does.
    pub fn append(&mut self, raw: &str) -> &mut Self {
        self.words
            .extend(split_words(raw).into_iter().map(str::to_owned));
        self
    }

    /// Sets `key=value`: replaces the last occurrence of `key` if there is one, else appends.
    /// A value with spaces is quoted.
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        let word = if value.contains(char::is_whitespace) {
            format!("{key}=\"{value}\"")
        } else {
            format!("{key}={value}")
        };
        match self.words.iter().rposition(|w| word_key(w) == key) {
            Some(i) => self.words[i] = word,
            None => self.words.push(word),
        }
        self
    }

    /// `panic=-1`: a guest kernel panic stops the VM at once instead of rebooting it.
    pub fn panic_stops_vm(&mut self) -> &mut Self {
        self.set(PANIC, "-1")
    }

    /// `virga.ds=a,b,…`.
    pub fn datasources<S: AsRef<str>>(&mut self, names: &[S]) -> &mut Self {
        let list: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
        self.set(DATASOURCES, &list.join(","))
    }

    /// Whether `key` is set (with or without a value).
    pub fn has(&self, key: &str) -> bool {
        self.words.iter().any(|w| word_key(w) == key)
    }

    /// The value of the last occurrence of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.words
            .iter()
            .rev()
            .find(|w| word_key(w) == key)
            .and_then(|w| w.split_once('=').map(|(_, v)| strip_quotes(v)))
    }

    /// The command line, words separated by one space.
    pub fn render(&self) -> String {
        self.words.join(" ")
    }
}

impl std::fmt::Display for KernelCmdline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

fn word_key(word: &str) -> &str {
    strip_quotes(word.split_once('=').map_or(word, |(k, _)| k))
}

/// Splits like the kernel: at ASCII whitespace outside double quotes.
fn split_words(line: &str) -> Vec<&str> {
    let bytes = line.as_bytes();
    let mut words = Vec::new();
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
        words.push(&line[start..i]);
    }
    words
}

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
        let params = split_words(line)
            .into_iter()
            .map(|word| match word.split_once('=') {
                Some((k, v)) => Param {
                    key: k,
                    value: Some(strip_quotes(v)),
                },
                None => Param {
                    key: strip_quotes(word),
                    value: None,
                },
            })
            .collect();
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

    #[test]
    fn boot_params_are_typed_and_bad_values_reported() {
        let p = BootParams::parse(
            "console=ttyS0 virga.log=debug virga.shell=0 virga.ds=nocloud,,ec2 ,none \
             virga.stage_timeout=99999999999999999999 virga.ds_timeout=5 virga.dhcp_timeout=x \
             virga.state=maybe virga.metadata_url=ftp://x virga.ssh=perhaps",
        );
        assert_eq!(p.log, Some(LogLevel::Debug));
        assert_eq!(p.shell, Some(false));
        assert_eq!(p.ssh, None);
        assert_eq!(
            p.datasources.as_deref(),
            Some(&["nocloud".to_owned(), "ec2".to_owned()][..])
        );
        // Too large to be a u64 at all: the default applies, reported.
        assert_eq!(p.stage_timeout, None);
        assert_eq!(p.stage_timeout(), DEFAULT_STAGE_TIMEOUT);
        assert_eq!(p.ds_timeout(), Duration::from_secs(5));
        assert_eq!(p.dhcp_timeout(), DEFAULT_DHCP_TIMEOUT);
        assert_eq!(p.state, StateMode::Auto);
        assert_eq!(p.metadata_url(), DEFAULT_METADATA_URL);
        for key in [STAGE_TIMEOUT, DHCP_TIMEOUT, STATE, METADATA_URL, SSH] {
            assert!(
                p.problems.iter().any(|m| m.starts_with(key)),
                "{key}: {:?}",
                p.problems
            );
        }
        let big = BootParams::parse("virga.stage_timeout=86400 virga.state=none");
        assert_eq!(big.stage_timeout(), Duration::from_secs(MAX_TIMEOUT_SECS));
        assert_eq!(big.state, StateMode::None);
        assert_eq!(big.problems.len(), 1);
        assert!(
            BootParams::parse("virga.stage_timeout=0")
                .stage_timeout
                .is_none()
        );
    }

    #[test]
    fn the_builder_renders_what_the_parser_reads() {
        let mut c = KernelCmdline::new("console=ttyS0  quiet");
        c.panic_stops_vm().append("x=\"a b\" virga.log=debug");
        c.datasources(&["ec2", "none"]);
        assert_eq!(
            c.render(),
            r#"console=ttyS0 quiet panic=-1 x="a b" virga.log=debug virga.ds=ec2,none"#
        );
        c.set(LOG, "info").set(HOSTNAME, "two words");
        assert_eq!(c.get(LOG), Some("info"));
        assert_eq!(c.get(HOSTNAME), Some("two words"));
        assert!(c.has("quiet") && !c.has(SHELL));
        let p = BootParams::parse(&c.render());
        assert_eq!(p.log, Some(LogLevel::Info));
        assert_eq!(p.hostname.as_deref(), Some("two words"));
        assert_eq!(Cmdline::parse(&c.render()).get("x"), Some("a b"));
    }

    proptest! {
        #[test]
        fn boot_params_never_panic(s in ".{0,300}") {
            let _ = BootParams::parse(&s);
        }

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
