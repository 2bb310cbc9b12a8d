//! Fork safety: what `pthread_atfork` handlers call so that a process that
//! forks while other threads allocate leaves UMA usable in the child (and
//! in the parent).
//!
//! A fork copies the address space with whatever locks other threads hold
//! at that instant, and only the forking thread exists in the child: a lock
//! held by another thread stays held forever there. So the prepare handler
//! takes every UMA lock, of every instance, in the global lock order, and
//! the parent and child handlers release them. UMA installs no handler
//! itself: kmem installs one set that covers vmem, UMA and its own locks; a
//! program that uses UMA without kmem installs
//! `pthread_atfork(prepare, parent, child)` around [`prepare`], [`parent`]
//! and [`child`] (exactly one set of handlers per process: the locks are
//! not recursive).
//!
//! # Lock order
//!
//! Every lock an allocation or a free can take, in the order the prepare
//! handler takes them (a thread only ever acquires a lock while holding
//! locks that come earlier in this list, so a prepare handler racing any
//! allocation cannot deadlock):
//!
//! 1. the default instance's bootstrap lock ([`global`](crate::global));
//! 2. per instance: the reclaim lock, then the zone-list lock (a reclaim
//!    holds both while kegs free slabs through their page sources);
//! 3. (not UMA's) the locks of the page sources: a page source is called
//!    with no lock of step 4 held, may be called with those of step 2 held,
//!    and may call into zones with `NOVM` (kmem's kernel arena holds its
//!    lock while it takes boundary tags from the btag zone, which may
//!    register a per-thread cache and fill a bucket);
//! 4. the per-thread cache registry lock (drainers, (un)registration,
//!    thread-exit flushes; it is held while caches are linked, unlinked and
//!    emptied, never while their buckets go back to zones, which may call
//!    a release, a zfini or a page source);
//! 5. every zone lock and every keg lock: they are leaves (nothing is
//!    locked while one is held), taken zone by zone;
//! 6. leaves: each instance's boot-pages lock, the TLS slot-id and
//!    pthread-key locks, the barrier's initialisation and mprotect locks.
//!
//! [`prepare_lists`] takes 1-2 and [`prepare_zones`] takes 4-6, so a caller
//! with page-source locks (kmem) takes them in between; [`prepare`] is both
//! for page sources without locks. One-time initialisations (the default
//! instance, the pthread key, the membarrier registration) run under locks
//! of this list rather than in `Once` cells, so a fork never catches one
//! half done.
//!
//! # What the child gets
//!
//! Every zone, keg, slab and bucket cache exactly as it was (they only
//! change under the locks). The forking thread's per-thread caches keep
//! working. The other threads do not exist in the child, and they were
//! running while the fork copied the address space: the child holds a
//! prefix of each one's stores (on x86-64: its stores are committed in
//! order, and it blocks at its first write after the fork write-protected
//! the page). What they changed without a lock is repaired:
//!
//! - per-thread caches: one whose owner was inside an operation (its busy
//!   flag set) may be half changed (a bucket swap half done leaves one
//!   bucket in both slots), so it is unlinked unread and its buckets are
//!   abandoned; one whose owner was not (busy clear: its last exit, a
//!   release store, followed every change) stays registered as an orphan,
//!   with its TLS link cut, and the items in its buckets come back to the
//!   zone with the next drain of the zone's caches
//!   ([`Reclaim::DrainCpu`](crate::Reclaim::DrainCpu), a limit sleeper,
//!   zone destroy); until then orphans count as registered caches for the
//!   per-thread cap;
//! - limit sleepers and page-source waiters are forgotten, and a slab-hash
//!   growth a vanished thread had started is abandoned (the next slab
//!   starts it again);
//! - the membarrier registration is renewed.
//!
//! What a vanished thread held privately at the instant of the fork (an
//! item it was allocating or freeing, a bucket it had taken out of its
//! cache, a slab it was building, the buckets of an abandoned cache) is
//! lost to the child and still counts against a zone limit: lost, never
//! corrupt.
//!
//! Do not fork from inside a UMA callback (ctor, dtor, init, fini, import,
//! release, a page source): the forking thread must hold no UMA lock.

use core::ptr;

use crate::instance::Uma;
use crate::startup;
use crate::sync::{AtomicPtr, Ordering};
use crate::{pcpu, sync};

/// Every complete instance, newest first (linked through `next_instance`;
/// instances are never freed).
static INSTANCES: AtomicPtr<Uma> = AtomicPtr::new(ptr::null_mut());
/// The head of [`INSTANCES`] when [`prepare_lists`] ran: the instances the
/// handlers hold (one created later is not on the list from here).
static HELD: AtomicPtr<Uma> = AtomicPtr::new(ptr::null_mut());

