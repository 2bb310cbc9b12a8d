//! The per-CPU layer: in userspace, one cache per thread per zone (FreeBSD
//! `struct uma_cache` and `critical_enter()`), behind this one seam.
//!
//! A [`Cache`] holds UMA's alloc/free bucket pair. The fast path pops from
//! and pushes to the alloc bucket, so a freed item is the next one handed
//! out while it is still in this CPU's cache (FreeBSD frees into the alloc
//! bucket first for the same reason). When the alloc bucket is full the
//! slow path swaps in the free bucket's room, and when it is empty the
//! free bucket's items. Its owner thread uses it
//! without locks or atomic read-modify-write instructions; any other thread
//! (DRAIN_CPU, zone destroy, low memory, statistics) can take its buckets
//! without the owner's cooperation, through an asymmetric fence:
//!
//! - the owner marks the cache `busy` with a plain store, issues a compiler
//!   fence, and checks `drain` (a bit of the cache's `gate` byte, see
//!   below); it clears `busy` with a release store;
//! - a drainer (serialized with other drainers by the registry lock) sets
//!   `drain`, issues the *heavy* barrier (`membarrier(PRIVATE_EXPEDITED)`,
//!   which runs a full barrier on every running thread of the process; where
//!   the kernel lacks it, the mprotect TLB-shootdown trick, which interrupts
//!   the same CPUs), and
//!   waits until it sees `busy == false`; then the buckets are its own; it
//!   clears `drain` with a release store.
//!
//! Either the drainer sees the owner's `busy = true`, or the owner sees the
//! drainer's `drain = true` (Dekker's argument; membarrier supplies the
//! owner's half of the fence). Under loom both fences are SeqCst fences.
//!
//! ## The gate byte
//!
//! `drain` is bit [`GATE_DRAIN`] of the cache's `gate` byte. Its other two
//! bits mirror the zone's `fast` bits, so that the fast paths need nothing
//! but the cache: [`GATE_ALLOC`] (allocations need `alloc_finish`: a ctor,
//! INVARIANTS; constant, set at registration) and [`GATE_FREE`] (frees need
//! `free_prep`: a dtor, INVARIANTS, a limit; set at registration and by
//! `Zone::set_max`, never cleared). The owner's fast pop and push test
//! their mask of the byte with the one load the protocol already makes,
//! and miss when a bit is set: the caller then takes the zone's slow road,
//! which reads the zone's own bits. Every writer of `gate` holds the
//! registry lock; the drainer's writes are atomic read-modify-writes
//! anyway, and each one republishes the zone bits with its release.
//!
//! ## Protocol state table
//!
//! | state     | busy | drain | buckets belong to | transitions |
//! |-----------|------|-------|-------------------|-------------|
//! | Idle      | 0    | 0     | nobody            | O enters -> Owned; D requests -> Requested |
//! | Owned     | 1    | 0     | owner O           | O exits (release) -> Idle; D requests -> Contended |
//! | Requested | 0    | 1     | nobody until D's fence returns | D sees busy 0 after its fence -> Draining; O enters, sees drain -> backs off (Bypass), stays Requested |
//! | Contended | 1    | 1     | owner O (D spins, O never waits) | O exits -> Requested |
//! | Draining  | 0    | 1     | drainer D         | D takes buckets, clears drain (release) -> Idle; O enters, sees drain -> Bypass |
//! | Bypass    | (O's op, not a state of the cache) | | | O serves the op from the zone's shared path (bucket cache / keg) and returns |
//!
//! ## Limits: the per-thread cap and the sleeper veto
//!
//! With a zone limit, every installed bucket has at most the zone's
//! per-thread cap of slots (`Zone::bucket_max`), and that cap is chosen so
//! that (registered caches) x 2 buckets x cap <= limit / 2 (FreeBSD
//! `uma_zone_set_maxcache`, counting caches instead of CPUs). When a new
//! cache registers and the cap goes down, [`clamp_zone_caches`] takes the
//! now oversized buckets out of every cache of the zone, under the registry
//! lock, through the drain protocol; installs re-read the cap inside the
//! critical section, so an owner never installs a bucket above the cap it
//! could see after the clamp.
//!
//! A `WAITOK` allocation that sleeps on the limit first counts itself in
//! the zone's `sleepers`; the one that makes it non-zero then drains every
//! cache of the zone and the bucket cache. Owners check `sleepers` *inside*
//! the critical section before an item moves into a cache (a free, or a
//! refill installing a bucket) and bypass the cache when it is non-zero;
//! the bucket cache checks it under the zone lock. By the same Dekker
//! argument as above, while `sleepers` stays non-zero no item gets parked
//! where it would not wake a sleeper: either that first drain took it, or
//! the owner saw a sleeper and gave the item back to the keg (which
//! decrements the limit count and wakes the sleepers). loom models (e) and
//! (f) check this with one and two sleepers.
//!
//! The owner never blocks on a drainer and never sleeps while `busy` (bucket
//! refills, limit sleeps and page-source calls happen with `busy == 0`, on
//! buckets the owner took out of the cache). A thread's caches are flushed
//! to their zones at thread exit (a pthread key destructor, so no Rust TLS
//! destructor list and no allocation; [`exit_flush`]: each cache leaves the
//! list under the registry lock, its buckets go back after, with a pin
//! that zone destroy waits for); after that, and during TLS teardown, every
//! operation takes the shared path.

