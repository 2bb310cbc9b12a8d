//! The range allocators compared in `benches/compare.rs` and
//! `examples/compare.rs`, behind one small trait, and the workloads of
//! issue 19: random sizes of 1..=1024 units (log-uniform) with a steady
//! number of live segments (each step frees a random live segment and
//! allocates a new one), IDs (size 1, next fit where the allocator has it),
//! and the fill at the first failure.

#![allow(dead_code)]

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::ptr::NonNull;

/// One allocator under test. `alloc` returns a handle that `free` takes back.
pub trait RangeAlloc {
    type Handle;
    fn alloc(&mut self, size: u32) -> Option<Self::Handle>;
    fn free(&mut self, h: Self::Handle);
}

/// Which allocator, and for the vmem ones which policy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    OursInstant,
    OursBest,
    OursNext,
    /// Ours freeing by handle ([`vmem::Arena::alloc_handle`]), as
    /// offset-allocator does.
    OursInstantHandle,
    OursBestHandle,
    /// [`vmem::LocalArena`], by handle, instant fit: one thread at a time,
    /// its common case without the lock.
    OursLocalHandle,
    Offset,
    Vmem1Instant,
    Vmem1Best,
    Vmem1Next,
    Range,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::OursInstant => "our vmem, instant fit",
            Kind::OursBest => "our vmem, best fit",
            Kind::OursNext => "our vmem, next fit",
            Kind::OursInstantHandle => "our vmem, instant fit, by handle",
            Kind::OursBestHandle => "our vmem, best fit, by handle",
            Kind::OursLocalHandle => "our vmem, instant fit, by handle, LocalArena (one thread)",
            Kind::Offset => "offset-allocator (not thread-safe)",
            Kind::Vmem1Instant => "vmem 1.0, instant fit",
            Kind::Vmem1Best => "vmem 1.0, best fit",
            Kind::Vmem1Next => "vmem 1.0, next fit",
            Kind::Range => "range-alloc (not thread-safe)",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Kind::OursInstant => "ours_instant",
            Kind::OursBest => "ours_best",
            Kind::OursNext => "ours_next",
            Kind::OursInstantHandle => "ours_instant_handle",
            Kind::OursBestHandle => "ours_best_handle",
            Kind::OursLocalHandle => "ours_local_handle",
            Kind::Offset => "offset_allocator",
            Kind::Vmem1Instant => "vmem1_instant",
            Kind::Vmem1Best => "vmem1_best",
            Kind::Vmem1Next => "vmem1_next",
            Kind::Range => "range_alloc",
        }
    }
}

/// Where every space starts (not 0, so no allocator special-cases it).
pub const BASE: usize = 1 << 20;

// ---- our vmem

pub struct Ours {
    arena: vmem::Arena<'static>,
    flags: vmem::Flags,
}

impl Ours {
    pub fn new(space: usize, flags: vmem::Flags) -> Self {
        let arena = vmem::Arena::builder("compare")
            .span(BASE, space)
            .build()
            .unwrap();
        Ours {
            arena,
            flags: flags | vmem::Flags::NOWAIT,
        }
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        // Live segments at the end of a run are not a leak worth a report.
        let arena = std::mem::replace(
            &mut self.arena,
            vmem::Arena::builder("empty").build().unwrap(),
        );
        std::mem::forget(arena);
    }
}

impl RangeAlloc for Ours {
    type Handle = (usize, u32);
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<(usize, u32)> {
        self.arena
            .alloc(size as usize, self.flags)
            .ok()
            .map(|a| (a, size))
    }
    #[inline]
    fn free(&mut self, (addr, size): (usize, u32)) {
        self.arena.free(addr, size as usize).unwrap();
    }
}

/// What the by-handle harness needs of an arena: [`vmem::Arena`] itself,
/// or a [`vmem::LocalArena`] around it.
pub trait HandleArena: Sized + 'static {
    fn wrap(arena: vmem::Arena<'static>) -> Self;
    fn alloc_h(&'static self, size: usize, flags: vmem::Flags)
        -> Option<vmem::Allocation<'static>>;
    fn free_h(&'static self, h: vmem::Allocation<'static>);
}

/// `HandleArena` for an arena type with `alloc_handle` and `free_handle`
/// (the same calls on both), built from an `Arena` by `$wrap`.
macro_rules! handle_arena {
    ($ty:ty, $wrap:expr) => {
        impl HandleArena for $ty {
            fn wrap(arena: vmem::Arena<'static>) -> Self {
                $wrap(arena)
            }
            #[inline]
            fn alloc_h(
                &'static self,
                size: usize,
                flags: vmem::Flags,
            ) -> Option<vmem::Allocation<'static>> {
                self.alloc_handle(size, flags).ok()
            }
            #[inline]
            fn free_h(&'static self, h: vmem::Allocation<'static>) {
                self.free_handle(h).unwrap();
            }
        }
    };
}

