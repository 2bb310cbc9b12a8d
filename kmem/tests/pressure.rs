//! Forward progress under memory pressure (ARCHITECTURE.md §6, seeds
//! 000-004): the memory limit, reclaim before failure, low-memory
//! handlers, reservations as accounting, fragmentation.
//!
//! The kernel arena and the limit are process-global: every test takes
//! `SERIAL`, sets a limit relative to what is committed when it starts,
//! and removes it when done (`Limit`'s drop). Each test runs under a
//! watchdog that aborts the process if it hangs.

// The real allocator: under loom, vmem and uma use loom locks, which
// only work inside a model.
#![cfg(not(loom))]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kmem::{Flags, Reservation, ReserveError, PAGE_SIZE};

kmem::malloc_define!(M_PRESSURE, "pressure", "pressure tests");

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes the tests; aborts the process if the test outlives `secs`;
/// removes the limit and the soft threshold when dropped.
struct Guard {
    done: Arc<AtomicBool>,
    _serial: MutexGuard<'static, ()>,
}

fn start(what: &'static str, secs: u64) -> Guard {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    kmem::set_limit(0);
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        let t = Instant::now();
        while !d.load(Ordering::Acquire) {
            if t.elapsed() > Duration::from_secs(secs) {
                eprintln!("watchdog: {what} hung for {secs} s");
                std::process::abort();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    Guard {
        done,
        _serial: serial,
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        kmem::set_limit(0);
        kmem::set_soft_threshold_pct(90);
        self.done.store(true, Ordering::Release);
    }
}

fn committed() -> usize {
    kmem::pressure_stats().committed
}

/// A limit `extra` bytes above what is committed now (after a reclaim, so
/// caches left by earlier tests do not count).
fn limit_above(extra: usize) -> usize {
    kmem::reclaim_now();
    let l = committed() + extra;
    kmem::set_limit(l);
    l
}

fn fill_nowait(block: usize) -> Vec<NonNull<u8>> {
    let mut v = Vec::new();
    while let Some(p) = kmem::kmem_malloc(block, Flags::NOWAIT) {
        v.push(p);
        assert!(v.len() < 1_000_000, "the limit does not stop allocations");
    }
    v
}

fn free_all(v: Vec<NonNull<u8>>, block: usize) {
    for p in v {
        // SAFETY: from kmem_malloc(block), unused.
        unsafe { kmem::kmem_free(p, block) };
    }
}

fn check_invariant() {
    let p = kmem::pressure_stats();
    if p.limit != 0 {
        assert!(
            p.committed + p.reserved <= p.limit + 64 * PAGE_SIZE,
            "committed {} + reserved {} over the limit {}",
            p.committed,
            p.reserved,
            p.limit
        );
    }
}

// ---------------------------------------------------------------- the limit

#[test]
fn limit_api_sets_and_caps_the_kernel_arena() {
    let _g = start("limit api", 30);
    assert_eq!(kmem::limit(), 0);
    let l = limit_above(8 << 20);
    assert_eq!(kmem::limit(), l.next_multiple_of(PAGE_SIZE));
    let a = kmem::kernel_arena().unwrap().stats();
    // Twice the limit (room to fragment) plus slack: see kmem's pressure doc.
    assert!(a.limit >= 2 * l && a.limit <= 2 * l + 3 * kmem::IMPORT_QUANTUM);
    assert_eq!(kmem::set_limit(0), l.next_multiple_of(PAGE_SIZE));
    assert_eq!(kmem::kernel_arena().unwrap().stats().limit, 0);
}

#[test]
fn limit_nowait_fails_at_once_and_waitok_sleeps_until_a_free() {
    let _g = start("limit waitok", 60);
    const B: usize = 64 * 1024;
    limit_above(2 << 20);
    let mut v = fill_nowait(B);
    assert!(!v.is_empty());
    check_invariant();
    // NOWAIT at the limit fails at once (a reclaim pass, no sleep).
    let t = Instant::now();
    assert!(kmem::kmem_malloc(B, Flags::NOWAIT).is_none());
    assert!(kmem::malloc(B, &M_PRESSURE, Flags::NOWAIT).is_none());
    assert!(t.elapsed() < Duration::from_secs(5));
    // WAITOK sleeps until another thread frees.
    let got = Arc::new(AtomicBool::new(false));
    let g2 = got.clone();
    let waiter = std::thread::spawn(move || {
        let p = kmem::kmem_malloc(B, Flags::WAITOK).expect("WAITOK never returns null");
        g2.store(true, Ordering::Release);
        p.as_ptr() as usize
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !got.load(Ordering::Acquire),
        "WAITOK did not sleep at the limit"
    );
    let waits = kmem::pressure_stats().waits;
    assert!(waits > 0);
    let p = v.pop().unwrap();
    // SAFETY: from kmem_malloc(B).
    unsafe { kmem::kmem_free(p, B) };
    let addr = waiter.join().unwrap();
    assert!(got.load(Ordering::Acquire));
    v.push(NonNull::new(addr as *mut u8).unwrap());
    free_all(v, B);
}

#[test]
fn limit_malloc_waitok_small_and_large_never_return_null() {
    let _g = start("limit malloc waitok", 60);
    const B: usize = 64 * 1024;
    limit_above(2 << 20);
    let v: Vec<usize> = fill_nowait(B).iter().map(|p| p.as_ptr() as usize).collect();
    let freer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        free_all(
            v.into_iter()
                .filter_map(|a| NonNull::new(a as *mut u8))
                .collect(),
            B,
        );
    });
    // Large (through the quantum cache) and small (a new slab) with WAITOK.
    let big = kmem::malloc(40 * 1024, &M_PRESSURE, Flags::WAITOK).expect("WAITOK large");
    let mut small = Vec::new();
    // 512 KiB of items: they fit once the blocks are freed.
    for _ in 0..512 {
        small.push(kmem::malloc(1024, &M_PRESSURE, Flags::WAITOK).expect("WAITOK small"));
    }
    freer.join().unwrap();
    // SAFETY: live allocations of M_PRESSURE.
    unsafe {
        kmem::free(big.as_ptr(), &M_PRESSURE);
        for p in small {
            kmem::free(p.as_ptr(), &M_PRESSURE);
        }
    }
    // A request larger than the limit can never be met: None, not a hang.
    assert!(kmem::kmem_malloc(kmem::limit() + PAGE_SIZE, Flags::WAITOK).is_none());
}

#[test]
fn limit_soft_threshold_triggers_a_trim() {
    let _g = start("soft threshold", 30);
    // 1% of the limit must be below what is committed: after the reclaim
    // `limit_above` runs, that can be as little as a few pages (the class
    // zones are built on first use: a test process that used few has
    // little to keep), so 64 KiB stay committed through the test.
    let held = kmem::kmem_malloc(64 << 10, Flags::NOWAIT).expect("64 KiB");
    limit_above(1 << 20);
    kmem::set_soft_threshold_pct(1);
    std::thread::sleep(Duration::from_millis(150)); // the soft rate limit
    let before = kmem::pressure_stats().soft_passes;
    let p = kmem::kmem_malloc(PAGE_SIZE, Flags::NOWAIT).unwrap();
    assert!(kmem::pressure_stats().soft_passes > before);
    // SAFETY: from kmem_malloc(PAGE_SIZE) and kmem_malloc(64 KiB).
    unsafe {
        kmem::kmem_free(p, PAGE_SIZE);
        kmem::kmem_free(held, 64 << 10);
    }
}

// ---------------------------------------------------------------- reclaim

#[test]
fn reclaim_items_parked_in_other_threads_caches_at_the_limit() {
    let _g = start("parked caches", 60);
    const T: usize = 8;
    let allocated = Arc::new(Barrier::new(T));
    let ready = Arc::new(Barrier::new(T + 1));
    let finish = Arc::new(Barrier::new(T + 1));
    let mut hs = Vec::new();
    for _ in 0..T {
        let (a, r, f) = (allocated.clone(), ready.clone(), finish.clone());
        hs.push(std::thread::spawn(move || {
            // Fill this thread's caches: allocate (all threads at once, so
            // none reuses another's items), then free everything.
            let v: Vec<_> = (0..4000)
                .map(|_| kmem::malloc(256, &M_PRESSURE, Flags::NOWAIT).unwrap())
                .collect();
            a.wait();
            for p in v {
                // SAFETY: live allocations of M_PRESSURE.
                unsafe { kmem::free(p.as_ptr(), &M_PRESSURE) };
            }
            r.wait(); // parked: the items sit in this live thread's caches
            f.wait();
        }));
    }
    ready.wait();
    // No room at all beyond what is committed, most of it parked items.
    let l = committed();
    kmem::set_limit(l);
    let passes = kmem::pressure_stats().reclaim_passes;
    let big = 2 << 20;
    assert!(l > big, "committed {l}: {:?}", kmem::pressure_stats());
    let p = kmem::kmem_malloc(big, Flags::NOWAIT).unwrap_or_else(|| {
        panic!(
            "reclaiming parked items makes room: {:?} {:?}",
            kmem::pressure_stats(),
            kmem::kernel_arena().unwrap().stats()
        )
    });
    assert!(kmem::pressure_stats().reclaim_passes > passes);
    check_invariant();
    // SAFETY: from kmem_malloc(big).
    unsafe { kmem::kmem_free(p, big) };
    finish.wait();
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn reclaim_before_fail_frees_quantum_cache_and_bucket_cache() {
    let _g = start("qcache and buckets", 60);
    let arena = kmem::kernel_arena().unwrap();
    kmem::reclaim_now();
    // Quantum-cache ranges (8 KiB large blocks) and bucket-cache items.
    let v: Vec<_> = (0..500)
        .map(|_| kmem::malloc(8192, &M_PRESSURE, Flags::NOWAIT).unwrap())
        .chain((0..5000).map(|_| kmem::malloc(512, &M_PRESSURE, Flags::NOWAIT).unwrap()))
        .collect();
    for p in v {
        // SAFETY: live allocations of M_PRESSURE.
        unsafe { kmem::free(p.as_ptr(), &M_PRESSURE) };
    }
    let inuse = arena.stats().inuse;
    let resident = kmem::os_stats().resident;
    // Full: the next allocation fails unless the caches are given back.
    kmem::set_limit(committed());
    let passes = kmem::pressure_stats().reclaim_passes;
    std::thread::sleep(Duration::from_millis(2)); // the pass rate limit
    let _ = kmem::kmem_malloc(PAGE_SIZE, Flags::NOWAIT);
    assert!(kmem::pressure_stats().reclaim_passes > passes);
    let after = arena.stats().inuse;
    assert!(
        after + 4 * 1024 * 1024 / 2 <= inuse,
        "arena in use {inuse} -> {after}: caches not given back"
    );
    assert!(kmem::os_stats().resident <= resident);
}

#[test]
fn reclaim_tiny_zone_terminates_with_bounded_work() {
    let _g = start("tiny zone", 60);
    let uma = kmem::uma().unwrap();
    let z = uma
        .create_zone(&uma::ZoneArgs::new("pressure tiny", 64))
        .unwrap();
    z.set_max(2);
    let a = z.alloc(Flags::NOWAIT).unwrap();
    let b = z.alloc(Flags::NOWAIT).unwrap();
    // At its limit, NOWAIT fails; reclaim cannot balance it; each pass
    // visits every zone once and returns.
    limit_above(0);
    let zones = uma.zone_count() as u64;
    let s0 = kmem::pressure_stats();
    const N: u64 = 200;
    for _ in 0..N {
        assert!(z.alloc(Flags::NOWAIT).is_none());
        kmem::reclaim_now();
    }
    let s1 = kmem::pressure_stats();
    let passes = s1.reclaim_passes - s0.reclaim_passes;
    assert!(
        (N..=2 * N).contains(&passes),
        "{passes} passes for {N} calls"
    );
    assert!(s1.zones_visited - s0.zones_visited <= passes * (zones + 1));
    // SAFETY: items of z.
    unsafe {
        z.free(a);
        z.free(b);
    }
}

/// The application's lock, held around its allocations and taken by its
/// zone's fini.
static APP_LOCK: Mutex<()> = Mutex::new(());
static APP_FINIS: AtomicUsize = AtomicUsize::new(0);

fn app_fini(_item: NonNull<u8>, _size: usize) {
    let _app = APP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    APP_FINIS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn reclaim_at_the_limit_runs_no_application_callbacks_in_the_failing_thread() {
    let _g = start("an application fini vs the failing thread's reclaim", 60);
    let uma = kmem::uma().unwrap();
    let z = uma
        .create_zone(&uma::ZoneArgs::new("pressure app fini", 256).fini(app_fini))
        .unwrap();
    let v: Vec<_> = (0..2000).map(|_| z.alloc(Flags::NOWAIT).unwrap()).collect();
    for p in v {
        // SAFETY: items of z, freed once.
        unsafe { z.free(p) };
    }
    // This thread holds the application's lock and allocates at the limit:
    // the reclaim pass it runs must not call the zone's fini here (it would
    // wait for the lock this thread holds; FreeBSD runs such reclaims in
    // its pagedaemon and reclaim threads, never in the failing thread).
    {
        let _app = APP_LOCK.lock().unwrap();
        limit_above(0);
        std::thread::sleep(Duration::from_millis(2)); // the pass rate limit
        let passes = kmem::pressure_stats().reclaim_passes;
        let p = kmem::kmem_malloc(64 * PAGE_SIZE, Flags::NOWAIT);
        assert!(
            kmem::pressure_stats().reclaim_passes > passes,
            "no pass ran"
        );
        if let Some(p) = p {
            // SAFETY: from kmem_malloc(64 pages), unused.
            unsafe { kmem::kmem_free(p, 64 * PAGE_SIZE) };
        }
        kmem::set_limit(0);
    }
    // An explicit reclaim, from a thread that holds no application lock,
    // does reclaim the zone (its fini runs).
    let finis = APP_FINIS.load(Ordering::SeqCst);
    kmem::reclaim(uma::Reclaim::DrainCpu);
    assert!(
        APP_FINIS.load(Ordering::SeqCst) > finis,
        "an explicit reclaim gives the application zone's slabs back"
    );
    // SAFETY: nothing of z is in use.
    assert_eq!(unsafe { uma.destroy(z) }, 0);
}

#[test]
fn reclaim_at_the_limit_inside_a_zone_walk_does_not_deadlock() {
    let _g = start("a reclaim pass inside a zone-list walk", 60);
    let uma = kmem::uma().unwrap();
    // Something committed, so that the limit is not 0 (none).
    let ballast = kmem::kmem_malloc(BALLAST_SIZE, Flags::NOWAIT).unwrap();
    limit_above(0);
    std::thread::sleep(Duration::from_millis(2)); // the pass rate limit
    let passes = kmem::pressure_stats().reclaim_passes;
    // The walk holds the zone list while it calls us; an allocation at the
    // limit runs a reclaim pass, which must not wait for the list.
    let mut allocated = false;
    uma.for_each_zone(|_| {
        if !allocated {
            allocated = true;
            if let Some(p) = kmem::kmem_malloc(64 * PAGE_SIZE, Flags::NOWAIT) {
                // SAFETY: from kmem_malloc(64 pages), unused.
                unsafe { kmem::kmem_free(p, 64 * PAGE_SIZE) };
            }
        }
    });
    assert!(allocated);
    assert!(
        kmem::pressure_stats().reclaim_passes > passes,
        "no pass ran"
    );
    kmem::set_limit(0);
    // SAFETY: from kmem_malloc(BALLAST_SIZE), unused.
    unsafe { kmem::kmem_free(ballast, BALLAST_SIZE) };
}

// ---------------------------------------------------------------- lowmem

static BALLAST: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static HANDLER_CALLS: AtomicUsize = AtomicUsize::new(0);
const BALLAST_SIZE: usize = 1 << 20;

fn free_ballast(level: kmem::LowMemLevel) {
    HANDLER_CALLS.fetch_add(1, Ordering::SeqCst);
    if level == kmem::LowMemLevel::Hard {
        let p = BALLAST.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if let Some(p) = NonNull::new(p) {
            // SAFETY: from kmem_malloc(BALLAST_SIZE), owned by the table.
            unsafe { kmem::kmem_free(p, BALLAST_SIZE) };
        }
    }
}

#[test]
fn lowmem_handlers_run_before_an_allocation_fails() {
    let _g = start("lowmem", 30);
    let p = kmem::kmem_malloc(BALLAST_SIZE, Flags::NOWAIT).unwrap();
    BALLAST.store(p.as_ptr(), Ordering::Release);
    assert!(kmem::register_lowmem(free_ballast));
    kmem::set_limit(committed());
    std::thread::sleep(Duration::from_millis(2));
    let before = HANDLER_CALLS.load(Ordering::SeqCst);
    let q = kmem::kmem_malloc(BALLAST_SIZE / 2, Flags::NOWAIT)
        .expect("the handler freed the ballast before the failure");
    assert!(HANDLER_CALLS.load(Ordering::SeqCst) > before);
    assert!(BALLAST.load(Ordering::Acquire).is_null());
    assert!(kmem::unregister_lowmem(free_ballast));
    assert!(!kmem::unregister_lowmem(free_ballast));
    // SAFETY: from kmem_malloc(BALLAST_SIZE / 2).
    unsafe { kmem::kmem_free(q, BALLAST_SIZE / 2) };
}

fn nop_handler(_: kmem::LowMemLevel) {}

#[test]
fn lowmem_table_is_bounded_and_unregisters() {
    let _g = start("lowmem table", 30);
    let mut n = 0;
    while kmem::register_lowmem(nop_handler) {
        n += 1;
        assert!(n <= kmem::LOWMEM_SLOTS);
    }
    assert!(n >= kmem::LOWMEM_SLOTS - 1);
    for _ in 0..n {
        assert!(kmem::unregister_lowmem(nop_handler));
    }
    assert!(!kmem::unregister_lowmem(nop_handler));
}

// ---------------------------------------------------------------- reservations

#[test]
fn reserv_refused_with_an_error_never_a_deadlock() {
    let _g = start("reserve refused", 30);
    let l = limit_above(4 << 20);
    assert_eq!(
        Reservation::new(l * 6 / 10, Flags::NOWAIT).unwrap_err(),
        ReserveError::TooLarge
    );
    let v = fill_nowait(64 * 1024);
    assert_eq!(
        Reservation::new(1 << 20, Flags::NOWAIT).unwrap_err(),
        ReserveError::NoMemory
    );
    let t = Instant::now();
    assert_eq!(
        Reservation::with_timeout(1 << 20, Duration::from_millis(50)).unwrap_err(),
        ReserveError::TimedOut
    );
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(kmem::pressure_stats().reserve_refused >= 3);
    free_all(v, 64 * 1024);
    assert!(Reservation::new(1 << 20, Flags::NOWAIT).is_ok());
}

#[test]
fn reserv_ordinary_allocations_do_not_eat_reserved_memory() {
    let _g = start("reserve vs ordinary", 60);
    // malloc(9) asks for 64 KiB (with `invariants`, the type tag's bytes
    // included: 64 KiB + 8 would round up to the 80 KiB large class).
    const B: usize = 64 * 1024 - kmem::MALLOC_TAG_BYTES;
    limit_above(4 << 20);
    let r = Reservation::for_allocs(B, 24, Flags::NOWAIT).unwrap();
    assert_eq!(r.remaining(), 24 * Reservation::cost(B).unwrap());
    let reserved = kmem::pressure_stats().reserved;
    assert!(reserved >= 24 * B);
    // Ordinary allocations stop short of the reserved room.
    let v = fill_nowait(B);
    check_invariant();
    // The reservation's allocations all succeed.
    let mine: Vec<_> = (0..24)
        .map(|i| {
            r.malloc(B, &M_PRESSURE).unwrap_or_else(|| {
                panic!(
                    "reserved alloc {i}: {:?} {:?}",
                    kmem::pressure_stats(),
                    kmem::kernel_arena().unwrap().stats()
                )
            })
        })
        .collect();
    assert_eq!(r.remaining(), 0);
    for p in mine {
        // SAFETY: live allocations of M_PRESSURE.
        unsafe { kmem::free(p.as_ptr(), &M_PRESSURE) };
    }
    free_all(v, B);
}

#[test]
fn reserv_drop_returns_the_unused_part_and_zone_reservations_work() {
    let _g = start("reserve drop", 30);
    limit_above(8 << 20);
    let base = kmem::pressure_stats().reserved;
    let z = kmem::class_zone(5).unwrap();
    let r = Reservation::for_zone(z, 10, Flags::WAITOK).unwrap();
    let cost = Reservation::zone_cost(z).unwrap();
    assert_eq!(kmem::pressure_stats().reserved, base + 10 * cost);
    let a = r.zone_alloc(z).unwrap();
    assert_eq!(r.remaining(), 9 * cost);
    assert_eq!(kmem::pressure_stats().reserved, base + 9 * cost);
    drop(r);
    assert_eq!(kmem::pressure_stats().reserved, base);
    // SAFETY: an item of z.
    unsafe { z.free(a) };
    // Without a limit, reservations are granted (and still accounted).
    kmem::set_limit(0);
    let r = Reservation::new(1 << 30, Flags::NOWAIT).unwrap();
    assert!(kmem::pressure_stats().reserved >= base + (1 << 30));
    drop(r);
    assert_eq!(kmem::pressure_stats().reserved, base);
}

#[test]
fn reserv_pressure_many_threads_granted_or_refused_no_hang() {
    let _g = start("reserve threads", 120);
    limit_above(12 << 20);
    const T: usize = 48;
    let stop = Arc::new(AtomicBool::new(false));
    let granted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let broken = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    for t in 0..T {
        let (granted, refused, broken) = (granted.clone(), refused.clone(), broken.clone());
        hs.push(std::thread::spawn(move || {
            let sizes = [64usize, 1000, 5000, 20_000, 100_000];
            let mut x = t as u64 * 0x9e37_79b9 + 1;
            for round in 0..30 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let size = sizes[(x % sizes.len() as u64) as usize];
                let n = 1 + (x >> 8) as usize % 6;
                let r = if round % 2 == 0 {
                    Reservation::for_allocs(size, n, Flags::NOWAIT)
                } else {
                    let cost = Reservation::cost(size).unwrap();
                    Reservation::with_timeout(cost * n, Duration::from_millis(20))
                };
                match r {
                    Ok(r) => {
                        granted.fetch_add(1, Ordering::Relaxed);
                        let v: Vec<_> = (0..n).map(|_| r.malloc(size, &M_PRESSURE)).collect();
                        for p in v {
                            match p {
                                // SAFETY: live allocations of M_PRESSURE.
                                Some(p) => unsafe {
                                    p.as_ptr().write_bytes(0xa5, size.min(64));
                                    kmem::free(p.as_ptr(), &M_PRESSURE)
                                },
                                None => {
                                    broken.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Err(ReserveError::NoMemory | ReserveError::TimedOut) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        }));
    }
    // Ordinary allocations compete for the rest.
    let hogs: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut v = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    if let Some(p) = kmem::malloc(32 * 1024, &M_PRESSURE, Flags::NOWAIT) {
                        v.push(p);
                    }
                    if v.len() > 40 {
                        for p in v.drain(..20) {
                            // SAFETY: live allocations of M_PRESSURE.
                            unsafe { kmem::free(p.as_ptr(), &M_PRESSURE) };
                        }
                    }
                }
                for p in v {
                    // SAFETY: live allocations of M_PRESSURE.
                    unsafe { kmem::free(p.as_ptr(), &M_PRESSURE) };
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    stop.store(true, Ordering::Release);
    for h in hogs {
        h.join().unwrap();
    }
    let g = granted.load(Ordering::Relaxed);
    let r = refused.load(Ordering::Relaxed);
    assert_eq!(g + r, T * 30);
    assert!(g > 0);
    assert_eq!(
        broken.load(Ordering::Relaxed),
        0,
        "a granted reservation's allocation failed"
    );
    assert_eq!(kmem::pressure_stats().reserved, 0);
}

// ---------------------------------------------------------------- fragmentation

#[test]
fn fragment_kernel_arena_then_large_blocks_succeed_or_fail_cleanly() {
    let _g = start("fragmentation", 60);
    let arena = kmem::kernel_arena().unwrap();
    // Interleaved pages, every other freed: holes of one page.
    let v: Vec<_> = (0..4000)
        .map(|_| kmem::kmem_malloc(PAGE_SIZE, Flags::NOWAIT).unwrap())
        .collect();
    let mut kept = Vec::new();
    for (i, p) in v.into_iter().enumerate() {
        if i % 2 == 0 {
            // SAFETY: from kmem_malloc(PAGE_SIZE).
            unsafe { kmem::kmem_free(p, PAGE_SIZE) };
        } else {
            // SAFETY: a live page of ours.
            unsafe { p.as_ptr().write_bytes(i as u8, PAGE_SIZE) };
            kept.push((i, p));
        }
    }
    let s = arena.stats();
    assert!(s.free_segments > 100, "{s:?}");
    // Without a limit: large blocks come from an import.
    let big = kmem::kmem_malloc(4 << 20, Flags::NOWAIT).expect("import");
    // SAFETY: from kmem_malloc(4 MiB).
    unsafe { kmem::kmem_free(big, 4 << 20) };
    // At a limit with room only in holes: a clean failure, never a hang.
    limit_above(0);
    let t = Instant::now();
    assert!(kmem::kmem_malloc(1 << 20, Flags::NOWAIT).is_none());
    assert!(kmem::malloc(1 << 20, &M_PRESSURE, Flags::NOWAIT).is_none());
    assert!(t.elapsed() < Duration::from_secs(10));
    arena.check_invariants().unwrap();
    for (i, p) in kept {
        // SAFETY: a live page of ours.
        let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), PAGE_SIZE) };
        assert!(s.iter().all(|&b| b == i as u8), "page {i} corrupted");
        // SAFETY: from kmem_malloc(PAGE_SIZE).
        unsafe { kmem::kmem_free(p, PAGE_SIZE) };
    }
}

#[test]
fn fragment_stats_show_largest_free_by_order_and_slab_efficiency() {
    let _g = start("fragment stats", 30);
    limit_above(4 << 20);
    let mut s = String::new();
    kmem::write_pressure_stats(&mut s).unwrap();
    assert!(s.contains("limit"), "{s}");
    assert!(s.contains("largest free"), "{s}");
    assert!(s.contains("by order"), "{s}");
    assert!(s.contains("eff%"), "{s}");
    assert!(s.contains("vmem btag"), "{s}");
    let mut all = String::new();
    kmem::write_stats(&mut all).unwrap();
    assert!(all.contains("pressure:"), "{all}");
}

// ---------------------------------------------------------------- seed 002 at the limit

#[test]
fn limit_seed002_drains_racing_allocations_keep_the_btag_reserve() {
    let _g = start("seed 002 at the limit", 90);
    let btag = kmem::btag_zone().unwrap();
    let reserve = kmem::stats().unwrap().btag_reserve;
    limit_above(6 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let mut hs = Vec::new();
    for t in 0..6 {
        let stop = stop.clone();
        hs.push(std::thread::spawn(move || {
            let mut v: Vec<(NonNull<u8>, usize)> = Vec::new();
            let mut i = t;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                let size = PAGE_SIZE * (1 + i % 37);
                if let Some(p) = kmem::kmem_malloc(size, Flags::NOWAIT) {
                    v.push((p, size));
                }
                if v.len() > 64 || (i % 7 == 0 && !v.is_empty()) {
                    let (p, s) = v.swap_remove(i % v.len());
                    // SAFETY: from kmem_malloc(s).
                    unsafe { kmem::kmem_free(p, s) };
                }
            }
            for (p, s) in v {
                // SAFETY: from kmem_malloc(s).
                unsafe { kmem::kmem_free(p, s) };
            }
        }));
    }
    {
        let stop = stop.clone();
        hs.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                kmem::reclaim(uma::Reclaim::DrainCpu);
                kmem::reclaim_now();
                std::thread::yield_now();
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Release);
    for h in hs {
        h.join().unwrap();
    }
    kmem::reclaim_now();
    let free = btag.keg_info().unwrap().free_items;
    assert!(free >= reserve, "btag free {free} < reserve {reserve}");
    kmem::kernel_arena().unwrap().check_invariants().unwrap();
}

// ---------------------------------------------------------------- worker

#[test]
fn reclaim_worker_starts_trims_and_stops() {
    let _g = start("worker", 30);
    assert!(kmem::start_reclaim_worker(Duration::from_millis(5)));
    assert!(!kmem::start_reclaim_worker(Duration::from_millis(5)));
    assert!(kmem::reclaim_worker_running());
    std::thread::sleep(Duration::from_millis(50));
    kmem::stop_reclaim_worker();
    let t = Instant::now();
    while kmem::reclaim_worker_running() {
        assert!(t.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(5));
    }
}
