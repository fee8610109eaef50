//! Applets of the multi-call binary other than init.

use std::process::ExitCode;

use boot_contract::Status;
use boot_contract::console::STATUS_PATH;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Prints the list of applets.
pub fn usage() {
    eprintln!(
        "usage: virga <applet> [args]\n\napplets:\n  \
         status [--json]   boot status: stages, timings, problems\n  \
         poweroff [-f]     power the machine off cleanly (-f: now, without stopping services)\n  \
         reboot [-f]       reboot cleanly\n  \
         halt [-f]         halt cleanly"
    );
}

/// Runs an applet by name.
pub fn run(applet: &str, args: &[String]) -> ExitCode {
    match applet {
        "poweroff" => power(
            Signal::SIGUSR2,
            nix::sys::reboot::RebootMode::RB_POWER_OFF,
            args,
        ),
        "reboot" => power(
            Signal::SIGTERM,
            nix::sys::reboot::RebootMode::RB_AUTOBOOT,
            args,
        ),
        "halt" => power(
            Signal::SIGUSR1,
            nix::sys::reboot::RebootMode::RB_HALT_SYSTEM,
            args,
        ),
        "status" => status(args),
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

fn power(sig: Signal, mode: nix::sys::reboot::RebootMode, args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-f" || a == "--force") {
        nix::unistd::sync();
        let Err(e) = nix::sys::reboot::reboot(mode);
        eprintln!("virga: reboot({mode:?}): {e} (are you root?)");
        return ExitCode::from(1);
    }
    match kill(Pid::from_raw(1), sig) {
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
    println!(
        "entropy ready: {}  modules loaded: {}",
        s.entropy_ready,
        s.modules_loaded.len()
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
