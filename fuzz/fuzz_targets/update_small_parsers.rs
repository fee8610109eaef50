//! The update core's small parsers of untrusted input: GRUB environment blocks (and the slot
//! state read from them), reboot windows, versions, channels, timestamps, durations, the
//! etcd semaphore value, key sets and rotations, the agent's state file, the `virga.update`
//! cloud-config section, dm-verity superblocks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use update::grubenv::{ENV_BLOCK_SIZE, ENV_HEADER, EnvBlock};
use update::slots::{self, BootMode, Booted, Slot, SlotEnv};

include!("../common/update_release.rs");

fuzz_target!(|data: &[u8]| {
    // A 1024-byte block with the header, from the input.
    let mut block = ENV_HEADER.as_bytes().to_vec();
    block.extend_from_slice(&data[..data.len().min(ENV_BLOCK_SIZE - ENV_HEADER.len())]);
    block.resize(ENV_BLOCK_SIZE, b'#');
    for b in [&block[..], data] {
        if let Ok(e) = EnvBlock::parse(b) {
            let env = SlotEnv::from_block(&e);
            for slot in [Slot::A, Slot::B] {
                for mode in [BootMode::Try, BootMode::Fallback] {
                    let booted = Booted { slot, mode };
                    let _ = env.other_state(slot);
                    let _ = slots::detect_rollback(&env, booted);
                    let _ = slots::mark_good(&env, booted);
                    if let Ok((e2, _)) = slots::begin_install(&env, booted) {
                        let armed = slots::arm(&e2, booted).expect("arm after begin_install");
                        let (b, _) = slots::grub_boot(&armed).expect("a bootable slot");
                        assert_eq!(b.slot, slot.other());
                    }
                    let _ = slots::manual_rollback(&env, booted);
                }
            }
            let mut out = e.clone();
            env.apply(&mut out);
            if let Ok(r) = out.render() {
                assert_eq!(SlotEnv::from_block(&EnvBlock::parse(&r).unwrap()), env);
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = text.parse::<update::reboot::Window>();
    let _ = text.parse::<Version>();
    let _ = text.parse::<Channel>();
    let _ = text.parse::<Timestamp>();
    let _ = update::time::parse_duration(&text, 7 * 86_400);
    let _ = update::semaphore::Semaphore::parse(data);
    let _ = KeySet::from_json(data);
    let _ = release().keys.rotate(data);
    let _ = update::status::AgentState::parse(data);
    let _ = update::verity::parse_superblock(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = update::config::UpdateConfig::from_value(&v);
    }
});
