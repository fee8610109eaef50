//! Sans-IO cloud metadata for virga: datasources, network config, user-data, cloud-config.
//!
//! Pipeline position: `ImageSpec` → image builder → artifacts → VM → **PID 1 → agents**. The
//! guest's `ds` agent (and host tools such as the metadata server and `virga seed`) use this
//! crate to turn what a cloud hands a VM — a NoCloud seed, an OpenStack config drive, the EC2 or
//! OpenStack metadata service — into one [`InstanceMetadata`], then decode its user-data into
//! parts ([`user_data`]) and cloud-config ([`cloud_config`]), and decide what runs when
//! ([`frequency`]). It never touches the network or the disk: the guest wraps the types here in
//! thin drivers (mounting the seed disk, HTTP via ureq).
//!
//! - Datasources: [`nocloud`], [`openstack`] (config drive and metadata service), [`ec2`].
//!   Network-backed ones are [`http::Crawler`] state machines: they emit [`http::HttpRequest`]s
//!   and consume [`http::HttpOutcome`]s; [`retry::Backoff`] paces retries.
//! - [`network`]: network-config v1/v2 and `network_data.json` into one [`NetworkConfig`].
//! - [`user_data`], [`cloud_config`], [`write_files`], [`frequency`], [`sshkey`].
//!
//! Every parser of untrusted input is total: it returns [`MetadataError`], never panics, caps
//! input size, nesting and node counts ([`Limits`]), and has a fuzz target in `fuzz/`.
//! Problems that do not prevent a result (unknown keys, unsupported items, invalid SSH keys)
//! are returned as warning strings alongside the result. The formats, limits and the choices
//! made where cloud-init and CirrOS differ are documented in `docs/metadata.md`.

pub mod cloud_config;
pub mod ec2;
mod error;
pub mod frequency;
pub mod hostname;
pub mod http;
mod limits;
mod model;
pub mod network;
pub mod nocloud;
pub mod openstack;
pub mod platform;
pub mod retry;
pub mod sshkey;
pub mod user_data;
pub mod value;
pub mod write_files;
mod yaml_sys;

pub use cloud_config::CloudConfig;
pub use error::MetadataError;
pub use limits::{Limits, MEMORY_BUDGET};
pub use model::{
    Datasource, InjectedFile, InstanceMetadata, Problem, QUERY_KEYS, QueryValue,
    fallback_instance_id,
};
pub use network::NetworkConfig;
pub use user_data::{UserData, parse_user_data};
