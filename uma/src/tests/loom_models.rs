//! loom models, tiny configs (4 items per slab, 2-item buckets), 2-3
//! threads. Every model builds a fresh `Uma` instance over a fresh test
//! source inside the model and unmaps it at the end of each execution.
//! They run the real code: `Zone::cache_alloc`/`cache_free` are the same
//! alloc and free paths as `Zone::alloc`/`free`, reaching the thread's
//! cache through the explicit `&Cache` instead of the TLS table.
//!
//! `LOOM_MAX_PREEMPTIONS=N` bounds the preemptions; unset, loom explores
//! every interleaving. Executions and time per model (2026-12-03, release
//! build, 2 cores shared with other jobs, so the times are rough; "> 900 s"
//! means `timeout 900` stopped it):
//!
//! | model | bound 4 | no bound |
//! |---|---|---|
//! | (a) `loom_keg_drain_vs_alloc_vs_reserve` | 306 (< 1 s) | 279 (< 1 s) |
//! | (b) `loom_foreign_drain_cpu_vs_owner_fast_path` | 19,965 (5-19 s) | > 900 s (bound 5: 76,288 in 60 s; 6: 233,998 in 187 s) |
//! | (c) `loom_bucket_exchange_through_zone_cache` | 1,065 (1 s) | 6,657 (59 s) |
//! | (g) `loom_timeout_vs_bucket_exchange` | 10,941 (4-35 s) | > 900 s |
//! | (d) `loom_limit_sleeper_woken_by_free` | 34 (< 1 s) | 45 (< 1 s) |
//! | (e) `loom_waitok_at_limit_drains_other_caches` | 39,995 (13 s) | > 900 s |
//! | (f) `loom_two_limit_sleepers_one_drain` | 27,196 (13-68 s) | > 900 s |
//! | (h) `loom_exit_flush_vs_destroy` | 13 (< 1 s) | 13 (< 1 s) |
//! | (i) `loom_swap_road_vs_drain_cpu` | 156,142 (22 s; 2026-12-04) | not run |

use core::ptr::NonNull;

use loom::sync::Arc;
use loom::thread;

use crate::pcpu::{self, Cache};
use crate::sync::AtomicPtr;
use crate::{Flags, Reclaim, TestSource, Uma, Zone, ZoneArgs, ZoneFlags};

/// Runs `f` under loom with the preemption bound from `LOOM_MAX_PREEMPTIONS`
/// (unset: no bound, every interleaving).
fn run_model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let b = loom::model::Builder::new();
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r2 = runs.clone();
    let f = std::sync::Arc::new(f);
    b.check(move || {
        r2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = f.clone();
        spawn(move || f()).join().unwrap();
    });
    std::println!(
        "loom: {} executions explored",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// Stack of every model thread. loom runs its threads on 32 KiB stacks,
/// too small for the allocation paths over loom's instrumented locks.
const STACK: usize = 1 << 20;

/// `thread::spawn` with a [`STACK`]-sized stack.
fn spawn<F, T>(f: F) -> thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    thread::Builder::new().stack_size(STACK).spawn(f).unwrap()
}

struct Env {
    src: &'static TestSource,
    uma: &'static Uma,
}

fn env() -> Env {
    let src: &'static TestSource = Box::leak(Box::new(TestSource::new()));
    let uma = Uma::bootstrap(src).expect("bootstrap");
    Env { src, uma }
}

impl Drop for Env {
    fn drop(&mut self) {
        // SAFETY: the model is over; nothing uses this instance any more.
        unsafe {
            self.src.release_all();
            drop(Box::from_raw(
                self.src as *const TestSource as *mut TestSource,
            ));
        }
    }
}

