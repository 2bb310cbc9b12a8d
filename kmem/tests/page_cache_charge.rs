//! The page caches (the quantum cache's zones, 32-64 KiB, and the large
//! classes', 64-256 KiB) hold charged ranges: a zone charges a range when
//! it imports it and uncharges it when it gives it back to its arena, so a
//! block taken from a cache or freed into one charges nothing and touches
//! no shared counter. Checked here: a pair leaves the committed bytes as
//! they were; the blocks in use are counted (from the zones); a drain
//! (`DrainCpu`: the per-thread caches too) uncharges what the caches held; under a limit the committed bytes never
//! pass it and, once everything is freed and drained, return to where
//! they were.
//!
//! One test (the figures are the process's): no other test may allocate
//! meanwhile. No `#[global_allocator]`: the harness's own allocations do
//! not move kmem's figures.
#![cfg(not(loom))]

const SIZES: [usize; 4] = [40 << 10, 64 << 10, 100_000, 200_000];

fn committed() -> usize {
    kmem::pressure_stats().committed
}

fn drain() {
    kmem::reclaim(uma::Reclaim::DrainCpu);
}

fn alloc(size: usize) -> *mut u8 {
    let p = kmem::raw::alloc(size, 16);
    assert!(!p.is_null(), "alloc({size})");
    // SAFETY: `size` bytes of ours.
    unsafe { p.write_bytes(0xa5, size) };
    p
}

fn free(p: *mut u8) {
    // SAFETY: a live raw block, unused from now on.
    assert!(unsafe { kmem::raw::free(p) });
}

#[test]
fn page_cache_ranges_are_charged_while_cached() {
    for size in SIZES {
        // Warm: the cache holds a range now.
        free(alloc(size));
        let c0 = committed();
        for _ in 0..100 {
            let p = alloc(size);
            assert_eq!(committed(), c0, "{size}: a block out of the cache charged");
            free(p);
            assert_eq!(committed(), c0, "{size}: a block into the cache uncharged");
        }
        // Counted as in use from its zone.
        let s0 = kmem::malloc_untyped_stats();
        let p = alloc(size);
        let s1 = kmem::malloc_untyped_stats();
        assert_eq!(s1.in_use, s0.in_use + 1, "{size}: {s0:?} -> {s1:?}");
        assert!(
            s1.bytes >= s0.bytes + size as u64,
            "{size}: {s0:?} -> {s1:?}"
        );
        assert_eq!(s1.requests, s0.requests + 1, "{size}: {s0:?} -> {s1:?}");
        assert_ne!(s1.sizes & (1 << 63), 0);
        free(p);
        assert_eq!(kmem::malloc_untyped_stats().in_use, s0.in_use);
        // A drain gives the cached ranges back, and their charge.
        drain();
        assert!(
            committed() + size <= c0,
            "{size}: drained, committed {} (was {c0})",
            committed()
        );
    }

    // Under a limit: never past it, and everything comes back.
    drain();
    let base = committed();
    let limit = base + (4 << 20);
    kmem::set_limit(limit);
    let mut live = Vec::new();
    for i in 0.. {
        let size = SIZES[i % SIZES.len()];
        let p = kmem::raw::alloc(size, 16);
        let c = committed();
        assert!(c <= limit, "committed {c} past the limit {limit}");
        if p.is_null() {
            break;
        }
        live.push(p);
        assert!(i < 10_000, "the limit does not stop allocations");
    }
    assert!(live.len() >= 16, "only {} blocks under 4 MiB", live.len());
    live.into_iter().for_each(free);
    drain();
    kmem::set_limit(0);
    assert!(
        committed() <= base,
        "committed {} after freeing and draining, {base} before",
        committed()
    );
}
