//! malloc size classes.
//!
//! FreeBSD's `kmemzones` are powers of two (plus a few), wasting up to
//! half of a request. kmem uses finer spacing instead: steps of 8 bytes up
//! to 64, of 16 up to 128, then four classes per doubling, so a request
//! above 128 bytes wastes at most 25% (worst case: 129 bytes in the 160-byte
//! class, 24%).
//!
//! | range | step | classes |
//! |---|---|---|
//! | 8 ..= 64 | 8 | 8 16 24 32 40 48 56 64 |
//! | 65 ..= 128 | 16 | 80 96 112 128 |
//! | 129 ..= 256 | 32 | 160 192 224 256 |
//! | 257 ..= 512 | 64 | 320 384 448 512 |
//! | 513 ..= 1 KiB | 128 | 640 768 896 1024 |
//! | 1 KiB ..= 2 KiB | 256 | 1280 1536 1792 2048 |
//! | 2 KiB ..= 4 KiB | 512 | 2560 3072 3584 4096 |
//! | 4 KiB ..= 8 KiB | 1 KiB | 5120 6144 7168 8192 |
//! | 8 KiB ..= 16 KiB | 2 KiB | 10240 12288 14336 16384 |
//! | 16 KiB ..= 32 KiB | 4 KiB | 20480 24576 28672 32768 |
//!
//! Items of a class sit at multiples of the class size from a slab start
//! aligned to at least the class size, so each class is aligned to the
//! largest power of two dividing its size (natural alignment for
//! power-of-two classes: 4096-byte items are page aligned). A request with
//! a larger alignment takes the first class whose alignment suffices.
//! Requests above 32 KiB, or aligned beyond any class that fits, are
//! large allocations: whole pages from the kernel arena.
//!
//! The 8, 24, 40 and 56-byte classes are only 8-aligned. They serve
//! requests aligned to at most 8, which in Rust are most of them: a `Box`
//! of three words (`String`, `Vec`, a node of two links and a value) is 24
//! bytes and of five words 40, and took 32 and 48 (a quarter and a sixth
//! of the memory, and of the cache lines a traversal reads, for nothing).
//! A request aligned to 16 (C's `malloc`, C++'s `new`, whose blocks must
//! be aligned for any type) is looked up as its size rounded up to a
//! multiple of 16, and so never lands in them.

/// Number of size classes.
pub const NCLASSES: usize = 44;
/// The index of the first class of four per doubling (160 bytes).
const FIRST_GEOMETRIC: usize = 12;
/// The largest class size; larger requests are large allocations.
pub const MAX_CLASS_SIZE: usize = 32768;
/// Sizes up to this go through the lookup table.
const LUT_MAX: usize = 1024;

/// Class sizes, ascending.
pub const CLASS_SIZES: [usize; NCLASSES] = {
    let mut t = [0usize; NCLASSES];
    let mut i = 0;
    while i < 8 {
        t[i] = 8 * (i + 1);
        i += 1;
    }
    while i < FIRST_GEOMETRIC {
        t[i] = 64 + 16 * (i - 7);
        i += 1;
    }
    let mut lg = 7;
    while i < NCLASSES {
        let base = 1usize << lg;
        let step = base / 4;
        let mut k = 1;
        while k <= 4 {
            t[i] = base + k * step;
            i += 1;
            k += 1;
        }
        lg += 1;
    }
    t
};

/// Zone names, one per class (shown by `vmstat -z`).
pub const CLASS_NAMES: [&str; NCLASSES] = [
    "malloc-8",
    "malloc-16",
    "malloc-24",
    "malloc-32",
    "malloc-40",
    "malloc-48",
    "malloc-56",
    "malloc-64",
    "malloc-80",
    "malloc-96",
    "malloc-112",
    "malloc-128",
    "malloc-160",
    "malloc-192",
    "malloc-224",
    "malloc-256",
    "malloc-320",
    "malloc-384",
    "malloc-448",
    "malloc-512",
    "malloc-640",
    "malloc-768",
    "malloc-896",
    "malloc-1024",
    "malloc-1280",
    "malloc-1536",
    "malloc-1792",
    "malloc-2048",
    "malloc-2560",
    "malloc-3072",
    "malloc-3584",
    "malloc-4096",
    "malloc-5120",
    "malloc-6144",
    "malloc-7168",
    "malloc-8192",
    "malloc-10240",
    "malloc-12288",
    "malloc-14336",
    "malloc-16384",
    "malloc-20480",
    "malloc-24576",
    "malloc-28672",
    "malloc-32768",
];

