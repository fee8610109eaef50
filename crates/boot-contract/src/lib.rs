//! The contract between virga's host tools and the guest it boots.
//!
//! Pipeline position: `ImageSpec` → image builder → artifacts → VM → **PID 1**. Everything both
//! sides must agree on lives here and nowhere else: the kernel command-line keys the guest reads
//! ([`cmdline`]), the console lines the host scrapes ([`console`]), and the JSON documents the
//! guest reports ([`ReadyReport`], [`Status`]). Changing any of it is a contract change: bump
//! [`CONTRACT_VERSION`] and update `docs/console-and-status.md`.

use serde::{Deserialize, Serialize};

pub mod cmdline;
pub mod console;
pub mod datasource;
pub mod hostname;
mod image;

pub use image::{
    EARLY_MODULE_DIRS, IMAGE_CONFIG_PATH, ImageConfig, ModuleEntry, SLOT_MODULES_PREFIX,
    SystemImage, default_datasources, early_module,
};

/// Version of this contract. Reported in the ready line and in the status document.
pub const CONTRACT_VERSION: u32 = 1;

/// Outcome of one boot stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageResult {
    /// The stage did its work.
    Ok,
    /// The stage had nothing to do (e.g. no modules requested).
    Skipped,
    /// The stage failed; boot went on. The reason is in [`Status::errors`].
    Failed,
}

/// Timing of one boot stage, measured by PID 1 with the monotonic clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    /// Stage name, e.g. `mounts`, `modules`, `network`.
    pub name: String,
    /// Wall time the stage took, in milliseconds.
    pub ms: f64,
    /// What happened.
    pub result: StageResult,
}

/// The JSON object printed once per boot after `virga: ready `.
///
/// All times come from the guest's own clocks: `kernel_ms` is `CLOCK_BOOTTIME` when PID 1
/// started (kernel start → PID 1), `init_ms` is the time from PID 1's start to the ready line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyReport {
    /// Contract version ([`CONTRACT_VERSION`]).
    pub contract: u32,
    /// virga version of the guest binary.
    pub version: String,
    /// Seconds since the kernel started (`CLOCK_BOOTTIME`), at the ready line, in milliseconds.
    pub uptime_ms: f64,
    /// Kernel start → PID 1 start, in milliseconds.
    pub kernel_ms: f64,
    /// PID 1 start → ready line, in milliseconds.
    pub init_ms: f64,
    /// Per-stage timings, in the order the stages ran.
    pub stages: Vec<StageTiming>,
    /// Kernel modules still loading in the background at the ready line (drivers no boot
    /// stage needed, such as the IDE controller's when there is no seed or state disk).
    #[serde(default)]
    pub modules_pending: usize,
    /// Number of errors recorded during boot (details in the status document).
    pub errors: usize,
    /// Number of warnings recorded during boot.
    pub warnings: usize,
}

impl ReadyReport {
    /// Renders the complete console line, `virga: ready {json}`.
    pub fn to_line(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        let json = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned());
        format!("{}{}", console::READY_PREFIX, json)
    }

    /// Parses a console line; `None` when the line is not a ready line or its JSON is malformed.
    pub fn parse_line(line: &str) -> Option<Self> {
        let json = line.trim_end().split_once(console::READY_PREFIX)?.1;
        serde_json::from_str(json).ok()
    }
}

/// A boot-time problem, kept in the status document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Where it happened: a stage or component name.
    pub source: String,
    /// Human-readable message, one line.
    pub message: String,
}

