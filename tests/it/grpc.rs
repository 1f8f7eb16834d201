//! Dex's gRPC admin API (`api.Dex`) driven by a tonic client generated from the
//! same proto: every RPC with Dex's outcomes and error texts, clients and users
//! created through it logging in (and refreshing, on SQLite: Dex issue #4209),
//! other replicas seeing them, and mutual TLS refusing a client without a
//! certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use oxidex::grpc::api;
use oxidex::grpc::api::dex_client::DexClient;
use oxidex::http::AppState;
use oxidex::server::{self, StoredSync};
use oxidex::shutdown::{self, ShutdownTrigger};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::browser::{Browser, query_param};
use crate::login::{CLIENT_ID, CLIENT_SECRET, PASSWORD_HASH, REDIRECT_URI, password_db_config};
use crate::support::settings_from;

/// bcrypt (cost 10) of "password" with its cost field rewritten: parses as a
/// hash of that cost.
fn hash_with_cost(cost: &str) -> Vec<u8> {
    PASSWORD_HASH
        .replacen("$10$", &format!("${cost}$"), 1)
        .into_bytes()
}

struct Api {
    http: String,
    grpc: std::net::SocketAddr,
    state: AppState,
    sync: Arc<StoredSync>,
    trigger: Option<ShutdownTrigger>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Api {
    /// Starts oxidex with `config` (its `grpc.addr` replaced by a free port) and
    /// the gRPC listener.
    async fn start(make_config: impl FnOnce(&str) -> Value, dir: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = format!("http://{}", listener.local_addr().unwrap());
        let mut config = make_config(&format!("{http}/dex"));
        if config.get("grpc").is_none() {
            config["grpc"] = json!({});
        }
        config["grpc"]["addr"] = json!(grpc.local_addr().unwrap().to_string());
        let settings = settings_from(&config, dir);
        let grpc = server::GrpcListener {
            tcp: grpc,
            tls: server::load_grpc_tls(&settings).unwrap(),
        };
        let (trigger, stop) = shutdown::channel();
        let services = server::start_services(settings, server::system_clock(), stop.clone())
            .await
            .unwrap();
        let state = services.state.clone();
        let sync = services.stored_sync.clone();
        let grpc_addr = grpc.tcp.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let listeners = server::Listeners {
                http: Some(listener),
                https: None,
                telemetry: None,
                grpc: Some(grpc),
            };
            server::serve(services, listeners, stop).await.unwrap();
        });
        Self {
            http,
            grpc: grpc_addr,
            state,
            sync,
            trigger: Some(trigger),
            task: Some(task),
        }
    }

    fn issuer(&self) -> String {
        format!("{}/dex", self.http)
    }

    async fn client(&self) -> DexClient<Channel> {
        let channel = Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        DexClient::new(channel)
    }

    async fn stop(mut self) {
        if let Some(trigger) = self.trigger.take() {
            trigger.fire();
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server did not shut down within 10 s")
                .unwrap();
        }
    }
}

#[track_caller]
fn assert_unknown<T: std::fmt::Debug>(result: Result<T, tonic::Status>, text: &str) {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert_eq!(status.message(), text);
}

fn api_client(id: &str) -> api::Client {
    api::Client {
        id: id.to_owned(),
        secret: "api-secret".to_owned(),
        redirect_uris: vec![REDIRECT_URI.to_owned()],
        trusted_peers: Vec::new(),
        public: false,
        name: "Example App".to_owned(),
        logo_url: String::new(),
    }
}

