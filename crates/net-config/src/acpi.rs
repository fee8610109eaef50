//! ACPI events over generic netlink (the `acpi_event` family): how the kernel's ACPI button
//! driver announces a power-button press without the `evdev` input driver.
//!
//! The family's id and its multicast group (`acpi_mc_group`) are looked up with
//! `CTRL_CMD_GETFAMILY`; each event is a `struct acpi_genl_event` in attribute 1.

use std::io;

use crate::error::NetConfigError;
use crate::netlink::{MsgBuilder, Rtnl, attr_string, attr_u32, attrs, messages};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;
/// `struct genlmsghdr`: cmd, version, reserved.
const GENL_HDRLEN: usize = 4;
const ACPI_FAMILY: &str = "acpi_event";
const ACPI_GROUP: &str = "acpi_mc_group";
const ACPI_GENL_ATTR_EVENT: u16 = 1;
const ENOBUFS: i32 = 105;

/// One ACPI event (`struct acpi_genl_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiEvent {
    /// Device class, e.g. `button/power`.
    pub device_class: String,
    /// Bus id, e.g. `LNXPWRBN:00`.
    pub bus_id: String,
    /// Event type (0x80 for a button press).
    pub kind: u32,
    /// Event data (a press counter for buttons).
    pub data: u32,
}

impl AcpiEvent {
    /// Whether this is a press of the power button.
    pub fn is_power_button(&self) -> bool {
        self.device_class == "button/power"
    }
}

/// A socket subscribed to the kernel's ACPI events.
#[derive(Debug)]
pub struct AcpiEvents {
    sock: Rtnl,
}

impl AcpiEvents {
    /// Looks the family up and joins its multicast group. Fails when the kernel has no ACPI
    /// event family (no ACPI, or no generic netlink).
    pub fn subscribe() -> Result<Self, NetConfigError> {
        let mut sock = Rtnl::open_protocol(Some(rustix::net::netlink::GENERIC), 0)?;
        let mut msg = MsgBuilder::new(GENL_ID_CTRL, 0).header(&[CTRL_CMD_GETFAMILY, 1, 0, 0]);
        let mut name = ACPI_FAMILY.as_bytes().to_vec();
        name.push(0);
        msg.attr(CTRL_ATTR_FAMILY_NAME, &name);
        let reply = sock.query(msg, GENL_ID_CTRL, "get the acpi_event family")?;
        let group = multicast_group(&reply, ACPI_GROUP).ok_or(NetConfigError::Malformed(
            "acpi_event family without its group",
        ))?;
        crate::sys::join_netlink_group(sock.fd(), group).map_err(|source| {
            NetConfigError::Netlink {
                op: "join the ACPI event group",
                source,
            }
        })?;
        Ok(AcpiEvents { sock })
    }

