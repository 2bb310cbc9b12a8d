//! The registry of per-thread caches: each zone's list of its caches,
//! under the registry lock, and what walks it (FreeBSD's loops over
//! `uz_cpu[]`): registration, the cap clamps and gate mirrors of
//! `Zone::set_max`, drains (DRAIN_CPU, zone destroy, limit sleepers),
//! thread-exit flushes, statistics peeks and the fork child's clean-up.
//! Every foreign touch of a cache goes through the drain protocol of the
//! parent module.

use core::ptr::{self, NonNull};

#[cfg(not(loom))]
use super::GATE_DRAIN;
use super::{empty, Cache, CachePeek, GATE_ALLOC, GATE_FREE};
#[cfg(not(loom))]
use super::{tls, EMPTY_CACHE};
use crate::bucket::{BucketList, OwnedBucket};
use crate::instance::Uma;
use crate::sync::unmodeled::Ordering as UOrdering;
use crate::sync::{spin_wait, AtomicPtr, MutexGuard, Ordering};
use crate::zone::{Zone, FAST_ALLOC, FAST_FREE};

/// The `gate` bits mirroring the zone's `fast` bits.
fn zone_gate(zone: &Zone) -> u8 {
    let fast = zone.fast.load(UOrdering::Relaxed);
    let mut g = 0;
    if fast & FAST_ALLOC != 0 {
        g |= GATE_ALLOC;
    }
    if fast & FAST_FREE != 0 {
        g |= GATE_FREE;
    }
    g
}

/// Registers a new cache of `zone` (memory from "UMA Caches"), linked on the
/// zone's cache list under the registry lock. `slot` is the owner's TLS slot
/// or null.
pub(crate) fn register(zone: &Zone, slot: *const AtomicPtr<Cache>) -> *mut Cache {
    crate::sync::init_barrier();
    let uma = zone.uma();
    let Some(mem) = uma.caches_zone().internal_alloc(zone.internal_flags()) else {
        return ptr::null_mut();
    };
    let c: *mut Cache = mem.as_ptr().cast();
    // SAFETY: mem is an unused "UMA Caches" item, sized and aligned for Cache.
    unsafe {
        c.write(blank_cache!(zone, slot));
    }
    let over = {
        let _r = uma.registry_lock();
        // The zone's bits, read under the registry lock: a `set_max` either
        // set FAST_FREE before its own registry section (we see it) or marks
        // this cache in it (it is linked by then).
        // SAFETY: c is fresh, written above.
        unsafe { (*c).gate.store(zone_gate(zone), Ordering::Relaxed) };
        // SAFETY: registry lock held; c is fresh.
        unsafe { link(zone, c) };
        if !slot.is_null() {
            // SAFETY: slot is the calling owner's live TLS slot.
            unsafe { (*slot).store(c, Ordering::Relaxed) };
        }
        // One more cache: with a limit the per-thread cap may go down.
        if zone.update_caches_locked() {
            // SAFETY: registry lock held.
            unsafe { clamp_zone_caches(zone) }
        } else {
            BucketList::new()
        }
    };
    zone.release_list(over);
    c
}

/// Takes every bucket above the zone's per-thread cap out of every cache
/// of `zone` (the cap went down: FreeBSD `zone_update_caches`), through the
/// drain protocol, and returns them.
///
/// # Safety
///
/// The registry lock is held.
pub(crate) unsafe fn clamp_zone_caches(zone: &Zone) -> BucketList {
    let cap = zone.bucket_max.load(UOrdering::Relaxed);
    let mut out = BucketList::new();
    let mut c = zone.caches.get();
    while !c.is_null() {
        // SAFETY: registry lock held (drainers serialized); c is a
        // registered cache, held between acquire and release; the buckets
        // taken out of it are ours.
        unsafe {
            (*c).acquire_foreign();
            for b in (*c).take_over_cap(cap) {
                out.push_some(b);
            }
            (*c).release_foreign();
            c = (*c).next.get();
        }
    }
    out
}

/// Mirrors the zone's `fast` bits into the gate of every cache of `zone`
/// (`Zone::set_max` set `FAST_FREE`). The bits are never cleared.
///
/// # Safety
///
/// The registry lock is held.
pub(crate) unsafe fn mirror_zone_gate(zone: &Zone) {
    let g = zone_gate(zone);
    let mut c = zone.caches.get();
    while !c.is_null() {
        // SAFETY: registry lock held; c is a registered cache. Only the
        // owner reads the gate meanwhile; it may miss the bit for an
        // operation or two, as it may miss the zone's relaxed `fast` bits.
        unsafe {
            (*c).gate.fetch_or(g, Ordering::Release);
            c = (*c).next.get();
        }
    }
}

