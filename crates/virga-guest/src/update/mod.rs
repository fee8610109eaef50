//! The update agent of a disk image (`docs/updates.md`): after the ready line PID 1 runs the
//! boot step (rollback noticed, a `try` boot marked good) and, when `virga.update` names a
//! repository, checks it on a schedule and applies what it offers; `virga update
//! check|apply|status|rollback [--json]` does the same on demand.

pub mod agent;
pub mod esp;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use update::config::UpdateConfig;
use update::reboot::{self, RebootAction};
use update::status::{Phase, UpdateStatus};
use update::{Timestamp, Version};

use crate::ctx::Ctx;
use crate::init::shutdown::Action;

/// Saves the `virga.update` section the cloud-config gave, for the agent and the applets.
pub fn save_config(ctx: &Ctx) {
    let section = ctx.cloud().cloud_config.virga.get("virga.update").cloned();
    let Some(section) = section else {
        let _ = std::fs::remove_file(agent::CONFIG_FILE);
        return;
    };
    match UpdateConfig::from_value(&section) {
        Ok(_) => {
            let bytes = serde_json::to_vec(&section).unwrap_or_default();
            if let Err(e) = crate::fsutil::write_atomic(agent::CONFIG_FILE, &bytes, 0o600, false) {
                ctx.warn("update", format!("{}: {e}", agent::CONFIG_FILE));
            }
        }
        Err(e) => ctx.error("update", format!("virga.update: {}; updates are off", e.0)),
    }
}

/// PID 1, after the ready line: the boot step, then the schedule. Runs on its own thread.
pub fn start(ctx: Arc<Ctx>) {
    if ctx.image.system.is_none() || agent::booted(&ctx.cmdline).is_none() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("update".into())
        .spawn(move || run(&ctx));
}

fn run(ctx: &Ctx) {
    match agent::at_boot(&ctx.cmdline) {
        Ok(r) => {
            if let Some(reason) = &r.rollback {
                ctx.warn("update", format!("rolled back: {reason}"));
            }
            for p in &r.problems {
                ctx.warn("update", p.clone());
            }
            if r.marked_good {
                tracing::info!("update: this slot is marked good");
            }
            ctx.update(|s| s.update = serde_json::to_value(&r).ok());
            ctx.write_status();
        }
        Err(e) => {
            ctx.error("update", e.to_string());
            ctx.write_status();
            return;
        }
    }
    let cfg = match agent::load_config() {
        Ok(c) => c,
        Err(e) => {
            ctx.error("update", e.to_string());
            return;
        }
    };
    if cfg.url.is_none() {
        return;
    }
    // The first check a few minutes after boot (at most one interval), then every interval,
    // each with up to a tenth of jitter so a fleet does not check in step.
    let interval = Duration::from_secs(u64::try_from(cfg.interval.max(60)).unwrap_or(3600));
    let mut wait = interval.min(Duration::from_secs(300));
    loop {
        std::thread::sleep(wait + jitter(wait / 10));
        wait = interval;
        match check_and_apply(&ctx.cmdline, false) {
            Ok(r) if r.reboot_now => request_reboot(),
            Ok(_) => {}
            Err(e) => tracing::warn!("update: {e}"),
        }
    }
}

fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(u64::from_ne_bytes(b) % ms)
}

/// What a check (and apply) did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// The running version.
    pub running: Version,
    /// The version offered, when newer (or an allowed downgrade).
    pub offered: Option<Version>,
    /// Installed into this slot.
    pub installed: Option<String>,
    /// What happens next: `reboot`, `wait-until …`, `waiting-for-lock`, `reboot-pending`.
    pub next: Option<String>,
    /// The policy says reboot now: the caller asks PID 1 once it has reported (the applet
    /// after printing, PID 1's schedule at once).
    #[serde(skip)]
    pub reboot_now: bool,
}

/// Asks PID 1 to reboot in a second (time for the report to reach the console).
fn request_reboot() {
    if std::process::id() == 1 {
        crate::init::shutdown::schedule(Action::Reboot, Duration::from_secs(1), None);
    } else {
        // An applet: its threads end with it, so wait here, then signal.
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::thread::sleep(Duration::from_secs(1));
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), Action::Reboot.signal());
    }
}

/// Checks the channel; with `apply_now` (or always, from the schedule) installs what it
/// offers and reboots by policy.
pub fn check_and_apply(cmdline: &str, check_only: bool) -> Result<CheckReport, agent::UpdateError> {
    let booted = agent::booted(cmdline).ok_or(agent::UpdateError::NoSlot)?;
    let cfg = agent::load_config()?;
    let (mut state, _) = agent::load_state();
    let (image, _) = crate::ctx::read_image_config();
    let running = agent::running_version(&state, booted, image.system.as_ref());
    state.last_check = Some(Timestamp::now());
    let checked = agent::check(&cfg, running);
    state.last_error = checked.as_ref().err().map(ToString::to_string);
    let _ = agent::save_state(&state);
    let offered = checked?;
    let mut report = CheckReport {
        running,
        offered: offered.as_ref().map(|m| m.version()),
        installed: None,
        next: None,
        reboot_now: false,
    };
    let Some(manifest) = offered else {
        return Ok(report);
    };
    if check_only {
        return Ok(report);
    }
    let result = agent::apply(&manifest, cmdline);
    if let Err(e) = &result {
        let (mut state, _) = agent::load_state();
        state.last_error = Some(e.to_string());
        let _ = agent::save_state(&state);
    }
    let slot = result?;
    report.installed = Some(slot.to_string());
    let (next, now) = reboot_by_policy(&cfg);
    report.next = Some(next);
    report.reboot_now = now;
    Ok(report)
}

