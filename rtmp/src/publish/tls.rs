//! Trust anchors and the TLS client for `rtmps://`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::error::RtmpError;

/// The certificate authorities an `rtmps://` server's certificate must chain to.
/// Build it once (at startup) and share it: `Arc<TlsRoots>` in
/// [`crate::publish::PublishOptions::tls`].
///
/// The public roots are Mozilla's set compiled in (`webpki-roots`), not the
/// operating system's store (`rustls-native-certs`): workers run in slim
/// containers that may lack a CA bundle, the set is the same on every machine
/// (no "works here, not there"), and it is what the source downloader
/// (reqwest's `rustls-tls`) already trusts. Private CAs come in through the
/// extra PEM file.
#[derive(Clone)]
pub struct TlsRoots {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRoots").finish_non_exhaustive()
    }
}

fn config_err(reason: String) -> RtmpError {
    RtmpError::Config { reason }
}

impl TlsRoots {
    /// The public roots plus, if given, every certificate of the PEM file
    /// `extra_ca`. A missing, unreadable or certificate-less file is an
    /// [`RtmpError::Config`] naming the path.
    pub fn new(extra_ca: Option<&Path>) -> Result<TlsRoots, RtmpError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_ca {
            let shown = path.display();
            let pem = std::fs::read(path)
                .map_err(|e| config_err(format!("cannot read CA file {shown}: {e}")))?;
            let mut added = 0;
            for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
                let cert =
                    cert.map_err(|e| config_err(format!("CA file {shown} is not valid PEM: {e}")))?;
                roots.add(cert).map_err(|e| {
                    config_err(format!("CA file {shown}: certificate {}: {e}", i + 1))
                })?;
                added += 1;
            }
            if added == 0 {
                return Err(config_err(format!(
                    "CA file {shown} holds no PEM CERTIFICATE block"
                )));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsRoots {
            config: Arc::new(config),
        })
    }

    /// The public roots only, built on first use and shared (what an `rtmps://`
    /// destination uses when the options name no roots).
    pub fn public() -> Arc<TlsRoots> {
        static PUBLIC: OnceLock<Arc<TlsRoots>> = OnceLock::new();
        PUBLIC
            .get_or_init(|| Arc::new(TlsRoots::new(None).expect("public roots need no file")))
            .clone()
    }

    /// The rustls client configuration (for other TLS clients sharing the roots).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// TLS over `tcp` with SNI and certificate verification for `host`.
    pub(crate) async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, RtmpError> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| RtmpError::Tls {
            reason: format!("{host} is not a valid TLS server name: {e}"),
        })?;
        TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| RtmpError::Tls {
                reason: match e.get_ref() {
                    Some(inner) => inner.to_string(),
                    None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        "the server closed the connection during the TLS handshake".to_owned()
                    }
                    None => e.to_string(),
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn bad_ca_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = TlsRoots::new(Some(&missing)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = TlsRoots::new(Some(&junk)).unwrap_err();
        assert!(
            e.to_string().contains("junk.pem") && e.to_string().contains("no PEM"),
            "{e}"
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = TlsRoots::new(Some(&broken)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("broken.pem"), "{e}");
    }

    #[test]
    fn public_roots_are_shared() {
        assert!(Arc::ptr_eq(&TlsRoots::public(), &TlsRoots::public()));
        assert!(TlsRoots::new(None).is_ok());
    }
}
