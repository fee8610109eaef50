//! Kernel modules: loaded in the background, waited for only by the stages that need them.
//!
//! Most of the time goes into the drivers' device probes inside the kernel (an IDE bus reset
//! sleeps 150 ms per channel, virtio devices are set up), not into loading. Boot therefore does
//! not stop for them: stage `modules` starts a few loader threads and returns, and each stage
//! waits for the classes of driver it needs, and only when the device is there (the PCI bus is
//! enumerated by the kernel before PID 1, so its class codes are known at once): the network
//! stage waits for network drivers when a PCI network controller exists, the state and
//! local-datasource stages for storage drivers when a PCI storage controller exists, and so on
//! (`docs/boot-sequence.md`). A stage that waits promotes what it waits for to the front of
//! the queue. Modules nobody waited for keep loading after the ready line; every module of
//! the image is loaded in the end, as before, so hot-plugged devices find their drivers.
//!
//! A module starts only after all of its dependencies have loaded; independent ones load
//! concurrently, so independent probes overlap.

use std::time::{Duration, Instant};

use crate::ctx::Ctx;

mod loader;
mod pci;
mod plan;

use loader::LOADER;
pub use loader::start;
pub use pci::pci_class_present;
use plan::State;

/// Worker threads loading modules.
const WORKERS: usize = 4;

/// What a driver is for, from where it sits in the kernel tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// ACPI drivers: the power button (`drivers/acpi`).
    Acpi,
    /// Input devices (`drivers/input`).
    Input,
    /// Network drivers (`drivers/net`, `net/`).
    Net,
    /// Virtual network interfaces and the protocols under them: VLAN (`net/8021q`, with
    /// `net/802` and `net/llc`), bonding (`drivers/net/bonding`, with `net/tls`). Waited for only
    /// when the network configuration asks for a VLAN or a bond.
    NetStack,
    /// Disk and CD-ROM controllers and their upper layers (`drivers/{ata,scsi,block,nvme,cdrom}`),
    /// and the device mapper (`drivers/md`: dm-verity for a disk image's system).
    Storage,
    /// Hardware random number generators (`drivers/char/hw_random`).
    Rng,
    /// Device buses that other drivers sit on (`drivers/virtio`).
    Bus,
    /// Filesystems and character sets (`fs/`).
    Fs,
    /// Anything else.
    Other,
}

impl Class {
    /// The class of a module from its path (`…/kernel/drivers/net/virtio_net.ko`).
    pub fn of(path: &str) -> Self {
        let rel = path.split_once("/kernel/").map_or(path, |(_, r)| r);
        let under = |dirs: &[&str]| dirs.iter().any(|d| rel.starts_with(d));
        if under(&["drivers/acpi/"]) {
            Class::Acpi
        } else if under(&[
            "net/8021q/",
            "net/802/",
            "net/llc/",
            "net/tls/",
            "drivers/net/bonding/",
        ]) {
            Class::NetStack
        } else if under(&["drivers/input/"]) {
            Class::Input
        } else if under(&["drivers/net/", "net/"]) {
            Class::Net
        } else if under(&[
            "drivers/ata/",
            "drivers/scsi/",
            "drivers/block/",
            "drivers/nvme/",
            "drivers/cdrom/",
            "drivers/md/",
        ]) {
            Class::Storage
        } else if under(&["drivers/char/hw_random/"]) {
            Class::Rng
        } else if under(&["drivers/virtio/"]) {
            Class::Bus
        } else if under(&["fs/"]) {
            Class::Fs
        } else {
            Class::Other
        }
    }
}

/// Waits until every module of `classes` has loaded (or failed), promoting them to the front
/// of the queue. Returns the modules still unfinished at `timeout`; empty when all are done or
/// when no loader runs.
pub fn wait(classes: &[Class], timeout: Duration) -> Vec<String> {
    let Some(loader) = LOADER.get() else {
        return Vec::new();
    };
    let deadline = Instant::now() + timeout;
    let t = Instant::now();
    prefetch(classes);
    let mut plan = loader.lock();
    loop {
        let left = plan.unfinished(classes);
        if left.is_empty() {
            tracing::debug!(
                "modules {classes:?} ready after {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
            return Vec::new();
        }
        let now = Instant::now();
        if now >= deadline {
            return left.into_iter().map(str::to_owned).collect();
        }
        plan = loader
            .wake
            .wait_timeout(plan, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Moves the modules of `classes` (and their dependencies) to the front of the queue, at
/// normal priority, without waiting: for drivers a later stage is known to wait for.
pub fn prefetch(classes: &[Class]) {
    if let Some(loader) = LOADER.get() {
        loader.lock().want(classes);
        loader.wake.notify_all();
    }
}

/// [`wait`], recording a warning for what did not load in time; boot goes on either way.
pub fn wait_for(ctx: &Ctx, stage: &str, classes: &[Class], timeout: Duration) {
    let left = wait(classes, timeout);
    if !left.is_empty() {
        ctx.warn(
            stage,
            format!(
                "modules still loading after {}s, going on without them: {}",
                timeout.as_secs(),
                left.join(", ")
            ),
        );
    }
}

/// Tells the loader whether the slot's verified `/usr` is mounted: the modules that live there
/// (a disk image's initramfs keeps only what mounting it needs) load now, or fail with the
/// reason.
pub fn usr_mounted(outcome: Result<(), String>) {
    if let Some(loader) = LOADER.get() {
        loader.lock().usr = match outcome {
            Ok(()) => plan::Usr::Mounted,
            Err(why) => plan::Usr::Failed(why),
        };
        loader.wake.notify_all();
    }
}

/// Number of modules not loaded yet (still queued or loading).
pub fn pending() -> usize {
    LOADER.get().map_or(0, |l| {
        l.lock()
            .state
            .iter()
            .filter(|s| matches!(s, State::Pending | State::Loading))
            .count()
    })
}