/// Adds a complete instance to the list the fork handlers lock.
pub(crate) fn register_instance(uma: &'static Uma) {
    let up = uma as *const Uma as *mut Uma;
    let mut head = INSTANCES.load(Ordering::Relaxed);
    loop {
        uma.set_next_instance(head);
        match INSTANCES.compare_exchange_weak(head, up, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// The instances from `head` on.
fn instances(head: *mut Uma) -> impl Iterator<Item = &'static Uma> {
    fn as_instance(p: *mut Uma) -> Option<&'static Uma> {
        // SAFETY: list entries (and the null end) are complete instances,
        // never freed.
        unsafe { p.as_ref() }
    }
    core::iter::successors(as_instance(head), |u| as_instance(u.next_instance()))
}

fn held() -> impl Iterator<Item = &'static Uma> {
    instances(HELD.load(Ordering::Relaxed))
}

/// Fork prepare, first half: the default instance's bootstrap lock and,
/// per instance, the reclaim and zone-list locks (steps 1-2 of the order).
///
/// # Safety
///
/// Called from a `pthread_atfork` prepare handler (or just before a direct
/// `fork`) by a thread that holds no UMA lock, followed in the same thread
/// by [`prepare_zones`] and then by exactly one of [`parent`] (in the
/// parent) or [`child`] (in the child), with no UMA call in between.
pub unsafe fn prepare_lists() {
    startup::fork_lock_global();
    // Instances registered from now on are not locked: complete ones only
    // appear at the head, so the walks below stop where this one started.
    let head = INSTANCES.load(Ordering::Acquire);
    HELD.store(head, Ordering::Relaxed);
    for u in instances(head) {
        u.fork_lock_lists();
    }
}

/// Fork prepare, second half: the registry lock, every zone and keg lock,
/// and the leaf locks (steps 4-6 of the order).
///
/// # Safety
///
/// [`prepare_lists`] was called by this thread just before, followed only
/// by the prepare calls of page sources (step 3).
pub unsafe fn prepare_zones() {
    pcpu::tls::fork_lock_registry();
    for u in held() {
        // SAFETY: prepare_lists took this instance's list lock.
        unsafe {
            u.fork_each_zone(|z| {
                z.state.force_lock();
                if let Some(k) = z.keg() {
                    if !k.fork_held.get() {
                        k.state.force_lock();
                        k.fork_held.set(true);
                    }
                }
            })
        };
    }
    for u in held() {
        u.fork_lock_boot();
    }
    pcpu::tls::fork_lock_leaves();
    sync::fork_prepare();
}

/// Fork prepare: [`prepare_lists`] then [`prepare_zones`], for programs
/// whose page sources take no lock.
///
/// # Safety
///
/// As [`prepare_lists`].
pub unsafe fn prepare() {
    // SAFETY: the caller's promise; the two halves back to back.
    unsafe {
        prepare_lists();
        prepare_zones();
    }
}

/// Releases everything the prepare calls took.
///
/// # Safety
///
/// The prepare calls ran in this thread (in a child: in the thread that
/// forked, which is this one) and were not undone.
unsafe fn release() {
    // SAFETY: every lock below was taken by prepare_lists/prepare_zones
    // in this thread (caller's promise); zone lists are walked while their
    // list locks are still held.
    unsafe {
        sync::fork_release();
        pcpu::tls::fork_unlock_leaves();
        for u in held() {
            u.fork_unlock_boot();
        }
        for u in held() {
            u.fork_each_zone(|z| {
                if let Some(k) = z.keg() {
                    if k.fork_held.get() {
                        k.fork_held.set(false);
                        k.state.force_unlock();
                    }
                }
                z.state.force_unlock();
            });
        }
        pcpu::tls::fork_unlock_registry();
        for u in held() {
            u.fork_unlock_lists();
        }
        startup::fork_unlock_global();
    }
}

/// Fork parent: releases every lock the prepare calls took.
///
/// # Safety
///
/// Called in the parent, by the thread whose prepare calls took the locks
/// ([`prepare_lists`] and [`prepare_zones`], or [`prepare`]).
pub unsafe fn parent() {
    // SAFETY: the caller's promise.
    unsafe { release() };
}

/// Fork child: releases every lock and repairs what vanished threads left
/// behind (see the module doc: orphaned per-thread caches, limit sleepers,
/// page-source waiters, slab-hash growth, the membarrier registration).
///
/// # Safety
///
/// Called in the child, by the thread that forked (the only one), whose
/// prepare calls took the locks, before any other UMA call in the child.
pub unsafe fn child() {
    // SAFETY: the caller's promise.
    unsafe { release() };
    // Single-threaded from here: ordinary locking, in the usual order.
    for u in held() {
        u.for_each_zone(|z| {
            z.sleepers.store(0, Ordering::SeqCst);
            if let Some(k) = z.keg() {
                k.fork_child_reset();
            }
            let _r = u.registry_lock();
            // SAFETY: the child of a fork, the forking thread, registry
            // lock held.
            unsafe { pcpu::fork_child_zone(z) };
        });
    }
    pcpu::fork_child_empty_cache();
    sync::fork_child();
}

/// Fork child, when the prepare calls were not made because the process
/// had one thread, the forking one (a caller such as kmem may skip them
/// then: no other thread can hold a lock, be inside an operation or leave
/// a cache behind): only what every child needs whatever the parent was
/// doing, the `membarrier` registration again.
pub fn child_of_single_thread() {
    sync::fork_child();
}

