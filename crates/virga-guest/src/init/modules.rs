//! Loads the kernel modules the image builder chose (`finit_module`).
//!
//! Most of the time goes into the drivers' device probes inside the kernel (an IDE bus reset,
//! virtio device set-up), not into loading. Modules whose dependencies are loaded are therefore
//! loaded concurrently by a few worker threads, so independent probes overlap; a module is
//! started only after all of its dependencies have loaded.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use boot_contract::{ModuleEntry, StageResult};
use nix::kmod::{ModuleInitFlags, finit_module};

use super::Ctx;

/// Worker threads loading modules.
const WORKERS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Pending,
    Loading,
    Loaded,
    Failed(String),
}

/// Which module can be loaded next, given what has loaded so far.
#[derive(Debug)]
struct Plan {
    entries: Vec<ModuleEntry>,
    state: Vec<State>,
}

impl Plan {
    fn new(entries: Vec<ModuleEntry>) -> Self {
        let state = vec![State::Pending; entries.len()];
        Self { entries, state }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// The next pending module whose dependencies have all loaded. Pending modules with a
    /// failed dependency are marked failed on the way.
    fn next(&mut self) -> Option<usize> {
        loop {
            let mut changed = false;
            for i in 0..self.entries.len() {
                if self.state[i] != State::Pending {
                    continue;
                }
                let mut ready = true;
                for d in &self.entries[i].depends {
                    // Dependencies not in the list are built in or already loaded.
                    let Some(j) = self.index(d) else { continue };
                    match &self.state[j] {
                        State::Loaded => {}
                        State::Failed(_) => {
                            self.state[i] = State::Failed(format!("dependency {d} failed"));
                            changed = true;
                            ready = false;
                            break;
                        }
                        State::Pending | State::Loading => ready = false,
                    }
                }
                if ready && self.state[i] == State::Pending {
                    self.state[i] = State::Loading;
                    return Some(i);
                }
            }
            if !changed {
                return None;
            }
        }
    }

    fn busy(&self) -> bool {
        self.state.contains(&State::Loading)
    }
}

/// Loads every module of the image config. A module that fails is recorded and the rest are
/// still tried; `EEXIST` (already loaded or built in) counts as loaded.
pub fn load(ctx: &Ctx) -> anyhow::Result<StageResult> {
    if ctx.image.modules.is_empty() {
        return Ok(StageResult::Skipped);
    }
    let plan = Mutex::new(Plan::new(ctx.image.modules.clone()));
    let wake = Condvar::new();
    std::thread::scope(|s| {
        for _ in 0..WORKERS.min(ctx.image.modules.len()) {
            s.spawn(|| worker(&plan, &wake));
        }
    });
    let plan = plan.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut loaded = Vec::new();
    let mut failed = 0;
    for (e, st) in plan.entries.iter().zip(&plan.state) {
        match st {
            State::Loaded => loaded.push(e.name.clone()),
            State::Failed(why) => {
                failed += 1;
                ctx.error("modules", format!("{}: {why}", e.name));
            }
            State::Pending | State::Loading => {
                failed += 1;
                ctx.error(
                    "modules",
                    format!("{}: never loaded (dependency cycle?)", e.name),
                );
            }
        }
    }
    tracing::info!("loaded {} of {} modules", loaded.len(), plan.entries.len());
    ctx.update(|s| s.modules_loaded = loaded);
    if failed > 0 {
        anyhow::bail!("{failed} module(s) failed to load");
    }
    Ok(StageResult::Ok)
}

fn worker(plan: &Mutex<Plan>, wake: &Condvar) {
    let lock = || plan.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let (i, entry) = {
            let mut p = lock();
            loop {
                if let Some(i) = p.next() {
                    break (i, p.entries[i].clone());
                }
                if !p.busy() {
                    wake.notify_all();
                    return;
                }
                p = wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
        };
        let t = Instant::now();
        let result = load_one(&entry.path);
        tracing::debug!(
            "module {} {} in {:.1} ms",
            entry.name,
            if result.is_ok() { "loaded" } else { "failed" },
            t.elapsed().as_secs_f64() * 1e3
        );
        lock().state[i] = match result {
            Ok(()) => State::Loaded,
            Err(e) => State::Failed(e),
        };
        wake.notify_all();
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

    fn entry(name: &str, deps: &[&str]) -> ModuleEntry {
        ModuleEntry {
            name: name.into(),
            path: format!("/{name}.ko"),
            depends: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn independent_modules_are_ready_together() {
        let mut p = Plan::new(vec![
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
        let mut p = Plan::new(vec![
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
        let mut p = Plan::new(vec![entry("a", &["builtin_thing"])]);
        assert_eq!(p.next(), Some(0));
    }
}
