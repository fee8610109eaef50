//! `hello`: prints, reads both clocks, sleeps (`sleep_ms=N`, default 20), and exits with the
//! code given as `exit=N`.

#![cfg_attr(target_os = "none", no_std, no_main)]

use unikernel::{Duration, Runtime, println};

fn app(rt: &mut Runtime) -> u8 {
    let start = rt.now();
    println!("hello from a virga unikernel");
    println!(
        "wall clock: {} s since the epoch",
        rt.wall_clock().unix_secs()
    );
    let ms = rt
        .arg("sleep_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    rt.sleep(Duration::from_millis(ms));
    let slept = rt.now().duration_since(start);
    println!("monotonic: slept {} us", slept.as_micros());
    let code = rt.arg("exit").and_then(|v| v.parse().ok()).unwrap_or(0);
    println!("exiting with code {code}");
    code
}

unikernel::main!(app);
