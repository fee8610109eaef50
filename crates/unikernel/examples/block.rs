//! `block`: writes sectors, reads them back and verifies them, and checks on the next boot that
//! the previous boot's data survived. Sector 0 holds a header with a boot counter; sectors
//! 1..=8 hold a pattern derived from it. Exit 0 when everything verified, 1 on a mismatch,
//! 2 without a block device, 3 on an I/O error.

#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec;
use unikernel::{BlockDevice, Runtime, UnikernelError, println};

const MAGIC: &[u8; 8] = b"VIRGABLK";
const DATA_SECTORS: u64 = 8;

fn pattern(boot: u64, sector: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (boot as u8).wrapping_mul(31) ^ (sector as u8).wrapping_mul(7) ^ (i as u8);
    }
}

fn run(dev: &mut BlockDevice) -> Result<u8, UnikernelError> {
    let info = dev.info();
    let ss = info.sector_size as usize;
    println!("block: {} sectors of {} bytes", info.sectors, ss);
    if info.sectors < DATA_SECTORS + 2 {
        println!("block: device too small");
        return Ok(1);
    }
    let mut header = vec![0u8; ss];
    dev.read(0, &mut header)?;
    let previous = if &header[..8] == MAGIC {
        u64::from_le_bytes(header[8..16].try_into().unwrap_or_default())
    } else {
        0
    };
    let mut data = vec![0u8; ss * DATA_SECTORS as usize];
    let mut expect = vec![0u8; ss];
    if previous > 0 {
        dev.read(1, &mut data)?;
        for (s, chunk) in data.chunks(ss).enumerate() {
            pattern(previous, s as u64 + 1, &mut expect);
            if chunk != expect.as_slice() {
                println!(
                    "block: data of boot {previous} is corrupt in sector {}",
                    s + 1
                );
                return Ok(1);
            }
        }
        println!("block: data of boot {previous} verified");
    }
    let boot = previous + 1;
    for (s, chunk) in data.chunks_mut(ss).enumerate() {
        pattern(boot, s as u64 + 1, chunk);
    }
    dev.write(1, &data)?;
    let mut back = vec![0u8; data.len()];
    dev.read(1, &mut back)?;
    if back != data {
        println!("block: read-back mismatch");
        return Ok(1);
    }
    // The last sector works, one past it is refused.
    let last = info.sectors - 1;
    pattern(boot, last, &mut expect);
    dev.write(last, &expect)?;
    let mut tail = vec![0u8; ss];
    dev.read(last, &mut tail)?;
    if tail != expect || dev.write(info.sectors, &expect).is_ok() {
        println!("block: bounds check failed");
        return Ok(1);
    }
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&boot.to_le_bytes());
    dev.write(0, &header)?;
    dev.flush()?;
    println!(
        "block: boot {boot}: wrote and verified {} sectors",
        DATA_SECTORS + 1
    );
    Ok(0)
}

fn app(rt: &mut Runtime) -> u8 {
    let dev = match rt.block() {
        Ok(d) => d,
        Err(e) => {
            println!("block: {e}");
            return 2;
        }
    };
    match run(dev) {
        Ok(code) => code,
        Err(e) => {
            println!("block: I/O error: {e}");
            3
        }
    }
}

unikernel::main!(app);
