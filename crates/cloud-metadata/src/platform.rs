//! Platform identification before probing (as cloud-init's `ds-identify`): from the machine's
//! DMI/SMBIOS strings, which network metadata services are plausible at all.
//!
//! Sending a request to 169.254.169.254 that the service there does not speak is not free: an
//! OpenStack probe must not be the first thing an EC2-only service sees, and on a plain QEMU
//! or bare-metal machine nothing answers and every probe waits for its timeout. So the guest
//! reads a few DMI fields (sans-IO here: the caller reads `/sys/class/dmi/id/*`, see
//! [`DMI_FIELDS`]) and probes only what [`identify`] finds plausible, unless the datasource
//! list was given explicitly.
//!
//! The checks follow `ds-identify` (`dscheck_OpenStack`, `ec2_identify_platform`) and
//! cloud-init's `identify_aws`:
//! - **OpenStack**: `product_name` is `OpenStack Nova` or `OpenStack Compute` (RDO), or
//!   `chassis_asset_tag` is one of those or `OpenTelekomCloud`, `SAP CCloud VM`, `HUAWEICLOUD`,
//!   `Samsung Cloud Platform` (clouds whose product name is their hypervisor's). Nova also
//!   serves an EC2-compatible tree, so EC2 stays plausible, after OpenStack.
//! - **EC2**: `sys_vendor` or `bios_vendor` is `Amazon EC2` or `Amazon` (Nitro), or the system
//!   UUID (`product_uuid`, or Xen's `/sys/hypervisor/uuid`) starts with `ec2`, in either byte
//!   order of its first field (`EC2E1916-…` or `45E12AEC-…`, older Xen instances).
//! - Anything else (QEMU, VirtualBox, bare metal, unreadable DMI): no network service is
//!   plausible.
//!
//! Comparisons ignore case and surrounding whitespace. OpenStack's explicit markers are checked
//! before EC2's UUID rule, which one random UUID in 4096 also matches.

use crate::Datasource;

/// The `/sys/class/dmi/id/` files [`Dmi::from_reader`] asks for (`product_uuid` is readable
/// by root only).
pub const DMI_FIELDS: &[&str] = &[
    "sys_vendor",
    "product_name",
    "product_uuid",
    "product_serial",
    "chassis_asset_tag",
    "chassis_vendor",
    "bios_vendor",
    "bios_version",
    "board_vendor",
];

/// DMI/SMBIOS strings of the machine (absent fields are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dmi {
    /// `sys_vendor` (SMBIOS system manufacturer).
    pub sys_vendor: Option<String>,
    /// `product_name`.
    pub product_name: Option<String>,
    /// `product_uuid` (SMBIOS system UUID).
    pub product_uuid: Option<String>,
    /// `product_serial`.
    pub product_serial: Option<String>,
    /// `chassis_asset_tag`.
    pub chassis_asset_tag: Option<String>,
    /// `chassis_vendor`.
    pub chassis_vendor: Option<String>,
    /// `bios_vendor`.
    pub bios_vendor: Option<String>,
    /// `bios_version`.
    pub bios_version: Option<String>,
    /// `board_vendor`.
    pub board_vendor: Option<String>,
    /// `/sys/hypervisor/uuid` (Xen guests), not a DMI field.
    pub hypervisor_uuid: Option<String>,
}

impl Dmi {
    /// Fills the fields of [`DMI_FIELDS`] from `read(name)` (e.g. the content of
    /// `/sys/class/dmi/id/<name>`); values are trimmed, empty ones dropped. `hypervisor_uuid`
    /// is left for the caller.
    pub fn from_reader(mut read: impl FnMut(&str) -> Option<String>) -> Self {
        let mut get = |name: &str| {
            read(name)
                .map(|v| v.trim().chars().take(256).collect::<String>())
                .filter(|v| !v.is_empty())
        };
        Dmi {
            sys_vendor: get("sys_vendor"),
            product_name: get("product_name"),
            product_uuid: get("product_uuid"),
            product_serial: get("product_serial"),
            chassis_asset_tag: get("chassis_asset_tag"),
            chassis_vendor: get("chassis_vendor"),
            bios_vendor: get("bios_vendor"),
            bios_version: get("bios_version"),
            board_vendor: get("board_vendor"),
            hypervisor_uuid: None,
        }
    }
}

