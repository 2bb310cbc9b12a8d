//! vmem never calls the global allocator during arena operations: tags come
//! from the tag source, hash tables from the OS. A counting
//! `#[global_allocator]` counts calls made by this thread while armed.
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use vmem::{Arena, Constraints, Flags, SimpleQuantumCache};

struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if ARMED.with(|a| a.get()) {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn armed<T>(f: impl FnOnce() -> T) -> T {
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    r
}

#[test]
fn arena_operations_never_use_the_global_allocator() {
    let mut addrs = [0usize; 20_000]; // on the stack: the test itself must not allocate either
    let cache = SimpleQuantumCache::new();
    armed(|| {
        let parent = Arena::builder("parent")
            .quantum(4096)
            .span(1 << 32, 1 << 32)
            .build()
            .unwrap();
        let mut child = Arena::builder("child")
            .quantum(16)
            .source(&parent, 1 << 20)
            .qcache(128, &cache)
            .build()
            .unwrap();
        // Enough live segments to grow (and later shrink) the busy hash.
        for (i, slot) in addrs.iter_mut().enumerate() {
            let flags = Flags::NOWAIT | [Flags::FIRSTFIT, Flags::BESTFIT, Flags::NEXTFIT][i % 3];
            *slot = if i % 4 == 0 {
                child
                    .xalloc(64, &Constraints::new().align(256).nocross(4096), flags)
                    .unwrap()
            } else {
                child.alloc(16 * (1 + i % 20), flags).unwrap()
            };
        }
        assert!(child.stats().hash_buckets > 1024);
        for (i, &a) in addrs.iter().enumerate() {
            if i % 4 == 0 {
                child.xfree(a, 64).unwrap();
            } else {
                child.free(a, 16 * (1 + i % 20)).unwrap();
            }
        }
        // Errors carry inline names, not strings.
        assert!(child.xfree(12345, 16).is_err());
        child.add(1 << 20, 1 << 20, Flags::NOWAIT).unwrap();
        child.check_invariants().unwrap();
        child.destroy().unwrap();
        drop(child);
        drop(parent);
    });
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        0,
        "global allocator called during vmem operations"
    );
}

#[test]
fn contended_arena_locks_never_use_the_global_allocator() {
    // Contention makes a lock park its waiters; the lock must not allocate
    // to do so (parking_lot would, through its parking table).
    let a = Arena::builder("contended")
        .quantum(16)
        .span(1 << 32, 1 << 28)
        .build()
        .unwrap();
    let before = CALLS.load(Ordering::SeqCst);
    std::thread::scope(|s| {
        for t in 0..4usize {
            let a = &a;
            s.spawn(move || {
                armed(|| {
                    let mut held = [0usize; 64];
                    for round in 0..2_000usize {
                        for (i, slot) in held.iter_mut().enumerate() {
                            *slot = a
                                .alloc(16 * (1 + (i + t + round) % 8), Flags::WAITOK)
                                .unwrap();
                        }
                        for (i, slot) in held.iter().enumerate() {
                            a.free(*slot, 16 * (1 + (i + t + round) % 8)).unwrap();
                        }
                    }
                })
            });
        }
    });
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        before,
        "global allocator called under contention"
    );
    a.check_invariants().unwrap();
}
