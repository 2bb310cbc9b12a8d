//! Reserve semantics: ordinary callers never take the last `n` items, a
//! reserve-dipping fill takes one item, keg_drain keeps the reserve
//! (counting partial slabs), destroy drops it; the btag recursion pattern;
//! slabs freed through the source that produced them.

#![cfg(not(loom))]
// Test code: its unsafe blocks free items to the zone that allocated them,
// destroy zones nobody uses afterwards, or touch live items' bytes.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;
use common::*;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::OnceLock;
use uma::{Flags, Reclaim, SlabSource, TestSource, Zone, ZoneArgs, ZoneFlags};

const RES: Flags =
    Flags::from_bits(Flags::USE_RESERVE.bits() | Flags::NOVM.bits() | Flags::NOWAIT.bits());
const NOVM: Flags = Flags::from_bits(Flags::NOVM.bits() | Flags::NOWAIT.bits());

fn free_items(z: &Zone) -> usize {
    z.keg_info().unwrap().free_items
}

#[test]
fn ordinary_callers_never_take_the_last_n() {
    let z = zone(
        ZoneArgs::new("res-basic", 32)
            .max_ipers(4)
            .flags(ZoneFlags::NOBUCKET),
    );
    z.reserve(3);
    assert_eq!(z.prealloc(4), 4);
    let a = alloc(z, NOVM);
    assert_eq!(free_items(z), 3);
    assert!(
        z.alloc(NOVM).is_none(),
        "NOVM caller must not take the reserve"
    );
    let b = alloc(z, Flags::NOWAIT); // grows instead
    assert_eq!(z.keg_info().unwrap().slabs, 2);
    assert_eq!(free_items(z), 6);
    let mut r = Vec::new();
    while free_items(z) > 3 {
        r.push(alloc(z, NOVM));
    }
    assert!(z.alloc(NOVM).is_none());
    for _ in 0..3 {
        r.push(alloc(z, RES)); // the reserve users get them
    }
    assert_eq!(free_items(z), 0);
    assert!(z.alloc(RES).is_none(), "nothing left, no VM");
    z.check_invariants();
    for p in r.into_iter().chain([a, b]) {
        free(z, p);
    }
    z.check_invariants();
    destroy(z);
}

#[test]
fn reserve_dipping_fill_takes_one_item() {
    let z = zone(ZoneArgs::new("res-fill", 32).max_ipers(8).bucket_size(8));
    z.reserve(6);
    z.prealloc(8);
    assert_eq!(free_items(z), 8);
    let a = alloc(z, RES);
    // free 8 > 6: the fill may take down to the reserve, then one more at most
    let after = free_items(z);
    assert!(
        after >= 6,
        "ordinary part of the fill stopped at the reserve: {after}"
    );
    let mut v = vec![a];
    // drain this thread's cache so the next alloc fills again
    z.reclaim(Reclaim::DrainCpu);
    // now free items may be 8 again (drained back); take down to the reserve
    while free_items(z) > 6 {
        v.push(alloc(z, NOVM));
        z.reclaim(Reclaim::DrainCpu);
    }
    let before = free_items(z);
    v.push(alloc(z, RES));
    assert_eq!(
        free_items(z),
        before - 1,
        "a reserve-dipping fill takes one item"
    );
    z.check_invariants();
    for p in v {
        free(z, p);
    }
    destroy(z);
}

#[test]
fn keg_drain_keeps_the_reserve_counting_partial_slabs() {
    let z = zone(
        ZoneArgs::new("res-drain", 32)
            .max_ipers(4)
            .flags(ZoneFlags::NOBUCKET),
    );
    z.prealloc(12);
    let a = alloc(z, Flags::NOWAIT);
    let b = alloc(z, Flags::NOWAIT);
    // one partial slab with 2 free, two free slabs: 10 free
    assert_eq!(free_items(z), 10);
    z.reserve(3);
    z.reclaim(Reclaim::Drain);
    let i = z.keg_info().unwrap();
    assert_eq!(
        (i.slabs, i.free_items),
        (2, 6),
        "one free slab kept: 2 + 4 >= 3"
    );
    z.reserve(2);
    z.reclaim(Reclaim::DrainCpu);
    let i = z.keg_info().unwrap();
    assert_eq!(
        (i.slabs, i.free_items),
        (1, 2),
        "partial slab's 2 free items cover the reserve (D26772)"
    );
    assert_eq!(i.reserve, 2, "reclaim never drops the reserve");
    free(z, a);
    free(z, b);
    z.check_invariants();
    destroy(z);
}

