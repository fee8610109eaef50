//! The boot context every stage works from: the command line as PID 1 parsed it, the image's
//! configuration, the status document (and writing it out), and the state the cloud stages
//! hand to each other.
//!
//! This module sits below every stage and the orchestrator (`pid1`): stages depend on it, it
//! depends on no stage.

use std::sync::{Mutex, MutexGuard};

use boot_contract::cmdline::BootParams;
use boot_contract::console::STATUS_PATH;
use boot_contract::{IMAGE_CONFIG_PATH, ImageConfig, Problem, Status};
use cloud_metadata::{CloudConfig, InstanceMetadata, UserData};

/// Where the datasource's answer is kept for `virga query` and the applets.
pub const DATASOURCE_JSON: &str = "/run/virga/datasource.json";

/// What the cloud stages learn and hand to each other.
#[derive(Debug, Default)]
pub struct CloudState {
    /// The datasource's answer.
    pub md: Option<InstanceMetadata>,
    /// Where it came from.
    pub source: String,
    /// Datasources tried.
    pub tried: Vec<String>,
    /// Whether the instance id changed since the last boot.
    pub new_instance: bool,
    /// Time spent in detection.
    pub detect_ms: f64,
    /// Decoded user-data.
    pub user_data: Option<UserData>,
    /// Merged cloud-config (user-data, after vendor-data).
    pub cloud_config: CloudConfig,
    /// Whether the local pass found nothing and the network pass should run.
    pub need_network_ds: bool,
    /// Whether the network stage configured an interface (a DHCP lease or a static address):
    /// without one the metadata services are not probed.
    pub network_up: bool,
}

/// Shared boot state: configuration in, status out.
#[derive(Debug)]
pub struct Ctx {
    /// The kernel command line, as read (NoCloud's `ds=` seed string is parsed from it).
    pub cmdline: String,
    /// Its `virga.` keys, parsed once.
    pub params: BootParams,
    /// What the image builder told us.
    pub image: ImageConfig,
    status: Mutex<Status>,
    cloud: Mutex<CloudState>,
}

impl Ctx {
    /// A context for this command line, image and initial status.
    pub fn new(cmdline: String, image: ImageConfig, status: Status) -> Self {
        let params = BootParams::parse(&cmdline);
        Ctx {
            cmdline,
            params,
            image,
            status: Mutex::new(status),
            cloud: Mutex::new(CloudState::default()),
        }
    }

    /// A context for applets run after boot: the image config and command line as PID 1 saw
    /// them, the status document as PID 1 wrote it, and the metadata saved at boot.
    pub fn standalone() -> Self {
        let (image, _) = read_image_config();
        let status = std::fs::read_to_string(STATUS_PATH)
            .ok()
            .and_then(|t| serde_json::from_str::<Status>(&t).ok())
            .unwrap_or_default();
        let cmdline = std::fs::read_to_string("/proc/cmdline")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let ctx = Ctx::new(cmdline, image, status);
        ctx.cloud().md = saved_metadata().ok();
        ctx
    }

    /// Records and logs a warning.
    pub fn warn(&self, source: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!("{source}: {message}");
        self.update(|s| {
            s.warnings.push(Problem {
                source: source.into(),
                message,
            })
        });
    }

    /// Records and logs an error; boot goes on.
    pub fn error(&self, source: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::error!("{source}: {message}");
        self.update(|s| {
            s.errors.push(Problem {
                source: source.into(),
                message,
            })
        });
    }

    /// Changes the status document.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut guard = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
    }

    /// A copy of the status document.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The cloud stages' shared state.
    pub fn cloud(&self) -> MutexGuard<'_, CloudState> {
        self.cloud.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `/var/lib/virga` is the state disk (as the `state` stage recorded it).
    pub fn persistent(&self) -> bool {
        self.status().persistent_state
    }

    /// Writes the status document to `/run/virga/status.json` atomically. Writers (the boot
    /// sequence, the supervisor, the module loader finishing after ready) take turns.
    pub fn write_status(&self) {
        static WRITING: Mutex<()> = Mutex::new(());
        let _turn = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        let mut json = serde_json::to_string_pretty(&self.status()).unwrap_or_default();
        json.push('\n');
        if let Err(e) = crate::fsutil::write_atomic(STATUS_PATH, json.as_bytes(), 0o644, false) {
            tracing::error!("{STATUS_PATH}: {e}");
        }
    }
}

/// The image configuration the builder wrote, or defaults with the reason it could not be read.
pub fn read_image_config() -> (ImageConfig, Option<String>) {
    match std::fs::read_to_string(IMAGE_CONFIG_PATH)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<ImageConfig>(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => (c, None),
        Err(e) => (
            ImageConfig {
                hostname: "virga".into(),
                ..ImageConfig::default()
            },
            Some(format!("{IMAGE_CONFIG_PATH}: {e}; using defaults")),
        ),
    }
}

/// Why the metadata saved at boot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SavedMetadataError {
    /// No file: no datasource answered at boot.
    #[error("{DATASOURCE_JSON}: {0} (no datasource found at boot?)")]
    Read(#[source] std::io::Error),
    /// The file is not what PID 1 wrote.
    #[error("{DATASOURCE_JSON}: {0}")]
    Parse(#[source] serde_json::Error),
}

/// Reads the datasource's answer saved at boot (for the applets).
pub fn saved_metadata() -> Result<InstanceMetadata, SavedMetadataError> {
    let text = std::fs::read_to_string(DATASOURCE_JSON).map_err(SavedMetadataError::Read)?;
    serde_json::from_str(&text).map_err(SavedMetadataError::Parse)
}
