//! The browser flow: choosing a connector, starting a login, the password form,
//! the upstream's callback and the approval (consent) step.

use crate::connector::{Connector, ConnectorEntry, ConnectorError, Identity, Scopes};
use crate::oidc::authorize::{
    self as flow, AuthorizeParams, AuthorizeResponse, ValidatedAuthorization,
};
use crate::oidc::binding::{self, BrowserSecret};
use crate::oidc::error::{ErrorCode, RedirectError};
use crate::oidc::grants::GrantContext;
use crate::oidc::session::{self as rules, NoReuse, ReuseRequest, SessionCookie};
use crate::storage::{AuthRequest, BrowserSession, BrowserSessionWrite, StorageError};
use crate::throttle::ClientKey;
use crate::web::{ApprovalPage, ConnectorLink, CsrfToken, LoginPage, OobPage, PasswordPage};

use super::limits::PasswordLoginError;
use super::session::{
    CookieChange, InteractiveLoginWrite, Presented, finish_interactive_login, granted_scopes,
    store_consent,
};
use super::{Outcome, Page, Provider, ProviderError, Reply};

type StepResult = Result<Reply, ProviderError>;

/// The request method of a browser step, as far as the flow cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Post,
    Other,
}

/// `/auth/{connector}`: an authorization request handed to a connector.
pub struct AuthorizeStart<'a> {
    pub connector_id: &'a str,
    /// Every parameter (form body first, then query).
    pub params: &'a [(String, String)],
    /// The query string's parameters only (kept in the "back" link).
    pub query: &'a [(String, String)],
    pub verb: Verb,
    pub browser: &'a BrowserSecret,
    pub session: Option<&'a SessionCookie>,
    pub client: ClientKey,
}

/// `/auth/{connector}/login`: the password form, shown (GET) or submitted (POST).
pub struct PasswordSubmission<'a> {
    pub connector_id: &'a str,
    /// The auth request id.
    pub state: &'a str,
    pub back: &'a str,
    pub verb: Verb,
    pub browser: Option<&'a BrowserSecret>,
    pub csrf: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    /// The "keep me signed in" checkbox was ticked.
    pub remember_me: bool,
    pub session: Option<&'a SessionCookie>,
    pub client: ClientKey,
}

/// `/callback[/{connector}]`: the upstream sends the browser back.
pub struct CallbackRequest<'a> {
    /// The connector named in the path, if any.
    pub connector_id: Option<&'a str>,
    /// The auth request id.
    pub state: &'a str,
    /// The query string as the upstream sent it.
    pub query: &'a [(String, String)],
    pub browser: Option<&'a BrowserSecret>,
    pub session: Option<&'a SessionCookie>,
}

/// `/approval`: the consent page, shown (GET) or answered (POST).
pub struct ApprovalSubmission<'a> {
    pub req: &'a str,
    pub hmac: &'a str,
    pub verb: Verb,
    pub browser: Option<&'a BrowserSecret>,
    pub csrf: &'a str,
    pub approved: bool,
}

