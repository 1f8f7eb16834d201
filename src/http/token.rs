//! `/token`: authorization_code, refresh_token and password grants (the
//! device_code grant is handed to [`super::device::device_token`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};

use super::AppState;
use super::client_ip::{ClientIp, ClientKey};
use super::error::HttpError;
use super::error::no_store;
use super::limits::PasswordLoginError;
use super::params::Params;
use crate::connector::{Connector, ConnectorError, Identity, Scopes};
use crate::oidc::client_auth::authenticate_client;
use crate::oidc::token::{self as grants, CodeExchange, GrantContext, PasswordLogin, RefreshPlan};
use crate::oidc::{OAuthError, TokenResponse};

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new().route(&[prefix, "/token"].concat(), any(token))
}

/// Serialises upstream refreshes per (user, connector): upstreams such as
/// Forgejo rotate their refresh token and accept each one once, so two of our
/// refresh tokens for one user must not spend the same upstream token at once.
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

async fn token(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    params: Params,
) -> Response {
    // The device grant needs no client authentication and answers stored JSON.
    if params.method == Method::POST
        && params.form_get("grant_type") == crate::oidc::device::DEVICE_CODE_GRANT
    {
        return super::device::device_token(&state, &params).await;
    }
    match grant(&state, &params, client_ip).await {
        Ok(tokens) => {
            let mut response = (StatusCode::OK, Json(tokens)).into_response();
            no_store(&mut response);
            response
        }
        Err(error) => error.as_oauth().into_response_with(&state.templates),
    }
}

async fn grant(
    state: &AppState,
    params: &Params,
    client_ip: ClientKey,
) -> Result<TokenResponse, HttpError> {
    if params.method != Method::POST {
        return Err(OAuthError::invalid_request("method not allowed").into());
    }
    if let Some(why) = params.malformed {
        return Err(
            OAuthError::invalid_request(format!("Could not read the request: {why}.")).into(),
        );
    }
    let grant_type = params.form_get("grant_type");
    grants::check_grant_type(&state.settings, grant_type)?;
    let client = authenticate_client(
        &state.settings.clients,
        params.header(header::AUTHORIZATION),
        params.form_get("client_id"),
        params.form_get("client_secret"),
    )?
    .clone();
    match grant_type {
        "authorization_code" => Ok(authorization_code(state, params, client).await?),
        "refresh_token" => Ok(refresh_token(state, params, client).await?),
        "password" => password(state, params, client, client_ip).await,
        _ => Err(OAuthError::unsupported_grant_type().into()),
    }
}

/// Runs a grant function with storage, settings, the signer and `now`, on the
/// blocking pool (SQLite and RSA signatures are blocking work).
async fn with_context<T, F>(state: &AppState, call: F) -> Result<T, OAuthError>
where
    T: Send + 'static,
    F: FnOnce(&GrantContext<'_>) -> Result<T, OAuthError> + Send + 'static,
{
    let storage = state.storage.clone();
    let settings = state.settings.clone();
    let keyset = state.keys.keyset();
    let now = (state.clock)();
    super::run_blocking(move || {
        let ctx = GrantContext {
            storage: storage.as_ref(),
            settings: settings.as_ref(),
            signer: keyset.as_ref(),
            now,
        };
        call(&ctx)
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "token task failed");
        OAuthError::server_error()
    })?
}

async fn authorization_code(
    state: &AppState,
    params: &Params,
    client: crate::config::Client,
) -> Result<TokenResponse, OAuthError> {
    let code = params.form_get("code").to_owned();
    let redirect_uri = params.form_get("redirect_uri").to_owned();
    let code_verifier = params.form_get("code_verifier").to_owned();
    let connectors = state.connectors.clone();
    with_context(state, move |ctx| {
        let request = CodeExchange {
            code: &code,
            redirect_uri: &redirect_uri,
            code_verifier: &code_verifier,
            refreshing_connectors: connectors.refreshing_ids(),
        };
        grants::exchange_code(ctx, &client, &request)
    })
    .await
}

async fn refresh_token(
    state: &AppState,
    params: &Params,
    client: crate::config::Client,
) -> Result<TokenResponse, OAuthError> {
    let presented = params.form_get("refresh_token").to_owned();
    let scope = params.form_get("scope").to_owned();
    let plan = begin_refresh(state, &client, &presented, &scope).await?;
    if !plan.needs_upstream() {
        return commit_refresh(state, plan, None).await;
    }
    // Re-validate under the per-user lock so the upstream credentials are the
    // latest (a concurrent refresh may have rotated them meanwhile).
    let lock = state
        .refresh_locks
        .lock_for(&plan.claims.user_id, &plan.connector_id);
    let _guard = lock.lock().await;
    let plan = begin_refresh(state, &client, &presented, &scope).await?;
    if !plan.needs_upstream() {
        return commit_refresh(state, plan, None).await;
    }
    let Some(entry) = state.connectors.get(&plan.connector_id) else {
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
        // Anything else (network, timeout, upstream 5xx) may pass: nothing was
        // rotated, so the client can retry with the same refresh token.
        Err(error) => {
            tracing::warn!(connector = %entry.id, %error, "upstream refresh failed");
            return Err(OAuthError::server_error());
        }
    };
    let claims = refreshed.claims();
    commit_refresh(state, plan, Some((claims, refreshed.connector_data))).await
}

async fn begin_refresh(
    state: &AppState,
    client: &crate::config::Client,
    presented: &str,
    scope: &str,
) -> Result<RefreshPlan, OAuthError> {
    let client = client.clone();
    let presented = presented.to_owned();
    let scope = scope.to_owned();
    with_context(state, move |ctx| {
        grants::begin_refresh(ctx, &client, &presented, &scope)
    })
    .await
}

async fn commit_refresh(
    state: &AppState,
    plan: RefreshPlan,
    refreshed: Option<(crate::storage::Claims, Option<Vec<u8>>)>,
) -> Result<TokenResponse, OAuthError> {
    with_context(state, move |ctx| {
        grants::commit_refresh(ctx, &plan, refreshed)
    })
    .await
}

async fn password(
    state: &AppState,
    params: &Params,
    client: crate::config::Client,
    client_ip: ClientKey,
) -> Result<TokenResponse, HttpError> {
    let scopes = grants::password_scopes(&state.settings, &client, params.form_get("scope"))?;
    let connector_id = state
        .settings
        .oauth2
        .password_connector
        .clone()
        .unwrap_or_default();
    let entry = state
        .connectors
        .get(&connector_id)
        .ok_or_else(|| OAuthError::invalid_request("Requested connector does not exist."))?;
    let Connector::Password(connector) = &entry.connector else {
        return Err(OAuthError::invalid_request(
            "Requested password connector does not correct type.",
        )
        .into());
    };
    let identity = match state
        .limits
        .password_login(
            connector.as_ref(),
            &Scopes::from_requested(&scopes),
            client_ip,
            params.form_get("username"),
            params.form_get("password"),
            (state.clock)(),
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
    let nonce = params.form_get("nonce").to_owned();
    let supports_refresh = connector.supports_refresh();
    with_context(state, move |ctx| {
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
    .map_err(HttpError::from)
}
