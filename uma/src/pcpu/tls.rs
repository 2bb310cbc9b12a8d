//! The thread-local side of the per-thread caches: a table of cache
//! pointers indexed by the zone's slot, and the thread-exit flush.
//!
//! The table is a `const`-initialised thread-local without a destructor, so
//! it is reachable at any time in the thread's life, TLS teardown included,
//! and its access compiles to a thread-pointer-relative load. Thread exit is
//! caught by a pthread key destructor (std's TLS destructor list allocates
//! through the global allocator, which UMA must never do).

use core::cell::Cell;
use core::ptr::NonNull;

use super::{Cache, GATE_ALLOC, GATE_DRAIN, GATE_FREE};
use crate::sync::{AtomicPtr, Mutex, Ordering};
use crate::zone::Zone;

/// Zones with a per-thread cache slot at once; more zones work, uncached.
pub(crate) const MAX_SLOTS: usize = 512;
/// The slot of zones without per-thread caches: always `EMPTY_CACHE`.
pub(crate) const NO_SLOT: usize = MAX_SLOTS;

const NO_GUARD: u8 = 0;
const GUARDED: u8 = 1;
const DEAD: u8 = 2;

std::thread_local! {
    static SLOTS: [AtomicPtr<Cache>; MAX_SLOTS + 1] =
        const { [const { AtomicPtr::new(&super::EMPTY_CACHE as *const Cache as *mut Cache) }; MAX_SLOTS + 1] };
    static STATE: Cell<u8> = const { Cell::new(NO_GUARD) };
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

/// Runs `f` on this thread's cache in `slot` (`EMPTY_CACHE` when it has
/// none).
///
/// # Safety
///
/// `slot <= MAX_SLOTS`, and the zone that owns `slot` is not destroyed
/// meanwhile (its caches are freed then, and the slot reused later).
#[inline(always)]
unsafe fn with_cache<R>(slot: usize, f: impl FnOnce(&Cache) -> R) -> R {
    SLOTS.with(|s| {
        // SAFETY: caller contract.
        let c = unsafe { s.get_unchecked(slot) }.load(Ordering::Relaxed);
        // SAFETY: a slot holds EMPTY_CACHE or this thread's registered
        // cache, which is only freed after the slot is reset (zone destroy,
        // thread exit), never during one of this thread's operations.
        f(unsafe { &*c })
    })
}

/// Fast path: pop from this thread's cache of `zone` (`None` on miss,
/// including a gate bit of `mask`: see [`Cache::fast_pop`]).
#[inline(always)]
pub(crate) fn fast_alloc(zone: &Zone, mask: u8) -> Option<NonNull<u8>> {
    // SAFETY: pcpu_slot <= MAX_SLOTS by construction; the zone is alive.
    unsafe { with_cache(zone.pcpu_slot, |c| c.fast_pop(mask)) }
}

/// Fast path: push into this thread's cache of `zone` (false on miss,
/// including a gate bit of `mask`).
#[inline(always)]
pub(crate) fn fast_free(zone: &Zone, item: *mut u8, mask: u8) -> bool {
    // SAFETY: as fast_alloc.
    unsafe { with_cache(zone.pcpu_slot, |c| c.fast_push(item, mask)) }
}

/// As [`fast_free`], for zones whose frees go through `free_prep` (limit,
/// dtor, INVARIANTS): a limit sleeper vetoes caching the item.
#[inline(always)]
pub(crate) fn fast_free_unless_sleepers(zone: &Zone, item: *mut u8) -> super::Push {
    // SAFETY: as fast_alloc.
    unsafe { with_cache(zone.pcpu_slot, |c| c.fast_push_unless(item, &zone.sleepers)) }
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
        // SAFETY: slots come from `Zone::fast_slot` (<= MAX_SLOTS, see
        // `from_bits`); the caller keeps the zone alive.
        unsafe { with_cache(self.0 as usize, |c| c.fast_pop(GATE_DRAIN | GATE_ALLOC)) }
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
        // SAFETY: as alloc.
        unsafe {
            with_cache(self.0 as usize, |c| {
                c.fast_push(item.as_ptr(), GATE_DRAIN | GATE_FREE)
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
    let slot: *const AtomicPtr<Cache> = SLOTS.with(|s| &s[zone.pcpu_slot] as *const _);
    // SAFETY: our own live TLS slot.
    let c = unsafe { (*slot).load(Ordering::Relaxed) };
    if c != super::empty() {
        // SAFETY: as fast_alloc.
        return Some(unsafe { &*c });
    }
    match STATE.with(|s| s.get()) {
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
            STATE.with(|s| s.set(GUARDED));
        }
        _ => {}
    }
    let c = super::register(zone, slot);
    // SAFETY: a registered cache lives until its slot is cleared.
    (!c.is_null()).then(|| unsafe { &*c })
}

/// pthread key destructor: flush every cache of the exiting thread, one
/// at a time through [`super::exit_flush`]: each leaves its zone's list
/// under the registry lock, and its buckets go back with no lock held.
extern "C" fn thread_exit(_: *mut libc::c_void) {
    STATE.with(|s| s.set(DEAD));
    SLOTS.with(|s| {
        for slot in s.iter().take(MAX_SLOTS) {
            if slot.load(Ordering::Relaxed) == super::empty() {
                // Nothing to flush (re-read under the lock below otherwise).
                continue;
            }
            // SAFETY: our own TLS slot; we are in none of our operations
            // (thread teardown) and never use the cache again.
            unsafe { super::exit_flush(slot, REGISTRY.lock()) };
        }
    });
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
    SLOTS.with(|s| s.as_ptr_range().contains(&slot))
}
