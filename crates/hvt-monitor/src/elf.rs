//! Loading an hvt unikernel: a static x86_64 ELF executable with the virga ABI note.
//!
//! The parser is total: every offset, size and address in the file is checked (with checked
//! arithmetic) against the file and against guest memory before anything is copied, and any
//! malformed input is an [`ElfError`], never a panic. Fuzzed by `fuzz/fuzz_targets/hvt_elf.rs`.

use hvt_abi::layout;

use crate::memory::GuestMemory;

/// Why a kernel image cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// Not an ELF file at all.
    #[error("not an ELF file (bad magic)")]
    NotElf,
    /// An ELF file of another kind (32-bit, big-endian, not x86_64, not an executable).
    #[error("unsupported ELF: {0}")]
    Unsupported(&'static str),
    /// A header field points outside the file or is inconsistent.
    #[error("corrupt ELF: {0}")]
    Corrupt(&'static str),
    /// A segment does not fit in guest memory or sits below the kernel area.
    #[error(
        "segment at {addr:#x}+{size:#x} does not fit guest memory {mem:#x} (kernel area starts at {min:#x})",
        min = layout::KERNEL_MIN
    )]
    DoesNotFit {
        /// Load address.
        addr: u64,
        /// Size in memory.
        size: u64,
        /// Guest memory size.
        mem: u64,
    },
    /// The ELF has no virga hvt ABI note: it was not built for the hvt target.
    #[error("not an hvt unikernel: no VIRGA ABI note (was it built with --target hvt?)")]
    NoAbiNote,
    /// The ELF speaks another ABI version.
    #[error("unikernel speaks hvt ABI v{found}, this monitor speaks v{expected}")]
    AbiVersion {
        /// Version in the note.
        found: u32,
        /// [`hvt_abi::ABI_VERSION`].
        expected: u32,
    },
}

/// A loaded kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    /// Entry point (guest-physical = virtual).
    pub entry: u64,
    /// First byte after the highest loaded segment.
    pub end: u64,
}

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const MAX_PHDRS: usize = 64;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[derive(Debug, Clone, Copy)]
struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn file_range(image: &[u8], offset: u64, len: u64) -> Result<&[u8], ElfError> {
    let start = usize::try_from(offset).map_err(|_| ElfError::Corrupt("offset too large"))?;
    let len = usize::try_from(len).map_err(|_| ElfError::Corrupt("size too large"))?;
    let end = start
        .checked_add(len)
        .ok_or(ElfError::Corrupt("segment overflows"))?;
    image.get(start..end).ok_or(ElfError::Corrupt(
        "segment extends past the end of the file",
    ))
}

