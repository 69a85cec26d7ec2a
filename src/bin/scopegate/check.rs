//! `scopegate check`: explains the decision the gate file's gate takes for one request.

use std::convert::Infallible;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderValue, Method, Request, Response};
use scopegate::SystemClock;
use scopegate::layer::{AuditEvent, AuditSink};
use scopegate::network::{ConnectionInfo, parse_ip};
use serde_json::json;
use tower::ServiceExt;

use crate::{Failure, env, load_gate_file};

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The gate file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Request method, upper case.
    #[arg(long)]
    method: String,
    /// Request path (and query), as the client would send it.
    #[arg(long)]
    path: String,
    /// The API key or token; `-` reads it from stdin. Without it, SCOPEGATE_CREDENTIAL is read if set.
    #[arg(long, value_name = "TOKEN_OR_KEY")]
    credential: Option<String>,
    /// The client's IP address; without it the client IP is unknown (and allowlists refuse).
    #[arg(long, value_name = "IP")]
    client_ip: Option<String>,
    /// The request arrived over TLS (the default).
    #[arg(long, conflicts_with = "no_tls")]
    tls: bool,
    /// The request arrived without TLS.
    #[arg(long)]
    no_tls: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// What the audit event of the checked request said.
#[derive(Clone)]
struct Recorded {
    decision: &'static str,
    reason: &'static str,
    route: Option<String>,
    detail: &'static str,
}

/// Captures the one audit event of the checked request.
#[derive(Default, Clone)]
struct Outcome(Arc<Mutex<Option<Recorded>>>);

impl AuditSink for Outcome {
    fn record(&self, e: &AuditEvent<'_>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Recorded {
            decision: e.decision,
            reason: e.reason,
            route: e.route.map(str::to_owned),
            detail: e.detail,
        });
    }
}

fn credential(args: &CheckArgs) -> Result<Option<String>, Failure> {
    match args.credential.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::usage(format!("--credential -: cannot read stdin: {e}")))?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
        Some(value) => Ok(Some(value.to_owned())),
        None => Ok(std::env::var("SCOPEGATE_CREDENTIAL").ok()),
    }
}

pub(crate) async fn run(args: &CheckArgs) -> Result<(), Failure> {
    if args.method.is_empty() || !args.method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Failure::usage(format!(
            "--method {:?}: expected an upper-case method such as GET",
            args.method
        )));
    }
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| Failure::usage(format!("--method {:?}: not a method", args.method)))?;
    let uri: http::Uri = args
        .path
        .parse()
        .ok()
        .filter(|u: &http::Uri| u.scheme().is_none() && u.path().starts_with('/'))
        .ok_or_else(|| {
            Failure::usage(format!(
                "--path {:?}: not a request path such as /v1/items/7",
                args.path
            ))
        })?;
    let client_ip = args
        .client_ip
        .as_deref()
        .map(|ip| parse_ip(ip).map_err(|e| Failure::usage(format!("--client-ip: {e}"))))
        .transpose()?;
    let credential = credential(args)?;

    let gate_file = load_gate_file(&args.config)?;
    let outcome = Outcome::default();
    let gate = gate_file
        .gate(env, SystemClock)
        .await
        .map_err(|e| Failure::usage(e.to_string()))?
        .danger_disable_throttle()
        .audit(outcome.clone())
        .build()
        .map_err(|e| Failure::usage(e.to_string()))?;

    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(String::new())
        .map_err(|e| Failure::usage(e.to_string()))?;
    if let Some(credential) = credential {
        let value = HeaderValue::from_str(&format!("Bearer {credential}"))
            .map_err(|_| Failure::usage("--credential: not something an HTTP header can carry"))?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    let tls = args.tls || !args.no_tls;
    request.extensions_mut().insert(ConnectionInfo {
        peer: client_ip,
        tls,
    });
    let inner = tower::service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    let service = tower::ServiceBuilder::new().layer(gate).service(inner);
    let response = service
        .oneshot(request)
        .await
        .map_err(|e: Infallible| match e {})?;

    let recorded = outcome
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Recorded {
        decision,
        reason,
        route,
        detail,
    } = recorded.ok_or_else(|| Failure::usage("the gate recorded no decision"))?;
    let status = response.status().as_u16();
    if args.json {
        println!(
            "{}",
            json!({ "decision": decision, "status": status, "reason": reason, "route": route })
        );
    } else {
        let route_text = route.as_deref().unwrap_or("(no route)");
        println!("{decision} {status} {reason} route={route_text} ({detail})");
    }
    if decision == "allow" {
        Ok(())
    } else {
        Err(Failure::denied())
    }
}
