//! The lazy timeout under fire: with a 1 ms period, timeout passes run in
//! whichever thread allocates while other threads churn blocks across
//! threads, create and destroy zones of their own, write the statistics
//! into a growing `String` (an allocation under the zone-list lock, which
//! a pass must skip, not wait for), reclaim at every level, and the main
//! thread forks. Nothing may hang (watchdog), lose or corrupt a block
//! (content checks), or break an invariant. Its own process: the period is
//! global.
#![cfg(not(loom))]
// Test code: its unsafe blocks free what they allocated, destroy zones
// nobody uses, fork and `_exit`.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::alloc::{alloc, dealloc, Layout};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[path = "common/util.rs"]
mod util;
use util::{fill_and_free, noop_fini, watchdog, Rng};

#[global_allocator]
static A: kmem::Kmem = kmem::Kmem;

const RUN: Duration = Duration::from_secs(3);

/// A block's layout from its size (align 8); the size is stored in its
/// first word, and its other bytes hold a pattern of its address.
fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn make(size: usize) -> *mut u8 {
    let p = unsafe { alloc(layout(size)) };
    assert!(!p.is_null());
    unsafe {
        p.cast::<usize>().write(size);
        for i in 8..size.min(256) {
            p.add(i).write((p as usize as u8).wrapping_add(i as u8));
        }
    }
    p
}

fn check_and_free(p: *mut u8) {
    let size = unsafe { p.cast::<usize>().read() };
    for i in 8..size.min(256) {
        let got = unsafe { p.add(i).read() };
        assert_eq!(
            got,
            (p as usize as u8).wrapping_add(i as u8),
            "block {p:p} byte {i}"
        );
    }
    unsafe { dealloc(p, layout(size)) };
}

static SLOTS: [AtomicPtr<u8>; 64] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 64];

fn churn(seed: u64, stop: &AtomicBool) {
    let mut rng = Rng(seed);
    let mut mine: Vec<*mut u8> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let r = rng.next();
        let size = 8 + if r % 64 == 0 {
            (r >> 8) as usize % (100 << 10)
        } else {
            (r >> 8) as usize % 600
        };
        mine.push(make(size));
        if mine.len() > 3000 || r % 3 == 0 {
            let i = (r >> 20) as usize % mine.len();
            check_and_free(mine.swap_remove(i));
        }
        if r % 5 == 0 && !mine.is_empty() {
            // Hand a block to whichever thread takes this slot next.
            let p = mine.pop().unwrap();
            let old = SLOTS[(r >> 32) as usize % 64].swap(p, Ordering::AcqRel);
            if !old.is_null() {
                check_and_free(old);
            }
        }
    }
    for p in mine {
        check_and_free(p);
    }
}

fn zones(stop: &AtomicBool) -> usize {
    let u = kmem::uma().unwrap();
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) {
        let plain = u.create_zone(&uma::ZoneArgs::new("ts-plain", 96)).unwrap();
        let with_fini = u
            .create_zone(&uma::ZoneArgs::new("ts-fini", 200).fini(noop_fini))
            .unwrap();
        for z in [plain, with_fini] {
            fill_and_free(z, 3000);
        }
        for z in [plain, with_fini] {
            // (No check_invariants here: a pass or a reclaim in another
            // thread may be trimming the zone; destroy counts the leaks.)
            assert_eq!(unsafe { u.destroy(z) }, 0, "no item leaked");
        }
        rounds += 1;
    }
    rounds
}

fn stats(stop: &AtomicBool) -> usize {
    let u = kmem::uma().unwrap();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut s = String::new();
        kmem::write_stats(&mut s).unwrap();
        assert!(s.contains("ITEM"));
        // A walk of the zones that allocates while its thread holds the
        // zone list: a timeout pass in this thread must skip the list.
        let mut names = String::new();
        u.for_each_zone(|z| {
            let _ = writeln!(names, "{} {}", z.name(), z.stats().used);
        });
        assert!(names.contains("malloc-16"));
        n += 1;
    }
    n
}

fn reclaims(stop: &AtomicBool) {
    let levels = [
        uma::Reclaim::Trim,
        uma::Reclaim::Drain,
        uma::Reclaim::DrainCpu,
    ];
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        kmem::reclaim(levels[i % 3]);
        i += 1;
        thread::sleep(Duration::from_millis(7));
    }
}

/// Forks; the child allocates (every path) and `_exit`s. Returns whether it
/// exited 0 in time.
fn fork_once() -> bool {
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        for size in [8usize, 100, 3000, 40 << 10, 300 << 10] {
            let p = make(size);
            check_and_free(p);
        }
        unsafe { libc::_exit(0) };
    }
    let t = Instant::now();
    loop {
        let mut st = 0;
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0;
        }
        if t.elapsed() > Duration::from_secs(20) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn timeout_passes_race_churn_zones_statistics_reclaims_and_fork() {
    let done = Arc::new(AtomicBool::new(false));
    watchdog(done.clone(), Duration::from_secs(90), "timeout stress");
    kmem::set_timeout_period(Some(Duration::from_millis(1)));
    let passes0 = kmem::timeout_passes();
    let stop = Arc::new(AtomicBool::new(false));
    let forks = AtomicUsize::new(0);
    let (zone_rounds, stat_rounds) = thread::scope(|s| {
        for t in 0..2 {
            let stop = &stop;
            s.spawn(move || churn(0x9e37_79b9_7f4a_7c15 ^ t, stop));
        }
        let z = s.spawn(|| zones(&stop));
        let st = s.spawn(|| stats(&stop));
        s.spawn(|| reclaims(&stop));
        let end = Instant::now() + RUN;
        while Instant::now() < end {
            assert!(fork_once(), "a child hung or failed");
            forks.fetch_add(1, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        (z.join().unwrap(), st.join().unwrap())
    });
    for slot in &SLOTS {
        let p = slot.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            check_and_free(p);
        }
    }
    let passes = kmem::timeout_passes() - passes0;
    eprintln!(
        "{passes} timeout passes, {} forks, {zone_rounds} zone rounds, {stat_rounds} statistics walks",
        forks.load(Ordering::Relaxed)
    );
    assert!(passes > 100, "{passes} passes");
    assert!(zone_rounds > 0 && stat_rounds > 0);
    kmem::uma().unwrap().check_internal();
    kmem::set_timeout_period(Some(kmem::TIMEOUT_PERIOD));
    done.store(true, Ordering::Release);
}
