//! Who a client is on the network: the socket's peer address, or, when the
//! peer is a trusted proxy, the address that proxy forwarded in
//! `X-Forwarded-For`.
//!
//! The header is honoured only from the configured proxies: from anyone else
//! it is a claim the client makes about itself, and believing it would let a
//! guesser dodge the throttle of failed authentications by sending a new
//! address with every attempt. Behind a chain of trusted proxies the client
//! is the right-most address that is not itself a trusted proxy. Several
//! `X-Forwarded-For` lines are one list, in order (RFC 9110): a proxy that
//! adds a line of its own instead of appending to the client's would
//! otherwise leave the client's forged line to be believed.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the warning about a forwarded-for header from an untrusted peer
/// was logged (once per process).
static WARNED_UNTRUSTED: AtomicBool = AtomicBool::new(false);

/// Every `X-Forwarded-For` line of a request joined into one list, in order;
/// `None` without any.
pub fn forwarded_for<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut joined: Option<Vec<u8>> = None;
    for line in lines {
        let list = joined.get_or_insert_with(Vec::new);
        if !list.is_empty() {
            list.push(b',');
        }
        list.extend_from_slice(line);
    }
    joined
}

/// One trusted proxy: an address, or a network in CIDR notation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(text: &str) -> Result<Net, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| format!("'{text}' is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("'{text}': the prefix length must be 0–{max}")),
            },
        };
        Ok(Net { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address mapped into IPv6 (a dual-stack socket's view) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<Net>,
}

impl TrustedProxies {
    /// Parses addresses and CIDR networks (`10.0.0.0/8`, `::1`).
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let nets = entries.iter().filter(|e| !e.trim().is_empty()).map(|e| Net::parse(e)).collect::<Result<_, _>>()?;
        Ok(TrustedProxies { nets })
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The client's address: `peer`, or what a trusted `peer` forwarded in
    /// `forwarded_for` (the raw `X-Forwarded-For` value).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&[u8]>) -> IpAddr {
        let peer = canonical(peer);
        if forwarded_for.is_some() && !self.trusts(peer) && !WARNED_UNTRUSTED.swap(true, Ordering::Relaxed) {
            // Behind a proxy not listed, every client has the proxy's address:
            // one guesser would get them all refused by the throttle.
            log::warn!(
                "X-Forwarded-For from {peer}, which is not in NOVA_TRUSTED_PROXIES: if it is your proxy, list it \
                 (logged once)"
            );
        }
        let Some(header) = forwarded_for.filter(|_| self.trusts(peer)) else { return peer };
        let Ok(header) = std::str::from_utf8(header) else { return peer };
        let mut client = peer;
        for hop in header.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.trusts(client) {
                        break;
                    }
                }
                // A malformed hop: nothing left of it can be believed.
                Err(_) => break,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_peer() {
        let proxies = TrustedProxies::parse(&["127.0.0.1".into(), "192.0.2.0/24".into()]).unwrap();
        let xff = Some(&b"203.0.113.7"[..]);
        assert_eq!(proxies.client_ip(ip("127.0.0.1"), xff), ip("203.0.113.7"));
        assert_eq!(proxies.client_ip(ip("192.0.2.200"), xff), ip("203.0.113.7"));
        assert_eq!(proxies.client_ip(ip("198.51.100.1"), xff), ip("198.51.100.1"), "untrusted peer");
        assert_eq!(TrustedProxies::default().client_ip(ip("127.0.0.1"), xff), ip("127.0.0.1"));
        assert_eq!(proxies.client_ip(ip("127.0.0.1"), None), ip("127.0.0.1"));
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let proxies = TrustedProxies::parse(&["127.0.0.1".into(), "192.0.2.0/24".into()]).unwrap();
        // The client forged the first entry; the proxies appended the rest.
        let xff = Some(&b"1.2.3.4, 203.0.113.7, 192.0.2.9"[..]);
        assert_eq!(proxies.client_ip(ip("127.0.0.1"), xff), ip("203.0.113.7"));
        let garbage = Some(&b"203.0.113.7, nonsense"[..]);
        assert_eq!(proxies.client_ip(ip("127.0.0.1"), garbage), ip("127.0.0.1"));
    }

    #[test]
    fn several_header_lines_are_one_list() {
        let lines: [&[u8]; 2] = [b"1.2.3.4", b"203.0.113.7"];
        let joined = forwarded_for(lines.into_iter()).unwrap();
        assert_eq!(joined, b"1.2.3.4,203.0.113.7");
        let proxies = TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        assert_eq!(proxies.client_ip(ip("127.0.0.1"), Some(&joined)), ip("203.0.113.7"), "the proxy's own line wins");
        assert_eq!(forwarded_for(std::iter::empty()), None);
    }

    #[test]
    fn networks_and_mapped_addresses() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "fd00::/8".into()]).unwrap();
        assert!(proxies.trusts(ip("10.200.1.1")));
        assert!(proxies.trusts(ip("::ffff:10.0.0.1")));
        assert!(proxies.trusts(ip("fd12::1")));
        assert!(!proxies.trusts(ip("11.0.0.1")));
        let all = TrustedProxies::parse(&["0.0.0.0/0".into()]).unwrap();
        assert!(all.trusts(ip("198.51.100.1")));
        for bad in ["nonsense", "10.0.0.0/33", "::1/129", "10.0.0.1/x"] {
            assert!(TrustedProxies::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
