//! A lease: what the server assigned, with its timers.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use core::time::Duration;

use crate::error::DhcpError;
use crate::time::Instant;
use crate::wire::{self, ClasslessRoute, Message};

/// Lease time assumed when an ACK carries none (RFC 2131 requires option 51; some servers forget).
pub const DEFAULT_LEASE_TIME: Duration = Duration::from_secs(3600);
/// `u32::MAX` seconds in option 51 means "infinite".
const INFINITE: u32 = u32::MAX;

/// A route to install for a lease. A gateway of `None` means the destination is on link.
pub type Route = ClasslessRoute;

/// An address lease and the configuration that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The assigned address (`yiaddr`).
    pub address: Ipv4Addr,
    /// Prefix length from option 1, or the classful default when the server sent none.
    pub prefix_len: u8,
    /// The server that granted the lease (option 54, or the sender for INIT-REBOOT).
    pub server: Ipv4Addr,
    /// Option 3, in preference order.
    pub routers: Vec<Ipv4Addr>,
    /// Option 121. When non-empty, [`Lease::routes`] ignores [`Lease::routers`] (RFC 3442 §3).
    pub classless_routes: Vec<ClasslessRoute>,
    /// Option 6.
    pub dns_servers: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain_name: Option<String>,
    /// Option 119.
    pub domain_search: Vec<String>,
    /// Option 12.
    pub hostname: Option<String>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 28.
    pub broadcast: Option<Ipv4Addr>,
    /// Option 42.
    pub ntp_servers: Vec<Ipv4Addr>,
    /// Lease duration; `None` for an infinite lease.
    pub lease_time: Option<Duration>,
    /// Effective T1 (after sanity checks); `None` for an infinite lease.
    pub renewal_time: Option<Duration>,
    /// Effective T2 (after sanity checks); `None` for an infinite lease.
    pub rebinding_time: Option<Duration>,
    /// When the request that obtained the lease was sent; the timers count from here.
    pub start: Instant,
}

impl Lease {
    /// Builds a lease from an ACK. `start` is when the REQUEST was sent (RFC 2131 §4.4.1).
    ///
    /// Timers: T1 defaults to 0.5 and T2 to 0.875 of the lease (RFC 2131 §4.4.5). Server values
    /// are used when they satisfy T1 < T2 < lease; a T2 that is not below the lease falls back
    /// to 0.875, then a T1 that is not below T2 falls back to 0.5 (or to T2 · 0.5 if that is
    /// still not below T2).
    pub fn from_ack(
        ack: &Message,
        server_hint: Ipv4Addr,
        start: Instant,
    ) -> Result<Lease, DhcpError> {
        let address = ack.yiaddr;
        if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
            return Err(DhcpError::BadLease("no usable yiaddr"));
        }
        let o = &ack.options;
        let server = o.server_id.unwrap_or(server_hint);
        let prefix_len = match o.subnet_mask {
            // Checked contiguous by the parser.
            Some(mask) => wire::prefix_len_of_mask(mask).unwrap_or(32),
            None => classful_prefix_len(address),
        };
        let (lease_time, t1, t2) = match o.lease_time {
            Some(INFINITE) => (None, None, None),
            other => {
                let lease = other.map_or(DEFAULT_LEASE_TIME, |s| Duration::from_secs(u64::from(s)));
                let (t1, t2) = timers(lease, o.renewal_time, o.rebinding_time);
                (Some(lease), Some(t1), Some(t2))
            }
        };
        Ok(Lease {
            address,
            prefix_len,
            server,
            routers: o.routers.clone(),
            classless_routes: o.classless_routes.clone(),
            dns_servers: o.dns_servers.clone(),
            domain_name: o.domain_name.clone(),
            domain_search: o.domain_search.clone(),
            hostname: o.hostname.clone(),
            mtu: o.mtu,
            broadcast: o.broadcast,
            ntp_servers: o.ntp_servers.clone(),
            lease_time,
            renewal_time: t1,
            rebinding_time: t2,
            start,
        })
    }

    /// When to enter RENEWING (T1), or `None` for an infinite lease.
    pub fn renew_at(&self) -> Option<Instant> {
        self.renewal_time.map(|d| self.start + d)
    }

    /// When to enter REBINDING (T2), or `None` for an infinite lease.
    pub fn rebind_at(&self) -> Option<Instant> {
        self.rebinding_time.map(|d| self.start + d)
    }

    /// When the lease expires, or `None` for an infinite lease.
    pub fn expires_at(&self) -> Option<Instant> {
        self.lease_time.map(|d| self.start + d)
    }

    /// Time left at `now`, or `None` for an infinite lease.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.expires_at().map(|e| e.saturating_duration_since(now))
    }

    /// The netmask for [`Lease::prefix_len`].
    pub fn netmask(&self) -> Ipv4Addr {
        wire::mask_of_prefix_len(self.prefix_len)
    }

    /// The routes to install: option 121 when present (option 3 is then ignored, RFC 3442),
    /// otherwise a default route via the first router in option 3.
    pub fn routes(&self) -> Vec<Route> {
        if !self.classless_routes.is_empty() {
            return self.classless_routes.clone();
        }
        self.routers
            .iter()
            .find(|r| !r.is_unspecified())
            .map(|&gateway| Route {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway,
            })
            .into_iter()
            .collect()
    }

    /// The search list for resolv.conf: option 119, else the domain name from option 15.
    pub fn search_domains(&self) -> Vec<String> {
        if !self.domain_search.is_empty() {
            return self.domain_search.clone();
        }
        self.domain_name
            .iter()
            .flat_map(|d| d.split_ascii_whitespace())
            .map(String::from)
            .collect()
    }
}

