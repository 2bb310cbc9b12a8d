//! Zones: the typed front end (FreeBSD `struct uma_zone`, `uma_zalloc_arg`,
//! `uma_zfree_arg`, `zone_alloc_item`, `zone_free_item`).
//!
//! Allocation order: 1) this thread's cache (the inline fast path), 2) the
//! zone bucket cache of full buckets, 3) a bucket filled from the keg's
//! slabs (or the cache-only zone's import callback), 4) a new slab from the
//! keg's page source. Frees run the same road backwards and go to the
//! freeing thread's cache.
//!
//! One room per concern of the zone:
//!
//! - this file: the [`Zone`] struct, its fast paths ([`Zone::alloc`],
//!   [`Zone::free`], one generic path for the TLS front door and the loom
//!   models' explicit caches, see `pcpu::ThreadCache`), their slow roads
//!   down to the keg or import callback, keg controls, statistics and the
//!   invariant walker;
//! - `trade`: the bucket trades at the zone lock (FreeBSD
//!   `cache_alloc_retry`, `cache_free`, `zone_fetch_bucket`,
//!   `zone_put_bucket`, `zone_alloc_bucket`), the bucket cache and the
//!   empty-bucket depot ([`ZoneState`]);
//! - `limit`: the zone limit and its sleepers (`zone_alloc_limit`,
//!   `uma_zone_set_max`, the per-thread cap);
//! - `reclaim`: working-set estimate, trims and drains
//!   (`bucket_cache_reclaim`, `zone_timeout`, `uma_zone_reclaim`).

mod limit;
mod reclaim;
pub(crate) use reclaim::Keep;
mod trade;

use core::cell::Cell;
use core::fmt;
use core::ptr::{self, NonNull};
use std::sync::OnceLock;

use crate::bucket::{self, BucketList};
#[cfg(feature = "invariants")]
use crate::debug;
use crate::instance::Uma;
use crate::keg::{Keg, KegInfo};
#[cfg(not(loom))]
use crate::pcpu::tls::FastSlot;
use crate::pcpu::{self, Cache, Push, ThisThread, ThreadCache, GATE_ALLOC, GATE_DRAIN, GATE_FREE};
use crate::source::SlabSource;
use crate::stats::ZoneStats;
use crate::sync::unmodeled::{AtomicU64, AtomicUsize as UAtomicUsize, Ordering as UOrdering};
use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering};
use crate::{Ctor, Dtor, Fini, Flags, Import, Init, Release, ZoneFlags};

pub(crate) use trade::{ZoneState, EMPTY_MAX};

