//! Buckets: arrays of free items that move between per-thread caches and
//! the zone bucket cache (FreeBSD `struct uma_bucket`, `bucket_zones[]`,
//! `bucket_select`).
//!
//! A bucket is an item of one of eight internal bucket zones ("2 Bucket" ...
//! "254 Bucket"); its 16-byte header is followed by the item pointers
//! (32 to 2048 bytes; from 30 entries up a power of two).

use core::ptr::{self, NonNull};

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
}

/// A bucket in the hands of its one owner (a thread between its cache and
/// the zone, a drainer, a [`BucketList`]), out of every cache and list:
/// the handle says so, and moves with the bucket (it is not `Copy`). Its
/// accessors are safe because only the owner touches the bucket; the one
/// unsafe step is making the handle ([`from_raw`](Self::from_raw)), where
/// a bucket comes out of its bucket zone or a cache slot.
#[derive(Debug)]
pub(crate) struct OwnedBucket(NonNull<Bucket>);

impl OwnedBucket {
    /// The handle of the bucket at `b`.
    ///
    /// # Safety
    ///
    /// `b` is a valid bucket (set up by [`Bucket::init`]) that nobody else
    /// holds or will touch while the handle lives: in no cache slot and on
    /// no list.
    #[inline]
    pub(crate) unsafe fn from_raw(b: NonNull<Bucket>) -> Self {
        OwnedBucket(b)
    }

    /// Gives the bucket up (to a cache slot or its bucket zone).
    #[inline]
    pub(crate) fn into_raw(self) -> NonNull<Bucket> {
        self.0
    }

    /// Items held (slots `0..cnt`).
    #[inline]
    pub(crate) fn cnt(&self) -> usize {
        // SAFETY: a valid bucket (from_raw's contract).
        unsafe { (*self.0.as_ptr()).cnt as usize }
    }

    /// Usable slots.
    #[inline]
    pub(crate) fn cap(&self) -> usize {
        // SAFETY: as in `cnt`.
        unsafe { (*self.0.as_ptr()).cap as usize }
    }

    /// Index of the bucket zone the bucket came from.
    #[inline]
    pub(crate) fn zidx(&self) -> usize {
        // SAFETY: as in `cnt`.
        unsafe { (*self.0.as_ptr()).zidx as usize }
    }

    /// The items held.
    #[inline]
    pub(crate) fn items(&self) -> &[*mut u8] {
        // SAFETY: slots `0..cnt` hold items; the owner alone touches them.
        unsafe { core::slice::from_raw_parts(Bucket::items(self.0.as_ptr()), self.cnt()) }
    }

    /// Takes the last item out (`None` when empty).
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<*mut u8> {
        let n = self.cnt().checked_sub(1)?;
        // SAFETY: as in `cnt`; slot n held an item.
        unsafe {
            (*self.0.as_ptr()).cnt = n as u16;
            Some(*Bucket::items(self.0.as_ptr()).add(n))
        }
    }

    /// Keeps the first `n` items (if it holds more); the rest are no
    /// longer the bucket's.
    #[inline]
    pub(crate) fn truncate(&mut self, n: usize) {
        if n < self.cnt() {
            // SAFETY: as in `cnt`.
            unsafe { (*self.0.as_ptr()).cnt = n as u16 };
        }
    }

    /// The first `n` slots to fill (then [`set_filled`](Self::set_filled));
    /// `n` is cut to the bucket's capacity.
    #[inline]
    pub(crate) fn slots(&mut self, n: usize) -> &mut [*mut u8] {
        let n = n.min(self.cap());
        // SAFETY: the bucket has `cap` slots, the owner's alone. A slot is
        // a plain pointer: any bit pattern is one, and the bucket zone's
        // memory is never uninitialised (mmap'd zeroes or old contents).
        unsafe { core::slice::from_raw_parts_mut(Bucket::items(self.0.as_ptr()), n) }
    }

    /// Says that slots `0..n` hold items (`n` at most the capacity).
    #[inline]
    pub(crate) fn set_filled(&mut self, n: usize) {
        debug_assert!(n <= self.cap());
        let n = n.min(self.cap());
        // SAFETY: as in `cnt`.
        unsafe { (*self.0.as_ptr()).cnt = n as u16 };
    }

    /// Sets the empty bucket up for `want` entries if its bucket zone has
    /// room for them; false (unchanged) when it is too small (the bucket
    /// size grew since it was made).
    #[inline]
    pub(crate) fn reuse_for(&mut self, want: usize) -> bool {
        debug_assert_eq!(self.cnt(), 0);
        if BUCKET_ENTRIES[self.zidx()] < want {
            return false;
        }
        // SAFETY: as in `cnt`; want fits the bucket zone's entries.
        unsafe { (*self.0.as_ptr()).cap = want as u16 };
        true
    }

