//! The size-class zones are built on first use: a process builds the zones
//! of the classes it allocates from, not all 44, and an allocation made
//! inside a walk of the zone list (a statistics sink, a reclaim's callback)
//! may build one without waiting for the list its own thread holds.
//! Its own test binary, with kmem as the global allocator: the harness's
//! allocations are the only ones before the test's.

#![cfg(not(loom))]

use std::alloc::Layout;

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

fn class_zones() -> Vec<&'static str> {
    let mut names = Vec::new();
    kmem::uma().expect("kmem").for_each_zone(|z| {
        if z.name().starts_with("malloc-") {
            names.push(z.name());
        }
    });
    names
}

#[test]
fn class_zones_are_built_by_their_first_request_even_inside_a_walk() {
    // (The harness's own allocations built some: its buffers grow by
    // doubling through many classes.)
    let built = class_zones();
    assert!(
        built.len() < kmem::NCLASSES,
        "{} of {} class zones built before the test allocated: {built:?}",
        built.len(),
        kmem::NCLASSES
    );
    let unbuilt: Vec<usize> = (0..kmem::NCLASSES)
        .filter(|&c| !built.contains(&kmem::CLASS_NAMES[c]))
        .collect();
    // Half of the classes still to build: eight threads make their first
    // request of each at once (the losers of the race destroy the zones
    // they built; one is listed, below).
    let (raced, walked) = unbuilt.split_at(unbuilt.len() / 2);
    let go = std::sync::Barrier::new(8);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                go.wait();
                for &c in raced {
                    let b = vec![1u8; kmem::CLASS_SIZES[c]];
                    std::hint::black_box(&b);
                }
            });
        }
    });
    // Inside a walk of the zones: a block of every class (each class of
    // the other half builds its zone while this thread holds the list).
    assert!(!walked.is_empty(), "no class left to build inside the walk");
    let mut blocks = Vec::new();
    let mut first = true;
    kmem::uma().expect("kmem").for_each_zone(|_| {
        if std::mem::take(&mut first) {
            for &size in kmem::CLASS_SIZES.iter() {
                let l = Layout::from_size_align(size, 8).unwrap();
                // SAFETY: a non-zero layout; freed below with it.
                let p = unsafe { std::alloc::alloc(l) };
                assert!(!p.is_null(), "{size}");
                blocks.push((p, l));
            }
        }
    });
    let all = class_zones();
    assert_eq!(all.len(), kmem::NCLASSES, "{all:?}");
    for (c, name) in kmem::CLASS_NAMES.iter().enumerate() {
        assert_eq!(
            all.iter().filter(|&&n| n == *name).count(),
            1,
            "class {c} {name}: {all:?}"
        );
    }
    for (p, l) in blocks {
        // SAFETY: allocated above with `l`.
        unsafe { std::alloc::dealloc(p, l) };
    }
    // The classes serve as before: every size through the C road too.
    for &size in kmem::CLASS_SIZES.iter() {
        let p = kmem::raw::alloc(size, 16);
        assert!(!p.is_null());
        // SAFETY: a live raw block.
        assert!(unsafe { kmem::raw::free(p) });
    }
}
