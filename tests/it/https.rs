//! The HTTPS listener (`web.https`, `web.tlsCert`, `web.tlsKey`) with real rustls
//! clients: the same app as on `web.http`, the protocol versions asked for, a
//! bounded handshake, the openidconnect crate's whole login with `Secure`
//! cookies, certificate rotation without dropping connections, and the drain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use rcgen::{CertificateParams, CertifiedIssuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use oxidex::http::serve::ConnectionLimits;
use oxidex::{server, shutdown};

use crate::browser::{form_action, input_value, location, query_param};
use crate::login::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, password_db_config};
use crate::support::settings_from;
use crate::upstream_tls::new_ca;

/// A throwaway CA and the files the server reads its pair from.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_pem: String,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let ca = new_ca("oxidex test HTTPS CA");
        let ca_pem = ca.pem();
        let pki = Self {
            ca,
            ca_pem,
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
        };
        let (cert, key) = pki.leaf();
        pki.install(&cert, &key);
        pki
    }

    /// A new certificate for 127.0.0.1 and its key, both PEM.
    fn leaf(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &self.ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the pair as cert-manager and systemd do: a new file renamed over
    /// the old one.
    fn install(&self, cert: &str, key: &str) {
        for (file, text) in [(&self.cert_file, cert), (&self.key_file, key)] {
            let next = file.with_extension("next");
            std::fs::write(&next, text).unwrap();
            std::fs::rename(&next, file).unwrap();
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .unwrap();
        roots
    }

    /// A rustls client (ring, as a different TLS stack from the server's
    /// aws-lc-rs) trusting only this CA, limited to `versions`.
    fn client(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsClient {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(self.roots())
        .with_no_client_auth();
        TlsClient(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// reqwest over rustls, trusting only this CA, keeping cookies in `jar`.
    fn reqwest(&self, jar: Arc<reqwest::cookie::Jar>) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar)
            .build()
            .unwrap()
    }
}

struct TlsClient(tokio_rustls::TlsConnector);

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

impl TlsClient {
    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TlsStream> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::from(addr.ip());
        self.0.connect(name, tcp).await
    }
}

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// One HTTP/1.1 request on an open connection (kept alive); the status code.
async fn status_on(stream: &mut TlsStream, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "connection closed"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head[9..12].parse().unwrap()
}

struct Running {
    https: SocketAddr,
    http: SocketAddr,
    issuer: String,
    pki: Pki,
    trigger: Option<shutdown::ShutdownTrigger>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn stop(mut self) {
        if let Some(trigger) = self.trigger.take() {
            trigger.fire();
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not shut down within 10 s")
            .unwrap();
    }
}

const DISCOVERY: &str = "/dex/.well-known/openid-configuration";

/// Starts oxidex with both `web.http` and `web.https` (the issuer on https);
/// `patch` edits the config, `limits` the connection limits.
async fn start(
    make_config: impl FnOnce(&str) -> Value,
    patch: impl FnOnce(&mut Value),
    limits: Option<ConnectionLimits>,
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (https_addr, http_addr) = (https.local_addr().unwrap(), http.local_addr().unwrap());
    let issuer = format!("https://{https_addr}/dex");
    let mut config = make_config(&issuer);
    config["web"] = json!({
        "http": http_addr.to_string(),
        "https": https_addr.to_string(),
        "tlsCert": pki.cert_file,
        "tlsKey": pki.key_file,
    });
    patch(&mut config);
    let settings = settings_from(&config, dir.path());
    let tls = server::load_tls(&settings).unwrap().unwrap();
    let (trigger, stop) = shutdown::channel();
    let mut services = server::start_services(settings, server::system_clock(), stop.clone())
        .await
        .unwrap();
    if let Some(limits) = limits {
        services.limits = limits;
    }
    let listeners = server::Listeners {
        http: Some(http),
        https: Some(server::HttpsListener {
            tcp: https,
            tls,
            reload_interval: Duration::from_millis(50),
        }),
        telemetry: None,
        grpc: None,
    };
    let task = tokio::spawn(async move {
        server::serve(services, listeners, stop).await.unwrap();
    });
    Running {
        https: https_addr,
        http: http_addr,
        issuer,
        pki,
        trigger: Some(trigger),
        task,
        _dir: dir,
    }
}

#[tokio::test]
async fn both_listeners_serve_the_app_with_the_versions_asked_for_and_a_bounded_handshake() {
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_millis(500),
        ..ConnectionLimits::default()
    };
    let server = start(password_db_config, |_| {}, Some(limits)).await;

    // reqwest (rustls) over HTTPS, and plain HTTP on web.http: the same issuer.
    let client = server.pki.reqwest(Arc::default());
    let discovery: Value = client
        .get(format!("https://{}{DISCOVERY}", server.https))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], server.issuer.as_str());
    let plain: Value = reqwest::get(format!("http://{}{DISCOVERY}", server.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plain, discovery);

    // Dex's defaults: TLS 1.2 and 1.3.
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut stream = server
            .pki
            .client(&[version])
            .connect(server.https)
            .await
            .unwrap();
        assert_eq!(status_on(&mut stream, DISCOVERY).await, 200);
    }

    // A peer that never sends a ClientHello is dropped after the header timeout.
    let mut silent = TcpStream::connect(server.https).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("a silent TLS peer is never dropped");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    server.stop().await;

    // tlsMinVersion 1.3 refuses a TLS 1.2-only client.
    let strict = start(
        password_db_config,
        |c| c["web"]["tlsMinVersion"] = json!("1.3"),
        None,
    )
    .await;
    let tls12 = strict.pki.client(&[&rustls::version::TLS12]);
    assert!(tls12.connect(strict.https).await.is_err());
    let tls13 = strict.pki.client(&[&rustls::version::TLS13]);
    let mut stream = tls13.connect(strict.https).await.unwrap();
    assert_eq!(status_on(&mut stream, DISCOVERY).await, 200);
    strict.stop().await;
}

