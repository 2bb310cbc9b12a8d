//! The busy-segment hash (`vm_hashlist`): busy tags chained by start
//! address, so `free` finds its segment in O(1). Chains are singly linked
//! (FreeBSD's are doubly linked): maintaining back links would touch a
//! second, cold tag on every insert and remove.
//!
//! The table starts as 16 buckets inside the arena (`vm_hash0`) and is
//! resized in powers of two to about one bucket per busy segment (shrinking
//! only at a quarter, for hysteresis). FreeBSD resizes from a periodic
//! callout; here the operation that crosses a threshold resizes after it has
//! finished and dropped the arena lock: the new table is mapped from the OS
//! (never the global allocator) without the lock, the chains are moved under
//! the lock, and the old table is unmapped without it. The allocation itself
//! pays one comparison.

use crate::btag::{Tag, TagSource};
use crate::order::fls;
use core::ptr::NonNull;

/// Buckets in the initial, inline table (`VMEM_HASHSIZE_MIN`).
pub const HASH_MIN: usize = 16;
/// Largest table. FreeBSD caps at 131072 buckets; userspace arenas such as
/// a malloc's address space routinely hold millions of segments, so the cap
/// here is 2^22 buckets (32 MiB of table).
pub const HASH_MAX: usize = 1 << 22;

/// A table of bucket heads: the inline one (`ptr == None`) or a mapping.
pub(crate) struct Table {
    ptr: Option<NonNull<Option<Tag>>>,
    size: usize,
}

/// Where [`BusyHash::find`] found a tag: its bucket, the tag before it in
/// the chain (`None`: it is the head) and the tag.
pub(crate) struct Slot {
    idx: usize,
    pred: Option<Tag>,
    pub(crate) tag: Tag,
}

pub(crate) struct BusyHash {
    small: [Option<Tag>; HASH_MIN],
    big: Option<NonNull<Option<Tag>>>,
    size: usize,
    bits: u32,
    /// The busy count at which the tag source last declined a table
    /// ([`crate::TagSource::alloc_table`]), or 0: no new table is asked
    /// for until the count has doubled or halved since (a `no_std` source
    /// without tables would otherwise be asked, and the lock retaken, on
    /// every operation).
    declined: usize,
    /// `[quiet_lo, quiet_lo + quiet_span)`: busy counts at which no resize
    /// is wanted (a subset of where [`may_want_resize`](Self::may_want_resize)
    /// says false, kept in step with the size and `declined`), so the check
    /// after every operation is one comparison.
    quiet_lo: usize,
    quiet_span: usize,
}

impl BusyHash {
    pub(crate) const fn new() -> Self {
        BusyHash {
            small: [None; HASH_MIN],
            big: None,
            size: HASH_MIN,
            bits: HASH_MIN.trailing_zeros(),
            declined: 0,
            quiet_lo: 0,
            quiet_span: HASH_MIN,
        }
    }

    /// Records that the tag source declined a table at `nbusy` busy
    /// segments.
    pub(crate) fn declined(&mut self, nbusy: usize) {
        self.declined = nbusy.max(1);
        self.set_quiet();
    }

    /// Recomputes the quiet range from the size and `declined`: the counts
    /// that need no new size, `[size / 4, size)` (from 0 for the inline
    /// table), joined with those too close to a declined count,
    /// `(declined / 2, 2 declined)`, when the two meet (else the latter).
    fn set_quiet(&mut self) {
        let (mut lo, mut hi) = (
            if self.size == HASH_MIN {
                0
            } else {
                self.size / 4
            },
            self.size,
        );
        let d = self.declined;
        if d != 0 {
            let (dlo, dhi) = (d / 2 + 1, d.saturating_mul(2));
            if dlo <= hi && lo <= dhi {
                (lo, hi) = (lo.min(dlo), hi.max(dhi));
            } else {
                (lo, hi) = (dlo, dhi);
            }
        }
        self.quiet_lo = lo;
        self.quiet_span = hi - lo;
    }

    /// Whether `nbusy` busy segments certainly need no resize: one
    /// comparison (see `quiet_lo`). False does not mean one is wanted: ask
    /// [`resize_wanted`](Self::resize_wanted).
    #[inline]
    pub(crate) fn quiet(&self, nbusy: usize) -> bool {
        let q = nbusy.wrapping_sub(self.quiet_lo) < self.quiet_span;
        debug_assert!(!q || !self.may_want_resize(nbusy));
        q
    }

    /// Number of buckets.
    pub(crate) fn buckets(&self) -> usize {
        self.size
    }

    /// Fibonacci hashing of the start address.
    #[inline]
    pub(crate) fn index(&self, addr: usize) -> usize {
        ((addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    #[inline]
    fn head(&self, idx: usize) -> Option<Tag> {
        debug_assert!(idx < self.size);
        match self.big {
            // SAFETY: `big` is a live mapping of `size` bucket heads and
            // `idx < size`.
            Some(p) => unsafe { *p.as_ptr().add(idx) },
            None => self.small[idx],
        }
    }

    #[inline]
    fn set_head(&mut self, idx: usize, tag: Option<Tag>) {
        debug_assert!(idx < self.size);
        match self.big {
            // SAFETY: as in `head`; `&mut self` makes the write exclusive.
            Some(p) => unsafe { *p.as_ptr().add(idx) = tag },
            None => self.small[idx] = tag,
        }
    }

    /// Chains are singly linked: an insert at the head touches only the
    /// new tag, not the old head (a cache miss saved per insert when the
    /// arena is larger than the cache).
    #[inline]
    pub(crate) fn insert(&mut self, tag: Tag) {
        let idx = self.index(tag.start());
        tag.set_link_next(self.head(idx));
        self.set_head(idx, Some(tag));
    }

    /// Finds the busy tag starting at `addr`, with what [`unlink`](Self::unlink)
    /// needs to take it out without walking the chain again.
    #[inline]
    pub(crate) fn find(&self, addr: usize) -> Option<Slot> {
        let idx = self.index(addr);
        let mut pred = None;
        let mut cur = self.head(idx);
        while let Some(t) = cur {
            if t.start() == addr {
                return Some(Slot { idx, pred, tag: t });
            }
            pred = cur;
            cur = t.link_next();
        }
        None
    }

    /// Unlinks the tag [`find`](Self::find) found (nothing changed since).
    #[inline]
    pub(crate) fn unlink(&mut self, slot: Slot) {
        let next = slot.tag.link_next();
        match slot.pred {
            Some(p) => p.set_link_next(next),
            None => self.set_head(slot.idx, next),
        }
    }

    #[inline]
    pub(crate) fn lookup(&self, addr: usize) -> Option<Tag> {
        let mut cur = self.head(self.index(addr));
        while let Some(t) = cur {
            if t.start() == addr {
                return Some(t);
            }
            cur = t.link_next();
        }
        None
    }

    /// Calls `f(bucket, tag)` for every chained tag.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, Tag)) {
        for idx in 0..self.size {
            let mut cur = self.head(idx);
            while let Some(t) = cur {
                cur = t.link_next();
                f(idx, t);
            }
        }
    }

    /// Whether [`resize_wanted`](Self::resize_wanted) may answer `Some`:
    /// false in two comparisons while `nbusy` is below the size (no growth
    /// to 2x wanted yet) and at least a quarter of it (no shrink to 1/4),
    /// or below it in the inline table (nothing to shrink: an arena whose
    /// segments are all held by handles keeps the hash empty).
    #[inline]
    pub(crate) fn may_want_resize(&self, nbusy: usize) -> bool {
        if nbusy < self.size && (nbusy >= self.size / 4 || self.size == HASH_MIN) {
            return false;
        }
        let d = self.declined;
        d == 0 || nbusy >= d.saturating_mul(2) || nbusy <= d / 2
    }

    /// The table size wanted for `nbusy` busy segments, if the current one
    /// should change (`vmem_periodic`'s rule: grow at 2x, shrink at 1/4).
    #[inline]
    pub(crate) fn resize_wanted(&self, nbusy: usize) -> Option<usize> {
        if !self.may_want_resize(nbusy) {
            return None;
        }
        let desired = (1usize << fls(nbusy).min(usize::BITS - 1)).clamp(HASH_MIN, HASH_MAX);
        (desired >= self.size * 2 || desired * 4 <= self.size).then_some(desired)
    }

    /// A fresh, empty table of `size` buckets (mapped unless it is the
    /// inline size); `None` if the OS refuses.
    pub(crate) fn new_table(size: usize, tags: &dyn TagSource) -> Option<Table> {
        debug_assert!(size.is_power_of_two() && (HASH_MIN..=HASH_MAX).contains(&size));
        if size == HASH_MIN {
            return Some(Table { ptr: None, size });
        }
        // Zeroed memory is a table of `None`s (`Option<Tag>` uses the
        // null-pointer niche).
        let mem = tags.alloc_table(Self::table_bytes(size))?;
        Some(Table {
            ptr: Some(mem.cast()),
            size,
        })
    }

    /// Moves every chain into `table` and installs it; returns the old
    /// table, to be freed with [`BusyHash::free_table`] after unlocking.
    pub(crate) fn install(&mut self, table: Table) -> Table {
        let old_small = core::mem::replace(&mut self.small, [None; HASH_MIN]);
        let old = Table {
            ptr: self.big,
            size: self.size,
        };
        self.big = table.ptr;
        self.size = table.size;
        self.declined = 0;
        self.bits = table.size.trailing_zeros();
        self.set_quiet();
        // The index addresses either old table, so a range loop is clearest.
        #[allow(clippy::needless_range_loop)]
        for idx in 0..old.size {
            let mut cur = match old.ptr {
                // SAFETY: the old mapping is still live and `idx < old.size`.
                Some(p) => unsafe { *p.as_ptr().add(idx) },
                None => old_small[idx],
            };
            while let Some(t) = cur {
                cur = t.link_next();
                self.insert(t);
            }
        }
        old
    }

    /// Takes the current table out (for teardown), leaving the inline one.
    pub(crate) fn take(&mut self) -> Table {
        let old = Table {
            ptr: self.big.take(),
            size: self.size,
        };
        *self = BusyHash::new();
        old
    }

    /// Gives back a table returned by [`BusyHash::install`] or
    /// [`BusyHash::take`].
    ///
    /// # Safety
    /// `table` must not be installed, no tag may be reached through it, and
    /// it must come from `tags`.
    pub(crate) unsafe fn free_table(table: Table, tags: &dyn TagSource) {
        if let Some(p) = table.ptr {
            // SAFETY: a table of exactly this many buckets from this source's
            // `alloc_table`, unused.
            unsafe { tags.free_table(p.cast(), Self::table_bytes(table.size)) };
        }
    }

    /// Bytes of a table of `size` buckets, rounded up to whole 4 KiB pages.
    fn table_bytes(size: usize) -> usize {
        (size * core::mem::size_of::<Option<Tag>>()).next_multiple_of(4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-comparison check never hides a wanted resize, and agrees
    /// with the exact one around the table's size.
    #[test]
    fn quiet_range_is_within_the_no_resize_counts() {
        for bits in 4..12u32 {
            for declined in [0usize, 1, 3, 7, 40, 100, 1000, 5000] {
                let mut h = BusyHash::new();
                h.size = 1 << bits;
                h.declined = declined;
                h.set_quiet();
                for n in 0..(8usize << bits) {
                    if h.quiet(n) {
                        assert!(
                            !h.may_want_resize(n),
                            "size {} declined {declined} n {n}",
                            h.size
                        );
                    }
                    if declined == 0 {
                        assert_eq!(h.quiet(n), !h.may_want_resize(n));
                    }
                }
            }
        }
    }
}
