//! The update core's on-disk formats checked by the real tools: the dm-verity root hash and
//! hash device against `veritysetup` (cryptsetup-bin), the GRUB environment block against
//! `grub-editenv` (grub-common).

use std::process::Command;

use update::grubenv::EnvBlock;
use update::slots::{self, BootMode, Booted, Slot, SlotEnv};
use update::verity::{VerityHasher, build_hash_device};

fn run(cmd: &mut Command, package: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}; install Debian's {package}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn verity_matches_veritysetup() {
    let d = tempfile::tempdir().unwrap();
    for blocks in [1u64, 2, 128, 129, 431, 16_385] {
        let data: Vec<u8> = (0..blocks * 4096)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let data_path = d.path().join("data");
        std::fs::write(&data_path, &data).unwrap();
        let salt = [0x42u8; 32];
        let uuid = "12345678-9abc-4def-8123-456789abcdef";
        let uuid_bytes: [u8; 16] = hex::decode(uuid.replace('-', ""))
            .unwrap()
            .try_into()
            .unwrap();
        let theirs_path = d.path().join("theirs");
        let _ = std::fs::remove_file(&theirs_path);
        let out = run(
            Command::new("veritysetup")
                .args(["format", "--hash", "sha256", "--data-block-size", "4096"])
                .args(["--hash-block-size", "4096", "--salt", &hex::encode(salt)])
                .arg(format!("--uuid={uuid}"))
                .arg(&data_path)
                .arg(&theirs_path),
            "cryptsetup-bin",
        );
        let ours = build_hash_device(&data, &salt, uuid_bytes);
        assert!(
            out.contains(&hex::encode(ours.root_hash)),
            "{blocks} blocks: {out}"
        );
        let theirs = std::fs::read(&theirs_path).unwrap();
        assert!(
            theirs == ours.device,
            "{blocks} blocks: hash devices differ"
        );
        // The streaming hasher the guest uses, fed in odd pieces.
        let mut h = VerityHasher::new(&salt, blocks);
        for piece in data.chunks(40_000) {
            h.update(piece).unwrap();
        }
        assert_eq!(h.finish().unwrap(), ours.root_hash);
    }
}

#[test]
fn grubenv_round_trips_through_grub_editenv() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("grubenv");
    // grub-editenv creates a block; we read it, apply a transition, write it back; it reads
    // ours and changes it; we read that.
    run(
        Command::new("grub-editenv").arg(&p).arg("create"),
        "grub-common",
    );
    run(
        Command::new("grub-editenv").arg(&p).args([
            "set",
            "ORDER=A B",
            "A_OK=1",
            "A_TRY=0",
            "B_OK=0",
            "B_TRY=0",
            "other=x",
        ]),
        "grub-common",
    );
    let bytes = std::fs::read(&p).unwrap();
    let mut block = EnvBlock::parse(&bytes).unwrap();
    let env = SlotEnv::from_block(&block);
    assert_eq!(env, SlotEnv::fresh());
    let booted = Booted {
        slot: Slot::A,
        mode: BootMode::Try,
    };
    let (e, _) = slots::begin_install(&env, booted).unwrap();
    let e = slots::arm(&e, booted).unwrap();
    e.apply(&mut block);
    std::fs::write(&p, block.render().unwrap()).unwrap();
    let listed = run(
        Command::new("grub-editenv").arg(&p).arg("list"),
        "grub-common",
    );
    assert_eq!(
        listed,
        "ORDER=B A\nA_OK=1\nA_TRY=0\nB_OK=1\nB_TRY=0\nother=x\n"
    );
    // GRUB's own `save_env` of B_TRY=1 (what grub.cfg does before booting B).
    run(
        Command::new("grub-editenv")
            .arg(&p)
            .args(["set", "B_TRY=1"]),
        "grub-common",
    );
    let back = std::fs::read(&p).unwrap();
    assert_eq!(back.len(), 1024);
    let env = SlotEnv::from_block(&EnvBlock::parse(&back).unwrap());
    assert!(env.is_tried(Slot::B));
    assert_eq!(env.order, vec![Slot::B, Slot::A]);
}
