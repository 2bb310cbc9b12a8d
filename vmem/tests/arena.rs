//! Behaviour of one arena: policies, constraints, spans, import/release,
//! limits, sleeping, the quantum cache, teardown, and every bad input.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use vmem::{
    Arena, Constraints, Error, Flags, QuantumCache, SegmentKind, SimpleQuantumCache, Source,
};

const NOWAIT: Flags = Flags::NOWAIT;
const WAITOK: Flags = Flags::WAITOK;

mod common;
use common::check;

fn arena(quantum: usize, base: usize, size: usize) -> Arena<'static> {
    common::arena("test", quantum, base, size)
}

/// A source handing out consecutive ranges from a large space, counting
/// imports and releases.
struct Counter {
    next: AtomicUsize,
    imported: AtomicUsize,
    released: AtomicUsize,
    live: AtomicUsize,
    refuse: std::sync::atomic::AtomicBool,
}

impl Counter {
    const fn new(base: usize) -> Self {
        Counter {
            next: AtomicUsize::new(base),
            imported: AtomicUsize::new(0),
            released: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            refuse: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Source for Counter {
    fn import(&self, size: usize, _flags: Flags) -> Option<usize> {
        if self.refuse.load(Ordering::SeqCst) {
            return None;
        }
        self.imported.fetch_add(1, Ordering::SeqCst);
        self.live.fetch_add(size, Ordering::SeqCst);
        // Leave a gap so spans never touch.
        Some(self.next.fetch_add(size + 0x10_0000, Ordering::SeqCst))
    }

    fn release(&self, _addr: usize, size: usize) {
        self.released.fetch_add(1, Ordering::SeqCst);
        self.live.fetch_sub(size, Ordering::SeqCst);
    }
}

#[test]
fn instant_fit_allocates_and_coalesces_back() {
    let a = arena(16, 0x1000, 0x1000);
    let x = a.alloc(0x10, NOWAIT).unwrap();
    let y = a.alloc(0x30, NOWAIT).unwrap();
    let z = a.alloc(0x25, NOWAIT).unwrap(); // rounded to 0x30
    assert_eq!(a.size_allocated(), 0x70);
    check(&a);
    for (addr, size) in [(y, 0x30), (x, 0x10), (z, 0x25)] {
        a.free(addr, size).unwrap();
        check(&a);
    }
    assert_eq!(a.size_allocated(), 0);
    assert_eq!(a.largest_free_segment(), 0x1000, "everything coalesced");
    let mut free = 0;
    a.for_each_segment(|s| free += (s.kind == SegmentKind::Free) as usize);
    assert_eq!(free, 1);
}

#[test]
fn best_fit_takes_the_smallest_sufficient_hole() {
    let a = arena(1, 0, 1000);
    // Holes of 50 at 0 and 20 at 100, rest busy up to 200, then free.
    let h1 = a.xalloc(50, &Constraints::new(), NOWAIT).unwrap();
    let _b1 = a.xalloc(50, &Constraints::new(), NOWAIT).unwrap();
    let h2 = a.xalloc(20, &Constraints::new(), NOWAIT).unwrap();
    let _b2 = a.xalloc(80, &Constraints::new(), NOWAIT).unwrap();
    a.xfree(h1, 50).unwrap();
    a.xfree(h2, 20).unwrap();
    assert_eq!(
        a.xalloc(15, &Constraints::new(), NOWAIT | Flags::BESTFIT)
            .unwrap(),
        h2
    );
    check(&a);
}

#[test]
fn instant_fit_skips_lists_that_may_be_too_small() {
    let a = arena(1, 0, 1000);
    let h1 = a.xalloc(35, &Constraints::new(), NOWAIT).unwrap(); // 35: list [32,35]
    let _b = a.xalloc(10, &Constraints::new(), NOWAIT).unwrap();
    a.xfree(h1, 35).unwrap();
    // 33 quanta: list [32,35] might hold a 32, so instant fit starts above
    // it and takes the big remainder; best fit finds the 35 hole.
    let i = a.alloc(33, NOWAIT | Flags::INSTANTFIT).unwrap();
    assert_eq!(i, 45);
    let b = a.alloc(33, NOWAIT | Flags::BESTFIT).unwrap();
    assert_eq!(b, h1);
    check(&a);
}

#[test]
fn next_fit_cycles_like_a_pid_allocator() {
    let a = arena(1, 1, 5);
    let nf = NOWAIT | Flags::NEXTFIT;
    let got: Vec<usize> = (0..3).map(|_| a.alloc(1, nf).unwrap()).collect();
    assert_eq!(got, [1, 2, 3]);
    a.free(2, 1).unwrap();
    a.free(1, 1).unwrap();
    assert_eq!(a.alloc(1, nf).unwrap(), 4, "next fit does not go back");
    assert_eq!(a.alloc(1, nf).unwrap(), 5);
    assert_eq!(a.alloc(1, nf).unwrap(), 1, "then wraps around");
    assert_eq!(a.alloc(1, nf).unwrap(), 2);
    assert!(matches!(a.alloc(1, nf), Err(Error::NoMemory { .. })));
    check(&a);
}

#[test]
fn next_fit_honours_alignment_and_merges_around_the_cursor() {
    let a = arena(1, 0, 256);
    let nf = NOWAIT | Flags::NEXTFIT;
    let x = a.xalloc(8, &Constraints::new().align(16), nf).unwrap();
    let y = a.xalloc(8, &Constraints::new().align(16), nf).unwrap();
    assert_eq!((x, y), (0, 16));
    a.xfree(y, 8).unwrap();
    a.xfree(x, 8).unwrap();
    // The cursor sits after y's old place, splitting free space.
    assert!(a.cursor_split().is_some());
    check(&a);
    // A request larger than either side is met by merging around it.
    let big = a.xalloc(256, &Constraints::new(), nf).unwrap();
    assert_eq!(big, 0);
    check(&a);
}

#[test]
fn constrained_xalloc_meets_every_constraint() {
    let a = arena(16, 0x10000, 0x10000);
    let c = Constraints::new()
        .align(0x100)
        .phase(0x30)
        .nocross(0x400)
        .range(0x12345 & !0xf, 0x1ffff);
    for _ in 0..20 {
        let p = a.xalloc(0x80, &c, NOWAIT).unwrap();
        assert_eq!(p % 0x100, 0x30);
        assert_eq!(p / 0x400, (p + 0x7f) / 0x400);
        assert!(p >= 0x12340 && p + 0x7f <= 0x1ffff);
    }
    check(&a);
}

#[test]
fn address_zero_is_allocatable() {
    let a = arena(1, 0, 10);
    assert_eq!(a.alloc(1, NOWAIT).unwrap(), 0);
    a.free(0, 1).unwrap();
    // Even through a quantum cache, `alloc` falls back to xalloc for 0.
    let cache = SimpleQuantumCache::new();
    let b = Arena::builder("zero")
        .span(0, 1)
        .qcache(4, &cache)
        .build()
        .unwrap();
    assert_eq!(
        b.alloc(1, NOWAIT).unwrap(),
        0,
        "the cache never holds 0; xalloc may return it"
    );
    b.free(0, 1).unwrap();
    check(&b);
}

#[test]
fn static_spans_coalesce_when_contiguous() {
    let a = Arena::builder("spans").quantum(16).build().unwrap();
    a.add(0x1000, 0x100, NOWAIT).unwrap();
    a.add(0x1100, 0x100, NOWAIT).unwrap();
    a.add(0x4000, 0x100, NOWAIT).unwrap();
    assert_eq!(a.size_total(), 0x300);
    assert_eq!(a.largest_free_segment(), 0x200);
    check(&a);
}

#[test]
fn imports_from_a_source_and_releases_whole_spans() {
    let src = Counter::new(0x100_0000);
    let a = Arena::builder("child")
        .quantum(16)
        .source(&src, 0x1000)
        .build()
        .unwrap();
    let x = a.alloc(0x100, NOWAIT).unwrap();
    assert_eq!(src.imported.load(Ordering::SeqCst), 1);
    assert_eq!(
        a.size_total(),
        0x1000,
        "import rounded to the import quantum"
    );
    let y = a.alloc(0x100, NOWAIT).unwrap();
    assert_eq!(
        src.imported.load(Ordering::SeqCst),
        1,
        "second fits the first span"
    );
    a.free(x, 0x100).unwrap();
    assert_eq!(
        src.released.load(Ordering::SeqCst),
        0,
        "span still partly busy"
    );
    a.free(y, 0x100).unwrap();
    assert_eq!(
        src.released.load(Ordering::SeqCst),
        1,
        "wholly free span released"
    );
    assert_eq!(a.size_total(), 0);
    assert_eq!(src.live.load(Ordering::SeqCst), 0);
    check(&a);
}

#[test]
fn static_spans_are_never_released() {
    let src = Counter::new(0x100_0000);
    let a = Arena::builder("mixed")
        .quantum(16)
        .span(0x1000, 0x100)
        .source(&src, 0)
        .build()
        .unwrap();
    let x = a.alloc(0x100, NOWAIT).unwrap();
    a.free(x, 0x100).unwrap();
    assert_eq!(a.size_total(), 0x100);
    assert_eq!(src.released.load(Ordering::SeqCst), 0);
    check(&a);
}

#[test]
fn aligned_import_still_fits() {
    let src = Counter::new(0x100_0010);
    let a = Arena::builder("aligned")
        .quantum(16)
        .source(&src, 0)
        .build()
        .unwrap();
    let p = a
        .xalloc(0x100, &Constraints::new().align(0x1000), NOWAIT)
        .unwrap();
    assert_eq!(p % 0x1000, 0);
    assert_eq!(
        src.imported.load(Ordering::SeqCst),
        1,
        "one import suffices"
    );
    a.xfree(p, 0x100).unwrap();
    check(&a);
}

#[test]
fn arena_imports_from_parent_arena() {
    let parent = arena(4096, 0x10_0000, 0x10_0000);
    let child = Arena::builder("child")
        .quantum(16)
        .source(&parent, 4096)
        .build()
        .unwrap();
    let ps: Vec<usize> = (0..100)
        .map(|_| child.alloc(100, NOWAIT).unwrap())
        .collect();
    assert!(parent.size_allocated() >= 100 * 112);
    for p in ps {
        child.free(p, 100).unwrap();
    }
    assert_eq!(
        parent.size_allocated(),
        0,
        "child released everything to the parent"
    );
    check(&parent);
    check(&child);
}

#[test]
fn limit_caps_imports() {
    let src = Counter::new(0x100_0000);
    let a = Arena::builder("limited")
        .quantum(16)
        .source(&src, 0x1000)
        .limit(0x2000)
        .build()
        .unwrap();
    let x = a.alloc(0x1000, NOWAIT).unwrap();
    let y = a.alloc(0x1000, NOWAIT).unwrap();
    assert!(matches!(a.alloc(0x10, NOWAIT), Err(Error::NoMemory { .. })));
    a.set_limit(0);
    let z = a.alloc(0x10, NOWAIT).unwrap();
    for (p, s) in [(x, 0x1000), (y, 0x1000), (z, 0x10)] {
        a.free(p, s).unwrap();
    }
    check(&a);
}

#[test]
fn nowait_fails_cleanly_when_full() {
    let a = arena(1, 0, 10);
    let x = a.alloc(10, NOWAIT).unwrap();
    let err = a.alloc(1, NOWAIT).unwrap_err();
    assert!(matches!(err, Error::NoMemory { .. }));
    assert!(err.to_string().contains("'test'"));
    a.free(x, 10).unwrap();
    check(&a);
}

#[test]
fn waitok_sleeps_until_another_thread_frees() {
    let a = arena(1, 0, 10);
    let x = a.alloc(10, NOWAIT).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| a.alloc(4, WAITOK).unwrap());
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "WAITOK must sleep while full");
        a.free(x, 10).unwrap();
        let got = waiter.join().unwrap();
        assert!(got < 10);
    });
    check(&a);
}

