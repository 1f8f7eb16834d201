//! The device flow's routes (RFC 8628): `/device/code`, the user-code page
//! `/device`, its form target `/device/auth/verify_code`, and the internal
//! redirect target `/device/callback` (`provider::device` has the flow; the
//! `device_code` grant is served at `/token`).

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;

use super::AppState;
use super::browser;
use super::client_ip::ClientIp;
use super::error::{json_no_store, render};
use super::params::Params;
use super::respond::{request_id, respond};
use crate::oidc::OAuthError;
use crate::provider::{DeviceCodeRequest, ProviderError};
use crate::web::CSRF_FIELD;

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(&[prefix, "/device/code"].concat(), any(device_code))
        .route(&[prefix, "/device"].concat(), any(device_page))
        .route(
            &[prefix, "/device/auth/verify_code"].concat(),
            any(verify_code),
        )
        .route(&[prefix, "/device/callback"].concat(), any(device_callback))
}

async fn device_code(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    params: Params,
) -> Response {
    let live = state.live();
    let result = if params.method == Method::POST {
        let request = DeviceCodeRequest {
            authorization: params.header(header::AUTHORIZATION),
            client_id: params.form_get("client_id"),
            client_secret: params.form_get("client_secret"),
            scope: params.form_get("scope"),
            code_challenge: params.form_get("code_challenge"),
            code_challenge_method: params.form_get("code_challenge_method"),
        };
        live.provider.start_device(request, client_ip).await
    } else {
        Err(OAuthError::invalid_request("Invalid device code request type").into())
    };
    match result {
        Ok(body) => json_no_store(StatusCode::OK, body),
        Err(error) => render(error.as_oauth(), &live.templates, request_id(&params)),
    }
}

/// `GET /device`: the user-code form. It makes sure the browser has its browser
/// cookie, which the form's CSRF token is bound to.
async fn device_page(State(state): State<AppState>, params: Params) -> Response {
    let live = state.live();
    if params.method != Method::GET {
        return respond::<crate::provider::Reply>(
            &live,
            &params,
            Err(ProviderError::bad_request(
                "Requested resource does not exist.",
            )),
        );
    }
    let (secret, fresh) = browser::ensure(&params.headers);
    let invalid = params.get("invalid").eq_ignore_ascii_case("true");
    let form = live
        .provider
        .device_form(200, &secret, params.get("user_code"), invalid);
    let mut response = respond(&live, &params, Ok(form));
    if fresh {
        browser::set_cookie(&state.settings, &mut response, &secret);
    }
    response
}

async fn verify_code(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    params: Params,
) -> Response {
    let live = state.live();
    let result = if params.method == Method::POST {
        let browser = browser::presented(&params.headers);
        live.provider
            .verify_user_code(
                browser.as_ref(),
                params.form_get(CSRF_FIELD),
                params.form_get("user_code"),
                client_ip,
            )
            .await
    } else {
        Err(ProviderError::bad_request(
            "Requested resource does not exist.",
        ))
    };
    respond(&live, &params, result)
}

async fn device_callback(State(state): State<AppState>, params: Params) -> Response {
    let live = state.live();
    let result = if params.method != Method::GET {
        Err(ProviderError::bad_request("Method not supported"))
    } else if !params.get("error").is_empty() {
        // The upstream text is never echoed back.
        tracing::info!(
            error = params.get("error"),
            "device login ended with an error"
        );
        Err(ProviderError::bad_request(
            "Authorization failed. Please try again.",
        ))
    } else {
        let browser = browser::presented(&params.headers);
        live.provider
            .complete_device(params.get("state"), params.get("code"), browser.as_ref())
            .await
    };
    respond(&live, &params, result)
}
