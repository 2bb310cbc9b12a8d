//! The sampler: which allocations are sampled, and their stacks.
//!
//! ## The countdown (byte-based Poisson sampling, on the slow road only)
//!
//! The profile samples each allocated byte with probability `1/I` (`I` the
//! mean interval, 512 KiB by default): an allocation of `x` bytes is
//! sampled with probability `p(x) = 1 - exp(-x/I)` and then stands for
//! `1/p(x)` allocations and `x/p(x)` bytes (tcmalloc's and jemalloc's
//! estimate; unbiased). Because a Poisson process split into disjoint
//! streams is independent Poisson processes, each thread keeps one
//! countdown per size class and one for large blocks:
//!
//! - **Size classes.** Every allocation of class `c` (usable size `S_c`) is
//!   sampled with probability `p_c = 1 - exp(-S_c/I)`, i.e. the gap to the
//!   next sampled one is geometric: `left = 1 + floor(E * I / S_c)`, `E`
//!   exponential. The fast path does not count: UMA's per-thread cache
//!   counts its hits lazily anyway ([`uma::FastSlot::sample_peek`]), so each
//!   visit of the slow road subtracts the hits since the last visit. While
//!   `left` is at most the items in the thread's alloc bucket (the hits
//!   that can come before the next miss), the sampler sets the cache's
//!   sample gate ([`uma::FastSlot::set_sample_gate`]): every allocation of
//!   the class then misses and is counted here, one by one, until the
//!   sampled one; then the gate is lifted. So the allocation sampled is the
//!   very one the countdown picked, as long as no fast free refilled the
//!   bucket in between: a hit the sampler did not see can then be the
//!   picked one (an *overshoot*, counted in
//!   [`ProfStats::overshoots`](super::ProfStats::overshoots)): its block
//!   and stack are gone, so the next allocation of the class that the
//!   sampler sees stands in for it (beyond 8 owed stand-ins a class's
//!   picked ones are lost, [`ProfStats::lost`](super::ProfStats::lost)),
//!   and a fresh gap is drawn (memoryless: each allocation is picked alone
//!   with the same chance). With `Kmem` every free
//!   of a class is gated while profiling (see `super`), so every refill is
//!   seen and nothing is late. Gated frees only count down the class's
//!   *slack* (`left - cached` at the last visit: pops leave it be, pushes
//!   take one), and look at the countdown when it runs out. The C ABI
//!   gates a thread's frees of a class only while its countdown is within
//!   [`FREE_WINDOW_DIV`]th of the mean gap (plus the items cached) of the
//!   picked allocation and its allocations are not gated yet (once they
//!   are, each one is counted, whatever the frees bring into the bucket):
//!   a loop of frees and allocations that reuses the bucket for longer
//!   than that, from farther away, can still overshoot
//!   (`BSDALLOC_PROF_EXACT=1` gates every free, as `Kmem`).
//! - Gated operations do not take the whole slow road
//!   ([`gated`](super::gated)): they are counted and served from the cache
//!   past the gate, and only the picked allocation goes down the road.
//! - The swap road (a miss that the thread's own free bucket serves,
//!   `fast::alloc_swap`, `fast::free_swap`) is a visit as the slow road's
//!   is ([`alloc_swap_counted`]; a swapped free, [`after_free`]): the
//!   countdown is brought up to date from the hit count (the swap's own
//!   pop is no hit, as the zone's is not) and the gates are set again
//!   from what the swap brought into the alloc bucket, so the picked
//!   allocation is seen as surely as after a slow-road visit. The picked
//!   allocation itself, a stand-in, a class's first visit and a gated
//!   class are left to the slow road.
//! - **Large blocks** (over 32 KiB or over-aligned) always take the slow
//!   road: a byte countdown, exponential gaps.
//!
//! The fast path is untouched: profiling off costs no instruction, and on,
//! a gate bit the fast path tests with the bits it tests already.
//!
//! ## Stacks
//!
//! [`MAX_FRAMES`] return addresses from the cached CFI walk
//! ([`unwind`](super::unwind): each return address's unwind rules are
//! read once, a few loads a frame after that), or from `_Unwind_Backtrace`
//! (libgcc's unwinder, about 2,000 instructions a frame) where a frame is
//! beyond that walk's model; both read the loaded objects' unwind tables
//! and allocate nothing. The allocator's own frames are trimmed when the
//! profile is written.
//! A per-thread flag keeps the sampler from sampling anything it causes
//! itself (and the dump's allocations).
// With `invariants` there is no fast path to gate (no tables): unused.
#![cfg_attr(
    feature = "invariants",
    allow(dead_code, clippy::extra_unused_type_parameters)
)]

