//! loom model of seed 002 (the btag bootstrap hang) on a small kernel
//! built by the real wiring (`kernel::wiring`: the same page and tag
//! sources, the same build sequence as the process's kernel): a drain of
//! the btag zone races kernel-arena allocations that need new tags, whose
//! btag slabs come from the metadata arena, which imports from the kernel
//! arena with tags from the reserve. In every interleaving: no hang (loom
//! reports deadlocks), no allocation failure while the reserve is held,
//! and the reserve is intact afterwards.

use uma::Reclaim;

use super::{run_model, spawn};
use crate::kernel::wiring::Small;
use crate::os::PAGE_SIZE;

/// Puts the arena where its next allocations need the btag zone to grow:
/// allocate until the zone has handed out every non-reserve tag.
fn exhaust_ordinary_tags(k: &Small) -> Vec<usize> {
    let mut held = Vec::new();
    while k.btag_free() > k.reserve {
        held.push(
            k.core
                .arena
                .alloc(PAGE_SIZE, vmem::Flags::NOWAIT)
                .expect("setup alloc"),
        );
    }
    held
}

#[test]
fn loom_seed002_btag_drain_races_arena_allocations_needing_tags() {
    run_model("seed002", || {
        // 40 boot pages (UMA's bootstrap takes about 24; the rest is the
        // metadata arena's first span), a 32-page kernel arena, 4 tags per
        // btag slab. A new btag slab's pages come from the metadata arena,
        // whose tags (under loom the btag zone's) come from the reserve:
        // with a reserve of 0 this model fails at once.
        let k: &'static Small = Box::leak(Box::new(Small::build(40, 32, 4, 2 * vmem::BT_MAXALLOC)));
        let held = exhaust_ordinary_tags(k);
        let slabs_before = k.core.btag.keg_info().unwrap().slabs;
        let alloc = spawn(move || {
            let mut got = Vec::new();
            for _ in 0..2 {
                got.push(
                    k.core
                        .arena
                        .alloc(PAGE_SIZE, vmem::Flags::NOWAIT)
                        .expect("allocation failed while the reserve was held"),
                );
            }
            got
        });
        let drain = spawn(move || k.core.btag.reclaim(Reclaim::Drain));
        let got = alloc.join().unwrap();
        drain.join().unwrap();
        // The allocations needed a new btag slab, made from the reserve.
        assert!(k.core.btag.keg_info().unwrap().slabs > slabs_before || k.btag_free() > k.reserve);
        k.core.btag.reclaim(Reclaim::Drain);
        assert!(
            k.btag_free() >= k.reserve,
            "reserve lost: {} free, reserve {}",
            k.btag_free(),
            k.reserve
        );
        for a in got.into_iter().chain(held) {
            k.core.arena.free(a, PAGE_SIZE).unwrap();
        }
        k.core.arena.check_invariants().unwrap();
        // SAFETY: the execution is over; nothing uses the small kernel.
        unsafe { std::ptr::read(k).release() };
    });
}
