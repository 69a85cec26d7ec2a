//! CIDR set lookups: 10,000 networks against 1 network (same structure), and against a linear `ipnetwork` scan.
//!
//! Target: 10,000 entries ≤ 2x one entry, and ≥ 100x faster than the linear scan.

#![allow(missing_docs, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use ipnetwork::IpNetwork;
use scopegate::network::{Cidr, CidrSet};

fn networks(n: u32) -> Vec<Cidr> {
    // Spread /24s and /28s over 10.0.0.0/8 and 172.16.0.0/12 so the trie has real depth.
    (0..n)
        .map(|i| {
            let text = if i % 2 == 0 {
                format!("10.{}.{}.0/24", (i >> 8) & 0xff, i & 0xff)
            } else {
                format!(
                    "172.{}.{}.{}/28",
                    16 + ((i >> 12) & 0xf),
                    (i >> 4) & 0xff,
                    (i & 0xf) << 4
                )
            };
            text.parse().expect("valid network")
        })
        .collect()
}

fn probes() -> Vec<IpAddr> {
    // A fixed mix of hits and misses, drawn from a simple LCG so every run sees the same addresses.
    let mut x: u32 = 0x1234_5678;
    (0..1024)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let high = if x & 1 == 0 { 10 } else { 172 };
            IpAddr::V4(Ipv4Addr::from((high << 24) | (x >> 8)))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let big_list = networks(10_000);
    let big: CidrSet = big_list.iter().copied().collect();
    let one: CidrSet = networks(1).into_iter().collect();
    let linear: Vec<IpNetwork> = big_list.iter().map(Cidr::network).collect();
    let probes = probes();

    let mut group = c.benchmark_group("cidr_contains");
    let mut i = 0usize;
    group.bench_function("set_1", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(one.contains(black_box(probes[i])))
        });
    });
    group.bench_function("set_10000", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(big.contains(black_box(probes[i])))
        });
    });
    group.bench_function("linear_ipnetwork_10000", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let ip = black_box(probes[i]);
            black_box(linear.iter().any(|n| n.contains(ip)))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
