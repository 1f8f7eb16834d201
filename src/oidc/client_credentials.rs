//! The `client_credentials` grant (RFC 6749 §4.4) as Dex HEAD serves it
//! (`server/grants/clientcredentials.go`): a confidential client gets tokens for
//! itself, with no user and no connector involved.

use super::check_param_len;
use super::error::{ErrorCode, OAuthError};
use super::grants::{GrantContext, issue_tokens};
use super::mint::{TokenResponse, TokenSubject};
use super::scopes::{self, cross_client_peer, go_quote_list, peer_trusts};
use crate::config::settings::{Client, Settings};
use crate::storage::Claims;

pub const CLIENT_CREDENTIALS_GRANT: &str = "client_credentials";

/// Dex HEAD's scope policy for this grant, checked after client authentication:
/// `offline_access` and `federated:id` are refused outright (first one found, in
/// request order); then unknown scopes, then cross-client scopes whose peer does
/// not trust the client. All 400 `invalid_scope`; `openid` is not required.
pub fn client_credentials_scopes(
    settings: &Settings,
    client: &Client,
    scope_param: &str,
) -> Result<Vec<String>, OAuthError> {
    check_param_len("scope", scope_param)?;
    let requested = scopes::parse_scopes(scope_param);
    let mut unrecognized = Vec::new();
    let mut untrusted = Vec::new();
    for scope in &requested {
        match scope.as_str() {
            scopes::OFFLINE_ACCESS => {
                return Err(OAuthError::invalid_scope(
                    "client_credentials grant does not support offline_access scope.",
                ));
            }
            scopes::FEDERATED_ID => {
                return Err(OAuthError::invalid_scope(
                    "client_credentials grant does not support federated:id scope.",
                ));
            }
            scopes::OPENID | scopes::EMAIL | scopes::PROFILE | scopes::GROUPS => {}
            other => match cross_client_peer(other) {
                None => unrecognized.push(scope.clone()),
                Some(peer) if !peer_trusts(&settings.clients, &client.id, peer) => {
                    untrusted.push(scope.clone());
                }
                Some(_) => {}
            },
        }
    }
    if !unrecognized.is_empty() {
        return Err(OAuthError::invalid_scope(format!(
            "Unrecognized scope(s) {}",
            go_quote_list(&unrecognized)
        )));
    }
    if !untrusted.is_empty() {
        return Err(OAuthError::invalid_scope(format!(
            "Client can't request scope(s) {}",
            go_quote_list(&untrusted)
        )));
    }
    Ok(requested)
}

