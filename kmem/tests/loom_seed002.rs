//! loom model of seed 002 (the btag bootstrap hang), on the miniature
//! kernel of `common::mini` (a tiny arena whose boundary tags come from a
//! btag zone whose slabs come from the same arena): a drain of the btag
//! zone races kernel-arena allocations that need new tags. In every
//! interleaving: no hang (loom reports deadlocks), no allocation failure
//! while the reserve is held, and the reserve is intact afterwards.
//!
//! `RUSTFLAGS="--cfg loom" cargo test --release -p bsdalloc-kmem loom`

#![cfg(loom)]

mod common;
use common::mini::{Mini, PAGE};

use loom::thread;
use uma::Reclaim;

const STACK: usize = 1 << 20;

fn spawn<F, T>(f: F) -> thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    thread::Builder::new().stack_size(STACK).spawn(f).unwrap()
}

fn run_model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    let f = std::sync::Arc::new(f);
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r2 = runs.clone();
    b.check(move || {
        r2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = f.clone();
        spawn(move || f()).join().unwrap();
    });
    println!(
        "loom: {} executions explored",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// Puts the arena where its next allocations need the btag zone to grow:
/// allocate until the zone has handed out every non-reserve tag.
fn exhaust_ordinary_tags(m: &Mini) -> Vec<usize> {
    let mut held = Vec::new();
    while m.btag_free() > m.reserve {
        held.push(
            m.arena
                .alloc(PAGE, vmem::Flags::NOWAIT)
                .expect("setup alloc"),
        );
    }
    held
}

#[test]
fn loom_seed002_btag_drain_races_arena_allocations_needing_tags() {
    run_model(|| {
        let m: &'static Mini = Box::leak(Box::new(Mini::new(32, 4, 2 * vmem::BT_MAXALLOC)));
        let held = exhaust_ordinary_tags(m);
        let slabs_before = m.btag.keg_info().unwrap().slabs;
        let alloc = spawn(move || {
            let mut got = Vec::new();
            for _ in 0..2 {
                got.push(
                    m.arena
                        .alloc(PAGE, vmem::Flags::NOWAIT)
                        .expect("allocation failed while the reserve was held"),
                );
            }
            got
        });
        let drain = spawn(move || m.btag.reclaim(Reclaim::Drain));
        let got = alloc.join().unwrap();
        drain.join().unwrap();
        // The allocations needed a new btag slab, made from the reserve.
        assert!(m.btag.keg_info().unwrap().slabs > slabs_before || m.btag_free() > m.reserve);
        m.btag.reclaim(Reclaim::Drain);
        assert!(
            m.btag_free() >= m.reserve,
            "reserve lost: {} free, reserve {}",
            m.btag_free(),
            m.reserve
        );
        for a in got.into_iter().chain(held) {
            m.arena.free(a, PAGE).unwrap();
        }
        m.arena.check_invariants().unwrap();
        // SAFETY: the execution is over; nothing uses the mini kernel.
        unsafe { std::ptr::read(m).release() };
    });
}
