//! The Rust load loop for POSTs and login flows: N workers, each with its own keep-alive
//! connection, running one operation after another until a time window or an operation
//! budget runs out (whichever comes first).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hyper::Method;

use crate::http::{Conn, Error, Jar, enc, fill_first_form, form_body, local_path, query_param};

pub enum Outcome<T> {
    Done(Option<T>),
    /// The worker has nothing left to do (e.g. it used all its codes).
    Exhausted,
}

pub type OpFuture<'a, T> = Pin<Box<dyn Future<Output = Result<Outcome<T>, Error>> + Send + 'a>>;

pub struct LoadResult<T> {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub outputs: Vec<T>,
}

impl<T> LoadResult<T> {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at `pct` percent, in milliseconds.
    pub fn pct_ms(&self, pct: usize) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = (self.latencies.len() * pct / 100).min(self.latencies.len() - 1);
        self.latencies[i].as_secs_f64() * 1e3
    }
}

/// Runs `op` on `states.len()` workers (one connection each) for at most `window` and
/// at most `max_ops` operations in total.
pub async fn closed_loop<S, T, F>(
    addr: SocketAddr,
    states: Vec<S>,
    window: Duration,
    max_ops: u64,
    op: F,
) -> LoadResult<T>
where
    S: Send + 'static,
    T: Send + 'static,
    F: for<'a> Fn(&'a mut Conn, &'a mut S) -> OpFuture<'a, T> + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let budget = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut state in states {
        let op = op.clone();
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut result = LoadResult {
                ok: 0,
                errors: 0,
                first_error: None,
                elapsed: Duration::ZERO,
                latencies: Vec::new(),
                outputs: Vec::new(),
            };
            while start.elapsed() < window && budget.fetch_add(1, Ordering::Relaxed) < max_ops {
                let began = Instant::now();
                match op(&mut conn, &mut state).await {
                    Ok(Outcome::Done(output)) => {
                        result.ok += 1;
                        result.latencies.push(began.elapsed());
                        result.outputs.extend(output);
                    }
                    Ok(Outcome::Exhausted) => break,
                    Err(error) => {
                        result.errors += 1;
                        result.first_error.get_or_insert_with(|| error.to_string());
                        // A broken connection is re-opened by the next call.
                        conn = Conn::new(addr);
                    }
                }
            }
            result
        }));
    }
    let mut total = LoadResult {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        outputs: Vec::new(),
    };
    for task in tasks {
        match task.await {
            Ok(r) => {
                total.ok += r.ok;
                total.errors += r.errors;
                if total.first_error.is_none() {
                    total.first_error = r.first_error;
                }
                total.latencies.extend(r.latencies);
                total.outputs.extend(r.outputs);
            }
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    total.elapsed = start.elapsed();
    total.latencies.sort_unstable();
    total
}

/// Where and as whom to log in: an OpenID provider and its static client.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub auth_path: String,
    pub token_path: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub scope: String,
    pub verifier: String,
    pub login: String,
    pub password: String,
}

impl Target {
    pub fn new(addr: SocketAddr, prefix: &str, auth: &str, token: &str) -> Self {
        Self {
            addr,
            auth_path: format!("{prefix}{auth}"),
            token_path: format!("{prefix}{token}"),
            client_id: "example-app".into(),
            client_secret: "ZXhhbXBsZS1hcHAtc2VjcmV0".into(),
            redirect_uri: "http://127.0.0.1:5555/callback".into(),
            scope: "openid email profile offline_access".into(),
            verifier: "oxidex-bench-pkce-verifier-0123456789-abcdefghijklmnop".into(),
            login: "admin".into(),
            password: "any".into(),
        }
    }

    fn basic(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!(
                "{}:{}",
                enc(&self.client_id),
                enc(&self.client_secret)
            ))
        )
    }

    fn auth_url(&self, n: u64) -> String {
        let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, self.verifier.as_bytes()).as_ref());
        format!(
            "{}?client_id={}&response_type=code&scope={}&redirect_uri={}&state=state{n:08}&nonce=nonce{n:08}&code_challenge={}&code_challenge_method=S256",
            self.auth_path,
            enc(&self.client_id),
            enc(&self.scope),
            enc(&self.redirect_uri),
            challenge
        )
    }
}

/// A browser without JavaScript: from `/auth` through every redirect and form (login,
/// approval) to the client's redirect URI. Returns the code and the number of requests.
pub async fn login_to_code(
    conn: &mut Conn,
    target: &Target,
    n: u64,
) -> Result<(String, u32), Error> {
    let mut jar = Jar::default();
    let mut path = target.auth_url(n);
    // Each login is another client (10.0.0.0/8): oxidex limits auth requests per
    // client address, and a benchmark is many clients, not one. The second octet is
    // the worker (`flow_states` puts it in n's high bits), so concurrent workers
    // never share an address; each worker cycles through 65,536.
    conn.forwarded_for = hyper::header::HeaderValue::from_str(&format!(
        "10.{}.{}.{}",
        (n >> 40) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    ))
    .ok();
    let mut form: Option<String> = None;
    for hop in 1..=16u32 {
        let cookies = jar.header();
        let reply = match form.take() {
            Some(body) => {
                conn.send(Method::POST, &path, Some(&cookies), None, Some(body))
                    .await?
            }
            None => {
                conn.send(Method::GET, &path, Some(&cookies), None, None)
                    .await?
            }
        };
        jar.store(&reply.headers);
        if reply.status.is_redirection() {
            let location = reply.location().ok_or("redirect without Location")?;
            if location.starts_with(&target.redirect_uri) {
                if let Some(error) = query_param(location, "error") {
                    return Err(format!("login failed: {error}: {location}").into());
                }
                let code = query_param(location, "code")
                    .ok_or_else(|| format!("no code in {location}"))?;
                return Ok((code, hop));
            }
            path = local_path(location, target.addr, &path)?;
        } else if reply.status.is_success() {
            let page = reply.text();
            let filled = fill_first_form(&page, &target.login, &target.password)
                .ok_or_else(|| format!("page without a form at {path}: {}", reply.describe()))?;
            let action = local_path(&filled.action, target.addr, &path)?;
            form = Some(form_body(&filled.fields));
            path = action;
        } else {
            return Err(format!("{path}: {}", reply.describe()).into());
        }
    }
    Err("more than 16 hops without reaching the client".into())
}

