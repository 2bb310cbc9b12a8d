//! Small helpers of the stress tests: a random number generator that
//! neither allocates nor locks, a watchdog, and a zone burst. Included with
//! `#[path = "common/util.rs"] mod util;` (each test uses part of it).
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// xorshift64*: no allocation, no locks (usable in a forked child).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Aborts the process if `done` is not set within `limit`.
pub fn watchdog(done: Arc<AtomicBool>, limit: Duration, what: &'static str) {
    std::thread::spawn(move || {
        let t = Instant::now();
        while !done.load(Ordering::Acquire) {
            if t.elapsed() > limit {
                eprintln!("watchdog: {what} hung for {limit:?}");
                std::process::abort();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

/// A zone fini that does nothing (a zone whose trim runs application code).
pub fn noop_fini(_item: std::ptr::NonNull<u8>, _size: usize) {}

/// Allocates `n` items of `z` and frees them all: a burst into its caches.
pub fn fill_and_free(z: &uma::Zone, n: usize) {
    let v: Vec<_> = (0..n)
        .map(|_| z.alloc(uma::Flags::NOWAIT).unwrap())
        .collect();
    for p in v {
        // SAFETY: allocated from `z` just above, freed once.
        unsafe { z.free(p) };
    }
}
