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
//! - [`hostname`]: the one RFC 1123 hostname validator every source uses (public for the guest).
//! - [`platform`]: which metadata services are plausible on this machine, from DMI strings
//!   (cloud-init's `ds-identify` rules), before anything is sent to 169.254.169.254.
//!
//! Every parser of untrusted input is total: it returns [`MetadataError`], never panics, caps
//! input size, nesting and node counts ([`Limits`]), and has a fuzz target in `fuzz/`.
//!
//! **Memory budget.** With the default limits one parser call adds at most
//! [`MEMORY_BUDGET`] (48 MiB) of heap to its input, whatever the input: YAML is streamed from
//! libyaml's event parser into a tree whose depth, node count, string bytes and alias
//! expansions are checked before each allocation; gzip is decoded in steps under an output
//! cap and a ratio limit; MIME splitting stops at the part limit. `tests/memory.rs` measures
//! every bomb with a counting allocator; see [`MEMORY_BUDGET`] and `docs/metadata.md`.
//!
//! **Degrade, never discard.** A datasource that is present yields everything usable it holds:
//! a bad file or field is dropped and recorded in [`InstanceMetadata::problems`] (file, field,
//! message), a missing instance id gets a stable [`fallback_instance_id`]. Problems inside
//! user-data and cloud-config (unknown keys, unsupported parts) are warning strings on
//! [`UserData`] and [`CloudConfig`]. The formats, limits and the choices made where cloud-init
//! and CirrOS differ are documented in `docs/metadata.md`.

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
