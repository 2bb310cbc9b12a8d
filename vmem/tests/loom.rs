//! loom models of the arena's races. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=4 cargo test -p bsdalloc-vmem --release loom`
//! (CI's bound), or with `LOOM_UNBOUNDED=1` instead of the bound to explore
//! every interleaving.
//!
//! Times (release build, 2-core VM, 2026-12-03), bound 4 / unbounded at
//! load average 5.8: `loom_alloc_free_race_with_import` 0.4 s / 0.6 s, the
//! refill and `WAITOK` models 0.02 s / 0.02 s;
//! `loom_two_imports_in_flight_with_a_third_allocator` 1.3 s at bound 4,
//! 21 s at 5 and 84 s at 6 (load 11-14), and unbounded it did not finish:
//! 15 minutes at load 13 (stopped), then killed by the OOM killer after 10.6
//! minutes (23 GiB machine). Run that one bounded.
//!
//! Each model is tiny (two threads, a few segments). A tag taken from the
//! arena's cache when fewer than the secured number remain is a broken
//! invariant that panics (`bug()` panics under loom), so "tags never run
//! out" is checked on every interleaving, not just asserted at the end.
#![cfg(loom)]

use loom::thread;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use vmem::{Allocation, Arena, Flags, Source, StandaloneTags, TagSource};

/// Counts tags outstanding; optionally refuses the no-sleep, no-recursion
/// (`NOVM`) try so that `bt_fill` must drop the arena lock.
struct CountingTags {
    inner: StandaloneTags,
    outstanding: AtomicUsize,
    refuse_novm: AtomicBool,
}

impl CountingTags {
    fn new(refuse_novm: bool) -> Self {
        CountingTags {
            inner: StandaloneTags::new(),
            outstanding: AtomicUsize::new(0),
            refuse_novm: AtomicBool::new(refuse_novm),
        }
    }
}

// SAFETY: forwards to StandaloneTags, which upholds the contract; refusing
// an allocation is always allowed.
unsafe impl TagSource for CountingTags {
    fn alloc_tag(&self, flags: Flags) -> Option<NonNull<u8>> {
        if flags.contains(Flags::NOVM) && self.refuse_novm.load(Ordering::SeqCst) {
            return None;
        }
        let t = self.inner.alloc_tag(flags)?;
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        Some(t)
    }

    unsafe fn free_tag(&self, tag: NonNull<u8>) {
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: the tag came from `inner` through `alloc_tag`.
        unsafe { self.inner.free_tag(tag) }
    }
}

/// Hands out disjoint spans; counts live bytes.
struct Spans {
    next: AtomicUsize,
    live: AtomicUsize,
}

impl Source for Spans {
    fn import(&self, size: usize, _flags: Flags) -> Option<usize> {
        self.live.fetch_add(size, Ordering::SeqCst);
        Some(self.next.fetch_add(size * 2, Ordering::SeqCst))
    }
    fn release(&self, _addr: usize, size: usize) {
        self.live.fetch_sub(size, Ordering::SeqCst);
    }
}

struct World {
    tags: CountingTags,
    spans: Spans,
}

fn world(refuse_novm: bool) -> &'static World {
    // Leaked per iteration: loom runs each model body many times, and the
    // arena borrows its sources for its lifetime.
    Box::leak(Box::new(World {
        tags: CountingTags::new(refuse_novm),
        spans: Spans {
            next: AtomicUsize::new(0x10_0000),
            live: AtomicUsize::new(0),
        },
    }))
}

/// Runs a model with at least `preemptions` preemptions explored (CI sets
/// `LOOM_MAX_PREEMPTIONS=4`; a model whose race needs more asks for more),
/// or with no bound at all under `LOOM_UNBOUNDED=1`.
fn run_model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = if std::env::var_os("LOOM_UNBOUNDED").is_some_and(|v| v == "1") {
        None
    } else {
        Some(builder.preemption_bound.unwrap_or(0).max(preemptions))
    };
    builder.check(f);
}

/// Nothing lost: the arena is empty and valid, its size is its static
/// spans plus what it imported and still holds, and it holds exactly the
/// tags its source has outstanding.
fn assert_settled(a: &Arena<'_>, w: &World, static_size: usize) {
    a.check_invariants().unwrap();
    assert_eq!(a.size_allocated(), 0);
    assert_eq!(
        w.spans.live.load(Ordering::SeqCst) + static_size,
        a.size_total()
    );
    assert_eq!(a.tags_held(), w.tags.outstanding.load(Ordering::SeqCst));
}

