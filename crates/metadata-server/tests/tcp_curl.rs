//! The TCP server driven by curl on 127.0.0.1: the IMDSv2 flow, token modes, listings, 404s,
//! OpenStack, fault injection, oversized requests and keep-alive.

mod common;

use std::time::{Duration, Instant};

use common::{INSTANCE_ID, KEY, Server, curl, metadata_dir, secret_file};

const TTL: &str = "X-aws-ec2-metadata-token-ttl-seconds: 21600";

fn token(s: &Server, ttl_header: &str) -> String {
    let r = curl(&["-X", "PUT", "-H", ttl_header, &s.url("/latest/api/token")]);
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("x-aws-ec2-metadata-token-ttl-seconds:"),
        "{r:?}"
    );
    r.body
}

fn get_with(s: &Server, path: &str, token: &str) -> common::Curl {
    curl(&[
        "-H",
        &format!("X-aws-ec2-metadata-token: {token}"),
        &s.url(path),
    ])
}

#[test]
fn imdsv2_flow_listings_and_404() {
    let dir = metadata_dir();
    let s = Server::start(&["--cloud", "ec2", "--dir", dir.path().to_str().unwrap()]);
    let t = token(&s, TTL);
    let r = get_with(&s, "/latest/meta-data/instance-id", &t);
    assert_eq!((r.status, r.body.as_str()), (200, INSTANCE_ID));
    let r = get_with(&s, "/latest/meta-data/", &t);
    assert_eq!(r.status, 200);
    let entries: Vec<&str> = r.body.lines().collect();
    for e in [
        "ami-launch-index",
        "hostname",
        "instance-id",
        "local-hostname",
        "placement/",
        "public-keys/",
    ] {
        assert!(entries.contains(&e), "{e} missing in {entries:?}");
    }
    assert_eq!(
        get_with(&s, "/latest/meta-data/public-keys/", &t).body,
        "0=tester@virga"
    );
    assert_eq!(
        get_with(&s, "/latest/meta-data/public-keys/0/openssh-key", &t).body,
        format!("{KEY}\n")
    );
    assert_eq!(
        get_with(&s, "/2009-04-04/meta-data/placement/availability-zone", &t).body,
        "virga-1a"
    );
    assert_eq!(
        get_with(&s, "/latest/user-data", &t).body,
        "#!/bin/sh\necho hello\n"
    );
    assert_eq!(get_with(&s, "/latest/meta-data/nope", &t).status, 404);
    assert_eq!(
        get_with(&s, "/openstack/", &t).status,
        404,
        "ec2 has no /openstack"
    );
    // IMDSv1 still works in the default mode; a bad token does not.
    assert_eq!(curl(&[&s.url("/latest/meta-data/instance-id")]).status, 200);
    assert_eq!(
        get_with(&s, "/latest/meta-data/instance-id", "0123").status,
        401
    );
    // Token request rules.
    let put = |h: &[&str]| {
        let mut args = vec!["-X", "PUT"];
        for x in h {
            args.extend(["-H", x]);
        }
        let url = s.url("/latest/api/token");
        args.push(&url);
        curl(&args).status
    };
    assert_eq!(put(&[]), 400);
    assert_eq!(put(&["X-aws-ec2-metadata-token-ttl-seconds: 21601"]), 400);
    assert_eq!(put(&[TTL, "X-Forwarded-For: 10.0.0.1"]), 403);
}

