//! `realloc` of large blocks: in place where the arena has the pages after
//! the block (`vmem::Arena::xresize`), moved with room to grow otherwise,
//! shrunk in place; contents kept every time, through `kmem::raw` (the C
//! ABI's road) and through `Kmem` (Rust's `GlobalAlloc::realloc`).
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kmem::{raw, Kmem};

const KIB: usize = 1024;

/// The arena is process-wide: one test at a time, so that no other test
/// takes the pages after a block between two steps.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Byte `i` of a block's pattern.
fn pat(i: usize) -> u8 {
    (i.wrapping_mul(31) >> 3) as u8
}

fn fill(p: *mut u8, from: usize, to: usize) {
    for i in from..to {
        // SAFETY: the caller's block has `to` bytes.
        unsafe { p.add(i).write(pat(i)) };
    }
}

/// Checks every 97th byte and the last of the first `n`.
fn check(p: *const u8, n: usize) {
    for i in (0..n).step_by(97).chain([n - 1]) {
        // SAFETY: the caller's block has `n` bytes.
        assert_eq!(unsafe { p.add(i).read() }, pat(i), "byte {i} of {n}");
    }
}

#[test]
fn raw_realloc_grows_large_blocks_in_place_and_keeps_their_contents() {
    let _g = serial();
    let mut size = 200 * KIB;
    let mut p = raw::alloc(size, 16);
    assert!(!p.is_null());
    fill(p, 0, size);
    let (mut steps, mut moves) = (0, 0);
    while size < 3 * KIB * KIB {
        let next = size + KIB + (steps * 977) % (6 * KIB);
        // SAFETY: p is live; on success it is replaced by the result.
        let q = unsafe { raw::realloc(p, next, 16) };
        assert!(!q.is_null());
        if q != p {
            moves += 1;
        }
        check(q, size);
        fill(q, size, next);
        assert!(raw::usable_size(q) >= next);
        (p, size, steps) = (q, next, steps + 1);
    }
    // Before in-place growth every step moved the block (and copied it).
    // Now: a move where the pages after it are taken, with a quarter more
    // room and, where the arena has it, as much again free after it.
    assert!(steps > 500, "{steps} steps");
    assert!(moves <= 16, "{moves} moves in {steps} steps");

    // Shrinking by more than a quarter gives the tail back in place...
    let small = 2 * KIB * KIB;
    // SAFETY: as above.
    let q = unsafe { raw::realloc(p, small, 16) };
    assert_eq!(q, p, "shrunk in place");
    assert_eq!(raw::usable_size(q), small);
    check(q, small);
    // ... by less, it keeps the block as it is.
    // SAFETY: as above.
    let q = unsafe { raw::realloc(p, small - 300 * KIB, 16) };
    assert_eq!(q, p);
    assert_eq!(raw::usable_size(q), small);
    check(q, small - 300 * KIB);
    // The tail given back is free space: growing again takes it back.
    // SAFETY: as above.
    let q = unsafe { raw::realloc(p, small + 100 * KIB, 16) };
    assert_eq!(q, p, "regrown in place");
    check(q, small - 300 * KIB);
    // SAFETY: live, unused afterwards.
    assert!(unsafe { raw::free(q) });
}

#[test]
fn kmem_realloc_resizes_large_blocks_in_place_with_exact_layouts() {
    let _g = serial();
    kmem::set_report_hook(Some(count));
    let mut layout = Layout::from_size_align(300 * KIB, 64).unwrap();
    // SAFETY: a valid non-zero layout.
    let mut p = unsafe { Kmem.alloc(layout) };
    assert!(!p.is_null());
    fill(p, 0, layout.size());
    let mut moves = 0;
    for step in 1..=200 {
        let next = 300 * KIB + step * 8 * KIB;
        // SAFETY: p is live with `layout`; next is non-zero.
        let q = unsafe { Kmem.realloc(p, layout, next) };
        assert!(!q.is_null());
        moves += usize::from(q != p);
        check(q, layout.size());
        fill(q, layout.size(), next);
        layout = Layout::from_size_align(next, 64).unwrap();
        p = q;
    }
    assert!(moves <= 40, "{moves} moves in 200 steps");
    // Shrink: in place, and the block is then freed with its new layout
    // (a page-count mismatch would be reported as a wrong size).
    // SAFETY: as above.
    let q = unsafe { Kmem.realloc(p, layout, 400 * KIB) };
    assert_eq!(q, p);
    check(q, 400 * KIB);
    // SAFETY: live with this layout, unused afterwards.
    unsafe { Kmem.dealloc(q, Layout::from_size_align(400 * KIB, 64).unwrap()) };
    assert_eq!(REPORTS.load(Ordering::Relaxed), 0);
}

