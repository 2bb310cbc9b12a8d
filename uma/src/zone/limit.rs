//! The zone limit (FreeBSD `zone_alloc_limit`, `zone_free_limit`,
//! `uma_zone_set_max`, `uma_zone_set_maxcache`): items allocated plus
//! cached, the sleepers at the limit and the per-thread cap the limit sets
//! (see `pcpu` for the sleepers' veto on caching).

use super::{Zone, FAST_FREE};
use crate::bucket::BucketList;
use crate::debug;
use crate::pcpu;
use crate::sync::unmodeled::Ordering as UOrdering;
use crate::sync::{fence, Ordering};
use crate::Flags;

/// Longest sleep on the limit before the sleeper looks again (and takes
/// back what other threads cached meanwhile).
const LIMIT_SLEEP_MS: u64 = 100;
impl Zone {
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
        self.bucket_cache_reclaim(super::reclaim::Keep::Nothing);
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
}
