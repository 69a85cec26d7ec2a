//! Shared by the examples: a self-signed certificate and a loopback TLS server with a client that trusts it.

// Each example uses a part of this module.
#![allow(dead_code)]

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::rustls;

/// Serves `app` over TLS on a loopback port (a self-signed certificate generated now); returns the port and an
/// HTTP client that trusts that certificate and resolves `localhost` to loopback.
pub(crate) async fn serve_on_loopback(
    app: Router,
) -> Result<(u16, reqwest::Client), Box<dyn Error>> {
    let (tls, cert_pem) = self_signed()?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(scopegate::serve::serve_tls(
        listener,
        tls,
        app,
        std::future::pending(),
    ));
    Ok((port, client(&cert_pem)?))
}

/// An HTTPS client that trusts only `cert_pem` and reaches `localhost` on loopback.
pub(crate) fn client(cert_pem: &str) -> Result<reqwest::Client, Box<dyn Error>> {
    Ok(reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes())?])
        .resolve("localhost", SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// A self-signed certificate for `localhost`, and a rustls server configuration serving it.
pub(crate) fn self_signed() -> Result<(Arc<rustls::ServerConfig>, String), Box<dyn Error>> {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
    Ok((Arc::new(config), cert.cert.pem()))
}

/// A CA made now, and a certificate for `localhost` (and 127.0.0.1) signed by it, as a private CA would sign an
/// internal server's: a rustls server configuration serving that certificate, and the CA's PEM for clients to trust.
pub(crate) fn ca_signed() -> Result<(Arc<rustls::ServerConfig>, String), Box<dyn Error>> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "scopegate example CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params.is_ca = IsCa::ExplicitNoCa;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&server_key, &ca)?;

    let key = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der())?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)?;
    Ok((Arc::new(config), ca.pem()))
}
