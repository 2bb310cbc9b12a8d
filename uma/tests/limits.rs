//! Limits: NOWAIT failure, WAITOK sleepers woken by frees, cached items
//! counted, per-thread caching bounded by half the limit.

#![cfg(not(loom))]
// Test code: its unsafe blocks free items to the zone that allocated them,
// destroy zones nobody uses afterwards, or touch live items' bytes.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use uma::{Flags, Reclaim, ZoneArgs};

#[test]
fn nowait_fails_at_the_limit() {
    let z = zone(ZoneArgs::new("lim-nowait", 64));
    assert_eq!(z.set_max(10), 10);
    let v: Vec<_> = (0..10).map(|_| alloc(z, Flags::NOWAIT)).collect();
    assert!(z.alloc(Flags::NOWAIT).is_none());
    assert_eq!(z.stats().fails, 1);
    assert_eq!(z.stats().limit, 10);
    z.check_invariants();
    for p in v {
        free(z, p);
    }
    z.check_invariants();
    let p = alloc(z, Flags::NOWAIT);
    free(z, p);
    destroy(z);
}

#[test]
fn limit_counts_cached_items_and_bounds_caches() {
    let z = zone(ZoneArgs::new("lim-cached", 32));
    z.set_max(1000);
    let mut v: Vec<_> = (0..600).map(|_| alloc(z, Flags::NOWAIT)).collect();
    for p in v.drain(..) {
        free(z, p);
    }
    let s = z.stats();
    assert!(s.items <= 1000);
    assert_eq!(s.items, s.used + s.cached_pcpu + s.cached_buckets);
    assert!(
        s.cached_pcpu + s.cached_buckets <= 500 + z.bucket_size() as u64 * 2,
        "caches hold about half the limit at most: {s:?}"
    );
    z.check_invariants();
    // all of the limit is still reachable
    let v: Vec<_> = (0..1000).map(|_| alloc(z, Flags::NOWAIT)).collect();
    assert!(z.alloc(Flags::NOWAIT).is_none());
    for p in v {
        free(z, p);
    }
    destroy(z);
}

#[test]
fn waitok_sleeper_is_woken_by_a_free() {
    let z = zone(ZoneArgs::new("lim-sleep", 64));
    z.set_max(4);
    let held: Vec<_> = (0..4).map(|_| alloc(z, Flags::NOWAIT)).collect();
    let got = Arc::new(AtomicBool::new(false));
    let t = {
        let got = got.clone();
        std::thread::spawn(move || {
            let p = alloc(z, Flags::WAITOK);
            got.store(true, SeqCst);
            p.as_ptr() as usize
        })
    };
    while z.stats().sleeps == 0 {
        std::thread::yield_now();
    }
    assert!(!got.load(SeqCst));
    let mut held = held;
    free(z, held.pop().unwrap());
    let p = t.join().unwrap();
    assert!(got.load(SeqCst));
    free(z, std::ptr::NonNull::new(p as *mut u8).unwrap());
    for q in held {
        free(z, q);
    }
    assert!(z.stats().sleeps >= 1);
    z.reclaim(Reclaim::DrainCpu);
    z.check_invariants();
    destroy(z);
}

#[test]
fn limit_with_many_threads_never_exceeded() {
    let z = zone(ZoneArgs::new("lim-mt", 48));
    z.set_max(64);
    let ts: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    let a = alloc(z, Flags::WAITOK);
                    let b = z.alloc(Flags::NOWAIT);
                    assert!(z.stats().items <= 64);
                    free(z, a);
                    if let Some(b) = b {
                        free(z, b);
                    }
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    z.reclaim(Reclaim::DrainCpu);
    z.check_invariants();
    assert_eq!(z.stats().used, 0);
    destroy(z);
}
