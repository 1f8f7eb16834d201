//! The client's IP address, for rate limits: the TCP peer, or — only when the
//! peer is one of `web.clientRemoteIP.trustedProxies` — the address the proxies
//! recorded in `web.clientRemoteIP.header`, read right to left past the trusted
//! hops (Dex's rule). Left of the first untrusted hop everything is the client's
//! own claim and is ignored.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use super::AppState;
use crate::config::settings::ClientIpSettings;
use crate::throttle::ClientKey;

/// Resolves the client's address from the TCP `peer` and the request headers.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, settings: &ClientIpSettings) -> IpAddr {
    let peer = peer.to_canonical();
    let Some(header) = settings.header.as_ref() else {
        return peer;
    };
    let trusted = |ip: &IpAddr| settings.trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    // All fields of the header, in order, as one comma-separated chain.
    let chain: Vec<&str> = headers
        .get_all(header)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    let mut client = peer;
    for hop in chain.iter().rev() {
        // A hop we cannot read was not written by a proxy we trust: stop at the
        // last address a trusted proxy vouched for.
        let Some(ip) = parse_hop(hop) else {
            return client;
        };
        client = ip;
        if !trusted(&ip) {
            return ip;
        }
    }
    client
}

/// `1.2.3.4`, `2001:db8::1`, `1.2.3.4:80` or `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Extracts the client's [`ClientKey`]. Without a peer address (a router driven
/// without a socket, as in unit tests) every request shares one key, so the
/// limits still hold.
pub struct ClientIp(pub ClientKey);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(info) => info.0.ip(),
            None => {
                static REPORTED: std::sync::Once = std::sync::Once::new();
                REPORTED.call_once(|| {
                    tracing::error!(
                        "requests carry no peer address (the listener is not served with \
                         connect info): all clients share one rate-limit key"
                    );
                });
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            }
        };
        let ip = resolve(peer, &parts.headers, &state.settings.web.client_ip);
        Ok(Self(ClientKey::of(ip)))
    }
}

/// Parses `trustedProxies` entries (validated when the config was loaded).
pub fn parse_trusted(proxies: &[String]) -> Vec<IpNet> {
    proxies.iter().filter_map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use axum::http::{HeaderName, HeaderValue};

    use super::*;

    fn settings(header: &str, proxies: &[&str]) -> ClientIpSettings {
        ClientIpSettings {
            header: Some(HeaderName::from_bytes(header.as_bytes()).unwrap()),
            trusted_proxies: parse_trusted(
                &proxies.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            ),
        }
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_a_header_setting_the_peer_is_the_client() {
        let xff = headers("x-forwarded-for", &["9.9.9.9"]);
        assert_eq!(
            resolve(ip("10.0.0.1"), &xff, &ClientIpSettings::default()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn an_untrusted_peer_cannot_name_another_client() {
        let s = settings("X-Forwarded-For", &["10.0.0.0/8"]);
        let xff = headers("x-forwarded-for", &["9.9.9.9"]);
        assert_eq!(resolve(ip("192.0.2.7"), &xff, &s), ip("192.0.2.7"));
    }

    #[test]
    fn the_chain_is_walked_right_to_left_past_trusted_hops() {
        let s = settings("X-Forwarded-For", &["10.0.0.0/8", "fd00::/8"]);
        // The client forged "6.6.6.6"; the first proxy appended the real address.
        let xff = headers("x-forwarded-for", &["6.6.6.6, 198.51.100.4", "10.1.1.1"]);
        assert_eq!(resolve(ip("10.0.0.1"), &xff, &s), ip("198.51.100.4"));
        let xff = headers("x-forwarded-for", &["6.6.6.6,198.51.100.4 , fd00::1"]);
        assert_eq!(resolve(ip("10.0.0.1"), &xff, &s), ip("198.51.100.4"));
    }

    #[test]
    fn all_hops_trusted_gives_the_leftmost_and_no_header_the_peer() {
        let s = settings("X-Forwarded-For", &["10.0.0.0/8"]);
        let xff = headers("x-forwarded-for", &["10.2.2.2, 10.1.1.1"]);
        assert_eq!(resolve(ip("10.0.0.1"), &xff, &s), ip("10.2.2.2"));
        assert_eq!(
            resolve(ip("10.0.0.1"), &HeaderMap::new(), &s),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn an_unreadable_hop_stops_at_the_last_trusted_address() {
        let s = settings("X-Forwarded-For", &["10.0.0.0/8"]);
        let xff = headers("x-forwarded-for", &["1.1.1.1, garbage, 10.1.1.1"]);
        assert_eq!(resolve(ip("10.0.0.1"), &xff, &s), ip("10.1.1.1"));
        let xff = headers("x-forwarded-for", &[""]);
        assert_eq!(resolve(ip("10.0.0.1"), &xff, &s), ip("10.0.0.1"));
    }

    #[test]
    fn single_address_headers_and_ports_are_read() {
        let s = settings("X-Real-IP", &["127.0.0.1/32"]);
        let real = headers("x-real-ip", &["203.0.113.9"]);
        assert_eq!(resolve(ip("127.0.0.1"), &real, &s), ip("203.0.113.9"));
        let real = headers("x-real-ip", &["[2001:db8::5]:443"]);
        assert_eq!(resolve(ip("127.0.0.1"), &real, &s), ip("2001:db8::5"));
        let real = headers("x-real-ip", &["203.0.113.9:8080"]);
        assert_eq!(resolve(ip("127.0.0.1"), &real, &s), ip("203.0.113.9"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_proxies() {
        let s = settings("X-Forwarded-For", &["127.0.0.1/32"]);
        let xff = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(resolve(ip("::ffff:127.0.0.1"), &xff, &s), ip("203.0.113.9"));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_prefix() {
        let a = ClientKey::of(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientKey::of(ip("2001:db8:1:2:ffff:1:2:3"));
        let c = ClientKey::of(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            ClientKey::of(ip("::ffff:192.0.2.1")),
            ClientKey::of(ip("192.0.2.1"))
        );
        assert_ne!(
            ClientKey::of(ip("192.0.2.1")),
            ClientKey::of(ip("192.0.2.2"))
        );
    }
}
