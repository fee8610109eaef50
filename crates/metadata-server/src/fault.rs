//! Fault injection: make the metadata service misbehave the ways real ones do, so guest-side
//! fallbacks (timeouts, retries, "boot completes anyway") can be tested.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One way of misbehaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Read the request, never answer; close when the client does or after
    /// [`Fault::hang_for`].
    Hang,
    /// Answer `500 Internal Server Error`.
    Status500,
    /// Answer `302 Found` with a `Location` on another host ([`Fault::redirect_to`]).
    Redirect,
    /// Send the normal response one byte every [`Fault::slow_delay`] (for at most
    /// [`Fault::slow_max`], then the rest at once).
    Slow,
    /// Send bytes that are not HTTP, then close.
    Garbage,
}

impl FaultKind {
    /// All kinds, in the order the CLI lists them.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Hang,
        FaultKind::Status500,
        FaultKind::Redirect,
        FaultKind::Slow,
        FaultKind::Garbage,
    ];

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Hang => "hang",
            FaultKind::Status500 => "500",
            FaultKind::Redirect => "redirect",
            FaultKind::Slow => "slow",
            FaultKind::Garbage => "garbage",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown fault {s:?} (hang, 500, redirect, slow, garbage)"))
    }
}

/// A fault and where it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What to do.
    pub kind: FaultKind,
    /// Only requests whose path starts with this prefix misbehave (`None`: all of them).
    pub path_prefix: Option<String>,
    /// Base URL of the redirect target; the request path is appended. The default,
    /// `http://metadata.invalid`, can never resolve.
    pub redirect_to: String,
    /// Longest a hung connection is held open.
    pub hang_for: Duration,
    /// Delay between bytes of a slow response.
    pub slow_delay: Duration,
    /// After this long a slow response sends the rest at once, so time stays bounded.
    pub slow_max: Duration,
}

impl Fault {
    /// A fault of `kind` on every path, with default parameters (hang 120 s, slow 200 ms per
    /// byte for at most 30 s).
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            kind,
            path_prefix: None,
            redirect_to: "http://metadata.invalid".to_owned(),
            hang_for: Duration::from_secs(120),
            slow_delay: Duration::from_millis(200),
            slow_max: Duration::from_secs(30),
        }
    }

    /// True when this fault applies to a request for `path`.
    pub fn applies_to(&self, path: &str) -> bool {
        self.path_prefix
            .as_deref()
            .is_none_or(|prefix| path.starts_with(prefix))
    }
}

/// The bytes [`FaultKind::Garbage`] sends: binary noise that cannot be mistaken for a
/// status line.
pub const GARBAGE: &[u8] =
    b"\x00\xff\xfe\x13\x37SSH-2.0-not-http\r\n\x1b[31m\xde\xad\xbe\xef\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(k.as_str().parse::<FaultKind>(), Ok(k));
        }
        assert!("404".parse::<FaultKind>().is_err());
    }

    #[test]
    fn prefixes() {
        let mut f = Fault::new(FaultKind::Status500);
        assert!(f.applies_to("/anything"));
        f.path_prefix = Some("/latest/user-data".into());
        assert!(f.applies_to("/latest/user-data"));
        assert!(!f.applies_to("/latest/meta-data/instance-id"));
    }
}
