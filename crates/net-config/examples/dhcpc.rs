//! A minimal DHCP client command on top of `net-config`, used by `bench/dhcp.sh` and for
//! measuring the driver's size in a static musl binary. Not the guest's `dhcpc` applet.
//!
//! ```text
//! dhcpc [--timeout SECS] [--retransmit MS] [--resolv PATH] [--run SECS] [--release]
//!       [--status] (--all | IFACE...)
//! ```
//! Prints `lease: IFACE ADDR/LEN ms=N` per interface; exits 0 when every interface got a lease.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use net_config::{DhcpOptions, Interfaces, NetStatus, Rtnl, run_dhcp};

struct Args {
    timeout: Duration,
    retransmit: Duration,
    resolv: Option<PathBuf>,
    run: Option<Duration>,
    release: bool,
    status: bool,
    ifaces: Interfaces,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        timeout: Duration::from_secs(30),
        retransmit: Duration::from_secs(4),
        resolv: None,
        run: None,
        release: false,
        status: false,
        ifaces: Interfaces::Names(Vec::new()),
    };
    let mut names = Vec::new();
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<u64, String> {
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{what} needs a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--timeout" => a.timeout = Duration::from_secs(num(it.next(), "--timeout")?),
            "--retransmit" => a.retransmit = Duration::from_millis(num(it.next(), "--retransmit")?),
            "--resolv" => a.resolv = Some(it.next().ok_or("--resolv needs a path")?.into()),
            "--run" => a.run = Some(Duration::from_secs(num(it.next(), "--run")?)),
            "--release" => a.release = true,
            "--status" => a.status = true,
            "--all" => a.ifaces = Interfaces::All,
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => names.push(s.to_string()),
        }
    }
    if a.ifaces != Interfaces::All {
        if names.is_empty() {
            return Err("name an interface or pass --all".into());
        }
        a.ifaces = Interfaces::Names(names);
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dhcpc: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = DhcpOptions {
        initial_retransmit: args.retransmit,
        resolv_conf: args.resolv.clone(),
        ..DhcpOptions::default()
    };
    let start = Instant::now();
    let (mut service, outcomes) = match run_dhcp(&args.ifaces, start + args.timeout, opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dhcpc: {e}");
            return ExitCode::from(1);
        }
    };
    let mut ok = true;
    for o in &outcomes {
        match &o.result {
            Ok(l) => println!(
                "lease: {} {}/{} ms={}",
                o.interface,
                l.address,
                l.prefix_len,
                o.elapsed.as_millis()
            ),
            Err(e) => {
                ok = false;
                println!("no-lease: {} {e}", o.interface);
            }
        }
    }
    if let Some(d) = args.run {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(d);
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            service.run(&stop);
        });
        for e in service.take_events() {
            println!("event: {} {:?} {:?}", e.interface, e.kind, e.address);
        }
    }
    if args.status {
        match Rtnl::open().and_then(|mut r| NetStatus::collect(&mut r, service.lease_status())) {
            Ok(s) => s.console_lines().iter().for_each(|l| println!("{l}")),
            Err(e) => eprintln!("dhcpc: status: {e}"),
        }
    }
    if args.release {
        service.release_all();
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