#[test]
fn drain_with_reserve_never_frees_below_it() {
    let z = zone(ZoneArgs::new("res-drain2", 64).max_ipers(4));
    z.reserve(5);
    z.prealloc(20);
    for _ in 0..3 {
        z.reclaim(Reclaim::DrainCpu);
        assert!(free_items(z) >= 5);
    }
    let mut v = Vec::new();
    for _ in 0..5 {
        v.push(alloc(z, RES));
    }
    for p in v {
        free(z, p);
    }
    z.check_invariants();
    destroy(z);
}

#[test]
fn destroy_drops_the_reserve_and_gives_back_all_slabs() {
    let src = leak_source();
    let z = zone(ZoneArgs::new("res-destroy", 64).max_ipers(4).source(src));
    z.reserve(8);
    z.prealloc(8);
    z.reclaim(Reclaim::DrainCpu);
    assert!(src.in_use() > 0, "reserve keeps slabs through reclaim");
    destroy(z);
    assert_eq!(src.in_use(), 0, "destroy gives every slab back");
    assert_eq!(src.allocs(), src.frees());
}

#[test]
fn flags_pass_through_to_the_source() {
    let src = leak_source();
    let z = zone(
        ZoneArgs::new("res-flags", 64)
            .source(src)
            .flags(ZoneFlags::NOBUCKET),
    );
    let p = alloc(z, Flags::WAITOK | Flags::ZERO);
    assert!(
        src.last_flags().contains(Flags::WAITOK | Flags::ZERO),
        "{:?}",
        src.last_flags()
    );
    let mut v = vec![p];
    while src.allocs() < 2 {
        v.push(alloc(z, Flags::NOWAIT | Flags::USE_RESERVE));
    }
    assert!(src
        .last_flags()
        .contains(Flags::NOWAIT | Flags::USE_RESERVE));
    src.fail_next(1);
    let before = src.allocs();
    while src.allocs() == before && src.fails() == 0 {
        if z.alloc(Flags::NOWAIT).map(|p| v.push(p)).is_none() {
            break;
        }
    }
    assert_eq!(src.fails(), 1, "NOWAIT failure is reported as None");
    for p in v {
        free(z, p);
    }
    destroy(z);
}

#[test]
fn slabs_are_freed_by_the_source_that_produced_them() {
    let a = leak_source();
    let b = leak_source();
    let z = zone(
        ZoneArgs::new("res-pair", 64)
            .max_ipers(4)
            .source(a)
            .flags(ZoneFlags::NOBUCKET),
    );
    let mut v: Vec<NonNull<u8>> = (0..8).map(|_| alloc(z, Flags::NOWAIT)).collect();
    z.set_source(b);
    v.extend((0..8).map(|_| alloc(z, Flags::NOWAIT)));
    assert!(a.allocs() == 2 && b.allocs() == 2);
    for p in v {
        free(z, p);
    }
    z.reclaim(Reclaim::Drain);
    assert_eq!(
        (a.frees(), b.frees()),
        (2, 2),
        "each slab went back to its own source"
    );
    destroy(z);
}

/// The vmem btag pattern: a page source that itself needs an item of the
/// zone it feeds (`USE_RESERVE | NOVM | NOWAIT`), as the kernel arena needs
/// boundary tags to hand out the pages of a new btag slab.
struct Recursive {
    inner: TestSource,
    zone: OnceLock<&'static Zone>,
    held: std::sync::Mutex<Vec<usize>>,
    recursions: AtomicUsize,
    failures: AtomicUsize,
}

// SAFETY: delegates memory to TestSource; recursion happens with no
// UMA lock held, as the contract allows.
unsafe impl SlabSource for Recursive {
    fn alloc(&self, size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
        if let Some(z) = self.zone.get() {
            self.recursions.fetch_add(1, SeqCst);
            match z.alloc(RES) {
                Some(p) => self.held.lock().unwrap().push(p.as_ptr() as usize),
                None => {
                    self.failures.fetch_add(1, SeqCst);
                    return None;
                }
            }
        }
        self.inner.alloc(size, align, flags)
    }
    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, align: usize) {
        unsafe { self.inner.free(ptr, size, align) }
    }
}

fn recursive_zone(name: &'static str, reserve: usize) -> (&'static Zone, &'static Recursive) {
    let src: &'static Recursive = Box::leak(Box::new(Recursive {
        inner: TestSource::new(),
        zone: OnceLock::new(),
        held: Default::default(),
        recursions: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
    }));
    let z = zone(ZoneArgs::new(name, 64).max_ipers(4).bucket_size(2));
    z.reserve(reserve);
    z.prealloc(reserve); // like vmem_startup: prealloc with the plain source
    z.set_source(src);
    src.zone.set(z).ok().unwrap();
    (z, src)
}