handle_arena!(vmem::Arena<'static>, |a| a);
handle_arena!(vmem::LocalArena<'static>, vmem::LocalArena::new);

/// Ours, freeing by handle. The handles borrow the arena, so the arena is
/// leaked (a run's arenas live as long as the process anyway).
pub struct ByHandle<A: HandleArena> {
    arena: &'static A,
    flags: vmem::Flags,
}

/// By handle through the thread-safe arena.
pub type OursHandle = ByHandle<vmem::Arena<'static>>;
/// By handle through a [`vmem::LocalArena`].
pub type OursLocal = ByHandle<vmem::LocalArena<'static>>;

impl<A: HandleArena> ByHandle<A> {
    pub fn new(space: usize, flags: vmem::Flags) -> Self {
        let arena = vmem::Arena::builder("compare")
            .span(BASE, space)
            .build()
            .unwrap();
        ByHandle {
            arena: Box::leak(Box::new(A::wrap(arena))),
            flags: flags | vmem::Flags::NOWAIT,
        }
    }
}

impl<A: HandleArena> RangeAlloc for ByHandle<A> {
    type Handle = vmem::Allocation<'static>;
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<Self::Handle> {
        self.arena.alloc_h(size as usize, self.flags)
    }
    #[inline]
    fn free(&mut self, h: Self::Handle) {
        self.arena.free_h(h);
    }
}

// ---- offset-allocator

pub struct Offset(offset_allocator::Allocator);

impl Offset {
    pub fn new(space: usize, max_live: usize) -> Self {
        let nodes = (2 * max_live + 1024).min(u32::MAX as usize - 2) as u32;
        Offset(offset_allocator::Allocator::with_max_allocs(
            space as u32,
            nodes,
        ))
    }
}

impl RangeAlloc for Offset {
    type Handle = offset_allocator::Allocation;
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<Self::Handle> {
        self.0.allocate(size)
    }
    #[inline]
    fn free(&mut self, h: Self::Handle) {
        self.0.free(h)
    }
}

// ---- range-alloc

pub struct Range(range_alloc::RangeAllocator<usize>);

impl Range {
    pub fn new(space: usize) -> Self {
        Range(range_alloc::RangeAllocator::new(BASE..BASE + space))
    }
}

impl RangeAlloc for Range {
    type Handle = (usize, u32);
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<(usize, u32)> {
        self.0
            .allocate_range(size as usize)
            .ok()
            .map(|r| (r.start, size))
    }
    #[inline]
    fn free(&mut self, (start, size): (usize, u32)) {
        self.0.free_range(start..start + size as usize)
    }
}

// ---- vmem 1.0

/// Boundary tags for vmem 1.0, from the global allocator (its crate leaves
/// the tag allocator to the user; this is the simplest a new user writes).
#[derive(Default)]
pub struct BoxTags;

// SAFETY: every tag is a fresh global-allocator block of the tag's layout,
// freed with the same layout.
unsafe impl vmem1::Allocator for BoxTags {
    fn allocate(&self) -> Option<NonNull<vmem1::Bt>> {
        let layout = std::alloc::Layout::new::<vmem1::Bt>();
        // SAFETY: the layout has a non-zero size.
        NonNull::new(unsafe { std::alloc::alloc(layout) }.cast())
    }
    unsafe fn deallocate(&self, ptr: NonNull<vmem1::Bt>) {
        let layout = std::alloc::Layout::new::<vmem1::Bt>();
        // SAFETY: allocated by `allocate` above with this layout.
        unsafe { std::alloc::dealloc(ptr.as_ptr().cast(), layout) }
    }
}

/// vmem 1.0 does not merge a freed segment with both neighbours (after
/// merging with the previous one it tests the next one against the old
/// start), so its free space splinters: in the steady states it runs in a
/// space [`VMEM1_SPACE`] times larger than the others, else it fails with
/// most of the space free.
pub const VMEM1_SPACE: usize = 16;

pub struct Vmem1 {
    arena: vmem1::Arena<'static, 'static, BoxTags, std::sync::Mutex<()>>,
    policy: vmem1::AllocPolicy,
}

impl Vmem1 {
    pub fn new(space: usize, policy: vmem1::AllocPolicy) -> Self {
        let arena = vmem1::Arena::create("compare", 1, None, BoxTags).unwrap();
        arena.add_span(BASE, space).unwrap();
        Vmem1 { arena, policy }
    }
}

impl RangeAlloc for Vmem1 {
    type Handle = usize;
    #[inline]
    fn alloc(&mut self, size: u32) -> Option<usize> {
        // vmem 1.0's instant fit fails when no list head is sure to be
        // large enough; retry as best fit, as FreeBSD (and ours) does.
        self.arena
            .alloc(size as usize, self.policy)
            .or_else(|_| self.arena.alloc(size as usize, vmem1::AllocPolicy::BestFit))
            .ok()
    }
    #[inline]
    fn free(&mut self, addr: usize) {
        self.arena.free(addr).unwrap()
    }
}

// ---- workloads

/// A size of 1..=1024 units, log-uniform.
#[inline]
pub fn log_uniform(rng: &mut SmallRng) -> u32 {
    let x: f64 = rng.gen_range(0.0..(1025f64).ln());
    (x.exp() as u32).clamp(1, 1024)
}

/// The space for `live` random-size segments: about 3.5 times what they
/// hold on average (mean size ~148 units), at least 2^16 units.
pub fn random_space(live: usize) -> usize {
    (live * 512).max(1 << 16)
}

/// The space for `live` IDs: twice as many.
pub fn id_space(live: usize) -> usize {
    (2 * live).max(1024)
}

/// A steady state of `live` segments, and the step that keeps it.
pub struct Steady<A: RangeAlloc> {
    pub alloc: A,
    /// Allocations that failed (vmem 1.0 only, see [`VMEM1_SPACE`]): each
    /// leaves one live segment fewer.
    pub failures: usize,
    live: Vec<A::Handle>,
    rng: SmallRng,
    ids: bool,
}

impl<A: RangeAlloc> Steady<A> {
    /// Fills `alloc` with `live` segments (random sizes, or size 1 for IDs).
    pub fn new(mut alloc: A, live: usize, ids: bool, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut v = Vec::with_capacity(live);
        for _ in 0..live {
            let size = if ids { 1 } else { log_uniform(&mut rng) };
            v.push(alloc.alloc(size).expect("space for the steady state"));
        }
        // Churn a little so the free space is fragmented like a steady state.
        let mut s = Steady {
            alloc,
            live: v,
            rng,
            ids,
            failures: 0,
        };
        for _ in 0..live.min(200_000) {
            s.step();
        }
        s
    }

    /// Frees a random live segment and allocates a new one in its place.
    #[inline]
    pub fn step(&mut self) {
        let i = self.rng.gen_range(0..self.live.len());
        let size = if self.ids {
            1
        } else {
            log_uniform(&mut self.rng)
        };
        // Handles need not be `Copy` (ours by handle is not), but none
        // needs dropping: move the one at `i` out and the new one in, as
        // an assignment of a `Copy` handle would.
        const { assert!(!std::mem::needs_drop::<A::Handle>()) };
        // SAFETY: `i` is in bounds; slot `i` is overwritten or removed
        // (and forgotten) below before anyone reads it again, and a panic
        // in between leaves a stale copy of a handle with no `Drop`.
        let old = unsafe { std::ptr::read(&self.live[i]) };
        self.alloc.free(old);
        match self.alloc.alloc(size) {
            // SAFETY: slot `i` was moved out above; this refills it.
            Some(h) => unsafe { std::ptr::write(&mut self.live[i], h) },
            None => {
                self.failures += 1;
                std::mem::forget(self.live.swap_remove(i));
                assert!(!self.live.is_empty(), "every allocation failed");
            }
        }
    }

    /// Runs `steps` steps and returns the nanoseconds per step.
    pub fn time(&mut self, steps: usize) -> f64 {
        let t = std::time::Instant::now();
        for _ in 0..steps {
            self.step();
        }
        t.elapsed().as_nanos() as f64 / steps as f64
    }
}

/// The fraction of a `space`-unit space in use at the first failed
/// allocation, with random sizes and a random free every other step.
pub fn fill_at_failure<A: RangeAlloc>(mut alloc: A, space: usize, seed: u64) -> f64 {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut live: Vec<(A::Handle, u32)> = Vec::new();
    let mut used = 0usize;
    let mut step = 0u64;
    loop {
        step += 1;
        if step % 2 == 0 && !live.is_empty() {
            let i = rng.gen_range(0..live.len());
            let (h, s) = live.swap_remove(i);
            alloc.free(h);
            used -= s as usize;
        }
        let size = log_uniform(&mut rng);
        match alloc.alloc(size) {
            Some(h) => {
                live.push((h, size));
                used += size as usize;
            }
            None => return used as f64 / space as f64,
        }
    }
}

/// A steady state of allocator `kind` with `live` segments (random sizes,
/// or IDs), type-erased at the workload level only (the step is
/// monomorphised per allocator).
pub fn steady(kind: Kind, live: usize, ids: bool, seed: u64) -> Box<dyn Stepper> {
    use vmem::Flags;
    let space = if ids {
        id_space(live)
    } else {
        random_space(live)
    };
    match kind {
        Kind::OursInstant => Box::new(Steady::new(
            Ours::new(space, Flags::INSTANTFIT),
            live,
            ids,
            seed,
        )),
        Kind::OursBest => Box::new(Steady::new(
            Ours::new(space, Flags::BESTFIT),
            live,
            ids,
            seed,
        )),
        Kind::OursNext => Box::new(Steady::new(
            Ours::new(space, Flags::NEXTFIT),
            live,
            ids,
            seed,
        )),
        Kind::OursInstantHandle => Box::new(Steady::new(
            OursHandle::new(space, Flags::INSTANTFIT),
            live,
            ids,
            seed,
        )),
        Kind::OursBestHandle => Box::new(Steady::new(
            OursHandle::new(space, Flags::BESTFIT),
            live,
            ids,
            seed,
        )),
        Kind::OursLocalHandle => Box::new(Steady::new(
            OursLocal::new(space, Flags::INSTANTFIT),
            live,
            ids,
            seed,
        )),
        Kind::Offset => Box::new(Steady::new(Offset::new(space, live), live, ids, seed)),
        Kind::Vmem1Instant => Box::new(Steady::new(
            Vmem1::new(space * VMEM1_SPACE, vmem1::AllocPolicy::InstantFit),
            live,
            ids,
            seed,
        )),
        Kind::Vmem1Best => Box::new(Steady::new(
            Vmem1::new(space * VMEM1_SPACE, vmem1::AllocPolicy::BestFit),
            live,
            ids,
            seed,
        )),
        Kind::Vmem1Next => Box::new(Steady::new(
            Vmem1::new(space * VMEM1_SPACE, vmem1::AllocPolicy::NextFit),
            live,
            ids,
            seed,
        )),
        Kind::Range => Box::new(Steady::new(Range::new(space), live, ids, seed)),
    }
}

/// The fill at the first failure of allocator `kind` over `space` units.
pub fn fill(kind: Kind, space: usize, seed: u64) -> f64 {
    use vmem::Flags;
    match kind {
        Kind::OursInstant => fill_at_failure(Ours::new(space, Flags::INSTANTFIT), space, seed),
        Kind::OursBest => fill_at_failure(Ours::new(space, Flags::BESTFIT), space, seed),
        Kind::OursNext => fill_at_failure(Ours::new(space, Flags::NEXTFIT), space, seed),
        Kind::OursInstantHandle => {
            fill_at_failure(OursHandle::new(space, Flags::INSTANTFIT), space, seed)
        }
        Kind::OursBestHandle => {
            fill_at_failure(OursHandle::new(space, Flags::BESTFIT), space, seed)
        }
        Kind::OursLocalHandle => {
            fill_at_failure(OursLocal::new(space, Flags::INSTANTFIT), space, seed)
        }
        Kind::Offset => fill_at_failure(Offset::new(space, space / 16), space, seed),
        Kind::Vmem1Instant => fill_at_failure(
            Vmem1::new(space, vmem1::AllocPolicy::InstantFit),
            space,
            seed,
        ),
        Kind::Vmem1Best => {
            fill_at_failure(Vmem1::new(space, vmem1::AllocPolicy::BestFit), space, seed)
        }
        Kind::Vmem1Next => {
            fill_at_failure(Vmem1::new(space, vmem1::AllocPolicy::NextFit), space, seed)
        }
        Kind::Range => fill_at_failure(Range::new(space), space, seed),
    }
}

/// A steady state under way.
pub trait Stepper {
    fn step(&mut self);
    fn time(&mut self, steps: usize) -> f64;
    fn failures(&self) -> usize;
}

impl<A: RangeAlloc> Stepper for Steady<A> {
    #[inline]
    fn step(&mut self) {
        Steady::step(self)
    }
    fn time(&mut self, steps: usize) -> f64 {
        Steady::time(self, steps)
    }
    fn failures(&self) -> usize {
        self.failures
    }
}
