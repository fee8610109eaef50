//! The seccomp allow-list really kills the process on a syscall outside it.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

#[test]
fn forbidden_syscall_kills_the_process() {
    if std::env::var_os("VIRGA_SECCOMP_CHILD").is_some() {
        hvt_monitor::seccomp::apply().unwrap();
        // socket(2) is not on the list.
        let _ = std::net::UdpSocket::bind("127.0.0.1:0");
        // Reaching this line means the filter did not work; exit with a distinctive code.
        std::process::exit(77);
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "forbidden_syscall_kills_the_process",
            "--test-threads",
            "1",
        ])
        .env("VIRGA_SECCOMP_CHILD", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "child status: {:?}",
        out.status
    );
}
