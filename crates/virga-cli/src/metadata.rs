//! `virga metadata-server` and `virga seed`: thin wrappers over the `metadata-server` and
//! `seed-image` crates (see `docs/metadata-server.md`). `virga run` builds its default seed
//! with `metadata_server::write_seed_image` and its metadata-server `-netdev` options with
//! `metadata_server::qemu`.
//!
//! Wiring in `main.rs`:
//! ```text
//! mod metadata;
//! /// Serve EC2 IMDS or OpenStack metadata from a directory (stdio for QEMU, or TCP).
//! MetadataServer(metadata::ServerArgs),
//! /// Write a NoCloud or ConfigDrive seed image (ISO9660 or FAT).
//! Seed(metadata::SeedArgs),
//! …
//! Command::MetadataServer(args) => metadata::run_server(args).map(|()| ExitCode::SUCCESS),
//! Command::Seed(args) => metadata::run_seed(args).map(|()| ExitCode::SUCCESS),
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use metadata_server::{InstanceSpec, PublicKey, default_public_keys};
use seed_image::{SeedFormat, SeedKind, SeedTree};

pub use metadata_server::cli::ServerArgs;

/// Runs `virga metadata-server`. With `--stdio` it serves one connection and returns; with
/// `--listen` it serves until killed.
pub fn run_server(args: ServerArgs) -> Result<()> {
    metadata_server::cli::run_server(&args)?;
    Ok(())
}

/// `virga seed`: a seed image from a directory in the datasource's layout, or generated from
/// flags.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Datasource: nocloud (label cidata) or configdrive (label config-2).
    #[arg(long, value_name = "DS")]
    pub datasource: SeedKind,
    /// Image format: iso (ISO9660 + Joliet + Rock Ridge) or vfat.
    #[arg(long, value_name = "FORMAT", default_value = "iso")]
    pub format: SeedFormat,
    /// Volume label (default: cidata / config-2).
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// Put this directory on the image as it is (e.g. metadata captured from a cloud).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["instance_id", "hostname", "ssh_key", "no_ssh_key", "user_data", "vendor_data", "network_config"])]
    pub dir: Option<PathBuf>,
    /// Output image file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Instance id (default: a generated `i-` + 17 hex digits).
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Host name.
    #[arg(long, value_name = "NAME", default_value = "virga")]
    pub hostname: String,
    /// SSH public key file(s) to inject (default: ~/.ssh/id_{ed25519,ecdsa,rsa}.pub).
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Vec<PathBuf>,
    /// Inject no SSH key.
    #[arg(long, conflicts_with = "ssh_key")]
    pub no_ssh_key: bool,
    /// User-data file.
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// Vendor-data file.
    #[arg(long, value_name = "FILE")]
    pub vendor_data: Option<PathBuf>,
    /// Network config: NoCloud `network-config` (v1/v2 YAML), or for a config drive an
    /// OpenStack `network_data.json`.
    #[arg(long, value_name = "FILE")]
    pub network_config: Option<PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `virga seed`.
