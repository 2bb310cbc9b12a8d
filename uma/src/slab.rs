//! Slabs: the header, its free bitset, slab lists, the keg hash, and the
//! layout search (FreeBSD `struct uma_slab`, `keg_layout`).
//!
//! A slab is a naturally aligned run of `2^k` host pages (its size is its
//! alignment), cut into `ipers` items of `rsize` bytes from its start. Its
//! header is either *inline*, in the last bytes of the slab (found from any
//! item by masking the address), or *off-page*, an item of the internal
//! "UMA Slabs" zone found through the keg hash (keyed by slab address).

use core::mem::size_of;
use core::ptr;

use crate::keg::Keg;
use crate::source::{SlabSource, PAGE_SIZE};

/// Most items one slab holds (FreeBSD `SLAB_MAX_SETSIZE` is 256 for 4 KiB
/// pages and 16-byte minimum items; 512 lets 8-byte items fill a page).
pub(crate) const MAX_IPERS: usize = 512;
const WORDS: usize = MAX_IPERS / 64;
/// Largest slab: 64 host pages.
pub(crate) const MAX_SLAB_PAGES: usize = 64;
/// Layout search target: items use at least 90% of the slab.
pub(crate) const EFFICIENCY_PCT: usize = 90;

/// Which keg list a slab is on.
pub(crate) const ON_NONE: u8 = 0;
pub(crate) const ON_FREE: u8 = 1;
pub(crate) const ON_PARTIAL: u8 = 2;
pub(crate) const ON_FULL: u8 = 3;

/// A slab header (FreeBSD `struct uma_slab`).
#[repr(C)]
pub(crate) struct Slab {
    // under keg lock
    pub next: *mut Slab,
    pub prev: *mut Slab,
    pub hnext: *mut Slab,
    pub free: u32,
    pub list: u8,
    /// The partial bin the slab is on (see [`PartialLists`]).
    pub bin: u8,
    // constant after the slab is created
    pub base: *mut u8,
    pub keg: *const Keg,
    /// The allocator that produced the slab's memory; `None` for boot pages,
    /// which are never given back.
    pub source: Option<&'static dyn SlabSource>,
    // under keg lock: bit set = item free in the keg.
    pub bits: [u64; WORDS],
    /// INVARIANTS: bit set = item handed out to a zone's caller.
    #[cfg(feature = "invariants")]
    pub dbg: [u64; WORDS],
}

/// Bytes of a slab header (also the item size of "UMA Slabs").
pub(crate) const SLAB_HDR: usize = (size_of::<Slab>() + 15) & !15;

impl Slab {
    /// Builds a fresh header: every one of `ipers` items free.
    pub(crate) fn init(
        hdr: *mut Slab,
        base: *mut u8,
        keg: *const Keg,
        ipers: usize,
        source: Option<&'static dyn SlabSource>,
    ) {
        let mut bits = [0u64; WORDS];
        for (i, w) in bits.iter_mut().enumerate() {
            let lo = i * 64;
            if ipers >= lo + 64 {
                *w = u64::MAX;
            } else if ipers > lo {
                *w = (1u64 << (ipers - lo)) - 1;
            }
        }
        let s = Slab {
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            hnext: ptr::null_mut(),
            free: ipers as u32,
            list: ON_NONE,
            bin: 0,
            base,
            keg,
            source,
            bits,
            #[cfg(feature = "invariants")]
            dbg: [0; WORDS],
        };
        // SAFETY: hdr points at SLAB_HDR writable bytes owned by the keg
        // (the slab tail or a "UMA Slabs" item), aligned to 16.
        unsafe { hdr.write(s) };
    }

    /// Takes the lowest free item index. The caller checked `free > 0`.
    #[cfg(test)]
    pub(crate) fn take_first(&mut self) -> Option<usize> {
        let mut got = None;
        self.take_lowest(1, |i| got = Some(i));
        got
    }

    /// Takes up to `max` free item indices, lowest first, calling `f` with
    /// each; returns how many.
    pub(crate) fn take_lowest(&mut self, max: usize, mut f: impl FnMut(usize)) -> usize {
        let mut n = 0;
        'words: for (i, w) in self.bits.iter_mut().enumerate() {
            while *w != 0 {
                if n == max {
                    break 'words;
                }
                f(i * 64 + w.trailing_zeros() as usize);
                *w &= *w - 1;
                n += 1;
            }
        }
        self.free -= n as u32;
        n
    }

    /// Is item `idx` free in the keg?
    pub(crate) fn is_free(&self, idx: usize) -> bool {
        self.bits[idx / 64] & (1u64 << (idx % 64)) != 0
    }

    /// Marks item `idx` free.
    pub(crate) fn set_free(&mut self, idx: usize) {
        self.bits[idx / 64] |= 1u64 << (idx % 64);
        self.free += 1;
    }

    /// Number of free bits (for invariant checks).
    pub(crate) fn popcount(&self) -> u32 {
        self.bits.iter().map(|w| w.count_ones()).sum()
    }

    /// Any bit set at or beyond `ipers`?
    pub(crate) fn stray_bits(&self, ipers: usize) -> bool {
        (ipers..MAX_IPERS).any(|i| self.is_free(i))
    }
}

