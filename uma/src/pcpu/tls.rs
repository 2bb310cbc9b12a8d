//! The thread-local side of the per-thread caches: a table of cache
//! pointers indexed by the zone's slot, and the thread-exit flush.
//!
//! The table is a `const`-initialised thread-local without a destructor, so
//! it is reachable at any time in the thread's life, TLS teardown included,
//! and its access compiles to a thread-pointer-relative load. Thread exit is
//! caught by a pthread key destructor (std's TLS destructor list allocates
//! through the global allocator, which UMA must never do).

use core::cell::Cell;
use core::ptr::{self, NonNull};

use super::{Cache, Push, ThreadCache, GATE_ALLOC, GATE_DRAIN, GATE_FREE};

#[path = "sample.rs"]
pub(crate) mod sample;
use crate::sync::{AtomicPtr, Mutex, Ordering};
use crate::zone::Zone;

/// Zones with a per-thread cache slot at once; more zones work, uncached.
pub(crate) const MAX_SLOTS: usize = 512;
/// The slot of zones without per-thread caches: always `EMPTY_CACHE`.
pub(crate) const NO_SLOT: usize = MAX_SLOTS;

const NO_GUARD: u8 = 0;
const GUARDED: u8 = 1;
const DEAD: u8 = 2;

/// A thread's table of cache pointers, indexed by zone slot.
type Table = [AtomicPtr<Cache>; MAX_SLOTS + 1];

std::thread_local! {
    static SLOTS: Table =
        const { [const { AtomicPtr::new(&super::EMPTY_CACHE as *const Cache as *mut Cache) }; MAX_SLOTS + 1] };
}

/// A thread's registration state, beside its [`Table`].
struct ThreadFlags {
    /// `NO_GUARD`, `GUARDED` (the exit destructor is armed) or `DEAD`.
    state: Cell<u8>,
    /// The slots this thread ever registered a cache in (bit per slot), so
    /// that thread exit visits those and not all `MAX_SLOTS`.
    used: Cell<[u64; MAX_SLOTS / 64]>,
}

// SAFETY: two `Cell`s of integers: zero is `NO_GUARD` and no slot used;
// no destructor.
unsafe impl crate::ZeroInit for ThreadFlags {}

crate::zeroed_thread_local! {
    /// The calling thread's [`ThreadFlags`] (reached without
    /// `__tls_get_addr` where the library is in static TLS: registration
    /// runs under the arena locks of a boundary-tag refill).
    fn thread_flags: ThreadFlags = "bsdalloc_uma_thread_flags_v01";
}

// The calling thread's [`Table`] from a shared library
// ([`TlsDescriptor`]).
//
// `SLOTS` is a Rust thread-local, and Rust compiles thread-locals with the
// general-dynamic TLS model. In an executable the linker relaxes that to
// one thread-pointer-relative load, but not in a shared library: there
// every access is a call to `__tls_get_addr` (about 15 instructions), and
// `libbsdalloc.so` made four of them per `malloc`+`free` pair. Stable Rust
// has no way to ask for another model or dialect (`#[thread_local]`,
// `-Z tls-model` are unstable), and an initial-exec access would make a
// `dlopen` of the library fail ("cannot allocate memory in static TLS
// block": the whole TLS block of the library, `SLOTS` included, would
// have to fit glibc's surplus).
//
// But where the library is in static TLS (loaded at start-up, by
// `LD_PRELOAD` or `DT_NEEDED`, or linked into an executable), its TLS
// block is at the same distance from the thread pointer in every thread,
// and so is `SLOTS`. The first registration of a cache ([`cache_for`])
// finds out whether that is so, by a TLS descriptor asked about an
// anchor word of the same block (declared in assembly, so that its
// descriptor can be named: see `table_word::learn`), and if it is, keeps
// `SLOTS`' distance from the thread pointer in a plain global. From then
// on a fast path reads its cache pointer with one `%fs`-relative load
// indexed by the slot (`movq %fs:(off, slot, 8)`), as initial-exec code
// would, after one load and a test of the global; `SLOTS` starts as
// `EMPTY_CACHE` in every entry in every thread (its initialisation
// image), so a thread that registered nothing yet misses as it should.
// Until the global is learnt, and always after a `dlopen` (where each
// thread's block is elsewhere), it stays 0: the fast paths see
// `EMPTY_CACHE` and miss, and the slow roads reach the caches through
// `SLOTS` itself. Once it is learnt the slow roads and `Zone`'s own
// operations use it too (`table_word::table`), so that a library in
// static TLS never calls `__tls_get_addr`: some of those roads run under
// an arena's lock, and right after a `dlopen` that call may wait for the
// loader's lock (see `crate::tls_block`).

