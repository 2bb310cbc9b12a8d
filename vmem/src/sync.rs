//! The one door to synchronization primitives.
//!
//! Every other module imports `crate::sync`; only this file names
//! `std::sync` or `loom`. Under `RUSTFLAGS="--cfg loom"` the
//! same names resolve to loom's model-checked twins.
//!
//! The wrappers give std and loom one calling convention: `lock()`
//! returns the guard directly (there is no poisoning to report), and a
//! condition-variable wait consumes and returns the guard.

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::MutexGuard;
    use std::time::Duration;

    /// A mutex: std's, which on Linux is a futex word and never allocates.
    /// (parking_lot allocates its parking table through the global
    /// allocator on first contention, which would recurse once kmem runs
    /// vmem underneath `#[global_allocator]`.) Poisoning is ignored: arena
    /// state is never left half-changed across a panic point.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::sync::Mutex::new(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap_or_else(|e| e.into_inner())
        }
    }

    /// A condition variable paired with [`Mutex`] (futex-based, no heap).
    #[derive(Debug)]
    pub(crate) struct Condvar(std::sync::Condvar);

    impl Condvar {
        pub(crate) const fn new() -> Self {
            Self(std::sync::Condvar::new())
        }

        /// Waits for a notification or until `timeout` passes, whichever is
        /// first. Callers re-check their condition either way.
        pub(crate) fn wait_timeout<'a, T>(
            &self,
            guard: MutexGuard<'a, T>,
            timeout: Duration,
        ) -> MutexGuard<'a, T> {
            match self.0.wait_timeout(guard, timeout) {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            }
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
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
