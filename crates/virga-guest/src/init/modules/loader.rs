//! The background loader: worker threads that `finit_module` what the plan hands them.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use boot_contract::StageResult;
use nix::kmod::{ModuleInitFlags, finit_module};

use super::pci::pci_devices;
use super::plan::{Plan, State};
use super::{Class, WORKERS};
use crate::ctx::Ctx;

/// The background loader of this boot.
pub(super) struct Loader {
    plan: Mutex<Plan>,
    pub(super) wake: Condvar,
    start: Instant,
}

pub(super) static LOADER: OnceLock<Loader> = OnceLock::new();

impl Loader {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Plan> {
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
                if !p.busy() && !p.held() {
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
                Err(e) => State::Failed(e.to_string()),
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
        ctx.write_status();
    }
}

/// Why a module did not load.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    /// The `.ko` file is missing or unreadable.
    #[error("{path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused it.
    #[error("{}", .0.desc())]
    Init(nix::errno::Errno),
}

fn load_one(path: &str) -> Result<(), LoadError> {
    let f = std::fs::File::open(path).map_err(|source| LoadError::Open {
        path: path.to_owned(),
        source,
    })?;
    match finit_module(&f, c"", ModuleInitFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(LoadError::Init(e)),
    }
}
