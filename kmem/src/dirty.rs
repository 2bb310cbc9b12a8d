//! Dirty-page retention: freed large blocks, trimmed slabs and the ranges
//! the page caches give back (`slabs`) keep their pages, wholly free spans
//! (the kernel arena's and the large classes' arena's) their address
//! space, for a while.
//!
//! Unbacking every freed large block (`madvise(MADV_DONTNEED)`) and
//! unmapping every span the moment it is wholly free made a program that
//! frees and reallocates large blocks pay a system call per free and a page
//! fault per page on reuse (the `malloc-large` workload ran 8.6x slower than
//! the system malloc, `mstress` made 2,000 `mmap`/`munmap` pairs). Like
//! jemalloc's dirty extents and retained address space, and mimalloc's
//! delayed purge, kmem now keeps both for a bounded time and size:
//!
//! - A freed large block (above the quantum cache, 64 KiB) goes back to the
//!   kernel arena with its pages still backed, each page marked dirty (a
//!   bit per page in the page metadata, [`pagemeta::mark_dirty`]: an
//!   atomic OR per 64 pages), and its range is listed in a ring. The listing
//!   follows the pages: an allocation that takes dirty pages cuts them out
//!   of the listed ranges, and a block freed next to a young listed range
//!   joins it (so entries do not go stale, and an evicted old entry never
//!   purges pages a newer free listed again). A free page not marked
//!   dirty still reads as zero, so an allocation that
//!   must be zero-filled (slabs, `kmem_malloc`, `alloc_zeroed`, `calloc`)
//!   clears exactly the dirty pages it received ([`taken`]); others reuse
//!   them as they are. A large allocation takes the smallest listed range
//!   that fits; a block that `realloc` moves to grow it, the widest (or
//!   the largest retained span, [`roomier_span`]), to grow into in place
//!   later.
//! - A wholly free span the arena releases (it keeps the latest a while,
//!   `keep_idle`) is kept mapped (still registered
//!   in the page metadata, its dirty bits intact) and handed back by the
//!   next import that fits ([`retain_span`], [`take_span`]); one that
//!   eight imports in a row were too small for is unmapped before the
//!   next maps ([`unmap_outgrown_spans`]). Its freed
//!   blocks stay listed meanwhile, for their decay (`reuse` passes them
//!   over: they are out of the arena until the span comes back), and
//!   leave the list when it is unmapped.
//! - Purging: when dirty pages exceed the budget ([`dirty_budget`], the
//!   most large bytes in use lately, at least [`DIRTY_MAX`]), or the oldest
//!   listed range or retained span is older than [`DECAY_NS`], the next
//!   large free (or the lazy timeout, the reclaim worker, or a `Trim`)
//!   purges the oldest: a retained span is unmapped; a listed range has
//!   each run of dirty pages taken out of the arena ([`vmem::Arena::claim`],
//!   so nothing can be allocated there meanwhile), unbacked, relabelled
//!   clean and freed. A full ring purges its smallest range. A reclaim
//!   pass ([`purge_all`]) purges everything.
//!
//! The lists live behind one lock, a leaf of the global lock order (see
//! `fork`): nothing else is locked while it is held, and no arena call is
//! made under it. `DIRTY` counts pages labelled dirty exactly; a range that
//! falls off the lists without being purged (a lost race, the smaller
//! side of a range cut in the middle while the ring is full) leaves its
//! pages labelled, still counted, and cleaned when they are allocated or
//! their span is unmapped, or by the next
//! reclaim pass ([`purge_all`]): when dirty pages remain after it purged
//! everything listed, it finds them by their dirty bits (a sweep of 8
//! words per 2 MiB chunk) and purges them too.

use crate::sync::plain::Mutex;
use crate::sync::plain::{AtomicU64, AtomicUsize, Ordering};

use vmem::Arena;

use crate::os::{self, CHUNK_SIZE, PAGE_SIZE};
use crate::pagemeta;

mod reuse;
pub(crate) use reuse::{reuse, roomier_span};
mod slabs;
pub(crate) use slabs::{free_cached_range, free_slab};
mod spans;
pub(crate) use spans::{retain_span, take_span, unmap_outgrown_spans, unmap_span};

/// Dirty bytes (free pages holding old data) kept before the oldest are
/// purged, at least: the budget grows with the program's large blocks
/// ([`dirty_budget`]).
pub const DIRTY_MAX: usize = 64 << 20;