impl Provider {
    /// `/auth`: sends the browser to the one usable connector, to the connector of
    /// its session (Dex HEAD), or lists them.
    pub async fn choose_connector(
        &self,
        params: &[(String, String)],
        session: Option<&SessionCookie>,
    ) -> StepResult {
        let get = |name: &str| first(params, name);
        let client_id = get("client_id");
        let client = self.settings.client(client_id);
        // Connectors this client may use (all when the client is unknown: the
        // request is validated once a connector is chosen, as in Dex), and whose
        // `grantTypes` allow the grant the request implies (Dex HEAD).
        let grant =
            flow::implied_grant_type(get("response_type").split_whitespace(), get("redirect_uri"));
        let usable: Vec<&ConnectorEntry> = self
            .connectors
            .iter()
            .filter(|entry| client.is_none_or(|c| flow::connector_allowed(c, &entry.id)))
            .filter(|entry| {
                entry.grant_types.is_empty() || entry.grant_types.iter().any(|g| g == grant)
            })
            .collect();
        if usable.is_empty() {
            return Err(ProviderError::bad_request(
                "No connectors available for this client.",
            ));
        }
        let forwarded: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "connector_id")
            .cloned()
            .collect();
        let requested = get("connector_id");
        if !requested.is_empty() {
            if !usable.iter().any(|e| e.id == requested) {
                return Err(ProviderError::bad_request(
                    "Connector ID does not match a valid Connector",
                ));
            }
            return Ok(Outcome::Found(self.connector_path(requested, &forwarded)).into());
        }
        if let [only] = usable.as_slice()
            && !self.settings.oauth2.always_show_login_screen
        {
            return Ok(Outcome::Found(self.connector_path(&only.id, &forwarded)).into());
        }
        let mut stale = false;
        if self.session_settings().is_some() {
            // With several connectors the request is validated here, so that a
            // silent request can be answered without showing the list.
            let request = AuthorizeParams::from_pairs(params.iter().map(|(k, v)| (k, v)));
            let ids: Vec<&str> = self.connectors.iter().map(|e| e.id.as_str()).collect();
            let validated = flow::validate_authorize_request(&request, &self.settings, &ids)?;
            let Presented {
                session,
                stale_cookie,
            } = self.presented_session(session).await?;
            stale = stale_cookie;
            // Beyond Dex HEAD: `alwaysShowLoginScreen` does not stop a silent
            // (`prompt=none`) request from using the session.
            let list_anyway = validated.prompt.select_account
                || (self.settings.oauth2.always_show_login_screen && !validated.prompt.none);
            if let Some(session) = session.filter(|_| !list_anyway)
                && usable.iter().any(|e| e.id == session.connector_id)
            {
                return Ok(
                    Outcome::Found(self.connector_path(&session.connector_id, &forwarded)).into(),
                );
            }
            if validated.prompt.none {
                return Err(login_required(&validated, "User not authenticated"));
            }
        }
        let mut connectors: Vec<ConnectorLink> = usable
            .iter()
            .map(|entry| ConnectorLink {
                id: entry.id.clone(),
                name: entry.name.clone(),
                kind: entry.kind.clone(),
                url: self.connector_path(&entry.id, &forwarded),
            })
            .collect();
        connectors.sort_by_key(|link| link.name.to_lowercase());
        Ok(
            Reply::from(Outcome::Page(200, Page::Login(LoginPage { connectors })))
                .clearing_if(stale),
        )
    }

    /// `/auth/{connector}`: validates the authorization request; logs it in from
    /// the browser's session when the session rules allow (single sign-on), else
    /// stores it bound to this browser and hands the browser to the connector.
    pub async fn start_login(&self, start: AuthorizeStart<'_>) -> StepResult {
        let request = AuthorizeParams::from_pairs(start.params.iter().map(|(k, v)| (k, v)));
        let ids: Vec<&str> = self.connectors.iter().map(|e| e.id.as_str()).collect();
        let validated = flow::validate_authorize_request(&request, &self.settings, &ids)?;
        let Some(entry) = self.connectors.get(start.connector_id) else {
            return Err(unknown_resource());
        };
        if !entry.grant_types.is_empty()
            && !entry
                .grant_types
                .iter()
                .any(|g| g == validated.implied_grant_type())
        {
            return Err(ProviderError::bad_request(
                "Requested connector does not support this grant type.",
            ));
        }
        if start.verb != Verb::Get {
            return Err(ProviderError::bad_request("Unsupported request method."));
        }
        // Checked even with sessions off, as Dex HEAD.
        let hint = match validated.id_token_hint.as_str() {
            "" => None,
            raw => Some(self.verify_hint(raw).ok_or_else(|| {
                redirect_error(
                    &validated,
                    ErrorCode::InvalidRequest,
                    "Invalid id_token_hint.",
                )
            })?),
        };
        let mut stale = false;
        let mut other_user = false;
        if let Some(sessions) = self.session_settings() {
            let presented = self.presented_session(start.session).await?;
            stale = presented.stale_cookie;
            if let Some(session) = presented.session.filter(|_| !validated.prompt.login) {
                let reuse = ReuseRequest {
                    client_id: &validated.client_id,
                    connector_id: &entry.id,
                    hint_subject: hint.as_ref().map(|h| h.subject.as_str()),
                    max_age: validated.max_age,
                };
                match rules::reuse(
                    sessions,
                    &self.settings.clients,
                    &session,
                    &reuse,
                    self.now(),
                ) {
                    Ok(joins) => {
                        return self
                            .login_from_session(&start, entry, &validated, session, joins)
                            .await;
                    }
                    Err(why) => {
                        other_user = why == NoReuse::OtherUser;
                        tracing::debug!(?why, "browser session not reused");
                    }
                }
            }
        }
        if validated.prompt.none {
            // Beyond Dex HEAD, which shows the login page when sessions are off:
            // a silent request never gets UI (OpenID Connect Core §3.1.2.1).
            let why = if other_user {
                "id_token_hint does not match authenticated user"
            } else {
                "User not authenticated"
            };
            return Err(login_required(&validated, why));
        }
        let now = self.now();
        self.limits.create_request(start.client, now)?;
        let settings = self.settings.clone();
        let path_connector = start.connector_id.to_owned();
        let binding = start.browser.binding();
        let auth_request = self
            .with_storage(move |s| {
                flow::create_auth_request(s, &settings, &validated, &path_connector, &binding, now)
                    .map_err(ProviderError::from)
            })
            .await?;

        let outcome = match &entry.connector {
            Connector::Callback(connector) => {
                let scopes = Scopes::from_requested(&auth_request.scopes);
                let callback_url = self.settings.issuer.endpoint("/callback");
                connector
                    .prepare()
                    .await
                    .map_err(|error| connector_failure(entry, &error))?;
                let (url, connector_data) = connector
                    .login_url(&scopes, &callback_url, &auth_request.id)
                    .map_err(|error| connector_failure(entry, &error))?;
                if connector_data.is_some() {
                    let id = auth_request.id.clone();
                    self.with_storage(move |s| {
                        flow::set_connector_data(s, &id, connector_data)
                            .map_err(|error| ProviderError::storage(&error))
                    })
                    .await?;
                }
                Outcome::Found(url)
            }
            Connector::Password(_) => {
                let back = if self.connectors.len() > 1 {
                    format!(
                        "{}/auth?{}",
                        self.settings.issuer.path_prefix,
                        encode_query(start.query)
                    )
                } else {
                    String::new()
                };
                Outcome::Found(self.password_form_path(&entry.id, &back, &auth_request.id))
            }
        };
        Ok(Reply::from(outcome).clearing_if(stale))
    }

    /// Logs an authorization request in from the browser's session: the
    /// session's identity, `auth_time` its last interactive login, no connector
    /// involved. Approval is still asked unless skipped or already granted; a
    /// silent request that needs it gets `consent_required`. The login, the
    /// session's activity and, without an approval page, the code commit once.
    async fn login_from_session(
        &self,
        start: &AuthorizeStart<'_>,
        entry: &ConnectorEntry,
        validated: &ValidatedAuthorization,
        session: BrowserSession,
        joins: bool,
    ) -> StepResult {
        self.limits.create_request(start.client, self.now())?;
        let login = SessionLogin {
            validated: validated.clone(),
            connector_id: entry.id.clone(),
            supports_refresh: entry.connector.supports_refresh(),
            binding: start.browser.binding(),
            session,
            joins,
        };
        let sid = login.session.id.clone();
        let finished = self
            .with_grant(move |ctx| finish_login_from_session(ctx, login))
            .await?;
        tracing::info!(%sid, client_id = %validated.client_id, sso = joins, "login from browser session");
        Ok(match finished {
            flow::LoginFinished::Approval(url) => Outcome::SeeOther(url),
            flow::LoginFinished::Response(response) => response_outcome(response),
        }
        .into())
    }

    /// `/auth/{connector}/login`: shows the password form (GET) or checks the
    /// credentials it posts (POST, counted against the password limits).
    pub async fn password_login(&self, step: PasswordSubmission<'_>) -> StepResult {
        let Some(entry) = self.connectors.get(step.connector_id) else {
            return Err(unknown_resource());
        };
        let Connector::Password(connector) = &entry.connector else {
            return Err(unknown_resource());
        };
        let auth_request = self.load_auth_request(step.state).await?;
        if auth_request.connector_id != entry.id {
            return Err(unknown_resource());
        }
        same_browser(&auth_request, step.browser)?;
        let csrf = CsrfToken::new(&auth_request.hmac_key, &auth_request.id);
        let back = safe_back_link(&self.settings.issuer.path_prefix, step.back);
        let post_url = self.password_form_path(
            &entry.id,
            back.as_deref().unwrap_or_default(),
            &auth_request.id,
        );
        let page = |username: &str, invalid: bool| {
            Page::Password(PasswordPage {
                post_url: post_url.clone(),
                prompt: connector.prompt().to_owned(),
                username: username.to_owned(),
                invalid,
                back_link: back.clone(),
                csrf_token: csrf.as_str().to_owned(),
                remember_me: self
                    .session_settings()
                    .map(|s| s.remember_me_checked_by_default),
            })
        };

        match step.verb {
            Verb::Get => Ok(Outcome::Page(200, page("", false)).into()),
            Verb::Post => {
                if !CsrfToken::verify(&auth_request.hmac_key, &auth_request.id, step.csrf) {
                    return Err(invalid_form_token());
                }
                let scopes = Scopes::from_requested(&auth_request.scopes);
                let identity = match self
                    .limits
                    .password_login(
                        connector.as_ref(),
                        &scopes,
                        step.client,
                        step.username,
                        step.password,
                        self.now(),
                    )
                    .await
                {
                    Ok(Some(identity)) => identity,
                    Ok(None) => return Ok(Outcome::Page(401, page(step.username, true)).into()),
                    Err(PasswordLoginError::Refused(refused)) => return Err(refused),
                    Err(PasswordLoginError::Connector(error)) => {
                        tracing::error!(connector = %entry.id, %error, "password login failed");
                        return Err(ProviderError::page(
                            500,
                            "Login error. Please contact your administrator or try again later.",
                        ));
                    }
                };
                let login = InteractiveLogin {
                    supports_refresh: connector.supports_refresh(),
                    session: step.session,
                    remember_me: step.remember_me,
                };
                self.finish_login(&auth_request, identity, login).await
            }
            Verb::Other => Err(ProviderError::bad_request("Unsupported request method.")),
        }
    }

    /// `/callback[/{connector}]`: completes the login with the upstream's answer.
    pub async fn callback(&self, request: CallbackRequest<'_>) -> StepResult {
        if request.state.is_empty() {
            return Err(ProviderError::bad_request("User session error."));
        }
        let auth_request = match self.load_auth_request(request.state).await {
            Ok(r) => r,
            Err(ProviderError::Page { status: 400, .. }) => return Err(unknown_resource()),
            Err(e) => return Err(e),
        };
        if request
            .connector_id
            .is_some_and(|id| id != auth_request.connector_id)
        {
            return Err(unknown_resource());
        }
        let Some(entry) = self.connectors.get(&auth_request.connector_id) else {
            return Err(unknown_resource());
        };
        let Connector::Callback(connector) = &entry.connector else {
            return Err(unknown_resource());
        };
        // Before the upstream is asked anything: the code in this URL may have
        // been made for somebody else's login.
        same_browser(&auth_request, request.browser)?;
        let scopes = Scopes::from_requested(&auth_request.scopes);
        let identity = connector
            .handle_callback(
                &scopes,
                auth_request.connector_data.as_deref(),
                request.query,
            )
            .await
            .map_err(|error| connector_failure(entry, &error))?;
        let login = InteractiveLogin {
            supports_refresh: connector.supports_refresh(),
            session: request.session,
            // Callback connectors show no checkbox (Dex HEAD).
            remember_me: self
                .session_settings()
                .is_some_and(|s| s.remember_me_checked_by_default),
        };
        self.finish_login(&auth_request, identity, login).await
    }

    /// `/approval`: shows the consent page (GET) or records the answer (POST).
    pub async fn approval(&self, step: ApprovalSubmission<'_>) -> StepResult {
        let req = step.req.to_owned();
        let hmac = step.hmac.to_owned();
        let auth_request = self
            .with_storage(move |s| {
                flow::load_for_approval(s, &req, &hmac).map_err(ProviderError::from)
            })
            .await?;
        same_browser(&auth_request, step.browser)?;
        match step.verb {
            Verb::Get => {
                let client_name = self
                    .settings
                    .client(&auth_request.client_id)
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| auth_request.client_id.clone());
                let page = ApprovalPage {
                    client_name,
                    username: auth_request.claims.username.clone(),
                    scopes: auth_request.scopes.clone(),
                    post_url: flow::approval_url(&self.settings, &auth_request),
                    csrf_token: CsrfToken::new(&auth_request.hmac_key, &auth_request.id)
                        .as_str()
                        .to_owned(),
                };
                Ok(Outcome::Page(200, Page::Approval(page)).into())
            }
            Verb::Post => {
                if !CsrfToken::verify(&auth_request.hmac_key, &auth_request.id, step.csrf) {
                    return Err(invalid_form_token());
                }
                if step.approved {
                    if self.session_settings().is_some() {
                        let request = auth_request.clone();
                        let now = self.now();
                        self.with_storage(move |s| {
                            store_consent(
                                s,
                                &request.claims.user_id,
                                &request.connector_id,
                                &request.client_id,
                                &request.scopes,
                                now,
                            )
                            .map_err(|e| ProviderError::storage(&e))
                        })
                        .await?;
                    }
                    self.issue(&auth_request, true).await
                } else {
                    let id = auth_request.id.clone();
                    let location = self
                        .with_storage(move |s| {
                            flow::reject_approval(s, &id).map_err(ProviderError::from)
                        })
                        .await?;
                    Ok(Outcome::SeeOther(location).into())
                }
            }
            Verb::Other => Err(ProviderError::bad_request("Unsupported request method.")),
        }
    }

    /// Records an interactive login (and the browser session it starts or
    /// renews), then shows the approval page or answers the client: one commit.
    async fn finish_login(
        &self,
        auth_request: &AuthRequest,
        identity: Identity,
        login: InteractiveLogin<'_>,
    ) -> StepResult {
        let write = InteractiveLoginWrite {
            request: auth_request.clone(),
            claims: identity.claims(),
            connector_data: identity.connector_data,
            supports_refresh: login.supports_refresh,
            presented: self.presented_session(login.session).await?.session,
        };
        let done = self
            .with_grant(move |ctx| finish_interactive_login(ctx, write))
            .await?;
        if done.ended_other_session {
            // Its back-channel logouts are queued: deliver them now rather than
            // at the next poll. (Waking on every login would cost a storage
            // round trip per login for nothing.)
            self.backchannel.wake();
        }
        let cookie = done.cookie.and_then(|cookie| {
            let sessions = self.session_settings()?;
            Some(CookieChange::Set {
                value: cookie.encode(sessions.cookie_encryption_key.as_deref()),
                max_age: login.remember_me.then_some(sessions.absolute_lifetime),
            })
        });
        let mut reply: Reply = match done.finished {
            flow::LoginFinished::Approval(url) => Outcome::SeeOther(url),
            flow::LoginFinished::Response(response) => response_outcome(response),
        }
        .into();
        reply.cookie = cookie;
        Ok(reply)
    }

    /// Answers the client: the code (or tokens) in a redirect, or the OOB page.
    /// With `touch_session`, the browser session that logged the request in
    /// counts it as activity (after the approval page, which may have taken a
    /// while).
    async fn issue(&self, auth_request: &AuthRequest, touch_session: bool) -> StepResult {
        let id = auth_request.id.clone();
        let response = self
            .with_grant(move |ctx| {
                flow::issue_response(ctx.storage, ctx.settings, ctx.signer, &id, ctx.now)
                    .map_err(ProviderError::from)
            })
            .await?;
        if let Some(sessions) = self.session_settings().cloned()
            && touch_session
            && !auth_request.session_id.is_empty()
        {
            let now = self.now();
            let (sid, client_id) = (
                auth_request.session_id.clone(),
                auth_request.client_id.clone(),
            );
            let touched = self
                .with_storage(move |s| {
                    Ok::<_, ProviderError>(s.update_browser_session(&sid, &mut |mut session| {
                        if let Some(part) = session.clients.get_mut(&client_id) {
                            part.last_token_issued_at = Some(now);
                        }
                        rules::touch(&sessions, &mut session, now);
                        Ok(session)
                    }))
                })
                .await?;
            if let Err(error) = touched
                && error != StorageError::NotFound
            {
                tracing::warn!(%error, "cannot record browser session activity");
            }
        }
        Ok(response_outcome(response).into())
    }

    async fn load_auth_request(&self, id: &str) -> Result<AuthRequest, ProviderError> {
        if id.is_empty() {
            return Err(ProviderError::bad_request("User session error."));
        }
        let id = id.to_owned();
        self.with_storage(move |s| {
            s.get_auth_request(&id).map_err(|error| match error {
                StorageError::NotFound => ProviderError::bad_request("User session error."),
                other => ProviderError::storage(&other),
            })
        })
        .await
    }

    /// `/auth/{id}` under the issuer path, with `query` appended.
    fn connector_path(&self, connector_id: &str, query: &[(String, String)]) -> String {
        let mut path = format!(
            "{}/auth/{}",
            self.settings.issuer.path_prefix,
            url_path_segment(connector_id)
        );
        if !query.is_empty() {
            path.push('?');
            path.push_str(&encode_query(query));
        }
        path
    }

    /// `/auth/{id}/login?back=…&state=…` under the issuer path.
    fn password_form_path(&self, connector_id: &str, back: &str, auth_request_id: &str) -> String {
        let query = [
            ("back".to_owned(), back.to_owned()),
            ("state".to_owned(), auth_request_id.to_owned()),
        ];
        format!(
            "{}/auth/{}/login?{}",
            self.settings.issuer.path_prefix,
            url_path_segment(connector_id),
            encode_query(&query)
        )
    }
}

