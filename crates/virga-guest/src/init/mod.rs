//! PID 1: the boot sequence (`docs/boot-sequence.md`).
//!
//! Stages run in a fixed order, each timed; a stage that fails or overruns its deadline is
//! recorded and boot goes on. PID 1 never exits: after the ready line it supervises services
//! and waits for a shutdown request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boot_contract::cmdline::{self, Cmdline};
use boot_contract::{
    CONTRACT_VERSION, IMAGE_CONFIG_PATH, ImageConfig, Problem, StageResult, StageTiming, Status,
};

use crate::log::uptime;

mod early;
pub mod hostname;
pub mod modules;
mod net;
pub mod network;
mod power_button;
mod report;
mod rng;
pub mod shutdown;
#[cfg(feature = "ssh")]
pub mod ssh;
mod supervisor;

/// Shared boot state: configuration in, status out.
#[derive(Debug)]
pub struct Ctx {
    /// The kernel command line.
    pub cmdline: String,
    /// What the image builder told us.
    pub image: ImageConfig,
    status: Mutex<Status>,
    cloud: Mutex<crate::cloud::CloudState>,
}

impl Ctx {
    /// The parsed kernel command line.
    pub fn cmd(&self) -> Cmdline<'_> {
        Cmdline::parse(&self.cmdline)
    }

    /// Records and logs a warning.
    pub fn warn(&self, source: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!("{source}: {message}");
        self.update(|s| {
            s.warnings.push(Problem {
                source: source.into(),
                message,
            })
        });
    }

    /// Records and logs an error; boot goes on.
    pub fn error(&self, source: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::error!("{source}: {message}");
        self.update(|s| {
            s.errors.push(Problem {
                source: source.into(),
                message,
            })
        });
    }

    /// Changes the status document.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut guard = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
    }

    /// A context for applets run after boot: the image config and command line as PID 1 saw
    /// them, the status document as PID 1 wrote it, and the metadata saved at boot.
    pub fn standalone() -> Self {
        let image = std::fs::read_to_string(IMAGE_CONFIG_PATH)
            .ok()
            .and_then(|t| serde_json::from_str::<ImageConfig>(&t).ok())
            .unwrap_or_else(|| ImageConfig {
                hostname: "virga".into(),
                ..ImageConfig::default()
            });
        let status = std::fs::read_to_string(boot_contract::console::STATUS_PATH)
            .ok()
            .and_then(|t| serde_json::from_str::<Status>(&t).ok())
            .unwrap_or_default();
        let cloud = crate::cloud::CloudState {
            md: crate::cloud::saved_metadata().ok(),
            ..Default::default()
        };
        Ctx {
            cmdline: std::fs::read_to_string("/proc/cmdline")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            image,
            status: Mutex::new(status),
            cloud: Mutex::new(cloud),
        }
    }

    /// The cloud stages' shared state.
    pub fn cloud(&self) -> std::sync::MutexGuard<'_, crate::cloud::CloudState> {
        self.cloud.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the status document.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A boot stage: does its work, returns whether it did anything; errors are recorded.
type StageFn = fn(&Ctx) -> anyhow::Result<StageResult>;

