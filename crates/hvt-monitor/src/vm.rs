//! The KVM side: one VM, one vCPU entered directly in long mode, and the run loop.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_regs, kvm_segment};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use crate::hypercall::{self, Host, Step};
use crate::memory::GuestMemory;
use crate::setup;
use crate::{MonitorError, sys};

/// A VM ready to run: KVM handles plus the guest memory they refer to.
#[derive(Debug)]
pub struct Vm {
    // Field order is drop order: the vCPU and VM go before the memory they map.
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    /// Guest memory.
    pub mem: GuestMemory,
}

fn hv(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> MonitorError {
    move |e| MonitorError::Hypervisor(format!("{what}: {e}"))
}

impl Vm {
    /// Creates the VM around `mem` (already holding the kernel, tables and boot info).
    pub fn new(mem: GuestMemory) -> Result<Self, MonitorError> {
        let kvm = Kvm::new().map_err(hv("cannot open /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(hv("KVM_CREATE_VM"))?;
        sys::register_memory(&vm, &mem)
            .map_err(|e| MonitorError::Hypervisor(format!("KVM_SET_USER_MEMORY_REGION: {e}")))?;
        let vcpu = vm.create_vcpu(0).map_err(hv("KVM_CREATE_VCPU"))?;
        let cpuid: CpuId = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(hv("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(hv("KVM_SET_CPUID2"))?;
        Ok(Self {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            mem,
        })
    }

    /// The vCPU's descriptor (the only one `KVM_RUN` is issued on; see [`crate::seccomp`]).
    pub fn vcpu_fd(&self) -> RawFd {
        self.vcpu.as_raw_fd()
    }

    /// TSC frequency in kHz, 0 if KVM does not know it.
    pub fn tsc_khz(&self) -> u64 {
        self.vcpu.get_tsc_khz().map(u64::from).unwrap_or(0)
    }

    /// Sets registers for a long-mode entry at `entry` with `rdi = boot_info`.
    pub fn set_entry(&mut self, entry: u64) -> Result<(), MonitorError> {
        let mut sregs = self.vcpu.get_sregs().map_err(hv("KVM_GET_SREGS"))?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: setup::SEL_CODE,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data = kvm_segment {
            selector: setup::SEL_DATA,
            type_: 0x3,
            db: 1,
            l: 0,
            ..code
        };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = kvm_segment {
            selector: 0x18,
            type_: 0xb,
            limit: 0x67,
            s: 0,
            db: 0,
            l: 0,
            g: 0,
            ..code
        };
        sregs.gdt.base = hvt_abi::layout::GDT;
        sregs.gdt.limit = (setup::GDT_ENTRIES * 8 - 1) as u16;
        // No IDT: any exception escalates to a triple fault, which the monitor reports.
        sregs.idt.base = 0;
        sregs.idt.limit = 0;
        sregs.cr0 = setup::CR0;
        sregs.cr3 = setup::cr3();
        sregs.cr4 = setup::CR4;
        sregs.efer = setup::EFER;
        self.vcpu.set_sregs(&sregs).map_err(hv("KVM_SET_SREGS"))?;
        let regs = kvm_regs {
            rip: entry,
            rsp: (self.mem.size() - 16) & !0xf,
            rdi: hvt_abi::layout::BOOT_INFO,
            rflags: 0x2,
            ..Default::default()
        };
        self.vcpu.set_regs(&regs).map_err(hv("KVM_SET_REGS"))
    }

    /// Runs the guest until it halts, faults, or `deadline` passes. Returns the guest's exit
    /// code.
    pub fn run(
        &mut self,
        host: &mut dyn Host,
        deadline: Option<Instant>,
    ) -> Result<u8, MonitorError> {
        loop {
            if let Some(d) = deadline
                && Instant::now() >= d
            {
                return Err(MonitorError::Timeout);
            }
            let (port, data) = match self.vcpu.run() {
                Ok(VcpuExit::IoOut(port, data)) => {
                    let mut buf = [0u8; 8];
                    let n = data.len().min(8);
                    buf[..n].copy_from_slice(&data[..n]);
                    (port, (buf, n))
                }
                Ok(VcpuExit::Shutdown) => {
                    return Err(MonitorError::GuestCrash(
                        "triple fault (an exception with no handler)".into(),
                    ));
                }
                Ok(VcpuExit::Hlt) => {
                    return Err(MonitorError::GuestCrash(
                        "hlt with interrupts off: the guest can never resume".into(),
                    ));
                }
                Ok(VcpuExit::IoIn(port, _)) => {
                    return Err(MonitorError::GuestCrash(format!(
                        "read from I/O port {port:#x}"
                    )));
                }
                Ok(VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _)) => {
                    return Err(MonitorError::GuestCrash(format!(
                        "access to {addr:#x}, outside guest memory ({:#x} bytes)",
                        self.mem.size()
                    )));
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    return Err(MonitorError::Hypervisor(format!(
                        "VM entry failed: hardware reason {reason:#x} on cpu {cpu}"
                    )));
                }
                Ok(VcpuExit::InternalError) => {
                    return Err(MonitorError::GuestCrash(
                        "KVM internal error (an instruction KVM cannot emulate, e.g. SSE under PVM)"
                            .into(),
                    ));
                }
                Ok(other) => {
                    return Err(MonitorError::GuestCrash(format!(
                        "unexpected VM exit {other:?}"
                    )));
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => return Err(MonitorError::Hypervisor(format!("KVM_RUN: {e}"))),
            };
            let (buf, n) = data;
            match hypercall::dispatch(&mut self.mem, host, port, &buf[..n])
                .map_err(MonitorError::GuestFault)?
            {
                Step::Continue => {}
                Step::Halt(code) => return Ok(code),
                Step::HostIo(msg) => return Err(MonitorError::HostIo(msg)),
            }
        }
    }
}

/// Period of the watchdog tick that lets the run loop check its deadline.
pub const TICK: Duration = Duration::from_millis(50);
