//! The hot alloc+free pair of a 64-byte zone against the system malloc of
//! the same size (`std::alloc::System`).

#![cfg_attr(loom, allow(unused))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
#[cfg(not(loom))]
use uma::{global, Flags, ZoneArgs};

#[cfg(not(loom))]
fn pair(c: &mut Criterion) {
    let z = global().create_zone(&ZoneArgs::new("bench64", 64)).unwrap();
    let mut g = c.benchmark_group("alloc_free_pair_64B");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("uma_zone", |b| {
        b.iter(|| {
            let p = z.alloc(Flags::NOWAIT).unwrap();
            // SAFETY: p came from z and is freed once.
            unsafe { z.free(black_box(p)) };
        })
    });
    let l = Layout::from_size_align(64, 8).unwrap();
    g.bench_function("system_malloc", |b| {
        b.iter(|| {
            // SAFETY: non-zero layout; freed with the same layout.
            unsafe {
                let p = System.alloc(black_box(l));
                System.dealloc(black_box(p), l);
            }
        })
    });
    g.finish();
}

#[cfg(loom)]
fn pair(_c: &mut Criterion) {}

criterion_group!(benches, pair);
criterion_main!(benches);
