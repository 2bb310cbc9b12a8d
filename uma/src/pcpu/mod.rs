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

use core::cell::Cell;
use core::ptr::{self, NonNull};

use crate::bucket::{Bucket, BucketList};
use crate::startup::Uma;
use crate::sync::unmodeled::{AtomicU64, Ordering as UOrdering};
use crate::sync::{
    owner_fence, spin_wait, AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, MutexGuard, Ordering,
    UnsafeCell,
};
use crate::zone::{Zone, FAST_ALLOC, FAST_FREE};

/// `gate` bit: a drainer wants the cache (the protocol's `drain` flag).
pub(crate) const GATE_DRAIN: u8 = 1;
/// `gate` bit: the zone's allocations need `alloc_finish` (`FAST_ALLOC`).
pub(crate) const GATE_ALLOC: u8 = 2;
/// `gate` bit: the zone's frees need `free_prep` (`FAST_FREE`).
pub(crate) const GATE_FREE: u8 = 4;

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
    fn take(&mut self) -> *mut Bucket {
        let b = self.bucket;
        if !b.is_null() {
            // SAFETY: an installed bucket is valid and owned by the cache.
            unsafe { (*b).cnt = self.cnt as u16 };
        }
        *self = CacheBucket::EMPTY;
        b
    }

    /// # Safety
    ///
    /// `b` is a valid bucket the caller owns; the slot is empty.
    unsafe fn install(&mut self, b: *mut Bucket) {
        // SAFETY: caller contract.
        unsafe {
            *self = CacheBucket {
                bucket: b,
                cnt: (*b).cnt as u32,
                cap: (*b).cap as u32,
                mark: (*b).cnt as u32,
                lifo: 0,
            };
        }
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
pub(crate) static EMPTY_CACHE: Cache = Cache {
    busy: AtomicBool::new(false),
    gate: AtomicU8::new(0),
    alloc: UnsafeCell::new(CacheBucket::EMPTY),
    free: UnsafeCell::new(CacheBucket::EMPTY),
    allocs: AtomicU64::new(0),
    frees: AtomicU64::new(0),
    zone: ptr::null(),
    slot: ptr::null(),
    next: Cell::new(ptr::null_mut()),
    prev: Cell::new(ptr::null_mut()),
    keg_misses: Cell::new(0),
};

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
    fn fast_pop(self, zone: &Zone, mask: u8) -> Option<NonNull<u8>>;
    /// [`Cache::fast_push`] on the thread's cache (false: miss).
    fn fast_push(self, zone: &Zone, item: *mut u8, mask: u8) -> bool;
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
    fn fast_pop(self, _: &Zone, mask: u8) -> Option<NonNull<u8>> {
        Cache::fast_pop(self, mask)
    }

    #[inline(always)]
    fn fast_push(self, _: &Zone, item: *mut u8, mask: u8) -> bool {
        Cache::fast_push(self, item, mask)
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
    fn fast_pop(self, _: &Zone, _: u8) -> Option<NonNull<u8>> {
        None
    }
    fn fast_push(self, _: &Zone, _: *mut u8, _: u8) -> bool {
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
        self.enter_unless(GATE_DRAIN)
    }

    /// Owner: enter the cache unless a bit of `mask` (which includes
    /// [`GATE_DRAIN`]) is set in the gate.
    #[inline(always)]
    fn enter_unless(&self, mask: u8) -> bool {
        self.busy.store(true, Ordering::Relaxed);
        owner_fence();
        if self.gate.load(Ordering::Acquire) & mask != 0 {
            self.busy.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Owner: leave the cache.
    #[inline(always)]
    pub(crate) fn exit(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// Owner fast path: pop an item from the alloc bucket (`None` on miss:
    /// empty, or a bit of `mask` is set in the gate; `mask` includes
    /// [`GATE_DRAIN`]).
    #[inline(always)]
    pub(crate) fn fast_pop(&self, mask: u8) -> Option<NonNull<u8>> {
        if !self.enter_unless(mask) {
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
    /// full, or a bit of `mask`, which includes [`GATE_DRAIN`], is set in
    /// the gate).
    #[inline(always)]
    pub(crate) fn fast_push(&self, item: *mut u8, mask: u8) -> bool {
        self.push_checked(item, mask, None) == Push::Done
    }

    /// Owner fast path for zones that may have limit sleepers: as
    /// [`fast_push`](Self::fast_push), but a non-zero `sleepers`, read inside
    /// the critical section, vetoes the push ([`Push::Bypass`]).
    #[inline(always)]
    pub(crate) fn fast_push_unless(&self, item: *mut u8, sleepers: &AtomicUsize) -> Push {
        self.push_checked(item, GATE_DRAIN, Some(sleepers))
    }

    /// Owner fast path: as [`fast_push`](Self::fast_push), and when the
    /// item went in, `stamp` is written into its first word before the
    /// cache is left (so no drainer can have taken the item yet).
    #[inline(always)]
    pub(crate) fn fast_push_stamped(&self, item: *mut u8, mask: u8, stamp: u64) -> bool {
        if !self.enter_unless(mask) {
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
    fn push_checked(&self, item: *mut u8, mask: u8, sleepers: Option<&AtomicUsize>) -> Push {
        if !self.enter_unless(mask) {
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

    /// Takes the alloc bucket out (null if none).
    pub(crate) fn take_alloc(&self) -> *mut Bucket {
        // SAFETY: state Owned or Draining: the caller holds the cache (a
        // registered one: EMPTY_CACHE is never entered for this).
        unsafe { self.with_slots(|a, _| a.take()) }
    }

    /// Takes the free bucket out (null if none).
    pub(crate) fn take_free(&self) -> *mut Bucket {
        // SAFETY: as take_alloc.
        unsafe { self.with_slots(|_, f| f.take()) }
    }

    /// Installs `b` as the alloc bucket if that slot is empty and `b` fits
    /// the per-thread cap `cap` (its items; its slots are cut down to it).
    ///
    /// # Safety
    ///
    /// The caller holds the cache and owns `b`.
    pub(crate) unsafe fn try_install_alloc(&self, b: *mut Bucket, cap: usize) -> bool {
        // SAFETY: caller contract.
        unsafe { self.with_slots(|a, _| install_if_empty(a, b, cap)) }
    }

    /// Installs `b` as the free bucket, as
    /// [`try_install_alloc`](Self::try_install_alloc).
    ///
    /// # Safety
    ///
    /// As [`try_install_alloc`](Self::try_install_alloc).
    pub(crate) unsafe fn try_install_free(&self, b: *mut Bucket, cap: usize) -> bool {
        // SAFETY: caller contract.
        unsafe { self.with_slots(|_, f| install_if_empty(f, b, cap)) }
    }

    /// Takes out the installed buckets with more than `cap` slots (the cap
    /// went down); null where a slot is kept or empty.
    ///
    /// # Safety
    ///
    /// The caller holds the cache.
    unsafe fn take_over_cap(&self, cap: usize) -> [*mut Bucket; 2] {
        let take = |c: &mut CacheBucket| {
            if c.cap as usize > cap {
                c.take()
            } else {
                ptr::null_mut()
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
        c.write(Cache {
            busy: AtomicBool::new(false),
            gate: AtomicU8::new(0),
            alloc: UnsafeCell::new(CacheBucket::EMPTY),
            free: UnsafeCell::new(CacheBucket::EMPTY),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            zone,
            slot,
            next: Cell::new(ptr::null_mut()),
            prev: Cell::new(ptr::null_mut()),
            keg_misses: Cell::new(0),
        });
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
                out.push_nonnull(b);
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
                    out.push_nonnull(b);
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
pub(crate) unsafe fn retire_locked(c: *mut Cache) -> (*mut Bucket, *mut Bucket) {
    // SAFETY: caller contract: registry lock held, so no drainer holds c,
    // and the owner is not inside an operation.
    unsafe {
        let zone = &*(*c).zone;
        let p = (*c).peek();
        zone.fold_counts(p.allocs, p.frees);
        let bs = ((*c).take_alloc(), (*c).take_free());
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
    for b in [bs.0, bs.1] {
        if !b.is_null() {
            zone.put_bucket(b);
        }
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

/// Installs `b` in the bucket slot `c` if the slot is empty.
///
/// # Safety
///
/// The caller owns `b`.
unsafe fn install_if_empty(c: &mut CacheBucket, b: *mut Bucket, cap: usize) -> bool {
    // SAFETY: the caller owns b.
    unsafe {
        if c.bucket.is_null() && cap > 0 && (*b).cnt as usize <= cap {
            if (*b).cap as usize > cap {
                (*b).cap = cap as u16;
            }
            c.install(b);
            true
        } else {
            false
        }
    }
}
