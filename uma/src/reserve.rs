//! The keg reserve (FreeBSD `uk_reserve`, `uma_zone_reserve`): the policy,
//! as three pure rules the keg applies under its lock.
//!
//! The reserve breaks the boot-time recursion of vmem boundary tags (see
//! the crate doc): a reserve of `n` items means ordinary callers never take
//! the keg's last `n` free items, so a caller that *must* succeed without
//! new pages (`USE_RESERVE | NOVM`) always finds one.
//!
//! 1. [`may_take`]: without `USE_RESERVE` a caller may take a free item only
//!    while more than `reserve` are free; otherwise it must grow the keg
//!    (a new slab) or fail (`NOVM`).
//! 2. [`stop_after_take`]: a bucket fill stops as soon as the free count is
//!    at or below the reserve, so one fill dips at most one item into the
//!    reserve even with `USE_RESERVE` (FreeBSD D26771).
//! 3. [`may_drain_slab`]: `keg_drain` frees a free slab only while the free
//!    items left, counting free items in partial slabs, stay at least the
//!    reserve (FreeBSD D26772; the PR 248008 hang was a drain ignoring it).
//!
//! Only zone destruction sets the reserve back to zero.

/// May a caller take one free item, with `free` items free and `reserve`
/// reserved?
#[inline]
pub(crate) fn may_take(free: usize, reserve: usize, use_reserve: bool) -> bool {
    if use_reserve {
        free > 0
    } else {
        free > reserve
    }
}

/// After a take left `free_after` free items: stop this fill?
#[inline]
pub(crate) fn stop_after_take(free_after: usize, reserve: usize) -> bool {
    reserve > 0 && free_after <= reserve
}

/// May `keg_drain` free one more free slab of `ipers` items?
#[inline]
pub(crate) fn may_drain_slab(free_items: usize, ipers: usize, reserve: usize) -> bool {
    free_items >= reserve.saturating_add(ipers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_callers_never_take_the_reserve() {
        assert!(!may_take(2, 2, false));
        assert!(!may_take(0, 0, false));
        assert!(may_take(3, 2, false));
        assert!(may_take(1, 2, true));
        assert!(!may_take(0, 2, true));
    }

    #[test]
    fn a_fill_dips_at_most_one_item() {
        // reserve 2, 3 free: take one (-> 2), stop.
        assert!(stop_after_take(2, 2));
        assert!(!stop_after_take(3, 2));
        assert!(!stop_after_take(0, 0));
    }

    #[test]
    fn drain_keeps_the_reserve_counting_partial_slabs() {
        // 4 items per slab, reserve 3: 2 free in partial slabs + one free
        // slab = 6 free; freeing the slab would leave 2 < 3.
        assert!(!may_drain_slab(6, 4, 3));
        assert!(may_drain_slab(7, 4, 3));
        assert!(may_drain_slab(4, 4, 0));
    }
}