#[test]
fn waitok_retries_import_when_source_recovers() {
    let src = Counter::new(0x100_0000);
    src.refuse.store(true, Ordering::SeqCst);
    let a = Arena::builder("retry")
        .quantum(16)
        .source(&src, 0)
        .build()
        .unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| a.alloc(0x100, WAITOK).unwrap());
        std::thread::sleep(Duration::from_millis(120));
        assert!(!waiter.is_finished());
        src.refuse.store(false, Ordering::SeqCst);
        let p = waiter.join().unwrap();
        a.free(p, 0x100).unwrap();
    });
    check(&a);
}

#[test]
fn reclaim_callback_runs_before_failure() {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let hook = |_flags: Flags| {
        CALLS.fetch_add(1, Ordering::SeqCst);
    };
    let a = Arena::builder("reclaim")
        .span(0, 4)
        .reclaim(&hook)
        .build()
        .unwrap();
    let _x = a.alloc(4, NOWAIT).unwrap();
    assert!(a.alloc(1, NOWAIT).is_err());
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
}

#[test]
fn reclaim_that_frees_space_lets_nowait_succeed() {
    use std::sync::OnceLock;
    static ARENA: OnceLock<&'static Arena<'static>> = OnceLock::new();
    static HELD: Mutex<Option<usize>> = Mutex::new(None);
    static HOOK: fn(Flags) = |_| {
        if let (Some(p), Some(a)) = (HELD.lock().unwrap().take(), ARENA.get()) {
            a.free(p, 4).unwrap();
        }
    };
    let a: &'static Arena<'static> = Box::leak(Box::new(
        Arena::builder("reclaim2")
            .span(0, 4)
            .reclaim(&HOOK)
            .build()
            .unwrap(),
    ));
    ARENA.set(a).ok().unwrap();
    *HELD.lock().unwrap() = Some(a.alloc(4, NOWAIT).unwrap());
    assert_eq!(a.alloc(2, NOWAIT).unwrap(), 0, "reclaim freed the block");
}

