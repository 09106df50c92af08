//! The client's address: the peer, or, when the peer is a trusted proxy,
//! the address `X-Forwarded-For` names for it (README, "Client address").
//!
//! The walk goes from serin outwards: the peer first, then the entries of
//! `X-Forwarded-For` from the right (each proxy appends the address it
//! saw). A hop is trusted when it is among the nearest `trusted_hops` or
//! its address is in a trusted CIDR; the client is the first hop that is
//! not. Entries left of it are whatever the client wrote and are never
//! believed. An entry that is not an address ends the walk at the trusted
//! proxy that wrote it (as NGINX's realip does).

use std::net::IpAddr;

use http::HeaderMap;
use http::header::HeaderValue;
use ipnet::IpNet;
use serin_config::proxy::ClientAddressConfig;

use crate::headers::X_FORWARDED_FOR;

/// A listener's trusted proxies, built once per snapshot.
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    hops: u32,
    cidrs: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(config: &ClientAddressConfig) -> Self {
        Self {
            hops: config.trusted_hops,
            cidrs: config.trusted_cidrs.clone(),
        }
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_address(peer, headers.get_all(&X_FORWARDED_FOR).iter().rev(), self)
    }

    /// Whether the hop at `position` (0: the peer) with address `ip` is a
    /// proxy serin believes.
    fn trusts(&self, position: u32, ip: IpAddr) -> bool {
        position < self.hops || self.cidrs.iter().any(|net| net.contains(&ip))
    }
}

/// The walk described in the module's opening; `forwarded_for` are the
/// `X-Forwarded-For` header values, the last one first.
fn client_address<'h>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'h HeaderValue>,
    trust: &TrustedProxies,
) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trust.trusts(0, client) {
        return client;
    }
    let entries = forwarded_for.flat_map(|v| v.as_bytes().rsplit(|b| *b == b','));
    for (position, entry) in (1u32..).zip(entries) {
        let Some(ip) = parse_entry(entry) else {
            return client;
        };
        client = ip;
        if !trust.trusts(position, ip) {
            return client;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, with or without a port
/// (`1.2.3.4:80`, `[2001:db8::1]:443`, `2001:db8::1`).
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    let ip = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)?
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else {
        let (host, port) = text.rsplit_once(':')?;
        if !is_port(port) {
            return None;
        }
        host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)?
    };
    Some(ip.to_canonical())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(hops: u32, cidrs: &[&str]) -> TrustedProxies {
        TrustedProxies {
            hops,
            cidrs: cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
        }
    }

    /// Trusted hops, trusted CIDRs, peer, `X-Forwarded-For` headers, and
    /// the client serin must find.
    type Case = (
        u32,
        &'static [&'static str],
        &'static str,
        &'static [&'static str],
        &'static str,
    );

    #[test]
    fn client_address_table() {
        let cases: &[Case] = &[
            // Nothing trusted: the peer, whatever the header says.
            (0, &[], "203.0.113.9", &["1.1.1.1"], "203.0.113.9"),
            (
                0,
                &["10.0.0.0/8"],
                "203.0.113.9",
                &["1.1.1.1"],
                "203.0.113.9",
            ),
            // One trusted hop: the rightmost entry.
            (1, &[], "10.0.0.1", &["198.51.100.7"], "198.51.100.7"),
            // Spoofed entries left of the trusted hop are ignored.
            (
                1,
                &[],
                "10.0.0.1",
                &["6.6.6.6, 198.51.100.7"],
                "198.51.100.7",
            ),
            (
                2,
                &[],
                "10.0.0.1",
                &["6.6.6.6, 198.51.100.7, 10.0.0.2"],
                "198.51.100.7",
            ),
            // Several headers are one list, in order.
            (
                2,
                &[],
                "10.0.0.1",
                &["6.6.6.6, 198.51.100.7", "10.0.0.2"],
                "198.51.100.7",
            ),
            // CIDRs: walk past every trusted proxy.
            (
                0,
                &["10.0.0.0/8"],
                "10.0.0.1",
                &["6.6.6.6, 198.51.100.7, 10.1.2.3"],
                "198.51.100.7",
            ),
            // All hops trusted: the leftmost.
            (
                0,
                &["10.0.0.0/8"],
                "10.0.0.1",
                &["10.9.9.9, 10.1.2.3"],
                "10.9.9.9",
            ),
            // A trusted peer with no header is the client.
            (1, &[], "10.0.0.1", &[], "10.0.0.1"),
            // Garbage ends the walk at the proxy that wrote it.
            (2, &[], "10.0.0.1", &["6.6.6.6, unknown"], "10.0.0.1"),
            (
                0,
                &["10.0.0.0/8"],
                "10.0.0.1",
                &["6.6.6.6, 198.51.100.7:x, 10.0.0.2"],
                "10.0.0.2",
            ),
            (1, &[], "10.0.0.1", &[""], "10.0.0.1"),
            // Ports in entries.
            (1, &[], "10.0.0.1", &["198.51.100.7:5123"], "198.51.100.7"),
            (1, &[], "10.0.0.1", &["[2001:db8::7]:443"], "2001:db8::7"),
            (1, &[], "10.0.0.1", &["[2001:db8::7]"], "2001:db8::7"),
            // IPv6.
            (1, &[], "::1", &["2001:db8::7"], "2001:db8::7"),
            (
                0,
                &["fd00::/8"],
                "fd00::1",
                &["2001:db8::7, fd00::2"],
                "2001:db8::7",
            ),
            // An IPv4-mapped peer matches an IPv4 CIDR.
            (
                0,
                &["127.0.0.0/8"],
                "::ffff:127.0.0.1",
                &["198.51.100.7"],
                "198.51.100.7",
            ),
            (0, &[], "::ffff:127.0.0.1", &[], "127.0.0.1"),
            // Whitespace around entries.
            (1, &[], "10.0.0.1", &["  198.51.100.7  "], "198.51.100.7"),
        ];
        for (hops, cidrs, peer, headers, want) in cases {
            let mut map = HeaderMap::new();
            for h in *headers {
                map.append(&X_FORWARDED_FOR, HeaderValue::from_static(h));
            }
            let peer: IpAddr = peer.parse().unwrap();
            let got = trust(*hops, cidrs).client(peer, &map);
            assert_eq!(
                got.to_string(),
                *want,
                "{hops} {cidrs:?} {peer} {headers:?}"
            );
        }
    }
}
