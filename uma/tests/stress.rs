//! Multi-thread stress with cross-thread frees and content checks; thread
//! exit flushes; allocation during TLS teardown.

#![cfg(not(loom))]
// Test code: its unsafe blocks free items to the zone that allocated them,
// destroy zones nobody uses afterwards, or touch live items' bytes.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;
use common::*;
use std::ptr::NonNull;
use std::sync::mpsc;
use uma::{Flags, Reclaim, Zone, ZoneArgs};

struct Item(usize);
unsafe impl Send for Item {}

#[test]
fn producers_consumers_cross_thread_frees() {
    let z = zone(ZoneArgs::new("st-xfree", 96));
    let (tx, rx) = mpsc::sync_channel::<(Item, u8)>(1024);
    let producers: Vec<_> = (0..2)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..20000u32 {
                    let p = alloc(z, Flags::NOWAIT);
                    let tag = (t as u8) ^ (i as u8);
                    write(p, 96, tag);
                    tx.send((Item(p.as_ptr() as usize), tag)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || {
        let mut n = 0;
        for (Item(p), tag) in rx {
            let p = NonNull::new(p as *mut u8).unwrap();
            check(p, 96, tag);
            free(z, p); // frees go to the consumer's cache
            n += 1;
        }
        n
    });
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), 40000);
    let s = z.stats();
    assert_eq!(s.used, 0);
    assert_eq!(s.cached_pcpu, 0, "all worker threads exited and flushed");
    assert!(
        s.items < 40000,
        "producer/consumer flow stays bounded: {s:?}"
    );
    z.check_invariants();
    z.reclaim(Reclaim::DrainCpu);
    destroy(z);
}

#[test]
fn many_threads_shared_pool_with_drains() {
    let z = zone(ZoneArgs::new("st-pool", 40).max_ipers(16));
    let pool = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(usize, u8)>::new()));
    let ts: Vec<_> = (0..4)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut x = t as u32 * 7919 + 1;
                for i in 0..15000u32 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    if x % 3 != 0 {
                        let p = alloc(
                            z,
                            if x % 7 == 0 {
                                Flags::NOWAIT | Flags::ZERO
                            } else {
                                Flags::NOWAIT
                            },
                        );
                        let tag = (x >> 8) as u8;
                        write(p, 40, tag);
                        pool.lock().unwrap().push((p.as_ptr() as usize, tag));
                    } else {
                        let e = pool.lock().unwrap().pop();
                        if let Some((p, tag)) = e {
                            let p = NonNull::new(p as *mut u8).unwrap();
                            check(p, 40, tag);
                            free(z, p);
                        }
                    }
                    if i % 2000 == 0 && t == 0 {
                        z.reclaim(Reclaim::DrainCpu);
                    }
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    let left = std::mem::take(&mut *pool.lock().unwrap());
    let mut seen = std::collections::HashSet::new();
    for (p, tag) in left {
        assert!(seen.insert(p), "item live twice");
        let p = NonNull::new(p as *mut u8).unwrap();
        check(p, 40, tag);
        free(z, p);
    }
    z.reclaim(Reclaim::DrainCpu);
    z.check_invariants();
    assert_eq!(z.stats().used, 0);
    assert_eq!(destroy(z), 0);
}

static TEARDOWN_ZONE: std::sync::OnceLock<&'static Zone> = std::sync::OnceLock::new();

struct AllocOnDrop;
impl Drop for AllocOnDrop {
    fn drop(&mut self) {
        // runs during TLS teardown: must still work (shared path)
        let z = TEARDOWN_ZONE.get().unwrap();
        for _ in 0..100 {
            let p = alloc(z, Flags::NOWAIT);
            write(p, 64, 0x5a);
            free(z, p);
        }
    }
}

thread_local! {
    static ON_DROP: AllocOnDrop = const { AllocOnDrop };
}

#[test]
fn allocation_during_tls_teardown_works() {
    let z = zone(ZoneArgs::new("st-teardown", 64));
    TEARDOWN_ZONE.set(z).ok().unwrap();
    for _ in 0..4 {
        std::thread::spawn(move || {
            ON_DROP.with(|_| {});
            let v: Vec<_> = (0..300).map(|_| alloc(z, Flags::NOWAIT)).collect();
            for p in v {
                free(z, p);
            }
        })
        .join()
        .unwrap();
    }
    let s = z.stats();
    assert_eq!(s.used, 0);
    assert_eq!(s.cached_pcpu, 0);
    assert_eq!(s.requests, 4 * 400);
    z.check_invariants();
    destroy(z);
}

#[test]
fn destroy_while_other_threads_hold_caches() {
    let z = zone(ZoneArgs::new("st-destroy", 64));
    let (tx, rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let v: Vec<_> = (0..100).map(|_| alloc(z, Flags::NOWAIT)).collect();
        for p in v {
            free(z, p);
        }
        ready_tx.send(()).unwrap();
        rx.recv().unwrap(); // exits after the zone is gone: its cache slot is clear
    });
    ready_rx.recv().unwrap();
    assert!(z.stats().cached_pcpu > 0);
    assert_eq!(destroy(z), 0);
    // a new zone may reuse the slot; the old thread's exit must not touch it
    let z2 = zone(ZoneArgs::new("st-destroy-2", 64));
    let p = alloc(z2, Flags::NOWAIT);
    tx.send(()).unwrap();
    t.join().unwrap();
    free(z2, p);
    z2.check_invariants();
    destroy(z2);
}
