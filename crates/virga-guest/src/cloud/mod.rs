//! Cloud metadata in the guest: the persistent state disk, datasource detection, applying
//! metadata, and user-data. The parsing is `cloud-metadata`'s; this is the I/O around it.

use std::time::{Duration, Instant};

use boot_contract::cmdline::StateMode;
use boot_contract::{DatasourceStatus, StageResult};
use cloud_metadata::{Datasource, Limits};

use crate::ctx::Ctx;
use crate::init::modules::{self, Class};

pub mod accounts;
pub mod apply;
pub mod blockdev;
pub mod datasource;
pub mod gpt;
pub mod http;
pub mod per;
pub mod platform;
pub mod state;
pub mod userdata;
pub mod worker;

/// Where the state disk is mounted (and where state lives without one).
pub const STATE_DIR: &str = "/var/lib/virga";
/// The state disk's label.
pub const STATE_LABEL: &str = "virga-state";
use crate::ctx::DATASOURCE_JSON;

/// The labelled block devices: scanned once per boot (reading 64 KiB of each device) by the
/// first stage that needs them, then reused.
pub fn devices() -> Vec<blockdev::Labelled> {
    static SCANNED: std::sync::OnceLock<Vec<blockdev::Labelled>> = std::sync::OnceLock::new();
    SCANNED.get_or_init(blockdev::scan).clone()
}

/// Size and depth limits for everything the datasources deliver.
pub fn limits() -> Limits {
    Limits::default()
}

/// The datasource order: `virga.ds=` on the command line as given, else the image's list
/// without the metadata services this platform does not have (see [`platform`]). Unknown names
/// are warned about; the services left out are noted in what was tried.
pub fn order(ctx: &Ctx) -> Vec<Datasource> {
    let (order, unknown) = parse_order(ctx);
    for u in unknown {
        ctx.warn("datasource", u);
    }
    if ctx.params.datasources.is_some() {
        return order;
    }
    let (kept, skipped) = platform::get().identity.filter(&order);
    ctx.cloud().tried.extend(skipped);
    kept
}

fn parse_order(ctx: &Ctx) -> (Vec<Datasource>, Vec<String>) {
    let names = ctx
        .params
        .datasources
        .as_ref()
        .unwrap_or(&ctx.image.datasources);
    datasource::parse_order(names)
}

/// Waits for the drivers that block devices (and, with `fs`, the filesystems on them) need,
/// when the machine has a storage controller; see `init::modules`.
fn wait_for_disks(ctx: &Ctx, stage: &str, fs: bool) {
    modules::wait_for(ctx, stage, &disk_drivers(fs), Duration::from_secs(20));
    blockdev::settle_nvme(Duration::from_secs(2));
}

fn disk_drivers(fs: bool) -> Vec<Class> {
    let mut classes = vec![];
    if modules::pci_class_present(0x01) {
        classes.extend([Class::Storage, Class::Bus]);
    }
    if fs {
        classes.push(Class::Fs);
    }
    classes
}

fn wants_state_disk(ctx: &Ctx) -> bool {
    ctx.params.state != StateMode::None
}

/// The driver classes this boot's stages will wait for, so that they can load from the start:
/// storage for the state disk, storage and filesystems for local datasources, network drivers
/// for a NIC.
pub fn drivers_needed(ctx: &Ctx) -> Vec<Class> {
    let mut classes = Vec::new();
    // Quietly: the datasource stages warn about unknown names.
    if parse_order(ctx).0.iter().any(|d| datasource::is_local(*d)) {
        classes.extend(disk_drivers(true));
    } else if wants_state_disk(ctx) {
        classes.extend(disk_drivers(false));
    }
    classes.extend(crate::init::network::drivers());
    classes
}

