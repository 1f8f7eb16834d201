//! Scope vocabulary and validation (Dex's scope constants and checks in `server/oauth2.go`).

use crate::config::settings::Client;

pub const OPENID: &str = "openid";
pub const OFFLINE_ACCESS: &str = "offline_access";
pub const EMAIL: &str = "email";
pub const PROFILE: &str = "profile";
pub const GROUPS: &str = "groups";
pub const FEDERATED_ID: &str = "federated:id";

const CROSS_CLIENT_PREFIX: &str = "audience:server:client_id:";

/// The scopes Dex recognises besides cross-client audience scopes.
pub const STANDARD_SCOPES: [&str; 6] =
    [OPENID, OFFLINE_ACCESS, EMAIL, PROFILE, GROUPS, FEDERATED_ID];

/// Splits a `scope` parameter on whitespace (extra whitespace tolerated, as Dex).
pub fn parse_scopes(raw: &str) -> Vec<String> {
    raw.split_whitespace().map(str::to_owned).collect()
}

pub fn has_scope(scopes: &[String], scope: &str) -> bool {
    scopes.iter().any(|s| s == scope)
}

/// The peer client id of an `audience:server:client_id:<peer>` scope.
pub fn cross_client_peer(scope: &str) -> Option<&str> {
    scope.strip_prefix(CROSS_CLIENT_PREFIX)
}

/// Whether `client_id` may put `peer_id` into `aud`: the peer is the client itself,
/// or the peer exists and lists the client in `trustedPeers`.
pub fn peer_trusts(clients: &[Client], client_id: &str, peer_id: &str) -> bool {
    if peer_id == client_id {
        return true;
    }
    clients
        .iter()
        .find(|c| c.id == peer_id)
        .is_some_and(|peer| peer.trusted_peers.iter().any(|t| t == client_id))
}

/// Why a scope list was refused; the caller picks the error code (`invalid_scope`
/// at `/auth`, `invalid_request` for the password grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeViolation {
    MissingOpenId,
    Unrecognized(Vec<String>),
    Untrusted(Vec<String>),
}

impl ScopeViolation {
    /// Dex's description text (Go's `%q` formatting of the list).
    pub fn description(&self) -> String {
        match self {
            Self::MissingOpenId => r#"Missing required scope(s) ["openid"]."#.to_owned(),
            Self::Unrecognized(list) => format!("Unrecognized scope(s) {}", go_quote_list(list)),
            Self::Untrusted(list) => {
                format!("Client can't request scope(s) {}", go_quote_list(list))
            }
        }
    }
}

/// Validates requested scopes the way Dex does at `/auth` and for the password
/// grant: each is standard or a cross-client scope whose peer trusts the client;
/// `openid` must be present when `require_openid`. Checks are reported in Dex's
/// order: missing `openid`, then unrecognised, then untrusted.
pub fn check_scopes(
    scopes: &[String],
    client_id: &str,
    clients: &[Client],
    require_openid: bool,
) -> Result<(), ScopeViolation> {
    let mut unrecognized = Vec::new();
    let mut untrusted = Vec::new();
    for scope in scopes {
        if STANDARD_SCOPES.contains(&scope.as_str()) {
            continue;
        }
        match cross_client_peer(scope) {
            None => unrecognized.push(scope.clone()),
            Some(peer) if !peer_trusts(clients, client_id, peer) => untrusted.push(scope.clone()),
            Some(_) => {}
        }
    }
    if require_openid && !has_scope(scopes, OPENID) {
        return Err(ScopeViolation::MissingOpenId);
    }
    if !unrecognized.is_empty() {
        return Err(ScopeViolation::Unrecognized(unrecognized));
    }
    if !untrusted.is_empty() {
        return Err(ScopeViolation::Untrusted(untrusted));
    }
    Ok(())
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(crate) fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%q` of a string (close enough: Rust's debug escaping of a `str`).
pub(crate) fn go_quote(item: &str) -> String {
    format!("{item:?}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::oidc::test_support::clients;

    fn s(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parse_tolerates_extra_whitespace() {
        assert_eq!(
            parse_scopes("  openid\temail  profile "),
            s(&["openid", "email", "profile"])
        );
        assert!(parse_scopes("   ").is_empty());
    }

    #[test]
    fn standard_scopes_pass() {
        let all = s(&[
            "openid",
            "offline_access",
            "email",
            "profile",
            "groups",
            "federated:id",
        ]);
        assert_eq!(check_scopes(&all, "web", &clients(), true), Ok(()));
    }

    #[test]
    fn missing_openid_is_reported_first() {
        let err = check_scopes(&s(&["email", "bogus"]), "web", &clients(), true).unwrap_err();
        assert_eq!(err, ScopeViolation::MissingOpenId);
        assert_eq!(
            err.description(),
            r#"Missing required scope(s) ["openid"]."#
        );
    }

    #[test]
    fn unrecognized_scopes_are_listed_go_style() {
        let err = check_scopes(&s(&["openid", "x", "y"]), "web", &clients(), true).unwrap_err();
        assert_eq!(err.description(), r#"Unrecognized scope(s) ["x" "y"]"#);
    }

    #[test]
    fn cross_client_scope_needs_trust() {
        // "peer" trusts "web"; "public-cli" trusts nobody; "ghost" does not exist.
        let ok = s(&["openid", "audience:server:client_id:peer"]);
        assert_eq!(check_scopes(&ok, "web", &clients(), true), Ok(()));
        let own = s(&["openid", "audience:server:client_id:web"]);
        assert_eq!(check_scopes(&own, "web", &clients(), true), Ok(()));
        let bad = s(&[
            "openid",
            "audience:server:client_id:public-cli",
            "audience:server:client_id:ghost",
        ]);
        let err = check_scopes(&bad, "web", &clients(), true).unwrap_err();
        assert_eq!(
            err.description(),
            r#"Client can't request scope(s) ["audience:server:client_id:public-cli" "audience:server:client_id:ghost"]"#
        );
    }
}
