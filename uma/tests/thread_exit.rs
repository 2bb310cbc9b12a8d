//! Thread-exit flushes: an exiting thread gives its per-thread caches back
//! to their zones, which may run application callbacks (a cache zone's
//! release, a secondary zone's zfini). They must run with no UMA lock
//! held, as every other release does: a callback that waits for a lock
//! whose holder is registering a per-thread cache would otherwise deadlock
//! against it (lock order inversion: registry lock -> application lock ->
//! registry lock). kmem's quantum caches are such zones (their release
//! takes the vmem arena lock, whose holders take boundary tags from a
//! cached zone).

#![cfg(not(loom))]
// Test code: its unsafe blocks free items to the zone that allocated them.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use uma::{CacheArgs, Flags, ZoneArgs, ZoneFlags};

static NEXT: AtomicUsize = AtomicUsize::new(0x10_0000);

/// The items a test's cache zone has out (imported, not yet released):
/// `arg` of its import and release callbacks is the counter's address.
fn out_of(arg: usize) -> &'static AtomicUsize {
    // SAFETY: `arg` is the address of one of this file's static counters.
    unsafe { &*(arg as *const AtomicUsize) }
}

fn import_counted(arg: usize, store: &mut [*mut u8], _f: Flags) -> usize {
    for s in store.iter_mut() {
        *s = NEXT.fetch_add(0x10, SeqCst) as *mut u8; // integers, not memory
    }
    out_of(arg).fetch_add(store.len(), SeqCst);
    store.len()
}

/// A cache zone of `u` over `import_counted` and `release`, counting its
/// items out in `out`.
fn counted_cache(
    u: &'static uma::Uma,
    name: &'static str,
    release: uma::Release,
    out: &'static AtomicUsize,
    bucket: usize,
) -> &'static uma::Zone {
    u.create_cache(&CacheArgs {
        name,
        size: 16,
        import: import_counted,
        release,
        arg: out as *const AtomicUsize as usize,
        ctor: None,
        dtor: None,
        flags: ZoneFlags::NONE,
        bucket_size: Some(bucket),
    })
    .unwrap()
}

/// The application's lock, taken by the release callback.
static APP: Mutex<()> = Mutex::new(());
static IN_RELEASE: AtomicBool = AtomicBool::new(false);
static OUT: AtomicUsize = AtomicUsize::new(0);

fn release(arg: usize, items: &[*mut u8]) {
    IN_RELEASE.store(true, SeqCst);
    let _app = APP.lock().unwrap();
    out_of(arg).fetch_sub(items.len(), SeqCst);
}

#[test]
fn exit_flush_runs_release_callbacks_without_the_registry_lock() {
    let _w = watchdog("thread-exit release vs a registering lock holder", 30);
    let cz = counted_cache(uma(), "exit-release", release, &OUT, 8);
    // No zone bucket cache: the exiting thread's buckets go straight back
    // through `release`.
    cz.set_maxcache(0);
    // A zone this test thread has never used: its first allocation here
    // registers a per-thread cache.
    let fresh = zone(ZoneArgs::new("exit-fresh", 64));

    let app = APP.lock().unwrap();
    let exiting = std::thread::spawn(move || {
        let v: Vec<_> = (0..6).map(|_| alloc(cz, Flags::NOWAIT)).collect();
        for p in v {
            free(cz, p);
        }
        // Returning runs the thread-exit flush: release, which waits for APP.
    });
    wait_until("the exiting thread in release", || IN_RELEASE.load(SeqCst));
    // The exiting thread is inside `release`, waiting for APP, which this
    // thread holds. Registering a cache must not wait for the exit flush.
    let p = alloc(fresh, Flags::NOWAIT);
    free(fresh, p);
    drop(app);
    exiting.join().unwrap();
    assert_eq!(OUT.load(SeqCst), 0, "the exit flush released every item");
    assert_eq!(destroy(fresh), 0);
    assert_eq!(destroy(cz), 0);
}

static SLOW_IN: AtomicBool = AtomicBool::new(false);
static SLOW_OUT: AtomicUsize = AtomicUsize::new(0);

fn release_slow(arg: usize, items: &[*mut u8]) {
    SLOW_IN.store(true, SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(2));
    out_of(arg).fetch_sub(items.len(), SeqCst);
}