/// The offset from the thread pointer of the calling thread's copy of
/// the thread-local symbol `$sym` (a string literal; the symbol is defined
/// in a TLS section of the same link), by the x86-64 psABI's TLS
/// descriptor call (GNU2 dialect): the dynamic linker fills the
/// descriptor with `_dl_tlsdesc_return` (load the offset, return) for a
/// library in static TLS, and with a resolver that allocates the block
/// for a `dlopen`ed one; the call keeps every register but `rax` (and the
/// flags). In an executable the linker relaxes it to one immediate move.
/// For [`zeroed_thread_local!`](crate::zeroed_thread_local) too, hence
/// exported. (The resolver of a `dlopen`ed block may call into the C
/// library: the `asm!` block has no `nostack`, so the stack pointer is
/// aligned for a call there and the red zone is kept.)
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[doc(hidden)]
#[macro_export]
macro_rules! tlsdesc_offset {
    ($sym:literal) => {{
        let off: usize;
        // SAFETY: the TLS descriptor call sequence of the x86-64 psABI
        // (GNU2 dialect): it reads the descriptor the linker and dynamic
        // linker made for `$sym` and clobbers `rax` and the flags only.
        // It pushes a return address, so no `nostack`.
        unsafe {
            core::arch::asm!(
                concat!("leaq ", $sym, "@tlsdesc(%rip), %rax"),
                concat!("call *", $sym, "@tlscall(%rax)"),
                out("rax") off,
                options(att_syntax, readonly, pure),
            );
        }
        off
    }};
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod table_word {
    use super::{Cache, SLOTS};

    // The anchor: a word of this library's TLS block whose descriptor
    // says whether the block is in static TLS. `.globl` + `.hidden`: the
    // symbol must be visible to every object of the link and to nothing
    // outside it. The name carries the crate's version so that two
    // versions of uma linked together keep two anchors (and two tables).
    core::arch::global_asm!(
        ".pushsection .tdata.bsdalloc_uma_anchor_v01,\"awT\",@progbits",
        ".p2align 3",
        ".globl bsdalloc_uma_anchor_v01",
        ".hidden bsdalloc_uma_anchor_v01",
        ".type bsdalloc_uma_anchor_v01,@object",
        ".size bsdalloc_uma_anchor_v01,8",
        "bsdalloc_uma_anchor_v01:",
        ".quad 0",
        ".popsection",
    );

    // `SLOTS`' offset from the thread pointer when it is the same in
    // every thread (static TLS), else 0 (not known yet, or `dlopen`ed).
    // Hidden, so that every crate of the link reaches it RIP-relative,
    // with no GOT load; the version in the name, as the anchor's.
    core::arch::global_asm!(
        ".pushsection .data.bsdalloc_uma_table_off_v02,\"aw\",@progbits",
        ".p2align 3",
        ".globl bsdalloc_uma_table_off_v02",
        ".hidden bsdalloc_uma_table_off_v02",
        ".type bsdalloc_uma_table_off_v02,@object",
        ".size bsdalloc_uma_table_off_v02,8",
        "bsdalloc_uma_table_off_v02:",
        ".quad 0",
        ".popsection",
    );

    /// The static offset learnt, or 0.
    #[inline(always)]
    fn static_offset() -> usize {
        let off: usize;
        // SAFETY: reads an 8-byte, 8-aligned word of this link's data,
        // written only by `learn` (a naturally atomic store).
        unsafe {
            core::arch::asm!(
                "movq bsdalloc_uma_table_off_v02(%rip), {o}",
                o = out(reg) off,
                options(att_syntax, nostack, preserves_flags, readonly, pure),
            );
        }
        off
    }

    /// Learns `SLOTS`' offset if this library's TLS block is in static
    /// TLS (once; racing callers store the same value). The descriptor of
    /// the GNU2 dialect is two words, the function and its argument; for
    /// a block in static TLS the function (glibc's `_dl_tlsdesc_return`,
    /// musl's `__tlsdesc_static`) returns the argument, which is then the
    /// anchor's offset for every thread. For a `dlopen`ed block the
    /// argument is a pointer to the resolver's data, never the
    /// (thread-pointer-relative) answer. In an executable the linker has
    /// rewritten the descriptor's address into the offset itself (`movq
    /// $off, %rax`, or an initial-exec load of it), a negative number:
    /// static too. `SLOTS` is in the same block as the anchor, so its
    /// offset is as fixed; it is read off this thread's copy.
    #[cold]
    pub(super) fn learn() {
        if static_offset() != 0 {
            return;
        }
        let off = crate::tlsdesc_offset!("bsdalloc_uma_anchor_v01");
        let desc: usize;
        // SAFETY: the first instruction of the descriptor sequence, in
        // the only form the linker knows how to rewrite; reads nothing.
        unsafe {
            core::arch::asm!(
                "leaq bsdalloc_uma_anchor_v01@tlsdesc(%rip), %rax",
                out("rax") desc,
                options(att_syntax, nostack, preserves_flags, nomem, pure),
            );
        }
        let fixed = if (desc as isize) < 0 {
            desc == off
        } else {
            // SAFETY: `desc` is the address of the descriptor, two words
            // in this object's GOT, filled before the call above returned.
            unsafe { (desc as *const usize).add(1).read_volatile() == off }
        };
        if !fixed {
            return;
        }
        let tp = crate::tls_block::thread_pointer();
        let learnt = SLOTS
            .with(|s| s as *const super::Table as usize)
            .wrapping_sub(tp);
        if learnt == 0 {
            return;
        }
        // SAFETY: stores an 8-byte word of this link's data, 8-aligned;
        // readers see 0 or this value (every thread computes the same).
        unsafe {
            core::arch::asm!(
                "movq {o}, bsdalloc_uma_table_off_v02(%rip)",
                o = in(reg) learnt,
                options(att_syntax, nostack, preserves_flags),
            );
        }
    }

    /// The calling thread's cache pointer in `slot`: `EMPTY_CACHE` (every
    /// operation misses) until some thread has learnt the static offset,
    /// and always after a `dlopen`: a miss's slow road reaches the
    /// thread's caches through `SLOTS` itself, and the first one learns
    /// the offset.
    ///
    /// # Safety
    ///
    /// `slot <= MAX_SLOTS`.
    #[inline(always)]
    pub(super) unsafe fn cache(slot: usize) -> *mut Cache {
        let off = static_offset();
        if off == 0 {
            core::hint::cold_path();
            return super::super::empty();
        }
        let c: *mut Cache;
        // SAFETY: reads entry `slot` of the calling thread's own `SLOTS`,
        // at `off` from the thread pointer (`fs`): the distance learnt,
        // the same for every thread (static TLS); in range by the
        // caller's promise. An aligned 8-byte load, as the entry's
        // relaxed atomic load would be (not `pure`: other threads may
        // reset the entry, and two reads must not merge).
        unsafe {
            core::arch::asm!(
                "movq %fs:({o},{s},8), {c}",
                o = in(reg) off,
                s = in(reg) slot,
                c = lateout(reg) c,
                options(att_syntax, nostack, preserves_flags, readonly),
            );
        }
        c
    }

    /// The calling thread's cache pointer in `slot`: one `%fs`-relative
    /// load at the learnt static offset when there is one, else through
    /// Rust's thread-local (a `dlopen`ed library, or before the first
    /// registration in the process).
    ///
    /// # Safety
    ///
    /// `slot <= MAX_SLOTS`.
    #[inline(always)]
    pub(super) unsafe fn entry(slot: usize) -> *mut Cache {
        if static_offset() == 0 {
            core::hint::cold_path();
            // SAFETY: the caller's promise.
            return unsafe { super::slots_entry(slot) };
        }
        // SAFETY: the caller's promise; the offset is learnt.
        unsafe { cache(slot) }
    }

    /// The calling thread's table: at the learnt static offset when
    /// there is one, else through Rust's thread-local (a `dlopen`ed
    /// library, or before the first registration in the process).
    #[inline(always)]
    pub(super) fn table() -> *const super::Table {
        let off = static_offset();
        if off == 0 {
            core::hint::cold_path();
            return SLOTS.with(|s| s as *const super::Table);
        }
        crate::tls_block::thread_pointer().wrapping_add(off) as *const super::Table
    }
}

/// Elsewhere the fast paths reach `SLOTS` directly.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod table_word {
    pub(super) use super::slots_entry as cache;
    pub(super) use super::slots_entry as entry;

    /// The calling thread's table, through Rust's thread-local.
    #[inline(always)]
    pub(super) fn table() -> *const super::Table {
        super::SLOTS.with(|s| s as *const super::Table)
    }
}

