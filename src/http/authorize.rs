//! The browser flow's routes: `/auth` (connector picker), `/auth/{connector}`
//! (request validation, hand-off to the connector), `/auth/{connector}/login`
//! (password form), `/callback[/{connector}]` (upstream return) and `/approval`
//! (consent). Each extracts the request and calls the provider
//! (`provider::browser` has the flow).

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::any;

use super::AppState;
use super::browser;
use super::client_ip::ClientIp;
use super::error::render;
use super::params::Params;
use super::respond::respond;
use crate::provider::{
    ApprovalSubmission, AuthorizeStart, CallbackRequest, PasswordSubmission, ProviderError, Verb,
};
use crate::web::CSRF_FIELD;

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(&[prefix, "/auth"].concat(), any(choose_connector))
        .route(
            &[prefix, "/auth/{connector}"].concat(),
            any(connector_login),
        )
        .route(
            &[prefix, "/auth/{connector}/login"].concat(),
            any(password_login),
        )
        .route(&[prefix, "/callback"].concat(), any(callback))
        .route(
            &[prefix, "/callback/{connector}"].concat(),
            any(callback_for_connector),
        )
        .route(&[prefix, "/approval"].concat(), any(approval))
}

async fn choose_connector(State(state): State<AppState>, params: Params) -> Response {
    let live = state.live();
    let (session, unreadable) = session_cookie(&state, &params);
    let result = match readable(&params) {
        Ok(()) => {
            live.provider
                .choose_connector(&params.pairs, session.as_ref())
                .await
        }
        Err(error) => Err(error),
    };
    respond(&live, &params, result.map(|r| r.clearing_if(unreadable)))
}

/// The session cookie of the request, and whether it was unreadable (and is to
/// be cleared).
pub(super) fn session_cookie(
    state: &AppState,
    params: &Params,
) -> (Option<crate::oidc::session::SessionCookie>, bool) {
    match browser::presented_session(&params.headers, &state.settings) {
        Ok(cookie) => (cookie, false),
        Err(()) => (None, true),
    }
}

async fn connector_login(
    State(state): State<AppState>,
    ConnectorId(connector_id): ConnectorId,
    ClientIp(client): ClientIp,
    params: Params,
) -> Response {
    let live = state.live();
    let (secret, fresh) = browser::ensure(&params.headers);
    let (session, unreadable) = session_cookie(&state, &params);
    let result = match readable(&params) {
        Ok(()) => {
            let start = AuthorizeStart {
                connector_id: &connector_id,
                params: &params.pairs,
                query: &params.query_pairs,
                verb: verb(&params.method),
                browser: &secret,
                session: session.as_ref(),
                client,
            };
            live.provider.start_login(start).await
        }
        Err(error) => Err(error),
    };
    let mut response = respond(&live, &params, result.map(|r| r.clearing_if(unreadable)));
    if fresh {
        browser::set_cookie(&state.settings, &mut response, &secret);
    }
    response
}

async fn password_login(
    State(state): State<AppState>,
    ConnectorId(connector_id): ConnectorId,
    ClientIp(client): ClientIp,
    params: Params,
) -> Response {
    let live = state.live();
    let (session, _) = session_cookie(&state, &params);
    let result = match readable(&params) {
        Ok(()) => {
            let browser = browser::presented(&params.headers);
            // Credentials from the form body only: a query string ends up in logs.
            let step = PasswordSubmission {
                connector_id: &connector_id,
                state: params.get("state"),
                back: params.get("back"),
                verb: verb(&params.method),
                browser: browser.as_ref(),
                csrf: params.form_get(CSRF_FIELD),
                username: params.form_get("login"),
                password: params.form_get("password"),
                remember_me: params.form_get("remember_me") == "on",
                session: session.as_ref(),
                client,
            };
            live.provider.password_login(step).await
        }
        Err(error) => Err(error),
    };
    respond(&live, &params, result)
}

async fn callback(State(state): State<AppState>, params: Params) -> Response {
    let live = state.live();
    let result = handle_callback(&state, None, &params).await;
    respond(&live, &params, result)
}

async fn callback_for_connector(
    State(state): State<AppState>,
    ConnectorId(connector_id): ConnectorId,
    params: Params,
) -> Response {
    let live = state.live();
    let result = handle_callback(&state, Some(&connector_id), &params).await;
    respond(&live, &params, result)
}

async fn handle_callback(
    state: &AppState,
    connector_id: Option<&str>,
    params: &Params,
) -> Result<crate::provider::Reply, ProviderError> {
    let live = state.live();
    readable(params)?;
    if params.method != Method::GET {
        return Err(ProviderError::bad_request("Method not supported"));
    }
    let browser = browser::presented(&params.headers);
    let (session, _) = session_cookie(state, params);
    let request = CallbackRequest {
        connector_id,
        state: params.get("state"),
        query: &params.query_pairs,
        browser: browser.as_ref(),
        session: session.as_ref(),
    };
    live.provider.callback(request).await
}

async fn approval(State(state): State<AppState>, params: Params) -> Response {
    let live = state.live();
    let result = match readable(&params) {
        Ok(()) => {
            let browser = browser::presented(&params.headers);
            let step = ApprovalSubmission {
                req: params.get("req"),
                hmac: params.get("hmac"),
                verb: verb(&params.method),
                browser: browser.as_ref(),
                csrf: params.form_get(CSRF_FIELD),
                approved: params.form_get("approval") == "approve",
            };
            live.provider.approval(step).await
        }
        Err(error) => Err(error),
    };
    respond(&live, &params, result)
}

pub(super) fn verb(method: &Method) -> Verb {
    match *method {
        Method::GET => Verb::Get,
        Method::POST => Verb::Post,
        _ => Verb::Other,
    }
}

/// Parameters that could not be decoded get a page, not axum's plain text.
fn readable(params: &Params) -> Result<(), ProviderError> {
    match params.malformed {
        Some(why) => {
            tracing::debug!(why, "unreadable request parameters");
            Err(ProviderError::bad_request(
                "Invalid request: its parameters could not be read.",
            ))
        }
        None => Ok(()),
    }
}

/// The `{connector}` path segment. A segment axum cannot decode (not UTF-8) is
/// an unknown connector, answered with our error page rather than axum's text.
struct ConnectorId(String);

impl FromRequestParts<AppState> for ConnectorId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(ConnectorId(id)),
            Err(_) => Err(render(
                crate::provider::unknown_resource(),
                &state.live().templates,
                "-",
            )),
        }
    }
}
