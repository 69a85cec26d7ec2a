//! `scopegate serve`: the reference gate in front of a built-in echo service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::{Request, Response, header};
use http_body_util::Full;
use scopegate::config::GateFile;
use scopegate::layer::{Allowed, JsonLinesAudit};
use scopegate::{Grant, SystemClock};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Failure, env, load_gate_file};

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The gate file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: String,
}

/// The echo service: what the gate decided, as JSON.
async fn echo(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<bytes::Bytes>>, Infallible> {
    let grant = req.extensions().get::<Grant>();
    let allowed = Allowed::of(req.extensions());
    let body = json!({
        "principal": grant.map(Grant::principal),
        "kind": grant.map_or("anonymous", |g| g.kind().as_str()),
        "scopes": grant.map(Grant::scopes),
        "route": allowed.map(Allowed::route),
        "client_ip": allowed.and_then(Allowed::client_ip).map(|ip| ip.to_string()),
        "attrs": grant.map(Grant::attributes),
    });
    let mut response = Response::new(Full::new(bytes::Bytes::from(body.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `[metrics] listen`: the Prometheus exporter, installed as the process's metrics recorder before the gate decides
/// anything. Its listener is bound here, so a bad address fails at start.
fn start_metrics(gate: &GateFile) -> Result<(), Failure> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let Some(metrics) = &gate.metrics else {
        return Ok(());
    };
    // Decisions take microseconds; a store read or key set fetch, milliseconds; a timeout, seconds.
    let buckets = [
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ];
    PrometheusBuilder::new()
        .with_http_listener(metrics.listen)
        .set_buckets_for_metric(
            Matcher::Full(scopegate::layer::DECISION_DURATION_SECONDS.to_owned()),
            &buckets,
        )
        .and_then(PrometheusBuilder::install)
        .map_err(|e| Failure::usage(format!("[metrics] listen {}: {e}", metrics.listen)))
}

fn tls_config(gate: &GateFile) -> Result<Option<Arc<rustls::ServerConfig>>, Failure> {
    let server = gate.server.as_ref();
    let (cert, key) = match (
        server.and_then(|s| s.tls_cert.as_ref()),
        server.and_then(|s| s.tls_key.as_ref()),
    ) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (gate.resolve(cert), gate.resolve(key)),
        _ => return Err(Failure::usage("[server]: tls_cert and tls_key go together")),
    };
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| Failure::usage(format!("[server] tls_cert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Failure::usage(format!(
            "[server] tls_cert {}: no certificate in the file",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| Failure::usage(format!("[server] tls_key {}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| Failure::usage(format!("[server] tls_cert/tls_key: {e}")))?;
    Ok(Some(Arc::new(config)))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

pub(crate) async fn run(args: &ServeArgs) -> Result<(), Failure> {
    let addr: SocketAddr = args
        .listen
        .parse()
        .map_err(|_| Failure::usage(format!("--listen {:?}: expected IP:PORT", args.listen)))?;
    let gate_file = load_gate_file(&args.config)?;
    let tls = tls_config(&gate_file)?;
    start_metrics(&gate_file)?;
    let gate = gate_file
        .gate(env, SystemClock)
        .await
        .map_err(|e| Failure::usage(e.to_string()))?
        .audit(JsonLinesAudit::new(std::io::stderr()))
        .build()
        .map_err(|e| Failure::usage(e.to_string()))?;
    let service = tower::ServiceBuilder::new()
        .layer(gate)
        .service(tower::service_fn(echo));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::usage(format!("--listen {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::usage(format!("--listen {addr}: {e}")))?;
    println!("listening on {local}");
    let result = match tls {
        Some(config) => {
            scopegate::serve::serve_tls(listener, config, service, shutdown_signal()).await
        }
        None => scopegate::serve::serve_plaintext(listener, service, shutdown_signal()).await,
    };
    result.map_err(|e| Failure::runtime(format!("serve: {e}")))
}
