//! Bare-metal support shared by the `microvm` and `hvt` targets: heap, panic handler, boot
//! sequence, and the glue from the platform's devices to [`crate::Runtime`].

use alloc::string::String;

use crate::netstack::{self, Nic as _};

use crate::{Result, Runtime, UnikernelError};

mod arch;

#[cfg(virga_target = "hvt")]
mod hvt;
#[cfg(virga_target = "hvt")]
use hvt as platform;

#[cfg(not(virga_target = "hvt"))]
mod microvm;
#[cfg(not(virga_target = "hvt"))]
mod virtio_drv;
#[cfg(not(virga_target = "hvt"))]
use microvm as platform;

pub(crate) use platform::{Block, console_write, monotonic_ns, random, wall_ns};

/// The network on bare metal: smoltcp over the platform's NIC.
pub type Network = netstack::Network<platform::Nic>;
pub use netstack::{TcpListener, TcpStream, UdpSocket};

#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();

/// Where boot found memory and the command line.
#[derive(Debug)]
pub(crate) struct Early {
    pub heap_start: u64,
    pub heap_end: u64,
    pub cmdline: &'static [u8],
}

pub(crate) fn sleep_until(deadline_ns: u64) {
    while monotonic_ns() < deadline_ns {
        platform::idle(deadline_ns);
    }
}

pub(crate) fn exit(code: u8) -> ! {
    platform::exit(code)
}

pub(crate) fn open_network(cmdline: &str) -> Result<Network> {
    let nic = platform::Nic::open().ok_or(UnikernelError::NoDevice("network"))?;
    let mode = crate::cmdline::ip_mode(cmdline)?;
    let mut seed = [0u8; 8];
    if random(&mut seed).is_err() {
        seed = (arch::rdtsc() ^ nic.now_ns()).to_le_bytes();
    }
    Network::new(nic, mode, u64::from_le_bytes(seed))
}

/// The kernel's life after the platform entry: memory, devices, the application, exit.
pub fn boot(boot_arg: u64, app: fn(&mut Runtime) -> u8) -> ! {
    let early = platform::early(boot_arg);
    arch::init_heap(&HEAP, early.heap_start, early.heap_end);
    let cmdline = String::from_utf8_lossy(early.cmdline).into_owned();
    let block = platform::Block::open();
    let mut rt = Runtime::new(cmdline, block);
    let code = app(&mut rt);
    exit(code)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::println!("\npanic: {info}");
    exit(hvt_abi::exit::PANIC)
}