/// `fast` bit: allocations need `alloc_finish` (ctor, INVARIANTS).
pub(crate) const FAST_ALLOC: usize = 1;
/// `fast` bit: frees need `free_prep` (dtor, INVARIANTS, limit sleepers).
pub(crate) const FAST_FREE: usize = 2;
/// A zone (FreeBSD `uma_zone_t`). Handles are `&'static Zone`; the memory
/// comes from the internal "UMA Zones" zone.
pub struct Zone {
    // constant after create
    pub(crate) name: &'static str,
    pub(crate) size: usize,
    pub(crate) flags: ZoneFlags,
    pub(crate) ctor: Option<Ctor>,
    pub(crate) dtor: Option<Dtor>,
    pub(crate) zinit: Option<Init>,
    pub(crate) zfini: Option<Fini>,
    pub(crate) arg: usize,
    pub(crate) import_fn: Option<Import>,
    pub(crate) release_fn: Option<Release>,
    pub(crate) keg: *const Keg,
    pub(crate) uma: *const Uma,
    pub(crate) pcpu_slot: usize,
    /// `bucket_max` without a limit (0: the zone has no buckets).
    pub(crate) bucket_top: usize,
    /// `bucket_min` without a limit.
    pub(crate) bucket_floor: usize,
    // atomics
    pub(crate) fast: UAtomicUsize,
    /// Items taken from the keg/import into the zone: allocated + cached
    /// (the limit counts these).
    pub(crate) items: AtomicUsize,
    pub(crate) max_items: AtomicUsize,
    pub(crate) sleepers: AtomicUsize,
    /// Entries of the buckets this zone fills now (FreeBSD
    /// `uz_bucket_size`): grows by one on zone lock contention, shrinks on
    /// reclaim, stays within `bucket_min..=bucket_max`.
    pub(crate) bucket_size: UAtomicUsize,
    /// A [`RAMP`](ZoneFlags::RAMP) zone's slow start: while non-zero, each
    /// refill of a cache doubles `bucket_size` up to this; 0 once reached,
    /// or once a reclaim shrinks the buckets (from then on they adapt as
    /// FreeBSD's do).
    pub(crate) bucket_ramp: UAtomicUsize,
    pub(crate) bucket_min: UAtomicUsize,
    /// Most entries of a bucket (FreeBSD `uz_bucket_size_max`); with a limit
    /// also the per-thread cap: no installed cache bucket has more slots.
    pub(crate) bucket_max: UAtomicUsize,
    /// Zone lock acquisitions that found it held (each one grew
    /// `bucket_size` if below `bucket_max`).
    pub(crate) contended: AtomicU64,
    /// Most items the zone bucket cache may hold.
    pub(crate) bkt_max: UAtomicUsize,
    /// The bucket cache's soft cap (see [`set_cache_cap`](Self::set_cache_cap)):
    /// past it the cache still takes buckets, but says so once.
    pub(crate) cache_cap: UAtomicUsize,
    /// The cache went past its soft cap and the hook was told (written
    /// under the zone lock).
    pub(crate) over_cap: UAtomicUsize,
    /// Told when the bucket cache goes past its soft cap.
    cap_hook: OnceLock<fn(&Zone)>,
    pub(crate) allocs: AtomicU64,
    pub(crate) frees: AtomicU64,
    pub(crate) fails: AtomicU64,
    pub(crate) sleeps: AtomicU64,
    // under zone lock
    pub(crate) state: Mutex<ZoneState>,
    pub(crate) limit_cv: Condvar,
    // under the registry lock
    pub(crate) caches: Cell<*mut Cache>,
    /// Registered per-thread caches of the zone.
    pub(crate) ncaches: Cell<usize>,
    /// Exiting threads giving this zone's buckets back after their caches
    /// left the list (`pcpu::exit_flush`); destroy waits for zero.
    pub(crate) exit_pins: AtomicUsize,
    // under the Uma zone-list lock
    pub(crate) list_next: Cell<*const Zone>,
    pub(crate) list_prev: Cell<*const Zone>,
    /// Called at the end of every slow-path allocation and free (see
    /// [`set_slow_hook`](Self::set_slow_hook)); set at most once.
    slow_hook: OnceLock<fn()>,
}

// SAFETY: mutable fields are atomics, lock-protected (`state`), or Cells
// touched only under the registry / zone-list locks named on them.
unsafe impl Sync for Zone {}
// SAFETY: as above.
unsafe impl Send for Zone {}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Zone")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The pieces a zone is built from (see `Uma::create_*`).
pub(crate) struct ZoneParts {
    pub name: &'static str,
    pub size: usize,
    pub flags: ZoneFlags,
    pub ctor: Option<Ctor>,
    pub dtor: Option<Dtor>,
    pub zinit: Option<Init>,
    pub zfini: Option<Fini>,
    pub arg: usize,
    pub import: Option<Import>,
    pub release: Option<Release>,
    pub keg: *const Keg,
    pub uma: *const Uma,
    pub slot: usize,
    pub bucket_size: Option<usize>,
}

