//! `pair N`: N hot alloc+free pairs on a 64-byte zone, for
//! `valgrind --tool=callgrind` (instructions per pair = the difference
//! between two runs with different N, divided by the difference in N).

#[cfg(loom)]
fn main() {}

#[cfg(not(loom))]
fn main() {
    use std::hint::black_box;
    use uma::{global, Flags, ZoneArgs};
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let z = global().create_zone(&ZoneArgs::new("pair64", 64)).unwrap();
    // warm up: cache registered, buckets installed
    for _ in 0..1000 {
        let p = z.alloc(Flags::NOWAIT).unwrap();
        // SAFETY: p came from z and is freed once.
        unsafe { z.free(p) };
    }
    for _ in 0..n {
        let p = z.alloc(Flags::NOWAIT).unwrap();
        // SAFETY: p came from z and is freed once.
        unsafe { z.free(black_box(p)) };
    }
    println!("{} pairs; membarrier: {}", n, uma::membarrier_active());
}
