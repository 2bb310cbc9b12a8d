//! Hooks for a sampling heap profiler above UMA (kmem's `prof`): what it
//! needs from the calling thread's cache of a zone, and nothing the fast
//! path pays for.
//!
//! - [`GATE_SAMPLE`], a bit of the cache's gate byte that
//!   [`FastSlot::alloc_via`] tests with the bits it tested already (the
//!   mask is an immediate: the same instructions). While the owner sets it,
//!   every allocation through the slot misses, so the layer above sees each
//!   one on its slow road. The zone's own roads ignore the bit, so that
//!   slow road still allocates from the cache.
//! - [`FastSlot::sample_peek`]: how many allocations the fast path served
//!   from this thread's cache so far (the pops the cache counts lazily,
//!   see `Cache::with_slots`) and how many items its alloc bucket holds: at
//!   most that many allocations can hit before the next miss, unless frees
//!   refill the bucket.
//! - [`Zone::gate_fast_frees`]: every free of the zone takes the zone's
//!   road (the gate's `GATE_FREE`, as a limit sets it): for a layer that
//!   must see each free (kmem's `Kmem::dealloc`, whose fast path trusts
//!   the layout).
//!
//! Only the owner writes `GATE_SAMPLE`, with read-modify-writes, like the
//! drainers' writes of their bits, so neither loses the other's.

use super::super::{empty, mirror_zone_gate, Cache};
use super::super::{GATE_ALLOC, GATE_DRAIN};
use super::{with_cache, TlsAccess, TlsDescriptor};
use crate::sync::unmodeled::Ordering as UOrdering;
use crate::sync::Ordering;
use crate::zone::{Zone, FAST_FREE};
use crate::FastSlot;
use core::ptr::NonNull;

/// `gate` bit: the owner's sampler wants to see every allocation through
/// the slot ([`FastSlot::set_sample_gate`]).
pub(crate) const GATE_SAMPLE: u8 = 8;
/// `gate` bit: the owner's sampler wants to see every free through the
/// slot ([`FastSlot::set_sample_gate`]).
pub(crate) const GATE_SAMPLE_FREE: u8 = 16;

/// Most items a cache's alloc bucket ever holds ([`SamplePeek::cached`]
/// never exceeds it): a sampler whose next pick is farther away than this
/// (plus what it watches besides) needs no gate before its next look.
pub const MAX_CACHED: u32 = crate::bucket::BUCKET_MAX as u32;

/// What [`FastSlot::sample_peek`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplePeek {
    /// Allocations the fast path served from this thread's cache of the
    /// zone since the cache was registered.
    pub hits: u64,
    /// Items in the cache's alloc bucket now.
    pub cached: u32,
}

impl Cache {
    /// Owner: [`SamplePeek`] of this cache, `None` if a drainer holds it.
    #[inline(always)]
    fn sample_peek(&self) -> Option<SamplePeek> {
        if core::ptr::eq(self, empty()) || !self.enter() {
            return None;
        }
        // SAFETY: state Owned: nobody else writes the slots.
        let p = unsafe { self.peek() };
        // SAFETY: as above.
        let cached = self.alloc.with(|a| unsafe { (*a).cnt });
        self.exit();
        Some(SamplePeek {
            hits: p.allocs,
            cached,
        })
    }
}

impl FastSlot {
    /// The calling thread's cache of the slot's zone: fast-path hits so far
    /// and items in its alloc bucket; `None` when the thread has no cache
    /// of it (every operation then misses) or a drainer holds it.
    ///
    /// # Safety
    ///
    /// As [`alloc`](Self::alloc).
    #[inline]
    pub unsafe fn sample_peek<A: TlsAccess>(self) -> Option<SamplePeek> {
        // SAFETY: the caller's promise; slots come from `Zone::fast_slot`.
        unsafe { with_cache::<A, _>(self.to_bits() as usize, |c| c.sample_peek()) }
    }

    /// [`alloc_via`](Self::alloc_via) whatever the gate's sample bit says:
    /// the road of an allocation the sampler's gate sent off the fast
    /// path, once it has counted it.
    ///
    /// # Safety
    ///
    /// As [`alloc`](Self::alloc).
    #[inline]
    pub unsafe fn alloc_ungated_via<A: TlsAccess>(self) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise.
        unsafe {
            with_cache::<A, _>(self.to_bits() as usize, |c| {
                c.fast_pop::<{ GATE_DRAIN | GATE_ALLOC }>()
            })
        }
    }

    /// [`free_stamped_via`](Self::free_stamped_via) whatever the gate's
    /// sample and zone bits say (only a drainer makes it miss): the road of
    /// a free the sampler's gate sent off the fast path, once it has seen
    /// it.
    ///
    /// # Safety
    ///
    /// As [`free_stamped_via`](Self::free_stamped_via), and the zone's
    /// frees need no work (no destructor, limit or debug checks: the gate's
    /// `GATE_FREE` bit, if set, was set by [`Zone::gate_fast_frees`]).
    #[inline]
    pub unsafe fn free_stamped_ungated_via<A: TlsAccess>(
        self,
        item: NonNull<u8>,
        stamp: u64,
    ) -> bool {
        // SAFETY: the caller's promise.
        unsafe {
            with_cache::<A, _>(self.to_bits() as usize, |c| {
                c.fast_push_stamped::<GATE_DRAIN>(item.as_ptr(), stamp)
            })
        }
    }

    /// Sets or clears `GATE_SAMPLE` (`alloc`) and `GATE_SAMPLE_FREE`
    /// (`free`) on the calling thread's cache of the slot's zone: while
    /// set, [`alloc_via`](Self::alloc_via), resp.
    /// [`free_stamped_via`](Self::free_stamped_via), miss. No-op when the
    /// thread has no cache of it.
    ///
    /// # Safety
    ///
    /// As [`alloc`](Self::alloc).
    pub unsafe fn set_sample_gate(self, alloc: bool, free: bool) {
        let on = if alloc { GATE_SAMPLE } else { 0 } | if free { GATE_SAMPLE_FREE } else { 0 };
        // SAFETY: the caller's promise; slots come from `Zone::fast_slot`.
        unsafe {
            with_cache::<TlsDescriptor, _>(self.to_bits() as usize, |c| {
                if core::ptr::eq(c, empty()) {
                    return;
                }
                c.gate.fetch_or(on, Ordering::Release);
                c.gate
                    .fetch_and(!(GATE_SAMPLE | GATE_SAMPLE_FREE) | on, Ordering::Release);
            })
        }
    }
}

impl Zone {
    /// Makes every free of this zone take the zone's road from now on, in
    /// every thread (a cache registered later gets the bit at
    /// registration): the fast frees of [`FastSlot`] miss. Never undone.
    /// A thread that learns of the call through a happens-before edge (a
    /// lock, a channel) sees the bit.
    pub fn gate_fast_frees(&self) {
        self.fast.fetch_or(FAST_FREE, UOrdering::Relaxed);
        let _r = self.uma().registry_lock();
        // SAFETY: registry lock held.
        unsafe { mirror_zone_gate(self) };
    }
}
