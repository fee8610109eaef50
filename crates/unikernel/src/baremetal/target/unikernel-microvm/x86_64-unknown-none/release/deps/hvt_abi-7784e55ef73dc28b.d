/work/main/crates/unikernel/src/baremetal/target/unikernel-microvm/x86_64-unknown-none/release/deps/hvt_abi-7784e55ef73dc28b.d: crates/hvt-abi/src/lib.rs

/work/main/crates/unikernel/src/baremetal/target/unikernel-microvm/x86_64-unknown-none/release/deps/libhvt_abi-7784e55ef73dc28b.rlib: crates/hvt-abi/src/lib.rs

/work/main/crates/unikernel/src/baremetal/target/unikernel-microvm/x86_64-unknown-none/release/deps/libhvt_abi-7784e55ef73dc28b.rmeta: crates/hvt-abi/src/lib.rs

crates/hvt-abi/src/lib.rs:
