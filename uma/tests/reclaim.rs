//! Reclaim levels TRIM / DRAIN / DRAIN_CPU, for one zone and for all,
//! working-set trimming and timeout passes, UNMANAGED and NOFREE zones, bucket sizes.

#![cfg(not(loom))]
// Test code: its unsafe blocks free items to the zone that allocated them,
// destroy zones nobody uses afterwards, or touch live items' bytes.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;
use common::*;
use std::sync::mpsc;
use uma::{Flags, Reclaim, ZoneArgs, ZoneFlags};

fn fill_and_free(z: &uma::Zone, n: usize) {
    let v: Vec<_> = (0..n).map(|_| alloc(z, Flags::NOWAIT)).collect();
    for p in v {
        free(z, p);
    }
}

#[test]
fn levels_free_progressively_more() {
    let src = leak_source();
    let z = zone(ZoneArgs::new("rc-levels", 64).source(src).bucket_size(16));
    fill_and_free(z, 2000);
    let s0 = z.stats();
    assert!(s0.cached_buckets > 0 && s0.cached_pcpu > 0);
    z.update_wss();
    z.update_wss();
    z.reclaim(Reclaim::Trim);
    let s1 = z.stats();
    assert!(s1.cached_buckets <= s0.cached_buckets);
    assert_eq!(
        s1.cached_pcpu, s0.cached_pcpu,
        "TRIM leaves per-thread caches"
    );
    z.reclaim(Reclaim::Drain);
    let s2 = z.stats();
    assert_eq!(s2.cached_buckets, 0);
    assert_eq!(
        s2.cached_pcpu, s0.cached_pcpu,
        "DRAIN leaves per-thread caches"
    );
    z.reclaim(Reclaim::DrainCpu);
    let s3 = z.stats();
    assert_eq!(s3.cached_pcpu, 0);
    assert_eq!(z.keg_info().unwrap().slabs, 0);
    assert_eq!(src.in_use(), 0, "every slab went back");
    z.check_invariants();
    destroy(z);
}

#[test]
fn working_set_trim_keeps_the_estimate() {
    let u = uma::Uma::bootstrap(leak_source()).unwrap();
    let z = u
        .create_zone(&ZoneArgs::new("rc-wss", 64).bucket_size(8))
        .unwrap();
    fill_and_free(z, 800);
    z.update_wss(); // wss ~ what just moved through
    let before = z.stats().cached_buckets;
    z.reclaim(Reclaim::Trim);
    let kept = z.stats().cached_buckets;
    assert!(
        kept > 0 && kept <= before,
        "trim keeps the working set ({kept} of {before})"
    );
    for _ in 0..10 {
        z.update_wss(); // idle periods decay the estimate
    }
    u.timeout();
    assert!(
        z.stats().cached_buckets < kept,
        "idle zone trimmed by timeout"
    );
    z.reclaim(Reclaim::DrainCpu);
    unsafe { u.destroy(z) };
}

/// Items the zone's bucket cache holds.
fn bucket_items(z: &uma::Zone) -> u64 {
    z.stats().cached_buckets
}

#[test]
fn timeout_passes_give_a_burst_back_and_keep_a_steady_working_set() {
    let src = leak_source();
    let z = zone(ZoneArgs::new("rc-timeout", 64).source(src).bucket_size(8));
    const BURST: usize = 4000;
    const WORKING: usize = 200;
    fill_and_free(z, BURST);
    let burst = bucket_items(z);
    let burst_pages = src.in_use();
    assert!(burst as usize > BURST / 2, "the burst is cached ({burst})");
    // Each period the program uses a steady working set, then a pass runs.
    let mut seen = vec![burst];
    for _ in 0..8 {
        fill_and_free(z, WORKING);
        z.timeout();
        seen.push(bucket_items(z));
    }
    let last = *seen.last().unwrap();
    // The estimate decays to a fifth per period once the burst is over; the
    // trims themselves must not count as use (FreeBSD shifts the period's
    // bounds), or the estimate stalls at a fraction of the burst.
    assert!(
        last < burst / 20,
        "the burst went back over the passes: {seen:?}"
    );
    assert!(last > 0, "the steady working set stays cached: {seen:?}");
    assert!(
        src.in_use() < burst_pages / 2,
        "free slabs went back to the source: {} of {burst_pages} bytes",
        src.in_use()
    );
    z.check_invariants();
    // A steady working set alone is never trimmed below what a period uses.
    for _ in 0..5 {
        fill_and_free(z, WORKING);
        z.timeout();
    }
    assert!(bucket_items(z) > 0);
    z.reclaim(Reclaim::DrainCpu);
    destroy(z);
}

