//! virtio for the `microvm` target: the split virtqueue ([`queue`], safe code over atomics,
//! unit-tested on the host against a simulated device), and on bare metal the virtio-mmio
//! transport with the block and network drivers.

pub mod queue;
