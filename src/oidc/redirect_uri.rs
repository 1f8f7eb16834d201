//! Redirect URIs read the way a browser reads them.
//!
//! A redirect URI is where the browser takes the authorization code, so every
//! decision about one is made on what a WHATWG URL parser (the `url` crate, as
//! browsers) makes of it, never on a hand split of the string: a hand split reads
//! `http://evil.example\@127.0.0.1/cb` as a loopback URL while browsers treat `\`
//! as `/` and go to `evil.example`.
//!
//! Beyond Dex, both a registered URI (config) and the loopback URIs a public
//! client may send are refused when they contain:
//! * `\`, a space, an ASCII control character (WHATWG silently strips tab and
//!   newline, so the browser would read another URL than the one we checked) or
//!   a non-ASCII character (send it percent-encoded);
//! * userinfo (`user@`), which only serves to disguise the host;
//! * a fragment (RFC 6749 §3.1.2).
//!
//! A registered URI is still matched byte for byte (Dex); these rules only keep
//! URIs out that a browser could read differently from a person or a relying
//! party.

use url::{Host, Url};

/// Why a redirect URI is refused, for config errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriProblem {
    #[error(
        "contains a backslash, a space, a control or a non-ASCII character (percent-encode it)"
    )]
    Characters,
    #[error("has a fragment (#…), which redirect URIs must not have")]
    Fragment,
    #[error("has user information (…@) before the host")]
    Userinfo,
    #[error("is not an absolute URL (or a path on this server starting with a single /)")]
    NotAbsolute,
    #[error("must be written as scheme://host/…")]
    NotHierarchical,
}

/// Checks a URI a client registers (`staticClients[].redirectURIs[]`). Besides
/// absolute URLs (any scheme: native apps use their own), a path on this server
/// such as `/dex/device/callback` is allowed (Dex HEAD registers the device
/// callback that way), but not a scheme-relative `//host/…`.
pub fn check_registered(uri: &str) -> Result<(), RedirectUriProblem> {
    check_characters(uri)?;
    if uri.starts_with('/') {
        return if uri.starts_with("//") {
            Err(RedirectUriProblem::NotAbsolute)
        } else if uri.contains('#') {
            Err(RedirectUriProblem::Fragment)
        } else {
            Ok(())
        };
    }
    let url = Url::parse(uri).map_err(|_| RedirectUriProblem::NotAbsolute)?;
    check_parsed(uri, &url)
}

/// Dex's loopback rule for public clients without registered URIs: an `http://`
/// URL on `localhost` or a loopback IP, any port and path. The host is the one
/// the browser will connect to, and it must be written in its canonical form
/// (`localhost`, `127.x.y.z` in dotted decimal, `[::1]`), so that every parser,
/// the relying party's included, agrees on it: `http://0x7f.1/`,
/// `http://127.0.0.1./`, `http://LOCALHOST/`, `http://[::ffff:127.0.0.1]/` and
/// `http:/127.0.0.1/` are refused.
pub fn is_loopback_http(uri: &str) -> bool {
    if check_characters(uri).is_err() {
        return false;
    }
    // Exactly `http://` (any case) then the host: no `http:/h`, `http:///h`.
    let Some(rest) = uri
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .and_then(|_| uri.get(7..))
    else {
        return false;
    };
    if rest.starts_with('/') {
        return false;
    }
    let Ok(url) = Url::parse(uri) else {
        return false;
    };
    if url.scheme() != "http" || check_parsed(uri, &url).is_err() {
        return false;
    }
    let loopback = match url.host() {
        Some(Host::Domain(domain)) => domain == "localhost",
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    // The host as written, up to the port; `[…]` kept for IPv6.
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let written = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(host, _)| format!("[{host}]")),
        None => authority.split(':').next().map(str::to_owned),
    };
    let canonical = url.host_str().map(str::to_owned);
    loopback && written.is_some() && written == canonical
}

/// Refused anywhere in a redirect URI: see the module documentation.
fn check_characters(uri: &str) -> Result<(), RedirectUriProblem> {
    if uri.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        Ok(())
    } else {
        Err(RedirectUriProblem::Characters)
    }
}