/// The dirty budget now: [`DIRTY_MAX`], or the most bytes of large blocks
/// in use lately if that is more (at most 1 GiB), so that a program that
/// churns hundreds of MiB of large blocks reuses their pages instead of
/// faulting fresh ones in, as jemalloc's dirty extents and glibc's heap
/// do. Pages older than [`DECAY_NS`] go back all the same.
///
/// "Lately" is the last [`DECAY_NS`] (`PEAK`), not the instant: a
/// program whose large blocks come and go swings between less and more in
/// use, and a budget that followed it down purged (and unmapped whole
/// retained spans of) dirty pages that the next swing up faulted back in.
///
/// History, all figures `/usr/bin/time`, medians of 3 interleaved runs:
/// - until 2026-12-03 half the bytes in use at the instant: `malloc-large`
///   (mimalloc-bench, 20 live blocks of 5-25 MiB, every byte written)
///   purged and faulted back 3.7 GB in 2,000 allocations, 957k faults;
/// - then twice the bytes at the instant: `malloc-large` 460-600k faults,
///   540-600 MB peak RSS (glibc 510k, 534 MB); `bsdalloc::patterns`
///   `large_touch` (16 live blocks of 64 KiB-8 MiB, every page written)
///   297-310k faults, 157 MB;
/// - since 2026-12-04 the peak, once, with a [`retain_budget`] of twice
///   that: `malloc-large` 202-217k faults, 1.9-2.1 s, 698-712 MB (before:
///   530-700k, 2.8-3.3 s, 552-580 MB); `large_touch` 52-57k faults,
///   0.29-0.35 s, 158-162 MB (before: 247k, 0.70-0.78 s, 157 MB); glibc
///   127k faults, 0.41 s, 320 MB; mimalloc 41k, 165 MB; tcmalloc on
///   `malloc-large` 185k, 576 MB. The price: `large_mixed` (first and
///   last byte of each block written) peaks at 50-53 MB instead of 21
///   (glibc 33). Twice the peak faulted less (222k and 40k) for more
///   memory (820-856 MB on `malloc-large`); the peak with half as many
///   retained spans as the dirty budget kept fewer and faulted more
///   (415-533k faults on `malloc-large`, 196k on `large_touch`).
/// - 2026-12-06 (AMD EPYC, 7 and 5 interleaved runs, medians; with
///   `reuse` extending dirty ranges into free space): three quarters of
///   the peak and half of it cut `malloc-large` to 591 and 522 MB (from
///   681; 1.83, 2.00 s against 1.84; 235k, 314k faults against 206k)
///   but not `large_touch` (141, 138 MB against 160) while it ran 0.51
///   and 0.94 s against 0.23 (163k, 372k faults against 45k), and the C
///   `realloc_sizes` 1.42 and 2.09 s against 0.87 (442k, 699k faults
///   against 237k): a program that cycles through more large memory than
///   the budget refaults what the budget purged, so the peak stays.
pub fn dirty_budget() -> usize {
    in_use()
        .max(PEAK.load(Ordering::Relaxed))
        .clamp(DIRTY_MAX, 1 << 30)
}

/// Bytes in use that the dirty budget follows: large blocks, slabs and
/// the page caches' ranges (in use or cached: what their trims give back
/// with the pages kept).
fn in_use() -> usize {
    crate::malloc::large_bytes_in_use()
        + crate::kernel::slab_bytes_in_use()
        + crate::kernel::page_cache_bytes()
}

/// The most bytes of large blocks in use lately (see [`dirty_budget`]),
/// and when that was: a newer peak, or any figure once this one is older
/// than [`DECAY_NS`], replaces it. Relaxed: a hint for a budget.
static PEAK: AtomicUsize = AtomicUsize::new(0);
static PEAK_AT: AtomicU64 = AtomicU64::new(0);

/// Notes `in_use` bytes of large blocks at `now` (the figure now, at each
/// budget check: it also replaces a peak older than [`DECAY_NS`]).
fn note_peak(in_use: usize, now: u64) {
    if in_use >= PEAK.load(Ordering::Relaxed)
        || now.saturating_sub(PEAK_AT.load(Ordering::Relaxed)) > DECAY_NS
    {
        PEAK.store(in_use, Ordering::Relaxed);
        PEAK_AT.store(now, Ordering::Relaxed);
    }
}

/// Notes the bytes in use just before a free of `bytes` of them at `now`
/// (a large block's, a slab's or a page cache's released range, already
/// counted out), if that is a new peak or the peak reached again (renewing
/// it: on a new peak only, `malloc-large` faulted 12% more). Not for a
/// block freed into a page cache: the cache holds its range still.
fn note_before_free(bytes: usize, now: u64) {
    let before = in_use() + bytes;
    if before >= PEAK.load(Ordering::Relaxed) {
        note_peak(before, now);
    }
}

/// Address space of wholly free spans kept mapped now: [`RETAIN_MAX`], or
/// twice the dirty budget if that is more. A retained span's dirty pages
/// count in the dirty budget all the same (over it, the oldest span is
/// unmapped first): this budget is of address space, and an import is
/// rounded up to [`crate::IMPORT_QUANTUM`], so a span can be up to twice
/// its block (4 MiB + 8 bytes, a block with a small header, takes an
/// 8 MiB span). With 64 MiB only, a program with ~100 MiB of large blocks
/// unmapped its freed spans (and faulted their pages back) as fast as it
/// released them (`large_touch`: 264-274k faults against 54.5k); with
/// once the dirty budget, 24 blocks of 4 MiB + 8 bytes freed together
/// unmapped half their spans at once.
pub fn retain_budget() -> usize {
    RETAIN_MAX.max(dirty_budget().saturating_mul(2))
}
/// Address space of wholly free spans kept mapped, at least (see
/// [`retain_budget`]).
pub const RETAIN_MAX: usize = 64 << 20;
/// Dirty ranges and retained spans older than this are purged by the next
/// large free or timeout pass (1 s).
pub const DECAY_NS: u64 = 1_000_000_000;

