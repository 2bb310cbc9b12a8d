//! malloc(9): `malloc(size, type, flags)` over the size-class zones and
//! large page allocations, with per-type statistics (`vmstat -m`).
//!
//! The untyped core here is shared with [`Kmem`](crate::Kmem) (Rust's
//! `GlobalAlloc`) and the C ABI: a size class is a UMA zone; a request
//! above the largest class (or aligned beyond any class that fits) takes
//! whole pages from the kernel arena, its page count recorded as a cookie
//! in the page metadata so `free(ptr)` needs no size.

use core::fmt;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::classes::{class_of, CLASS_NAMES, CLASS_SIZES};
use crate::kernel::{arena_pages, charged, kernel, vflags, Kernel, QCACHE_MAX};
use crate::os::{round_page, PAGE_SIZE};
use crate::pagemeta::{self, TAG_LARGE, TAG_MASK, TAG_SLAB};
use crate::report::{report, Report, ReportKind};
use crate::Flags;

// ---------------------------------------------------------------- ownership

/// What a pointer handed back to kmem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// An item of size class `c`.
    Class(usize),
    /// A large block of `n` pages.
    Large(usize),
}

impl Owner {
    /// Usable bytes.
    pub(crate) fn size(self) -> usize {
        match self {
            Owner::Class(c) => CLASS_SIZES[c],
            Owner::Large(n) => n * PAGE_SIZE,
        }
    }
}

/// Finds what `ptr` is from the page metadata (FreeBSD `vtoslab`), in
/// O(1). Reports and returns `None` for anything that is not the start of
/// a live allocation that can be proved cheaply.
pub(crate) fn owner_of(k: &Kernel, ptr: usize, op: &'static str) -> Option<Owner> {
    let word = pagemeta::lookup(ptr);
    let bad = |kind, zone| {
        report(Report {
            kind,
            op,
            ptr,
            zone,
            size: 0,
            actual: 0,
        });
        None
    };
    match word & TAG_MASK {
        TAG_SLAB => {
            let c = word >> 3;
            let off = ptr & (k.slab_size[c] - 1);
            if off % CLASS_SIZES[c] != 0 || off / CLASS_SIZES[c] >= k.ipers[c] {
                return bad(ReportKind::NotAllocationStart, CLASS_NAMES[c]);
            }
            Some(Owner::Class(c))
        }
        TAG_LARGE if ptr % PAGE_SIZE == 0 => Some(Owner::Large(word >> 3)),
        _ if word == pagemeta::WORD_INTERNAL => bad(ReportKind::InternalMemory, ""),
        _ if pagemeta::is_ours(ptr) => bad(ReportKind::NotAllocationStart, ""),
        _ => bad(ReportKind::ForeignPointer, ""),
    }
}

// ---------------------------------------------------------------- untyped core

/// Allocates `size` bytes aligned to `align` (a power of two). Never
/// panics; `None` when out of memory (`NOWAIT`) or `align` is absurd.
#[inline]
pub(crate) fn alloc_untyped(size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
    let k = kernel()?;
    match class_of(size, align) {
        Some(c) => k.classes[c].alloc(flags),
        None => large_alloc(k, size, align, flags),
    }
}

/// Whole pages from the kernel arena, labelled with their page count.
/// Up to [`QCACHE_MAX`] bytes (page aligned) they come through the arena's
/// quantum cache and may hold old data, so `ZERO` clears them; larger
/// blocks are clean arena pages (zero already) or dirty ones kept from a
/// recent free, and `ZERO` clears only the dirty ones (see `dirty`).
/// `WAITOK` sleeps at the memory limit (and in the arena) until memory is
/// freed.
pub(crate) fn large_alloc(
    k: &Kernel,
    size: usize,
    align: usize,
    flags: Flags,
) -> Option<NonNull<u8>> {
    let zero = flags.contains(Flags::ZERO);
    let vf = vflags(flags);
    let bytes = round_page(size.max(1))?;
    if !align.is_power_of_two() || align > (1 << 40) {
        return None;
    }
    let n = bytes / PAGE_SIZE;
    let addr = if bytes <= QCACHE_MAX && align <= PAGE_SIZE {
        // Charged here (the quantum cache's own ranges are not).
        let addr = charged(bytes, vf, |_| k.arena.alloc(bytes, vf))?;
        // A quantum-cache miss takes arena pages: unlabel any dirty ones.
        crate::dirty::taken(addr, n, 0, false);
        if zero {
            // SAFETY: `bytes` bytes of ours, just allocated.
            unsafe { ptr::write_bytes(addr as *mut u8, 0, bytes) };
        }
        addr
    } else {
        arena_pages(k.arena, bytes, align.max(PAGE_SIZE), vf, 0, zero)?
    };
    pagemeta::set(addr, 1, pagemeta::large_word(n));
    NonNull::new(addr as *mut u8)
}