fn timers(lease: Duration, t1: Option<u32>, t2: Option<u32>) -> (Duration, Duration) {
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    let default_t2 = lease / 8 * 7;
    let default_t1 = lease / 2;
    let mut t2 = t2.map(secs).filter(|t| *t < lease).unwrap_or(default_t2);
    let t1 = t1
        .map(secs)
        .filter(|t| *t < t2)
        .unwrap_or(if default_t1 < t2 { default_t1 } else { t2 / 2 });
    if t2 <= t1 {
        t2 = default_t2.max(t1);
    }
    (t1, t2)
}

/// The pre-CIDR default prefix for an address (used only when a server omits option 1).
fn classful_prefix_len(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{MessageType, Op};
    use alloc::vec;

    fn ack() -> Message {
        let mut m = Message::new(Op::Reply, 1, [0; 6]);
        m.yiaddr = Ipv4Addr::new(192, 168, 1, 10);
        m.options.message_type = Some(MessageType::Ack);
        m.options.server_id = Some(Ipv4Addr::new(192, 168, 1, 1));
        m.options.lease_time = Some(1000);
        m
    }

    #[test]
    fn default_timers() {
        let l = Lease::from_ack(&ack(), Ipv4Addr::UNSPECIFIED, Instant::from_secs(5)).unwrap();
        assert_eq!(l.renewal_time, Some(Duration::from_secs(500)));
        assert_eq!(l.rebinding_time, Some(Duration::from_secs(875)));
        assert_eq!(l.expires_at(), Some(Instant::from_secs(1005)));
        assert_eq!(l.prefix_len, 24, "classful C without option 1");
    }

    #[test]
    fn server_timers_are_sanity_checked() {
        assert_eq!(
            timers(Duration::from_secs(100), Some(10), Some(20)),
            (Duration::from_secs(10), Duration::from_secs(20))
        );
        // T2 beyond the lease → 0.875; T1 beyond T2 → 0.5.
        let (t1, t2) = timers(Duration::from_secs(100), Some(90), Some(200));
        assert_eq!(
            (t1, t2),
            (Duration::from_secs(50), Duration::from_millis(87_500))
        );
        // T2 below the default T1: T1 becomes half of T2.
        let (t1, t2) = timers(Duration::from_secs(100), None, Some(30));
        assert_eq!((t1, t2), (Duration::from_secs(15), Duration::from_secs(30)));
        // Zero lease: everything collapses to zero, no panic.
        let (t1, t2) = timers(Duration::ZERO, Some(5), Some(5));
        assert!(t1 <= t2);
    }

    #[test]
    fn infinite_lease_has_no_timers() {
        let mut m = ack();
        m.options.lease_time = Some(u32::MAX);
        let l = Lease::from_ack(&m, Ipv4Addr::UNSPECIFIED, Instant::ZERO).unwrap();
        assert_eq!(
            (l.renew_at(), l.rebind_at(), l.expires_at()),
            (None, None, None)
        );
    }

    #[test]
    fn classless_routes_override_routers() {
        let mut m = ack();
        m.options.routers = vec![Ipv4Addr::new(192, 168, 1, 1)];
        let l = Lease::from_ack(&m, Ipv4Addr::UNSPECIFIED, Instant::ZERO).unwrap();
        assert_eq!(l.routes().len(), 1);
        assert_eq!(l.routes()[0].gateway, Ipv4Addr::new(192, 168, 1, 1));
        m.options.classless_routes = vec![Route {
            destination: Ipv4Addr::new(10, 0, 0, 0),
            prefix_len: 8,
            gateway: Ipv4Addr::new(192, 168, 1, 254),
        }];
        let l = Lease::from_ack(&m, Ipv4Addr::UNSPECIFIED, Instant::ZERO).unwrap();
        assert_eq!(l.routes(), m.options.classless_routes);
    }

    #[test]
    fn bad_yiaddr_is_refused() {
        let mut m = ack();
        m.yiaddr = Ipv4Addr::UNSPECIFIED;
        assert!(Lease::from_ack(&m, Ipv4Addr::UNSPECIFIED, Instant::ZERO).is_err());
    }

    #[test]
    fn search_falls_back_to_domain_name() {
        let mut m = ack();
        m.options.domain_name = Some(String::from("a.example b.example"));
        let l = Lease::from_ack(&m, Ipv4Addr::UNSPECIFIED, Instant::ZERO).unwrap();
        assert_eq!(
            l.search_domains(),
            vec![String::from("a.example"), String::from("b.example")]
        );
    }
}