const RING: usize = 1024;
/// Retained spans listed at most. The budget ([`retain_budget`]) is the
/// real bound; 32 entries (until 2026-12-07) unmapped the spans of a
/// program that frees hundreds of MiB of slabs at once and takes them
/// back a class later (`benches/c/phases.c`, 600 MB cycled through four
/// classes: 40 turns 299k page faults then, 230k with 256).
const SPANS: usize = 256;
/// A range whose purge lost a race is retried this many times.
const TRIES: u8 = 2;

#[derive(Clone, Copy)]
struct Range {
    addr: usize,
    size: usize,
    stamp: u64,
    tries: u8,
    /// (Retained spans.) Imports in a row it was too small for (see
    /// [`unmap_outgrown_spans`]).
    passed: u8,
    /// (Ring entries.) The range begins in a retained span: its pages are
    /// out of the arena until the span comes back, so [`reuse()`] passes
    /// it over. Kept by the lists as spans come and go, so that the scans
    /// test a flag instead of every span.
    held: bool,
}

const EMPTY: Range = Range {
    addr: 0,
    size: 0,
    stamp: 0,
    tries: 0,
    passed: 0,
    held: false,
};

struct Lists {
    /// Freed dirty ranges, oldest first (a ring).
    ring: [Range; RING],
    head: usize,
    len: usize,
    /// Retained spans (unordered; `stamp` is when each was released).
    spans: [Range; SPANS],
    nspans: usize,
    retained: usize,
}

impl Lists {
    /// Nothing listed, nothing retained.
    const fn new() -> Lists {
        Lists {
            ring: [EMPTY; RING],
            head: 0,
            len: 0,
            spans: [EMPTY; SPANS],
            nspans: 0,
            retained: 0,
        }
    }

    /// Lists `r` at the tail. A full ring gives up its smallest range for
    /// the caller to purge (`r` itself if none is smaller): most of a
    /// fragmented ring is crumbs under the quantum cache's 64 KiB, left by
    /// blocks carved from larger ranges, that no large allocation can
    /// reuse alone, and evicting the oldest instead purged whole freed
    /// blocks' pages to keep them.
    fn push(&mut self, r: Range) -> Option<Range> {
        let r = Range {
            held: self.in_span(r.addr, 1),
            ..r
        };
        if self.len < RING {
            self.ring[(self.head + self.len) % RING] = r;
            self.len += 1;
            return None;
        }
        let (mut v, mut least) = (None, r.size);
        for k in 0..self.len {
            let i = (self.head + k) % RING;
            if self.ring[i].size < least {
                (v, least) = (Some(i), self.ring[i].size);
            }
        }
        let Some(v) = v else { return Some(r) };
        let evicted = self.ring[v];
        self.ring[v].size = 0;
        self.compact();
        self.ring[(self.head + self.len) % RING] = r;
        self.len += 1;
        Some(evicted)
    }

    /// Whether `[addr, addr + size)` lies in a retained span.
    fn in_span(&self, addr: usize, size: usize) -> bool {
        self.spans[..self.nspans]
            .iter()
            .any(|s| addr >= s.addr && addr + size <= s.addr + s.size)
    }

    /// The ring entries that begin in `[lo, hi)`, a span retained
    /// (`held`), taken back (not), or unmapped (`None`: dropped, their
    /// pages are gone).
    fn mark_span(&mut self, lo: usize, hi: usize, held: Option<bool>) {
        for k in 0..self.len {
            let e = &mut self.ring[(self.head + k) % RING];
            if e.addr >= lo && e.addr < hi && e.size != 0 {
                match held {
                    Some(h) => e.held = h,
                    None => e.size = 0,
                }
            }
        }
    }

    /// Lists a freed range. A listed neighbour freed less than half the
    /// decay time ago (the arena coalesced the two as well) takes it in,
    /// keeping its place and its stamp: a block carved from the front of a
    /// range and freed again makes the range whole instead of a second
    /// entry, and no page is kept longer than the decay time (some are
    /// purged up to half of it early). When the ring is full, entries used
    /// up by [`reuse()`] are dropped first, and only then is the oldest
    /// evicted (returned, for the caller to purge).
    fn push_freed(&mut self, r: Range) -> Option<Range> {
        let (mut lo, mut hi) = (r.addr, r.addr + r.size);
        let mut into = None;
        for k in 0..self.len {
            let i = (self.head + k) % RING;
            let e = self.ring[i];
            // Adjacency first: it rules out nearly every entry.
            if (e.addr + e.size != lo && e.addr != hi) || e.size == 0 {
                continue;
            }
            if e.stamp.saturating_add(DECAY_NS / 2) <= r.stamp {
                continue;
            }
            lo = lo.min(e.addr);
            hi = hi.max(e.addr + e.size);
            match into {
                None => into = Some(i),
                Some(_) => self.ring[i].size = 0,
            }
        }
        if let Some(i) = into {
            if self.ring[i].addr != lo {
                self.ring[i].held = self.in_span(lo, 1);
            }
            self.ring[i].addr = lo;
            self.ring[i].size = hi - lo;
            return None;
        }
        if self.len == RING {
            self.compact();
        }
        self.push(r)
    }

