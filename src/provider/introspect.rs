//! `/token/introspect` (RFC 7662, for authenticated clients, about their own
//! tokens) and `/userinfo` (the verified bearer token's claims, as Dex).

use crate::oidc::grants::check_token_claims;
use crate::oidc::introspect::{IntrospectContext, classify, introspect};
use crate::oidc::revoke::is_revoked;
use crate::oidc::{ErrorCode, OAuthError};

use super::Provider;

impl Provider {
    /// Introspects the token in the form `body` for the client authenticated by
    /// `authorization` or the body's `client_id`/`client_secret` (like Dex, Go's
    /// `PostForm`: nothing from the query string). `Ok(None)`: inactive
    /// (`{"active":false}`); `Ok(Some(json))`: the active token's description.
    pub async fn introspect(
        &self,
        authorization: Option<&str>,
        body: &[(String, String)],
    ) -> Result<Option<String>, OAuthError> {
        let field = |name: &str| {
            body.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let client = self.authenticate(
            authorization,
            field("client_id").unwrap_or_default(),
            field("client_secret").unwrap_or_default(),
        )?;
        if body.is_empty() {
            return Err(OAuthError::invalid_request(
                "The POST body can not be empty.",
            ));
        }
        let Some(token) = field("token") else {
            return Err(OAuthError::invalid_request(
                "The POST body doesn't contain 'token' parameter.",
            ));
        };
        let hint = field("token_type_hint").unwrap_or_default();
        let kind = classify(token);
        if !hint.is_empty() && hint != kind.as_str() {
            tracing::debug!(hint, kind = kind.as_str(), "token type hint does not match");
        }
        let token = token.to_owned();
        let storage = self.storage.clone();
        let settings = self.settings.clone();
        let keyset = self.keys.keyset().await.map_err(|error| {
            tracing::error!(%error, "no signing key");
            OAuthError::server_error()
        })?;
        let now = self.now();
        let result = crate::blocking::run(move || {
            let ctx = IntrospectContext {
                storage: storage.as_ref(),
                settings: settings.as_ref(),
                verifier: keyset.as_ref(),
                now,
            };
            introspect(&ctx, &client, &token)
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "introspection task failed");
            OAuthError::server_error()
        })??;
        match result {
            Some(active) => serde_json::to_string(&active).map(Some).map_err(|error| {
                tracing::error!(%error, "cannot serialize introspection");
                OAuthError::server_error()
            }),
            None => Ok(None),
        }
    }

    /// `/userinfo`: the claims of a valid access token (signature, issuer,
    /// expiry), as Dex returns them. Beyond Dex: a revoked token (RFC 7009) is
    /// 401 `invalid_token` (RFC 6750 §3.1).
    pub async fn userinfo(&self, bearer_token: &str) -> Result<serde_json::Value, OAuthError> {
        let invalid = || OAuthError::new(ErrorCode::AccessDenied, 403, "Invalid bearer token.");
        // Before the first key exists no token of ours can.
        let Some(keyset) = self.keys.loaded() else {
            return Err(invalid());
        };
        let claims = match keyset.verify_jwt(bearer_token) {
            Ok(claims) => serde_json::Value::Object(claims),
            Err(error) => {
                tracing::debug!(%error, "userinfo token rejected");
                return Err(invalid());
            }
        };
        if let Err(error) = check_token_claims(&claims, &self.settings.issuer.url, self.now()) {
            tracing::debug!(%error, "userinfo token rejected");
            return Err(error.to_oauth());
        }
        let serde_json::Value::Object(claims) = claims else {
            return Err(invalid());
        };
        let (revoked, claims) = self
            .with_storage(move |storage| {
                let revoked = is_revoked(storage, &claims).map_err(|error| {
                    tracing::error!(%error, "failed to check the revoked access tokens");
                    OAuthError::storage(&error)
                })?;
                Ok::<_, OAuthError>((revoked, claims))
            })
            .await?;
        if revoked {
            return Err(OAuthError::new(
                ErrorCode::InvalidToken,
                401,
                "The access token has been revoked.",
            ));
        }
        Ok(serde_json::Value::Object(claims))
    }
}
