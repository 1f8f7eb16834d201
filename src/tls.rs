//! TLS pieces: for the clients that build their own rustls configuration (LDAP
//! connector, PostgreSQL storage), and the HTTPS listener's certificate, re-read
//! when its files change.

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

/// The HTTPS listener's TLS: the protocol versions fixed at start, the
/// certificate and key re-read from their files while running.
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    current: Arc<CurrentCert>,
    files: PairFiles,
    /// What the current pair was loaded from: the reloader compares with it, so a
    /// change between the start and the first look is not missed.
    loaded: PairBytes,
}

/// Where the certificate chain and the key are read from.
#[derive(Debug, Clone)]
pub struct PairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The most a certificate or key file may hold: a chain of a few PEM
/// certificates is a few kilobytes.
const MAX_PEM_FILE: u64 = 1 << 20;

/// The contents of both files as last read, to notice when they change.
#[derive(Clone, PartialEq, Eq)]
struct PairBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// What new handshakes present; replaced as a whole when the files change.
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl std::fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl CurrentCert {
    fn get(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `web.tlsMinVersion`/`tlsMaxVersion` (`"1.2"`, `"1.3"`, or unset: 1.2 and 1.3)
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

impl PairFiles {
    fn read(&self) -> Result<PairBytes, String> {
        let cert = read_limited(&self.cert)
            .map_err(|e| format!("web.tlsCert {}: cannot read: {e}", self.cert.display()))?;
        let key = read_limited(&self.key)
            .map_err(|e| format!("web.tlsKey {}: cannot read: {e}", self.key.display()))?;
        Ok(PairBytes { cert, key })
    }

    /// The certificate chain and key in `bytes`, checked to belong together.
    fn certified_key(
        &self,
        bytes: &PairBytes,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, String> {
        let cert_file = self.cert.display();
        let key_file = self.key.display();
        let chain = CertificateDer::pem_slice_iter(&bytes.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("web.tlsCert {cert_file}: not a PEM certificate chain: {e}"))?;
        if chain.is_empty() {
            return Err(format!(
                "web.tlsCert {cert_file}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&bytes.key).map_err(|e| {
            format!(
                "web.tlsKey {key_file}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"
            )
        })?;
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("web.tlsKey {key_file}: unusable private key: {e}"))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(format!(
                "web.tlsKey {key_file}: the private key does not match the certificate in \
                 web.tlsCert {cert_file}"
            )),
            Err(e) => Err(format!(
                "web.tlsCert {cert_file}: unusable certificate: {e}"
            )),
        }
    }
}

impl ServerTls {
    /// Reads and checks the pair (a clear error naming the file that is wrong),
    /// and builds the server configuration: the versions asked for, HTTP/2 and
    /// HTTP/1.1 offered by ALPN.
    pub fn load(
        files: PairFiles,
        min_version: Option<&str>,
        max_version: Option<&str>,
    ) -> Result<Self, String> {
        let provider = provider();
        let versions = versions(min_version, max_version)?;
        let bytes = files.read()?;
        let certified = files.certified_key(&bytes, &provider)?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(certified))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            current,
            files,
            loaded: bytes,
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// Re-reads the files every `interval`, and at once on SIGHUP (as Dex
    /// does), until `shutdown`. When their contents change, a pair that loads
    /// and matches is served to new connections (open ones keep theirs); one
    /// that does not is logged and the running pair stays — until the files
    /// change again.
    pub fn spawn_reloader(
        &self,
        interval: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let current = self.current.clone();
        let files = self.files.clone();
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
                let read_files = files.clone();
                let read = crate::blocking::run(move || read_files.read()).await;
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
                match files.certified_key(&bytes, &provider) {
                    Ok(certified) => {
                        current.set(Arc::new(certified));
                        tracing::info!(
                            cert = %files.cert.display(),
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
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn load_error(files: PairFiles) -> String {
        match ServerTls::load(files, None, None) {
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
        let tls = ServerTls::load(files.clone(), None, None).unwrap();
        let second = pair(dir.path(), "second");
        std::fs::copy(&second.cert, &files.cert).unwrap();
        std::fs::copy(&second.key, &files.key).unwrap();
        let expected = CertificateDer::from_pem_file(&second.cert).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tls.spawn_reloader(Duration::from_millis(10), async {
            let _ = stopped.await;
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while tls.current.get().cert[0] != expected {
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
        let tls = ServerTls::load(files.clone(), None, None).unwrap();
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
        while tls.current.get().cert[0] != expected {
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
        assert!(ServerTls::load(good.clone(), Some("1.2"), Some("1.3")).is_ok());

        let other = pair(dir.path(), "other");
        let mismatched = PairFiles {
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
            cert: empty.clone(),
            key: good.key.clone(),
        });
        assert!(error.contains(&format!(
            "web.tlsCert {}: no PEM certificate",
            empty.display()
        )));

        let error = load_error(PairFiles {
            cert: good.cert.clone(),
            key: good.cert.clone(),
        });
        assert!(error.starts_with("web.tlsKey "), "{error}");

        let huge = dir.path().join("huge.crt");
        std::fs::write(&huge, vec![b'a'; (MAX_PEM_FILE + 1) as usize]).unwrap();
        let error = load_error(PairFiles {
            cert: huge,
            key: good.key,
        });
        assert!(error.contains("larger than"), "{error}");
    }
}
