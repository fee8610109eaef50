//! Early networking: the loopback interface.

use std::time::Instant;

use boot_contract::StageResult;

use crate::ctx::Ctx;

/// Brings `lo` up (the kernel configures 127.0.0.1/8 and ::1 itself once it is up).
pub fn loopback(_ctx: &Ctx, _deadline: Instant) -> anyhow::Result<StageResult> {
    crate::sys::interface_up("lo").map_err(|e| anyhow::anyhow!("lo up: {e}"))?;
    Ok(StageResult::Ok)
}
