//! Accelerator choice: does KVM really run a guest here?
//!
//! `/dev/kvm` existing is not enough: some hosts expose a software KVM (e.g. PVM) that cannot run
//! real-mode or SSE code, so QEMU + KVM never boots Linux there. The probe runs a few bytes of
//! real-mode code that uses SSE (as firmware and Linux both do) in a throw-away VM and checks
//! that it reaches the expected port write. Anything else means: use TCG.
#![allow(unsafe_code)]

use std::sync::mpsc;
use std::time::Duration;

/// The accelerator to use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation works.
    Kvm,
    /// Software emulation, with the reason KVM was not used.
    Tcg {
        /// Why not KVM.
        reason: String,
    },
}

impl Accel {
    /// The value for QEMU's `-accel`.
    pub fn qemu_name(&self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg { .. } => "tcg",
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// Probe and pick.
    #[default]
    Auto,
    /// KVM, without probing.
    Kvm,
    /// TCG.
    Tcg,
}

/// Resolves a choice, probing for `Auto`.
pub fn choose(choice: AccelChoice) -> Accel {
    match choice {
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Tcg => Accel::Tcg {
            reason: "requested".into(),
        },
        AccelChoice::Auto => match probe_kvm() {
            Ok(()) => Accel::Kvm,
            Err(reason) => Accel::Tcg { reason },
        },
    }
}

const PROBE_PORT: u16 = 0x10;
/// `xorps xmm0, xmm0; mov al, 0x42; out 0x10, al; hlt`
const PROBE_CODE: [u8; 8] = [0x0f, 0x57, 0xc0, 0xb0, 0x42, 0xe6, 0x10, 0xf4];
const GUEST_ADDR: u64 = 0x1000;
const MEM_SIZE: usize = 0x4000;

/// Runs the probe with a deadline. `Ok` when KVM executed real-mode SSE code correctly.
pub fn probe_kvm() -> Result<(), String> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm does not exist".into());
    }
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            let _ = tx.send(run_probe());
        });
    if spawned.is_err() {
        return Err("cannot start the KVM probe thread".into());
    }
    match rx.recv_timeout(Duration::from_secs(3)) {
        Ok(r) => r,
        Err(_) => Err("KVM probe guest did not finish within 3 s".into()),
    }
}

struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap and are unmapped exactly once, after the VM
        // that used them has been dropped (the VM is declared after the mapping in run_probe).
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

fn run_probe() -> Result<(), String> {
    use kvm_ioctls::{Kvm, VcpuExit};
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    // SAFETY: an anonymous private mapping with no address hint; the result is checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err("mmap for the probe guest failed".into());
    }
    let mem = Mapping { ptr, len: MEM_SIZE };
    // SAFETY: `mem` is a live MEM_SIZE-byte writable mapping; the code fits at offset 0x1000.
    unsafe {
        std::ptr::copy_nonoverlapping(
            PROBE_CODE.as_ptr(),
            (mem.ptr as *mut u8).add(GUEST_ADDR as usize),
            PROBE_CODE.len(),
        );
    }
    let vm = kvm
        .create_vm()
        .map_err(|e| format!("KVM_CREATE_VM failed: {e}"))?;
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: mem.ptr as u64,
        flags: 0,
    };
    // SAFETY: the region describes `mem`, which outlives `vm` (dropped first, declared later).
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION failed: {e}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU failed: {e}"))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    sregs.cr0 = (sregs.cr0 | 0x2) & !0x4; // MP on, EM off: SSE allowed
    sregs.cr4 |= (1 << 9) | (1 << 10); // OSFXSR, OSXMMEXCPT
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS failed: {e}"))?;
    let mut regs = vcpu
        .get_regs()
        .map_err(|e| format!("KVM_GET_REGS failed: {e}"))?;
    regs.rip = GUEST_ADDR;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS failed: {e}"))?;
    for _ in 0..16 {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(PROBE_PORT, data)) if data.first() == Some(&0x42) => return Ok(()),
            Ok(VcpuExit::IoOut(port, _)) => {
                return Err(format!("probe guest wrote to port {port:#x}"));
            }
            Ok(VcpuExit::Hlt) => return Err("probe guest halted before its port write".into()),
            Ok(VcpuExit::InternalError) => {
                return Err("KVM cannot execute real-mode SSE code (internal error)".into());
            }
            Ok(VcpuExit::FailEntry(reason, _)) => {
                return Err(format!(
                    "KVM refused to enter the guest (reason {reason:#x})"
                ));
            }
            Ok(VcpuExit::Shutdown) => return Err("probe guest triple-faulted".into()),
            Ok(_) => continue,
            Err(e) => return Err(format!("KVM_RUN failed: {e}")),
        }
    }
    Err("probe guest did not finish".into())
}

#[cfg(test)]
mod tests {
    #[test]
    #[ignore = "prints the probe result on this machine"]
    fn show_probe() {
        eprintln!("{:?}", super::probe_kvm());
    }
}
