//! TLS pieces: for the clients that build their own rustls configuration (LDAP
//! connector, PostgreSQL storage), and the server side of the HTTPS and gRPC
//! listeners, whose certificate is re-read when its files change.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::InconsistentKeys;
use rustls::SupportedProtocolVersion;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Accepts any server certificate, still checking that the handshake signatures
/// are made with the certificate's key (the LDAP connector's `insecureSkipVerify`,
/// PostgreSQL's `sslmode=require` without a CA).
#[derive(Debug)]
pub(crate) struct AnyServerCert(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A listener's TLS (`web.https`, `grpc.addr`): the protocol versions and ALPN
/// fixed at start; the certificate, key and client CA re-read from their files
/// while running (as Dex's TLS reloader), each change served to new connections.
pub struct ServerTls {
    live: Arc<LiveTls>,
    source: TlsSource,
    /// What the current configuration was built from: the reloader compares
    /// with it, so a change between the start and the first look is not missed.
    loaded: TlsBytes,
}

/// Where the certificate chain and the key are read from.
#[derive(Debug, Clone)]
pub struct PairFiles {
    /// The config block they are named in (`web`, `grpc`), for error messages.
    pub section: &'static str,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a listener's TLS is fixed to, besides its files.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `tlsMinVersion`/`tlsMaxVersion`: `"1.2"`, `"1.3"`, or unset.
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    /// Protocols offered by ALPN, most preferred first.
    pub alpn: Vec<Vec<u8>>,
    /// With a CA file, every client must present a certificate it issued (Go's
    /// `RequireAndVerifyClientCert`; webpki also requires the clientAuth
    /// extended key usage when the certificate lists usages).
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct TlsSource {
    files: PairFiles,
    options: TlsOptions,
}

/// The most a certificate, key or CA file may hold: a chain of a few PEM
/// certificates is a few kilobytes.
const MAX_PEM_FILE: u64 = 1 << 20;

/// The contents of the files as last read, to notice when they change.
#[derive(Clone, PartialEq, Eq)]
struct TlsBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// What new handshakes use; replaced as a whole when the files change.
struct Current {
    config: Arc<rustls::ServerConfig>,
    #[cfg(test)]
    cert: CertificateDer<'static>,
}

struct LiveTls(RwLock<Current>);

impl LiveTls {
    fn config(&self) -> Arc<rustls::ServerConfig> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .config
            .clone()
    }

    fn set(&self, current: Current) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = current;
    }
}

/// Accepts TLS connections with the listener's current configuration.
#[derive(Clone)]
pub struct LiveAcceptor(Arc<LiveTls>);

impl LiveAcceptor {
    /// The acceptor for a connection starting now.
    pub fn current(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.config())
    }
}

impl std::fmt::Debug for LiveAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveAcceptor")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `tlsMinVersion`/`tlsMaxVersion` (`"1.2"`, `"1.3"`, or unset: 1.2 and 1.3)
/// as rustls versions; the config loader has refused any other name.
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let rank = |name: Option<&str>, default: u8| match name {
        None => Ok(default),
        Some("1.2") => Ok(2),
        Some("1.3") => Ok(3),
        Some(other) => Err(format!("{other:?}: supported TLS versions are: 1.2, 1.3")),
    };
    let (min, max) = (rank(min, 2)?, rank(max, 3)?);
    let all: [(u8, &'static SupportedProtocolVersion); 2] =
        [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)];
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|(rank, _)| (min..=max).contains(rank))
        .map(|(_, version)| version)
        .collect();
    if chosen.is_empty() {
        return Err("TLSMinVersion greater than TLSMaxVersion".to_owned());
    }
    Ok(chosen)
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_PEM_FILE} bytes"),
        ));
    }
    Ok(bytes)
}

impl TlsSource {
    fn read(&self) -> Result<TlsBytes, String> {
        let PairFiles { section, cert, key } = &self.files;
        let cert_bytes = read_limited(cert)
            .map_err(|e| format!("{section}.tlsCert {}: cannot read: {e}", cert.display()))?;
        let key_bytes = read_limited(key)
            .map_err(|e| format!("{section}.tlsKey {}: cannot read: {e}", key.display()))?;
        let client_ca = match &self.options.client_ca {
            Some(ca) => Some(read_limited(ca).map_err(|e| {
                format!("{section}.tlsClientCA {}: cannot read: {e}", ca.display())
            })?),
            None => None,
        };
        Ok(TlsBytes {
            cert: cert_bytes,
            key: key_bytes,
            client_ca,
        })
    }

