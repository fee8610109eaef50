/work/main/crates/unikernel/src/baremetal/target/unikernel-microvm/x86_64-unknown-none/release/deps/bitflags-71a1fa4ad5da2e71.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitflags-1.3.2/src/lib.rs

/work/main/crates/unikernel/src/baremetal/target/unikernel-microvm/x86_64-unknown-none/release/deps/libbitflags-71a1fa4ad5da2e71.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitflags-1.3.2/src/lib.rs

/work/main/crates/unikernel/src/baremetal/target/unikernel-microvm/x86_64-unknown-none/release/deps/libbitflags-71a1fa4ad5da2e71.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitflags-1.3.2/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitflags-1.3.2/src/lib.rs:
