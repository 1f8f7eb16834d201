//! Upstream TLS trust: the client every connector uses (`upstream::http_client`)
//! trusts the system CA store as `SSL_CERT_FILE` / `SSL_CERT_DIR` describe it, and a
//! connector's `rootCA` adds to that store.
//!
//! Each check runs the client in a child process (this test binary again, running
//! only [`probe_child`]) so the CA variables never touch this process's
//! environment, which parallel tests share. The upstream is a loopback HTTPS server
//! whose throwaway CA exists only in a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use oxidex::connector::upstream::{self, TlsOptions};

const PROBE_URL: &str = "OXIDEX_TLS_PROBE_URL";
const PROBE_ROOT_CA: &str = "OXIDEX_TLS_PROBE_ROOT_CA";

/// A CA that signed the upstream's certificate, and an unrelated one.
struct Pki {
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    other_ca_file: PathBuf,
    leaf: CertificateDer<'static>,
    leaf_key: PrivateKeyDer<'static>,
}

pub fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("oxidex test upstream CA");
    let other = new_ca("oxidex unrelated CA");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let other_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, other.pem()).unwrap();
    Pki {
        ca_file,
        other_ca_file,
        leaf: leaf.der().clone(),
        leaf_key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
        dir,
    }
}

/// A loopback HTTPS server answering every request with `200 upstream ok`.
async fn serve_https(pki: &Pki) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf.clone()], pki.leaf_key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "upstream ok";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// Runs [`probe_child`] in a child process against `addr` with exactly the given CA
/// variables (and optionally a connector `rootCA`); returns its `PROBE-…` line.
async fn probe(addr: SocketAddr, cert_env: &[(&str, &Path)], root_ca: Option<&Path>) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "upstream_tls::probe_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove(PROBE_ROOT_CA)
        .env(PROBE_URL, format!("https://{addr}/probe"));
    for (name, value) in cert_env {
        command.env(name, value);
    }
    if let Some(path) = root_ca {
        command.env(PROBE_ROOT_CA, path);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "probe process failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The harness prints "test upstream_tls::probe_child ... " on the same line.
    stdout
        .lines()
        .find_map(|l| l.find("PROBE-").map(|at| l[at..].trim_end().to_owned()))
        .unwrap_or_else(|| panic!("the probe did not run: {stdout}"))
}

/// The child side of [`probe`]: one GET through the connectors' client, its
/// outcome printed as `PROBE-OK <status> <body>` or `PROBE-ERR <error chain>`.
/// Ignored in normal runs; [`probe`] runs it with `--ignored` and the variables set.
#[test]
#[ignore = "runs only as the child process of the upstream_tls tests"]
fn probe_child() {
    let Ok(url) = std::env::var(PROBE_URL) else {
        return;
    };
    let mut tls = TlsOptions::default();
    if let Ok(path) = std::env::var(PROBE_ROOT_CA) {
        tls.root_cas
            .push(upstream::read_root_ca("connectors[0].config.rootCA", &path).unwrap());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let line = runtime.block_on(async {
        let client = upstream::http_client(&tls).unwrap();
        match client.get(&url).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                format!("PROBE-OK {status} {body}")
            }
            Err(e) => {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text.push_str(": ");
                    text.push_str(&s.to_string());
                    source = s.source();
                }
                format!("PROBE-ERR {text}")
            }
        }
    });
    println!("{line}");
}

#[tokio::test]
async fn upstream_trusts_a_ca_given_only_through_ssl_cert_file() {
    let pki = pki();
    let addr = serve_https(&pki).await;
    let line = probe(addr, &[("SSL_CERT_FILE", &pki.ca_file)], None).await;
    assert_eq!(line, "PROBE-OK 200 upstream ok");
}

#[tokio::test]
async fn upstream_trusts_a_ca_given_only_through_ssl_cert_dir() {
    let pki = pki();
    let addr = serve_https(&pki).await;
    let certs = pki.dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&pki.ca_file, certs.join("upstream-ca.pem")).unwrap();
    let line = probe(addr, &[("SSL_CERT_DIR", &certs)], None).await;
    assert_eq!(line, "PROBE-OK 200 upstream ok");
}

/// The store is what the variables say and nothing more: no compiled-in roots, and
/// an upstream signed by a CA outside it is refused.
#[tokio::test]
async fn upstream_signed_by_a_ca_outside_the_store_is_refused() {
    let pki = pki();
    let addr = serve_https(&pki).await;
    let line = probe(addr, &[("SSL_CERT_FILE", &pki.other_ca_file)], None).await;
    assert!(line.starts_with("PROBE-ERR "), "{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
}

/// A connector's `rootCA` is trusted in addition to the system store.
#[tokio::test]
async fn root_ca_adds_to_the_system_store() {
    let pki = pki();
    let addr = serve_https(&pki).await;
    let line = probe(
        addr,
        &[("SSL_CERT_FILE", &pki.other_ca_file)],
        Some(&pki.ca_file),
    )
    .await;
    assert_eq!(line, "PROBE-OK 200 upstream ok");
}
