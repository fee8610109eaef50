//! The ACPI power button: how clouds (and `virga run`) ask a VM to stop gracefully.
//!
//! The ACPI `button` driver announces a press twice: as an ACPI event on generic netlink
//! (what acpid reads) and as KEY_POWER on an input device. virga listens to the first, which
//! needs no other driver; when the kernel has no ACPI event family it falls back to input
//! devices named "Power Button" (which needs `evdev`). A press becomes a poweroff request
//! (SIGPWR to PID 1).

use std::io::Read;
use std::time::Duration;

use super::modules::{Class, wait_for};
use crate::ctx::Ctx;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: timeval (16) + type (2) + code (2) + value (4).
const EVENT_SIZE: usize = 24;

/// Subscribes to power-button presses, after the drivers that report them have loaded.
pub fn watch(ctx: &Ctx, timeout: Duration) {
    match net_config::acpi::AcpiEvents::subscribe() {
        Ok(events) => {
            wait_for(ctx, "power-button", &[Class::Acpi], timeout);
            let spawned = std::thread::Builder::new()
                .name("power-button".into())
                .spawn(move || run_acpi(events));
            if let Err(e) = spawned {
                ctx.warn("power-button", format!("cannot start the watcher: {e}"));
            }
        }
        Err(e) => {
            tracing::debug!("no ACPI events ({e}); watching input devices");
            wait_for(ctx, "power-button", &[Class::Acpi, Class::Input], timeout);
            watch_input();
        }
    }
}

fn run_acpi(mut events: net_config::acpi::AcpiEvents) {
    loop {
        match events.wait_event() {
            Ok(ev) if ev.is_power_button() => power_off_request(),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("power button: ACPI events: {e}");
                return;
            }
        }
    }
}

fn power_off_request() {
    tracing::info!("power button pressed");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(1),
        nix::sys::signal::Signal::SIGPWR,
    );
}

/// Starts one watcher thread per power-button input device found.
fn watch_input() {
    let Ok(entries) = std::fs::read_dir("/sys/class/input") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let device_name =
            std::fs::read_to_string(entry.path().join("device/name")).unwrap_or_default();
        if device_name.trim() != "Power Button" {
            continue;
        }
        let dev = format!("/dev/input/{name}");
        match std::fs::File::open(&dev) {
            Ok(f) => {
                tracing::debug!("watching {dev} (power button)");
                let _ = std::thread::Builder::new()
                    .name("power-button".into())
                    .spawn(move || run(f));
            }
            Err(e) => tracing::warn!("power button {dev}: {e}"),
        }
    }
}

fn run(mut f: std::fs::File) {
    let mut buf = [0u8; EVENT_SIZE];
    while f.read_exact(&mut buf).is_ok() {
        let kind = u16::from_ne_bytes([buf[16], buf[17]]);
        let code = u16::from_ne_bytes([buf[18], buf[19]]);
        let value = i32::from_ne_bytes([buf[20], buf[21], buf[22], buf[23]]);
        if is_power_press(kind, code, value) {
            power_off_request();
        }
    }
}

fn is_power_press(kind: u16, code: u16, value: i32) -> bool {
    kind == EV_KEY && code == KEY_POWER && value == 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_key_power_down_counts() {
        assert!(super::is_power_press(1, 116, 1));
        assert!(!super::is_power_press(1, 116, 0));
        assert!(!super::is_power_press(0, 116, 1));
        assert!(!super::is_power_press(1, 30, 1));
    }
}
