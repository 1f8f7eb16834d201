//! `/token`: the authorization_code, refresh_token, password,
//! client_credentials and token-exchange grants (the device_code grant is
//! [`Provider::poll_device_token`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::Client;
use crate::connector::{Connector, ConnectorError, Identity, Scopes};
use crate::oidc::client_credentials::{
    CLIENT_CREDENTIALS_GRANT, client_credentials_grant, client_credentials_scopes,
};
use crate::oidc::grants::{self, CodeExchange, PasswordLogin, RefreshPlan};
use crate::oidc::token_exchange::{self, TOKEN_EXCHANGE_GRANT};
use crate::oidc::{OAuthError, TokenResponse};
use crate::storage::Claims;
use crate::throttle::ClientKey;

use super::limits::PasswordLoginError;
use super::{Provider, ProviderError};

/// A token request's fields, all from the form body (RFC 6749 §2.3.1 forbids
/// credentials in the URI; Dex reads `PostFormValue`). Absent fields are `""`.
#[derive(Default)]
pub struct TokenRequest<'a> {
    pub grant_type: &'a str,
    /// The `Authorization` header, for `client_secret_basic`.
    pub authorization: Option<&'a str>,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub code_verifier: &'a str,
    pub refresh_token: &'a str,
    pub scope: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub nonce: &'a str,
    /// Token exchange (RFC 8693; `connector_id` is Dex's extension).
    pub connector_id: &'a str,
    pub subject_token: &'a str,
    pub subject_token_type: &'a str,
    pub requested_token_type: &'a str,
}

/// Serialises upstream refreshes per (user, connector): upstreams such as
/// Forgejo rotate their refresh token and accept each one once, so two of our
/// refresh tokens for one user must not spend the same upstream token at once.
///
/// The lock orders one user's refreshes and re-reads the stored upstream token
/// under it; `connector::upstream::SingleFlight` is keyed by the upstream token
/// itself, so a caller that still holds a just-spent one (a request retried
/// within seconds) gets the rotated result rather than an upstream refusal.
#[derive(Default)]
pub struct RefreshLocks {
    locks: Mutex<HashMap<OfflineSessionKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// (user id, connector id)
type OfflineSessionKey = (String, String);

impl RefreshLocks {
    fn lock_for(&self, user_id: &str, connector_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds, so the map stays small.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks
            .entry((user_id.to_owned(), connector_id.to_owned()))
            .or_default()
            .clone()
    }
}

impl Provider {
    /// `/token` for the grants that authenticate the client.
    pub async fn token(
        &self,
        request: TokenRequest<'_>,
        client_ip: ClientKey,
    ) -> Result<TokenResponse, ProviderError> {
        grants::check_grant_type(&self.settings, request.grant_type)?;
        let client = self.authenticate(
            request.authorization,
            request.client_id,
            request.client_secret,
        )?;
        match request.grant_type {
            "authorization_code" => Ok(self.exchange_code(&request, client).await?),
            "refresh_token" => Ok(self.refresh(&request, client).await?),
            "password" => self.password_grant(&request, client, client_ip).await,
            CLIENT_CREDENTIALS_GRANT => Ok(self.client_credentials(&request, client).await?),
            TOKEN_EXCHANGE_GRANT => Ok(self.token_exchange(&request, client).await?),
            _ => Err(OAuthError::unsupported_grant_type().into()),
        }
    }

    async fn client_credentials(
        &self,
        request: &TokenRequest<'_>,
        client: Client,
    ) -> Result<TokenResponse, OAuthError> {
        let scopes = client_credentials_scopes(&self.settings, &client, request.scope)?;
        let nonce = request.nonce.to_owned();
        self.with_grant(move |ctx| client_credentials_grant(ctx, &client, &scopes, &nonce))
            .await
    }

    /// Token exchange in Dex HEAD's order: the connector gate (when a
    /// `connector_id` is given), the subject token's type and presence, whether
    /// the connector can verify tokens at all, the verification (any failure is
    /// 401 `access_denied`), then the requested token type and minting.
    async fn token_exchange(
        &self,
        request: &TokenRequest<'_>,
        client: Client,
    ) -> Result<TokenResponse, OAuthError> {
        let connector_id = request.connector_id;
        let entry = if connector_id.is_empty() {
            None
        } else {
            let entry = self.connectors.get(connector_id);
            token_exchange::check_connector(
                &client,
                connector_id,
                entry.map(|e| e.grant_types.as_slice()),
                TOKEN_EXCHANGE_GRANT,
            )?;
            entry
        };
        let kind =
            token_exchange::check_subject(request.subject_token_type, request.subject_token)?;
        let Some((entry, verifier)) =
            entry.and_then(|e| e.connector.token_identity().map(|v| (e, v)))
        else {
            return Err(token_exchange::connector_missing());
        };
        let identity = match verifier.token_identity(kind, request.subject_token).await {
            Ok(identity) => identity,
            Err(error) => {
                tracing::info!(connector = %entry.id, client_id = %client.id, %error, "token exchange: subject token refused");
                return Err(token_exchange::subject_rejected());
            }
        };
        tracing::info!(
            connector = %entry.id,
            client_id = %client.id,
            user_id = %identity.user_id,
            "token exchange successful"
        );
        let requested = request.requested_token_type.to_owned();
        let scope = request.scope.to_owned();
        let connector_id = entry.id.clone();
        self.with_grant(move |ctx| {
            let exchange = token_exchange::Exchange {
                requested_token_type: &requested,
                scope: &scope,
                connector_id: &connector_id,
                claims: identity.claims(),
            };
            token_exchange::exchange_grant(ctx, &client, &exchange)
        })
        .await
    }

