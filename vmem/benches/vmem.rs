//! Instant fit is O(1) (Bonwick & Adams): the cost of an alloc+free pair
//! must not grow with the number of live segments. Each arena holds `n`
//! live one-quantum segments interleaved with `n` one-quantum holes, so the
//! smallest freelist is crowded; the pair allocates 4 quanta.
//!
//! Target: ns/op at 10^6 live segments <= 1.5x ns/op at 10^2.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::Duration;
use vmem::{Arena, Constraints, Flags};

const Q: usize = 16;

fn populated(n: usize) -> Arena<'static> {
    let a = Arena::builder("bench")
        .quantum(Q)
        .span(1 << 32, (4 * n + 1024) * Q)
        .build()
        .unwrap();
    let all: Vec<usize> = (0..2 * n)
        .map(|_| a.alloc(Q, Flags::NOWAIT).unwrap())
        .collect();
    for p in all.iter().step_by(2) {
        a.free(*p, Q).unwrap();
    }
    // Settle the busy hash at its size for n segments.
    let p = a.alloc(Q, Flags::NOWAIT).unwrap();
    a.free(p, Q).unwrap();
    a
}

fn instant_fit(c: &mut Criterion) {
    let mut g = c.benchmark_group("vmem_instant_fit_pair");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(40);
    for n in [100usize, 10_000, 1_000_000] {
        let a = populated(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let p = a
                    .alloc(black_box(4 * Q), Flags::NOWAIT | Flags::INSTANTFIT)
                    .unwrap();
                a.free(black_box(p), 4 * Q).unwrap();
            })
        });
        // The populated segments stay allocated: skip the busy-arena report.
        std::mem::forget(a);
    }
    g.finish();
}

fn constrained(c: &mut Criterion) {
    let mut g = c.benchmark_group("vmem_xalloc_constrained_pair");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(40);
    let cons = Constraints::new().align(256).phase(32).nocross(4096);
    for n in [100usize, 1_000_000] {
        let a = populated(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let p = a.xalloc(black_box(64), &cons, Flags::NOWAIT).unwrap();
                a.xfree(black_box(p), 64).unwrap();
            })
        });
        std::mem::forget(a);
    }
    g.finish();
}

criterion_group!(benches, instant_fit, constrained);
criterion_main!(benches);