/// The models' usual zone: 32-byte items, 4 per slab, 2-item buckets.
fn tiny_zone(e: &Env, name: &'static str) -> &'static Zone {
    e.uma
        .create_zone(&ZoneArgs::new(name, 32).max_ipers(4).bucket_size(2))
        .unwrap()
}

/// One explicit per-thread cache of `z` (retired with
/// [`retire_into_zone`]).
fn one_cache(z: &'static Zone) -> &'static Cache {
    let c = pcpu::register(z, core::ptr::null());
    // SAFETY: registered caches live until retired.
    unsafe { &*c }
}

/// Two explicit per-thread caches of `z` (retired with
/// [`retire_into_zone`]).
fn two_caches(z: &'static Zone) -> (&'static Cache, &'static Cache) {
    (one_cache(z), one_cache(z))
}

/// Retires the caches into the zone cache, checks the zone, drains it and
/// requires every item back in the keg (nothing lost or duplicated).
fn retire_and_check(e: &Env, z: &Zone, cs: &[&Cache]) {
    retire_into_zone(e, z, cs);
    z.check_invariants();
    z.reclaim(Reclaim::Drain);
    let info = z.keg_info().unwrap();
    assert_eq!(
        info.free_items,
        info.slabs * info.layout.ipers,
        "nothing lost or duplicated"
    );
}

/// The end of the bucket-exchange models: [`retire_and_check`], then the
/// zone is destroyed.
fn retire_check_destroy(e: &Env, z: &'static Zone, cs: &[&Cache]) {
    retire_and_check(e, z, cs);
    // SAFETY: the model is over: nobody uses z any more.
    unsafe { e.uma.destroy(z) };
}

/// `n` items of `z`, as plain addresses.
fn alloc_n(z: &Zone, n: usize) -> Vec<P> {
    (0..n)
        .map(|_| P(z.alloc(Flags::NOWAIT).unwrap().as_ptr() as usize))
        .collect()
}

/// Retires the explicit caches `cs` of `z`, which nobody is inside any
/// more, and puts their buckets in the zone cache.
fn retire_into_zone(e: &Env, z: &Zone, cs: &[&Cache]) {
    let _r = e.uma.registry_lock();
    for &c in cs {
        // SAFETY: registry lock held; nobody is inside the cache.
        let bs = unsafe { pcpu::retire_locked(c as *const Cache as *mut Cache) };
        for bk in bs.into_iter().flatten() {
            z.put_bucket(bk);
        }
    }
}

#[derive(Clone, Copy)]
struct P(usize);
// SAFETY: items are plain addresses moved between model threads.
unsafe impl Send for P {}

fn nn(p: P) -> NonNull<u8> {
    NonNull::new(p.0 as *mut u8).unwrap()
}

/// (a) keg drain vs an ordinary allocation vs a reserve allocation, under
/// memory pressure (the source cannot grow the keg): the reserve user never
/// fails, nothing is handed out twice, nothing is lost.
#[test]
fn loom_keg_drain_vs_alloc_vs_reserve() {
    run_model(|| {
        let e = env();
        let z: &'static Zone = e
            .uma
            .create_zone(
                &ZoneArgs::new("loom-a", 32)
                    .max_ipers(4)
                    .flags(ZoneFlags::NOBUCKET),
            )
            .unwrap();
        z.reserve(2);
        z.prealloc(4);
        e.src.set_limit(e.src.in_use()); // no more slabs
        let drainer = spawn(move || z.reclaim(Reclaim::Drain));
        let ordinary = spawn(move || z.alloc(Flags::NOWAIT).map(|p| P(p.as_ptr() as usize)));
        let reserve = z.alloc(Flags::USE_RESERVE | Flags::NOVM | Flags::NOWAIT);
        drainer.join().unwrap();
        let o = ordinary.join().unwrap();
        let r = reserve.expect("the reserve user never fails while the reserve is held");
        if let Some(o) = o {
            assert_ne!(o.0, r.as_ptr() as usize, "item handed out twice");
        }
        let info = z.keg_info().unwrap();
        assert_eq!(info.slabs, 1, "drain kept the slab holding the reserve");
        let used = 1 + o.is_some() as usize;
        assert_eq!(info.free_items + used, 4, "nothing lost");
        // SAFETY: items of z, freed once.
        unsafe {
            z.free(r);
            if let Some(o) = o {
                z.free(nn(o));
            }
        }
        z.check_invariants();
        // SAFETY: nobody uses z any more.
        unsafe { e.uma.destroy(z) };
    });
}

/// (b) a foreign DRAIN_CPU against the owner's fast-path alloc and free
/// through its cache: no item lost or duplicated.
#[test]
fn loom_foreign_drain_cpu_vs_owner_fast_path() {
    run_model(|| {
        let e = env();
        let z = tiny_zone(&e, "loom-b");
        let c = one_cache(z);
        // warm the cache: one item in the alloc bucket
        let a = P(z.cache_alloc(c, Flags::NOWAIT).unwrap().as_ptr() as usize);
        let owner = spawn(move || {
            let b = z.cache_alloc(c, Flags::NOWAIT).unwrap();
            // SAFETY: a was allocated from z and is freed once.
            unsafe { z.cache_free(c, nn(a)) };
            P(b.as_ptr() as usize)
        });
        z.reclaim(Reclaim::DrainCpu);
        let b = owner.join().unwrap();
        assert_ne!(b.0, a.0);
        // SAFETY: b from z, freed once (from this thread, as the owner has
        // exited; the cache is only used by one thread at a time).
        unsafe { z.cache_free(c, nn(b)) };
        retire_and_check(&e, z, &[c]);
        assert_eq!(z.stats().used, 0);
        // SAFETY: nobody uses z any more.
        unsafe { e.uma.destroy(z) };
    });
}

/// (c) bucket exchange between two threads through the zone bucket cache:
/// one frees a bucket's worth into its cache (the full bucket moves to the
/// zone), the other allocates from the zone bucket cache.
#[test]
fn loom_bucket_exchange_through_zone_cache() {
    run_model(|| {
        let e = env();
        let z = tiny_zone(&e, "loom-c");
        let (c1, c2) = two_caches(z);
        let items = alloc_n(z, 3);
        let freer = spawn(move || {
            for p in items {
                // SAFETY: allocated from z above, freed once.
                unsafe { z.cache_free(c1, nn(p)) };
            }
        });
        let taker = spawn(move || {
            let a = z.cache_alloc(c2, Flags::NOWAIT).unwrap();
            let b = z.cache_alloc(c2, Flags::NOWAIT).unwrap();
            assert_ne!(a, b);
            (P(a.as_ptr() as usize), P(b.as_ptr() as usize))
        });
        freer.join().unwrap();
        let (a, b) = taker.join().unwrap();
        // SAFETY: from z, freed once.
        unsafe {
            z.cache_free(c2, nn(a));
            z.cache_free(c2, nn(b));
        }
        retire_check_destroy(&e, z, &[c1, c2]);
    });
}

/// (g) the timeout pass (working-set update, the coldest buckets cut off
/// the bottom of the bucket cache, keg drain) against a thread handing
/// full buckets to the zone cache and one taking them from its top: no
/// item lost or duplicated, and the cache's item and bucket counts stay
/// exact (`check_invariants` walks them).
#[test]
fn loom_timeout_vs_bucket_exchange() {
    run_model(|| {
        let e = env();
        let z = tiny_zone(&e, "loom-g");
        let (c1, c2) = two_caches(z);
        let items = alloc_n(z, 7);
        // One full bucket in the zone cache before the race, so the pass
        // has a bottom to cut.
        for &p in &items[..3] {
            // SAFETY: allocated from z above, freed once.
            unsafe { z.cache_free(c1, nn(p)) };
        }
        let rest: Vec<P> = items[3..].to_vec();
        let freer = spawn(move || {
            // Enough to fill the cache's pair and hand the zone a bucket.
            for p in rest {
                // SAFETY: as above.
                unsafe { z.cache_free(c1, nn(p)) };
            }
        });
        let timer = spawn(move || {
            z.timeout();
        });
        let a = z.cache_alloc(c2, Flags::NOWAIT).unwrap();
        freer.join().unwrap();
        timer.join().unwrap();
        // SAFETY: from z, freed once.
        unsafe { z.cache_free(c2, a) };
        retire_check_destroy(&e, z, &[c1, c2]);
    });
}

/// (d) a WAITOK allocation sleeping on the zone limit is woken by a free.
#[test]
fn loom_limit_sleeper_woken_by_free() {
    run_model(|| {
        let e = env();
        let z: &'static Zone = e
            .uma
            .create_zone(&ZoneArgs::new("loom-d", 32).max_ipers(4))
            .unwrap();
        z.set_max(1);
        let held = P(z.alloc(Flags::NOWAIT).unwrap().as_ptr() as usize);
        assert!(z.alloc(Flags::NOWAIT).is_none());
        let sleeper = spawn(move || P(z.alloc(Flags::WAITOK).unwrap().as_ptr() as usize));
        // SAFETY: from z, freed once.
        unsafe { z.free(nn(held)) };
        let got = sleeper.join().unwrap();
        assert!(z.stats().items <= 1);
        // SAFETY: from z, freed once.
        unsafe { z.free(nn(got)) };
        z.check_invariants();
        // SAFETY: nobody uses z any more.
        unsafe { e.uma.destroy(z) };
    });
}

/// (e) a WAITOK allocation at the limit takes back an item parked in
/// another thread's per-thread cache, while that cache's owner races to
/// take the item out and put it back (through the fast path or, vetoed by
/// the sleeper, to the keg). No free from anyone else ever comes: without
/// the drain, or with a free that parks the item after the sleeper's drain,
/// the sleeper would wait forever (loom reports the deadlock).
#[test]
fn loom_waitok_at_limit_drains_other_caches() {
    run_model(|| {
        let e = env();
        let z: &'static Zone = e
            .uma
            .create_zone(&ZoneArgs::new("loom-e", 32).max_ipers(4))
            .unwrap();
        let c = one_cache(z);
        // one CPU under loom, one cache: 4 / 2 / (2 * 1) = buckets of 1
        z.set_max(4);
        assert_eq!(z.bucket_size(), 1);
        // park one item in c's free bucket
        let x = z.cache_alloc(c, Flags::NOWAIT).unwrap();
        // SAFETY: x from z, freed once.
        unsafe { z.cache_free(c, x) };
        let held: Vec<P> = (0..3)
            .map(|_| P(z.alloc(Flags::NOWAIT).unwrap().as_ptr() as usize))
            .collect();
        assert!(z.alloc(Flags::NOWAIT).is_none(), "at the limit");
        assert_eq!(pcpu::peek_zone_caches(z, true).items, 1, "x is parked in c");
        let owner = spawn(move || {
            if let Some(y) = z.cache_alloc(c, Flags::NOWAIT) {
                // SAFETY: y from z, freed once.
                unsafe { z.cache_free(c, y) };
            }
        });
        let got = z
            .alloc(Flags::WAITOK)
            .expect("WAITOK never fails at the limit");
        owner.join().unwrap();
        assert!(!held.iter().any(|h| h.0 == got.as_ptr() as usize));
        // SAFETY: from z, freed once.
        unsafe {
            z.free(got);
            for h in held {
                z.free(nn(h));
            }
        }
        retire_into_zone(&e, z, &[c]);
        z.check_invariants();
        assert_eq!(z.stats().used, 0);
        // SAFETY: nobody uses z any more.
        unsafe { e.uma.destroy(z) };
    });
}

/// (f) two WAITOK allocations at the limit: only the sleeper that makes
/// `sleepers` non-zero drains the caches; the other must still get an item
/// (the parked one or the one freed meanwhile), whichever order they come
/// in. Both must return.
#[test]
fn loom_two_limit_sleepers_one_drain() {
    run_model(|| {
        let e = env();
        let z: &'static Zone = e
            .uma
            .create_zone(&ZoneArgs::new("loom-f", 32).max_ipers(4))
            .unwrap();
        let c = one_cache(z);
        z.set_max(4);
        let x = z.cache_alloc(c, Flags::NOWAIT).unwrap();
        // SAFETY: x from z, freed once: parked in c.
        unsafe { z.cache_free(c, x) };
        let mut held: Vec<P> = (0..3)
            .map(|_| P(z.alloc(Flags::NOWAIT).unwrap().as_ptr() as usize))
            .collect();
        let s1 = spawn(move || P(z.alloc(Flags::WAITOK).unwrap().as_ptr() as usize));
        let s2 = spawn(move || P(z.alloc(Flags::WAITOK).unwrap().as_ptr() as usize));
        // SAFETY: from z, freed once.
        unsafe { z.free(nn(held.pop().unwrap())) };
        let (a, b) = (s1.join().unwrap(), s2.join().unwrap());
        assert_ne!(a.0, b.0, "one item, two owners");
        // SAFETY: from z, freed once.
        unsafe {
            for p in [a, b].into_iter().chain(held) {
                z.free(nn(p));
            }
        }
        retire_into_zone(&e, z, &[c]);
        z.check_invariants();
        // SAFETY: nobody uses z any more.
        unsafe { e.uma.destroy(z) };
    });
}

/// (h) thread-exit flush vs zone destroy. The exiting owner retires its
/// cache under the registry lock and gives the buckets back after dropping
/// it (release callbacks must not run under the lock); destroy detaches the
/// caches it still finds. Whichever goes first, destroy must not count the
/// owner's items as leaked nor free the zone while the owner is still
/// giving them back (it waits for the exit pin).
#[test]
fn loom_exit_flush_vs_destroy() {
    run_model(|| {
        let e = env();
        let uma = e.uma;
        let z = tiny_zone(&e, "loom-h");
        // The owner's TLS slot, as the registry sees it.
        let slot = Arc::new(AtomicPtr::new(pcpu::empty()));
        let c: &'static Cache = {
            let c = pcpu::register(z, &*slot);
            // SAFETY: registered caches live until retired or detached.
            unsafe { &*c }
        };
        // Two items parked in the owner's cache (one bucket).
        for p in alloc_n(z, 2) {
            // SAFETY: from z, freed once.
            unsafe { z.cache_free(c, nn(p)) };
        }
        // The keg's one slab (4 items: 2 in the cache, 2 free) is in use.
        let before = e.src.in_use();
        let s2 = slot.clone();
        let exiting = spawn(move || {
            // SAFETY: the owner, in none of its operations, never using
            // the cache again.
            unsafe { pcpu::exit_flush(&s2, uma.registry_lock()) };
        });
        // SAFETY: nobody allocates from z any more; the exiting owner
        // only gives its cache back.
        let leaked = unsafe { uma.destroy(z) };
        exiting.join().unwrap();
        assert_eq!(leaked, 0, "the owner's cached items counted as leaked");
        // Every item was back in the keg when destroy tore it down, so its
        // slab went back to the source (a slab holding items is leaked).
        assert!(
            e.src.in_use() < before,
            "destroy tore the keg down before the exit flush gave the items back"
        );
    });
}

/// (i) the front doors' swap road (a miss served by the owner swapping its
/// two buckets, `Cache::swap_free_stamped` and `Cache::swap_alloc`, with no
/// lock) against a foreign drain of the same cache: each step either
/// serves or refuses and leaves the cache as it was (the owner then takes
/// the zone's road), and nothing is lost or handed out twice.
#[test]
fn loom_swap_road_vs_drain_cpu() {
    use crate::pcpu::{GATE_ALLOC, GATE_DRAIN, GATE_FREE};
    run_model(|| {
        let e = env();
        let z = tiny_zone(&e, "loom-i");
        let c = one_cache(z);
        // The alloc bucket full (2 of 2), so a free misses the fast push.
        let (a, b, d) = (
            P(z.cache_alloc(c, Flags::NOWAIT).unwrap().as_ptr() as usize),
            P(z.cache_alloc(c, Flags::NOWAIT).unwrap().as_ptr() as usize),
            P(z.cache_alloc(c, Flags::NOWAIT).unwrap().as_ptr() as usize),
        );
        // SAFETY: from z, freed once.
        unsafe {
            z.cache_free(c, nn(a));
            z.cache_free(c, nn(b));
        }
        let owner = spawn(move || {
            // SAFETY: this thread owns c now; d came from z (32-byte
            // items) and is freed once; the zone has no ctor, dtor or
            // limit.
            unsafe {
                if !c.swap_free_stamped::<{ GATE_DRAIN | GATE_FREE }>(nn(d), 0x5a5a) {
                    z.cache_free(c, nn(d));
                }
                let x = match c.swap_alloc::<{ GATE_DRAIN | GATE_ALLOC }>() {
                    Some(x) => x,
                    None => z.cache_alloc(c, Flags::NOWAIT).unwrap(),
                };
                P(x.as_ptr() as usize)
            }
        });
        z.reclaim(Reclaim::DrainCpu);
        let x = owner.join().unwrap();
        // SAFETY: x came from z and is freed once (this thread uses c
        // alone now).
        unsafe { z.cache_free(c, nn(x)) };
        retire_and_check(&e, z, &[c]);
        assert_eq!(z.stats().used, 0);
        // SAFETY: nobody uses z any more.
        unsafe { e.uma.destroy(z) };
    });
}

#[allow(dead_code)]
fn _assert_send() {
    fn s<T: Send + Sync>() {}
    s::<Arc<()>>();
}
