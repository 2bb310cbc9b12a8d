//! The reclaim worker: an opt-in thread that runs the timeout pass and
//! the application zones' reclaims.

use super::*;

pub(super) static WORKER_RUNNING: AtomicBool = AtomicBool::new(false);
pub(super) static WORKER_STOP: AtomicBool = AtomicBool::new(false);
/// A pass in an allocating thread left the application zones with
/// callbacks alone ([`reclaim_zones`]): the worker reclaims every zone at
/// its next period.
pub(super) static APP_RECLAIM_DUE: AtomicU8 = AtomicU8::new(DUE_NONE);
pub(super) const DUE_NONE: u8 = 0;
pub(super) const DUE_TRIM: u8 = 1;
pub(super) const DUE_DRAIN_CPU: u8 = 2;

/// Starts the reclaim worker (off by default): every `period` it runs UMA's
/// periodic trim (`uma_timeout`: working-set estimates, bucket caches
/// trimmed to them), purges dirty pages and retained spans past their decay
/// time (so an idle program's resident set falls too) and, above the soft
/// threshold, a soft pass. After a reclaim pass ran in an allocating
/// thread, which leaves application zones with callbacks alone, it first
/// runs that pass's reclaim (`Trim` or `DrainCpu`) over every zone (their
/// callbacks run in the worker, which holds none of the application's
/// locks). One pass per period at most. Returns
/// false if it is already running.
pub fn start_reclaim_worker(period: Duration) -> bool {
    if WORKER_RUNNING
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    WORKER_STOP.store(false, Ordering::Release);
    let period = period.max(Duration::from_millis(1));
    let spawned = std::thread::Builder::new()
        .name("kmem-reclaim".into())
        .spawn(move || {
            while !WORKER_STOP.load(Ordering::Acquire) {
                std::thread::sleep(period);
                if let Some(k) = kernel() {
                    let due = APP_RECLAIM_DUE.swap(DUE_NONE, Ordering::Relaxed);
                    let how = match due {
                        DUE_NONE => None,
                        DUE_TRIM => Some(uma::Reclaim::Trim),
                        _ => Some(uma::Reclaim::DrainCpu),
                    };
                    if let Some(how) = how {
                        if !k.uma.reclaim(how) {
                            // Another pass held the reclaim lock: next period.
                            APP_RECLAIM_DUE.fetch_max(due, Ordering::Relaxed);
                        }
                    }
                    k.uma.timeout();
                    crate::dirty::purge_old(k.arena);
                    let limit = LIMIT_PAGES.load(Ordering::Relaxed);
                    let (c, r) = account().get();
                    if limit != 0 && (c + r) * 100 > limit * SOFT_PCT.load(Ordering::Relaxed) as u64
                    {
                        soft_pass();
                    }
                }
            }
            WORKER_RUNNING.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        WORKER_RUNNING.store(false, Ordering::Release);
        return false;
    }
    true
}

/// Asks the reclaim worker to stop (it exits within one period).
pub fn stop_reclaim_worker() {
    WORKER_STOP.store(true, Ordering::Release);
}

/// Whether the reclaim worker is running.
pub fn reclaim_worker_running() -> bool {
    WORKER_RUNNING.load(Ordering::Acquire)
}
