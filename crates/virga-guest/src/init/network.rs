//! The network stage: static configuration from the datasource (network-config v1/v2,
//! network_data.json) where given, DHCPv4 elsewhere, IPv6 router advertisements everywhere; a
//! renewal thread afterwards, released at shutdown.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boot_contract::StageResult;
use cloud_metadata::NetworkConfig;
use cloud_metadata::network::InterfaceKind as CmKind;
use net_config::{
    DhcpOptions, DhcpService, InterfaceKind, InterfaceMatch, Interfaces, IpPrefix, NetStatus, Rtnl,
    StaticConfig, StaticInterface, StaticRoute,
};

use super::Ctx;

/// The renewal thread, kept for the release at shutdown.
static RENEWAL: Mutex<Option<(Arc<AtomicBool>, std::thread::JoinHandle<DhcpService>)>> =
    Mutex::new(None);
/// DHCP leases for the status document (refreshed at boot).
static LEASES: Mutex<Vec<net_config::LeaseStatus>> = Mutex::new(Vec::new());

/// Default time to wait for a DHCP lease (`virga.dhcp_timeout=` overrides).
const DHCP_TIMEOUT: Duration = Duration::from_secs(30);

/// The driver classes the network stage waits for: network drivers and the bus under them,
/// when the PCI bus has a network controller.
pub fn drivers() -> Vec<super::modules::Class> {
    use super::modules::{Class, pci_class_present};
    if pci_class_present(0x02) {
        vec![Class::Net, Class::Bus]
    } else {
        Vec::new()
    }
}

/// Stage `network`.
pub fn stage(ctx: &Ctx) -> anyhow::Result<StageResult> {
    super::modules::wait_for(ctx, "network", &drivers(), Duration::from_secs(20));
    if !has_interfaces() {
        tracing::info!("network: no interfaces besides lo");
        return Ok(StageResult::Skipped);
    }

    let (network, has_hostname) = {
        let c = ctx.cloud();
        let md = c.md.as_ref();
        (
            md.and_then(|m| m.network.clone()),
            md.and_then(|m| m.local_hostname.clone()).is_some(),
        )
    };
    let timeout = ctx
        .cmd()
        .get("virga.dhcp_timeout")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DHCP_TIMEOUT);
    let mut dhcp: Option<Interfaces> = Some(Interfaces::All);
    if let Some(cfg) = network {
        if cfg.disabled {
            tracing::info!("network configuration disabled by the datasource");
            return Ok(StageResult::Skipped);
        }
        for w in &cfg.warnings {
            ctx.warn("network", w.clone());
        }
        let st = to_static(&cfg, &mut |w| ctx.warn("network", w));
        let outcome = net_config::apply_static(&st)?;
        for (iface, e) in &outcome.errors {
            ctx.error("network", format!("{iface}: {e}"));
        }
        if !outcome.configured.is_empty() {
            tracing::info!("static configuration on {}", outcome.configured.join(", "));
        }
        dhcp = (!outcome.dhcp4.is_empty()).then(|| Interfaces::Names(outcome.dhcp4.clone()));
    }
    if let Some(which) = dhcp {
        let opts = DhcpOptions {
            initial_retransmit: Duration::from_secs(1),
            set_hostname: !has_hostname,
            ..DhcpOptions::default()
        };
        match net_config::run_dhcp(&which, Instant::now() + timeout, opts) {
            Ok((service, outcomes)) => {
                for o in &outcomes {
                    match &o.result {
                        Ok(l) => tracing::info!(
                            "{}: lease {}/{} from {} in {} ms",
                            o.interface,
                            l.address,
                            l.prefix_len,
                            l.server,
                            o.elapsed.as_millis()
                        ),
                        Err(e) => ctx.warn("network", format!("{}: {e}", o.interface)),
                    }
                }
                *LEASES.lock().unwrap_or_else(|p| p.into_inner()) = service.lease_status();
                start_renewal(service);
            }
            Err(e) => ctx.warn("network", format!("DHCP: {e}")),
        }
    }
    publish(ctx);
    Ok(StageResult::Ok)
}

/// Whether the kernel has a network interface other than the loopback (`/sys/class/net`).
/// Only interfaces count (they have an `ifindex`): the bonding driver, when built in, adds a
/// `bonding_masters` file there. When the directory cannot be read, the answer is yes: let the
/// network code find out.
fn has_interfaces() -> bool {
    std::fs::read_dir("/sys/class/net").map_or(true, |d| {
        d.flatten()
            .any(|e| e.file_name() != "lo" && e.path().join("ifindex").exists())
    })
}