/// (a) Two threads allocate and free while imports drop the arena lock:
/// the tags an import relies on are hidden (`bt_save`) so the other thread
/// cannot take them, neither allocation fails, and nothing is lost.
#[test]
fn loom_alloc_free_race_with_import() {
    run_model(2, || {
        let w = world(false);
        let a = Arc::new(
            Arena::builder("loom-a")
                .quantum(16)
                .source(&w.spans, 64)
                .tag_source(&w.tags)
                .build()
                .unwrap(),
        );
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let a = a.clone();
                thread::spawn(move || {
                    let size = 32 + 16 * i;
                    let p = a.alloc(size, Flags::NOWAIT).expect("import must succeed");
                    let q = a.alloc(16, Flags::NOWAIT).expect("second allocation");
                    a.free(p, size).unwrap();
                    a.free(q, 16).unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // A span imported by one thread and then not needed (the other's
        // import made room first) stays as free space, as in FreeBSD; every
        // span that was used is released by the free that emptied it.
        assert_settled(&a, w, 0);
    });
}

/// (a'') As (a) with `keep_idle`: the free that empties a span keeps it
/// and releases the one kept before, while the other thread may be
/// importing with the lock dropped or allocating from the kept span; a
/// `release_idle` racing with them releases the kept span only if it is
/// still wholly free. Then one more `release_idle` settles everything.
#[test]
fn loom_keep_idle_with_imports_and_release() {
    run_model(2, || {
        let w = world(false);
        let a = Arc::new(
            Arena::builder("loom-k")
                .quantum(16)
                .source(&w.spans, 64)
                .keep_idle(64)
                .tag_source(&w.tags)
                .build()
                .unwrap(),
        );
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let a = a.clone();
                thread::spawn(move || {
                    let size = 48 + 16 * i;
                    let p = a.alloc(size, Flags::NOWAIT).expect("import must succeed");
                    a.free(p, size).unwrap();
                    if i == 0 {
                        a.release_idle();
                    }
                    let q = a.alloc(16, Flags::NOWAIT).expect("second allocation");
                    a.free(q, 16).unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        a.release_idle();
        assert_settled(&a, w, 0);
    });
}

/// (a') Two imports in flight (each with the lock dropped) while a third
/// thread frees and re-allocates, splitting a segment: without `bt_save`
/// hiding the importers' tags, the splitter takes one of them and the
/// second importer finds the cache short when it adds its span. The tag
/// source refuses the no-sleep try, so every refill drops the lock too and
/// the importers can come back one right after the other.
#[test]
fn loom_two_imports_in_flight_with_a_third_allocator() {
    // Three preemptions: both importers stopped right after dropping the
    // lock, and the third thread stopped mid-way. With two, loom does not
    // reach the interleaving (checked by removing `bt_save`: caught at 3).
    run_model(3, || {
        let w = world(true);
        let a = Arc::new(
            Arena::builder("loom-a3")
                .quantum(16)
                .span(0, 32)
                .source(&w.spans, 16)
                .tag_source(&w.tags)
                .build()
                .unwrap(),
        );
        let all = a.alloc(32, Flags::NOWAIT).unwrap();
        let importers: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                thread::spawn(move || {
                    let p = a.alloc(16, Flags::NOWAIT).expect("import");
                    a.free(p, 16).unwrap();
                })
            })
            .collect();
        a.free(all, 32).unwrap();
        let half = a.alloc(16, Flags::NOWAIT).unwrap();
        a.free(half, 16).unwrap();
        for h in importers {
            h.join().unwrap();
        }
        assert_settled(&a, w, 32);
    });
}

/// (b) A tag refill that must drop the lock (the source refuses `NOVM`)
/// races frees that return tags to the arena's cache: the refill secures
/// its tags, the frees' tags are kept, and none is lost or double-counted.
#[test]
fn loom_tag_refill_races_tag_returning_frees() {
    run_model(2, || {
        let w = world(true);
        let a = Arc::new(
            Arena::builder("loom-b")
                .span(0, 64)
                .tag_source(&w.tags)
                .build()
                .unwrap(),
        );
        // Three busy segments in a row: freeing the outer two then the
        // middle one returns tags as segments coalesce.
        let xs = [
            a.alloc(8, Flags::NOWAIT).unwrap(),
            a.alloc(8, Flags::NOWAIT).unwrap(),
            a.alloc(8, Flags::NOWAIT).unwrap(),
        ];
        let freer = {
            let a = a.clone();
            thread::spawn(move || {
                for x in [xs[0], xs[2], xs[1]] {
                    a.free(x, 8).unwrap();
                }
            })
        };
        let got = a.alloc(4, Flags::WAITOK).unwrap();
        freer.join().unwrap();
        a.free(got, 4).unwrap();
        assert_settled(&a, w, 64);
    });
}

/// (c) A `WAITOK` allocation in a full arena sleeps and is woken by a free
/// on another thread (under loom a timed wait is a plain wait, so only the
/// free's wakeup can end it).
#[test]
fn loom_waitok_sleeper_woken_by_free() {
    run_model(2, || {
        let w = world(false);
        let a = Arc::new(
            Arena::builder("loom-c")
                .span(0, 4)
                .tag_source(&w.tags)
                .build()
                .unwrap(),
        );
        let all = a.alloc(4, Flags::NOWAIT).unwrap();
        let sleeper = {
            let a = a.clone();
            thread::spawn(move || {
                let p = a.alloc(2, Flags::WAITOK).unwrap();
                a.free(p, 2).unwrap();
            })
        };
        a.free(all, 4).unwrap();
        sleeper.join().unwrap();
        assert_settled(&a, w, 4);
    });
}

/// (d) Segments held by handles (no busy hash): one allocated here is
/// freed on another thread while this one allocates by handle again, each
/// side possibly importing, and the free that empties a span releases it.
#[test]
fn loom_handle_free_races_handle_alloc_with_import() {
    run_model(2, || {
        let w = world(false);
        // Leaked so the handles, which borrow the arena, may cross threads.
        let a: &'static Arena<'static> = Box::leak(Box::new(
            Arena::builder("loom-d")
                .quantum(16)
                .source(&w.spans, 64)
                .tag_source(&w.tags)
                .build()
                .unwrap(),
        ));
        let first: Allocation<'static> = a.alloc_handle(48, Flags::NOWAIT).unwrap();
        let freer = thread::spawn(move || a.free_handle(first).unwrap());
        let second = a
            .alloc_handle(32, Flags::NOWAIT)
            .expect("import must succeed");
        freer.join().unwrap();
        a.free_handle(second).unwrap();
        assert_settled(a, w, 0);
    });
}
