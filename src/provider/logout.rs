//! `/logout` (OpenID Connect RP-Initiated Logout 1.0) and the issuer's root page.
//!
//! The session to end is always the one the browser's cookie names; a hint never
//! selects it, so a leaked ID token cannot sign its user out elsewhere. Ending it
//! asks for the user's confirmation unless the request proves it speaks for this
//! session: an `id_token_hint` of this session (Dex HEAD), or the confirmation
//! form's own token. Beyond Dex HEAD, a POST without a hint is not enough (Dex
//! relies on `SameSite=Lax` alone), the confirmation keeps
//! `post_logout_redirect_uri` and `state`, and `client_id` may name the client
//! instead of a hint.

use crate::oidc::session::SessionCookie;
use crate::web::{CsrfToken, LogoutPage, LogoutStep};

use super::browser::Verb;
use super::session::{CookieChange, Hint, Presented};
use super::{Outcome, Page, Provider, ProviderError, Reply};

/// `/logout`, as extracted from the request (query and form).
pub struct LogoutRequest<'a> {
    pub verb: Verb,
    pub id_token_hint: &'a str,
    pub client_id: &'a str,
    pub post_logout_redirect_uri: &'a str,
    pub state: &'a str,
    /// The confirmation form's token (POST body only).
    pub csrf: &'a str,
    pub session: Option<&'a SessionCookie>,
}

impl Provider {
    /// `/logout`: validates the request, asks for confirmation when needed, ends
    /// the session and sends the browser on.
    pub async fn logout(&self, request: LogoutRequest<'_>) -> Result<Reply, ProviderError> {
        if self.session_settings().is_none() {
            return Err(super::browser::unknown_resource());
        }
        if request.verb == Verb::Other {
            return Err(ProviderError::page(405, "Method not allowed."));
        }
        let hint = match request.id_token_hint {
            "" => None,
            raw => Some(
                self.verify_hint(raw)
                    .ok_or_else(|| ProviderError::bad_request("Invalid id_token_hint."))?,
            ),
        };
        if request.state.len() > crate::oidc::MAX_STATE_LEN {
            return Err(ProviderError::bad_request(
                "Invalid request: parameter \"state\" is too long.",
            ));
        }
        let redirect = self.post_logout_redirect(&request, hint.as_ref())?;
        // The confirmation form carries the client so the redirect survives it.
        let client_id = hint
            .as_ref()
            .map_or(request.client_id, |h| h.client_id.as_str());
        let Presented {
            session,
            stale_cookie,
        } = self.presented_session(request.session).await?;

        let Some(session) = session else {
            let reply: Reply = match redirect {
                Some(location) => Outcome::Found(location).into(),
                None => Outcome::Page(
                    200,
                    Page::Logout(self.logout_page(LogoutStep::None, "", &request, client_id, "")),
                )
                .into(),
            };
            return Ok(reply.clearing_if(stale_cookie || request.session.is_some()));
        };

        let confirmed = request.verb == Verb::Post
            && CsrfToken::verify(session.secret_hash.as_bytes(), &session.id, request.csrf);
        let speaks_for_session = hint.as_ref().is_some_and(|h| h.matches(&session));
        if !confirmed && !speaks_for_session {
            let csrf = CsrfToken::new(session.secret_hash.as_bytes(), &session.id);
            let page = self.logout_page(
                LogoutStep::Confirm,
                display_name(&session.claims),
                &request,
                client_id,
                csrf.as_str(),
            );
            return Ok(Outcome::Page(200, Page::Logout(page)).into());
        }

        self.end_browser_session(session).await?;
        let outcome = match redirect {
            Some(location) => Outcome::Found(location),
            None => Outcome::Page(
                200,
                Page::Logout(self.logout_page(LogoutStep::Done, "", &request, client_id, "")),
            ),
        };
        Ok(Reply {
            outcome,
            cookie: Some(CookieChange::Clear),
        })
    }

    /// The issuer's root page: who is signed in here, with a sign-out button.
    pub async fn signed_in_page(
        &self,
        cookie: Option<&SessionCookie>,
    ) -> Result<Reply, ProviderError> {
        if self.session_settings().is_none() {
            return Err(ProviderError::page(404, "Not found."));
        }
        let Presented {
            session,
            stale_cookie,
        } = self.presented_session(cookie).await?;
        let empty = LogoutRequest {
            verb: Verb::Get,
            id_token_hint: "",
            client_id: "",
            post_logout_redirect_uri: "",
            state: "",
            csrf: "",
            session: None,
        };
        let page = match &session {
            Some(session) => {
                let csrf = CsrfToken::new(session.secret_hash.as_bytes(), &session.id);
                let name = display_name(&session.claims);
                self.logout_page(LogoutStep::SignedIn, name, &empty, "", csrf.as_str())
            }
            None => self.logout_page(LogoutStep::None, "", &empty, "", ""),
        };
        Ok(Reply::from(Outcome::Page(200, Page::Logout(page))).clearing_if(stale_cookie))
    }

    /// Where to send the browser after the logout, validated before anything
    /// happens (RP-Initiated Logout §3: never redirect to an unregistered URI).
    /// The client is the hint's; `client_id`, when given too, must name the same
    /// one, and may name it alone (beyond Dex HEAD, which needs the hint).
    fn post_logout_redirect(
        &self,
        request: &LogoutRequest<'_>,
        hint: Option<&Hint>,
    ) -> Result<Option<String>, ProviderError> {
        if let Some(hint) = hint
            && !request.client_id.is_empty()
            && request.client_id != hint.client_id
        {
            return Err(ProviderError::bad_request(
                "client_id does not match the client of id_token_hint.",
            ));
        }
        let uri = request.post_logout_redirect_uri;
        if uri.is_empty() {
            return Ok(None);
        }
        let client_id = match hint {
            Some(hint) => hint.client_id.as_str(),
            None if !request.client_id.is_empty() => request.client_id,
            None => {
                return Err(ProviderError::bad_request(
                    "post_logout_redirect_uri requires id_token_hint.",
                ));
            }
        };
        let client = self
            .settings
            .client(client_id)
            .ok_or_else(|| ProviderError::bad_request("Invalid client."))?;
        if !client.post_logout_redirect_uris.iter().any(|u| u == uri) {
            return Err(ProviderError::bad_request(
                "Unregistered post_logout_redirect_uri.",
            ));
        }
        if request.state.is_empty() {
            return Ok(Some(uri.to_owned()));
        }
        let mut url = url::Url::parse(uri)
            .map_err(|_| ProviderError::bad_request("Unregistered post_logout_redirect_uri."))?;
        url.query_pairs_mut().append_pair("state", request.state);
        Ok(Some(url.into()))
    }

    fn logout_page(
        &self,
        step: LogoutStep,
        username: &str,
        request: &LogoutRequest<'_>,
        client_id: &str,
        csrf: &str,
    ) -> LogoutPage {
        LogoutPage {
            step,
            username: username.to_owned(),
            post_url: format!("{}/logout", self.settings.issuer.path_prefix),
            csrf_token: csrf.to_owned(),
            post_logout_redirect_uri: request.post_logout_redirect_uri.to_owned(),
            state: request.state.to_owned(),
            client_id: client_id.to_owned(),
        }
    }
}

/// How the pages name the signed-in user: the email, else the user name.
fn display_name(claims: &crate::storage::Claims) -> &str {
    if claims.email.is_empty() {
        &claims.username
    } else {
        &claims.email
    }
}
