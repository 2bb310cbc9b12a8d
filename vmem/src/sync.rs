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
//! Outside loom the mutex and condition variable are the workspace's
//! `futex` crate (shared with uma), built like
//! std's Linux futex locks (a 3-state futex word; a futex sequence counter
//! for the condition variable). They exist for one thing std's cannot do:
//! fork safety. `pthread_atfork` handlers must take a lock in the prepare
//! handler and release it in the parent *and* the child handler, with no
//! guard object to carry between them, so the mutex offers
//! [`Mutex::force_lock`] and `unsafe` [`Mutex::force_unlock`]. Neither
//! allocates (parking_lot allocates its parking table through the global
//! allocator on first contention, which would recurse once kmem runs vmem
//! underneath `#[global_allocator]`).

#[cfg(all(not(loom), feature = "std"))]
mod imp {
    pub(crate) use futex::{Condvar, Mutex, MutexGuard};
}

/// Without `std` (a kernel, a hypervisor, firmware): a test-and-test-and-set
/// spin lock, and a "condition variable" whose wait drops the lock, spins a
/// while and retakes it (a `WAITOK` sleeper then polls, as it does every
/// 50 ms with std). Arena locks are held for short, bounded sections.
#[cfg(all(not(loom), not(feature = "std")))]
mod imp {
    use core::cell::UnsafeCell;
    use core::marker::PhantomData;
    use core::ops::{Deref, DerefMut};
    use core::sync::atomic::{AtomicBool, Ordering};
    use core::time::Duration;

    /// A spin lock.
    pub(crate) struct Mutex<T> {
        locked: AtomicBool,
        value: UnsafeCell<T>,
    }

    // SAFETY: the lock gives one thread at a time access to the value, so
    // it may be shared if the value may be sent.
    unsafe impl<T: Send> Sync for Mutex<T> {}
    // SAFETY: owning the mutex is owning the value.
    unsafe impl<T: Send> Send for Mutex<T> {}

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            Mutex {
                locked: AtomicBool::new(false),
                value: UnsafeCell::new(value),
            }
        }

        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            while self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                while self.locked.load(Ordering::Relaxed) {
                    core::hint::spin_loop();
                }
            }
            MutexGuard {
                lock: self,
                _not_send: PhantomData,
            }
        }

        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.value.get_mut()
        }

        /// Whether someone holds the lock (a snapshot).
        pub(crate) fn is_locked(&self) -> bool {
            self.locked.load(Ordering::Relaxed)
        }

        /// The value, unguarded.
        pub(crate) fn data_ptr(&self) -> *mut T {
            self.value.get()
        }
    }

    impl<T> core::fmt::Debug for Mutex<T> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("Mutex { .. }")
        }
    }

    /// Proof that the lock is held; releases it when dropped.
    pub(crate) struct MutexGuard<'a, T> {
        lock: &'a Mutex<T>,
        _not_send: PhantomData<*const ()>,
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: the guard holds the lock: no one else touches the value.
            unsafe { &*self.lock.value.get() }
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: as in `deref`, and `&mut self` makes the access unique.
            unsafe { &mut *self.lock.value.get() }
        }
    }

    impl<T> Drop for MutexGuard<'_, T> {
        #[inline]
        fn drop(&mut self) {
            self.lock.locked.store(false, Ordering::Release);
        }
    }

    /// A condition variable for [`Mutex`] that polls (see the module).
    #[derive(Debug)]
    pub(crate) struct Condvar(());

    impl Condvar {
        pub(crate) const fn new() -> Self {
            Condvar(())
        }

        /// Drops the lock, spins about `2^16` times, retakes it; always
        /// reports a timeout (callers re-check their condition anyway).
        pub(crate) fn wait_timeout<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            _timeout: Duration,
        ) -> (MutexGuard<'a, T>, bool) {
            let lock = guard.lock;
            drop(guard);
            for _ in 0..1 << 16 {
                core::hint::spin_loop();
            }
            (lock.lock(), true)
        }

        pub(crate) fn notify_all(&self) {}
    }
}

#[cfg(loom)]
mod imp {
    use core::time::Duration;
    pub(crate) use loom::sync::MutexGuard;

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
        ) -> (MutexGuard<'a, T>, bool) {
            (self.0.wait(guard).unwrap(), false)
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

pub(crate) use imp::{Condvar, Mutex, MutexGuard};

/// The value behind `m` without taking the lock, if nobody holds it: for
/// a caller that owns the only way to reach `m` from one thread at a time
/// ([`LocalArena`](crate::LocalArena)), so that an operation that needs
/// nothing but the value skips the lock's two atomic instructions. `None`
/// while the lock is held (by the caller's own slow road, further up its
/// stack) and always under loom, which models the lock.
///
/// # Safety
///
/// No other thread can reach `m` until the borrow ends, and the caller
/// takes no lock on `m` (and makes no call that may) while it lives.
// The exclusive borrow out of a shared one is the point: the caller's
// promise stands in for the lock.
#[allow(clippy::mut_from_ref)]
#[inline(always)]
pub(crate) unsafe fn unlocked_mut<T>(m: &Mutex<T>) -> Option<&mut T> {
    #[cfg(not(loom))]
    {
        if m.is_locked() {
            return None;
        }
        // SAFETY: the lock is free and, by the caller's promise, nobody
        // else can take it while the borrow lives: the value is ours.
        Some(unsafe { &mut *m.data_ptr() })
    }
    #[cfg(loom)]
    {
        let _ = m;
        None
    }
}
