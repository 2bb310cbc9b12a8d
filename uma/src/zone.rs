//! Zones: the typed front end (FreeBSD `struct uma_zone`, `uma_zalloc_arg`,
//! `uma_zfree_arg`, `zone_alloc_bucket`, `zone_put_bucket`,
//! `zone_alloc_limit`, `bucket_cache_reclaim`).
//!
//! Allocation order: 1) this thread's cache (the inline fast path), 2) the
//! zone bucket cache of full buckets, 3) a bucket filled from the keg's
//! slabs (or the cache-only zone's import callback), 4) a new slab from the
//! keg's page source. Frees run the same road backwards and go to the
//! freeing thread's cache.

use core::cell::Cell;
use core::fmt;
use core::ptr::{self, NonNull};
use std::sync::OnceLock;

use crate::bucket::{self, Bucket, BucketList};
use crate::debug;
use crate::keg::{Keg, KegInfo};
#[cfg(not(loom))]
use crate::pcpu::tls::FastSlot;
use crate::pcpu::{self, Cache, Push, ThisThread, ThreadCache, GATE_ALLOC, GATE_DRAIN, GATE_FREE};
use crate::source::SlabSource;
use crate::startup::Uma;
use crate::stats::ZoneStats;
use crate::sync::unmodeled::{AtomicU64, AtomicUsize as UAtomicUsize, Ordering as UOrdering};
use crate::sync::{fence, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering};
use crate::{Ctor, Dtor, Fini, Flags, Import, Init, Reclaim, Release, ZoneFlags};

/// `fast` bit: allocations need `alloc_finish` (ctor, INVARIANTS).
pub(crate) const FAST_ALLOC: usize = 1;
/// `fast` bit: frees need `free_prep` (dtor, INVARIANTS, limit sleepers).
pub(crate) const FAST_FREE: usize = 2;
/// Longest sleep on the limit before the sleeper looks again (and takes
/// back what other threads cached meanwhile).
const LIMIT_SLEEP_MS: u64 = 100;
/// Most empty buckets a zone keeps for trading (see [`ZoneState::empty`]).
pub(crate) const EMPTY_MAX: usize = 32;

/// Zone state written under the zone lock: the bucket cache and its
/// working-set estimate (FreeBSD `struct uma_zone_domain`).
pub(crate) struct ZoneState {
    /// Full buckets (the bucket cache), the hottest on top.
    pub buckets: BucketList,
    /// Empty buckets kept for trading, at most [`EMPTY_MAX`]: the empty
    /// list of the magazine depot (Bonwick and Adams, "Magazines and
    /// Vmem", USENIX 2001). A thread whose alloc bucket ran dry leaves it
    /// here when it takes a full one, and a thread whose free bucket filled
    /// takes one back when it leaves the full one, each in one lock hold:
    /// in steady state no bucket is allocated or freed. FreeBSD instead
    /// frees and allocates buckets through per-CPU-cached bucket zones; our
    /// bucket zones have no per-thread caches (they are internal), so the
    /// depot is where that cost goes away.
    pub empty: BucketList,
    /// Items in `buckets`.
    pub nitems: usize,
    pub imax: usize,
    pub imin: usize,
    pub wss: usize,
    pub warned: bool,
}

impl ZoneState {
    /// Keeps the empty bucket `b` for trading; false (and `b` stays the
    /// caller's) when the depot is full.
    ///
    /// # Safety
    ///
    /// `b` is an empty bucket the caller owns; the zone lock is held.
    unsafe fn stash_empty(&mut self, b: *mut Bucket) -> bool {
        if self.empty.len() >= EMPTY_MAX {
            return false;
        }
        // SAFETY: caller contract: an empty bucket of ours, for the depot.
        unsafe { self.empty.push(b) };
        true
    }

    /// Pops a kept empty bucket set up for `want > 0` entries: `(bucket,
    /// spare)`. A popped bucket too small for `want` (the bucket size grew
    /// since it was kept) comes back in `spare`, for the caller to free
    /// outside the lock; `bucket` may be null.
    fn take_empty(&mut self, want: usize) -> (*mut Bucket, BucketList) {
        let mut spare = BucketList::new();
        let Some(b) = self.empty.pop() else {
            return (ptr::null_mut(), spare);
        };
        // SAFETY: b is now ours, empty and valid.
        if unsafe { reuse_empty(b, want) } {
            return (b, spare);
        }
        // SAFETY: as above; it goes on the spare list.
        unsafe { spare.push(b) };
        (ptr::null_mut(), spare)
    }
}

