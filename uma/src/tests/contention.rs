//! Adaptive bucket size (FreeBSD `zone_domain_lock`: a contended zone lock
//! grows `uz_bucket_size` by one up to `uz_bucket_size_max`; reclaim shrinks
//! it). The tests hold the zone lock themselves, so each round has exactly
//! one contended acquisition, awaited through the zone's counter.

use core::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::zone::Zone;
use crate::{global, Flags, Reclaim, ZoneArgs};

/// One contended zone-lock acquisition: holds the zone lock while a fresh
/// thread's first allocation (an empty cache: it must look at the bucket
/// cache) runs into it; waits until that thread counted the contention,
/// then lets it go. Returns the bucket size the contention left.
fn contend_once(z: &'static Zone) -> usize {
    let _serial = super::lock_holders_serial();
    let before = z.contended.load(Relaxed);
    let g = z.state.lock();
    let t = std::thread::spawn(move || {
        let p = z.alloc(Flags::NOWAIT).expect("alloc");
        // SAFETY: p came from z and is freed once.
        unsafe { z.free(p) };
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while z.contended.load(Relaxed) == before {
        assert!(Instant::now() < deadline, "the thread never hit the lock");
        std::thread::yield_now();
    }
    drop(g);
    t.join().unwrap();
    // After the join: the grower's store is visible, and nothing else
    // contended (the thread's exit flush found the lock free).
    let grown = z.bucket_size();
    assert_eq!(
        z.contended.load(Relaxed),
        before + 1,
        "exactly one contended acquisition"
    );
    grown
}

fn zone(name: &'static str) -> &'static Zone {
    // 1 KiB items: UMA starts at 16-entry buckets, may grow up to 254.
    global().create_zone(&ZoneArgs::new(name, 1024)).unwrap()
}

fn destroy(z: &'static Zone) {
    // SAFETY: nobody uses z any more.
    unsafe { global().destroy(z) };
}

/// Drains every cache of `z`, checks it and destroys it.
fn finish(z: &'static Zone) {
    z.reclaim(Reclaim::DrainCpu);
    z.check_invariants();
    destroy(z);
}

/// A `RAMP` zone of 256-byte items: the table picks 62-entry buckets; a
/// page slab holds 15 of them (a header takes the rest), so the ramp
/// starts at 8.
fn ramp_zone(name: &'static str) -> &'static Zone {
    global()
        .create_zone(&ZoneArgs::new(name, 256).flags(crate::ZoneFlags::RAMP))
        .unwrap()
}

/// `n` items of `z` allocated by a fresh thread, as addresses.
fn alloc_in_thread(z: &'static Zone, n: usize) -> Vec<usize> {
    std::thread::spawn(move || {
        (0..n)
            .map(|_| z.alloc(Flags::NOWAIT).unwrap().as_ptr() as usize)
            .collect()
    })
    .join()
    .unwrap()
}

/// Frees `items`, each an item of `z` allocated and not yet freed.
fn free_all(z: &'static Zone, items: Vec<usize>) {
    for p in items {
        // SAFETY: each came from z and is freed once.
        unsafe { z.free(core::ptr::NonNull::new(p as *mut u8).unwrap()) };
    }
}

#[test]
fn zone_lock_contention_grows_the_bucket_size_by_one() {
    let z = zone("contend-grow");
    assert_eq!(z.bucket_size(), 16);
    for want in 17..=20 {
        assert_eq!(contend_once(z), want);
    }
    // Uncontended traffic leaves it alone.
    let before = z.contended.load(Relaxed);
    for _ in 0..1000 {
        let p = z.alloc(Flags::NOWAIT).unwrap();
        // SAFETY: p came from z and is freed once.
        unsafe { z.free(p) };
    }
    assert_eq!(z.contended.load(Relaxed), before);
    assert_eq!(z.bucket_size(), 20);
    finish(z);
}

/// Sets a limit that caps `z`'s bucket size at 6: limit / 2 / (2 *
/// max(CPUs, caches)), with at most one cache registered at a time here.
/// The size is then 6 (`why` says why, for the message).
fn cap_at_six(z: &Zone, why: &str) {
    let ncpu = global().ncpu.max(1);
    z.set_max(24 * ncpu);
    assert_eq!(z.bucket_max.load(Relaxed), 6);
    assert_eq!(z.bucket_size(), 6, "{why}");
}

#[test]
fn contention_growth_stops_at_the_bucket_size_max() {
    let z = zone("contend-max");
    cap_at_six(z, "clamped to the cap");
    z.reclaim(Reclaim::Drain);
    assert_eq!(z.bucket_size(), 4, "reclaim shrank it below the cap");
    assert_eq!(contend_once(z), 5);
    assert_eq!(contend_once(z), 6);
    for _ in 0..3 {
        assert_eq!(contend_once(z), 6, "never above bucket_max");
    }
    finish(z);
}

#[test]
fn reclaim_shrinks_the_bucket_size_back_to_its_minimum() {
    let z = zone("contend-shrink");
    assert_eq!(contend_once(z), 17);
    assert_eq!(contend_once(z), 18);
    z.reclaim(Reclaim::Trim);
    assert_eq!(z.bucket_size(), 18, "trimming keeps the bucket size");
    let mut seen = vec![z.bucket_size()];
    for _ in 0..6 {
        z.reclaim(Reclaim::Drain);
        seen.push(z.bucket_size());
    }
    // Each drain steps down to the next smaller bucket zone, then holds at
    // the minimum.
    assert_eq!(seen, [18, 16, 8, 4, 2, 2, 2]);
    assert_eq!(z.bucket_min.load(Relaxed), 2);
    // and contention grows it again from there
    assert_eq!(contend_once(z), 3);
    z.reclaim(Reclaim::DrainCpu);
    assert_eq!(z.bucket_size(), 2);
    z.check_invariants();
    destroy(z);
}

#[test]
fn a_thread_that_keeps_missing_grows_the_bucket_size_up_to_64_kib() {
    let z = zone("miss-grow");
    assert_eq!(z.bucket_size(), 16);
    // A fresh thread: allocations beyond its buckets go to the keg again
    // and again (nothing is freed, so the zone's cache never has a full
    // bucket); no lock is ever contended.
    let before = z.contended.load(Relaxed);
    let t = std::thread::spawn(move || {
        let v: Vec<_> = (0..3000).map(|_| z.alloc(Flags::NOWAIT).unwrap()).collect();
        v.into_iter()
            .map(|p| p.as_ptr() as usize)
            .collect::<Vec<_>>()
    });
    let items = t.join().unwrap();
    if z.contended.load(Relaxed) == before {
        // 1 KiB items: 64 KiB buckets hold 64.
        assert_eq!(z.bucket_size(), 64, "grown by misses, stopped at the cap");
    } else {
        assert!(z.bucket_size() >= 64);
    }
    free_all(z, items);
    z.reclaim(Reclaim::Drain);
    assert!(z.bucket_size() < 64, "reclaim shrinks it");
    z.check_invariants();
    destroy(z);
}

#[test]
fn a_ramp_zone_starts_at_a_slab_of_items_and_doubles_to_the_table() {
    let z = ramp_zone("ramp");
    let ipers = z.keg_info().unwrap().layout.ipers;
    assert_eq!(ipers, 15, "page slab of 256-byte items");
    assert_eq!(z.bucket_size(), 8);
    let t = std::thread::spawn(move || {
        // Each fill from the keg doubles it (the first at the start
        // size), until the table's choice: 8 -> 16 -> 32 -> 62. Nothing
        // is freed, so every refill goes to the keg.
        let mut seen = vec![z.bucket_size()];
        let mut items = Vec::new();
        while items.len() < 400 {
            items.push(z.alloc(Flags::NOWAIT).unwrap().as_ptr() as usize);
            if *seen.last().unwrap() != z.bucket_size() {
                seen.push(z.bucket_size());
            }
        }
        (seen, items)
    });
    let (seen, items) = t.join().unwrap();
    // Past the ramp, misses grow it by one (as without the flag).
    assert_eq!(&seen[..4], &[8, 16, 32, 62]);
    assert!(seen[4..].windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
    assert_eq!(z.bucket_ramp.load(Relaxed), 0, "the ramp is over");
    free_all(z, items);
    finish(z);
}

#[test]
fn a_reclaim_ends_a_ramp() {
    let z = ramp_zone("ramp-reclaim");
    assert_eq!(z.bucket_size(), 8);
    z.reclaim(Reclaim::Drain);
    assert_eq!(z.bucket_ramp.load(Relaxed), 0);
    assert_eq!(z.bucket_size(), 4, "shrunk as FreeBSD's");
    let t = std::thread::spawn(move || {
        let p = z.alloc(Flags::NOWAIT).unwrap();
        // SAFETY: p came from z and is freed once.
        unsafe { z.free(p) };
    });
    t.join().unwrap();
    assert_eq!(z.bucket_size(), 4, "one fill from the keg: no doubling");
    finish(z);
}

#[test]
fn a_ramp_also_climbs_on_refills_the_keg_does_not_serve() {
    // Producer and consumer threads: the consumer's frees feed the
    // producer's refills through the zone, so after the start the keg is
    // seldom reached; the ramp climbs on every refill, not only on fills.
    let z = ramp_zone("ramp-remote");
    assert_eq!(z.bucket_size(), 8);
    let items = alloc_in_thread(z, 8);
    assert_eq!(z.bucket_size(), 16, "one fill from the keg");
    std::thread::spawn(move || free_all(z, items))
        .join()
        .unwrap();
    assert_eq!(z.bucket_size(), 32, "a free refill doubled it too");
    finish(z);
}

#[test]
fn a_ramp_stays_within_a_limits_cap() {
    let z = ramp_zone("ramp-limit");
    cap_at_six(z, "the ramp's start, clamped");
    let items = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let v = (0..20)
            .map(|_| {
                let p = z.alloc(Flags::NOWAIT).unwrap().as_ptr() as usize;
                seen.push(z.bucket_size());
                p
            })
            .collect::<Vec<_>>();
        // Inside the thread: its exit unregisters the cache, which
        // clamps the size to the cap again and would hide an overshoot.
        assert!(
            seen.iter().all(|&b| b <= 6),
            "never above the cap: {seen:?}"
        );
        v
    })
    .join()
    .unwrap();
    assert_eq!(z.bucket_ramp.load(Relaxed), 0, "the ramp ended at the cap");
    free_all(z, items);
    finish(z);
}