#[test]
fn quantum_cache_serves_small_sizes_and_drains() {
    let cache = SimpleQuantumCache::new();
    let a = Arena::builder("qc")
        .quantum(16)
        .span(0x1000, 0x10000)
        .qcache(64, &cache)
        .build()
        .unwrap();
    assert_eq!(a.qcache_max(), 64);
    let p = a.alloc(32, NOWAIT).unwrap();
    assert!(cache.cached() > 0, "a miss imports a batch into the cache");
    a.free(p, 32).unwrap();
    let q = a.alloc(32, NOWAIT).unwrap();
    assert_eq!(q, p, "a hit reuses the freed segment");
    let big = a.alloc(128, NOWAIT).unwrap(); // above qcache_max: straight to the arena
    a.free(big, 128).unwrap();
    a.free(q, 32).unwrap();
    cache.drain(&a);
    assert_eq!(cache.cached(), 0);
    assert_eq!(a.size_allocated(), 0);
    check(&a);
}

#[test]
fn quantum_cache_is_drained_when_the_arena_runs_out() {
    let cache = SimpleQuantumCache::new();
    let a = Arena::builder("qc2")
        .quantum(16)
        .span(0, 16 * 17)
        .qcache(16, &cache)
        .build()
        .unwrap();
    // Caches never hold 0, so p is at 16: [32, 272) is free once drained.
    let p = a.alloc(16, NOWAIT).unwrap(); // caches 7 more
    assert!(cache.cached() > 0);
    // A large xalloc cannot fit until the cache gives its segments back.
    let big = a.xalloc(16 * 15, &Constraints::new(), NOWAIT).unwrap();
    assert_eq!(cache.cached(), 0);
    a.xfree(big, 16 * 15).unwrap();
    a.free(p, 16).unwrap();
}