use core::cell::Cell;
use core::ptr::NonNull;

use super::sync::{AtomicU64, Ordering};
use super::table::{Sample, MAX_FRAMES, TABLE};
use crate::classes::{CLASS_SIZES, NCLASSES};
use crate::fast::{TlsAccess, TlsDescriptor};
use crate::kernel::Kernel;
use crate::malloc::large_alloc;
use crate::Flags;
use uma::SamplePeek;

/// Per-thread sampler state: `const`-initialised, no destructor (UMA's
/// thread-exit hook is a pthread key; a TLS destructor would allocate).
struct ThreadState {
    /// In the profiler (sampling, or dumping): sample nothing.
    inside: Cell<bool>,
    rng: Cell<u64>,
    /// Allocations of each class until the sampled one (0: not drawn).
    left: [Cell<u64>; NCLASSES],
    /// Fast-path hits of each class at the last visit.
    seen: [Cell<u64>; NCLASSES],
    /// Classes whose allocation gate is set (bit per class).
    armed: Cell<u64>,
    /// Classes whose free gate is set.
    armed_free: Cell<u64>,
    /// Per class, stand-ins owed: picked allocations that were hits the
    /// countdown did not see; the next ones it sees are sampled instead.
    owed: [Cell<u8>; NCLASSES],
    /// Per class, `left - cached` at the last visit: how many more items
    /// gated frees may push into the alloc bucket before the picked
    /// allocation could be a hit (pops take one from each side and leave
    /// it be). A gated free takes one; the countdown is only looked at
    /// again when it runs out ([`after_gated_push`]).
    slack: [Cell<u32>; NCLASSES],
    /// Bytes of large blocks until the next sample (0: not drawn).
    large_left: Cell<u64>,
}

// SAFETY: `Cell`s of integers and of a bool, and arrays of them: all
// zero is the initial state (nothing drawn, no gate set); no destructor.
unsafe impl uma::ZeroInit for ThreadState {}

uma::zeroed_thread_local! {
    /// The calling thread's [`ThreadState`]: a block of the library's
    /// zeroed TLS reached through a TLS descriptor (`uma::tls_block`):
    /// Rust's thread-locals are a `__tls_get_addr` call per access in
    /// `libbsdalloc.so` (the slow road's visits made six of them), and
    /// that call must not be made under a lock.
    fn thread_state: ThreadState = "bsdalloc_prof_thread_v01";
}

const _: () = assert!(NCLASSES <= 64);

/// Counters for [`super::stats`].
pub(crate) static SAMPLES: AtomicU64 = AtomicU64::new(0);
pub(crate) static OVERSHOOTS: AtomicU64 = AtomicU64::new(0);
pub(crate) static LOST: AtomicU64 = AtomicU64::new(0);
pub(crate) static GATED: AtomicU64 = AtomicU64::new(0);

/// Runs `f` with the calling thread marked as inside the profiler; `None`
/// if it already was (or its TLS is gone).
#[inline(always)] // (so that `sampled_alloc`'s stack walk has a frame less)
pub(crate) fn guarded<R>(f: impl FnOnce() -> R) -> Option<R> {
    let entered = thread_state(|t| {
        if t.inside.get() {
            false
        } else {
            t.inside.set(true);
            true
        }
    });
    if !entered {
        return None;
    }
    let r = f();
    thread_state(|t| t.inside.set(false));
    Some(r)
}

/// Where threads' generators start: each thread's first draw takes the
/// next value (a golden-ratio step) and mixes it; [`set_interval`] stirs
/// the clock in when sampling starts. One atomic add a thread, instead of
/// a clock read (a program of many short threads, `mleak`, seeds
/// thousands).
static SEEDS: AtomicU64 = AtomicU64::new(0x2545_f491_4f6c_dd1d);

