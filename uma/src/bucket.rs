//! Buckets: arrays of free items that move between per-thread caches and
//! the zone bucket cache (FreeBSD `struct uma_bucket`, `bucket_zones[]`,
//! `bucket_select`).
//!
//! A bucket is an item of one of eight internal bucket zones ("2 Bucket" ...
//! "254 Bucket"); its 16-byte header is followed by the item pointers
//! (32 to 2048 bytes; from 30 entries up a power of two).

use core::ptr;

/// Entries of each bucket zone.
pub(crate) const BUCKET_ENTRIES: [usize; 8] = [2, 4, 8, 16, 30, 62, 126, 254];
/// Largest item size for which each bucket size is chosen initially.
pub(crate) const BUCKET_MAXSIZE: [usize; 8] = [4096, 3072, 2048, 1024, 512, 256, 128, 64];
/// Number of bucket zones.
pub(crate) const NBUCKETZONES: usize = BUCKET_ENTRIES.len();
/// Most entries a bucket can have.
pub(crate) const BUCKET_MAX: usize = 254;

/// A bucket header; `cap` item slots follow it.
#[repr(C)]
pub(crate) struct Bucket {
    /// Link in the zone bucket cache (under zone lock) or a local list.
    pub next: *mut Bucket,
    /// Items held (slots `0..cnt`).
    pub cnt: u16,
    /// Usable slots (at most the bucket zone's entries).
    pub cap: u16,
    /// Index of the bucket zone the bucket came from.
    pub zidx: u8,
    _pad: [u8; 3],
}

/// Bytes of a bucket header.
pub(crate) const BUCKET_HDR: usize = core::mem::size_of::<Bucket>();
const _: () = assert!(BUCKET_HDR == 16);

/// Item size of bucket zone `i`.
pub(crate) const fn bucket_zone_size(i: usize) -> usize {
    BUCKET_HDR + BUCKET_ENTRIES[i] * core::mem::size_of::<*mut u8>()
}

impl Bucket {
    /// Initialises an empty bucket header at `p`.
    ///
    /// # Safety
    ///
    /// `p` is an unused item of bucket zone `zidx`; `cap <= BUCKET_ENTRIES[zidx]`.
    pub(crate) unsafe fn init(p: *mut Bucket, cap: usize, zidx: usize) {
        // SAFETY: caller contract.
        unsafe {
            p.write(Bucket {
                next: ptr::null_mut(),
                cnt: 0,
                cap: cap as u16,
                zidx: zidx as u8,
                _pad: [0; 3],
            });
        }
    }

    /// The item slots of bucket `b`.
    #[inline(always)]
    pub(crate) fn items(b: *mut Bucket) -> *mut *mut u8 {
        b.cast::<u8>().wrapping_add(BUCKET_HDR).cast()
    }

    /// Pops one item.
    ///
    /// # Safety
    ///
    /// `b` is a valid bucket owned by the caller with `cnt > 0`.
    pub(crate) unsafe fn pop(b: *mut Bucket) -> *mut u8 {
        // SAFETY: caller contract.
        unsafe {
            (*b).cnt -= 1;
            *Self::items(b).add((*b).cnt as usize)
        }
    }
}

/// An owned list of buckets, linked through [`Bucket::next`]: the zone's
/// bucket cache and depot of empty buckets, and the lists drains and
/// reclaims hand around. The list owns every bucket on it (each valid, on
/// no other list, out of every cache); that is its one invariant, kept by
/// [`push`](Self::push)'s contract, so taking buckets off is safe. Dropping
/// a non-empty list leaks its buckets: hand them back first.
#[derive(Debug)]
pub(crate) struct BucketList {
    head: *mut Bucket,
    len: usize,
}

impl Default for BucketList {
    fn default() -> Self {
        Self::new()
    }
}

