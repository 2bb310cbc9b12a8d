//! Large buffers grown in turn by `realloc`: each move imports a span
//! larger than the last, and the spans the buffers leave are wholly free.
//! Retained, they are never taken again (every later import is larger);
//! an import that none fits passes them over, and a span passed over a
//! few imports in a row is unmapped (`dirty::unmap_outgrown_spans`).
//! Until 2026-12-07 a list of 32 retained spans bounded this by luck;
//! with 256 and none unmapped, 16 buffers grown by 4 KiB to 8 MiB
//! (128 MiB) peaked at +199 MiB resident, now +155. Its own process: the
//! peak resident set is the measure.
#![cfg(not(loom))]
// Test code: its unsafe blocks reallocate and free what it allocated with
// that layout.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};

use kmem::Kmem;

const MIB: usize = 1 << 20;
const BUFFERS: usize = 16;
const FINAL: usize = 8 << 20;
const STEP: usize = 4 << 10;

#[test]
fn spans_that_imports_outgrow_are_not_kept() {
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
            unsafe { p.add(b.1).write_bytes(7, STEP) };
            assert_eq!(unsafe { p.read() }, 7, "the contents moved with the block");
            *b = (p, new);
        }
    }
    let live = BUFFERS * bufs[0].1;
    let peak = kmem::os_stats().peak_resident.saturating_sub(before);
    eprintln!("live {} MiB, peak resident +{} MiB", live / MIB, peak / MIB);
    assert!(
        peak * 10 <= live * 14,
        "peak resident +{} MiB for {} MiB of buffers",
        peak / MIB,
        live / MIB
    );
    for (p, size) in bufs {
        unsafe { Kmem.dealloc(p, l(size)) };
    }
}