/// What one `/token` response carried.
pub struct Tokens {
    pub access: String,
    pub refresh: Option<String>,
    /// Size of the response body.
    pub bytes: usize,
}

pub async fn exchange_code(conn: &mut Conn, target: &Target, code: &str) -> Result<Tokens, Error> {
    let body = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
        enc(code),
        enc(&target.redirect_uri),
        enc(&target.verifier)
    );
    token_request(conn, target, body).await
}

pub async fn refresh(conn: &mut Conn, target: &Target, token: &str) -> Result<Tokens, Error> {
    let body = format!("grant_type=refresh_token&refresh_token={}", enc(token));
    token_request(conn, target, body).await
}

async fn token_request(conn: &mut Conn, target: &Target, body: String) -> Result<Tokens, Error> {
    let reply = conn
        .send(
            Method::POST,
            &target.token_path,
            None,
            Some(&target.basic()),
            Some(body),
        )
        .await?;
    if !reply.status.is_success() {
        return Err(format!("{}: {}", target.token_path, reply.describe()).into());
    }
    let json: serde_json::Value = serde_json::from_slice(&reply.body)?;
    if json.get("id_token").and_then(|v| v.as_str()).is_none() {
        return Err(format!("token response without id_token: {}", reply.describe()).into());
    }
    let access = json
        .get("access_token")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("token response without access_token: {}", reply.describe()))?;
    Ok(Tokens {
        access: access.to_owned(),
        refresh: json
            .get("refresh_token")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        bytes: reply.body.len(),
    })
}

/// A per-worker counter so that every flow has its own state and nonce.
pub struct FlowState {
    pub target: Arc<Target>,
    pub n: u64,
}

pub fn flow_states(target: &Arc<Target>, workers: usize) -> Vec<FlowState> {
    (0..workers)
        .map(|w| FlowState {
            target: target.clone(),
            n: (w as u64) << 40,
        })
        .collect()
}

/// One complete login: every hop to the code, then the code exchange.
pub fn full_flow<'a>(conn: &'a mut Conn, state: &'a mut FlowState) -> OpFuture<'a, u32> {
    Box::pin(async move {
        state.n += 1;
        let (code, hops) = login_to_code(conn, &state.target, state.n).await?;
        exchange_code(conn, &state.target, &code).await?;
        Ok(Outcome::Done(Some(hops + 1)))
    })
}

/// A login up to the code, for minting codes ahead of the `/token` measurement.
pub fn mint_code<'a>(conn: &'a mut Conn, state: &'a mut FlowState) -> OpFuture<'a, String> {
    Box::pin(async move {
        state.n += 1;
        let (code, _) = login_to_code(conn, &state.target, state.n).await?;
        Ok(Outcome::Done(Some(code)))
    })
}

pub struct CodeQueue {
    pub target: Arc<Target>,
    pub codes: Vec<String>,
}

pub fn exchange_next<'a>(conn: &'a mut Conn, state: &'a mut CodeQueue) -> OpFuture<'a, String> {
    Box::pin(async move {
        let Some(code) = state.codes.pop() else {
            return Ok(Outcome::Exhausted);
        };
        Ok(Outcome::Done(
            exchange_code(conn, &state.target, &code).await?.refresh,
        ))
    })
}

pub struct RefreshChain {
    pub target: Arc<Target>,
    pub token: String,
}

/// One refresh grant; the next one uses the rotated token.
pub fn refresh_next<'a>(conn: &'a mut Conn, state: &'a mut RefreshChain) -> OpFuture<'a, ()> {
    Box::pin(async move {
        if let Some(next) = refresh(conn, &state.target, &state.token).await?.refresh {
            state.token = next;
        }
        Ok(Outcome::Done(None))
    })
}

/// The code exchange's request against the signing hello (`examples/signing_hello.rs`),
/// which signs a token response for any request: same body, same client authentication,
/// same response checks as [`exchange_next`].
pub fn signing_hello_token<'a>(
    conn: &'a mut Conn,
    target: &'a mut Arc<Target>,
) -> OpFuture<'a, ()> {
    Box::pin(async move {
        exchange_code(conn, target, "pc7tn6ajdfkgwnabkkngmawyr").await?;
        Ok(Outcome::Done(None))
    })
}

/// Plain GETs, to compare this load loop with wrk on the same server.
#[allow(clippy::ptr_arg)] // the worker state type is `String`
pub fn get_path<'a>(conn: &'a mut Conn, path: &'a mut String) -> OpFuture<'a, ()> {
    Box::pin(async move {
        let reply = conn.get(path).await?;
        if !reply.status.is_success() {
            return Err(reply.describe().into());
        }
        Ok(Outcome::Done(None))
    })
}