/// The calling thread's cache pointer in `slot`, through Rust's
/// thread-local.
///
/// # Safety
///
/// `slot <= MAX_SLOTS`.
#[inline(always)]
unsafe fn slots_entry(slot: usize) -> *mut Cache {
    SLOTS.with(|s| {
        // SAFETY: in range by the caller's promise.
        let e = unsafe { s.get_unchecked(slot) };
        e.load(Ordering::Relaxed)
    })
}

static IDS: Mutex<[u64; MAX_SLOTS / 64]> = Mutex::new([0; MAX_SLOTS / 64]);
/// The pthread key whose destructor flushes an exiting thread's caches,
/// created on first use. A lock rather than a `OnceLock`, so the fork
/// prepare handler can hold it (an initialisation caught running by a fork
/// would block the child forever).
static KEY: Mutex<Option<libc::pthread_key_t>> = Mutex::new(None);

/// The process-wide registry lock: serializes drainers, cache
/// (un)registration and thread-exit flushes, for every `Uma` instance.
pub(crate) static REGISTRY: Mutex<()> = Mutex::new(());

/// Takes a free slot, or `NO_SLOT` when all are used.
pub(crate) fn alloc_slot() -> usize {
    let mut ids = IDS.lock();
    for (w, word) in ids.iter_mut().enumerate() {
        if *word != u64::MAX {
            let b = (!*word).trailing_zeros() as usize;
            *word |= 1 << b;
            return w * 64 + b;
        }
    }
    NO_SLOT
}

