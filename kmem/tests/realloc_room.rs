//! `realloc` of a block that grows by half its size at a time past every
//! free range of the arena: moved with room to go on growing in place
//! (address space imported for it), through `kmem::raw` (the C ABI's road)
//! and through `Kmem`. A file of its own: its 768 MiB of spans, retained
//! afterwards, would change where the blocks of `tests/realloc.rs` land.
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout};

use kmem::{raw, Kmem};

const KIB: usize = 1024;
const MIB: usize = KIB * KIB;
/// Where the blocks start: a block of 64 MiB or more that is half the
/// large bytes in use or more gets room imported for it.
const START: usize = 64 * MIB;

/// Grows the block `p` of [`START`] bytes to `top` bytes by half its size
/// at a time (a C buffer or a C++ vector growing by 1.5x), checking its
/// first byte and writing its last at each step; returns the block, its
/// size and the number of moves.
fn half_steps(
    mut p: *mut u8,
    top: usize,
    grow: impl Fn(*mut u8, usize, usize) -> *mut u8,
) -> (*mut u8, usize, usize) {
    let mut size = START;
    assert!(!p.is_null());
    // SAFETY: the block has `size` bytes.
    unsafe { p.write(7) };
    let mut moves = 0;
    while size < top {
        let next = size + size / 2;
        let q = grow(p, size, next);
        assert!(!q.is_null(), "growing {size} to {next} bytes");
        // SAFETY: `q` has `next` bytes; its first byte was kept.
        unsafe {
            assert_eq!(q.read(), 7, "the first byte, after growing to {next}");
            q.add(next - 1).write(7);
        }
        if q != p {
            moves += 1;
        }
        (p, size) = (q, next);
    }
    (p, size, moves)
}

#[test]
fn a_block_that_outgrows_every_free_range_moves_with_room_to_grow() {
    // 64 MiB to 768 MiB by half steps is 7 steps. Each move takes room for
    // the block to grow by 2.5 times in place (address space, imported if
    // the arena has no such range), so it moves at most every third step.
    // Before, the block was larger than any free range, went into a span
    // of its own size and was copied at every step: 7 moves through either
    // door, run first. Each door in turn here, the other's block freed.
    let top = 768 * MIB;
    let lay = |n| Layout::from_size_align(n, 16).unwrap();
    // SAFETY: a valid non-zero layout.
    let first = unsafe { Kmem.alloc(lay(START)) };
    // SAFETY: p is live with that layout; it is replaced by the result.
    let k_grow = |p, old, n| unsafe { Kmem.realloc(p, lay(old), n) };
    let (p, size, moves) = half_steps(first, top, k_grow);
    // SAFETY: live with that layout, unused afterwards.
    unsafe { Kmem.dealloc(p, lay(size)) };
    assert!(moves <= 3, "Kmem: {moves} moves in 7 steps");
    // SAFETY: p is live; it is replaced by the result.
    let raw_grow = |p, _, n| unsafe { raw::realloc(p, n, 16) };
    let (p, _, moves) = half_steps(raw::alloc(START, 16), top, raw_grow);
    // SAFETY: live, unused afterwards.
    assert!(unsafe { raw::free(p) });
    assert!(moves <= 3, "kmem::raw: {moves} moves in 7 steps");
}
