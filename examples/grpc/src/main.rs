//! scopegate in front of a tonic gRPC service, with per-method scopes, over TLS.
//!
//! ```sh
//! cargo run --manifest-path examples/grpc/Cargo.toml
//! ```
//!
//! The service is `invoices.v1.Invoices` (`proto/invoices.proto`, compiled at build time by `protox`, so no system
//! `protoc` is needed). Its methods are routes of the policy: `POST /invoices.v1.Invoices/Get` needs
//! `invoices:read`, `POST /invoices.v1.Invoices/Create` needs `invoices:write`. Two API keys are issued into an
//! in-memory store; a tonic client calls each method with each key, and without one, and prints the gRPC status
//! codes: the gate answers a refusal as a gRPC status (`UNAUTHENTICATED`, `PERMISSION_DENIED`, …), never as a bare HTTP
//! error a gRPC client cannot read.

use std::collections::HashMap;
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use scopegate::credential::api_key::{
    ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat, KeyIssuer, MemoryKeyStore, NewKey, Pepper,
    Peppers,
};
use scopegate::layer::ScopeGateLayer;
use scopegate::policy::{Policy, Route, ScopeSet};
use scopegate::{Clock, Grant, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};

/// The code generated from `proto/invoices.proto` by `build.rs`.
mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::pedantic)]
    tonic::include_proto!("invoices.v1");
}

use pb::invoices_client::InvoicesClient;
use pb::invoices_server::{Invoices, InvoicesServer};
use pb::{CreateInvoiceRequest, GetInvoiceRequest, Invoice};

/// The service: invoices in memory. Every call reaching it was allowed by the gate, which left a [`Grant`] in the
/// request's extensions.
#[derive(Debug, Default)]
struct InvoiceBook {
    invoices: Mutex<HashMap<String, Invoice>>,
    next_id: AtomicU64,
}

fn caller<T>(request: &Request<T>) -> Result<String, Status> {
    // Behind the gate a Grant is always there; its absence means the layer is missing: an internal error.
    request
        .extensions()
        .get::<Grant>()
        .map(|grant| grant.principal().to_owned())
        .ok_or_else(|| Status::internal("no grant: is the gate in front of this service?"))
}

#[tonic::async_trait]
impl Invoices for InvoiceBook {
    async fn get(&self, request: Request<GetInvoiceRequest>) -> Result<Response<Invoice>, Status> {
        let caller = caller(&request)?;
        let id = request.into_inner().id;
        println!("    (server: Get {id} for key {caller})");
        self.invoices
            .lock()
            .await
            .get(&id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no such invoice"))
    }

    async fn create(
        &self,
        request: Request<CreateInvoiceRequest>,
    ) -> Result<Response<Invoice>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let id = (self.next_id.fetch_add(1, Ordering::Relaxed) + 1).to_string();
        println!("    (server: Create {id} for key {caller})");
        let invoice = Invoice {
            id: id.clone(),
            customer: request.customer,
            amount_cents: request.amount_cents,
        };
        self.invoices.lock().await.insert(id, invoice.clone());
        Ok(Response::new(invoice))
    }
}

/// Per-method scopes: a gRPC method is a `POST` to `/package.Service/Method`.
fn gate(verifier: ApiKeyVerifier) -> Result<ScopeGateLayer, scopegate::ConfigError> {
    let policy = Policy::builder()
        .route(Route::post("/invoices.v1.Invoices/Get").require_all(["invoices:read"]))
        .route(Route::post("/invoices.v1.Invoices/Create").require_all(["invoices:write"]))
        .build()?;
    ScopeGateLayer::builder(policy).api_keys(verifier).build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // Keys: a reader (invoices:read) and a clerk (invoices:read, invoices:write), in memory.
    let peppers = Peppers::single(Pepper::new(1, rand::random::<[u8; 32]>().to_vec())?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(KeyCache::new(
        Arc::new(MemoryKeyStore::new()),
        CacheConfig::default(),
    ));
    let keys = KeyIssuer::new(
        store.clone(),
        KeyFormat::default(),
        peppers.clone(),
        clock.clone(),
    );
    let verifier = ApiKeyVerifier::builder(peppers, store).clock(clock).build();
    let reader = keys
        .issue(NewKey::new("reader", ScopeSet::parse(["invoices:read"])?))
        .await?;
    let clerk = keys
        .issue(NewKey::new(
            "clerk",
            ScopeSet::parse(["invoices:read", "invoices:write"])?,
        ))
        .await?;
    let reader = reader
        .key()
        .expose_str()
        .ok_or("keys are ASCII")?
        .to_owned();
    let clerk = clerk.key().expose_str().ok_or("keys are ASCII")?.to_owned();

    // The server: TLS (a self-signed certificate for `localhost`, generated now), the gate, the service.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let ca_pem = cert.cert.pem();
    let identity = Identity::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))?
        .layer(gate(verifier)?)
        .add_service(InvoicesServer::new(InvoiceBook::default()))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    println!("invoices.v1.Invoices over TLS on {addr}\n");

    let mut client = InvoicesClient::new(channel(addr, &ca_pem).await?);
    let mut unexpected = 0;
    let mut expect = |what: &str, code: Code, got: Result<Invoice, Status>| {
        let got_code = got.as_ref().map_or_else(Status::code, |_| Code::Ok);
        let shown = match &got {
            Ok(invoice) => format!(
                "invoice {} for {} ({} cents)",
                invoice.id, invoice.customer, invoice.amount_cents
            ),
            Err(status) => format!("message {:?}", status.message()),
        };
        let verdict = if got_code == code {
            "as expected"
        } else {
            unexpected += 1;
            "UNEXPECTED"
        };
        println!(
            "{what}\n  → {got_code:?} ({})  {shown}  [{verdict}]\n",
            i32::from(got_code)
        );
    };

    let create = |customer: &str| CreateInvoiceRequest {
        customer: customer.to_owned(),
        amount_cents: 12_900,
    };
    let got = client.create(with_key(create("Acme"), Some(&clerk))?).await;
    expect(
        "clerk: Create (invoices:write)",
        Code::Ok,
        got.map(Response::into_inner),
    );
    let get = || GetInvoiceRequest { id: "1".to_owned() };
    let got = client.get(with_key(get(), Some(&reader))?).await;
    expect(
        "reader: Get (invoices:read)",
        Code::Ok,
        got.map(Response::into_inner),
    );
    let got = client
        .create(with_key(create("Globex"), Some(&reader))?)
        .await;
    expect(
        "reader: Create (needs invoices:write, which the reader lacks)",
        Code::PermissionDenied,
        got.map(Response::into_inner),
    );
    let got = client.get(with_key(get(), None)?).await;
    expect(
        "no key: Get",
        Code::Unauthenticated,
        got.map(Response::into_inner),
    );

    if unexpected == 0 {
        Ok(())
    } else {
        Err(format!("{unexpected} unexpected status(es)").into())
    }
}

/// A TLS channel to `addr` that trusts `ca_pem` and checks the certificate's name `localhost`.
async fn channel(addr: SocketAddr, ca_pem: &str) -> Result<Channel, Box<dyn Error>> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    Ok(Channel::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// A request carrying the API key in the `x-api-key` metadata (the gate's default header), or no key.
fn with_key<T>(message: T, key: Option<&str>) -> Result<Request<T>, Box<dyn Error>> {
    let mut request = Request::new(message);
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("x-api-key", MetadataValue::try_from(key)?);
    }
    Ok(request)
}