#[test]
fn early_trim_gives_back_what_only_came_in_and_keeps_what_was_drawn() {
    let src = leak_source();
    // Left behind: its blocks were allocated from the keg and freed into
    // the cache, never asked for again.
    let left = zone(
        ZoneArgs::new("rc-early-left", 64)
            .source(src)
            .bucket_size(8),
    );
    fill_and_free(left, 2000);
    let cached = bucket_items(left);
    assert!(cached > 1000, "the frees are cached ({cached})");
    assert!(left.trim_early(), "items given back");
    assert_eq!(bucket_items(left), 0, "nothing was drawn: all went back");
    // A timeout pass keeps the same pattern's items: its estimate is the
    // period's range, and only decays over quiet periods.
    let kept = zone(ZoneArgs::new("rc-early-range", 64).bucket_size(8));
    fill_and_free(kept, 2000);
    let cached = bucket_items(kept);
    kept.timeout();
    assert!(
        bucket_items(kept) >= cached / 2,
        "a timeout keeps most of the range ({} of {cached})",
        bucket_items(kept)
    );
    // In use: a second round drew a batch from the cache, so the early
    // trim keeps it (the period is not ended by it either).
    let used = zone(ZoneArgs::new("rc-early-used", 64).bucket_size(8));
    fill_and_free(used, 2000);
    fill_and_free(used, 2000);
    let cached = bucket_items(used);
    used.trim_early();
    used.trim_early();
    assert!(
        bucket_items(used) + 16 >= cached,
        "a batch drawn this period stays ({} of {cached})",
        bucket_items(used)
    );
    for z in [left, kept, used] {
        z.check_invariants();
        z.reclaim(Reclaim::DrainCpu);
        destroy(z);
    }
}

/// Zones whose bucket cache went past its soft cap, as the hook saw them.
static OVER: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

#[test]
fn the_soft_cap_tells_once_and_a_trim_gives_back_the_excess() {
    let src = leak_source();
    let z = zone(ZoneArgs::new("rc-cap", 64).source(src).bucket_size(8));
    assert!(z.set_cache_cap(100, |z| OVER
        .lock()
        .unwrap()
        .push(z as *const uma::Zone as usize)));
    assert!(!z.set_cache_cap(50, |_| {}), "set once");
    let me = z as *const uma::Zone as usize;
    let told = || OVER.lock().unwrap().iter().filter(|&&p| p == me).count();
    // Past the cap: the cache still takes every bucket, and the hook hears
    // of it once.
    fill_and_free(z, 2000);
    let cached = bucket_items(z);
    assert!(
        cached > 1000,
        "the frees are cached past the cap ({cached})"
    );
    assert_eq!(told(), 1, "told once, however far past");
    let slabs = src.in_use();
    // The trim keeps the cap's worth (whole buckets, the hottest) and frees
    // the slabs that emptied.
    assert!(z.trim_to_cache_cap(), "items given back");
    let left = bucket_items(z);
    assert!(
        left <= 100 && left + 8 > 100,
        "{left} items kept for a cap of 100"
    );
    assert!(
        src.in_use() < slabs / 2,
        "free slabs went back: {} of {slabs} bytes",
        src.in_use()
    );
    assert!(!z.trim_to_cache_cap(), "nothing past the cap now");
    // Under the cap since the trim: the next time past it is told again.
    fill_and_free(z, 2000);
    assert_eq!(told(), 2);
    z.check_invariants();
    z.reclaim(Reclaim::DrainCpu);
    destroy(z);
}