    /// Cuts `[addr, end)`, just allocated, out of every listed range, so
    /// the list keeps describing free dirty pages (a stale entry would
    /// later be purged on eviction while a newer one still lists the same
    /// pages, freed again meanwhile). A range cut in the middle keeps its
    /// larger side in place; the other side is listed too if there is room
    /// (at the tail with its old stamp, so it may outlive the decay time by
    /// however long the entries ahead of it are young).
    ///
    /// The same pass drops the entries with nothing left, wherever they
    /// are (oldest-first order kept): [`reuse()`] and merges empty entries in
    /// the middle of the ring, which every scan then walked
    /// (`bsdalloc::patterns` `large_mixed`: 143 entries scanned per
    /// allocation, 106 of them empty).
    fn forget(&mut self, addr: usize, end: usize) {
        let mut split = None;
        let mut kept = 0;
        for k in 0..self.len {
            let mut e = self.ring[(self.head + k) % RING];
            let e_end = e.addr + e.size;
            if e.size != 0 && e_end > addr && e.addr < end {
                let front = addr.saturating_sub(e.addr);
                let back = e_end.saturating_sub(end);
                if front >= back {
                    e.size = front;
                    if back > 0 {
                        split = Some(Range {
                            addr: end,
                            size: back,
                            ..e
                        });
                    }
                } else {
                    if front > 0 {
                        split = Some(Range { size: front, ..e });
                    }
                    e.addr = end;
                    e.size = back;
                    e.held = self.in_span(end, 1);
                }
            }
            if e.size != 0 {
                self.ring[(self.head + kept) % RING] = e;
                kept += 1;
            }
        }
        self.len = kept;
        if let Some(r) = split {
            if self.len < RING {
                self.push(r);
            }
        }
    }

    /// Drops the entries with nothing left (oldest-first order kept).
    fn compact(&mut self) {
        let mut n = 0;
        for k in 0..self.len {
            let e = self.ring[(self.head + k) % RING];
            if e.size != 0 {
                self.ring[(self.head + n) % RING] = e;
                n += 1;
            }
        }
        self.len = n;
    }

    /// Drops used-up (empty) entries at both ends, so that the scans stay
    /// short for a program that frees and reallocates a large block in
    /// turn: each reuse empties the entry its free made, and without this
    /// the ring filled with 256 empty entries that every free, reuse and
    /// allocation scanned (a 256 KiB `malloc` + `free` cost 18,000
    /// instructions).
    fn trim(&mut self) {
        while self.len > 0 && self.ring[self.head].size == 0 {
            self.head = (self.head + 1) % RING;
            self.len -= 1;
        }
        while self.len > 0 && self.ring[(self.head + self.len - 1) % RING].size == 0 {
            self.len -= 1;
        }
    }

    fn pop(&mut self) -> Option<Range> {
        if self.len == 0 {
            return None;
        }
        let r = self.ring[self.head];
        self.head = (self.head + 1) % RING;
        self.len -= 1;
        Some(r)
    }

    fn oldest_span(&self) -> Option<usize> {
        (0..self.nspans).min_by_key(|&i| self.spans[i].stamp)
    }

    /// Takes retained span `i` off the list for an unmap, with its listed
    /// ranges (kept, they filled the ring with pages no allocation could
    /// take, and the evictions that made room purged live ones: `patterns
    /// buffers` faulted 166k pages, now 128k).
    fn drop_span(&mut self, i: usize) -> Range {
        let r = self.remove_span(i);
        self.mark_span(r.addr, r.addr + r.size, None);
        self.compact();
        r
    }

    fn remove_span(&mut self, i: usize) -> Range {
        let r = self.spans[i];
        self.nspans -= 1;
        self.spans[i] = self.spans[self.nspans];
        self.retained -= r.size;
        r
    }

    /// The earliest stamp listed (`u64::MAX` if none).
    fn oldest_stamp(&self) -> u64 {
        let ring = if self.len > 0 {
            self.ring[self.head].stamp
        } else {
            u64::MAX
        };
        let span = self.oldest_span().map_or(u64::MAX, |i| self.spans[i].stamp);
        ring.min(span)
    }
}

static LISTS: Mutex<Lists> = Mutex::new(Lists::new());

/// Bytes of pages labelled dirty (in the arena's free space or in retained
/// spans).
static DIRTY: AtomicUsize = AtomicUsize::new(0);

