//! Buffers grown in turn by `realloc` through `Kmem`, the way a program
//! appends to many strings or buffers at once: the body of
//! `class_drift.rs`, `page_drift.rs` and `outgrown_spans.rs`, each its
//! own process, whose peak resident set is their measure. Included with
//! `#[path = "common/grow_in_turn.rs"] mod grow_in_turn;`.
// Test code: its unsafe blocks reallocate and free what it allocated with
// that layout.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};

use kmem::Kmem;

/// What [`grow`] measured.
pub struct Grown {
    /// The buffers' bytes at the end.
    pub live: usize,
    /// The process's peak resident set over the run, beyond what it was
    /// before.
    pub peak: usize,
}

/// Allocates `buffers` buffers of `start` bytes, then grows each in turn
/// by `step` bytes until they hold `end`, writing the new bytes and
/// checking the first moved with the block; frees them.
pub fn grow(buffers: usize, start: usize, end: usize, step: usize) -> Grown {
    let l = |size| Layout::from_size_align(size, 8).unwrap();
    let before = kmem::os_stats().peak_resident;
    let mut bufs: Vec<(*mut u8, usize)> = (0..buffers)
        .map(|_| {
            let p = unsafe { Kmem.alloc(l(start)) };
            assert!(!p.is_null());
            unsafe { p.write_bytes(7, start) };
            (p, start)
        })
        .collect();
    while bufs[0].1 < end {
        for b in &mut bufs {
            let new = b.1 + step;
            let p = unsafe { Kmem.realloc(b.0, l(b.1), new) };
            assert!(!p.is_null());
            // What the program appends: the new bytes written, the old kept.
            unsafe { p.add(b.1).write_bytes(7, step) };
            assert_eq!(unsafe { p.read() }, 7, "the contents moved with the block");
            *b = (p, new);
        }
    }
    let live = buffers * bufs[0].1;
    let peak = kmem::os_stats().peak_resident.saturating_sub(before);
    for (p, size) in bufs {
        unsafe { Kmem.dealloc(p, l(size)) };
    }
    Grown { live, peak }
}
