//! The limit from the environment: `BSDALLOC_LIMIT` is read once, at
//! bootstrap (its own test binary: the allocator must not have started).

// The real allocator: under loom, vmem and uma use loom locks, which
// only work inside a model.
#![cfg(not(loom))]

use kmem::Flags;

#[test]
fn limit_from_env_is_read_at_bootstrap() {
    // The allocator has not started in this process yet (nothing here
    // uses kmem before this line), and no other test runs in this binary.
    std::env::set_var("BSDALLOC_LIMIT", "40M");
    let _ = kmem::stats().expect("kmem starts");
    assert_eq!(kmem::limit(), 40 << 20);
    let a = kmem::kernel_arena().unwrap().stats();
    assert!(a.limit >= 40 << 20, "{a:?}");
    // Read once: changing the variable later changes nothing.
    std::env::set_var("BSDALLOC_LIMIT", "1G");
    assert_eq!(kmem::limit(), 40 << 20);
    // The limit holds: NOWAIT fills stop at it.
    let mut v = Vec::new();
    while let Some(p) = kmem::kmem_malloc(1 << 20, Flags::NOWAIT) {
        v.push(p);
        assert!(v.len() <= 40, "allocated past the limit");
    }
    assert!(v.len() >= 30, "only {} MiB under a 40 MiB limit", v.len());
    // Boundary-tag slabs are charged but never refused (seed 002): the
    // kernel arena may need one more to record the last block's segment
    // at the limit. Nothing else goes over.
    let p = kmem::pressure_stats();
    let bt = kmem::btag_zone().expect("btag zone");
    let (st, info) = (bt.stats(), bt.keg_info().expect("btag keg"));
    let btag_bytes =
        (st.used + st.free).div_ceil(info.layout.ipers as u64) * info.layout.slab_size as u64;
    assert!(
        p.committed <= p.limit + btag_bytes as usize,
        "{p:?}, btag zone {btag_bytes} bytes"
    );
    for p in v {
        // SAFETY: from kmem_malloc(1 MiB).
        unsafe { kmem::kmem_free(p, 1 << 20) };
    }
}