impl Zone {
    pub(crate) fn new(p: ZoneParts) -> Zone {
        let nobucket =
            p.flags.contains(ZoneFlags::NOBUCKET) || p.flags.contains(ZoneFlags::INTERNAL);
        // `ramp`: where a `RAMP` zone's slow start ends (0: no ramp).
        let (bs, bmin, bmax, ramp) = match (nobucket, p.bucket_size) {
            (true, _) => (0, 0, 0, 0),
            (false, Some(n)) => {
                let n = n.min(bucket::BUCKET_MAX);
                (n, n, n, 0)
            }
            (false, None) => {
                let sel = bucket::bucket_select(p.size);
                let max = bucket::BUCKET_MAX;
                if p.flags.contains(ZoneFlags::MAXBUCKET) {
                    (max, sel.min(2), max, 0)
                } else if p.flags.contains(ZoneFlags::RAMP) {
                    // SAFETY: a zone's keg (if any) is built before it and
                    // outlives it.
                    let fit = unsafe { p.keg.as_ref() }
                        .map_or(bucket::RAMP_START_BYTES / p.size.max(1), |k| k.layout.ipers);
                    let start = bucket::ramp_start(fit, sel);
                    (start, sel.min(2), max, if start < sel { sel } else { 0 })
                } else {
                    (sel, sel.min(2), max, 0)
                }
            }
        };
        let mut fast = 0;
        if p.ctor.is_some() || (cfg!(feature = "invariants") && !p.keg.is_null()) {
            fast |= FAST_ALLOC;
        }
        if p.dtor.is_some() || (cfg!(feature = "invariants") && !p.keg.is_null()) {
            fast |= FAST_FREE;
        }
        Zone {
            name: p.name,
            size: p.size,
            flags: p.flags,
            ctor: p.ctor,
            dtor: p.dtor,
            zinit: p.zinit,
            zfini: p.zfini,
            arg: p.arg,
            import_fn: p.import,
            release_fn: p.release,
            keg: p.keg,
            uma: p.uma,
            pcpu_slot: if nobucket {
                crate::startup::NO_SLOT
            } else {
                p.slot
            },
            bucket_top: bmax,
            bucket_floor: bmin,
            fast: UAtomicUsize::new(fast),
            items: AtomicUsize::new(0),
            max_items: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            bucket_size: UAtomicUsize::new(bs),
            bucket_ramp: UAtomicUsize::new(ramp),
            bucket_min: UAtomicUsize::new(bmin),
            bucket_max: UAtomicUsize::new(bmax),
            contended: AtomicU64::new(0),
            bkt_max: UAtomicUsize::new(usize::MAX),
            cache_cap: UAtomicUsize::new(usize::MAX),
            over_cap: UAtomicUsize::new(0),
            cap_hook: OnceLock::new(),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            fails: AtomicU64::new(0),
            sleeps: AtomicU64::new(0),
            state: Mutex::new(ZoneState {
                buckets: BucketList::new(),
                empty: BucketList::new(),
                nitems: 0,
                imax: 0,
                imin: 0,
                bimin: 0,
                batch: 0,
                wss: 0,
                warned: false,
            }),
            limit_cv: Condvar::new(),
            caches: Cell::new(ptr::null_mut()),
            ncaches: Cell::new(0),
            exit_pins: AtomicUsize::new(0),
            list_next: Cell::new(ptr::null()),
            list_prev: Cell::new(ptr::null()),
            slow_hook: OnceLock::new(),
        }
    }

    pub(crate) fn uma(&self) -> &Uma {
        // SAFETY: zones never outlive their Uma instance.
        unsafe { &*self.uma }
    }

    pub(crate) fn keg(&self) -> Option<&Keg> {
        // SAFETY: a zone's keg lives at least as long as the zone.
        unsafe { self.keg.as_ref() }
    }

    /// The zone's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Item size in bytes as created.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The zone's slot in the per-thread cache table ([`FastSlot`]);
    /// [`FastSlot::NONE`] for zones without per-thread caches.
    #[cfg(not(loom))]
    pub fn fast_slot(&self) -> FastSlot {
        if self.pcpu_slot < crate::startup::NO_SLOT {
            // SAFETY: a slot of the table (< MAX_SLOTS), as a u32.
            unsafe { FastSlot::from_bits(self.pcpu_slot as u32) }
        } else {
            FastSlot::NONE
        }
    }

    /// Flags for UMA's own allocations on this zone's behalf (buckets,
    /// cache registration): never sleep, and for [`ZoneFlags::VM`] zones
    /// never call a page source (FreeBSD passes `M_NOVM` for `UMA_ZONE_VM`).
    #[inline]
    pub(crate) fn internal_flags(&self) -> Flags {
        if self.flags.contains(ZoneFlags::VM) {
            Flags::NOWAIT.with(Flags::NOVM)
        } else {
            Flags::NOWAIT
        }
    }