/// # Safety
///
/// Registry lock held; `c` is valid and unlinked.
unsafe fn link(zone: &Zone, c: *mut Cache) {
    let head = zone.caches.get();
    // SAFETY: caller contract; head is a valid linked cache.
    unsafe {
        (*c).next.set(head);
        (*c).prev.set(ptr::null_mut());
        if !head.is_null() {
            (*head).prev.set(c);
        }
    }
    zone.caches.set(c);
    zone.ncaches.set(zone.ncaches.get() + 1);
}

/// # Safety
///
/// Registry lock held; `c` is linked on `zone`'s list.
pub(crate) unsafe fn unlink(zone: &Zone, c: *mut Cache) {
    // SAFETY: caller contract.
    unsafe {
        let (p, n) = ((*c).prev.get(), (*c).next.get());
        if p.is_null() {
            zone.caches.set(n);
        } else {
            (*p).next.set(n);
        }
        if !n.is_null() {
            (*n).prev.set(p);
        }
    }
    zone.ncaches.set(zone.ncaches.get() - 1);
}

/// Takes every bucket out of every cache of `zone` without the owners'
/// help (DRAIN_CPU). With `detach`, also unregisters the caches (zone
/// destroy): their TLS slots are cleared and their memory freed. Returns
/// the buckets.
pub(crate) fn drain_zone_caches(zone: &Zone, detach: bool) -> BucketList {
    let uma: &Uma = zone.uma();
    let mut out = BucketList::new();
    let mut dead: *mut Cache = ptr::null_mut();
    {
        let _r = uma.registry_lock();
        let mut c = zone.caches.get();
        while !c.is_null() {
            // SAFETY: registry lock held; c is a registered cache; the
            // buckets taken out of it are ours.
            unsafe {
                let next = (*c).next.get();
                (*c).acquire_foreign();
                for b in [(*c).take_alloc(), (*c).take_free()] {
                    out.push_some(b);
                }
                if detach {
                    let p = (*c).peek();
                    zone.fold_counts(p.allocs, p.frees);
                    if !(*c).slot.is_null() {
                        (*(*c).slot).store(empty(), Ordering::Relaxed);
                    }
                    unlink(zone, c);
                    (*c).next.set(dead);
                    dead = c;
                } else {
                    (*c).release_foreign();
                }
                c = next;
            }
        }
    }
    while !dead.is_null() {
        // SAFETY: unlinked caches nobody references any more.
        unsafe {
            let next = (*dead).next.get();
            uma.caches_zone()
                .internal_free(core::ptr::NonNull::new_unchecked(dead.cast()));
            dead = next;
        }
    }
    out
}

/// Unregisters one cache from its owner's side (thread exit, or an
/// explicit cache in tests): its buckets go to the zone.
///
/// # Safety
///
/// Called by the owner (not inside an operation on the cache) with the
/// registry lock held by the caller (`_r`), `c` registered.
pub(crate) unsafe fn retire_locked(c: *mut Cache) -> [Option<OwnedBucket>; 2] {
    // SAFETY: caller contract: registry lock held, so no drainer holds c,
    // and the owner is not inside an operation.
    unsafe {
        let zone = &*(*c).zone;
        let p = (*c).peek();
        zone.fold_counts(p.allocs, p.frees);
        let bs = [(*c).take_alloc(), (*c).take_free()];
        if !(*c).slot.is_null() {
            (*(*c).slot).store(empty(), Ordering::Relaxed);
        }
        unlink(zone, c);
        // One cache fewer: the per-thread cap can only go up, so there is
        // nothing to clamp.
        let down = zone.update_caches_locked();
        debug_assert!(!down, "cap went down on unregister");
        bs
    }
}

/// Thread exit (or a model's stand-in for it): retires the owner's cache
/// in `slot`, if it still has one, and gives its buckets back to the zone.
///
/// The cache leaves the zone's list under the registry lock (`registry`,
/// taken by the caller), but its buckets go back after the lock is
/// dropped: giving them back may run application code (a cache zone's
/// release, a secondary zone's zfini; kmem's quantum caches take the vmem
/// arena lock there), and that code may wait for a thread that is itself
/// waiting for the registry lock to register a cache. Every other path
/// that gives buckets back (drains, clamps, destroy) runs its callbacks
/// without the lock too. Meanwhile the zone is pinned (`exit_pins`): a
/// destroy that missed this cache on the list waits for the pin, so the
/// zone outlives the flush and its items are all back before destroy
/// counts them.
///
/// # Safety
///
/// Called by the owner of `slot` (a TLS slot or a model's stand-in), not
/// inside an operation on its cache; the slot's cache is never used again.
pub(crate) unsafe fn exit_flush(slot: &AtomicPtr<Cache>, registry: MutexGuard<'_, ()>) {
    let c = slot.load(Ordering::Relaxed);
    if c.is_null() || c == empty() {
        // Never registered, or detached by a zone destroy (under the lock).
        return;
    }
    // SAFETY: registry lock held; c is our registered cache (only a destroy,
    // under the lock, could have detached it, and then the slot would be
    // empty) and we are not inside an operation on it.
    let (zone, bs) = unsafe {
        let zone = &*(*c).zone;
        let bs = retire_locked(c);
        zone.exit_pins.fetch_add(1, Ordering::Relaxed);
        (zone, bs)
    };
    drop(registry);
    for b in bs.into_iter().flatten() {
        zone.put_bucket(b);
    }
    // SAFETY: after retire_locked nobody references c: it goes back to
    // "UMA Caches".
    unsafe {
        zone.uma()
            .caches_zone()
            .internal_free(NonNull::new_unchecked(c.cast()));
    }
    // The last touch of the zone: a destroy waiting for the pin may free
    // it from here on.
    zone.exit_pins.fetch_sub(1, Ordering::Release);
}

