//! Zero-filled allocations when the kernel refuses to unback pages:
//! `madvise(MADV_DONTNEED)` fails with `EINVAL` on locked memory, and the
//! purged pages are then labelled clean ("reads as zero") all the same.
//! kmem zero-fills them instead, so `calloc`/`alloc_zeroed` never see old
//! data. Its own process: it locks pages of the kernel arena.
#![cfg(not(loom))]

#[test]
fn zero_filled_allocations_stay_zero_when_the_kernel_refuses_to_unback() {
    const SIZE: usize = 1 << 20;
    // A neighbour kept alive, so the span stays in the kernel arena (a
    // wholly free span would be unmapped by the purge, locked pages and
    // all, and nothing would meet them again).
    let neighbour = kmem::raw::alloc(SIZE, 4096);
    assert!(!neighbour.is_null());
    let p = kmem::raw::alloc(SIZE, 4096);
    assert!(!p.is_null());
    // SAFETY: SIZE bytes of ours.
    unsafe { p.write_bytes(0xa5, SIZE) };
    // Lock the block's pages: they stay locked after the free (the lock is
    // on the mapping), so purging them fails with EINVAL. 1 MiB is within
    // the default RLIMIT_MEMLOCK (8 MiB).
    // SAFETY: a range of our own mapping.
    let locked = unsafe { libc::mlock(p.cast(), SIZE) };
    assert_eq!(
        locked,
        0,
        "mlock of 1 MiB failed: {}",
        std::io::Error::last_os_error()
    );
    let fails = kmem::os_stats().unback_failures;
    // SAFETY: a live allocation, unused afterwards.
    assert!(unsafe { kmem::raw::free(p) });
    kmem::reclaim(uma::Reclaim::Drain); // purges the dirty pages
    assert!(
        kmem::os_stats().unback_failures > fails,
        "the purge did not meet the locked pages"
    );
    // Whatever comes back over those pages must read as zero.
    let mut seen = false;
    let mut held = Vec::new();
    for _ in 0..8 {
        let q = kmem::raw::alloc_zeroed(SIZE, 4096);
        assert!(!q.is_null());
        // SAFETY: SIZE bytes of ours, just allocated.
        let bytes = unsafe { std::slice::from_raw_parts(q, SIZE) };
        assert!(
            bytes.iter().all(|&b| b == 0),
            "alloc_zeroed returned old data at {q:p}"
        );
        seen |= (q as usize) < (p as usize) + SIZE && (p as usize) < (q as usize) + SIZE;
        held.push(q);
    }
    assert!(seen, "no allocation reused the locked pages");
    for q in held {
        // SAFETY: live allocations, unused afterwards.
        unsafe { kmem::raw::free(q) };
    }
    // SAFETY: a live allocation, unused afterwards.
    unsafe { kmem::raw::free(neighbour) };
}
