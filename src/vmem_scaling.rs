//! The vmem layer's report (`cargo run --release -- --vmem-scaling`): the
//! instant-fit scaling check (alloc+free pair cost at 10^2, 10^4 and 10^6
//! live segments, median of several rounds) and the statistics of the
//! largest arena, by freelist order.

use std::time::Instant;
use vmem::{Arena, Flags};

const Q: usize = 16;

/// An arena with `n` live one-quantum segments and `n` one-quantum holes.
fn populated(n: usize) -> Arena<'static> {
    let a = Arena::builder("scaling")
        .quantum(Q)
        .span(1 << 32, (4 * n + 1024) * Q)
        .build()
        .expect("arena");
    let mut prev = None;
    for i in 0..2 * n {
        let p = a.alloc(Q, Flags::NOWAIT).expect("populate");
        if i % 2 == 1 {
            if let Some(h) = prev.take() {
                a.free(h, Q).expect("hole");
            }
        } else {
            prev = Some(p);
        }
    }
    a
}

/// Median ns per instant-fit alloc+free pair of 4 quanta.
fn pair_ns(a: &Arena<'_>) -> f64 {
    const PAIRS: usize = 200_000;
    let mut rounds: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..PAIRS {
                let p = a
                    .alloc(std::hint::black_box(4 * Q), Flags::NOWAIT)
                    .expect("alloc");
                a.free(std::hint::black_box(p), 4 * Q).expect("free");
            }
            t.elapsed().as_nanos() as f64 / PAIRS as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

/// Runs the report and prints it on stdout.
pub fn run() {
    println!("bsdalloc: vmem instant-fit scaling (alloc+free pair, 4 quanta of {Q} B)");
    println!("{:>12} {:>10} {:>8}", "live segs", "ns/pair", "ratio");
    let mut base = None;
    let mut last = None;
    for n in [100usize, 10_000, 1_000_000] {
        eprint!("  populating {n} live segments...\r");
        let a = populated(n);
        let ns = pair_ns(&a);
        let b = *base.get_or_insert(ns);
        println!("{n:>12} {ns:>10.1} {:>8.2}", ns / b);
        a.check_invariants().expect("arena invariants");
        last = Some(a);
    }
    let a = last.expect("ran");
    let s = a.stats();
    println!();
    println!(
        "arena '{}': size {} B, in use {} B, {} busy / {} free segments, largest free {} B, {} hash buckets",
        s.name, s.size, s.inuse, s.busy_segments, s.free_segments, s.largest_free, s.hash_buckets
    );
    println!(
        "{:>14} {:>10} {:>14} {:>10} {:>14}",
        "order size", "busy", "busy bytes", "free", "free bytes"
    );
    for o in a.order_stats().iter().filter(|o| o.busy + o.free > 0) {
        println!(
            "{:>14} {:>10} {:>14} {:>10} {:>14}",
            o.size, o.busy, o.busy_bytes, o.free, o.free_bytes
        );
    }
    // Leave the arena holding its segments; exiting reclaims the process.
    std::mem::forget(a);
}
