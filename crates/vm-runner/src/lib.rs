//! Boots virga images in QEMU and watches their serial console.
//!
//! Pipeline position: artifacts → **VM**. [`Vm::launch`] starts `qemu-system-x86_64` with the
//! chosen accelerator ([`accel`]), user-mode networking, a virtio RNG and a QMP socket; a reader
//! thread collects console lines (echoing them and writing a log when asked). Callers wait for
//! console markers from `boot-contract` with deadlines and ask the guest to power off through
//! the ACPI power button, as a cloud would.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub mod accel;
mod config;
mod console;
pub mod disk;
pub mod instance;
mod qmp;
mod sys;

pub use accel::{Accel, AccelChoice};
pub use boot_contract::cmdline::KernelCmdline;
pub use config::{Drive, DriveKind, Machine, PortForward, VmConfig};
use console::Console;

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
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        VmError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A running VM.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    console: console::Shared,
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
        sys::kill_with_parent(&mut cmd);
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
        let console: console::Shared = Arc::new((Mutex::new(Console::default()), Condvar::new()));
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
            std::thread::spawn(move || console::read_console(out, c, echo, log));
        }
        if let Some(err) = child.stderr.take() {
            let c = Arc::clone(&console);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    eprintln!("qemu: {line}");
                    console::push_lines(&c, [format!("qemu: {line}")]);
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
        console::lines(&self.console)
    }

    /// Waits for the next console line (after the one the previous call matched) that satisfies
    /// `pred`, and returns it. Fails on a kernel panic, when QEMU exits, or at the deadline.
    /// `what` names the awaited line in errors.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> Result<String, VmError> {
        console::wait_for(
            &self.console,
            &mut self.child,
            &mut self.cursor,
            what,
            timeout,
            pred,
        )
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
        qmp::execute(&self.qmp_path, command, arguments)
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

fn runtime_dir() -> Result<PathBuf, VmError> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    for n in 0..1000u32 {
        let p = base.join(format!("virga-vm-{}-{n}", std::process::id()));
        // Private: it holds the QMP socket, which controls the VM.
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
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