fn program_headers(image: &[u8]) -> Result<(u64, Vec<Phdr>), ElfError> {
    if image.len() < 4 || &image[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    if image.len() < EHDR_SIZE {
        return Err(ElfError::Corrupt("truncated ELF header"));
    }
    if image[4] != 2 {
        return Err(ElfError::Unsupported("not 64-bit"));
    }
    if image[5] != 1 {
        return Err(ElfError::Unsupported("not little-endian"));
    }
    if image[6] != 1 {
        return Err(ElfError::Unsupported("unknown ELF version"));
    }
    let corrupt = ElfError::Corrupt("truncated ELF header");
    if u16_at(image, 16).ok_or(corrupt.clone())? != 2 {
        return Err(ElfError::Unsupported(
            "not an executable (ET_EXEC); build a static kernel",
        ));
    }
    if u16_at(image, 18).ok_or(corrupt.clone())? != 0x3e {
        return Err(ElfError::Unsupported("not x86_64"));
    }
    let entry = u64_at(image, 24).ok_or(corrupt.clone())?;
    let phoff = u64_at(image, 32).ok_or(corrupt.clone())?;
    let phentsize = u16_at(image, 54).ok_or(corrupt.clone())? as usize;
    let phnum = u16_at(image, 56).ok_or(corrupt)? as usize;
    if phentsize != PHDR_SIZE {
        return Err(ElfError::Corrupt("unexpected program header size"));
    }
    if phnum == 0 || phnum > MAX_PHDRS {
        return Err(ElfError::Corrupt("no or too many program headers"));
    }
    let table = file_range(image, phoff, (phnum * PHDR_SIZE) as u64)?;
    let mut out = Vec::with_capacity(phnum);
    for ph in table.chunks_exact(PHDR_SIZE) {
        let bad = ElfError::Corrupt("program header");
        out.push(Phdr {
            kind: u32_at(ph, 0).ok_or(bad.clone())?,
            flags: u32_at(ph, 4).ok_or(bad.clone())?,
            offset: u64_at(ph, 8).ok_or(bad.clone())?,
            paddr: u64_at(ph, 24).ok_or(bad.clone())?,
            filesz: u64_at(ph, 32).ok_or(bad.clone())?,
            memsz: u64_at(ph, 40).ok_or(bad)?,
        });
    }
    Ok((entry, out))
}

/// Finds the virga ABI note in a note segment's bytes.
fn find_abi_note(mut notes: &[u8]) -> Option<u32> {
    while notes.len() >= 12 {
        let namesz = u32_at(notes, 0)? as usize;
        let descsz = u32_at(notes, 4)? as usize;
        let kind = u32_at(notes, 8)?;
        let name_start = 12usize;
        let desc_start = name_start.checked_add(namesz.checked_next_multiple_of(4)?)?;
        let next = desc_start.checked_add(descsz.checked_next_multiple_of(4)?)?;
        let name = notes.get(name_start..name_start.checked_add(namesz)?)?;
        let desc = notes.get(desc_start..desc_start.checked_add(descsz)?)?;
        let owner = name.strip_suffix(&[0]).unwrap_or(name);
        if owner == hvt_abi::note::OWNER && kind == hvt_abi::note::TYPE_ABI && descsz == 4 {
            return u32_at(desc, 0);
        }
        notes = notes.get(next..)?;
    }
    None
}

/// Checks `image` and copies its loadable segments into `mem`.
pub fn load(mem: &mut GuestMemory, image: &[u8]) -> Result<Kernel, ElfError> {
    let (entry, phdrs) = program_headers(image)?;

    let mut abi = None;
    for ph in phdrs.iter().filter(|p| p.kind == PT_NOTE) {
        if let Some(v) = find_abi_note(file_range(image, ph.offset, ph.filesz)?) {
            abi = Some(v);
        }
    }
    match abi {
        None => return Err(ElfError::NoAbiNote),
        Some(v) if v != hvt_abi::ABI_VERSION => {
            return Err(ElfError::AbiVersion {
                found: v,
                expected: hvt_abi::ABI_VERSION,
            });
        }
        Some(_) => {}
    }

    let mut end = 0u64;
    let mut entry_ok = false;
    let mut loaded = 0;
    for ph in phdrs.iter().filter(|p| p.kind == PT_LOAD && p.memsz > 0) {
        if ph.filesz > ph.memsz {
            return Err(ElfError::Corrupt("segment file size exceeds memory size"));
        }
        let data = file_range(image, ph.offset, ph.filesz)?;
        let seg_end = ph.paddr.checked_add(ph.memsz);
        let fits = ph.paddr >= layout::KERNEL_MIN && seg_end.is_some_and(|e| e <= mem.size());
        let (Some(seg_end), true) = (seg_end, fits) else {
            return Err(ElfError::DoesNotFit {
                addr: ph.paddr,
                size: ph.memsz,
                mem: mem.size(),
            });
        };
        let dst = mem
            .slice_mut(ph.paddr, ph.memsz)
            .map_err(|_| ElfError::DoesNotFit {
                addr: ph.paddr,
                size: ph.memsz,
                mem: 0,
            })?;
        let (file_part, bss) = dst.split_at_mut(data.len());
        file_part.copy_from_slice(data);
        bss.fill(0);
        end = end.max(seg_end);
        if ph.flags & PF_X != 0 && (ph.paddr..seg_end).contains(&entry) {
            entry_ok = true;
        }
        loaded += 1;
    }
    if loaded == 0 {
        return Err(ElfError::Corrupt("no loadable segment"));
    }
    if !entry_ok {
        return Err(ElfError::Corrupt(
            "entry point is not in an executable segment",
        ));
    }
    Ok(Kernel { entry, end })
}

/// Test helpers: builds minimal hvt ELF images around raw machine code.
#[doc(hidden)]
pub mod testing {
    /// A static ELF with one RWX PT_LOAD at `0x100000` holding `code` (entry = its first byte),
    /// `bss` extra zeroed bytes, and a PT_NOTE with the ABI note of `abi` (none if `None`).
    pub fn tiny_elf(code: &[u8], bss: u64, abi: Option<u32>) -> Vec<u8> {
        let mut note = Vec::new();
        if let Some(v) = abi {
            note.extend_from_slice(&6u32.to_le_bytes());
            note.extend_from_slice(&4u32.to_le_bytes());
            note.extend_from_slice(&hvt_abi::note::TYPE_ABI.to_le_bytes());
            note.extend_from_slice(b"VIRGA\0\0\0");
            note.extend_from_slice(&v.to_le_bytes());
        }
        let phnum: u16 = 2;
        let code_off = 64 + 56 * u64::from(phnum);
        let note_off = code_off + code.len() as u64;
        let base = hvt_abi::layout::KERNEL_MIN;
        let mut f = Vec::new();
        f.extend_from_slice(b"\x7fELF\x02\x01\x01\0");
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f.extend_from_slice(&0x3eu16.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&base.to_le_bytes()); // entry
        f.extend_from_slice(&64u64.to_le_bytes()); // phoff
        f.extend_from_slice(&0u64.to_le_bytes()); // shoff
        f.extend_from_slice(&0u32.to_le_bytes()); // flags
        f.extend_from_slice(&64u16.to_le_bytes());
        f.extend_from_slice(&56u16.to_le_bytes());
        f.extend_from_slice(&phnum.to_le_bytes());
        f.extend_from_slice(&[0; 6]);
        let mut ph = |kind: u32, flags: u32, off: u64, addr: u64, filesz: u64, memsz: u64| {
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(&flags.to_le_bytes());
            for v in [off, addr, addr, filesz, memsz, 0x1000] {
                f.extend_from_slice(&v.to_le_bytes());
            }
        };
        let len = code.len() as u64;
        ph(1, 7, code_off, base, len, len + bss);
        ph(4, 4, note_off, 0, note.len() as u64, note.len() as u64);
        f.extend_from_slice(code);
        f.extend_from_slice(&note);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::testing::tiny_elf;
    use super::*;

    fn mem() -> GuestMemory {
        GuestMemory::new(4 << 20).unwrap()
    }

    #[test]
    fn loads_code_and_zeroes_bss() {
        let mut m = mem();
        m.write(0x100000, &[0xff; 64]).unwrap();
        let k = load(
            &mut m,
            &tiny_elf(&[0xf4, 0x90], 16, Some(hvt_abi::ABI_VERSION)),
        )
        .unwrap();
        assert_eq!(
            k,
            Kernel {
                entry: 0x100000,
                end: 0x100012
            }
        );
        assert_eq!(m.slice(0x100000, 2).unwrap(), &[0xf4, 0x90]);
        assert!(m.slice(0x100002, 16).unwrap().iter().all(|b| *b == 0));
    }

    #[test]
    fn rejects_bad_images() {
        let mut m = mem();
        assert_eq!(load(&mut m, b""), Err(ElfError::NotElf));
        assert_eq!(load(&mut m, b"#!/bin/sh\necho hi\n"), Err(ElfError::NotElf));
        assert!(matches!(
            load(&mut m, b"\x7fELF\x02"),
            Err(ElfError::Corrupt(_))
        ));
        assert_eq!(
            load(&mut m, &tiny_elf(&[0xf4], 0, None)),
            Err(ElfError::NoAbiNote)
        );
        assert_eq!(
            load(&mut m, &tiny_elf(&[0xf4], 0, Some(99))),
            Err(ElfError::AbiVersion {
                found: 99,
                expected: hvt_abi::ABI_VERSION
            })
        );
        // A bss larger than guest memory.
        assert!(matches!(
            load(
                &mut m,
                &tiny_elf(&[0xf4], 8 << 20, Some(hvt_abi::ABI_VERSION))
            ),
            Err(ElfError::DoesNotFit { .. })
        ));
        // Every truncation of a valid image is an error, never a panic.
        let good = tiny_elf(&[0xf4; 8], 0, Some(hvt_abi::ABI_VERSION));
        for n in 0..good.len() {
            assert!(load(&mut m, &good[..n]).is_err(), "truncated at {n}");
        }
    }

    #[test]
    fn rejects_overflowing_segment() {
        let mut img = tiny_elf(&[0xf4], 0, Some(hvt_abi::ABI_VERSION));
        // First program header's p_paddr (offset 64 + 24) = u64::MAX - 1.
        img[88..96].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        assert!(matches!(
            load(&mut mem(), &img),
            Err(ElfError::DoesNotFit { .. })
        ));
        let mut img = tiny_elf(&[0xf4], 0, Some(hvt_abi::ABI_VERSION));
        // p_offset far past the end of the file.
        img[72..80].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(load(&mut mem(), &img), Err(ElfError::Corrupt(_))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_mutations(pos in 0usize..200, val: u8, extra in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut img = tiny_elf(&[0xf4; 4], 32, Some(hvt_abi::ABI_VERSION));
            if pos < img.len() { img[pos] = val; }
            img.extend_from_slice(&extra);
            let _ = load(&mut mem(), &img);
        }
    }
}
