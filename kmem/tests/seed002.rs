//! Seed 002 (the btag bootstrap hang): boundary tags need a slab, a slab
//! needs pages, pages need boundary tags. The btag zone's reserve breaks
//! the cycle, and `keg_drain` must honour it.
//!
//! - `reserve_*`: on a miniature kernel, a btag drain that honours the
//!   reserve never leaves the arena without tags; the regression guards
//!   show what goes wrong without the rule (no reserve, or a drain that
//!   ignores it): tag allocation gets stuck although the arena has space.
//! - `stress_*`: the real kmem allocator near a kernel-arena limit, with a
//!   thread draining every zone in a loop, bounded time, watchdog.

#![cfg(not(loom))]

mod common;
#[path = "common/util.rs"]
mod util;
use common::mini::{Mini, PAGE};
use util::watchdog;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use uma::Reclaim;

/// Allocates one-page segments from the mini arena in rounds, draining
/// the btag zone after each round with `drain`. Returns the number of
/// NOWAIT failures that happened while the arena still had free space.
fn churn(m: &Mini, rounds: usize, drain: impl Fn(&Mini)) -> usize {
    let mut held = Vec::new();
    let mut stuck = 0;
    for r in 0..rounds {
        for _ in 0..3 {
            match m.arena.alloc(PAGE, vmem::Flags::NOWAIT) {
                Ok(a) => held.push(a),
                Err(_) => {
                    let s = m.arena.stats();
                    if s.size - s.inuse >= 8 * PAGE {
                        stuck += 1;
                    }
                }
            }
        }
        // free every other segment so the arena both splits and coalesces
        if r % 2 == 1 && held.len() > 4 {
            let a = held.swap_remove(held.len() / 2);
            m.arena.free(a, PAGE).unwrap();
        }
        drain(m);
        m.btag.check_invariants();
    }
    m.arena.check_invariants().unwrap();
    stuck
}

#[test]
fn reserve_honoured_by_drain_never_leaves_the_arena_without_tags() {
    let m = Mini::new(512, 4, 2 * vmem::BT_MAXALLOC);
    let stuck = churn(&m, 120, |m| {
        m.btag.reclaim(Reclaim::DrainCpu);
        assert!(
            m.btag_free() >= m.reserve,
            "drain left {} free tags, reserve {}",
            m.btag_free(),
            m.reserve
        );
    });
    assert_eq!(stuck, 0, "tag allocation failed with space in the arena");
}

#[test]
fn reserve_absent_leaves_tag_allocation_stuck() {
    // Regression guard: with no reserve, the first btag slab the arena
    // needs cannot be allocated (its own tags would come from the slab).
    let m = Mini::new(512, 4, 0);
    let stuck = churn(&m, 120, |m| m.btag.reclaim(Reclaim::DrainCpu));
    assert!(
        stuck > 0,
        "expected the arena to get stuck without a reserve"
    );
    // And it stays stuck: nothing can ever refill the zone.
    assert!(m.arena.alloc(PAGE, vmem::Flags::NOWAIT).is_err());
}

#[test]
fn reserve_ignored_by_drain_leaves_tag_allocation_stuck() {
    // Regression guard for D26772: a drain that frees slabs the reserve
    // needs (simulated by lifting the reserve around the drain) strands
    // the arena exactly like having no reserve.
    let m = Mini::new(512, 4, 2 * vmem::BT_MAXALLOC);
    let stuck = churn(&m, 120, |m| {
        m.btag.reserve(0);
        m.btag.reclaim(Reclaim::DrainCpu);
        m.btag.reserve(m.reserve);
    });
    assert!(
        stuck > 0,
        "expected a reserve-ignoring drain to strand the arena"
    );
}

#[test]
fn stress_drains_racing_kernel_arena_allocations_near_the_limit() {
    let arena = kmem::kernel_arena().expect("kmem");
    let btag = kmem::btag_zone().expect("btag");
    let reserve = kmem::stats().unwrap().btag_reserve;
    // A limit a little above what is in use: imports stop soon, the
    // threads run near it.
    let s = arena.stats();
    let limit = s.size + 8 * kmem::CHUNK_SIZE;
    arena.set_limit(limit);
    let done = Arc::new(AtomicBool::new(false));
    watchdog(done.clone(), Duration::from_secs(60), "seed-002 stress");
    let stop = Arc::new(AtomicBool::new(false));
    let fails = Arc::new(AtomicUsize::new(0));
    let drains = Arc::new(AtomicUsize::new(0));
    let drainer = {
        let stop = stop.clone();
        let drains = drains.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // (Free btag items may dip below the reserve here: reserve
                // users, the nested slab allocations, take them; the
                // quiescent check below is the invariant.)
                kmem::reclaim(Reclaim::DrainCpu);
                drains.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let workers: Vec<_> = (0..4usize)
        .map(|t| {
            let stop = stop.clone();
            let fails = fails.clone();
            std::thread::spawn(move || {
                let mut held: Vec<(std::ptr::NonNull<u8>, usize)> = Vec::new();
                let mut x = t as u64 + 1;
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let pages = 1 + (x >> 40) as usize % 64;
                    match kmem::kmem_malloc(pages * PAGE, kmem::Flags::NOWAIT) {
                        Some(p) => {
                            // SAFETY: a fresh block of `pages` pages.
                            unsafe { p.as_ptr().write(t as u8) };
                            held.push((p, pages));
                        }
                        None => {
                            fails.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if held.len() > 40 || (x >> 20) % 3 == 0 {
                        if let Some((p, n)) = held.pop() {
                            // SAFETY: ours, written above.
                            unsafe {
                                assert_eq!(p.as_ptr().read(), t as u8);
                                kmem::kmem_free(p, n * PAGE);
                            }
                        }
                    }
                    ops += 1;
                }
                for (p, n) in held {
                    // SAFETY: ours.
                    unsafe { kmem::kmem_free(p, n * PAGE) };
                }
                ops
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    drainer.join().unwrap();
    done.store(true, Ordering::Release);
    // Not stuck: with everything freed, a fresh allocation needing tags works.
    let p = kmem::kmem_malloc(5 * PAGE, kmem::Flags::NOWAIT).expect("arena stuck after the stress");
    // SAFETY: just allocated.
    unsafe { kmem::kmem_free(p, 5 * PAGE) };
    kmem::reclaim(Reclaim::DrainCpu);
    let free = btag.keg_info().unwrap().free_items;
    assert!(
        free >= reserve,
        "drain left {free} btag items, reserve {reserve}"
    );
    arena.check_invariants().unwrap();
    eprintln!(
        "seed-002 stress: {ops} allocations, {} NOWAIT failures at the limit, {} drains",
        fails.load(Ordering::Relaxed),
        drains.load(Ordering::Relaxed)
    );
    assert!(ops > 1000 && drains.load(Ordering::Relaxed) > 10);
    arena.set_limit(0);
}
