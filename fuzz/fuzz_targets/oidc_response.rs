//! The oidc connector's reading of upstream answers: the ID-token/userinfo claim
//! mapping (Dex's `createIdentity` rules) under varied connector settings, the
//! userinfo answer, the ID token's payload, and the token endpoint's answer as
//! the `openidconnect` crate decodes it for the connector.
//!
//! Input: a mode byte, a settings byte, two bytes of HTTP status, then the body
//! (a JSON claims object, a userinfo answer, a compact JWS, or a token answer).
//!
//! Properties: no panic; without `insecureEnableGroups` an identity has no
//! groups; with `allowedGroups` it has only allowed ones and at least one; the
//! user id is `sub` unless `userIDKey` says otherwise; userinfo for another
//! subject than the ID token's is refused.
#![no_main]

use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use openidconnect::core::CoreTokenResponse;
use openidconnect::{OAuth2TokenResponse, TokenResponse};
use oxidex::connector::oidc::{OidcConfig, identity_from_claims, jwt_payload, read_user_info};
use oxidex::connector::upstream::TlsOptions;
use serde_json::{Map, Value};

const URL: &str = "https://idp.example/userinfo";

fn config(bits: u8) -> OidcConfig {
    let flag = |n: u8| bits & (1 << n) != 0;
    let key = |set: bool, name: &str| if set { name.to_owned() } else { String::new() };
    OidcConfig {
        issuer: "https://idp.example".to_owned(),
        client_id: "oxidex".to_owned(),
        client_secret: "secret".to_owned(),
        redirect_uri: "https://auth.example.org/dex/callback".to_owned(),
        scopes: if flag(0) {
            vec!["profile".to_owned(), "email".to_owned()]
        } else {
            vec!["profile".to_owned()]
        },
        get_user_info: false,
        insecure_skip_email_verified: flag(1),
        insecure_enable_groups: flag(2),
        allowed_groups: if flag(3) {
            vec!["admins".to_owned(), "devs".to_owned()]
        } else {
            Vec::new()
        },
        user_id_key: key(flag(4), "uid"),
        user_name_key: key(flag(5), "login"),
        override_claim_mapping: flag(6),
        preferred_username_key: key(flag(7), "nickname"),
        email_key: key(flag(7), "mail"),
        groups_key: key(flag(6), "roles"),
        prompt_type: None,
        acr_values: Vec::new(),
        basic_auth_unsupported: false,
        tls: TlsOptions {
            root_cas: Vec::new(),
            insecure_skip_verify: false,
        },
    }
}

fn check_mapping(config: &OidcConfig, claims: &Map<String, Value>) {
    let Ok(outcome) = identity_from_claims(config, claims) else {
        return;
    };
    let Ok(identity) = outcome else {
        assert!(config.insecure_enable_groups && !config.allowed_groups.is_empty());
        return;
    };
    if !config.insecure_enable_groups {
        assert!(identity.groups.is_empty());
    } else if !config.allowed_groups.is_empty() {
        assert!(!identity.groups.is_empty());
        assert!(
            identity
                .groups
                .iter()
                .all(|g| config.allowed_groups.contains(g))
        );
    }
    let id_key = if config.user_id_key.is_empty() {
        "sub"
    } else {
        &config.user_id_key
    };
    assert_eq!(
        claims.get(id_key).and_then(Value::as_str),
        Some(identity.user_id.as_str())
    );
}

fuzz_target!(|data: &[u8]| {
    let [mode, bits, hi, lo, body @ ..] = data else {
        return;
    };
    let config = config(*bits);
    match mode % 4 {
        0 => {
            if let Ok(Value::Object(claims)) = serde_json::from_slice(body) {
                check_mapping(&config, &claims);
            }
        }
        1 => {
            let Ok(status) = StatusCode::from_u16(100 + u16::from_be_bytes([*hi, *lo]) % 500)
            else {
                return;
            };
            let expected = (bits % 2 == 1).then_some("user-1");
            if let Ok(claims) = read_user_info(status, body, URL, expected) {
                assert!(status.is_success());
                if let Some(sub) = expected {
                    assert_eq!(claims.get("sub").and_then(Value::as_str), Some(sub));
                }
                check_mapping(&config, &claims);
            }
        }
        2 => {
            if let Ok(claims) = std::str::from_utf8(body)
                .map_err(|_| ())
                .and_then(|t| jwt_payload(t).map_err(|_| ()))
            {
                check_mapping(&config, &claims);
            }
        }
        _ => {
            let Ok(response) = serde_json::from_slice::<CoreTokenResponse>(body) else {
                return;
            };
            let _ = response.access_token().secret();
            let _ = response.refresh_token();
            if let Some(id_token) = response.id_token() {
                if let Ok(claims) = jwt_payload(&id_token.to_string()) {
                    check_mapping(&config, &claims);
                }
            }
        }
    }
});