/// An intrusive doubly linked list of slabs (under keg lock).
#[derive(Debug)]
pub(crate) struct SlabList {
    pub head: *mut Slab,
    pub len: usize,
}

impl SlabList {
    pub(crate) const fn new() -> Self {
        SlabList {
            head: ptr::null_mut(),
            len: 0,
        }
    }

    /// # Safety
    ///
    /// `s` is a valid header on no list; the keg lock is held.
    pub(crate) unsafe fn push(&mut self, s: *mut Slab, tag: u8) {
        // SAFETY: caller contract; the head, if any, is a valid header.
        unsafe {
            (*s).prev = ptr::null_mut();
            (*s).next = self.head;
            (*s).list = tag;
            if !self.head.is_null() {
                (*self.head).prev = s;
            }
        }
        self.head = s;
        self.len += 1;
    }

    /// # Safety
    ///
    /// `s` is a valid header on this list; the keg lock is held.
    pub(crate) unsafe fn remove(&mut self, s: *mut Slab) {
        // SAFETY: caller contract; neighbours are valid headers of this list.
        unsafe {
            let (p, n) = ((*s).prev, (*s).next);
            if p.is_null() {
                self.head = n;
            } else {
                (*p).next = n;
            }
            if !n.is_null() {
                (*n).prev = p;
            }
            (*s).next = ptr::null_mut();
            (*s).prev = ptr::null_mut();
            (*s).list = ON_NONE;
        }
        self.len -= 1;
    }
}

/// Bins of partial slabs, by how full they are.
pub(crate) const PARTIAL_BINS: usize = 4;

/// The partial slabs of a keg, binned by fullness so that items come from
/// the fullest partial slab first (FreeBSD takes the head of one list).
/// Allocating from the fullest slabs leaves the sparse ones alone, so
/// their items drain back and the slab goes free (and back to its page
/// source): long-lived items concentrate in few slabs instead of pinning
/// many (seed 000: boundary tags spread over hundreds of btag slabs).
///
/// Bin `b` holds the slabs with `free` in the `b`-th quarter of
/// `1..ipers`; bin 0 is the fullest. Within a bin the order is LIFO. A
/// slab moves between bins only when its free count crosses a quarter, so
/// an allocation or a free costs O(1) (one list move at most).
#[derive(Debug)]
pub(crate) struct PartialLists {
    pub bins: [SlabList; PARTIAL_BINS],
    /// Slabs on all bins.
    pub len: usize,
}

impl PartialLists {
    pub(crate) const fn new() -> Self {
        PartialLists {
            bins: [const { SlabList::new() }; PARTIAL_BINS],
            len: 0,
        }
    }

    /// The bin of a partial slab with `free` of `ipers` items free.
    #[inline]
    pub(crate) fn bin_of(free: u32, ipers: usize) -> usize {
        ((free as usize).saturating_sub(1) * PARTIAL_BINS / ipers.max(1)).min(PARTIAL_BINS - 1)
    }

    /// The fullest partial slab, or null.
    #[inline]
    pub(crate) fn fullest(&self) -> *mut Slab {
        for b in &self.bins {
            if !b.head.is_null() {
                return b.head;
            }
        }
        ptr::null_mut()
    }

    /// # Safety
    ///
    /// `s` is a valid header on no list, with `0 < free < ipers`; the keg
    /// lock is held.
    pub(crate) unsafe fn push(&mut self, s: *mut Slab, ipers: usize) {
        // SAFETY: caller contract.
        unsafe {
            let b = Self::bin_of((*s).free, ipers);
            self.bins[b].push(s, ON_PARTIAL);
            (*s).bin = b as u8;
        }
        self.len += 1;
    }

    /// # Safety
    ///
    /// `s` is a valid header on these lists; the keg lock is held.
    pub(crate) unsafe fn remove(&mut self, s: *mut Slab) {
        // SAFETY: caller contract: `bin` says which list holds it.
        unsafe { self.bins[(*s).bin as usize].remove(s) };
        self.len -= 1;
    }

