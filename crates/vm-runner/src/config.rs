//! What a VM is made of: machine, memory, kernel and command line, drives, networking, and the
//! QEMU arguments that follow from them.

use std::path::PathBuf;

use boot_contract::cmdline::{DATASOURCES, KernelCmdline};
use boot_contract::datasource::USER_NETWORK_ORDER;

use crate::{Accel, VmError};

/// A host port forwarded to a guest port (QEMU user networking `hostfwd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForward {
    /// Host address to bind (normally 127.0.0.1).
    pub host_addr: String,
    /// Host TCP port.
    pub host_port: u16,
    /// Guest TCP port.
    pub guest_port: u16,
}

/// A disk or CD-ROM to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// Image file.
    pub path: PathBuf,
    /// How it appears to the guest.
    pub kind: DriveKind,
    /// Raw, not qcow2 etc.
    pub format: String,
    /// Read-only.
    pub read_only: bool,
}

/// The machine QEMU emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Machine {
    /// `pc` (i440fx + PIIX): QEMU's default and OpenStack's; its IDE controller carries
    /// CD-ROMs (config drives).
    #[default]
    Pc,
    /// `q35` (ICH9): PCIe, no IDE controller; its AHCI controller is not driven by Debian's
    /// cloud kernel, so disks go on virtio or NVMe.
    Q35,
}

impl Machine {
    /// QEMU's name for it.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
        }
    }
}

/// Bus and device type of a [`Drive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriveKind {
    /// virtio-blk (`/dev/vdX`).
    Virtio,
    /// IDE CD-ROM (`/dev/srN`), as OpenStack attaches config drives.
    Cdrom,
    /// NVMe namespace (`/dev/nvmeNn1`), as EC2's Nitro instances attach EBS volumes.
    Nvme,
}

/// Everything needed to start a VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Kernel image.
    pub kernel: PathBuf,
    /// initramfs.
    pub initrd: PathBuf,
    /// Kernel command line (see [`VmConfig::effective_cmdline`] for what QEMU gets).
    pub cmdline: KernelCmdline,
    /// RAM in MiB.
    pub memory_mb: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Accelerator (already probed).
    pub accel: Accel,
    /// Machine type.
    pub machine: Machine,
    /// User-mode networking with these forwards; `None` = no NIC.
    pub user_net: Option<Vec<PortForward>>,
    /// Extra `-netdev user` suboptions (e.g. `guestfwd=…`), appended verbatim.
    pub user_net_extra: Vec<String>,
    /// A metadata server answers 169.254.169.254 inside QEMU (`guestfwd`): the guest may probe
    /// the metadata services without an explicit `virga.ds=` (see [`VmConfig::effective_cmdline`]).
    pub metadata_served: bool,
    /// SMBIOS type 1 (system) strings: `manufacturer`, `product`, `uuid`, … as QEMU's
    /// `-smbios type=1,…` takes them (e.g. to look like a cloud's instances).
    pub smbios_system: Vec<(String, String)>,
    /// A TAP device to connect the NIC to instead of user networking (e.g. one inside a
    /// network namespace with a DHCP server; see `netns`).
    pub tap: Option<String>,
    /// Run QEMU inside this network namespace (`ip netns exec`), e.g. the one holding `tap`.
    pub netns: Option<String>,
    /// Disks and CD-ROMs.
    pub drives: Vec<Drive>,
    /// Connect the terminal to the serial console (interactive use).
    pub interactive: bool,
    /// Copy console output to our stdout.
    pub echo: bool,
    /// Also write console output to this file.
    pub log_file: Option<PathBuf>,
    /// Extra QEMU arguments, appended verbatim.
    pub extra_args: Vec<String>,
    /// Boot this disk through firmware instead of `kernel`/`initrd`; `cmdline` then reaches
    /// the guest through the disk's GRUB (see [`crate::disk`]).
    pub disk_boot: Option<crate::disk::DiskBoot>,
}

