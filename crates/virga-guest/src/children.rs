//! Children that a boot stage runs and waits for (user-data scripts, bootcmd, runcmd), kept
//! apart from everything else PID 1 reaps.
//!
//! PID 1 inherits every orphan of the machine and must reap them; but a blanket
//! `waitpid(-1)` would also reap a stage's own child (a stage that overran its deadline keeps
//! running after the ready line), and the stage would then report a false failure. So a stage's
//! children are registered here from the moment they exist ([`spawn`]), each is waited for on
//! its own pidfd, and the supervisor reaps only its services and the zombies *not* registered
//! here ([`reap_others`]).
//!
//! Every child runs as the leader of a new session and process group, so a timeout kills the
//! whole group (a script's own children included), not just the shell.

use std::collections::BTreeSet;
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::time::Instant;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Pids of registered children. Held across spawn and registration, and across the
/// supervisor's scan, so a child can never be reaped between the two.
static OWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn owned() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    OWNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// A registered child: waited for by its stage, killed with its process group if the stage
/// gives up on it.
#[derive(Debug)]
pub struct Owned {
    child: Child,
    done: bool,
}

/// Starts `cmd` as the leader of a new session and registers it.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Owned> {
    let mut set = owned();
    let child = crate::sys::spawn_new_session(cmd).spawn()?;
    set.insert(child.id() as i32);
    Ok(Owned { child, done: false })
}

impl Owned {
    /// Waits until the child exits or `deadline` passes (`Ok(None)`: still running). The
    /// wait wakes when the child exits (a pidfd), not at the next tick of a sleep.
    pub fn wait_until(&mut self, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = crate::sys::wait_timeout(&mut self.child, left)?;
        if r.is_some() {
            self.done = true;
        }
        Ok(r)
    }

    /// The child's stdin and stdout pipes, when it was started with them.
    pub fn take_pipes(
        &mut self,
    ) -> (
        Option<std::process::ChildStdin>,
        Option<std::process::ChildStdout>,
    ) {
        (self.child.stdin.take(), self.child.stdout.take())
    }

    /// Kills the child's whole process group and reaps the child.
    pub fn kill_group(&mut self) {
        if self.done {
            return;
        }
        let pid = self.child.id() as i32;
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.done = true;
    }

    /// The child's pid.
    #[cfg(test)]
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.kill_group();
        owned().remove(&(self.child.id() as i32));
    }
}

/// Reaps every exited child of this process that is not a registered stage child, calling
/// `exited(pid, how)` for each. Services are reaped by pid first; then the zombies whose parent
/// is this process (orphans re-parented to PID 1) are found in `/proc`.
pub fn reap_others(services: &[Pid], exited: impl FnMut(Pid, String)) {
    let me = std::process::id() as i32;
    reap_among(services, || zombie_children(me), exited);
}

/// [`reap_others`] with the zombie scan given (tests pass their own, so as not to reap other
/// tests' children).
fn reap_among(
    services: &[Pid],
    zombies: impl FnOnce() -> Vec<i32>,
    mut exited: impl FnMut(Pid, String),
) {
    for &pid in services {
        reap_one(pid, &mut exited);
    }
    let set = owned();
    for pid in zombies() {
        if !set.contains(&pid) {
            reap_one(Pid::from_raw(pid), &mut exited);
        }
    }
}

fn reap_one(pid: Pid, exited: &mut impl FnMut(Pid, String)) {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(p, code)) => exited(p, format!("exited with {code}")),
        Ok(WaitStatus::Signaled(p, sig, _)) => exited(p, format!("killed by {sig}")),
        _ => {}
    }
}

/// Pids of zombie processes whose parent is `parent`.
fn zombie_children(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .is_some_and(|(state, ppid)| state == 'Z' && ppid == parent)
        })
        .collect()
}

/// `(state, ppid)` from a `/proc/PID/stat` line. The command name is in parentheses and may
/// itself hold spaces and parentheses: the fields start after the last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stat_lines_with_odd_names() {
        assert_eq!(parse_stat("42 (sh) Z 1 42 42 0 -1 4194564"), Some(('Z', 1)));
        assert_eq!(parse_stat("43 (a) b) c) S 7 43 43"), Some(('S', 7)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_registered_child_is_left_to_its_stage() {
        // The child exits at once; the "supervisor" scans before the stage waits.
        let mut c = spawn(Command::new("true").stdin(std::process::Stdio::null())).unwrap();
        let pid = c.id() as i32;
        std::thread::sleep(Duration::from_millis(200));
        assert!(zombie_children(std::process::id() as i32).contains(&pid));
        let mut reaped = Vec::new();
        reap_among(&[], || vec![pid], |p, _| reaped.push(p.as_raw()));
        assert!(reaped.is_empty(), "the supervisor reaped a stage's child");
        let status = c
            .wait_until(Instant::now() + Duration::from_secs(10))
            .unwrap()
            .expect("exited");
        assert!(status.success());
        // An unregistered zombie is reaped.
        #[allow(clippy::zombie_processes)] // reaped by reap_among, the code under test
        let other = Command::new("true").spawn().unwrap();
        let opid = other.id() as i32;
        std::thread::sleep(Duration::from_millis(200));
        let mut reaped = Vec::new();
        reap_among(&[], || vec![opid], |p, _| reaped.push(p.as_raw()));
        assert_eq!(reaped, vec![opid]);
    }

    #[test]
    fn a_timeout_kills_the_whole_process_group() {
        let marker = tempfile::NamedTempFile::new().unwrap();
        let path = marker.path().to_owned();
        // The shell starts a grandchild that would write the marker after 2 s.
        let mut c = spawn(Command::new("sh").args([
            "-c",
            &format!("(sleep 2; echo alive > {}) & sleep 30", path.display()),
        ]))
        .unwrap();
        assert!(
            c.wait_until(Instant::now() + Duration::from_millis(300))
                .unwrap()
                .is_none()
        );
        c.kill_group();
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "",
            "the script's background child outlived the timeout"
        );
    }
}