/// Issues the client's own tokens: an access token, an ID token only with
/// `openid`, never a refresh token (RFC 6749 §4.4.3). The subject is the client
/// id with an empty connector id (`a` ⇒ `sub` `CgFh`); `profile` gives `name` and
/// `preferred_username` = the client's name, `groups` the client's
/// `clientCredentialsClaims.groups`, `email` only `email_verified: false`. The
/// token request's `nonce` is echoed. Public clients are refused with 400
/// `unauthorized_client`.
pub fn client_credentials_grant(
    ctx: &GrantContext<'_>,
    client: &Client,
    scopes: &[String],
    nonce: &str,
) -> Result<TokenResponse, OAuthError> {
    if client.public {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            400,
            "Public clients cannot use client_credentials grant.",
        ));
    }
    check_param_len("nonce", nonce)?;
    let mut claims = Claims {
        user_id: client.id.clone(),
        ..Claims::default()
    };
    if scopes::has_scope(scopes, scopes::PROFILE) {
        claims.username = client.name.clone();
        claims.preferred_username = client.name.clone();
    }
    if scopes::has_scope(scopes, scopes::GROUPS) {
        claims.groups = client.client_credentials_groups.clone();
    }
    let subject = TokenSubject {
        client_id: &client.id,
        claims: &claims,
        scopes,
        // Connectors cannot have an empty id, so this subject is never a user's.
        connector_id: "",
        nonce,
        auth_time: None,
        // No browser session behind these tokens (as Dex HEAD).
        session_id: "",
    };
    issue_tokens(ctx, &subject, None, None, None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::oidc::test_support::{TestSigner, jwt_payload, settings, t0};
    use crate::storage::memory::MemoryStorage;
    use serde_json::json;

    fn client(settings: &Settings, id: &str) -> Client {
        settings
            .clients
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .unwrap()
    }

    fn grant(
        settings: &Settings,
        client: &Client,
        scope: &str,
        nonce: &str,
    ) -> Result<TokenResponse, OAuthError> {
        let storage = MemoryStorage::default();
        let signer = TestSigner::default();
        let scopes = client_credentials_scopes(settings, client, scope)?;
        let ctx = GrantContext {
            storage: &storage,
            settings,
            signer: &signer,
            now: t0(),
        };
        client_credentials_grant(&ctx, client, &scopes, nonce)
    }

    fn err(result: Result<TokenResponse, OAuthError>) -> (u16, &'static str, String) {
        let e = result.unwrap_err();
        (e.status, e.code.as_str(), e.description)
    }

    #[test]
    fn scope_errors_use_dex_texts() {
        let s = settings();
        let web = client(&s, "web");
        assert_eq!(
            err(grant(&s, &web, "openid offline_access", "")),
            (
                400,
                "invalid_scope",
                "client_credentials grant does not support offline_access scope.".into()
            )
        );
        assert_eq!(
            err(grant(&s, &web, "bogus federated:id", "")),
            (
                400,
                "invalid_scope",
                "client_credentials grant does not support federated:id scope.".into()
            )
        );
        assert_eq!(
            err(grant(&s, &web, "openid x y", "")),
            (
                400,
                "invalid_scope",
                r#"Unrecognized scope(s) ["x" "y"]"#.into()
            )
        );
        assert_eq!(
            err(grant(&s, &web, "audience:server:client_id:public-cli", "")),
            (
                400,
                "invalid_scope",
                r#"Client can't request scope(s) ["audience:server:client_id:public-cli"]"#.into()
            )
        );
    }

    #[test]
    fn public_client_is_unauthorized_after_scope_checks() {
        let s = settings();
        let cli = client(&s, "public-cli");
        assert_eq!(
            err(grant(&s, &cli, "openid", "")),
            (
                400,
                "unauthorized_client",
                "Public clients cannot use client_credentials grant.".into()
            )
        );
        assert_eq!(
            err(grant(&s, &cli, "offline_access", "")).1,
            "invalid_scope"
        );
    }

    #[test]
    fn tokens_carry_the_client_as_subject() {
        let mut s = settings();
        s.clients
            .iter_mut()
            .find(|c| c.id == "web")
            .unwrap()
            .client_credentials_groups = vec!["robots".into()];
        let web = client(&s, "web");
        let resp = grant(&s, &web, "openid email profile groups", "n-1").unwrap();
        assert!(resp.refresh_token.is_none());
        let id = jwt_payload(resp.id_token.as_ref().unwrap());
        assert_eq!(
            id["sub"],
            json!(crate::oidc::subject::encode_subject("web", ""))
        );
        assert_eq!(id["aud"], json!("web"));
        assert_eq!(id["nonce"], json!("n-1"));
        assert_eq!(id["name"], json!("web"));
        assert_eq!(id["preferred_username"], json!("web"));
        assert_eq!(id["groups"], json!(["robots"]));
        assert_eq!(id["email_verified"], json!(false));
        for absent in ["email", "auth_time", "sid", "federated_claims", "c_hash"] {
            assert!(id.get(absent).is_none(), "{absent}");
        }
        let access = jwt_payload(&resp.access_token);
        assert_eq!(access["sub"], id["sub"]);

        // Without openid: an access token only.
        let resp = grant(&s, &web, "groups", "").unwrap();
        assert!(resp.id_token.is_none() && resp.refresh_token.is_none());
        assert_eq!(jwt_payload(&resp.access_token)["groups"], json!(["robots"]));
        let resp = grant(&s, &web, "", "").unwrap();
        assert!(resp.id_token.is_none());
    }

    #[test]
    fn subject_encodes_client_id_with_empty_connector() {
        assert_eq!(crate::oidc::subject::encode_subject("a", ""), "CgFh");
        assert_eq!(
            crate::oidc::subject::encode_subject("my-client", ""),
            "CglteS1jbGllbnQ"
        );
    }
}
