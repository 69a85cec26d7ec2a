//! A real tonic server (the gRPC health service) behind the gate over TLS, called by a real tonic client:
//! per-method scopes, and every denial arriving as a gRPC status.

use std::time::Duration;

use scopegate::layer::ScopeGateLayer;
use scopegate::policy::{Policy, Route};
use scopegate::testing::{StaticCredentials, TestGrant};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const CHECKER: &str = "sg_checkerkey";
const WATCHER: &str = "sg_watcherkey";
const BROKEN: &str = "sg_storedown";

struct GrpcServer {
    addr: std::net::SocketAddr,
    ca_pem: String,
}

async fn start() -> GrpcServer {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let identity = Identity::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem());
    let policy = Policy::builder()
        .route(Route::post("/grpc.health.v1.Health/Check").require_all(["health:check"]))
        .route(Route::post("/grpc.health.v1.Health/Watch").require_all(["health:watch"]))
        .build()
        .unwrap();
    let credentials = StaticCredentials::new()
        .with(
            CHECKER,
            &TestGrant::api_key("key-checker").scopes(["health:check"]),
        )
        .with(
            WATCHER,
            &TestGrant::api_key("key-watcher").scopes(["health:watch"]),
        )
        .with_denial(BROKEN, scopegate::policy::DenialKind::Unavailable);
    let gate = ScopeGateLayer::builder(policy)
        .api_keys(credentials)
        .danger_disable_throttle()
        .build()
        .unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        // Keep the reporter alive with the server.
        let _reporter = reporter;
        Server::builder()
            .tls_config(ServerTlsConfig::new().identity(identity))
            .unwrap()
            .layer(gate)
            .add_service(health)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    GrpcServer {
        addr,
        ca_pem: cert.cert.pem(),
    }
}

async fn client(server: &GrpcServer) -> HealthClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&server.ca_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .origin(
            format!("https://localhost:{}", server.addr.port())
                .parse()
                .unwrap(),
        );
    // Resolve `localhost` to the loopback address the server is bound to.
    let channel = channel.connect_with_connector(tower::service_fn({
        let addr = server.addr;
        move |_uri| async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .map(hyper_util::rt::TokioIo::new)
        }
    }));
    HealthClient::new(channel.await.unwrap())
}

fn check(key: Option<&str>) -> tonic::Request<HealthCheckRequest> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(key) = key {
        req.metadata_mut()
            .insert("x-api-key", MetadataValue::try_from(key).unwrap());
    }
    req
}

#[tokio::test]
async fn per_method_scopes_over_grpc() {
    let server = start().await;
    let mut client = client(&server).await;
    // Allowed: the checker key on Check.
    let ok = client.check(check(Some(CHECKER))).await.unwrap();
    assert_eq!(ok.into_inner().status, 1, "SERVING");
    // Deny twins, each as its gRPC status.
    let cases = [
        (None, Code::Unauthenticated),
        (Some("sg_unknown"), Code::Unauthenticated),
        (Some(WATCHER), Code::PermissionDenied),
        (Some(BROKEN), Code::Unavailable),
    ];
    for (key, code) in cases {
        let status = client.check(check(key)).await.unwrap_err();
        assert_eq!(status.code(), code, "{key:?}: {status:?}");
        if let Some(key) = key {
            assert!(
                !status.message().contains(key),
                "the status never carries the credential"
            );
        }
    }
    // The watcher key reaches Watch, not Check.
    let stream = client.watch(check(Some(WATCHER))).await;
    assert!(stream.is_ok(), "{stream:?}");
    let status = client.watch(check(Some(CHECKER))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}