fn start_renewal(mut service: DhcpService) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("dhcp".into())
        .spawn(move || {
            service.run(&s);
            service
        });
    if let Ok(h) = handle {
        *RENEWAL.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop, h));
    }
}

/// Stops the renewal thread and releases every lease (shutdown).
pub fn release() {
    let Some((stop, handle)) = RENEWAL.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    stop.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if handle.is_finished()
        && let Ok(mut service) = handle.join()
    {
        service.release_all();
    }
}

/// Interfaces, addresses, routes and leases now.
pub fn status() -> Option<NetStatus> {
    let mut rtnl = Rtnl::open().ok()?;
    let leases = LEASES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    NetStatus::collect(&mut rtnl, leases).ok()
}

/// What the network stage found at its end, for the console report.
static PUBLISHED: Mutex<Option<NetStatus>> = Mutex::new(None);

/// Records the network status in the status document.
pub fn publish(ctx: &Ctx) {
    if let Some(st) = status() {
        if let Ok(v) = serde_json::to_value(&st) {
            ctx.update(|s| s.network = Some(v));
        }
        *PUBLISHED.lock().unwrap_or_else(|p| p.into_inner()) = Some(st);
    }
}

/// The network status as the network stage left it (`None` when it had nothing to do).
pub fn published() -> Option<NetStatus> {
    PUBLISHED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Maps the datasource's network model onto the driver's input.
pub fn to_static(cfg: &NetworkConfig, warn: &mut dyn FnMut(String)) -> StaticConfig {
    let matcher = |id: &str| -> InterfaceMatch {
        match cfg.interface(id) {
            Some(i) => match (&i.mac, &i.name, &i.match_name) {
                (Some(mac), _, _) => parse_mac(mac)
                    .map(InterfaceMatch::Mac)
                    .unwrap_or_else(|| InterfaceMatch::Name(id.into())),
                (None, Some(n), _) => InterfaceMatch::Name(n.clone()),
                (None, None, Some(g)) => InterfaceMatch::Name(g.clone()),
                (None, None, None) => InterfaceMatch::Name(i.id.clone()),
            },
            None => InterfaceMatch::Name(id.into()),
        }
    };
    let mut out = StaticConfig {
        nameservers: cfg.all_nameservers(),
        resolv_conf: Some(std::path::PathBuf::from(net_config::RESOLV_CONF)),
        ..StaticConfig::default()
    };
    out.search = cfg.dns.search.clone();
    for i in &cfg.interfaces {
        for s in &i.dns.search {
            if !out.search.contains(s) {
                out.search.push(s.clone());
            }
        }
        if i.match_name
            .as_deref()
            .is_some_and(|m| m.contains(['*', '?', '[']))
            && i.mac.is_none()
        {
            warn(format!(
                "{}: name patterns are not supported; matching the name literally",
                i.id
            ));
        }
        let kind = match &i.kind {
            CmKind::Physical => InterfaceKind::Physical,
            CmKind::Vlan { vlan_id, link } => InterfaceKind::Vlan {
                parent: matcher(link),
                id: *vlan_id,
            },
            CmKind::Bond { members, mode, .. } => InterfaceKind::Bond {
                members: members.iter().map(|m| matcher(m)).collect(),
                mode: mode
                    .as_deref()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(net_config::BondMode::ActiveBackup),
                miimon_ms: None,
            },
            CmKind::Bridge { .. } => {
                warn(format!("{}: bridges are not supported; skipped", i.id));
                continue;
            }
        };
        let id = match &i.kind {
            CmKind::Physical => matcher(&i.id),
            _ => InterfaceMatch::Name(i.name.clone().unwrap_or_else(|| i.id.clone())),
        };
        let mut s = StaticInterface::physical(id);
        s.kind = kind;
        s.mtu = i.mtu;
        s.dhcp4 = i.dhcp4;
        s.accept_ra =
            Some(i.ipv6_slaac || i.dhcp6 || !i.addresses.iter().any(|a| a.addr.is_ipv6()));
        if i.dhcp6 {
            warn(format!(
                "{}: DHCPv6 is not supported; using router advertisements",
                i.id
            ));
        }
        s.addresses = i
            .addresses
            .iter()
            .map(|a| IpPrefix {
                addr: a.addr,
                prefix_len: a.prefix,
            })
            .collect();
        for r in &i.routes {
            s.routes.push(StaticRoute {
                destination: IpPrefix {
                    addr: r.to.addr,
                    prefix_len: r.to.prefix,
                },
                gateway: r.via,
                metric: r.metric,
            });
        }
        if let Some(g) = i.gateway4 {
            s.routes.push(default_route(IpAddr::V4(g)));
        }
        if let Some(g) = i.gateway6 {
            s.routes.push(default_route(IpAddr::V6(g)));
        }
        out.interfaces.push(s);
    }
    // Global routes go to the first interface with a static address of the same family.
    for r in &cfg.routes {
        let v6 = r.to.addr.is_ipv6();
        match out
            .interfaces
            .iter_mut()
            .find(|s| s.addresses.iter().any(|a| a.addr.is_ipv6() == v6))
        {
            Some(s) => s.routes.push(StaticRoute {
                destination: IpPrefix {
                    addr: r.to.addr,
                    prefix_len: r.to.prefix,
                },
                gateway: r.via,
                metric: r.metric,
            }),
            None => warn(format!(
                "route to {}/{}: no interface with a static address for it",
                r.to.addr, r.to.prefix
            )),
        }
    }
    out
}

fn default_route(gw: IpAddr) -> StaticRoute {
    let any: IpAddr = if gw.is_ipv6() {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    };
    StaticRoute {
        destination: IpPrefix {
            addr: any,
            prefix_len: 0,
        },
        gateway: Some(gw),
        metric: None,
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_v1_static_config() {
        let yaml = br#"
version: 1
config:
  - type: physical
    name: eth0
    mac_address: "52:54:00:12:34:56"
    mtu: 1400
    subnets:
      - type: static
        address: 192.168.1.10/24
        gateway: 192.168.1.1
        dns_nameservers: [1.1.1.1]
  - type: vlan
    name: eth0.42
    vlan_link: eth0
    vlan_id: 42
    subnets: [{type: dhcp4}]
  - type: bridge
    name: br0
    bridge_interfaces: [eth0]
"#;
        let cfg =
            cloud_metadata::network::parse_network_config(yaml, &cloud_metadata::Limits::default())
                .unwrap();
        let mut warnings = Vec::new();
        let st = to_static(&cfg, &mut |w| warnings.push(w));
        assert_eq!(st.interfaces.len(), 2, "{st:?}");
        let eth0 = &st.interfaces[0];
        assert_eq!(
            eth0.id,
            InterfaceMatch::Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(eth0.mtu, Some(1400));
        assert_eq!(eth0.addresses[0].to_string_lossy(), "192.168.1.10/24");
        assert!(
            eth0.routes.iter().any(|r| r.destination.prefix_len == 0
                && r.gateway == Some("192.168.1.1".parse().unwrap()))
        );
        assert!(matches!(
            &st.interfaces[1].kind,
            InterfaceKind::Vlan { id: 42, .. }
        ));
        assert!(st.interfaces[1].dhcp4);
        assert!(st.nameservers.contains(&"1.1.1.1".parse().unwrap()));
        assert!(
            warnings.iter().any(|w| w.contains("bridges")),
            "{warnings:?}"
        );
    }

    trait Lossy {
        fn to_string_lossy(&self) -> String;
    }
    impl Lossy for IpPrefix {
        fn to_string_lossy(&self) -> String {
            format!("{}/{}", self.addr, self.prefix_len)
        }
    }
}

#[cfg(test)]
mod network_data_tests {
    use super::*;

    #[test]
    fn maps_network_data_json_with_dns_service() {
        let json = br#"{"links":[{"id":"l0","type":"phy","ethernet_mac_address":"52:54:00:12:34:56","mtu":1400}],
            "networks":[{"id":"n0","link":"l0","type":"ipv4","ip_address":"10.0.2.77","netmask":"255.255.255.0",
                         "routes":[{"network":"0.0.0.0","netmask":"0.0.0.0","gateway":"10.0.2.2"}]}],
            "services":[{"type":"dns","address":"10.0.2.3"}]}"#;
        let cfg =
            cloud_metadata::network::parse_network_data(json, &cloud_metadata::Limits::default())
                .unwrap();
        let st = to_static(&cfg, &mut |_| {});
        assert_eq!(
            st.nameservers,
            vec!["10.0.2.3".parse::<IpAddr>().unwrap()],
            "{cfg:?}"
        );
        assert!(st.resolv_conf.is_some());
    }
}
