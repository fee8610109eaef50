//! Guest logging: `tracing` events to the console (stderr), stamped with seconds since boot
//! like the kernel's own lines, so the two interleave readably.

use std::fmt;

use boot_contract::cmdline::LogLevel;
use tracing::Level;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Seconds since the kernel started (`CLOCK_BOOTTIME`).
pub fn uptime() -> f64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

struct Uptime;

impl FormatTime for Uptime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write!(w, "[{:>12.6}] virga:", uptime())
    }
}

/// The tracing level for `virga.log=` (info when absent).
pub fn level(l: Option<LogLevel>) -> Level {
    match l {
        Some(LogLevel::Error) => Level::ERROR,
        Some(LogLevel::Warn) => Level::WARN,
        None | Some(LogLevel::Info) => Level::INFO,
        Some(LogLevel::Debug) => Level::DEBUG,
        Some(LogLevel::Trace) => Level::TRACE,
    }
}

/// Installs the console logger. Safe to call once; later calls are ignored.
pub fn init(level: Level) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_timer(Uptime)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Writes `text` to standard output (the console) in one `write` call when the kernel takes it
/// whole, as a tty does. A tty write is atomic with respect to other writers of the same tty,
/// so a log line from another thread or process cannot land inside the ready line; std's
/// line-buffered stdout would split a line longer than its 1 KiB buffer into several writes.
pub fn console_write(text: &str) {
    use std::io::Write as _;
    use std::os::fd::AsFd as _;
    let out = std::io::stdout();
    let mut lock = out.lock();
    let _ = lock.flush();
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        match nix::unistd::write(out.as_fd(), rest) {
            Ok(0) => break,
            Ok(n) => rest = &rest[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    drop(lock);
}
