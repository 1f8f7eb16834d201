//! HTML pages of the browser flow: connector picker, password form, approval, error,
//! out-of-band code and device-flow (code entry, success) pages.
//!
//! Templates are minijinja (Jinja syntax), built into the binary. When `frontend.dir` is
//! set, `<dir>/templates/<name>.html` replaces the built-in of that name (the others stay
//! built in); `<dir>/static/main.css` replaces the built-in stylesheet and
//! `<dir>/themes/<theme>/styles.css` is appended to it. The stylesheet is inlined into
//! every page, so pages need no static route and load nothing from elsewhere.
//!
//! Every override is parsed and test-rendered at load, so a broken one stops start-up
//! with an error naming its file. If an override still fails while serving, the page is
//! rendered from the built-in template instead.
//!
//! Variables every template sees: `issuer` (display name), `logo_url`, `theme`, `extra`
//! (the `frontend.extra` map), `css`, `csrf_field`; plus the fields of the page's struct.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use minijinja::{Environment, Value, context};
use serde::Serialize;

use crate::config::settings::FrontendSettings;

pub(crate) mod csrf;

pub use csrf::{CSRF_FIELD, CsrfToken};

const BASE: &str = "base.html";
const LOGIN: &str = "login.html";
const PASSWORD: &str = "password.html";
const APPROVAL: &str = "approval.html";
const ERROR: &str = "error.html";
const OOB: &str = "oob.html";
const DEVICE: &str = "device.html";
const DEVICE_SUCCESS: &str = "device_success.html";
const LOGOUT: &str = "logout.html";

/// Built-in templates; `base.html` is the layout the others extend.
const BUILT_IN: &[(&str, &str)] = &[
    (BASE, include_str!("templates/base.html")),
    (LOGIN, include_str!("templates/login.html")),
    (PASSWORD, include_str!("templates/password.html")),
    (APPROVAL, include_str!("templates/approval.html")),
    (ERROR, include_str!("templates/error.html")),
    (OOB, include_str!("templates/oob.html")),
    (DEVICE, include_str!("templates/device.html")),
    (
        DEVICE_SUCCESS,
        include_str!("templates/device_success.html"),
    ),
    (LOGOUT, include_str!("templates/logout.html")),
];

const MAIN_CSS: &str = include_str!("static/main.css");

const DEFAULT_ISSUER_NAME: &str = "oxidex";
/// Dex's default `logoURL` points at an image inside its own theme directory, which we
/// do not ship; treat it as "no logo".
const DEX_DEFAULT_LOGO: &str = "theme/logo.png";

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("frontend.dir {}: {reason}", dir.display())]
    FrontendDir { dir: PathBuf, reason: String },
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// A template that does not parse or fails its test render. `file` is the override's
    /// path, or `built-in <name>`.
    #[error("template {}: {message}", file.display())]
    Template { file: PathBuf, message: String },
}

/// One entry of the connector picker.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorLink {
    pub id: String,
    pub name: String,
    /// The connector type, so custom templates can show icons per type.
    pub kind: String,
    /// Where the link goes: `/auth/{id}?<original params>`.
    pub url: String,
}

/// `login.html`: shown in the order given (Dex HEAD sorts by case-insensitive name).
#[derive(Debug, Clone, Serialize)]
pub struct LoginPage {
    pub connectors: Vec<ConnectorLink>,
}

/// `password.html`: the form posts `login`, `password` and the CSRF field to `post_url`.
#[derive(Debug, Clone, Serialize)]
pub struct PasswordPage {
    pub post_url: String,
    /// The connector's prompt; empty means "Username".
    pub prompt: String,
    /// Pre-filled login (the last attempt's, when re-showing after a failure).
    pub username: String,
    /// The last attempt had wrong credentials: shows "Invalid <prompt> and password.".
    pub invalid: bool,
    /// Link back to the connector picker, if there is a choice.
    pub back_link: Option<String>,
    pub csrf_token: String,
    /// The "keep me signed in" checkbox's initial state; `None` hides it
    /// (sessions off).
    pub remember_me: Option<bool>,
}

/// `approval.html`: two forms posting `approval=approve` / `approval=rejected`.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalPage {
    pub client_name: String,
    pub username: String,
    /// The requested scopes, raw; the page lists their descriptions (see
    /// [`scope_descriptions`]).
    pub scopes: Vec<String>,
    pub post_url: String,
    pub csrf_token: String,
}

/// `error.html`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorPage {
    /// HTTP status; the page's heading is its reason phrase ("Bad Request").
    pub status: u16,
    pub message: String,
}

/// `oob.html`: the code for `redirect_uri=urn:ietf:wg:oauth:2.0:oob`.
#[derive(Debug, Clone, Serialize)]
pub struct OobPage {
    pub code: String,
}

/// `device.html`: the user-code form, posting `user_code` and the CSRF field to
/// `post_url`.
#[derive(Debug, Clone, Serialize)]
pub struct DevicePage {
    pub post_url: String,
    /// Pre-filled code (`?user_code=`, or the last attempt's).
    pub user_code: String,
    /// The last attempt named an unknown or expired code.
    pub invalid: bool,
    pub csrf_token: String,
}