/// Bytes of dirty pages held now (one relaxed load).
pub(crate) fn held() -> usize {
    DIRTY.load(Ordering::Relaxed)
}
/// Bytes of address space in retained spans.
static RETAINED: AtomicUsize = AtomicUsize::new(0);
/// When the oldest listed thing decays (`u64::MAX`: nothing listed).
static NEXT_DECAY: AtomicU64 = AtomicU64::new(u64::MAX);
static PURGED: AtomicUsize = AtomicUsize::new(0);
static REUSED: AtomicUsize = AtomicUsize::new(0);
static SPAN_HITS: AtomicUsize = AtomicUsize::new(0);
/// Reclaims that still found dirty pages after purging everything listed,
/// and swept the dirty bits for them.
static SWEEPS: AtomicUsize = AtomicUsize::new(0);

/// The clock of the stamps, the decay and the peak: read once per large
/// free, shared with the lazy timeout's tick (the coarse clock here made
/// `realloc_sizes.c` fault 20-40% more).
fn now() -> u64 {
    crate::os::now_ns()
}

fn lists() -> crate::sync::plain::MutexGuard<'static, Lists> {
    LISTS.lock().unwrap_or_else(|e| e.into_inner())
}

fn publish(l: &Lists) {
    NEXT_DECAY.store(l.oldest_stamp().saturating_add(DECAY_NS), Ordering::Relaxed);
    RETAINED.store(l.retained, Ordering::Relaxed);
}

/// Labels `npages` pages just taken from the kernel arena with `word` and
/// marks them clean; the dirty ones among them are zero-filled first if
/// `zero`. With `word` 0 (a large block, whose caller labels its head) no
/// page word is written: every free page's word is 0 already.
pub(crate) fn taken(addr: usize, npages: usize, word: usize, zero: bool) {
    taken_as(addr, npages, word, zero, true);
}

/// [`taken`] for pages [`reuse()`] took: it cut them out of the list
/// already, so the list is not walked again (the lock and a second scan
/// of up to `RING` entries per large allocation).
pub(crate) fn taken_reused(addr: usize, npages: usize, word: usize, zero: bool) {
    taken_as(addr, npages, word, zero, false);
}

fn taken_as(addr: usize, npages: usize, word: usize, zero: bool, listed: bool) {
    if word != 0 {
        pagemeta::set(addr, npages, word);
    }
    #[cfg(feature = "invariants")]
    for i in 0..npages {
        let (page, w) = (addr + i * PAGE_SIZE, pagemeta::lookup(addr + i * PAGE_SIZE));
        if w != word {
            crate::report::fatal(format_args!(
                "kmem: page {page:#x}, just taken from the arena, has word {w:#x}, not {word:#x}"
            ));
        }
    }
    let (mut dirty, mut unbacked) = (0, 0);
    if zero {
        pagemeta::take_dirty_runs(addr, npages, |start, len| {
            dirty += len;
            unbacked += clear_run((start, len));
        });
    } else {
        dirty = pagemeta::clean(addr, npages) * PAGE_SIZE;
    }
    if dirty != 0 {
        DIRTY.fetch_sub(dirty, Ordering::Relaxed);
        REUSED.fetch_add(dirty - unbacked, Ordering::Relaxed);
        if listed {
            lists().forget(addr, addr + npages * PAGE_SIZE);
        }
    }
}

/// Dirty runs this long or longer are looked at before they are cleared
/// for a zero-filled allocation: a freed block's pages are all labelled
/// dirty, touched or not, and writing zeros over untouched ones faults
/// each of them in (a `calloc` of a reused 4 MiB range made it all
/// resident where the program had written 4 KiB).
const LOOK_RUN: usize = 16 * PAGE_SIZE;
/// Pages looked at with one `mincore` call (a byte each on the stack).
const LOOK_PAGES: usize = 1024;
/// Pages looked at first at the start of each piece, and at the end of a
/// run's last piece (see [`clear_run`]).
const PROBE_PAGES: usize = 64;

