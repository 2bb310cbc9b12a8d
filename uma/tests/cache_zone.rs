//! Cache-only zones over import/release callbacks (vmem quantum caches).

#![cfg(not(loom))]
// Test code: its unsafe blocks free items to the zone that allocated them,
// destroy zones nobody uses afterwards, or touch live items' bytes.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use uma::{CacheArgs, Flags, Reclaim, ZoneFlags};

static NEXT: AtomicUsize = AtomicUsize::new(0x1000);
static OUT: AtomicUsize = AtomicUsize::new(0);
static RELEASED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn import(arg: usize, store: &mut [*mut u8], _f: Flags) -> usize {
    assert_eq!(arg, 42);
    let n = store.len().min(5);
    for s in store.iter_mut().take(n) {
        *s = NEXT.fetch_add(0x10, SeqCst) as *mut u8; // integers, not memory
    }
    OUT.fetch_add(n, SeqCst);
    n
}

fn release(arg: usize, items: &[*mut u8]) {
    assert_eq!(arg, 42);
    OUT.fetch_sub(items.len(), SeqCst);
    RELEASED
        .lock()
        .unwrap()
        .extend(items.iter().map(|&p| p as usize));
}

#[test]
fn cache_zone_imports_caches_and_releases() {
    let z = uma()
        .create_cache(&CacheArgs {
            name: "qcache-test",
            size: 16,
            import,
            release,
            arg: 42,
            ctor: None,
            dtor: None,
            flags: ZoneFlags::NONE,
            bucket_size: Some(4),
        })
        .unwrap();
    assert!(z.keg_info().is_none());
    let mut v = Vec::new();
    for _ in 0..20 {
        v.push(alloc(z, Flags::NOWAIT));
    }
    let mut seen = std::collections::HashSet::new();
    assert!(v.iter().all(|p| seen.insert(p.as_ptr() as usize)));
    for p in v.drain(..) {
        free(z, p);
    }
    z.check_invariants();
    let again = alloc(z, Flags::NOWAIT);
    assert!(
        seen.contains(&(again.as_ptr() as usize)),
        "freed values are reused from the cache"
    );
    free(z, again);
    z.reclaim(Reclaim::DrainCpu);
    assert_eq!(OUT.load(SeqCst), 0, "drain releases every cached value");
    z.check_invariants();
    assert_eq!(destroy(z), 0);
}

fn import_zero(_arg: usize, store: &mut [*mut u8], _f: Flags) -> usize {
    store[0] = std::ptr::null_mut();
    1
}
fn release_none(_arg: usize, _items: &[*mut u8]) {}

#[test]
fn zero_is_not_cacheable() {
    let z = uma()
        .create_cache(&CacheArgs {
            name: "qcache-zero",
            size: 8,
            import: import_zero,
            release: release_none,
            arg: 0,
            ctor: None,
            dtor: None,
            flags: ZoneFlags::NONE,
            bucket_size: None,
        })
        .unwrap();
    assert!(z.alloc(Flags::NOWAIT).is_none());
    z.check_invariants();
    destroy(z);
}