/// `device_success.html`: shown once the device has its tokens.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSuccessPage {
    pub client_name: String,
}

/// What `logout.html` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogoutStep {
    /// The issuer's root page of a signed-in browser, with a sign-out button.
    SignedIn,
    /// An application asked to sign out without proving it speaks for this
    /// session: the user confirms.
    Confirm,
    Done,
    /// Nobody is signed in.
    None,
}

/// `logout.html`: the sign-out form posts the CSRF field and the logout
/// request's parameters back to `post_url`.
#[derive(Debug, Clone, Serialize)]
pub struct LogoutPage {
    pub step: LogoutStep,
    pub username: String,
    pub post_url: String,
    pub csrf_token: String,
    pub post_logout_redirect_uri: String,
    pub state: String,
    pub client_id: String,
}

/// Human descriptions of requested scopes for the approval page, as Dex: sorted, and
/// scopes without a description (`openid`, `federated:id`, cross-client) left out.
pub fn scope_descriptions<S: AsRef<str>>(scopes: &[S]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = scopes
        .iter()
        .filter_map(|s| match s.as_ref() {
            "offline_access" => Some("Have offline access"),
            "profile" => Some("View basic profile information"),
            "email" => Some("View your email address"),
            "groups" => Some("View your groups"),
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The loaded template set with the frontend settings baked in.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    /// Built-ins only: used when an override fails at render time.
    fallback: Environment<'static>,
    globals: Value,
}

impl Templates {
    /// Load the built-ins and any overrides from `frontend.dir`.
    pub fn load(frontend: &FrontendSettings) -> Result<Templates, WebError> {
        let mut origins: HashMap<&'static str, PathBuf> = BUILT_IN
            .iter()
            .map(|(name, _)| (*name, PathBuf::from(format!("built-in {name}"))))
            .collect();
        let mut sources: HashMap<&'static str, String> = BUILT_IN
            .iter()
            .map(|(name, src)| (*name, (*src).to_owned()))
            .collect();
        let theme = theme_class(&frontend.theme);
        let mut css = MAIN_CSS.to_owned();

        if let Some(dir) = &frontend.dir {
            if !dir.is_dir() {
                return Err(WebError::FrontendDir {
                    dir: dir.clone(),
                    reason: "not a directory".to_owned(),
                });
            }
            for (name, _) in BUILT_IN {
                let file = dir.join("templates").join(name);
                if let Some(src) = read_if_present(&file)? {
                    sources.insert(name, src);
                    origins.insert(name, file);
                }
            }
            if let Some(main) = read_if_present(&dir.join("static").join("main.css"))? {
                css = main;
            }
            let theme_css = dir.join("themes").join(&theme).join("styles.css");
            if let Some(extra) = read_if_present(&theme_css)? {
                css.push('\n');
                css.push_str(&extra);
            }
        }

        let env = environment(&sources, &origins)?;
        let fallback = environment(
            &BUILT_IN
                .iter()
                .map(|(name, src)| (*name, (*src).to_owned()))
                .collect(),
            &HashMap::new(),
        )?;
        let templates = Templates {
            env,
            fallback,
            globals: globals(frontend, theme, css),
        };
        templates.test_render(&origins)?;
        Ok(templates)
    }

    pub fn login(&self, page: &LoginPage) -> String {
        self.render(LOGIN, ser(page))
    }

    pub fn password(&self, page: &PasswordPage) -> String {
        let prompt = if page.prompt.is_empty() {
            "Username"
        } else {
            page.prompt.as_str()
        };
        let error = page
            .invalid
            .then(|| format!("Invalid {prompt} and password."));
        self.render(PASSWORD, context! { prompt, error, ..ser(page) })
    }

    pub fn approval(&self, page: &ApprovalPage) -> String {
        let scopes = scope_descriptions(&page.scopes);
        self.render(APPROVAL, context! { scopes, ..ser(page) })
    }

    pub fn error(&self, page: &ErrorPage) -> String {
        let status_text = http::StatusCode::from_u16(page.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        self.render(ERROR, context! { status_text, ..ser(page) })
    }

    pub fn oob(&self, page: &OobPage) -> String {
        self.render(OOB, ser(page))
    }

    pub fn device(&self, page: &DevicePage) -> String {
        self.render(DEVICE, ser(page))
    }

    pub fn device_success(&self, page: &DeviceSuccessPage) -> String {
        self.render(DEVICE_SUCCESS, ser(page))
    }

    pub fn logout(&self, page: &LogoutPage) -> String {
        self.render(LOGOUT, ser(page))
    }

    fn render(&self, name: &str, page: Value) -> String {
        let ctx = context! { ..page, ..self.globals.clone() };
        match render_in(&self.env, name, &ctx) {
            Ok(html) => html,
            Err(e) => {
                tracing::error!(template = name, error = %e, "page template failed; using the built-in one");
                render_in(&self.fallback, name, &ctx).unwrap_or_else(|e| {
                    tracing::error!(template = name, error = %e, "built-in page template failed");
                    "<!DOCTYPE html><title>Error</title><p>Internal Server Error</p>".to_owned()
                })
            }
        }
    }

    /// Render every page once with sample data so an override that parses but cannot
    /// render (unknown parent template, bad filter…) is caught at start-up.
    fn test_render(&self, origins: &HashMap<&'static str, PathBuf>) -> Result<(), WebError> {
        let sample = "sample";
        let pages: [(&str, Value); 8] = [
            (
                LOGIN,
                ser(LoginPage {
                    connectors: vec![ConnectorLink {
                        id: sample.into(),
                        name: sample.into(),
                        kind: sample.into(),
                        url: sample.into(),
                    }],
                }),
            ),
            (
                PASSWORD,
                context! { prompt => sample, error => sample, ..ser(PasswordPage {
                    post_url: sample.into(),
                    prompt: sample.into(),
                    username: sample.into(),
                    invalid: true,
                    back_link: Some(sample.into()),
                    csrf_token: sample.into(),
                    remember_me: Some(true),
                })},
            ),
            (
                APPROVAL,
                ser(ApprovalPage {
                    client_name: sample.into(),
                    username: sample.into(),
                    scopes: vec![sample.into()],
                    post_url: sample.into(),
                    csrf_token: sample.into(),
                }),
            ),
            (
                ERROR,
                context! { status_text => sample, ..ser(ErrorPage {
                    status: 400,
                    message: sample.into(),
                })},
            ),
            (
                OOB,
                ser(OobPage {
                    code: sample.into(),
                }),
            ),
            (
                DEVICE,
                ser(DevicePage {
                    post_url: sample.into(),
                    user_code: sample.into(),
                    invalid: true,
                    csrf_token: sample.into(),
                }),
            ),
            (
                DEVICE_SUCCESS,
                ser(DeviceSuccessPage {
                    client_name: sample.into(),
                }),
            ),
            (
                LOGOUT,
                ser(LogoutPage {
                    step: LogoutStep::Confirm,
                    username: sample.into(),
                    post_url: sample.into(),
                    csrf_token: sample.into(),
                    post_logout_redirect_uri: sample.into(),
                    state: sample.into(),
                    client_id: sample.into(),
                }),
            ),
        ];
        for (name, page) in pages {
            let ctx = context! { ..page, ..self.globals.clone() };
            if let Err(e) = render_in(&self.env, name, &ctx) {
                // Blame the template the error happened in (e.g. an overridden base.html).
                let culprit = e.name().unwrap_or(name);
                let file = origins
                    .iter()
                    .find(|(n, _)| **n == culprit)
                    .map(|(_, p)| p.clone())
                    .unwrap_or_else(|| PathBuf::from(culprit));
                return Err(WebError::Template {
                    file,
                    message: describe(&e),
                });
            }
        }
        Ok(())
    }
}

fn ser<T: Serialize>(value: T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

fn render_in(
    env: &Environment<'static>,
    name: &str,
    ctx: &Value,
) -> Result<String, minijinja::Error> {
    env.get_template(name)?.render(ctx)
}

fn environment(
    sources: &HashMap<&'static str, String>,
    origins: &HashMap<&'static str, PathBuf>,
) -> Result<Environment<'static>, WebError> {
    let mut env = Environment::new();
    // Escape by the `.html` name (minijinja's default), also for any override.
    for (name, src) in sources {
        env.add_template_owned(*name, src.clone())
            .map_err(|e| WebError::Template {
                file: origins
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(format!("built-in {name}"))),
                message: describe(&e),
            })?;
    }
    Ok(env)
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    if e.kind() == minijinja::ErrorKind::SyntaxError {
        msg.push_str(" (oxidex templates use Jinja syntax, not Go templates)");
    }
    msg
}

fn read_if_present(file: &Path) -> Result<Option<String>, WebError> {
    match std::fs::read_to_string(file) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(WebError::Read {
            file: file.to_path_buf(),
            source,
        }),
    }
}

/// Dex's theme names: empty and the legacy `coreos`/`tectonic` mean `light`. Anything
/// else is kept if it is a plain name (it becomes a CSS class and a directory name).
fn theme_class(theme: &str) -> String {
    let theme = theme.trim();
    match theme {
        "" | "coreos" | "tectonic" => "light".to_owned(),
        t if t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            t.to_owned()
        }
        _ => "light".to_owned(),
    }
}

fn globals(frontend: &FrontendSettings, theme: String, css: String) -> Value {
    let issuer = if frontend.issuer_display_name.trim().is_empty() {
        DEFAULT_ISSUER_NAME
    } else {
        frontend.issuer_display_name.as_str()
    };
    let logo_url = match frontend.logo_url.trim() {
        "" | DEX_DEFAULT_LOGO => "",
        url => url,
    };
    let extra: &BTreeMap<String, String> = &frontend.extra;
    context! {
        issuer,
        logo_url,
        theme,
        extra => ser(extra),
        css,
        csrf_field => CSRF_FIELD,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
