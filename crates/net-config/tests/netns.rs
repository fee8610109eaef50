//! The real client against dnsmasq, in network namespaces this test creates.
//!
//! Each test builds two namespaces joined by a veth pair: `<tag>-s` runs dnsmasq on `vs0`
//! (10.77.0.1/24, fd77:1::1/64), `<tag>-c` holds `vc0`, where the code under test runs in a
//! thread moved into the namespace with `setns`. Nothing touches the host's interfaces and all
//! traffic stays on the veth. The namespaces are deleted when the test ends, pass or fail.
//!
//! Needs root, `ip` (iproute2) and `dnsmasq` (dnsmasq-base):
//! `cargo test -p net-config -- --include-ignored`.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use net_config::{
    DhcpEventKind, DhcpOptions, DhcpService, InterfaceKind, InterfaceMatch, Interfaces, IpFamily,
    NetConfigError, NetStatus, RTPROT_DHCP, Rtnl, StaticConfig, StaticInterface, StaticRoute,
    apply_static, if_info_line, ipv6, run_dhcp,
};

const CLIENT_MAC: &str = "02:00:00:77:00:0c";
const CLIENT_MAC_BYTES: [u8; 6] = [2, 0, 0, 0x77, 0, 0x0c];

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Lab {
    srv: String,
    cli: String,
    dir: PathBuf,
    dnsmasq: Option<Child>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let base = format!("vd{}-{tag}", std::process::id() % 100_000);
        let lab = Lab {
            srv: format!("{base}-s"),
            cli: format!("{base}-c"),
            dir: std::env::temp_dir().join(format!("virga-netns-{base}")),
            dnsmasq: None,
        };
        let _ = fs::remove_dir_all(&lab.dir);
        fs::create_dir_all(&lab.dir).unwrap();
        sh(&["ip", "netns", "add", &lab.srv]);
        sh(&["ip", "netns", "add", &lab.cli]);
        sh(&[
            "ip", "link", "add", "vs0", "netns", &lab.srv, "type", "veth", "peer", "name", "vc0",
            "netns", &lab.cli, "address", CLIENT_MAC,
        ]);
        for (ns, cmds) in [
            (
                &lab.srv,
                vec![
                    "addr add 10.77.0.1/24 dev vs0",
                    "link set lo up",
                    "link set vs0 up",
                ],
            ),
            (&lab.cli, vec!["link set lo up"]),
        ] {
            for c in cmds {
                let mut args = vec!["ip", "-n", ns.as_str()];
                args.extend(c.split(' '));
                sh(&args);
            }
        }
        // IPv6 on the server side without duplicate address detection delays.
        sh(&[
            "ip",
            "-n",
            &lab.srv,
            "addr",
            "add",
            "fd77:1::1/64",
            "dev",
            "vs0",
            "nodad",
        ]);
        lab
    }

    fn leases_file(&self) -> PathBuf {
        self.dir.join("leases")
    }

    fn start_dnsmasq(&mut self, extra: &[&str]) {
        assert!(self.dnsmasq.is_none());
        let log = self.dir.join("dnsmasq.log");
        let leases = format!("--dhcp-leasefile={}", self.leases_file().display());
        let pid = format!("--pid-file={}", self.dir.join("dnsmasq.pid").display());
        let mut args = vec![
            "netns",
            "exec",
            &self.srv,
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--interface=vs0",
            "--bind-interfaces",
            "--port=0",
            "--user=root",
            "--no-ping",
            "--log-dhcp",
            &leases,
            &pid,
        ];
        args.extend_from_slice(extra);
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("dnsmasq (install dnsmasq-base)");
        self.dnsmasq = Some(child);
        // Ready when it has logged its DHCP range.
        let t = Instant::now();
        while !fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("DHCP")
        {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "dnsmasq did not start: {}",
                self.dnsmasq_log()
            );
            if let Some(status) = self.dnsmasq.as_mut().unwrap().try_wait().unwrap() {
                panic!("dnsmasq exited with {status}: {}", self.dnsmasq_log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop_dnsmasq(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn dnsmasq_log(&self) -> String {
        fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    fn cli(&self, cmd: &str) -> String {
        let mut args = vec!["ip", "netns", "exec", self.cli.as_str()];
        args.extend(cmd.split(' '));
        sh(&args)
    }

    /// Runs `f` in a thread inside the client namespace.
    fn spawn_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.cli);
        thread::spawn(move || {
            let ns = fs::File::open(&path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            f()
        })
    }

    /// Runs `f` in the client namespace and waits for it, at most `limit`.
    fn in_client<T: Send + 'static>(
        &self,
        limit: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        let h = self.spawn_client(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(limit) {
            Ok(v) => v,
            Err(_) => {
                // The thread panicked (join shows why) or is stuck.
                if h.is_finished() {
                    match h.join() {
                        Err(p) => std::panic::resume_unwind(p),
                        Ok(()) => unreachable!(),
                    }
                }
                panic!(
                    "client code did not finish within {limit:?}\n{}",
                    self.dnsmasq_log()
                );
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_dnsmasq();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.srv])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.cli])
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn fast_opts(lab: &Lab) -> DhcpOptions {
    DhcpOptions {
        initial_retransmit: Duration::from_secs(1),
        resolv_conf: Some(lab.dir.join("resolv.conf")),
        ..DhcpOptions::default()
    }
}

fn vc0() -> Interfaces {
    Interfaces::Names(vec!["vc0".into()])
}

#[test]
#[ignore = "needs root and network namespaces; run with --include-ignored"]
fn lease_is_applied_and_reported() {
    let mut lab = Lab::new("apply");
    lab.start_dnsmasq(&[
        "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m",
        &format!("--dhcp-host={CLIENT_MAC},10.77.0.55,vm-test"),
        "--dhcp-option=option:router,10.77.0.1",
        "--dhcp-option=option:dns-server,10.77.0.1,10.77.0.2",
        "--dhcp-option=option:domain-search,example.test,corp.test",
        "--dhcp-option=option:mtu,1400",
        "--dhcp-option=121,192.168.77.0/24,10.77.0.1,0.0.0.0/0,10.77.0.1",
    ]);
    let opts = fast_opts(&lab);
    let (outcomes, status, links, addrs) = lab.in_client(Duration::from_secs(20), move || {
        let (service, outcomes) = run_dhcp(
            &Interfaces::All,
            Instant::now() + Duration::from_secs(15),
            opts,
        )
        .unwrap();
        let mut rtnl = Rtnl::open().unwrap();
        // Let IPv6 finish duplicate address detection on the link-local address, so the status
        // and the later `ip -6 route` see the same routes.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5)
            && !rtnl
                .addresses(Some(IpFamily::V6))
                .unwrap()
                .iter()
                .any(|a| a.scope == 253 && !a.is_tentative())
        {
            thread::sleep(Duration::from_millis(50));
        }
        let status = NetStatus::collect(&mut rtnl, service.lease_status()).unwrap();
        (
            outcomes,
            status,
            rtnl.links().unwrap(),
            rtnl.addresses(Some(IpFamily::V4)).unwrap(),
        )
    });

    assert_eq!(
        outcomes.len(),
        1,
        "--all picks vc0 only (lo is not Ethernet)"
    );
    let o = &outcomes[0];
    let lease = o.result.as_ref().expect("a lease");
    assert_eq!(o.interface, "vc0");
    assert_eq!(lease.address, Ipv4Addr::new(10, 77, 0, 55));
    assert_eq!(lease.prefix_len, 24);
    assert_eq!(lease.hostname.as_deref(), Some("vm-test"));
    assert!(o.elapsed < Duration::from_secs(5), "took {:?}", o.elapsed);

    let vc0 = links.iter().find(|l| l.name == "vc0").unwrap();
    assert_eq!(vc0.mtu, 1400, "option 26 applied");
    let a = addrs
        .iter()
        .find(|a| a.index == vc0.index)
        .expect("address on vc0");
    assert_eq!(a.address, IpAddr::V4(lease.address));
    let valid = a.valid_lft.expect("the lease is the address lifetime");
    assert!((100..=120).contains(&valid), "valid_lft {valid}");

    let resolv = fs::read_to_string(lab.dir.join("resolv.conf")).unwrap();
    assert_eq!(
        resolv,
        "# Generated by virga (DHCP or static network configuration).\n\
         search example.test corp.test\nnameserver 10.77.0.1\nnameserver 10.77.0.2\n"
    );

    // Option 121 routes (option 3 ignored), tagged proto dhcp.
    let dhcp_routes: Vec<_> = status
        .routes
        .iter()
        .filter(|r| r.protocol == "dhcp")
        .collect();
    assert_eq!(dhcp_routes.len(), 2, "{dhcp_routes:?}");
    assert!(
        dhcp_routes
            .iter()
            .any(|r| r.destination == "192.168.77.0/24"
                && r.gateway == Some(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1))))
    );
    assert!(dhcp_routes.iter().any(|r| r.destination == "default"));

    // Console lines: the route lines are exactly what iproute2 prints.
    let lines = status.console_lines();
    let ours: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ip-route:"))
        .collect();
    let theirs: Vec<String> = lab
        .cli("ip route")
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect();
    assert_eq!(ours, theirs);
    let ours6: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ip-route6:"))
        .collect();
    let theirs6: Vec<String> = lab
        .cli("ip -6 route")
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect();
    assert_eq!(ours6, theirs6);
    assert!(
        lines.contains(&"if-info: lo,up,127.0.0.1,8,,".to_string()),
        "{lines:#?}"
    );
    let vc0_info = lines
        .iter()
        .find(|l| l.starts_with("if-info: vc0,"))
        .unwrap();
    assert_eq!(
        vc0_info,
        "if-info: vc0,up,10.77.0.55,24,fe80::ff:fe77:c/64,"
    );
    assert_eq!(status.leases[0].state, "bound");
    assert_eq!(status.leases[0].mtu, Some(1400));
    let json = serde_json::to_string(&status).unwrap();
    assert!(json.contains("\"address\":\"10.77.0.55\""));
}

#[test]
#[ignore = "needs root and network namespaces; run with --include-ignored"]
fn renews_then_rebinds_after_the_server_comes_back() {
    let mut lab = Lab::new("renew");
    let server_args = [
        "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m",
        "--dhcp-option=option:router,10.77.0.1",
        "--dhcp-option=option:T1,3",
        "--dhcp-option=option:T2,6",
    ];
    lab.start_dnsmasq(&server_args);
    let (to_main, from_client) = mpsc::channel::<&'static str>();
    let (to_client, from_main) = mpsc::channel::<()>();
    let mut opts = fast_opts(&lab);
    opts.min_renew_retransmit = Duration::from_millis(500);
    opts.max_renew_retransmit = Some(Duration::from_secs(1));
    let client = lab.spawn_client(move || {
        let (mut s, outcomes) =
            run_dhcp(&vc0(), Instant::now() + Duration::from_secs(10), opts).unwrap();
        let lease = outcomes[0].result.as_ref().unwrap().clone();
        let mut seen = Vec::new();
        let mut wait_for =
            |s: &mut DhcpService, what: &dyn Fn(&DhcpService, &[DhcpEventKind]) -> bool, secs| {
                let end = Instant::now() + Duration::from_secs(secs);
                while Instant::now() < end {
                    s.step(Duration::from_millis(200)).unwrap();
                    seen.extend(s.take_events().into_iter().map(|e| e.kind));
                    if what(s, &seen) {
                        return true;
                    }
                }
                false
            };
        let renewed = wait_for(&mut s, &|_, ev| ev.contains(&DhcpEventKind::Renewed), 10);
        to_main.send("renewed").unwrap();
        from_main.recv().unwrap(); // server killed
        let rebinding = wait_for(
            &mut s,
            &|s, _| s.states()[0].1 == net_config::DhcpState::Rebinding,
            15,
        );
        let addr_kept = Rtnl::open()
            .unwrap()
            .addresses(Some(IpFamily::V4))
            .unwrap()
            .iter()
            .any(|a| a.address == IpAddr::V4(lease.address));
        to_main.send("rebinding").unwrap();
        from_main.recv().unwrap(); // server back
        let rebound = wait_for(&mut s, &|_, ev| ev.contains(&DhcpEventKind::Rebound), 10);
        let final_lease = s.leases()[0].1.clone();
        (
            lease,
            renewed,
            rebinding,
            addr_kept,
            rebound,
            seen,
            final_lease,
        )
    });
    let limit = Duration::from_secs(40);
    assert_eq!(from_client.recv_timeout(limit), Ok("renewed"));
    lab.stop_dnsmasq();
    to_client.send(()).unwrap();
    let step = from_client.recv_timeout(limit);
    lab.start_dnsmasq(&server_args);
    to_client.send(()).unwrap();
    assert_eq!(step, Ok("rebinding"));
    let (lease, renewed, rebinding, addr_kept, rebound, seen, final_lease) = client.join().unwrap();
    assert!(renewed, "no renewal at T1: {seen:?}\n{}", lab.dnsmasq_log());
    assert!(rebinding, "never reached REBINDING: {seen:?}");
    assert!(addr_kept, "the address stays while renewing/rebinding");
    assert!(
        rebound,
        "no rebind after the server came back: {seen:?}\n{}",
        lab.dnsmasq_log()
    );
    assert_eq!(final_lease.map(|l| l.address), Some(lease.address));
    assert!(!seen.contains(&DhcpEventKind::Lost), "{seen:?}");
}

#[test]
#[ignore = "needs root and network namespaces; run with --include-ignored"]
fn nak_sends_the_client_back_to_discovery() {
    let mut lab = Lab::new("nak");
    lab.start_dnsmasq(&[
        "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m",
        "--dhcp-authoritative",
    ]);
    let mut opts = fast_opts(&lab);
    // INIT-REBOOT with an address outside the range: an authoritative server NAKs it.
    opts.previous_addresses
        .insert("vc0".into(), Ipv4Addr::new(10, 77, 0, 200));
    let (outcome, events) = lab.in_client(Duration::from_secs(20), move || {
        let (mut s, mut outcomes) =
            run_dhcp(&vc0(), Instant::now() + Duration::from_secs(15), opts).unwrap();
        (outcomes.remove(0), s.take_events())
    });
    let lease = outcome.result.expect("a lease after the NAK");
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![DhcpEventKind::Nak, DhcpEventKind::Bound],
        "{events:?}"
    );
    let n = u32::from(lease.address);
    assert!(
        (u32::from(Ipv4Addr::new(10, 77, 0, 50))..=u32::from(Ipv4Addr::new(10, 77, 0, 60)))
            .contains(&n)
    );
    assert!(
        lab.dnsmasq_log().contains("DHCPNAK"),
        "{}",
        lab.dnsmasq_log()
    );
}

