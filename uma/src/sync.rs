//! The one door to atomics, locks and fences.
//!
//! This is the only file of the crate that names `std::sync::atomic` or
//! `loom`. Normally it re-exports std's atomics and provides a futex
//! `Mutex`/`Condvar` built like std's Linux ones (a 3-state futex word; a
//! futex sequence counter for the condition variable). They are our own
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

    /// The futex mutex and condition variable (see the module doc).
    mod futex {
        use core::cell::UnsafeCell;
        use core::fmt;
        use core::marker::PhantomData;
        use core::ops::{Deref, DerefMut};
        use core::sync::atomic::AtomicU32;
        use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
        use std::time::Duration;

        /// Mutex futex word states (as std's Linux mutex).
        const UNLOCKED: u32 = 0;
        /// Locked, no waiter.
        const LOCKED: u32 = 1;
        /// Locked, and a waiter may sleep in `FUTEX_WAIT`: unlock must wake.
        const CONTENDED: u32 = 2;

        /// `FUTEX_WAIT` on `futex` while it holds `expected`, for at most
        /// `timeout`. Returns false when the time ran out; true on a wake-up,
        /// a changed value or a signal (the caller re-checks either way).
        fn futex_wait(futex: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
            let ts = timeout.map(|d| libc::timespec {
                tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            });
            let tsp = ts
                .as_ref()
                .map_or(core::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: FUTEX_WAIT reads the futex word (a live AtomicU32) and the
            // optional relative timeout (a live timespec on our stack).
            let r = unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    futex.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    expected,
                    tsp,
                )
            };
            // SAFETY: errno is thread-local and always readable.
            r == 0 || unsafe { *libc::__errno_location() } != libc::ETIMEDOUT
        }

        /// Wakes up to `n` threads sleeping on `futex`.
        fn futex_wake(futex: &AtomicU32, n: i32) {
            // SAFETY: FUTEX_WAKE only uses the address as a key.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    futex.as_ptr(),
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    n,
                );
            }
        }

        /// A mutex: a futex word, as std's on Linux (no heap, no poisoning),
        /// plus [`force_lock`](Self::force_lock) /
        /// [`force_unlock`](Self::force_unlock) for `pthread_atfork` handlers.
        pub(crate) struct Mutex<T> {
            futex: AtomicU32,
            data: UnsafeCell<T>,
        }

        // SAFETY: the data is only reached through the lock (a guard, or a
        // force_lock holder through `data_ptr`), which hands it to one thread
        // at a time: a mutex of `Send` data is `Send` and `Sync`, as std's.
        unsafe impl<T: Send> Send for Mutex<T> {}
        // SAFETY: as above.
        unsafe impl<T: Send> Sync for Mutex<T> {}

        impl<T> fmt::Debug for Mutex<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("Mutex")
                    .field("locked", &(self.futex.load(Relaxed) != UNLOCKED))
                    .finish_non_exhaustive()
            }
        }

        impl<T> Mutex<T> {
            pub(crate) const fn new(value: T) -> Self {
                Self {
                    futex: AtomicU32::new(UNLOCKED),
                    data: UnsafeCell::new(value),
                }
            }

            #[inline]
            pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
                self.raw_lock();
                MutexGuard {
                    lock: self,
                    _not_send: PhantomData,
                }
            }

            #[allow(dead_code)]
            #[inline]
            pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
                self.futex
                    .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
                    .ok()
                    .map(|_| MutexGuard {
                        lock: self,
                        _not_send: PhantomData,
                    })
            }

            #[allow(dead_code)]
            pub(crate) fn get_mut(&mut self) -> &mut T {
                self.data.get_mut()
            }

            /// Takes the lock with no guard (fork prepare handlers). The lock
            /// stays held until [`force_unlock`](Self::force_unlock).
            #[allow(dead_code)]
            pub(crate) fn force_lock(&self) {
                self.raw_lock();
            }

            /// Releases a lock taken with [`force_lock`](Self::force_lock).
            ///
            /// # Safety
            ///
            /// The lock is held through `force_lock` by the calling thread (or,
            /// in a fork child, was held by the thread that forked, which is the
            /// calling thread), and no reference from [`data_ptr`](Self::data_ptr)
            /// outlives the call.
            #[allow(dead_code)]
            pub(crate) unsafe fn force_unlock(&self) {
                // SAFETY: the caller's promise.
                unsafe { self.raw_unlock() }
            }

            /// The protected data, for a holder of [`force_lock`](Self::force_lock).
            /// Dereferencing it is `unsafe`: only while the lock is held that way.
            #[allow(dead_code)]
            pub(crate) fn data_ptr(&self) -> *mut T {
                self.data.get()
            }

            #[inline]
            fn raw_lock(&self) {
                if self
                    .futex
                    .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
                    .is_err()
                {
                    self.lock_contended();
                }
            }

            /// std's `lock_contended`: spin a little while the holder runs, then
            /// mark the word contended and sleep on it.
            #[cold]
            #[inline(never)]
            fn lock_contended(&self) {
                let mut state = self.spin();
                if state == UNLOCKED {
                    match self
                        .futex
                        .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
                    {
                        Ok(_) => return,
                        Err(s) => state = s,
                    }
                }
                loop {
                    // Marking it CONTENDED makes the holder's unlock wake us (and
                    // whoever we then hand it to: we may not be the last waiter).
                    if state != CONTENDED && self.futex.swap(CONTENDED, Acquire) == UNLOCKED {
                        return;
                    }
                    futex_wait(&self.futex, CONTENDED, None);
                    state = self.spin();
                }
            }

            fn spin(&self) -> u32 {
                let mut spin = 100;
                loop {
                    let state = self.futex.load(Relaxed);
                    if state != LOCKED || spin == 0 {
                        return state;
                    }
                    core::hint::spin_loop();
                    spin -= 1;
                }
            }

            /// # Safety
            ///
            /// The lock is held by the caller (a guard being dropped, or
            /// `force_unlock`).
            #[inline]
            unsafe fn raw_unlock(&self) {
                if self.futex.swap(UNLOCKED, Release) == CONTENDED {
                    self.wake();
                }
            }

            #[cold]
            #[inline(never)]
            fn wake(&self) {
                futex_wake(&self.futex, 1);
            }
        }

        /// Proof of holding a [`Mutex`]; unlocks on drop.
        pub(crate) struct MutexGuard<'a, T> {
            lock: &'a Mutex<T>,
            /// Not `Send` (nor `Sync` for non-`Sync` data), like std's guard.
            _not_send: PhantomData<*const ()>,
        }

        // SAFETY: sharing a guard shares `&T` only.
        unsafe impl<T: Sync> Sync for MutexGuard<'_, T> {}

        impl<T> Deref for MutexGuard<'_, T> {
            type Target = T;
            #[inline]
            fn deref(&self) -> &T {
                // SAFETY: the guard holds the lock.
                unsafe { &*self.lock.data.get() }
            }
        }

        impl<T> DerefMut for MutexGuard<'_, T> {
            #[inline]
            fn deref_mut(&mut self) -> &mut T {
                // SAFETY: the guard holds the lock, and `&mut self` is unique.
                unsafe { &mut *self.lock.data.get() }
            }
        }

        impl<T> Drop for MutexGuard<'_, T> {
            #[inline]
            fn drop(&mut self) {
                // SAFETY: the guard holds the lock.
                unsafe { self.lock.raw_unlock() }
            }
        }

        impl<T> fmt::Debug for MutexGuard<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("MutexGuard { .. }")
            }
        }

        /// A condition variable paired with [`Mutex`]: a futex sequence counter
        /// (std's Linux condvar). No heap.
        pub(crate) struct Condvar {
            futex: AtomicU32,
        }

        impl fmt::Debug for Condvar {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("Condvar { .. }")
            }
        }

        impl Condvar {
            pub(crate) const fn new() -> Self {
                Self {
                    futex: AtomicU32::new(0),
                }
            }

            /// Unlocks, sleeps until notified (or `timeout`, or spuriously), and
            /// locks again. Returns the guard and whether the time ran out.
            fn wait_raw<'a, T>(
                &self,
                guard: MutexGuard<'a, T>,
                timeout: Duration,
            ) -> (MutexGuard<'a, T>, bool) {
                // Read the sequence before unlocking: a notify after this point
                // changes it, so the wait below returns at once instead of
                // missing it.
                let seq = self.futex.load(Relaxed);
                let lock = guard.lock;
                drop(guard);
                let woke = futex_wait(&self.futex, seq, Some(timeout));
                (lock.lock(), !woke)
            }

            pub(crate) fn notify_all(&self) {
                self.futex.fetch_add(1, Relaxed);
                futex_wake(&self.futex, i32::MAX);
            }
        }

        impl Condvar {
            /// Sleeps at most `ms` milliseconds (spurious wake-ups allowed);
            /// true when the time ran out.
            pub(crate) fn wait_timeout<'a, T>(
                &self,
                g: MutexGuard<'a, T>,
                ms: u64,
            ) -> (MutexGuard<'a, T>, bool) {
                self.wait_raw(g, Duration::from_millis(ms))
            }
        }
    }

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
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicUsize, Ordering};

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
            _ms: u64,
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
