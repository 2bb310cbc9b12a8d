//! A futex `Mutex` and `Condvar` for the allocator crates, built like
//! std's Linux ones (a 3-state futex word; a futex sequence counter for the
//! condition variable), shared by the `sync` shims of `vmem` and `uma`.
//!
//! The lock itself is [`RawFutex`], a [`lock_api::RawMutex`]; the guards
//! are `lock_api`'s ([`MutexGuard`], with [`MutexGuard::map`],
//! `try_map`, `unlocked` and the rest), so nothing here hand-rolls what
//! `lock_api` gives. The spin before sleeping is
//! [`crossbeam_utils::Backoff`]'s.
//!
//! Why not parking_lot, whose raw-lock layer this uses: parking_lot
//! allocates its parking table through the global allocator on the first
//! contended lock, which would recurse once kmem runs underneath
//! `#[global_allocator]` (and deadlock or abort inside `malloc` under
//! `LD_PRELOAD`). `RawFutex` sleeps on its own futex word and allocates
//! nothing; neither do `lock_api` and `Backoff`.
//!
//! They exist for what std's cannot do: fork safety. `pthread_atfork`
//! handlers take a lock in the prepare handler and release it in the parent
//! *and* the child handler, with no guard object to carry between them, so
//! the mutex offers [`Mutex::force_lock`] and `unsafe`
//! [`Mutex::force_unlock`]. There is no poisoning: `lock()` returns the
//! guard.
//!
//! ```
//! let m = futex::Mutex::new(vec![1, 2, 3]);
//! let first = futex::MutexGuard::map(m.lock(), |v| &mut v[0]);
//! assert_eq!(*first, 1);
//! ```
//!
//! Linux only (`SYS_futex`). Each crate reaches these types through its own
//! `sync` module, which swaps in loom's under `cfg(loom)`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "bsdalloc supports Linux only (this crate sleeps on SYS_futex); this target is not Linux"
);

use core::fmt;
use core::sync::atomic::AtomicU32;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use crossbeam_utils::Backoff;
use std::time::Duration;

/// Mutex futex word states (as std's Linux mutex).
const UNLOCKED: u32 = 0;
/// Locked, no waiter.
const LOCKED: u32 = 1;
/// Locked, and a waiter may sleep in `FUTEX_WAIT`: unlock must wake.
const CONTENDED: u32 = 2;

/// Rounds of `Backoff::spin` before a contended lock sleeps: 1 + 2 + ...
/// + 64 spin hints.
const SPIN_ROUNDS: u32 = 7;

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

/// The raw lock: a futex word, as std's Linux mutex (no heap). Use it
/// through [`Mutex`] (or `lock_api::Mutex<RawFutex, T>` directly).
pub struct RawFutex {
    futex: AtomicU32,
}

impl fmt::Debug for RawFutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawFutex")
            .field("locked", &(self.futex.load(Relaxed) != UNLOCKED))
            .finish()
    }
}

// SAFETY: `lock` and `try_lock` succeed only on the UNLOCKED -> LOCKED (or
// CONTENDED) transition of the futex word with Acquire ordering, so one
// holder at a time; `unlock` stores UNLOCKED with Release. The guard
// marker is `GuardNoSend`: a guard is unlocked by the thread that locked.
unsafe impl lock_api::RawMutex for RawFutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: RawFutex = RawFutex {
        futex: AtomicU32::new(UNLOCKED),
    };
    type GuardMarker = lock_api::GuardNoSend;

    #[inline]
    fn lock(&self) {
        if self
            .futex
            .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.futex
            .compare_exchange(UNLOCKED, LOCKED, Acquire, Relaxed)
            .is_ok()
    }

    #[inline]
    unsafe fn unlock(&self) {
        if self.futex.swap(UNLOCKED, Release) == CONTENDED {
            self.wake();
        }
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.futex.load(Relaxed) != UNLOCKED
    }
}

impl RawFutex {
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

    /// Spins with exponential backoff while the word says locked with no
    /// sleeper; returns the state seen last. [`SPIN_ROUNDS`] rounds of
    /// `Backoff::spin` are 127 `spin_loop` hints in all, about std's 100.
    /// (`Backoff::is_completed` is no bound here: it only turns true
    /// after `snooze` rounds, which yield.)
    fn spin(&self) -> u32 {
        let backoff = Backoff::new();
        let mut rounds = 0;
        loop {
            let state = self.futex.load(Relaxed);
            if state != LOCKED || rounds == SPIN_ROUNDS {
                return state;
            }
            backoff.spin();
            rounds += 1;
        }
    }

    #[cold]
    #[inline(never)]
    fn wake(&self) {
        futex_wake(&self.futex, 1);
    }
}

/// Proof of holding a [`Mutex`]; unlocks on drop. `lock_api`'s guard:
/// [`MutexGuard::map`] and friends come with it.
pub type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawFutex, T>;