/// Gives a slot back (zone destroy, after its caches were detached).
pub(crate) fn free_slot(slot: usize) {
    if slot < MAX_SLOTS {
        IDS.lock()[slot / 64] &= !(1u64 << (slot % 64));
    }
}

/// How a fast path reaches the calling thread's table of caches: a
/// type parameter of [`FastSlot::alloc_via`] and [`FastSlot::free_via`],
/// so that each front door compiles the access that is cheapest where it
/// is linked. Both see the same table.
///
/// - [`RustTls`]: Rust's thread-local, one thread-pointer-relative load in
///   an executable (the linker relaxes the access), a `__tls_get_addr`
///   call in a shared library. For Rust programs.
/// - [`TlsDescriptor`]: the table itself, at its distance from the thread
///   pointer learnt once (with a TLS descriptor's help): a load and a test
///   of that distance, then one `%fs`-relative load of the entry, in a
///   library loaded at start-up or in an executable; in a `dlopen`ed
///   library every access sees `EMPTY_CACHE`, and operations take their
///   slow roads (on x86-64 Linux; elsewhere it is `RustTls`). For shared
///   libraries such as `libbsdalloc.so`.
pub trait TlsAccess: sealed::Sealed {
    /// The calling thread's cache pointer in `slot` (a `*mut Cache`).
    ///
    /// # Safety
    ///
    /// `slot <= MAX_SLOTS`.
    #[doc(hidden)]
    unsafe fn cache(slot: usize) -> *mut ();
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::RustTls {}
    impl Sealed for super::TlsDescriptor {}
    impl Sealed for super::Learnt {}
}