/// Stage `state`: mounts the ext4 disk labelled `virga-state` on `/var/lib/virga`.
pub fn stage_state(ctx: &Ctx, _deadline: Instant) -> anyhow::Result<StageResult> {
    if !wants_state_disk(ctx) {
        tracing::info!("no persistent state (virga.state=none)");
        return Ok(StageResult::Skipped);
    }
    wait_for_disks(ctx, "state", false);
    let devices = devices();
    let created;
    let dev = match devices.iter().find(|d| d.label == STATE_LABEL) {
        Some(d) => d,
        None => match unusable_state_partition(ctx) {
            Some(d) => {
                created = d;
                &created
            }
            None => return Ok(StageResult::Skipped),
        },
    };
    // /var goes on an overlay: its driver is a filesystem module.
    modules::wait_for(ctx, "state", &[Class::Fs], Duration::from_secs(20));
    match state::mount(&dev.device, dev.fstype) {
        Ok(m) => {
            for w in m.warnings {
                ctx.warn("state", w);
            }
            if let Some(g) = m.grown {
                tracing::info!("state: {g}");
                ctx.update(|s| s.state_grown = Some(g));
            }
            tracing::info!(
                "persistent state on {} ({}): /var and /home",
                dev.device.display(),
                dev.fstype
            );
            ctx.update(|s| s.persistent_state = true);
            Ok(StageResult::Ok)
        }
        Err(e) => {
            ctx.error("state", e.to_string());
            Ok(StageResult::Failed)
        }
    }
}

/// A disk image's state partition (GPT name `virga-state`) without a readable filesystem. A
/// blank one (its first MiB all zeros: never formatted, or wiped) gets a new filesystem; any
/// other is reported and left alone, since it may hold data worth recovering.
fn unusable_state_partition(ctx: &Ctx) -> Option<blockdev::Labelled> {
    let parts = crate::init::system::partitions();
    let p = parts
        .iter()
        .find(|p| p.partname.as_deref() == Some(STATE_LABEL))?;
    let device = std::path::PathBuf::from(format!("/dev/{}", p.name));
    match state::is_blank(&device) {
        Ok(true) => match state::make_filesystem(&device) {
            Ok(fstype) => {
                ctx.warn(
                    "state",
                    format!(
                        "the state partition {} was blank: made a new {fstype} filesystem",
                        device.display()
                    ),
                );
                Some(blockdev::Labelled {
                    device,
                    fstype,
                    label: STATE_LABEL.into(),
                })
            }
            Err(e) => {
                ctx.error(
                    "state",
                    format!("the state partition {} is blank: {e}", device.display()),
                );
                None
            }
        },
        Ok(false) => {
            ctx.error(
                "state",
                format!(
                    "the state partition {} has no usable filesystem (corrupted?); it is left alone for recovery, and this boot has no persistent state",
                    device.display()
                ),
            );
            None
        }
        Err(e) => {
            ctx.error("state", format!("{}: {e}", device.display()));
            None
        }
    }
}

/// Stage `datasource-local`: seed disks, seed directories and config drives, read by the
/// metadata worker.
pub fn stage_local(ctx: &Ctx, deadline: Instant) -> anyhow::Result<StageResult> {
    let order = order(ctx);
    let t = Instant::now();
    if order.iter().any(|d| datasource::is_local(*d)) {
        wait_for_disks(ctx, "datasource-local", true);
    } else {
        return skip_to_network(ctx, &order);
    }
    let job = worker::Job::Local {
        order: order.clone(),
        cmdline: ctx.cmdline.clone(),
        platform_id: platform::get().platform_id.clone(),
    };
    let det = detection(ctx, job, deadline);
    let found = record_detection(ctx, det, t);
    if found {
        publish(ctx);
        Ok(StageResult::Ok)
    } else {
        skip_to_network(ctx, &order)
    }
}

fn skip_to_network(ctx: &Ctx, order: &[Datasource]) -> anyhow::Result<StageResult> {
    ctx.cloud().need_network_ds = order.iter().any(|d| !datasource::is_local(*d));
    Ok(StageResult::Skipped)
}