/// Zone destroy racing thread-exit flushes of the same zone: destroy waits
/// for the flushes whose caches had already left the list (their buckets
/// not yet back in the zone), so the zone outlives them, nothing is lost
/// and nothing is reported leaked.
#[test]
fn destroy_waits_for_thread_exit_flushes() {
    let _w = watchdog("destroy vs thread-exit flushes", 60);
    for round in 0..20 {
        let z = counted_cache(uma(), "exit-destroy", release_slow, &SLOW_OUT, 4);
        z.set_maxcache(0);
        SLOW_IN.store(false, SeqCst);
        let done = std::sync::Arc::new(std::sync::Barrier::new(5));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let done = done.clone();
                std::thread::spawn(move || {
                    let v: Vec<_> = (0..6).map(|_| alloc(z, Flags::NOWAIT)).collect();
                    for p in v {
                        free(z, p);
                    }
                    done.wait(); // no more use of z: only the exit flush
                })
            })
            .collect();
        done.wait();
        // At least one thread is in its exit flush, inside `release`: its
        // cache has left the list, its items are not back yet.
        wait_until("an exit flush in release", || SLOW_IN.load(SeqCst));
        assert_eq!(destroy(z), 0, "round {round}: items reported leaked");
        assert_eq!(SLOW_OUT.load(SeqCst), 0, "round {round}: items lost");
        for t in threads {
            t.join().unwrap();
        }
    }
}

static CHURN_OUT: AtomicUsize = AtomicUsize::new(0);

fn release_counted(arg: usize, items: &[*mut u8]) {
    out_of(arg).fetch_sub(items.len(), SeqCst);
}

/// Rounds of: a keg zone and a cache zone, threads that fill their caches
/// of both and exit, and destroy of both zones while they exit, with
/// another thread draining every zone's caches (`DrainCpu`) and walking
/// the statistics all along. Every round, both destroys must find
/// nothing in use and the cache zone must have released every item. Its
/// own instance, so that the drains do not run the other tests' release
/// callbacks for them (they must run in the exit flushes).
#[test]
fn exits_destroys_and_drains_race_without_loss() {
    let _w = watchdog("thread exits vs destroy vs drains", 120);
    let u = uma::Uma::bootstrap(leak_source()).unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let drainer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut walks = 0u32;
            while !stop.load(SeqCst) {
                u.reclaim(uma::Reclaim::DrainCpu);
                let mut s = String::new();
                u.write_vmstat(&mut s).unwrap();
                walks += 1;
            }
            walks
        })
    };
    let t0 = std::time::Instant::now();
    let mut rounds = 0;
    while t0.elapsed() < std::time::Duration::from_secs(2) || rounds < 20 {
        let kz = u
            .create_zone(&ZoneArgs::new("exit-churn-keg", 48).bucket_size(4))
            .unwrap();
        let cz = counted_cache(u, "exit-churn-cache", release_counted, &CHURN_OUT, 4);
        if rounds % 2 == 1 {
            cz.set_maxcache(0); // exit flushes release, not cache
            kz.set_maxcache(0);
        }
        let done = std::sync::Arc::new(std::sync::Barrier::new(5));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let done = done.clone();
                std::thread::spawn(move || {
                    let n = 3 + 5 * t;
                    let a: Vec<_> = (0..n).map(|_| alloc(kz, Flags::NOWAIT)).collect();
                    let b: Vec<_> = (0..n).map(|_| alloc(cz, Flags::NOWAIT)).collect();
                    for p in a {
                        write(p, 48, t as u8);
                        free(kz, p);
                    }
                    for p in b {
                        free(cz, p);
                    }
                    done.wait(); // no more use of either zone: only the exit flush
                })
            })
            .collect();
        done.wait();
        // SAFETY: the threads no longer use the zones.
        let (kl, cl) = unsafe { (u.destroy(kz), u.destroy(cz)) };
        assert_eq!(kl, 0, "round {rounds}: keg zone items in use");
        assert_eq!(cl, 0, "round {rounds}: cache zone items in use");
        assert_eq!(CHURN_OUT.load(SeqCst), 0, "round {rounds}: items lost");
        for t in threads {
            t.join().unwrap();
        }
        rounds += 1;
    }
    stop.store(true, SeqCst);
    let walks = drainer.join().unwrap();
    assert!(walks > 0);
    eprintln!("{rounds} rounds, {walks} drains and walks");
}