/// [`TlsAccess`] for `Zone`'s own operations and the slow roads: the
/// cache pointer at the learnt static offset when there is one (no
/// `__tls_get_addr`, which some of them would reach under a lock), else
/// through Rust's thread-local (`table_word::entry`).
enum Learnt {}

impl TlsAccess for Learnt {
    #[inline(always)]
    unsafe fn cache(slot: usize) -> *mut () {
        // SAFETY: the caller's promise.
        unsafe { table_word::entry(slot).cast() }
    }
}

/// [`TlsAccess`] through Rust's thread-local: for executables.
#[derive(Debug)]
pub enum RustTls {}

/// [`TlsAccess`] through `SLOTS`' distance from the thread pointer,
/// learnt once (by a TLS descriptor): for shared libraries.
#[derive(Debug)]
pub enum TlsDescriptor {}

impl TlsAccess for RustTls {
    #[inline(always)]
    unsafe fn cache(slot: usize) -> *mut () {
        // SAFETY: the caller's promise.
        unsafe { slots_entry(slot).cast() }
    }
}

impl TlsAccess for TlsDescriptor {
    #[inline(always)]
    unsafe fn cache(slot: usize) -> *mut () {
        // SAFETY: the caller's promise.
        unsafe { table_word::cache(slot).cast() }
    }
}

/// Runs `f` on this thread's cache in `slot` (`EMPTY_CACHE` when it has
/// none), reaching the table through `A`.
///
/// # Safety
///
/// `slot <= MAX_SLOTS`, and the zone that owns `slot` is not destroyed
/// meanwhile (its caches are freed then, and the slot reused later).
#[inline(always)]
unsafe fn with_cache<A: TlsAccess, R>(slot: usize, f: impl FnOnce(&Cache) -> R) -> R {
    // SAFETY: `slot` is in range by the caller's contract.
    let c = unsafe { A::cache(slot) }.cast::<Cache>();
    // SAFETY: a slot holds EMPTY_CACHE or this thread's registered cache,
    // which is only freed after the slot is reset (zone destroy, thread
    // exit), never during one of this thread's operations.
    f(unsafe { &*c })
}

/// [`ThreadCache`] through the TLS table: every front door's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tls;

impl ThreadCache for Tls {
    #[inline(always)]
    fn fast_pop<const MASK: u8>(self, zone: &Zone) -> Option<NonNull<u8>> {
        // SAFETY: pcpu_slot <= MAX_SLOTS by construction; the zone is alive.
        unsafe { with_cache::<Learnt, _>(zone.pcpu_slot, |c| c.fast_pop::<MASK>()) }
    }

    #[inline(always)]
    fn fast_push<const MASK: u8>(self, zone: &Zone, item: *mut u8) -> bool {
        // SAFETY: as fast_pop.
        unsafe { with_cache::<Learnt, _>(zone.pcpu_slot, |c| c.fast_push::<MASK>(item)) }
    }

    #[inline(always)]
    fn fast_push_unless(self, zone: &Zone, item: *mut u8) -> Push {
        // SAFETY: as fast_pop.
        unsafe {
            with_cache::<Learnt, _>(zone.pcpu_slot, |c| c.fast_push_unless(item, &zone.sleepers))
        }
    }