impl BucketList {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        BucketList {
            head: ptr::null_mut(),
            len: 0,
        }
    }

    /// Buckets on the list.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// The top bucket (null when empty); it stays on the list.
    #[inline]
    pub(crate) fn top(&self) -> *mut Bucket {
        self.head
    }

    /// Puts `b` on top of the list.
    ///
    /// # Safety
    ///
    /// `b` is a valid bucket the caller owns and gives to the list: on no
    /// other list and in no cache.
    #[inline]
    pub(crate) unsafe fn push(&mut self, b: *mut Bucket) {
        // SAFETY: caller contract: b is valid and ours to link.
        unsafe { (*b).next = self.head };
        self.head = b;
        self.len += 1;
    }

    /// [`push`](Self::push) unless `b` is null.
    ///
    /// # Safety
    ///
    /// As [`push`](Self::push) when `b` is not null.
    #[inline]
    pub(crate) unsafe fn push_nonnull(&mut self, b: *mut Bucket) {
        if !b.is_null() {
            // SAFETY: caller contract.
            unsafe { self.push(b) };
        }
    }

    /// Takes the top bucket off the list (unlinked: its `next` is null),
    /// now the caller's; `None` when empty.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<*mut Bucket> {
        let b = self.head;
        if b.is_null() {
            return None;
        }
        // SAFETY: the list owns its buckets (push's contract), so b is valid.
        unsafe {
            self.head = (*b).next;
            (*b).next = ptr::null_mut();
        }
        self.len -= 1;
        Some(b)
    }

    /// Moves the top bucket onto `to`; false when this list is empty.
    #[inline]
    pub(crate) fn pop_onto(&mut self, to: &mut BucketList) -> bool {
        match self.pop() {
            // SAFETY: b came off a list that owned it; now `to` owns it.
            Some(b) => unsafe {
                to.push(b);
                true
            },
            None => false,
        }
    }

    /// Keeps the longest run from the top whose buckets `keep` accepts
    /// one after another, and returns the rest (bottom part) as a list.
    pub(crate) fn split_off_where(&mut self, mut keep: impl FnMut(&Bucket) -> bool) -> BucketList {
        let mut kept = 0usize;
        let mut link: *mut *mut Bucket = &mut self.head;
        // SAFETY: the list owns its buckets (all valid); `link` points at the
        // head or at a listed bucket's `next`.
        unsafe {
            while !(*link).is_null() && keep(&**link) {
                kept += 1;
                link = &mut (**link).next;
            }
            let tail = BucketList {
                head: *link,
                len: self.len - kept,
            };
            *link = ptr::null_mut();
            self.len = kept;
            tail
        }
    }

    /// Every bucket, top first; they stay on the list, valid while it is
    /// borrowed.
    pub(crate) fn iter(&self) -> impl Iterator<Item = *mut Bucket> + '_ {
        let mut b = self.head;
        core::iter::from_fn(move || {
            let cur = b;
            if cur.is_null() {
                return None;
            }
            // SAFETY: the list owns its buckets (all valid).
            b = unsafe { (*cur).next };
            Some(cur)
        })
    }
}

/// Takes the buckets off one by one, top first: each is then the caller's.
impl Iterator for BucketList {
    type Item = *mut Bucket;

    #[inline]
    fn next(&mut self) -> Option<*mut Bucket> {
        self.pop()
    }
}

/// Smallest bucket zone with at least `entries` entries.
pub(crate) fn zone_index_for(entries: usize) -> Option<usize> {
    BUCKET_ENTRIES.iter().position(|&e| e >= entries)
}

/// Initial bucket size for items of `size` bytes (FreeBSD `bucket_select`):
/// the biggest bucket whose max item size is at least `size`, or fewer
/// entries for items above 4 KiB.
pub(crate) fn bucket_select(size: usize) -> usize {
    if size > BUCKET_MAXSIZE[0] {
        return (BUCKET_MAXSIZE[0] * BUCKET_ENTRIES[0] / size.max(1)).max(1);
    }
    let mut pick = BUCKET_ENTRIES[0];
    for i in 0..NBUCKETZONES {
        if BUCKET_MAXSIZE[i] < size {
            break;
        }
        pick = BUCKET_ENTRIES[i];
    }
    pick
}

/// Items' bytes a bucket may grow to on refill misses (see
/// `Zone::grow_on_miss`): 64 KiB, so a thread keeps at most two such
/// buckets (128 KiB) of a size class in its cache.
pub(crate) const BUCKET_GROW_BYTES: usize = 64 << 10;

/// The most entries refill misses grow a bucket of `size`-byte items to:
/// [`BUCKET_GROW_BYTES`] of items, at least the table's choice, at most
/// [`BUCKET_MAX`].
pub(crate) fn grow_cap(size: usize) -> usize {
    (BUCKET_GROW_BYTES / size.max(1))
        .max(bucket_select(size))
        .min(BUCKET_MAX)
}

/// Next smaller standard bucket size (for shrinking on reclaim).
pub(crate) fn smaller(entries: usize) -> usize {
    BUCKET_ENTRIES
        .iter()
        .rev()
        .copied()
        .find(|&e| e < entries)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_select_follows_freebsd_table() {
        assert_eq!(bucket_select(8), 254);
        assert_eq!(bucket_select(64), 254);
        assert_eq!(bucket_select(65), 126);
        assert_eq!(bucket_select(128), 126);
        assert_eq!(bucket_select(256), 62);
        assert_eq!(bucket_select(1000), 16);
        assert_eq!(bucket_select(4096), 2);
        assert_eq!(bucket_select(8192), 1);
        assert_eq!(zone_index_for(17), Some(4));
        assert_eq!(zone_index_for(255), None);
        assert_eq!(smaller(30), 16);
        assert_eq!(smaller(2), 1);
        assert_eq!(bucket_zone_size(0), 32);
        for i in 4..NBUCKETZONES {
            assert!(bucket_zone_size(i).is_power_of_two());
        }
    }
}
