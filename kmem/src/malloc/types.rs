//! Malloc types (FreeBSD `MALLOC_DEFINE`): per-type statistics in
//! per-CPU-ish stripes, and `vmstat -m`.

use super::*;

pub(super) const NSTRIPES: usize = 8;

pub(super) struct Stripe {
    allocs: AtomicU64,
    frees: AtomicU64,
    bytes_alloc: AtomicU64,
    bytes_freed: AtomicU64,
    /// Bit `c` for size class `c` used, bit 63 for large blocks.
    sizes: AtomicU64,
}

impl Stripe {
    const fn new() -> Self {
        Stripe {
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            bytes_alloc: AtomicU64::new(0),
            bytes_freed: AtomicU64::new(0),
            sizes: AtomicU64::new(0),
        }
    }
}

/// A malloc type (FreeBSD `struct malloc_type`, declared with
/// `MALLOC_DEFINE`): a name that allocations are accounted to. Declare one
/// with [`malloc_define!`](crate::malloc_define) or
/// `static M_FOO: MallocType = MallocType::new("foo", "what it is");`.
///
/// Statistics are kept in striped counters (one stripe per thread, modulo
/// the stripe count) and summed when read; a block counts its usable size
/// (with `invariants`, the type tag's 8 bytes included).
///
/// The type given to [`free`], [`zfree`], [`realloc`] and [`reallocf`]:
/// without the `invariants` feature it is trusted, for accounting only (a
/// wrong type skews that type's figures but cannot corrupt memory: the
/// pointer itself is validated). With `invariants` every malloc(9) block
/// carries its type's tag, and a wrong type is reported
/// ([`ReportKind::WrongType`](crate::ReportKind::WrongType), naming both
/// types) and the call dropped. See the module doc on type tags.
pub struct MallocType {
    pub(super) name: &'static str,
    desc: &'static str,
    /// One cache-line pair each (`CachePadded`: 128 bytes on x86-64, where
    /// the adjacent-line prefetcher pairs lines), so threads on different
    /// stripes never share one.
    stripes: [CachePadded<Stripe>; NSTRIPES],
    next: AtomicPtr<MallocType>,
    linked: AtomicU8,
}

impl fmt::Debug for MallocType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MallocType")
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Declares a static [`MallocType`] (FreeBSD `MALLOC_DEFINE`).
///
/// ```
/// kmem::malloc_define!(M_DEMO, "demo", "documentation example");
/// let p = kmem::malloc(100, &M_DEMO, kmem::Flags::WAITOK).unwrap();
/// unsafe { kmem::free(p.as_ptr(), &M_DEMO) };
/// assert_eq!(M_DEMO.stats().in_use, 0);
/// ```
#[macro_export]
macro_rules! malloc_define {
    ($vis:vis $name:ident, $short:expr, $desc:expr) => {
        $vis static $name: $crate::MallocType = $crate::MallocType::new($short, $desc);
    };
}

/// Totals of one malloc type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MallocTypeStats {
    /// Allocations not yet freed.
    pub in_use: u64,
    /// Bytes (usable sizes) not yet freed.
    pub bytes: u64,
    /// Allocation requests.
    pub requests: u64,
    /// Bit `c` set if size class `c` was used; bit 63 for large blocks.
    pub sizes: u64,
}

pub(super) static TYPES: AtomicPtr<MallocType> = AtomicPtr::new(ptr::null_mut());
pub(super) static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

uma::zeroed_thread_local! {
    /// The calling thread's statistics stripe plus one (0: none yet).
    fn stripe: core::cell::Cell<u8> = "bsdalloc_kmem_malloc_stripe_v01";
}

#[inline]
pub(super) fn stripe_index() -> usize {
    stripe(|s| {
        let mut i = s.get();
        if i == 0 {
            i = (NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % NSTRIPES) as u8 + 1;
            s.set(i);
        }
        i as usize - 1
    })
}

impl MallocType {
    /// A new type; `name` is the `vmstat -m` column, `desc` a description.
    pub const fn new(name: &'static str, desc: &'static str) -> Self {
        MallocType {
            name,
            desc,
            stripes: [const { CachePadded::new(Stripe::new()) }; NSTRIPES],
            next: AtomicPtr::new(ptr::null_mut()),
            linked: AtomicU8::new(0),
        }
    }

