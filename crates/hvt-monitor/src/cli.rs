//! Command line of the monitor, shared by `virga-hvt` and `virga unikernel monitor`.
//!
//! ```text
//! virga-hvt [--mem MIB] [--block FILE] [--net TAP] [--mac MAC] [--timeout SECS] [--timings]
//!           KERNEL [-- GUEST ARGS...]
//! ```

use std::ffi::OsString;
use std::time::Duration;

use crate::Config;

/// Usage text.
pub const USAGE: &str = "usage: virga-hvt [--mem MIB] [--block FILE] [--net TAP] [--mac MAC] \
[--timeout SECS] [--timings] KERNEL [-- GUEST ARGS...]";

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Parses monitor arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Config, String> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut kernel = None;
    let mut cfg = Config::new("");
    let mut guest_args: Vec<String> = Vec::new();
    let err = |e: lexopt::Error| e.to_string();
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Long("mem") => cfg.memory_mib = p.value().map_err(err)?.parse().map_err(err)?,
            Long("block") => cfg.block = Some(p.value().map_err(err)?.into()),
            Long("net") => cfg.tap = Some(p.value().map_err(err)?.string().map_err(err)?),
            Long("mac") => {
                let v = p.value().map_err(err)?.string().map_err(err)?;
                cfg.mac = Some(parse_mac(&v).ok_or_else(|| format!("invalid MAC address {v}"))?);
            }
            Long("timeout") => {
                let secs: f64 = p.value().map_err(err)?.parse().map_err(err)?;
                if !(secs > 0.0 && secs < 1e9) {
                    return Err(format!("invalid timeout {secs}"));
                }
                cfg.timeout = Some(Duration::from_secs_f64(secs));
            }
            Long("timings") => cfg.timings = true,
            Long("no-seccomp") => cfg.seccomp = false,
            Long("help") | Short('h') => return Err(USAGE.to_owned()),
            Value(v) if kernel.is_none() => kernel = Some(v),
            Value(v) => guest_args.push(v.string().map_err(err)?),
            _ => return Err(format!("{}\n{USAGE}", arg.unexpected())),
        }
        if kernel.is_some() {
            // Everything after the kernel (and an optional `--`) is for the guest.
            for v in p.raw_args().map_err(err)? {
                let v = v
                    .into_string()
                    .map_err(|_| "guest arguments must be UTF-8".to_owned())?;
                if !(guest_args.is_empty() && v == "--") {
                    guest_args.push(v);
                }
            }
        }
    }
    cfg.kernel = kernel
        .ok_or_else(|| format!("missing KERNEL\n{USAGE}"))?
        .into();
    cfg.cmdline = guest_args.join(" ");
    Ok(cfg)
}

/// Parses `args`, runs the guest and returns the exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> u8 {
    match parse(args) {
        Ok(cfg) => crate::run_to_exit_code(&cfg),
        Err(msg) => {
            eprintln!("virga-hvt: {msg}");
            hvt_abi::exit::USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_options_and_guest_args() {
        let c = parse(args(&[
            "--mem",
            "16",
            "--net",
            "tap0",
            "--mac",
            "02:00:00:00:00:01",
            "--timeout",
            "2.5",
            "k.elf",
            "--",
            "ip=10.0.0.2/24",
            "port=80",
        ]))
        .unwrap();
        assert_eq!(c.memory_mib, 16);
        assert_eq!(c.tap.as_deref(), Some("tap0"));
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.kernel, std::path::PathBuf::from("k.elf"));
        assert_eq!(c.cmdline, "ip=10.0.0.2/24 port=80");
    }

    #[test]
    fn rejects_bad_options() {
        assert!(parse(args(&[])).is_err());
        assert!(parse(args(&["--mem", "x", "k"])).is_err());
        assert!(parse(args(&["--mac", "zz", "k"])).is_err());
        assert!(parse(args(&["--timeout", "-1", "k"])).is_err());
        assert!(parse(args(&["--bogus", "k"])).is_err());
    }
}