    #[inline]
    fn cache<'a>(self, zone: &'a Zone) -> Option<&'a Cache>
    where
        Self: 'a,
    {
        cache_for(zone)
    }
}

/// A zone's slot in the per-thread cache table ([`Zone::fast_slot`]).
///
/// For layers above UMA that find the zone of a request in a table of
/// their own (kmem's size classes): keeping the slot instead of the zone,
/// they reach the calling thread's cache with one thread-local load and
/// never touch the zone on a hit. [`alloc`](Self::alloc) and
/// [`free`](Self::free) are exactly the cache hits of [`Zone::alloc`] (no
/// flags) and [`Zone::free`] for zones that need no work per item; on a
/// miss (nothing cached yet, bucket empty or full, a drain in progress, a
/// zone with a ctor, dtor, limit or INVARIANTS) they do nothing and the
/// caller goes through the zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastSlot(u32);

impl FastSlot {
    /// The slot of no zone: its cache is always empty, every operation
    /// misses.
    pub const NONE: FastSlot = FastSlot(NO_SLOT as u32);

    /// The slot as a number, to keep in an atomic.
    #[inline(always)]
    pub const fn to_bits(self) -> u32 {
        self.0
    }

    /// The slot back from [`to_bits`](Self::to_bits).
    ///
    /// # Safety
    ///
    /// `bits` came from `to_bits` (the fast paths index the thread-local
    /// table with it unchecked).
    #[inline(always)]
    pub const unsafe fn from_bits(bits: u32) -> FastSlot {
        FastSlot(bits)
    }

