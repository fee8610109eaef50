//! Applets of the multi-call binary other than init.

use std::process::ExitCode;

use boot_contract::Status;
use boot_contract::console::STATUS_PATH;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::ctx::Ctx;
use crate::init::shutdown::Action;

/// Prints the list of applets.
pub fn usage() {
    eprintln!(
        "usage: virga <applet> [args]\n\napplets:\n  \
         status [--json]   boot status: stages, timings, problems\n  \
         ds [--detect]     the datasource found at boot (--detect: look again, apply nothing)\n  \
         query [KEY] [--json]  instance metadata (keys: instance-id, local-hostname, public-keys, …)\n  \
         apply             apply the saved metadata again (hostname, keys, seed, files)\n  \
         userdata          run user-data again (respecting per-instance/once semaphores)\n  \
         per FREQ NAME CMD…  run CMD once per boot|instance|once (or always) under NAME\n  \
         update check|apply|status|rollback [--json]  A/B updates of a disk image\n  \
         sshd [--port N]   the SSH server (run by PID 1 as a service)\n  \
         poweroff [-f]     power the machine off cleanly (-f: now, without stopping services)\n  \
         reboot [-f]       reboot cleanly\n  \
         halt [-f]         halt cleanly"
    );
}

/// Runs an applet by name.
pub fn run(applet: &str, args: &[String]) -> ExitCode {
    match applet {
        "poweroff" => power(Action::Poweroff, args),
        "reboot" => power(Action::Reboot, args),
        "halt" => power(Action::Halt, args),
        "status" => status(args),
        "ds" => ds(args),
        "query" => query(args),
        "apply" => rerun(&[("apply", crate::cloud::apply::stage_apply)]),
        // One context for the three stages: apply decodes the user-data the other two run.
        "userdata" => rerun(&[
            ("apply", crate::cloud::apply::stage_apply),
            ("user-data-early", crate::cloud::userdata::stage_early),
            ("user-data", crate::cloud::userdata::stage_late),
        ]),
        "per" => per(args),
        "update" => crate::update::applet(args),
        crate::cloud::worker::APPLET => crate::cloud::worker::main(),
        #[cfg(feature = "ssh")]
        "sshd" => crate::init::ssh::sshd_main(args),
        #[cfg(feature = "ssh")]
        "sftp-server" => crate::init::ssh::sftp_main(),
        "help" | "--help" | "-h" => {
            usage();
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("virga: unknown applet `{other}`");
            usage();
            ExitCode::from(2)
        }
    }
}

fn power(action: Action, args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-f" || a == "--force") {
        let mode = action.reboot_mode();
        nix::unistd::sync();
        let Err(e) = nix::sys::reboot::reboot(mode);
        eprintln!("virga: reboot({mode:?}): {e} (are you root?)");
        return ExitCode::from(1);
    }
    match kill(Pid::from_raw(1), action.signal()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virga: cannot signal PID 1: {e} (are you root?)");
            ExitCode::from(1)
        }
    }
}

fn status(args: &[String]) -> ExitCode {
    let json = args.iter().any(|a| a == "--json");
    let text = match std::fs::read_to_string(STATUS_PATH) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("virga: {STATUS_PATH}: {e} (is virga PID 1?)");
            return ExitCode::from(1);
        }
    };
    if json {
        println!("{}", text.trim_end());
        return ExitCode::SUCCESS;
    }
    let s: Status = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("virga: {STATUS_PATH} is malformed: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "virga {} on {} (kernel {})",
        s.version, s.hostname, s.kernel
    );
    println!(
        "ready: {}  kernel→init {:.0} ms  init→ready {:.0} ms",
        s.ready, s.kernel_ms, s.init_ms
    );
    let modules = match s.modules_ms {
        Some(ms) => format!(
            "{} (all done {ms:.0} ms after the loader started)",
            s.modules_loaded.len()
        ),
        None => "still loading".to_owned(),
    };
    println!(
        "entropy ready: {}  modules loaded: {modules}",
        s.entropy_ready
    );
    println!("stages:");
    for st in &s.stages {
        println!("  {:<10} {:>9.1} ms  {:?}", st.name, st.ms, st.result);
    }
    for svc in &s.services {
        println!(
            "service {}: pid {:?}, {} restarts",
            svc.name, svc.pid, svc.restarts
        );
    }
    for p in &s.errors {
        println!("error: {}: {}", p.source, p.message);
    }
    for p in &s.warnings {
        println!("warning: {}: {}", p.source, p.message);
    }
    ExitCode::SUCCESS
}

