//! The client's address, resolved through the proxies the host trusts.
//!
//! The rule is on [`TrustedProxies`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::HeaderName;
use http::HeaderMap;

use crate::cookie::trim_ows;
use crate::error::ConfigError;

/// The most hops read from the right of the forwarding header: more
/// trusted proxies in a row than this is a misconfiguration, and the scan
/// stays bounded whatever the client sends.
pub const MAX_HOPS: usize = 32;

/// A client's address, as resolved by [`TrustedProxies::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    ip: IpAddr,
}

impl ClientAddr {
    /// The address `ip` (an IPv4-mapped IPv6 address becomes IPv4).
    pub fn new(ip: IpAddr) -> Self {
        Self { ip: canonical(ip) }
    }

    /// The address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The key to count this client under: the IPv4 address, or the
    /// IPv6 address's /64 (the rest zeroed), since one IPv6 client
    /// commonly holds a whole /64.
    pub fn limit_key(&self) -> IpAddr {
        match self.ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        }
    }
}

impl From<IpAddr> for ClientAddr {
    fn from(ip: IpAddr) -> Self {
        Self::new(ip)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The header the trusted proxies append the client's address to.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most
    /// cloud load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239): the `for`
    /// parameter of each element.
    Forwarded,
}

impl ProxyHeader {
    fn name(self) -> HeaderName {
        match self {
            Self::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            Self::Forwarded => http::header::FORWARDED,
        }
    }
}

/// The proxies in front of the room whose forwarding header is believed.
///
/// Behind a load balancer or CDN every connection comes from a proxy; the
/// client's address is in a header the proxies append to (`X-Forwarded-For`
/// or the standard `Forwarded`, RFC 7239). A client can write anything into
/// that header before it reaches the first proxy, so it is read from the
/// right: the connection's peer, then each hop leftwards, as long as the
/// address at hand is a trusted proxy. The first address that is not a
/// trusted proxy is the client (the rightmost untrusted hop): a proxy the
/// host runs wrote it, so the client cannot forge it. With no trusted
/// proxies the peer is the client and the headers are not read at all.
///
/// Which header the proxies write is configured ([`ProxyHeader`]), never
/// guessed: a client that sends the other one would choose its own address.
///
/// An IPv6 client usually has a whole /64 to itself (SLAAC, privacy
/// addresses rotate within it), so [`ClientAddr::limit_key`] keys IPv6 by
/// its /64; IPv4 by the address; an IPv4-mapped IPv6 address
/// (`::ffff:192.0.2.1`, from a dual-stack socket) is the IPv4 address.
///
/// ```
/// use std::net::IpAddr;
/// use http::HeaderMap;
/// use queuegate::room::http::TrustedProxies;
///
/// # fn main() -> Result<(), queuegate::ConfigError> {
/// let proxies = TrustedProxies::new().trust("10.0.0.0/8")?;
/// let mut h = HeaderMap::new();
/// // 203.0.113.9 is what the client wrote itself; 198.51.100.7 is what
/// // the load balancer (10.0.0.5) saw.
/// h.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7".parse().unwrap());
/// let peer: IpAddr = "10.0.0.5".parse().unwrap();
/// assert_eq!(proxies.resolve(peer, &h).ip().to_string(), "198.51.100.7");
/// // A connection that does not come from a trusted proxy is the client.
/// let direct: IpAddr = "192.0.2.1".parse().unwrap();
/// assert_eq!(proxies.resolve(direct, &h).ip(), direct);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
    header: ProxyHeader,
}