/// Default ceiling for one stage (`virga.stage_timeout=` overrides).
const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// PID 1 entry point.
pub fn main() -> ! {
    let boot_start = uptime();
    let t0 = Instant::now();
    supervisor::block_signals();

    // Stages that must run before anything else exists: no threads, no logging yet.
    let mut early_stages = Vec::new();
    let t = Instant::now();
    let mount_errors = early::mount_all();
    early_stages.push(timing("mounts", t, mount_errors.is_empty()));
    let t = Instant::now();
    let console_ok = early::console();
    let cmdline_text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let level = Cmdline::parse(&cmdline_text)
        .get(cmdline::LOG)
        .and_then(crate::log::parse_level)
        .unwrap_or(tracing::Level::INFO);
    crate::log::init(level);
    early_stages.push(timing("console", t, console_ok));
    tracing::info!(
        "virga {} starting as PID 1 ({:.3}s after kernel start)",
        env!("CARGO_PKG_VERSION"),
        boot_start
    );

    let (image, image_error) = match std::fs::read_to_string(IMAGE_CONFIG_PATH)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<ImageConfig>(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => (c, None),
        Err(e) => (
            ImageConfig {
                hostname: "virga".into(),
                ..ImageConfig::default()
            },
            Some(format!("{IMAGE_CONFIG_PATH}: {e}; using defaults")),
        ),
    };
    let ctx = Arc::new(Ctx {
        cmdline: cmdline_text.trim().to_owned(),
        image,
        status: Mutex::new(Status {
            contract: CONTRACT_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            kernel_ms: boot_start * 1000.0,
            stages: early_stages,
            ..Status::default()
        }),
        cloud: Mutex::new(crate::cloud::CloudState::default()),
    });
    for e in mount_errors {
        ctx.error("mounts", e);
    }
    if !console_ok {
        ctx.warn("console", "no usable /dev/console; output may be lost");
    }
    if let Some(e) = image_error {
        ctx.error("image", e);
    }

    let timeout = ctx
        .cmd()
        .get(cmdline::STAGE_TIMEOUT)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_STAGE_TIMEOUT);
    // Modules load in the background; the stages below wait for the drivers they need.
    let t = Instant::now();
    let modules = modules::start(&ctx);
    modules::prefetch(&crate::cloud::drivers_needed(&ctx));
    record(&ctx, "modules", t, modules);

    // (name, function, deadline multiplier: stages that wait on networks or run user scripts
    // get longer than the default).
    let stages: &[(&str, StageFn, u32)] = &[
        ("loopback", net::loopback, 1),
        ("hostname", hostname::set, 1),
        ("state", crate::cloud::stage_state, 1),
        // After `state`: the seed saved at the previous boot lives on the state disk.
        ("rng", rng::seed, 1),
        ("datasource-local", crate::cloud::stage_local, 1),
        ("network", network::stage, 4),
        ("datasource-net", crate::cloud::stage_network, 4),
        ("apply", crate::cloud::apply::stage_apply, 1),
        ("user-data-early", crate::cloud::userdata::stage_early, 20),
        #[cfg(feature = "ssh")]
        ("ssh", ssh::stage, 4),
        ("user-data", crate::cloud::userdata::stage_late, 20),
    ];
    let mut runner = StageRunner { jobs: None };
    for (name, f, mult) in stages {
        runner.run(&ctx, name, *f, timeout * *mult);
    }
    drop(runner);
    // Services start before the ready line, and the SSH server must accept connections by then:
    // "ready" means a client can log in. The power button is how clouds and `virga run` stop
    // a VM: its driver must be in place before the ready line invites them to.
    let t = Instant::now();
    power_button::watch(&ctx, timeout);
    let services = supervisor::start(&ctx);
    #[cfg(feature = "ssh")]
    if ssh::enabled(&ctx) && !ssh::wait_listening(Duration::from_secs(5)) {
        ctx.warn("ssh", "the SSH server is not accepting connections yet");
    }
    record(&ctx, "services", t, StageResult::Ok);

    let t = Instant::now();
    report::print_status_block(&ctx);
    record(&ctx, "report", t, StageResult::Ok);

    let init_ms = t0.elapsed().as_secs_f64() * 1000.0;
    ctx.update(|s| {
        s.init_ms = init_ms;
        s.ready = true;
    });
    report::ready(&ctx, init_ms);

    supervisor::supervise(ctx, services)
}

/// What PID 1 does if its boot sequence panicked past every guard: report it, then supervise
/// with the configuration on disk, so that shutdown, services and reaping still work.
pub fn degraded() -> ! {
    eprintln!("virga: PID 1 internal error during boot; continuing in degraded mode");
    let ctx = Ctx::standalone();
    ctx.error("init", "boot sequence panicked; degraded mode");
    supervisor::run(Arc::new(ctx))
}

