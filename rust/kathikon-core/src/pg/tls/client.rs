//! The TLS handshake with rustls (`ring` provider, TLS 1.2 and 1.3), through
//! tokio-postgres-rustls: the trusted authorities and client certificate a url names, read
//! once at open, and the check of the server's certificate each `sslmode` asks for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postgres::config::SslMode as WireMode;
use postgres::{Config, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{said, unreachable_server, Params, SslMode};
use crate::error::{Error, Result};

/// A store's handshake: its rustls configuration and, for messages, what it trusts.
pub(super) struct Client {
    connector: MakeRustlsConnect,
    /// Where the trusted authorities came from (`None`: the certificate is not checked).
    pub(super) roots: Option<String>,
}

impl Client {
    /// Read the files `params` name, or libpq's defaults under `home`, for `mode` (not
    /// `disable`).
    pub(super) fn new(mode: SslMode, params: &Params, home: Option<&Path>) -> Result<Client> {
        let default = |name: &str| {
            home.map(|h| h.join(".postgresql").join(name)).filter(|path| path.exists())
        };
        let roots = match params.sslrootcert.as_deref() {
            Some("system") => Some(system_roots()?),
            Some(path) => Some(file_roots(Path::new(path), format!("sslrootcert={path}"))?),
            None => match default("root.crt") {
                Some(path) => {
                    let named = format!("sslrootcert ({}, libpq's default)", path.display());
                    Some(file_roots(&path, named)?)
                }
                None if mode >= SslMode::VerifyCa => {
                    return Err(Error::InvalidJob(format!(
                        "sslmode={} in the PostgreSQL url checks the server's certificate \
                         against trusted authorities, and none are given: add \
                         sslrootcert=/path/to/ca.pem (the authority that signed the server's \
                         certificate; a managed database's provider publishes its own) or \
                         sslrootcert=system (the authorities this machine trusts); \
                         ~/.postgresql/root.crt, libpq's default, does not exist",
                        mode.name()
                    )))
                }
                None => None,
            },
        };
        let (roots, trusted) = roots.unzip();
        let identity = client_identity(params, &default)?;

        // ring, which builds in the manylinux wheel's zig cross-build (aws-lc-rs, rustls's
        // default, is a much larger C build). Its key exchange is classical (X25519, P-256,
        // P-384), without the post-quantum hybrid rustls marks it deprecated for lacking.
        #[allow(deprecated)]
        let provider = Arc::new(ring::default_provider());
        let verifier = Verifier {
            roots: roots.map(Arc::new),
            check_name: mode == SslMode::VerifyFull,
            algorithms: provider.signature_verification_algorithms,
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Storage(format!("rustls has no TLS version to offer ({e})")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match identity {
            Some((chain, key, named)) => {
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    Error::InvalidJob(format!(
                        "{named} in the PostgreSQL url cannot be used ({e}); the key must be the \
                     certificate's own"
                    ))
                })?
            }
            None => builder.with_no_client_auth(),
        };
        // What libpq 17 offers: the server checks it when TLS is negotiated directly.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        config.enable_sni = match params.sslsni.as_deref() {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => {
                return Err(Error::InvalidJob(format!(
                    "sslsni={other} in the PostgreSQL url is not 0 or 1 (1, the default, sends \
                     the host name to the server)"
                )))
            }
        };
        Ok(Client { connector: MakeRustlsConnect::new(config), roots: trusted })
    }

    /// A new connection with TLS as `mode` asks, falling back to plain text where libpq does.
    pub(super) fn connect(&self, mode: SslMode, config: &mut Config) -> Result<postgres::Client> {
        match mode {
            SslMode::Allow => {
                config.ssl_mode(WireMode::Disable);
                match config.connect(NoTls) {
                    // The server answered, and refused a plain connection: try TLS.
                    Err(e) if e.as_db_error().is_some() => {
                        config.ssl_mode(WireMode::Require);
                        config.connect(self.connector.clone()).map_err(|e| self.refused(mode, &e))
                    }
                    other => other.map_err(|e| Error::Storage(unreachable_server(&e))),
                }
            }
            SslMode::Prefer => {
                // tokio-postgres goes on in plain text when the server has no TLS.
                config.ssl_mode(WireMode::Prefer);
                match config.connect(self.connector.clone()) {
                    Err(e) if handshake_error(&e).is_some() => {
                        config.ssl_mode(WireMode::Disable);
                        config.connect(NoTls).map_err(|plain| {
                            Error::Storage(format!(
                                "{} (then in plain text: {})",
                                self.explain(mode, &e),
                                said(&plain)
                            ))
                        })
                    }
                    other => other.map_err(|e| self.refused(mode, &e)),
                }
            }
            _ => {
                config.ssl_mode(WireMode::Require);
                config.connect(self.connector.clone()).map_err(|e| self.refused(mode, &e))
            }
        }
    }

    /// `e` (a failed connection with TLS) as a storage error.
    fn refused(&self, mode: SslMode, e: &postgres::Error) -> Error {
        Error::Storage(self.explain(mode, e))
    }

    /// What `e` (a failed connection with TLS) says, and what to change when the handshake
    /// failed.
    fn explain(&self, mode: SslMode, e: &postgres::Error) -> String {
        let Some(tls) = handshake_error(e) else { return unreachable_server(e) };
        let trusted = self.roots.as_deref().unwrap_or("the trusted authorities");
        let advice = match tls {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => "sslmode=verify-full checks that the certificate names the host in the url: \
                  connect by a name it holds, or use sslmode=verify-ca to check only that a \
                  trusted authority signed it"
                .to_string(),
            rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            ) => format!(
                "no authority in {trusted} signed the server's certificate: pass the one that \
                 did as sslrootcert=/path/to/ca.pem (a managed database's provider publishes \
                 its own)"
            ),
            rustls::Error::AlertReceived(
                rustls::AlertDescription::CertificateRequired
                | rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::UnknownCA,
            ) => "the server refused this client's certificate, or wants one: pass sslcert= \
                  and sslkey=, a certificate signed by an authority the server trusts"
                .to_string(),
            _ => "check the server's TLS settings and the url's".to_string(),
        };
        format!(
            "could not connect to PostgreSQL: TLS failed under sslmode={} ({tls}); {advice}",
            mode.name()
        )
    }
}

