//! Upstream response bodies read with a size cap: an upstream (compromised,
//! misconfigured, or an attacker's OIDC provider) must not make us buffer an
//! unbounded answer. Every body the `gitea` and `oidc` connectors read comes
//! through [`read_capped`], including the `openidconnect` crate's requests
//! (discovery, JWKS, token exchange), which use [`CappedClient`].

use std::future::Future;
use std::pin::Pin;

use openidconnect::{HttpRequest, HttpResponse};

/// Largest upstream response body read (token, user, teams, discovery, JWKS,
/// userinfo answers are a few KiB).
pub const MAX_UPSTREAM_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the response body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

/// The whole body of `response`, refused as soon as it exceeds `limit` bytes
/// (up front when `Content-Length` says so, else while streaming).
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let url = response_url_without_query(response.url());
    let too_large = || {
        tracing::warn!(
            url = %url,
            limit,
            "upstream response body exceeds the limit; refused"
        );
        BodyError::TooLarge { limit }
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The URL for a log line: no query string (it may hold a code or token).
fn response_url_without_query(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The `openidconnect` crate's HTTP client, as its own `reqwest` adapter does it
/// but with the body read through [`read_capped`].
pub struct CappedClient<'a> {
    pub http: &'a reqwest::Client,
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CappedClientError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    #[error("invalid HTTP response: {0}")]
    Http(#[from] http::Error),
}

impl<'c> openidconnect::AsyncHttpClient<'c> for CappedClient<'_> {
    type Error = CappedClientError;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, CappedClientError>> + Send + Sync + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self.http.execute(request.try_into()?).await?;
            let mut builder = http::Response::builder()
                .status(response.status())
                .version(response.version());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = read_capped(response, self.limit).await?;
            Ok(builder.body(body)?)
        })
    }
}