    /// An item from the calling thread's cache of the slot's zone, or
    /// `None` on a miss (then call [`Zone::alloc`]). Counted in the
    /// zone's statistics like any allocation.
    ///
    /// # Safety
    ///
    /// The zone this slot came from is not destroyed (a destroyed zone's
    /// slot is given to later zones).
    #[inline(always)]
    pub unsafe fn alloc(self) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise.
        unsafe { self.alloc_via::<RustTls>() }
    }

    /// Puts `item` in the calling thread's cache of the slot's zone; false
    /// on a miss (then call [`Zone::free`]).
    ///
    /// # Safety
    ///
    /// As [`alloc`](Self::alloc), and [`Zone::free`]'s contract: `item`
    /// came from that zone and is not freed since.
    #[inline(always)]
    pub unsafe fn free(self, item: NonNull<u8>) -> bool {
        // SAFETY: the caller's promise.
        unsafe { self.free_via::<RustTls>(item) }
    }

    /// [`free_via`](Self::free_via), and when the item went into the
    /// cache, `stamp` is written into its first 8 bytes before the cache is
    /// left, so that nobody (not even a drainer of the cache) can see the
    /// item in the cache without its stamp. For a layer above UMA that marks
    /// freed items (kmem's double-free key): UMA never links items through
    /// their own memory, so the stamp is the only thing written there.
    ///
    /// # Safety
    ///
    /// As [`free`](Self::free), and the zone's items are at least 8 bytes,
    /// 8-aligned.
    #[inline(always)]
    pub unsafe fn free_stamped_via<A: TlsAccess>(self, item: NonNull<u8>, stamp: u64) -> bool {
        // SAFETY: as free_via; the caller's promise on the item's size.
        unsafe {
            with_cache::<A, _>(self.0 as usize, |c| {
                c.fast_push_stamped::<{ GATE_DRAIN | GATE_FREE | sample::GATE_SAMPLE_FREE }>(
                    item.as_ptr(),
                    stamp,
                )
            })
        }
    }

    /// After [`alloc_via`](Self::alloc_via) missed: the first step of the
    /// zone's own miss road alone, for a front door whose slow road has
    /// layers of its own above [`Zone::alloc`]. If the thread's alloc
    /// bucket is empty and its free bucket is not, the two are swapped
    /// and an item popped: no lock, no call out of UMA (most misses of a
    /// working set that stays put are this). Counted as the zone's slow
    /// road counts, and runs the zone's slow-path hook. `None` when that
    /// does not serve (no items in either bucket, no cache yet, a gate
    /// bit set): then [`Zone::alloc`].
    ///
    /// # Safety
    ///
    /// As [`alloc`](Self::alloc).
    #[cold]
    #[inline(never)]
    pub unsafe fn alloc_swap_via<A: TlsAccess>(self) -> Option<NonNull<u8>> {
        // SAFETY: the caller's promise (the slot's zone lives).
        unsafe {
            with_cache::<A, _>(self.0 as usize, |c| {
                if ptr::eq(c, &super::EMPTY_CACHE) {
                    return None;
                }
                // SAFETY: the thread's own registered cache; the mask has
                // the zone's GATE_ALLOC.
                c.swap_alloc::<{ GATE_DRAIN | GATE_ALLOC | sample::GATE_SAMPLE }>()
            })
        }
    }

    /// After [`free_stamped_via`](Self::free_stamped_via) missed: as
    /// [`alloc_swap_via`](Self::alloc_swap_via) for a free. If the alloc
    /// bucket is full and the free bucket has room, the two are swapped
    /// and `item` pushed, stamped as `free_stamped_via` stamps it. False
    /// (nothing done) when that does not serve: then [`Zone::free`].
    ///
    /// # Safety
    ///
    /// As [`free_stamped_via`](Self::free_stamped_via).
    #[cold]
    #[inline(never)]
    pub unsafe fn free_swap_stamped_via<A: TlsAccess>(self, item: NonNull<u8>, stamp: u64) -> bool {
        // SAFETY: the caller's promise (the slot's zone lives).
        unsafe {
            with_cache::<A, _>(self.0 as usize, |c| {
                // SAFETY: the thread's own registered cache; the item is
                // the caller's (at least 8 bytes, 8-aligned); the mask has
                // the zone's GATE_FREE.
                !ptr::eq(c, &super::EMPTY_CACHE)
                    && c.swap_free_stamped::<{ GATE_DRAIN | GATE_FREE | sample::GATE_SAMPLE_FREE }>(
                        item, stamp,
                    )
            })
        }
    }

    /// [`alloc`](Self::alloc), reaching the thread's table through `A`.
    ///
    /// # Safety
    ///
    /// As [`alloc`](Self::alloc).
    #[inline(always)]
    pub unsafe fn alloc_via<A: TlsAccess>(self) -> Option<NonNull<u8>> {
        // SAFETY: slots come from `Zone::fast_slot` (<= MAX_SLOTS, see
        // `from_bits`); the caller keeps the zone alive.
        unsafe {
            with_cache::<A, _>(self.0 as usize, |c| {
                c.fast_pop::<{ GATE_DRAIN | GATE_ALLOC | sample::GATE_SAMPLE }>()
            })
        }
    }

    /// [`free`](Self::free), reaching the thread's table through `A`.
    ///
    /// # Safety
    ///
    /// As [`free`](Self::free).
    #[inline(always)]
    pub unsafe fn free_via<A: TlsAccess>(self, item: NonNull<u8>) -> bool {
        // SAFETY: as alloc_via.
        unsafe {
            with_cache::<A, _>(self.0 as usize, |c| {
                c.fast_push::<{ GATE_DRAIN | GATE_FREE }>(item.as_ptr())
            })
        }
    }
}

