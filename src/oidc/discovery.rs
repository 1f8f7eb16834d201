//! The discovery document (`/.well-known/openid-configuration`): Dex's field set
//! and order, rendered once per signing algorithm.

use serde::Serialize;

use crate::config::Settings;
use crate::keys::SigningAlgorithm;

/// The discovery document, in Dex's member order.
#[derive(Serialize)]
struct Document<'a> {
    issuer: &'a str,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    userinfo_endpoint: String,
    device_authorization_endpoint: String,
    introspection_endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_session_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backchannel_logout_supported: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backchannel_logout_session_supported: Option<bool>,
    revocation_endpoint: String,
    grant_types_supported: &'a [String],
    response_types_supported: &'a [String],
    subject_types_supported: [&'static str; 1],
    id_token_signing_alg_values_supported: [&'static str; 1],
    code_challenge_methods_supported: &'a [String],
    scopes_supported: [&'static str; 5],
    token_endpoint_auth_methods_supported: [&'static str; 2],
    revocation_endpoint_auth_methods_supported: [&'static str; 2],
    claims_supported: Vec<&'static str>,
    /// Beyond Dex HEAD, which does not advertise it.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_values_supported: Option<[&'static str; 4]>,
}

/// Rendered documents, one per signing algorithm: the advertised algorithm follows
/// the current key, which can change at a rotation.
pub struct DiscoveryCache {
    rendered: Vec<(SigningAlgorithm, bytes::Bytes)>,
}

impl DiscoveryCache {
    pub fn new(settings: &Settings) -> Result<Self, serde_json::Error> {
        let algorithms = [
            SigningAlgorithm::RS256,
            SigningAlgorithm::ES256,
            SigningAlgorithm::EdDSA,
        ];
        let mut rendered = Vec::with_capacity(algorithms.len());
        for algorithm in algorithms {
            rendered.push((algorithm, bytes::Bytes::from(render(settings, algorithm)?)));
        }
        Ok(Self { rendered })
    }

    pub fn document(&self, algorithm: SigningAlgorithm) -> bytes::Bytes {
        self.rendered
            .iter()
            .find(|(alg, _)| *alg == algorithm)
            .map(|(_, body)| body.clone())
            .unwrap_or_default()
    }
}

pub fn render(
    settings: &Settings,
    algorithm: SigningAlgorithm,
) -> Result<Vec<u8>, serde_json::Error> {
    let issuer = &settings.issuer;
    let sessions = settings.sessions.is_some();
    let mut claims_supported = vec![
        "iss",
        "sub",
        "aud",
        "iat",
        "exp",
        "email",
        "email_verified",
        "locale",
        "name",
        "preferred_username",
        "at_hash",
        "groups",
        "federated_claims",
    ];
    if sessions {
        // Dex HEAD appends `sid`; `auth_time` is in every browser-flow token.
        claims_supported.extend(["sid", "auth_time"]);
    }
    let document = Document {
        issuer: &issuer.url,
        authorization_endpoint: issuer.endpoint("/auth"),
        token_endpoint: issuer.endpoint("/token"),
        jwks_uri: issuer.endpoint("/keys"),
        userinfo_endpoint: issuer.endpoint("/userinfo"),
        device_authorization_endpoint: issuer.endpoint("/device/code"),
        introspection_endpoint: issuer.endpoint("/token/introspect"),
        end_session_endpoint: sessions.then(|| issuer.endpoint("/logout")),
        backchannel_logout_supported: sessions.then_some(true),
        backchannel_logout_session_supported: sessions.then_some(true),
        revocation_endpoint: issuer.endpoint("/token/revoke"),
        grant_types_supported: &settings.oauth2.grant_types,
        response_types_supported: &settings.oauth2.response_types,
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: [algorithm.as_str()],
        code_challenge_methods_supported: &settings.oauth2.pkce_methods,
        scopes_supported: ["openid", "email", "groups", "profile", "offline_access"],
        token_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
        revocation_endpoint_auth_methods_supported: ["client_secret_basic", "client_secret_post"],
        claims_supported,
        prompt_values_supported: sessions.then_some(["none", "login", "consent", "select_account"]),
    };
    serde_json::to_vec_pretty(&document)
}