    // ------------------------------------------------------------------
    // allocation

    /// Allocates one item (FreeBSD `uma_zalloc_arg`): the constructor has
    /// run, and with [`Flags::ZERO`] the item is zeroed after it.
    ///
    /// Without [`Flags::WAITOK`] (`NOWAIT`) it never sleeps and returns
    /// `None` at once when the zone is at its limit or the keg cannot grow
    /// (page source failure, or `NOVM`).
    ///
    /// With `WAITOK` it never returns `None` for lack of memory (FreeBSD
    /// `zone_alloc_limit` and `keg_fetch_slab` with `M_WAITOK`):
    ///
    /// - at the zone limit it first takes back the items parked in every
    ///   thread's cache and in the bucket cache of the zone (they count
    ///   against the limit), then sleeps until a free wakes it, looking
    ///   again at least every 100 ms;
    /// - when the page source fails it reclaims memory from the instance's
    ///   zones whose reclaim runs no application code
    ///   ([`Uma::reclaim_plain`] with `Trim`, then `Drain`, then `DrainCpu`
    ///   from the third round on), and from those over the page source
    ///   that failed (which this thread calls anyway); zones with a fini, a
    ///   release or another page source of their own are left to
    ///   [`Uma::reclaim`] calls of the application, as their callbacks may
    ///   want a lock this thread holds; then it sleeps with a bounded backoff
    ///   (1 ms, doubling up to 100 ms) from which an item or slab freed to the
    ///   keg wakes it early, and retries, for as long as it takes.
    ///
    /// It still returns `None`, `WAITOK` or not, when the constructor, the
    /// keg init or a secondary zone's zinit fails, and with `NOVM` when the
    /// keg has no free item (`NOVM` never calls the page source). Never
    /// panics.
    #[inline]
    pub fn alloc(&self, flags: Flags) -> Option<NonNull<u8>> {
        self.alloc_in(ThisThread, flags)
    }

    /// [`alloc`](Self::alloc), reaching the calling thread's cache through
    /// `t`: the TLS table ([`alloc`](Self::alloc)), or a cache the loom
    /// models name (`cache_alloc`). One fast path and
    /// one slow path for both.
    #[inline(always)]
    fn alloc_in<T: ThreadCache>(&self, t: T, flags: Flags) -> Option<NonNull<u8>> {
        // The cache's gate carries the zone's FAST_ALLOC bit: a hit needs
        // no look at the zone (see `pcpu`, the gate byte).
        if let Some(item) = t.fast_pop::<{ GATE_DRAIN | GATE_ALLOC }>(self) {
            if !flags.contains(Flags::ZERO) {
                return Some(item);
            }
            return self.alloc_finish(item.as_ptr(), flags);
        }
        self.alloc_slow(t, flags)
    }

    /// Slow path of [`alloc`](Self::alloc): the per-thread alloc bucket was
    /// empty (or there is no cache), or the zone has alloc-time work.
    /// Refills through the zone.
    #[cold]
    #[inline(never)]
    fn alloc_slow<T: ThreadCache>(&self, t: T, flags: Flags) -> Option<NonNull<u8>> {
        let item = match t.cache(self) {
            Some(c) => {
                // Zones with a ctor or INVARIANTS miss the fast path on
                // their gate bit; their cache hits are served here.
                if self.fast.load(UOrdering::Relaxed) & FAST_ALLOC != 0 {
                    if let Some(item) = c.fast_pop::<GATE_DRAIN>() {
                        return self.alloc_finish(item.as_ptr(), flags);
                    }
                }
                self.cache_alloc_refill(c, flags)
            }
            None => self.alloc_item(flags),
        };
        let r = self.count_alloc_result(item, flags);
        self.run_slow_hook();
        r
    }

    /// Runs the slow-path hook, if one is set. No UMA lock is held here.
    #[inline]
    pub(crate) fn run_slow_hook(&self) {
        if let Some(f) = self.slow_hook.get() {
            f();
        }
    }