#[cfg(not(loom))]
pub(crate) mod tls;

/// A cache with no buckets and no counts, of the zone `$zone`, owned
/// through the TLS slot `$slot` (a macro, not a function: [`EMPTY_CACHE`]
/// needs a constant, and loom's atomics have no `const` constructors).
macro_rules! blank_cache {
    ($zone:expr, $slot:expr) => {
        $crate::pcpu::Cache {
            busy: $crate::sync::AtomicBool::new(false),
            gate: $crate::sync::AtomicU8::new(0),
            alloc: $crate::sync::UnsafeCell::new($crate::pcpu::CacheBucket::EMPTY),
            free: $crate::sync::UnsafeCell::new($crate::pcpu::CacheBucket::EMPTY),
            allocs: $crate::sync::unmodeled::AtomicU64::new(0),
            frees: $crate::sync::unmodeled::AtomicU64::new(0),
            zone: $zone,
            slot: $slot,
            next: core::cell::Cell::new(core::ptr::null_mut()),
            prev: core::cell::Cell::new(core::ptr::null_mut()),
            keg_misses: core::cell::Cell::new(0),
        }
    };
}

mod registry;

pub(crate) use registry::{
    clamp_zone_caches, drain_zone_caches, mirror_zone_gate, peek_zone_caches, wait_exit_flushes,
};
// Without TLS (loom) only the models register, retire and flush caches.
#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use registry::retire_locked;
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use registry::{exit_flush, register};
#[cfg(not(loom))]
pub(crate) use registry::{fork_child_empty_cache, fork_child_zone};

use core::cell::Cell;
use core::ptr::{self, NonNull};

use crate::bucket::{Bucket, OwnedBucket};
use crate::sync::unmodeled::{AtomicU64, Ordering as UOrdering};
use crate::sync::{
    owner_fence, spin_wait, AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering, UnsafeCell,
};
use crate::zone::Zone;

/// `gate` bit: a drainer wants the cache (the protocol's `drain` flag).
pub(crate) const GATE_DRAIN: u8 = 1;
/// `gate` bit: the zone's allocations need `alloc_finish` (`FAST_ALLOC`).
pub(crate) const GATE_ALLOC: u8 = 2;
/// `gate` bit: the zone's frees need `free_prep` (`FAST_FREE`).
pub(crate) const GATE_FREE: u8 = 4;

/// One bucket slot of a cache; `cnt` is authoritative while installed.
/// (`repr(C)`: what the fast path touches, the cache's flags and its alloc
/// slot, stays within the cache's first line.)
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct CacheBucket {
    pub bucket: *mut Bucket,
    pub cnt: u32,
    pub cap: u32,
    /// `cnt` when the fast path's hits were last counted (see
    /// [`Cache::with_slots`]).
    pub mark: u32,
    /// Fast-path frees pushed into this slot since then. The fast path pops
    /// from and pushes to the alloc slot only (LIFO reuse) and never
    /// touches the free slot, so its hits since the last count are
    /// `mark + lifo - cnt` allocations and `lifo` frees, both read off the
    /// alloc slot. (64 bits: a loop of pairs can run for ever without a
    /// count.)
    pub lifo: u64,
}

