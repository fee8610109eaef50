/work/main/crates/unikernel/src/baremetal/target/unikernel-microvm/x86_64-unknown-none/release/deps/unikernel-a375584a7894b7ba.d: crates/unikernel/src/lib.rs crates/unikernel/src/cmdline.rs crates/unikernel/src/netstack.rs crates/unikernel/src/virtio/mod.rs crates/unikernel/src/virtio/queue.rs crates/unikernel/src/baremetal/mod.rs crates/unikernel/src/baremetal/arch.rs crates/unikernel/src/baremetal/microvm.rs crates/unikernel/src/baremetal/virtio_drv.rs

/work/main/crates/unikernel/src/baremetal/target/unikernel-microvm/x86_64-unknown-none/release/deps/libunikernel-a375584a7894b7ba.rlib: crates/unikernel/src/lib.rs crates/unikernel/src/cmdline.rs crates/unikernel/src/netstack.rs crates/unikernel/src/virtio/mod.rs crates/unikernel/src/virtio/queue.rs crates/unikernel/src/baremetal/mod.rs crates/unikernel/src/baremetal/arch.rs crates/unikernel/src/baremetal/microvm.rs crates/unikernel/src/baremetal/virtio_drv.rs

/work/main/crates/unikernel/src/baremetal/target/unikernel-microvm/x86_64-unknown-none/release/deps/libunikernel-a375584a7894b7ba.rmeta: crates/unikernel/src/lib.rs crates/unikernel/src/cmdline.rs crates/unikernel/src/netstack.rs crates/unikernel/src/virtio/mod.rs crates/unikernel/src/virtio/queue.rs crates/unikernel/src/baremetal/mod.rs crates/unikernel/src/baremetal/arch.rs crates/unikernel/src/baremetal/microvm.rs crates/unikernel/src/baremetal/virtio_drv.rs

crates/unikernel/src/lib.rs:
crates/unikernel/src/cmdline.rs:
crates/unikernel/src/netstack.rs:
crates/unikernel/src/virtio/mod.rs:
crates/unikernel/src/virtio/queue.rs:
crates/unikernel/src/baremetal/mod.rs:
crates/unikernel/src/baremetal/arch.rs:
crates/unikernel/src/baremetal/microvm.rs:
crates/unikernel/src/baremetal/virtio_drv.rs:
