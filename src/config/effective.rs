//! The effective configuration in Dex's own schema, for `check-config`: the keys
//! a Dex user writes (camelCase, `staticClients`, `storage.config`…), durations as
//! Go duration strings (`24h`, `1h30m`, `300ms`), defaults filled in, secrets
//! redacted. Feeding the output back to oxidex (or Dex) gives the same settings,
//! except that redacted secrets must be put back.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::settings::*;

/// `settings` as a Dex config document.
pub fn dex_schema(settings: &Settings) -> Value {
    let mut doc = Map::new();
    doc.insert("issuer".into(), json!(settings.issuer.url));
    doc.insert("storage".into(), storage(&settings.storage));
    doc.insert("web".into(), web(&settings.web));
    if let Some(http) = &settings.telemetry_http {
        doc.insert("telemetry".into(), json!({ "http": http }));
    }
    doc.insert("frontend".into(), frontend(&settings.frontend));
    doc.insert("oauth2".into(), oauth2(&settings.oauth2));
    doc.insert("expiry".into(), expiry(&settings.expiry));
    doc.insert(
        "logger".into(),
        json!({
            "level": settings.logger.level,
            "format": match settings.logger.format {
                LogFormat::Json => "json",
                LogFormat::Text => "text",
            },
            "excludeFields": settings.logger.exclude_fields,
        }),
    );
    doc.insert(
        "signer".into(),
        json!({
            "type": "local",
            "config": {
                "keysRotationPeriod": go_duration(settings.signer.rotation_period),
                "algorithm": settings.signer.algorithm.as_str(),
            },
        }),
    );
    doc.insert(
        "staticClients".into(),
        settings.clients.iter().map(client).collect(),
    );
    doc.insert(
        "connectors".into(),
        settings.connectors.iter().map(connector).collect(),
    );
    doc.insert(
        "enablePasswordDB".into(),
        json!(settings.enable_password_db),
    );
    doc.insert(
        "staticPasswords".into(),
        settings.passwords.iter().map(password).collect(),
    );
    doc.insert(
        "gc".into(),
        json!({ "interval": go_duration(settings.gc_interval) }),
    );
    if let Some(sessions) = &settings.sessions {
        doc.insert("sessions".into(), self::sessions(sessions));
    }
    Value::Object(doc)
}

fn storage(storage: &StorageSettings) -> Value {
    match storage {
        StorageSettings::Memory => json!({ "type": "memory" }),
        StorageSettings::Sqlite3 { file } => {
            json!({ "type": "sqlite3", "config": { "file": file } })
        }
        StorageSettings::Postgres(pg) => {
            let host = match &pg.host {
                PostgresHost::Tcp(host) => host.clone(),
                PostgresHost::Socket(dir) => dir.display().to_string(),
            };
            let ssl_mode = match pg.ssl.mode {
                SslMode::Disable => "disable",
                SslMode::Require => "require",
                SslMode::VerifyCa => "verify-ca",
                SslMode::VerifyFull => "verify-full",
            };
            let path = |p: &Option<std::path::PathBuf>| {
                p.as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            };
            json!({
                "type": "postgres",
                "config": {
                    "host": host,
                    "port": pg.port,
                    "database": pg.database,
                    "user": pg.user,
                    "password": pg.password.as_ref().map_or("", |_| REDACTED),
                    "ssl": {
                        "mode": ssl_mode,
                        "caFile": path(&pg.ssl.ca_file),
                        "certFile": path(&pg.ssl.cert_file),
                        "keyFile": path(&pg.ssl.key_file),
                        "serverName": pg.ssl.server_name.clone().unwrap_or_default(),
                    },
                    // Whole seconds, as Dex's keys are.
                    "connectionTimeout": pg.connect_timeout.map_or(0, |d| d.as_secs()),
                    "maxOpenConns": pg.max_open_conns,
                    "maxIdleConns": pg.max_idle_conns,
                    "connMaxLifetime": pg.conn_max_lifetime.map_or(0, |d| d.as_secs()),
                },
            })
        }
    }
}

fn web(web: &WebSettings) -> Value {
    let headers: Map<String, Value> = web
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect();
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let mut out = json!({
        "http": web.http.clone().unwrap_or_default(),
        "https": web.https.clone().unwrap_or_default(),
        "tlsCert": path(&web.tls_cert).unwrap_or_default(),
        "tlsKey": path(&web.tls_key).unwrap_or_default(),
        "tlsMinVersion": web.tls_min_version.clone().unwrap_or_default(),
        "tlsMaxVersion": web.tls_max_version.clone().unwrap_or_default(),
        "headers": headers,
        "allowedOrigins": web.allowed_origins,
        "allowedHeaders": web.allowed_headers,
        "clientRemoteIP": {
            "header": web.client_ip.header.as_ref().map(|h| h.as_str()).unwrap_or_default(),
            "trustedProxies": web.client_ip.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "drainTimeout": go_duration(web.drain_timeout),
    });
    // Keys Dex leaves empty are dropped rather than printed empty.
    if let Some(map) = out.as_object_mut() {
        map.retain(|_, v| v.as_str() != Some(""));
    }
    out
}

fn frontend(frontend: &FrontendSettings) -> Value {
    json!({
        "dir": frontend.dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
        "theme": frontend.theme,
        "issuer": frontend.issuer_display_name,
        "logoURL": frontend.logo_url,
        "extra": frontend.extra,
    })
}

fn oauth2(oauth2: &OAuth2Settings) -> Value {
    json!({
        "grantTypes": oauth2.grant_types,
        "responseTypes": oauth2.response_types,
        "skipApprovalScreen": oauth2.skip_approval_screen,
        "alwaysShowLoginScreen": oauth2.always_show_login_screen,
        "passwordConnector": oauth2.password_connector.clone().unwrap_or_default(),
        "pkce": {
            "enforce": oauth2.pkce_enforce,
            "codeChallengeMethodsSupported": oauth2.pkce_methods,
        },
    })
}

/// (`signingKeys` is printed as `signer.config.keysRotationPeriod`, which
/// replaces it.)
fn expiry(expiry: &ExpirySettings) -> Value {
    let refresh = &expiry.refresh_tokens;
    let optional = |d: Option<Duration>| d.map(go_duration).unwrap_or_default();
    json!({
        "deviceRequests": go_duration(expiry.device_requests),
        "idTokens": go_duration(expiry.id_tokens),
        "authRequests": go_duration(expiry.auth_requests),
        "refreshTokens": {
            "disableRotation": refresh.disable_rotation,
            "reuseInterval": go_duration(refresh.reuse_interval),
            "validIfNotUsedFor": optional(refresh.valid_if_not_used_for),
            "absoluteLifetime": optional(refresh.absolute_lifetime),
        },
    })
}

fn client(client: &Client) -> Value {
    let mut out = json!({
        "id": client.id,
        "secret": if client.secret.is_empty() { "" } else { REDACTED },
        "redirectURIs": client.redirect_uris,
        "trustedPeers": client.trusted_peers,
        "public": client.public,
        "name": client.name,
        "logoURL": client.logo_url,
        "allowedConnectors": client.allowed_connectors,
        "requirePKCE": client.require_pkce,
        "postLogoutRedirectURIs": client.post_logout_redirect_uris,
        "backchannelLogoutURI": client.backchannel_logout_uri,
        "refreshTokenLifetime": match client.refresh_token_lifetime {
            RefreshTokenLifetime::Standalone => "standalone",
            RefreshTokenLifetime::Session => "session",
        },
        "clientCredentialsClaims": { "groups": client.client_credentials_groups },
    });
    if let (Some(list), Some(map)) = (&client.sso_shared_with, out.as_object_mut()) {
        map.insert("ssoSharedWith".into(), json!(list));
    }
    out
}

fn connector(connector: &ConnectorSettings) -> Value {
    // The connector's own serialisation redacts its secrets.
    let redacted = serde_json::to_value(connector).unwrap_or(Value::Null);
    json!({
        "type": connector.kind,
        "id": connector.id,
        "name": connector.name,
        "config": redacted.get("config").cloned().unwrap_or(Value::Null),
        "grantTypes": connector.grant_types,
    })
}

fn password(password: &Password) -> Value {
    json!({
        "email": password.email,
        "hash": REDACTED,
        "username": password.username,
        "name": password.name,
        "preferredUsername": password.preferred_username,
        "emailVerified": password.email_verified,
        "userID": password.user_id,
        "groups": password.groups,
    })
}

fn sessions(sessions: &SessionSettings) -> Value {
    json!({
        "cookieName": sessions.cookie_name,
        "absoluteLifetime": go_duration(sessions.absolute_lifetime),
        "validIfNotUsedFor": go_duration(sessions.valid_if_not_used_for),
        "rememberMeCheckedByDefault": sessions.remember_me_checked_by_default,
        "cookieEncryptionKey": sessions.cookie_encryption_key.as_ref().map_or("", |_| REDACTED),
        "ssoSharedWithDefault": if sessions.sso_shared_with_all_by_default { "all" } else { "none" },
    })
}

/// A duration as the shortest Go duration string that parses back to it:
/// `24h`, `1h30m`, `90s` as `1m30s`, `1.5s`, `300ms`, `0s`.
pub fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let nanos = d.subsec_nanos();
    if d.as_secs() == 0 {
        return match nanos {
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || nanos > 0 {
        let fraction = format!("{nanos:09}");
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            out.push_str(&format!("{s}s"));
        } else {
            out.push_str(&format!("{s}.{fraction}s"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::duration::parse_go_duration;

    #[test]
    fn durations_print_short_and_parse_back() {
        for (d, text) in [
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_micros(7), "7µs"),
            (Duration::from_nanos(3), "3ns"),
            (Duration::ZERO, "0s"),
            (Duration::new(3601, 5), "1h1.000000005s"),
        ] {
            assert_eq!(go_duration(d), text);
            assert_eq!(parse_go_duration(text).unwrap(), d, "{text}");
        }
    }
}
