//! TLS material: the one crypto provider, PEM loading, throw-away PKI for
//! `dev`, the emulator and tests, and the rustls configs built from them.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN ids the client listener offers, h2 first so capable clients multiplex.
pub const ALPN_H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Installs ring as the process-wide rustls provider. Called once at start-up
/// by the binary and by test helpers; a second call is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The provider every config in this crate is built with, so no config ever
/// depends on whether `install_crypto_provider` ran first.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{path}: no PEM private key found (expected PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate throw-away certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = read(path)?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|_| TlsError::NoKey {
        path: path.display().to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A server config offering the given ALPN protocols.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(finish_server_config(cfg, alpn))
}

/// What every listener's TLS config shares beyond rustls' defaults (TLS
/// 1.2 and 1.3 only, forward-secret AEAD suites): ALPN, and the server's
/// cipher-suite order rather than the client's, so a client cannot steer
/// a TLS 1.2 handshake to its weakest common suite (testssl.sh rates a
/// missing server order HIGH).
fn finish_server_config(mut cfg: rustls::ServerConfig, alpn: &[&[u8]]) -> rustls::ServerConfig {
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg.ignore_client_order = true;
    cfg
}

/// Throw-away certificates live 90 days, as a public CA's do (testssl.sh
/// rates validity over 825 days HIGH); they are made fresh at each start.
const THROW_AWAY_VALIDITY: time::Duration = time::Duration::days(90);

fn validity(params: &mut rcgen::CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    // A day back: clocks of the machines that check it may lag.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + THROW_AWAY_VALIDITY;
}

/// A client config trusting the compiled-in public roots plus `extra` CAs.
pub fn client_config(
    extra: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots.add(cert.clone())?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(cfg)
}

/// A throw-away CA and one leaf signed by it. Nothing here is meant to
/// outlive the process that made it (dev mode, emulator, tests).
pub struct ThrowAwayPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ThrowAwayPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThrowAwayPki")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ThrowAwayPki {
    /// Leaf valid for `localhost`, `127.0.0.1`, `::1` and the extra names.
    pub fn generate(extra_names: &[String]) -> Result<Self, TlsError> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // A unique name per CA: clients given several throw-away CAs in one
        // bundle (dev prints one for gateway + emulator) pick the issuer by
        // name, and OpenSSL fails on the first same-named wrong one.
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("smh-gateway throw-away CA {:016x}", rand::random::<u64>()),
        );
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        validity(&mut ca_params);
        let ca_key = rcgen::KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;

        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        names.extend(extra_names.iter().cloned());
        let mut leaf_params = rcgen::CertificateParams::new(names)?;
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "smh-gateway throw-away leaf");
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut leaf_params);
        let leaf_key = rcgen::KeyPair::generate()?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;
        Ok(Self {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        })
    }

    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .filter_map(Result::ok)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|_| {
            TlsError::NoKey {
                path: "<generated>".into(),
            }
        })?;
        server_config(certs, key, alpn)
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("generated CA is valid PEM")
    }

    /// Writes `ca.pem`, `cert.pem`, `key.pem` (key mode 0600) into `dir`.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ca.pem"), &self.ca_pem)?;
        std::fs::write(dir.join("cert.pem"), &self.cert_pem)?;
        write_private(&dir.join("key.pem"), self.key_pem.as_bytes())
    }
}

/// Writes a file readable by its owner only (keys, secrets).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(data)
}

/// The client listener's certificate, swappable at run time (SIGHUP) so a
/// renewed certificate takes effect without dropping connections. A reload
/// that fails keeps the last good certificate.
#[derive(Debug)]
pub struct ReloadableCert {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl ReloadableCert {
    /// Loads cert + key; returns the resolver and the cert's notAfter (Unix s).
    pub fn load(cert: &Path, key: &Path) -> Result<(Arc<Self>, i64), TlsError> {
        let (ck, not_after) = certified_key(cert, key)?;
        Ok((
            Arc::new(Self {
                current: std::sync::RwLock::new(Arc::new(ck)),
            }),
            not_after,
        ))
    }

    /// Replaces the certificate; on error the old one stays.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<i64, TlsError> {
        let (ck, not_after) = certified_key(cert, key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ck);
        Ok(not_after)
    }

    /// A server config that asks this resolver for its certificate.
    pub fn server_config(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<rustls::ServerConfig, TlsError> {
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(finish_server_config(cfg, alpn))
    }
}

impl rustls::server::ResolvesServerCert for ReloadableCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<(rustls::sign::CertifiedKey, i64), TlsError> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::Rustls)?;
    let ck = rustls::sign::CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(TlsError::Rustls)?;
    let not_after = not_after(&ck.cert[0]).ok_or_else(|| TlsError::NoCertificate {
        path: cert.display().to_string(),
    })?;
    Ok((ck, not_after))
}

/// The certificate's notAfter as Unix seconds.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}