/// How an interactive login (password form or upstream callback) ended.
struct InteractiveLogin<'a> {
    supports_refresh: bool,
    /// The session cookie the browser presented.
    session: Option<&'a SessionCookie>,
    /// The cookie outlives the browser ("keep me signed in").
    remember_me: bool,
}

/// `login_required` to the client (OpenID Connect Core §3.1.2.6).
/// A login from the browser's session, to finish: see [`finish_login_from_session`].
struct SessionLogin {
    validated: ValidatedAuthorization,
    connector_id: String,
    supports_refresh: bool,
    binding: String,
    session: BrowserSession,
    /// The client joins the session by single sign-on (it was not in it).
    joins: bool,
}

/// Stores the auth request, then logs it in from the session in one commit
/// ([`flow::finish_login`]) that also records the session's activity. A session
/// that ended meanwhile (a logout in another tab) vouches for nothing: the
/// request is removed and the browser has to start again.
fn finish_login_from_session(
    ctx: &GrantContext<'_>,
    login: SessionLogin,
) -> Result<flow::LoginFinished, ProviderError> {
    let (storage, settings, now) = (ctx.storage, ctx.settings, ctx.now);
    let SessionLogin {
        validated,
        connector_id,
        supports_refresh,
        binding,
        session,
        joins,
    } = login;
    // Stored consent matters only when the page is neither forced nor skipped.
    let granted = if validated.force_approval_prompt || settings.oauth2.skip_approval_screen {
        Vec::new()
    } else {
        granted_scopes(
            storage,
            &session.user_id,
            &connector_id,
            &validated.client_id,
        )
        .map_err(|e| ProviderError::storage(&e))?
    };
    // Refused before anything is stored.
    if validated.prompt.none
        && flow::approval_required(
            validated.force_approval_prompt,
            &validated.scopes,
            settings,
            &granted,
        )
    {
        return Err(redirect_error(
            &validated,
            ErrorCode::ConsentRequired,
            "User consent required",
        ));
    }
    let request =
        flow::create_auth_request(storage, settings, &validated, &connector_id, &binding, now)
            .map_err(ProviderError::from)?;
    // The upstream credentials of the session's login go to the offline session
    // only if it has none: a refresh may have rotated the ones there since.
    let connector_data = match storage.get_offline_session(&session.user_id, &connector_id) {
        Ok(offline) if offline.connector_data.is_some() => None,
        _ => session.connector_data.clone(),
    };
    let facts = flow::LoginFacts {
        claims: session.claims.clone(),
        connector_data,
        connector_supports_refresh: supports_refresh,
        session_id: &session.id,
        authenticated_at: session.authenticated_at,
    };
    let sessions = settings.sessions.clone().unwrap_or_default();
    let mut record = |mut stored: BrowserSession| {
        if joins {
            rules::join_by_sso(&mut stored, &request.client_id, now);
        }
        rules::touch(&sessions, &mut stored, now);
        Ok(stored)
    };
    let write = BrowserSessionWrite::Update {
        id: &session.id,
        updater: &mut record,
    };
    let finished = flow::finish_login(
        storage,
        settings,
        ctx.signer,
        &request,
        &facts,
        &granted,
        Some(write),
        now,
    )
    .map_err(ProviderError::from)?;
    match finished {
        Some((finished, _)) => Ok(finished),
        None => {
            if let Err(error) = storage.delete_auth_request(&request.id) {
                tracing::warn!(%error, "cannot delete an auth request that will not be used");
            }
            Err(ProviderError::bad_request(
                "Your session has ended. Please start again from the application.",
            ))
        }
    }
}

