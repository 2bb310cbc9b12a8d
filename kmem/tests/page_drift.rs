//! `class_drift.rs` one size up: buffers grown in turn by `realloc` through
//! the page caches (the quantum cache's 36-64 KiB zones and the large
//! classes' 80-128 KiB ones) instead of the slab classes. A buffer that
//! moves on from a page cache's size leaves its range in that zone's
//! cache, which no buffer asks for again. Those zones have no slow-path
//! hook of their own, so until 2026-12-07 nothing ran the lazy timeout
//! while such buffers grew, and a timeout pass kept what the period had
//! freed into a cache as its working set: 500 buffers grown to 128 KiB
//! (62 MiB) peaked at +281 MiB resident, every size they passed through
//! still cached; now +93 MiB. Its own process: the peak resident set is the measure.
#![cfg(not(loom))]
// Test code: its unsafe blocks reallocate and free what it allocated with
// that layout.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};

use kmem::Kmem;

const MIB: usize = 1 << 20;
const BUFFERS: usize = 500;
/// Bytes each buffer ends at: 62.5 MiB in all.
const FINAL: usize = 128 << 10;
/// Bytes each buffer starts at (the quantum cache's sizes begin above
/// 32 KiB), and appends per turn.
const START: usize = 32 << 10;
const STEP: usize = 512;

#[test]
fn buffers_grown_through_the_page_caches_keep_near_their_live_bytes() {
    let l = |size| Layout::from_size_align(size, 8).unwrap();
    let before = kmem::os_stats().peak_resident;
    let mut bufs: Vec<(*mut u8, usize)> = (0..BUFFERS)
        .map(|_| {
            let p = unsafe { Kmem.alloc(l(START)) };
            assert!(!p.is_null());
            unsafe { p.write_bytes(7, START) };
            (p, START)
        })
        .collect();
    while bufs[0].1 < FINAL {
        for b in &mut bufs {
            let new = b.1 + STEP;
            let p = unsafe { Kmem.realloc(b.0, l(b.1), new) };
            assert!(!p.is_null());
            unsafe { p.add(b.1).write_bytes(7, STEP) };
            assert_eq!(unsafe { p.read() }, 7, "the contents moved with the block");
            *b = (p, new);
        }
    }
    let live = BUFFERS * bufs[0].1;
    let peak = kmem::os_stats().peak_resident.saturating_sub(before);
    eprintln!(
        "live {} MiB, peak resident +{} MiB, {} timeout passes",
        live / MIB,
        peak / MIB,
        kmem::timeout_passes(),
    );
    assert!(
        peak <= 2 * live,
        "peak resident +{} MiB for {} MiB of buffers",
        peak / MIB,
        live / MIB
    );
    for (p, size) in bufs {
        unsafe { Kmem.dealloc(p, l(size)) };
    }
}
