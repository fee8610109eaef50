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

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use boot_contract::{ModuleEntry, StageResult};
use nix::kmod::{ModuleInitFlags, finit_module};

use super::Ctx;

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
    /// Disk and CD-ROM controllers and their upper layers (`drivers/{ata,scsi,block,nvme,cdrom}`).
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Pending,
    Loading,
    Loaded,
    Failed(String),
}

/// Which module can be loaded next, given what has loaded so far and what stages wait for.
#[derive(Debug)]
struct Plan {
    entries: Vec<ModuleEntry>,
    class: Vec<Class>,
    state: Vec<State>,
    /// Load order when nobody waits: the best (lowest) class rank among the module and every
    /// module that depends on it, so dependencies inherit their users' urgency.
    rank: Vec<Class>,
    /// Some stage waits for it (or for a module that needs it): load it before the rest.
    wanted: Vec<bool>,
    /// It may be needed on this machine: a driver whose PCI patterns match a device on the bus,
    /// a module without PCI patterns, or a library a relevant module uses. Stages wait only
    /// for these (and their dependencies); the others (drivers for other clouds' hardware) load
    /// in the background, for hot-plug.
    relevant: Vec<bool>,
    /// Indices of each module's dependencies that are in the list (others are built in or
    /// already loaded).
    deps: Vec<Vec<usize>>,
    /// The thread loading it, while it loads.
    loader_tid: Vec<Option<i32>>,
    /// Worker threads running.
    live: usize,
    /// Whether the first worker has started the others.
    helpers: bool,
}