#[cfg(test)]
mod tests {
    use core::ptr::NonNull;
    use std::time::{Duration, Instant};

    use crate::instance::Uma;
    use crate::pcpu::Cache;
    use crate::sync::Ordering;
    use crate::{Flags, Reclaim, ZoneArgs, MMAP_SOURCE};

    /// Forks with the handlers' calls made by hand; the child runs `f` and
    /// exits with its result. Returns the child's exit status.
    fn fork_with(f: impl FnOnce() -> i32) -> i32 {
        let _serial = crate::tests::lock_holders_serial();
        // SAFETY: this thread holds no UMA lock; parent/child follow.
        unsafe { super::prepare() };
        // SAFETY: the child only runs `f` (UMA calls) and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: the child's only thread, after prepare.
            unsafe { super::child() };
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(99);
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(code) };
        }
        // SAFETY: after prepare in this thread.
        unsafe { super::parent() };
        assert!(pid > 0, "fork failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut status = 0;
            // SAFETY: our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                assert!(libc::WIFEXITED(status), "child died: {status:#x}");
                return libc::WEXITSTATUS(status);
            }
            if Instant::now() > deadline {
                // SAFETY: our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                panic!("child hung (killed)");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn ncaches(zone: &crate::Zone) -> usize {
        let _r = zone.uma().registry_lock();
        zone.ncaches.get()
    }

    /// Registers a cache of `zone` on a new thread, holding items, and parks
    /// the thread; returns the cache, a sender that lets the thread go, and
    /// its handle.
    fn parked_owner(
        zone: &'static crate::Zone,
    ) -> (
        *const Cache,
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<()>,
    ) {
        let (park_tx, park_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<usize>();
        let t = std::thread::spawn(move || {
            let items: Vec<NonNull<u8>> = (0..20)
                .map(|_| zone.alloc(Flags::WAITOK).unwrap())
                .collect();
            for p in items {
                // SAFETY: allocated above.
                unsafe { zone.free(p) };
            }
            let c = crate::pcpu::tls::cache_for(zone).unwrap() as *const Cache;
            ready_tx.send(c as usize).unwrap();
            park_rx.recv().unwrap();
        });
        let c = ready_rx.recv().unwrap() as *const Cache;
        (c, park_tx, t)
    }

    /// What vanished threads leave behind: a cache whose owner the fork
    /// caught inside an operation (busy), an idle cache, a limit sleeper, a
    /// page-source waiter. In the child the busy cache is dropped unread
    /// (it may be half changed), the idle one stays as a drainable orphan,
    /// and the zone has no sleepers or waiters.
    #[test]
    fn child_repairs_what_vanished_threads_left() {
        let uma: &'static Uma = Uma::bootstrap(&MMAP_SOURCE).expect("bootstrap");
        let zone = uma
            .create_zone(&ZoneArgs::new("fork orphan", 128))
            .expect("zone");
        zone.set_max(10_000);
        let (busy, busy_go, busy_t) = parked_owner(zone);
        let (_idle, idle_go, idle_t) = parked_owner(zone);
        // (Looked at before the simulated busy owner, which would make any
        // drainer of the parent wait.)
        let cached = zone.stats().cached_pcpu;
        assert!(cached >= 2, "both caches hold items");
        // SAFETY: the owner is parked, not in an operation; this simulates
        // the fork catching it inside one.
        assert!(unsafe { (*busy).enter() });
        zone.sleepers.fetch_add(1, Ordering::SeqCst);
        let keg = zone.keg().unwrap();
        keg.state.lock().mem_waiters += 1;

        let code = fork_with(|| {
            if zone.sleepers.load(Ordering::SeqCst) != 0 {
                return 1;
            }
            if keg.state.lock().mem_waiters != 0 {
                return 2;
            }
            if ncaches(zone) != 1 {
                return 3; // the busy cache is gone, the idle one stays
            }
            let orphaned = zone.stats().cached_pcpu;
            if orphaned == 0 || orphaned >= cached {
                return 4; // only the idle orphan's items are visible
            }
            zone.reclaim(Reclaim::DrainCpu);
            if zone.stats().cached_pcpu != 0 {
                return 5; // and a drain takes them back
            }
            match zone.alloc(Flags::WAITOK) {
                // SAFETY: allocated here.
                Some(p) => unsafe { zone.free(p) },
                None => return 6,
            }
            0
        });
        assert_eq!(code, 0);

        // The parent is as it was: undo the simulation, let the owners go.
        // SAFETY: paired with the enter above.
        unsafe { (*busy).exit() };
        zone.sleepers.fetch_sub(1, Ordering::SeqCst);
        keg.state.lock().mem_waiters -= 1;
        assert_eq!(ncaches(zone), 2);
        busy_go.send(()).unwrap();
        idle_go.send(()).unwrap();
        busy_t.join().unwrap();
        idle_t.join().unwrap();
        zone.check_invariants();
    }
}
