//! vmem against the range allocators people use today (issue 19):
//! `offset-allocator` (TLSF-style, not thread-safe), `range-alloc` (gfx-rs,
//! best fit over a sorted vector, not thread-safe) and `vmem` 1.0 (a
//! Bonwick vmem for `no_std` kernels).
//!
//! - `random/N`: N live segments of 1..=1024 units (log-uniform); each
//!   iteration frees a random live segment and allocates a new one (ns per
//!   alloc+free pair);
//!   `ours_*_handle` frees by handle (`alloc_handle`/`free_handle`), as
//!   offset-allocator does;
//! - `ids/N`: the same with size 1 (next fit where the allocator has it).
//!
//! vmem 1.0 and range-alloc are left out where one step takes tens of
//! microseconds (their setup alone would take minutes). The table in the
//! crate docs comes from `cargo run --release -p vmem --example compare`,
//! which interleaves the allocators in one process and prints medians and
//! the fill at the first failure.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::time::Duration;

#[path = "common/peers.rs"]
mod peers;
use peers::Kind;

fn group(c: &mut Criterion, name: &str, ids: bool, cases: &[(usize, &[Kind])]) {
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);
    for &(live, kinds) in cases {
        for &kind in kinds {
            let mut s = peers::steady(kind, live, ids, 42);
            g.bench_with_input(BenchmarkId::new(kind.short(), live), &live, |b, _| {
                b.iter(|| s.step())
            });
            if s.failures() > 0 {
                eprintln!(
                    "{} at {live} live: {} allocations failed (free space splintered)",
                    kind.label(),
                    s.failures()
                );
            }
        }
    }
    g.finish();
}

fn random(c: &mut Criterion) {
    use Kind::*;
    let all: &[Kind] = &[
        OursInstant,
        OursInstantHandle,
        OursLocalHandle,
        OursBest,
        Offset,
        Vmem1Instant,
        Range,
    ];
    let big: &[Kind] = &[
        OursInstant,
        OursInstantHandle,
        OursLocalHandle,
        OursBest,
        Offset,
    ];
    group(
        c,
        "random",
        false,
        &[(100, all), (10_000, all), (100_000, big), (1_000_000, big)],
    );
}

fn ids(c: &mut Criterion) {
    use Kind::*;
    let all: &[Kind] = &[
        OursNext,
        OursInstant,
        OursInstantHandle,
        OursLocalHandle,
        Offset,
        Vmem1Next,
        Range,
    ];
    let big: &[Kind] = &[OursNext, OursInstant, OursInstantHandle, Offset];
    group(
        c,
        "ids",
        true,
        &[(100, all), (10_000, all), (1_000_000, big)],
    );
}

criterion_group!(benches, random, ids);
criterion_main!(benches);