/// Clears a run of dirty pages the caller just took from the arena (see
/// [`taken`]). A long run is cleared a piece of up to [`LOOK_PAGES`] at a
/// time: a piece mostly not resident (never touched, or swapped out) is
/// unbacked (`MADV_DONTNEED`: it then reads as zero and costs nothing
/// until touched), one mostly resident gets zeros written (cheaper than
/// the page faults that unbacking would cost a program that writes it
/// all, as `vec![0; n]` and `calloc` users do). Either way every byte
/// reads as zero afterwards; `mincore` only chooses how. Returns the
/// bytes unbacked.
fn clear_run((start, bytes): (usize, usize)) -> usize {
    let mut unbacked = 0;
    // Consecutive pieces to unback, unbacked with one call (a `calloc` of
    // a reused 8 MiB range, two pages of it touched, made 8 `mincore` and
    // 8 `madvise` calls with pieces of 256 pages: 0.80 s for 20,000 of
    // them, 0.61 s in the kernel; jemalloc 0.16 s).
    //
    // A piece is looked at whole only if the pages at its start or just
    // past its end (the next piece's start, or the run's last pages) are
    // mostly resident; if neither, it is taken to be mostly not resident.
    // `mincore` walks every page it is asked about, and a large
    // `vec![0u8; n]` reusing the pages of blocks that had a few pages
    // written (a buffer read into in part) spent 38% of its time there
    // (`patterns zeroed_large`: 4.7 calls of 1,024 pages each per
    // allocation; jemalloc makes one `madvise` call and no `mincore`).
    // A piece written from its start, or up to its end and on (or whole),
    // is still cleared with zeros where resident; one written only inside,
    // away from both, is unbacked, and those pages fault back in if
    // written again.
    let probe = PROBE_PAGES * PAGE_SIZE;
    let mut pending = (start, 0);
    let mut at = start;
    let end = start + bytes;
    // The start probe of the piece at `at`, if the last piece made it.
    let mut head = None;
    while at < end {
        let len = (end - at).min(LOOK_PAGES * PAGE_SIZE);
        let next = at + len;
        let absent = if len <= 2 * probe {
            head = None;
            len >= LOOK_RUN && mostly_absent(at, len)
        } else {
            let head_absent = match head {
                Some(a) => a,
                None => mostly_absent(at, probe),
            };
            let tail_absent = if next < end {
                mostly_absent(next, probe.min(end - next))
            } else {
                mostly_absent(next - probe, probe)
            };
            head = (next < end).then_some(tail_absent);
            (head_absent && tail_absent) || mostly_absent(at, len)
        };
        if absent {
            if pending.1 == 0 {
                pending.0 = at;
            }
            pending.1 += len;
        } else {
            unbacked += unback_pending(&mut pending);
            // SAFETY: whole pages of the range the caller just took from
            // the arena: ours, nobody else's yet, their contents dead.
            unsafe { core::ptr::write_bytes(at as *mut u8, 0, len) };
        }
        at += len;
    }
    unbacked + unback_pending(&mut pending)
}

/// Unbacks `pending` (see [`clear_run`]), if anything, and empties it.
fn unback_pending(pending: &mut (usize, usize)) -> usize {
    let (at, len) = core::mem::take(pending);
    if len != 0 {
        // SAFETY: pieces of a range the caller of `clear_run` just took
        // from the arena: ours, nobody else's yet, their contents dead.
        unsafe { os::unback(at, len) };
        PURGED.fetch_add(len, Ordering::Relaxed);
    }
    len
}

/// Whether fewer than half of the pages of `[addr, addr + len)` (at most
/// [`LOOK_PAGES`]) are resident. False if `mincore` fails.
fn mostly_absent(addr: usize, len: usize) -> bool {
    let mut vec = [0u8; LOOK_PAGES];
    // SAFETY: the range is mapped memory of ours, `len / PAGE_SIZE <=
    // LOOK_PAGES` bytes of `vec` are written.
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if r != 0 {
        return false;
    }
    let pages = len / PAGE_SIZE;
    let resident = vec[..pages].iter().filter(|&&b| b & 1 != 0).count();
    resident * 2 < pages
}

/// Labels `npages` pages just taken from the kernel arena for the metadata
/// arena (`kernel::MetaChunks`) clean, and unbacks the range if a freed
/// large block had left dirty pages in it: every free page of the
/// metadata arena reads as zero.
pub(crate) fn taken_clean(addr: usize, npages: usize) {
    let dirty = pagemeta::clean(addr, npages) * PAGE_SIZE;
    if dirty != 0 {
        DIRTY.fetch_sub(dirty, Ordering::Relaxed);
        PURGED.fetch_add(dirty, Ordering::Relaxed);
        lists().forget(addr, addr + npages * PAGE_SIZE);
        // SAFETY: whole pages the caller just took from the arena: ours,
        // and nobody uses them yet.
        unsafe { os::unback(addr, npages * PAGE_SIZE) };
    }
}

/// Frees a large block (counted out of the large bytes in use already) to
/// the arena with its pages kept (labelled dirty), then purges what is
/// over budget or old.
///
/// # Safety
///
/// `[addr, addr + bytes)` is a live large block of the arena (whole pages),
/// unused from now on.
pub(crate) unsafe fn free_large(arena: &Arena<'static>, addr: usize, bytes: usize) {
    let now = now();
    note_before_free(bytes, now);
    if bytes > dirty_budget() {
        // Over the whole budget by itself: it would be listed and purged at
        // once. Unback it directly (its page words are 0 already: a live
        // block's only labelled page is its head, cleared by the caller).
        // SAFETY: the caller's promise: whole pages of ours, unused.
        unsafe { os::unback(addr, bytes) };
        give_back(arena, addr, bytes);
        #[cfg(not(loom))]
        crate::timeout::tick_at(now);
        return;
    }
    mark_dirty(addr, bytes);
    give_back(arena, addr, bytes);
    list_freed(arena, addr, bytes, now);
}

/// Labels `[addr, addr + bytes)` dirty and counts the pages that were not.
fn mark_dirty(addr: usize, bytes: usize) {
    let marked = pagemeta::mark_dirty(addr, bytes / PAGE_SIZE) * PAGE_SIZE;
    DIRTY.fetch_add(marked, Ordering::Relaxed);
}

