//! The HTTP Basic client-credentials decoder (`oidc::client_auth`), fed the raw
//! `Authorization` header value of a token, introspection or device request.
//!
//! Input: a mode byte, then the header value (mode 0), or an id and a secret
//! separated by a NUL byte that are encoded the way an RFC 6749 §2.3.1 client
//! does it (mode 1).
//!
//! Properties: no panic; a client authenticated is the one named by the decoded
//! id and holds the presented secret; a correctly encoded id/secret pair decodes
//! back to itself and authenticates exactly that client.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use oxidex::config::settings::{Client, RefreshTokenLifetime};
use oxidex::oidc::client_auth::ClientCredentials;

fn client(id: &str, secret: &str, public: bool) -> Client {
    Client {
        id: id.to_owned(),
        secret: secret.to_owned(),
        redirect_uris: Vec::new(),
        trusted_peers: Vec::new(),
        public,
        name: id.to_owned(),
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

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let clients = [
        client("web", "websecret", false),
        client("sp ace", "s p+%", false),
        client("public-cli", "", true),
    ];
    if mode % 2 == 0 {
        let Ok(credentials) = ClientCredentials::from_request(Some(text), "form-id", "form-secret")
        else {
            return;
        };
        if let Ok(found) = credentials.authenticate(&clients) {
            assert_eq!(found.id, credentials.client_id);
            assert_eq!(
                credentials,
                ClientCredentials::new(&found.id, &found.secret)
            );
        }
        return;
    }
    // A colon in the id would end it early; RFC 7617 forbids it unencoded,
    // and the form encoding below escapes it.
    let (id, secret) = text.split_once('\0').unwrap_or((text, ""));
    let header = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", encode(id), encode(secret)))
    );
    let credentials = ClientCredentials::from_request(Some(&header), "form-id", "form-secret");
    assert_eq!(
        credentials.as_ref().ok(),
        Some(&ClientCredentials::new(id, secret)),
        "{header:?}"
    );
    let registered = [client(id, secret, secret.is_empty())];
    if let Ok(credentials) = credentials {
        assert!(credentials.authenticate(&registered).is_ok());
    }
});
