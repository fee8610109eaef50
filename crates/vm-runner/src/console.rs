//! The serial console: a reader thread collects QEMU's output into lines (echoing them and
//! writing a log when asked); callers wait for lines with deadlines.

use std::io::{Read, Write};
use std::process::Child;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use boot_contract::console::KERNEL_PANIC;

use crate::VmError;

/// Console lines seen so far, shared with the reader thread.
#[derive(Debug, Default)]
pub(crate) struct Console {
    pub(crate) lines: Vec<String>,
    pub(crate) closed: bool,
}

/// Console lines shared between the reader thread and the [`crate::Vm`].
pub(crate) type Shared = Arc<(Mutex<Console>, Condvar)>;

/// Appends lines and wakes waiters.
pub(crate) fn push_lines(console: &Shared, lines: impl IntoIterator<Item = String>) {
    let (m, cv) = &**console;
    m.lock()
        .unwrap_or_else(|p| p.into_inner())
        .lines
        .extend(lines);
    cv.notify_all();
}

/// All lines so far.
pub(crate) fn lines(console: &Shared) -> Vec<String> {
    console
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .lines
        .clone()
}

/// Waits for the first line from index `*cursor` on that satisfies `pred`; moves the cursor
/// past it. Fails on a kernel panic, when the console closes (QEMU exited: `child` is waited
/// for to say how), or at the deadline.
pub(crate) fn wait_for(
    console: &Shared,
    child: &mut Child,
    cursor: &mut usize,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&str) -> bool,
) -> Result<String, VmError> {
    let deadline = Instant::now() + timeout;
    let mut seen = *cursor;
    let (m, cv) = &**console;
    let mut guard = m.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        while seen < guard.lines.len() {
            let line = &guard.lines[seen];
            seen += 1;
            if pred(line) {
                *cursor = seen;
                return Ok(line.clone());
            }
            if line.contains(KERNEL_PANIC) {
                return Err(VmError::KernelPanic(line.trim().to_owned()));
            }
        }
        if guard.closed {
            drop(guard);
            let status = child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            return Err(VmError::Exited(status, what.to_owned()));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(VmError::Timeout(timeout, what.to_owned()));
        }
        guard = cv
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// The reader thread's body: QEMU's stdout, split into lines.
pub(crate) fn read_console(
    mut out: impl Read,
    console: Shared,
    echo: bool,
    mut log: Option<std::fs::File>,
) {
    let mut buf = [0u8; 4096];
    let mut partial: Vec<u8> = Vec::new();
    let stdout = std::io::stdout();
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if echo {
            let mut o = stdout.lock();
            let _ = o.write_all(&buf[..n]);
            let _ = o.flush();
        }
        if let Some(f) = log.as_mut() {
            let _ = f.write_all(&buf[..n]);
        }
        partial.extend_from_slice(&buf[..n]);
        let mut new_lines = Vec::new();
        while let Some(i) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            new_lines.push(text);
        }
        if !new_lines.is_empty() {
            push_lines(&console, new_lines);
        }
    }
    let (m, cv) = &*console;
    let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
    if !partial.is_empty() {
        g.lines.push(String::from_utf8_lossy(&partial).into_owned());
    }
    g.closed = true;
    cv.notify_all();
}