impl VmConfig {
    /// Defaults for booting `kernel` + `initrd`: 256 MiB, 1 vCPU, user networking, no drives.
    pub fn new(kernel: PathBuf, initrd: PathBuf, cmdline: KernelCmdline, accel: Accel) -> Self {
        Self {
            kernel,
            initrd,
            cmdline,
            memory_mb: 256,
            cpus: 1,
            accel,
            machine: Machine::Pc,
            user_net: Some(Vec::new()),
            user_net_extra: Vec::new(),
            metadata_served: false,
            smbios_system: Vec::new(),
            tap: None,
            netns: None,
            drives: Vec::new(),
            interactive: false,
            echo: false,
            log_file: None,
            extra_args: Vec::new(),
            disk_boot: None,
        }
    }

    /// Defaults for booting a disk image (see [`crate::disk::DiskBoot`]); `cmdline` holds only
    /// the host's extra kernel arguments.
    pub fn for_disk(disk: crate::disk::DiskBoot, cmdline: KernelCmdline, accel: Accel) -> Self {
        let mut c = Self::new(PathBuf::new(), PathBuf::new(), cmdline, accel);
        c.disk_boot = Some(disk);
        c
    }

    /// The kernel command line QEMU gets. With user-mode networking, a guest connection to
    /// 169.254.169.254 would leave QEMU as a connection from this host to that address, i.e.
    /// to the host's own metadata service. Unless the caller chose datasources explicitly
    /// (`virga.ds=`, e.g. with a metadata server behind `guestfwd`), only local datasources
    /// are allowed.
    pub fn effective_cmdline(&self) -> String {
        let mut c = self.cmdline.clone();
        if self.user_net.is_some()
            && self.tap.is_none()
            && !self.metadata_served
            && !c.has(DATASOURCES)
        {
            c.datasources(USER_NETWORK_ORDER);
        }
        c.render()
    }

    /// Whether the command line QEMU gets contains `text` (tests).
    #[cfg(test)]
    pub fn render_contains(&self, text: &str) -> bool {
        self.effective_cmdline().contains(text)
    }

    /// Checks that the devices fit the machine: q35 has no IDE bus the cloud kernel drives.
    pub fn check(&self) -> Result<(), VmError> {
        if self.machine == Machine::Q35 && self.drives.iter().any(|d| d.kind == DriveKind::Cdrom) {
            return Err(VmError::Config(
                "a CD-ROM on q35 sits on its AHCI controller, which Debian's cloud kernel does not drive; use --seed-bus virtio or nvme, or --machine pc".into(),
            ));
        }
        Ok(())
    }

