//! PID 1: the boot sequence (`docs/boot-sequence.md`).
//!
//! Stages run in a fixed order, each timed; a stage that fails or overruns its deadline is
//! recorded and boot goes on. PID 1 never exits: after the ready line it supervises services
//! and waits for a shutdown request. This is the orchestrator: it depends on the stages, which
//! depend only on the context (`ctx`) and the modules below it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use boot_contract::{CONTRACT_VERSION, StageResult, StageTiming, Status};

use crate::ctx::Ctx;
use crate::init::{early, hostname, modules, net, network, power_button, report, rng, supervisor};
use crate::log::uptime;

/// A boot stage: does its work, returns whether it did anything; errors are recorded.
/// The second argument is the stage's deadline: what it starts (scripts) must end by then.
type StageFn = fn(&Ctx, Instant) -> anyhow::Result<StageResult>;

/// PID 1 entry point.
pub fn main() -> ! {
    let boot_start = uptime();
    let t0 = Instant::now();
    supervisor::block_signals();

    // Stages that must run before anything else exists: no threads, no logging yet.
    let mut early_stages = Vec::new();
    let t = Instant::now();
    let mut mount_errors = early::mount_all();
    mount_errors.extend(early::protect_links());
    early_stages.push(timing("mounts", t, mount_errors.is_empty()));
    let t = Instant::now();
    let console_ok = early::console();
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let (image, image_error) = crate::ctx::read_image_config();
    let ctx = Arc::new(Ctx::new(
        cmdline,
        image,
        Status {
            contract: CONTRACT_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            kernel_ms: boot_start * 1000.0,
            ..Status::default()
        },
    ));
    crate::log::init(crate::log::level(ctx.params.log));
    early_stages.push(timing("console", t, console_ok));
    ctx.update(|s| s.stages = early_stages);
    tracing::info!(
        "virga {} starting as PID 1 ({:.3}s after kernel start)",
        env!("CARGO_PKG_VERSION"),
        boot_start
    );
    for e in mount_errors {
        ctx.error("mounts", e);
    }
    if !console_ok {
        ctx.warn("console", "no usable /dev/console; output may be lost");
    }
    if let Some(e) = image_error {
        ctx.error("image", e);
    }
    for p in ctx.params.problems.clone() {
        ctx.warn("cmdline", p);
    }

    let timeout = ctx.params.stage_timeout();
    // Modules load in the background; the stages below wait for the drivers they need.
    let t = Instant::now();
    let modules = modules::start(&ctx);
    modules::prefetch(&crate::cloud::drivers_needed(&ctx));
    record(&ctx, "modules", t, modules);

    // (name, function, deadline multiplier: stages that wait on networks or run user scripts
    // get longer than the default).
    let stages: &[(&str, StageFn, u32)] = &[
        ("loopback", net::loopback, 1),
        ("hostname", hostname::stage, 1),
        // The verified system of a disk image's slot on /usr: BusyBox (mke2fs for a blank
        // state partition) and the modules not needed to mount it live there.
        ("system", crate::init::system::stage, 1),
        ("state", crate::cloud::stage_state, 1),
        // After `state`: the seed saved at the previous boot lives on the state disk.
        ("rng", rng::seed, 1),
        ("datasource-local", crate::cloud::stage_local, 1),
        ("network", network::stage, 4),
        ("datasource-net", crate::cloud::stage_network, 4),
        ("apply", crate::cloud::apply::stage_apply, 1),
        ("user-data-early", crate::cloud::userdata::stage_early, 20),
        #[cfg(feature = "ssh")]
        ("ssh", crate::init::ssh::stage, 4),
        ("user-data", crate::cloud::userdata::stage_late, 20),
    ];
    let mut runner = StageRunner { jobs: None };
    for (name, f, mult) in stages {
        runner.run(&ctx, name, *f, timeout.saturating_mul(*mult));
    }
    drop(runner);
    // Services start before the ready line, and the SSH server must accept connections by then:
    // "ready" means a client can log in. The power button is how clouds and `virga run` stop
    // a VM: its driver must be in place before the ready line invites them to.
    let t = Instant::now();
    power_button::watch(&ctx, timeout);
    supervisor::start(&ctx);
    #[cfg(feature = "ssh")]
    if crate::init::ssh::enabled(&ctx) && !crate::init::ssh::wait_listening(Duration::from_secs(5))
    {
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
    // A disk image's update agent: a try boot that got here is healthy (services up, SSH
    // listening): mark its slot good; then the schedule, if virga.update names a repository.
    crate::update::save_config(&ctx);
    crate::update::start(Arc::clone(&ctx));

    supervisor::supervise(ctx)
}

/// What PID 1 does if its boot sequence panicked past every guard: report it, then supervise
/// with the configuration on disk, so that shutdown, services and reaping still work.
pub fn degraded() -> ! {
    eprintln!("virga: PID 1 internal error during boot; continuing in degraded mode");
    let ctx = Ctx::standalone();
    ctx.error("init", "boot sequence panicked; degraded mode");
    supervisor::run(Arc::new(ctx))
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
    deadline: Instant,
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
                        (job.f)(&job.ctx, job.deadline)
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
                deadline: start + timeout,
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
