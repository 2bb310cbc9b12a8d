//! The lazy timeout: a program that frees a burst of blocks gets the memory
//! back to the OS within a few periods, with no reclaim thread, as long as
//! it keeps allocating; with the timeout off it keeps it all. Its own
//! process: the resident set is the measure.
#![cfg(not(loom))]
// Test code: its unsafe blocks free what they allocated with that layout.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout};
use std::time::{Duration, Instant};

use kmem::Kmem;

#[path = "common/util.rs"]
mod util;
use util::{fill_and_free, noop_fini};

const MIB: usize = 1 << 20;

fn resident() -> usize {
    kmem::os_stats().resident
}

/// Allocates `n` blocks of `layout`, touching every page of each.
fn burst(layout: Layout, n: usize) -> Vec<*mut u8> {
    (0..n)
        .map(|_| {
            let p = unsafe { Kmem.alloc(layout) };
            assert!(!p.is_null());
            for off in (0..layout.size()).step_by(4096) {
                unsafe { p.add(off).write(1) };
            }
            p
        })
        .collect()
}

fn free_all(layout: Layout, v: Vec<*mut u8>) {
    for p in v {
        unsafe { Kmem.dealloc(p, layout) };
    }
}

/// What a running program does meanwhile: more blocks than two buckets
/// hold, so its per-thread cache trades buckets with the zone (the slow
/// paths where the timeout runs).
fn churn_for(d: Duration) {
    let l = Layout::from_size_align(48, 8).unwrap();
    let end = Instant::now() + d;
    while Instant::now() < end {
        let v: Vec<*mut u8> = (0..2000).map(|_| unsafe { Kmem.alloc(l) }).collect();
        free_all(l, v);
    }
}

#[test]
fn a_burst_of_frees_goes_back_to_the_os_without_a_reclaim_thread() {
    assert!(!kmem::reclaim_worker_running());
    assert_eq!(
        kmem::set_timeout_period(None),
        Some(kmem::TIMEOUT_PERIOD),
        "on by default"
    );
    let small = Layout::from_size_align(64, 8).unwrap(); // a slab class
    let mid = Layout::from_size_align(40 << 10, 8).unwrap(); // quantum cache
    churn_for(Duration::from_millis(10)); // kmem built, caches set up
    let before = resident();
    let s = burst(small, 400_000); // 25 MB
    let m = burst(mid, 500); // 20 MB
    free_all(small, s);
    free_all(mid, m);
    let held = resident().saturating_sub(before);
    assert!(held > 30 * MIB, "the burst is cached: {} MiB", held / MIB);

    // Off: the program goes on, nothing goes back.
    churn_for(Duration::from_millis(300));
    let off = resident().saturating_sub(before);
    assert!(
        off > held * 9 / 10,
        "timeout off: {} of {} MiB kept",
        off / MIB,
        held / MIB
    );
    assert_eq!(kmem::timeout_passes(), 0);

    // On, with a short period: back within a few periods.
    kmem::set_timeout_period(Some(Duration::from_millis(50)));
    let start = Instant::now();
    while resident().saturating_sub(before) > held / 10 && start.elapsed() < Duration::from_secs(10)
    {
        churn_for(Duration::from_millis(50));
    }
    let on = resident().saturating_sub(before);
    let passes = kmem::timeout_passes();
    assert!(
        on <= held / 10,
        "timeout on: {} of {} MiB still resident after {:?} and {passes} passes",
        on / MIB,
        held / MIB,
        start.elapsed()
    );
    eprintln!(
        "burst {} MiB; timeout off: {} MiB kept; on: {} MiB after {:?}, {passes} passes",
        held / MIB,
        off / MIB,
        on / MIB,
        start.elapsed()
    );
    assert!(passes >= 2, "{passes} passes");
    kmem::uma().unwrap().check_internal();

    // The application's zones: one whose trim runs none of its code is
    // covered; one with a keg fini is left to the reclaim worker (or
    // `Uma::timeout`), since the pass runs in whatever thread allocates.
    let u = kmem::uma().unwrap();
    let plain = u.create_zone(&uma::ZoneArgs::new("lt-plain", 256)).unwrap();
    let with_fini = u
        .create_zone(&uma::ZoneArgs::new("lt-fini", 256).fini(noop_fini))
        .unwrap();
    for z in [plain, with_fini] {
        fill_and_free(z, 5000);
    }
    let plain_cached = plain.stats().cached_buckets;
    let fini_cached = with_fini.stats().cached_buckets;
    assert!(plain_cached > 2000 && fini_cached > 2000);
    let start = Instant::now();
    while plain.stats().cached_buckets > plain_cached / 10
        && start.elapsed() < Duration::from_secs(10)
    {
        churn_for(Duration::from_millis(50));
    }
    assert!(
        plain.stats().cached_buckets <= plain_cached / 10,
        "plain zone: {} of {plain_cached} items still cached",
        plain.stats().cached_buckets
    );
    assert_eq!(
        with_fini.stats().cached_buckets,
        fini_cached,
        "a zone whose trim runs the application's fini is not trimmed in line"
    );
    u.timeout(); // the worker's pass does trim it
    assert!(with_fini.stats().cached_buckets < fini_cached);
    kmem::set_timeout_period(Some(kmem::TIMEOUT_PERIOD));
}