/// Which cloud the machine looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Amazon EC2 (or a cloud that presents itself as EC2).
    Ec2,
    /// An OpenStack (Nova) cloud.
    Openstack,
    /// Nothing identifies a cloud: plain QEMU, other hypervisors, bare metal.
    Unknown,
}

/// What [`identify`] concluded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The cloud.
    pub cloud: Cloud,
    /// The DMI evidence, e.g. `product_name is "OpenStack Nova"` (for logs and status).
    pub reason: String,
}

impl Identity {
    /// The network metadata services worth probing here, in the order to probe them.
    pub fn plausible(&self) -> &'static [Datasource] {
        match self.cloud {
            Cloud::Ec2 => &[Datasource::Ec2],
            Cloud::Openstack => &[Datasource::Openstack, Datasource::Ec2],
            Cloud::Unknown => &[],
        }
    }

    /// Whether probing `ds` makes sense here. Only the services at 169.254.169.254 (EC2,
    /// OpenStack) are judged; local sources, `nocloud-net` (its URL is given explicitly) and
    /// `none` are always plausible.
    pub fn is_plausible(&self, ds: Datasource) -> bool {
        !matches!(ds, Datasource::Ec2 | Datasource::Openstack) || self.plausible().contains(&ds)
    }

    /// `order` without the implausible network services (order kept), and one message per
    /// datasource left out. For the image's default list; a list the user gave on the kernel
    /// command line should be probed as given.
    pub fn filter(&self, order: &[Datasource]) -> (Vec<Datasource>, Vec<String>) {
        let mut kept = Vec::new();
        let mut skipped = Vec::new();
        for &ds in order {
            if self.is_plausible(ds) {
                kept.push(ds);
            } else {
                skipped.push(format!(
                    "{ds}: not probed, the platform is {} ({})",
                    match self.cloud {
                        Cloud::Ec2 => "EC2",
                        Cloud::Openstack => "OpenStack",
                        Cloud::Unknown => "no known cloud",
                    },
                    self.reason
                ));
            }
        }
        (kept, skipped)
    }
}

const OPENSTACK_PRODUCTS: &[&str] = &["OpenStack Nova", "OpenStack Compute"];
const OPENSTACK_ASSET_TAGS: &[&str] = &[
    "OpenStack Nova",
    "OpenStack Compute",
    "OpenTelekomCloud",
    "SAP CCloud VM",
    "HUAWEICLOUD",
    "Samsung Cloud Platform",
];
const EC2_VENDORS: &[&str] = &["Amazon EC2", "Amazon"];

/// Identifies the platform from its DMI strings (see the module docs for the rules).
pub fn identify(dmi: &Dmi) -> Identity {
    let is = |field: &Option<String>, names: &[&str]| {
        field
            .as_deref()
            .map(str::trim)
            .and_then(|v| names.iter().find(|n| n.eq_ignore_ascii_case(v)))
            .is_some()
    };
    let found = |cloud, reason: String| Identity { cloud, reason };
    if is(&dmi.product_name, OPENSTACK_PRODUCTS) {
        return found(Cloud::Openstack, quote("product_name", &dmi.product_name));
    }
    if is(&dmi.chassis_asset_tag, OPENSTACK_ASSET_TAGS) {
        return found(
            Cloud::Openstack,
            quote("chassis_asset_tag", &dmi.chassis_asset_tag),
        );
    }
    if is(&dmi.sys_vendor, EC2_VENDORS) {
        return found(Cloud::Ec2, quote("sys_vendor", &dmi.sys_vendor));
    }
    if is(&dmi.bios_vendor, EC2_VENDORS) {
        return found(Cloud::Ec2, quote("bios_vendor", &dmi.bios_vendor));
    }
    for (name, uuid) in [
        ("hypervisor uuid", &dmi.hypervisor_uuid),
        ("product_uuid", &dmi.product_uuid),
    ] {
        if uuid.as_deref().is_some_and(is_ec2_uuid) {
            return found(Cloud::Ec2, format!("{} starts with ec2", quote(name, uuid)));
        }
    }
    let what = [&dmi.sys_vendor, &dmi.product_name]
        .iter()
        .filter_map(|v| v.as_deref())
        .collect::<Vec<_>>()
        .join(" ");
    Identity {
        cloud: Cloud::Unknown,
        reason: if what.is_empty() {
            "no DMI vendor or product".to_owned()
        } else {
            format!("DMI says {:?}", crate::model::truncate_at_char(&what, 80))
        },
    }
}