/// Entries of the tables indexed by [`small_index`].
pub(crate) const LUT_LEN: usize = LUT_MAX / 8 + 1;

/// `LUT[(size + 7) >> 3]` is the class of `size` for `size <= 1024`.
static LUT: [u8; LUT_LEN] = {
    let mut t = [0u8; LUT_LEN];
    let mut i = 0;
    while i < t.len() {
        let size = i * 8;
        let mut c = 0;
        while CLASS_SIZES[c] < size {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

/// The alignment every item of `class` has.
#[inline]
pub const fn class_align(class: usize) -> usize {
    let s = CLASS_SIZES[class];
    let a = s & s.wrapping_neg();
    if a > 4096 {
        4096
    } else {
        a
    }
}

/// The lookup-table index of a request of `size` bytes with alignment at
/// most 16, if it is at most 1024 bytes: below [`LUT_LEN`], and every
/// request with the same index has the same class (`class_of_small` maps
/// the index through `LUT`). A request aligned to 16 is looked up as its
/// size rounded up to a multiple of 16, whose class is 16-aligned.
#[inline(always)]
pub(crate) fn small_index(size: usize, align: usize) -> Option<usize> {
    let s = if size > align { size } else { align };
    if s > LUT_MAX {
        return None;
    }
    Some(if align > 8 {
        ((s + 15) >> 4) << 1
    } else {
        (s + 7) >> 3
    })
}

/// The class of a request of `size` bytes with alignment at most 16 (the
/// 8, 24, 40 and 56-byte classes are 8-aligned, the others 16-aligned),
/// or `None` if it is large.
#[inline(always)]
pub fn class_of_small(size: usize, align: usize) -> Option<usize> {
    match small_index(size, align) {
        Some(i) => Some(LUT[i] as usize),
        None => class_of_size(if size > align { size } else { align }),
    }
}

/// The class of `size` bytes (any alignment up to 8), or `None` if large.
#[inline]
pub fn class_of_size(size: usize) -> Option<usize> {
    if size <= LUT_MAX {
        return Some(LUT[(size + 7) >> 3] as usize);
    }
    if size > MAX_CLASS_SIZE {
        return None;
    }
    let lg = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
    let base = 1usize << lg;
    let step = base >> 2;
    Some(FIRST_GEOMETRIC + (lg - 7) * 4 + (size - 1 - base) / step)
}

/// For a request aligned to more than 16: the size whose class, at
/// alignment 8, is the request's class (`None` beyond a page's alignment,
/// which no class has, and on overflow). It is the size rounded up to the
/// alignment (at least the alignment): a class aligned to `align` is a
/// multiple of it, and the smallest class at or above that multiple is one
/// (it is the multiple itself, or, where the classes' step is at least
/// `align`, a multiple of the step). The fast paths look these requests up
/// through it, as [`class_of`] does.
#[inline(always)]
pub(crate) fn over_aligned_size(size: usize, align: usize) -> Option<usize> {
    if align > 4096 {
        return None;
    }
    let s = if size > align { size } else { align };
    Some(s.checked_add(align - 1)? & !(align - 1))
}

/// The class of a request of `size` bytes aligned to `align` (a power of
/// two), or `None` if it must be a large allocation.
#[inline]
pub fn class_of(size: usize, align: usize) -> Option<usize> {
    if align <= 16 {
        return class_of_small(size, align);
    }
    class_of_size(over_aligned_size(size, align)?)
}

// ---------------------------------------------------------------- large classes

/// Pages of the largest block the kernel arena's quantum cache serves
/// (16: 64 KiB); the large classes start above it.
const QC_PAGES: usize = vmem::QCACHE_MAX_CLASSES;
/// Pages of the largest large class.
pub(crate) const LARGE_MAX_PAGES: usize = 64;
/// Number of large classes: four per doubling from 17 to
/// [`LARGE_MAX_PAGES`] pages.
pub(crate) const NLARGE: usize = 8;
/// The largest request a large class serves (256 KiB).
#[cfg_attr(any(loom, feature = "invariants"), allow(dead_code))] // the fast road's
pub(crate) const LARGE_CLASS_MAX: usize = LARGE_MAX_PAGES * 4096;

/// Page counts of the large classes, ascending: 20, 24, 28, 32, 40, 48, 56,
/// 64 (80 KiB to 256 KiB, four per doubling as the small classes are).
///
/// A large block of 17 to 64 pages (aligned to at most a page) is rounded
/// up to its class, as jemalloc's large size classes and tcmalloc's size
/// classes up to 256 KiB round it, so that a freed block can serve the
/// next request of its class as it is: each class has a cache zone of
/// such ranges (`kernel::qcache`, in an arena of their own), taken and
/// filled through the threads' caches as the quantum cache's are, instead
/// of a walk of the kernel arena's boundary tags and the dirty-page lists
/// for every allocation and free (a 100 KB `malloc` + `free` pair took
/// 160-250 ns that way, 38 now; glibc 19-30, tcmalloc 14). The waste is at most a quarter of the request, in
/// address space: pages past the request's end are touched only if a
/// program writes them.
pub(crate) const LARGE_CLASS_PAGES: [usize; NLARGE] = {
    let mut t = [0usize; NLARGE];
    let mut i = 0;
    while i < NLARGE {
        let shift = 2 + i / 4;
        t[i] = (4 + i % 4 + 1) << shift;
        i += 1;
    }
    t
};

/// The large class of a block of `n` pages: the smallest whose pages are
/// at least `n`, or `None` at or below the quantum cache's 16 pages and
/// above [`LARGE_MAX_PAGES`].
#[inline(always)]
pub(crate) fn large_class(n: usize) -> Option<usize> {
    if n <= QC_PAGES || n > LARGE_MAX_PAGES {
        return None;
    }
    let m = n - 1;
    let lg = (usize::BITS - 1 - m.leading_zeros()) as usize;
    let shift = lg - 2;
    Some((lg - 4) * 4 + (m >> shift) - 4)
}

/// The large class whose pages are exactly `n`, if there is one: the
/// class cache a freed block of `n` pages may go to.
#[inline(always)]
pub(crate) fn large_class_exact(n: usize) -> Option<usize> {
    large_class(n).filter(|&c| LARGE_CLASS_PAGES[c] == n)
}

/// The pages of a large block of `size` bytes aligned to `align`: the
/// request rounded up to whole pages, and then to its large class if it
/// has one and is aligned to at most a page (an over-aligned block keeps
/// its own page count: the class caches serve page-aligned ranges).
/// Every new large block is sized so (those `realloc` places too); one
/// that `realloc` resized in place has the request's whole pages
/// ([`fits_large`]). `None` on overflow.
#[inline]
pub(crate) fn large_pages(size: usize, align: usize) -> Option<usize> {
    let n = whole_pages(size)?;
    Some(match large_class(n) {
        Some(c) if align <= crate::os::PAGE_SIZE => LARGE_CLASS_PAGES[c],
        _ => n,
    })
}

/// Whether a large block of `n` pages serves a request of `size` bytes
/// aligned to `align` as it is, in `Kmem`'s and `realloc`'s sense: `n` is
/// the request's whole pages (a block that `realloc` resized in place) or
/// its large class's ([`large_pages`]: a new block). Either may free it
/// with that layout.
#[inline]
pub(crate) fn fits_large(n: usize, size: usize, align: usize) -> bool {
    whole_pages(size) == Some(n) || large_pages(size, align) == Some(n)
}

/// The whole pages of a request of `size` bytes (at least one).
#[inline]
fn whole_pages(size: usize) -> Option<usize> {
    Some(crate::os::round_page(size.max(1))? / crate::os::PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_the_documented_one() {
        assert_eq!(
            &CLASS_SIZES[..13],
            &[8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160]
        );
        assert_eq!(CLASS_SIZES[NCLASSES - 1], MAX_CLASS_SIZE);
        for (i, name) in CLASS_NAMES.iter().enumerate() {
            assert_eq!(*name, format!("malloc-{}", CLASS_SIZES[i]));
        }
        for w in CLASS_SIZES.windows(2) {
            assert!(w[0] < w[1]);
        }
    }

    #[test]
    fn every_size_gets_the_smallest_fitting_class_and_waste_is_bounded() {
        for size in 1..=MAX_CLASS_SIZE {
            let c = class_of_size(size).unwrap();
            assert!(CLASS_SIZES[c] >= size, "{size}");
            assert!(c == 0 || CLASS_SIZES[c - 1] < size, "{size}");
            if size > 128 {
                let waste = (CLASS_SIZES[c] - size) as f64 / size as f64;
                assert!(waste <= 0.25, "{size}: {waste}");
            }
        }
        assert_eq!(class_of_size(MAX_CLASS_SIZE + 1), None);
    }

    #[test]
    fn alignment_is_honoured() {
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
            for size in (1..=MAX_CLASS_SIZE).step_by(7) {
                if let Some(c) = class_of(size, align) {
                    assert!(CLASS_SIZES[c] >= size);
                    assert!(class_align(c) >= align, "{size} {align} -> {c}");
                    assert_eq!(CLASS_SIZES[c] % class_align(c), 0);
                } else {
                    panic!("no class for {size} bytes aligned to {align}");
                }
            }
        }
        assert_eq!(class_of(8, 16), Some(1));
        assert_eq!(class_of(100, 8192), None);
        assert_eq!(class_of(4096, 4096), Some(31));
        // Rust's three- and five-word boxes in their own classes; C's
        // 16-aligned requests of the same sizes in 16-aligned ones.
        assert_eq!(class_of(24, 8).map(|c| CLASS_SIZES[c]), Some(24));
        assert_eq!(class_of(40, 8).map(|c| CLASS_SIZES[c]), Some(40));
        assert_eq!(class_of(24, 16).map(|c| CLASS_SIZES[c]), Some(32));
        assert_eq!(class_of(40, 16).map(|c| CLASS_SIZES[c]), Some(48));
        assert_eq!(class_of(8, 16).map(|c| CLASS_SIZES[c]), Some(16));
    }

    /// `class_of` (through the lookup table up to 16, `over_aligned_size`
    /// above) is the first class at or above the request whose items are
    /// aligned enough, for every size and alignment.
    #[test]
    fn every_request_takes_the_first_class_aligned_enough() {
        for lg in 0..=12 {
            let align = 1usize << lg;
            for size in 0..=MAX_CLASS_SIZE + 1 {
                let want = (0..NCLASSES)
                    .find(|&c| CLASS_SIZES[c] >= size.max(1) && class_align(c) >= align);
                assert_eq!(
                    class_of(size, align),
                    want,
                    "{size} bytes aligned to {align}"
                );
            }
        }
        assert_eq!(over_aligned_size(usize::MAX - 10, 64), None);
        assert_eq!(over_aligned_size(1, 8192), None);
        assert_eq!(over_aligned_size(0, 64), Some(64));
    }

    #[test]
    fn large_classes_are_the_documented_ones_and_fit() {
        assert_eq!(LARGE_CLASS_PAGES, [20, 24, 28, 32, 40, 48, 56, 64]);
        assert_eq!(LARGE_CLASS_MAX, 256 << 10);
        for n in 0..=LARGE_MAX_PAGES + 8 {
            let want = LARGE_CLASS_PAGES.iter().position(|&p| p >= n);
            let want = if n <= QC_PAGES { None } else { want };
            assert_eq!(large_class(n), want, "{n} pages");
            if let Some(c) = large_class(n) {
                // At most a quarter wasted.
                assert!(LARGE_CLASS_PAGES[c] * 4 <= n * 5 + 3, "{n} pages");
            }
            assert_eq!(
                large_class_exact(n).is_some(),
                LARGE_CLASS_PAGES.contains(&n),
                "{n} pages"
            );
        }
        assert_eq!(large_pages(0, 1), Some(1));
        assert_eq!(large_pages(64 << 10, 8), Some(16));
        assert_eq!(large_pages((64 << 10) + 1, 8), Some(20));
        assert_eq!(large_pages(100_000, 4096), Some(28));
        assert_eq!(large_pages(100_000, 8192), Some(25));
        assert_eq!(large_pages(LARGE_CLASS_MAX + 1, 8), Some(65));
        assert_eq!(large_pages(usize::MAX, 8), None);
        // 90,000 bytes: 22 whole pages, the 24-page class.
        assert!(fits_large(22, 90_000, 8) && fits_large(24, 90_000, 8));
        assert!(!fits_large(23, 90_000, 8) && !fits_large(25, 90_000, 8));
        // Over-aligned: its own pages only.
        assert!(fits_large(22, 90_000, 8192) && !fits_large(24, 90_000, 8192));
        assert!(fits_large(1, 0, 8) && fits_large(100, 100 * 4096, 8));
    }
}