#[test]
fn drain_cpu_takes_another_threads_cache_without_its_help() {
    let z = zone(ZoneArgs::new("rc-foreign", 64).bucket_size(30));
    let (tx, rx) = mpsc::channel::<()>();
    let (back_tx, back_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        fill_and_free(z, 20); // leaves items in this thread's cache
        back_tx.send(()).unwrap();
        rx.recv().unwrap(); // parked while the main thread drains
                            // still works after its cache was taken
        fill_and_free(z, 50);
    });
    back_rx.recv().unwrap();
    assert!(z.stats().cached_pcpu > 0);
    z.reclaim(Reclaim::DrainCpu);
    assert_eq!(
        z.stats().cached_pcpu,
        0,
        "the parked thread's cache was drained"
    );
    z.check_invariants();
    tx.send(()).unwrap();
    t.join().unwrap(); // thread exit flushes its cache
    let s = z.stats();
    assert_eq!(s.cached_pcpu, 0, "thread exit flushed");
    assert_eq!(s.used, 0);
    z.check_invariants();
    destroy(z);
}

#[test]
fn reclaim_all_zones_skips_unmanaged() {
    // an instance of its own: reclaiming "all zones" must not race the
    // invariant checks of the other tests of this binary
    let u = uma::Uma::bootstrap(leak_source()).unwrap();
    let a = u.create_zone(&ZoneArgs::new("rc-all-a", 64)).unwrap();
    let b = u
        .create_zone(&ZoneArgs::new("rc-all-unmanaged", 64).flags(ZoneFlags::UNMANAGED))
        .unwrap();
    fill_and_free(a, 500);
    fill_and_free(b, 500);
    u.reclaim(Reclaim::DrainCpu);
    assert_eq!(a.stats().cached_pcpu + a.stats().cached_buckets, 0);
    assert!(
        b.stats().cached_pcpu + b.stats().cached_buckets > 0,
        "UNMANAGED caches are kept"
    );
    b.reclaim(Reclaim::DrainCpu);
    assert_eq!(
        b.stats().cached_pcpu + b.stats().cached_buckets,
        0,
        "explicit reclaim still works"
    );
    u.check_internal();
    unsafe {
        assert_eq!(u.destroy(a), 0);
        assert_eq!(u.destroy(b), 0);
    }
}

#[test]
fn nofree_zone_never_gives_slabs_back() {
    let src = leak_source();
    let z = zone(
        ZoneArgs::new("rc-nofree", 64)
            .source(src)
            .flags(ZoneFlags::NOFREE),
    );
    fill_and_free(z, 300);
    z.reclaim(Reclaim::DrainCpu);
    assert!(z.keg_info().unwrap().slabs > 0);
    assert_eq!(src.frees(), 0);
    z.check_invariants();
}

#[test]
fn bucket_size_shrinks_on_drain() {
    let z = zone(ZoneArgs::new("rc-bsize", 64));
    let start = z.bucket_size();
    assert_eq!(start, 254, "64-byte items start with 254-entry buckets");
    z.reclaim(Reclaim::Drain);
    assert!(z.bucket_size() < start);
    let big = zone(ZoneArgs::new("rc-bsize-big", 4096));
    assert_eq!(big.bucket_size(), 2);
    destroy(z);
    destroy(big);
}

#[test]
fn prealloc_grows_the_keg() {
    let z = zone(ZoneArgs::new("rc-prealloc", 128));
    assert!(z.prealloc(1000) >= 1000);
    let i = z.keg_info().unwrap();
    assert!(i.free_items >= 1000);
    z.check_invariants();
    destroy(z);
}

#[test]
fn vmstat_table_lists_zones() {
    let z = zone(ZoneArgs::new("rc-vmstat", 72));
    let v: Vec<_> = (0..5).map(|_| alloc(z, Flags::NOWAIT)).collect();
    let mut s = String::new();
    uma().write_vmstat(&mut s).unwrap();
    let head = s.lines().next().unwrap();
    for col in [
        "ITEM", "SIZE", "LIMIT", "USED", "FREE", "REQ", "FAIL", "SLEEP",
    ] {
        assert!(head.contains(col));
    }
    let row = s
        .lines()
        .find(|l| l.starts_with("rc-vmstat:"))
        .expect("row");
    let cols: Vec<&str> = row.split(',').map(|c| c.trim()).collect();
    assert!(cols[0].ends_with("72"), "{row}");
    assert_eq!(cols[2], "5", "{row}");
    assert!(s.contains("UMA Zones:") && s.contains("UMA Kegs:") && s.contains("256 Bucket:"));
    for p in v {
        free(z, p);
    }
    destroy(z);
}