/// Schedules a power-state change (cloud-config `power_state`) after `delay`.
pub fn schedule_power(action: shutdown::Action, delay: Duration, message: Option<String>) {
    let _ = std::thread::Builder::new()
        .name("power-state".into())
        .spawn(move || {
            std::thread::sleep(delay);
            if let Some(m) = message {
                println!("{m}");
            }
            let sig = match action {
                shutdown::Action::Poweroff => nix::sys::signal::Signal::SIGUSR2,
                shutdown::Action::Reboot => nix::sys::signal::Signal::SIGTERM,
                shutdown::Action::Halt => nix::sys::signal::Signal::SIGUSR1,
            };
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), sig);
        });
}

fn timing(name: &str, start: Instant, ok: bool) -> StageTiming {
    StageTiming {
        name: name.into(),
        ms: start.elapsed().as_secs_f64() * 1000.0,
        result: if ok {
            StageResult::Ok
        } else {
            StageResult::Failed
        },
    }
}

/// A stage's outcome as its thread reports it: `Err` when it panicked.
type StageOutcome = std::thread::Result<anyhow::Result<StageResult>>;

/// One stage for the stage thread: what to run, and where to send the outcome.
struct StageJob {
    f: StageFn,
    ctx: Arc<Ctx>,
    done: std::sync::mpsc::Sender<StageOutcome>,
}

/// The thread the stages run on, one after another. It is reused from stage to stage (a new
/// thread per stage costs a millisecond or more under emulation) and replaced when a stage
/// overruns its deadline, which leaves that stage running on the old thread.
struct StageRunner {
    jobs: Option<std::sync::mpsc::Sender<StageJob>>,
}

impl StageRunner {
    fn job_sender(&mut self) -> std::io::Result<std::sync::mpsc::Sender<StageJob>> {
        if let Some(tx) = &self.jobs {
            return Ok(tx.clone());
        }
        let (tx, rx) = std::sync::mpsc::channel::<StageJob>();
        std::thread::Builder::new()
            .name("stages".into())
            .spawn(move || {
                for job in rx {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        (job.f)(&job.ctx)
                    }));
                    let _ = job.done.send(r);
                }
            })?;
        self.jobs = Some(tx.clone());
        Ok(tx)
    }

    /// Runs one stage with a deadline. A stage that panics, fails or overruns is recorded as
    /// failed; an overrunning stage keeps running in the background.
    fn run(&mut self, ctx: &Arc<Ctx>, name: &'static str, f: StageFn, timeout: Duration) {
        let start = Instant::now();
        let (done, outcome) = std::sync::mpsc::channel();
        let sent = self.job_sender().and_then(|tx| {
            let job = StageJob {
                f,
                ctx: Arc::clone(ctx),
                done,
            };
            tx.send(job)
                .map_err(|_| std::io::Error::other("the stage thread is gone"))
        });
        let result = match sent {
            Err(e) => {
                self.jobs = None;
                ctx.error(name, format!("cannot start stage thread: {e}"));
                StageResult::Failed
            }
            Ok(()) => match outcome.recv_timeout(timeout) {
                Ok(Ok(Ok(r))) => r,
                Ok(Ok(Err(e))) => {
                    ctx.error(name, format!("{e:#}"));
                    StageResult::Failed
                }
                Ok(Err(_)) => {
                    ctx.error(name, "stage panicked; continuing");
                    StageResult::Failed
                }
                Err(_) => {
                    // The thread is still busy with this stage: the next one gets a new thread.
                    self.jobs = None;
                    ctx.error(
                        name,
                        format!("did not finish within {}s; continuing", timeout.as_secs()),
                    );
                    StageResult::Failed
                }
            },
        };
        record(ctx, name, start, result);
    }
}

fn record(ctx: &Ctx, name: &str, start: Instant, result: StageResult) {
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    tracing::debug!("stage {name}: {result:?} in {ms:.1} ms");
    ctx.update(|s| {
        s.stages.push(StageTiming {
            name: name.into(),
            ms,
            result,
        })
    });
}