#[tokio::test]
async fn openidconnect_logs_in_over_https_and_cookies_are_secure() {
    let server = start(password_db_config, |_| {}, None).await;
    let http = server.pki.reqwest(Arc::default());

    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(server.issuer.clone()).unwrap(), &http)
            .await
            .unwrap();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(CLIENT_ID.into()),
        Some(ClientSecret::new(CLIENT_SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, state, nonce) = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    // The login as a browser does it, keeping every Set-Cookie seen.
    let base = format!("https://{}", server.https);
    let mut cookies = Vec::new();
    let (_, form) = follow_recording(&http, &base, auth_url.as_str(), &mut cookies).await;
    let posted = http
        .post(absolute(&base, &form_action(&form)))
        .form(&[
            ("login", "admin@example.com"),
            ("password", "password"),
            ("csrf_token", &input_value(&form, "csrf_token")),
        ])
        .send()
        .await
        .unwrap();
    record(&posted, &mut cookies);
    assert_eq!(posted.status(), 303);
    let (_, approval) = follow_recording(&http, &base, &location(&posted), &mut cookies).await;
    let approved = http
        .post(absolute(&base, &form_action(&approval)))
        .form(&[
            ("approval", "approve"),
            ("csrf_token", &input_value(&approval, "csrf_token")),
        ])
        .send()
        .await
        .unwrap();
    record(&approved, &mut cookies);
    assert_eq!(approved.status(), 303);
    let back = location(&approved);
    assert!(back.starts_with(REDIRECT_URI), "{back}");
    assert_eq!(query_param(&back, "state").unwrap(), *state.secret());
    let code = query_param(&back, "code").unwrap();
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    let claims = tokens
        .id_token()
        .unwrap()
        .claims(&client.id_token_verifier(), &nonce)
        .unwrap();
    assert_eq!(claims.email().unwrap().as_str(), "admin@example.com");
    assert_eq!(claims.issuer().as_str(), server.issuer);

    // Both the browser cookie and the session cookie are `Secure` on an
    // https issuer.
    for name in ["oxidex_browser=", "dex_session="] {
        let set: Vec<_> = cookies.iter().filter(|c| c.starts_with(name)).collect();
        assert!(!set.is_empty(), "{name} never set: {cookies:?}");
        for cookie in set {
            assert!(cookie.contains("; Secure"), "{cookie}");
        }
    }
    server.stop().await;
}

fn record(response: &reqwest::Response, cookies: &mut Vec<String>) {
    for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
        cookies.push(value.to_str().unwrap().to_owned());
    }
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("https://") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