#[test]
fn bad_arguments_fail_cleanly() {
    assert!(uma().create_zone(&ZoneArgs::new("bad0", 0)).is_none());
    assert!(uma()
        .create_zone(&ZoneArgs::new("bad-align", 8).align(3))
        .is_none());
    assert!(uma()
        .create_zone(&ZoneArgs::new("bad-huge", 1 << 30))
        .is_none());
}

/// Requests served so far by the internal bucket zone `name` of `u`.
fn bucket_zone_requests(u: &uma::Uma, name: &str) -> u64 {
    let mut n = None;
    u.for_each_zone(|z| {
        if z.name() == name {
            n = Some(z.stats().requests);
        }
    });
    n.unwrap_or_else(|| panic!("no zone {name}"))
}

#[test]
fn steady_state_trades_buckets_instead_of_allocating_them() {
    let u = uma::Uma::bootstrap(leak_source()).unwrap();
    let z = u
        .create_zone(&ZoneArgs::new("rc-depot", 64).bucket_size(16))
        .unwrap();
    // Warm up: the first round allocates the buckets it needs.
    fill_and_free(z, 400);
    let warm = bucket_zone_requests(u, "16 Bucket");
    for _ in 0..50 {
        fill_and_free(z, 400);
    }
    let after = bucket_zone_requests(u, "16 Bucket");
    // 50 rounds move 2 * 50 * 400 / 16 = 2500 buckets through the zone;
    // each one traded at the zone lock, none allocated.
    assert_eq!(after, warm, "no bucket allocated in steady state");
    let s = z.stats();
    assert!(s.empty_buckets > 0 || s.buckets > 0);
    z.check_invariants();
    // Another thread: producer here, consumer there, every bucket crosses.
    let (tx, rx) = mpsc::channel::<Vec<usize>>();
    let (back_tx, back_rx) = mpsc::channel::<()>();
    let consumer = std::thread::spawn(move || {
        for v in rx {
            for p in v {
                free(z, std::ptr::NonNull::new(p as *mut u8).unwrap());
            }
            back_tx.send(()).unwrap();
        }
    });
    let round = |tx: &mpsc::Sender<Vec<usize>>| {
        let v: Vec<usize> = (0..400)
            .map(|_| alloc(z, Flags::NOWAIT).as_ptr() as usize)
            .collect();
        tx.send(v).unwrap();
        back_rx.recv().unwrap();
    };
    for _ in 0..3 {
        round(&tx);
    }
    let warm = bucket_zone_requests(u, "16 Bucket");
    for _ in 0..50 {
        round(&tx);
    }
    assert_eq!(
        bucket_zone_requests(u, "16 Bucket"),
        warm,
        "cross-thread flow trades empty buckets back"
    );
    drop(tx);
    consumer.join().unwrap();
    z.check_invariants();
    // Drain gives every kept empty bucket back.
    z.reclaim(Reclaim::Drain);
    assert_eq!(z.stats().empty_buckets, 0);
    z.check_invariants();
    z.reclaim(Reclaim::DrainCpu);
    unsafe { u.destroy(z) };
}