#[test]
fn destroy_reports_busy_segments_and_keeps_them() {
    let mut a = arena(16, 0x1000, 0x1000);
    let p = a.alloc(0x40, NOWAIT).unwrap();
    let err = a.destroy().unwrap_err();
    assert_eq!(
        err,
        Error::Busy {
            arena: vmem::Name::new("test"),
            segments: 1,
            bytes: 0x40
        }
    );
    assert!(err.to_string().contains("1 allocated segments"));
    check(&a);
    a.free(p, 0x40).unwrap();
    a.destroy().unwrap();
    assert_eq!(a.size_total(), 0);
    assert_eq!(a.tags_held(), 1, "only the cursor remains");
    a.add(0, 0x100, NOWAIT).unwrap(); // still usable
    check(&a);
}

#[test]
fn destroy_releases_imported_spans() {
    let src = Counter::new(0x100_0000);
    let cache = SimpleQuantumCache::new();
    let mut a = Arena::builder("d")
        .quantum(16)
        .source(&src, 0x1000)
        .qcache(64, &cache)
        .build()
        .unwrap();
    let p = a.alloc(16, NOWAIT).unwrap();
    a.free(p, 16).unwrap(); // lands in the cache, span still busy in the arena
    assert!(src.live.load(Ordering::SeqCst) > 0);
    a.destroy().unwrap();
    assert_eq!(src.live.load(Ordering::SeqCst), 0);
}