    /// The short name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The description.
    pub fn description(&self) -> &'static str {
        self.desc
    }

    /// Links the type into the list `vmstat -m` walks, on first use.
    #[inline]
    fn link(&'static self) {
        if self.linked.load(Ordering::Acquire) == 2 {
            return;
        }
        self.link_slow();
    }

    #[cold]
    fn link_slow(&'static self) {
        if self
            .linked
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            let backoff = Backoff::new();
            while self.linked.load(Ordering::Acquire) != 2 {
                backoff.snooze();
            }
            return;
        }
        let me = self as *const MallocType as *mut MallocType;
        let mut head = TYPES.load(Ordering::Acquire);
        loop {
            self.next.store(head, Ordering::Relaxed);
            match TYPES.compare_exchange(head, me, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
        self.linked.store(2, Ordering::Release);
    }

    pub(super) fn account_alloc(&'static self, owner: Owner) {
        self.link();
        let s = &self.stripes[stripe_index()];
        s.allocs.fetch_add(1, Ordering::Relaxed);
        s.bytes_alloc
            .fetch_add(owner.size() as u64, Ordering::Relaxed);
        let bit = match owner {
            Owner::Class(c) => 1u64 << c,
            Owner::Large(_) => 1u64 << 63,
        };
        if s.sizes.load(Ordering::Relaxed) & bit == 0 {
            s.sizes.fetch_or(bit, Ordering::Relaxed);
        }
    }

    pub(super) fn account_free(&'static self, owner: Owner) {
        let s = &self.stripes[stripe_index()];
        s.frees.fetch_add(1, Ordering::Relaxed);
        s.bytes_freed
            .fetch_add(owner.size() as u64, Ordering::Relaxed);
    }

    /// The type's totals (a sum over stripes; consistent when quiescent).
    pub fn stats(&self) -> MallocTypeStats {
        let mut t = MallocTypeStats::default();
        let (mut allocs, mut frees, mut ba, mut bf) = (0u64, 0u64, 0u64, 0u64);
        for s in &self.stripes {
            allocs = allocs.wrapping_add(s.allocs.load(Ordering::Relaxed));
            frees = frees.wrapping_add(s.frees.load(Ordering::Relaxed));
            ba = ba.wrapping_add(s.bytes_alloc.load(Ordering::Relaxed));
            bf = bf.wrapping_add(s.bytes_freed.load(Ordering::Relaxed));
            t.sizes |= s.sizes.load(Ordering::Relaxed);
        }
        t.requests = allocs;
        t.in_use = allocs.wrapping_sub(frees);
        t.bytes = ba.wrapping_sub(bf);
        t
    }
}

/// Calls `f` on every malloc type used so far (most recent first).
pub fn for_each_malloc_type(mut f: impl FnMut(&'static MallocType)) {
    let mut t = TYPES.load(Ordering::Acquire);
    while !t.is_null() {
        // SAFETY: only `&'static MallocType`s are linked, never unlinked.
        let ty: &'static MallocType = unsafe { &*t };
        f(ty);
        t = ty.next.load(Ordering::Acquire);
    }
}

/// What the malloc layer serves without a [`MallocType`]: `GlobalAlloc`
/// ([`Kmem`](crate::Kmem)), the C ABI and [`raw`](crate::raw). Not counted
/// per call (that would cost the fast path): it is every malloc class
/// zone's and the large blocks' totals less every type's, so it is exact
/// when the allocator is quiescent and approximate while threads
/// allocate. `sizes` has the classes with blocks in use by anyone, and bit
/// 63 if large blocks are.
pub fn malloc_untyped_stats() -> MallocTypeStats {
    let mut all = MallocTypeStats::default();
    if kernel().is_some() {
        for (c, z) in (0..crate::classes::NCLASSES)
            .filter_map(|c| crate::kernel::built_class(c).map(|z| (c, z)))
        {
            let s = z.stats();
            all.in_use += s.used;
            all.bytes += s.used * CLASS_SIZES[c] as u64;
            all.requests += s.requests;
            if s.used > 0 {
                all.sizes |= 1 << c;
            }
        }
    }
    let (allocs, frees) = (
        LARGE_ALLOCS.load(Ordering::Relaxed),
        LARGE_FREES.load(Ordering::Relaxed),
    );
    let mut large = allocs.saturating_sub(frees);
    all.in_use += large;
    all.bytes += LARGE_PAGES.load(Ordering::Relaxed) * PAGE_SIZE as u64;
    all.requests += allocs;
    // The page caches' blocks (32 KiB to 256 KiB), which their zones count.
    for z in crate::kernel::qcache_zones() {
        let s = z.stats();
        large += s.used;
        all.in_use += s.used;
        all.bytes += s.used * z.size() as u64;
        all.requests += s.requests;
    }
    if large > 0 {
        all.sizes |= 1 << 63;
    }
    for_each_malloc_type(|t| {
        let s = t.stats();
        all.in_use = all.in_use.saturating_sub(s.in_use);
        all.bytes = all.bytes.saturating_sub(s.bytes);
        all.requests = all.requests.saturating_sub(s.requests);
    });
    all
}

/// Writes the `vmstat -m` table: `Type InUse MemUse Requests Size(s)`, one
/// line per malloc type, then `(untyped)` ([`malloc_untyped_stats`]).
pub fn write_vmstat_m(w: &mut dyn fmt::Write) -> fmt::Result {
    writeln!(
        w,
        "{:>16} {:>9} {:>9} {:>12}  Size(s)",
        "Type", "InUse", "MemUse", "Requests"
    )?;
    let mut r = Ok(());
    for_each_malloc_type(|t| {
        if r.is_ok() {
            r = write_vmstat_m_row(w, t.name, &t.stats());
        }
    });
    r?;
    write_vmstat_m_row(w, "(untyped)", &malloc_untyped_stats())
}

pub(super) fn write_vmstat_m_row(
    w: &mut dyn fmt::Write,
    name: &str,
    s: &MallocTypeStats,
) -> fmt::Result {
    write!(
        w,
        "{:>16} {:>9} {:>8}K {:>12}  ",
        name,
        s.in_use,
        s.bytes.div_ceil(1024),
        s.requests
    )?;
    let mut first = true;
    for (c, size) in CLASS_SIZES.iter().enumerate() {
        if s.sizes & (1 << c) != 0 {
            write!(w, "{}{}", if first { "" } else { "," }, size)?;
            first = false;
        }
    }
    if s.sizes & (1 << 63) != 0 {
        write!(w, "{}large", if first { "" } else { "," })?;
    }
    writeln!(w)
}
