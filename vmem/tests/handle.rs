//! Segments held by a handle: `alloc_handle`, `xalloc_handle`,
//! `free_handle` (no busy hash), mixed with segments freed by address.
#![cfg(not(loom))]

use vmem::{Allocation, Arena, Constraints, Error, Flags};

const NOWAIT: Flags = Flags::NOWAIT;

mod common;
use common::check;

fn arena(quantum: usize, base: usize, size: usize) -> Arena<'static> {
    common::arena("handles", quantum, base, size)
}

#[test]
fn handles_under_every_policy_mix_with_frees_by_address() {
    let a = arena(16, 0x1000, 0x1000);
    let h = a.alloc_handle(40, NOWAIT | Flags::INSTANTFIT).unwrap();
    assert_eq!((h.addr(), h.size()), (0x1000, 48));
    let p = a.alloc(16, NOWAIT).unwrap();
    let b = a.alloc_handle(16, NOWAIT | Flags::BESTFIT).unwrap();
    let n = a.alloc_handle(16, NOWAIT | Flags::NEXTFIT).unwrap();
    let x = a
        .xalloc_handle(32, &Constraints::new().align(256).phase(16), NOWAIT)
        .unwrap();
    assert_eq!(x.addr() % 256, 16);
    check(&a);
    let st = a.stats();
    assert_eq!(st.busy_segments, 5);
    assert_eq!(a.size_allocated(), 48 + 16 + 16 + 16 + 32);
    // Nothing held by a handle is known by address.
    assert!(matches!(
        a.free(h.addr(), 48),
        Err(Error::NotAllocated { .. })
    ));
    assert!(matches!(
        a.xfree(x.addr(), 32),
        Err(Error::NotAllocated { .. })
    ));
    check(&a);
    for h in [b, h, x, n] {
        a.free_handle(h).unwrap();
        check(&a);
    }
    a.free(p, 16).unwrap();
    assert_eq!(a.size_allocated(), 0);
    assert_eq!(a.size_free(), 0x1000);
    check(&a);
}

#[test]
fn a_handle_from_another_arena_is_refused() {
    let a = arena(1, 0, 100);
    let b = arena(1, 0, 100);
    let hb = b.alloc_handle(10, NOWAIT).unwrap();
    let ha = a.alloc_handle(10, NOWAIT).unwrap();
    assert_eq!(ha.addr(), hb.addr());
    assert!(matches!(
        a.free_handle(hb),
        Err(Error::ForeignHandle { addr: 0, .. })
    ));
    // The segment stays allocated in its own arena; `a` is untouched.
    assert_eq!((a.size_allocated(), b.size_allocated()), (10, 10));
    check(&a);
    check(&b);
    a.free_handle(ha).unwrap();
    assert_eq!(a.size_allocated(), 0);
}

#[test]
fn a_handle_is_one_word_and_knows_its_arena_by_every_road() {
    assert_eq!(
        std::mem::size_of::<Allocation<'static>>(),
        std::mem::size_of::<usize>()
    );
    let a = arena(1, 0, 100);
    let b = arena(1, 0, 100);
    // Next fit and constrained allocations reach the busy tag by other
    // roads than instant fit's fast path: each records its arena.
    let c = Constraints::new().align(4);
    let hs = [
        b.alloc_handle(3, NOWAIT | Flags::NEXTFIT).unwrap(),
        b.xalloc_handle(5, &c, NOWAIT | Flags::BESTFIT).unwrap(),
        b.alloc_handle(7, NOWAIT | Flags::INSTANTFIT).unwrap(),
    ];
    for h in hs {
        let addr = h.addr();
        assert!(matches!(
            a.free_handle(h),
            Err(Error::ForeignHandle { addr: x, .. }) if x == addr
        ));
    }
    assert_eq!((a.size_allocated(), b.size_allocated()), (0, 15));
    check(&a);
    check(&b);
}

#[test]
fn a_handle_free_releases_an_emptied_span() {
    let src = common::Spans::new(0x10_0000);
    let a = Arena::builder("import").source(&src, 4096).build().unwrap();
    let hs: Vec<Allocation<'_>> = (0..8)
        .map(|_| a.alloc_handle(1000, NOWAIT).unwrap())
        .collect();
    assert!(src.out() >= 8000);
    check(&a);
    for h in hs {
        a.free_handle(h).unwrap();
        check(&a);
    }
    assert_eq!(src.out(), 0, "every span released");
    assert_eq!(a.size_total(), 0);
}

#[test]
fn handles_move_between_threads() {
    let a = arena(1, 1, 1 << 20);
    let hs: Vec<Allocation<'_>> = (1..=64)
        .map(|i| a.alloc_handle(i, NOWAIT).unwrap())
        .collect();
    std::thread::scope(|s| {
        let (left, right): (Vec<_>, Vec<_>) = hs.into_iter().partition(|h| h.size() % 2 == 0);
        for part in [left, right] {
            let a = &a;
            s.spawn(move || {
                for h in part {
                    let more = a.alloc_handle(h.size(), NOWAIT).unwrap();
                    a.free_handle(h).unwrap();
                    a.free_handle(more).unwrap();
                }
            });
        }
    });
    assert_eq!(a.size_allocated(), 0);
    check(&a);
}

#[test]
fn the_busy_hash_stays_small_when_handles_hold_everything() {
    let a = arena(1, 0, 1 << 20);
    let hs: Vec<Allocation<'_>> = (0..10_000)
        .map(|_| a.alloc_handle(3, NOWAIT).unwrap())
        .collect();
    let st = a.stats();
    assert_eq!(st.busy_segments, 10_000);
    assert_eq!(st.hash_buckets, vmem::HASH_MIN, "no table for no entries");
    check(&a);
    for h in hs {
        a.free_handle(h).unwrap();
    }
    check(&a);
}