#[test]
#[ignore = "needs root and network namespaces; run with --include-ignored"]
fn release_gives_the_lease_back_and_cleans_up() {
    let mut lab = Lab::new("release");
    lab.start_dnsmasq(&[
        "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m",
        "--dhcp-option=option:router,10.77.0.1",
        "--dhcp-option=option:dns-server,10.77.0.1",
    ]);
    let opts = fast_opts(&lab);
    let (lease, before, after, events) = lab.in_client(Duration::from_secs(20), move || {
        let (mut s, mut outcomes) =
            run_dhcp(&vc0(), Instant::now() + Duration::from_secs(10), opts).unwrap();
        let lease = outcomes.remove(0).result.unwrap();
        let mut rtnl = Rtnl::open().unwrap();
        let count = |r: &mut Rtnl| {
            let a = r
                .addresses(Some(IpFamily::V4))
                .unwrap()
                .iter()
                .filter(|a| a.address == IpAddr::V4(lease.address))
                .count();
            let d = r
                .routes(Some(IpFamily::V4))
                .unwrap()
                .iter()
                .filter(|x| x.protocol == RTPROT_DHCP)
                .count();
            (a, d)
        };
        let before = count(&mut rtnl);
        s.release_all();
        let after = count(&mut rtnl);
        (lease, before, after, s.take_events())
    });
    assert_eq!(before, (1, 1));
    assert_eq!(after, (0, 0), "address and routes removed");
    assert_eq!(events.last().map(|e| e.kind), Some(DhcpEventKind::Released));
    let resolv = fs::read_to_string(lab.dir.join("resolv.conf")).unwrap();
    assert!(!resolv.contains("nameserver"), "{resolv}");
    // dnsmasq logs the RELEASE and drops the lease from its file.
    let t = Instant::now();
    while fs::read_to_string(lab.leases_file())
        .unwrap_or_default()
        .contains(&lease.address.to_string())
    {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "lease still in dnsmasq's file"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(lab.dnsmasq_log().contains("DHCPRELEASE"));
}

#[test]
#[ignore = "needs root and network namespaces; run with --include-ignored"]
fn a_silent_network_ends_at_the_deadline() {
    let lab = Lab::new("silent");
    let opts = fast_opts(&lab);
    let (outcome, took) = lab.in_client(Duration::from_secs(15), move || {
        let t = Instant::now();
        let (_s, mut outcomes) =
            run_dhcp(&vc0(), Instant::now() + Duration::from_secs(3), opts).unwrap();
        (outcomes.remove(0), t.elapsed())
    });
    assert!(
        matches!(outcome.result, Err(NetConfigError::NoLease { .. })),
        "{:?}",
        outcome.result
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(4500),
        "{took:?}"
    );
}

#[test]
#[ignore = "needs root and network namespaces; run with --include-ignored"]
fn waits_for_carrier_then_gets_a_lease() {
    let mut lab = Lab::new("carrier");
    sh(&["ip", "-n", &lab.srv, "link", "set", "vs0", "down"]);
    let opts = fast_opts(&lab);
    let (to_main, from_client) = mpsc::channel();
    let (to_client, from_main) = mpsc::channel::<()>();
    let client = lab.spawn_client(move || {
        let (mut s, mut first) =
            run_dhcp(&vc0(), Instant::now() + Duration::from_millis(1500), opts).unwrap();
        to_main
            .send(format!("{:?}", first.remove(0).result))
            .unwrap();
        from_main.recv().unwrap();
        let t = Instant::now();
        let mut second = s.acquire(Instant::now() + Duration::from_secs(10));
        (second.remove(0).result.map(|l| l.address), t.elapsed())
    });
    let first = from_client.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(first.contains("NoCarrier"), "{first}");
    lab.start_dnsmasq(&["--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m"]);
    sh(&["ip", "-n", &lab.srv, "link", "set", "vs0", "up"]);
    to_client.send(()).unwrap();
    let (second, took) = client.join().unwrap();
    assert!(second.is_ok(), "{second:?}");
    assert!(
        took < Duration::from_secs(3),
        "carrier noticed late: {took:?}"
    );
}

#[test]
#[ignore = "needs root and network namespaces; run with --include-ignored"]
fn static_configuration_is_applied() {
    let lab = Lab::new("static");
    let resolv = lab.dir.join("resolv.conf");
    let cfg = StaticConfig {
        interfaces: vec![
            StaticInterface {
                mtu: Some(1450),
                addresses: vec![
                    "10.88.0.5/24".parse().unwrap(),
                    "fd88::5/64".parse().unwrap(),
                ],
                routes: vec![
                    StaticRoute {
                        destination: "192.168.88.0/24".parse().unwrap(),
                        gateway: Some("10.88.0.1".parse().unwrap()),
                        metric: None,
                    },
                    StaticRoute {
                        destination: "0.0.0.0/0".parse().unwrap(),
                        gateway: Some("10.99.0.1".parse().unwrap()),
                        metric: Some(100),
                    },
                    StaticRoute {
                        destination: "2001:db8:88::/48".parse().unwrap(),
                        gateway: Some("fd88::1".parse().unwrap()),
                        metric: None,
                    },
                ],
                dhcp4: true,
                ..StaticInterface::physical(InterfaceMatch::Mac(CLIENT_MAC_BYTES))
            },
            StaticInterface {
                kind: InterfaceKind::Vlan {
                    parent: InterfaceMatch::Name("vc0".into()),
                    id: 10,
                },
                addresses: vec!["10.10.0.5/24".parse().unwrap()],
                ..StaticInterface::physical(InterfaceMatch::Name("vc0.10".into()))
            },
            StaticInterface {
                kind: InterfaceKind::Bond {
                    members: vec![],
                    mode: "active-backup".parse().unwrap(),
                    miimon_ms: Some(100),
                },
                ..StaticInterface::physical(InterfaceMatch::Name("bond0".into()))
            },
            StaticInterface::physical(InterfaceMatch::Name("nosuch0".into())),
        ],
        nameservers: vec!["10.88.0.1".parse().unwrap()],
        search: vec!["static.test".into()],
        resolv_conf: Some(resolv.clone()),
    };
    let (outcome, links, addrs, routes) = lab.in_client(Duration::from_secs(20), move || {
        let outcome = apply_static(&cfg).unwrap();
        let mut r = Rtnl::open().unwrap();
        (
            outcome,
            r.links().unwrap(),
            r.addresses(None).unwrap(),
            r.routes(None).unwrap(),
        )
    });
    assert_eq!(outcome.dhcp4, vec!["vc0".to_string()]);
    assert!(outcome.configured.contains(&"vc0".to_string()));
    let vc0 = links.iter().find(|l| l.name == "vc0").unwrap();
    assert_eq!(vc0.mtu, 1450);
    assert!(vc0.is_up());
    for want in ["10.88.0.5", "fd88::5"] {
        let a = addrs
            .iter()
            .find(|a| a.address == want.parse::<IpAddr>().unwrap())
            .expect(want);
        assert_eq!(a.index, vc0.index);
        assert_eq!(a.valid_lft, None, "static addresses are permanent");
    }
    let has = |dst: &str, len: u8, gw: Option<&str>| {
        routes.iter().any(|r| {
            r.destination == Some(dst.parse().unwrap())
                && r.prefix_len == len
                && r.gateway == gw.map(|g| g.parse().unwrap())
                && r.protocol == net_config::RTPROT_STATIC
        })
    };
    assert!(has("192.168.88.0", 24, Some("10.88.0.1")));
    assert!(
        has("10.99.0.1", 32, None),
        "on-link host route for the off-subnet gateway"
    );
    assert!(routes.iter().any(|r| r.destination.is_none()
        && r.gateway == Some("10.99.0.1".parse().unwrap())
        && r.metric == Some(100)));
    assert!(has("2001:db8:88::", 48, Some("fd88::1")));
    assert!(
        fs::read_to_string(&resolv)
            .unwrap()
            .contains("search static.test\nnameserver 10.88.0.1\n")
    );

    // VLAN and bond: created if the kernel can, otherwise a clear error naming the module.
    for (name, module) in [("vc0.10", "8021q"), ("bond0", "bonding")] {
        match outcome
            .errors
            .iter()
            .find(|(id, _)| id == &format!("name {name}"))
        {
            Some((_, e)) => {
                assert!(
                    matches!(e, NetConfigError::KindUnsupported { .. }),
                    "{name}: {e}"
                );
                assert!(e.to_string().contains(module), "{e}");
            }
            None => {
                assert!(
                    links.iter().any(|l| l.name == name),
                    "{name} neither created nor reported"
                );
            }
        }
    }
    assert!(matches!(
        outcome.errors.iter().find(|(id, _)| id == "name nosuch0"),
        Some((_, NetConfigError::NoSuchInterface(_)))
    ));
}

#[test]
#[ignore = "needs root and network namespaces; run with --include-ignored"]
fn router_advertisements_give_a_slaac_address() {
    let mut lab = Lab::new("slaac");
    lab.start_dnsmasq(&[
        "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m",
        "--enable-ra",
        "--dhcp-range=fd77:1::,ra-only,64,2m",
    ]);
    let opts = fast_opts(&lab);
    let (slaac, status) = lab.in_client(Duration::from_secs(30), move || {
        // The service enables accept_ra/autoconf before bringing vc0 up.
        let (s, _) = run_dhcp(&vc0(), Instant::now() + Duration::from_secs(10), opts).unwrap();
        let mut rtnl = Rtnl::open().unwrap();
        let index = rtnl.link_by_name("vc0").unwrap().unwrap().index;
        let slaac = ipv6::wait_for_slaac(
            &mut rtnl,
            &[index],
            Instant::now() + Duration::from_secs(20),
        )
        .unwrap();
        // Wait for the RA default route too.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10)
            && !rtnl
                .routes(Some(IpFamily::V6))
                .unwrap()
                .iter()
                .any(|r| r.destination.is_none() && r.gateway.is_some())
        {
            thread::sleep(Duration::from_millis(100));
        }
        (
            slaac,
            NetStatus::collect(&mut rtnl, s.lease_status()).unwrap(),
        )
    });
    let addrs = &slaac[0].1;
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    let a = addrs[0].address.to_string();
    // EUI-64 from 02:00:00:77:00:0c.
    assert_eq!(a, "fd77:1::ff:fe77:c");
    let lines = status.console_lines();
    let info = lines
        .iter()
        .find(|l| l.starts_with("if-info: vc0,"))
        .unwrap();
    assert!(info.ends_with(",fd77:1::ff:fe77:c/64"), "{info}");
    assert!(info.contains(",fe80::ff:fe77:c/64,"), "{info}");
    let iface = status.interfaces.iter().find(|i| i.name == "vc0").unwrap();
    assert_eq!(if_info_line(iface), *info);
    // ip-route6 lines match `ip -6 route`, apart from the seconds left on RA routes.
    let strip = |l: &str| {
        let mut words = Vec::new();
        let mut it = l.split(' ');
        while let Some(w) = it.next() {
            if w == "expires" {
                it.next();
            } else {
                words.push(w);
            }
        }
        words.join(" ")
    };
    let ours: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ip-route6:"))
        .map(strip)
        .collect();
    let theirs: Vec<String> = lab
        .cli("ip -6 route")
        .lines()
        .map(|l| strip(l.trim_end()))
        .collect();
    assert_eq!(ours, theirs);
    assert!(
        ours.iter()
            .any(|l| l.starts_with("default via fe80::") && l.contains("proto ra")),
        "{ours:#?}"
    );
}

#[test]
#[ignore = "needs root and network namespaces; run with --include-ignored"]
fn all_nics_are_driven_and_acquire_any_returns_on_the_first_lease() {
    let mut lab = Lab::new("multi");
    // A second NIC whose peer has no DHCP server (dnsmasq only serves vs0).
    sh(&[
        "ip", "link", "add", "vs1", "netns", &lab.srv, "type", "veth", "peer", "name", "vc1",
        "netns", &lab.cli,
    ]);
    sh(&["ip", "-n", &lab.srv, "link", "set", "vs1", "up"]);
    lab.start_dnsmasq(&[
        "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m",
        "--dhcp-option=option:router,10.77.0.1",
    ]);
    let opts = fast_opts(&lab);
    let (any, any_took, all, metric) = lab.in_client(Duration::from_secs(20), move || {
        let mut s = DhcpService::new(&Interfaces::All, opts).unwrap();
        let t = Instant::now();
        let any = s.acquire_any(Instant::now() + Duration::from_secs(10));
        let any_took = t.elapsed();
        let all = s.acquire(Instant::now() + Duration::from_secs(2));
        let mut rtnl = Rtnl::open().unwrap();
        let vc0 = rtnl.link_by_name("vc0").unwrap().unwrap().index;
        let metric = rtnl
            .routes(Some(IpFamily::V4))
            .unwrap()
            .iter()
            .find(|r| r.destination.is_none())
            .map(|r| (r.metric, r.oif == Some(vc0)));
        (
            any.into_iter()
                .map(|o| (o.interface, o.result.is_ok()))
                .collect::<Vec<_>>(),
            any_took,
            all.into_iter()
                .map(|o| (o.interface, format!("{:?}", o.result.map(|l| l.address))))
                .collect::<Vec<_>>(),
            metric.map(|(m, on_vc0)| (m, on_vc0, 1000 + vc0)),
        )
    });
    let mut any = any;
    any.sort();
    assert_eq!(
        any,
        vec![("vc0".to_string(), true), ("vc1".to_string(), false)]
    );
    assert!(any_took < Duration::from_secs(3), "{any_took:?}");
    let vc1 = all.iter().find(|(i, _)| i == "vc1").unwrap();
    assert!(vc1.1.contains("NoLease"), "{all:?}");
    let (m, on_vc0, want) = metric.expect("a default route");
    assert!(on_vc0);
    assert_eq!(m, Some(want), "metric = 1000 + ifindex");
}
