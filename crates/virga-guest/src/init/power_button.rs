//! The ACPI power button: how clouds (and `virga run`) ask a VM to stop gracefully.
//!
//! Watches input devices named "Power Button" (ACPI `button` module + `evdev`) and turns a
//! KEY_POWER press into a poweroff request (SIGPWR to PID 1).

use std::io::Read;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: timeval (16) + type (2) + code (2) + value (4).
const EVENT_SIZE: usize = 24;

/// Starts one watcher thread per power-button input device found.
pub fn watch() {
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
            tracing::info!("power button pressed");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(1),
                nix::sys::signal::Signal::SIGPWR,
            );
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
