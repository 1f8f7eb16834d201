//! Layers shared by every route: request ids, tracing, metrics, extra headers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};
use rand::Rng;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

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
    let headers: Arc<[(HeaderName, HeaderValue)]> = headers.into();
    let router = if headers.is_empty() {
        router
    } else {
        router.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let headers = headers.clone();
                async move {
                    let mut response = next.run(req).await;
                    for (name, value) in headers.iter() {
                        response.headers_mut().insert(name.clone(), value.clone());
                    }
                    response
                }
            },
        ))
    };
    router
        .layer(axum::middleware::from_fn_with_state(
            MetricsCache::default(),
            record_metrics,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %request_id,
                )
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, FastUuid))
}

/// UUID v4 request ids from the thread-local CSPRNG: `MakeRequestUuid` asks the
/// operating system for every id (a system call per request).
#[derive(Clone, Copy)]
struct FastUuid;

impl MakeRequestId for FastUuid {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid();
        let mut buf = uuid::Uuid::encode_buffer();
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
            .ok()
            .map(RequestId::new)
    }
}

/// Metric handles per (route, method, status), so that a request does not build and
/// register label sets (allocating strings) on the hot path. Per router: the handles
/// belong to the recorder installed when the first request came.
#[derive(Clone, Default)]
struct MetricsCache(Arc<RwLock<HashMap<String, Vec<RouteMetrics>>>>);

struct RouteMetrics {
    method: Method,
    code: u16,
    requests: Counter,
    duration: Histogram,
}

impl MetricsCache {
    fn record(&self, handler: &str, method: &Method, code: u16, seconds: f64) {
        let hit = |routes: &[RouteMetrics]| {
            routes
                .iter()
                .find(|r| r.code == code && r.method == *method)
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
            ("method", method.to_string()),
            ("handler", handler.to_owned()),
        ];
        let metrics = RouteMetrics {
            method: method.clone(),
            code,
            requests: metrics::counter!("http_requests_total", &labels),
            duration: metrics::histogram!("request_duration_seconds", &labels),
        };
        metrics.requests.increment(1);
        metrics.duration.record(seconds);
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        let routes = map.entry(handler.to_owned()).or_default();
        if !routes.iter().any(|r| r.code == code && r.method == *method) {
            routes.push(metrics);
        }
    }
}

/// Prometheus metrics per route, named as Dex names them.
async fn record_metrics(
    State(cache): State<MetricsCache>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let handler = request.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let response = next.run(request).await;
    let handler = handler.as_ref().map_or("unmatched", |p| p.as_str());
    cache.record(
        handler,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
