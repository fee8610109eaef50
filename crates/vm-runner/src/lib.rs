//! Boots virga images in QEMU and watches their serial console.
//!
//! Pipeline position: artifacts → **VM**. [`Vm::launch`] starts `qemu-system-x86_64` with the
//! chosen accelerator ([`accel`]), user-mode networking, a virtio RNG and a QMP socket; a reader
//! thread collects console lines (echoing them and writing a log when asked). Callers wait for
//! console markers from `boot-contract` with deadlines and ask the guest to power off through
//! the ACPI power button, as a cloud would.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use boot_contract::console::KERNEL_PANIC;

pub mod accel;
pub mod disk;
pub mod instance;

pub use accel::{Accel, AccelChoice};

/// Datasources a guest on user-mode networking may use unless told otherwise.
pub const LOCAL_DATASOURCES: &str = "nocloud,configdrive,none";

/// The QEMU binary virga runs.
pub const QEMU: &str = "qemu-system-x86_64";

/// What can go wrong around a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// QEMU is not installed.
    #[error("{QEMU} not found; install it with `sudo apt-get install qemu-system-x86`")]
    QemuMissing,
    /// An artifact is missing.
    #[error("{path} does not exist; run `virga build` first")]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// QEMU could not be started or talked to.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The deadline passed before the awaited console line appeared.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// The guest kernel panicked.
    #[error("guest kernel panic: {0}")]
    KernelPanic(String),
    /// QEMU exited before the awaited console line appeared.
    #[error("the VM stopped ({0}) before {1}")]
    Exited(String, String),
    /// QMP said no.
    #[error("QMP: {0}")]
    Qmp(String),
    /// The datasource or state disk could not be prepared.
    #[error("instance: {0}")]
    Instance(String),
    /// The VM's devices do not fit together.
    #[error("{0}")]
    Config(String),
}

impl VmError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        VmError::Io {
            context: context.into(),
            source,
        }
    }
}

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
    /// Kernel command line.
    pub cmdline: String,
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
    /// the guest through the disk's GRUB (see [`disk`]).
    pub disk_boot: Option<disk::DiskBoot>,
}