/// What the strategy says to do after an install, and whether that is a reboot now.
fn reboot_by_policy(cfg: &UpdateConfig) -> (String, bool) {
    match reboot::decide(&cfg.strategy, Timestamp::now()) {
        RebootAction::Now => ("reboot".into(), true),
        RebootAction::WaitUntil { at } => (format!("reboot in the window at {at}"), false),
        RebootAction::Never => ("reboot-pending (reboot: off)".into(), false),
        RebootAction::AcquireLock => match acquire_lock(cfg) {
            Ok(()) => ("reboot (holding a reboot-lock slot)".into(), true),
            Err(e) => (format!("waiting for a reboot-lock slot: {e}"), false),
        },
    }
}

fn acquire_lock(cfg: &UpdateConfig) -> Result<(), agent::UpdateError> {
    let err = |e: &dyn std::fmt::Display| agent::UpdateError::Fetch(e.to_string());
    let etcd = cfg
        .etcd
        .as_ref()
        .ok_or_else(|| agent::UpdateError::Config("reboot: etcd-lock needs etcd:".into()))?;
    let holder = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "virga".into());
    let client = update::etcd::EtcdClient::new(&etcd.endpoints, Duration::from_secs(10))
        .map_err(|e| err(&e))?;
    let lease = client.grant(etcd.lease_ttl).map_err(|e| err(&e))?;
    let lock = update::etcd::RebootLock::new(&client, &etcd.group, &holder, etcd.max)
        .map_err(|e| err(&e))?;
    let revision = match lock
        .acquire(
            lease.id,
            Duration::from_secs(3600),
            Duration::from_secs(5),
            &mut std::thread::sleep,
        )
        .map_err(|e| err(&e))?
    {
        update::etcd::LockAttempt::Acquired { revision, .. } => revision,
        update::etcd::LockAttempt::AlreadyHeld => 0,
        update::etcd::LockAttempt::Full { holders } => {
            let _ = client.revoke(lease.id);
            return Err(agent::UpdateError::Fetch(format!(
                "every reboot-lock slot is held ({})",
                holders.join(", ")
            )));
        }
    };
    let (mut state, _) = agent::load_state();
    state.lock = Some(update::status::LockRecord {
        lease: lease.id,
        holder,
        group: etcd.group.clone(),
        revision,
    });
    agent::save_state(&state)
}

/// The status `virga update status` prints.
pub fn status(cmdline: &str) -> UpdateStatus {
    let cfg = agent::load_config().unwrap_or_default();
    let (state, _) = agent::load_state();
    let booted = agent::booted(cmdline);
    let (image, _) = crate::ctx::read_image_config();
    let version = booted.map(|b| agent::running_version(&state, b, image.system.as_ref()));
    let phase = if cfg.url.is_none() || booted.is_none() {
        Phase::Disabled
    } else {
        Phase::Idle
    };
    let other = esp::Esp::mount()
        .ok()
        .and_then(|e| e.read_env().ok())
        .zip(booted)
        .map(|(block, b)| update::slots::SlotEnv::from_block(&block).other_state(b.slot));
    UpdateStatus {
        phase,
        version: version.filter(|v| *v != Version::default()),
        slot: booted.map(|b| b.slot),
        boot: booted.map(|b| b.mode),
        other_slot: other,
        channel: cfg.channel,
        strategy: cfg.strategy.name().into(),
        available: None,
        progress: None,
        reboot: None,
        last_check: state.last_check,
        last_error: state.last_error,
        rollback: state.rollback,
        lock: state.lock,
    }
}

/// `virga update check|apply|status|rollback [--json]`.
pub fn applet(args: &[String]) -> ExitCode {
    let json = args.iter().any(|a| a == "--json");
    let cmd = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str);
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let print = |v: &dyn erased::Show| {
        if json {
            println!("{}", v.json());
        } else {
            println!("{}", v.text());
        }
    };
    match cmd {
        Some("status") | None => {
            print(&status(&cmdline));
            ExitCode::SUCCESS
        }
        Some(c @ ("check" | "apply")) => match check_and_apply(&cmdline, c == "check") {
            Ok(r) => {
                print(&r);
                if r.reboot_now {
                    request_reboot();
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("virga: update {c}: {e}");
                ExitCode::from(1)
            }
        },
        Some("rollback") => match agent::rollback(&cmdline) {
            Ok(slot) => {
                println!("rolling back to slot {slot}; rebooting");
                request_reboot();
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("virga: update rollback: {e}");
                ExitCode::from(1)
            }
        },
        Some(other) => {
            eprintln!("usage: virga update check|apply|status|rollback [--json] (not {other:?})");
            ExitCode::from(2)
        }
    }
}

mod erased {
    /// Something the applet prints as JSON or as text.
    pub trait Show {
        fn json(&self) -> String;
        fn text(&self) -> String;
    }

    impl<T: serde::Serialize> Show for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }

        fn text(&self) -> String {
            // Flat `key: value` lines of the JSON object.
            let v = serde_json::to_value(self).unwrap_or_default();
            match v.as_object() {
                Some(m) => m
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| match v.as_str() {
                        Some(s) => format!("{k}: {s}"),
                        None => format!("{k}: {v}"),
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                None => v.to_string(),
            }
        }
    }
}
