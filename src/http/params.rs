//! Request parameters from the query string and a form body, read the way Go's
//! `ParseForm` does (body values first, then query), with our own rejections.

use std::convert::Infallible;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Method, header};

use crate::urlencoded::query_unescape;

/// Largest request body we read: forms here are small.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Decoded name/value pairs: the form body's first (for POST), then the query's.
///
/// Extraction never fails: when the query or the body cannot be decoded,
/// [`Params::malformed`] says why and each endpoint answers in its own kind
/// (a JSON OAuth error or an HTML page), as Dex does after `ParseForm` fails.
pub struct Params {
    pub method: Method,
    pub headers: HeaderMap,
    pub pairs: Vec<(String, String)>,
    /// Pairs of the query string only (for building links that keep the request).
    pub query_pairs: Vec<(String, String)>,
    /// Pairs of the form body only: the token endpoint reads nothing else
    /// (RFC 6749 §2.3.1 forbids credentials in the URI; Dex's `PostFormValue`).
    pub body_pairs: Vec<(String, String)>,
    /// Why the parameters could not be read (bad `%` escape, not UTF-8, body too
    /// large); `None` when they were.
    pub malformed: Option<&'static str>,
}

impl Params {
    /// The first value of `name`, or `""` (Go's `Form.Get`).
    pub fn get(&self, name: &str) -> &str {
        first(&self.pairs, name)
    }

    /// The first value of `name` in the form body, or `""` (Go's `PostFormValue`).
    pub fn form_get(&self, name: &str) -> &str {
        first(&self.body_pairs, name)
    }

    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// `application/x-www-form-urlencoded` decoding that, like Go's `ParseQuery`,
/// refuses a malformed `%` escape instead of passing it through; values must
/// also be UTF-8 (nothing here can use other bytes, and lossy decoding would
/// alter a `state` echoed back to the client). `pub` (hidden) for the fuzz target.
#[doc(hidden)]
pub fn decode(raw: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    raw.split(|&b| b == b'&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (key, value) = match piece.iter().position(|&b| b == b'=') {
                Some(at) => (&piece[..at], &piece[at + 1..]),
                None => (piece, &[][..]),
            };
            Ok((unescape(key)?, unescape(value)?))
        })
        .collect()
}

fn unescape(raw: &[u8]) -> Result<String, &'static str> {
    let bytes = query_unescape(raw).map_err(|_| "invalid percent-encoding")?;
    String::from_utf8(bytes).map_err(|_| "parameters are not UTF-8")
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = Infallible;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let mut malformed = None;
        let query_pairs = match parts.uri.query().map(|q| decode(q.as_bytes())) {
            Some(Ok(pairs)) => pairs,
            Some(Err(why)) => {
                malformed = Some(why);
                Vec::new()
            }
            None => Vec::new(),
        };
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
        let mut body_pairs = Vec::new();
        let reads_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        if reads_body && is_form {
            match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
                Ok(bytes) => match decode(&bytes) {
                    Ok(pairs) => body_pairs = pairs,
                    Err(why) => malformed = malformed.or(Some(why)),
                },
                Err(_) => {
                    malformed = malformed.or(Some("request body too large or unreadable"));
                }
            }
        }
        let mut pairs = body_pairs.clone();
        pairs.extend(query_pairs.iter().cloned());
        Ok(Self {
            method: parts.method,
            headers: parts.headers,
            pairs,
            query_pairs,
            body_pairs,
            malformed,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_go_parse_query() {
        let pairs = decode(b"a=1&b=x+y%2Bz&&c&d=%C3%A9").unwrap();
        let expected = [("a", "1"), ("b", "x y+z"), ("c", ""), ("d", "é")];
        assert_eq!(pairs.len(), expected.len());
        for ((k, v), (ek, ev)) in pairs.iter().zip(expected) {
            assert_eq!((k.as_str(), v.as_str()), (ek, ev));
        }
    }

    #[test]
    fn refuses_bad_escapes_and_non_utf8() {
        assert_eq!(decode(b"a=%zz"), Err("invalid percent-encoding"));
        assert_eq!(decode(b"a=%4"), Err("invalid percent-encoding"));
        assert_eq!(decode(b"%=1"), Err("invalid percent-encoding"));
        assert_eq!(decode(b"a=%ff"), Err("parameters are not UTF-8"));
        assert_eq!(decode(b"a=\xff"), Err("parameters are not UTF-8"));
    }
}