#[test]
fn busy_hash_grows_and_shrinks() {
    let a = arena(1, 0, 1 << 20);
    let ps: Vec<usize> = (0..5000).map(|_| a.alloc(1, NOWAIT).unwrap()).collect();
    let grown = a.stats().hash_buckets;
    assert!(grown >= 4096, "hash grew to {grown}");
    check(&a);
    for p in &ps[..4990] {
        a.free(*p, 1).unwrap();
    }
    assert!(
        a.stats().hash_buckets <= 64,
        "hash shrank to {}",
        a.stats().hash_buckets
    );
    check(&a);
}

#[test]
fn statistics_and_dump_describe_the_arena() {
    let a = arena(16, 0x1000, 0x1000);
    let p = a.alloc(0x30, NOWAIT).unwrap();
    let s = a.stats();
    assert_eq!(
        (s.size, s.inuse, s.busy_segments, s.free_segments),
        (0x1000, 0x30, 1, 1)
    );
    assert_eq!(s.largest_free, 0x1000 - 0x30);
    assert_eq!(a.max_free_class(), 240 * 16, "list [240, 255] quanta");
    let orders = a.order_stats();
    assert_eq!(orders[2].busy, 1); // 3 quanta
    assert_eq!(orders[2].busy_bytes, 0x30);
    let mut out = String::new();
    a.dump(&mut out).unwrap();
    assert!(out.contains("Busy") && out.contains("freelist["), "{out}");
    assert!(format!("{a:?}").contains("inuse: 48"));
    a.free(p, 0x30).unwrap();
}

// ---- bad input: a typed error each, never a panic

#[test]
fn bad_zero_size() {
    let a = arena(16, 0, 0x1000);
    assert_eq!(a.alloc(0, NOWAIT), Err(Error::ZeroSize));
    assert_eq!(
        a.xalloc(0, &Constraints::new(), NOWAIT),
        Err(Error::ZeroSize)
    );
    assert_eq!(a.free(0, 0), Err(Error::ZeroSize));
    assert_eq!(a.add(0x10000, 0, NOWAIT), Err(Error::ZeroSize));
}

#[test]
fn bad_alignment_not_power_of_two() {
    let a = arena(16, 0, 0x1000);
    let e = a
        .xalloc(16, &Constraints::new().align(48), NOWAIT)
        .unwrap_err();
    assert!(matches!(e, Error::BadAlign { align: 48, .. }));
    let e = a
        .xalloc(16, &Constraints::new().align(8), NOWAIT)
        .unwrap_err();
    assert!(
        matches!(e, Error::BadAlign { align: 8, .. }),
        "below the quantum"
    );
}

#[test]
fn bad_nocross_not_power_of_two() {
    let a = arena(16, 0, 0x1000);
    let e = a
        .xalloc(16, &Constraints::new().nocross(0x30), NOWAIT)
        .unwrap_err();
    assert_eq!(e, Error::BadNocross { nocross: 0x30 });
}

#[test]
fn bad_phase_not_below_align() {
    let a = arena(16, 0, 0x1000);
    let e = a
        .xalloc(16, &Constraints::new().align(64).phase(64), NOWAIT)
        .unwrap_err();
    assert_eq!(
        e,
        Error::BadPhase {
            phase: 64,
            align: 64
        }
    );
    let e = a
        .xalloc(16, &Constraints::new().phase(16), NOWAIT)
        .unwrap_err();
    assert!(
        matches!(e, Error::BadPhase { .. }),
        "phase without alignment"
    );
    let e = a
        .xalloc(
            32,
            &Constraints::new().align(64).phase(48).nocross(64),
            NOWAIT,
        )
        .unwrap_err();
    assert!(matches!(e, Error::PhaseCrossesNocross { .. }));
}

