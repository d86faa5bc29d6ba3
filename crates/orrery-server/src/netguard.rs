//! Where outbound HTTP may connect (`http` data sources of policies, model
//! providers): never to the node's own host or private networks (SSRF)
//! unless the operator allowlists them (`--http-sources-allow`).
//!
//! Checked twice: a URL naming a forbidden address literally is refused
//! when the source is created, and every address a host name resolves to
//! is checked by [`GuardedResolver`] when a lookup connects. The resolver
//! hands reqwest exactly the addresses it checked, so no second DNS answer
//! can slip in between the check and the connection.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// A network in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), self.prefix, 32)
                    == masked(u32::from(a).into(), self.prefix, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), self.prefix, 128) == masked(u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// What the operator allows despite the rules: `--http-sources-allow`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpAllowlist {
    nets: Vec<Cidr>,
    /// Lower-case host names, allowed whatever they resolve to.
    hosts: Vec<String>,
}

impl HttpAllowlist {
    /// Parses `CIDR|IP|HOST,...` (empty items are ignored).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = HttpAllowlist::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            match addr.parse::<IpAddr>() {
                Ok(ip) => {
                    let width = if ip.is_ipv4() { 32 } else { 128 };
                    let prefix = match prefix {
                        None => width,
                        Some(p) => p
                            .parse::<u8>()
                            .ok()
                            .filter(|p| *p <= width)
                            .ok_or_else(|| format!("{item:?}: bad prefix length"))?,
                    };
                    out.nets.push(Cidr { addr: ip, prefix });
                }
                Err(_) if prefix.is_none() && valid_host(item) => {
                    out.hosts.push(item.to_ascii_lowercase())
                }
                Err(_) => return Err(format!("{item:?} is neither a CIDR, an IP nor a host name")),
            }
        }
        Ok(out)
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        let alt = embedded_v4(ip).map(IpAddr::V4);
        self.nets
            .iter()
            .any(|n| n.contains(ip) || alt.is_some_and(|a| n.contains(a)))
    }

    fn allows_host(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&h)
    }

    /// Why connecting to `ip` is refused, or `None` when it is allowed.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allows_ip(ip) {
            return None;
        }
        forbidden(ip)
    }
}

fn valid_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// The IPv4 address an IPv6 one stands for: IPv4-mapped (`::ffff:a.b.c.d`)
/// or NAT64 (`64:ff9b::a.b.c.d`); both reach the IPv4 host.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let o = v6.octets();
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    None
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [0, ..] => "unspecified (0.0.0.0/8)",
        [127, ..] => "loopback",
        [10, ..] => "private (10.0.0.0/8)",
        [172, b, ..] if (16..32).contains(&b) => "private (172.16.0.0/12)",
        [192, 168, ..] => "private (192.168.0.0/16)",
        [100, b, ..] if (64..128).contains(&b) => "shared address space (100.64.0.0/10)",
        [169, 254, ..] => "link-local (169.254.0.0/16, cloud metadata)",
        [192, 0, 0, _] => "IETF protocol assignments (192.0.0.0/24)",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking (198.18.0.0/15)",
        [a, ..] if (224..240).contains(&a) => "multicast",
        // 240.0.0.0/4, with the broadcast address 255.255.255.255.
        [a, ..] if a >= 240 => "reserved or broadcast",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(if ip.is_unspecified() {
        "unspecified (::)"
    } else if ip.is_loopback() {
        "loopback"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local (fe80::/10)"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "site-local (fec0::/10)"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "unique local (fc00::/7)"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else {
        return None;
    })
}

/// An outbound request's error and its causes, on one line: reqwest's own
/// message hides why (a refused address, a TLS failure, a timeout) in its
/// sources. Shared by http data sources and model providers.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Why `ip` is refused by the rules alone (no allowlist), if it is.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// Checks a source URL (or a lookup's URL): http(s) only, no userinfo,
/// and no forbidden address named literally. A host name passes here; its
/// addresses are checked when a lookup connects.
pub fn check_url(url: &str, allow: &HttpAllowlist) -> Result<Url, String> {
    check_url_for(url, allow, HTTP_SOURCES)
}

/// Who the guard's messages name for `http` data sources.
pub const HTTP_SOURCES: &str = "http sources";
/// Who the guard's messages name for model providers.
pub const PROVIDERS: &str = "model providers";

