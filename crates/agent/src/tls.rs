//! How the agent opens its link to the controller: a TCP connection, wrapped in TLS (rustls, ring)
//! for `wss://`, then the WebSocket handshake. What a `wss://` link trusts is chosen by flags:
//! a pinned CA (`--ca-cert`), a pinned certificate fingerprint (`--cert-sha256`, the leaf's
//! SHA-256, as `openssl x509 -noout -fingerprint -sha256` prints it), or else the system's CA
//! store (rustls-native-certs). No sessions, no messages here.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;
use url::{Host, Url};

/// Any byte stream the WebSocket can run on: plain TCP or TLS over it.
pub trait LinkIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> LinkIo for T {}

/// The controller link's socket.
pub type LinkStream = WebSocketStream<Box<dyn LinkIo>>;

/// What a `wss://` link trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's CA certificates.
    SystemRoots,
    /// Only certificates issued by the CA(s) in this PEM file (`--ca-cert`).
    CaFile(std::path::PathBuf),
    /// Only the certificate with this SHA-256 fingerprint (`--cert-sha256`), whatever its
    /// issuer, name or dates: pinned like an SSH host key.
    Fingerprint([u8; 32]),
}

/// `AB:CD:...` or `abcd...` (64 hex digits, colons and case ignored, optionally after
/// openssl's `sha256 Fingerprint=`) -> the 32 bytes.
pub fn parse_fingerprint(raw: &str) -> Result<[u8; 32], String> {
    // `openssl x509 -fingerprint` prints `sha256 Fingerprint=AB:CD:...` (`SHA256` before 3.0).
    let value = raw.rsplit('=').next().unwrap_or(raw);
    let hex: String = value.trim().chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{raw:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        ));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{raw:?} is not hex"))?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The rustls client configuration for `trust`; the error says which flag to fix.
pub fn client_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = match trust {
        Trust::Fingerprint(sha256) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert {
                sha256: *sha256,
                provider,
            }))
            .with_no_client_auth(),
        Trust::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = read_pem_certs(path).map_err(|e| format!("--ca-cert {e}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "--ca-cert {}: no usable CA certificate in it",
                    path.display()
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::SystemRoots => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no CA certificates found in the system store for a wss:// controller: \
                     install them (ca-certificates) or pass --ca-cert or --cert-sha256"
                        .into(),
                );
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Accepts exactly one certificate, by its SHA-256; still checks that the server holds its key
/// (the handshake's signature).
struct PinnedCert {
    sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PinnedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinnedCert({})", hex(&self.sha256))
    }
}

/// The refusal of a certificate that is not the pinned one.
#[derive(Debug)]
struct FingerprintMismatch {
    got: [u8; 32],
    want: [u8; 32],
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the controller's certificate has SHA-256 fingerprint {}, not the pinned \
             --cert-sha256 {}: refusing it (a wrong flag, a new certificate, or someone in the \
             middle)",
            hex(&self.got),
            hex(&self.want)
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        // Not secret, but no reason to leak where they differ either.
        let same = got
            .iter()
            .zip(self.sha256.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if same {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(
                    FingerprintMismatch {
                        got,
                        want: self.sha256,
                    },
                ))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS handshake error in words: rustls shows a custom verifier's error with `Debug`.
fn describe(e: &std::io::Error) -> String {
    let custom = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<FingerprintMismatch>()
            }
            _ => None,
        });
    match custom {
        Some(mismatch) => mismatch.to_string(),
        None => e.to_string(),
    }
}

/// Opens `url` (`ws://` or `wss://`; `tls` is required for the latter) and does the WebSocket
/// handshake. The error is one line saying which step failed.
pub async fn connect(
    url: &Url,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<LinkStream, String> {
    let host = url.host().ok_or("the controller URL has no host")?;
    let port = url
        .port_or_known_default()
        .ok_or("the controller URL has no port")?;
    let name = match &host {
        Host::Domain(d) => (*d).to_owned(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    };
    let addr = match &host {
        Host::Ipv6(ip) => format!("[{ip}]:{port}"),
        _ => format!("{name}:{port}"),
    };
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("TCP connection to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn LinkIo> = match (url.scheme(), tls) {
        ("wss", Some(config)) => {
            let server_name = ServerName::try_from(name.clone())
                .map_err(|e| format!("{name:?} cannot be checked against a certificate: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(server_name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {addr}: {}", describe(&e)))?;
            Box::new(stream)
        }
        ("wss", None) => return Err("a wss:// URL needs a TLS configuration".into()),
        _ => Box::new(tcp),
    };
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url.as_str(),
        io,
        Some(WebSocketConfig::default()),
    )
    .await
    .map_err(|e| format!("WebSocket handshake: {e}"))?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&colons), Ok([0xab; 32]));
        assert_eq!(parse_fingerprint(&"ab".repeat(32)), Ok([0xab; 32]));
        let openssl = format!("sha256 Fingerprint={colons}");
        assert_eq!(parse_fingerprint(&openssl), Ok([0xab; 32]));
        let openssl1 = format!("SHA256 Fingerprint={colons}\n");
        assert_eq!(parse_fingerprint(&openssl1), Ok([0xab; 32]));
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }
}
