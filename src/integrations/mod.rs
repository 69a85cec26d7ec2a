//! Framework integrations, each behind its feature: they translate a framework's facts in and the gate's answers
//! out, and decide nothing.

use http::Extensions;

use crate::network::ConnectionInfo;

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "tonic")]
mod tonic;

/// The connection facts a framework put into the request's extensions (axum's `ConnectInfo`, tonic's connect
/// info), for requests that no scopegate acceptor marked.
pub(crate) fn connection_info(extensions: &Extensions) -> Option<ConnectionInfo> {
    #[cfg(feature = "axum")]
    if let Some(info) = self::axum::connection_info(extensions) {
        return Some(info);
    }
    #[cfg(feature = "tonic")]
    if let Some(info) = self::tonic::connection_info(extensions) {
        return Some(info);
    }
    let _ = extensions;
    None
}
