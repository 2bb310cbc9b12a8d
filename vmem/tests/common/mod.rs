//! What the arena tests share: an arena over one static span, and the
//! invariant walker as an assertion.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use vmem::{Arena, Flags, Source};

/// An arena named `name` with quantum `quantum` over `[base, base + size)`.
pub fn arena(name: &str, quantum: usize, base: usize, size: usize) -> Arena<'static> {
    Arena::builder(name)
        .quantum(quantum)
        .span(base, size)
        .build()
        .unwrap()
}

/// Panics with the walker's finding if the arena's invariants do not hold.
pub fn check(a: &Arena<'_>) {
    a.check_invariants().unwrap_or_else(|e| panic!("{e}"));
}

/// An import source that hands out fresh spans (each twice its size
/// apart) and counts the bytes out: `out()` is 0 once every span it gave
/// has come back.
pub struct Spans(AtomicUsize, AtomicUsize);

impl Spans {
    pub fn new(base: usize) -> Self {
        Spans(AtomicUsize::new(base), AtomicUsize::new(0))
    }

    /// Bytes imported and not yet released.
    pub fn out(&self) -> usize {
        self.1.load(Ordering::SeqCst)
    }
}

impl Source for Spans {
    fn import(&self, size: usize, _: Flags) -> Option<usize> {
        self.1.fetch_add(size, Ordering::SeqCst);
        Some(self.0.fetch_add(size * 2, Ordering::SeqCst))
    }
    fn release(&self, _: usize, size: usize) {
        self.1.fetch_sub(size, Ordering::SeqCst);
    }
}
