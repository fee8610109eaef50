//! The default hostname: `virga.hostname=` on the command line, else the image's.

use boot_contract::StageResult;
use boot_contract::cmdline::HOSTNAME;

use super::Ctx;

/// Sets the hostname and writes `/etc/hostname`. Invalid names are reported and the image's
/// default is used.
pub fn set(ctx: &Ctx) -> anyhow::Result<StageResult> {
    let fallback = if ctx.image.hostname.is_empty() {
        "virga"
    } else {
        &ctx.image.hostname
    };
    let name = match ctx.cmd().get(HOSTNAME) {
        Some(h) if valid(h) => h.to_owned(),
        Some(h) => {
            ctx.warn("hostname", format!("ignoring invalid virga.hostname={h:?}"));
            fallback.to_owned()
        }
        None => fallback.to_owned(),
    };
    apply(&name)?;
    ctx.update(|s| s.hostname = name);
    Ok(StageResult::Ok)
}

/// Sets the kernel hostname and `/etc/hostname`.
pub fn apply(name: &str) -> anyhow::Result<()> {
    nix::unistd::sethostname(name).map_err(|e| anyhow::anyhow!("sethostname {name}: {e}"))?;
    std::fs::write("/etc/hostname", format!("{name}\n"))
        .map_err(|e| anyhow::anyhow!("/etc/hostname: {e}"))?;
    Ok(())
}

/// RFC 1123 host name: dot-separated labels of letters, digits and `-`, at most 253 bytes.
pub fn valid(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::valid;

    #[test]
    fn hostnames() {
        assert!(valid("virga"));
        assert!(valid("a-1.example.com"));
        assert!(!valid(""));
        assert!(!valid("-a"));
        assert!(!valid("a..b"));
        assert!(!valid("a b"));
        assert!(!valid(&"a".repeat(64)));
    }
}