/// The rustls error under a failed connection, when the TLS handshake (or the TLS stream
/// after it) is what failed.
fn handshake_error(e: &postgres::Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(error) = source {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // tokio-rustls reports rustls's errors inside an io::Error, whose `source` skips them.
        let inner = error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
        if let Some(tls) = inner.and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return Some(tls);
        }
        source = error.source();
    }
    None
}

/// The authorities this machine trusts (rustls-native-certs finds them as OpenSSL would).
fn system_roots() -> Result<(RootCertStore, String)> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        return Err(Error::InvalidJob(format!(
            "sslrootcert=system in the PostgreSQL url: no trusted authority was found on this \
             machine ({why}); install its CA certificates (Debian: ca-certificates), set \
             SSL_CERT_FILE, or pass sslrootcert=/path/to/ca.pem"
        )));
    }
    Ok((store, "the system's trusted authorities (sslrootcert=system)".to_string()))
}

/// The authorities in the PEM file at `path`, which the url names as `named`.
fn file_roots(path: &Path, named: String) -> Result<(RootCertStore, String)> {
    let certificates = read_certificates(path, &named)?;
    let count = certificates.len();
    let mut store = RootCertStore::empty();
    if store.add_parsable_certificates(certificates).0 == 0 {
        return Err(Error::InvalidJob(format!(
            "{named} in the PostgreSQL url: none of its {count} certificates can be a trusted \
             authority; pass the PEM file of the authority that signed the server's certificate"
        )));
    }
    Ok((store, named))
}

fn read(path: &Path, named: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::InvalidJob(format!(
            "{named} in the PostgreSQL url cannot be read ({e}); name a PEM file this process \
             may read"
        ))
    })
}

fn read_certificates(path: &Path, named: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read(path, named)?;
    let certificates =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| {
            Error::InvalidJob(format!("{named} in the PostgreSQL url is not valid PEM ({e})"))
        })?;
    if certificates.is_empty() {
        return Err(Error::InvalidJob(format!(
            "{named} in the PostgreSQL url holds no certificate (no -----BEGIN CERTIFICATE----- \
             block); name a PEM file of certificates"
        )));
    }
    Ok(certificates)
}

/// The client certificate chain and key to offer, and how the url names them: `sslcert` and
/// `sslkey`, else libpq's default files where they exist (`default`).
#[allow(clippy::type_complexity)]
fn client_identity(
    params: &Params,
    default: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String)>> {
    let cert = params.sslcert.as_deref().map(PathBuf::from).or_else(|| default("postgresql.crt"));
    let key = params.sslkey.as_deref().map(PathBuf::from).or_else(|| default("postgresql.key"));
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        // libpq's default key alone is not used without a certificate.
        (None, Some(_)) if params.sslkey.is_none() => return Ok(None),
        (None, Some(key)) => {
            return Err(Error::InvalidJob(format!(
                "sslkey={} in the PostgreSQL url has no certificate beside it; add \
                 sslcert=/path/to/client.crt",
                key.display()
            )))
        }
        (Some(cert), None) => {
            return Err(Error::InvalidJob(format!(
                "sslcert={} in the PostgreSQL url has no key beside it; add \
                 sslkey=/path/to/client.key (~/.postgresql/postgresql.key, libpq's default, \
                 does not exist)",
                cert.display()
            )))
        }
        (Some(cert), Some(key)) => (cert, key),
    };
    let named = format!("sslcert={} with sslkey={}", cert.display(), key.display());
    let chain = read_certificates(&cert, &format!("sslcert={}", cert.display()))?;
    let key_named = format!("sslkey={}", key.display());
    check_key_permissions(&key, &key_named)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&key, &key_named)?).map_err(|e| {
        Error::InvalidJob(format!(
            "{key_named} in the PostgreSQL url holds no private key that can be used ({e}); \
             pass an unencrypted PEM key (PKCS#8, PKCS#1 or SEC1; decrypt one with openssl pkey)"
        ))
    })?;
    Ok(Some((chain, key, named)))
}

/// libpq's rule: a key file its owner (this user) shares with anyone, or one owned by root that
/// others may read or the group may write, is refused.
fn check_key_permissions(path: &Path, named: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::InvalidJob(format!("{named} in the PostgreSQL url cannot be read ({e})"))
    })?;
    if !meta.is_file() {
        return Err(Error::InvalidJob(format!(
            "{named} in the PostgreSQL url is not a regular file"
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mode = meta.mode();
    if (meta.uid() == me && mode & 0o077 != 0) || (meta.uid() == 0 && mode & 0o037 != 0) {
        return Err(Error::InvalidJob(format!(
            "{named} in the PostgreSQL url may be read by others (mode {:o}); make it readable \
             by its owner only (chmod 600), or by root's group too when root owns it (0640), as \
             libpq requires",
            mode & 0o777
        )));
    }
    Ok(())
}

/// The check of the server's certificate: none (`require` and the weaker modes without a root
/// certificate, as libpq), its chain to `roots` (`verify-ca`, and those modes with one), or
/// its chain and the host's name (`verify-full`). The handshake's signatures are always checked.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else { return Ok(ServerCertVerified::assertion()) };
        let certificate = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &certificate,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.check_name {
            verify_server_name(&certificate, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
