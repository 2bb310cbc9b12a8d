//! WAITOK against a failing page source (FreeBSD `keg_fetch_slab` with
//! `M_WAITOK`: `vm_wait`, then retry): a WAITOK allocation never returns
//! `None` for lack of memory; it reclaims, sleeps with a bounded backoff,
//! is woken early by items freed to its keg, and retries. NOWAIT still
//! fails at once.
//!
//! Each test builds its own `Uma` instance (internal memory from an
//! unlimited source) so the instance-wide reclaim of a waiting allocation
//! touches only that test's zones.

#![cfg(not(loom))]
// Test code: its unsafe blocks free items to the zone that allocated them.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;
use common::*;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use uma::{Flags, Reclaim, TestSource, Uma, Zone, ZoneArgs, ZoneFlags};

fn instance() -> &'static Uma {
    Uma::bootstrap(leak_source()).expect("bootstrap")
}

/// A zone of 64-byte items, 4 per slab, over `src`; with buckets, they are
/// 2-item buckets (so one bucket fill never takes more than one slab).
fn small_zone(
    u: &'static Uma,
    name: &'static str,
    src: &'static TestSource,
    f: ZoneFlags,
) -> &'static Zone {
    u.create_zone(
        &ZoneArgs::new(name, 64)
            .max_ipers(4)
            .bucket_size(2)
            .source(src)
            .flags(f),
    )
    .expect("zone")
}

/// Fills one slab and stops the source from giving another.
fn exhaust(z: &Zone, src: &TestSource) -> Vec<NonNull<u8>> {
    let held: Vec<_> = (0..4).map(|_| alloc(z, Flags::NOWAIT)).collect();
    assert_eq!(src.allocs(), 1);
    src.set_limit(src.in_use());
    held
}

struct Addr(usize);
// SAFETY: a plain address handed between test threads.
unsafe impl Send for Addr {}

/// Starts a WAITOK allocation on another thread; `done` turns true when it
/// returns.
fn waitok_in_thread(z: &'static Zone) -> (std::thread::JoinHandle<Option<Addr>>, Arc<AtomicBool>) {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let t = std::thread::spawn(move || {
        let p = z.alloc(Flags::WAITOK).map(|p| Addr(p.as_ptr() as usize));
        d.store(true, SeqCst);
        p
    });
    (t, done)
}

#[test]
fn nowait_fails_at_once_when_the_source_fails() {
    let _w = watchdog("NOWAIT on a failing source", 20);
    let u = instance();
    let src = leak_source();
    let z = small_zone(u, "src-nowait", src, ZoneFlags::NOBUCKET);
    let held = exhaust(z, src);
    let fails = src.fails();
    assert!(z.alloc(Flags::NOWAIT).is_none());
    assert_eq!(src.fails(), fails + 1, "one source call, no retry");
    assert!(z.alloc(Flags::NONE).is_none(), "no WAITOK means NOWAIT");
    assert_eq!(src.fails(), fails + 2);
    assert!(
        z.alloc(Flags::WAITOK | Flags::NOVM).is_none(),
        "NOVM never asks the source, so it cannot wait for it"
    );
    assert_eq!(src.fails(), fails + 2);
    assert_eq!(z.stats().fails, 3);
    for p in held {
        free(z, p);
    }
    z.check_invariants();
    unsafe { u.destroy(z) };
}

#[test]
fn waitok_alloc_blocked_on_the_source_gets_an_item_freed_by_another_thread() {
    let _w = watchdog("WAITOK woken by a free", 20);
    let u = instance();
    let src = leak_source();
    let z = small_zone(u, "src-free", src, ZoneFlags::NOBUCKET);
    let mut held = exhaust(z, src);
    let (t, done) = waitok_in_thread(z);
    // It has failed, reclaimed and come back to the source three times:
    // it is in its retry loop, not returning None.
    wait_until("three failed source calls", || src.fails() >= 3);
    assert!(!done.load(SeqCst), "WAITOK did not give up");
    let p = held.pop().unwrap();
    free(z, p);
    let got = t
        .join()
        .unwrap()
        .expect("WAITOK never returns None for lack of memory");
    assert_eq!(got.0, p.as_ptr() as usize, "it got the one item freed");
    assert_eq!(src.allocs(), 1, "no new slab was needed");
    held.push(NonNull::new(got.0 as *mut u8).unwrap());
    for p in held {
        free(z, p);
    }
    z.check_invariants();
    unsafe { u.destroy(z) };
}

#[test]
fn waitok_alloc_blocked_on_the_source_succeeds_when_the_source_limit_is_raised() {
    let _w = watchdog("WAITOK after the source limit is raised", 20);
    let u = instance();
    let src = leak_source();
    // per-thread caches on: the wait happens in a bucket fill
    let z = small_zone(u, "src-raise", src, ZoneFlags::NONE);
    let held = exhaust(z, src);
    let (t, done) = waitok_in_thread(z);
    wait_until("three failed source calls", || src.fails() >= 3);
    assert!(!done.load(SeqCst), "WAITOK did not give up");
    src.set_limit(usize::MAX);
    let got = t
        .join()
        .unwrap()
        .expect("WAITOK succeeds once memory is there");
    assert_eq!(src.allocs(), 2, "from a new slab");
    assert!(!held.iter().any(|h| h.as_ptr() as usize == got.0));
    free(z, NonNull::new(got.0 as *mut u8).unwrap());
    for p in held {
        free(z, p);
    }
    z.reclaim(Reclaim::DrainCpu);
    z.check_invariants();
    unsafe { u.destroy(z) };
}

#[test]
fn waitok_alloc_retries_after_injected_source_failures() {
    let _w = watchdog("WAITOK with injected failures", 20);
    let u = instance();
    let src = leak_source();
    let z = small_zone(u, "src-inject", src, ZoneFlags::NONE);
    src.fail_next(5);
    // Nobody frees anything: the bounded backoff alone brings it back.
    let p = alloc(z, Flags::WAITOK);
    assert_eq!(src.fails(), 5, "every failure was retried");
    assert_eq!(src.allocs(), 1);
    free(z, p);
    z.reclaim(Reclaim::DrainCpu);
    z.check_invariants();
    unsafe { u.destroy(z) };
}

#[test]
fn waitok_alloc_reclaims_other_zones_before_sleeping() {
    let _w = watchdog("WAITOK reclaiming other zones", 20);
    let u = instance();
    let src = leak_source();
    let a = small_zone(u, "src-want", src, ZoneFlags::NONE);
    let b = small_zone(u, "src-idle", src, ZoneFlags::NONE);
    // b takes every page the source will give, then frees its items: they
    // sit in this thread's cache of b, b's bucket cache and b's keg.
    let v: Vec<_> = (0..40).map(|_| alloc(b, Flags::NOWAIT)).collect();
    for p in v {
        free(b, p);
    }
    src.set_limit(src.in_use());
    let b_slabs = b.keg_info().unwrap().slabs;
    assert_eq!(b_slabs, 10);
    assert!(
        a.alloc(Flags::NOWAIT).is_none(),
        "no page for a without a reclaim"
    );
    let frees = src.frees();
    // Single thread, nobody else frees: only the reclaim can make room.
    let p = alloc(a, Flags::WAITOK);
    assert!(
        src.frees() > frees,
        "b's free slabs went back to the source"
    );
    assert!(b.keg_info().unwrap().slabs < b_slabs);
    free(a, p);
    for z in [a, b] {
        z.reclaim(Reclaim::DrainCpu);
        z.check_invariants();
        unsafe { u.destroy(z) };
    }
}
