//! `hvt-monitor`: virga's minimal KVM monitor for unikernels built with `--target hvt`.
//!
//! Pipeline position: application crate → `unikernel-build` → ELF → **monitor** ⇄ guest.
//! The monitor loads the ELF ([`elf`]), writes page tables and boot info ([`setup`]), enters long
//! mode directly (no BIOS, no device emulation; [`vm`]), applies a seccomp allow-list
//! ([`seccomp`]) and then serves the hypercalls of [`hvt_abi`] ([`hypercall`]) with a stdout
//! console, a file as block device and a TAP interface as network ([`devices`]). Guest console
//! output is sanitised before it reaches the operator's terminal ([`console`]).
//!
//! Every guest pointer and length is checked against guest memory ([`memory`]); a guest that
//! misbehaves is stopped with a defined exit code ([`hvt_abi::exit`]), never by a monitor panic.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub mod cli;
pub mod console;
pub mod devices;
pub mod elf;
pub mod hypercall;
pub mod memory;
pub mod seccomp;
pub mod setup;
mod sys;
pub mod vm;

use hvt_abi::exit;

/// Largest kernel file the monitor reads.
pub const MAX_KERNEL_FILE: u64 = 256 * 1024 * 1024;
/// Default guest memory in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 32;
/// Guest memory kept free above the kernel for heap and stack.
pub const MIN_FREE_MEMORY: u64 = 1024 * 1024;

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The unikernel ELF.
    pub kernel: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// File used as block device.
    pub block: Option<PathBuf>,
    /// TAP interface used as network device.
    pub tap: Option<String>,
    /// MAC address of the guest (random locally administered address when `None`).
    pub mac: Option<[u8; 6]>,
    /// Wall-clock budget of the guest.
    pub timeout: Option<Duration>,
    /// Command line passed to the guest.
    pub cmdline: String,
    /// Apply the seccomp allow-list (only tests that inspect the process turn this off).
    pub seccomp: bool,
    /// Print start-up timings to stderr.
    pub timings: bool,
}

impl Config {
    /// A configuration with defaults for `kernel`.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            memory_mib: DEFAULT_MEMORY_MIB,
            block: None,
            tap: None,
            mac: None,
            timeout: None,
            cmdline: String::new(),
            seccomp: true,
            timings: false,
        }
    }
}

