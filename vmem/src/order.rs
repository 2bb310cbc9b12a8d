//! Freelist orders: FreeBSD's `SIZE2ORDER` / `ORDER2SIZE`.
//!
//! They name the size classes of [`crate::Arena::order_stats`]; the
//! freelists themselves are finer (`bins.rs`). Sizes are counted in quanta. Segments of 1..=32 quanta each have an
//! exact list; above that, list `n` holds sizes in
//! `[2^(n-26), 2^(n-25) - 1]` quanta (one list per power of two):
//!
//! ```text
//! freelist[0]  .. [1, 1]
//! freelist[1]  .. [2, 2]
//!  :
//! freelist[31] .. [32, 63]
//! freelist[32] .. [64, 127]
//!  :
//! freelist[89] .. [2^63, 2^64 - 1]
//! ```

/// Orders below this are exact (`OPTVALUE` = 2^`OPTORDER`).
pub const OPTORDER: u32 = 5;
/// The number of exact lists, and the first power-of-two order's size.
pub const OPTVALUE: usize = 1 << OPTORDER;
/// Number of freelists: 31 exact (1..=31 quanta) plus one per power of two.
pub const MAXORDER: usize = OPTVALUE - 1 + usize::BITS as usize - OPTORDER as usize;

/// Index of the highest set bit, counting from 1 (`flsl`); 0 for 0.
#[inline]
pub const fn fls(x: usize) -> u32 {
    usize::BITS - x.leading_zeros()
}

/// The freelist for a free segment of `qsize` quanta (`SIZE2ORDER`).
#[inline]
pub const fn size_to_order(qsize: usize) -> usize {
    debug_assert!(qsize != 0);
    if qsize <= OPTVALUE {
        qsize - 1
    } else {
        fls(qsize) as usize + (OPTVALUE - OPTORDER as usize - 2)
    }
}

/// The smallest size, in quanta, a segment on list `order` can have
/// (`ORDER2SIZE`).
#[inline]
pub const fn order_to_size(order: usize) -> usize {
    if order < OPTVALUE {
        order + 1
    } else {
        1 << (order - (OPTVALUE - OPTORDER as usize - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_lists_then_powers_of_two() {
        for q in 1..=32 {
            assert_eq!(size_to_order(q), q - 1);
            assert_eq!(order_to_size(q - 1), q);
        }
        assert_eq!(size_to_order(33), 31);
        assert_eq!(size_to_order(63), 31);
        assert_eq!(size_to_order(64), 32);
        assert_eq!(size_to_order(127), 32);
        assert_eq!(size_to_order(128), 33);
        assert_eq!(size_to_order(usize::MAX), MAXORDER - 1);
        assert_eq!(MAXORDER, 90);
    }

    #[test]
    fn every_size_lies_in_its_order_range() {
        let mut q = 1usize;
        while q < usize::MAX / 3 {
            for s in [q, q + 1, q * 2 - 1] {
                let o = size_to_order(s);
                assert!(order_to_size(o) <= s, "size {s} below its list {o}");
                if o + 1 < MAXORDER {
                    assert!(s < order_to_size(o + 1), "size {s} reaches the next list");
                }
            }
            q = q * 3 / 2 + 1;
        }
    }
}
