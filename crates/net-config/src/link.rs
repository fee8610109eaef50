//! Links: list, bring up, MTU, VLAN and bond creation.

use serde::Serialize;

use crate::error::NetConfigError;
use crate::netlink::{
    MsgBuilder, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, RTM_DELLINK, RTM_GETLINK,
    RTM_NEWLINK, Rtnl, attr_string, attr_u32, attrs,
};

/// `IFF_UP`: administratively up.
pub const IFF_UP: u32 = 0x1;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = 0x8;
/// `IFF_LOWER_UP`: the driver reports carrier.
pub const IFF_LOWER_UP: u32 = 0x1_0000;
/// `ARPHRD_ETHER`.
pub const ARPHRD_ETHER: u16 = 1;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VLAN_ID: u16 = 1;
const IFLA_BOND_MODE: u16 = 1;
const IFLA_BOND_MIIMON: u16 = 3;

const EOPNOTSUPP: i32 = 95;

/// RFC 2863 operational state (`IFLA_OPERSTATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OperState {
    /// Unknown (loopback and many virtual devices).
    Unknown,
    /// Not present.
    NotPresent,
    /// Down.
    Down,
    /// Down because a lower device is down.
    LowerLayerDown,
    /// Testing.
    Testing,
    /// Dormant.
    Dormant,
    /// Up.
    Up,
}

impl OperState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => OperState::NotPresent,
            2 => OperState::Down,
            3 => OperState::LowerLayerDown,
            4 => OperState::Testing,
            5 => OperState::Dormant,
            6 => OperState::Up,
            _ => OperState::Unknown,
        }
    }
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, for Ethernet-like links.
    #[serde(serialize_with = "crate::status::ser_mac")]
    pub mac: Option<[u8; 6]>,
    /// `IFF_*` flags.
    pub flags: u32,
    /// MTU.
    pub mtu: u32,
    /// Operational state.
    pub operstate: OperState,
    /// Link kind for virtual links (`veth`, `vlan`, `bond` …); `None` for physical NICs.
    pub kind: Option<String>,
    /// Index of the master (bond, bridge), if enslaved.
    pub master: Option<u32>,
    /// `ARPHRD_*` hardware type.
    pub hw_type: u16,
}

impl Link {
    /// Administratively up.
    pub fn is_up(&self) -> bool {
        self.flags & IFF_UP != 0
    }

    /// Has carrier (`IFF_LOWER_UP`).
    pub fn has_carrier(&self) -> bool {
        self.flags & IFF_LOWER_UP != 0
    }

    /// The loopback interface.
    pub fn is_loopback(&self) -> bool {
        self.flags & IFF_LOOPBACK != 0
    }

    /// An Ethernet-like link that DHCP can run on.
    pub fn is_ethernet(&self) -> bool {
        self.hw_type == ARPHRD_ETHER && self.mac.is_some() && !self.is_loopback()
    }
}

/// `struct ifinfomsg`.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// Parses an `RTM_NEWLINK` payload.
pub(crate) fn parse_link(p: &[u8]) -> Option<Link> {
    let h = p.get(..16)?;
    let hw_type = u16::from_ne_bytes([h[2], h[3]]);
    let index = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]);
    let flags = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
    let mut link = Link {
        index,
        name: String::new(),
        mac: None,
        flags,
        mtu: 0,
        operstate: OperState::Unknown,
        kind: None,
        master: None,
        hw_type,
    };
    for (ty, data) in attrs(&p[16..]) {
        match ty {
            IFLA_IFNAME => link.name = attr_string(data)?,
            IFLA_ADDRESS => {
                if let Ok(mac) = <[u8; 6]>::try_from(data) {
                    link.mac = Some(mac);
                }
            }
            IFLA_MTU => link.mtu = attr_u32(data).unwrap_or(0),
            IFLA_MASTER => link.master = attr_u32(data).filter(|&m| m != 0),
            IFLA_OPERSTATE => {
                link.operstate = OperState::from_u8(data.first().copied().unwrap_or(0))
            }
            IFLA_LINKINFO => {
                for (ity, idata) in attrs(data) {
                    if ity == IFLA_INFO_KIND {
                        link.kind = attr_string(idata);
                    }
                }
            }
            _ => {}
        }
    }
    (!link.name.is_empty()).then_some(link)
}

/// Bonding modes (`IFLA_BOND_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BondMode {
    /// 0: round robin.
    BalanceRr,
    /// 1: one active member.
    ActiveBackup,
    /// 2: XOR hash.
    BalanceXor,
    /// 3: send on all members.
    Broadcast,
    /// 4: IEEE 802.3ad LACP.
    #[serde(rename = "802.3ad")]
    Ieee8023ad,
    /// 5: adaptive transmit load balancing.
    BalanceTlb,
    /// 6: adaptive load balancing.
    BalanceAlb,
}

impl std::str::FromStr for BondMode {
    type Err = NetConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "balance-rr" | "0" => BondMode::BalanceRr,
            "active-backup" | "1" => BondMode::ActiveBackup,
            "balance-xor" | "2" => BondMode::BalanceXor,
            "broadcast" | "3" => BondMode::Broadcast,
            "802.3ad" | "4" => BondMode::Ieee8023ad,
            "balance-tlb" | "5" => BondMode::BalanceTlb,
            "balance-alb" | "6" => BondMode::BalanceAlb,
            other => {
                return Err(NetConfigError::Invalid(format!(
                    "unknown bond mode `{other}`"
                )));
            }
        })
    }
}