/// This thread's cache of `zone`, registering one if needed; `None` for
/// uncached zones, during/after thread teardown, or without memory.
pub(crate) fn cache_for(zone: &Zone) -> Option<&Cache> {
    if zone.pcpu_slot >= MAX_SLOTS {
        return None;
    }
    let table = table_word::table();
    // SAFETY: `table` is this thread's own live TLS table; in range.
    let slot: *const AtomicPtr<Cache> = unsafe { &(*table)[zone.pcpu_slot] };
    // SAFETY: our own live TLS slot.
    let c = unsafe { (*slot).load(Ordering::Relaxed) };
    if c != super::empty() {
        // SAFETY: as `Tls::fast_pop`.
        return Some(unsafe { &*c });
    }
    match thread_flags(|f| f.state.get()) {
        DEAD => return None,
        NO_GUARD => {
            let key = {
                let mut k = KEY.lock();
                match *k {
                    Some(key) => key,
                    None => {
                        let mut key: libc::pthread_key_t = 0;
                        // SAFETY: key is a valid out pointer; the destructor
                        // is an extern "C" fn that never unwinds.
                        if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } != 0 {
                            crate::debug::fatal(format_args!("uma: pthread_key_create failed"));
                        }
                        *k = Some(key);
                        key
                    }
                }
            };
            // SAFETY: key is a created key; a non-null value arms the
            // destructor for this thread.
            if unsafe { libc::pthread_setspecific(key, core::ptr::dangling::<libc::c_void>()) } != 0
            {
                return None;
            }
            thread_flags(|f| f.state.set(GUARDED));
        }
        _ => {}
    }
    // The fast paths of a shared library read `SLOTS` once its offset is
    // known (the first registration in the process learns it).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    table_word::learn();
    thread_flags(|f| {
        let mut bits = f.used.get();
        bits[zone.pcpu_slot / 64] |= 1 << (zone.pcpu_slot % 64);
        f.used.set(bits);
    });
    let c = super::register(zone, slot);
    // SAFETY: a registered cache lives until its slot is cleared.
    (!c.is_null()).then(|| unsafe { &*c })
}

/// pthread key destructor: flush every cache of the exiting thread, one
/// at a time through [`super::exit_flush`]: each leaves its zone's list
/// under the registry lock, and its buckets go back with no lock held.
extern "C" fn thread_exit(_: *mut libc::c_void) {
    let used = thread_flags(|f| {
        f.state.set(DEAD);
        f.used.get()
    });
    // SAFETY: this thread's own table, alive until the thread is gone.
    let s = unsafe { &*table_word::table() };
    {
        for (w, &word) in used.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let slot = &s[w * 64 + bits.trailing_zeros() as usize];
                bits &= bits - 1;
                if slot.load(Ordering::Relaxed) == super::empty() {
                    // Nothing to flush (re-read under the lock below
                    // otherwise), or its zone detached it.
                    continue;
                }
                // SAFETY: our own TLS slot; we are in none of our
                // operations (thread teardown) and never use the cache
                // again.
                unsafe { super::exit_flush(slot, REGISTRY.lock()) };
            }
        }
    }
}

// ---- fork (see `crate::fork`)

/// Fork prepare: the registry lock (after the zone lists and the page
/// sources' locks, before every zone and keg lock).
pub(crate) fn fork_lock_registry() {
    REGISTRY.force_lock();
}

/// Fork prepare: the slot and key locks (leaves).
pub(crate) fn fork_lock_leaves() {
    IDS.force_lock();
    KEY.force_lock();
}

/// Undoes [`fork_lock_leaves`].
///
/// # Safety
///
/// [`fork_lock_leaves`] was called by this thread (in a child: by the
/// thread that forked) and not yet undone.
pub(crate) unsafe fn fork_unlock_leaves() {
    // SAFETY: the caller's promise.
    unsafe {
        KEY.force_unlock();
        IDS.force_unlock();
    }
}

/// Undoes [`fork_lock_registry`].
///
/// # Safety
///
/// As [`fork_unlock_leaves`], for [`fork_lock_registry`].
pub(crate) unsafe fn fork_unlock_registry() {
    // SAFETY: the caller's promise.
    unsafe { REGISTRY.force_unlock() };
}

/// Whether `slot` is one of the calling thread's TLS slots.
pub(crate) fn is_own_slot(slot: *const AtomicPtr<Cache>) -> bool {
    // SAFETY: this thread's own live table, only its address range read.
    unsafe { (*table_word::table()).as_ptr_range().contains(&slot) }
}