/// Zone destroy, after its caches are detached: waits until no exiting
/// thread is still giving buckets back to `zone` ([`exit_flush`]).
pub(crate) fn wait_exit_flushes(zone: &Zone) {
    while zone.exit_pins.load(Ordering::Acquire) != 0 {
        spin_wait();
    }
}

/// Peeks at every cache of `zone` (statistics, invariant checks), holding
/// each through the protocol for the moment of the look.
pub(crate) fn peek_zone_caches(zone: &Zone, check: bool) -> CachePeek {
    let uma = zone.uma();
    let mut sum = CachePeek::default();
    let _r = uma.registry_lock();
    let mut c = zone.caches.get();
    while !c.is_null() {
        // SAFETY: registry lock held; registered cache.
        unsafe {
            (*c).acquire_foreign();
            let p = (*c).peek();
            if check {
                (*c).check(zone.bucket_max.load(UOrdering::Relaxed));
            }
            (*c).release_foreign();
            sum.items += p.items;
            sum.allocs += p.allocs;
            sum.frees += p.frees;
            c = (*c).next.get();
        }
    }
    sum
}

/// Fork child: every thread but the forking one is gone, and none of them
/// will finish the operation it was in. The child's memory holds a prefix
/// of each vanished thread's stores (they were running while the fork
/// copied the address space), so a cache whose owner was inside an
/// operation (`busy` set) may be half changed (a bucket swap half done:
/// one bucket in both slots) and must never be drained: it is unlinked and
/// its buckets are abandoned (their items are lost to the child, and count
/// against a zone limit). A cache with `busy` clear is whole (its owner's
/// last exit, a release store, came after every change of the operation):
/// it stays registered as an orphan, with its TLS link cut (a vanished
/// thread's TLS memory may be reused or unmapped), and its buckets go back
/// to the zone with the next drain of the zone's caches
/// (`Reclaim::DrainCpu`, a limit sleeper, zone destroy). The forking
/// thread is in none of its operations: its caches stay as they are.
///
/// # Safety
///
/// In the child of a fork, called by the thread that forked, with the
/// registry lock held.
#[cfg(not(loom))]
pub(crate) unsafe fn fork_child_zone(zone: &Zone) {
    let mut c = zone.caches.get();
    let mut dropped = false;
    while !c.is_null() {
        // SAFETY: registry lock held (the list is stable; no drainer runs);
        // no other thread exists, so the flags and the slot link are ours
        // to rewrite.
        unsafe {
            let next = (*c).next.get();
            // No drainer held a cache at the fork (fork prepare waited for
            // the registry lock), so `drain` is clear; keep it so.
            (*c).gate.fetch_and(!GATE_DRAIN, Ordering::Relaxed);
            if !(*c).slot.is_null() && !tls::is_own_slot((*c).slot) {
                (*c).slot = ptr::null();
            }
            if (*c).busy.load(Ordering::Relaxed) {
                // Caught inside an operation: abandon it (never drained,
                // never freed: its memory is simply leaked). Its request
                // counters are whole atomics: keep them in the statistics
                // (the fast path's hits since the slots' marks are lost
                // with its buckets: the slots may be half changed).
                zone.fold_counts(
                    (*c).allocs.load(UOrdering::Relaxed),
                    (*c).frees.load(UOrdering::Relaxed),
                );
                unlink(zone, c);
                (*c).next.set(ptr::null_mut());
                (*c).prev.set(ptr::null_mut());
                dropped = true;
            }
            c = next;
        }
    }
    // A thread that was giving an exited cache's buckets back is gone
    // (its buckets are lost to the child, as an abandoned cache's are):
    // nothing will drop its pin.
    zone.exit_pins.store(0, Ordering::Relaxed);
    if dropped {
        // Fewer caches: the per-thread cap can only go up.
        zone.update_caches_locked();
    }
}

/// Fork child: owners of every thread store to `EMPTY_CACHE.busy`; clear
/// what a vanished one left set (nobody waits on it, but keep it tidy).
#[cfg(not(loom))]
pub(crate) fn fork_child_empty_cache() {
    EMPTY_CACHE.busy.store(false, Ordering::Relaxed);
}