/// Why a run did not end with the guest's own exit code.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// Bad configuration.
    #[error("{0}")]
    Usage(String),
    /// The kernel file could not be read.
    #[error("cannot read kernel {path}")]
    KernelFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel is not a loadable hvt unikernel.
    #[error("cannot load kernel")]
    Elf(#[from] elf::ElfError),
    /// KVM is missing or refused the VM.
    #[error("hypervisor: {0}")]
    Hypervisor(String),
    /// A device could not be opened.
    #[error("cannot attach {what}")]
    Device {
        /// Which device.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The seccomp filter could not be built or applied.
    #[error("cannot install the seccomp filter")]
    Seccomp(#[source] seccomp::SeccompError),
    /// The guest made an invalid hypercall.
    #[error("guest fault")]
    GuestFault(#[source] hypercall::GuestFault),
    /// The guest crashed or did something the monitor does not emulate.
    #[error("guest crashed: {0}")]
    GuestCrash(String),
    /// The guest exceeded its time budget.
    #[error("guest exceeded its time budget")]
    Timeout,
    /// A host device failed while the guest ran.
    #[error("host I/O: {0}")]
    HostIo(String),
}

impl MonitorError {
    /// The documented exit code for this outcome ([`hvt_abi::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::KernelFile { .. } | Self::Device { .. } => exit::USAGE,
            Self::Elf(_) => exit::BAD_KERNEL,
            Self::Hypervisor(_) | Self::Seccomp(_) => exit::HYPERVISOR,
            Self::GuestFault(_) | Self::GuestCrash(_) => exit::GUEST_FAULT,
            Self::Timeout => exit::TIMEOUT,
            Self::HostIo(_) => exit::HOST_IO,
        }
    }
}

fn read_kernel(path: &std::path::Path) -> Result<Vec<u8>, MonitorError> {
    use std::io::Read;
    let err = |source| MonitorError::KernelFile {
        path: path.to_owned(),
        source,
    };
    let f = std::fs::File::open(path).map_err(err)?;
    let mut image = Vec::new();
    f.take(MAX_KERNEL_FILE + 1)
        .read_to_end(&mut image)
        .map_err(err)?;
    if image.len() as u64 > MAX_KERNEL_FILE {
        return Err(MonitorError::Usage(format!(
            "kernel {} is larger than {MAX_KERNEL_FILE} bytes",
            path.display()
        )));
    }
    Ok(image)
}

/// Loads and runs one guest to its end. `Ok(code)` is the guest's own exit code.
///
/// Applies the seccomp filter to the calling thread before the first guest instruction (unless
/// [`Config::seccomp`] is off), so call it from a process that does nothing else afterwards
/// (`virga-hvt`, or `virga unikernel monitor`).
pub fn run(config: &Config) -> Result<u8, MonitorError> {
    let started = Instant::now();
    let mem_bytes = config
        .memory_mib
        .checked_mul(1024 * 1024)
        .filter(|b| (hvt_abi::layout::MIN_MEMORY..=hvt_abi::layout::MAX_MEMORY).contains(b))
        .ok_or_else(|| {
            MonitorError::Usage(format!(
                "memory must be between {} and {} MiB",
                hvt_abi::layout::MIN_MEMORY >> 20,
                hvt_abi::layout::MAX_MEMORY >> 20
            ))
        })?;
    let image = read_kernel(&config.kernel)?;
    let mut mem = memory::GuestMemory::new(mem_bytes)
        .map_err(|e| MonitorError::Usage(format!("cannot allocate guest memory: {e}")))?;
    let kernel = elf::load(&mut mem, &image)?;
    if kernel.end.saturating_add(MIN_FREE_MEMORY) > mem.size() {
        return Err(MonitorError::Usage(format!(
            "kernel ends at {:#x}: {} MiB of memory leaves less than 1 MiB free",
            kernel.end, config.memory_mib
        )));
    }
    let block = match &config.block {
        Some(p) => Some(
            devices::BlockFile::open(p).map_err(|source| MonitorError::Device {
                what: format!("block device {}", p.display()),
                source,
            })?,
        ),
        None => None,
    };
    let net = match &config.tap {
        Some(name) => Some(
            devices::Tap::open(name).map_err(|source| MonitorError::Device {
                what: format!("TAP interface {name}"),
                source,
            })?,
        ),
        None => None,
    };
    let mac = match config.mac {
        Some(m) => m,
        None => {
            let mut m = [0u8; 6];
            sys::getrandom(&mut m[1..])
                .map_err(|e| MonitorError::Usage(format!("getrandom: {e}")))?;
            m[0] = 0x02; // locally administered, unicast
            m
        }
    };
    let mut host = devices::Devices::new(block, net);

    let mut vm = vm::Vm::new(mem)?;
    let (sectors, sector_size) = hypercall::Host::block_info(&host).unwrap_or((0, 0));
    let info = hvt_abi::BootInfo {
        kernel_end: kernel.end,
        tsc_khz: vm.tsc_khz(),
        block_sectors: sectors,
        block_sector_size: sector_size,
        net_present: u64::from(host.net.is_some()),
        net_mac: mac.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        net_mtu: 1500,
        ..Default::default()
    };
    let bad_layout = |e: memory::OutOfBounds| MonitorError::Usage(format!("guest memory: {e}"));
    setup::write_tables(&mut vm.mem).map_err(bad_layout)?;
    setup::write_boot_info(&mut vm.mem, info, config.cmdline.as_bytes()).map_err(bad_layout)?;
    vm.set_entry(kernel.entry)?;

    let deadline = config.timeout.map(|t| Instant::now() + t);
    if deadline.is_some() {
        sys::start_watchdog_ticks(vm::TICK.as_millis() as u32)
            .map_err(|e| MonitorError::Hypervisor(format!("watchdog timer: {e}")))?;
    }
    if config.seccomp {
        let fds = seccomp::RunFds {
            vcpu: vm.vcpu_fd(),
            block: host.block.as_ref().map(AsRawFd::as_raw_fd),
            tap: host.net.as_ref().map(AsRawFd::as_raw_fd),
        };
        seccomp::apply(&fds).map_err(MonitorError::Seccomp)?;
    }
    let setup_done = started.elapsed();
    tracing::debug!(entry = kernel.entry, end = kernel.end, "guest ready");
    if config.timings {
        eprintln!("virga-hvt: setup_us={}", setup_done.as_micros());
    }
    let result = vm.run(&mut host, deadline);
    host.finish_console();
    if config.timings {
        eprintln!(
            "virga-hvt: guest_us={}",
            (started.elapsed() - setup_done).as_micros()
        );
    }
    result
}

/// Runs `config` and maps the outcome to the monitor's exit status, logging errors.
pub fn run_to_exit_code(config: &Config) -> u8 {
    match run(config) {
        Ok(code) => code,
        Err(err) => {
            let mut msg = format!("virga-hvt: {err}");
            let mut src = std::error::Error::source(&err);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            err.exit_code()
        }
    }
}