#[test]
fn bad_nocross_below_size() {
    let a = arena(16, 0, 0x1000);
    let e = a
        .xalloc(0x100, &Constraints::new().nocross(0x80), NOWAIT)
        .unwrap_err();
    assert_eq!(
        e,
        Error::NocrossTooSmall {
            nocross: 0x80,
            size: 0x100
        }
    );
}

#[test]
fn bad_min_above_max() {
    let a = arena(16, 0, 0x1000);
    let e = a
        .xalloc(16, &Constraints::new().range(0x800, 0x400), NOWAIT)
        .unwrap_err();
    assert_eq!(
        e,
        Error::BadRange {
            min: 0x800,
            max: 0x400
        }
    );
}

#[test]
fn bad_free_of_unallocated_address_names_arena_and_address() {
    let a = arena(16, 0, 0x1000);
    let p = a.alloc(32, NOWAIT).unwrap();
    let e = a.free(p + 16, 16).unwrap_err();
    assert_eq!(
        e,
        Error::NotAllocated {
            arena: vmem::Name::new("test"),
            addr: p + 16
        }
    );
    let msg = e.to_string();
    assert!(
        msg.contains("'test'") && msg.contains(&format!("{:#x}", p + 16)),
        "{msg}"
    );
    a.free(p, 32).unwrap();
    assert!(
        matches!(a.free(p, 32), Err(Error::NotAllocated { .. })),
        "double free"
    );
    check(&a);
}

#[test]
fn bad_free_with_wrong_size() {
    let a = arena(16, 0, 0x1000);
    let p = a.alloc(64, NOWAIT).unwrap();
    let e = a.xfree(p, 32).unwrap_err();
    assert!(matches!(
        e,
        Error::SizeMismatch {
            size: 32,
            allocated: 64,
            ..
        }
    ));
    a.xfree(p, 60).unwrap(); // same after rounding to the quantum
    check(&a);
}

#[test]
fn bad_destroy_of_busy_arena() {
    let mut a = arena(1, 0, 100);
    let _p = a.alloc(10, NOWAIT).unwrap();
    assert!(matches!(
        a.destroy(),
        Err(Error::Busy {
            segments: 1,
            bytes: 10,
            ..
        })
    ));
}

#[test]
fn bad_quantum_flags_and_spans() {
    assert_eq!(
        Arena::builder("q").quantum(24).build().unwrap_err(),
        Error::BadQuantum { quantum: 24 }
    );
    assert_eq!(
        Arena::builder("q").quantum(0).build().unwrap_err(),
        Error::BadQuantum { quantum: 0 }
    );
    let a = arena(16, 0x1000, 0x1000);
    assert!(matches!(
        a.alloc(16, Flags::empty()),
        Err(Error::BadFlags { .. })
    ));
    assert!(matches!(
        a.alloc(16, NOWAIT | WAITOK),
        Err(Error::BadFlags { .. })
    ));
    assert!(matches!(
        a.alloc(16, NOWAIT | Flags::BESTFIT | Flags::NEXTFIT),
        Err(Error::BadFlags { .. })
    ));
    assert!(matches!(
        a.add(0x1008, 0x10, NOWAIT),
        Err(Error::Unaligned { value: 0x1008, .. })
    ));
    assert!(matches!(
        a.add(0x1800, 0x100, NOWAIT),
        Err(Error::Overlap { .. })
    ));
    assert!(matches!(
        a.add(usize::MAX & !0xf, 0x20, NOWAIT),
        Err(Error::Overflow { .. })
    ));
    assert!(matches!(
        a.alloc(usize::MAX, NOWAIT),
        Err(Error::TooLarge { .. })
    ));
    check(&a);
}

#[test]
fn top_of_the_address_space_is_usable() {
    let top = usize::MAX - 0xfff;
    let a = arena(16, top, 0x1000);
    let p = a
        .xalloc(0x100, &Constraints::new().align(0x100).phase(0x10), NOWAIT)
        .unwrap();
    assert_eq!(p, top + 0x10);
    let q = a
        .xalloc(
            0x10,
            &Constraints::new().range(usize::MAX - 0xf, usize::MAX),
            NOWAIT,
        )
        .unwrap();
    assert_eq!(q, usize::MAX - 0xf);
    check(&a);
}