/// The authorization response as the browser gets it.
fn response_outcome(response: AuthorizeResponse) -> Outcome {
    match response {
        AuthorizeResponse::Redirect(url) => Outcome::SeeOther(url),
        AuthorizeResponse::Oob { code } => Outcome::Page(200, Page::Oob(OobPage { code })),
    }
}

fn login_required(request: &ValidatedAuthorization, description: &str) -> ProviderError {
    redirect_error(request, ErrorCode::LoginRequired, description)
}

/// An error redirected to the client of a validated request, with its `state`.
fn redirect_error(
    request: &ValidatedAuthorization,
    error: ErrorCode,
    description: &str,
) -> ProviderError {
    ProviderError::from(crate::oidc::AuthorizeError::Redirect(RedirectError {
        redirect_uri: request.redirect_uri.clone(),
        error,
        description: description.to_owned(),
        state: request.state.clone(),
    }))
}

/// `back` must stay on this server, under the issuer's path (`prefix`). Judged on
/// the value as received, nothing stripped or normalised first: a browser drops
/// tab and newline and reads `\` as `/`, so `/\t/evil.example` would be
/// `//evil.example` to it; any byte but visible ASCII, and `\`, is refused.
pub fn safe_back_link(prefix: &str, back: &str) -> Option<String> {
    let visible = back.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    let rest = back.strip_prefix(prefix)?;
    (visible && rest.starts_with('/') && !rest.starts_with("//")).then(|| back.to_owned())
}

