// Shared by the update_* fuzz targets (included with `include!`; kept out of fuzz_targets/ so
// `./dev fuzz` does not take it for a target): one small valid release, signed by a fixed key
// and verified, built once.

use std::sync::OnceLock;

use update::manifest::{CheckContext, FORMAT, Hex32, ManifestBody, Outcome, SystemInfo};
use update::payload::PayloadBuilder;
use update::{Channel, KeySet, SecretKey, Timestamp, VerifiedManifest, Version};

#[allow(dead_code)]
struct Release {
    key: SecretKey,
    keys: KeySet,
    body: ManifestBody,
    body_json: Vec<u8>,
    manifest: VerifiedManifest,
    payload: Vec<u8>,
}

#[allow(dead_code)]
fn now() -> Timestamp {
    Timestamp(1_796_000_000) // 2026-12-01
}

#[allow(dead_code)]
fn ctx(keys: &KeySet) -> CheckContext<'_> {
    CheckContext {
        keys,
        channel: Channel::Stable,
        running: Version::new(300, 0, 0),
        now: now(),
        allow_downgrade: false,
    }
}

#[allow(dead_code)]
fn release() -> &'static Release {
    static R: OnceLock<Release> = OnceLock::new();
    R.get_or_init(|| {
        let key = SecretKey::from_seed([3; 32]);
        let keys = KeySet::new(1, vec![key.public()]).unwrap();
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        let salt = [9u8; 32];
        let tree = update::verity::build_hash_device(&data, &salt, [1; 16]);
        let version = Version::new(330, 0, 0);
        let mut b = PayloadBuilder::new(version, tree.root_hash, 64 * 1024);
        b.segment(update::payload::SegmentKind::Usr, data)
            .segment(update::payload::SegmentKind::UsrVerity, tree.device.clone())
            .segment(update::payload::SegmentKind::Kernel, vec![7u8; 70_000])
            .segment(update::payload::SegmentKind::Initramfs, vec![5u8; 1000]);
        let (payload, info, segments) = b.build("payloads/330.0.0.bin");
        let body = ManifestBody {
            format: FORMAT,
            channel: "stable".into(),
            version,
            issued: Timestamp(1_795_000_000),
            expires: Timestamp(1_800_000_000),
            system: SystemInfo {
                filesystem: "squashfs".into(),
                root_hash: Hex32(tree.root_hash),
                salt: hex_encode(&salt),
                data_blocks: 3,
                block_size: 4096,
                hash_offset: 4096,
            },
            payload: info,
            segments,
        };
        let doc = update::manifest::sign(&body, &key).unwrap();
        let manifest = match update::manifest::check(&doc, &ctx(&keys)).unwrap() {
            Outcome::Update { manifest, .. } => manifest,
            Outcome::UpToDate(_) => unreachable!(),
        };
        let body_json = serde_json::to_vec_pretty(&body).unwrap();
        Release {
            key,
            keys,
            body,
            body_json,
            manifest,
            payload,
        }
    })
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
