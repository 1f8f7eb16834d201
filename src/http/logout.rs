//! `/logout` (RP-Initiated Logout) and the issuer's root page ("signed in as …,
//! sign out"). Each extracts the request and calls the provider
//! (`provider::logout` has the rules).

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::any;

use super::AppState;
use super::authorize::{session_cookie, verb};
use super::params::Params;
use super::respond::respond;
use crate::provider::LogoutRequest;
use crate::web::CSRF_FIELD;

/// Routes at their full paths under the issuer's path `prefix`.
pub fn routes(prefix: &str) -> Router<AppState> {
    let mut router = Router::new()
        .route(&[prefix, "/logout"].concat(), any(logout))
        .route(&[prefix, "/"].concat(), any(signed_in));
    if !prefix.is_empty() {
        router = router.route(prefix, any(signed_in));
    }
    router
}

async fn logout(State(state): State<AppState>, params: Params) -> Response {
    let live = state.live();
    let (session, unreadable) = session_cookie(&state, &params);
    let request = LogoutRequest {
        verb: verb(&params.method),
        id_token_hint: params.get("id_token_hint"),
        client_id: params.get("client_id"),
        post_logout_redirect_uri: params.get("post_logout_redirect_uri"),
        state: params.get("state"),
        csrf: params.form_get(CSRF_FIELD),
        session: session.as_ref(),
    };
    let result = match params.malformed {
        Some(_) => Err(crate::provider::ProviderError::bad_request(
            "Invalid request: its parameters could not be read.",
        )),
        None => live.provider.logout(request).await,
    };
    respond(&live, &params, result.map(|r| r.clearing_if(unreadable)))
}

async fn signed_in(State(state): State<AppState>, params: Params) -> Response {
    let live = state.live();
    let (session, unreadable) = session_cookie(&state, &params);
    let result = live.provider.signed_in_page(session.as_ref()).await;
    respond(&live, &params, result.map(|r| r.clearing_if(unreadable)))
}
