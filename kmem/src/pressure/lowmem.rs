//! Low-memory handlers and the reclaim pass that runs them (single
//! flight, rate-limited) before an allocation fails.

use super::*;

/// How bad it is, for a low-memory handler (FreeBSD `vm_lowmem` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LowMemLevel {
    /// Usage went above the soft threshold: trim what is cheap to trim.
    Soft,
    /// An allocation is about to fail or sleep: give back all you can.
    Hard,
}

/// A low-memory handler. It runs on an allocating thread, inside the
/// reclaim pass: it should free memory and return; its own allocations
/// are `NOWAIT` in effect and do not trigger a nested pass.
pub type LowMemHandler = fn(LowMemLevel);

/// Slots in the handler table.
pub const LOWMEM_SLOTS: usize = 32;

pub(super) static HANDLERS: [AtomicUsize; LOWMEM_SLOTS] =
    [const { AtomicUsize::new(0) }; LOWMEM_SLOTS];

/// Registers a low-memory handler (FreeBSD `EVENTHANDLER_REGISTER(vm_lowmem)`).
/// Returns false when the table (of [`LOWMEM_SLOTS`]) is full. Registering
/// the same function twice runs it twice.
pub fn register_lowmem(f: LowMemHandler) -> bool {
    let v = f as usize;
    HANDLERS.iter().any(|s| {
        s.compare_exchange(0, v, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

/// Removes one registration of `f`; false if it was not registered.
pub fn unregister_lowmem(f: LowMemHandler) -> bool {
    let v = f as usize;
    HANDLERS.iter().any(|s| {
        s.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

pub(super) fn run_lowmem(level: LowMemLevel) {
    for s in &HANDLERS {
        let v = s.load(Ordering::Acquire);
        if v != 0 {
            // SAFETY: only `LowMemHandler` values are stored in the table
            // (register_lowmem), and fn pointers are never null.
            let f: LowMemHandler = unsafe { core::mem::transmute::<usize, LowMemHandler>(v) };
            C.handler_calls.fetch_add(1, Ordering::Relaxed);
            f(level);
        }
    }
}

// ---------------------------------------------------------------- reclaim

pub(super) static RECLAIM_BUSY: AtomicBool = AtomicBool::new(false);
pub(super) static RECLAIM_GEN: AtomicU64 = AtomicU64::new(0);
pub(super) static LAST_PASS: AtomicU64 = AtomicU64::new(0);

/// The kernel arena's reclaim hook (vmem calls it without the arena lock
/// before an allocation sleeps or fails).
pub(crate) fn arena_reclaim(_flags: vmem::Flags) {
    reclaim_pass(LowMemLevel::Hard);
}

/// One bounded pass: low-memory handlers, then every zone's per-thread
/// caches, bucket cache and free slabs beyond reserves (the arena's
/// quantum-cache zones included; application zones with callbacks are
/// left out: [`reclaim_zones`]). Skipped when nested; single-flight (a
/// thread that finds a pass running waits a bounded while for it); at
/// most one pass per millisecond.
pub(super) fn reclaim_pass(level: LowMemLevel) {
    if nest() & (NEST_RECLAIM | NEST_BTAG) != 0 {
        C.skipped_nested.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Some(k) = kernel() else { return };
    let now = now_ns();
    if now.wrapping_sub(LAST_PASS.load(Ordering::Relaxed)) < RECLAIM_MIN_INTERVAL_NS {
        C.skipped_rate.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if RECLAIM_BUSY
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        // Someone is reclaiming for us all: wait (bounded) for it.
        let gen = RECLAIM_GEN.load(Ordering::Acquire);
        let backoff = crossbeam_utils::Backoff::new();
        for _ in 0..1000 {
            if RECLAIM_GEN.load(Ordering::Acquire) != gen {
                break;
            }
            backoff.snooze();
        }
        C.skipped_rate.fetch_add(1, Ordering::Relaxed);
        return;
    }
    {
        let _n = NestGuard::new(NEST_RECLAIM);
        C.passes.fetch_add(1, Ordering::Relaxed);
        run_lowmem(level);
        let zones = reclaim_zones(k, uma::Reclaim::DrainCpu);
        C.zones_visited.fetch_add(zones as u64, Ordering::Relaxed);
        crate::kernel::settle_tags(k);
        crate::dirty::purge_all(k.arena);
    }
    LAST_PASS.store(now_ns(), Ordering::Relaxed);
    RECLAIM_GEN.fetch_add(1, Ordering::AcqRel);
    RECLAIM_BUSY.store(false, Ordering::Release);
    wake_waiters();
}

/// A kernel-arena allocation failed after its charge passed (the arena is
/// at its cap with room held in caches, or fragmented): runs a pass now,
/// past the rate limit, and says whether retrying is worth it (false when
/// nested: no pass ran).
pub(crate) fn reclaim_for_retry() -> bool {
    if nest() & (NEST_RECLAIM | NEST_BTAG) != 0 || kernel().is_none() {
        return false;
    }
    reclaim_now();
    true
}

/// Runs a full reclaim pass now (low-memory handlers at [`LowMemLevel::Hard`],
/// then every cache, bucket cache, free slab and the quantum cache), unless
/// one ran within the last millisecond or this thread is inside one. As
/// every pass, it leaves application zones with a fini, a release or
/// their own page source to the reclaim worker; [`reclaim`](crate::reclaim)
/// covers them too.
pub fn reclaim_now() {
    LAST_PASS.store(0, Ordering::Relaxed);
    reclaim_pass(LowMemLevel::Hard);
}