/// Follows redirects on the server, recording cookies; the final page.
async fn follow_recording(
    http: &reqwest::Client,
    base: &str,
    url: &str,
    cookies: &mut Vec<String>,
) -> (String, String) {
    let mut url = absolute(base, url);
    for _ in 0..10 {
        let response = http.get(&url).send().await.unwrap();
        record(&response, cookies);
        if !response.status().is_redirection() {
            assert_eq!(response.status(), 200, "{url}");
            return (url, response.text().await.unwrap());
        }
        url = absolute(base, &location(&response));
    }
    panic!("too many redirects");
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections_and_open_ones_keep_working() {
    let server = start(password_db_config, |_| {}, None).await;
    let client = server
        .pki
        .client(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    let first = std::fs::read_to_string(&server.pki.cert_file).unwrap();
    let mut old = client.connect(server.https).await.unwrap();
    assert_eq!(presented(&old), pem_der(&first));
    assert_eq!(status_on(&mut old, DISCOVERY).await, 200);

    let (cert, key) = server.pki.leaf();
    server.pki.install(&cert, &key);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stream = client.connect(server.https).await.unwrap();
        if presented(&stream) == pem_der(&cert) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate is never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection made with the old certificate is still served.
    assert_eq!(status_on(&mut old, DISCOVERY).await, 200);

    // A bad new pair (a key of another certificate, then not PEM at all) is
    // refused and the running certificate stays.
    let (_, other_key) = server.pki.leaf();
    let (third, _) = server.pki.leaf();
    server.pki.install(&third, &other_key);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut stream = client.connect(server.https).await.unwrap();
    assert_eq!(presented(&stream), pem_der(&cert));
    assert_eq!(status_on(&mut stream, DISCOVERY).await, 200);
    server.pki.install("not a certificate", "not a key");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stream = client.connect(server.https).await.unwrap();
    assert_eq!(presented(&stream), pem_der(&cert));
    // Removed files too.
    std::fs::remove_file(&server.pki.key_file).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stream = client.connect(server.https).await.unwrap();
    assert_eq!(presented(&stream), pem_der(&cert));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_requests_in_flight_over_tls() {
    let (forge, exchanges) = crate::shutdown::slow_forge(Duration::from_millis(1500)).await;
    let server = start(
        |issuer| {
            let mut config = crate::support::base_config(issuer);
            config["oauth2"] = json!({"skipApprovalScreen": true});
            config["connectors"] = json!([{
                "type": "gitea", "id": "forge", "name": "Forge",
                "config": {
                    "baseURL": forge, "clientID": "oxidex", "clientSecret": "forge-secret",
                    "redirectURI": format!("{issuer}/callback")
                }
            }]);
            config
        },
        |_| {},
        None,
    )
    .await;
    let browser = server.pki.reqwest(Arc::default());
    let started = browser
        .get(format!("{}/auth/forge", server.issuer))
        .query(&[
            ("client_id", "example-app"),
            ("redirect_uri", crate::shutdown::CLIENT_REDIRECT),
            ("response_type", "code"),
            ("scope", "openid"),
            ("state", "client-state"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 302);
    let upstream = url::Url::parse(started.headers()["location"].to_str().unwrap()).unwrap();
    let state = query_param(upstream.as_str(), "state").unwrap();
    let callback = format!("{}/callback?code=forge-code&state={state}", server.issuer);
    let in_flight = tokio::spawn(async move { browser.get(callback).send().await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while exchanges.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the callback never reached the forge"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let https = server.https;
    let trigger = server.trigger.as_ref().unwrap();
    trigger.fire();
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(https).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the HTTPS listener still accepts connections");
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight failed");
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(crate::shutdown::CLIENT_REDIRECT),
        "{location}"
    );
    server.stop().await;
}

#[test]
fn check_config_names_the_tls_file_that_is_wrong_and_bad_listen_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (_, other_key) = pki.leaf();
    let wrong_key = dir.path().join("other.key");
    std::fs::write(&wrong_key, other_key).unwrap();
    let check = |web: Value| {
        let mut config = password_db_config("https://127.0.0.1:5554/dex");
        config["web"] = web;
        let path = dir.path().join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_oxidex"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let web =
        |key: &Path| json!({"https": "127.0.0.1:5554", "tlsCert": pki.cert_file, "tlsKey": key});
    let (code, _) = check(web(&pki.key_file));
    assert_eq!(code, Some(0));
    let (code, stderr) = check(web(&wrong_key));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(&format!("web.tlsKey {}", wrong_key.display()))
            && stderr.contains("does not match the certificate"),
        "{stderr}"
    );
    let (code, stderr) = check(web(&dir.path().join("missing.key")));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("missing.key: cannot read"), "{stderr}");
    let (code, stderr) = check(json!({"http": "localhost"}));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("web.http") && stderr.contains("missing port"),
        "{stderr}"
    );

    // The gRPC listener's files and address are checked the same way.
    let check_grpc = |grpc: Value| {
        let mut config = password_db_config("http://127.0.0.1:5556/dex");
        config["grpc"] = grpc;
        let path = dir.path().join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_oxidex"))
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let grpc = |key: &Path, ca: &Path| json!({"addr": "127.0.0.1:5557", "tlsCert": pki.cert_file, "tlsKey": key, "tlsClientCA": ca});
    let (code, stderr) = check_grpc(grpc(&pki.key_file, &pki.cert_file));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = check_grpc(grpc(&wrong_key, &pki.cert_file));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(&format!("grpc.tlsKey {}", wrong_key.display()))
            && stderr.contains("does not match the certificate"),
        "{stderr}"
    );
    let (code, stderr) = check_grpc(grpc(&pki.key_file, &wrong_key));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(&format!("grpc.tlsClientCA {}", wrong_key.display())),
        "{stderr}"
    );
    let (code, stderr) = check_grpc(json!({"addr": "localhost"}));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("grpc.addr") && stderr.contains("missing port"),
        "{stderr}"
    );
}