/// A mutex: `lock_api::Mutex<RawFutex, T>` (no heap, no poisoning), plus
/// [`force_lock`](Self::force_lock) / [`force_unlock`](Self::force_unlock)
/// for `pthread_atfork` handlers. It dereferences to the `lock_api` mutex
/// for everything else (`is_locked`, `try_lock_for`, ...).
pub struct Mutex<T> {
    inner: lock_api::Mutex<RawFutex, T>,
}

impl<T> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex")
            .field("locked", &self.inner.is_locked())
            .finish_non_exhaustive()
    }
}

impl<T> core::ops::Deref for Mutex<T> {
    type Target = lock_api::Mutex<RawFutex, T>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub const fn new(value: T) -> Self {
        Self {
            inner: lock_api::Mutex::new(value),
        }
    }

    /// Locks, sleeping on the futex after a short spin if contended.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.inner.lock()
    }

    /// Locks if nobody holds the lock, without waiting.
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.inner.try_lock()
    }

    /// The data, through an exclusive borrow (no locking needed).
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// Takes the lock with no guard (fork prepare handlers). The lock
    /// stays held until [`force_unlock`](Self::force_unlock).
    pub fn force_lock(&self) {
        core::mem::forget(self.inner.lock());
    }

    /// Releases a lock taken with [`force_lock`](Self::force_lock).
    ///
    /// # Safety
    ///
    /// The lock is held through `force_lock` by the calling thread (or,
    /// in a fork child, was held by the thread that forked, which is the
    /// calling thread), and no reference from [`data_ptr`](Self::data_ptr)
    /// outlives the call.
    pub unsafe fn force_unlock(&self) {
        // SAFETY: the caller's promise: the lock is held, with no guard.
        unsafe { self.inner.force_unlock() }
    }

    /// The protected data, for a holder of [`force_lock`](Self::force_lock).
    /// Dereferencing it is `unsafe`: only while the lock is held that way.
    pub fn data_ptr(&self) -> *mut T {
        self.inner.data_ptr()
    }
}

/// A condition variable paired with [`Mutex`]: a futex sequence counter
/// (std's Linux condvar) plus a count of sleepers, so a notify with nobody
/// waiting costs no system call (vmem notifies on every free). No heap.
pub struct Condvar {
    futex: AtomicU32,
    waiters: AtomicU32,
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Condvar { .. }")
    }
}

impl Default for Condvar {
    fn default() -> Self {
        Self::new()
    }
}

impl Condvar {
    /// A condition variable with no waiters.
    pub const fn new() -> Self {
        Self {
            futex: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// Unlocks, sleeps until notified (or `timeout`, or spuriously), and
    /// locks again. Returns the guard and whether the time ran out.
    fn wait_raw<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, bool) {
        // Count ourselves, then read the sequence, before unlocking. All
        // four accesses here and in `notify_all` are SeqCst: either the
        // notifier sees us counted and wakes, or our count came later in
        // the total order, so our sequence read sees its increment and the
        // wait below returns at once. Nothing is missed either way.
        self.waiters.fetch_add(1, SeqCst);
        let seq = self.futex.load(SeqCst);
        let lock = lock_api::MutexGuard::mutex(&guard);
        drop(guard);
        let woke = futex_wait(&self.futex, seq, Some(timeout));
        self.waiters.fetch_sub(1, SeqCst);
        (lock.lock(), !woke)
    }

    /// Wakes every waiter; no system call when there is none.
    pub fn notify_all(&self) {
        self.futex.fetch_add(1, SeqCst);
        if self.waiters.load(SeqCst) != 0 {
            futex_wake(&self.futex, i32::MAX);
        }
    }
}

impl Condvar {
    /// Waits for a notification or until `timeout` passes, whichever is
    /// first; true in the second element when the time ran out. Callers
    /// re-check their condition either way (spurious wake-ups happen).
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, bool) {
        self.wait_raw(guard, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn notify_wakes_a_sleeper_before_its_timeout() {
        let m = Arc::new((Mutex::new(false), Condvar::new()));
        let m2 = m.clone();
        let t = std::thread::spawn(move || {
            let mut g = m2.0.lock();
            while !*g {
                let (g2, timed_out) = m2.1.wait_timeout(g, Duration::from_secs(30));
                g = g2;
                assert!(!timed_out || *g, "slept through a notify");
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        *m.0.lock() = true;
        m.1.notify_all();
        t.join().unwrap();
        assert_eq!(m.1.waiters.load(SeqCst), 0);
    }

    #[test]
    fn timeout_without_notify_reports_it() {
        let m = Mutex::new(());
        let c = Condvar::new();
        c.notify_all(); // nobody waits: no wake-up is stored
        let (_g, timed_out) = c.wait_timeout(m.lock(), Duration::from_millis(5));
        assert!(timed_out);
    }

    #[test]
    fn force_lock_and_unlock() {
        let m = Mutex::new(5);
        m.force_lock();
        assert!(m.try_lock().is_none());
        // SAFETY: locked just above by this thread; no data_ptr reference.
        unsafe { m.force_unlock() };
        assert_eq!(*m.try_lock().unwrap(), 5);
    }
}
