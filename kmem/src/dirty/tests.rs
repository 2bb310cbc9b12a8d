use super::*;

/// Dirty pages whose listing fell off a full ring (simulated here by
/// dropping the listing, as `forget` does for a range cut while the
/// ring is full) are still purged by a reclaim: it finds them by their
/// dirty bits.
#[test]
fn reclaim_purges_dirty_pages_no_list_knows_of() {
    let k = crate::kernel::kernel().expect("kmem");
    const SIZE: usize = 512 << 10;
    let p = crate::raw::alloc(SIZE, PAGE_SIZE);
    assert!(!p.is_null());
    // SAFETY: SIZE bytes of ours.
    unsafe { p.write_bytes(0xa5, SIZE) };
    // SAFETY: a live allocation, unused afterwards.
    assert!(unsafe { crate::raw::free(p) });
    let addr = p as usize;
    let dirty = |a: usize| pagemeta::is_dirty(a);
    let pages = (0..SIZE / PAGE_SIZE).map(|i| addr + i * PAGE_SIZE);
    if !pages.clone().any(dirty) {
        // Purged or reused by a concurrent test already: nothing to show.
        return;
    }
    {
        let mut l = lists();
        l.forget(addr, addr + SIZE);
        publish(&l);
    }
    purge_all(k.arena);
    assert!(
        !pages.clone().any(dirty),
        "a reclaim left unlisted dirty pages labelled (and resident)"
    );
}

/// A ring entry that begins in a retained span is passed over by
/// `reuse`'s scan (`held`), is a candidate again once the span is taken
/// back, and leaves the ring when the span is unmapped; entries cut or
/// merged learn where they begin now. (A list of its own: the figures are
/// not the process's.)
#[test]
fn entries_follow_the_retained_spans() {
    let mut l = Lists::new();
    const M: usize = 1 << 20;
    let range = |addr, size| Range {
        addr,
        size,
        stamp: 1,
        tries: 0,
        passed: 0,
        held: false,
    };
    // A span [64, 72) MiB retained, one range in it (the best fit for 1
    // MiB) and two outside.
    l.spans[0] = range(64 * M, 8 * M);
    l.nspans = 1;
    l.push(range(64 * M, M));
    l.push(range(10 * M, 2 * M));
    l.push(range(20 * M, 4 * M));
    assert!(l.ring[0].held && !l.ring[1].held && !l.ring[2].held);
    let pick = |l: &Lists, size| reuse::quick_scan(l, size).0.map(|i| l.ring[i].addr);
    let widest = |l: &Lists| reuse::quick_scan(l, 1).1.map(|i| l.ring[i].addr);
    assert_eq!(pick(&l, M), Some(10 * M));
    assert_eq!(pick(&l, 5 * M), None);
    // Taken back: a candidate, the best fit.
    l.mark_span(64 * M, 72 * M, Some(false));
    assert_eq!(pick(&l, M), Some(64 * M));
    // Retained again, and a freed neighbour below it, outside the span,
    // merges in: the merged range begins outside, a candidate.
    l.mark_span(64 * M, 72 * M, Some(true));
    assert_eq!(pick(&l, M), Some(10 * M));
    assert!(l.push_freed(range(63 * M, M)).is_none());
    assert_eq!((l.ring[0].addr, l.ring[0].held), (63 * M, false));
    // Cut at its front, out of the span's reach again: it begins inside.
    l.forget(63 * M, 64 * M + 4096);
    assert_eq!((l.ring[0].addr, l.ring[0].held), (64 * M + 4096, true));
    assert_eq!(widest(&l), Some(20 * M));
    // Unmapped: its ranges leave the ring.
    l.mark_span(64 * M, 72 * M, None);
    l.compact();
    assert_eq!(l.len, 2);
    assert!((0..l.len).all(|k| l.ring[k].addr < 64 * M));
}