    /// The QEMU command line (without the QMP socket, which [`Vm::launch`] adds).
    pub fn qemu_args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: &str| a.push(s.to_owned());
        push("-M");
        push(self.machine.qemu_name());
        push("-accel");
        push(self.accel.qemu_name());
        push("-cpu");
        push(if self.accel == Accel::Kvm {
            "host"
        } else {
            "max"
        });
        push("-m");
        push(&self.memory_mb.to_string());
        push("-smp");
        push(&self.cpus.to_string());
        push("-nodefaults");
        push("-no-user-config");
        push("-display");
        push("none");
        push("-no-reboot");
        if self.interactive {
            push("-chardev");
            push("stdio,id=con0,mux=on,signal=off");
            push("-mon");
            push("chardev=con0,mode=readline");
        } else {
            push("-chardev");
            push("stdio,id=con0,signal=off");
        }
        push("-serial");
        push("chardev:con0");
        match &self.disk_boot {
            Some(d) => {
                let cmdline = self.effective_cmdline();
                for arg in d.qemu_args(&cmdline) {
                    push(&arg);
                }
            }
            None => {
                push("-kernel");
                push(&self.kernel.to_string_lossy());
                push("-initrd");
                push(&self.initrd.to_string_lossy());
                push("-append");
                push(&self.effective_cmdline());
            }
        }
        push("-device");
        push("virtio-rng-pci");
        if let Some(tap) = &self.tap {
            push("-netdev");
            push(&format!("tap,id=net0,ifname={tap},script=no,downscript=no"));
            push("-device");
            push("virtio-net-pci,netdev=net0");
        } else if let Some(fwds) = &self.user_net {
            let mut netdev = "user,id=net0".to_owned();
            for f in fwds {
                netdev.push_str(&format!(
                    ",hostfwd=tcp:{}:{}-:{}",
                    f.host_addr, f.host_port, f.guest_port
                ));
            }
            for extra in &self.user_net_extra {
                netdev.push(',');
                netdev.push_str(extra);
            }
            push("-netdev");
            push(&netdev);
            push("-device");
            push("virtio-net-pci,netdev=net0");
        }
        for (i, d) in self.drives.iter().enumerate() {
            let ro = if d.read_only { ",readonly=on" } else { "" };
            let path = d.path.to_string_lossy().replace(',', ",,");
            match d.kind {
                DriveKind::Virtio => {
                    push("-drive");
                    push(&format!(
                        "file={path},format={},if=virtio,index={i}{ro}",
                        d.format
                    ));
                }
                DriveKind::Cdrom => {
                    push("-drive");
                    push(&format!(
                        "file={path},format={},if=ide,media=cdrom,index={}",
                        d.format,
                        2 + i
                    ));
                }
                DriveKind::Nvme => {
                    push("-drive");
                    push(&format!(
                        "file={path},format={},if=none,id=nvme{i}{ro}",
                        d.format
                    ));
                    push("-device");
                    push(&format!("nvme,drive=nvme{i},serial=virga{i}"));
                }
            }
        }
        if !self.smbios_system.is_empty() {
            let fields: Vec<String> = self
                .smbios_system
                .iter()
                .map(|(k, v)| format!("{k}={}", v.replace(',', ",,")))
                .collect();
            a.push("-smbios".into());
            a.push(format!("type=1,{}", fields.join(",")));
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KernelCmdline;

    fn cfg() -> VmConfig {
        VmConfig::new(
            "k".into(),
            "i".into(),
            KernelCmdline::new("console=ttyS0"),
            Accel::Tcg { reason: "t".into() },
        )
    }

    #[test]
    fn args_have_essentials() {
        let a = cfg().qemu_args().join(" ");
        assert!(a.contains("-accel tcg"));
        assert!(a.contains("-kernel k -initrd i -append console=ttyS0"));
        assert!(a.contains("-no-reboot"));
        assert!(a.contains("virtio-net-pci,netdev=net0"));
        assert!(a.contains("virtio-rng-pci"));
    }

    #[test]
    fn user_networking_never_reaches_the_hosts_metadata_address() {
        let a = cfg().qemu_args().join(" ");
        assert!(a.contains("virga.ds=nocloud,configdrive,none"), "{a}");
        let mut c = cfg();
        c.cmdline.datasources(&["ec2"]);
        assert!(!c.qemu_args().join(" ").contains("configdrive"));
        let mut c = cfg();
        c.user_net = None;
        assert!(!c.qemu_args().join(" ").contains("virga.ds"));
    }

    #[test]
    fn forwards_and_drives_are_rendered() {
        let mut c = cfg();
        c.user_net = Some(vec![PortForward {
            host_addr: "127.0.0.1".into(),
            host_port: 2222,
            guest_port: 22,
        }]);
        c.drives.push(Drive {
            path: "/tmp/a,b.iso".into(),
            kind: DriveKind::Cdrom,
            format: "raw".into(),
            read_only: true,
        });
        let a = c.qemu_args().join(" ");
        assert!(a.contains("hostfwd=tcp:127.0.0.1:2222-:22"), "{a}");
        assert!(
            a.contains("file=/tmp/a,,b.iso,format=raw,if=ide,media=cdrom"),
            "{a}"
        );
        c.user_net = None;
        assert!(!c.qemu_args().join(" ").contains("netdev"));
    }

    #[test]
    fn nvme_disks_and_the_q35_machine() {
        let mut c = cfg();
        assert!(c.qemu_args().join(" ").contains("-M pc "));
        c.machine = Machine::Q35;
        c.drives.push(Drive {
            path: "/tmp/state.img".into(),
            kind: DriveKind::Nvme,
            format: "raw".into(),
            read_only: false,
        });
        let a = c.qemu_args().join(" ");
        assert!(a.contains("-M q35 "), "{a}");
        assert!(
            a.contains("-drive file=/tmp/state.img,format=raw,if=none,id=nvme0 -device nvme,drive=nvme0,serial=virga0"),
            "{a}"
        );
        assert!(c.check().is_ok());
        c.drives.push(Drive {
            path: "/tmp/seed.iso".into(),
            kind: DriveKind::Cdrom,
            format: "raw".into(),
            read_only: true,
        });
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("--seed-bus virtio"), "{e}");
    }
}
