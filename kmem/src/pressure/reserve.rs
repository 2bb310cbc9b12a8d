//! Reservations (seed 004): promises of future allocations, kept as
//! accounting against the limit.

use super::*;

/// Why a [`Reservation`] was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// The allocator could not start.
    NotStarted,
    /// More than [`RESERVE_MAX_PCT`]% of the limit: can never be granted.
    TooLarge,
    /// Not enough room now (`NOWAIT`).
    NoMemory,
    /// Not enough room within the timeout (`WAITOK`).
    TimedOut,
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReserveError::NotStarted => "allocator not started",
            ReserveError::TooLarge => "reservation larger than the reservable share of the limit",
            ReserveError::NoMemory => "not enough memory to reserve",
            ReserveError::TimedOut => "timed out waiting for memory to reserve",
        })
    }
}

/// A promise of future allocations, kept as accounting against the limit
/// (seed 004), not as preallocated objects: granting it moves `bytes` of
/// room out of reach of ordinary allocations; its own allocations
/// ([`malloc`](Self::malloc), [`zone_alloc`](Self::zone_alloc)) draw on it
/// first, each charged [`cost`](Self::cost) (the worst case: a new slab);
/// dropping it gives the unused part back.
///
/// ```
/// kmem::malloc_define!(M_TXN, "txn", "transactions");
/// let r = kmem::Reservation::for_allocs(100, 4, kmem::Flags::NOWAIT).unwrap();
/// let p = r.malloc(100, &M_TXN).unwrap();
/// unsafe { kmem::free(p.as_ptr(), &M_TXN) };
/// ```
#[derive(Debug)]
pub struct Reservation {
    remaining: AtomicUsize,
}

impl Reservation {
    /// Reserves `bytes` (rounded up to pages). `NOWAIT`: reclaims once,
    /// then fails with [`ReserveError::NoMemory`]; `WAITOK`: waits up to
    /// [`RESERVE_TIMEOUT`] for memory to be freed.
    pub fn new(bytes: usize, flags: Flags) -> Result<Reservation, ReserveError> {
        let timeout = if flags.contains(Flags::WAITOK) {
            Some(RESERVE_TIMEOUT)
        } else {
            None
        };
        Self::reserve(bytes, timeout)
    }

    /// Reserves `bytes`, waiting at most `timeout` for room.
    pub fn with_timeout(bytes: usize, timeout: Duration) -> Result<Reservation, ReserveError> {
        Self::reserve(bytes, Some(timeout))
    }

    /// Reserves room for `n` allocations of `size` bytes by
    /// [`malloc`](Self::malloc).
    pub fn for_allocs(size: usize, n: usize, flags: Flags) -> Result<Reservation, ReserveError> {
        let c = Self::cost(size).ok_or(ReserveError::TooLarge)?;
        Self::new(c.checked_mul(n).ok_or(ReserveError::TooLarge)?, flags)
    }

    /// Reserves room for `n` allocations from `zone` by
    /// [`zone_alloc`](Self::zone_alloc).
    pub fn for_zone(zone: &uma::Zone, n: usize, flags: Flags) -> Result<Reservation, ReserveError> {
        let c = Self::zone_cost(zone).ok_or(ReserveError::TooLarge)?;
        Self::new(c.checked_mul(n).ok_or(ReserveError::TooLarge)?, flags)
    }

    /// What one `malloc(size)` draws from a reservation: its class's slab
    /// size (a new slab at worst), or its pages for a large block, plus
    /// [`META_ALLOWANCE`] for the allocator metadata it may need (a bucket,
    /// boundary tags).
    pub fn cost(size: usize) -> Option<usize> {
        let k = kernel()?;
        // What malloc(9) asks its zone for (with `invariants`, the type
        // tag's bytes more: a large block may then round up to the next
        // large class).
        let size = crate::malloc::typed_request(size)?;
        let base = match class_of(size, 1) {
            Some(c) => {
                crate::kernel::class_zone(k, c)?;
                crate::kernel::class_geometry(c).0
            }
            None => crate::classes::large_pages(size, 1)? * crate::os::PAGE_SIZE,
        };
        base.checked_add(META_ALLOWANCE)
    }

