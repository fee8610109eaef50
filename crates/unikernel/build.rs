//! Declares the `virga_target` cfg that `unikernel-build` sets for bare-metal builds.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(virga_target, values(\"microvm\", \"hvt\"))");
    println!("cargo::rerun-if-changed=build.rs");
}
