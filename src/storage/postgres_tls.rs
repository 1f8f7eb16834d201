//! TLS to PostgreSQL with libpq's `sslmode` meanings (which Dex's lib/pq keeps):
//!
//! - `disable`: no TLS;
//! - `require`: encrypted, certificate not checked — unless `caFile` is given, then
//!   as `verify-ca` (libpq compatibility);
//! - `verify-ca`: the chain must lead to `caFile` (or a public root), any name;
//! - `verify-full`: chain and name (`serverName`, else `host`).
//!
//! Without `caFile` the chain is checked against the system trust store (as for
//! upstream connectors: `SSL_CERT_FILE`/`SSL_CERT_DIR` are honoured).

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::{PostgresSsl, SslMode};

/// The rustls client configuration for `ssl`, or `None` for `disable`.
pub(super) fn client_config(ssl: &PostgresSsl) -> Result<Option<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mode = match (ssl.mode, &ssl.ca_file) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = if mode == SslMode::Require {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AnyServerCert(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &ssl.ca_file {
            Some(file) => {
                for cert in read_certs(file)? {
                    roots.add(cert).map_err(|e| {
                        format!("ssl.caFile {}: unusable certificate: {e}", file.display())
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for error in &found.errors {
                    tracing::warn!(%error, "system trust store: certificate skipped");
                }
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(
                        "no trusted certificates in the system store: set ssl.caFile".into(),
                    );
                }
            }
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?;
        if mode == SslMode::VerifyCa {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
        } else {
            builder.with_webpki_verifier(webpki)
        }
    };
    let config = match (&ssl.cert_file, &ssl.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("ssl.keyFile {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(config))
}

fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", file.display()));
    }
    Ok(certs)
}

/// `verify-ca`: the WebPKI chain check, with a name mismatch forgiven. webpki
/// reports the name only after the chain verified, so no other failure is hidden.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The connector handed to the driver: rustls, verifying `serverName` instead of
/// the host when one is configured.
#[derive(Clone)]
pub(super) struct MakeTls {
    inner: tokio_postgres_rustls::MakeRustlsConnect,
    server_name: Option<String>,
}

impl MakeTls {
    pub(super) fn new(config: ClientConfig, server_name: Option<String>) -> Self {
        Self {
            inner: tokio_postgres_rustls::MakeRustlsConnect::new(config),
            server_name,
        }
    }
}

impl<S> ::postgres::tls::MakeTlsConnect<S> for MakeTls
where
    tokio_postgres_rustls::MakeRustlsConnect: ::postgres::tls::MakeTlsConnect<S>,
{
    type Stream =
        <tokio_postgres_rustls::MakeRustlsConnect as ::postgres::tls::MakeTlsConnect<S>>::Stream;
    type TlsConnect =
        <tokio_postgres_rustls::MakeRustlsConnect as ::postgres::tls::MakeTlsConnect<S>>::TlsConnect;
    type Error =
        <tokio_postgres_rustls::MakeRustlsConnect as ::postgres::tls::MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        let name = self.server_name.as_deref().unwrap_or(domain);
        self.inner.make_tls_connect(name)
    }
}
