//! `Forwarded` from a trusted proxy, answered by the whole layer (a public route, so that the forwarding header is
//! the request's only work): the work per byte must not grow with the header's size. Each shape is measured at about
//! 1 KB and about 100 KB; criterion reports bytes per second, and the two sizes of one shape should match (or the
//! larger be faster: the layer's fixed cost weighs less, and the parser stops early at a bound).
//!
//! Shapes, each as an attacker behind a trusted proxy would write it:
//! - `params`: one element with ever more distinct parameters (refused past the per-element bound);
//! - `quoted`: sixteen elements whose `by` values are long quoted strings (accepted, read to the end);
//! - `empty_members`: a long run of empty list members before one element (accepted, read to the end);
//! - `hops`: ever more elements (refused past the hop bound).

#![allow(missing_docs, clippy::expect_used)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderValue, Request, Uri, header::FORWARDED};
use scopegate::layer::ScopeGateLayer;
use scopegate::network::ConnectionInfo;
use scopegate::policy::{Policy, Route};
use tower::{Layer, service_fn};

#[path = "support/poll.rs"]
mod poll;
#[path = "support/service.rs"]
mod service;

use service::{NoAudit, call, hello};

fn params(size: usize) -> String {
    let mut text = String::from("for=203.0.113.7");
    let mut i = 0;
    while text.len() < size {
        let _ = write!(text, ";p{i}=x");
        i += 1;
    }
    text
}

fn quoted(size: usize) -> String {
    let pad = "x".repeat(size / 16);
    (0..16)
        .map(|i| format!("for=198.51.100.{i};by=\"{pad}\""))
        .collect::<Vec<_>>()
        .join(",")
}

fn empty_members(size: usize) -> String {
    let mut text = ", ".repeat(size / 2);
    text.push_str("for=203.0.113.7;proto=https");
    text
}

fn hops(size: usize) -> String {
    let mut text = String::new();
    let mut i = 0u32;
    while text.len() < size {
        let _ = write!(text, "for=198.51.{}.{},", (i >> 8) & 0xff, i & 0xff);
        i += 1;
    }
    text
}

/// A header shape: its name, and a writer of about `size` bytes of it.
type Shape = (&'static str, fn(usize) -> String);

fn bench(c: &mut Criterion) {
    let policy = Policy::builder()
        .route(Route::get("/health").public())
        .build()
        .expect("policy");
    let gate = ScopeGateLayer::builder(policy)
        .trusted_proxies(["10.0.0.0/8".parse().expect("cidr")])
        .audit(NoAudit)
        .build()
        .expect("gate");
    let mut service = gate.layer(service_fn(hello));
    let uri: Uri = "/health".parse().expect("uri");
    let proxy = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let request = |forwarded: &HeaderValue| {
        let mut req = Request::new(());
        *req.uri_mut() = uri.clone();
        req.headers_mut().insert(FORWARDED, forwarded.clone());
        req.extensions_mut().insert(ConnectionInfo {
            peer: Some(proxy),
            tls: true,
        });
        req
    };
    let mut send = |req: Request<()>| call(&mut service, req).expect("infallible").status();
    let mut group = c.benchmark_group("forwarded");
    let shapes: [Shape; 4] = [
        ("params", params),
        ("quoted", quoted),
        ("empty_members", empty_members),
        ("hops", hops),
    ];
    for (name, shape) in shapes {
        for size in [1_000, 100_000] {
            let text = shape(size);
            let value = HeaderValue::from_str(&text).expect("visible ASCII");
            // Accepted shapes answer 200, refused ones 400: either way the header was read.
            let status = send(request(&value)).as_u16();
            assert!(status == 200 || status == 400, "{name} {size}: {status}");
            group.throughput(Throughput::Bytes(text.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &value, |b, value| {
                b.iter(|| black_box(send(request(black_box(value)))));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