fn quote(name: &str, value: &Option<String>) -> String {
    format!(
        "{name} is {:?}",
        crate::model::truncate_at_char(value.as_deref().unwrap_or("").trim(), 80)
    )
}

/// An EC2 system UUID: `ec2…` as written, or with the first field's bytes swapped
/// (`45E12AEC-…` is `EC2AE145` little-endian).
fn is_ec2_uuid(uuid: &str) -> bool {
    let u = uuid.trim().to_ascii_lowercase();
    if u.starts_with("ec2") {
        return true;
    }
    let first = u.split('-').next().unwrap_or("");
    first.len() == 8
        && first.bytes().all(|b| b.is_ascii_hexdigit())
        && first.ends_with("ec")
        && first.as_bytes()[4] == b'2'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dmi(fields: &[(&str, &str)]) -> Dmi {
        let mut d = Dmi::from_reader(|name| {
            fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| format!("{v}\n"))
        });
        d.hypervisor_uuid = fields
            .iter()
            .find(|(k, _)| *k == "hypervisor_uuid")
            .map(|(_, v)| (*v).to_owned());
        d
    }

    #[test]
    fn aws_nitro() {
        // An m5 instance: the Nitro hypervisor names Amazon in every vendor field.
        let d = dmi(&[
            ("sys_vendor", "Amazon EC2"),
            ("product_name", "m5.large"),
            ("bios_vendor", "Amazon EC2"),
            ("bios_version", "1.0"),
            ("board_vendor", "Amazon EC2"),
            ("chassis_vendor", "Amazon EC2"),
            ("product_uuid", "ec2a8f5e-2c83-1e3f-4d70-6a5e8b1c2d3e"),
        ]);
        let id = identify(&d);
        assert_eq!(id.cloud, Cloud::Ec2);
        assert_eq!(id.reason, "sys_vendor is \"Amazon EC2\"");
        assert_eq!(id.plausible(), [Datasource::Ec2]);
        // Only the BIOS says so (some instance types).
        assert_eq!(
            identify(&dmi(&[
                ("sys_vendor", "Amazon.com"),
                ("bios_vendor", "Amazon")
            ]))
            .cloud,
            Cloud::Ec2
        );
    }

    #[test]
    fn aws_xen_by_uuid() {
        for uuid in [
            "EC2E1916-9099-7CAF-FD21-012345ABCDEF",
            "ec2E1916-9099-7CAF-FD21-012345ABCDEF",
            "45E12AEC-DCD1-B213-94ED-012345ABCDEF",
        ] {
            let d = dmi(&[
                ("sys_vendor", "Xen"),
                ("product_name", "HVM domU"),
                ("bios_vendor", "Xen"),
                ("bios_version", "4.11.amazon"),
                ("product_uuid", uuid),
            ]);
            assert_eq!(identify(&d).cloud, Cloud::Ec2, "{uuid}");
        }
        let d = dmi(&[
            ("sys_vendor", "Xen"),
            ("hypervisor_uuid", "ec2b8a31-5d5c-4c8e-8e62-4f2a3f4d0a1b"),
        ]);
        assert!(identify(&d).reason.starts_with("hypervisor uuid"));
    }

    #[test]
    fn openstack() {
        let nova = dmi(&[
            ("sys_vendor", "OpenStack Foundation"),
            ("product_name", "OpenStack Nova"),
            ("bios_vendor", "SeaBIOS"),
            ("product_uuid", "b0fa911b-69d4-4476-bbe2-1c92bff6535c"),
        ]);
        let id = identify(&nova);
        assert_eq!(id.cloud, Cloud::Openstack);
        assert_eq!(id.plausible(), [Datasource::Openstack, Datasource::Ec2]);
        let rdo = dmi(&[
            ("sys_vendor", "Red Hat"),
            ("product_name", "OpenStack Compute"),
        ]);
        assert_eq!(identify(&rdo).cloud, Cloud::Openstack);
        // Open Telekom Cloud: Xen, the product name says nothing, the asset tag does.
        let otc = dmi(&[
            ("sys_vendor", "Xen"),
            ("product_name", "HVM domU"),
            ("chassis_asset_tag", "OpenTelekomCloud"),
        ]);
        assert_eq!(identify(&otc).cloud, Cloud::Openstack);
        let tagged = dmi(&[
            ("product_name", "KVM"),
            ("chassis_asset_tag", "OpenStack Nova"),
        ]);
        assert_eq!(identify(&tagged).cloud, Cloud::Openstack);
        // An OpenStack VM whose random UUID happens to start with ec2 is still OpenStack.
        let lucky = dmi(&[
            ("product_name", "OpenStack Nova"),
            ("product_uuid", "ec2d93a0-1111-2222-3333-444455556666"),
        ]);
        assert_eq!(identify(&lucky).cloud, Cloud::Openstack);
    }

    #[test]
    fn plain_qemu_and_others_probe_nothing() {
        for fields in [
            vec![
                ("sys_vendor", "QEMU"),
                ("product_name", "Standard PC (i440FX + PIIX, 1996)"),
                ("bios_vendor", "SeaBIOS"),
                ("bios_version", "1.16.3-debian-1.16.3-2"),
            ],
            vec![
                ("sys_vendor", "QEMU"),
                ("product_name", "Standard PC (Q35 + ICH9, 2009)"),
                ("product_uuid", "00000000-0000-0000-0000-000000000000"),
            ],
            vec![
                ("sys_vendor", "innotek GmbH"),
                ("product_name", "VirtualBox"),
            ],
            vec![
                ("sys_vendor", "Dell Inc."),
                ("product_name", "PowerEdge R640"),
            ],
            vec![],
        ] {
            let id = identify(&dmi(&fields));
            assert_eq!(id.cloud, Cloud::Unknown, "{fields:?}");
            assert!(id.plausible().is_empty());
        }
    }

    #[test]
    fn filtering_the_order() {
        let order = [
            Datasource::NoCloud,
            Datasource::ConfigDrive,
            Datasource::Openstack,
            Datasource::Ec2,
            Datasource::NoCloudNet,
            Datasource::None,
        ];
        let aws = identify(&dmi(&[("sys_vendor", "Amazon EC2")]));
        let (kept, skipped) = aws.filter(&order);
        // An EC2-only service never sees an OpenStack probe.
        assert_eq!(
            kept,
            [
                Datasource::NoCloud,
                Datasource::ConfigDrive,
                Datasource::Ec2,
                Datasource::NoCloudNet,
                Datasource::None
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].starts_with("openstack: not probed, the platform is EC2"));
        let qemu = identify(&dmi(&[("sys_vendor", "QEMU")]));
        let (kept, skipped) = qemu.filter(&order);
        assert!(!kept.contains(&Datasource::Ec2) && !kept.contains(&Datasource::Openstack));
        assert_eq!(skipped.len(), 2);
    }

    proptest! {
        #[test]
        fn never_panics(fields in proptest::collection::vec("\\PC{0,40}", 10)) {
            let d = Dmi::from_reader(|name| {
                DMI_FIELDS.iter().position(|f| *f == name).map(|i| fields[i].clone())
            });
            let id = identify(&d);
            let _ = id.filter(&[Datasource::Ec2, Datasource::Openstack]);
            prop_assert!(!id.reason.contains('\n'));
        }
    }
}