#[test]
fn long_names_are_truncated_on_a_character_boundary() {
    let a = Arena::builder("ééééééééééééééééééééééééé").build().unwrap();
    assert!(a.name().len() <= vmem::Name::MAX);
    assert!(a.name().chars().all(|c| c == 'é'));
}

#[test]
fn many_threads_churn_with_content_checks() {
    // Each thread allocates, stamps its ranges in a shared ownership map,
    // checks nobody else holds them, and frees.
    let src = Counter::new(0x1000_0000);
    let a = Arena::builder("mt")
        .quantum(16)
        .source(&src, 0x10000)
        .build()
        .unwrap();
    let owner: Mutex<std::collections::BTreeMap<usize, (usize, usize)>> = Default::default();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (a, owner) = (&a, &owner);
            s.spawn(move || {
                let mut mine = Vec::new();
                for i in 0..3000usize {
                    if i % 3 == 2 {
                        if let Some((p, size)) = mine.pop() {
                            assert_eq!(owner.lock().unwrap().remove(&p), Some((t, size)));
                            a.free(p, size).unwrap();
                        }
                    } else {
                        let size = 16 * (1 + (i * 7 + t) % 40);
                        let p = a.alloc(size, NOWAIT).unwrap();
                        let mut o = owner.lock().unwrap();
                        for (&q, &(_, qs)) in o.range(..p + size).rev().take(1) {
                            assert!(q + qs <= p, "overlap");
                        }
                        o.insert(p, (t, size));
                        mine.push((p, size));
                    }
                }
                for (p, size) in mine {
                    owner.lock().unwrap().remove(&p);
                    a.free(p, size).unwrap();
                }
            });
        }
    });
    assert_eq!(a.size_allocated(), 0);
    check(&a);
}

#[test]
fn claim_takes_exactly_a_free_range_and_never_imports() {
    let src = Counter::new(0x100_0000);
    let a = Arena::builder("claim")
        .quantum(0x10)
        .source(&src, 0x1000)
        .build()
        .unwrap();
    let x = a.alloc(0x100, NOWAIT).unwrap();
    assert_eq!(src.imported.load(Ordering::SeqCst), 1);
    // A free range inside the span, away from both ends.
    a.claim(x + 0x200, 0x80, NOWAIT).unwrap();
    check(&a);
    // Busy now: a second claim (or one overlapping x) fails.
    assert!(matches!(
        a.claim(x + 0x200, 0x10, NOWAIT),
        Err(Error::NoMemory { .. })
    ));
    assert!(a.claim(x + 0xf0, 0x20, NOWAIT).is_err());
    // Outside every span: fails without importing, even with WAITOK.
    assert!(a.claim(0x10, 0x10, WAITOK).is_err());
    assert!(a.claim(x + 0x1000, 0x10, NOWAIT).is_err());
    // Misaligned or empty.
    assert!(matches!(
        a.claim(x + 0x208, 0x10, NOWAIT),
        Err(Error::Unaligned { value, .. }) if value == x + 0x208
    ));
    assert!(matches!(
        a.claim(x + 0x300, 0, NOWAIT),
        Err(Error::ZeroSize)
    ));
    assert_eq!(
        src.imported.load(Ordering::SeqCst),
        1,
        "claim never imports"
    );
    // The claimed range frees like any other and everything coalesces.
    a.xfree(x + 0x200, 0x80).unwrap();
    a.free(x, 0x100).unwrap();
    assert_eq!(src.released.load(Ordering::SeqCst), 1);
    check(&a);
}

fn no_reclaim(_: Flags) {}

/// An arena importing from `parent`, with a reclaim hook (so a failed
/// search goes through it).
fn importing<'a>(name: &str, parent: &'a Arena<'static>) -> Arena<'a> {
    Arena::builder(name)
        .quantum(16)
        .source(parent, 0)
        .reclaim(&no_reclaim)
        .build()
        .unwrap()
}

