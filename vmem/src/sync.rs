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

#[cfg(not(loom))]
mod imp {
    pub(crate) use futex::{Condvar, Mutex, MutexGuard};
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
        ) -> (MutexGuard<'a, T>, bool) {
            (self.0.wait(guard).unwrap(), false)
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}

pub(crate) use imp::{Condvar, Mutex, MutexGuard};
