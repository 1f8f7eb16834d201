//! RFC 8693 token exchange as Dex serves it (v2.45 `handleTokenExchange`; Dex
//! HEAD `server/grants/tokenexchange.go` adds the connector checks): a client
//! presents a token its upstream issued (`subject_token`) and names the connector
//! that can verify it (`connector_id`, a Dex extension); it gets one token of
//! ours for that user in `access_token`. The connector's verification happens
//! between [`check_subject`] and [`exchange_grant`], outside this module.

use super::check_param_len;
use super::error::{ErrorCode, OAuthError};
use super::grants::GrantContext;
use super::mint::{TokenResponse, TokenSubject};
use super::scopes;
use crate::config::settings::Client;
use crate::connector::SubjectTokenType;
use crate::storage::Claims;

pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_ID: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Longest accepted `subject_token`, in bytes. Dex has no limit; ID tokens with
/// many group claims run to a few KiB, far below this.
pub const MAX_SUBJECT_TOKEN_LEN: usize = 16 * 1024;

/// Dex HEAD's connector gate of the token grants, before the grant's own checks:
/// the client's `allowedConnectors` (400 `invalid_grant`), the connector's
/// existence (400 `invalid_request`), its `grantTypes` (400 `invalid_request`).
/// `connector` is the named connector's `grantTypes`, `None` when there is no
/// such connector.
pub fn check_connector(
    client: &Client,
    connector_id: &str,
    connector: Option<&[String]>,
    grant_type: &str,
) -> Result<(), OAuthError> {
    if !super::authorize::connector_allowed(client, connector_id) {
        return Err(OAuthError::invalid_grant(
            "Connector not allowed for this client.",
        ));
    }
    let Some(grant_types) = connector else {
        return Err(connector_missing());
    };
    if !grant_types.is_empty() && !grant_types.iter().any(|g| g == grant_type) {
        return Err(OAuthError::invalid_request(
            "Requested connector does not support this grant type.",
        ));
    }
    Ok(())
}

/// 400 `invalid_request` "Requested connector does not exist.": also Dex's answer
/// for a connector that cannot verify tokens, and for no `connector_id`.
pub fn connector_missing() -> OAuthError {
    OAuthError::invalid_request("Requested connector does not exist.")
}

/// The subject token's type and presence, in Dex's order: an unknown type is 400
/// `request_not_supported`, an empty token 400 `invalid_request`. Beyond Dex: a
/// token over [`MAX_SUBJECT_TOKEN_LEN`] is refused before any upstream call.
pub fn check_subject(
    subject_token_type: &str,
    subject_token: &str,
) -> Result<SubjectTokenType, OAuthError> {
    let kind = match subject_token_type {
        TOKEN_TYPE_ID => SubjectTokenType::IdToken,
        TOKEN_TYPE_ACCESS => SubjectTokenType::AccessToken,
        _ => {
            return Err(OAuthError::new(
                ErrorCode::RequestNotSupported,
                400,
                "Invalid subject_token_type.",
            ));
        }
    };
    if subject_token.is_empty() {
        return Err(OAuthError::invalid_request("Missing subject_token"));
    }
    if subject_token.len() > MAX_SUBJECT_TOKEN_LEN {
        return Err(OAuthError::invalid_request(format!(
            "Parameter \"subject_token\" is too long (at most {MAX_SUBJECT_TOKEN_LEN} bytes)."
        )));
    }
    Ok(kind)
}

/// A subject token the connector refused: 401 `access_denied` without a
/// description, as Dex (the reason is logged, never sent).
pub fn subject_rejected() -> OAuthError {
    OAuthError::new(ErrorCode::AccessDenied, 401, "")
}

/// What the exchange mints for the verified user.
pub struct Exchange<'a> {
    /// `requested_token_type` as sent (empty means an access token).
    pub requested_token_type: &'a str,
    /// `scope` as sent: passed through unvalidated as Dex does (claims only for
    /// known scopes; a cross-client scope whose peer does not trust the client
    /// fails minting with 500).
    pub scope: &'a str,
    pub connector_id: &'a str,
    pub claims: Claims,
}

