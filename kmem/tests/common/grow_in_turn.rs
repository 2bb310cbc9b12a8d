//! Buffers grown in turn by `realloc` through `Kmem`, the way a program
//! appends to many strings or buffers at once (or doubles many `Vec`s):
//! the body of `class_drift.rs`, `page_drift.rs`, `outgrown_spans.rs` and
//! `doubling_drift.rs`, each its own process, whose peak resident set is
//! their measure. Included with
//! `#[path = "common/grow_in_turn.rs"] mod grow_in_turn;`.
// Test code: its unsafe blocks reallocate and free what it allocated with
// that layout.
#![allow(clippy::undocumented_unsafe_blocks)]
// Each test uses part of it.
#![allow(dead_code)]

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

/// `rounds` times: allocates `buffers` buffers of 64 bytes, doubles each
/// in turn (writing the new half, checking the first byte moved with the
/// block) until they hold `end` bytes (a power of two), frees them.
pub fn double(buffers: usize, end: usize, rounds: usize) -> Grown {
    let l = |size| Layout::from_size_align(size, 8).unwrap();
    let before = kmem::os_stats().peak_resident;
    for _ in 0..rounds {
        let mut bufs: Vec<*mut u8> = (0..buffers)
            .map(|_| {
                let p = unsafe { Kmem.alloc(l(64)) };
                assert!(!p.is_null());
                unsafe { p.write_bytes(1, 64) };
                p
            })
            .collect();
        let mut len = 64;
        while len < end {
            for (i, p) in bufs.iter_mut().enumerate() {
                let q = unsafe { Kmem.realloc(*p, l(len), 2 * len) };
                assert!(!q.is_null());
                assert_eq!(unsafe { q.read() }, 1, "the contents moved with the block");
                unsafe { q.add(len).write_bytes(i as u8, len) };
                *p = q;
            }
            len *= 2;
        }
        for p in bufs {
            unsafe { Kmem.dealloc(p, l(len)) };
        }
    }
    Grown {
        live: buffers * end,
        peak: kmem::os_stats().peak_resident.saturating_sub(before),
    }
}

impl Grown {
    /// Prints the figures, and fails if the peak is over `num / den` times
    /// the live bytes.
    pub fn check(&self, num: usize, den: usize) {
        const MIB: usize = 1 << 20;
        eprintln!(
            "live {} MiB, peak resident +{} MiB, {} timeout passes",
            self.live / MIB,
            self.peak / MIB,
            kmem::timeout_passes(),
        );
        assert!(
            self.peak * den <= self.live * num,
            "peak resident +{} MiB for {} MiB of buffers",
            self.peak / MIB,
            self.live / MIB
        );
    }
}