fn ds(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--detect") {
        let ctx = Ctx::standalone();
        let order = crate::cloud::order(&ctx);
        let limits = crate::cloud::limits();
        let devices = crate::cloud::blockdev::scan();
        let platform_id = crate::cloud::platform::get().platform_id.as_deref();
        let mut det = crate::cloud::datasource::detect_local(
            &order,
            &ctx.cmdline,
            &devices,
            &limits,
            platform_id,
        );
        if det.found.is_none() {
            let net = crate::cloud::datasource::detect_network(
                &order,
                &ctx.cmdline,
                &limits,
                std::time::Duration::from_secs(30),
                ctx.params.metadata_url(),
                platform_id,
            );
            det.tried.extend(net.tried);
            det.found = net.found;
        }
        for t in &det.tried {
            println!("tried {t}");
        }
        return match det.found {
            Some(f) => {
                println!(
                    "found {} at {}: instance-id {}",
                    f.md.datasource, f.source, f.md.instance_id
                );
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("virga: no datasource found");
                ExitCode::from(1)
            }
        };
    }
    let text = std::fs::read_to_string(STATUS_PATH).unwrap_or_default();
    let status: Status = serde_json::from_str(&text).unwrap_or_default();
    match status.datasource {
        Some(d) => {
            println!(
                "{} {} instance-id={} new-instance={}",
                d.name, d.source, d.instance_id, d.new_instance
            );
            for t in d.tried {
                println!("  tried {t}");
            }
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("virga: no datasource was found at boot");
            ExitCode::from(1)
        }
    }
}

fn query(args: &[String]) -> ExitCode {
    let md = match crate::ctx::saved_metadata() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("virga: {e}");
            return ExitCode::from(1);
        }
    };
    let json = args.iter().any(|a| a == "--json");
    let key = args.iter().find(|a| !a.starts_with("--"));
    match key {
        None if json => println!("{}", md.to_query_json()),
        None => {
            for k in cloud_metadata::QUERY_KEYS {
                if let Ok(Some(cloud_metadata::QueryValue::Text(v))) = md.query(k) {
                    println!("{k}: {}", v.replace('\n', " "));
                }
            }
        }
        Some(k) => match md.query(k) {
            Ok(Some(v)) => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(v.as_bytes());
                if !v.as_bytes().ends_with(b"\n") {
                    let _ = out.write_all(b"\n");
                }
            }
            Ok(None) => return ExitCode::from(1),
            Err(e) => {
                eprintln!("virga: {e}");
                return ExitCode::from(2);
            }
        },
    }
    ExitCode::SUCCESS
}

/// A stage as the applets run it again.
type Stage = fn(&Ctx, std::time::Instant) -> anyhow::Result<boot_contract::StageResult>;

/// How long `virga apply` / `virga userdata` may run their stages in all.
const RERUN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Runs stages again, in order, on one context (the metadata saved at boot), and prints what
/// they did: the user-data actions (ran, skipped by frequency, failed) and the errors.
fn rerun(stages: &[(&str, Stage)]) -> ExitCode {
    let ctx = Ctx::standalone();
    if ctx.cloud().md.is_none() {
        eprintln!("virga: no saved metadata ({})", crate::ctx::DATASOURCE_JSON);
        return ExitCode::from(1);
    }
    // Only what this run does is reported.
    ctx.update(|s| {
        s.errors.clear();
        s.warnings.clear();
        s.user_data = None;
    });
    let deadline = std::time::Instant::now() + RERUN_DEADLINE;
    let mut failed = false;
    for (name, stage) in stages {
        match stage(&ctx, deadline) {
            Ok(r) => println!("{name}: {}", format!("{r:?}").to_lowercase()),
            Err(e) => {
                eprintln!("virga: {name}: {e:#}");
                failed = true;
            }
        }
    }
    let status = ctx.status();
    for a in status.user_data.iter().flat_map(|u| &u.actions) {
        println!("  {a}");
    }
    for p in &status.warnings {
        eprintln!("warning: {}: {}", p.source, p.message);
    }
    for p in &status.errors {
        eprintln!("error: {}: {}", p.source, p.message);
    }
    if failed || !status.errors.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn per(args: &[String]) -> ExitCode {
    let [freq, name, cmd @ ..] = args else {
        eprintln!("usage: virga per boot|instance|once|always NAME CMD [ARGS…]");
        return ExitCode::from(2);
    };
    if cmd.is_empty() {
        eprintln!("usage: virga per boot|instance|once|always NAME CMD [ARGS…]");
        return ExitCode::from(2);
    }
    let Ok(freq) = freq.parse::<cloud_metadata::frequency::Frequency>() else {
        eprintln!("virga: unknown frequency `{freq}` (boot, instance, once, always)");
        return ExitCode::from(2);
    };
    let iid = crate::ctx::saved_metadata()
        .map(|m| m.instance_id)
        .unwrap_or_else(|_| "i-unknown".into());
    let ctx = Ctx::standalone();
    let sem = crate::cloud::per::Semaphores::new(ctx.persistent(), &iid);
    let result = sem.run(freq, name, || {
        std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .status()
            .map(|s| s.code().unwrap_or(1))
    });
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(Ok(code))) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Ok(Some(Err(e))) => {
            eprintln!("virga: {}: {e}", cmd[0]);
            ExitCode::from(127)
        }
        Err(e) => {
            eprintln!("virga: {e}");
            ExitCode::from(2)
        }
    }
}
