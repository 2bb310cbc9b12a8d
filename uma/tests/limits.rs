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

/// Runs `n` workers that allocate (WAITOK) and free up to `kmax` items at a
/// time through `z` (limit `limit`) while a sampler checks, through the
/// zone's own accounting, that per-thread caches never hold more than half
/// the limit. Then, with every worker alive and parked (its cache as it left
/// it), one thread allocates the whole limit with WAITOK. Returns the stats
/// seen while the workers were parked.
fn cap_run(z: &'static uma::Zone, n: usize, limit: usize, kmax: usize) -> uma::ZoneStats {
    use std::sync::Barrier;
    assert!(
        n * kmax <= limit / 2,
        "the workers alone cannot exhaust the limit"
    );
    let registered = Arc::new(Barrier::new(n + 1));
    let parked = Arc::new(Barrier::new(n + 1));
    let go_home = Arc::new(Barrier::new(n + 1));
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let (registered, parked, go_home) =
                (registered.clone(), parked.clone(), go_home.clone());
            std::thread::spawn(move || {
                // first use registers this thread's cache
                let p = alloc(z, Flags::WAITOK);
                free(z, p);
                registered.wait();
                let mut v = Vec::with_capacity(kmax);
                for round in 0..300 {
                    let k = 1 + (i + round) % kmax;
                    for j in 0..k {
                        let p = alloc(z, Flags::WAITOK);
                        write(p, 64, (i + j) as u8);
                        v.push(p);
                    }
                    for (j, p) in v.drain(..).enumerate() {
                        check(p, 64, (i + j) as u8);
                        free(z, p);
                    }
                }
                parked.wait();
                go_home.wait();
            })
        })
        .collect();
    let samples = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (done, samples) = (done.clone(), samples.clone());
        std::thread::spawn(move || {
            while !done.load(SeqCst) {
                let s = z.stats();
                assert!(
                    s.cached_pcpu as usize <= limit / 2,
                    "per-thread caches hold {} items, over half the limit {limit}: {s:?}",
                    s.cached_pcpu
                );
                assert!(s.items as usize <= limit, "over the limit: {s:?}");
                samples.fetch_add(1, SeqCst);
            }
        })
    };
    // The sampler is looking before the workers start their rounds.
    wait_until("the sampler's first look", || samples.load(SeqCst) > 0);
    registered.wait();
    parked.wait();
    let at_rest = z.stats();
    assert!(at_rest.cached_pcpu as usize <= limit / 2, "{at_rest:?}");
    done.store(true, SeqCst);
    sampler.join().unwrap();
    // The whole limit from one thread, while the parked workers' caches
    // may hold items: WAITOK takes them back instead of sleeping forever.
    let all: Vec<_> = (0..limit).map(|_| alloc(z, Flags::WAITOK)).collect();
    let mut addrs: Vec<usize> = all.iter().map(|p| p.as_ptr() as usize).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), limit, "no item handed out twice");
    let s = z.stats();
    assert_eq!(s.used as usize, limit, "{s:?}");
    assert_eq!(s.items as usize, limit, "{s:?}");
    assert_eq!(s.cached_pcpu, 0, "nothing can be cached at the limit");
    assert!(z.alloc(Flags::NOWAIT).is_none());
    for p in all {
        free(z, p);
    }
    go_home.wait();
    for w in workers {
        w.join().unwrap();
    }
    z.check_invariants();
    at_rest
}

#[test]
fn per_thread_caches_hold_at_most_half_the_limit_with_more_threads_than_cpus() {
    let _w = watchdog("per-thread cap with many threads", 20);
    let n = many_threads();
    let limit = (8 * n).max(256);
    let z = zone(ZoneArgs::new("lim-cap", 64));
    z.set_max(limit);
    let at_rest = cap_run(z, n, limit, 4);
    // Caching still happens (the cap is not zero here): the last worker's
    // last free stayed in its cache.
    assert!(at_rest.cached_pcpu > 0, "{at_rest:?}");
    assert!(z.bucket_size() >= 1);
    destroy(z);
}

#[test]
fn caches_are_bypassed_when_the_limit_leaves_no_room_per_thread() {
    let _w = watchdog("per-thread bypass with many threads", 20);
    let n = many_threads();
    // (n + 1) caches x 2 buckets x 1 item > limit / 2: the cap drops to 0
    // once every worker has registered.
    let limit = 2 * n;
    let z = zone(ZoneArgs::new("lim-bypass", 64));
    z.set_max(limit);
    let at_rest = cap_run(z, n, limit, 1);
    assert_eq!(at_rest.cached_pcpu, 0, "{at_rest:?}");
    assert_eq!(z.bucket_size(), 0, "no per-thread buckets at this cap");
    destroy(z);
}

#[test]
fn waitok_at_limit_takes_back_items_cached_by_other_threads() {
    let _w = watchdog("WAITOK at the limit", 20);
    const LIMIT: usize = 64;
    let z = zone(ZoneArgs::new("lim-drain", 64));
    z.set_max(LIMIT);
    let (parked_tx, parked_rx) = std::sync::mpsc::channel::<()>();
    let (home_tx, home_rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        let v: Vec<_> = (0..8).map(|_| alloc(z, Flags::NOWAIT)).collect();
        for p in v {
            free(z, p);
        }
        parked_tx.send(()).unwrap();
        home_rx.recv().unwrap();
    });
    parked_rx.recv().unwrap();
    let s = z.stats();
    assert!(
        s.cached_pcpu > 0,
        "the helper parked items in its cache: {s:?}"
    );
    // The helper is alive and idle: only taking its cache back lets this
    // thread reach the limit.
    let all: Vec<_> = (0..LIMIT).map(|_| alloc(z, Flags::WAITOK)).collect();
    let s = z.stats();
    assert_eq!(
        (s.used, s.items, s.cached_pcpu),
        (LIMIT as u64, LIMIT as u64, 0)
    );
    for p in all {
        free(z, p);
    }
    home_tx.send(()).unwrap();
    helper.join().unwrap();
    z.check_invariants();
    destroy(z);
}