/// A search that fails right after a successful import (the source's span
/// does not meet the constraints: imports ignore the address range and
/// nocross) goes on to the reclaim hook with a full set of tags hidden: it
/// used to find only the two the span left, and abort ("bt_save without
/// BT_MAXALLOC free tags"). It now fails cleanly.
#[test]
fn a_failed_search_after_an_import_fails_cleanly() {
    // The imported span lies above the requested range.
    let parent = arena(16, 0x10_0000, 0x10_0000);
    let child = importing("range-child", &parent);
    let c = Constraints::new().range(0, 0xf_ffff);
    assert!(matches!(
        child.xalloc(0x1000, &c, NOWAIT),
        Err(Error::NoMemory { .. })
    ));
    check(&child);

    // The imported span starts off a 0x1000 boundary, so every 0x1000 block
    // in it crosses one (the import asks for size + 2 alignments, not for
    // nocross), first with instant/best fit, then with next fit.
    let parent = arena(16, 0x10_0000, 0x10_0000);
    let _off = parent.alloc(16, NOWAIT).unwrap();
    let child = importing("nocross-child", &parent);
    let c = Constraints::new().nocross(0x1000);
    for f in [NOWAIT, NOWAIT | Flags::NEXTFIT] {
        match child.xalloc(0x1000, &c, f) {
            Err(Error::NoMemory { .. }) => {}
            Ok(a) => {
                assert_eq!(a & !0xfff, (a + 0xfff) & !0xfff, "crosses a boundary");
                child.xfree(a, 0x1000).unwrap();
            }
            Err(e) => panic!("{e:?}"),
        }
        check(&child);
    }
}

// ---- a tag source without hash tables (what a no_std user may supply)

/// Tags from a StandaloneTags; busy-hash tables refused, and counted.
struct NoTables {
    inner: vmem::StandaloneTags,
    asked: std::sync::atomic::AtomicUsize,
}

// SAFETY: tags come from StandaloneTags, which upholds the contract;
// declining a table is always allowed.
unsafe impl vmem::TagSource for NoTables {
    fn alloc_tag(&self, flags: Flags) -> Option<std::ptr::NonNull<u8>> {
        self.inner.alloc_tag(flags)
    }

    unsafe fn free_tag(&self, tag: std::ptr::NonNull<u8>) {
        // SAFETY: the tag came from `inner` through `alloc_tag`.
        unsafe { self.inner.free_tag(tag) }
    }

    fn alloc_table(&self, _bytes: usize) -> Option<std::ptr::NonNull<u8>> {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        None
    }
}

#[test]
fn a_source_without_tables_keeps_the_inline_hash_and_is_asked_rarely() {
    let tags = NoTables {
        inner: vmem::StandaloneTags::new(),
        asked: Default::default(),
    };
    let a = Arena::builder("no tables")
        .tag_source(&tags)
        .span(1, 100_000)
        .build()
        .unwrap();
    let ps: Vec<usize> = (0..5000).map(|_| a.alloc(1, NOWAIT).unwrap()).collect();
    assert_eq!(a.stats().hash_buckets, vmem::HASH_MIN);
    let asked = tags.asked.load(std::sync::atomic::Ordering::Relaxed);
    // Once per doubling of the busy count, not once per allocation.
    assert!((1..=12).contains(&asked), "asked {asked} times");
    check(&a);
    for p in ps {
        a.free(p, 1).unwrap();
    }
    check(&a);
    assert_eq!(a.size_allocated(), 0);
}

#[test]
fn release_spare_tags_hands_every_spare_back() {
    let a = arena(16, 0x10000, 0x10000);
    // Splits then coalesces: the freed segments' tags become spares.
    let v: Vec<usize> = (0..40).map(|_| a.alloc(32, NOWAIT).unwrap()).collect();
    for x in v {
        a.free(x, 32).unwrap();
    }
    let spare = a.stats().spare_tags;
    assert!(spare > 0);
    let held = a.tags_held();
    assert_eq!(a.release_spare_tags(), spare);
    assert_eq!(a.stats().spare_tags, 0);
    assert_eq!(a.tags_held(), held - spare);
    check(&a);
    // The next operation secures fresh tags and works as before.
    let x = a.alloc(32, NOWAIT).unwrap();
    a.free(x, 32).unwrap();
    check(&a);
}