static APP_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
static APP_FINIS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn app_fini(_item: std::ptr::NonNull<u8>, _size: usize) {
    let _app = APP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    APP_FINIS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// A `WAITOK` allocation that finds the page source out of memory reclaims
/// in its own thread, which may hold the application's locks: it must not
/// run a zone's fini there (here the fini wants a lock the allocating
/// thread holds). It reclaims the plain zones, which is enough here; the
/// zone with the fini is left to an explicit reclaim.
#[test]
fn waitok_at_source_failure_runs_no_application_callbacks_in_the_waiting_thread() {
    let _w = watchdog("a WAITOK reclaim vs an application fini", 30);
    let src = leak_source();
    let u = uma::Uma::bootstrap(src).unwrap();
    let app = u
        .create_zone(&ZoneArgs::new("wm-app", 128).fini(app_fini))
        .unwrap();
    let plain = u.create_zone(&ZoneArgs::new("wm-plain", 128)).unwrap();
    let b = u.create_zone(&ZoneArgs::new("wm-b", 128)).unwrap();
    fill_and_free(app, 2000);
    fill_and_free(plain, 2000);
    src.set_limit(src.in_use()); // no new pages: b must be fed by reclaims
    {
        let _app = APP_LOCK.lock().unwrap();
        let p = b.alloc(Flags::WAITOK).expect("WAITOK never fails");
        free(b, p);
    }
    assert_eq!(APP_FINIS.load(std::sync::atomic::Ordering::SeqCst), 0);
    u.reclaim(Reclaim::DrainCpu);
    assert!(
        APP_FINIS.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "an explicit reclaim reclaims the zone with the fini"
    );
}

fn count_fini(_item: std::ptr::NonNull<u8>, _size: usize) {}

/// A `WAITOK` allocation at page-source failure gets the items its own
/// zone parked in another thread's cache back, even when the zone has a
/// fini (which keeps it out of the waiter's instance-wide reclaim): they go
/// back to the keg, no slab is freed, no fini runs in the waiting thread.
#[test]
fn waitok_at_source_failure_takes_its_own_zones_parked_items_back() {
    let _w = watchdog("WAITOK vs its own zone's parked items", 30);
    let src = leak_source();
    let u = uma::Uma::bootstrap(src).unwrap();
    let z = u
        .create_zone(&ZoneArgs::new("wm-own", 128).fini(count_fini))
        .unwrap();
    let (parked_tx, parked_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        let v: Vec<_> = (0..16).map(|_| alloc(z, Flags::NOWAIT)).collect();
        for p in v {
            free(z, p);
        }
        parked_tx.send(()).unwrap(); // the items sit in this thread's cache
        go_rx.recv().unwrap();
    });
    parked_rx.recv().unwrap();
    src.set_limit(src.in_use());
    // Take what the keg still has; the next item needs the parked ones.
    let mut held = Vec::new();
    while let Some(p) = z.alloc(Flags::NOWAIT) {
        held.push(p);
        assert!(held.len() < 100_000);
    }
    let p = z.alloc(Flags::WAITOK).expect("WAITOK never fails");
    held.push(p);
    for p in held {
        free(z, p);
    }
    go_tx.send(()).unwrap();
    owner.join().unwrap();
}

/// `write_vmstat` reads the rows under the zone-list lock in chunks and
/// writes them after dropping it: the sink may take the list itself (here
/// `zone_count`, as an allocation in kmem may), and every zone is listed
/// once when the list does not change.
#[test]
fn vmstat_rows_are_written_without_the_zone_list_lock() {
    let _w = watchdog("a vmstat sink that takes the zone list", 30);
    let u = uma::Uma::bootstrap(leak_source()).unwrap();
    let zs: Vec<_> = (0..40)
        .map(|_| u.create_zone(&ZoneArgs::new("vm-chunk", 32)).unwrap())
        .collect();
    struct Sink {
        u: &'static uma::Uma,
        text: String,
        counted: usize,
    }
    impl std::fmt::Write for Sink {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.counted = self.u.zone_count(); // the list lock
            self.text.push_str(s);
            Ok(())
        }
    }
    let mut sink = Sink {
        u,
        text: String::new(),
        counted: 0,
    };
    u.write_vmstat(&mut sink).unwrap();
    assert_eq!(sink.counted, u.zone_count());
    let rows = sink
        .text
        .lines()
        .filter(|l| l.starts_with("vm-chunk"))
        .count();
    assert_eq!(rows, 40, "every zone once");
    assert_eq!(
        sink.text.lines().count(),
        1 + u.zone_count(),
        "header + a row per zone"
    );
    for z in zs {
        // SAFETY: nothing of z is in use.
        assert_eq!(unsafe { u.destroy(z) }, 0);
    }
}