#[tokio::test]
async fn version_discovery_and_the_connector_rpcs_answer_as_dex() {
    let dir = tempfile::tempdir().unwrap();
    let server = Api::start(password_db_config, dir.path()).await;
    let mut api = server.client().await;

    let version = api
        .get_version(api::VersionReq {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.api, 3);
    assert_eq!(version.server, oxidex::VERSION);

    let discovery = api
        .get_discovery(api::DiscoveryReq {})
        .await
        .unwrap()
        .into_inner();
    let http: Value = reqwest::get(format!(
        "{}/.well-known/openid-configuration",
        server.issuer()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let strings = |key: &str| -> Vec<String> {
        serde_json::from_value(http[key].clone()).unwrap_or_default()
    };
    assert_eq!(discovery.issuer, http["issuer"]);
    assert_eq!(discovery.token_endpoint, http["token_endpoint"]);
    assert_eq!(discovery.jwks_uri, http["jwks_uri"]);
    assert_eq!(
        discovery.authorization_endpoint,
        http["authorization_endpoint"]
    );
    assert_eq!(discovery.userinfo_endpoint, http["userinfo_endpoint"]);
    assert_eq!(
        discovery.introspection_endpoint,
        http["introspection_endpoint"]
    );
    assert_eq!(
        discovery.device_authorization_endpoint,
        http["device_authorization_endpoint"]
    );
    assert_eq!(
        discovery.grant_types_supported,
        strings("grant_types_supported")
    );
    assert_eq!(discovery.scopes_supported, strings("scopes_supported"));
    assert_eq!(discovery.claims_supported, strings("claims_supported"));
    assert_eq!(
        discovery.id_token_signing_alg_values_supported,
        strings("id_token_signing_alg_values_supported")
    );
    assert!(!discovery.response_types_supported.is_empty());

    let off = "api_connectors_crud feature flag is not enabled";
    assert_unknown(api.list_connectors(api::ListConnectorReq {}).await, off);
    assert_unknown(
        api.create_connector(api::CreateConnectorReq { connector: None })
            .await,
        off,
    );
    server.stop().await;
}

#[tokio::test]
async fn clients_are_created_read_updated_listed_and_deleted_as_in_dex() {
    let dir = tempfile::tempdir().unwrap();
    let server = Api::start(password_db_config, dir.path()).await;
    let mut api = server.client().await;

    // Generated id and secret, Dex's shapes.
    let created = api
        .create_client(api::CreateClientReq {
            client: Some(api::Client::default()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!created.already_exists);
    let generated = created.client.unwrap();
    assert_eq!(generated.id.len(), 25, "{}", generated.id);
    assert!(generated.id.starts_with(|c: char| c.is_ascii_lowercase()));
    assert!(
        generated
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
    );
    assert_eq!(generated.secret.len(), 50);
    let public = api
        .create_client(api::CreateClientReq {
            client: Some(api::Client {
                id: "p".to_owned(),
                public: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(public.client.unwrap().secret, "");
    assert_unknown(
        api.create_client(api::CreateClientReq { client: None })
            .await,
        "no client supplied",
    );

    // A second create of the same id: a flag, no client.
    let first = api
        .create_client(api::CreateClientReq {
            client: Some(api_client("api-app")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.client.unwrap().secret, "api-secret");
    let again = api
        .create_client(api::CreateClientReq {
            client: Some(api_client("api-app")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_exists);
    assert_eq!(again.client, None);

    // Get: stored and config clients (with the secret); a missing one is an error.
    let got = api
        .get_client(api::GetClientReq {
            id: "api-app".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .client
        .unwrap();
    assert_eq!(got, api_client("api-app"));
    let config_client = api
        .get_client(api::GetClientReq {
            id: CLIENT_ID.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .client
        .unwrap();
    assert_eq!(config_client.secret, CLIENT_SECRET);
    assert_unknown(
        api.get_client(api::GetClientReq {
            id: "missing".to_owned(),
        })
        .await,
        "not found",
    );

    // Update: empty fields leave values alone.
    let updated = api
        .update_client(api::UpdateClientReq {
            id: "api-app".to_owned(),
            redirect_uris: Vec::new(),
            trusted_peers: vec!["p".to_owned()],
            name: "Renamed".to_owned(),
            logo_url: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!updated.not_found);
    let got = api
        .get_client(api::GetClientReq {
            id: "api-app".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .client
        .unwrap();
    assert_eq!(got.redirect_uris, [REDIRECT_URI]);
    assert_eq!(got.trusted_peers, ["p"]);
    assert_eq!(got.name, "Renamed");
    assert_eq!(got.secret, "api-secret", "the secret cannot change");
    assert!(
        api.update_client(api::UpdateClientReq {
            id: "missing".to_owned(),
            name: "x".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .not_found
    );
    assert_unknown(
        api.update_client(api::UpdateClientReq::default()).await,
        "update client: no client ID supplied",
    );

    // Config clients are read-only, and stay.
    assert_unknown(
        api.create_client(api::CreateClientReq {
            client: Some(api_client(CLIENT_ID)),
        })
        .await,
        "create client: static clients: read-only cannot create client",
    );
    assert_unknown(
        api.update_client(api::UpdateClientReq {
            id: CLIENT_ID.to_owned(),
            name: "x".to_owned(),
            ..Default::default()
        })
        .await,
        "update client: static clients: read-only cannot update client",
    );
    assert_unknown(
        api.delete_client(api::DeleteClientReq {
            id: CLIENT_ID.to_owned(),
        })
        .await,
        "delete client: static clients: read-only cannot delete client",
    );

    let listed = api
        .list_clients(api::ListClientReq {})
        .await
        .unwrap()
        .into_inner()
        .clients;
    let mut ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.last(), Some(&CLIENT_ID), "config clients come last");
    ids.sort_unstable();
    let mut want = vec!["api-app", "p", CLIENT_ID, generated.id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);

    let deleted = api
        .delete_client(api::DeleteClientReq {
            id: "api-app".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!deleted.not_found);
    let deleted = api
        .delete_client(api::DeleteClientReq {
            id: "api-app".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.not_found);
    assert!(
        server.state.live().provider.client("api-app").is_none(),
        "a deleted client is gone from the provider at once"
    );
    server.stop().await;
}

#[tokio::test]
async fn passwords_follow_dex_rules_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let server = Api::start(password_db_config, dir.path()).await;
    let mut api = server.client().await;
    let password = |email: &str, hash: Vec<u8>, user_id: &str| api::CreatePasswordReq {
        password: Some(api::Password {
            email: email.to_owned(),
            hash,
            username: "kilgore".to_owned(),
            user_id: user_id.to_owned(),
        }),
    };

    assert_unknown(
        api.create_password(api::CreatePasswordReq { password: None })
            .await,
        "no password supplied",
    );
    assert_unknown(
        api.create_password(password("k@example.com", hash_with_cost("10"), ""))
            .await,
        "no user ID supplied",
    );
    assert_unknown(
        api.create_password(password("k@example.com", Vec::new(), "k"))
            .await,
        "no hash of password supplied",
    );
    assert_unknown(
        api.create_password(password("k@example.com", hash_with_cost("04"), "k"))
            .await,
        "given hash cost = 4 does not meet minimum cost requirement = 10",
    );
    assert_unknown(
        api.create_password(password("k@example.com", hash_with_cost("17"), "k"))
            .await,
        "given hash cost = 17 is above upper bound cost = 16, recommended cost = 12",
    );
    let garbage = api
        .create_password(password("k@example.com", b"plain text".to_vec(), "k"))
        .await
        .unwrap_err();
    assert!(
        garbage.message().starts_with("parsing bcrypt hash: "),
        "{garbage:?}"
    );
    assert_unknown(
        api.create_password(password("ADMIN@example.com", hash_with_cost("10"), "k"))
            .await,
        "create password: static passwords: read-only cannot create password",
    );

    let created = api
        .create_password(password("Kilgore@Example.com", hash_with_cost("10"), "k"))
        .await
        .unwrap()
        .into_inner();
    assert!(!created.already_exists);
    let again = api
        .create_password(password("kilgore@example.COM", hash_with_cost("10"), "k"))
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_exists);

    let verify = |email: &str, password: &str| api::VerifyPasswordReq {
        email: email.to_owned(),
        password: password.to_owned(),
    };
    let right = api
        .verify_password(verify("KILGORE@example.com", "password"))
        .await
        .unwrap()
        .into_inner();
    assert!(right.verified && !right.not_found);
    let wrong = api
        .verify_password(verify("kilgore@example.com", "wrong"))
        .await
        .unwrap()
        .into_inner();
    assert!(!wrong.verified && !wrong.not_found);
    let unknown = api
        .verify_password(verify("nobody@example.com", "password"))
        .await
        .unwrap()
        .into_inner();
    assert!(!unknown.verified && unknown.not_found);
    let config_user = api
        .verify_password(verify("admin@example.com", "password"))
        .await
        .unwrap()
        .into_inner();
    assert!(config_user.verified);
    assert_unknown(
        api.verify_password(verify("", "password")).await,
        "no email supplied",
    );
    assert_unknown(
        api.verify_password(verify("kilgore@example.com", "")).await,
        "no password to verify supplied",
    );

    assert_unknown(
        api.update_password(api::UpdatePasswordReq {
            email: "kilgore@example.com".to_owned(),
            ..Default::default()
        })
        .await,
        "nothing to update",
    );
    assert_unknown(
        api.update_password(api::UpdatePasswordReq::default()).await,
        "no email supplied",
    );
    assert!(
        api.update_password(api::UpdatePasswordReq {
            email: "nobody@example.com".to_owned(),
            new_username: "x".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .not_found
    );
    assert_unknown(
        api.update_password(api::UpdatePasswordReq {
            email: "kilgore@example.com".to_owned(),
            new_hash: hash_with_cost("05"),
            ..Default::default()
        })
        .await,
        "given hash cost = 5 does not meet minimum cost requirement = 10",
    );
    assert!(
        !api.update_password(api::UpdatePasswordReq {
            email: "kilgore@example.com".to_owned(),
            new_username: "trout".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .not_found
    );

    let listed = api
        .list_passwords(api::ListPasswordReq {})
        .await
        .unwrap()
        .into_inner()
        .passwords;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|p| p.hash.is_empty()), "never a hash");
    assert_eq!(listed[0].email, "kilgore@example.com");
    assert_eq!(listed[0].username, "trout");
    assert_eq!(listed[1].email, "admin@example.com");

    assert_unknown(
        api.delete_password(api::DeletePasswordReq {
            email: "admin@example.com".to_owned(),
        })
        .await,
        "delete password: static passwords: read-only cannot delete password",
    );
    let deleted = |email: &str| api::DeletePasswordReq {
        email: email.to_owned(),
    };
    assert!(
        !api.delete_password(deleted("KILGORE@example.com"))
            .await
            .unwrap()
            .into_inner()
            .not_found
    );
    assert!(
        api.delete_password(deleted("kilgore@example.com"))
            .await
            .unwrap()
            .into_inner()
            .not_found
    );
    server.stop().await;
}

/// The `sub` claim of an ID token (not verified: the token endpoint just made it).
fn subject_of(id_token: &str) -> String {
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

async fn token_call(
    server: &Api,
    client: &str,
    secret: &str,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        reqwest::Client::new()
            .post(format!("{}/token", server.issuer()))
            .basic_auth(client, Some(secret))
            .form(form)
            .send(),
    )
    .await
    .expect("/token answers (Dex issue #4209 hangs here)")
    .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn sqlite_password_config(issuer: &str, file: &Path) -> Value {
    let mut config = password_db_config(issuer);
    config["storage"] = json!({"type": "sqlite3", "config": {"file": file}});
    config
}

/// A client and a user created through the API log in through the browser
/// flow, refresh (on SQLite, where Dex issue #4209 hangs), are listed by the
/// ID token's `sub`, revoked, and then refused.
#[tokio::test]
async fn api_client_and_user_log_in_refresh_list_and_revoke_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("oxidex.db");
    let server = Api::start(|issuer| sqlite_password_config(issuer, &db), dir.path()).await;
    let mut api = server.client().await;
    api.create_client(api::CreateClientReq {
        client: Some(api_client("api-app")),
    })
    .await
    .unwrap();
    let created = api
        .create_password(api::CreatePasswordReq {
            password: Some(api::Password {
                email: "Kilgore@example.com".to_owned(),
                hash: PASSWORD_HASH.as_bytes().to_vec(),
                username: "kilgore".to_owned(),
                user_id: "kilgore-id".to_owned(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!created.already_exists);

    let auth = format!(
        "{}/auth?client_id=api-app&redirect_uri={}&response_type=code&scope=openid+email+offline_access&state=s1",
        server.issuer(),
        REDIRECT_URI
    );
    let back = crate::login::browser_login_in(
        &Browser::new(&server.http),
        &auth,
        "kilgore@example.com",
        "password",
    )
    .await;
    let code = query_param(&back, "code").expect("code");
    let (status, tokens) = token_call(
        &server,
        "api-app",
        "api-secret",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let sub = subject_of(tokens["id_token"].as_str().unwrap());
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    let (status, refreshed) = token_call(
        &server,
        "api-app",
        "api-secret",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let refresh = refreshed["refresh_token"].as_str().unwrap().to_owned();

    let listed = api
        .list_refresh(api::ListRefreshReq {
            user_id: sub.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .refresh_tokens;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].client_id, "api-app");
    assert!(!listed[0].id.is_empty());
    assert!(listed[0].created_at > 1_600_000_000 && listed[0].last_used >= listed[0].created_at);
    // A raw user id is not a `sub`.
    assert_eq!(
        api.list_refresh(api::ListRefreshReq {
            user_id: "kilgore-id".to_owned(),
        })
        .await
        .unwrap_err()
        .code(),
        Code::Unknown
    );
    let stranger = oxidex::oidc::subject::encode_subject("nobody", "local");
    assert!(
        api.list_refresh(api::ListRefreshReq { user_id: stranger })
            .await
            .unwrap()
            .into_inner()
            .refresh_tokens
            .is_empty()
    );

    let revoke = api::RevokeRefreshReq {
        user_id: sub.clone(),
        client_id: "api-app".to_owned(),
    };
    assert!(
        !api.revoke_refresh(revoke.clone())
            .await
            .unwrap()
            .into_inner()
            .not_found
    );
    let (status, refused) = token_call(
        &server,
        "api-app",
        "api-secret",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        api.revoke_refresh(revoke)
            .await
            .unwrap()
            .into_inner()
            .not_found
    );

    // Deleting the client through the API ends its token endpoint access.
    api.delete_client(api::DeleteClientReq {
        id: "api-app".to_owned(),
    })
    .await
    .unwrap();
    let (status, _) = token_call(
        &server,
        "api-app",
        "api-secret",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 401);
    server.stop().await;
}

/// Two replicas on one database: what one creates, the other serves after its
/// next read of storage (forced here instead of waiting for the poll).
#[tokio::test]
async fn a_client_created_on_one_replica_is_used_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = Api::start(|issuer| sqlite_password_config(issuer, &db), dir_a.path()).await;
    let b = Api::start(|issuer| sqlite_password_config(issuer, &db), dir_b.path()).await;
    assert!(b.state.live().provider.client("api-app").is_none());
    a.client()
        .await
        .create_client(api::CreateClientReq {
            client: Some(api_client("api-app")),
        })
        .await
        .unwrap();
    assert!(a.state.live().provider.client("api-app").is_some());
    b.sync.sync(&b.state).await;
    let on_b = b.state.live();
    let client = on_b
        .provider
        .client("api-app")
        .expect("replica B sees the client");
    assert_eq!(client.redirect_uris, [REDIRECT_URI]);
    // B's /auth accepts it (the password form, not an error page).
    let auth = format!(
        "{}/auth?client_id=api-app&redirect_uri={}&response_type=code&scope=openid&state=s",
        b.issuer(),
        REDIRECT_URI
    );
    let (_, status, _) = Browser::new(&b.http).follow(&auth).await.page();
    assert_eq!(status, 200);
    a.stop().await;
    b.stop().await;
}

struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// (certificate PEM, key PEM) for `name`, for a server or a client.
    fn issue(&self, name: &str, client: bool) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }
}

async fn tls_client(
    addr: std::net::SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<api::VersionResp, String> {
    // Tests link both rustls providers; tonic's client takes the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .map(hyper_util::rt::TokioIo::new)
        }))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    DexClient::new(channel)
        .get_version(api::VersionReq {})
        .await
        .map(|r| r.into_inner())
        .map_err(|e| format!("call: {e:?}"))
}

/// The API with mutual TLS: a server certificate for `localhost` from
/// `server_pki`, client certificates from `client_pki`. The files stay in
/// `dir` (certificate, key, client CA paths are returned) so a test can
/// replace them.
async fn start_mutual_tls(
    dir: &Path,
    server_pki: &Pki,
    client_pki: &Pki,
) -> (Api, [std::path::PathBuf; 3], tempfile::TempDir) {
    let (cert, key) = server_pki.issue("localhost", false);
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let files = [
        write("server.pem", &cert),
        write("server.key", &key),
        write("client-ca.pem", &client_pki.ca_pem()),
    ];
    let config_dir = tempfile::tempdir().unwrap();
    let [cert, key, client_ca] = files.clone();
    let server = Api::start(
        |issuer| {
            let mut config = password_db_config(issuer);
            config["grpc"] = json!({
                "tlsCert": cert, "tlsKey": key, "tlsClientCA": client_ca
            });
            config
        },
        config_dir.path(),
    )
    .await;
    (server, files, config_dir)
}

/// With `grpc.tlsClientCA` a client must present a certificate from that CA:
/// none, or one from another CA, is refused before any RPC.
#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server_pki = Pki::new("server CA");
    let client_pki = Pki::new("client CA");
    let other_pki = Pki::new("other CA");
    let (server, _files, _config_dir) =
        start_mutual_tls(dir.path(), &server_pki, &client_pki).await;
    let ca = server_pki.ca_pem();
    let admin = client_pki.issue("admin", true);
    let version = tls_client(server.grpc, &ca, Some(&admin))
        .await
        .expect("a certificate from the client CA is accepted");
    assert_eq!(version.api, 3);
    assert!(
        tls_client(server.grpc, &ca, None).await.is_err(),
        "no client certificate must be refused"
    );
    let stranger = other_pki.issue("admin", true);
    assert!(
        tls_client(server.grpc, &ca, Some(&stranger)).await.is_err(),
        "a certificate from another CA must be refused"
    );
    // Plaintext is not spoken on a TLS port.
    let plain = Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            DexClient::new(channel)
                .get_version(api::VersionReq {})
                .await
                .is_err()
        );
    }
    server.stop().await;
}

/// The API's certificate and client CA are re-read while running, as the
/// HTTPS listener's certificate: after the files switch to a pair from another
/// CA, new connections get it (a client trusting only the new CA gets in, one
/// trusting only the old CA no longer does), and a new client CA decides who
/// gets in, all without a restart.
#[tokio::test]
async fn a_rotated_api_certificate_reaches_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old_pki = Pki::new("old server CA");
    let new_pki = Pki::new("new server CA");
    let client_pki = Pki::new("client CA");
    let (server, [cert, key, client_ca], _config_dir) =
        start_mutual_tls(dir.path(), &old_pki, &client_pki).await;
    let admin = client_pki.issue("admin", true);
    tls_client(server.grpc, &old_pki.ca_pem(), Some(&admin))
        .await
        .expect("the first certificate is served");

    let (new_cert, new_key) = new_pki.issue("localhost", false);
    // The key first: a reload between the two writes sees a mismatched pair,
    // keeps the old one, and picks up the pair at its next look.
    std::fs::write(&key, new_key).unwrap();
    std::fs::write(&cert, new_cert).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if tls_client(server.grpc, &new_pki.ca_pem(), Some(&admin))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not served within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        tls_client(server.grpc, &old_pki.ca_pem(), Some(&admin))
            .await
            .is_err(),
        "the old certificate is no longer served"
    );

    // A new client CA replaces the old one for new connections, as in Dex.
    let new_client_pki = Pki::new("new client CA");
    let new_admin = new_client_pki.issue("admin", true);
    std::fs::write(&client_ca, new_client_pki.ca_pem()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while tls_client(server.grpc, &new_pki.ca_pem(), Some(&new_admin))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new client CA was not used within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        tls_client(server.grpc, &new_pki.ca_pem(), Some(&admin))
            .await
            .is_err(),
        "a certificate of the replaced client CA is refused"
    );
    server.stop().await;
}
