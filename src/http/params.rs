//! Request parameters from the query string and a form body, read the way Go's
//! `ParseForm` does (body values first, then query), with our own rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Largest request body we read: forms here are small.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Decoded name/value pairs: the form body's first (for POST), then the query's.
pub struct Params {
    pub method: Method,
    pub headers: HeaderMap,
    pub pairs: Vec<(String, String)>,
    /// Pairs of the query string only (for building links that keep the request).
    pub query_pairs: Vec<(String, String)>,
}

impl Params {
    /// The first value of `name`, or `""` (Go's `Form.Get`).
    pub fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub struct ParamsRejection(&'static str);

impl IntoResponse for ParamsRejection {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": "invalid_request", "error_description": self.0});
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }
}

fn decode(raw: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(raw).into_owned().collect()
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ParamsRejection;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let query_pairs = parts
            .uri
            .query()
            .map(|q| decode(q.as_bytes()))
            .unwrap_or_default();
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
            .unwrap_or(false);
        let mut pairs = Vec::new();
        let reads_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        if reads_body && is_form {
            let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
                .await
                .map_err(|_| ParamsRejection("Request body too large or unreadable."))?;
            pairs = decode(&bytes);
        }
        pairs.extend(query_pairs.iter().cloned());
        Ok(Self {
            method: parts.method,
            headers: parts.headers,
            pairs,
            query_pairs,
        })
    }
}
