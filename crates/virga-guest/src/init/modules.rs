//! Loads the kernel modules the image builder chose, dependencies first (`finit_module`).

use std::time::Instant;

use boot_contract::StageResult;
use nix::kmod::{ModuleInitFlags, finit_module};

use super::Ctx;

/// Loads every module of the image config in order. A module that fails is recorded and the
/// rest are still tried; `EEXIST` (already loaded or built in) counts as loaded.
pub fn load(ctx: &Ctx) -> anyhow::Result<StageResult> {
    if ctx.image.modules.is_empty() {
        return Ok(StageResult::Skipped);
    }
    let mut loaded = Vec::new();
    let mut failed = 0;
    for m in &ctx.image.modules {
        let t = Instant::now();
        let result = std::fs::File::open(&m.path)
            .map_err(|e| e.to_string())
            .and_then(|f| match finit_module(&f, c"", ModuleInitFlags::empty()) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
                Err(e) => Err(e.desc().to_owned()),
            });
        match result {
            Ok(()) => {
                tracing::debug!(
                    "module {} loaded in {:.1} ms",
                    m.name,
                    t.elapsed().as_secs_f64() * 1e3
                );
                loaded.push(m.name.clone());
            }
            Err(e) => {
                failed += 1;
                ctx.error("modules", format!("{}: {e}", m.name));
            }
        }
    }
    tracing::info!(
        "loaded {} of {} modules",
        loaded.len(),
        ctx.image.modules.len()
    );
    ctx.update(|s| s.modules_loaded = loaded);
    if failed > 0 {
        anyhow::bail!("{failed} module(s) failed to load");
    }
    Ok(StageResult::Ok)
}