    async fn exchange_code(
        &self,
        request: &TokenRequest<'_>,
        client: Client,
    ) -> Result<TokenResponse, OAuthError> {
        let code = request.code.to_owned();
        let redirect_uri = request.redirect_uri.to_owned();
        let code_verifier = request.code_verifier.to_owned();
        let connectors = self.connectors.clone();
        self.with_grant(move |ctx| {
            let exchange = CodeExchange {
                code: &code,
                redirect_uri: &redirect_uri,
                code_verifier: &code_verifier,
                refreshing_connectors: connectors.refreshing_ids(),
            };
            grants::exchange_code(ctx, &client, &exchange)
        })
        .await
    }

    async fn refresh(
        &self,
        request: &TokenRequest<'_>,
        client: Client,
    ) -> Result<TokenResponse, OAuthError> {
        let (presented, scope) = (request.refresh_token, request.scope);
        let plan = self.begin_refresh(&client, presented, scope).await?;
        if !plan.needs_upstream() {
            return self.commit_refresh(plan, None).await;
        }
        // Re-validate under the per-user lock so the upstream credentials are the
        // latest (a concurrent refresh may have rotated them meanwhile).
        let lock = self
            .refresh_locks
            .lock_for(&plan.claims.user_id, &plan.connector_id);
        let _guard = lock.lock().await;
        let plan = self.begin_refresh(&client, presented, scope).await?;
        if !plan.needs_upstream() {
            return self.commit_refresh(plan, None).await;
        }
        let Some(entry) = self.connectors.get(&plan.connector_id) else {
            return Err(OAuthError::invalid_request(
                "Requested connector does not exist.",
            ));
        };
        let identity = Identity::from_claims(&plan.claims, plan.connector_data.clone());
        let scopes = Scopes::from_requested(&plan.scopes);
        let refreshed = match entry.connector.refresh(&scopes, identity).await {
            Ok(identity) => identity,
            // The upstream said no for good: the client must send the user to log in.
            Err(error @ ConnectorError::Refresh(_)) => {
                tracing::info!(connector = %entry.id, %error, "upstream refused the refresh");
                return Err(OAuthError::upstream_refresh_failed());
            }
            // Anything else (network, timeout, upstream 5xx or garbage) may pass:
            // nothing was rotated, so the client can retry with the same token.
            Err(error) => {
                tracing::warn!(connector = %entry.id, %error, "upstream refresh failed");
                return Err(OAuthError::upstream_unavailable());
            }
        };
        let claims = refreshed.claims();
        self.commit_refresh(plan, Some((claims, refreshed.connector_data)))
            .await
    }

    async fn begin_refresh(
        &self,
        client: &Client,
        presented: &str,
        scope: &str,
    ) -> Result<RefreshPlan, OAuthError> {
        let client = client.clone();
        let presented = presented.to_owned();
        let scope = scope.to_owned();
        self.with_grant(move |ctx| grants::begin_refresh(ctx, &client, &presented, &scope))
            .await
    }

    async fn commit_refresh(
        &self,
        plan: RefreshPlan,
        refreshed: Option<(Claims, Option<Vec<u8>>)>,
    ) -> Result<TokenResponse, OAuthError> {
        self.with_grant(move |ctx| grants::commit_refresh(ctx, &plan, refreshed))
            .await
    }

    async fn password_grant(
        &self,
        request: &TokenRequest<'_>,
        client: Client,
        client_ip: ClientKey,
    ) -> Result<TokenResponse, ProviderError> {
        let scopes = grants::password_scopes(&self.settings, &client, request.scope)?;
        let connector_id = self
            .settings
            .oauth2
            .password_connector
            .clone()
            .unwrap_or_default();
        let entry = self
            .connectors
            .get(&connector_id)
            .ok_or_else(|| OAuthError::invalid_request("Requested connector does not exist."))?;
        let Connector::Password(connector) = &entry.connector else {
            return Err(OAuthError::invalid_request(
                "Requested password connector does not correct type.",
            )
            .into());
        };
        let identity = match self
            .limits
            .password_login(
                connector.as_ref(),
                &Scopes::from_requested(&scopes),
                client_ip,
                request.username,
                request.password,
                self.now(),
            )
            .await
        {
            Ok(Some(identity)) => identity,
            Ok(None) => return Err(OAuthError::invalid_user_credentials().into()),
            Err(PasswordLoginError::Refused(refused)) => return Err(refused),
            Err(PasswordLoginError::Connector(error)) => {
                tracing::error!(connector = %entry.id, %error, "password grant login failed");
                return Err(OAuthError::password_login_failed().into());
            }
        };
        let nonce = request.nonce.to_owned();
        let supports_refresh = connector.supports_refresh();
        self.with_grant(move |ctx| {
            let login = PasswordLogin {
                scopes: &scopes,
                nonce: &nonce,
                connector_id: &connector_id,
                claims: identity.claims(),
                connector_data: identity.connector_data.clone(),
                connector_supports_refresh: supports_refresh,
            };
            grants::password_grant(ctx, &client, login)
        })
        .await
        .map_err(ProviderError::from)
    }
}
