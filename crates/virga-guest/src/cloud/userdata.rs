//! Running user-data: cloud-config modules, boothooks and `#!` scripts, each at its frequency.
//!
//! Early (before SSH): hostname/fqdn and `/etc/hosts` (every boot), `bootcmd` and boothooks
//! (every boot), `groups`, `users` and non-deferred `write_files` (once per instance),
//! `ssh_authorized_keys` (every boot, idempotent). Late (before the ready line): `#!` scripts
//! and `runcmd` (once per instance), deferred `write_files` (once per instance),
//! `final_message` (every boot); `power_state` (once per instance) is scheduled after ready.

use std::path::Path;
use std::process::{Command as Proc, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use boot_contract::{StageResult, UserDataStatus};
use cloud_metadata::cloud_config::{Command, PowerCondition, PowerMode, User};
use cloud_metadata::frequency::Frequency;
use cloud_metadata::user_data::PartKind;
use cloud_metadata::write_files::plan;

use super::accounts::{Accounts, AccountsError};
use super::per::Semaphores;
use super::{STATE_DIR, limits};
use crate::ctx::Ctx;
use crate::fsutil::{WriteOpts, write_file};
use crate::init::shutdown::Action;

/// How long one script or command list may run at most; it also ends with its stage's
/// deadline, whichever comes first.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a user-data module, script or command failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started.
    #[error("cannot run: {0}")]
    Spawn(#[source] std::io::Error),
    /// It ran and failed.
    #[error("exited with {0}")]
    Exit(ExitStatus),
    /// Its time was up: it was killed with its whole process group.
    #[error("killed after {0} s with its process group (time was up)")]
    Timeout(u64),
    /// Waiting for it failed.
    #[error("wait: {0}")]
    Wait(#[source] std::io::Error),
    /// The stage's deadline had passed before it could start.
    #[error("not started: the stage's time was up")]
    NoTime,
    /// A file could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A shell command in an image without a shell.
    #[error("no /bin/sh in this image (minimal profile): only argument-list commands can run")]
    NoShell,
    /// Users and groups.
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    /// write_files: an owner that does not exist.
    #[error("unknown owner {0}")]
    UnknownOwner(String),
    /// write_files: a group that does not exist.
    #[error("unknown group {0}")]
    UnknownGroup(String),
    /// A write_files entry the metadata rules refuse.
    #[error(transparent)]
    Plan(#[from] cloud_metadata::MetadataError),
    /// Several entries failed (write_files, users): one message each.
    #[error("{}", .0.join("; "))]
    Several(Vec<String>),
    /// The power_state condition was false.
    #[error("condition is false; not changing power state")]
    ConditionFalse,
}

fn semaphores(ctx: &Ctx) -> Option<Semaphores> {
    let c = ctx.cloud();
    c.md.as_ref()
        .map(|md| Semaphores::new(ctx.persistent(), &md.instance_id))
}

fn action(ctx: &Ctx, text: String) {
    tracing::info!("user-data: {text}");
    ctx.update(|s| {
        s.user_data
            .get_or_insert_with(UserDataStatus::default)
            .actions
            .push(text)
    });
}

/// Runs `f` at `freq` under `name`, recording what happened.
fn at(
    ctx: &Ctx,
    sem: &Semaphores,
    freq: Frequency,
    name: &str,
    f: impl FnOnce() -> Result<(), RunError>,
) {
    match sem.run(freq, name, f) {
        Ok(None) => action(
            ctx,
            format!("{name}: skipped (already ran, {})", freq.as_str()),
        ),
        Ok(Some(Ok(()))) => action(ctx, format!("{name}: ran")),
        Ok(Some(Err(e))) => {
            ctx.error("user-data", format!("{name}: {e}"));
            action(ctx, format!("{name}: failed ({e})"));
        }
        Err(e) => ctx.error("user-data", format!("{name}: {e}")),
    }
}

/// Stage `user-data-early`.
pub fn stage_early(ctx: &Ctx, deadline: Instant) -> anyhow::Result<StageResult> {
    let Some(sem) = semaphores(ctx) else {
        return Ok(StageResult::Skipped);
    };
    let (cc, parts) = {
        let c = ctx.cloud();
        let parts: Vec<String> = c
            .user_data
            .as_ref()
            .map(|u| {
                u.parts
                    .iter()
                    .map(|p| p.kind.content_type().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        (c.cloud_config.clone(), parts)
    };
    ctx.update(|s| {
        let u = s.user_data.get_or_insert_with(UserDataStatus::default);
        u.parts = parts;
        u.unknown_keys = cc.unknown_keys.clone();
    });

    if cc.preserve_hostname != Some(true) && (cc.hostname.is_some() || cc.fqdn.is_some()) {
        let fqdn = cc
            .fqdn
            .clone()
            .or_else(|| cc.hostname.clone().filter(|h| h.contains('.')));
        let short = cc
            .hostname
            .clone()
            .or_else(|| fqdn.clone())
            .map(|h| crate::hostname::short(&h).to_owned())
            .unwrap_or_default();
        let name = if cc.prefer_fqdn_over_hostname == Some(true) {
            fqdn.clone().unwrap_or(short.clone())
        } else {
            short.clone()
        };
        match crate::hostname::set(&name, fqdn.as_deref()) {
            Ok(()) => {
                ctx.update(|s| s.hostname = name.clone());
                action(ctx, format!("set_hostname: ran ({name})"));
            }
            Err(e) => ctx.error("user-data", format!("set_hostname {name}: {e}")),
        }
    }

    // cloud-init gives bootcmd the instance id in its environment.
    let instance_id = ctx.cloud().md.as_ref().map(|m| m.instance_id.clone());
    let env: Vec<(&str, &str)> = instance_id
        .as_deref()
        .map(|id| ("INSTANCE_ID", id))
        .into_iter()
        .collect();
    for (i, c) in cc.bootcmd.iter().enumerate() {
        let name = format!("bootcmd.{i}");
        at(ctx, &sem, Frequency::Always, &name, || {
            run_commands(std::slice::from_ref(c), &env, deadline)
        });
    }
    let boothooks: Vec<Vec<u8>> = {
        let c = ctx.cloud();
        c.user_data
            .as_ref()
            .map(|u| {
                u.of_kind(&PartKind::CloudBoothook)
                    .map(|p| p.content.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    for (i, hook) in boothooks.iter().enumerate() {
        let name = format!("boothook.{i:03}");
        let body = strip_first_line_if(hook, "#cloud-boothook");
        at(ctx, &sem, Frequency::Always, &name, || {
            run_script(&name, &body, deadline)
        });
    }

    let accounts = Accounts::system();
    if !cc.groups.is_empty() {
        at(ctx, &sem, Frequency::PerInstance, "groups", || {
            for g in &cc.groups {
                accounts.ensure_group(&g.name)?;
                for m in &g.members {
                    accounts.add_to_group(m, &g.name)?;
                }
            }
            Ok(())
        });
    }
    let default_user = User::named(&ctx.image.default_user);
    let users: Vec<User> = cc
        .effective_users(&default_user)
        .into_iter()
        .filter(|u| u.name != ctx.image.default_user)
        .collect();
    if !users.is_empty() {
        at(ctx, &sem, Frequency::PerInstance, "users", || {
            create_users(&accounts, &users)
        });
    }
    // Keys are idempotent (appended when missing), so they are applied at every boot: a user
    // created by `users` gets its keys even if its keys changed.
    for u in &users {
        if u.ssh_authorized_keys.is_empty() {
            continue;
        }
        if let Some(a) = accounts.user(&u.name) {
            let (keys, bad) = cloud_metadata::sshkey::filter_public_keys(&u.ssh_authorized_keys);
            for b in bad {
                ctx.warn("user-data", format!("user {}: {b}", u.name));
            }
            if let Err(e) = accounts.authorize_keys(&a, &keys, false) {
                ctx.error("user-data", format!("user {} keys: {e}", u.name));
            }
        }
    }
    if !cc.ssh_authorized_keys.is_empty() {
        let (keys, bad) = cloud_metadata::sshkey::filter_public_keys(&cc.ssh_authorized_keys);
        for b in bad {
            ctx.warn("user-data", format!("ssh_authorized_keys: {b}"));
        }
        if let Some(a) = accounts.user(&ctx.image.default_user) {
            match accounts.authorize_keys(&a, &keys, false) {
                Ok(n) => action(
                    ctx,
                    format!("ssh_authorized_keys: ran ({n} added for {})", a.name),
                ),
                Err(e) => ctx.error("user-data", format!("ssh_authorized_keys: {e}")),
            }
        }
    }
    write_files(ctx, &sem, &cc, false);
    Ok(StageResult::Ok)
}

/// Stage `user-data`: scripts, runcmd, deferred files, final message; schedules power_state.
pub fn stage_late(ctx: &Ctx, deadline: Instant) -> anyhow::Result<StageResult> {
    let Some(sem) = semaphores(ctx) else {
        return Ok(StageResult::Skipped);
    };
    let (cc, scripts) = {
        let c = ctx.cloud();
        let scripts: Vec<Vec<u8>> = c
            .user_data
            .as_ref()
            .map(|u| {
                let li = c.md.as_ref().and_then(|m| m.launch_index);
                u.for_launch_index(li)
                    .filter(|p| p.kind == PartKind::ShellScript)
                    .map(|p| p.content.clone())
                    .collect()
            })
            .unwrap_or_default();
        (c.cloud_config.clone(), scripts)
    };
    write_files(ctx, &sem, &cc, true);
    for (i, s) in scripts.iter().enumerate() {
        let name = format!("scripts-user.part-{i:03}");
        at(ctx, &sem, Frequency::PerInstance, &name, || {
            run_script(&name, s, deadline)
        });
    }
    if !cc.runcmd.is_empty() {
        at(ctx, &sem, Frequency::PerInstance, "runcmd", || {
            run_commands(&cc.runcmd, &[], deadline)
        });
    }
    if let Some(msg) = &cc.final_message {
        let text = expand_final_message(ctx, msg);
        println!("{text}");
        action(ctx, "final_message: ran".into());
    }
    if let Some(ps) = cc.power_state.clone() {
        at(ctx, &sem, Frequency::PerInstance, "power_state", || {
            let go = match &ps.condition {
                PowerCondition::Always => true,
                PowerCondition::Never => false,
                PowerCondition::Command(c) => {
                    run_commands(std::slice::from_ref(c), &[], deadline).is_ok()
                }
            };
            if !go {
                return Err(RunError::ConditionFalse);
            }
            let act = match ps.mode {
                PowerMode::Poweroff => Action::Poweroff,
                PowerMode::Reboot => Action::Reboot,
                PowerMode::Halt => Action::Halt,
            };
            crate::init::shutdown::schedule(
                act,
                Duration::from_secs(u64::from(ps.delay_minutes) * 60),
                ps.message.clone(),
            );
            Ok(())
        });
    }
    Ok(StageResult::Ok)
}

fn write_files(ctx: &Ctx, sem: &Semaphores, cc: &cloud_metadata::CloudConfig, deferred: bool) {
    let files: Vec<_> = cc
        .write_files
        .iter()
        .filter(|f| f.defer == deferred)
        .collect();
    if files.is_empty() {
        return;
    }
    let name = if deferred {
        "write_files_deferred"
    } else {
        "write_files"
    };
    let accounts = Accounts::system();
    at(ctx, sem, Frequency::PerInstance, name, || {
        let mut failures = Vec::new();
        for f in files {
            let r = plan(f, &limits()).map_err(RunError::from).and_then(|p| {
                let owner = owner_ids(&accounts, &p.owner, p.group.as_deref())?;
                write_file(
                    &p.components,
                    &p.content,
                    WriteOpts {
                        mode: p.mode,
                        append: p.append,
                        owner: Some(owner),
                    },
                )
                .map_err(|source| RunError::Write {
                    path: p.path.clone(),
                    source,
                })
            });
            if let Err(e) = r {
                failures.push(format!("{}: {e}", f.path));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(RunError::Several(failures))
        }
    });
}

fn owner_ids(
    accounts: &Accounts,
    owner: &str,
    group: Option<&str>,
) -> Result<(u32, u32), RunError> {
    let (user, group) = match (owner.split_once(':'), group) {
        (Some((u, g)), _) => (u, Some(g)),
        (None, g) => (owner, g),
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => accounts
            .user(user)
            .map(|a| (a.uid, a.gid))
            .ok_or_else(|| RunError::UnknownOwner(user.to_owned()))?,
    };
    let gid = match group {
        Some(g) => accounts
            .gid(g)
            .ok_or_else(|| RunError::UnknownGroup(g.to_owned()))?,
        None => primary,
    };
    Ok((uid, gid))
}

fn create_users(accounts: &Accounts, users: &[User]) -> Result<(), RunError> {
    let mut failures = Vec::new();
    for u in users {
        let shell = u
            .shell
            .as_deref()
            .filter(|s| Path::new(s).exists())
            .or(Some("/bin/sh"));
        let r = accounts
            .ensure_user(
                &u.name,
                u.uid,
                u.primary_group.as_deref(),
                u.homedir.as_deref(),
                shell,
                u.gecos.as_deref(),
            )
            .and_then(|_| {
                u.groups
                    .iter()
                    .try_for_each(|g| accounts.add_to_group(&u.name, g))
            });
        if let Err(e) = r {
            failures.push(format!("{}: {e}", u.name));
        }
        if !u.sudo.is_empty() {
            tracing::warn!(
                "user {}: sudo rules ignored (virga images have no sudo)",
                u.name
            );
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(RunError::Several(failures))
    }
}

fn strip_first_line_if(content: &[u8], header: &str) -> Vec<u8> {
    if content.starts_with(header.as_bytes()) {
        let rest = content
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| &content[i + 1..])
            .unwrap_or(&[]);
        let mut v = b"#!/bin/sh\n".to_vec();
        v.extend_from_slice(rest);
        v
    } else {
        content.to_vec()
    }
}

/// Writes a script under the instance directory and runs it, until `deadline` at the latest.
fn run_script(name: &str, content: &[u8], deadline: Instant) -> Result<(), RunError> {
    let dir = format!("{STATE_DIR}/scripts");
    let path = format!("{dir}/{name}");
    write_file(
        &crate::fsutil::components(&path),
        content,
        WriteOpts {
            mode: 0o700,
            ..Default::default()
        },
    )
    .map_err(|source| RunError::Write {
        path: path.clone(),
        source,
    })?;
    run(&mut Proc::new(&path), &[], deadline)
}

/// Runs a cloud-config command list as one shell script (strings run by the shell, lists as
/// quoted argument vectors), as cloud-init does, with `env` added to the environment.
pub fn run_commands(
    cmds: &[Command],
    env: &[(&str, &str)],
    deadline: Instant,
) -> Result<(), RunError> {
    let all_argv = cmds.iter().all(|c| matches!(c, Command::Argv(_)));
    if all_argv && !Path::new("/bin/sh").exists() {
        for c in cmds {
            if let Command::Argv(v) = c
                && let Some((prog, args)) = v.split_first()
            {
                let mut p = Proc::new(prog);
                p.args(args);
                run(&mut p, env, deadline)?;
            }
        }
        return Ok(());
    }
    if !Path::new("/bin/sh").exists() {
        return Err(RunError::NoShell);
    }
    let mut script = String::from("set -e\n");
    for c in cmds {
        match c {
            Command::Shell(s) => script.push_str(s),
            Command::Argv(v) => script.push_str(
                &v.iter()
                    .map(|a| shell_quote(a))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        }
        script.push('\n');
    }
    let mut p = Proc::new("/bin/sh");
    p.args(["-c", &script]);
    run(&mut p, env, deadline)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r#"'\''"#))
}

/// Runs `cmd` as a registered child of this stage ([`crate::children`]) until it exits, for
/// [`SCRIPT_TIMEOUT`] at most and never past `deadline`; on timeout its whole process group
/// is killed.
fn run(cmd: &mut Proc, env: &[(&str, &str)], deadline: Instant) -> Result<(), RunError> {
    let limit = deadline.min(Instant::now() + SCRIPT_TIMEOUT);
    if limit <= Instant::now() {
        return Err(RunError::NoTime);
    }
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .envs(env.iter().copied())
        .current_dir("/")
        .stdin(Stdio::null());
    let started = Instant::now();
    let mut child = crate::children::spawn(cmd).map_err(RunError::Spawn)?;
    match child.wait_until(limit) {
        Ok(Some(s)) if s.success() => Ok(()),
        Ok(Some(s)) => Err(RunError::Exit(s)),
        Ok(None) => {
            child.kill_group();
            Err(RunError::Timeout(started.elapsed().as_secs()))
        }
        Err(e) => Err(RunError::Wait(e)),
    }
}

fn expand_final_message(ctx: &Ctx, msg: &str) -> String {
    let s = ctx.status();
    let ds = s.datasource.map(|d| d.name).unwrap_or_default();
    msg.replace("$UPTIME", &format!("{:.2}", crate::log::uptime()))
        .replace("$VERSION", env!("CARGO_PKG_VERSION"))
        .replace("$DATASOURCE", &ds)
        .replace(
            "$TIMESTAMP",
            &format!(
                "{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r#"'it'\''s'"#);
    }

    #[test]
    fn boothook_header_becomes_a_shell() {
        let s = strip_first_line_if(b"#cloud-boothook\necho hi\n", "#cloud-boothook");
        assert_eq!(s, b"#!/bin/sh\necho hi\n");
        assert_eq!(
            strip_first_line_if(b"#!/bin/sh\nx\n", "#cloud-boothook"),
            b"#!/bin/sh\nx\n"
        );
    }

    fn soon(s: u64) -> Instant {
        Instant::now() + Duration::from_secs(s)
    }

    #[test]
    fn commands_run_and_fail() {
        assert!(run_commands(&[Command::Shell("true".into())], &[], soon(30)).is_ok());
        let e = run_commands(
            &[Command::Argv(vec![
                "sh".into(),
                "-c".into(),
                "exit 3".into(),
            ])],
            &[],
            soon(30),
        )
        .unwrap_err();
        assert!(e.to_string().contains('3'), "{e}");
    }

    #[test]
    fn commands_get_their_environment_and_end_with_the_deadline() {
        let cmd = Command::Shell(r#"test "$INSTANCE_ID" = i-42"#.into());
        assert!(
            run_commands(
                std::slice::from_ref(&cmd),
                &[("INSTANCE_ID", "i-42")],
                soon(30)
            )
            .is_ok()
        );
        assert!(run_commands(&[cmd], &[], soon(30)).is_err());
        let t = Instant::now();
        let e = run_commands(
            &[Command::Shell("sleep 30".into())],
            &[],
            Instant::now() + Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(e, RunError::Timeout(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        let e = run_commands(&[Command::Shell("true".into())], &[], Instant::now()).unwrap_err();
        assert!(matches!(e, RunError::NoTime), "{e}");
    }
}
