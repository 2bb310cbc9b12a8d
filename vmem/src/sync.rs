//! The one door to synchronization primitives.
//!
//! Every other module imports `crate::sync`; only this file names
//! `std::sync` or `loom`. Under `RUSTFLAGS="--cfg loom"` the
//! same names resolve to loom's model-checked twins.
//!
//! The wrappers give std and loom one calling convention: `lock()`
//! returns the guard directly (there is no poisoning to report), and a
//! condition-variable wait consumes and returns the guard.
//!
//! Outside loom the mutex and condition variable are our own, built like
//! std's Linux futex locks (a 3-state futex word; a futex sequence counter
//! for the condition variable). They exist for one thing std's cannot do:
//! fork safety. `pthread_atfork` handlers must take a lock in the prepare
//! handler and release it in the parent *and* the child handler, with no
//! guard object to carry between them, so the mutex offers
//! [`Mutex::force_lock`] and `unsafe` [`Mutex::force_unlock`]. Neither
//! allocates (parking_lot allocates its parking table through the global
//! allocator on first contention, which would recurse once kmem runs vmem
//! underneath `#[global_allocator]`).

#[cfg(not(loom))]
mod imp {
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
        /// Waits for a notification or until `timeout` passes, whichever is
        /// first. Callers re-check their condition either way.
        pub(crate) fn wait_timeout<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            timeout: Duration,
        ) -> MutexGuard<'a, T> {
            self.wait_raw(guard, timeout).0
        }
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::MutexGuard;
    use std::time::Duration;

    /// A mutex (loom's model-checked mutex).
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap()
        }

        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap()
        }
    }

    /// A condition variable paired with [`Mutex`].
    #[derive(Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Self(loom::sync::Condvar::new())
        }

        /// Under loom there is no clock: a timed wait is a plain wait, so a
        /// model must never rely on the timeout for progress.
        pub(crate) fn wait_timeout<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            _timeout: Duration,
        ) -> MutexGuard<'a, T> {
            self.0.wait(guard).unwrap()
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

pub(crate) use imp::{Condvar, Mutex, MutexGuard};
