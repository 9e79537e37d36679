//! Mutual TLS between regions (rustls): each region holds a certificate issued by the
//! operators' own CA whose DNS name (SAN) is its region name. A node accepts a peer connection
//! only with a certificate chained to that CA, valid now, that names one of its configured
//! peers; as a client it accepts a server only if the certificate names the peer it meant to
//! reach — whatever host or address the peer's URL uses. Certificate files are re-read when
//! they change (renewal needs no restart).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::TlsConfig;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls: {0}")]
    Verifier(String),
}

/// The crypto provider for every TLS config the node builds (named explicitly: more than one
/// is compiled into the dependency tree, and rustls will not guess).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn file_error(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| file_error(ca, e))?;
    }
    Ok(Arc::new(roots))
}

/// Server side: a client certificate chained to the CA is required.
pub fn server_config(files: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    Ok(Arc::new(config))
}

/// Client side for one peer: the server's chain must lead to the CA and its certificate must
/// name `peer`; ours is presented.
pub fn client_config(files: &TlsConfig, peer: &str) -> Result<ClientConfig, TlsError> {
    let inner = WebPkiServerVerifier::builder_with_provider(roots(&files.ca)?, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let name = ServerName::try_from(peer.to_string())
        .map_err(|e| TlsError::Verifier(format!("peer name {peer}: {e}")))?;
    let verifier = PeerVerifier { inner, name };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
    Ok(config)
}

/// Which of `peers` a verified client certificate names (its DNS subject alternative name).
pub fn peer_named_by(cert: &CertificateDer<'_>, peers: &[String]) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    peers.iter().find_map(|peer| {
        let name = ServerName::try_from(peer.as_str()).ok()?;
        cert.verify_is_valid_for_subject_name(&name)
            .is_ok()
            .then(|| peer.clone())
    })
}

/// The label under which a refused handshake is counted.
pub fn refusal_reason(error: &std::io::Error) -> &'static str {
    let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return "not_tls";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        // Not issued by our CA: no issuer of that name, or one of the same name (another
        // `dvn certs new` set) whose key did not sign it.
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
        ) => "unknown_ca",
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. },
        ) => "expired",
        rustls::Error::InvalidCertificate(_) => "bad_certificate",
        rustls::Error::InvalidMessage(_) => "not_tls",
        _ => "handshake",
    }
}

/// Checks the server chain to our CA, with the *peer's* name instead of the URL's host.
#[derive(Debug)]
struct PeerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Builds a value from the TLS files.
type Build<T> = Box<dyn Fn(&TlsConfig) -> Result<T, TlsError> + Send + Sync>;

/// A value rebuilt from the TLS files whenever one of them changes (certificate renewal).
pub struct Reloading<T> {
    files: TlsConfig,
    build: Build<T>,
    current: RwLock<(Vec<Option<SystemTime>>, T)>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn stamps(files: &TlsConfig) -> Vec<Option<SystemTime>> {
    [&files.ca, &files.cert, &files.key]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl<T: Clone> Reloading<T> {
    pub fn new(
        files: &TlsConfig,
        build: impl Fn(&TlsConfig) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let value = build(files)?;
        Ok(Self {
            files: files.clone(),
            build: Box::new(build),
            current: RwLock::new((stamps(files), value)),
        })
    }

    /// A value that never changes (no TLS files: a plaintext devnet).
    pub fn fixed(value: T) -> Self
    where
        T: Send + Sync + 'static,
    {
        let files = TlsConfig {
            ca: PathBuf::new(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
        };
        let stamp = stamps(&files);
        let copy = value.clone();
        Self {
            files,
            build: Box::new(move |_| Ok(copy.clone())),
            current: RwLock::new((stamp, value)),
        }
    }

    /// The current value, rebuilt first if a file changed. A rebuild that fails (a renewal
    /// half-written) keeps the previous value and logs why.
    pub fn get(&self) -> T {
        let now = stamps(&self.files);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == now {
                return current.1.clone();
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        match (self.build)(&self.files) {
            Ok(value) => {
                tracing::info!("TLS files changed: certificates reloaded");
                *current = (now, value);
            }
            Err(e) => tracing::warn!(
                "TLS files changed but cannot be loaded, keeping the previous ones: {e}"
            ),
        }
        current.1.clone()
    }
}

/// Issues a CA and one certificate per name (`dvn certs new`). The CA key is written beside
/// the CA so that more regions can be added later; keep it offline.
pub mod issue {
    use std::path::Path;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };

    /// Writes `ca.pem`, `ca.key` and, for each name, `NAME.pem` / `NAME.key` into `dir`. Each
    /// certificate names its region (DNS SAN) plus `hosts` (IP addresses or DNS names) and is
    /// valid `days` days from now. Existing files are never overwritten.
    pub fn new_set(
        dir: &Path,
        names: &[String],
        hosts: &[String],
        days: u32,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate()?;
        let mut ca = ca_params();
        let (not_before, not_after) = validity(days)?;
        ca.not_before = not_before;
        ca.not_after = not_after;
        let ca_cert = ca.self_signed(&ca_key)?;
        write_new(&dir.join("ca.pem"), &ca_cert.pem())?;
        write_new(&dir.join("ca.key"), &ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca, ca_key);
        for name in names {
            issue_one(dir, &issuer, name, hosts, days, 0)?;
        }
        Ok(())
    }

    /// One region certificate signed by `issuer`; `offset_days` shifts its validity window
    /// (negative: already expired — for tests of expiry handling).
    pub fn issue_one(
        dir: &Path,
        issuer: &Issuer<'_, KeyPair>,
        name: &str,
        hosts: &[String],
        days: u32,
        offset_days: i64,
    ) -> anyhow::Result<()> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        for host in hosts {
            params.subject_alt_names.push(match host.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.as_str().try_into()?),
            });
        }
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (not_before, not_after) = validity(days)?;
        let shift = time::Duration::days(offset_days);
        params.not_before = not_before + shift;
        params.not_after = not_after + shift;
        let cert = params.signed_by(&key, issuer)?;
        write_new(&dir.join(format!("{name}.pem")), &cert.pem())?;
        write_new(&dir.join(format!("{name}.key")), &key.serialize_pem())?;
        Ok(())
    }

    /// The CA of a set made by [`new_set`], to issue more certificates. Issuing needs only
    /// the CA's name and key (certificates chain by issuer name and signature), so the CA
    /// certificate is not parsed.
    pub fn load_issuer(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key"))?)?;
        Ok(Issuer::new(ca_params(), key))
    }

    fn ca_params() -> CertificateParams {
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, CA_NAME);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca
    }

    const CA_NAME: &str = "dvn regions CA";

    fn validity(days: u32) -> anyhow::Result<(time::OffsetDateTime, time::OffsetDateTime)> {
        let now = time::OffsetDateTime::now_utc();
        Ok((
            now - time::Duration::hours(1),
            now + time::Duration::days(i64::from(days)),
        ))
    }

    fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // Private keys readable by their owner only.
        let mode = if path.extension().is_some_and(|e| e == "key") {
            0o600
        } else {
            0o644
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        file.write_all(text.as_bytes())?;
        Ok(())
    }
}