/// Frees a range the arena gave back to it (a refusal is fatal).
fn give_back(arena: &Arena<'static>, addr: usize, bytes: usize) {
    if let Err(e) = arena.xfree(addr, bytes) {
        crate::report::fatal(format_args!(
            "kmem: freeing {bytes} bytes at {addr:#x}: {e}"
        ));
    }
}

/// Shrinks the large block `[addr, addr + old)` to its first `new` bytes in
/// place ([`vmem::Arena::xresize`]): the tail goes back to the arena with
/// its pages kept, as [`free_large`] gives back a whole block. False (and
/// nothing changed) if the arena refuses.
///
/// # Safety
///
/// `[addr, addr + old)` is a live large block of the arena (whole pages,
/// above the quantum cache, as are `new` bytes); nothing uses its tail from
/// now on.
pub(crate) unsafe fn shrink_large(
    arena: &Arena<'static>,
    addr: usize,
    old: usize,
    new: usize,
) -> bool {
    let (tail, bytes) = (addr + new, old - new);
    let keep = bytes <= dirty_budget();
    if keep {
        // Labelled before the arena has the pages: whoever takes them
        // next must see that they hold data.
        mark_dirty(tail, bytes);
    } else {
        // Over the whole budget by itself (as in `free_large`): unbacked
        // before the arena has it, so that it reads as zero, as its clean
        // labels say. (Its contents are past the block's new end: nobody
        // needs them, even if the arena refuses below.)
        // SAFETY: the tail is ours and unused (the caller's promise).
        unsafe { os::unback(tail, bytes) };
    }
    if arena.xresize(addr, old, new).is_err() {
        if keep {
            let cleaned = pagemeta::clean(tail, bytes / PAGE_SIZE) * PAGE_SIZE;
            DIRTY.fetch_sub(cleaned, Ordering::Relaxed);
        }
        return false;
    }
    if keep {
        list_freed(arena, tail, bytes, now());
    }
    true
}

/// Lists the dirty range `[addr, addr + bytes)` just freed to the arena,
/// then purges what is over budget or old (`now`: the free's clock read).
fn list_freed(arena: &Arena<'static>, addr: usize, bytes: usize, now: u64) {
    let evicted = {
        let mut l = lists();
        let e = l.push_freed(Range {
            addr,
            size: bytes,
            stamp: now,
            tries: 0,
            passed: 0,
            held: false,
        });
        publish(&l);
        e
    };
    if let Some(r) = evicted {
        purge_range(arena, r);
    }
    maintain(arena, now, false);
    #[cfg(not(loom))]
    crate::timeout::tick_at(now);
}

/// Purges while over budget, or everything older than the decay time, or
/// (with `all`) everything.
fn maintain(arena: &Arena<'static>, now: u64, all: bool) {
    note_peak(in_use(), now);
    if !all
        && DIRTY.load(Ordering::Relaxed) <= dirty_budget()
        && now < NEXT_DECAY.load(Ordering::Relaxed)
    {
        return;
    }
    enum Job {
        Unmap(Range),
        Purge(Range),
    }
    // Bounded: each round takes one thing off the lists; a range can come
    // back only TRIES times.
    for _ in 0..(RING + SPANS) * (TRIES as usize + 1) {
        let job = {
            let mut l = lists();
            let over = all || DIRTY.load(Ordering::Relaxed) > dirty_budget();
            let old = |r: &Range| r.stamp.saturating_add(DECAY_NS) <= now;
            let job = match l.oldest_span() {
                Some(i) if over || old(&l.spans[i]) => Some(Job::Unmap(l.drop_span(i))),
                _ if l.len > 0 && (over || old(&l.ring[l.head])) => l.pop().map(Job::Purge),
                _ => None,
            };
            publish(&l);
            job
        };
        match job {
            Some(Job::Unmap(r)) => unmap_span(r.addr, r.size),
            Some(Job::Purge(r)) => purge_range(arena, r),
            None => return,
        }
    }
}

/// Purges every listed dirty range and unmaps every retained span (a
/// reclaim pass); then, if dirty pages remain that no list knows of
/// (ranges that fell off: see the module doc), finds them by their dirty
/// bits and purges them too.
pub(crate) fn purge_all(arena: &Arena<'static>) {
    slabs::purge_slab_chunks(arena, u64::MAX);
    arena.release_idle(); // the span kept wholly free (`keep_idle`) first
    maintain(arena, now(), true);
    if DIRTY.load(Ordering::Relaxed) != 0 {
        sweep(arena);
    }
}

/// Purges the free dirty pages of every chunk, listed or not: a walk of
/// the dirty bits of every chunk, so only for reclaims.
fn sweep(arena: &Arena<'static>) {
    pagemeta::for_each_chunk(|base| {
        let _ = purge_runs(arena, base, CHUNK_SIZE);
    });
    SWEEPS.fetch_add(1, Ordering::Relaxed);
}

