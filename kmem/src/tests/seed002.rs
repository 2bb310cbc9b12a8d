//! Seed 002 (the btag bootstrap hang) on a small kernel built by the real
//! wiring: boundary tags need a slab, a slab needs pages, pages need
//! boundary tags. The btag zone's reserve breaks the cycle, and
//! `keg_drain` must honour it. A drain that honours the reserve never
//! leaves the arena without tags; the regression guards show what goes
//! wrong without the rule (no reserve, or a drain that ignores it): tag
//! allocation gets stuck although the arena has space. (The stress test
//! on the process's kernel is `kmem/tests/seed002.rs`.)

use uma::Reclaim;

use crate::kernel::wiring::Small;
use crate::os::PAGE_SIZE;

/// Boot region and kernel-arena span of the small kernels (pages): the
/// boot region leaves the metadata arena a few pages, so btag slabs soon
/// come from its imports out of the kernel arena, the recursion.
pub(crate) const BOOT_PAGES: usize = 40;
pub(crate) const ARENA_PAGES: usize = 384;

/// Allocates one-page segments from the small kernel's arena in rounds,
/// draining the btag zone after each round with `drain`. Returns the
/// number of NOWAIT failures that happened while the arena still had free
/// space.
fn churn(k: &Small, rounds: usize, drain: impl Fn(&Small)) -> usize {
    let arena = k.core.arena;
    let mut held = Vec::new();
    let mut stuck = 0;
    for r in 0..rounds {
        for _ in 0..3 {
            match arena.alloc(PAGE_SIZE, vmem::Flags::NOWAIT) {
                Ok(a) => held.push(a),
                Err(_) => {
                    let s = arena.stats();
                    if s.size - s.inuse >= 8 * PAGE_SIZE {
                        stuck += 1;
                    }
                }
            }
        }
        // free every other segment so the arena both splits and coalesces
        if r % 2 == 1 && held.len() > 4 {
            let a = held.swap_remove(held.len() / 2);
            arena.free(a, PAGE_SIZE).unwrap();
        }
        drain(k);
        k.core.btag.check_invariants();
    }
    arena.check_invariants().unwrap();
    stuck
}

fn small(reserve: usize) -> Small {
    Small::build(BOOT_PAGES, ARENA_PAGES, 4, reserve)
}

#[test]
fn reserve_honoured_by_drain_never_leaves_the_arena_without_tags() {
    let k = small(2 * vmem::BT_MAXALLOC);
    let meta_before = k.core.meta.stats().size;
    let stuck = churn(&k, 120, |k| {
        k.core.btag.reclaim(Reclaim::DrainCpu);
        assert!(
            k.btag_free() >= k.reserve,
            "drain left {} free tags, reserve {}",
            k.btag_free(),
            k.reserve
        );
    });
    assert_eq!(stuck, 0, "tag allocation failed with space in the arena");
    // The recursion was exercised: btag slabs came from metadata imports
    // out of the kernel arena.
    assert!(k.core.meta.stats().size > meta_before);
    // SAFETY: the test is over.
    unsafe { k.release() };
}

#[test]
fn reserve_absent_leaves_tag_allocation_stuck() {
    // Regression guard: with no reserve, the first btag slab the arena
    // needs past the boot region cannot be allocated (its own tags would
    // come from the slab).
    let k = small(0);
    let stuck = churn(&k, 120, |k| k.core.btag.reclaim(Reclaim::DrainCpu));
    assert!(
        stuck > 0,
        "expected the arena to get stuck without a reserve"
    );
    // SAFETY: the test is over.
    unsafe { k.release() };
}

#[test]
fn reserve_ignored_by_drain_leaves_tag_allocation_stuck() {
    // Regression guard for D26772: a drain that frees slabs the reserve
    // needs (simulated by lifting the reserve around the drain) strands
    // the arena exactly like having no reserve.
    let k = small(2 * vmem::BT_MAXALLOC);
    let reserve = k.reserve;
    let stuck = churn(&k, 120, |k| {
        k.core.btag.reserve(0);
        k.core.btag.reclaim(Reclaim::DrainCpu);
        k.core.btag.reserve(reserve);
    });
    assert!(
        stuck > 0,
        "expected a reserve-ignoring drain to strand the arena"
    );
    // SAFETY: the test is over.
    unsafe { k.release() };
}

#[test]
fn boot_region_fits_the_small_kernels() {
    let k = small(2 * vmem::BT_MAXALLOC);
    let (used, _) = k.boot_usage();
    assert!(used < BOOT_PAGES * PAGE_SIZE, "boot used {used} bytes");
    // SAFETY: the test is over.
    unsafe { k.release() };
}