    /// Sets a function UMA calls at the end of every allocation and free of
    /// this zone that took the slow path: the calling thread's per-thread
    /// bucket ran dry or filled (so at most about once per bucket of
    /// operations), or the zone has no per-thread caching. The fast path
    /// never calls it. It runs in the allocating or freeing thread with no
    /// UMA lock held, and is the place for lazy periodic work: kmem runs
    /// its [`timeout`](Self::timeout) pass from its size-class zones' hook,
    /// so that a program without a reclaim thread still gives memory back.
    ///
    /// The hook must not allocate from or free to this zone's instance in a
    /// way that re-enters itself without bound. Set once: returns false
    /// (leaving the first) if a hook is already set.
    pub fn set_slow_hook(&self, f: fn()) -> bool {
        self.slow_hook.set(f).is_ok()
    }

    /// A soft cap on the bucket cache: `items` items. Unlike
    /// [`set_maxcache`](Self::set_maxcache), the cache still takes the
    /// buckets that threads hand it past the cap (a program that drops a
    /// large structure and builds it again reuses them at cache speed),
    /// but the first bucket past it calls `over(self)`, and
    /// [`trim_to_cache_cap`](Self::trim_to_cache_cap) then gives the excess
    /// back, the coldest buckets first, when the caller decides the memory
    /// is better used elsewhere (kmem: when another size class is about to
    /// take fresh pages). `over` runs with the zone lock held: it must only
    /// take note (no allocation, no lock, no call into UMA). Set once:
    /// returns false (leaving the first) if a hook is already set.
    pub fn set_cache_cap(&self, items: usize, over: fn(&Zone)) -> bool {
        if self.cap_hook.set(over).is_err() {
            return false;
        }
        self.cache_cap.store(items, UOrdering::Relaxed);
        true
    }

    /// Zone lock held, `nitems` items in the bucket cache: tells the cap
    /// hook if this is the first time past the soft cap since the last
    /// trim to it.
    #[inline]
    pub(crate) fn note_cache_level(&self, nitems: usize) {
        if nitems > self.cache_cap.load(UOrdering::Relaxed)
            && self.over_cap.load(UOrdering::Relaxed) == 0
        {
            self.over_cap.store(1, UOrdering::Relaxed);
            if let Some(f) = self.cap_hook.get() {
                f(self);
            }
        }
    }

    fn count_alloc_result(&self, item: *mut u8, flags: Flags) -> Option<NonNull<u8>> {
        if item.is_null() {
            self.fails.fetch_add(1, UOrdering::Relaxed);
            return None;
        }
        self.allocs.fetch_add(1, UOrdering::Relaxed);
        self.alloc_finish(item, flags)
    }

    /// [`alloc`](Self::alloc) through the explicit cache `c` of the calling
    /// thread: the loom models' entry (they have no TLS), the same code.
    #[cfg(loom)]
    pub(crate) fn cache_alloc(&self, c: &Cache, flags: Flags) -> Option<NonNull<u8>> {
        self.alloc_in(c, flags)
    }

    /// Constructor, zeroing and INVARIANTS checks for an item taken from
    /// the zone.
    #[inline(never)]
    fn alloc_finish(&self, item: *mut u8, flags: Flags) -> Option<NonNull<u8>> {
        // SAFETY: items are never null.
        let nn = unsafe { NonNull::new_unchecked(item) };
        #[cfg(feature = "invariants")]
        if !self.keg.is_null() {
            debug::on_alloc(self, item);
        }
        if let Some(ctor) = self.ctor {
            if !ctor(nn, self.size, self.arg, flags) {
                #[cfg(feature = "invariants")]
                if !self.keg.is_null() {
                    debug::undo_alloc(self, item);
                }
                self.frees.fetch_add(1, UOrdering::Relaxed);
                self.fails.fetch_add(1, UOrdering::Relaxed);
                self.free_item(item);
                return None;
            }
        }
        if flags.contains(Flags::ZERO) {
            // SAFETY: the item has `size` writable bytes.
            unsafe { ptr::write_bytes(item, 0, self.size) };
        }
        Some(nn)
    }