    /// Moves `s` to the bin its free count now calls for, if that changed.
    ///
    /// # Safety
    ///
    /// As [`remove`](Self::remove), and `0 < free < ipers`.
    pub(crate) unsafe fn rebin(&mut self, s: *mut Slab, ipers: usize) {
        // SAFETY: caller contract.
        unsafe {
            if Self::bin_of((*s).free, ipers) != (*s).bin as usize {
                self.remove(s);
                self.push(s, ipers);
            }
        }
    }
}

const HASH_INLINE: usize = 64;

/// The keg hash: slab address -> off-page header (FreeBSD `uma_hash`).
/// Starts with an inline table; grows into tables of host pages from the
/// Uma's internal source (allocated with the keg lock dropped).
pub(crate) struct SlabHash {
    inline: [*mut Slab; HASH_INLINE],
    heap: *mut *mut Slab,
    /// number of heads (a power of two)
    size: usize,
    pub count: usize,
}

impl SlabHash {
    pub(crate) const fn new() -> Self {
        SlabHash {
            inline: [ptr::null_mut(); HASH_INLINE],
            heap: ptr::null_mut(),
            size: HASH_INLINE,
            count: 0,
        }
    }

    fn table(&mut self) -> *mut *mut Slab {
        if self.heap.is_null() {
            self.inline.as_mut_ptr()
        } else {
            self.heap
        }
    }

    fn slot(&self, base: *mut u8, shift: u32) -> usize {
        let k = (base as usize) >> shift;
        (k ^ (k >> 7)) & (self.size - 1)
    }

    /// # Safety
    ///
    /// `s` is a valid header not in the hash; keg lock held.
    pub(crate) unsafe fn insert(&mut self, s: *mut Slab, shift: u32) {
        // SAFETY: caller contract; table has `size` valid heads.
        unsafe {
            let i = self.slot((*s).base, shift);
            let t = self.table();
            (*s).hnext = *t.add(i);
            *t.add(i) = s;
        }
        self.count += 1;
    }

    /// # Safety
    ///
    /// Keg lock held; every chained header is valid.
    pub(crate) unsafe fn lookup(&mut self, base: *mut u8, shift: u32) -> *mut Slab {
        let i = self.slot(base, shift);
        // SAFETY: caller contract.
        unsafe {
            let mut s = *self.table().add(i);
            while !s.is_null() && (*s).base != base {
                s = (*s).hnext;
            }
            s
        }
    }

    /// # Safety
    ///
    /// `s` is in the hash; keg lock held.
    pub(crate) unsafe fn remove(&mut self, s: *mut Slab, shift: u32) {
        // SAFETY: caller contract.
        unsafe {
            let i = self.slot((*s).base, shift);
            let mut pp = self.table().add(i);
            while !(*pp).is_null() {
                if *pp == s {
                    *pp = (*s).hnext;
                    (*s).hnext = ptr::null_mut();
                    self.count -= 1;
                    return;
                }
                pp = ptr::addr_of_mut!((**pp).hnext);
            }
        }
    }

    /// Wants a bigger table?
    pub(crate) fn wants_grow(&self) -> bool {
        self.count > 2 * self.size
    }

    /// Heads the next table should have.
    pub(crate) fn next_size(&self) -> usize {
        (self.size * 4).max(PAGE_SIZE / size_of::<*mut Slab>())
    }

    /// Moves every entry into `table` (`size` heads, zeroed) and returns the
    /// old heap table (null if it was inline) with its head count.
    ///
    /// # Safety
    ///
    /// Keg lock held; `table` is `size * 8` writable zeroed bytes.
    pub(crate) unsafe fn rehash(
        &mut self,
        table: *mut *mut Slab,
        size: usize,
        shift: u32,
    ) -> (*mut *mut Slab, usize) {
        let old = self.table();
        let old_size = self.size;
        let old_heap = self.heap;
        self.heap = table;
        self.size = size;
        self.count = 0;
        // SAFETY: caller contract; old chains are valid headers.
        unsafe {
            for i in 0..old_size {
                let mut s = *old.add(i);
                while !s.is_null() {
                    let n = (*s).hnext;
                    self.insert(s, shift);
                    s = n;
                }
            }
        }
        if old_heap.is_null() {
            self.inline = [ptr::null_mut(); HASH_INLINE];
        }
        (old_heap, old_size)
    }

    /// The heap table to free at keg destruction, if any.
    pub(crate) fn take_heap(&mut self) -> (*mut *mut Slab, usize) {
        let r = (self.heap, self.size);
        self.heap = ptr::null_mut();
        self.size = HASH_INLINE;
        r
    }
}

