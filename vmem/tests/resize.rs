//! `Arena::xresize`: growing into the free space after a segment, shrinking
//! its tail back, and every refusal, with the arena's invariants checked
//! after each step.
#![cfg(not(loom))]

use vmem::{Arena, Error, Flags, SimpleQuantumCache};

const Q: usize = 4096;

mod common;
use common::check;

fn arena() -> Arena<'static> {
    common::arena("resize", Q, 0x10_0000, 64 * Q)
}

fn xalloc(a: &Arena<'_>, size: usize) -> usize {
    a.xalloc(size, &vmem::Constraints::NONE, Flags::NOWAIT)
        .unwrap()
}

#[test]
fn grows_into_the_free_space_after_it() {
    let a = arena();
    let p = xalloc(&a, 4 * Q);
    let in_use = a.size_allocated();
    a.xresize(p, 4 * Q, 10 * Q).unwrap();
    check(&a);
    assert_eq!(a.size_allocated(), in_use + 6 * Q);
    // Everything after it, exactly.
    a.xresize(p, 10 * Q, 64 * Q).unwrap();
    check(&a);
    assert_eq!(a.size_allocated(), 64 * Q);
    assert!(matches!(
        a.xresize(p, 64 * Q, 65 * Q),
        Err(Error::NoMemory { .. })
    ));
    check(&a);
    a.xfree(p, 64 * Q).unwrap();
    check(&a);
    assert_eq!(a.size_allocated(), 0);
    // The whole span is one free segment again.
    assert_eq!(xalloc(&a, 64 * Q), p);
}

#[test]
fn refuses_to_grow_over_a_busy_neighbour_and_changes_nothing() {
    let a = arena();
    let p = xalloc(&a, 4 * Q);
    let q = a
        .xalloc(
            Q,
            &vmem::Constraints::new().range(p + 6 * Q, p + 7 * Q - 1),
            Flags::NOWAIT,
        )
        .unwrap();
    assert_eq!(q, p + 6 * Q);
    a.xresize(p, 4 * Q, 6 * Q).unwrap();
    assert!(matches!(
        a.xresize(p, 6 * Q, 7 * Q),
        Err(Error::NoMemory { .. })
    ));
    check(&a);
    a.xfree(p, 6 * Q).unwrap();
    a.xfree(q, Q).unwrap();
    check(&a);
    assert_eq!(a.size_allocated(), 0);
}

#[test]
fn shrinks_its_tail_back_whether_or_not_free_space_follows() {
    let a = arena();
    let p = xalloc(&a, 8 * Q);
    // Free space after it: the tail joins it.
    a.xresize(p, 8 * Q, 5 * Q).unwrap();
    check(&a);
    assert_eq!(a.size_allocated(), 5 * Q);
    // A busy neighbour after it: the tail becomes a free segment of its own.
    let q = a
        .xalloc(
            Q,
            &vmem::Constraints::new().range(p + 5 * Q, p + 6 * Q - 1),
            Flags::NOWAIT,
        )
        .unwrap();
    a.xresize(p, 5 * Q, 2 * Q).unwrap();
    check(&a);
    assert_eq!(a.size_allocated(), 3 * Q);
    // The tail is free: a constrained allocation gets exactly it.
    let r = a
        .xalloc(
            3 * Q,
            &vmem::Constraints::new().range(p + 2 * Q, p + 5 * Q - 1),
            Flags::NOWAIT,
        )
        .unwrap();
    assert_eq!(r, p + 2 * Q);
    a.xfree(r, 3 * Q).unwrap();
    a.xfree(q, Q).unwrap();
    a.xfree(p, 2 * Q).unwrap();
    check(&a);
    assert_eq!(a.size_allocated(), 0);
    // Same size: nothing to do.
    let p = xalloc(&a, 3 * Q);
    a.xresize(p, 3 * Q, 3 * Q).unwrap();
    a.xfree(p, 3 * Q).unwrap();
    check(&a);
}

#[test]
fn refuses_bad_input_like_xfree() {
    let a = arena();
    let p = xalloc(&a, 4 * Q);
    assert!(matches!(
        a.xresize(p + Q, 4 * Q, 5 * Q),
        Err(Error::NotAllocated { .. })
    ));
    assert!(matches!(
        a.xresize(p, 3 * Q, 5 * Q),
        Err(Error::SizeMismatch { allocated, .. }) if allocated == 4 * Q
    ));
    assert!(matches!(a.xresize(p, 4 * Q, 0), Err(Error::ZeroSize)));
    check(&a);
    assert_eq!(a.size_allocated(), 4 * Q);
    // Sizes the quantum cache would take are refused where there is one.
    static QC: SimpleQuantumCache = SimpleQuantumCache::new();
    let c = Arena::builder("qc")
        .quantum(Q)
        .span(0x100_0000, 64 * Q)
        .qcache(4 * Q, &QC)
        .build()
        .unwrap();
    let p = xalloc(&c, 8 * Q);
    assert!(matches!(
        c.xresize(p, 8 * Q, 4 * Q),
        Err(Error::BadRange { .. })
    ));
    c.xresize(p, 8 * Q, 12 * Q).unwrap();
    c.xfree(p, 12 * Q).unwrap();
    check(&c);
}

#[test]
fn alloc_with_room_leaves_the_room_free_after_the_block() {
    let a = arena();
    // Holes of 2, 3 and 20 quanta: room for 8 is only in the last.
    let x = xalloc(&a, 2 * Q);
    let h1 = xalloc(&a, Q);
    let y = xalloc(&a, 3 * Q);
    let h2 = xalloc(&a, Q);
    let z = xalloc(&a, 20 * Q);
    let h3 = xalloc(&a, 37 * Q);
    assert_eq!(a.size_free(), 0);
    a.xfree(x, 2 * Q).unwrap();
    a.xfree(y, 3 * Q).unwrap();
    a.xfree(z, 20 * Q).unwrap();
    let p = a.alloc_with_room(2 * Q, 8 * Q).unwrap();
    assert_eq!(p, z);
    check(&a);
    a.xresize(p, 2 * Q, 20 * Q).unwrap();
    assert!(matches!(
        a.alloc_with_room(Q, 4 * Q),
        Err(Error::NoMemory { .. })
    ));
    check(&a);
    for (addr, size) in [(p, 20 * Q), (h1, Q), (h2, Q), (h3, 37 * Q)] {
        a.xfree(addr, size).unwrap();
    }
    check(&a);
    assert_eq!(a.size_allocated(), 0);
}

#[test]
fn segments_held_by_a_handle_are_not_resized() {
    let a = arena();
    let h = a.alloc_handle(4 * Q, Flags::NOWAIT).unwrap();
    let addr = h.addr();
    assert!(matches!(
        a.xresize(addr, 4 * Q, 6 * Q),
        Err(Error::NotAllocated { .. })
    ));
    assert_eq!(h.size(), 4 * Q);
    a.free_handle(h).unwrap();
    check(&a);
    assert_eq!(a.size_allocated(), 0);
}