impl VmConfig {
    /// Defaults for booting `kernel` + `initrd`: 256 MiB, 1 vCPU, user networking, no drives.
    pub fn new(kernel: PathBuf, initrd: PathBuf, cmdline: String, accel: Accel) -> Self {
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

    /// Defaults for booting a disk image (see [`disk::DiskBoot`]); `cmdline` holds only the
    /// host's extra kernel arguments.
    pub fn for_disk(disk: disk::DiskBoot, cmdline: String, accel: Accel) -> Self {
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
        if self.user_net.is_some()
            && self.tap.is_none()
            && !self
                .cmdline
                .contains(&format!("{}=", boot_contract::cmdline::DATASOURCES))
        {
            format!(
                "{} {}={}",
                self.cmdline,
                boot_contract::cmdline::DATASOURCES,
                LOCAL_DATASOURCES
            )
        } else {
            self.cmdline.clone()
        }
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
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// Console lines seen so far, shared with the reader thread.
#[derive(Debug, Default)]
struct Console {
    lines: Vec<String>,
    closed: bool,
}

/// A running VM.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    console: Arc<(Mutex<Console>, Condvar)>,
    qmp_path: PathBuf,
    runtime_dir: PathBuf,
    started: Instant,
    /// Console lines before this index have been consumed by [`Vm::wait_for`].
    cursor: usize,
}

/// Whether QEMU is on the PATH.
pub fn qemu_available() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Vm {
    /// Starts QEMU.
    pub fn launch(cfg: &VmConfig) -> Result<Vm, VmError> {
        let files = match &cfg.disk_boot {
            Some(d) => vec![&d.image],
            None => vec![&cfg.kernel, &cfg.initrd],
        };
        for p in files {
            if !p.is_file() {
                return Err(VmError::Missing { path: p.clone() });
            }
        }
        cfg.check()?;
        if !qemu_available() {
            return Err(VmError::QemuMissing);
        }
        let runtime_dir = runtime_dir()?;
        let qmp_path = runtime_dir.join("qmp.sock");
        let mut cmd = match &cfg.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, QEMU]);
                c
            }
            None => Command::new(QEMU),
        };
        cmd.args(cfg.qemu_args())
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if cfg.interactive {
                Stdio::inherit()
            } else {
                Stdio::piped()
            });
        tracing::debug!("launching {QEMU} {:?}", cfg.qemu_args());
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                VmError::QemuMissing
            } else {
                VmError::io(format!("cannot start {QEMU}"), e)
            }
        })?;
        let console = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        let log = match &cfg.log_file {
            Some(p) => Some(
                std::fs::File::create(p)
                    .map_err(|e| VmError::io(format!("log file {}", p.display()), e))?,
            ),
            None => None,
        };
        if let Some(out) = child.stdout.take() {
            let c = Arc::clone(&console);
            let echo = cfg.echo;
            std::thread::spawn(move || read_console(out, c, echo, log));
        }
        if let Some(err) = child.stderr.take() {
            let c = Arc::clone(&console);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("qemu: {line}");
                    let (m, cv) = &*c;
                    m.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .lines
                        .push(format!("qemu: {line}"));
                    cv.notify_all();
                }
            });
        }
        Ok(Vm {
            child,
            console,
            qmp_path,
            runtime_dir,
            started: Instant::now(),
            cursor: 0,
        })
    }

    /// Time since launch.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// All console lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.console
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lines
            .clone()
    }

    /// Waits for the next console line (after the one the previous call matched) that satisfies
    /// `pred`, and returns it. Fails on a kernel panic, when QEMU exits, or at the deadline.
    /// `what` names the awaited line in errors.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<String, VmError> {
        let deadline = Instant::now() + timeout;
        let mut seen = self.cursor;
        let (m, cv) = &*self.console;
        let mut guard = m.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            while seen < guard.lines.len() {
                let line = &guard.lines[seen];
                seen += 1;
                if pred(line) {
                    self.cursor = seen;
                    return Ok(line.clone());
                }
                if line.contains(KERNEL_PANIC) {
                    return Err(VmError::KernelPanic(line.trim().to_owned()));
                }
            }
            if guard.closed {
                drop(guard);
                let status = self
                    .child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                return Err(VmError::Exited(status, what.to_owned()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(VmError::Timeout(timeout, what.to_owned()));
            }
            guard = cv
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Types `text` on the serial console (non-interactive VMs only).
    pub fn send(&mut self, text: &str) -> Result<(), VmError> {
        let stdin =
            self.child.stdin.as_mut().ok_or_else(|| {
                VmError::Qmp("console input is the terminal (interactive VM)".into())
            })?;
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| VmError::io("console input", e))?;
        stdin.flush().map_err(|e| VmError::io("console input", e))
    }

    /// Presses the ACPI power button (QMP `system_powerdown`), as a cloud's "stop" does.
    pub fn press_power_button(&self) -> Result<(), VmError> {
        self.qmp("system_powerdown")
    }

    /// Presses Ctrl-Alt-Del on the VM's keyboard.
    pub fn ctrl_alt_del(&self) -> Result<(), VmError> {
        let keys: Vec<serde_json::Value> = ["ctrl", "alt", "delete"]
            .iter()
            .map(|k| serde_json::json!({"type": "qcode", "data": k}))
            .collect();
        self.qmp_with("send-key", Some(serde_json::json!({ "keys": keys })))
    }

    /// Sends one QMP command without arguments and waits for its answer.
    pub fn qmp(&self, command: &str) -> Result<(), VmError> {
        self.qmp_with(command, None)
    }

    /// Sends one QMP command and waits for its answer.
    pub fn qmp_with(
        &self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<(), VmError> {
        let stream = UnixStream::connect(&self.qmp_path)
            .map_err(|e| VmError::io(format!("QMP socket {}", self.qmp_path.display()), e))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| VmError::io("QMP", e))?);
        let mut writer = stream;
        let mut line = String::new();
        let expect_return =
            |reader: &mut BufReader<UnixStream>, line: &mut String| -> Result<(), VmError> {
                loop {
                    line.clear();
                    if reader
                        .read_line(line)
                        .map_err(|e| VmError::io("QMP read", e))?
                        == 0
                    {
                        return Err(VmError::Qmp("connection closed".into()));
                    }
                    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                    if v.get("return").is_some() {
                        return Ok(());
                    }
                    if let Some(e) = v.get("error") {
                        return Err(VmError::Qmp(e.to_string()));
                    }
                }
            };
        reader
            .read_line(&mut line)
            .map_err(|e| VmError::io("QMP greeting", e))?;
        writer
            .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .map_err(|e| VmError::io("QMP write", e))?;
        expect_return(&mut reader, &mut line)?;
        let mut request = serde_json::json!({ "execute": command });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        writer
            .write_all(format!("{request}\n").as_bytes())
            .map_err(|e| VmError::io("QMP write", e))?;
        expect_return(&mut reader, &mut line)
    }

    /// Waits for QEMU to exit; kills it at the deadline and returns `None`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for QEMU to exit, without a deadline (interactive sessions).
    pub fn wait(&mut self) -> Result<ExitStatus, VmError> {
        self.child
            .wait()
            .map_err(|e| VmError::io("waiting for QEMU", e))
    }

    /// Kills QEMU.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

