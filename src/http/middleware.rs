//! What every route gets: a request id (kept from the client or made here, echoed in the
//! response), a tracing span, Prometheus metrics named as Dex names them, and the
//! configured `web.headers`.
//!
//! One hand-written layer rather than tower-http's request-id and trace layers plus two
//! `from_fn` middlewares: axum clones a route's whole layer stack for every request, and
//! the five layers cost ~2.6× hello's instructions per `GET /keys` (callgrind), which
//! held discovery and `/keys` to ~0.6 × hello.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use metrics::{Counter, Histogram};
use tower::{Layer, Service};
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn wrap(router: Router, extra_headers: &[(String, String)]) -> Router {
    let headers: Vec<(HeaderName, HeaderValue)> = extra_headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect();
    router.layer(ObserveLayer {
        shared: Arc::new(Shared {
            headers,
            metrics: MetricsCache::default(),
        }),
    })
}

struct Shared {
    headers: Vec<(HeaderName, HeaderValue)>,
    metrics: MetricsCache,
}

#[derive(Clone)]
struct ObserveLayer {
    shared: Arc<Shared>,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let request_id = match request.headers().get(&REQUEST_ID) {
            Some(id) if is_plain_request_id(id) => id.clone(),
            _ => {
                let id = new_request_id();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let Some(method) = method_label(request.method()) else {
            // A method no route knows (RFC 9110 §15.6.2): answered here, so an
            // arbitrary method never becomes a metric label or reaches a handler.
            let shared = self.shared.clone();
            return Box::pin(async move {
                shared.metrics.record("unmatched", OTHER_METHOD, 501, 0.0);
                let mut response = Response::new(axum::body::Body::from("501 not implemented\n"));
                *response.status_mut() = StatusCode::NOT_IMPLEMENTED;
                response.headers_mut().insert(REQUEST_ID, request_id);
                Ok(response)
            });
        };
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = %request_id.to_str().unwrap_or(""),
        );
        let handler = request.extensions().get::<MatchedPath>().cloned();
        let shared = self.shared.clone();
        // The service that was polled ready handles this request; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                tracing::debug!("started processing request");
                let started = Instant::now();
                let Ok(mut response) = inner.call(request).await;
                let elapsed = started.elapsed();
                let status = response.status();
                shared.metrics.record(
                    handler.as_ref().map_or("unmatched", |p| p.as_str()),
                    method,
                    status.as_u16(),
                    elapsed.as_secs_f64(),
                );
                if status.is_server_error() {
                    tracing::error!(status = status.as_u16(), latency = ?elapsed, "response failed");
                } else {
                    tracing::debug!(status = status.as_u16(), latency = ?elapsed, "finished processing request");
                }
                let headers = response.headers_mut();
                for (name, value) in &shared.headers {
                    headers.insert(name.clone(), value.clone());
                }
                if !headers.contains_key(&REQUEST_ID) {
                    headers.insert(REQUEST_ID, request_id);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The label of every method outside [`method_label`]'s list.
const OTHER_METHOD: &str = "other";

/// The metric label of a method this server can route, `None` for any other.
fn method_label(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => return None,
    })
}

/// A client's request id is kept only when it is short and plain, since it is
/// echoed into logs and error pages.
fn is_plain_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    (1..=MAX_REQUEST_ID_LEN).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

const MAX_REQUEST_ID_LEN: usize = 128;

/// A UUID-shaped id unique to this request: a random half drawn once per process
/// and a counter, so ids differ across replicas and restarts without drawing
/// random bytes (a system call) for every request. It only correlates log lines
/// and error pages; nothing relies on it being unguessable.
fn new_request_id() -> HeaderValue {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let process = *PROCESS.get_or_init(|| u64::from_le_bytes(crate::crypto::random_bytes()));
    let id = uuid::Uuid::from_u64_pair(process, COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut buf = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
        .unwrap_or(HeaderValue::from_static("-"))
}

/// Metric handles per (route, method, status), so that a request does not build and
/// register label sets (allocating strings) on the hot path. Per router: the handles
/// belong to the recorder installed when the first request came.
#[derive(Default)]
struct MetricsCache(RwLock<HashMap<String, Vec<RouteMetrics>>>);

struct RouteMetrics {
    method: &'static str,
    code: u16,
    requests: Counter,
    duration: Histogram,
}

impl MetricsCache {
    fn record(&self, handler: &str, method: &'static str, code: u16, seconds: f64) {
        let hit = |routes: &[RouteMetrics]| {
            routes
                .iter()
                .find(|r| r.code == code && r.method == method)
                .map(|r| {
                    r.requests.increment(1);
                    r.duration.record(seconds);
                })
        };
        {
            let map = self.0.read().unwrap_or_else(|p| p.into_inner());
            if map.get(handler).and_then(|routes| hit(routes)).is_some() {
                return;
            }
        }
        let labels = [
            ("code", code.to_string()),
            ("method", method.to_owned()),
            ("handler", handler.to_owned()),
        ];
        let metrics = RouteMetrics {
            method,
            code,
            requests: metrics::counter!("http_requests_total", &labels),
            duration: metrics::histogram!("request_duration_seconds", &labels),
        };
        metrics.requests.increment(1);
        metrics.duration.record(seconds);
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        let routes = map.entry(handler.to_owned()).or_default();
        if !routes.iter().any(|r| r.code == code && r.method == method) {
            routes.push(metrics);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app() -> Router {
        wrap(
            Router::new().route("/keys", get(|| async { "keys" })),
            &[("X-Frame-Options".into(), "DENY".into())],
        )
    }

    #[tokio::test]
    async fn makes_or_keeps_the_request_id_and_adds_the_configured_headers() {
        let response = app()
            .oneshot(Request::get("/keys").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let id = response.headers()[&REQUEST_ID].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "UUID-shaped: {id}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        let next = app()
            .oneshot(Request::get("/keys").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let next = next.headers()[&REQUEST_ID].to_str().unwrap();
        assert_ne!(next, id, "every request gets its own id");
        assert_eq!(next[..18], id[..18], "one process prefix");

        let response = app()
            .oneshot(
                Request::get("/keys")
                    .header(&REQUEST_ID, "trace-me")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.headers()[&REQUEST_ID], "trace-me");
    }

    #[tokio::test]
    async fn unknown_methods_get_501_and_odd_request_ids_are_replaced() {
        let response = app()
            .oneshot(
                Request::builder()
                    .method(Method::from_bytes(b"XYZZY").unwrap())
                    .uri("/keys")
                    .header(&REQUEST_ID, "forged\tid")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
        let id = response.headers()[&REQUEST_ID].to_str().unwrap();
        assert_eq!(id.len(), 36, "replaced by a UUID: {id}");
        assert!(method_label(&Method::from_bytes(b"get").unwrap()).is_none());
        assert!(!is_plain_request_id(&HeaderValue::from_static("a b")));
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        assert!(!is_plain_request_id(&HeaderValue::from_str(&long).unwrap()));
    }

    #[test]
    fn request_ids_differ() {
        assert_ne!(new_request_id(), new_request_id());
    }
}