    /// One item without the per-thread cache (FreeBSD `zone_alloc_item`):
    /// from a cached bucket if any, else from the keg (may sleep on the
    /// limit with `WAITOK`).
    pub(crate) fn alloc_item(&self, flags: Flags) -> *mut u8 {
        if self.bucket_top > 0 {
            let it = self.take_cached_item();
            if !it.is_null() {
                return it;
            }
        }
        if self.limit_alloc(1, flags) == 0 {
            return ptr::null_mut();
        }
        let mut one = [ptr::null_mut(); 1];
        if self.import(&mut one, flags) == 0 {
            self.limit_free(1);
            return ptr::null_mut();
        }
        if let Some(zinit) = self.zinit {
            // SAFETY: imported items are non-null.
            if !zinit(unsafe { NonNull::new_unchecked(one[0]) }, self.size, flags) {
                self.release(&one);
                self.limit_free(1);
                return ptr::null_mut();
            }
        }
        one[0]
    }

    /// Internal zones: an item straight from the keg, no constructor.
    pub(crate) fn internal_alloc(&self, flags: Flags) -> Option<NonNull<u8>> {
        let it = self.alloc_item(flags);
        if it.is_null() {
            self.fails.fetch_add(1, UOrdering::Relaxed);
            return None;
        }
        self.allocs.fetch_add(1, UOrdering::Relaxed);
        NonNull::new(it)
    }

    /// Internal zones: give an item back to the keg.
    ///
    /// # Safety
    ///
    /// `item` came from `internal_alloc` of this zone and is unused.
    pub(crate) unsafe fn internal_free(&self, item: NonNull<u8>) {
        self.frees.fetch_add(1, UOrdering::Relaxed);
        self.free_item(item.as_ptr());
    }

    // ------------------------------------------------------------------
    // free

    /// Frees an item (FreeBSD `uma_zfree_arg`): runs the destructor and
    /// puts the item in this thread's cache.
    ///
    /// # Safety
    ///
    /// `item` was returned by [`alloc`](Self::alloc) of this zone and not
    /// freed since. With the `invariants` feature, violations (double free,
    /// foreign, misaligned or wrong-zone pointers) are detected and reported
    /// instead of corrupting the zone.
    #[inline]
    pub unsafe fn free(&self, item: NonNull<u8>) {
        self.free_in(ThisThread, item.as_ptr());
    }

    /// [`free`](Self::free) of `item`, reaching the calling thread's cache
    /// through `t` (as [`alloc_in`](Self::alloc_in)). The caller has
    /// [`free`](Self::free)'s contract.
    #[inline(always)]
    fn free_in<T: ThreadCache>(&self, t: T, item: *mut u8) {
        // As in `alloc`, the gate carries the zone's FAST_FREE bit.
        if t.fast_push::<{ GATE_DRAIN | GATE_FREE }>(self, item) {
            return;
        }
        self.free_miss(t, item);
    }

    /// [`free`](Self::free) through the explicit cache `c` of the calling
    /// thread: the loom models' entry (they have no TLS), the same code.
    ///
    /// # Safety
    ///
    /// As [`free`](Self::free); `c` is a cache of this zone owned by the
    /// calling thread.
    #[cfg(loom)]
    pub(crate) unsafe fn cache_free(&self, c: &Cache, item: NonNull<u8>) {
        self.free_in(c, item.as_ptr());
    }

    /// The fast path of [`free`](Self::free) missed: the zone has free-time
    /// work, or the bucket was full (or there is no cache).
    #[cold]
    #[inline(never)]
    fn free_miss<T: ThreadCache>(&self, t: T, item: *mut u8) {
        if self.fast.load(UOrdering::Relaxed) & FAST_FREE != 0 {
            return self.free_prep(t, item);
        }
        self.free_slow(t, item);
    }

    /// Destructor, INVARIANTS checks and the limit-sleeper bypass, then the
    /// usual free road.
    #[inline(never)]
    fn free_prep<T: ThreadCache>(&self, t: T, item: *mut u8) {
        if !self.free_checks(item) {
            return;
        }
        match t.fast_push_unless(self, item) {
            Push::Done => return,
            // Somebody sleeps on the limit: give the item straight back so
            // the count drops and the sleeper wakes (FreeBSD does the same).
            Push::Bypass => return self.free_bypass(item),
            Push::Full => {}
        }
        self.free_slow(t, item);
    }

