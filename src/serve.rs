//! Accept loops that serve a Tower service (an axum `Router`, say) over TLS or plaintext, and mark every request
//! with its connection's facts ([`ConnectionInfo`]: the peer address, and whether the TLS handshake completed), so
//! that the gate judges TLS from the connection and never from anything the client writes.
//!
//! ```no_run
//! # async fn run(router: axum::Router, tls: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! scopegate::serve::serve_tls(listener, tls, router, std::future::pending()).await
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tower_service::Service;

use crate::network::ConnectionInfo;

/// A service the accept loops can serve (an axum `Router`, a gated tower stack): it answers every request (its
/// error is `Infallible`), can be cloned per connection, and its futures can move between threads.
pub trait HttpService<B>:
    Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A response body hyper can send.
pub trait ResponseBody:
    http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

impl<B> ResponseBody for B where
    B: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `service` over TLS until `shutdown` completes. Each request carries `ConnectionInfo { tls: true }`.
/// HTTP/1.1 and HTTP/2 (ALPN `h2`, `http/1.1` are set on the config if it names none).
pub async fn serve_tls<S, B>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: HttpService<B>,
    B: ResponseBody,
{
    let config = if config.alpn_protocols.is_empty() {
        let mut with_alpn = (*config).clone();
        with_alpn.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(with_alpn)
    } else {
        config
    };
    let acceptor = TlsAcceptor::from(config);
    accept_loop(listener, service, shutdown, move |stream, peer, service| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(tls, ConnectionInfo { peer: Some(peer.ip()), tls: true }, service).await,
                Ok(Err(error)) => tracing::debug!(target: "scopegate::serve", %peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(target: "scopegate::serve", %peer, "TLS handshake timed out"),
            }
        }
    })
    .await
}

/// Serves `service` over plaintext until `shutdown` completes. Each request carries `ConnectionInfo { tls: false }`:
/// the gate refuses it unless a trusted proxy vouches for TLS or plaintext was allowed through the `danger` option.
pub async fn serve_plaintext<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: HttpService<B>,
    B: ResponseBody,
{
    accept_loop(listener, service, shutdown, |stream, peer, service| {
        serve_connection(
            stream,
            ConnectionInfo {
                peer: Some(peer.ip()),
                tls: false,
            },
            service,
        )
    })
    .await
}

async fn accept_loop<S, F, Fut>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    handle: F,
) -> io::Result<()>
where
    S: Clone + Send + 'static,
    F: Fn(tokio::net::TcpStream, SocketAddr, S) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Per-connection errors (e.g. the peer reset before accept) must not stop the server.
                    tracing::debug!(target: "scopegate::serve", %error, "accept failed");
                    continue;
                }
            },
        };
        tokio::spawn(handle(stream, peer, service.clone()));
    }
}

async fn serve_connection<IO, S, B>(io: IO, info: ConnectionInfo, service: S)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: HttpService<B>,
    B: ResponseBody,
{
    let hyper_service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        // The server, not the client, states the connection's facts.
        req.extensions_mut().insert(info);
        let mut service = service.clone();
        async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(req).await
        }
    });
    if let Err(error) = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), hyper_service)
        .await
    {
        tracing::debug!(target: "scopegate::serve", peer = ?info.peer, %error, "connection ended with an error");
    }
}
