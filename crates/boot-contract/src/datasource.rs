//! Datasource names, as `virga.ds=`, the image spec's `datasources`, `virga run --datasource`
//! and the status document spell them. The guest maps them onto its datasource drivers
//! (`cloud_metadata::Datasource`, which also accepts cloud-init's spellings; a test there
//! checks that it reads every name here).

/// A NoCloud seed on a local disk (label `cidata`) or in a seed directory.
pub const NOCLOUD: &str = "nocloud";
/// A NoCloud seed fetched over HTTP (`ds=nocloud-net;s=http://…/`).
pub const NOCLOUD_NET: &str = "nocloud-net";
/// An OpenStack config drive (label `config-2`).
pub const CONFIGDRIVE: &str = "configdrive";
/// The OpenStack metadata service.
pub const OPENSTACK: &str = "openstack";
/// The EC2 instance metadata service.
pub const EC2: &str = "ec2";
/// No datasource: built-in defaults.
pub const NONE: &str = "none";

/// Every datasource name.
pub const NAMES: &[&str] = &[NOCLOUD, NOCLOUD_NET, CONFIGDRIVE, OPENSTACK, EC2, NONE];

/// The order an image tries datasources in when its spec does not say: local seeds first (read
/// before the network is up), then the metadata services, then `none`.
pub const DEFAULT_ORDER: &[&str] = &[NOCLOUD, CONFIGDRIVE, OPENSTACK, EC2, NONE];

/// The datasources of a VM on QEMU user networking that names none: only local ones, since
/// QEMU's user networking would turn a guest's connection to 169.254.169.254 into a connection
/// from the host to that address.
pub const USER_NETWORK_ORDER: &[&str] = &[NOCLOUD, CONFIGDRIVE, NONE];

/// Whether `name` is a datasource name.
pub fn is_known(name: &str) -> bool {
    NAMES.contains(&name)
}
