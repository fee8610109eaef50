/work/main/crates/unikernel/src/baremetal/target/unikernel-microvm/x86_64-unknown-none/release/examples/block-9b08bdbce8061b86.d: crates/unikernel/examples/block.rs

/work/main/crates/unikernel/src/baremetal/target/unikernel-microvm/x86_64-unknown-none/release/examples/block-9b08bdbce8061b86: crates/unikernel/examples/block.rs

crates/unikernel/examples/block.rs:
