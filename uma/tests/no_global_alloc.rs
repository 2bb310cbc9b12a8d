//! UMA never allocates through the Rust global allocator: a counting
//! allocator records every call made while a thread-local flag is on.

#![cfg(not(loom))]
// Test code: its unsafe blocks free items to the zone that allocated them,
// destroy zones nobody uses afterwards, or touch live items' bytes.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use uma::{CacheArgs, Flags, Reclaim, TestSource, Uma, ZoneArgs, ZoneFlags};

struct Counting;
static CALLS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static WATCH: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if WATCH.with(|w| w.get()) {
            CALLS.fetch_add(1, SeqCst);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if WATCH.with(|w| w.get()) {
            CALLS.fetch_add(1, SeqCst);
        }
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if WATCH.with(|w| w.get()) {
            CALLS.fetch_add(1, SeqCst);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn import(_a: usize, s: &mut [*mut u8], _f: Flags) -> usize {
    for (i, x) in s.iter_mut().enumerate() {
        *x = (0x10000 + i * 16) as *mut u8;
    }
    s.len()
}
fn release(_a: usize, _i: &[*mut u8]) {}

#[test]
fn zone_lifecycle_never_touches_the_global_allocator() {
    let src: &'static TestSource = Box::leak(Box::new(TestSource::new()));
    WATCH.with(|w| w.set(true));
    // bootstrap, create, alloc, free, reclaim, destroy: all watched
    let u = Uma::bootstrap(src).unwrap();
    let g = uma::global();
    for (i, uma) in [u, g].into_iter().enumerate() {
        let z = uma.create_zone(&ZoneArgs::new("noalloc", 64)).unwrap();
        let off = uma
            .create_zone(&ZoneArgs::new("noalloc-off", 3000).flags(ZoneFlags::OFFPAGE))
            .unwrap();
        let c = uma
            .create_cache(&CacheArgs {
                name: "noalloc-cache",
                size: 8,
                import,
                release,
                arg: 0,
                ctor: None,
                dtor: None,
                flags: ZoneFlags::NONE,
                bucket_size: None,
            })
            .unwrap();
        let mut items = [core::ptr::null_mut::<u8>(); 3000];
        for round in 0..3 {
            for (j, it) in items.iter_mut().enumerate() {
                let zz = if j % 10 == 0 { off } else { z };
                *it = zz.alloc(Flags::NOWAIT).unwrap().as_ptr();
            }
            for (j, it) in items.iter().enumerate() {
                let zz = if j % 10 == 0 { off } else { z };
                unsafe { zz.free(core::ptr::NonNull::new(*it).unwrap()) };
            }
            let v = c.alloc(Flags::NOWAIT).unwrap();
            unsafe { c.free(v) };
            z.reclaim([Reclaim::Trim, Reclaim::Drain, Reclaim::DrainCpu][round]);
            uma.reclaim(Reclaim::Drain);
            uma.timeout();
        }
        let mut table = Table([0; 8192], 0);
        uma.write_vmstat(&mut table).unwrap();
        let _ = z.stats();
        unsafe {
            assert_eq!(uma.destroy(z), 0);
            assert_eq!(uma.destroy(off), 0);
            assert_eq!(uma.destroy(c), 0);
        }
        WATCH.with(|w| w.set(false));
        assert_eq!(
            CALLS.load(SeqCst),
            0,
            "instance {i}: UMA called the global allocator"
        );
        WATCH.with(|w| w.set(true));
    }
    // a thread's first use registers a cache and arms its exit flush
    let z = g.create_zone(&ZoneArgs::new("noalloc-thread", 32)).unwrap();
    WATCH.with(|w| w.set(false));
    std::thread::spawn(move || {
        WATCH.with(|w| w.set(true));
        let p = z.alloc(Flags::NOWAIT).unwrap();
        unsafe { z.free(p) };
        WATCH.with(|w| w.set(false));
    })
    .join()
    .unwrap();
    assert_eq!(
        CALLS.load(SeqCst),
        0,
        "per-thread cache setup called the global allocator"
    );
    assert_eq!(z.stats().cached_pcpu, 0, "thread exit flushed");
}

struct Table([u8; 8192], usize);
impl core::fmt::Write for Table {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.0.len() - self.1);
        self.0[self.1..self.1 + n].copy_from_slice(&s.as_bytes()[..n]);
        self.1 += n;
        Ok(())
    }
}

#[test]
fn waitok_retries_and_limit_drains_never_touch_the_global_allocator() {
    let src: &'static TestSource = Box::leak(Box::new(TestSource::new()));
    let pages: &'static TestSource = Box::leak(Box::new(TestSource::new()));
    let u = Uma::bootstrap(src).unwrap();
    let z = u
        .create_zone(&ZoneArgs::new("noalloc-wait", 64).source(pages))
        .unwrap();
    let lim = u.create_zone(&ZoneArgs::new("noalloc-limit", 64)).unwrap();
    lim.set_max(64);
    // A helper parks items of `lim` in its cache and stays alive.
    let (parked_tx, parked_rx) = std::sync::mpsc::channel::<()>();
    let (home_tx, home_rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        let v: Vec<usize> = (0..8)
            .map(|_| lim.alloc(Flags::NOWAIT).unwrap().as_ptr() as usize)
            .collect();
        for p in v {
            unsafe { lim.free(core::ptr::NonNull::new(p as *mut u8).unwrap()) };
        }
        parked_tx.send(()).unwrap();
        home_rx.recv().unwrap();
    });
    parked_rx.recv().unwrap();
    let mut items = [core::ptr::null_mut::<u8>(); 64];
    WATCH.with(|w| w.set(true));
    // page source failures: reclaim, backoff sleeps, retries
    pages.fail_next(3);
    let p = z.alloc(Flags::WAITOK).unwrap();
    unsafe { z.free(p) };
    // the whole limit: takes back what the helper's cache holds
    for it in items.iter_mut() {
        *it = lim.alloc(Flags::WAITOK).unwrap().as_ptr();
    }
    for it in items {
        unsafe { lim.free(core::ptr::NonNull::new(it).unwrap()) };
    }
    WATCH.with(|w| w.set(false));
    assert_eq!(pages.fails(), 3, "the source failures were retried");
    assert_eq!(
        CALLS.load(SeqCst),
        0,
        "WAITOK waits called the global allocator"
    );
    home_tx.send(()).unwrap();
    helper.join().unwrap();
}
