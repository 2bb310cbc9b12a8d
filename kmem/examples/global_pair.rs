//! The hot 32-byte alloc+free pair through `GlobalAlloc`, for
//! `valgrind --tool=callgrind` (instructions per pair):
//!
//! ```text
//! cargo build --release -p bsdalloc-kmem --example global_pair
//! valgrind --tool=callgrind target/release/examples/global_pair 1000000
//! valgrind --tool=callgrind target/release/examples/global_pair 2000000
//! ```
//! (Ir at 2N - Ir at N) / N = instructions per pair, loop included.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let l = Layout::from_size_align(32, 8).unwrap();
    let a = kmem::Kmem;
    for _ in 0..n {
        // SAFETY: a non-zero layout; freed with the same layout.
        unsafe {
            let p = a.alloc(black_box(l));
            a.dealloc(black_box(p), l);
        }
    }
}