/// Gives a large block back: small ones to the quantum cache, others to
/// the arena with their pages kept for reuse (both dirty; see `dirty`).
///
/// # Safety
///
/// `addr` is a live large block of `n` pages, unused from now on.
pub(crate) unsafe fn large_free(k: &Kernel, addr: usize, n: usize) {
    let bytes = n * PAGE_SIZE;
    pagemeta::set(addr, 1, 0);
    if bytes <= QCACHE_MAX && addr % PAGE_SIZE == 0 {
        if let Err(e) = k.arena.free(addr, bytes) {
            crate::report::fatal(format_args!(
                "kmem: freeing {bytes} bytes at {addr:#x}: {e}"
            ));
        }
        crate::pressure::uncharge(bytes);
    } else {
        // SAFETY: the caller's promise.
        unsafe { crate::dirty::free_large(k.arena, addr, bytes) };
        crate::pressure::uncharge(bytes);
    }
}

/// Frees a pointer whose owner is known.
///
/// # Safety
///
/// `ptr` is a live allocation of `owner`, unused from now on.
pub(crate) unsafe fn free_owned(k: &Kernel, ptr: NonNull<u8>, owner: Owner) {
    match owner {
        // SAFETY: the caller's promise.
        Owner::Class(c) => unsafe { k.classes[c].free(ptr) },
        // SAFETY: the caller's promise: a live large block of n pages.
        Owner::Large(n) => unsafe { large_free(k, ptr.as_ptr() as usize, n) },
    }
}

/// Frees a pointer of unknown size (`free(3)`): looked up, validated,
/// reported if bad. Null is a no-op.
///
/// # Safety
///
/// If `ptr` is a live kmem allocation, nothing uses it afterwards.
/// Anything else is detected where the page metadata can tell (see
/// [`owner_of`]).
pub(crate) unsafe fn free_untyped(ptr: *mut u8, op: &'static str) -> Option<Owner> {
    let p = NonNull::new(ptr)?;
    let k = kernel()?;
    let owner = owner_of(k, ptr as usize, op)?;
    // SAFETY: validated as a live allocation start of `owner`.
    unsafe { free_owned(k, p, owner) };
    Some(owner)
}

/// The usable size of a kmem allocation, 0 (after a report) if `ptr` is
/// not one.
pub(crate) fn usable_size_untyped(ptr: *const u8, op: &'static str) -> usize {
    if ptr.is_null() {
        return 0;
    }
    match kernel() {
        Some(k) => owner_of(k, ptr as usize, op).map_or(0, Owner::size),
        None => 0,
    }
}

/// Resizes: in place when the class (or the page count) is unchanged,
/// else allocate, copy, free. On failure the old block is untouched.
///
/// # Safety
///
/// `ptr` is null or a live kmem allocation (validated as `free_untyped`).
pub(crate) unsafe fn realloc_untyped(
    ptr: *mut u8,
    size: usize,
    align: usize,
    flags: Flags,
) -> Option<(NonNull<u8>, Option<Owner>)> {
    let Some(old) = NonNull::new(ptr) else {
        return alloc_untyped(size, align, flags).map(|p| (p, None));
    };
    let k = kernel()?;
    let owner = owner_of(k, ptr as usize, "realloc")?;
    let fits = match (owner, class_of(size, align)) {
        (Owner::Class(c), Some(n)) => c == n,
        (Owner::Large(n), None) => {
            round_page(size.max(1)) == Some(n * PAGE_SIZE) && (ptr as usize) % align == 0
        }
        _ => false,
    };
    if fits {
        return Some((old, Some(owner)));
    }
    let new = alloc_untyped(size, align, flags)?;
    // SAFETY: both live and distinct; copy what both hold.
    unsafe {
        ptr::copy_nonoverlapping(ptr, new.as_ptr(), owner.size().min(size));
        free_owned(k, old, owner);
    }
    Some((new, Some(owner)))
}

// ---------------------------------------------------------------- malloc types

const NSTRIPES: usize = 8;

