//! Console markers the host scrapes, and guest paths it may read.
//!
//! Formats are documented in `docs/console-and-status.md`.

/// Prefix of the one ready line per boot: `virga: ready {json}` (see [`crate::ReadyReport`]).
pub const READY_PREFIX: &str = "virga: ready ";
/// Printed by PID 1 after syncing and unmounting, immediately before it powers the machine off.
pub const POWEROFF_LINE: &str = "virga: power-off";
/// Printed by PID 1 after syncing and unmounting, immediately before it reboots the machine.
pub const REBOOT_LINE: &str = "virga: reboot";
/// Printed by PID 1 after syncing and unmounting, immediately before it halts the machine.
pub const HALT_LINE: &str = "virga: halt";
/// Prefix of PID 1's lines that announce a shutdown has started: `virga: shutting down (REASON)`.
pub const SHUTDOWN_PREFIX: &str = "virga: shutting down";
/// Where the guest keeps its status document.
pub const STATUS_PATH: &str = "/run/virga/status.json";
/// The kernel's panic banner; the host treats it as a failed boot.
pub const KERNEL_PANIC: &str = "Kernel panic - not syncing";