#[test]
fn v2_only_and_expired_tokens() {
    let dir = metadata_dir();
    let s = Server::start(&[
        "--cloud",
        "ec2",
        "--imds",
        "v2-only",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let r = curl(&[&s.url("/latest/meta-data/instance-id")]);
    assert_eq!(r.status, 401, "{r:?}");
    let t = token(&s, "X-aws-ec2-metadata-token-ttl-seconds: 1");
    assert_eq!(
        get_with(&s, "/latest/meta-data/instance-id", &t).status,
        200
    );
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        get_with(&s, "/latest/meta-data/instance-id", &t).status,
        401,
        "expired"
    );
}

#[test]
fn v1_only_and_disabled() {
    let dir = metadata_dir();
    let d = dir.path().to_str().unwrap();
    let s = Server::start(&["--cloud", "ec2", "--imds", "v1-only", "--dir", d]);
    assert_eq!(
        curl(&["-X", "PUT", "-H", TTL, &s.url("/latest/api/token")]).status,
        404
    );
    assert_eq!(curl(&[&s.url("/latest/meta-data/instance-id")]).status, 200);
    let s = Server::start(&["--cloud", "ec2", "--imds", "disabled", "--dir", d]);
    assert_eq!(curl(&[&s.url("/latest/meta-data/instance-id")]).status, 403);
}

#[test]
fn tokens_validate_across_processes_sharing_a_secret() {
    let dir = metadata_dir();
    let d = dir.path().to_str().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let shared = secret_file(secrets.path(), "a.key");
    let other = secret_file(secrets.path(), "b.key");
    let a = Server::start(&[
        "--cloud",
        "ec2",
        "--dir",
        d,
        "--token-secret-file",
        shared.to_str().unwrap(),
    ]);
    let b = Server::start(&[
        "--cloud",
        "ec2",
        "--imds",
        "v2-only",
        "--dir",
        d,
        "--token-secret-file",
        shared.to_str().unwrap(),
    ]);
    let c = Server::start(&[
        "--cloud",
        "ec2",
        "--dir",
        d,
        "--token-secret-file",
        other.to_str().unwrap(),
    ]);
    let t = token(&a, TTL);
    assert_eq!(
        get_with(&b, "/latest/meta-data/instance-id", &t).status,
        200
    );
    assert_eq!(
        get_with(&c, "/latest/meta-data/instance-id", &t).status,
        401
    );
}

#[test]
fn openstack_service() {
    let dir = metadata_dir();
    let s = Server::start(&[
        "--cloud",
        "openstack",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    for p in ["/openstack", "/openstack/"] {
        let r = curl(&[&s.url(p)]);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "2018-08-27\nlatest"),
            "{p}"
        );
    }
    let r = curl(&[&s.url("/openstack/latest/meta_data.json")]);
    assert_eq!(r.status, 200);
    let md: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(md["uuid"], INSTANCE_ID);
    assert_eq!(md["public_keys"]["tester@virga"], KEY);
    // Dated versions that are not on disk are served from `latest`.
    assert_eq!(
        curl(&[&s.url("/openstack/2015-10-15/user_data")]).body,
        "#!/bin/sh\necho hello\n"
    );
    assert_eq!(
        curl(&[&s.url("/openstack/latest/network_data.json")]).status,
        404
    );
    let listing = curl(&[&s.url("/openstack/latest/")]).body;
    assert_eq!(
        listing,
        "meta_data.json\nuser_data\nvendor_data.json\nvendor_data2.json"
    );
    // Nova also serves the EC2 tree.
    assert_eq!(
        curl(&[&s.url("/latest/meta-data/instance-id")]).body,
        INSTANCE_ID
    );
}

#[test]
fn fault_500_and_redirect() {
    let dir = metadata_dir();
    let d = dir.path().to_str().unwrap();
    let s = Server::start(&["--cloud", "ec2", "--dir", d, "--fault", "500"]);
    let r = curl(&[&s.url("/latest/meta-data/instance-id")]);
    assert_eq!(r.status, 500, "{r:?}");
    let s = Server::start(&[
        "--cloud",
        "ec2",
        "--dir",
        d,
        "--fault",
        "redirect",
        "--redirect-to",
        "http://elsewhere.invalid/",
    ]);
    let r = curl(&[&s.url("/latest/meta-data/instance-id")]);
    assert_eq!(r.status, 302, "{r:?}");
    assert!(
        r.headers
            .contains("Location: http://elsewhere.invalid/latest/meta-data/instance-id\r\n"),
        "{}",
        r.headers
    );
}

#[test]
fn fault_hang_on_one_path_while_others_work() {
    let dir = metadata_dir();
    let mut s = Server::start(&[
        "--cloud",
        "ec2",
        "--dir",
        dir.path().to_str().unwrap(),
        "--fault",
        "hang",
        "--fault-path",
        "/latest/user-data",
    ]);
    let t0 = Instant::now();
    let r = curl(&["-m", "1", &s.url("/latest/user-data")]);
    assert_eq!(r.exit, 28, "curl must time out: {r:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let r = curl(&["-m", "5", &s.url("/latest/meta-data/instance-id")]);
    assert_eq!((r.status, r.body.as_str()), (200, INSTANCE_ID));
    assert!(s.alive());
}

#[test]
fn fault_slow_and_garbage() {
    let dir = metadata_dir();
    let d = dir.path().to_str().unwrap();
    let s = Server::start(&[
        "--cloud",
        "ec2",
        "--dir",
        d,
        "--fault",
        "slow",
        "--slow-delay-ms",
        "50",
    ]);
    let r = curl(&["-m", "1", &s.url("/latest/meta-data/instance-id")]);
    assert_eq!(
        r.exit, 28,
        "a 1 s client gives up on ~200 bytes at 50 ms each: {r:?}"
    );
    let t0 = Instant::now();
    let r = curl(&["-m", "30", &s.url("/latest/meta-data/instance-id")]);
    assert_eq!((r.status, r.body.as_str()), (200, INSTANCE_ID), "{r:?}");
    assert!(
        t0.elapsed() > Duration::from_secs(5),
        "not slow: {:?}",
        t0.elapsed()
    );
    let s = Server::start(&["--cloud", "ec2", "--dir", d, "--fault", "garbage"]);
    let r = curl(&["-m", "5", &s.url("/latest/meta-data/instance-id")]);
    assert_ne!(r.exit, 0, "{r:?}");
    assert_eq!(r.status, 0, "{r:?}");
}

#[test]
fn oversized_requests_are_refused_and_the_server_stays_up() {
    let dir = metadata_dir();
    let mut s = Server::start(&["--cloud", "ec2", "--dir", dir.path().to_str().unwrap()]);
    let big = format!("X-Big: {}", "a".repeat(20_000));
    let r = curl(&["-H", &big, &s.url("/latest/meta-data/instance-id")]);
    assert_eq!(r.status, 431, "{r:?}");
    let body_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body_file.path(), vec![b'x'; 100_000]).unwrap();
    let r = curl(&[
        "-X",
        "PUT",
        "-H",
        TTL,
        "--data-binary",
        &format!("@{}", body_file.path().display()),
        &s.url("/latest/api/token"),
    ]);
    assert_eq!(r.status, 413, "{r:?}");
    assert!(s.alive());
    assert_eq!(curl(&[&s.url("/latest/meta-data/instance-id")]).status, 200);
}

#[test]
fn keep_alive_reuses_one_connection() {
    let dir = metadata_dir();
    let logs = tempfile::tempdir().unwrap();
    let access = logs.path().join("access.log");
    let s = Server::start(&[
        "--cloud",
        "ec2",
        "--dir",
        dir.path().to_str().unwrap(),
        "--access-log",
        access.to_str().unwrap(),
    ]);
    // One curl invocation, two URLs: curl keeps the connection open between them.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--noproxy", "*"])
        .arg(s.url("/latest/meta-data/instance-id"))
        .arg(s.url("/latest/meta-data/local-hostname"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{INSTANCE_ID}virga-test")
    );
    // The server writes a request's log line after the response has gone out, so curl can
    // exit before the second line is there: wait for it (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let log = loop {
        let log = std::fs::read_to_string(&access).unwrap();
        if log.lines().count() >= 2 || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let peers: Vec<&str> = log
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(peers.len(), 2, "{log}");
    assert_eq!(
        peers[0], peers[1],
        "both requests on one connection:\n{log}"
    );
    assert!(
        log.contains("GET /latest/meta-data/instance-id 200"),
        "{log}"
    );
}
