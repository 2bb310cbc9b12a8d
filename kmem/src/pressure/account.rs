//! The accounting behind the memory limit and reservations, in one atomic
//! word so that "committed + reserved <= limit" is checked and updated in
//! a single compare-and-swap (two separate counters would let a granted
//! reservation and an ordinary charge both pass against the same room).
//!
//! Units are pages. Low 32 bits: committed pages (what kmem took from the
//! kernel arena for slabs, large blocks, `kmem_malloc`, `kva_alloc`); high
//! 32 bits: reserved pages (granted, not yet drawn). 2^32 pages of 4 KiB is
//! 16 TiB each.
//!
//! A protocol of kmem's `sync` shim: the loom model
//! (`src/tests/loom_pressure.rs`) runs this struct with loom's atomics.

use crate::sync::{const_new, AtomicU64, Ordering};

const LOW: u64 = 0xffff_ffff;

/// Committed and reserved pages.
pub(crate) struct Account {
    state: AtomicU64,
}

/// Splits a state word into (committed, reserved) pages.
#[inline]
pub(crate) fn split(s: u64) -> (u64, u64) {
    (s & LOW, s >> 32)
}

#[inline]
fn join(committed: u64, reserved: u64) -> u64 {
    (reserved << 32) | committed
}

#[allow(dead_code)]
impl Account {
    const_new! {
        /// An empty account: nothing committed or reserved.
        pub(crate) fn new() -> Account {
            Account { state: AtomicU64::new(0) }
        }
    }

    /// (committed, reserved) pages now.
    #[inline]
    pub(crate) fn get(&self) -> (u64, u64) {
        split(self.state.load(Ordering::Acquire))
    }

    /// Commits `pages` if `committed + pages (+ reserved unless bypass) <=
    /// limit` (`limit == 0`: no limit). A `bypass` charge is made on
    /// behalf of a reservation (its room is inside `reserved`), or must
    /// not fail (boundary-tag slabs: `force`).
    #[inline]
    pub(crate) fn try_charge(&self, pages: u64, limit: u64, bypass: bool, force: bool) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let (c, r) = split(s);
            let need = c + pages + if bypass { 0 } else { r };
            if !force && limit != 0 && need > limit {
                return false;
            }
            if c + pages > LOW {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                join(c + pages, r),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Gives back `pages` committed pages.
    #[inline]
    pub(crate) fn uncharge(&self, pages: u64) {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let (c, r) = split(s);
            // Never below zero (a charge made before the accounting existed,
            // e.g. during the bootstrap, can be freed later).
            let n = join(c.saturating_sub(pages), r);
            match self
                .state
                .compare_exchange_weak(s, n, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
    }

    /// Reserves `pages` if `committed + reserved + pages <= limit` and
    /// `reserved + pages <= max_reserved` (`limit == 0`: only the latter,
    /// and only if `max_reserved != 0`).
    pub(crate) fn try_reserve(&self, pages: u64, limit: u64, max_reserved: u64) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let (c, r) = split(s);
            if limit != 0 && c + r + pages > limit {
                return false;
            }
            if max_reserved != 0 && r + pages > max_reserved {
                return false;
            }
            if r + pages > LOW {
                return false;
            }
            match self.state.compare_exchange_weak(
                s,
                join(c, r + pages),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    /// Gives back `pages` reserved pages (drawn or unused).
    pub(crate) fn unreserve(&self, pages: u64) {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let (c, r) = split(s);
            let n = join(c, r.saturating_sub(pages));
            match self
                .state
                .compare_exchange_weak(s, n, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
    }
}
