//! Seeding the kernel's random pool early, so that key generation never blocks.
//!
//! Sources, in order: a hardware RNG (`/dev/hwrng`, i.e. virtio-rng; credited), and the seed
//! saved at the previous boot when the image has persistent state (mixed in, not credited: it
//! could be a cloned disk). A fresh seed is saved for the next boot.
//!
//! When the kernel initialised its pool before PID 1 (from the CPU's RNG, as on any x86 VM
//! with RDRAND), boot does not wait for the hardware RNG's driver: the kernel's `hw_random`
//! core feeds the pool from it by itself once the driver has loaded in the background.

use std::io::Read;
use std::time::{Duration, Instant};

use boot_contract::StageResult;

use crate::ctx::Ctx;

const SEED_FILE: &str = "/var/lib/virga/random-seed";
const SEED_BYTES: usize = 64;

/// Seeds the pool and records whether the CRNG is ready.
pub fn seed(ctx: &Ctx, _deadline: Instant) -> anyhow::Result<StageResult> {
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    let mut sources = Vec::new();
    let early = crate::sys::crng_ready();
    if early {
        sources.push("kernel pool initialised before PID 1".to_owned());
    } else {
        use super::modules::{Class, wait_for};
        wait_for(
            ctx,
            "rng",
            &[Class::Rng, Class::Bus],
            Duration::from_secs(10),
        );
    }
    if !early && let Ok(mut hw) = std::fs::File::open("/dev/hwrng") {
        let mut buf = [0u8; SEED_BYTES];
        match hw.read(&mut buf) {
            Ok(n) if n > 0 => {
                crate::sys::add_entropy(&random, &buf[..n], (n * 8) as u32)?;
                sources.push(format!("hwrng ({n} bytes, credited)"));
            }
            Ok(_) => ctx.warn("rng", "/dev/hwrng returned no data"),
            Err(e) => ctx.warn("rng", format!("/dev/hwrng: {e}")),
        }
    }
    if let Ok(saved) = std::fs::read(SEED_FILE)
        && !saved.is_empty()
    {
        crate::sys::add_entropy(&random, &saved[..saved.len().min(512)], 0)?;
        sources.push("saved seed (not credited)".into());
    }
    let ready = crate::sys::crng_ready();
    if ready {
        let mut fresh = [0u8; SEED_BYTES];
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut fresh))
            .is_ok()
        {
            // Private (it seeds the next boot's pool) and durable (never a torn seed).
            if let Err(e) = crate::fsutil::write_atomic(SEED_FILE, &fresh, 0o600, false) {
                tracing::debug!("{SEED_FILE}: {e}");
            }
        }
    } else {
        ctx.warn(
            "rng",
            "kernel random pool not initialised yet (no hwrng?); add -device virtio-rng-pci",
        );
    }
    tracing::info!(
        "entropy {}: {}",
        if ready { "ready" } else { "not ready" },
        if sources.is_empty() {
            "no seed sources".to_owned()
        } else {
            sources.join(", ")
        }
    );
    ctx.update(|s| s.entropy_ready = ready);
    Ok(if sources.is_empty() {
        StageResult::Skipped
    } else {
        StageResult::Ok
    })
}
