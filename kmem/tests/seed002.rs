//! Seed 002 (the btag bootstrap hang): boundary tags need a slab, a slab
//! needs pages, pages need boundary tags. The btag zone's reserve breaks
//! the cycle, and `keg_drain` must honour it.
//!
//! - `stress_*` (here): the real kmem allocator near a kernel-arena limit,
//!   with a thread draining every zone in a loop, bounded time, watchdog.
//! - the reserve tests and the loom model are in the crate
//!   (`kmem/src/tests/seed002.rs`, `loom_seed002.rs`): they build a small
//!   kernel with the real wiring (`kmem/src/kernel/wiring.rs`).

#![cfg(not(loom))]

#[path = "common/util.rs"]
mod util;
use util::watchdog;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use uma::Reclaim;

const PAGE: usize = kmem::PAGE_SIZE;

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
