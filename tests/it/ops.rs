//! Operational endpoints: health, robots, the issuer prefix, unknown paths,
//! request ids, telemetry.

use serde_json::json;
use tokio::net::TcpListener;

use crate::support::{TestServer, base_config};

#[tokio::test]
async fn healthz_robots_and_prefix() {
    let server = TestServer::start(base_config("http://127.0.0.1:5556/dex")).await;

    let health = server
        .http
        .get(server.url("/dex/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "Health check passed");

    let robots = server
        .http
        .get(server.url("/dex/robots.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(robots.status(), 200);
    assert!(robots.text().await.unwrap().contains("Disallow: /"));

    // Routes live only under the issuer path, with exact matching.
    for path in ["/keys", "/healthz", "/dex/keys/", "/dex/nothing-here"] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_configured_headers() {
    let mut config = base_config("http://127.0.0.1:5556");
    config["web"]["headers"] =
        json!({"X-Frame-Options": "DENY", "Strict-Transport-Security": "max-age=31536000"});
    let server = TestServer::start(config).await;

    let response = server.http.get(server.url("/keys")).send().await.unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000"
    );

    let echoed = server
        .http
        .get(server.url("/healthz"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-123");
    server.stop().await;
}

#[tokio::test]
async fn telemetry_serves_metrics_and_probes() {
    let server = TestServer::start(base_config("http://127.0.0.1:5556")).await;
    // Generate one request to count.
    server.http.get(server.url("/keys")).send().await.unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = oxidex::telemetry::telemetry_app(server.state.health.clone());
    let telemetry = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let base = format!("http://{addr}");

    let live = reqwest::get(format!("{base}/healthz/live")).await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.text().await.unwrap(), "ok");

    let ready = reqwest::get(format!("{base}/healthz/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(report["healthy"], true);
    assert_eq!(report["storage"]["ok"], true);

    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("http_requests_total{") && metrics.contains("handler=\"/keys\""),
        "metrics page lacks the request counter:\n{metrics}"
    );
    telemetry.abort();
    server.stop().await;
}

#[tokio::test]
async fn cors_only_for_configured_origins_and_public_endpoints() {
    let mut config = base_config("http://127.0.0.1:5556");
    config["web"]["allowedOrigins"] = json!(["https://app.example.org"]);
    let server = TestServer::start(config).await;

    let allowed = server
        .http
        .get(server.url("/keys"))
        .header("origin", "https://app.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.org"
    );

    let preflight = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/token"))
        .header("origin", "https://app.example.org")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert!(
        preflight.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );

    let other = server
        .http
        .get(server.url("/keys"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // Pages are never cross-origin readable.
    let page = server
        .http
        .get(server.url("/healthz"))
        .header("origin", "https://app.example.org")
        .send()
        .await
        .unwrap();
    assert!(page.headers().get("access-control-allow-origin").is_none());
    server.stop().await;
}
