//! Instant fit is O(1) (Bonwick & Adams): the cost of an alloc+free pair
//! must not grow with the number of live segments. Each arena holds `n`
//! live one-quantum segments interleaved with `n` one-quantum holes, so the
//! smallest freelist is crowded; the pair allocates 4 quanta.
//!
//! Target: ns/op at 10^6 live segments <= 1.5x ns/op at 10^2.
//!
//! `vmem_import_into_hole`: an import whose span lands between the spans
//! already held (as `mmap` refills a hole `munmap` left), with `n` busy
//! segments in those spans, and its release. Where the span goes is found
//! among the spans (a few dozen here), so the pair must not grow with `n`
//! either (target: 10^5 <= 1.5x 10^2).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;
use vmem::{Arena, Constraints, Flags, Source};

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

/// Hands out the addresses on its stack, one span each; a released span's
/// address goes back on top.
struct Stack(Mutex<Vec<usize>>);

impl Source for Stack {
    fn import(&self, _size: usize, _flags: Flags) -> Option<usize> {
        self.0.lock().unwrap().pop()
    }
    fn release(&self, addr: usize, _size: usize) {
        self.0.lock().unwrap().push(addr);
    }
}

fn import_into_hole(c: &mut Criterion) {
    const SPANS: usize = 64;
    let mut g = c.benchmark_group("vmem_import_into_hole");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(40);
    for n in [100usize, 100_000] {
        // SPANS spans of n / SPANS busy quanta each (and room for no more),
        // half below the hole and half above it, arriving from both ends.
        let span = (n / SPANS).max(1) * Q;
        let base = 1usize << 40;
        let hole = base + (SPANS / 2) * 2 * span;
        let addrs: Vec<usize> = (0..SPANS)
            .map(|i| {
                let k = if i % 2 == 0 { i / 2 } else { SPANS - i / 2 };
                base + k * 2 * span
            })
            .rev()
            .collect();
        let src = Stack(Mutex::new(addrs));
        let a = Arena::builder("import bench")
            .quantum(Q)
            .source(&src, span)
            .build()
            .unwrap();
        for _ in 0..SPANS * (span / Q) {
            a.alloc(Q, Flags::NOWAIT | Flags::INSTANTFIT).unwrap();
        }
        src.0.lock().unwrap().push(hole);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let p = a
                    .alloc(black_box(span), Flags::NOWAIT | Flags::INSTANTFIT)
                    .unwrap();
                assert_eq!(p, hole);
                a.free(black_box(p), span).unwrap();
            })
        });
        std::mem::forget(a);
    }
    g.finish();
}

criterion_group!(benches, instant_fit, constrained, import_into_hole);
criterion_main!(benches);
