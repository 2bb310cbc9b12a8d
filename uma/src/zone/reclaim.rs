//! Reclaim: the bucket cache's working-set estimate and trims (FreeBSD
//! `zone_domain_update_wss`, `bucket_cache_reclaim`, `zone_timeout`), and
//! the drains of every level (`uma_zone_reclaim` with `Trim`, `Drain`,
//! `DrainCpu`).

use super::Zone;
use crate::bucket::{self, BucketList};
use crate::pcpu;
use crate::source::SlabSource;
use crate::sync::unmodeled::Ordering as UOrdering;
use crate::Reclaim;

/// What a trim of the bucket cache keeps besides the working-set estimate
/// of the past periods ([`Zone::bucket_cache_reclaim`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Keep {
    /// Nothing, the estimate neither: a drain.
    Nothing,
    /// The range of the count this period: what the period used, the
    /// blocks freed into the cache included (a timeout pass, a `Trim`).
    Used,
    /// The biggest batch this period drew from the cache
    /// ([`Zone::trim_early`]).
    Drawn,
    /// The soft cap ([`Zone::trim_to_cache_cap`]).
    Cap,
}

impl Keep {
    /// A `Trim` keeps what the period used; `Drain` and `DrainCpu` keep
    /// nothing.
    fn for_reclaim(how: Reclaim) -> Keep {
        if how == Reclaim::Trim {
            Keep::Used
        } else {
            Keep::Nothing
        }
    }
}

impl Zone {
    /// Updates the working-set estimate of the bucket cache (FreeBSD
    /// `zone_domain_update_wss`, run from `uma_timeout` every 20 s): four
    /// fifths the range of the count this period, one fifth the estimate
    /// before (so a burst's estimate decays to a fifth per quiet period),
    /// and a new period begins.
    pub fn update_wss(&self) {
        let mut g = self.state.lock();
        let wss = g.imax - g.imin;
        g.imax = g.nitems;
        g.imin = g.nitems;
        g.bimin = g.nitems;
        g.batch = 0;
        g.wss = (4 * wss + g.wss) / 5;
    }

    /// Gives back bucket-cache items above the working-set estimate and
    /// above what [`Keep`] says of the current period (FreeBSD
    /// `bucket_cache_reclaim`). The coldest
    /// buckets go: the cache is a stack, so the ones at its bottom. The
    /// bounds of the current period's range shift down by what went, so
    /// that the trim does not count as use in the next estimate. Kept
    /// empty buckets go too: all of them with [`Keep::Nothing`], else those beyond
    /// the number of full buckets left (each can be traded for at most
    /// one). Returns whether items were given back.
    pub(crate) fn bucket_cache_reclaim(&self, keep: Keep) -> bool {
        let mut out = BucketList::new();
        let mut spare = BucketList::new();
        {
            let mut g = self.state.lock();
            let target = match keep {
                Keep::Nothing => 0,
                Keep::Used => g.wss.max(g.nitems - g.imin),
                Keep::Drawn => g.wss.max(g.period_batch()),
                Keep::Cap => self.cache_cap.load(UOrdering::Relaxed),
            };
            if g.nitems > target {
                // Keep the longest run from the top holding at most
                // `target` items; cut the rest off.
                let mut kept = 0usize;
                out = g.buckets.split_off_where(|cnt| {
                    let fits = kept + cnt <= target;
                    if fits {
                        kept += cnt;
                    }
                    fits
                });
                let gone = g.nitems - kept;
                g.nitems = kept;
                g.imax -= g.imax.min(gone);
                g.imin -= g.imin.min(gone);
                g.bimin -= g.bimin.min(gone);
            }
            if g.nitems <= self.cache_cap.load(UOrdering::Relaxed) {
                // Past the cap again later, the hook hears of it again.
                self.over_cap.store(0, UOrdering::Relaxed);
            }
            let kept = if keep == Keep::Nothing {
                0
            } else {
                g.buckets.len()
            };
            while g.empty.len() > kept {
                spare.push_some(g.empty.pop());
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
        self.trim(Keep::Used)
    }

    /// A trim between periods, for a caller about to take more memory
    /// from the system: gives back the bucket-cache items above the
    /// working-set estimate and above the biggest batch the current period
    /// drew from the cache (and frees the keg's free slabs, as
    /// [`timeout`](Self::timeout)). Unlike a timeout it neither ends the
    /// period nor decays the estimate, and what only came into the cache
    /// since the period began (blocks of a class the program left, freed
    /// and not asked for since) goes back at once: the period's range,
    /// which a timeout keeps, counts those as use. Runs the same callbacks
    /// as [`timeout`](Self::timeout). Returns whether items were given
    /// back.
    pub fn trim_early(&self) -> bool {
        if self.bucket_top == 0 {
            return false;
        }
        self.trim(Keep::Drawn)
    }

    /// Gives back the bucket-cache items beyond the soft cap of
    /// [`set_cache_cap`](Self::set_cache_cap), the coldest buckets first,
    /// and frees the keg's free slabs if that gave any back (as
    /// [`timeout`](Self::timeout)); from then on the hook hears of the
    /// next time past the cap. Runs the same callbacks as
    /// [`timeout`](Self::timeout). Returns whether items were given back.
    pub fn trim_to_cache_cap(&self) -> bool {
        if self.bucket_top == 0 {
            return false;
        }
        self.trim(Keep::Cap)
    }

    /// The trim of [`timeout`](Self::timeout) and
    /// [`trim_early`](Self::trim_early).
    fn trim(&self, keep: Keep) -> bool {
        let released = self.bucket_cache_reclaim(keep);
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
        self.bucket_cache_reclaim(Keep::for_reclaim(how));
    }

    /// Reclaims memory from this zone (FreeBSD `uma_zone_reclaim`).
    pub fn reclaim(&self, how: Reclaim) {
        if how == Reclaim::DrainCpu {
            self.drain_caches();
        }
        self.bucket_cache_reclaim(Keep::for_reclaim(how));
        if how != Reclaim::Trim {
            // A reclaim ends a slow start: from here the size adapts as
            // FreeBSD's does.
            self.bucket_ramp.store(0, UOrdering::Relaxed);
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
}