    /// The server configuration from `bytes`: the certificate chain and key
    /// checked to belong together, the client CA parsed; every error names its
    /// file.
    fn build(&self, bytes: &TlsBytes, provider: &Arc<CryptoProvider>) -> Result<Current, String> {
        let versions = versions(
            self.options.min_version.as_deref(),
            self.options.max_version.as_deref(),
        )?;
        let certified = self.files.certified_key(bytes, provider)?;
        #[cfg(test)]
        let cert = certified.cert[0].clone();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("TLS setup: {e}"))?;
        let builder = match (&self.options.client_ca, &bytes.client_ca) {
            (Some(path), Some(ca)) => builder.with_client_cert_verifier(client_verifier(
                self.files.section,
                path,
                ca,
                provider.clone(),
            )?),
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(FixedCert(Arc::new(certified))));
        config.alpn_protocols = self.options.alpn.clone();
        Ok(Current {
            config: Arc::new(config),
            #[cfg(test)]
            cert,
        })
    }
}

/// Verifies client certificates against the CA certificates in `ca` (read
/// from `path`).
fn client_verifier(
    section: &str,
    path: &Path,
    ca: &[u8],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let named = |problem: String| format!("{section}.tlsClientCA {}: {problem}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        let cert = cert.map_err(|e| named(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| named(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(named(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) found".to_owned(),
        ));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| named(e.to_string()))
}

/// One certificate for every handshake (the key is checked against it, which
/// `with_single_cert` would also do, but with the file named in the error).
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl PairFiles {
    /// The certificate chain and key in `bytes`, checked to belong together.
    fn certified_key(
        &self,
        bytes: &TlsBytes,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, String> {
        let section = self.section;
        let cert_file = self.cert.display();
        let key_file = self.key.display();
        let chain = CertificateDer::pem_slice_iter(&bytes.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                format!("{section}.tlsCert {cert_file}: not a PEM certificate chain: {e}")
            })?;
        if chain.is_empty() {
            return Err(format!(
                "{section}.tlsCert {cert_file}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&bytes.key).map_err(|e| {
            format!(
                "{section}.tlsKey {key_file}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"
            )
        })?;
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("{section}.tlsKey {key_file}: unusable private key: {e}"))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(format!(
                "{section}.tlsKey {key_file}: the private key does not match the certificate in \
                 {section}.tlsCert {cert_file}"
            )),
            Err(e) => Err(format!(
                "{section}.tlsCert {cert_file}: unusable certificate: {e}"
            )),
        }
    }
}

impl ServerTls {
    /// Reads and checks the files (a clear error naming the one that is
    /// wrong), and builds the server configuration.
    pub fn load(files: PairFiles, options: TlsOptions) -> Result<Self, String> {
        let source = TlsSource { files, options };
        let bytes = source.read()?;
        let current = source.build(&bytes, &provider())?;
        Ok(Self {
            live: Arc::new(LiveTls(RwLock::new(current))),
            source,
            loaded: bytes,
        })
    }

    pub fn acceptor(&self) -> LiveAcceptor {
        LiveAcceptor(self.live.clone())
    }

    /// Re-reads the files every `interval`, and at once on SIGHUP (as Dex
    /// does), until `shutdown`. When their contents change, files that load
    /// and match are used for new connections (open ones keep theirs); files
    /// that do not are logged and the running configuration stays — until the
    /// files change again.
    pub fn spawn_reloader(
        &self,
        interval: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let live = self.live.clone();
        let source = self.source.clone();
        let loaded = self.loaded.clone();
        // Registered before this returns, so a SIGHUP sent right after is seen.
        let mut hangups = Hangups::new();
        tokio::spawn(async move {
            let provider = provider();
            let mut last_seen = Some(loaded);
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = hangups.next() => {}
                    () = &mut shutdown => return,
                }
                let reading = source.clone();
                let read = crate::blocking::run(move || reading.read()).await;
                let bytes = match read {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err(error)) => {
                        if last_seen.take().is_some() {
                            tracing::error!(
                                "TLS certificate reload: {error}; the current certificate stays"
                            );
                        }
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "TLS certificate reload failed");
                        continue;
                    }
                };
                if last_seen.as_ref() == Some(&bytes) {
                    continue;
                }
                match source.build(&bytes, &provider) {
                    Ok(current) => {
                        live.set(current);
                        tracing::info!(
                            cert = %source.files.cert.display(),
                            "TLS certificate reloaded; new connections get it"
                        );
                    }
                    Err(error) => tracing::error!(
                        "TLS certificate reload: {error}; the current certificate stays"
                    ),
                }
                last_seen = Some(bytes);
            }
        })
    }
}

