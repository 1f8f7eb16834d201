//! The signing ceiling for benchmarks: a minimal axum server (same runtime as
//! `examples/hello.rs`) whose `POST /token` does exactly the two signatures of a token
//! response, an access token and an ID token, with oxidex's signer
//! ([`KeySet::sign_jwt`], what the token endpoint signs with) over claims shaped like
//! oxidex's for the mock connector's user, and answers a token response of the same
//! shape. No storage, no client authentication, no request parsing: what `/token` costs
//! beyond this is what oxidex does around its signatures. `GET /` answers "ok" (readiness).
//!
//! Usage: `signing_hello [ADDR] [RS256|ES256|EdDSA]` (default `127.0.0.1:8080 RS256`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use oxidex::crypto::{new_id, token_hash};
use oxidex::keys::{KeySet, SigningAlgorithm, generate_key};
use oxidex::oidc::TokenResponse;
use oxidex::oidc::revoke::new_jti;
use oxidex::oidc::subject::{RefreshTokenWire, encode_subject};
use oxidex::storage::Keys;
use serde_json::{Map, Value, json};

/// Dex's default ID token lifetime.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);

struct Signer {
    keys: KeySet,
    issuer: String,
    subject: String,
    refresh_token: String,
}

impl Signer {
    /// The claims oxidex puts in a token for the mock connector's user with the scopes
    /// `openid email profile offline_access`, in its order.
    fn claims(&self, now: SystemTime, at_hash_of: &str, code: Option<&str>) -> Value {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let algorithm = self.keys.algorithm();
        let mut m = Map::new();
        m.insert("iss".into(), json!(self.issuer));
        m.insert("sub".into(), json!(self.subject));
        m.insert("aud".into(), json!("example-app"));
        m.insert("exp".into(), json!(secs(now + LIFETIME)));
        m.insert("iat".into(), json!(secs(now)));
        m.insert("jti".into(), json!(new_jti(now)));
        m.insert("nonce".into(), json!("nonce00000001"));
        m.insert("auth_time".into(), json!(secs(now)));
        m.insert("sid".into(), json!("qw3zs22rfzqpvyseoyzdddkwy"));
        m.insert("at_hash".into(), json!(token_hash(algorithm, at_hash_of)));
        if let Some(code) = code {
            m.insert("c_hash".into(), json!(token_hash(algorithm, code)));
        }
        m.insert("email".into(), json!("kilgore@kilgore.trout"));
        m.insert("email_verified".into(), json!(true));
        m.insert("name".into(), json!("Kilgore Trout"));
        Value::Object(m)
    }

    fn token_response(&self) -> Result<Vec<u8>, String> {
        let now = SystemTime::now();
        let access = self
            .keys
            .sign_jwt(&self.claims(now, &new_id(), None))
            .map_err(|e| e.to_string())?;
        let id_token = self
            .keys
            .sign_jwt(&self.claims(now, &access, Some("pc7tn6ajdfkgwnabkkngmawyr")))
            .map_err(|e| e.to_string())?;
        let response = TokenResponse {
            access_token: access,
            issued_token_type: None,
            token_type: "bearer".to_owned(),
            expires_in: LIFETIME.as_secs(),
            refresh_token: Some(self.refresh_token.clone()),
            id_token: Some(id_token),
        };
        serde_json::to_vec(&response).map_err(|e| e.to_string())
    }
}

async fn token(State(signer): State<Arc<Signer>>, _body: Bytes) -> Response {
    match signer.token_response() {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error).into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let algorithm = args.next().unwrap_or_else(|| "RS256".to_owned());
    let algorithm = SigningAlgorithm::parse(&algorithm)
        .ok_or_else(|| format!("unknown algorithm {algorithm:?} (RS256, ES256 or EdDSA)"))?;
    let keys = KeySet::from_keys(&Keys {
        signing_key: generate_key(algorithm)?,
        next_key: None,
        verification_keys: Vec::new(),
        next_rotation: SystemTime::now() + LIFETIME,
    })?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    let signer = Arc::new(Signer {
        keys,
        issuer: format!("http://{local}/dex"),
        subject: encode_subject("0-385-28089-0", "mock"),
        refresh_token: RefreshTokenWire {
            id: new_id(),
            token: new_id(),
        }
        .encode(),
    });
    println!("signing hello ({algorithm}) listening on {local}");
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/token", post(token))
        .with_state(signer);
    axum::serve(listener, app).await?;
    Ok(())
}
