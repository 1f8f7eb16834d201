//! Listen addresses in the forms Dex (Go's `net.Listen("tcp", addr)`) accepts:
//! `host:port`, `:port` (every address, IPv4 and IPv6) and `[v6]:port`. The
//! config loader checks them with [`parse`], so `check-config` reports a bad one
//! instead of `serve` failing on it; [`bind`] opens the listener for a checked one.
//!
//! Unlike Go, ports are numbers only (Go also resolves service names such as
//! `:http`), and IPv6 zones (`[fe80::1%eth0]:80`) are refused.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use tokio::net::TcpListener;

/// A checked listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// Empty for every address (`:port`); an IP address or a host name otherwise.
    pub host: String,
    pub port: u16,
}

const FORMS: &str = "use host:port, :port or [ipv6]:port, e.g. 0.0.0.0:5556";

/// Checks `addr` as Go's `net.SplitHostPort` would, plus a numeric port and a
/// host that is an IP address or a DNS name.
pub fn parse(addr: &str) -> Result<ListenAddr, String> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("{addr:?}: missing ']' in address ({FORMS})"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!("{addr:?}: missing port in address ({FORMS})"));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "{addr:?}: {host:?} in brackets is not an IPv6 address ({FORMS})"
            ));
        }
        (host, port)
    } else {
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(format!("{addr:?}: missing port in address ({FORMS})"));
        };
        if host.contains(':') {
            return Err(format!(
                "{addr:?}: too many colons in address; an IPv6 address needs brackets ({FORMS})"
            ));
        }
        if !host.is_empty() && host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
            return Err(format!(
                "{addr:?}: {host:?} is neither an IP address nor a host name ({FORMS})"
            ));
        }
        (host, port)
    };
    // `u16::from_str` would also take a leading `+`, which Go does not.
    let port = match port.parse::<u16>() {
        Ok(number) if port.bytes().all(|b| b.is_ascii_digit()) => number,
        _ => {
            return Err(format!(
                "{addr:?}: the port must be a number from 0 to 65535 ({FORMS})"
            ));
        }
    };
    Ok(ListenAddr {
        host: host.to_owned(),
        port,
    })
}

fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Opens a listener on `addr` (checked again here, for callers that skipped the
/// config loader). `:port` listens on every IPv6 and IPv4 address where the
/// system allows a dual-stack socket, else on every IPv4 address.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let parsed = parse(addr)
        .map_err(|message| std::io::Error::new(std::io::ErrorKind::InvalidInput, message))?;
    if parsed.host.is_empty() {
        let any_v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, parsed.port));
        return match TcpListener::bind(any_v6).await {
            Ok(listener) => Ok(listener),
            Err(_) => TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], parsed.port))).await,
        };
    }
    TcpListener::bind((parsed.host.as_str(), parsed.port)).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accepts_dex_forms() {
        for (addr, host, port) in [
            ("0.0.0.0:5556", "0.0.0.0", 5556),
            (":5556", "", 5556),
            ("localhost:5556", "localhost", 5556),
            ("[::1]:443", "::1", 443),
            ("[::]:0", "::", 0),
            ("auth.example.com:65535", "auth.example.com", 65535),
        ] {
            let parsed = parse(addr).unwrap();
            assert_eq!((parsed.host.as_str(), parsed.port), (host, port), "{addr}");
        }
    }

    #[test]
    fn refuses_what_go_refuses_with_a_reason() {
        for (addr, reason) in [
            ("localhost", "missing port"),
            ("5556", "missing port"),
            ("", "missing port"),
            ("::1:443", "too many colons"),
            ("[::1]", "missing port"),
            ("[::1:443", "missing ']'"),
            ("[127.0.0.1]:443", "not an IPv6 address"),
            ("[fe80::1%eth0]:443", "not an IPv6 address"),
            ("localhost:", "port must be a number"),
            ("localhost:http", "port must be a number"),
            ("localhost:65536", "port must be a number"),
            ("localhost:+80", "port must be a number"),
            ("localhost:-1", "port must be a number"),
            ("bad host:80", "neither an IP address nor a host name"),
            ("a..b:80", "neither an IP address nor a host name"),
        ] {
            let error = parse(addr).unwrap_err();
            assert!(error.contains(reason), "{addr:?}: {error}");
        }
    }

    #[tokio::test]
    async fn binds_every_address_for_an_empty_host() {
        let listener = bind(":0").await.unwrap();
        assert!(listener.local_addr().unwrap().ip().is_unspecified());
        assert!(bind("localhost").await.is_err());
    }
}
