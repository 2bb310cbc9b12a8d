//! The one door to atomics, locks and fences.
//!
//! This is the only file of the crate that names `std::sync::atomic` or
//! `loom`. Normally it re-exports std's atomics and the futex
//! `Mutex`/`Condvar` of the workspace's `futex` crate (built like std's
//! Linux ones, shared with vmem). They are our own
//! rather than std's for fork safety: the `pthread_atfork` handlers
//! ([`crate::fork`]) take every lock before a fork and release it in both
//! processes with no guard to carry between the handlers, which needs
//! `force_lock`/`force_unlock`. Neither allocates (parking_lot was ruled out
//! because its parking table is allocated through the global allocator on
//! first contention, and UMA must never allocate through it: kmem installs
//! UMA *as* the global allocator). Under `cfg(loom)` everything that takes
//! part in a protocol becomes loom's type, so the models in
//! `src/tests/loom_*.rs` explore it (fork handling is compiled out there).
//!
//! `unmodeled` holds counters that only feed statistics and heuristics
//! (request counts, the adaptive bucket size): they stay std atomics even
//! under loom, so the models do not branch on them.

/// Statistics and heuristics counters: never modeled by loom.
pub(crate) mod unmodeled {
    pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
}

#[cfg(not(loom))]
mod imp {
    pub(crate) use futex::{Condvar, Mutex, MutexGuard};
    use std::sync::atomic::compiler_fence;
    pub(crate) use std::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering,
    };

    /// An `UnsafeCell` with loom's closure API, so loom can check accesses.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(v: T) -> Self {
            Self(core::cell::UnsafeCell::new(v))
        }
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Yield while spinning on another thread's progress.
    pub(crate) fn spin_wait() {
        std::thread::yield_now();
    }

    const BARRIER_UNKNOWN: u8 = 0;
    const BARRIER_MEMBARRIER: u8 = 1;
    const BARRIER_MPROTECT: u8 = 2;
    static BARRIER_MODE: AtomicU8 = AtomicU8::new(BARRIER_UNKNOWN);
    /// Serializes the one-time choice of the barrier (a lock rather than a
    /// `Once`, so a fork prepare handler can hold it: a `Once` caught
    /// running by a fork would block the child forever).
    static BARRIER_LOCK: Mutex<()> = Mutex::new(());

    // linux/membarrier.h
    const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    /// Decides, once per process, how the drainer's heavy barrier is made:
    /// `membarrier(PRIVATE_EXPEDITED)` when the kernel has it, else the
    /// mprotect TLB-shootdown trick (a protection downgrade of a touched
    /// page interrupts every CPU running a thread of the process; folly's
    /// `asymmetricHeavyBarrier` fallback). Runs before the first cache is
    /// registered.
    pub(crate) fn init_barrier() {
        if BARRIER_MODE.load(Ordering::Acquire) != BARRIER_UNKNOWN {
            return;
        }
        let _g = BARRIER_LOCK.lock();
        if BARRIER_MODE.load(Ordering::Acquire) != BARRIER_UNKNOWN {
            return;
        }
        // SAFETY: membarrier(2) with QUERY/REGISTER takes no pointers; a
        // kernel without it returns -1 (ENOSYS), handled below.
        let mode = unsafe {
            let cmds = libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
            if cmds >= 0
                && cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED != 0
                && libc::syscall(
                    libc::SYS_membarrier,
                    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                    0,
                    0,
                ) == 0
            {
                BARRIER_MEMBARRIER
            } else {
                BARRIER_MPROTECT
            }
        };
        BARRIER_MODE.store(mode, Ordering::SeqCst);
    }

    /// True when the heavy barrier is `membarrier(2)` (false: mprotect).
    pub(crate) fn membarrier_active() -> bool {
        BARRIER_MODE.load(Ordering::Relaxed) == BARRIER_MEMBARRIER
    }

    /// Owner side of the asymmetric fence, between the busy store and the
    /// drain-flag load: a compiler fence only; the drainer's heavy barrier
    /// supplies the hardware barrier on this thread's CPU.
    #[inline(always)]
    pub(crate) fn owner_fence() {
        compiler_fence(Ordering::SeqCst);
    }

    static MPROTECT_PAGE: Mutex<usize> = Mutex::new(0);

    /// Drainer side of the asymmetric fence: after setting the drain flag,
    /// before reading the owner's busy flag.
    pub(crate) fn drainer_fence() {
        fence(Ordering::SeqCst);
        if BARRIER_MODE.load(Ordering::Relaxed) == BARRIER_MEMBARRIER {
            // SAFETY: PRIVATE_EXPEDITED takes no pointers; the process
            // registered for it in init_barrier().
            let r = unsafe {
                libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0)
            };
            if r != 0 {
                crate::debug::fatal(format_args!(
                    "uma: membarrier(PRIVATE_EXPEDITED) failed after registration"
                ));
            }
            return;
        }
        let mut page = MPROTECT_PAGE.lock();
        // SAFETY: one private anonymous page of ours, kept for the life of
        // the process; only this function touches it, under the mutex.
        unsafe {
            if *page == 0 {
                let p = libc::mmap(
                    core::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    crate::debug::fatal(format_args!("uma: no page for the mprotect barrier"));
                }
                *page = p as usize;
            }
            let p = *page as *mut libc::c_void;
            if libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                crate::debug::fatal(format_args!("uma: mprotect barrier failed"));
            }
            // Touch it so it is in the TLB and the downgrade must shoot down.
            core::ptr::write_volatile(p as *mut u32, 0);
            if libc::mprotect(p, 4096, libc::PROT_READ) != 0 {
                crate::debug::fatal(format_args!("uma: mprotect barrier failed"));
            }
        }
        fence(Ordering::SeqCst);
    }

    /// Fork prepare: takes the barrier's locks (leaves of the lock order:
    /// nothing else is locked while they are held).
    pub(crate) fn fork_prepare() {
        BARRIER_LOCK.force_lock();
        MPROTECT_PAGE.force_lock();
    }

    /// Fork parent/child: releases what [`fork_prepare`] took.
    ///
    /// # Safety
    ///
    /// [`fork_prepare`] was called by this thread (in a child: by the thread
    /// that forked) and not yet undone.
    pub(crate) unsafe fn fork_release() {
        // SAFETY: the caller's promise.
        unsafe {
            MPROTECT_PAGE.force_unlock();
            BARRIER_LOCK.force_unlock();
        }
    }

    /// Fork child: registers the child for `membarrier` again if the parent
    /// used it (a no-op where the registration is inherited); falls back to
    /// the mprotect barrier if that fails.
    pub(crate) fn fork_child() {
        if BARRIER_MODE.load(Ordering::Relaxed) != BARRIER_MEMBARRIER {
            return;
        }
        // SAFETY: REGISTER takes no pointers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
                0,
            )
        };
        if r != 0 {
            BARRIER_MODE.store(BARRIER_MPROTECT, Ordering::SeqCst);
        }
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{
        fence, AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering,
    };

    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);
    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Self(loom::sync::Mutex::new(v))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap()
        }
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }

    #[derive(Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }
        /// Under loom there is no time: a plain wait that never times out
        /// (the protocol must not rely on the timeout for progress, and the
        /// model checks that).
        pub(crate) fn wait_timeout<'a, T>(
            &self,
            g: MutexGuard<'a, T>,
            _timeout: std::time::Duration,
        ) -> (MutexGuard<'a, T>, bool) {
            (self.0.wait(g).unwrap(), false)
        }
        pub(crate) fn notify_all(&self) {
            self.0.notify_all()
        }
    }

    pub(crate) fn spin_wait() {
        loom::thread::yield_now();
    }
    pub(crate) fn init_barrier() {}
    pub(crate) fn membarrier_active() -> bool {
        false
    }
    /// membarrier modeled as a SeqCst fence on both sides.
    pub(crate) fn owner_fence() {
        fence(Ordering::SeqCst);
    }
    pub(crate) fn drainer_fence() {
        fence(Ordering::SeqCst);
    }
}

pub(crate) use imp::*;