/// The error for a path naming no connector (or a step that does not fit it).
pub fn unknown_resource() -> ProviderError {
    ProviderError::bad_request("Requested resource does not exist.")
}

fn invalid_form_token() -> ProviderError {
    ProviderError::page(
        403,
        "Invalid or missing form token. Please start the login again.",
    )
}

/// Refuses a step of a login from another browser than the one that started it
/// (403, changing nothing).
fn same_browser(
    auth_request: &AuthRequest,
    presented: Option<&BrowserSecret>,
) -> Result<(), ProviderError> {
    binding::check_same_browser(&auth_request.browser_binding, presented)
        .map_err(ProviderError::from)
}

/// The error for a failed connector step. Upstream text (an
/// `error_description`, a quoted body) goes to the log only, escaped by
/// [`ConnectorError`]'s `Display`; the user sees a fixed message.
fn connector_failure(entry: &ConnectorEntry, error: &ConnectorError) -> ProviderError {
    match error {
        ConnectorError::NotInRequiredGroups { .. } => {
            tracing::info!(connector = %entry.id, %error, "login refused");
            ProviderError::page(
                403,
                "You are not a member of any of the required groups to authenticate.",
            )
        }
        ConnectorError::Upstream(_) => {
            tracing::warn!(connector = %entry.id, %error, "upstream login failed");
            ProviderError::Upstream {
                connector_name: entry.name.clone(),
            }
        }
        _ => {
            tracing::error!(connector = %entry.id, %error, "connector failed");
            ProviderError::page(
                500,
                "Authentication failed. Please contact your administrator or try again later.",
            )
        }
    }
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn url_path_segment(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn encode_query(pairs: &[(String, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

#[cfg(test)]
mod tests {
    use super::safe_back_link;

    #[test]
    fn back_link_stays_under_the_issuer_path() {
        for (prefix, back) in [
            ("/dex", "/dex/auth?client_id=a&state=b"),
            ("/dex", "/dex/"),
            ("", "/auth?x=%09"),
        ] {
            assert_eq!(safe_back_link(prefix, back).as_deref(), Some(back));
        }
        for (prefix, back) in [
            ("", "/\t/evil.example"),
            ("", "/\n/evil.example"),
            ("", "/\r/evil.example"),
            ("", "\t//evil.example"),
            ("", "//evil.example"),
            ("", "/\\evil.example"),
            ("", "\\/evil.example"),
            ("", "/ /evil.example"),
            ("", "https://evil.example/"),
            ("", "javascript:alert(1)"),
            ("", "/caf\u{e9}"),
            ("", "/\u{0}x"),
            ("", "/\u{7f}x"),
            ("", ""),
            ("/dex", "/auth"),
            ("/dex", "/dexterity/auth"),
            ("/dex", "/dex//evil.example"),
            ("/dex", "/dex/\t/x"),
            ("/dex", "/dex"),
        ] {
            assert_eq!(
                safe_back_link(prefix, back),
                None,
                "{back:?} under {prefix:?}"
            );
        }
    }
}