#[repr(align(64))]
struct Stripe {
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
/// the stripe count) and summed when read. The type given to [`free`] is
/// trusted for accounting only: a wrong type skews that type's figures
/// but cannot corrupt memory (the pointer itself is validated).
pub struct MallocType {
    name: &'static str,
    desc: &'static str,
    stripes: [Stripe; NSTRIPES],
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

static TYPES: AtomicPtr<MallocType> = AtomicPtr::new(ptr::null_mut());
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    static STRIPE: core::cell::Cell<u8> = const { core::cell::Cell::new(u8::MAX) };
}

#[inline]
fn stripe_index() -> usize {
    STRIPE
        .try_with(|s| {
            let mut i = s.get();
            if i == u8::MAX {
                i = (NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % NSTRIPES) as u8;
                s.set(i);
            }
            i as usize
        })
        .unwrap_or(0)
}

impl MallocType {
    /// A new type; `name` is the `vmstat -m` column, `desc` a description.
    pub const fn new(name: &'static str, desc: &'static str) -> Self {
        MallocType {
            name,
            desc,
            stripes: [const { Stripe::new() }; NSTRIPES],
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
            while self.linked.load(Ordering::Acquire) != 2 {
                std::hint::spin_loop();
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

    fn account_alloc(&'static self, owner: Owner) {
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

    fn account_free(&'static self, owner: Owner) {
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

/// Writes the `vmstat -m` table: `Type InUse MemUse Requests Size(s)`.
pub fn write_vmstat_m(w: &mut dyn fmt::Write) -> fmt::Result {
    writeln!(
        w,
        "{:>16} {:>9} {:>9} {:>12}  Size(s)",
        "Type", "InUse", "MemUse", "Requests"
    )?;
    let mut r = Ok(());
    for_each_malloc_type(|t| {
        if r.is_err() {
            return;
        }
        let s = t.stats();
        r = (|| {
            write!(
                w,
                "{:>16} {:>9} {:>8}K {:>12}  ",
                t.name,
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
        })();
    });
    r
}

// ---------------------------------------------------------------- malloc(9)

/// Allocates `size` bytes accounted to `ty` (FreeBSD `malloc(9)`).
///
/// `size == 0` returns a minimum (8-byte) allocation. Small sizes are
/// aligned to their class (power-of-two classes naturally); large blocks
/// are page aligned. [`Flags::ZERO`] zeroes; [`Flags::NOWAIT`] fails with
/// `None` when memory cannot be had at once; [`Flags::WAITOK`] may sleep
/// (on a zone limit or a page shortage).
pub fn malloc(size: usize, ty: &'static MallocType, flags: Flags) -> Option<NonNull<u8>> {
    malloc_aligned(size, 1, ty, flags)
}

/// [`malloc`] with an alignment (a power of two; FreeBSD `malloc_aligned`).
pub fn malloc_aligned(
    size: usize,
    align: usize,
    ty: &'static MallocType,
    flags: Flags,
) -> Option<NonNull<u8>> {
    if !align.is_power_of_two() {
        return None;
    }
    let k = kernel()?;
    let (p, owner) = match class_of(size, align) {
        Some(c) => (k.classes[c].alloc(flags)?, Owner::Class(c)),
        None => {
            let p = large_alloc(k, size, align, flags)?;
            (p, Owner::Large(round_page(size.max(1))? / PAGE_SIZE))
        }
    };
    ty.account_alloc(owner);
    Some(p)
}

/// Frees `ptr` (FreeBSD `free(9)`); null is a no-op. A pointer kmem did not
/// hand out, or not the start of an allocation, is reported (see
/// [`set_report_hook`](crate::set_report_hook)), never trusted.
///
/// # Safety
///
/// If `ptr` is a live allocation, nothing uses it afterwards.
pub unsafe fn free(ptr: *mut u8, ty: &'static MallocType) {
    // SAFETY: the caller's promise.
    if let Some(owner) = unsafe { free_untyped(ptr, "free") } {
        ty.account_free(owner);
    }
}

/// Zeroes the allocation's usable bytes, then frees it (FreeBSD `zfree`).
///
/// # Safety
///
/// As [`free`].
pub unsafe fn zfree(ptr: *mut u8, ty: &'static MallocType) {
    let n = usable_size_untyped(ptr, "zfree");
    if n == 0 {
        return;
    }
    // SAFETY: `ptr` is a live allocation of `n` usable bytes; volatile so
    // the zeroing is not optimized away before the free.
    unsafe {
        for i in 0..n {
            ptr::write_volatile(ptr.add(i), 0);
        }
        free(ptr, ty);
    }
}

/// Resizes (FreeBSD `realloc(9)`): null `ptr` allocates; in place when the
/// size class (or page count) is unchanged; otherwise a new block with the
/// contents copied. On failure returns `None` and `ptr` is still valid.
///
/// # Safety
///
/// `ptr` is null or a live allocation of `ty`; on success it must not be
/// used again unless it was returned.
pub unsafe fn realloc(
    ptr: *mut u8,
    size: usize,
    ty: &'static MallocType,
    flags: Flags,
) -> Option<NonNull<u8>> {
    // SAFETY: the caller's promise.
    let (p, old) = unsafe { realloc_untyped(ptr, size, 1, flags.without(Flags::ZERO)) }?;
    if p.as_ptr() != ptr {
        if let Some(o) = old {
            ty.account_free(o);
        }
        if let Some(k) = kernel() {
            if let Some(o) = owner_of(k, p.as_ptr() as usize, "realloc") {
                ty.account_alloc(o);
            }
        }
    }
    Some(p)
}

/// Like [`realloc`], but frees `ptr` when it fails (FreeBSD `reallocf`).
///
/// # Safety
///
/// As [`realloc`]; after a failure `ptr` is freed.
pub unsafe fn reallocf(
    ptr: *mut u8,
    size: usize,
    ty: &'static MallocType,
    flags: Flags,
) -> Option<NonNull<u8>> {
    // SAFETY: the caller's promise.
    let r = unsafe { realloc(ptr, size, ty, flags) };
    if r.is_none() {
        // SAFETY: realloc failed and left `ptr` live.
        unsafe { free(ptr, ty) };
    }
    r
}

/// Usable bytes of an allocation (FreeBSD `malloc_usable_size`): at least
/// the size asked for. 0 for null; a pointer that is not a kmem allocation
/// start is reported.
pub fn malloc_usable_size(ptr: *const u8) -> usize {
    usable_size_untyped(ptr, "malloc_usable_size")
}