/// [`check_url`], its refusals naming `who` (e.g. [`PROVIDERS`]).
pub fn check_url_for(url: &str, allow: &HttpAllowlist, who: &str) -> Result<Url, String> {
    let u = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!(
            "only http and https URLs are allowed, not {:?}",
            u.scheme()
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("URLs may not carry credentials (user:password@)".into());
    }
    // The parser normalises IP literals (`0x7f.1` is `127.0.0.1`), so a
    // host that parses as an IP here is the address a connection would use.
    let host = u.host_str().ok_or_else(|| format!("{url:?} has no host"))?;
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(u);
    };
    match allow.refuses(ip) {
        None => Ok(u),
        Some(why) => Err(format!(
            "{ip} is a {why} address; {who} may not reach it unless the operator allows it (--http-sources-allow)"
        )),
    }
}

/// Resolves host names for http lookups, refusing any name with a
/// forbidden address among its answers.
pub struct GuardedResolver {
    pub allow: Arc<HttpAllowlist>,
    /// Who the refusals name ([`HTTP_SOURCES`], [`PROVIDERS`]).
    pub who: &'static str,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        let who = self.who;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow.allows_host(&host) {
                for a in &addrs {
                    if let Some(why) = allow.refuses(a.ip()) {
                        return Err(format!(
                            "{host} resolves to {}, a {why} address; {who} may not reach it unless the operator allows it (--http-sources-allow)",
                            a.ip()
                        )
                        .into());
                    }
                }
            }
            if addrs.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_forbidden_range() {
        for a in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "192.0.0.170",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(forbidden(ip(a)).is_some(), "{a} should be refused");
        }
        for a in [
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.1.1",
            "192.169.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(forbidden(ip(a)), None, "{a} should be allowed");
        }
    }

    #[test]
    fn the_allowlist_admits_cidrs_ips_and_hosts() {
        let a = HttpAllowlist::parse("127.0.0.1, 10.1.0.0/16,fd00::/8,Internal.Example").unwrap();
        assert_eq!(a.refuses(ip("127.0.0.1")), None);
        assert_eq!(a.refuses(ip("::ffff:127.0.0.1")), None);
        assert!(a.refuses(ip("127.0.0.2")).is_some());
        assert_eq!(a.refuses(ip("10.1.200.3")), None);
        assert!(a.refuses(ip("10.2.0.1")).is_some());
        assert_eq!(a.refuses(ip("fd00::5")), None);
        assert!(a.refuses(ip("fc00::5")).is_some());
        assert!(a.allows_host("internal.example."));
        assert!(!a.allows_host("example"));
        assert!(HttpAllowlist::parse("10.0.0.0/33").is_err());
        assert!(HttpAllowlist::parse("not a host").is_err());
        assert_eq!(HttpAllowlist::parse("").unwrap(), HttpAllowlist::default());
        let all = HttpAllowlist::parse("0.0.0.0/0").unwrap();
        assert_eq!(all.refuses(ip("169.254.169.254")), None);
    }

    #[test]
    fn urls_are_checked_at_creation() {
        let none = HttpAllowlist::default();
        for u in [
            "http://127.0.0.1/x",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/",
            "http://[::1]:80/",
            "http://[::ffff:7f00:1]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "http://user:pw@example.com/",
        ] {
            assert!(check_url(u, &none).is_err(), "{u} should be refused");
        }
        assert!(check_url("https://example.com/{key}", &none).is_ok());
        assert!(check_url("http://localhost:1/", &none).is_ok());
        let lo = HttpAllowlist::parse("127.0.0.1").unwrap();
        assert!(check_url("http://127.0.0.1:9/", &lo).is_ok());
    }

    #[test]
    fn the_resolver_refuses_forbidden_answers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = GuardedResolver {
            allow: Arc::new(HttpAllowlist::default()),
            who: HTTP_SOURCES,
        };
        let name: Name = "localhost".parse().unwrap();
        let e = rt.block_on(r.resolve(name)).err().unwrap().to_string();
        assert!(e.contains("loopback"), "{e}");
        let r = GuardedResolver {
            allow: Arc::new(HttpAllowlist::parse("localhost").unwrap()),
            who: HTTP_SOURCES,
        };
        let name: Name = "localhost".parse().unwrap();
        assert!(rt.block_on(r.resolve(name)).is_ok());
    }
}
