//! The freelists the allocator searches: finer than FreeBSD's orders.
//!
//! FreeBSD keeps one list per size up to 32 quanta, then one per power of
//! two. Instant fit takes the head of the first list whose every segment is
//! large enough, so a request just above a power of two skips every list
//! that might hold a fitting segment and splits one up to twice its size;
//! on random sizes that splinters the space (9% of it unusable at the
//! first failure), and best fit scans lists whose segments span a factor
//! of two. Here, as in TLSF, each power of two is cut into
//! [`SUB`] lists (sizes in quanta):
//!
//! ```text
//! bin 1 .. 15       exactly 1 .. 15 quanta (bin 0 is never used)
//! bin 16 + 8(e-4) + m   [(8+m) 2^(e-3), (9+m) 2^(e-3) - 1]   for 2^e <= size < 2^(e+1), e >= 4
//! ```
//!
//! so a segment on a list is at most 1/8 larger than the list's smallest
//! size. A two-level bitmap finds the first non-empty list at or above a
//! given one in O(1). The public orders ([`crate::size_to_order`]) are
//! FreeBSD's and still name the classes of [`crate::Arena::order_stats`].

use crate::btag::Tag;
use crate::order::fls;

/// Mantissa bits: `2^SUB_BITS` lists per power of two.
const SUB_BITS: u32 = 3;
/// Lists per power of two.
pub(crate) const SUB: usize = 1 << SUB_BITS;
/// Sizes below this many quanta have a list each.
const LINEAR: usize = 2 * SUB;
/// Number of lists: the linear ones, then `SUB` per power of two from
/// `2^4` to `2^63`.
pub(crate) const NBINS: usize = LINEAR + (usize::BITS as usize - 4) * SUB;
const WORDS: usize = NBINS.div_ceil(64);
const _: () = assert!(WORDS < 64);

/// The list of a free segment of `q` quanta (`q > 0`).
#[inline]
pub(crate) const fn bin_of(q: usize) -> usize {
    debug_assert!(q != 0);
    if q < LINEAR {
        q
    } else {
        let e = fls(q) as usize - 1;
        let m = (q >> (e - SUB_BITS as usize)) & (SUB - 1);
        LINEAR + (e - 4) * SUB + m
    }
}

/// The smallest size, in quanta, of a segment on list `bin`.
#[inline]
pub(crate) const fn bin_min(bin: usize) -> usize {
    if bin < LINEAR {
        bin
    } else {
        let e = (bin - LINEAR) / SUB + 4;
        let m = (bin - LINEAR) % SUB;
        (SUB + m) << (e - SUB_BITS as usize)
    }
}

/// The first list to search for `q` quanta: for instant fit, the first
/// whose every segment is large enough (may be [`NBINS`]: none); for best
/// fit, the list that may hold `q` itself.
#[inline]
pub(crate) const fn first_bin(q: usize, instant: bool) -> usize {
    let bin = bin_of(q);
    if instant && bin_min(bin) != q {
        bin + 1
    } else {
        bin
    }
}

/// The free segments by list, and a two-level bitmap of the non-empty
/// lists.
pub(crate) struct Freelists {
    heads: [Option<Tag>; NBINS],
    words: [u64; WORDS],
    top: u64,
}

impl Freelists {
    pub(crate) const fn new() -> Self {
        Freelists {
            heads: [None; NBINS],
            words: [0; WORDS],
            top: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn head(&self, bin: usize) -> Option<Tag> {
        self.heads[bin]
    }

    /// Sets the head of list `bin`, keeping the bitmap in step (touched
    /// only when the list turns empty or non-empty).
    #[inline(always)]
    pub(crate) fn set_head(&mut self, bin: usize, tag: Option<Tag>) {
        let was = self.heads[bin].is_some();
        self.heads[bin] = tag;
        if was == tag.is_some() {
            return;
        }
        let (w, bit) = (bin / 64, 1u64 << (bin % 64));
        if tag.is_some() {
            self.words[w] |= bit;
            self.top |= 1 << w;
        } else {
            self.words[w] &= !bit;
            if self.words[w] == 0 {
                self.top &= !(1 << w);
            }
        }
    }

    /// Whether list `bin` is marked non-empty in the bitmap.
    pub(crate) fn marked(&self, bin: usize) -> bool {
        self.words[bin / 64] >> (bin % 64) & 1 == 1
    }

    /// The first non-empty list at or above `bin`.
    #[inline(always)]
    pub(crate) fn next_nonempty(&self, bin: usize) -> Option<usize> {
        if bin >= NBINS {
            return None;
        }
        let w = bin / 64;
        let here = self.words[w] & (!0u64 << (bin % 64));
        if here != 0 {
            return Some(w * 64 + here.trailing_zeros() as usize);
        }
        // `w + 1 <= WORDS < 64`: the shift is in range.
        let above = self.top & (!0u64 << (w + 1));
        if above == 0 {
            return None;
        }
        let w = above.trailing_zeros() as usize;
        Some(w * 64 + self.words[w].trailing_zeros() as usize)
    }

    /// The highest non-empty list.
    pub(crate) fn highest(&self) -> Option<usize> {
        if self.top == 0 {
            return None;
        }
        let w = 63 - self.top.leading_zeros() as usize;
        Some(w * 64 + 63 - self.words[w].leading_zeros() as usize)
    }

    /// Every list, in order (for statistics and the invariant walker).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, Option<Tag>)> + '_ {
        self.heads.iter().copied().enumerate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_partition_the_sizes() {
        // Every size lies in its bin's range, and bins are in size order.
        let mut q = 1usize;
        while q < usize::MAX / 3 {
            for s in [q, q + 1, q * 2 - 1, q * 2] {
                let b = bin_of(s);
                assert!(b < NBINS);
                assert!(bin_min(b) <= s, "size {s} below its bin {b}");
                if b + 1 < NBINS {
                    assert!(s < bin_min(b + 1), "size {s} reaches bin {}", b + 1);
                }
            }
            q += q / 4 + 1;
        }
        assert_eq!(bin_of(usize::MAX), NBINS - 1);
        for b in 1..NBINS {
            assert_eq!(bin_of(bin_min(b)), b);
        }
    }

    #[test]
    fn bins_are_an_eighth_wide() {
        for b in LINEAR..NBINS - 1 {
            let width = bin_min(b + 1) - bin_min(b);
            assert!(width * SUB <= bin_min(b), "bin {b}");
        }
    }

    #[test]
    fn instant_fit_bins_only_hold_large_enough_segments() {
        for q in 1..5000usize {
            let first = first_bin(q, true);
            assert!(bin_min(first) >= q);
            assert!(first == bin_of(q) || first == bin_of(q) + 1);
            assert_eq!(first_bin(q, false), bin_of(q));
        }
    }
}
