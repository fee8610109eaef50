//! `virga-guest`: the one static binary inside every virga image.
//!
//! Pipeline position: the last stage. The kernel starts it as PID 1 (`/init` → `/sbin/virga`);
//! it brings the machine up, reports status on the console, supervises services and shuts the
//! machine down cleanly. The same binary is a multi-call tool: invoked as `poweroff`, `reboot`,
//! `halt` or as `virga <applet>` it runs that applet instead.

use std::process::ExitCode;

mod applets;
mod children;
mod cloud;
mod ctx;
mod fsutil;
mod hostname;
mod init;
mod log;
mod pid1;
mod sys;
mod update;

fn main() -> ExitCode {
    if std::process::id() == 1 {
        // PID 1 must never exit: a panic that escapes the per-stage guards lands here, and
        // the machine goes on in degraded mode (signals, shutdown, services, reaping).
        let _ = std::panic::catch_unwind(|| pid1::main());
        pid1::degraded();
    }
    let mut args: Vec<String> = std::env::args().collect();
    let argv0 = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_owned())
        .unwrap_or_default();
    let applet = if argv0 == "virga" || argv0 == "virga-guest" {
        if args.len() < 2 {
            applets::usage();
            return ExitCode::from(2);
        }
        args.remove(0);
        args[0].clone()
    } else {
        argv0
    };
    applets::run(&applet, &args[1..])
}