/// A uniform number in (0, 1] from the thread's xorshift generator.
#[inline(always)]
fn uniform(t: &ThreadState) -> f64 {
    let mut x = t.rng.get();
    if x == 0 {
        x = seed(t);
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    t.rng.set(x);
    ((x >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A thread's first generator state: the shared counter's next value and
/// the thread's block address, through splitmix64's finaliser (distinct
/// counters give unrelated states); never 0.
#[inline(never)]
fn seed(t: &ThreadState) -> u64 {
    let mut z = SEEDS.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ (t as *const ThreadState as u64).rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

/// An exponential number of mean 1.
#[inline(always)]
fn exp1(t: &ThreadState) -> f64 {
    -super::math::ln(uniform(t))
}

/// An exponential gap of mean `interval` bytes (at least 1).
fn exp_bytes(t: &ThreadState, interval: u64) -> u64 {
    let g = exp1(t) * interval as f64;
    (g as u64).max(1)
}

/// Allocations of class `c` until the sampled one: geometric with
/// `p = 1 - exp(-S_c/interval)`, i.e. `1 + floor(E * interval / S_c)`
/// (`E` exponential; the class's mean `interval / S_c` from [`MEANS`]).
#[inline(always)]
fn gap(t: &ThreadState, c: usize) -> u64 {
    let g = exp1(t) * f64::from_bits(MEANS[c].load(Ordering::Relaxed));
    // (`exp1` is below 37 and positive, the mean positive and finite:
    // only the cap keeps the product in range. A saturating `as u64`
    // took 16 instructions.)
    // SAFETY: not NaN (a product of finite numbers), at most 2^62.
    1 + unsafe { g.min(GAP_CAP).to_int_unchecked::<i64>() } as u64
}

/// The largest gap drawn (2^62 allocations: never reached).
const GAP_CAP: f64 = (1u64 << 62) as f64;

/// Allocations one sample of a `size`-byte block stands for.
fn scale_of(size: usize, interval: u64) -> f64 {
    1.0 / -super::math::exp_m1(-(size as f64) / interval as f64)
}

/// With the C ABI's fast frees, a thread's frees of a class are gated
/// while its countdown is within this fraction of the mean gap (plus the
/// items cached) of the picked allocation, until its allocations are:
/// frees that refill the bucket are then seen, and the allocation gate
/// can be set in time.
const FREE_WINDOW_DIV: u64 = 32;

/// Per class, the free window in allocations (`interval / size /
/// FREE_WINDOW_DIV`), set with the interval ([`set_interval`]): no
/// division on the slow road.
static WINDOWS: [AtomicU64; NCLASSES] = [const { AtomicU64::new(0) }; NCLASSES];

/// Per class, the mean gap `interval / S_c` in allocations (bits of an
/// `f64`), set with the interval: the draws need no division.
static MEANS: [AtomicU64; NCLASSES] = [const { AtomicU64::new(0) }; NCLASSES];

/// Per class, the allocations one sample stands for ([`scale_of`], bits of
/// an `f64`), set with the interval: a sample needs no `exp_m1`.
static SCALES: [AtomicU64; NCLASSES] = [const { AtomicU64::new(0) }; NCLASSES];

/// Computes [`WINDOWS`], [`MEANS`] and [`SCALES`] for a new mean interval
/// (before sampling starts with it), and stirs the clock into [`SEEDS`].
pub(crate) fn set_interval(interval: u64) {
    for (c, &size) in CLASS_SIZES.iter().enumerate() {
        WINDOWS[c].store(interval / size as u64 / FREE_WINDOW_DIV, Ordering::Relaxed);
        let mean = interval as f64 / size as f64;
        MEANS[c].store(mean.to_bits(), Ordering::Relaxed);
        SCALES[c].store(scale_of(size, interval).to_bits(), Ordering::Relaxed);
    }
    SEEDS.fetch_xor(
        crate::os::clock_ns(libc::CLOCK_MONOTONIC).rotate_left(29),
        Ordering::Relaxed,
    );
}

#[inline(always)]
fn window(c: usize) -> u64 {
    WINDOWS[c].load(Ordering::Relaxed)
}

/// Whether class `c`, `left` allocations from its picked one, with no gate
/// set and no stand-in owed, needs no gate until its next visit whatever
/// the cache holds: then the visit need not look at the cache again after
/// it moved ([`rearm`] would change nothing but `seen` and the slack).
#[inline(always)]
fn far(t: &ThreadState, c: usize, left: u64) -> bool {
    // With `invariants` there is no fast path: every allocation comes
    // through the zone, whose pop from the thread's cache *is* counted as
    // a hit, so the count seen before it would count this allocation
    // twice (prof_heap's small blocks came out +64%): always the second
    // look there.
    if cfg!(feature = "invariants") {
        return false;
    }
    let bit = 1u64 << c;
    (t.armed.get() | t.armed_free.get()) & bit == 0
        && t.owed[c].get() == 0
        && left > u64::from(uma::MAX_CACHED) + window(c)
}

/// [`rearm`] for a class that is [`far`]: the hit count as seen, and a
/// slack that no cache content can make too large.
#[inline(always)]
fn rearm_far(t: &ThreadState, c: usize, hits: u64, left: u64) {
    t.seen[c].set(hits);
    let slack = left - u64::from(uma::MAX_CACHED);
    t.slack[c].set(slack.min(u64::from(u32::MAX)) as u32);
}

/// Brings class `c`'s countdown up to date with the fast-path hits since
/// the last visit (`peek`, taken now); returns it (allocations until the
/// picked one, counting the next as 1).
#[inline(always)]
fn account(t: &ThreadState, c: usize, peek: Option<SamplePeek>, interval: u64) -> u64 {
    let mut left = t.left[c].get();
    // The first visit only starts counting (the hits before it came
    // before sampling did).
    let first = left == 0;
    if first {
        left = gap(t, c);
    }
    if let Some(p) = peek.filter(|_| !first) {
        let hits = p.hits.saturating_sub(t.seen[c].get());
        if hits >= left {
            left = overshoot(t, c, hits - left, interval);
        } else {
            left -= hits;
        }
    }
    t.left[c].set(left);
    left
}

/// Stand-ins a class may owe at most (a long unseen stretch, e.g. a loop
/// of pairs, must not make the next allocations all samples).
const MAX_OWED: u8 = 8;

/// The picked allocation of class `c` was a hit the countdown did not
/// see, `past` hits before now. Its block and stack are gone; the next
/// allocation of the class that the countdown sees stands in for it (the
/// class owes one, and its allocations are gated until it is paid), so
/// that the class keeps its share of samples: dropping them lost 65% of
/// larson's. So for every picked one among the unseen hits, up to
/// [`MAX_OWED`] owed; the others are lost ([`LOST`], estimated: a loop of
/// pairs that never visits the slow road passes a picked one every mean
/// gap). Returns the allocations until the next picked one, a fresh gap:
/// each allocation is picked alone with the same chance, so the distance
/// from now to the next is geometric whatever came before.
#[cold]
fn overshoot(t: &ThreadState, c: usize, mut past: u64, interval: u64) -> u64 {
    // The profiler's own allocations (a dump's, the leak report's) are
    // never sampled: nothing owed for them.
    let mut counted = t.inside.get();
    while !counted {
        let owed = t.owed[c].get();
        if owed == MAX_OWED {
            let mean = (interval / CLASS_SIZES[c] as u64).max(1);
            LOST.fetch_add(past / mean, Ordering::Relaxed);
            break;
        }
        OVERSHOOTS.fetch_add(1, Ordering::Relaxed);
        t.owed[c].set(owed + 1);
        let g = gap(t, c);
        counted = g > past;
        past = past.saturating_sub(g);
    }
    gap(t, c)
}

/// After a visit (`peek` taken after it): remembers the hit count, gates
/// the thread's allocations of class `c` exactly while the picked one
/// could otherwise be a hit (`left <= cached`), and (C ABI) its frees
/// while it is near and the allocations are not gated.
fn rearm(t: &ThreadState, c: usize, slot: uma::FastSlot, peek: SamplePeek) {
    t.seen[c].set(peek.hits);
    let left = t.left[c].get();
    let cached = u64::from(peek.cached);
    let bit = 1u64 << c;
    let owed = t.owed[c].get() != 0;
    let alloc = left <= cached || owed;
    let slack = if owed { 0 } else { left.saturating_sub(cached) };
    t.slack[c].set(slack.min(u64::from(u32::MAX)) as u32);
    // (Once the allocations are gated, each is counted whatever the frees
    // bring: the frees need not be seen.)
    let free = !super::all_frees_gated() && !alloc && left <= cached + window(c);
    let (was_a, was_f) = (t.armed.get() & bit != 0, t.armed_free.get() & bit != 0);
    if (alloc, free) != (was_a, was_f) {
        t.armed
            .set(t.armed.get() & !bit | if alloc { bit } else { 0 });
        t.armed_free
            .set(t.armed_free.get() & !bit | if free { bit } else { 0 });
        if alloc && !was_a {
            GATED.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the slot of a class zone, never destroyed.
        unsafe { slot.set_sample_gate(alloc, free) };
    }
}

/// A size-class allocation on the slow road while profiling (see the
/// module doc): the sampled one is a page block of its own (so that
/// `free(p)` finds it by its page); the others come from the class zone.
pub(crate) fn alloc_class(
    k: &Kernel,
    c: usize,
    size: usize,
    align: usize,
    flags: Flags,
    interval: u64,
) -> Option<NonNull<u8>> {
    let slot = crate::kernel::class_zone(k, c)?.fast_slot();
    thread_state(|t| alloc_class_in(t, k, c, slot, size, align, flags, interval))
}

/// [`alloc_class`] with the thread's state (reached once: it stays the
/// thread's across the zone's allocation).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn alloc_class_in(
    t: &ThreadState,
    k: &Kernel,
    c: usize,
    slot: uma::FastSlot,
    size: usize,
    align: usize,
    flags: Flags,
    interval: u64,
) -> Option<NonNull<u8>> {
    // A class's first visit in a thread only starts its countdown (the
    // hits before it came before sampling did): no look at the cache
    // before the zone's allocation (which may create it), one after.
    let peek = if t.left[c].get() == 0 {
        None
    } else {
        // SAFETY: the slot of a class zone, never destroyed.
        unsafe { slot.sample_peek::<TlsDescriptor>() }
    };
    let left = account(t, c, peek, interval);
    let owed = t.owed[c].get();
    // The profiler's own allocations are counted (they move the cache)
    // but never sampled.
    let picked = (left == 1 || owed != 0) && !t.inside.get();
    if picked {
        if left == 1 {
            t.left[c].set(gap(t, c));
            // (With a stand-in owed too: it waits for the next one.)
        } else {
            t.left[c].set(left - 1);
            t.owed[c].set(owed - 1);
        }
        let p = alloc_picked(k, c, size, align, flags);
        second_look(t, c, slot);
        return p;
    }
    t.left[c].set(left - 1);
    // Far from the picked one: the zone's refill cannot bring it within
    // reach before the next visit (the zone's own pop is no hit: the
    // count stays as seen now).
    let far_off = match peek {
        Some(p) if far(t, c, left - 1) => {
            rearm_far(t, c, p.hits, left - 1);
            true
        }
        _ => false,
    };
    let p = crate::fast::class_alloc(k, c, flags)?;
    if !far_off {
        second_look(t, c, slot);
    }
    Some(p)
}

/// The look after the zone's allocation: [`look`] at the cache now.
#[inline(always)]
fn second_look(t: &ThreadState, c: usize, slot: uma::FastSlot) {
    // SAFETY: the slot of a class zone, never destroyed.
    if let Some(peek) = unsafe { slot.sample_peek::<TlsDescriptor>() } {
        look(t, c, slot, peek);
    }
}

/// The second look of a visit, after the zone's allocation (`peek` taken
/// after it; the countdown up to date): [`rearm_far`] when the class is
/// [`far`], else [`rearm`].
#[inline(always)]
fn look(t: &ThreadState, c: usize, slot: uma::FastSlot, peek: SamplePeek) {
    let left = t.left[c].get();
    if far(t, c, left) {
        rearm_far(t, c, peek.hits, left);
    } else {
        rearm(t, c, slot, peek);
    }
}

/// The picked allocation of class `c`: a sampled block. Out of line, so
/// that the visits that sample nothing (all but one in a mean gap) carry
/// none of its code.
#[cold]
#[inline(never)]
fn alloc_picked(
    k: &Kernel,
    c: usize,
    size: usize,
    align: usize,
    flags: Flags,
) -> Option<NonNull<u8>> {
    let scale = f64::from_bits(SCALES[c].load(Ordering::Relaxed));
    sampled_alloc(k, size, align, flags, scale)
}

/// Whether any class's allocation gate is set in this thread: else a
/// miss of the fast path is a plain miss, which the slow road counts (one
/// thread-local load, before the class is looked up).
#[inline(always)]
pub(crate) fn any_alloc_gate() -> bool {
    thread_state(|t| t.armed.get() != 0)
}

/// Whether class `c`'s free gate is set in this thread.
#[inline(always)]
pub(crate) fn free_gate(c: usize) -> bool {
    thread_state(|t| t.armed_free.get() & 1 << c != 0)
}

/// Whether any class's free gate is set in this thread (a free that
/// missed the fast path for want of room needs no gated road).
#[inline(always)]
pub(crate) fn any_free_gate() -> bool {
    thread_state(|t| t.armed_free.get() != 0)
}

/// A gated allocation of class `c` counted and popped past the gate
/// ([`gated`](super::gated)); `None` (the countdown as it was, but up to
/// date) when it is the picked one or the cache is empty.
pub(crate) fn alloc_counted<A: TlsAccess>(
    c: usize,
    slot: uma::FastSlot,
    interval: u64,
) -> Option<NonNull<u8>> {
    thread_state(|t| alloc_counted_in::<A>(t, c, slot, interval))
}

/// [`alloc_counted`] with the thread's state.
#[inline(always)]
fn alloc_counted_in<A: TlsAccess>(
    t: &ThreadState,
    c: usize,
    slot: uma::FastSlot,
    interval: u64,
) -> Option<NonNull<u8>> {
    {
        let left = t.left[c].get();
        let bit = 1u64 << c;
        // Without the allocation gate the fast path missed for want of
        // items (or a drainer): the slow road's visit counts it.
        if left == 0 || t.armed.get() & bit == 0 {
            return None;
        }
        if t.owed[c].get() == 0 {
            // The allocation gate set since the last visit: every
            // allocation of the class in this thread came here, so there
            // are no hits to count, and the gate stays as it is (`left`
            // and the bucket lose one each; frees, seen or not, only add
            // items before the picked one); just count it.
            if left <= 1 {
                return None;
            }
            // SAFETY: the slot of a class zone, never destroyed.
            let p = unsafe { slot.alloc_ungated_via::<A>() }?;
            t.left[c].set(left - 1);
            // The pop is a hit the next look counts.
            t.seen[c].set(t.seen[c].get() + 1);
            return Some(p);
        }
        // SAFETY: the slot of a class zone, never destroyed.
        let peek = unsafe { slot.sample_peek::<A>() }?;
        let left = account(t, c, Some(peek), interval);
        t.seen[c].set(peek.hits);
        if left <= 1 || peek.cached == 0 || t.owed[c].get() != 0 {
            return None;
        }
        // SAFETY: as above.
        let p = unsafe { slot.alloc_ungated_via::<A>() }?;
        t.left[c].set(left - 1);
        // The pop is a hit the next look counts: the state after it.
        let after = SamplePeek {
            hits: peek.hits + 1,
            cached: peek.cached - 1,
        };
        rearm(t, c, slot, after);
        Some(p)
    }
}

/// A miss of class `c`'s fast path while profiling, served by the swap
/// road if the thread's free bucket has items: the visit the slow road
/// would make, with the swap for the zone's allocation (see
/// [`alloc_class_in`]: the countdown brought up to date from the hit
/// count, which the swap's pop leaves as it is, and the gates set again
/// from what the swap brought into the alloc bucket). `None` (the
/// countdown up to date, nothing else done) when the slow road must do
/// it: the class's first visit, a gate set, the picked allocation or a
/// stand-in owed, inside the profiler, or nothing to swap in.
pub(crate) fn alloc_swap_counted<A: TlsAccess>(
    c: usize,
    slot: uma::FastSlot,
    interval: u64,
) -> Option<NonNull<u8>> {
    thread_state(|t| {
        if t.armed.get() & 1 << c != 0 {
            // The fast path missed for the gate (the swap refuses it):
            // the gated road's count, in the same visit.
            return alloc_counted_in::<A>(t, c, slot, interval);
        }
        if t.left[c].get() == 0 || t.inside.get() {
            return None;
        }
        // SAFETY: the slot of a class zone, never destroyed.
        let peek = unsafe { slot.sample_peek::<A>() }?;
        let left = account(t, c, Some(peek), interval);
        t.seen[c].set(peek.hits);
        if left <= 1 || t.owed[c].get() != 0 {
            return None;
        }
        // SAFETY: as above.
        let p = unsafe { slot.alloc_swap_via::<A>() }?;
        t.left[c].set(left - 1);
        if far(t, c, left - 1) {
            rearm_far(t, c, peek.hits, left - 1);
        } else {
            second_look(t, c, slot);
        }
        Some(p)
    })
}

/// After a gated free of class `c` that pushed its item into the thread's
/// alloc bucket: one less in the class's slack; only when it runs out
/// (the picked allocation may now be among the cached items), the
/// countdown and the gates again ([`after_free`]). Pops take one from the
/// countdown and one from the bucket, so they leave the slack as it is;
/// only pushes (all of them seen, since this thread's frees of the class
/// are gated) and the slow road, which recomputes it, change it.
#[inline]
pub(crate) fn after_gated_push<A: TlsAccess>(c: usize, slot: uma::FastSlot, interval: u64) {
    thread_state(|t| {
        let s = t.slack[c].get();
        // With the allocation gate set already, a push only brings more
        // items before the picked allocation: nothing to change.
        if s > 1 {
            t.slack[c].set(s - 1);
        } else if t.armed.get() & 1 << c == 0 {
            after_free_in::<A>(t, c, slot, interval);
        }
    });
}

/// After a free of class `c` on the slow road (which may have moved the
/// thread's buckets): the countdown and the gates again, so that a bucket
/// refilled by frees cannot hide the picked allocation. `A` reaches the
/// thread's caches as the front door does.
pub(crate) fn after_free<A: TlsAccess>(c: usize, slot: uma::FastSlot, interval: u64) {
    thread_state(|t| after_free_in::<A>(t, c, slot, interval));
}

fn after_free_in<A: TlsAccess>(t: &ThreadState, c: usize, slot: uma::FastSlot, interval: u64) {
    {
        if t.left[c].get() == 0 {
            // Not counting this class yet: nothing to look at until the
            // slow road starts the countdown (and sets the slack).
            t.slack[c].set(u32::MAX);
            return;
        }
        // SAFETY: the slot of a class zone, never destroyed.
        let Some(peek) = (unsafe { slot.sample_peek::<A>() }) else {
            return;
        };
        account(t, c, Some(peek), interval);
        look(t, c, slot, peek);
    }
}

/// A large allocation while profiling: a byte countdown.
pub(crate) fn alloc_large(
    k: &Kernel,
    size: usize,
    align: usize,
    flags: Flags,
    interval: u64,
) -> Option<NonNull<u8>> {
    let picked = thread_state(|t| {
        if t.inside.get() {
            return false;
        }
        let mut left = t.large_left.get();
        if left == 0 {
            left = exp_bytes(t, interval);
        }
        let x = size.max(1) as u64;
        if x >= left {
            t.large_left.set(exp_bytes(t, interval));
            true
        } else {
            t.large_left.set(left - x);
            false
        }
    });
    if picked {
        let scale = scale_of(size.max(1), interval);
        sampled_alloc(k, size, align, flags, scale)
    } else {
        large_alloc(k, size, align, flags)
    }
}

/// Allocates a sampled block (whole pages) and records it with the
/// calling thread's stack.
#[inline(always)] // one frame less to unwind: each costs about 2,000 instructions
fn sampled_alloc(
    k: &Kernel,
    size: usize,
    align: usize,
    flags: Flags,
    scale: f64,
) -> Option<NonNull<u8>> {
    let p = large_alloc(k, size, align, flags)?;
    let mut s = Sample {
        addr: p.as_ptr() as usize,
        size,
        scale,
        depth: 0,
        stack: [0; MAX_FRAMES],
    };
    let _ = guarded(|| {
        s.depth = super::stack::capture(&mut s.stack) as u32;
        if TABLE.insert(&s) {
            SAMPLES.fetch_add(1, Ordering::Relaxed);
        }
    });
    Some(p)
}