/// Gives the items the source took back (as vmem frees tags it no longer
/// needs), from the test thread.
fn give_back(z: &Zone, src: &Recursive) {
    let held: Vec<usize> = std::mem::take(&mut *src.held.lock().unwrap());
    for p in held {
        free(z, NonNull::new(p as *mut u8).unwrap());
    }
}

#[test]
fn btag_recursion_is_broken_by_the_reserve() {
    let (z, src) = recursive_zone("res-btag", 2);
    let mut v = Vec::new();
    for i in 0..400 {
        v.push(alloc(z, Flags::NOWAIT));
        if i % 7 == 0 {
            z.reclaim(Reclaim::DrainCpu); // memory pressure: drain while we grow
            give_back(z, src);
        }
        if i % 3 == 0 {
            free(z, v.swap_remove(0));
        }
    }
    assert!(src.recursions.load(SeqCst) > 10);
    assert_eq!(
        src.failures.load(SeqCst),
        0,
        "the recursion always found its reserve"
    );
    for p in v {
        free(z, p);
    }
    give_back(z, src);
    z.check_invariants();
    destroy(z);
}

#[test]
fn btag_recursion_fails_without_a_reserve() {
    let (z, src) = recursive_zone("res-btag-none", 0);
    let mut v = Vec::new();
    for _ in 0..50 {
        if let Some(p) = z.alloc(Flags::NOWAIT) {
            v.push(p);
        }
        z.reclaim(Reclaim::DrainCpu);
    }
    assert!(
        src.failures.load(SeqCst) > 0,
        "without the reserve the recursion starves"
    );
    for p in v {
        free(z, p);
    }
    give_back(z, src);
    destroy(z);
}

#[test]
fn btag_recursion_stress_with_concurrent_drains() {
    let (z, src) = recursive_zone("res-btag-mt", 4);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drainer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                z.reclaim(Reclaim::DrainCpu);
                std::thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..3)
        .map(|t| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                for i in 0..3000 {
                    let p = alloc(z, Flags::NOWAIT);
                    write(p, 64, t as u8);
                    v.push(p);
                    if v.len() > 40 || i % 5 == 0 {
                        let q = v.swap_remove(0);
                        check(q, 64, t as u8);
                        free(z, q);
                    }
                }
                for p in v {
                    free(z, p);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, SeqCst);
    drainer.join().unwrap();
    assert_eq!(
        src.failures.load(SeqCst),
        0,
        "no spurious failure under drain pressure"
    );
    give_back(z, src);
    z.reclaim(Reclaim::DrainCpu);
    z.check_invariants();
    assert!(free_items(z) >= 4);
    destroy(z);
}

/// A `VM` zone (kmem's btag zone) is used by a caller holding the page
/// allocator's lock: everything UMA allocates on its behalf (per-thread
/// cache registration, buckets) must be `NOVM` and never reach the
/// instance's page source, or the caller would recurse into its own lock.
#[test]
fn vm_zone_internal_allocations_never_call_the_page_source() {
    let inst: &'static TestSource = Box::leak(Box::new(TestSource::new()));
    let items: &'static TestSource = Box::leak(Box::new(TestSource::new()));
    let uma = uma::Uma::bootstrap(inst).expect("bootstrap");
    let z = uma
        .create_zone(
            &ZoneArgs::new("vm-zone", 56)
                .flags(ZoneFlags::VM)
                .source(items),
        )
        .expect("zone");
    z.reserve(8);
    assert!(z.prealloc(200) >= 200);
    let before = inst.allocs() + inst.fails();
    // Many threads at once: each registers a cache and wants buckets, more
    // than the internal zones' boot pages hold.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(64));
    let hs: Vec<_> = (0..64)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut v = Vec::new();
                for _ in 0..30 {
                    if let Some(p) = z.alloc(NOVM) {
                        v.push(p.as_ptr() as usize);
                    }
                }
                for &p in &v {
                    unsafe { z.free(NonNull::new(p as *mut u8).unwrap()) };
                }
                barrier.wait();
                v.len()
            })
        })
        .collect();
    let got: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(got > 0);
    assert_eq!(
        inst.allocs() + inst.fails(),
        before,
        "a VM zone's internal allocation called the page source"
    );
    z.check_invariants();
}
