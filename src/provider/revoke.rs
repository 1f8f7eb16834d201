//! `/token/revoke` (RFC 7009): see [`crate::oidc::revoke`].

use crate::oidc::OAuthError;
use crate::oidc::introspect::IntrospectContext;
use crate::oidc::revoke::{Revocation, deny_grant, revoke};

use super::Provider;

/// Parameters that must appear at most once (RFC 6749 §3.2).
const SINGLE_PARAMS: [&str; 4] = ["token", "token_type_hint", "client_id", "client_secret"];

impl Provider {
    /// Revokes the token in the form `body` for the client authenticated as at
    /// `/token` (`authorization` header or the body's credentials). `Ok(())` is
    /// RFC 7009's 200, also for a token that is unknown, invalid or already
    /// revoked. Another client's token is never revoked: a confidential caller
    /// gets 400 `invalid_request`, a public one 200 (anyone can name a public
    /// client, so its answer must not reveal whether a token is valid).
    pub async fn revoke(
        &self,
        authorization: Option<&str>,
        body: &[(String, String)],
    ) -> Result<(), OAuthError> {
        let field = |name: &str| {
            body.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        for name in SINGLE_PARAMS {
            if body.iter().filter(|(k, _)| k == name).count() > 1 {
                return Err(OAuthError::invalid_request(format!(
                    "Parameter \"{name}\" is included more than once."
                )));
            }
        }
        let client = self.authenticate(
            authorization,
            field("client_id").unwrap_or_default(),
            field("client_secret").unwrap_or_default(),
        )?;
        let Some(token) = field("token").filter(|t| !t.is_empty()) else {
            return Err(OAuthError::invalid_request("Required param: token."));
        };
        // The token's shape decides its kind; the hint is only logged.
        let hint = field("token_type_hint").unwrap_or_default();
        let token = token.to_owned();
        let storage = self.storage.clone();
        let settings = self.settings.clone();
        let keyset = self.keys.keyset().await.map_err(|error| {
            tracing::error!(%error, "no signing key");
            OAuthError::server_error()
        })?;
        let now = self.now();
        let revoking = client.clone();
        let revocation = crate::blocking::run(move || {
            let ctx = IntrospectContext {
                storage: storage.as_ref(),
                settings: settings.as_ref(),
                verifier: keyset.as_ref(),
                now,
            };
            revoke(&ctx, &revoking, &token)
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "revocation task failed");
            OAuthError::server_error()
        })??;
        match revocation {
            Revocation::NotFound => {
                tracing::debug!(client_id = %client.id, hint, "nothing to revoke");
                Ok(())
            }
            Revocation::AccessToken => {
                tracing::info!(client_id = %client.id, "access token revoked");
                Ok(())
            }
            Revocation::RefreshFamily { subject, client_id } => {
                tracing::info!(%client_id, "refresh token revoked");
                self.deny_grant_after_revocation(subject, client_id).await
            }
            Revocation::OtherClient { owner } => {
                tracing::warn!(
                    client_id = %client.id,
                    owner = %owner,
                    public = client.public,
                    "refused to revoke another client's token"
                );
                if client.public {
                    Ok(())
                } else {
                    Err(OAuthError::invalid_request(
                        "The client is not authorized to revoke the presented token.",
                    ))
                }
            }
        }
    }

    /// Denies the revoked family's access tokens once more, with a `now` read
    /// after the family was deleted: a refresh that rotated it just before the
    /// deletion minted its access token before this instant.
    async fn deny_grant_after_revocation(
        &self,
        subject: String,
        client_id: String,
    ) -> Result<(), OAuthError> {
        let settings = self.settings.clone();
        let now = self.now();
        self.with_storage(move |storage| {
            deny_grant(storage, &settings, &subject, &client_id, now).map_err(|error| {
                tracing::error!(%error, "failed to deny a revoked grant's access tokens");
                OAuthError::storage(&error)
            })
        })
        .await
    }
}