impl CacheBucket {
    const EMPTY: CacheBucket = CacheBucket {
        bucket: ptr::null_mut(),
        cnt: 0,
        cap: 0,
        mark: 0,
        lifo: 0,
    };

    /// Fast-path pops since the last count (of the alloc slot).
    fn pending_pops(&self) -> u64 {
        (self.mark as u64 + self.lifo).saturating_sub(self.cnt as u64)
    }

    /// Removes the bucket, writing the count back into it.
    fn take(&mut self) -> Option<OwnedBucket> {
        let (b, cnt) = (NonNull::new(self.bucket), self.cnt as usize);
        *self = CacheBucket::EMPTY;
        // SAFETY: an installed bucket is valid and the cache's alone (the
        // slot's holder is the caller); out of the slot it is the caller's.
        let mut b = unsafe { OwnedBucket::from_raw(b?) };
        b.set_filled(cnt);
        Some(b)
    }

    /// Installs `b` in the empty slot.
    fn install(&mut self, b: OwnedBucket) {
        let (cnt, cap) = (b.cnt() as u32, b.cap() as u32);
        *self = CacheBucket {
            bucket: b.into_raw().as_ptr(),
            cnt,
            cap,
            mark: cnt,
            lifo: 0,
        };
    }
}

/// A per-thread cache of one zone (FreeBSD `struct uma_cache`). What the
/// fast path touches (the flags and the bucket slots) shares the first
/// cache line.
#[repr(C, align(64))]
pub(crate) struct Cache {
    busy: AtomicBool,
    /// [`GATE_DRAIN`] | [`GATE_ALLOC`] | [`GATE_FREE`] (see the module doc).
    gate: AtomicU8,
    // owner thread only (or the drainer in state Draining)
    alloc: UnsafeCell<CacheBucket>,
    free: UnsafeCell<CacheBucket>,
    /// Requests served by the cache (FreeBSD `uc_allocs`, `uc_frees`),
    /// except the fast path's hits since the slots' marks. Written by
    /// whoever holds the cache; atomics so that a fork child can read an
    /// abandoned cache's whole.
    allocs: AtomicU64,
    frees: AtomicU64,
    // constant after register
    pub(crate) zone: *const Zone,
    /// The owner's TLS slot (null for explicitly registered caches).
    pub(crate) slot: *const AtomicPtr<Cache>,
    // under the registry lock
    pub(crate) next: Cell<*mut Cache>,
    pub(crate) prev: Cell<*mut Cache>,
    // owner thread only
    /// Refills in a row that found no full bucket in the zone's cache and
    /// went to the keg (see `Zone::grow_on_miss`).
    pub(crate) keg_misses: Cell<u32>,
}

// SAFETY: the bucket slots are only touched by the owner or by a drainer
// that holds the cache per the protocol above; links only under the
// registry lock; the rest is atomics or constant.
unsafe impl Sync for Cache {}
// SAFETY: as above.
unsafe impl Send for Cache {}

/// The cache every empty TLS slot points at: it always misses (no alloc
/// bucket, no free bucket), so the fast path needs no null check. Owners
/// of any thread may store to its `busy` flag; nobody drains it, and its
/// bucket slots are only ever read.
#[cfg(not(loom))]
pub(crate) static EMPTY_CACHE: Cache = blank_cache!(ptr::null(), ptr::null());

/// The "no cache" value of a TLS slot.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn empty() -> *mut Cache {
    &EMPTY_CACHE as *const Cache as *mut Cache
}

/// Under loom there are no TLS slots.
#[cfg(loom)]
pub(crate) fn empty() -> *mut Cache {
    ptr::null_mut()
}

