//! Size baseline: a hello world built like the guest binary, with the log subscriber the guest
//! has anyway (see `docs/ssh.md`, "Size").
//! `cargo build -p ssh-server --release --target x86_64-unknown-linux-musl --example size_baseline`
fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(args = std::env::args().count(), "hello");
}