impl Plan {
    /// A plan for `entries` on a machine whose PCI devices have these `modalias` values
    /// (`None`: no PCI bus to ask, every driver may be needed).
    fn new(entries: Vec<ModuleEntry>, pci_devices: Option<&[String]>) -> Self {
        let class: Vec<Class> = entries.iter().map(|e| Class::of(&e.path)).collect();
        let n = entries.len();
        let index = |name: &str| entries.iter().position(|e| e.name == name);
        let deps: Vec<Vec<usize>> = entries
            .iter()
            .map(|e| e.depends.iter().filter_map(|d| index(d)).collect())
            .collect();
        let matches = |e: &ModuleEntry| {
            pci_devices
                .is_none_or(|devs| e.pci.iter().any(|p| devs.iter().any(|d| glob_match(p, d))))
        };
        // A driver with PCI patterns is relevant when one matches; one without is relevant,
        // unless it is a library other modules use (libata, scsi_mod, virtio_ring): then it is
        // relevant when one of its users is.
        let mut is_library = vec![false; n];
        for &d in deps.iter().flatten() {
            is_library[d] = true;
        }
        let mut relevant: Vec<bool> = entries
            .iter()
            .zip(&is_library)
            .map(|(e, &lib)| if e.pci.is_empty() { !lib } else { matches(e) })
            .collect();
        loop {
            let mut changed = false;
            for i in 0..n {
                for &d in &deps[i] {
                    if relevant[i] && !relevant[d] && entries[d].pci.is_empty() {
                        relevant[d] = true;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut plan = Self {
            deps,
            state: vec![State::Pending; n],
            rank: class.clone(),
            wanted: vec![false; n],
            relevant,
            loader_tid: vec![None; n],
            live: 0,
            helpers: false,
            class,
            entries,
        };
        // Propagate ranks to dependencies until nothing changes (the graph is small).
        loop {
            let mut changed = false;
            for i in 0..n {
                for &d in &plan.deps[i] {
                    if plan.rank[i] < plan.rank[d] {
                        plan.rank[d] = plan.rank[i];
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        plan
    }

    #[cfg(test)]
    fn index(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// Marks every module of `classes` that may drive a device here, and what they depend
    /// on, as wanted.
    fn want(&mut self, classes: &[Class]) {
        let mut stack: Vec<usize> = (0..self.entries.len())
            .filter(|&i| classes.contains(&self.class[i]) && self.relevant[i])
            .collect();
        while let Some(i) = stack.pop() {
            if !self.wanted[i] {
                self.wanted[i] = true;
                // Already loading in the background: somebody waits for it now.
                if let Some(tid) = self.loader_tid[i] {
                    let _ = crate::sys::set_background(tid, false);
                }
                stack.extend(&self.deps[i]);
            }
        }
    }

    /// Modules of `classes` a stage waits for that have not finished (loaded or failed) yet.
    fn unfinished(&self, classes: &[Class]) -> Vec<&str> {
        (0..self.entries.len())
            .filter(|&i| classes.contains(&self.class[i]))
            .filter(|&i| self.relevant[i] || self.wanted[i])
            .filter(|&i| matches!(self.state[i], State::Pending | State::Loading))
            .map(|i| self.entries[i].name.as_str())
            .collect()
    }

    /// The next module to load: wanted ones first, then by rank, then in list order. Pending
    /// modules with a failed dependency are marked failed on the way.
    fn next(&mut self) -> Option<usize> {
        loop {
            let mut changed = false;
            let mut best: Option<usize> = None;
            for i in 0..self.entries.len() {
                if self.state[i] != State::Pending {
                    continue;
                }
                let mut ready = true;
                for &d in &self.deps[i] {
                    match &self.state[d] {
                        State::Loaded => {}
                        State::Failed(_) => {
                            let why = format!("dependency {} failed", self.entries[d].name);
                            self.state[i] = State::Failed(why);
                            changed = true;
                            ready = false;
                            break;
                        }
                        State::Pending | State::Loading => ready = false,
                    }
                }
                let key = |j: usize| (!self.wanted[j], self.rank[j]);
                if ready && best.is_none_or(|b| key(i) < key(b)) {
                    best = Some(i);
                }
            }
            if let Some(i) = best {
                self.state[i] = State::Loading;
                return Some(i);
            }
            if !changed {
                return None;
            }
        }
    }

    /// Pending modules some stage waits for whose dependencies have all loaded.
    fn runnable_wanted(&self) -> usize {
        (0..self.entries.len())
            .filter(|&i| self.state[i] == State::Pending && self.wanted[i])
            .filter(|&i| self.deps[i].iter().all(|&d| self.state[d] == State::Loaded))
            .count()
    }

    fn busy(&self) -> bool {
        self.state.contains(&State::Loading)
    }

    /// Modules nothing here needs: drivers whose PCI patterns match no device, and the
    /// libraries only they use.
    fn without_device(&self) -> Vec<&str> {
        (0..self.entries.len())
            .filter(|&i| !self.relevant[i])
            .map(|i| self.entries[i].name.as_str())
            .collect()
    }
}

/// The background loader of this boot.
struct Loader {
    plan: Mutex<Plan>,
    wake: Condvar,
    start: Instant,
}

static LOADER: OnceLock<Loader> = OnceLock::new();

impl Loader {
    fn lock(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stage `modules`: starts loading every module of the image in the background and returns.
pub fn start(ctx: &Arc<Ctx>) -> StageResult {
    if ctx.image.modules.is_empty() {
        // Nothing to load (a lean kernel has every driver built in): module loading is
        // complete from the start, and the status document says so instead of "still loading".
        ctx.update(|s| s.modules_ms = Some(0.0));
        return StageResult::Skipped;
    }
    let aliases: Option<Vec<String>> =
        pci_devices().map(|d| d.iter().map(|d| d.modalias.clone()).collect());
    let loader = LOADER.get_or_init(|| Loader {
        plan: Mutex::new(Plan::new(ctx.image.modules.clone(), aliases.as_deref())),
        wake: Condvar::new(),
        start: Instant::now(),
    });
    let idle = loader.lock().without_device().join(", ");
    if !idle.is_empty() {
        tracing::info!("modules: no device here for {idle}; they load in the background only");
    }
    // The ready line always waits for the power button's driver.
    loader.lock().want(&[Class::Acpi]);
    // One worker now; it starts the others once only background work is left (a thread
    // costs a millisecond or more under emulation, better spent when the CPU is idle).
    if let Err(e) = spawn_worker(ctx, loader, 0) {
        ctx.error("modules", format!("cannot start the loader thread: {e}"));
        // Nothing will load in the background: do it here, before anything needs it.
        loader.lock().live += 1;
        worker(ctx, loader, 0);
        return StageResult::Failed;
    }
    StageResult::Ok
}

fn spawn_worker(ctx: &Arc<Ctx>, loader: &'static Loader, n: usize) -> std::io::Result<()> {
    loader.lock().live += 1;
    let c = Arc::clone(ctx);
    std::thread::Builder::new()
        .name(format!("modules-{n}"))
        .spawn(move || worker(&c, loader, n))
        .map(drop)
        .inspect_err(|_| loader.lock().live -= 1)
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

/// A device on the PCI bus.
#[derive(Debug, Clone)]
struct PciDevice {
    /// Base class (`0x01` storage, `0x02` network).
    class: u8,
    /// Its `modalias` (`pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00`).
    modalias: String,
}

/// The devices on the PCI bus, read once per boot (the kernel enumerated the bus before PID 1
/// started); `None` when there is no PCI bus to ask.
fn pci_devices() -> Option<&'static [PciDevice]> {
    static DEVICES: OnceLock<Option<Vec<PciDevice>>> = OnceLock::new();
    DEVICES
        .get_or_init(|| {
            let entries = std::fs::read_dir("/sys/bus/pci/devices").ok()?;
            let devices: Vec<PciDevice> = entries
                .flatten()
                .filter_map(|e| {
                    let read = |f: &str| std::fs::read_to_string(e.path().join(f)).ok();
                    Some(PciDevice {
                        class: pci_base_class(&read("class")?)?,
                        modalias: read("modalias").unwrap_or_default().trim().to_owned(),
                    })
                })
                .collect();
            (!devices.is_empty()).then_some(devices)
        })
        .as_deref()
}

/// Whether the PCI bus has a device of `base_class` (`0x01` storage, `0x02` network). When
/// there is no PCI bus to ask (another platform), the answer is `true`: wait to be safe.
pub fn pci_class_present(base_class: u8) -> bool {
    pci_devices().is_none_or(|d| d.iter().any(|d| d.class == base_class))
}

/// Matches a module alias pattern against a device's `modalias`, as the kernel's tools do
/// (`fnmatch`): `*` any run of characters, `?` one character, `[…]` a set (`!` or `^`
/// negates, `a-z` ranges). Iterative, so every pattern is matched in linear-ish time.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index it matched to).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => match_set(p, pi, t[ti]),
            Some(&c) if c == t[ti] => Some(pi + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ti += 1;
            }
            (None, Some((sp, st))) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// Matches byte `c` against the set starting at `p[open] == b'['`; returns the index after the
/// set when it matches. An unclosed set matches nothing.
fn match_set(p: &[u8], open: usize, c: u8) -> Option<usize> {
    let mut i = open + 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let &lo = p.get(i)?;
        if lo == b']' && !first {
            break;
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = p[i + 2];
            hit |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
    (hit != negate).then_some(i + 1)
}

/// The base class byte of a sysfs PCI `class` value (`0x020000` → `0x02`).
fn pci_base_class(text: &str) -> Option<u8> {
    let v = u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()?;
    u8::try_from(v >> 16).ok()
}

/// Loads modules until none is left; the last worker to stop records the outcome.
fn worker(ctx: &Arc<Ctx>, loader: &'static Loader, n: usize) {
    let tid = crate::sys::thread_id();
    loop {
        let (i, entry, helpers) = {
            let mut p = loader.lock();
            loop {
                if let Some(i) = p.next() {
                    // What nobody waits for yet loads only when the CPU has nothing else to
                    // do: on one vCPU it would otherwise slow every boot stage down.
                    let background = !p.wanted[i];
                    let _ = crate::sys::set_background(tid, background);
                    p.loader_tid[i] = Some(tid);
                    // Helpers when the rest is background work, or when another module a
                    // stage waits for could load now too (probes sleep: they overlap).
                    let helpers = n == 0
                        && (background || p.runnable_wanted() > 0)
                        && !std::mem::replace(&mut p.helpers, true);
                    break (i, p.entries[i].clone(), helpers);
                }
                if !p.busy() {
                    loader.wake.notify_all();
                    p.live -= 1;
                    let last = p.live == 0;
                    drop(p);
                    if last {
                        finish(ctx, loader);
                    }
                    return;
                }
                p = loader.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
        };
        if helpers {
            // Independent probes overlap (an IDE reset sleeps); these inherit SCHED_IDLE.
            for h in 1..WORKERS {
                if let Err(e) = spawn_worker(ctx, loader, h) {
                    tracing::warn!("modules: cannot start loader thread {h}: {e}");
                    break;
                }
            }
        }
        let t = Instant::now();
        let result = load_one(&entry.path);
        tracing::debug!(
            "module {} {} in {:.1} ms",
            entry.name,
            if result.is_ok() { "loaded" } else { "failed" },
            t.elapsed().as_secs_f64() * 1e3
        );
        {
            let mut p = loader.lock();
            p.loader_tid[i] = None;
            p.state[i] = match result {
                Ok(()) => State::Loaded,
                Err(e) => State::Failed(e),
            };
        }
        loader.wake.notify_all();
    }
}

/// Records the outcome once every module has finished; rewrites the status document when the
/// ready line has already been printed.
fn finish(ctx: &Ctx, loader: &Loader) {
    let ms = loader.start.elapsed().as_secs_f64() * 1e3;
    let (loaded, failed, total) = {
        let p = loader.lock();
        let mut loaded = Vec::new();
        let mut failed = Vec::new();
        for (e, st) in p.entries.iter().zip(&p.state) {
            match st {
                State::Loaded => loaded.push(e.name.clone()),
                State::Failed(why) => failed.push(format!("{}: {why}", e.name)),
                State::Pending | State::Loading => {
                    failed.push(format!("{}: never loaded (dependency cycle?)", e.name))
                }
            }
        }
        (loaded, failed, p.entries.len())
    };
    for f in failed {
        ctx.error("modules", f);
    }
    tracing::info!("loaded {} of {total} modules in {ms:.0} ms", loaded.len());
    ctx.update(|s| {
        s.modules_loaded = loaded;
        s.modules_ms = Some(ms);
    });
    if ctx.status().ready {
        super::report::write_status(ctx);
    }
}

fn load_one(path: &str) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    match finit_module(&f, c"", ModuleInitFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.desc().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(entries: Vec<ModuleEntry>) -> Plan {
        Plan::new(entries, None)
    }

    fn entry(name: &str, deps: &[&str]) -> ModuleEntry {
        entry_at(name, &format!("/{name}.ko"), deps)
    }

    fn entry_at(name: &str, path: &str, deps: &[&str]) -> ModuleEntry {
        ModuleEntry {
            name: name.into(),
            path: path.into(),
            depends: deps.iter().map(|d| d.to_string()).collect(),
            pci: Vec::new(),
        }
    }

    const K: &str = "/lib/modules/6.1.0-1-cloud-amd64/kernel";

    #[test]
    fn independent_modules_are_ready_together() {
        let mut p = plan(vec![
            entry("a", &[]),
            entry("b", &[]),
            entry("c", &["a", "b"]),
        ]);
        assert_eq!(p.next(), Some(0));
        assert_eq!(p.next(), Some(1));
        assert_eq!(p.next(), None, "c waits for a and b");
        assert!(p.busy());
        p.state[0] = State::Loaded;
        assert_eq!(p.next(), None);
        p.state[1] = State::Loaded;
        assert_eq!(p.next(), Some(2));
    }

    #[test]
    fn failure_propagates_to_dependents() {
        let mut p = plan(vec![
            entry("a", &[]),
            entry("b", &["a"]),
            entry("c", &["b"]),
        ]);
        assert_eq!(p.next(), Some(0));
        p.state[0] = State::Failed("boom".into());
        assert_eq!(p.next(), None);
        assert_eq!(p.state[1], State::Failed("dependency a failed".into()));
        assert_eq!(p.state[2], State::Failed("dependency b failed".into()));
        assert!(!p.busy());
    }

    #[test]
    fn unknown_dependencies_are_treated_as_present() {
        let mut p = plan(vec![entry("a", &["builtin_thing"])]);
        assert_eq!(p.next(), Some(0));
    }

    #[test]
    fn classes_come_from_the_kernel_tree() {
        for (path, class) in [
            ("drivers/net/virtio_net.ko", Class::Net),
            ("net/core/failover.ko", Class::Net),
            ("drivers/ata/ata_piix.ko", Class::Storage),
            ("drivers/scsi/sr_mod.ko", Class::Storage),
            ("drivers/block/virtio_blk.ko", Class::Storage),
            ("drivers/cdrom/cdrom.ko", Class::Storage),
            ("drivers/input/evdev.ko", Class::Input),
            ("drivers/acpi/button.ko", Class::Acpi),
            ("drivers/char/hw_random/virtio-rng.ko", Class::Rng),
            ("drivers/virtio/virtio_pci.ko", Class::Bus),
            ("fs/isofs/isofs.ko", Class::Fs),
            ("drivers/char/virtio_console.ko", Class::Other),
        ] {
            assert_eq!(Class::of(&format!("{K}/{path}")), class, "{path}");
        }
        assert_eq!(Class::of("/x.ko"), Class::Other);
    }

    /// The default image's shape: the power button first, storage and network drivers before
    /// filesystems, and the libraries under them as urgent as their users.
    fn default_like() -> Plan {
        plan(vec![
            entry_at("isofs", &format!("{K}/fs/isofs/isofs.ko"), &[]),
            entry_at("scsi_mod", &format!("{K}/drivers/scsi/scsi_mod.ko"), &[]),
            entry_at(
                "libata",
                &format!("{K}/drivers/ata/libata.ko"),
                &["scsi_mod"],
            ),
            entry_at(
                "ata_piix",
                &format!("{K}/drivers/ata/ata_piix.ko"),
                &["libata"],
            ),
            entry_at("virtio", &format!("{K}/drivers/virtio/virtio.ko"), &[]),
            entry_at(
                "virtio_net",
                &format!("{K}/drivers/net/virtio_net.ko"),
                &["virtio"],
            ),
            entry_at("button", &format!("{K}/drivers/acpi/button.ko"), &[]),
        ])
    }

    #[test]
    fn urgent_classes_and_their_dependencies_go_first() {
        let mut p = default_like();
        let name = |p: &Plan, i: Option<usize>| i.map(|i| p.entries[i].name.clone());
        // button (input), then virtio: a dependency of virtio_net ranks as network.
        let first = p.next();
        assert_eq!(name(&p, first).as_deref(), Some("button"));
        let second = p.next();
        assert_eq!(name(&p, second).as_deref(), Some("virtio"));
        let third = p.next();
        assert_eq!(name(&p, third).as_deref(), Some("scsi_mod"));
        let fourth = p.next();
        assert_eq!(name(&p, fourth).as_deref(), Some("isofs"));
    }

    #[test]
    fn waiting_promotes_a_class_and_its_dependencies() {
        let mut p = default_like();
        p.want(&[Class::Fs]);
        assert_eq!(
            p.next().map(|i| p.entries[i].name.clone()).as_deref(),
            Some("isofs")
        );
        let mut p = default_like();
        p.want(&[Class::Storage]);
        assert!(p.wanted[p.index("scsi_mod").unwrap()]);
        assert!(!p.wanted[p.index("virtio").unwrap()]);
        assert_eq!(
            p.unfinished(&[Class::Storage]),
            ["scsi_mod", "libata", "ata_piix"]
        );
        assert_eq!(
            p.next().map(|i| p.entries[i].name.clone()).as_deref(),
            Some("scsi_mod")
        );
        assert!(p.unfinished(&[Class::Acpi]) == ["button"]);
    }

    #[test]
    fn pci_base_classes() {
        assert_eq!(pci_base_class("0x020000\n"), Some(0x02));
        assert_eq!(pci_base_class("0x010180"), Some(0x01));
        assert_eq!(pci_base_class("0x00ff00"), Some(0x00));
        assert_eq!(pci_base_class("junk"), None);
        assert_eq!(pci_base_class(""), None);
    }

    /// Real modalias values (QEMU's i440fx + PIIX IDE, and q35's AHCI) and real patterns from
    /// Debian's 6.1 cloud kernel.
    const PIIX_IDE: &str = "pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80";
    const Q35_AHCI: &str = "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01";
    const VIRTIO_NET: &str = "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00";

    #[test]
    fn glob_matches_like_fnmatch() {
        assert!(glob_match("pci:v00008086d00007010sv*sd*bc*sc*i*", PIIX_IDE));
        assert!(!glob_match(
            "pci:v00008086d00007010sv*sd*bc*sc*i*",
            Q35_AHCI
        ));
        assert!(glob_match("pci:v*d*sv*sd*bc01sc06i01*", Q35_AHCI));
        assert!(!glob_match("pci:v*d*sv*sd*bc01sc06i01*", PIIX_IDE));
        assert!(glob_match("pci:v00001AF4d*sv*sd*bc*sc*i*", VIRTIO_NET));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("a[0-9]c", "a5c"));
        assert!(!glob_match("a[!0-9]c", "a5c"));
        assert!(glob_match("a[]]c", "a]c"));
        assert!(
            !glob_match("a[0-9", "a5"),
            "an unclosed set matches nothing"
        );
        assert!(glob_match("*", ""));
        assert!(glob_match("**a**", "xxaxx"));
        assert!(!glob_match("", "x"));
        assert!(!glob_match("abc", "abcd"));
    }

    proptest::proptest! {
        #[test]
        fn glob_is_total_and_literal_patterns_match_only_themselves(
            p in "[a-c*?\\[\\]!^-]{0,12}",
            t in "[a-c]{0,12}",
        ) {
            let _ = glob_match(&p, &t);
            proptest::prop_assert!(glob_match("*", &t));
            proptest::prop_assert!(glob_match(&t, &t));
            let (star_t, xy_t) = (format!("*{t}"), format!("xy{t}"));
            proptest::prop_assert!(glob_match(&star_t, &xy_t));
        }
    }

    #[test]
    fn stages_wait_only_for_drivers_of_devices_that_are_here() {
        let with_pci = |name: &str, path: &str, deps: &[&str], pci: &[&str]| ModuleEntry {
            pci: pci.iter().map(|p| p.to_string()).collect(),
            ..entry_at(name, &format!("{K}/{path}"), deps)
        };
        let entries = vec![
            with_pci("scsi_mod", "drivers/scsi/scsi_mod.ko", &[], &[]),
            with_pci("libata", "drivers/ata/libata.ko", &["scsi_mod"], &[]),
            with_pci(
                "ata_piix",
                "drivers/ata/ata_piix.ko",
                &["libata"],
                &["pci:v00008086d00007010sv*sd*bc*sc*i*"],
            ),
            with_pci(
                "ahci",
                "drivers/ata/ahci.ko",
                &["libata"],
                &["pci:v*d*sv*sd*bc01sc06i01*"],
            ),
            with_pci(
                "ena",
                "drivers/net/ethernet/amazon/ena/ena.ko",
                &[],
                &["pci:v00001D0Fd0000EC20sv*sd*bc*sc*i*"],
            ),
            with_pci("virtio_blk", "drivers/block/virtio_blk.ko", &[], &[]),
        ];
        // i440fx: the PIIX IDE controller is there, AHCI and ENA are not.
        let devs = [PIIX_IDE.to_owned(), VIRTIO_NET.to_owned()];
        let mut p = Plan::new(entries.clone(), Some(&devs));
        assert_eq!(p.without_device(), ["ahci", "ena"]);
        p.want(&[Class::Storage, Class::Net]);
        assert_eq!(
            p.unfinished(&[Class::Storage, Class::Net]),
            ["scsi_mod", "libata", "ata_piix", "virtio_blk"]
        );
        assert!(!p.wanted[p.index("ahci").unwrap()]);
        // q35: AHCI instead; a dependency of a waited-for driver is waited for too.
        let devs = [Q35_AHCI.to_owned()];
        let mut p = Plan::new(entries.clone(), Some(&devs));
        p.want(&[Class::Storage]);
        assert_eq!(
            p.unfinished(&[Class::Storage]),
            ["scsi_mod", "libata", "ahci", "virtio_blk"]
        );
        // Neither IDE nor AHCI: the ATA library is not waited for either.
        let devs = [VIRTIO_NET.to_owned()];
        let mut p = Plan::new(entries.clone(), Some(&devs));
        assert_eq!(
            p.without_device(),
            ["scsi_mod", "libata", "ata_piix", "ahci", "ena"]
        );
        p.want(&[Class::Storage]);
        assert_eq!(p.unfinished(&[Class::Storage]), ["virtio_blk"]);
        // No PCI bus to ask: every driver may be needed.
        let p = Plan::new(entries, None);
        assert!(p.without_device().is_empty());
    }
}
