//! Bucket trades: what a thread's cache does at the zone when its alloc
//! bucket ran dry or its free bucket filled (FreeBSD `cache_alloc_retry`,
//! `cache_free`, `zone_fetch_bucket`, `zone_put_bucket`,
//! `zone_alloc_bucket`), and the zone's bucket cache and depot of empty
//! buckets they trade with ([`ZoneState`]). A thread trades a dry alloc
//! bucket for a full one, and a full free bucket for an empty one, in one
//! zone-lock hold; buckets move as [`BucketList`]s.

use core::ptr::{self, NonNull};

use super::Zone;
use crate::bucket::{self, BucketList, OwnedBucket};
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
    /// The most and the fewest items this period.
    pub imax: usize,
    pub imin: usize,
    /// The fewest items since `imax` was last raised: the bottom of the
    /// batch being drawn now (FreeBSD `uzd_bimin`).
    pub bimin: usize,
    /// The biggest batch drawn from the cache this period, of those ended
    /// by a new maximum (see [`ZoneState::period_batch`]).
    pub batch: usize,
    /// The working-set estimate: the ranges of the past periods, decayed
    /// (see `Zone::update_wss`).
    pub wss: usize,
    pub warned: bool,
}

impl ZoneState {
    /// `cnt` items went into the bucket cache. A new maximum ends the
    /// batch drawn since the last one (FreeBSD `zone_domain_imax_set`).
    pub(super) fn cached(&mut self, cnt: usize) {
        self.nitems += cnt;
        if self.nitems > self.imax {
            self.batch = self.batch.max(self.imax - self.bimin);
            self.imax = self.nitems;
            self.bimin = self.nitems;
        }
    }

    /// `cnt` items came out of the bucket cache.
    pub(super) fn drawn(&mut self, cnt: usize) {
        self.nitems -= cnt;
        self.imin = self.imin.min(self.nitems);
        self.bimin = self.bimin.min(self.nitems);
    }

    /// The biggest batch drawn from the bucket cache this period: the
    /// most items taken out between two highs (FreeBSD's "biggest
    /// allocation batch", `uzd_imax - uzd_bimin`). Items that only came in
    /// are no batch: a class the program left, its blocks freed into the
    /// cache and not asked for since. What an early trim keeps
    /// (`Zone::trim_early`).
    pub(super) fn period_batch(&self) -> usize {
        self.batch.max(self.imax - self.bimin)
    }

    /// Keeps the empty bucket `b` for trading; when the depot is full, `b`
    /// comes back.
    fn stash_empty(&mut self, b: OwnedBucket) -> Result<(), OwnedBucket> {
        if self.empty.len() >= EMPTY_MAX {
            return Err(b);
        }
        self.empty.push(b);
        Ok(())
    }

    /// Pops a kept empty bucket set up for `want > 0` entries: `(bucket,
    /// spare)`. A popped bucket too small for `want` (the bucket size grew
    /// since it was kept) comes back in `spare`, for the caller to free
    /// outside the lock.
    fn take_empty(&mut self, want: usize) -> (Option<OwnedBucket>, BucketList) {
        let mut spare = BucketList::new();
        let Some(mut b) = self.empty.pop() else {
            return (None, spare);
        };
        if b.reuse_for(want) {
            return (Some(b), spare);
        }
        spare.push(b);
        (None, spare)
    }
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
            if let Some(old) = old {
                self.uma().bucket_free(old);
            }
            return self.alloc_item(flags);
        }
        let (full, empty, spare) = self.fetch_bucket(old, want);
        self.free_spares(spare);
        let ramp = self.bucket_ramp.load(UOrdering::Relaxed) != 0;
        let b = match full {
            None => {
                // A thread that keeps missing grows the buckets.
                let m = c.keg_misses.get() + 1;
                c.keg_misses.set(m);
                if !ramp && m >= 2 {
                    self.grow_on_miss();
                }
                self.fill_bucket(empty, flags)
            }
            Some(full) => {
                c.keg_misses.set(0);
                Some(full)
            }
        };
        if ramp {
            // After the fill (the first bucket has the ramp's starting
            // size), whether the bucket came from the keg or from the
            // zone's cache: where other threads' frees feed this thread's
            // allocations, the keg is seldom reached, and a ramp that
            // only counted its fills would stay at its start.
            self.ramp_up();
        }
        let Some(mut b) = b else {
            return self.alloc_item(flags);
        };
        let Some(item) = b.pop() else {
            crate::debug::fatal(format_args!(
                "uma: zone {}: empty bucket refilled",
                self.name
            ));
        };
        // A bucket cached before the cap went down may hold more.
        self.fit_bucket(&mut b, self.bucket_max.load(UOrdering::Relaxed));
        if c.enter() {
            // Inside the critical section: the cap a clamp set, and the limit
            // sleepers' veto (see `pcpu`).
            let cap = self.bucket_max.load(UOrdering::Relaxed);
            if self.sleepers.load(Ordering::SeqCst) == 0 {
                // SAFETY: we hold the cache.
                match unsafe { c.try_install_alloc(b, cap) } {
                    Ok(()) => {
                        c.exit();
                        return item;
                    }
                    Err(back) => b = back,
                }
            }
            c.exit();
        }
        self.put_bucket(b);
        item
    }

    /// Gives the items of `b` beyond `cap` back to the keg.
    fn fit_bucket(&self, b: &mut OwnedBucket, cap: usize) {
        if b.cnt() <= cap {
            return;
        }
        self.release_items(&b.items()[cap..]);
        b.truncate(cap);
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
        // A full free bucket is a refill too (see `cache_alloc_refill`):
        // a thread that only frees ramps the buckets up as well.
        self.ramp_up();
        let nb = if want > 0 {
            self.trade_full(full, want)
                .or_else(|| self.uma().bucket_alloc(want, self.internal_flags()))
        } else {
            if let Some(full) = full {
                self.put_bucket(full);
            }
            None
        };
        let Some(nb) = nb else {
            return self.free_item(item);
        };
        let nb = if self.enter_to_cache(c) {
            let cap = self.bucket_max.load(UOrdering::Relaxed);
            // SAFETY: we hold the cache.
            match unsafe { c.try_install_free(nb, cap) } {
                Ok(()) => {
                    let ok = c.push_after_swap(item);
                    c.exit();
                    if ok {
                        return;
                    }
                    return self.free_item(item);
                }
                Err(nb) => {
                    c.exit();
                    nb
                }
            }
        } else {
            nb
        };
        self.uma().bucket_free(nb);
        self.free_item(item);
    }

    /// Fills the empty bucket `b` from the keg, or a new one when `b` is
    /// `None` (FreeBSD `zone_alloc_bucket`); never sleeps on the limit; with
    /// `USE_RESERVE` it dips at most one item. `None` (and `b` freed) when
    /// nothing could be had.
    fn fill_bucket(&self, b: Option<OwnedBucket>, flags: Flags) -> Option<OwnedBucket> {
        let mut b = match b {
            Some(b) => b,
            None => {
                let bs = self.fill_size();
                if bs == 0 {
                    return None;
                }
                self.uma().bucket_alloc(bs, self.internal_flags())?
            }
        };
        let bs = b.cap();
        let grant = self.limit_alloc(bs, flags.nowait());
        if grant == 0 {
            self.uma().bucket_free(b);
            return None;
        }
        let slots = b.slots(grant);
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
            self.uma().bucket_free(b);
            return None;
        }
        // The keg hands out a slab's items lowest first and a cache pops
        // the top of its bucket: reversed, fresh items leave in ascending
        // address order, as every peer hands out fresh memory, so that a
        // structure built in allocation order is laid out forward (what the
        // next-line and stream prefetchers follow best).
        slots[..n].reverse();
        b.set_filled(n);
        Some(b)
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

    /// A `RAMP` zone's slow start, at each refill of a cache: doubles the
    /// bucket size until it reaches the ramp's end (then the ramp is
    /// over). Relaxed, as the other adjustments: two threads at once
    /// double it once or twice.
    fn ramp_up(&self) {
        let end = self.bucket_ramp.load(UOrdering::Relaxed);
        if end == 0 {
            return;
        }
        let bs = self.bucket_size.load(UOrdering::Relaxed);
        // Within the per-thread cap as well, which a limit may have
        // lowered below the ramp's end (then the ramp ends there).
        let cap = self.bucket_max.load(UOrdering::Relaxed);
        let next = (bs * 2).min(end).min(cap);
        if bs > 0 && bs < next {
            self.bucket_size.store(next, UOrdering::Relaxed);
        }
        if bs == 0 || next >= end || next >= cap {
            self.bucket_ramp.store(0, UOrdering::Relaxed);
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
    pub(crate) fn release_bucket(&self, b: OwnedBucket) {
        self.release_items(b.items());
        self.uma().bucket_free(b);
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
    pub(crate) fn put_bucket(&self, b: OwnedBucket) {
        if b.cnt() == 0 {
            self.uma().bucket_free(b);
            return;
        }
        let mut g = self.lock_state();
        if let Err(b) = self.cache_full_locked(&mut g, b) {
            drop(g);
            self.release_bucket(b);
        }
    }

    /// Links the full bucket `b` (`cnt > 0`) into the bucket cache of the
    /// locked state `g`; `b` comes back when the cache is at its cap or a
    /// limit sleeper wants the items back (checked under the zone lock:
    /// see `pcpu`).
    fn cache_full_locked(&self, g: &mut ZoneState, b: OwnedBucket) -> Result<(), OwnedBucket> {
        let cnt = b.cnt();
        if g.nitems + cnt > self.bkt_max.load(UOrdering::Relaxed)
            || self.sleepers.load(Ordering::SeqCst) > 0
        {
            return Err(b);
        }
        g.buckets.push(b);
        g.cached(cnt);
        self.note_cache_level(g.nitems);
        Ok(())
    }

    /// The free side's trade at the zone lock: leaves the full bucket
    /// `full` (if any; `cnt > 0`: it was full when taken out of the cache)
    /// in the bucket cache and takes back an empty bucket set up for
    /// `want > 0` entries from the depot (see [`ZoneState::empty`]), in one
    /// lock hold. `None` when the depot had none: the caller allocates one.
    fn trade_full(&self, full: Option<OwnedBucket>, want: usize) -> Option<OwnedBucket> {
        let mut g = self.lock_state();
        if let Some(full) = full {
            if let Err(mut full) = self.cache_full_locked(&mut g, full) {
                drop(g);
                self.release_items(full.items());
                // Its items are gone; the bucket itself is still ours.
                full.truncate(0);
                if full.reuse_for(want) {
                    return Some(full);
                }
                self.uma().bucket_free(full);
                return None;
            }
        }
        let (b, spare) = g.take_empty(want);
        drop(g);
        self.free_spares(spare);
        b
    }

    /// The alloc side's trade at the zone lock (FreeBSD
    /// `zone_fetch_bucket`): leaves the dry alloc bucket `old` (if any) in
    /// the depot and takes a full bucket from the bucket cache, in one lock
    /// hold. Returns `(full, empty, spare)`: `full` is `None` when the
    /// bucket cache had none, and then `empty` is a bucket set up for
    /// `want > 0` entries to fill (`old` itself, or one from the depot; may
    /// be `None`). `spare` holds buckets the caller frees with
    /// [`free_spares`](Self::free_spares).
    fn fetch_bucket(
        &self,
        old: Option<OwnedBucket>,
        want: usize,
    ) -> (Option<OwnedBucket>, Option<OwnedBucket>, BucketList) {
        let mut g = self.lock_state();
        if let Some(b) = g.buckets.pop() {
            g.drawn(b.cnt());
            let mut spare = BucketList::new();
            if let Some(old) = old {
                // Kept in the depot if it has room, else a spare.
                if let Err(old) = g.stash_empty(old) {
                    spare.push(old);
                }
            }
            return (Some(b), None, spare);
        }
        let mut old = old;
        if old.as_mut().is_some_and(|b| b.reuse_for(want)) {
            return (None, old, BucketList::new());
        }
        let (e, mut spare) = g.take_empty(want);
        drop(g);
        // `old`, too small for `want`, joins the spares.
        spare.push_some(old);
        (None, e, spare)
    }

    /// Frees the empty buckets of `list`.
    pub(super) fn free_spares(&self, list: BucketList) {
        for b in list {
            self.uma().bucket_free(b);
        }
    }

    /// Takes one item out of the top cached bucket.
    pub(super) fn take_cached_item(&self) -> *mut u8 {
        let mut g = self.state.lock();
        let Some(mut b) = g.buckets.pop() else {
            return ptr::null_mut();
        };
        let Some(item) = b.pop() else {
            crate::debug::fatal(format_args!("uma: zone {}: empty bucket cached", self.name));
        };
        g.drawn(1);
        if b.cnt() > 0 {
            // Back on top, where it was.
            g.buckets.push(b);
            return item;
        }
        // Keep the now empty bucket for trading, or free it.
        if let Err(b) = g.stash_empty(b) {
            drop(g);
            self.uma().bucket_free(b);
        }
        item
    }
}