fn kind_error(e: NetConfigError, kind: &'static str, module: &'static str) -> NetConfigError {
    if e.errno() == Some(EOPNOTSUPP) {
        NetConfigError::KindUnsupported { kind, module }
    } else {
        e
    }
}

impl Rtnl {
    /// Every link.
    pub fn links(&mut self) -> Result<Vec<Link>, NetConfigError> {
        let msg = MsgBuilder::new(RTM_GETLINK, NLM_F_DUMP).header(&ifinfomsg(0, 0, 0));
        let payloads = self.dump(msg, RTM_NEWLINK, "list links")?;
        Ok(payloads.iter().filter_map(|p| parse_link(p)).collect())
    }

    /// The link called `name`, if any.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, NetConfigError> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    /// Sets the link administratively up or down.
    pub fn set_link_up(&mut self, index: u32, up: bool) -> Result<(), NetConfigError> {
        let flags = if up { IFF_UP } else { 0 };
        let msg = MsgBuilder::new(RTM_NEWLINK, NLM_F_ACK).header(&ifinfomsg(index, flags, IFF_UP));
        self.request(msg, "set link up/down")
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<(), NetConfigError> {
        let mut msg = MsgBuilder::new(RTM_NEWLINK, NLM_F_ACK).header(&ifinfomsg(index, 0, 0));
        msg.attr_u32(IFLA_MTU, mtu);
        self.request(msg, "set MTU")
    }

    /// Enslaves the link to `master` (a bond), or frees it with `None`.
    pub fn set_master(&mut self, index: u32, master: Option<u32>) -> Result<(), NetConfigError> {
        let mut msg = MsgBuilder::new(RTM_NEWLINK, NLM_F_ACK).header(&ifinfomsg(index, 0, 0));
        msg.attr_u32(IFLA_MASTER, master.unwrap_or(0));
        self.request(msg, "set master")
    }

    /// Creates VLAN `id` on `parent` (802.1Q), named `name`.
    ///
    /// Fails with [`NetConfigError::KindUnsupported`] when the kernel lacks `8021q`.
    pub fn create_vlan(&mut self, name: &str, parent: u32, id: u16) -> Result<(), NetConfigError> {
        if id == 0 || id > 4094 {
            return Err(NetConfigError::Invalid(format!(
                "VLAN id {id} is outside 1..=4094"
            )));
        }
        let mut msg = MsgBuilder::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .header(&ifinfomsg(0, 0, 0));
        msg.attr_str(IFLA_IFNAME, name);
        msg.attr_u32(IFLA_LINK, parent);
        let info = msg.begin_nest(IFLA_LINKINFO);
        msg.attr(IFLA_INFO_KIND, b"vlan");
        let data = msg.begin_nest(IFLA_INFO_DATA);
        msg.attr(IFLA_VLAN_ID, &id.to_ne_bytes());
        msg.end_nest(data);
        msg.end_nest(info);
        self.request(msg, "create VLAN")
            .map_err(|e| kind_error(e, "vlan", "8021q"))
    }

    /// Creates a bond named `name`.
    ///
    /// Fails with [`NetConfigError::KindUnsupported`] when the kernel lacks `bonding`.
    pub fn create_bond(
        &mut self,
        name: &str,
        mode: BondMode,
        miimon_ms: Option<u32>,
    ) -> Result<(), NetConfigError> {
        let mut msg = MsgBuilder::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .header(&ifinfomsg(0, 0, 0));
        msg.attr_str(IFLA_IFNAME, name);
        let info = msg.begin_nest(IFLA_LINKINFO);
        msg.attr(IFLA_INFO_KIND, b"bond");
        let data = msg.begin_nest(IFLA_INFO_DATA);
        msg.attr(IFLA_BOND_MODE, &[mode as u8]);
        if let Some(ms) = miimon_ms {
            msg.attr_u32(IFLA_BOND_MIIMON, ms);
        }
        msg.end_nest(data);
        msg.end_nest(info);
        self.request(msg, "create bond")
            .map_err(|e| kind_error(e, "bond", "bonding"))
    }

    /// Deletes a (virtual) link.
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetConfigError> {
        let msg = MsgBuilder::new(RTM_DELLINK, NLM_F_ACK).header(&ifinfomsg(index, 0, 0));
        self.request(msg, "delete link")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_link_payload() {
        let mut b = MsgBuilder::new(RTM_NEWLINK, 0).header(&{
            let mut h = ifinfomsg(7, IFF_UP | IFF_LOWER_UP, 0);
            h[2..4].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
            h
        });
        b.attr_str(IFLA_IFNAME, "eth0");
        b.attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 9]);
        b.attr_u32(IFLA_MTU, 1500);
        b.attr(IFLA_OPERSTATE, &[6]);
        let n = b.begin_nest(IFLA_LINKINFO);
        b.attr(IFLA_INFO_KIND, b"veth\0");
        b.end_nest(n);
        let bytes = b.finish(1);
        let l = parse_link(&bytes[16..]).unwrap();
        assert_eq!(l.index, 7);
        assert_eq!(l.name, "eth0");
        assert_eq!(l.mac, Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(l.mtu, 1500);
        assert_eq!(l.operstate, OperState::Up);
        assert_eq!(l.kind.as_deref(), Some("veth"));
        assert!(l.is_up() && l.has_carrier() && l.is_ethernet());
        assert_eq!(parse_link(&bytes[16..20]), None);
    }

    #[test]
    fn bond_modes() {
        assert_eq!("802.3ad".parse::<BondMode>().unwrap(), BondMode::Ieee8023ad);
        assert_eq!("active-backup".parse::<BondMode>().unwrap() as u8, 1);
        assert!("nope".parse::<BondMode>().is_err());
    }
}
