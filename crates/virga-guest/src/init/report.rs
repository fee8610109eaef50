//! The console status block, the ready line and the status document.

use std::fmt::Write as _;

use boot_contract::console::STATUS_PATH;
use boot_contract::{CONTRACT_VERSION, ReadyReport};

use crate::ctx::Ctx;
use crate::log::uptime;

/// Prints the CirrOS-style status block (`docs/console-and-status.md`).
pub fn print_status_block(ctx: &Ctx) {
    let mut out = String::new();
    let _ = writeln!(out, "=== system information ===");
    let product = read_trim("/sys/class/dmi/id/product_name");
    if !product.is_empty() {
        let _ = writeln!(out, "Platform: {product}");
    }
    let _ = writeln!(out, "Arch: {}", std::env::consts::ARCH);
    let (cpus, mhz) = cpu_info();
    let _ = writeln!(out, "CPU(s): {cpus} @ {mhz} MHz");
    let _ = writeln!(out, "RAM Size: {}MB", mem_total_kb() / 1024);
    let _ = writeln!(out, "Kernel: {}", ctx.status().kernel);
    let _ = writeln!(out, "Disks:");
    let _ = writeln!(out, "NAME  MAJ:MIN        SIZE");
    for (name, dev, bytes) in disks() {
        let _ = writeln!(out, "{name:<5} {dev:<8} {bytes:>11}");
    }
    // As the network stage left it; nothing changes the configuration after that stage.
    if let Some(net) = super::network::published() {
        let _ = writeln!(out, "=== network info ===");
        for l in net.console_lines() {
            let _ = writeln!(out, "{l}");
        }
    }
    let status = ctx.status();
    if let Some(ds) = &status.datasource {
        let _ = writeln!(out, "=== datasource: {} {} ===", ds.name, ds.source);
        let _ = writeln!(out, "instance-id: {}", ds.instance_id);
        let _ = writeln!(
            out,
            "local-hostname: {}",
            ds.local_hostname.as_deref().unwrap_or("")
        );
        let _ = writeln!(
            out,
            "availability-zone: {}",
            ds.availability_zone.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(out, "=== boot stages ===");
    for s in &status.stages {
        let _ = writeln!(out, "{:<10} {:>9.1} ms  {:?}", s.name, s.ms, s.result);
    }
    if !status.warnings.is_empty() || !status.errors.is_empty() {
        let _ = writeln!(out, "=== problems ===");
        for p in &status.errors {
            let _ = writeln!(out, "error: {}: {}", p.source, p.message);
        }
        for p in &status.warnings {
            let _ = writeln!(out, "warning: {}: {}", p.source, p.message);
        }
    }
    let _ = writeln!(
        out,
        "=== virga: current={} hostname={} uptime={:.2} ===",
        env!("CARGO_PKG_VERSION"),
        status.hostname,
        uptime()
    );
    crate::log::console_write(&out);
}

/// Writes the status document and prints the one ready line.
pub fn ready(ctx: &Ctx, init_ms: f64) {
    let status = ctx.status();
    write_status(ctx);
    let report = ReadyReport {
        contract: CONTRACT_VERSION,
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_ms: uptime() * 1000.0,
        kernel_ms: status.kernel_ms,
        init_ms,
        stages: status.stages.clone(),
        modules_pending: super::modules::pending(),
        errors: status.errors.len(),

        warnings: status.warnings.len(),
    };
    // One write: nothing else on the console can split the line that tools parse.
    crate::log::console_write(&format!("{}\n", report.to_line()));
}

/// Writes `/run/virga/status.json` atomically. Writers (the boot sequence, the supervisor, the
/// module loader finishing after ready) take turns: they share the temporary file.
pub fn write_status(ctx: &Ctx) {
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let mut json = serde_json::to_string_pretty(&ctx.status()).unwrap_or_default();
    json.push('\n');
    let tmp = format!("{STATUS_PATH}.tmp");
    let r = std::fs::create_dir_all("/run/virga")
        .and_then(|()| std::fs::write(&tmp, json))
        .and_then(|()| std::fs::rename(&tmp, STATUS_PATH));
    if let Err(e) = r {
        tracing::error!("{STATUS_PATH}: {e}");
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn cpu_info() -> (usize, String) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = text.lines().filter(|l| l.starts_with("processor")).count();
    let mhz = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("cpu MHz")?
                .split(':')
                .nth(1)
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    (cpus.max(1), mhz)
}

fn mem_total_kb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn disks() -> Vec<(String, String, u64)> {
    let mut v = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return v;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        let dev = read_trim(&format!("/sys/block/{name}/dev"));
        let sectors: u64 = read_trim(&format!("/sys/block/{name}/size"))
            .parse()
            .unwrap_or(0);
        v.push((name, dev, sectors * 512));
    }
    v.sort();
    v
}
