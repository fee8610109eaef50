//! What a VM is given to learn who it is: a NoCloud or ConfigDrive seed disk, or an EC2 or
//! OpenStack metadata service behind QEMU's `guestfwd`, plus a persistent state disk.
//!
//! Never the host's 169.254.169.254: with a metadata service the VM's user network is moved to
//! 169.254.169.0/24 and QEMU itself answers 169.254.169.254:80 by running
//! `virga metadata-server --stdio` once per guest connection (`docs/metadata-server.md`).

use std::path::{Path, PathBuf};
use std::process::Command;

use metadata_server::{Cloud, InstanceSpec, Layout, PublicKey, TokenKey};
use seed_image::{SeedFormat, SeedKind, SeedTree};

use crate::{Drive, DriveKind, VmConfig, VmError};

/// Where the guest's metadata comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datasource {
    /// A `cidata` seed disk.
    NoCloud,
    /// A `config-2` config drive.
    ConfigDrive,
    /// The EC2 instance metadata service.
    Ec2,
    /// The OpenStack metadata service.
    OpenStack,
    /// Nothing: the guest uses its built-in defaults.
    None,
}

impl Datasource {
    /// The guest's name for it (`virga.ds=`).
    pub fn guest_name(self) -> &'static str {
        match self {
            Datasource::NoCloud => boot_contract::datasource::NOCLOUD,
            Datasource::ConfigDrive => boot_contract::datasource::CONFIGDRIVE,
            Datasource::Ec2 => boot_contract::datasource::EC2,
            Datasource::OpenStack => boot_contract::datasource::OPENSTACK,
            Datasource::None => boot_contract::datasource::NONE,
        }
    }
}

/// Everything that describes the instance.
#[derive(Debug, Clone)]
pub struct InstanceOptions {
    /// The datasource.
    pub datasource: Datasource,
    /// A directory in the cloud's own layout to attach or serve instead of a generated one.
    pub metadata_dir: Option<PathBuf>,
    /// Seed disk filesystem.
    pub seed_format: SeedFormat,
    /// Seed disk bus.
    pub seed_bus: DriveKind,
    /// Instance id; `None`: kept next to the state disk, else fresh.
    pub instance_id: Option<String>,
    /// Hostname the metadata gives.
    pub hostname: String,
    /// SSH public key lines.
    pub public_keys: Vec<String>,
    /// User-data.
    pub user_data: Option<Vec<u8>>,
    /// Extra cloud-config sections given to the guest as their own user-data part, merged after
    /// the user's (`virga.update` for `virga run --update-url`): `(key, JSON value)`.
    pub cloud_config_sections: Vec<(String, serde_json::Value)>,
    /// NoCloud network-config, or OpenStack network_data.json (JSON) for the OpenStack kinds.
    pub network_config: Option<Vec<u8>>,
    /// Persistent state disk, created when missing.
    pub state: Option<PathBuf>,
    /// State disk bus.
    pub state_bus: DriveKind,
    /// The `virga` executable QEMU runs as the metadata server.
    pub server_exe: PathBuf,
    /// Extra arguments for the metadata server (`--fault`, `--imds`, …).
    pub server_args: Vec<String>,
    /// Make the VM look like an instance of the datasource's cloud (SMBIOS system strings as
    /// EC2 Nitro or OpenStack Nova present them) and let the guest choose its datasources as it
    /// would there, from its image's list: no `virga.ds=` on the command line.
    pub as_cloud: bool,
}

impl InstanceOptions {
    /// A NoCloud instance with defaults; `server_exe` is only used by the service datasources.
    pub fn new(datasource: Datasource, server_exe: PathBuf) -> Self {
        Self {
            datasource,
            metadata_dir: None,
            seed_format: SeedFormat::Iso,
            seed_bus: DriveKind::Cdrom,
            state_bus: DriveKind::Virtio,
            instance_id: None,
            hostname: "virga-vm".into(),
            public_keys: Vec::new(),
            user_data: None,
            cloud_config_sections: Vec::new(),
            network_config: None,
            state: None,
            server_exe,
            server_args: Vec::new(),
            as_cloud: false,
        }
    }
}

