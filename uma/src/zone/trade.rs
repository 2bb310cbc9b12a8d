//! Bucket trades: what a thread's cache does at the zone when its alloc
//! bucket ran dry or its free bucket filled (FreeBSD `cache_alloc_retry`,
//! `cache_free`, `zone_fetch_bucket`, `zone_put_bucket`,
//! `zone_alloc_bucket`), and the zone's bucket cache and depot of empty
//! buckets they trade with ([`ZoneState`]). A thread trades a dry alloc
//! bucket for a full one, and a full free bucket for an empty one, in one
//! zone-lock hold; buckets move as [`BucketList`]s.

use core::ptr::{self, NonNull};

use super::Zone;
use crate::bucket::{self, Bucket, BucketList};
use crate::pcpu::Cache;
use crate::sync::unmodeled::Ordering as UOrdering;
use crate::sync::{MutexGuard, Ordering};
use crate::Flags;

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

impl Zone {
    /// The owner's refill (FreeBSD `cache_alloc_retry`): swap the pair, else
    /// trade the empty bucket for a full one from the bucket cache or a new
    /// fill, with the cache left (not busy) while the zone is worked on.
    pub(super) fn cache_alloc_refill(&self, c: &Cache, flags: Flags) -> *mut u8 {
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
    pub(super) fn cache_free_refill(&self, c: &Cache, item: *mut u8) {
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
    pub(super) fn free_spares(&self, list: BucketList) {
        for b in list {
            // SAFETY: the list's buckets are ours and empty.
            unsafe { self.uma().bucket_free(b) };
        }
    }

    /// Takes one item out of the top cached bucket.
    pub(super) fn take_cached_item(&self) -> *mut u8 {
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
}
