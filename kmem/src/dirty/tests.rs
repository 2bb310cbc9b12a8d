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
