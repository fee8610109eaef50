//! Stage `hostname`: the default hostname, `virga.hostname=` on the command line, else the
//! image's. A datasource or user-data may change it later.

use std::time::Instant;

use boot_contract::StageResult;

use crate::ctx::Ctx;
use crate::hostname;

/// Sets the default hostname. An invalid `virga.hostname=` is reported and the image's
/// default is used.
pub fn stage(ctx: &Ctx, _deadline: Instant) -> anyhow::Result<StageResult> {
    let fallback = if hostname::valid(&ctx.image.hostname) {
        ctx.image.hostname.as_str()
    } else {
        "virga"
    };
    let name = match ctx.params.hostname.as_deref() {
        Some(h) if hostname::valid(h) => h,
        Some(h) => {
            ctx.warn("hostname", format!("ignoring invalid virga.hostname={h:?}"));
            fallback
        }
        None => fallback,
    };
    hostname::set(name, None)?;
    ctx.update(|s| s.hostname = name.to_owned());
    Ok(StageResult::Ok)
}