/// SIGHUP, where there is one; never otherwise.
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .map_err(|error| tracing::warn!(%error, "TLS reload: cannot listen for SIGHUP"))
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut()
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn pair(dir: &Path, name: &str) -> PairFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = PairFiles {
            section: "web",
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn load_error(files: PairFiles) -> String {
        match ServerTls::load(files, TlsOptions::default()) {
            Ok(_) => panic!("expected the pair to be refused"),
            Err(error) => error,
        }
    }

    #[test]
    fn versions_follow_dex_names_and_defaults() {
        let names =
            |min, max| versions(min, max).map(|v| v.iter().map(|v| v.version).collect::<Vec<_>>());
        let both = vec![
            rustls::ProtocolVersion::TLSv1_2,
            rustls::ProtocolVersion::TLSv1_3,
        ];
        assert_eq!(names(None, None).unwrap(), both);
        assert_eq!(names(Some("1.2"), Some("1.3")).unwrap(), both);
        assert_eq!(
            names(Some("1.3"), None).unwrap(),
            [rustls::ProtocolVersion::TLSv1_3]
        );
        assert_eq!(
            names(None, Some("1.2")).unwrap(),
            [rustls::ProtocolVersion::TLSv1_2]
        );
        assert!(
            names(Some("1.3"), Some("1.2"))
                .unwrap_err()
                .contains("greater")
        );
        assert!(names(Some("1.1"), None).unwrap_err().contains("1.2, 1.3"));
    }

    #[tokio::test]
    async fn a_change_before_the_reloader_starts_is_not_missed() {
        let dir = tempfile::tempdir().unwrap();
        let files = pair(dir.path(), "first");
        let tls = ServerTls::load(files.clone(), TlsOptions::default()).unwrap();
        let second = pair(dir.path(), "second");
        std::fs::copy(&second.cert, &files.cert).unwrap();
        std::fs::copy(&second.key, &files.key).unwrap();
        let expected = CertificateDer::from_pem_file(&second.cert).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tls.spawn_reloader(Duration::from_millis(10), async {
            let _ = stopped.await;
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tls.live.0.read().unwrap().cert != expected {
            assert!(
                std::time::Instant::now() < deadline,
                "the change was missed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sighup_reloads_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = pair(dir.path(), "first");
        let tls = ServerTls::load(files.clone(), TlsOptions::default()).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tls.spawn_reloader(Duration::from_secs(3600), async {
            let _ = stopped.await;
        });
        let second = pair(dir.path(), "second");
        std::fs::copy(&second.cert, &files.cert).unwrap();
        std::fs::copy(&second.key, &files.key).unwrap();
        let expected = CertificateDer::from_pem_file(&second.cert).unwrap();
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tls.live.0.read().unwrap().cert != expected {
            assert!(
                std::time::Instant::now() < deadline,
                "SIGHUP did not reload"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[test]
    fn a_pair_loads_and_each_wrong_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = pair(dir.path(), "good");
        assert!(
            ServerTls::load(
                good.clone(),
                TlsOptions {
                    min_version: Some("1.2".to_owned()),
                    max_version: Some("1.3".to_owned()),
                    ..TlsOptions::default()
                }
            )
            .is_ok()
        );

        let other = pair(dir.path(), "other");
        let mismatched = PairFiles {
            section: "web",
            cert: good.cert.clone(),
            key: other.key.clone(),
        };
        let error = load_error(mismatched);
        assert!(
            error.starts_with(&format!("web.tlsKey {}: ", other.key.display()))
                && error.contains("does not match"),
            "{error}"
        );

        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "").unwrap();
        let error = load_error(PairFiles {
            section: "web",
            cert: empty.clone(),
            key: good.key.clone(),
        });
        assert!(error.contains(&format!(
            "web.tlsCert {}: no PEM certificate",
            empty.display()
        )));

        let error = load_error(PairFiles {
            section: "web",
            cert: good.cert.clone(),
            key: good.cert.clone(),
        });
        assert!(error.starts_with("web.tlsKey "), "{error}");

        let huge = dir.path().join("huge.crt");
        std::fs::write(&huge, vec![b'a'; (MAX_PEM_FILE + 1) as usize]).unwrap();
        let error = load_error(PairFiles {
            section: "web",
            cert: huge,
            key: good.key,
        });
        assert!(error.contains("larger than"), "{error}");
    }
}