fn read_console(
    mut out: impl Read,
    console: Arc<(Mutex<Console>, Condvar)>,
    echo: bool,
    mut log: Option<std::fs::File>,
) {
    let mut buf = [0u8; 4096];
    let mut partial: Vec<u8> = Vec::new();
    let stdout = std::io::stdout();
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if echo {
            let mut o = stdout.lock();
            let _ = o.write_all(&buf[..n]);
            let _ = o.flush();
        }
        if let Some(f) = log.as_mut() {
            let _ = f.write_all(&buf[..n]);
        }
        partial.extend_from_slice(&buf[..n]);
        let mut new_lines = Vec::new();
        while let Some(i) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            new_lines.push(text);
        }
        if !new_lines.is_empty() {
            let (m, cv) = &*console;
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .lines
                .extend(new_lines);
            cv.notify_all();
        }
    }
    let (m, cv) = &*console;
    let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
    if !partial.is_empty() {
        g.lines.push(String::from_utf8_lossy(&partial).into_owned());
    }
    g.closed = true;
    cv.notify_all();
}

fn runtime_dir() -> Result<PathBuf, VmError> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    for n in 0..1000u32 {
        let p = base.join(format!("virga-vm-{}-{n}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(VmError::io(format!("runtime dir in {}", base.display()), e)),
        }
    }
    Err(VmError::io(
        "runtime dir",
        std::io::Error::other("no free name"),
    ))
}

/// Finds a free TCP port on 127.0.0.1 (for host forwards).
pub fn free_port() -> Result<u16, VmError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| VmError::io("free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| VmError::io("free port", e))
}

/// Checks that an output directory has the files a VM needs.
pub fn artifacts(dir: &Path) -> Result<(PathBuf, PathBuf), VmError> {
    let k = dir.join("vmlinuz");
    let i = dir.join("initramfs.img");
    for p in [&k, &i] {
        if !p.is_file() {
            return Err(VmError::Missing { path: p.clone() });
        }
    }
    Ok((k, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VmConfig {
        VmConfig::new(
            "k".into(),
            "i".into(),
            "console=ttyS0".into(),
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
        c.cmdline.push_str(" virga.ds=ec2");
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

    #[test]
    fn missing_artifacts_are_named() {
        let d = tempfile::tempdir().unwrap();
        let err = artifacts(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("vmlinuz") && err.contains("virga build"),
            "{err}"
        );
    }
}