static REPORTS: AtomicUsize = AtomicUsize::new(0);

fn count(_: &kmem::Report) {
    REPORTS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn raw_realloc_doubles_in_place_onto_pages_a_freed_block_left_dirty() {
    let _g = serial();
    // An 8 MiB block, written, shrunk in place to 256 KiB: the 7.75 MiB
    // after it go back to the arena still backed (labelled dirty).
    let big = 8 * KIB * KIB;
    let p = raw::alloc(big, 16);
    assert!(!p.is_null());
    fill(p, 0, big);
    let mut size = 256 * KIB;
    // SAFETY: p is live.
    let q = unsafe { raw::realloc(p, size, 16) };
    assert_eq!(q, p, "shrunk in place");
    // A block that doubles (a `Vec`) grows onto those pages in place: no
    // copy and no page fault, where moving would copy it each time (a
    // large step onto clean pages still moves, to dirty pages elsewhere).
    let mut p = q;
    while size < 4 * KIB * KIB {
        let next = size * 2;
        // SAFETY: p is live; on success it is replaced by the result.
        let q = unsafe { raw::realloc(p, next, 16) };
        assert_eq!(q, p, "{size} -> {next}: moved");
        check(q, size);
        fill(q, size, next);
        (p, size) = (q, next);
    }
    // SAFETY: live, unused afterwards.
    assert!(unsafe { raw::free(p) });
}

/// One `Vec`-like round: a 64 KiB block (the quantum cache's) grown by
/// doubling to `top`, every byte written; returns how many of the
/// doublings after the first moved the block. `grow` is the front door's
/// `realloc`.
fn doubling_round(
    top: usize,
    alloc: impl Fn(usize) -> *mut u8,
    grow: impl Fn(*mut u8, usize, usize) -> *mut u8,
    free: impl Fn(*mut u8, usize),
) -> usize {
    let mut size = 64 * KIB;
    let mut p = alloc(size);
    assert!(!p.is_null());
    fill(p, 0, size);
    let mut moves = 0;
    while size < top {
        let next = size * 2;
        let q = grow(p, size, next);
        assert!(!q.is_null());
        if size > 64 * KIB {
            moves += usize::from(q != p);
        }
        check(q, size);
        fill(q, size, next);
        (p, size) = (q, next);
    }
    free(p, size);
    moves
}

#[test]
fn a_block_that_keeps_doubling_moves_where_it_can_go_on_growing() {
    let _g = serial();
    // Round after round (a `Vec` built to 8 MiB and dropped, again and
    // again), the first move of the block (out of the quantum cache) takes
    // the front of the widest range of dirty pages the rounds before left,
    // and the block then doubles in place to the top: no copy, no fault.
    // Taking the smallest range that fit, it was copied at 2 and at 4 MiB
    // every round.
    let top = 8 * KIB * KIB;
    let raw_alloc = |n| raw::alloc(n, 16);
    // SAFETY: p is live; it is replaced by the result.
    let raw_grow = |p, _, n| unsafe { raw::realloc(p, n, 16) };
    // SAFETY: live, unused afterwards.
    let raw_free = |p, _| assert!(unsafe { raw::free(p) });
    let lay = |n| Layout::from_size_align(n, 8).unwrap();
    // SAFETY: a valid non-zero layout.
    let k_alloc = |n| unsafe { Kmem.alloc(lay(n)) };
    // SAFETY: p is live with that layout; it is replaced by the result.
    let k_grow = |p, old, n| unsafe { Kmem.realloc(p, lay(old), n) };
    // SAFETY: live with that layout, unused afterwards.
    let k_free = |p, n| unsafe { Kmem.dealloc(p, lay(n)) };
    doubling_round(top, raw_alloc, raw_grow, raw_free);
    for round in 0..3 {
        let moves = doubling_round(top, raw_alloc, raw_grow, raw_free);
        assert_eq!(moves, 0, "kmem::raw, round {round}: {moves} moves");
        let moves = doubling_round(top, k_alloc, k_grow, k_free);
        assert_eq!(moves, 0, "Kmem, round {round}: {moves} moves");
    }
}