/// How a zone operation reaches the calling thread's cache: through the
/// TLS table ([`tls::Tls`], every front door), or a cache named outright
/// (`&Cache`: the loom models, which have no TLS). The zone's alloc and
/// free paths are generic over it, so the models run the real paths.
pub(crate) trait ThreadCache: Copy {
    /// [`Cache::fast_pop`] on the thread's cache (`None`: miss).
    fn fast_pop<const MASK: u8>(self, zone: &Zone) -> Option<NonNull<u8>>;
    /// [`Cache::fast_push`] on the thread's cache (false: miss).
    fn fast_push<const MASK: u8>(self, zone: &Zone, item: *mut u8) -> bool;
    /// [`Cache::fast_push_unless`] with the zone's limit sleepers.
    fn fast_push_unless(self, zone: &Zone, item: *mut u8) -> Push;
    /// The thread's cache for the slow path, registered if need be;
    /// `None` for an uncached zone, a thread in teardown, no memory.
    fn cache<'a>(self, zone: &'a Zone) -> Option<&'a Cache>
    where
        Self: 'a;
}

impl ThreadCache for &Cache {
    #[inline(always)]
    fn fast_pop<const MASK: u8>(self, _: &Zone) -> Option<NonNull<u8>> {
        Cache::fast_pop::<MASK>(self)
    }

    #[inline(always)]
    fn fast_push<const MASK: u8>(self, _: &Zone, item: *mut u8) -> bool {
        Cache::fast_push::<MASK>(self, item)
    }

    #[inline(always)]
    fn fast_push_unless(self, zone: &Zone, item: *mut u8) -> Push {
        Cache::fast_push_unless(self, item, &zone.sleepers)
    }

    #[inline]
    fn cache<'a>(self, _: &'a Zone) -> Option<&'a Cache>
    where
        Self: 'a,
    {
        Some(self)
    }
}

/// Under loom there is no TLS: a zone operation outside the models'
/// explicit caches finds no cache (every fast path misses).
#[cfg(loom)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct NoCache;

#[cfg(loom)]
impl ThreadCache for NoCache {
    fn fast_pop<const MASK: u8>(self, _: &Zone) -> Option<NonNull<u8>> {
        None
    }
    fn fast_push<const MASK: u8>(self, _: &Zone, _: *mut u8) -> bool {
        false
    }
    fn fast_push_unless(self, _: &Zone, _: *mut u8) -> Push {
        Push::Full
    }
    fn cache<'a>(self, _: &'a Zone) -> Option<&'a Cache>
    where
        Self: 'a,
    {
        None
    }
}

/// The calling thread's cache, as the zone's public paths reach it.
#[cfg(not(loom))]
pub(crate) use tls::Tls as ThisThread;
/// The calling thread's cache, as the zone's public paths reach it.
#[cfg(loom)]
pub(crate) use NoCache as ThisThread;

/// What a peek at a cache saw.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CachePeek {
    pub items: usize,
    pub allocs: u64,
    pub frees: u64,
}

/// What an owner's push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// The item is in the free bucket.
    Done,
    /// No room (or a drainer holds the cache): take the slow path.
    Full,
    /// A limit sleeper vetoed caching: give the item back to the keg.
    Bypass,
}

impl Cache {
    /// Owner: enter the cache. False when a drainer wants it (Bypass).
    #[inline(always)]
    pub(crate) fn enter(&self) -> bool {
        self.enter_unless::<GATE_DRAIN>()
    }