impl TrustedProxies {
    /// No trusted proxy: the connection's peer is the client.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the proxies in `cidr` (`10.0.0.0/8`, `2001:db8::/32`, or one
    /// address). Fails at setup on anything else.
    pub fn trust(mut self, cidr: &str) -> Result<Self, ConfigError> {
        let bad = ConfigError::Invalid {
            setting: "trusted proxy",
            reason: "must be an IP address or a CIDR block such as 10.0.0.0/8",
        };
        let (addr, len) = match cidr.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (cidr, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|_| bad.clone())?;
        let (ip, max) = match (ip, canonical(ip)) {
            // An IPv4-mapped block counts as the IPv4 block.
            (IpAddr::V6(_), IpAddr::V4(v4)) => (IpAddr::V4(v4), 32),
            (_, IpAddr::V4(v4)) => (IpAddr::V4(v4), 32),
            (_, IpAddr::V6(v6)) => (IpAddr::V6(v6), 128),
        };
        let mut len = match len {
            None => max,
            Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse::<u8>().map_err(|_| bad.clone())?
            }
            Some(_) => return Err(bad),
        };
        if ip.is_ipv4() && addr.contains(':') {
            // ::ffff:a.b.c.d/n: the IPv4 part is the last 32 bits.
            len = len.checked_sub(96).ok_or(bad.clone())?;
        }
        if len > max {
            return Err(bad);
        }
        self.nets.push((mask(ip, len), len));
        Ok(self)
    }

    /// Reads the client's address from `header` (default
    /// [`ProxyHeader::XForwardedFor`]), the one the trusted proxies write.
    pub fn header(mut self, header: ProxyHeader) -> Self {
        self.header = header;
        self
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets
            .iter()
            .any(|&(net, len)| ip.is_ipv4() == net.is_ipv4() && mask(ip, len) == net)
    }

    /// The client's address: the rightmost hop that is not a trusted proxy,
    /// starting from the connection's `peer`. An entry that is not an
    /// address (`unknown`, an obfuscated `Forwarded` node, garbage) stops
    /// the walk at the proxy that wrote it; so does [`MAX_HOPS`]. When every
    /// hop is trusted, the leftmost one is the client.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddr {
        let mut client = canonical(peer);
        if !self.is_trusted(client) {
            return ClientAddr { ip: client };
        }
        let mut hops = 0;
        for line in headers.get_all(self.header.name()).iter().rev() {
            for entry in line.as_bytes().rsplit(|&b| b == b',') {
                hops += 1;
                let ip = match self.header {
                    ProxyHeader::XForwardedFor => parse_node(trim_ows(entry)),
                    ProxyHeader::Forwarded => forwarded_for(entry).and_then(parse_node),
                };
                let Some(ip) = ip.filter(|_| hops <= MAX_HOPS) else {
                    return ClientAddr { ip: client };
                };
                client = canonical(ip);
                if !self.is_trusted(client) {
                    return ClientAddr { ip: client };
                }
            }
        }
        ClientAddr { ip: client }
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