/// SMBIOS system strings of a cloud's instances, as the guest's platform identification reads
/// them (`/sys/class/dmi/id/`); the UUID is derived from the instance id.
fn cloud_smbios(ds: Datasource, instance_id: &str) -> Vec<(String, String)> {
    use std::fmt::Write as _;
    let digest = {
        // A stable, valid UUID from the instance id (FNV-1a, enough for a test fixture).
        let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        for b in instance_id.bytes() {
            h ^= u128::from(b);
            h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
        }
        let mut hex = String::new();
        for byte in h.to_be_bytes() {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    };
    let uuid = |prefix: &str| {
        let hex = format!("{prefix}{}", &digest[prefix.len()..]);
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    };
    let pairs: &[(&str, String)] = match ds {
        Datasource::Ec2 => &[
            ("manufacturer", "Amazon EC2".into()),
            ("product", "t3.micro".into()),
            ("uuid", uuid("ec2")),
        ],
        Datasource::OpenStack | Datasource::ConfigDrive => &[
            ("manufacturer", "OpenStack Foundation".into()),
            ("product", "OpenStack Nova".into()),
            ("uuid", uuid("")),
        ],
        Datasource::NoCloud | Datasource::None => &[],
    };
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// What [`attach`] set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The instance id given to the guest, when virga generated the metadata.
    pub instance_id: Option<String>,
    /// The metadata server's access log (service datasources).
    pub access_log: Option<PathBuf>,
}

fn err(context: impl Into<String>, e: impl std::fmt::Display) -> VmError {
    VmError::Instance(format!("{}: {e}", context.into()))
}

/// Prepares the datasource and the state disk in `runtime` (a directory that must outlive the
/// VM) and adds them to `cfg`, including `virga.ds=<datasource>,none` on the command line.
pub fn attach(
    opts: &InstanceOptions,
    cfg: &mut VmConfig,
    runtime: &Path,
) -> Result<Attached, VmError> {
    let mut attached = Attached {
        instance_id: None,
        access_log: None,
    };
    if let Some(state) = &opts.state {
        ensure_state_disk(state)?;
        cfg.drives.push(Drive {
            path: state.clone(),
            kind: opts.state_bus,
            format: "raw".into(),
            read_only: false,
        });
    }
    if opts.as_cloud {
        let id = opts.instance_id.clone().unwrap_or_else(|| "i-virga".into());
        cfg.smbios_system = cloud_smbios(opts.datasource, &id);
    } else {
        cfg.cmdline.datasources(&[
            opts.datasource.guest_name(),
            boot_contract::datasource::NONE,
        ]);
    }
    if opts.datasource == Datasource::None {
        return Ok(attached);
    }
    let dir = match &opts.metadata_dir {
        Some(d) if d.is_dir() => d
            .canonicalize()
            .map_err(|e| err(d.display().to_string(), e))?,
        Some(d) => {
            return Err(VmError::Instance(format!(
                "metadata directory {} does not exist",
                d.display()
            )));
        }
        None => {
            let spec = instance_spec(opts)?;
            let layout = match opts.datasource {
                Datasource::NoCloud => Layout::NoCloud,
                Datasource::ConfigDrive => Layout::ConfigDrive,
                Datasource::Ec2 => Layout::Ec2Imds,
                Datasource::OpenStack => Layout::OpenStackService,
                Datasource::None => Layout::NoCloud,
            };
            let dir = runtime.join("metadata");
            let tree = spec
                .generate(layout)
                .map_err(|e| err("generating metadata", e))?;
            metadata_server::write_tree(&tree, &dir).map_err(|e| err("writing metadata", e))?;
            attached.instance_id = Some(spec.instance_id);
            dir
        }
    };
    match opts.datasource {
        Datasource::NoCloud | Datasource::ConfigDrive => {
            let kind = if opts.datasource == Datasource::NoCloud {
                SeedKind::NoCloud
            } else {
                SeedKind::ConfigDrive
            };
            let mut tree =
                SeedTree::from_dir(&dir).map_err(|e| err(dir.display().to_string(), e))?;
            for w in kind
                .check_layout(&mut tree)
                .map_err(|e| err(dir.display().to_string(), e))?
            {
                tracing::warn!("seed: {w}");
            }
            let ext = if opts.seed_format == SeedFormat::Iso {
                "iso"
            } else {
                "img"
            };
            let image = runtime.join(format!("seed.{ext}"));
            seed_image::write_image(&tree, opts.seed_format, kind.default_label(), &image)
                .map_err(|e| err("writing the seed image", e))?;
            cfg.drives.push(Drive {
                path: image,
                kind: opts.seed_bus,
                format: "raw".into(),
                read_only: true,
            });
        }
        Datasource::Ec2 | Datasource::OpenStack => {
            let cloud = if opts.datasource == Datasource::Ec2 {
                Cloud::Ec2
            } else {
                Cloud::OpenStack
            };
            let secret = runtime.join("imds.key");
            TokenKey::generate()
                .and_then(|k| k.save_new(&secret))
                .map_err(|e| err("token secret", e))?;
            let access_log = runtime.join("metadata-access.log");
            let mut server = metadata_server::qemu::StdioCommand::new(
                &opts.server_exe,
                cloud,
                &dir,
                runtime.join("metadata-slots"),
            );
            server.token_secret_file = Some(secret);
            server.access_log = Some(access_log.clone());
            server.log_file = Some(runtime.join("metadata-server.log"));
            server.extra = opts.server_args.clone();
            cfg.user_net_extra
                .push(metadata_server::qemu::netdev_options(&server.argv()));
            cfg.metadata_served = true;
            attached.access_log = Some(access_log);
        }
        Datasource::None => {}
    }
    Ok(attached)
}

/// The user's user-data, with the extra cloud-config sections as a part of their own (a MIME
/// multipart when there is both). JSON is YAML, so each section is written as JSON.
fn combined_user_data(opts: &InstanceOptions) -> Option<Vec<u8>> {
    if opts.cloud_config_sections.is_empty() {
        return opts.user_data.clone();
    }
    let mut extra = String::from("#cloud-config\n");
    for (k, v) in &opts.cloud_config_sections {
        extra.push_str(&format!("{k}: {v}\n"));
    }
    let Some(user) = &opts.user_data else {
        return Some(extra.into_bytes());
    };
    let boundary = "==virga-run-boundary==";
    let mut out = format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n--{boundary}\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
    )
    .into_bytes();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(user);
    for line in b64.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(
        format!("--{boundary}\nContent-Type: text/cloud-config\n\n{extra}--{boundary}--\n")
            .as_bytes(),
    );
    Some(out)
}