/// Sets up the empty bucket `b` for `want` entries if its bucket zone has
/// room for them; false when it is too small (the bucket size grew).
///
/// # Safety
///
/// `b` is a valid empty bucket the caller owns.
unsafe fn reuse_empty(b: *mut Bucket, want: usize) -> bool {
    // SAFETY: caller contract.
    unsafe {
        if bucket::BUCKET_ENTRIES[(*b).zidx as usize] < want {
            return false;
        }
        (*b).cap = want as u16;
    }
    true
}

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
    pub(crate) bucket_min: UAtomicUsize,
    /// Most entries of a bucket (FreeBSD `uz_bucket_size_max`); with a limit
    /// also the per-thread cap: no installed cache bucket has more slots.
    pub(crate) bucket_max: UAtomicUsize,
    /// Zone lock acquisitions that found it held (each one grew
    /// `bucket_size` if below `bucket_max`).
    pub(crate) contended: AtomicU64,
    /// Most items the zone bucket cache may hold.
    pub(crate) bkt_max: UAtomicUsize,
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
        let (bs, bmin, bmax) = match (nobucket, p.bucket_size) {
            (true, _) => (0, 0, 0),
            (false, Some(n)) => {
                let n = n.min(bucket::BUCKET_MAX);
                (n, n, n)
            }
            (false, None) => {
                let sel = bucket::bucket_select(p.size);
                let max = bucket::BUCKET_MAX;
                if p.flags.contains(ZoneFlags::MAXBUCKET) {
                    (max, sel.min(2), max)
                } else {
                    (sel, sel.min(2), max)
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
            bucket_min: UAtomicUsize::new(bmin),
            bucket_max: UAtomicUsize::new(bmax),
            contended: AtomicU64::new(0),
            bkt_max: UAtomicUsize::new(usize::MAX),
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
    /// models name ([`cache_alloc`](Self::cache_alloc)). One fast path and
    /// one slow path for both.
    #[inline(always)]
    fn alloc_in<T: ThreadCache>(&self, t: T, flags: Flags) -> Option<NonNull<u8>> {
        // The cache's gate carries the zone's FAST_ALLOC bit: a hit needs
        // no look at the zone (see `pcpu`, the gate byte).
        if let Some(item) = t.fast_pop(self, GATE_DRAIN | GATE_ALLOC) {
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
                    if let Some(item) = c.fast_pop(GATE_DRAIN) {
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
    fn run_slow_hook(&self) {
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

    /// The owner's refill (FreeBSD `cache_alloc_retry`): swap the pair, else
    /// trade the empty bucket for a full one from the bucket cache or a new
    /// fill, with the cache left (not busy) while the zone is worked on.
    fn cache_alloc_refill(&self, c: &Cache, flags: Flags) -> *mut u8 {
        if !c.enter() {
            return self.alloc_item(flags);
        }
        let item = c.pop_after_swap();
        if !item.is_null() {
            c.exit();
            return item;
        }
        let old = c.take_alloc();
        c.exit();
        let want = self.fill_size();
        if want == 0 {
            // The limit leaves no room for per-thread buckets: bypass.
            if !old.is_null() {
                // SAFETY: an empty bucket we took out of the cache.
                unsafe { self.uma().bucket_free(old) };
            }
            return self.alloc_item(flags);
        }
        let (full, empty, spare) = self.fetch_bucket(old, want);
        self.free_spares(spare);
        let b = if full.is_null() {
            // A thread that keeps missing grows the buckets.
            let m = c.keg_misses.get() + 1;
            c.keg_misses.set(m);
            if m >= 2 {
                self.grow_on_miss();
            }
            self.fill_bucket(empty, flags)
        } else {
            c.keg_misses.set(0);
            full
        };
        if b.is_null() {
            return self.alloc_item(flags);
        }
        // SAFETY: b is a non-empty bucket we own.
        let item = unsafe { Bucket::pop(b) };
        // A bucket cached before the cap went down may hold more.
        self.fit_bucket(b, self.bucket_max.load(UOrdering::Relaxed));
        if c.enter() {
            // Inside the critical section: the cap a clamp set, and the limit
            // sleepers' veto (see `pcpu`).
            let cap = self.bucket_max.load(UOrdering::Relaxed);
            let installed = self.sleepers.load(Ordering::SeqCst) == 0
                // SAFETY: we hold the cache and own b.
                && unsafe { c.try_install_alloc(b, cap) };
            c.exit();
            if installed {
                return item;
            }
        }
        self.put_bucket(b);
        item
    }

    /// Gives the items of `b` beyond `cap` back to the keg.
    fn fit_bucket(&self, b: *mut Bucket, cap: usize) {
        // SAFETY: a bucket we own with `cnt` valid items.
        let cnt = unsafe { (*b).cnt } as usize;
        if cnt <= cap {
            return;
        }
        // SAFETY: slots cap..cnt hold valid items.
        let extra = unsafe { core::slice::from_raw_parts(Bucket::items(b).add(cap), cnt - cap) };
        self.release_items(extra);
        // SAFETY: our bucket.
        unsafe { (*b).cnt = cap as u16 };
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
        if t.fast_push(self, item, GATE_DRAIN | GATE_FREE) {
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

    /// Owner: enter `c` to put items into it; false when a drainer wants
    /// it or a limit sleeper vetoes caching (checked inside the critical
    /// section, see `pcpu`).
    fn enter_to_cache(&self, c: &Cache) -> bool {
        if !c.enter() {
            return false;
        }
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            c.exit();
            return false;
        }
        true
    }

    /// The owner's free refill (FreeBSD `cache_free`): swap the pair, else
    /// hand the full bucket to the zone and install an empty one.
    fn cache_free_refill(&self, c: &Cache, item: *mut u8) {
        if !self.enter_to_cache(c) {
            return self.free_item(item);
        }
        if c.push_after_swap(item) {
            c.exit();
            return;
        }
        let full = c.take_free();
        c.exit();
        let want = self.fill_size();
        let nb = if want > 0 {
            let nb = self.trade_full(full, want);
            if nb.is_null() {
                self.uma().bucket_alloc(want, self.internal_flags())
            } else {
                nb
            }
        } else {
            if !full.is_null() {
                self.put_bucket(full);
            }
            ptr::null_mut()
        };
        if nb.is_null() {
            return self.free_item(item);
        }
        if self.enter_to_cache(c) {
            let cap = self.bucket_max.load(UOrdering::Relaxed);
            // SAFETY: we hold the cache and own nb.
            if unsafe { c.try_install_free(nb, cap) } {
                let ok = c.push_after_swap(item);
                c.exit();
                if ok {
                    return;
                }
                return self.free_item(item);
            }
            c.exit();
        }
        // SAFETY: nb is our empty bucket.
        unsafe { self.uma().bucket_free(nb) };
        self.free_item(item);
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

    /// Fills the empty bucket `b` from the keg, or a new one when `b` is
    /// null (FreeBSD `zone_alloc_bucket`); never sleeps on the limit; with
    /// `USE_RESERVE` it dips at most one item. Null (and `b` freed) when
    /// nothing could be had.
    fn fill_bucket(&self, b: *mut Bucket, flags: Flags) -> *mut Bucket {
        let b = if b.is_null() {
            let bs = self.fill_size();
            if bs == 0 {
                return ptr::null_mut();
            }
            self.uma().bucket_alloc(bs, self.internal_flags())
        } else {
            b
        };
        if b.is_null() {
            return b;
        }
        // SAFETY: an empty bucket we own.
        let bs = unsafe { (*b).cap } as usize;
        let grant = self.limit_alloc(bs, flags.nowait());
        if grant == 0 {
            // SAFETY: our empty bucket.
            unsafe { self.uma().bucket_free(b) };
            return ptr::null_mut();
        }
        // SAFETY: the bucket has at least bs >= grant slots.
        let slots = unsafe { core::slice::from_raw_parts_mut(Bucket::items(b), grant) };
        let got = self.import(slots, flags);
        if got < grant {
            self.limit_free(grant - got);
        }
        let mut n = got;
        if let Some(zinit) = self.zinit {
            let mut i = 0;
            while i < n {
                // SAFETY: imported items are non-null.
                let it = unsafe { NonNull::new_unchecked(slots[i]) };
                if zinit(it, self.size, flags) {
                    i += 1;
                } else {
                    self.release(&slots[i..i + 1]);
                    self.limit_free(1);
                    slots[i] = slots[n - 1];
                    n -= 1;
                }
            }
        }
        if n == 0 {
            // SAFETY: our empty bucket.
            unsafe { self.uma().bucket_free(b) };
            return ptr::null_mut();
        }
        // SAFETY: our bucket.
        unsafe { (*b).cnt = n as u16 };
        b
    }

    /// A thread's refills keep finding no full bucket in the zone's cache
    /// (two in a row and every one after) and go to the keg: its working
    /// set outgrows its buckets. Grows the
    /// bucket size by one (FreeBSD grows it only on zone lock contention,
    /// which a thread that keeps missing alone never meets), up to
    /// [`bucket::BUCKET_GROW_BYTES`] of items per bucket (or the table's
    /// own size, if larger) and within `bucket_max`. Reclaims shrink it.
    fn grow_on_miss(&self) {
        let bs = self.bucket_size.load(UOrdering::Relaxed);
        let cap = bucket::grow_cap(self.size).min(self.bucket_max.load(UOrdering::Relaxed));
        if bs > 0 && bs < cap {
            self.bucket_size.store(bs + 1, UOrdering::Relaxed);
        }
    }

    /// Entries of a bucket filled now: the bucket size within the cap.
    fn fill_size(&self) -> usize {
        self.bucket_size
            .load(UOrdering::Relaxed)
            .min(self.bucket_max.load(UOrdering::Relaxed))
    }

    /// Gives cached items back to the keg (zfini, release, limit count).
    fn release_items(&self, items: &[*mut u8]) {
        if let Some(zfini) = self.zfini {
            for &it in items {
                // SAFETY: cached items are non-null.
                zfini(unsafe { NonNull::new_unchecked(it) }, self.size);
            }
        }
        self.release(items);
        self.limit_free(items.len());
    }

    /// Gives a bucket's items back to the keg and frees the bucket.
    pub(crate) fn release_bucket(&self, b: *mut Bucket) {
        // SAFETY: a bucket we own with `cnt` valid items.
        let items = unsafe { core::slice::from_raw_parts(Bucket::items(b), (*b).cnt as usize) };
        self.release_items(items);
        // SAFETY: the bucket is ours and now empty of meaning.
        unsafe { self.uma().bucket_free(b) };
    }

    /// [`release_bucket`](Self::release_bucket) on every bucket of `list`.
    pub(crate) fn release_list(&self, list: BucketList) {
        for b in list {
            self.release_bucket(b);
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, ZoneState> {
        match self.state.try_lock() {
            Some(g) => g,
            None => {
                // Contention: grow the bucket size (FreeBSD
                // `zone_domain_lock`), so threads come here less often.
                self.contended.fetch_add(1, UOrdering::Relaxed);
                let bs = self.bucket_size.load(UOrdering::Relaxed);
                if bs > 0 && bs < self.bucket_max.load(UOrdering::Relaxed) {
                    self.bucket_size.store(bs + 1, UOrdering::Relaxed);
                }
                self.state.lock()
            }
        }
    }

    /// Puts a bucket in the zone bucket cache (FreeBSD `zone_put_bucket`),
    /// or gives its items back if the cache is at its cap.
    pub(crate) fn put_bucket(&self, b: *mut Bucket) {
        // SAFETY: a bucket the caller owns.
        let cnt = unsafe { (*b).cnt } as usize;
        if cnt == 0 {
            // SAFETY: as above.
            unsafe { self.uma().bucket_free(b) };
            return;
        }
        let mut g = self.lock_state();
        // SAFETY: zone lock held; b is ours with cnt > 0.
        if !unsafe { self.cache_full_locked(&mut g, b) } {
            drop(g);
            self.release_bucket(b);
        }
    }

    /// Links the full bucket `b` into the bucket cache; false (nothing
    /// done) when the cache is at its cap or a limit sleeper wants the
    /// items back (checked under the zone lock: see `pcpu`).
    ///
    /// # Safety
    ///
    /// `g` is this zone's locked state; `b` is a bucket the caller owns
    /// with `cnt > 0`.
    unsafe fn cache_full_locked(&self, g: &mut ZoneState, b: *mut Bucket) -> bool {
        // SAFETY: caller contract.
        let cnt = unsafe { (*b).cnt } as usize;
        if g.nitems + cnt > self.bkt_max.load(UOrdering::Relaxed)
            || self.sleepers.load(Ordering::SeqCst) > 0
        {
            return false;
        }
        // SAFETY: under the zone lock; b is ours, for the bucket cache.
        unsafe { g.buckets.push(b) };
        g.nitems += cnt;
        g.imax = g.imax.max(g.nitems);
        true
    }

    /// The free side's trade at the zone lock: leaves the full bucket
    /// `full` (may be null) in the bucket cache and takes back an empty
    /// bucket set up for `want > 0` entries from the depot (see
    /// [`ZoneState::empty`]), in one lock hold. Null when the depot had
    /// none: the caller allocates one.
    fn trade_full(&self, full: *mut Bucket, want: usize) -> *mut Bucket {
        let mut g = self.lock_state();
        if !full.is_null() {
            // SAFETY: the zone lock is held; full is ours (cnt > 0: it was
            // full when taken out of the cache).
            if !unsafe { self.cache_full_locked(&mut g, full) } {
                drop(g);
                // SAFETY: a bucket we own with `cnt` valid items.
                let items = unsafe {
                    core::slice::from_raw_parts(Bucket::items(full), (*full).cnt as usize)
                };
                self.release_items(items);
                // SAFETY: its items are gone; the bucket itself is still ours.
                unsafe { (*full).cnt = 0 };
                // SAFETY: as above; now empty.
                if unsafe { reuse_empty(full, want) } {
                    return full;
                }
                // SAFETY: our empty bucket.
                unsafe { self.uma().bucket_free(full) };
                return ptr::null_mut();
            }
        }
        let (b, spare) = g.take_empty(want);
        drop(g);
        self.free_spares(spare);
        b
    }

    /// The alloc side's trade at the zone lock (FreeBSD
    /// `zone_fetch_bucket`): leaves the dry alloc bucket `old` (may be
    /// null) in the depot and takes a full bucket from the bucket cache,
    /// in one lock hold. Returns `(full, empty, spare)`: `full` is null
    /// when the bucket cache had none, and then `empty` is a bucket set up
    /// for `want > 0` entries to fill (`old` itself, or one from the depot;
    /// may be null). `spare` holds buckets the caller frees with
    /// [`free_spares`](Self::free_spares).
    fn fetch_bucket(
        &self,
        old: *mut Bucket,
        want: usize,
    ) -> (*mut Bucket, *mut Bucket, BucketList) {
        let mut g = self.lock_state();
        if let Some(b) = g.buckets.pop() {
            // SAFETY: a bucket of the bucket cache, now ours.
            g.nitems -= unsafe { (*b).cnt } as usize;
            g.imin = g.imin.min(g.nitems);
            let mut spare = BucketList::new();
            // SAFETY: zone lock held; old is an empty bucket we own, kept
            // in the depot if it has room.
            if !old.is_null() && !unsafe { g.stash_empty(old) } {
                // SAFETY: not kept: old is still ours, for the spare list.
                unsafe { spare.push(old) };
            }
            return (b, ptr::null_mut(), spare);
        }
        // SAFETY: old is an empty bucket we own.
        if !old.is_null() && unsafe { reuse_empty(old, want) } {
            return (ptr::null_mut(), old, BucketList::new());
        }
        let (e, mut spare) = g.take_empty(want);
        drop(g);
        // SAFETY: old, if any, is ours; it joins the spare list.
        unsafe { spare.push_nonnull(old) };
        (ptr::null_mut(), e, spare)
    }

    /// Frees the empty buckets of `list`.
    fn free_spares(&self, list: BucketList) {
        for b in list {
            // SAFETY: the list's buckets are ours and empty.
            unsafe { self.uma().bucket_free(b) };
        }
    }

    /// Takes one item out of the top cached bucket.
    fn take_cached_item(&self) -> *mut u8 {
        let mut g = self.state.lock();
        let b = g.buckets.top();
        if b.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: under the zone lock; cached buckets hold cnt > 0 items.
        let item = unsafe { Bucket::pop(b) };
        g.nitems -= 1;
        g.imin = g.imin.min(g.nitems);
        // SAFETY: as above.
        if unsafe { (*b).cnt } > 0 {
            return item;
        }
        // Unlink the now empty bucket (the top: b) and keep it for
        // trading, or free it.
        g.buckets.pop();
        // SAFETY: under the zone lock; b is an empty bucket, now ours.
        if unsafe { g.stash_empty(b) } {
            return item;
        }
        drop(g);
        // SAFETY: unlinked empty bucket.
        unsafe { self.uma().bucket_free(b) };
        item
    }

    // ------------------------------------------------------------------
    // limits

    /// Reserves up to `want` items of the limit (FreeBSD
    /// `zone_alloc_limit`). Sleeps for a single item with `WAITOK`, after
    /// taking back every item parked in the zone's caches.
    pub(crate) fn limit_alloc(&self, want: usize, flags: Flags) -> usize {
        let max = self.max_items.load(Ordering::Acquire);
        if max == 0 {
            self.items.fetch_add(want, Ordering::Relaxed);
            return want;
        }
        let mut timed_out = false;
        loop {
            let cur = self.items.load(Ordering::SeqCst);
            if cur < max {
                let grant = want.min(max - cur);
                if self
                    .items
                    .compare_exchange(cur, cur + grant, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    return grant;
                }
                continue;
            }
            if !flags.may_sleep() || want > 1 {
                return 0;
            }
            let first = self.sleepers.fetch_add(1, Ordering::SeqCst) == 0;
            // Dekker with limit_free (our sleepers++ vs its items--), and
            // with every move of an item into a cache (they check sleepers
            // inside the cache's critical section or under the zone lock).
            fence(Ordering::SeqCst);
            // Items cached in any thread's cache or in the bucket cache count
            // against the limit: take them back so they stop counting. While
            // sleepers > 0 nothing new gets parked, so only the sleeper that
            // made it non-zero drains (what it misses was given back to the
            // keg, which wakes every sleeper); later ones are woken by that
            // drain's frees. After a timed-out sleep we drain again anyway.
            if first || timed_out {
                self.reclaim_cached();
            }
            timed_out = false;
            let mut g = self.state.lock();
            if self.items.load(Ordering::SeqCst) >= max {
                if !g.warned {
                    g.warned = true;
                    debug::warn(format_args!(
                        "uma: zone {}: limit of {} items reached\n",
                        self.name, max
                    ));
                }
                self.sleeps.fetch_add(1, UOrdering::Relaxed);
                (g, timed_out) = self
                    .limit_cv
                    .wait_timeout(g, std::time::Duration::from_millis(LIMIT_SLEEP_MS));
            }
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(g);
        }
    }

    /// Gives back every item cached by the zone: every per-thread cache
    /// (DRAIN_CPU) and the bucket cache, to the keg.
    fn reclaim_cached(&self) {
        if self.bucket_top == 0 {
            return;
        }
        self.release_list(pcpu::drain_zone_caches(self, false));
        self.bucket_cache_reclaim(true);
    }

    /// Returns `n` items to the limit and wakes sleepers.
    pub(crate) fn limit_free(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.items.fetch_sub(n, Ordering::SeqCst);
        // Dekker with limit_alloc's sleeper: either it sees our decrement
        // or we see it counted in `sleepers` (and it waits under the lock
        // we take to notify).
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.state.lock();
            self.limit_cv.notify_all();
        }
    }

    /// Sets the zone limit (FreeBSD `uma_zone_set_max`): at most `n` items
    /// allocated plus cached; `0` removes it. Returns the limit.
    ///
    /// Per-thread caching is capped so that the registered per-thread
    /// caches hold at most half the limit together: each of the
    /// `max(CPUs, registered caches)` caches gets two buckets of at most
    /// `n / 2 / (2 * that)` items. When more threads register caches the
    /// cap goes down and the caches are clamped to it; at a cap of zero
    /// threads bypass their caches. The bucket cache holds at most `n / 2`.
    pub fn set_max(&self, n: usize) -> usize {
        self.max_items.store(n, Ordering::SeqCst);
        if n > 0 {
            self.fast.fetch_or(FAST_FREE, UOrdering::Relaxed);
            self.bkt_max.store(n / 2, UOrdering::Relaxed);
        }
        let over = {
            let _r = self.uma().registry_lock();
            // The caches' gates get FAST_FREE, so their fast frees miss
            // into `free_prep` (the limit sleepers' veto).
            // SAFETY: registry lock held.
            unsafe {
                pcpu::mirror_zone_gate(self);
            }
            if self.update_caches_locked() {
                // SAFETY: registry lock held.
                unsafe { pcpu::clamp_zone_caches(self) }
            } else {
                BucketList::new()
            }
        };
        self.release_list(over);
        // A raised limit may let sleepers go.
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.state.lock();
            self.limit_cv.notify_all();
        }
        n
    }

    /// Recomputes the per-thread cap `bucket_max` from the limit and the
    /// number of registered caches (FreeBSD `uma_zone_set_maxcache` and
    /// `zone_update_caches`). Returns true when it went down: the caller
    /// must then clamp the caches ([`pcpu::clamp_zone_caches`]).
    ///
    /// Called with the registry lock held (it guards `ncaches`, and
    /// serializes updates with each other and with the clamps).
    pub(crate) fn update_caches_locked(&self) -> bool {
        let max = self.max_items.load(Ordering::SeqCst);
        let cap = if max == 0 {
            self.bucket_top
        } else {
            let n = self.uma().ncpu.max(self.ncaches.get()).max(1);
            (max / 2 / (2 * n)).min(self.bucket_top)
        };
        let old = self.bucket_max.swap(cap, UOrdering::Relaxed);
        self.bucket_min
            .store(self.bucket_floor.min(cap), UOrdering::Relaxed);
        if self.bucket_size.load(UOrdering::Relaxed) > cap {
            self.bucket_size.store(cap, UOrdering::Relaxed);
        }
        cap < old
    }

    /// The limit (0: none).
    pub fn max(&self) -> usize {
        self.max_items.load(Ordering::Relaxed)
    }

    /// Limits the zone bucket cache to `items` items (FreeBSD
    /// `uma_zone_set_maxcache`).
    pub fn set_maxcache(&self, items: usize) {
        self.bkt_max.store(items, UOrdering::Relaxed);
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
    // reclaim

    /// Updates the working-set estimate of the bucket cache (FreeBSD
    /// `zone_domain_update_wss`, run from `uma_timeout` every 20 s).
    pub fn update_wss(&self) {
        let mut g = self.state.lock();
        let wss = g.imax - g.imin;
        g.imax = g.nitems;
        g.imin = g.nitems;
        g.wss = (4 * wss + g.wss) / 5;
    }

    /// Gives back bucket-cache items above the working-set estimate (or
    /// above what the current period has used, if that is more), or all of
    /// them with `drain` (FreeBSD `bucket_cache_reclaim`). The coldest
    /// buckets go: the cache is a stack, so the ones at its bottom. The
    /// bounds of the current period's range shift down by what went, so
    /// that the trim does not count as use in the next estimate. Kept
    /// empty buckets go too: all of them with `drain`, else those beyond
    /// the number of full buckets left (each can be traded for at most
    /// one). Returns whether items were given back.
    pub(crate) fn bucket_cache_reclaim(&self, drain: bool) -> bool {
        let mut out = BucketList::new();
        let mut spare = BucketList::new();
        {
            let mut g = self.state.lock();
            let target = if drain {
                0
            } else {
                g.wss.max(g.nitems - g.imin)
            };
            if g.nitems > target {
                // Keep the longest run from the top holding at most
                // `target` items; cut the rest off.
                let mut kept = 0usize;
                out = g.buckets.split_off_where(|b| {
                    let fits = kept + b.cnt as usize <= target;
                    if fits {
                        kept += b.cnt as usize;
                    }
                    fits
                });
                let gone = g.nitems - kept;
                g.nitems = kept;
                g.imax -= g.imax.min(gone);
                g.imin -= g.imin.min(gone);
            }
            let keep = if drain { 0 } else { g.buckets.len() };
            while g.empty.len() > keep {
                g.empty.pop_onto(&mut spare);
            }
        }
        self.free_spares(spare);
        let released = !out.is_empty();
        self.release_list(out);
        released
    }

    /// Whether giving this zone's cached items and free slabs back runs
    /// code of the application: a secondary zone's zfini, a cache-only
    /// zone's release, the keg's fini, or a page source other than the
    /// instance's. (Constructors and destructors never run on a trim: cached
    /// items are already destructed.)
    pub fn trim_runs_callbacks(&self) -> bool {
        self.trim_runs_callbacks_besides(None)
    }

    /// [`trim_runs_callbacks`](Self::trim_runs_callbacks), counting the
    /// page source `src` (one the caller calls anyway) as UMA's own.
    pub(crate) fn trim_runs_callbacks_besides(&self, src: Option<&dyn SlabSource>) -> bool {
        self.zfini.is_some()
            || self.release_fn.is_some()
            || self
                .keg()
                .is_some_and(|k| k.fini.is_some() || !k.uses_instance_source_or(src))
    }

    /// The periodic work of FreeBSD `zone_timeout` for this zone: updates
    /// the working-set estimate, gives back the bucket-cache items above
    /// it (and the empty buckets beyond the full ones), and when that gave
    /// back items, frees the keg's free slabs (above its reserve) to the
    /// page source. Returns whether items were given back.
    ///
    /// Called once per period (FreeBSD: every `UMA_TIMEOUT`); the estimate
    /// is the decayed peak-to-trough range of the bucket cache over the
    /// periods, so a burst's items go back over a few periods while a
    /// steady working set stays cached. Runs the zone's fini, release and
    /// page-source callbacks in the calling thread.
    pub fn timeout(&self) -> bool {
        if self.bucket_top == 0 {
            return false;
        }
        self.update_wss();
        let released = self.bucket_cache_reclaim(false);
        if released {
            if let Some(k) = self.keg() {
                k.drain();
            }
        }
        released
    }

    /// Flushes every per-thread cache of the zone into the bucket cache,
    /// without the owners' help (DRAIN_CPU).
    pub(crate) fn drain_caches(&self) {
        if self.bucket_top == 0 {
            return;
        }
        for b in pcpu::drain_zone_caches(self, false) {
            self.put_bucket(b);
        }
    }

    /// A `WAITOK` allocation of this zone found the page source out of
    /// memory: the zone's cached items (with `DrainCpu`, those in every
    /// thread's cache too) go back to the keg, where the retry finds them.
    /// No slab is freed, so no keg fini or page source runs; skipped for a
    /// zone with a zfini (it would run here).
    pub(crate) fn reclaim_to_keg(&self, how: Reclaim) {
        if self.zfini.is_some() {
            return;
        }
        if how == Reclaim::DrainCpu {
            self.drain_caches();
        }
        self.bucket_cache_reclaim(how != Reclaim::Trim);
    }

    /// Reclaims memory from this zone (FreeBSD `uma_zone_reclaim`).
    pub fn reclaim(&self, how: Reclaim) {
        if how == Reclaim::DrainCpu {
            self.drain_caches();
        }
        self.bucket_cache_reclaim(how != Reclaim::Trim);
        if how != Reclaim::Trim {
            let bs = self.bucket_size.load(UOrdering::Relaxed);
            let min = self.bucket_min.load(UOrdering::Relaxed);
            if bs > min {
                self.bucket_size
                    .store(bucket::smaller(bs).max(min), UOrdering::Relaxed);
            }
        }
        if let Some(k) = self.keg() {
            k.drain();
        }
    }

    /// Current bucket size (entries per bucket this zone fills).
    pub fn bucket_size(&self) -> usize {
        self.bucket_size.load(UOrdering::Relaxed)
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
            for b in g.buckets.iter() {
                // SAFETY: under the zone lock; cached buckets are valid.
                unsafe {
                    assert!((*b).cnt > 0, "zone {}: empty bucket cached", self.name);
                    assert!(
                        (*b).cnt <= (*b).cap,
                        "zone {}: bucket over capacity",
                        self.name
                    );
                    assert!(
                        ((*b).cap as usize) <= bucket::BUCKET_ENTRIES[(*b).zidx as usize],
                        "zone {}: bucket cap exceeds its bucket zone",
                        self.name
                    );
                    for i in 0..(*b).cnt as usize {
                        assert!(
                            !(*Bucket::items(b).add(i)).is_null(),
                            "zone {}: null item cached",
                            self.name
                        );
                    }
                    items += (*b).cnt as usize;
                }
                n += 1;
            }
            assert_eq!(
                n,
                g.buckets.len(),
                "zone {}: bucket count mismatch",
                self.name
            );
            let mut ne = 0;
            for e in g.empty.iter() {
                // SAFETY: under the zone lock; kept buckets are valid.
                let cnt = unsafe { (*e).cnt };
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
                g.imin <= g.nitems && g.nitems <= g.imax,
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