/// Runs a detection job in the worker; a worker that fails is an error of the stage, and
/// nothing it read is used.
fn detection(ctx: &Ctx, job: worker::Job, deadline: Instant) -> datasource::Detection {
    match worker::run_or_perform(job, deadline, &mut |w| ctx.warn("datasource", w)) {
        Ok(worker::Outcome::Detection(d)) => *d,
        Ok(worker::Outcome::Decoded(_)) => {
            ctx.error("datasource", "the metadata worker answered another job");
            datasource::Detection::default()
        }
        Err(e) => {
            ctx.error("datasource", e.to_string());
            datasource::Detection::default()
        }
    }
}

/// Records what a detection found; its problems (and the metadata's own, file by file and
/// field by field) become warnings, once.
fn record_detection(ctx: &Ctx, det: datasource::Detection, t: Instant) -> bool {
    for p in &det.problems {
        ctx.warn("datasource", p.clone());
    }
    if let Some(f) = &det.found {
        for p in &f.md.problems {
            ctx.warn("datasource", p.to_string());
        }
    }
    let mut c = ctx.cloud();
    c.tried.extend(det.tried);
    c.detect_ms += t.elapsed().as_secs_f64() * 1000.0;
    match det.found {
        Some(f) => {
            c.md = Some(f.md);
            c.source = f.source;
            true
        }
        None => false,
    }
}

/// Stage `datasource-net`: the metadata services, when no local source answered. Without a
/// configured network only `none` is left: nothing is probed, nothing is waited for.
pub fn stage_network(ctx: &Ctx, stage_deadline: Instant) -> anyhow::Result<StageResult> {
    if !ctx.cloud().need_network_ds {
        return Ok(StageResult::Skipped);
    }
    // `datasource-local` has warned about unknown names and noted skipped services already.
    let mut order = {
        let (order, _) = parse_order(ctx);
        if ctx.params.datasources.is_some() {
            order
        } else {
            platform::get().identity.filter(&order).0
        }
    };
    if !ctx.cloud().network_up {
        let needs_net: Vec<Datasource> = order
            .iter()
            .copied()
            .filter(|d| !datasource::is_local(*d) && *d != Datasource::None)
            .collect();
        let mut c = ctx.cloud();
        for d in needs_net {
            c.tried
                .push(format!("{d}: not probed, no network is configured"));
        }
        drop(c);
        order.retain(|d| *d == Datasource::None);
    }
    let t = Instant::now();
    let job = worker::Job::Network {
        order,
        cmdline: ctx.cmdline.clone(),
        platform_id: platform::get().platform_id.clone(),
        deadline_ms: u64::try_from(ctx.params.ds_timeout().as_millis()).unwrap_or(u64::MAX),
        url: ctx.params.metadata_url().to_owned(),
    };
    let det = detection(ctx, job, stage_deadline);
    let result = if record_detection(ctx, det, t) {
        StageResult::Ok
    } else {
        StageResult::Skipped
    };
    publish(ctx);
    Ok(result)
}

/// Writes the datasource summary into the status document and `datasource.json`.
pub fn publish(ctx: &Ctx) {
    let c = ctx.cloud();
    let Some(md) = &c.md else { return };
    let status = DatasourceStatus {
        name: md.datasource.as_str().into(),
        source: c.source.clone(),
        instance_id: md.instance_id.clone(),
        new_instance: c.new_instance,
        local_hostname: md.local_hostname.clone(),
        availability_zone: md.availability_zone.clone(),
        tried: c.tried.clone(),
        ms: c.detect_ms,
    };
    if let Ok(json) = serde_json::to_string_pretty(md)
        && let Err(e) = crate::fsutil::write_atomic(DATASOURCE_JSON, json.as_bytes(), 0o600, false)
    {
        tracing::warn!("{DATASOURCE_JSON}: {e}");
    }
    drop(c);
    ctx.update(|s| s.datasource = Some(status));
}