fn instance_spec(opts: &InstanceOptions) -> Result<InstanceSpec, VmError> {
    let instance_id = match (&opts.instance_id, &opts.state) {
        (Some(id), _) => id.clone(),
        (None, Some(state)) => {
            let sidecar = sidecar(state);
            match std::fs::read_to_string(&sidecar) {
                Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
                _ => {
                    let id =
                        InstanceSpec::generate_instance_id().map_err(|e| err("instance id", e))?;
                    std::fs::write(&sidecar, format!("{id}\n"))
                        .map_err(|e| err(sidecar.display().to_string(), e))?;
                    id
                }
            }
        }
        (None, None) => InstanceSpec::generate_instance_id().map_err(|e| err("instance id", e))?,
    };
    let mut spec = InstanceSpec::new(instance_id, opts.hostname.clone());
    spec.public_keys = opts
        .public_keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| PublicKey::from_openssh(k, i))
        .collect();
    spec.user_data = combined_user_data(opts);
    if let Some(data) = &opts.network_config {
        match opts.datasource {
            Datasource::ConfigDrive | Datasource::OpenStack => {
                spec.network_data = Some(
                    serde_json::from_slice(data)
                        .map_err(|e| err("network_data.json must be JSON", e))?,
                );
            }
            _ => spec.network_config = Some(data.clone()),
        }
    }
    Ok(spec)
}

fn sidecar(state: &Path) -> PathBuf {
    let mut name = state
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".instance-id");
    state.with_file_name(name)
}