    /// Waits for the next event. Datagrams that hold no ACPI event are skipped.
    pub fn wait_event(&mut self) -> io::Result<AcpiEvent> {
        loop {
            match self.sock.recv_datagram("ACPI event") {
                Ok(dgram) => {
                    if let Some(ev) = messages(dgram).find_map(|m| parse_event(m.payload)) {
                        return Ok(ev);
                    }
                }
                Err(NetConfigError::Netlink { source, .. })
                    if matches!(
                        source.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) || source.raw_os_error() == Some(ENOBUFS) =>
                {
                    // The socket's receive timeout, a signal, or events lost to a full
                    // buffer (the next press still arrives): keep waiting.
                }
                Err(NetConfigError::Netlink { source, .. }) => return Err(source),
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
    }
}

/// The id of multicast group `name` in a `CTRL_CMD_GETFAMILY` reply (genlmsghdr + attributes).
pub fn multicast_group(reply: &[u8], name: &str) -> Option<u32> {
    let body = reply.get(GENL_HDRLEN..)?;
    let (_, groups) = attrs(body).find(|(t, _)| *t == CTRL_ATTR_MCAST_GROUPS)?;
    attrs(groups).find_map(|(_, group)| {
        let mut id = None;
        let mut found = false;
        for (t, v) in attrs(group) {
            match t {
                CTRL_ATTR_MCAST_GRP_NAME => found = attr_string(v).as_deref() == Some(name),
                CTRL_ATTR_MCAST_GRP_ID => id = attr_u32(v),
                _ => {}
            }
        }
        if found { id } else { None }
    })
}

/// Parses the payload of one `acpi_event` message (genlmsghdr + attributes).
pub fn parse_event(payload: &[u8]) -> Option<AcpiEvent> {
    let body = payload.get(GENL_HDRLEN..)?;
    let (_, ev) = attrs(body).find(|(t, _)| *t == ACPI_GENL_ATTR_EVENT)?;
    // char device_class[20]; char bus_id[15]; (pad to 36) u32 type; u32 data;
    let text = |b: &[u8]| attr_string(b).unwrap_or_default();
    let u32_at = |o: usize| ev.get(o..o + 4).and_then(attr_u32);
    Some(AcpiEvent {
        device_class: text(ev.get(..20)?),
        bus_id: text(ev.get(20..35)?),
        kind: u32_at(36)?,
        data: u32_at(40)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTRL_ATTR_FAMILY_ID: u16 = 1;

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn cstr(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn group(idx: u16, name: &str, id: u32) -> Vec<u8> {
        let mut inner = attr(CTRL_ATTR_MCAST_GRP_ID, &id.to_ne_bytes());
        inner.extend(attr(CTRL_ATTR_MCAST_GRP_NAME, &cstr(name)));
        attr(idx | 0x8000, &inner)
    }

    #[test]
    fn finds_the_group_in_a_family_reply() {
        let mut groups = group(1, "other", 3);
        groups.extend(group(2, ACPI_GROUP, 7));
        let mut reply = vec![1, 2, 0, 0];
        reply.extend(attr(CTRL_ATTR_FAMILY_NAME, &cstr(ACPI_FAMILY)));
        reply.extend(attr(CTRL_ATTR_FAMILY_ID, &0x1bu16.to_ne_bytes()));
        reply.extend(attr(CTRL_ATTR_MCAST_GROUPS | 0x8000, &groups));
        assert_eq!(multicast_group(&reply, ACPI_GROUP), Some(7));
        assert_eq!(multicast_group(&reply, "missing"), None);
        assert_eq!(multicast_group(&reply[..3], ACPI_GROUP), None);
        assert_eq!(multicast_group(&reply[..reply.len() - 6], ACPI_GROUP), None);
    }

    fn event(class: &str, bus: &str, kind: u32, data: u32) -> Vec<u8> {
        let mut ev = vec![0u8; 44];
        ev[..class.len()].copy_from_slice(class.as_bytes());
        ev[20..20 + bus.len()].copy_from_slice(bus.as_bytes());
        ev[36..40].copy_from_slice(&kind.to_ne_bytes());
        ev[40..44].copy_from_slice(&data.to_ne_bytes());
        let mut payload = vec![1, 1, 0, 0];
        payload.extend(attr(ACPI_GENL_ATTR_EVENT, &ev));
        payload
    }

    #[test]
    fn parses_a_power_button_event() {
        let ev = parse_event(&event("button/power", "LNXPWRBN:00", 0x80, 1)).unwrap();
        assert_eq!(ev.bus_id, "LNXPWRBN:00");
        assert_eq!((ev.kind, ev.data), (0x80, 1));
        assert!(ev.is_power_button());
        let lid = parse_event(&event("button/lid", "PNP0C0D:00", 0x80, 1)).unwrap();
        assert!(!lid.is_power_button());
    }

    #[test]
    fn short_or_foreign_payloads_are_not_events() {
        let full = event("button/power", "LNXPWRBN:00", 0x80, 1);
        for n in 0..full.len() {
            let _ = parse_event(&full[..n]);
        }
        assert_eq!(parse_event(&full[..full.len() - 4]), None);
        assert_eq!(parse_event(&[1, 1, 0, 0]), None);
        assert_eq!(parse_event(&[]), None);
    }
}