    /// A free that skips every cache (limit sleepers).
    fn free_bypass(&self, item: *mut u8) {
        self.frees.fetch_add(1, UOrdering::Relaxed);
        self.free_item(item);
    }

    /// Debug checks and destructor; false if the free must be dropped.
    fn free_checks(&self, item: *mut u8) -> bool {
        #[cfg(feature = "invariants")]
        if !self.keg.is_null() && !debug::on_free(self, item) {
            return false;
        }
        if let Some(dtor) = self.dtor {
            // SAFETY: items are non-null.
            dtor(unsafe { NonNull::new_unchecked(item) }, self.size, self.arg);
        }
        #[cfg(feature = "invariants")]
        if self.keg().is_some_and(|k| k.trash) && self.zinit.is_none() {
            debug::trash(item, self.size);
        }
        true
    }

    /// Slow path of [`free`](Self::free): the per-thread free bucket was
    /// full (or there is no cache).
    fn free_slow<T: ThreadCache>(&self, t: T, item: *mut u8) {
        self.frees.fetch_add(1, UOrdering::Relaxed);
        match t.cache(self) {
            Some(c) => self.cache_free_refill(c, item),
            None => self.free_item(item),
        }
        self.run_slow_hook();
    }

    /// One item back to the keg (FreeBSD `zone_free_item`, after the dtor).
    pub(crate) fn free_item(&self, item: *mut u8) {
        if let Some(zfini) = self.zfini {
            // SAFETY: items are non-null.
            zfini(unsafe { NonNull::new_unchecked(item) }, self.size);
        }
        self.release(&[item]);
        self.limit_free(1);
    }

    // ------------------------------------------------------------------
    // keg / import layer

    fn import(&self, out: &mut [*mut u8], flags: Flags) -> usize {
        if let Some(k) = self.keg() {
            k.import(self, out, flags)
        } else if let Some(f) = self.import_fn {
            let n = f(self.arg, out, flags).min(out.len());
            // Zero is not a cacheable item: stop at the first one.
            out[..n].iter().position(|p| p.is_null()).unwrap_or(n)
        } else {
            0
        }
    }

    fn release(&self, items: &[*mut u8]) {
        if items.is_empty() {
            return;
        }
        if let Some(k) = self.keg() {
            k.release(items);
        } else if let Some(f) = self.release_fn {
            f(self.arg, items);
        }
    }

    // ------------------------------------------------------------------
    // keg controls

    /// Reserves `n` free items in the keg for `USE_RESERVE` callers
    /// (FreeBSD `uma_zone_reserve`). Only zone destruction drops it.
    pub fn reserve(&self, n: usize) {
        if let Some(k) = self.keg() {
            k.state.lock().reserve = n;
        }
    }

    /// Grows the keg until `items` items are free (FreeBSD `uma_prealloc`);
    /// returns the free items now in the keg.
    pub fn prealloc(&self, items: usize) -> usize {
        self.keg().map_or(0, |k| k.prealloc(items, Flags::WAITOK))
    }

    /// Sets the page source for new slabs (FreeBSD `uma_zone_set_allocf` +
    /// `uma_zone_set_freef` as one pair). Existing slabs keep the source
    /// that produced them and are freed through it.
    pub fn set_source(&self, source: &'static dyn SlabSource) {
        if let Some(k) = self.keg() {
            k.state.lock().source = source;
        }
    }

    /// The keg's layout and counts (`None` for cache-only zones).
    pub fn keg_info(&self) -> Option<KegInfo> {
        self.keg().map(|k| k.info())
    }

    // ------------------------------------------------------------------
    // statistics and checks

    pub(crate) fn fold_counts(&self, allocs: u64, frees: u64) {
        self.allocs.fetch_add(allocs, UOrdering::Relaxed);
        self.frees.fetch_add(frees, UOrdering::Relaxed);
    }

