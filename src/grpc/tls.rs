//! TLS for the gRPC listener: rustls with the aws-lc-rs provider chosen
//! explicitly (as the other TLS code here), Dex's version choices
//! (`tlsMinVersion`/`tlsMaxVersion`, default 1.2–1.3) and, with `tlsClientCA`,
//! a client certificate required and verified against that CA (Go's
//! `RequireAndVerifyClientCert`; webpki also requires the clientAuth extended
//! key usage when the certificate lists usages).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::GrpcError;
use crate::config::settings::GrpcTls;

/// Handshakes in progress at once; further connections wait to be accepted.
const MAX_HANDSHAKES: usize = 64;

/// Reads the certificate, key and client CA, and builds the server config. A
/// bad file fails the start (Dex: `invalid config: get gRPC TLS: …`).
pub fn server_config(tls: &GrpcTls) -> Result<Arc<ServerConfig>, GrpcError> {
    let fail = |message: String| GrpcError::Tls(message);
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(format!("loading TLS keypair: {}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(fail(format!(
            "loading TLS keypair: {}: no PEM certificate in it",
            tls.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| fail(format!("loading TLS keypair: {}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        match (tls.min_version.as_str(), tls.max_version.as_str()) {
            ("1.3", _) => vec![&rustls::version::TLS13],
            (_, "1.2") => vec![&rustls::version::TLS12],
            _ => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| fail(format!("TLS versions: {e}")))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    fail(format!(
                        "reading from client CA file: {}: {e}",
                        ca.display()
                    ))
                })?;
            for cert in cas {
                roots
                    .add(cert)
                    .map_err(|_| fail("failed to parse client CA".to_owned()))?;
            }
            if roots.is_empty() {
                return Err(fail("failed to parse client CA".to_owned()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| fail(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| fail(format!("loading TLS keypair: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections on `listener` and hands over those whose TLS handshake
/// finished within `handshake_timeout`; a failed handshake is logged at debug
/// level and dropped. Ends when the receiver is dropped.
pub fn accept(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
) -> mpsc::Receiver<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (sender, receiver) = mpsc::channel(MAX_HANDSHAKES);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = sender.closed() => return,
                permit = handshakes.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = sender.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%error, "grpc: accept failed");
                        // Out of file descriptors and the like: back off a little.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "grpc: TLS handshake refused")
                    }
                    Err(_) => tracing::debug!(%peer, "grpc: TLS handshake timed out"),
                }
            });
        }
    });
    receiver
}
