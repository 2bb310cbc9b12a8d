//! `Kmem`'s small-block fast path (the per-thread cache slots it keeps per
//! size): the zone statistics count its hits, and a class zone that gets
//! a limit still honours it. One test per binary: the checks read whole
//! zone counters, so nothing else may use these classes meanwhile.

// The real allocator: under loom, vmem and uma use loom locks, which
// only work inside a model.
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

#[test]
fn fast_path_hits_are_counted_and_limits_hold() {
    // 880 bytes aligned to 16: the malloc-896 class, which nothing else in
    // this binary asks for.
    let l = Layout::from_size_align(880, 16).unwrap();
    let c = kmem::class_of(880, 16).unwrap();
    assert_eq!(kmem::CLASS_SIZES[c], 896);
    // SAFETY: a non-zero layout; freed with the same layout.
    unsafe { A.dealloc(A.alloc(l), l) };
    let z = kmem::class_zone(c).unwrap();
    let before = z.stats();
    const N: u64 = 10_000;
    for i in 0..N {
        // SAFETY: as above.
        unsafe {
            let p = if i % 2 == 0 {
                A.alloc(l)
            } else {
                A.alloc_zeroed(l)
            };
            assert!(!p.is_null());
            if i % 2 == 1 {
                assert!(std::slice::from_raw_parts(p, 880).iter().all(|&b| b == 0));
            }
            p.write_bytes(0x5a, 880);
            A.dealloc(p, l);
        }
    }
    let after = z.stats();
    assert_eq!(after.requests - before.requests, N);
    assert_eq!(after.frees - before.frees, N);
    assert_eq!(after.used, before.used);
    z.check_invariants();

    // A limit on a class zone (malloc-768) already served by the fast
    // path: allocations stop at it, frees still reach the zone's checks.
    let l = Layout::from_size_align(700, 8).unwrap();
    let c = kmem::class_of(700, 8).unwrap();
    assert_eq!(kmem::CLASS_SIZES[c], 768);
    let z = kmem::class_zone(c).unwrap();
    // SAFETY: as above.
    unsafe { A.dealloc(A.alloc(l), l) };
    let used = z.stats().used;
    const MAX: usize = 64;
    z.set_max(MAX);
    let mut live = Vec::with_capacity(4 * MAX);
    for _ in 0..4 * MAX {
        // SAFETY: as above.
        let p = unsafe { A.alloc(l) };
        if !p.is_null() {
            live.push(p);
        }
        assert!(z.stats().items as usize <= MAX, "limit exceeded");
    }
    assert!(
        live.len() <= MAX,
        "{} items under a limit of {MAX}",
        live.len()
    );
    assert!(!live.is_empty());
    for p in live.drain(..) {
        // SAFETY: allocated above with `l`.
        unsafe { A.dealloc(p, l) };
    }
    assert!(z.stats().items as usize <= MAX);
    assert_eq!(z.stats().used, used);
    z.check_invariants();
    // The items come back after the frees.
    for _ in 0..MAX / 2 {
        // SAFETY: as above.
        let p = unsafe { A.alloc(l) };
        assert!(!p.is_null());
        live.push(p);
    }
    for p in live {
        // SAFETY: as above.
        unsafe { A.dealloc(p, l) };
    }
    z.set_max(0);
    z.check_invariants();
}