fn check_parsed(raw: &str, url: &Url) -> Result<(), RedirectUriProblem> {
    if raw.contains('#') || url.fragment().is_some() {
        return Err(RedirectUriProblem::Fragment);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectUriProblem::Userinfo);
    }
    if url.has_authority() || url.is_special() {
        // `http:/h` or `http:h` reach the same host in a browser, but no
        // relying party writes them; refusing them keeps one spelling per URI.
        let after_scheme = raw.get(url.scheme().len()..).unwrap_or_default();
        let Some(rest) = after_scheme.strip_prefix("://") else {
            return Err(RedirectUriProblem::NotHierarchical);
        };
        if rest.starts_with('/') {
            return Err(RedirectUriProblem::NotHierarchical);
        }
        // An empty userinfo (`http://@host/`) leaves no trace in the parsed URL.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(RedirectUriProblem::Userinfo);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_accepts_canonical_hosts_any_port_and_path() {
        for uri in [
            "http://localhost/cb",
            "http://localhost:8000/cb?x=1",
            "http://localhost:8000",
            "http://127.0.0.1:5555/callback",
            "http://127.1.2.3/",
            "http://[::1]:8080/cb",
            "http://[::1]",
            "HTTP://127.0.0.1/cb",
            "Http://localhost/cb",
            "http://127.0.0.1/cb@x",
            // A percent-encoded backslash in the path stays in the path for
            // every parser: the host is 127.0.0.1.
            "http://127.0.0.1/%5C@evil.example",
        ] {
            assert!(is_loopback_http(uri), "{uri} should be accepted");
        }
    }

    #[test]
    fn loopback_refuses_what_a_browser_reads_as_another_host() {
        for uri in [
            // The finding: WHATWG reads `\` as `/`, the host is evil.example.
            "http://evil.example\\@127.0.0.1/cb",
            "http://evil.example\\@127.0.0.1:8000/cb",
            "http:\\\\127.0.0.1/cb",
            "http://127.0.0.1\\@evil.example/",
            "http://evil.example%5C@127.0.0.1/cb",
            "http://127.0.0.1%5C@evil.example/",
            "http://evil.example@127.0.0.1/cb",
            "http://@127.0.0.1/cb",
            "http://user:pw@localhost/cb",
            // WHATWG strips tab and newline before parsing.
            "http://evil.example\t@127.0.0.1/cb",
            "http://127.0.0.1\n.evil.example/cb",
            "http://localhost/a\nb",
            "http://localhost /cb",
            "http://127.0.0.1.evil.example/cb",
            "http://localhost.evil.example/cb",
            "http://localhost.localhost/cb",
            "http://evil.example/127.0.0.1",
            "http://evil.example?@127.0.0.1/",
            "http://evil.example#@127.0.0.1/",
            "http://127.0.0.1/cb#frag",
            "http://127.0.0.1/cb#",
            // Loopback for a browser, but not written canonically.
            "http://0x7f.1/cb",
            "http://127.1/cb",
            "http://2130706433/cb",
            "http://127.0.0.1./cb",
            "http://localhost./cb",
            "http://LOCALHOST/cb",
            "http://%6cocalhost/cb",
            "http://[::ffff:127.0.0.1]/cb",
            "http://[0:0:0:0:0:0:0:1]/cb",
            // IDNA: non-ASCII is refused; punycode is just another domain.
            "http://\u{24db}ocalhost/cb",
            "http://xn--ocalhost-0y3c/cb",
            // Not `http://`.
            "https://localhost/cb",
            "http:/127.0.0.1/cb",
            "http:///127.0.0.1/cb",
            "http:127.0.0.1/cb",
            "ftp://127.0.0.1/cb",
            "http://127.0.0.1:99999/cb",
            "http://127.0.0.1:x/cb",
            "http://[::1/cb",
            "http://localhost/caf\u{e9}",
            "",
        ] {
            assert!(!is_loopback_http(uri), "{uri:?} should be refused");
        }
    }

    #[test]
    fn registered_uris_follow_the_same_rules() {
        for uri in [
            "https://app.example/cb",
            "https://app.example:8443/cb?tenant=a",
            "http://127.0.0.1:5555/callback",
            "com.example.app:/oauth2redirect",
            "myapp://callback",
            "urn:ietf:wg:oauth:2.0:oob",
            "/device/callback",
            "/dex/device/callback",
        ] {
            assert_eq!(check_registered(uri), Ok(()), "{uri}");
        }
        for (uri, problem) in [
            (
                "https://evil.example\\@app.example/cb",
                RedirectUriProblem::Characters,
            ),
            ("https://app.example/c b", RedirectUriProblem::Characters),
            ("https://app.example/\tcb", RedirectUriProblem::Characters),
            (
                "https://app.example/caf\u{e9}",
                RedirectUriProblem::Characters,
            ),
            ("https://app.example/cb#x", RedirectUriProblem::Fragment),
            (
                "https://evil.example@app.example/cb",
                RedirectUriProblem::Userinfo,
            ),
            ("https://@app.example/cb", RedirectUriProblem::Userinfo),
            ("myapp://user@callback", RedirectUriProblem::Userinfo),
            ("https:/app.example/cb", RedirectUriProblem::NotHierarchical),
            ("https:app.example/cb", RedirectUriProblem::NotHierarchical),
            (
                "https:///app.example/cb",
                RedirectUriProblem::NotHierarchical,
            ),
            (
                "//evil.example/device/callback",
                RedirectUriProblem::NotAbsolute,
            ),
            ("/device/callback#x", RedirectUriProblem::Fragment),
            ("app.example/cb", RedirectUriProblem::NotAbsolute),
            ("", RedirectUriProblem::NotAbsolute),
        ] {
            assert_eq!(check_registered(uri), Err(problem), "{uri:?}");
        }
    }
}
