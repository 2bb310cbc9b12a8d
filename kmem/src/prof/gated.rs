//! The frees the profiler's gates send off the fast path, served right
//! away: the item goes into the thread's cache past the gate (as the fast
//! path would have put it), then the countdown of its class catches up.
//!
//! Every free of a size class is gated while `Kmem` profiles (its fast
//! free trusts the layout and would cache a sampled page block); with the
//! C ABI only those of a thread's class near its next sample (see
//! `sample`). Either way the gated free costs the checks of the fast path
//! again, one push, and a look at the cache's counts, instead of the whole
//! slow road.
// With `invariants` there is no fast path to gate (no tables): unused.
#![cfg_attr(
    feature = "invariants",
    allow(dead_code, clippy::extra_unused_type_parameters)
)]

use core::ptr::NonNull;

#[cfg_attr(feature = "invariants", allow(unused_imports))]
use crate::fast::{self, TlsAccess};

/// A gated `free(ptr)` (C ABI): true when done; false (nothing done) for
/// anything else, which the slow road then sorts out.
///
/// # Safety
///
/// As [`raw::free`](crate::raw::free).
#[inline]
pub(crate) unsafe fn free<A: TlsAccess>(ptr: *mut u8) -> bool {
    #[cfg(not(feature = "invariants"))]
    {
        let Some((c, slot)) = fast::block_slot(ptr) else {
            return false;
        };
        let key = fast::free_key();
        // SAFETY: the page metadata proved `ptr` the start of an item of
        // class `c` (a class zone: no destructor, no limit); the caller
        // gives it up.
        unsafe { push::<A>(ptr, c, slot, key) }
    }
    #[cfg(feature = "invariants")]
    {
        let _ = ptr;
        false
    }
}

/// Pushes `ptr` into this thread's cache of class `c` past the gate,
/// stamped with `key`, then lets the countdown catch up: true when done. A
/// block holding the key was freed already: left to the slow road (false),
/// which reports it.
///
/// # Safety
///
/// `ptr` is the start of an item of class `c`'s zone (no destructor, no
/// limit), given up by the caller; `slot` is that zone's fast slot.
#[cfg(not(feature = "invariants"))]
#[inline(always)]
unsafe fn push<A: TlsAccess>(ptr: *mut u8, c: usize, slot: uma::FastSlot, key: u64) -> bool {
    // SAFETY: the caller's contract.
    if unsafe {
        fast::holds_key(ptr, key)
            || !slot.free_stamped_ungated_via::<A>(NonNull::new_unchecked(ptr), key)
    } {
        return false;
    }
    after_free::<A>(c, slot);
    true
}

/// A gated `dealloc(ptr, layout)` (`Kmem`) of a block that is no sample.
///
/// # Safety
///
/// `GlobalAlloc::dealloc`'s contract, and `ptr` is no sampled block.
#[inline]
pub(crate) unsafe fn free_sized<A: TlsAccess>(ptr: *mut u8, size: usize, align: usize) -> bool {
    #[cfg(not(feature = "invariants"))]
    {
        let Some((c, slot)) = fast::layout_slot(size, align) else {
            return false;
        };
        // SAFETY: the caller's contract: an item of the class zone of this
        // layout (no destructor, no limit).
        unsafe { push::<A>(ptr, c, slot, fast::free_key()) }
    }
    #[cfg(feature = "invariants")]
    {
        let _ = (ptr, size, align);
        false
    }
}

/// A gated allocation of a size class (both front doors, from their slow
/// road): counted, then served from the thread's cache past the gate;
/// `None` (nothing done) when it is the one to sample, when the cache is
/// empty, or for any other request: the slow road then does it.
#[inline]
pub(crate) fn alloc<A: TlsAccess>(size: usize, align: usize) -> Option<NonNull<u8>> {
    #[cfg(not(feature = "invariants"))]
    {
        let (c, slot) = fast::layout_slot(size, align)?;
        let p = super::sample::alloc_counted::<A>(c, slot, super::interval())?;
        // SAFETY: a fresh item of a class zone, ours.
        unsafe { fast::clear_key(p) };
        Some(p)
    }
    #[cfg(feature = "invariants")]
    {
        let _ = (size, align);
        None
    }
}

/// The swap road's allocation while profiling (`fast::alloc_swap`): the
/// thread's free bucket swapped in and the item counted as the slow road
/// counts it (`sample::alloc_swap_counted`); `None` (nothing done but the
/// countdown brought up to date) when the slow road must serve it. The
/// item's key is the caller's to clear.
#[cold]
#[inline(never)]
pub(crate) fn alloc_swap<A: TlsAccess>(size: usize, align: usize) -> Option<NonNull<u8>> {
    #[cfg(not(feature = "invariants"))]
    {
        let (c, slot) = fast::layout_slot(size, align)?;
        super::sample::alloc_swap_counted::<A>(c, slot, super::interval())
    }
    #[cfg(feature = "invariants")]
    {
        let _ = (size, align);
        None
    }
}

/// The swap road's `free(ptr)` while profiling (`fast::free_swap`, C ABI):
/// the thread's free bucket swapped in and `ptr` pushed, then the
/// countdown and the gates of its class looked at again, as after a free
/// on the slow road (whose visit this is: the swap moved the buckets).
/// False (nothing done) when it does not serve.
///
/// # Safety
///
/// As [`raw::free`](crate::raw::free).
#[cold]
#[inline(never)]
pub(crate) unsafe fn free_swap<A: TlsAccess>(ptr: *mut u8) -> bool {
    #[cfg(not(feature = "invariants"))]
    {
        let Some((c, slot)) = fast::block_slot(ptr) else {
            return false;
        };
        let key = fast::free_key();
        if super::sample::free_gate(c) || super::all_frees_gated() {
            // The fast path missed for the gate (the swap refuses it): the
            // gated road, in the same visit.
            // SAFETY: the page metadata proved `ptr` the start of an item
            // of class `c` (a class zone: no destructor, no limit); the
            // caller gives it up.
            return unsafe { push::<A>(ptr, c, slot, key) };
        }
        // SAFETY: the page metadata proved `ptr` the start of an item of
        // class `c` (8 bytes at least); the caller gives it up.
        if unsafe {
            fast::holds_key(ptr, key)
                || !slot.free_swap_stamped_via::<A>(NonNull::new_unchecked(ptr), key)
        } {
            return false;
        }
        super::sample::after_free::<A>(c, slot, super::interval());
        true
    }
    #[cfg(feature = "invariants")]
    {
        let _ = ptr;
        false
    }
}

#[inline(always)]
fn after_free<A: TlsAccess>(c: usize, slot: uma::FastSlot) {
    // (The slot came from the published tables: the kernel is built.)
    if super::on() {
        super::sample::after_gated_push::<A>(c, slot, super::interval());
    }
}
