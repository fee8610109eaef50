//! The reboot semaphore against a real etcd (Debian's `etcd-server`, v3 JSON gateway), started
//! per test on 127.0.0.1 with random ports and a temporary data directory.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use update::etcd::{EtcdClient, LockAttempt, RebootLock};
use update::semaphore::Semaphore;

struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = dir.path().join("etcd.log");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("etcd not found: install Debian's etcd-server (./dev deps)");
        let e = Etcd {
            child,
            url,
            _dir: dir,
            log,
        };
        let c = e.client();
        let start = Instant::now();
        while c.revision().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd did not come up: {}",
                std::fs::read_to_string(&e.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        e
    }

    fn client(&self) -> EtcdClient {
        EtcdClient::new(std::slice::from_ref(&self.url), Duration::from_secs(5)).unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The holders recorded in the semaphore at every revision from 1 to now.
fn history(c: &EtcdClient, key: &str) -> Vec<(i64, Vec<String>)> {
    let now = c.revision().unwrap();
    let mut out: Vec<(i64, Vec<String>)> = Vec::new();
    for rev in 1..=now {
        if let Some(kv) = c.get(key, rev).unwrap()
            && out.last().map(|(r, _)| *r) != Some(kv.mod_revision)
        {
            let s = Semaphore::parse(&kv.value).unwrap();
            out.push((kv.mod_revision, s.holders));
        }
    }
    out
}

#[test]
fn two_holders_max_one_the_second_waits() {
    let etcd = Etcd::start();
    let c = etcd.client();
    let a = RebootLock::new(&c, "default", "m1", 1).unwrap();
    let la = c.grant(30).unwrap();
    let lb = c.grant(30).unwrap();
    let rev_a = match a.try_acquire(la.id).unwrap() {
        LockAttempt::Acquired {
            revision,
            reclaimed,
        } => {
            assert!(reclaimed.is_empty());
            revision
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(a.try_acquire(la.id).unwrap(), LockAttempt::AlreadyHeld);
    let b_client = etcd.client();
    let b = RebootLock::new(&b_client, "default", "m2", 1).unwrap();
    assert_eq!(
        b.try_acquire(lb.id).unwrap(),
        LockAttempt::Full {
            holders: vec!["m1".into()]
        }
    );
    // m2 waits in another thread while m1 holds the slot.
    let url = etcd.url.clone();
    let waiter = std::thread::spawn(move || {
        let c = EtcdClient::new(&[url], Duration::from_secs(5)).unwrap();
        let b = RebootLock::new(&c, "default", "m2", 1).unwrap();
        let t = Instant::now();
        let r = b.acquire(
            lb.id,
            Duration::from_secs(30),
            Duration::from_millis(200),
            &mut std::thread::sleep,
        );
        (r, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !waiter.is_finished(),
        "m2 must wait while m1 holds the lock"
    );
    let rev_release = a.release().unwrap().unwrap();
    let (r, waited) = waiter.join().unwrap();
    let rev_b = match r.unwrap() {
        LockAttempt::Acquired { revision, .. } => revision,
        other => panic!("{other:?}"),
    };
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    assert!(
        rev_a < rev_release && rev_release < rev_b,
        "{rev_a} {rev_release} {rev_b}"
    );
    assert_eq!(a.release().unwrap(), None, "m1 no longer holds it");

    // History through the revisions: never two holders, and the order m1, nobody, m2.
    let h = history(&c, &a.keys().semaphore());
    assert!(h.iter().all(|(_, holders)| holders.len() <= 1), "{h:?}");
    let seq: Vec<Vec<String>> = h.iter().map(|(_, hs)| hs.clone()).collect();
    assert_eq!(
        seq,
        vec![vec!["m1".to_string()], vec![], vec!["m2".to_string()]],
        "{h:?}"
    );
    assert_eq!(h[0].0, rev_a);
    assert_eq!(h[1].0, rev_release);
    assert_eq!(h[2].0, rev_b);
    // The holder key follows the lease.
    let hk = c.get(&a.keys().holder("m2"), 0).unwrap().unwrap();
    assert_eq!(hk.lease, lb.id);
    assert!(c.get(&a.keys().holder("m1"), 0).unwrap().is_none());
}

#[test]
fn a_dead_holder_releases_after_its_lease_ttl() {
    let etcd = Etcd::start();
    let c = etcd.client();
    let a = RebootLock::new(&c, "fleet", "dead-machine", 1).unwrap();
    let b = RebootLock::new(&c, "fleet", "live-machine", 1).unwrap();
    // The dead machine takes the slot with a short lease and never renews it.
    let la = c.grant(3).unwrap();
    assert!(matches!(
        a.try_acquire(la.id).unwrap(),
        LockAttempt::Acquired { .. }
    ));
    let lb = c.grant(30).unwrap();
    let t = Instant::now();
    let r = b
        .acquire(
            lb.id,
            Duration::from_secs(30),
            Duration::from_millis(250),
            &mut std::thread::sleep,
        )
        .unwrap();
    let waited = t.elapsed();
    match r {
        LockAttempt::Acquired { reclaimed, .. } => {
            assert_eq!(reclaimed, vec!["dead-machine".to_string()])
        }
        other => panic!("{other:?}"),
    }
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    assert!(matches!(
        c.keepalive(la.id),
        Err(update::etcd::EtcdError::LeaseExpired(_))
    ));
    // The locksmith-shaped value names only the live holder.
    let kv = c.get(&b.keys().semaphore(), 0).unwrap().unwrap();
    let s = Semaphore::parse(&kv.value).unwrap();
    assert_eq!(
        (s.semaphore, s.max, s.holders),
        (0, 1, vec!["live-machine".into()])
    );
}

#[test]
fn a_kept_alive_holder_keeps_the_slot_and_set_max_lets_more_in() {
    let etcd = Etcd::start();
    let c = etcd.client();
    let a = RebootLock::new(&c, "g", "m1", 1).unwrap();
    let b = RebootLock::new(&c, "g", "m2", 1).unwrap();
    let la = c.grant(3).unwrap();
    let lb = c.grant(30).unwrap();
    assert!(matches!(
        a.try_acquire(la.id).unwrap(),
        LockAttempt::Acquired { .. }
    ));
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        assert!(c.keepalive(la.id).unwrap() > 0);
        assert!(matches!(
            b.try_acquire(lb.id).unwrap(),
            LockAttempt::Full { .. }
        ));
    }
    b.set_max(2).unwrap();
    assert!(matches!(
        b.try_acquire(lb.id).unwrap(),
        LockAttempt::Acquired { .. }
    ));
    // Revoking m1's lease (a machine that goes away cleanly) frees its holder key at once.
    c.revoke(la.id).unwrap();
    assert!(c.get(&a.keys().holder("m1"), 0).unwrap().is_none());
    c.revoke(la.id).unwrap();
}