/// A keg's slab layout (FreeBSD `uk_rsize`, `uk_ipers`, `uk_ppera`,
/// `UMA_ZFLAG_OFFPAGE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabLayout {
    /// Item stride: the item size rounded up to the alignment.
    pub rsize: usize,
    /// Items per slab.
    pub ipers: usize,
    /// Slab bytes: a power of two number of host pages; also its alignment.
    pub slab_size: usize,
    /// Header off the slab (in "UMA Slabs", found through the keg hash).
    pub offpage: bool,
}

impl SlabLayout {
    /// Offset of an inline header inside the slab.
    pub(crate) fn hdr_off(&self) -> usize {
        self.slab_size - SLAB_HDR
    }
    /// Per cent of the slab (plus off-page header) that holds items.
    pub fn efficiency_pct(&self) -> usize {
        let total = self.slab_size + if self.offpage { SLAB_HDR } else { 0 };
        self.ipers * self.rsize * 100 / total
    }
}

/// Finds a layout for items of `size` bytes aligned to `align`.
///
/// Tries slab sizes of 1, 2, 4, ... 64 pages; at each size the inline header
/// first, then off-page; the first with at least 90% efficiency wins, else
/// the most efficient seen. `inline_only` (internal zones: their headers
/// cannot come from "UMA Slabs") and `offpage` (forced) restrict the search;
/// `max_ipers` caps items per slab (tiny test configs).
pub(crate) fn compute_layout(
    size: usize,
    align: usize,
    inline_only: bool,
    offpage: bool,
    max_ipers: usize,
) -> Option<SlabLayout> {
    if size == 0 || !align.is_power_of_two() || align > PAGE_SIZE {
        return None;
    }
    let align = align.max(8);
    let rsize = size.checked_add(align - 1)? & !(align - 1);
    let cap = max_ipers.clamp(1, MAX_IPERS);
    let mut best: Option<SlabLayout> = None;
    let mut pages = 1;
    while pages <= MAX_SLAB_PAGES {
        let slab_size = pages * PAGE_SIZE;
        let mut cands = [None, None];
        if !offpage && slab_size > SLAB_HDR {
            let n = ((slab_size - SLAB_HDR) / rsize).min(cap);
            if n > 0 {
                cands[0] = Some(SlabLayout {
                    rsize,
                    ipers: n,
                    slab_size,
                    offpage: false,
                });
            }
        }
        if !inline_only {
            let n = (slab_size / rsize).min(cap);
            if n > 0 {
                cands[1] = Some(SlabLayout {
                    rsize,
                    ipers: n,
                    slab_size,
                    offpage: true,
                });
            }
        }
        for c in cands.into_iter().flatten() {
            if c.efficiency_pct() >= EFFICIENCY_PCT {
                return Some(c);
            }
            if best.is_none_or(|b| c.efficiency_pct() > b.efficiency_pct()) {
                best = Some(c);
            }
        }
        // A capped item count will not improve with bigger slabs.
        if rsize * cap <= slab_size {
            break;
        }
        pages *= 2;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_small_items_inline_and_efficient() {
        for size in [8, 16, 24, 32, 48, 64, 96, 128, 200, 256, 500, 1000] {
            let l = compute_layout(size, 8, false, false, MAX_IPERS).unwrap();
            assert!(l.efficiency_pct() >= EFFICIENCY_PCT, "{size}: {l:?}");
            assert!(l.ipers <= MAX_IPERS && l.ipers >= 1);
            assert!(l.slab_size.is_power_of_two());
            if !l.offpage {
                assert!(
                    l.ipers * l.rsize <= l.hdr_off(),
                    "{size}: items overlap header"
                );
            } else {
                assert!(l.ipers * l.rsize <= l.slab_size);
            }
        }
    }

    #[test]
    fn layout_page_sized_items_go_offpage() {
        let l = compute_layout(4096, 8, false, false, MAX_IPERS).unwrap();
        assert!(l.offpage);
        assert_eq!(l.ipers, 1);
        let l = compute_layout(2048, 8, false, false, MAX_IPERS).unwrap();
        assert!(l.offpage, "{l:?}");
        let l = compute_layout(2048, 8, true, false, MAX_IPERS).unwrap();
        assert!(!l.offpage);
        assert!(l.efficiency_pct() >= EFFICIENCY_PCT, "{l:?}");
    }

    #[test]
    fn layout_respects_alignment_and_caps() {
        let l = compute_layout(33, 64, false, false, MAX_IPERS).unwrap();
        assert_eq!(l.rsize, 64);
        let l = compute_layout(64, 8, false, false, 4).unwrap();
        assert_eq!(l.ipers, 4);
        assert!(compute_layout(0, 8, false, false, 4).is_none());
        assert!(compute_layout(8, 3, false, false, 4).is_none());
        assert!(compute_layout(8, 8192, false, false, 4).is_none());
    }

    #[test]
    fn partial_bins_by_quarter() {
        // ipers 8: 1-2 free -> bin 0 (fullest), ..., 7 free -> bin 3.
        let bins: Vec<usize> = (1..8).map(|f| PartialLists::bin_of(f, 8)).collect();
        assert_eq!(bins, [0, 0, 1, 1, 2, 2, 3]);
        assert_eq!(PartialLists::bin_of(1, 70), 0);
        assert_eq!(PartialLists::bin_of(69, 70), PARTIAL_BINS - 1);
        assert_eq!(PartialLists::bin_of(1, 1), 0);
    }

    /// Items come from the fullest partial slab, so a sparse slab is left
    /// to drain (seed 000).
    #[cfg(not(loom))]
    #[test]
    fn items_come_from_the_fullest_partial_slab() {
        use crate::{ZoneArgs, ZoneFlags};
        // No buckets: every alloc and free goes to the keg.
        let z = crate::global()
            .create_zone(
                &ZoneArgs::new("fullest first", 64)
                    .flags(ZoneFlags::NOBUCKET)
                    .max_ipers(8),
            )
            .expect("zone");
        let info = z.keg_info().unwrap();
        let (ipers, slab) = (info.layout.ipers, info.layout.slab_size);
        assert_eq!(ipers, 8);
        let mut items: Vec<_> = (0..4 * ipers)
            .map(|_| z.alloc(crate::Flags::NOWAIT).expect("alloc"))
            .collect();
        items.sort_by_key(|p| p.as_ptr() as usize);
        let base = |p: &core::ptr::NonNull<u8>| p.as_ptr() as usize & !(slab - 1);
        let mut slabs: Vec<usize> = items.iter().map(base).collect();
        slabs.dedup();
        assert_eq!(slabs.len(), 4, "4 full slabs");
        // Keep 1 item of slab 0, 7 of slab 1, 4 of slab 2, none of slab 3.
        let keep = [1, 7, 4, 0];
        let mut kept = Vec::new();
        for p in items {
            let k = slabs.iter().position(|&b| b == base(&p)).unwrap();
            if kept.iter().filter(|q| base(q) == slabs[k]).count() < keep[k] {
                kept.push(p);
            } else {
                // SAFETY: an item of z, freed once.
                unsafe { z.free(p) };
            }
        }
        // The fullest partial slab (1 free) first, then the next (4 free),
        // never the sparse one (7 free) or the free one.
        let a = z.alloc(crate::Flags::NOWAIT).unwrap();
        assert_eq!(base(&a), slabs[1]);
        let b = z.alloc(crate::Flags::NOWAIT).unwrap();
        assert_eq!(base(&b), slabs[2]);
        z.check_invariants();
        for p in kept.into_iter().chain([a, b]) {
            // SAFETY: an item of z, freed once.
            unsafe { z.free(p) };
        }
        // SAFETY: nobody uses z afterwards.
        unsafe { crate::global().destroy(z) };
    }

    #[test]
    fn bitset_take_and_set() {
        let mut mem = [0u8; SLAB_HDR + 16];
        let hdr = ((mem.as_mut_ptr() as usize + 15) & !15) as *mut Slab;
        Slab::init(hdr, ptr::null_mut(), ptr::null(), 70, None);
        // SAFETY: hdr was just initialised inside `mem`.
        let s = unsafe { &mut *hdr };
        assert_eq!(s.popcount(), 70);
        assert!(!s.stray_bits(70));
        let mut got = [false; 70];
        while s.free > 0 {
            let i = s.take_first().unwrap();
            assert!(!got[i]);
            got[i] = true;
        }
        assert!(got.iter().all(|&g| g));
        s.set_free(65);
        assert!(s.is_free(65));
        assert_eq!(s.popcount(), 1);
        // Many at once: lowest first, across words, no more than asked.
        for i in [3, 63, 64, 66, 69] {
            s.set_free(i);
        }
        let mut seen = Vec::new();
        assert_eq!(s.take_lowest(4, |i| seen.push(i)), 4);
        assert_eq!(seen, [3, 63, 64, 65]);
        assert_eq!(s.free, 2);
        assert_eq!(s.take_lowest(10, |i| seen.push(i)), 2);
        assert_eq!(seen[4..], [66, 69]);
        assert_eq!((s.free, s.popcount()), (0, 0));
    }
}
