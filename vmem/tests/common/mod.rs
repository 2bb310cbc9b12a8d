//! What the arena tests share: an arena over one static span, and the
//! invariant walker as an assertion.
#![allow(dead_code)]

use vmem::Arena;

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