    /// Owner: enter the cache unless a bit of `MASK` (which includes
    /// [`GATE_DRAIN`]) is set in the gate.
    #[inline(always)]
    fn enter_unless<const MASK: u8>(&self) -> bool {
        self.busy.store(true, Ordering::Relaxed);
        owner_fence();
        if self.gated::<MASK>() {
            self.busy.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Whether a bit of `MASK` is set in the gate: an acquire load of it.
    /// On x86-64 a `test` of the byte in memory against the immediate and
    /// a branch out of the `asm!`: two instructions where the atomic load,
    /// which LLVM never folds into the `test`, and the test take three.
    /// (A plain load is an acquire on x86-64, and the `asm!`, which may
    /// read and write memory, is a compiler fence as `owner_fence` is.)
    #[inline(always)]
    fn gated<const MASK: u8>(&self) -> bool {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        {
            // SAFETY: reads the gate byte of this live cache and branches;
            // it writes nothing and touches no stack.
            unsafe {
                core::arch::asm!(
                    "test byte ptr [{cache} + {gate}], {mask}",
                    "jnz {gated}",
                    cache = in(reg) self as *const Cache,
                    gate = const core::mem::offset_of!(Cache, gate),
                    mask = const MASK,
                    gated = label { return true; },
                    options(nostack),
                );
            }
            false
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        {
            self.gate.load(Ordering::Acquire) & MASK != 0
        }
    }

    /// Owner: leave the cache.
    #[inline(always)]
    pub(crate) fn exit(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// Owner fast path: pop an item from the alloc bucket (`None` on miss:
    /// empty, or a bit of `MASK` is set in the gate; `MASK` includes
    /// [`GATE_DRAIN`]).
    #[inline(always)]
    pub(crate) fn fast_pop<const MASK: u8>(&self) -> Option<NonNull<u8>> {
        if !self.enter_unless::<MASK>() {
            return None;
        }
        // SAFETY: state Owned: the owner alone writes the slots (the shared
        // EMPTY_CACHE is only read: its cnt is 0, so no `&mut` is made); an
        // installed bucket has `cnt` valid, non-null items. The pop is
        // counted later, from the slot's mark.
        let item = self.alloc.with_mut(|b| unsafe {
            let n = (*b).cnt.checked_sub(1)?;
            let b = &mut *b;
            b.cnt = n;
            Some(NonNull::new_unchecked(
                *Bucket::items(b.bucket).add(n as usize),
            ))
        });
        self.exit();
        item
    }

    /// Owner fast path: push an item into the alloc bucket (false if it is
    /// full, or a bit of `MASK`, which includes [`GATE_DRAIN`], is set in
    /// the gate).
    #[inline(always)]
    pub(crate) fn fast_push<const MASK: u8>(&self, item: *mut u8) -> bool {
        self.push_checked::<MASK>(item, None) == Push::Done
    }

    /// Owner fast path for zones that may have limit sleepers: as
    /// [`fast_push`](Self::fast_push), but a non-zero `sleepers`, read inside
    /// the critical section, vetoes the push ([`Push::Bypass`]).
    #[inline(always)]
    pub(crate) fn fast_push_unless(&self, item: *mut u8, sleepers: &AtomicUsize) -> Push {
        self.push_checked::<GATE_DRAIN>(item, Some(sleepers))
    }

    /// Owner fast path: as [`fast_push`](Self::fast_push), and when the
    /// item went in, `stamp` is written into its first word before the
    /// cache is left (so no drainer can have taken the item yet).
    #[inline(always)]
    pub(crate) fn fast_push_stamped<const MASK: u8>(&self, item: *mut u8, stamp: u64) -> bool {
        if !self.enter_unless::<MASK>() {
            return false;
        }
        // SAFETY: as in `push_checked`; the item is the caller's (being
        // freed), at least 8 bytes and 8-aligned (every kmem class), and in
        // the cache only from the push on, which the owner still holds.
        let ok = self.alloc.with_mut(|a| unsafe {
            if (*a).cnt < (*a).cap {
                let a = &mut *a;
                *Bucket::items(a.bucket).add(a.cnt as usize) = item;
                a.cnt += 1;
                a.lifo += 1;
                item.cast::<u64>().write(stamp);
                true
            } else {
                false
            }
        });
        self.exit();
        ok
    }

    #[inline(always)]
    fn push_checked<const MASK: u8>(&self, item: *mut u8, sleepers: Option<&AtomicUsize>) -> Push {
        if !self.enter_unless::<MASK>() {
            return Push::Full;
        }
        if let Some(s) = sleepers {
            if s.load(Ordering::SeqCst) > 0 {
                self.exit();
                return Push::Bypass;
            }
        }
        // SAFETY: state Owned; slot `cnt < cap` of an installed bucket (the
        // shared EMPTY_CACHE has cap 0 and is only read). Into the alloc
        // bucket, so the next allocation reuses the item while it is in
        // this CPU's cache (LIFO, FreeBSD's order in `uma_zfree_arg`); when
        // it is full the slow path moves it to the free slot
        // (`push_after_swap`). Counted later, from the slot's `lifo`.
        let ok = self.alloc.with_mut(|a| unsafe {
            if (*a).cnt < (*a).cap {
                let a = &mut *a;
                *Bucket::items(a.bucket).add(a.cnt as usize) = item;
                a.cnt += 1;
                a.lifo += 1;
                true
            } else {
                false
            }
        });
        self.exit();
        if ok {
            Push::Done
        } else {
            Push::Full
        }
    }

    // ---- owner slow-path steps; call between enter() and exit() ----

    /// Runs `f` on the (alloc, free) bucket slots, for every change to them
    /// but the fast path's. The fast path counts nothing (an increment per
    /// hit was a tenth of its instructions): its hits since the slots'
    /// marks are added to the counters first, and the marks set to the
    /// counts after `f`, whose own moves are no cache hits (swaps, installs,
    /// takes) or are counted by the zone (the slow path's pop and push).
    ///
    /// # Safety
    ///
    /// The caller holds the cache (state Owned, or Draining for the
    /// drainer), which is not `EMPTY_CACHE`.
    unsafe fn with_slots<R>(&self, f: impl FnOnce(&mut CacheBucket, &mut CacheBucket) -> R) -> R {
        self.alloc.with_mut(|a| {
            self.free.with_mut(|fr| {
                // SAFETY: the caller holds the cache: nobody else touches
                // the slots, and it is no shared EMPTY_CACHE.
                let (a, fr) = unsafe { (&mut *a, &mut *fr) };
                let (pops, pushes) = (a.pending_pops(), a.lifo);
                if pops != 0 {
                    let n = self.allocs.load(UOrdering::Relaxed) + pops;
                    self.allocs.store(n, UOrdering::Relaxed);
                }
                if pushes != 0 {
                    let n = self.frees.load(UOrdering::Relaxed) + pushes;
                    self.frees.store(n, UOrdering::Relaxed);
                }
                let r = f(a, fr);
                a.mark = a.cnt;
                a.lifo = 0;
                fr.mark = fr.cnt;
                fr.lifo = 0;
                r
            })
        })
    }

    /// Owner, after a fast pop missed: the first step of the zone's miss
    /// road alone. Enter (unless a bit of `MASK`, which includes
    /// [`GATE_DRAIN`], is set), [`pop_after_swap`](Self::pop_after_swap),
    /// leave; the item is counted as the zone counts its slow road, and
    /// the zone's slow-path hook runs. `None` if it did not serve (nothing
    /// in either bucket, or the gate refused). The front doors' swap road
    /// ([`FastSlot::alloc_swap_via`](crate::FastSlot::alloc_swap_via)).
    ///
    /// # Safety
    ///
    /// The calling thread owns this cache, which is not `EMPTY_CACHE`; the
    /// zone has no constructor and no INVARIANTS checks to run on the way
    /// out (its `GATE_ALLOC` bit, which `MASK` must include, says so).
    pub(crate) unsafe fn swap_alloc<const MASK: u8>(&self) -> Option<NonNull<u8>> {
        if !self.enter_unless::<MASK>() {
            return None;
        }
        let item = NonNull::new(self.pop_after_swap());
        self.exit();
        let item = item?;
        self.count_swap(true);
        Some(item)
    }

    /// Owner, after a fast push missed: as [`swap_alloc`](Self::swap_alloc)
    /// for a free, [`push_after_swap`](Self::push_after_swap); when the
    /// item went in, `stamp` is written into its first word before the
    /// cache is left (as [`fast_push_stamped`](Self::fast_push_stamped)).
    /// False (nothing done) if it did not serve.
    ///
    /// # Safety
    ///
    /// As [`swap_alloc`](Self::swap_alloc), with the zone's `GATE_FREE`
    /// (no destructor, limit or INVARIANTS checks); `item` came from the
    /// zone, is not freed since, and is at least 8 bytes, 8-aligned.
    pub(crate) unsafe fn swap_free_stamped<const MASK: u8>(
        &self,
        item: NonNull<u8>,
        stamp: u64,
    ) -> bool {
        if !self.enter_unless::<MASK>() {
            return false;
        }
        let ok = self.push_after_swap(item.as_ptr());
        if ok {
            // SAFETY: the caller's promise; the item is in the cache only
            // from the push on, and the owner still holds it.
            unsafe { item.as_ptr().cast::<u64>().write(stamp) };
        }
        self.exit();
        if ok {
            self.count_swap(false);
        }
        ok
    }

    /// Counts a swap road's allocation (`alloc`) or free in the zone, as
    /// its slow road counts, and runs the zone's slow-path hook.
    fn count_swap(&self, alloc: bool) {
        // SAFETY: a registered cache's zone outlives it.
        let zone = unsafe { &*self.zone };
        if alloc {
            zone.allocs.fetch_add(1, UOrdering::Relaxed);
        } else {
            zone.frees.fetch_add(1, UOrdering::Relaxed);
        }
        zone.run_slow_hook();
    }

    /// Alloc side: swap the pair if the alloc bucket is empty and the free
    /// bucket is not; then pop if possible.
    pub(crate) fn pop_after_swap(&self) -> *mut u8 {
        let pop = |a: &mut CacheBucket, f: &mut CacheBucket| {
            if a.cnt == 0 && f.cnt > 0 {
                core::mem::swap(a, f);
            }
            if a.cnt == 0 {
                ptr::null_mut()
            } else {
                a.cnt -= 1;
                // SAFETY: an installed bucket has `cnt` valid items.
                unsafe { *Bucket::items(a.bucket).add(a.cnt as usize) }
            }
        };
        // SAFETY: state Owned (caller entered, on a registered cache).
        unsafe { self.with_slots(pop) }
    }

    /// Free side: push into the alloc bucket if it has room, else swap in
    /// the free bucket if that has room (the full one waits in the free
    /// slot, to be swapped back by an allocation or traded at the zone)
    /// and push there.
    pub(crate) fn push_after_swap(&self, item: *mut u8) -> bool {
        let push = |a: &mut CacheBucket, f: &mut CacheBucket| {
            if a.cnt == a.cap {
                if f.cnt == f.cap {
                    return false;
                }
                core::mem::swap(a, f);
            }
            // SAFETY: slot `cnt < cap` of an installed bucket.
            unsafe { *Bucket::items(a.bucket).add(a.cnt as usize) = item };
            a.cnt += 1;
            true
        };
        // SAFETY: state Owned (caller entered, on a registered cache).
        unsafe { self.with_slots(push) }
    }

    /// Takes the alloc bucket out (`None` if none).
    pub(crate) fn take_alloc(&self) -> Option<OwnedBucket> {
        // SAFETY: state Owned or Draining: the caller holds the cache (a
        // registered one: EMPTY_CACHE is never entered for this).
        unsafe { self.with_slots(|a, _| a.take()) }
    }

    /// Takes the free bucket out (`None` if none).
    pub(crate) fn take_free(&self) -> Option<OwnedBucket> {
        // SAFETY: as take_alloc.
        unsafe { self.with_slots(|_, f| f.take()) }
    }

    /// Installs `b` as the alloc bucket if that slot is empty and `b` fits
    /// the per-thread cap `cap` (its items; its slots are cut down to it);
    /// else `b` comes back.
    ///
    /// # Safety
    ///
    /// The caller holds the cache.
    pub(crate) unsafe fn try_install_alloc(
        &self,
        b: OwnedBucket,
        cap: usize,
    ) -> Result<(), OwnedBucket> {
        // SAFETY: caller contract.
        unsafe { self.with_slots(|a, _| install_if_empty(a, b, cap)) }
    }

    /// Installs `b` as the free bucket, as
    /// [`try_install_alloc`](Self::try_install_alloc).
    ///
    /// # Safety
    ///
    /// As [`try_install_alloc`](Self::try_install_alloc).
    pub(crate) unsafe fn try_install_free(
        &self,
        b: OwnedBucket,
        cap: usize,
    ) -> Result<(), OwnedBucket> {
        // SAFETY: caller contract.
        unsafe { self.with_slots(|_, f| install_if_empty(f, b, cap)) }
    }

    /// Takes out the installed buckets with more than `cap` slots (the cap
    /// went down); `None` where a slot is kept or empty.
    ///
    /// # Safety
    ///
    /// The caller holds the cache.
    unsafe fn take_over_cap(&self, cap: usize) -> [Option<OwnedBucket>; 2] {
        let take = |c: &mut CacheBucket| {
            if c.cap as usize > cap {
                c.take()
            } else {
                None
            }
        };
        // SAFETY: the caller holds the cache.
        unsafe { self.with_slots(|a, f| [take(a), take(f)]) }
    }

    // ---- foreign side ----

    /// Drainer: take the cache (Requested -> Draining).
    ///
    /// # Safety
    ///
    /// The registry lock is held (drainers are serialized) and the cache is
    /// registered.
    pub(crate) unsafe fn acquire_foreign(&self) {
        self.gate.fetch_or(GATE_DRAIN, Ordering::SeqCst);
        crate::sync::drainer_fence();
        while self.busy.load(Ordering::Acquire) {
            spin_wait();
        }
    }

    /// Drainer: give the cache back (Draining -> Idle).
    ///
    /// # Safety
    ///
    /// Paired with [`acquire_foreign`](Self::acquire_foreign).
    pub(crate) unsafe fn release_foreign(&self) {
        self.gate.fetch_and(!GATE_DRAIN, Ordering::Release);
    }

    /// Drainer or exiting owner: the counters and the cached item count.
    ///
    /// # Safety
    ///
    /// The caller holds the cache.
    pub(crate) unsafe fn peek(&self) -> CachePeek {
        // SAFETY: the caller holds the cache (see the state table).
        let a = self.alloc.with(|a| unsafe { *a });
        // SAFETY: as above.
        let f = self.free.with(|f| unsafe { *f });
        CachePeek {
            items: (a.cnt + f.cnt) as usize,
            allocs: self.allocs.load(UOrdering::Relaxed) + a.pending_pops(),
            frees: self.frees.load(UOrdering::Relaxed) + a.lifo,
        }
    }

    /// Checks the installed buckets' shape. Test aid.
    ///
    /// # Safety
    ///
    /// The caller holds the cache.
    pub(crate) unsafe fn check(&self, cap: usize) {
        // SAFETY: the caller holds the cache.
        let a = self.alloc.with(|a| unsafe { *a });
        // SAFETY: as above.
        let f = self.free.with(|f| unsafe { *f });
        assert!(
            a.cnt as u64 <= a.mark as u64 + a.lifo,
            "alloc slot gained items the fast path did not count"
        );
        assert!(
            f.cnt == f.mark && f.lifo == 0,
            "the fast path touched the free slot"
        );
        for cb in [a, f] {
            if cb.bucket.is_null() {
                assert!(
                    cb.cnt == 0 && cb.cap == 0 && cb.mark == 0 && cb.lifo == 0,
                    "empty cache slot with counts"
                );
            } else {
                assert!(cb.cnt <= cb.cap, "cache bucket over capacity");
                // SAFETY: an installed bucket is valid.
                let bcap = unsafe { (*cb.bucket).cap };
                assert_eq!(cb.cap as u16, bcap, "cache cap differs from bucket's");
                assert!(
                    cb.cap as usize <= cap,
                    "cache bucket of {} slots over the per-thread cap {}",
                    cb.cap,
                    cap
                );
            }
        }
    }
}

/// Installs `b` in the bucket slot `c` if the slot is empty and `b`'s
/// items fit `cap` (its slots are cut down to `cap`); else `b` comes back.
fn install_if_empty(
    c: &mut CacheBucket,
    mut b: OwnedBucket,
    cap: usize,
) -> Result<(), OwnedBucket> {
    if c.bucket.is_null() && cap > 0 && b.cnt() <= cap {
        b.limit_cap(cap);
        c.install(b);
        Ok(())
    } else {
        Err(b)
    }
}