    /// Cuts the usable slots down to `cap` (at least `cnt`).
    #[inline]
    pub(crate) fn limit_cap(&mut self, cap: usize) {
        if cap < self.cap() {
            debug_assert!(self.cnt() <= cap);
            // SAFETY: as in `cnt`.
            unsafe { (*self.0.as_ptr()).cap = cap.max(self.cnt()) as u16 };
        }
    }
}

/// An owned list of buckets, linked through [`Bucket::next`]: the zone's
/// bucket cache and depot of empty buckets, and the lists drains and
/// reclaims hand around. The list owns every bucket on it (it takes them as
/// [`OwnedBucket`]s and gives them back as such), so its whole API is safe.
/// Dropping a non-empty list leaks its buckets: hand them back first.
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

    /// Puts `b` on top of the list.
    #[inline]
    pub(crate) fn push(&mut self, b: OwnedBucket) {
        let b = b.into_raw().as_ptr();
        // SAFETY: b was handed over whole (OwnedBucket): the list owns it.
        unsafe { (*b).next = self.head };
        self.head = b;
        self.len += 1;
    }

    /// [`push`](Self::push) of `b`, if any.
    #[inline]
    pub(crate) fn push_some(&mut self, b: Option<OwnedBucket>) {
        if let Some(b) = b {
            self.push(b);
        }
    }

    /// Takes the top bucket off the list; `None` when empty.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<OwnedBucket> {
        let b = NonNull::new(self.head)?;
        // SAFETY: the list owns its buckets (all valid); unlinked, b is
        // nobody's but the caller's.
        unsafe {
            self.head = (*b.as_ptr()).next;
            (*b.as_ptr()).next = ptr::null_mut();
            self.len -= 1;
            Some(OwnedBucket::from_raw(b))
        }
    }

    /// Keeps the longest run from the top whose buckets `keep` accepts
    /// one after another (given their item counts), and returns the rest
    /// (the bottom part) as a list.
    pub(crate) fn split_off_where(&mut self, mut keep: impl FnMut(usize) -> bool) -> BucketList {
        let mut kept = 0usize;
        let mut link: *mut *mut Bucket = &mut self.head;
        // SAFETY: the list owns its buckets (all valid); `link` points at the
        // head or at a listed bucket's `next`.
        unsafe {
            while !(*link).is_null() && keep((**link).cnt as usize) {
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

    /// Looks at every bucket, top first (they stay on the list):
    /// `(cnt, cap, zidx, items)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, usize, usize, &[*mut u8])> + '_ {
        let mut b = self.head;
        core::iter::from_fn(move || {
            let cur = NonNull::new(b)?.as_ptr();
            // SAFETY: the list owns its buckets (all valid), and they stay
            // on it while it is borrowed.
            unsafe {
                b = (*cur).next;
                let cnt = (*cur).cnt as usize;
                let items = core::slice::from_raw_parts(Bucket::items(cur), cnt);
                Some((cnt, (*cur).cap as usize, (*cur).zidx as usize, items))
            }
        })
    }
}

/// Takes the buckets off one by one, top first: each is then the caller's.
impl Iterator for BucketList {
    type Item = OwnedBucket;

    #[inline]
    fn next(&mut self) -> Option<OwnedBucket> {
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

/// Bytes of items a [`RAMP`](crate::ZoneFlags::RAMP) zone without a keg
/// (a cache-only zone) starts its buckets with: about a page.
pub(crate) const RAMP_START_BYTES: usize = 4096;

/// The bucket size a `RAMP` zone starts at: the largest standard size of
/// at most `fit` entries (a keg's items per slab, so the first fill takes
/// one slab and touches its one header page), one where a slab holds one
/// item, and at most `sel` ([`bucket_select`]'s choice, where the ramp
/// ends).
pub(crate) fn ramp_start(fit: usize, sel: usize) -> usize {
    let pick = BUCKET_ENTRIES
        .iter()
        .rev()
        .copied()
        .find(|&e| e <= fit)
        .unwrap_or(1);
    pick.min(sel).max(1)
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
    fn ramp_starts_at_a_slab_of_items() {
        // A page slab of 48-byte items holds 82: the 62-entry size.
        assert_eq!(ramp_start(82, bucket_select(48)), 62);
        assert_eq!(ramp_start(248, bucket_select(16)), 126);
        assert_eq!(ramp_start(8, bucket_select(512)), 8);
        // One item per slab (4 KiB and up): a first fill grows one slab.
        assert_eq!(ramp_start(1, bucket_select(4096)), 1);
        assert_eq!(ramp_start(0, bucket_select(8192)), 1);
        // Never above the table's own choice.
        assert_eq!(ramp_start(1000, bucket_select(64)), 254);
        assert_eq!(ramp_start(1000, bucket_select(1024)), 16);
    }

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