pub fn run_seed(args: SeedArgs) -> Result<()> {
    let mut tree = match &args.dir {
        Some(dir) => SeedTree::from_dir(dir)
            .with_context(|| format!("reading the seed directory {}", dir.display()))?,
        None => metadata_server::generate::seed_tree(&spec_from_flags(&args)?, args.datasource)?,
    };
    for w in args.datasource.check_layout(&mut tree)? {
        tracing::warn!("{w}");
    }
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| args.datasource.default_label().to_owned());
    let size = seed_image::write_image(&tree, args.format, &label, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if args.json {
        let summary = serde_json::json!({
            "out": args.out.display().to_string(),
            "datasource": args.datasource.to_string(),
            "format": args.format.to_string(),
            "label": label,
            "files": tree.len(),
            "size": size,
        });
        println!("{summary}");
    } else {
        println!(
            "wrote {} ({} {}, label {label}, {} files, {size} bytes)",
            args.out.display(),
            args.datasource,
            args.format,
            tree.len()
        );
    }
    Ok(())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

fn spec_from_flags(args: &SeedArgs) -> Result<InstanceSpec> {
    let id = match &args.instance_id {
        Some(id) => id.clone(),
        None => InstanceSpec::generate_instance_id()?,
    };
    let mut spec = InstanceSpec::new(id, args.hostname.clone());
    if !args.no_ssh_key {
        if args.ssh_key.is_empty() {
            if let Some(home) = std::env::var_os("HOME") {
                spec.public_keys = default_public_keys(Path::new(&home));
            }
            if spec.public_keys.is_empty() {
                tracing::warn!(
                    "no SSH public key in ~/.ssh/id_{{ed25519,ecdsa,rsa}}.pub: the image injects none"
                );
            }
        }
        for path in &args.ssh_key {
            let text = String::from_utf8(read(path, "SSH key")?)
                .with_context(|| format!("{} is not text", path.display()))?;
            let keys = PublicKey::parse_all(&text);
            anyhow::ensure!(!keys.is_empty(), "no SSH public key in {}", path.display());
            spec.public_keys.extend(keys);
        }
        PublicKey::make_names_unique(&mut spec.public_keys);
    }
    spec.user_data = args
        .user_data
        .as_deref()
        .map(|p| read(p, "user-data"))
        .transpose()?;
    spec.vendor_data = args
        .vendor_data
        .as_deref()
        .map(|p| read(p, "vendor-data"))
        .transpose()?;
    if let Some(p) = &args.network_config {
        let bytes = read(p, "network config")?;
        match args.datasource {
            SeedKind::NoCloud => spec.network_config = Some(bytes),
            SeedKind::ConfigDrive => {
                spec.network_data = Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "{} is not JSON (a config drive takes network_data.json)",
                        p.display()
                    )
                })?);
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        seed: SeedArgs,
    }

    fn seed(args: &[&str]) -> Result<()> {
        run_seed(Wrap::try_parse_from(std::iter::once("seed").chain(args.iter().copied()))?.seed)
    }

    #[test]
    fn seed_from_flags_and_from_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n).to_str().unwrap().to_owned();
        std::fs::write(p("k.pub"), "ssh-ed25519 AAAAC3NzaC1 me@host\n").unwrap();
        std::fs::write(p("ud"), "#!/bin/sh\n").unwrap();
        seed(&[
            "--datasource",
            "nocloud",
            "--out",
            &p("n.iso"),
            "--instance-id",
            "i-1",
            "--hostname",
            "h",
            "--ssh-key",
            &p("k.pub"),
            "--user-data",
            &p("ud"),
        ])
        .unwrap();
        let probe = seed_image::probe_path(Path::new(&p("n.iso")))
            .unwrap()
            .unwrap();
        assert_eq!(probe.label.as_deref(), Some("cidata"));

        std::fs::create_dir_all(d.path().join("cd/openstack/latest")).unwrap();
        std::fs::write(p("cd/openstack/latest/meta_data.json"), "{\"uuid\": \"u\"}").unwrap();
        seed(&[
            "--datasource",
            "configdrive",
            "--format",
            "vfat",
            "--label",
            "CONFIG-2",
            "--dir",
            &p("cd"),
            "--out",
            &p("c.img"),
        ])
        .unwrap();
        let probe = seed_image::probe_path(Path::new(&p("c.img")))
            .unwrap()
            .unwrap();
        assert_eq!(probe.label.as_deref(), Some("CONFIG-2"));

        // A NoCloud tree is not a config drive; the output is not left behind.
        let err = seed(&[
            "--datasource",
            "configdrive",
            "--dir",
            &p("nothing"),
            "--out",
            &p("x.img"),
        ]);
        assert!(err.is_err());
        assert!(!d.path().join("x.img").exists());
        let err = seed(&[
            "--datasource",
            "nocloud",
            "--ssh-key",
            &p("ud"),
            "--out",
            &p("y.img"),
        ]);
        assert!(format!("{:#}", err.unwrap_err()).contains("no SSH public key"));
    }
}