/// Purges what is over budget or older than the decay time (a trim).
pub(crate) fn purge_old(arena: &Arena<'static>) {
    arena.release_idle(); // kept (`keep_idle`) for one period at most
    let now = now();
    slabs::purge_slab_chunks(arena, now.saturating_sub(DECAY_NS));
    maintain(arena, now, false);
}

/// Unbacks the dirty runs of `[addr, addr + size)` that are free in the
/// arena (each claimed, unbacked, relabelled clean and freed); true if
/// some run could not be claimed.
fn purge_runs(arena: &Arena<'static>, addr: usize, size: usize) -> bool {
    let mut lost = false;
    pagemeta::dirty_runs(addr, size / PAGE_SIZE, |start, len| {
        let arena = if arena.claim(start, len, vmem::Flags::NOWAIT).is_ok() {
            arena
        } else if let Some(lc) =
            crate::kernel::lc_arena().filter(|lc| lc.claim(start, len, vmem::Flags::NOWAIT).is_ok())
        {
            // A chunk of the large classes' arena: its caches' trimmed
            // ranges keep their pages too (`free_cached_range`).
            lc
        } else {
            // In a retained span (out of the arena, wholly free: purged
            // there), or allocated meanwhile (its words are being
            // relabelled), or no longer one free segment.
            if !purge_retained(start, len) {
                lost = true;
            }
            return;
        };
        let dirty = pagemeta::clean(start, len / PAGE_SIZE) * PAGE_SIZE;
        // SAFETY: claimed: whole pages of ours that nobody else can use
        // until the xfree below.
        unsafe { os::unback(start, len) };
        DIRTY.fetch_sub(dirty, Ordering::Relaxed);
        PURGED.fetch_add(dirty, Ordering::Relaxed);
        if let Err(e) = arena.xfree(start, len) {
            crate::report::fatal(format_args!(
                "kmem: returning purged pages at {start:#x}: {e}"
            ));
        }
    });
    lost
}

/// Purges `[start, start + len)` if it lies in a retained span: such a
/// span is out of the arena and wholly free, so its pages are the lists'
/// to unback (under the lists' lock, so no import takes the span
/// meanwhile). False if no retained span holds the range.
fn purge_retained(start: usize, len: usize) -> bool {
    let l = lists();
    if !l.in_span(start, len) {
        return false;
    }
    let dirty = pagemeta::clean(start, len / PAGE_SIZE) * PAGE_SIZE;
    // SAFETY: whole pages of a retained span: mapped by us, free, and
    // nobody can take them while we hold the lists' lock.
    unsafe { os::unback(start, len) };
    DIRTY.fetch_sub(dirty, Ordering::Relaxed);
    PURGED.fetch_add(dirty, Ordering::Relaxed);
    drop(l);
    true
}

/// Unbacks the dirty runs of `r` that are free in the arena.
fn purge_range(arena: &Arena<'static>, r: Range) {
    let lost = purge_runs(arena, r.addr, r.size);
    if lost && r.tries < TRIES {
        let mut l = lists();
        // Evicting here would recurse; a full ring drops the retry instead
        // (its pages stay labelled and counted, see the module doc).
        if l.len < RING {
            l.push(Range {
                tries: r.tries + 1,
                stamp: now(),
                ..r
            });
        }
        publish(&l);
    }
}

/// Takes the lists' lock for a fork (a leaf: see `fork`).
#[cfg(not(loom))]
pub(crate) struct ListsLock(#[allow(dead_code)] crate::sync::plain::MutexGuard<'static, Lists>);

/// Takes the dirty lists' lock for a fork.
#[cfg(not(loom))]
pub(crate) fn fork_lock() -> ListsLock {
    ListsLock(lists())
}

/// Dirty-page figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirtyStats {
    /// Free pages holding old data now (bytes).
    pub dirty: usize,
    /// Address space of wholly free spans kept mapped now (bytes).
    pub retained: usize,
    /// Dirty bytes ever unbacked or unmapped by purges.
    pub purged_total: usize,
    /// Dirty bytes ever reused by allocations.
    pub reused_total: usize,
    /// Imports served from a retained span.
    pub span_hits: usize,
    /// Reclaims that still found dirty pages after purging everything
    /// listed (fallen off a full ring, freed meanwhile, or not claimable)
    /// and swept the dirty bits for them.
    pub sweeps: usize,
    /// Bytes of slabs ever freed with their pages kept (counted in `dirty`).
    pub slabs_freed_total: usize,
}

/// Reads the dirty-page figures.
pub fn dirty_stats() -> DirtyStats {
    DirtyStats {
        dirty: DIRTY.load(Ordering::Relaxed),
        retained: RETAINED.load(Ordering::Relaxed),
        purged_total: PURGED.load(Ordering::Relaxed),
        reused_total: REUSED.load(Ordering::Relaxed),
        span_hits: SPAN_HITS.load(Ordering::Relaxed),
        sweeps: SWEEPS.load(Ordering::Relaxed),
        slabs_freed_total: slabs::SLABS_FREED.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests;
