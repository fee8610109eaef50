//! Applying metadata: instance-id change detection, hostname, SSH keys of the default user,
//! the random seed, injected files, and decoding user-data for the later stages.

use std::time::Instant;

use std::io::Write;

use boot_contract::StageResult;
use cloud_metadata::InstanceMetadata;
use cloud_metadata::frequency::{InstanceChange, instance_change};
use cloud_metadata::write_files::validate_path;

use super::accounts::Accounts;
use crate::ctx::Ctx;
use crate::fsutil::{WriteOpts, components, write_file};

/// File recording the instance id of the last boot.
pub const INSTANCE_ID_FILE: &str = "/var/lib/virga/instance-id";

/// Stage `apply`.
pub fn stage_apply(ctx: &Ctx, deadline: Instant) -> anyhow::Result<StageResult> {
    let Some(md) = ctx.cloud().md.clone() else {
        return Ok(StageResult::Skipped);
    };
    let previous = std::fs::read_to_string(INSTANCE_ID_FILE).ok();
    let change = instance_change(previous.as_deref(), &md.instance_id);
    match &change {
        InstanceChange::FirstBoot => tracing::info!("instance {}: first boot", md.instance_id),
        InstanceChange::Same => tracing::info!("instance {}: same as last boot", md.instance_id),
        InstanceChange::Changed { previous } => {
            tracing::info!("instance {}: new (was {previous})", md.instance_id)
        }
    }
    ctx.cloud().new_instance = change != InstanceChange::Same;
    if let Err(e) = crate::fsutil::write_atomic(
        INSTANCE_ID_FILE,
        format!("{}\n", md.instance_id).as_bytes(),
        0o644,
        false,
    ) {
        ctx.warn("apply", format!("{INSTANCE_ID_FILE}: {e}"));
    }

    if let Some(h) = md.short_hostname() {
        match crate::hostname::set(h, md.fqdn.as_deref()) {
            Ok(()) => ctx.update(|s| s.hostname = h.to_owned()),
            Err(e) => ctx.error("apply", format!("hostname {h}: {e}")),
        }
    }

    let accounts = Accounts::system();
    match accounts.user(&ctx.image.default_user) {
        Some(user) => match accounts.authorize_keys(&user, &md.public_keys, true) {
            Ok(n) => tracing::info!("{n} SSH key(s) for {}", user.name),
            Err(e) => ctx.error("apply", format!("authorized keys: {e}")),
        },
        None => ctx.error(
            "apply",
            format!("default user {} does not exist", ctx.image.default_user),
        ),
    }

    if let Some(seed) = &md.random_seed {
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/urandom")
            .and_then(|mut f| f.write_all(&seed[..seed.len().min(4096)]));
        if let Err(e) = r {
            ctx.warn("apply", format!("random seed: {e}"));
        }
    }

    for f in &md.files {
        let Some(content) = &f.content else {
            ctx.warn("apply", format!("injected file {}: no content", f.path));
            continue;
        };
        let r = validate_path(&f.path)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                write_file(&components(&p), content, WriteOpts::default())
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = r {
            ctx.warn("apply", format!("injected file {}: {e}", f.path));
        }
    }

    decode_user_data(ctx, &md, deadline);
    super::publish(ctx);
    Ok(StageResult::Ok)
}

/// Decodes vendor-data and user-data (gzip, MIME, cloud-config, `#include`) in the metadata
/// worker, into the cloud state: user cloud-config is merged over vendor cloud-config.
/// Problems are recorded; a worker that fails leaves no user-data to run.
fn decode_user_data(ctx: &Ctx, md: &InstanceMetadata, deadline: Instant) {
    if md.user_data.is_none() && md.vendor_data.is_none() {
        return;
    }
    let job = super::worker::Job::Decode {
        md: Box::new(md.clone()),
    };
    let decoded =
        match super::worker::run_or_perform(job, deadline, &mut |w| ctx.warn("user-data", w)) {
            Ok(super::worker::Outcome::Decoded(d)) => *d,
            Ok(super::worker::Outcome::Detection(_)) => {
                ctx.error("user-data", "the metadata worker answered another job");
                return;
            }
            Err(e) => {
                ctx.error("user-data", format!("{e}; user-data ignored"));
                return;
            }
        };
    for (source, w) in &decoded.warnings {
        ctx.warn(source, w.clone());
    }
    for (source, e) in &decoded.errors {
        ctx.error(source, e.clone());
    }
    let mut c = ctx.cloud();
    c.user_data = decoded.user_data;
    c.cloud_config = decoded.cloud_config;
}