    /// What one allocation from `zone` draws: the keg's slab size plus
    /// [`META_ALLOWANCE`].
    pub fn zone_cost(zone: &uma::Zone) -> Option<usize> {
        zone.keg_info()
            .and_then(|i| i.layout.slab_size.checked_add(META_ALLOWANCE))
    }

    fn reserve(bytes: usize, timeout: Option<Duration>) -> Result<Reservation, ReserveError> {
        kernel().ok_or(ReserveError::NotStarted)?;
        let bytes = round_page(bytes).ok_or(ReserveError::TooLarge)?;
        let n = pages(bytes);
        let limit = LIMIT_PAGES.load(Ordering::Relaxed);
        let max = limit * RESERVE_MAX_PCT / 100;
        if limit != 0 && n > max {
            C.reserve_refused.fetch_add(1, Ordering::Relaxed);
            return Err(ReserveError::TooLarge);
        }
        let start = Instant::now();
        let mut reclaimed = false;
        loop {
            let limit = LIMIT_PAGES.load(Ordering::Relaxed);
            let max = limit * RESERVE_MAX_PCT / 100;
            if account().try_reserve(n, limit, max) {
                return Ok(Reservation {
                    remaining: AtomicUsize::new(bytes),
                });
            }
            if !reclaimed {
                reclaimed = true;
                reclaim_now();
                continue;
            }
            let Some(t) = timeout else {
                C.reserve_refused.fetch_add(1, Ordering::Relaxed);
                return Err(ReserveError::NoMemory);
            };
            let left = t.saturating_sub(start.elapsed());
            if left.is_zero() {
                C.reserve_refused.fetch_add(1, Ordering::Relaxed);
                return Err(ReserveError::TimedOut);
            }
            reclaim_pass(LowMemLevel::Hard);
            wait_for_free(account().get(), left.min(WAIT_RETRY));
        }
    }

    /// Bytes still reserved.
    pub fn remaining(&self) -> usize {
        self.remaining.load(Ordering::Relaxed)
    }

    fn take(&self, cost: usize) -> bool {
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |r| r.checked_sub(cost))
            .is_ok()
    }

    /// Runs `f` (an allocation) on the reservation's account: `cost` bytes
    /// are drawn if the reservation still has them (the allocation is then
    /// guaranteed room under the limit), else `f` runs as an ordinary
    /// `NOWAIT` allocation.
    fn draw<T>(&self, cost: usize, f: impl FnOnce() -> Option<T>) -> Option<T> {
        if !self.take(cost) {
            return f();
        }
        let r = {
            let _n = NestGuard::new(NEST_DRAW);
            f()
        };
        if r.is_some() {
            account().unreserve(pages(cost));
        } else {
            self.remaining.fetch_add(cost, Ordering::AcqRel);
        }
        r
    }

    /// `malloc(size, ty, NOWAIT)` drawing on the reservation first.
    pub fn malloc(&self, size: usize, ty: &'static MallocType) -> Option<NonNull<u8>> {
        let cost = Self::cost(size)?;
        self.draw(cost, || crate::malloc(size, ty, Flags::NOWAIT))
    }

    /// `zone.alloc(NOWAIT)` drawing on the reservation first.
    pub fn zone_alloc(&self, zone: &uma::Zone) -> Option<NonNull<u8>> {
        let cost = Self::zone_cost(zone)?;
        self.draw(cost, || zone.alloc(Flags::NOWAIT))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let left = *self.remaining.get_mut();
        if left > 0 {
            account().unreserve(pages(left));
            wake_waiters();
        }
    }
}
