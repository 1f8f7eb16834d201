//! Redirect-URI validation at `/auth` (`oidc::authorize::valid_redirect_uri`).
//!
//! Input: the candidate `redirect_uri` as sent by a browser.
//!
//! Properties: no panic; a client with registered URIs gets exactly those (byte
//! for byte); a public client without registered URIs gets the OOB URI, the
//! device callback path, or an `http` URL that the WHATWG URL parser (the `url`
//! crate, what browsers do) reads with a loopback host — never one with `\`,
//! control characters, userinfo or a fragment (issue 9, finding 1).
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use oxidex::config::settings::{Client, RefreshTokenLifetime};
use oxidex::oidc::authorize::{DEVICE_CALLBACK_PATH, OOB_REDIRECT_URI, valid_redirect_uri};
use url::{Host, Url};

const REGISTERED: &[&str] = &["https://app.example/cb", "http://127.0.0.1:8000/callback"];

fn client(redirect_uris: &[&str], public: bool) -> Client {
    Client {
        id: "app".to_owned(),
        secret: if public {
            String::new()
        } else {
            "secret".to_owned()
        },
        redirect_uris: redirect_uris.iter().map(|u| (*u).to_owned()).collect(),
        trusted_peers: Vec::new(),
        public,
        name: "app".to_owned(),
        logo_url: String::new(),
        allowed_connectors: Vec::new(),
        require_pkce: false,
        post_logout_redirect_uris: Vec::new(),
        backchannel_logout_uri: String::new(),
        refresh_token_lifetime: RefreshTokenLifetime::Standalone,
        sso_shared_with: None,
        client_credentials_groups: Vec::new(),
    }
}

fn is_loopback_http(uri: &str) -> bool {
    if uri.contains(['\\', '#']) || uri.chars().any(char::is_control) {
        return false;
    }
    let Ok(url) = Url::parse(uri) else {
        return false;
    };
    let loopback = match url.host() {
        Some(Host::Domain(name)) => name == "localhost",
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    url.scheme() == "http"
        && loopback
        && url.username().is_empty()
        && url.password().is_none()
        && url.fragment().is_none()
}

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = std::str::from_utf8(data) else {
        return;
    };
    for public in [false, true] {
        let accepted = valid_redirect_uri(&client(REGISTERED, public), uri);
        assert_eq!(
            accepted,
            REGISTERED.contains(&uri),
            "public={public} {uri:?}"
        );
    }
    if valid_redirect_uri(&client(&[], true), uri) {
        assert!(
            uri == OOB_REDIRECT_URI || uri == DEVICE_CALLBACK_PATH || is_loopback_http(uri),
            "public client without URIs accepted {uri:?}"
        );
    }
    assert!(!valid_redirect_uri(&client(&[], false), uri), "{uri:?}");
});