/// The `for` parameter's value of one `Forwarded` element, unquoted.
fn forwarded_for(element: &[u8]) -> Option<&[u8]> {
    element.split(|&b| b == b';').find_map(|pair| {
        let pair = trim_ows(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        if !trim_ows(&pair[..eq]).eq_ignore_ascii_case(b"for") {
            return None;
        }
        let v = trim_ows(&pair[eq + 1..]);
        Some(match v {
            [b'"', inner @ .., b'"'] => inner,
            v => v,
        })
    })
}

/// An address, `[IPv6]`, `[IPv6]:port` or `IPv4:port`.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(node).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        return port_ok
            .then(|| inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    let (v4, port) = text.split_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(name: &str, lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                l.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let p = TrustedProxies::new()
            .trust("10.0.0.0/8")
            .unwrap()
            .trust("2001:db8:ffff::/48")
            .unwrap();
        let xff = |lines: &[&str]| headers("x-forwarded-for", lines);
        let lb = ip("10.1.2.3");
        // One proxy.
        assert_eq!(
            p.resolve(lb, &xff(&["198.51.100.7"])).ip(),
            ip("198.51.100.7")
        );
        // A spoofed entry on the left is ignored.
        let spoofed = xff(&["1.2.3.4, 198.51.100.7"]);
        assert_eq!(p.resolve(lb, &spoofed).ip(), ip("198.51.100.7"));
        // Two trusted proxies in a chain, over two header lines.
        let chain = xff(&["1.2.3.4, 198.51.100.7", "10.9.9.9"]);
        assert_eq!(p.resolve(lb, &chain).ip(), ip("198.51.100.7"));
        let v6 = xff(&["[2001:db8::1]:443, 2001:db8:ffff::2"]);
        assert_eq!(p.resolve(lb, &v6).ip(), ip("2001:db8::1"));
        // A peer that is not a proxy: the header is the client's own words.
        assert_eq!(p.resolve(ip("192.0.2.1"), &spoofed).ip(), ip("192.0.2.1"));
        // No header: the proxy itself.
        assert_eq!(p.resolve(lb, &HeaderMap::new()).ip(), lb);
        // Every hop trusted: the leftmost.
        assert_eq!(
            p.resolve(lb, &xff(&["10.0.0.1, 10.0.0.2"])).ip(),
            ip("10.0.0.1")
        );
        // Garbage stops at the proxy that wrote it.
        for bad in ["unknown", "", "1.2.3.4.5", "198.51.100.7 x", "[::1"] {
            let got = p.resolve(lb, &xff(&[&format!("203.0.113.1, {bad}")])).ip();
            assert_eq!(got, lb, "{bad:?}");
        }
        // Ports and mapped addresses.
        assert_eq!(
            p.resolve(lb, &xff(&["198.51.100.7:5000"])).ip(),
            ip("198.51.100.7")
        );
        assert_eq!(
            p.resolve(lb, &xff(&["::ffff:198.51.100.7"])).ip(),
            ip("198.51.100.7")
        );
        assert_eq!(
            p.resolve(ip("::ffff:10.0.0.1"), &xff(&["198.51.100.7"]))
                .ip(),
            ip("198.51.100.7")
        );
        // The Forwarded header is not read when the proxies write X-F-F.
        let fwd = headers("forwarded", &["for=203.0.113.5"]);
        assert_eq!(p.resolve(lb, &fwd).ip(), lb);
    }

    #[test]
    fn forwarded_header() {
        let p = TrustedProxies::new()
            .trust("10.0.0.0/8")
            .unwrap()
            .header(ProxyHeader::Forwarded);
        let fwd = |lines: &[&str]| headers("forwarded", lines);
        let lb = ip("10.0.0.1");
        for (lines, want) in [
            (&["for=198.51.100.7"][..], "198.51.100.7"),
            (&["For=\"[2001:db8::7]:4711\";proto=https"], "2001:db8::7"),
            (
                &["for=1.2.3.4, for=198.51.100.7;by=10.0.0.1"],
                "198.51.100.7",
            ),
            (
                &["for=1.2.3.4", "proto=http;for=198.51.100.7, for=10.2.2.2"],
                "198.51.100.7",
            ),
            (&["for=198.51.100.7, for=_hidden"], "10.0.0.1"),
            (&["for=unknown"], "10.0.0.1"),
            (&["proto=https"], "10.0.0.1"),
        ] {
            assert_eq!(p.resolve(lb, &fwd(lines)).ip(), ip(want), "{lines:?}");
        }
        // X-Forwarded-For is not read when the proxies write Forwarded.
        let xff = headers("x-forwarded-for", &["203.0.113.5"]);
        assert_eq!(p.resolve(lb, &xff).ip(), lb);
    }

    #[test]
    fn the_walk_is_bounded() {
        let p = TrustedProxies::new().trust("10.0.0.0/8").unwrap();
        let long = vec!["10.0.0.1"; MAX_HOPS + 5].join(", ");
        let h = headers("x-forwarded-for", &[&format!("198.51.100.7, {long}")]);
        assert_eq!(p.resolve(ip("10.0.0.9"), &h).ip(), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        let a = ClientAddr::new(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
        let b = ClientAddr::new(ip("2001:db8:1:2::1"));
        let c = ClientAddr::new(ip("2001:db8:1:3::1"));
        assert_eq!(a.limit_key(), ip("2001:db8:1:2::"));
        assert_eq!(a.limit_key(), b.limit_key());
        assert_ne!(a.limit_key(), c.limit_key());
        let v4 = ClientAddr::new(ip("::ffff:192.0.2.1"));
        assert_eq!(
            (v4.ip(), v4.limit_key()),
            (ip("192.0.2.1"), ip("192.0.2.1"))
        );
        assert_ne!(
            ClientAddr::new(ip("192.0.2.1")).limit_key(),
            ClientAddr::new(ip("192.0.2.2")).limit_key()
        );
    }

    #[test]
    fn trusted_blocks() {
        let everyone = TrustedProxies::new().trust("0.0.0.0/0").unwrap();
        assert!(everyone.is_trusted(ip("203.0.113.1")));
        assert!(!everyone.is_trusted(ip("2001:db8::1")));
        let p = TrustedProxies::new()
            .trust("192.168.0.0/16")
            .unwrap()
            .trust("::1")
            .unwrap()
            .trust("fd00::/8")
            .unwrap()
            .trust("::ffff:172.16.0.0/108")
            .unwrap();
        for yes in [
            "192.168.3.4",
            "::1",
            "fd12::9",
            "172.16.5.5",
            "::ffff:192.168.0.1",
        ] {
            assert!(p.is_trusted(ip(yes)), "{yes}");
        }
        for no in ["192.169.0.1", "::2", "fe80::1", "172.32.0.1", "10.0.0.1"] {
            assert!(!p.is_trusted(ip(no)), "{no}");
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0/8",
            "x",
            "10.0.0.0/-1",
            "::ffff:1.2.3.4/90",
        ] {
            assert!(TrustedProxies::new().trust(bad).is_err(), "{bad:?}");
        }
    }
}
