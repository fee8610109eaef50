//! Which cloud this machine is on, from its DMI/SMBIOS strings (as cloud-init's `ds-identify`
//! does), read once per boot: the network metadata services are probed only where the platform
//! has them, and the DMI product UUID backs a missing instance id.

use std::sync::OnceLock;

use cloud_metadata::platform::{Dmi, Identity, identify};

/// The platform, as read from `/sys/class/dmi/id` (and `/sys/hypervisor/uuid` on Xen).
#[derive(Debug, Clone)]
pub struct Platform {
    /// What the DMI strings say.
    pub identity: Identity,
    /// The machine's own id (DMI `product_uuid`), when it has one.
    pub platform_id: Option<String>,
}

/// This machine's platform (read once).
pub fn get() -> &'static Platform {
    static PLATFORM: OnceLock<Platform> = OnceLock::new();
    PLATFORM.get_or_init(|| {
        let read = |name: &str| std::fs::read_to_string(format!("/sys/class/dmi/id/{name}")).ok();
        let mut dmi = Dmi::from_reader(read);
        dmi.hypervisor_uuid = std::fs::read_to_string("/sys/hypervisor/uuid")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let identity = identify(&dmi);
        tracing::info!("platform: {:?} ({})", identity.cloud, identity.reason);
        Platform {
            identity,
            platform_id: dmi.product_uuid,
        }
    })
}