/// Creates an empty ext4 state disk labelled `virga-state` (256 MiB, sparse) if missing.
pub fn ensure_state_disk(path: &Path) -> Result<(), VmError> {
    if path.exists() {
        return Ok(());
    }
    let f = std::fs::File::create(path).map_err(|e| err(path.display().to_string(), e))?;
    f.set_len(256 * 1024 * 1024)
        .map_err(|e| err(path.display().to_string(), e))?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "virga-state"])
        .arg(path)
        .output()
        .map_err(|e| err("cannot run mkfs.ext4 (install e2fsprogs)", e))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(path);
        return Err(VmError::Instance(format!(
            "mkfs.ext4 {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Accel;

    fn cfg() -> VmConfig {
        VmConfig::new(
            "k".into(),
            "i".into(),
            crate::KernelCmdline::new("console=ttyS0"),
            Accel::Tcg { reason: "t".into() },
        )
    }

    #[test]
    fn nocloud_seed_is_attached_as_cdrom_and_readable() {
        let d = tempfile::tempdir().unwrap();
        let mut c = cfg();
        let mut o = InstanceOptions::new(Datasource::NoCloud, "/bin/false".into());
        o.instance_id = Some("i-test".into());
        o.user_data = Some(b"#!/bin/sh\necho hi\n".to_vec());
        let a = attach(&o, &mut c, d.path()).unwrap();
        assert_eq!(a.instance_id.as_deref(), Some("i-test"));
        assert!(c.cmdline.render().ends_with("virga.ds=nocloud,none"));
        assert_eq!(c.drives.len(), 1);
        let probe = seed_image::probe_path(&c.drives[0].path).unwrap().unwrap();
        assert!(probe.label_is("cidata"));
    }

    #[test]
    fn ec2_uses_the_moved_network_and_guestfwd() {
        let d = tempfile::tempdir().unwrap();
        let mut c = cfg();
        let o = InstanceOptions::new(Datasource::Ec2, "/usr/bin/virga".into());
        attach(&o, &mut c, d.path()).unwrap();
        let args = c.qemu_args().join(" ");
        assert!(args.contains("net=169.254.169.0/24"), "{args}");
        assert!(
            args.contains("guestfwd=tcp:169.254.169.254:80-cmd:/usr/bin/virga metadata-server"),
            "{args}"
        );
        assert!(
            d.path()
                .join("metadata/latest/meta-data/instance-id")
                .is_file()
        );
        assert!(c.render_contains("virga.ds=ec2,none"));
    }

    #[test]
    fn extra_sections_join_the_users_user_data_as_a_part() {
        let limits = cloud_metadata::Limits::default();
        let mut o = InstanceOptions::new(Datasource::NoCloud, "/bin/false".into());
        o.cloud_config_sections = vec![(
            "virga.update".into(),
            serde_json::json!({"url": "http://10.0.2.2:8080/"}),
        )];
        let alone = combined_user_data(&o).unwrap();
        let ud = cloud_metadata::parse_user_data(&alone, &limits).unwrap();
        let cc = cloud_metadata::CloudConfig::from_user_data(&ud, None, &limits);
        assert_eq!(cc.virga["virga.update"]["url"], "http://10.0.2.2:8080/");
        o.user_data = Some(b"#!/bin/sh\necho mine\n".to_vec());
        let both = combined_user_data(&o).unwrap();
        let ud = cloud_metadata::parse_user_data(&both, &limits).unwrap();
        assert_eq!(ud.parts.len(), 2, "{ud:?}");
        assert_eq!(ud.parts[0].content, b"#!/bin/sh\necho mine\n");
        let cc = cloud_metadata::CloudConfig::from_user_data(&ud, None, &limits);
        assert!(cc.virga.contains_key("virga.update"));
    }

    #[test]
    fn as_a_cloud_the_vm_presents_its_smbios_and_leaves_the_datasources_to_the_guest() {
        let d = tempfile::tempdir().unwrap();
        let mut c = cfg();
        let mut o = InstanceOptions::new(Datasource::Ec2, "/usr/bin/virga".into());
        o.as_cloud = true;
        o.instance_id = Some("i-0123".into());
        attach(&o, &mut c, d.path()).unwrap();
        let args = c.qemu_args().join(" ");
        assert!(
            args.contains("-smbios type=1,manufacturer=Amazon EC2,product=t3.micro,uuid=ec2"),
            "{args}"
        );
        // No virga.ds: the guest picks; the metadata address is served inside QEMU, so
        // vm-runner does not force local datasources either.
        assert!(!args.contains("virga.ds="), "{args}");
        let mut o = InstanceOptions::new(Datasource::OpenStack, "/usr/bin/virga".into());
        o.as_cloud = true;
        let mut c = cfg();
        attach(&o, &mut c, d.path().join("os").as_path()).unwrap();
        assert!(c.qemu_args().join(" ").contains("product=OpenStack Nova"));
    }

    #[test]
    fn state_disk_is_ext4_labelled_and_keeps_the_instance_id() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state.img");
        let mut o = InstanceOptions::new(Datasource::NoCloud, "/bin/false".into());
        o.state = Some(state.clone());
        let first = attach(&o, &mut cfg(), d.path()).unwrap().instance_id;
        let probe = seed_image::probe_path(&state).unwrap().unwrap();
        assert!(probe.label_is("virga-state"));
        std::fs::remove_file(d.path().join("seed.iso")).unwrap();
        let second = attach(&o, &mut cfg(), d.path()).unwrap().instance_id;
        assert_eq!(first, second);
    }

    #[test]
    fn missing_metadata_dir_is_named() {
        let d = tempfile::tempdir().unwrap();
        let mut o = InstanceOptions::new(Datasource::ConfigDrive, "/bin/false".into());
        o.metadata_dir = Some("/nonexistent/md".into());
        let e = attach(&o, &mut cfg(), d.path()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/md"), "{e}");
    }
}