    /// Statistics (FreeBSD `vmstat -z` columns and more).
    pub fn stats(&self) -> ZoneStats {
        let p = if self.pcpu_slot < crate::startup::NO_SLOT {
            pcpu::peek_zone_caches(self, false)
        } else {
            Default::default()
        };
        let (bucket_items, nbuckets, nempty) = {
            let g = self.state.lock();
            (g.nitems, g.buckets.len(), g.empty.len())
        };
        let keg_free = if self.flags.contains(ZoneFlags::SECONDARY) {
            0
        } else {
            self.keg().map_or(0, |k| k.state.lock().free_items)
        };
        let allocs = self.allocs.load(UOrdering::Relaxed) + p.allocs;
        let frees = self.frees.load(UOrdering::Relaxed) + p.frees;
        ZoneStats {
            name: self.name,
            size: self.size,
            limit: self.max(),
            used: allocs.saturating_sub(frees),
            free: (p.items + bucket_items + keg_free) as u64,
            requests: allocs,
            frees,
            fails: self.fails.load(UOrdering::Relaxed),
            sleeps: self.sleeps.load(UOrdering::Relaxed),
            cached_pcpu: p.items as u64,
            cached_buckets: bucket_items as u64,
            buckets: nbuckets as u64,
            empty_buckets: nempty as u64,
            keg_free: keg_free as u64,
            bucket_size: self.bucket_size(),
            items: self.items.load(Ordering::Relaxed) as u64,
        }
    }

    /// Checks the zone's structure and accounting and panics with a
    /// description on a violation. Test aid: call it when no other thread
    /// is using the zone (per-thread caches are held through the drain
    /// protocol while looked at).
    pub fn check_invariants(&self) {
        if let Some(k) = self.keg() {
            k.check_invariants();
        }
        let p = if self.pcpu_slot < crate::startup::NO_SLOT {
            pcpu::peek_zone_caches(self, true)
        } else {
            Default::default()
        };
        let bucket_items = {
            let g = self.state.lock();
            let (mut n, mut items) = (0, 0);
            for (cnt, cap, zidx, held) in g.buckets.iter() {
                assert!(cnt > 0, "zone {}: empty bucket cached", self.name);
                assert!(cnt <= cap, "zone {}: bucket over capacity", self.name);
                assert!(
                    cap <= bucket::BUCKET_ENTRIES[zidx],
                    "zone {}: bucket cap exceeds its bucket zone",
                    self.name
                );
                assert!(
                    held.iter().all(|it| !it.is_null()),
                    "zone {}: null item cached",
                    self.name
                );
                items += cnt;
                n += 1;
            }
            assert_eq!(
                n,
                g.buckets.len(),
                "zone {}: bucket count mismatch",
                self.name
            );
            let mut ne = 0;
            for (cnt, ..) in g.empty.iter() {
                assert_eq!(cnt, 0, "zone {}: kept bucket not empty", self.name);
                ne += 1;
            }
            assert!(
                ne == g.empty.len() && ne <= EMPTY_MAX,
                "zone {}: kept empty bucket count mismatch",
                self.name
            );
            assert_eq!(
                items, g.nitems,
                "zone {}: bucket item count mismatch",
                self.name
            );
            assert!(
                g.imin <= g.bimin && g.bimin <= g.nitems && g.nitems <= g.imax,
                "zone {}: wss bounds",
                self.name
            );
            items
        };
        let allocs = self.allocs.load(UOrdering::Relaxed) + p.allocs;
        let frees = self.frees.load(UOrdering::Relaxed) + p.frees;
        assert!(
            allocs >= frees,
            "zone {}: more frees than allocations",
            self.name
        );
        let used = (allocs - frees) as usize;
        let items = self.items.load(Ordering::SeqCst);
        assert_eq!(
            items,
            used + p.items + bucket_items,
            "zone {}: limit count {} != used {} + per-thread {} + bucket cache {}",
            self.name,
            items,
            used,
            p.items,
            bucket_items
        );
        let max = self.max();
        if max > 0 {
            assert!(
                items <= max,
                "zone {}: {} items over the limit {}",
                self.name,
                items,
                max
            );
        }
        if let Some(k) = self.keg() {
            let g = k.state.lock();
            if g.zones == 1 && !self.flags.contains(ZoneFlags::INTERNAL) {
                let keg_used = g.nslabs * k.layout.ipers - g.free_items;
                assert_eq!(
                    keg_used, items,
                    "zone {}: keg hands out {} items, zone counts {}",
                    self.name, keg_used, items
                );
            }
        }
    }
}
