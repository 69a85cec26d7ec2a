//! tonic: the peer, and TLS, from tonic's connect info (a tonic server with or without its TLS acceptor).

use http::Extensions;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::network::ConnectionInfo;

/// tonic's connect info: over its TLS acceptor, the connection is TLS; over plain TCP, it is not.
pub(super) fn connection_info(extensions: &Extensions) -> Option<ConnectionInfo> {
    if let Some(info) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        return Some(ConnectionInfo {
            peer: info.get_ref().remote_addr().map(|a| a.ip()),
            tls: true,
        });
    }
    extensions
        .get::<TcpConnectInfo>()
        .map(|info| ConnectionInfo {
            peer: info.remote_addr().map(|a| a.ip()),
            tls: false,
        })
}