/// The guest's status document, written to [`console::STATUS_PATH`] and printed by
/// `virga status --json`. Fields added by later capabilities are optional so old readers keep
/// working.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Contract version ([`CONTRACT_VERSION`]).
    pub contract: u32,
    /// virga version of the guest binary.
    pub version: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Hostname at the end of boot.
    pub hostname: String,
    /// Boot stages in the order they ran.
    pub stages: Vec<StageTiming>,
    /// Kernel start → PID 1, in milliseconds.
    pub kernel_ms: f64,
    /// PID 1 → ready, in milliseconds (0 until ready).
    pub init_ms: f64,
    /// Whether boot reached the ready line.
    pub ready: bool,
    /// Modules loaded at boot.
    #[serde(default)]
    pub modules_loaded: Vec<String>,
    /// PID 1's module loader: start → every module finished, in milliseconds (`None` while
    /// modules are still loading; the loader runs in the background and may end after ready).
    #[serde(default)]
    pub modules_ms: Option<f64>,

    /// Whether the kernel's random pool was initialised at the end of the rng stage.
    #[serde(default)]
    pub entropy_ready: bool,
    /// Supervised services and their state.
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
    /// Whether `/var/lib/virga` is on a persistent state disk (labelled `virga-state`).
    #[serde(default)]
    pub persistent_state: bool,
    /// How the state grew at this boot (`vda7 grown from 184 to 440 MiB; …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_grown: Option<String>,
    /// The dm-verity root hash of the system mounted on `/usr` (disk images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_system: Option<String>,
    /// Which datasource answered and what it said about the instance.
    #[serde(default)]
    pub datasource: Option<DatasourceStatus>,
    /// Interfaces, addresses, routes and DHCP leases (see `docs/network.md`).
    #[serde(default)]
    pub network: Option<serde_json::Value>,
    /// What user-data did: parts, cloud-config modules run or skipped, unknown keys.
    #[serde(default)]
    pub user_data: Option<UserDataStatus>,
    /// SSH server: listening, host key fingerprints.
    #[serde(default)]
    pub ssh: Option<serde_json::Value>,
    /// A disk image's update agent at boot: a rollback noticed, the slot marked good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<serde_json::Value>,
    /// Non-fatal problems.
    #[serde(default)]
    pub warnings: Vec<Problem>,
    /// Failures; boot went on regardless.
    #[serde(default)]
    pub errors: Vec<Problem>,
}

/// The datasource that provided the instance's metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasourceStatus {
    /// Datasource name (`nocloud`, `configdrive`, `ec2`, `openstack`, `nocloud-net`, `none`).
    pub name: String,
    /// Where it was found (a device, a directory or a URL).
    pub source: String,
    /// The instance id.
    pub instance_id: String,
    /// Whether the instance id differs from the previous boot's (first boot included).
    pub new_instance: bool,
    /// The hostname it provided.
    #[serde(default)]
    pub local_hostname: Option<String>,
    /// Availability zone.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// Each datasource tried, in order, with the outcome (`found`, or why not).
    #[serde(default)]
    pub tried: Vec<String>,
    /// Milliseconds spent detecting, fetching and parsing.
    #[serde(default)]
    pub ms: f64,
}

/// What user-data did at this boot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDataStatus {
    /// Part kinds in order (`cloud-config`, `x-shellscript`, …).
    #[serde(default)]
    pub parts: Vec<String>,
    /// `name: ran|skipped (reason)|failed (reason)` per module or script.
    #[serde(default)]
    pub actions: Vec<String>,
    /// cloud-config keys virga does not support (warned, ignored).
    #[serde(default)]
    pub unknown_keys: Vec<String>,
}

/// State of one supervised service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Process id while running.
    pub pid: Option<u32>,
    /// How many times it has been restarted.
    pub restarts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReadyReport {
        ReadyReport {
            contract: CONTRACT_VERSION,
            version: "0.1.0".into(),
            uptime_ms: 2100.5,
            kernel_ms: 2000.0,
            init_ms: 100.5,
            stages: vec![StageTiming {
                name: "mounts".into(),
                ms: 1.25,
                result: StageResult::Ok,
            }],
            modules_pending: 3,
            errors: 0,
            warnings: 1,
        }
    }

    #[test]
    fn ready_line_without_modules_pending_still_parses() {
        let line = r#"virga: ready {"contract":1,"version":"0.1.0","uptime_ms":1.0,"kernel_ms":1.0,"init_ms":1.0,"stages":[],"errors":0,"warnings":0}"#;
        assert_eq!(ReadyReport::parse_line(line).unwrap().modules_pending, 0);
    }

    #[test]
    fn ready_line_round_trips() {
        let r = sample();
        let line = r.to_line();
        assert!(line.starts_with("virga: ready {"));
        assert_eq!(ReadyReport::parse_line(&line), Some(r));
    }

    #[test]
    fn ready_line_found_after_console_noise() {
        let line = format!(
            "\r[    2.1] random: crng init done{}\r\n",
            sample().to_line()
        );
        assert!(ReadyReport::parse_line(&line).is_some());
    }

    #[test]
    fn non_ready_lines_are_rejected() {
        assert_eq!(ReadyReport::parse_line("virga: ready"), None);
        assert_eq!(ReadyReport::parse_line("virga: ready {not json"), None);
        assert_eq!(ReadyReport::parse_line("hello"), None);
    }

    #[test]
    fn status_reads_documents_without_optional_fields() {
        let json = r#"{"contract":1,"version":"0.1.0","kernel":"6.1","hostname":"virga",
            "stages":[],"kernel_ms":1.0,"init_ms":2.0,"ready":true}"#;
        let s: Status = serde_json::from_str(json).unwrap();
        assert!(s.ready);
        assert!(s.errors.is_empty());
    }
}
