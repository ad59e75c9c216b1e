//! Where dialback may call out to a URL someone else named: a company's webhook endpoint, a
//! company's identity provider (its JWKS). Whoever names the URL, dialback must not become a way
//! into the network it runs in: unless the server's configuration allows it, only `https`, and
//! never a private, loopback, link-local or otherwise non-public address, whether the URL names it
//! or a name resolves to it at connect time (the resolver below filters what DNS says, so a name
//! that changes its answer after it was saved is caught too). Redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// What the server's configuration allows.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub allow_http: bool,
    pub allow_private: bool,
}

impl Policy {
    /// Whether `url` may be called, as far as the URL alone says (its scheme, an address written
    /// in it); why not.
    pub fn check_url(&self, url: &str) -> Result<Url, String> {
        let parsed = Url::parse(url).map_err(|e| format!("url is not a valid URL: {e}"))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err("url must use https (this server does not allow plain http)".into()),
            other => return Err(format!("url must use https, not {other}")),
        }
        let ip = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err("url must name a host".into()),
        };
        if let Some(ip) = ip.filter(|ip| !self.allow_private && !is_public(*ip)) {
            return Err(format!("url points at {ip}, a private or local address, which this server does not call"));
        }
        Ok(parsed)
    }

    /// Resolves `url`'s host now (within `limit`) and refuses it when it has no address the
    /// deliverer may call (the same rule the deliverer applies when it connects).
    pub async fn check_resolves(&self, url: &Url, limit: std::time::Duration) -> Result<(), String> {
        let Some(url::Host::Domain(host)) = url.host() else { return Ok(()) };
        let port = url.port_or_known_default().unwrap_or(443);
        let found: Vec<SocketAddr> = tokio::time::timeout(limit, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| format!("url's host {host} did not resolve within {limit:?}"))?
            .map_err(|e| format!("url's host {host} does not resolve: {e}"))?
            .collect();
        self.allowed(host, found).map(|_| ())
    }

    /// The addresses of `host` the deliverer may call, or why none.
    fn allowed(&self, host: &str, found: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
        let total = found.len();
        let allowed: Vec<SocketAddr> =
            found.into_iter().filter(|addr| self.allow_private || is_public(addr.ip())).collect();
        match (total, allowed.is_empty()) {
            (0, _) => Err(format!("{host} has no address")),
            (_, true) => {
                Err(format!("{host} resolves only to private or local addresses, which this server does not call"))
            }
            _ => Ok(allowed),
        }
    }

    /// The resolver the deliverer's HTTP client connects through.
    pub fn resolver(self) -> Arc<Guarded> {
        Arc::new(Guarded(self))
    }
}

/// Resolves with the system's resolver and drops the addresses the policy refuses.
pub struct Guarded(Policy);

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed =
                policy.allowed(&host, found).map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is a public unicast address (not loopback, private, link-local, shared (CGNAT),
/// unspecified, broadcast, multicast, documentation or benchmarking; IPv4 inside IPv6 judged as
/// IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64, a v4 address behind it
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Policy = Policy { allow_http: false, allow_private: false };

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2a00:1450:4010:c05::64", "::ffff:93.184.216.34"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_are_refused_for_their_scheme_or_the_address_they_name() {
        assert!(STRICT.check_url("https://erp.example.com/hook").is_ok());
        assert!(STRICT.check_url("http://erp.example.com/hook").unwrap_err().contains("https"));
        assert!(STRICT.check_url("https://127.0.0.1:8443/hook").unwrap_err().contains("127.0.0.1"));
        assert!(STRICT.check_url("https://[::1]/hook").unwrap_err().contains("::1"));
        assert!(STRICT.check_url("https://169.254.169.254/latest/meta-data").is_err());
        let lenient = Policy { allow_http: true, allow_private: true };
        assert!(lenient.check_url("http://127.0.0.1:9000/hook").is_ok());
    }

    #[test]
    fn names_that_resolve_to_private_addresses_are_refused_when_connecting() {
        let private: Vec<SocketAddr> = vec!["10.0.0.7:443".parse().unwrap(), "[fd00::7]:443".parse().unwrap()];
        assert!(STRICT.allowed("internal.example.com", private.clone()).unwrap_err().contains("private"));
        // A name with a public and a private address: only the public one is dialled.
        let mixed = vec![private[0], "93.184.216.34:443".parse().unwrap()];
        assert_eq!(STRICT.allowed("mixed.example.com", mixed).unwrap(), vec!["93.184.216.34:443".parse().unwrap()]);
        assert!(STRICT.allowed("nothing.example.com", vec![]).is_err());
    }

    #[tokio::test]
    async fn localhost_is_refused_at_connect_time_by_the_resolver() {
        let name: Name = "localhost".parse().unwrap();
        let refused = STRICT.resolver().resolve(name).await;
        assert!(refused.is_err());
        let allowed =
            Policy { allow_http: true, allow_private: true }.resolver().resolve("localhost".parse().unwrap()).await;
        assert!(allowed.unwrap().next().is_some());
    }
}
