//! The config loader (`config::load_str`): JSON or YAML text → normalisation →
//! schema → secret forms and `$VAR` expansion → validation, every problem
//! collected with its key path.
//!
//! Input: a mode byte (bit 0: YAML instead of JSON; bit 1: strict unknown keys;
//! bit 2: the file lives in the Nix store), then the text.
//!
//! Properties: no panic; a loaded config's issuer is an absolute URL and its
//! route prefix has no trailing slash; every secret is redacted in the
//! `check-config` rendering; no registered redirect URI carries what a browser
//! reads differently from us (`\`, control characters, userinfo, a fragment).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use oxidex::config::settings::REDACTED;
use oxidex::config::{Env, LoadOptions, load_str, redacted_json};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let extension = if mode & 1 == 0 { "json" } else { "yaml" };
    let path = if mode & 4 == 0 {
        format!("/etc/oxidex/config.{extension}")
    } else {
        format!("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-config.{extension}")
    };
    let options = LoadOptions {
        strict: mode & 2 != 0,
        overrides: Default::default(),
        env: Env::from_pairs([("CLIENT_SECRET", "from-the-environment"), ("EMPTY", "")]),
    };
    let Ok(loaded) = load_str(text, Path::new(&path), &options) else {
        return;
    };
    let settings = &loaded.settings;

    let issuer = url::Url::parse(&settings.issuer.url).expect("issuer is an absolute URL");
    assert!(matches!(issuer.scheme(), "http" | "https"), "{issuer}");
    assert!(!settings.issuer.path_prefix.ends_with('/'));

    for client in &settings.clients {
        for uri in &client.redirect_uris {
            assert!(
                !uri.contains(['\\', '#']) && !uri.chars().any(char::is_control),
                "registered redirect URI {uri:?}"
            );
            if let Ok(parsed) = url::Url::parse(uri) {
                assert!(
                    parsed.username().is_empty() && parsed.password().is_none(),
                    "registered redirect URI with userinfo {uri:?}"
                );
            }
        }
    }

    // The rendering is in Dex's schema (`staticClients`, `staticPasswords`).
    let redacted = redacted_json(settings);
    let hidden = |value: &Value| matches!(value.as_str(), Some("") | Some(REDACTED));
    for i in 0..settings.clients.len() {
        assert!(
            hidden(&redacted["staticClients"][i]["secret"]),
            "client {i} secret"
        );
    }
    for i in 0..settings.passwords.len() {
        let entry = &redacted["staticPasswords"][i];
        assert!(
            entry.get("hash").is_none_or(hidden),
            "password {i} hash: {entry}"
        );
    }
});
