//! A working set that moves from size class to size class faster than the
//! lazy timeout's period: 1,000 buffers grown in turn by `realloc`, a few
//! bytes at a time, as `perl` grows 1,000 strings appended to in turn.
//! Each step takes every buffer up a class, and no buffer goes back to the
//! class it left, so what a class's cache holds is never asked for again.
//! The process may hold its live bytes and a few classes' worth more, not
//! every class's peak: 2026-12-07, 23 MiB of buffers peaked at +80 MiB
//! resident, and at +179 MiB without the timeout's growth pass (then only
//! a pass a second trims the classes left behind, and this takes 0.2 s);
//! +60 MiB since that pass gives back at once what a class's cache only
//! took in (`uma::Zone::trim_early`).
//! Its own process: the peak resident set is the measure.
#![cfg(not(loom))]
// Test code: its unsafe blocks reallocate and free what it allocated with
// that layout.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};

use kmem::Kmem;

const MIB: usize = 1 << 20;
const BUFFERS: usize = 1000;
/// Bytes each buffer ends at: 24 MiB in all, in the 24 KiB class.
const FINAL: usize = 24 << 10;
/// Bytes appended to each buffer per turn.
const STEP: usize = 40;

#[test]
fn buffers_grown_in_turn_keep_near_their_live_bytes() {
    let l = |size| Layout::from_size_align(size, 8).unwrap();
    let before = kmem::os_stats().peak_resident;
    let mut bufs: Vec<(*mut u8, usize)> = (0..BUFFERS)
        .map(|_| {
            let p = unsafe { Kmem.alloc(l(STEP)) };
            assert!(!p.is_null());
            unsafe { p.write_bytes(7, STEP) };
            (p, STEP)
        })
        .collect();
    while bufs[0].1 < FINAL {
        for b in &mut bufs {
            let new = b.1 + STEP;
            let p = unsafe { Kmem.realloc(b.0, l(b.1), new) };
            assert!(!p.is_null());
            // What the program appends: the new bytes written, the old kept.
            unsafe { p.add(b.1).write_bytes(7, STEP) };
            assert_eq!(unsafe { p.read() }, 7, "the contents moved with the block");
            *b = (p, new);
        }
    }
    let live = BUFFERS * bufs[0].1;
    let peak = kmem::os_stats().peak_resident.saturating_sub(before);
    let d = kmem::dirty_stats();
    eprintln!(
        "live {} MiB, peak resident +{} MiB, {} timeout passes, {} MiB of slabs freed dirty, {} MiB of dirty pages reused",
        live / MIB,
        peak / MIB,
        kmem::timeout_passes(),
        d.slabs_freed_total / MIB,
        d.reused_total / MIB
    );
    assert!(
        peak <= 3 * live,
        "peak resident +{} MiB for {} MiB of buffers",
        peak / MIB,
        live / MIB
    );
    // The classes left behind gave their slabs back with the pages kept,
    // and the classes after them took those pages instead of new ones.
    assert!(
        d.slabs_freed_total > live,
        "{} MiB of slabs freed",
        d.slabs_freed_total / MIB
    );
    assert!(
        d.reused_total > live,
        "{} MiB of dirty pages reused",
        d.reused_total / MIB
    );
    for (p, size) in bufs {
        unsafe { Kmem.dealloc(p, l(size)) };
    }
}