/// Mints the requested token (checked only now, after verification, as Dex):
/// `access_token` holds it whatever its type, `issued_token_type` names it; no
/// refresh token, no ID token beside it, no nonce. An unknown
/// `requested_token_type` is 400 `request_not_supported`.
pub fn exchange_grant(
    ctx: &GrantContext<'_>,
    client: &Client,
    exchange: &Exchange<'_>,
) -> Result<TokenResponse, OAuthError> {
    check_param_len("scope", exchange.scope)?;
    let requested = match exchange.requested_token_type {
        "" | TOKEN_TYPE_ACCESS => TOKEN_TYPE_ACCESS,
        TOKEN_TYPE_ID => TOKEN_TYPE_ID,
        _ => {
            return Err(OAuthError::new(
                ErrorCode::RequestNotSupported,
                400,
                "Invalid requested_token_type.",
            ));
        }
    };
    let scopes = scopes::parse_scopes(exchange.scope);
    let subject = TokenSubject {
        client_id: &client.id,
        claims: &exchange.claims,
        scopes: &scopes,
        connector_id: exchange.connector_id,
        nonce: "",
        auth_time: None,
        // No browser session behind these tokens (as Dex HEAD).
        session_id: "",
    };
    let minter = ctx.minter();
    let token = if requested == TOKEN_TYPE_ID {
        minter.id_token(&subject, ctx.now, None, None)?
    } else {
        minter.access_token(&subject, ctx.now)?
    };
    let mut response = TokenResponse::new(&token, None, None, ctx.now);
    response.issued_token_type = Some(requested.to_owned());
    Ok(response)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::oidc::test_support::{TestSigner, clients, jwt_payload, settings, t0, user_claims};
    use crate::storage::memory::MemoryStorage;
    use serde_json::json;

    fn web() -> Client {
        clients().into_iter().find(|c| c.id == "web").unwrap()
    }

    fn exchange(requested: &str, scope: &str) -> Result<TokenResponse, OAuthError> {
        let settings = settings();
        let storage = MemoryStorage::new();
        let signer = TestSigner::default();
        let ctx = GrantContext {
            storage: &storage,
            settings: &settings,
            signer: &signer,
            now: t0(),
        };
        let exchange = Exchange {
            requested_token_type: requested,
            scope,
            connector_id: "upstream",
            claims: user_claims(),
        };
        exchange_grant(&ctx, &web(), &exchange)
    }

    #[test]
    fn subject_checks_in_dex_order() {
        let e = check_subject("", "").unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str(), e.description.as_str()),
            (400, "request_not_supported", "Invalid subject_token_type.")
        );
        let e = check_subject("urn:ietf:params:oauth:token-type:jwt", "t").unwrap_err();
        assert_eq!(e.code, ErrorCode::RequestNotSupported);
        let e = check_subject(TOKEN_TYPE_ID, "").unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str(), e.description.as_str()),
            (400, "invalid_request", "Missing subject_token")
        );
        let e = check_subject(TOKEN_TYPE_ID, &"x".repeat(MAX_SUBJECT_TOKEN_LEN + 1)).unwrap_err();
        assert_eq!((e.status, e.code), (400, ErrorCode::InvalidRequest));
        assert_eq!(
            check_subject(TOKEN_TYPE_ACCESS, "t").unwrap(),
            SubjectTokenType::AccessToken
        );
        assert_eq!(
            check_subject(TOKEN_TYPE_ID, &"x".repeat(MAX_SUBJECT_TOKEN_LEN)).unwrap(),
            SubjectTokenType::IdToken
        );
    }

    #[test]
    fn connector_gate_in_dex_head_order() {
        let mut limited = web();
        limited.allowed_connectors = vec!["ldap".into()];
        let e = check_connector(&limited, "ghost", None, TOKEN_EXCHANGE_GRANT).unwrap_err();
        assert_eq!(
            (e.code, e.description.as_str()),
            (
                ErrorCode::InvalidGrant,
                "Connector not allowed for this client."
            )
        );
        let e = check_connector(&web(), "ghost", None, TOKEN_EXCHANGE_GRANT).unwrap_err();
        assert_eq!(e.description, "Requested connector does not exist.");
        let only_code = vec!["authorization_code".to_owned()];
        let e = check_connector(&web(), "up", Some(&only_code), TOKEN_EXCHANGE_GRANT).unwrap_err();
        assert_eq!(
            (e.code, e.description.as_str()),
            (
                ErrorCode::InvalidRequest,
                "Requested connector does not support this grant type."
            )
        );
        assert!(check_connector(&web(), "up", Some(&[]), TOKEN_EXCHANGE_GRANT).is_ok());
        let with_te = vec![TOKEN_EXCHANGE_GRANT.to_owned()];
        assert!(check_connector(&web(), "up", Some(&with_te), TOKEN_EXCHANGE_GRANT).is_ok());
    }

    #[test]
    fn access_token_by_default_id_token_on_request() {
        let resp = exchange("", "openid email").unwrap();
        assert_eq!(resp.issued_token_type.as_deref(), Some(TOKEN_TYPE_ACCESS));
        assert!(resp.id_token.is_none() && resp.refresh_token.is_none());
        assert_eq!(resp.expires_in, 86_400);
        let token = jwt_payload(&resp.access_token);
        assert_eq!(
            token["sub"],
            json!(crate::oidc::subject::encode_subject(
                "0-385-28089-0",
                "upstream"
            ))
        );
        assert_eq!(token["aud"], json!("web"));
        assert_eq!(token["email"], json!("kilgore@kilgore.trout"));
        assert!(token.get("at_hash").is_some());
        assert!(token.get("nonce").is_none());

        let resp = exchange(TOKEN_TYPE_ID, "openid").unwrap();
        assert_eq!(resp.issued_token_type.as_deref(), Some(TOKEN_TYPE_ID));
        let token = jwt_payload(&resp.access_token);
        assert!(token.get("at_hash").is_none());
        let body = serde_json::to_value(&resp).unwrap();
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "access_token",
                "issued_token_type",
                "token_type",
                "expires_in"
            ]
        );
    }

    #[test]
    fn bad_requested_type_and_untrusted_peer() {
        let e = exchange(TOKEN_TYPE_ID.trim_end_matches("id_token"), "").unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str(), e.description.as_str()),
            (
                400,
                "request_not_supported",
                "Invalid requested_token_type."
            )
        );
        // Unknown scopes pass through; an untrusted peer fails minting as in Dex.
        assert!(exchange("", "openid whatever").is_ok());
        let e = exchange("", "audience:server:client_id:public-cli").unwrap_err();
        assert_eq!((e.status, e.code), (500, ErrorCode::ServerError));
    }
}
