//! The side table of sampled blocks: address -> (size, weight, stack),
//! in memory mapped straight from the OS (never through an allocator),
//! behind one spin lock that is a leaf (nothing is allocated or locked
//! while it is held) and that the fork handlers take and release.
//!
//! Layout: a dense array of [`Sample`] records (touched only up to the
//! high-water mark of live samples) with a free list, and an open-addressing
//! index of `(address, record)` pairs (linear probing, tombstones, rebuilt
//! in place when tombstones pile up). At most [`CAPACITY`] samples live at
//! once; beyond that new samples are dropped and counted
//! ([`ProfStats::dropped_full`](super::ProfStats::dropped_full)).

use core::cell::UnsafeCell;

use super::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Return addresses kept per sample (leaf first).
pub const MAX_FRAMES: usize = 48;
/// Live samples at most (at the default 512 KiB interval: about 16 GiB of
/// sampled heap).
pub const CAPACITY: usize = 1 << 15;
const INDEX_LEN: usize = CAPACITY * 2;
const EMPTY: usize = 0;
const TOMB: usize = 1;

/// One sampled block.
#[derive(Clone, Copy)]
pub struct Sample {
    /// The block's address (0: a free record).
    pub addr: usize,
    /// Bytes asked for.
    pub size: usize,
    /// Allocations this sample stands for (1 / the probability that an
    /// allocation like it was sampled).
    pub scale: f64,
    /// Frames in `stack`.
    pub depth: u32,
    /// Return addresses, leaf first.
    pub stack: [usize; MAX_FRAMES],
}

#[derive(Clone, Copy)]
struct Slot {
    addr: usize,
    rec: u32,
}

struct Inner {
    recs: *mut Sample,
    index: *mut Slot,
    /// Records ever used (the high-water mark).
    used: usize,
    /// Head of the free list of records (index + 1; 0 = none), linked
    /// through `size`.
    free: usize,
    live: usize,
    tombs: usize,
}

pub(crate) struct Table {
    lock: AtomicBool,
    inner: UnsafeCell<Inner>,
    /// Live samples (read without the lock by `snapshot`'s sizing).
    live: AtomicUsize,
    pub(crate) dropped_full: AtomicU64,
}

// SAFETY: `inner` is only touched with `lock` held.
unsafe impl Sync for Table {}

pub(crate) static TABLE: Table = Table {
    lock: AtomicBool::new(false),
    inner: UnsafeCell::new(Inner {
        recs: core::ptr::null_mut(),
        index: core::ptr::null_mut(),
        used: 0,
        free: 0,
        live: 0,
        tombs: 0,
    }),
    live: AtomicUsize::new(0),
    dropped_full: AtomicU64::new(0),
};

fn hash(addr: usize) -> usize {
    ((addr as u64 >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
}

/// Anonymous memory from the OS, zeroed, or null.
fn map(bytes: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping; no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        core::ptr::null_mut()
    } else {
        p.cast()
    }
}

/// The lock held; released on drop.
pub(crate) struct Guard<'a>(&'a Table);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.lock.store(false, Ordering::Release);
    }
}

impl Guard<'_> {
    fn inner(&mut self) -> &mut Inner {
        // SAFETY: the lock is held by this guard.
        unsafe { &mut *self.0.inner.get() }
    }
}

impl Table {
    pub(crate) fn lock(&self) -> Guard<'_> {
        let mut spins = 0u32;
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                // SAFETY: no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
        Guard(self)
    }

    /// Maps the table's memory (once); false if the OS refused.
    pub(crate) fn ensure_mapped(&self) -> bool {
        let mut g = self.lock();
        let inner = g.inner();
        if inner.recs.is_null() {
            let recs = map(CAPACITY * core::mem::size_of::<Sample>());
            let index = map(INDEX_LEN * core::mem::size_of::<Slot>());
            if recs.is_null() || index.is_null() {
                return false;
            }
            inner.recs = recs.cast();
            inner.index = index.cast();
        }
        true
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Records a sample (replacing any record of the same address, whose
    /// block must have been freed unseen). False if the table is full.
    pub(crate) fn insert(&self, s: &Sample) -> bool {
        let mut g = self.lock();
        let t = g.inner();
        if t.recs.is_null() {
            return false;
        }
        if let Some(r) = t.find(s.addr) {
            // SAFETY: a record index below `used`, in the mapped array.
            unsafe { t.recs.add(r).write(*s) };
            return true;
        }
        if t.live + t.tombs + 1 > INDEX_LEN / 2 {
            t.rebuild();
        }
        let rec = if t.free != 0 {
            let r = t.free - 1;
            // SAFETY: a free record: its `size` links the list.
            t.free = unsafe { (*t.recs.add(r)).size };
            r
        } else if t.used < CAPACITY {
            t.used += 1;
            t.used - 1
        } else {
            self.dropped_full.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        // SAFETY: `rec` is a record of the mapped array, ours.
        unsafe { t.recs.add(rec).write(*s) };
        t.put(s.addr, rec as u32);
        t.live += 1;
        self.live.store(t.live, Ordering::Relaxed);
        true
    }

    /// Whether `addr` is a sampled block's.
    pub(crate) fn contains(&self, addr: usize) -> bool {
        if self.live.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut g = self.lock();
        g.inner().find_slot(addr).is_some()
    }

    /// Removes the record of `addr`; its copy, if there was one.
    pub(crate) fn remove(&self, addr: usize) -> Option<Sample> {
        if self.live.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut g = self.lock();
        let t = g.inner();
        let i = t.find_slot(addr)?;
        // SAFETY: `i` is below INDEX_LEN in the mapped index.
        let rec = unsafe { (*t.index.add(i)).rec } as usize;
        // SAFETY: as above; the record is in the mapped array.
        unsafe {
            *t.index.add(i) = Slot { addr: TOMB, rec: 0 };
            let s = t.recs.add(rec).read();
            *t.recs.add(rec) = Sample {
                addr: 0,
                size: t.free,
                ..s
            };
            t.free = rec + 1;
            t.tombs += 1;
            t.live -= 1;
            self.live.store(t.live, Ordering::Relaxed);
            Some(s)
        }
    }

    /// Copies up to `out.capacity() - out.len()` live samples into `out`
    /// (which the caller sized beforehand: nothing is allocated here).
    pub(crate) fn snapshot(&self, out: &mut alloc_free::Buf<'_>) {
        let mut g = self.lock();
        let t = g.inner();
        for r in 0..t.used {
            // SAFETY: records below `used` are in the mapped array.
            let s = unsafe { &*t.recs.add(r) };
            if s.addr != 0 && !out.push(s) {
                break;
            }
        }
    }

    /// Fork prepare: takes the lock (a leaf: nothing else is taken after it
    /// while it is held).
    pub(crate) fn fork_prepare(&self) {
        core::mem::forget(self.lock());
    }

    /// Fork parent and child: releases it.
    pub(crate) fn fork_release(&self) {
        self.lock.store(false, Ordering::Release);
    }
}

impl Inner {
    fn find_slot(&self, addr: usize) -> Option<usize> {
        if self.index.is_null() {
            return None;
        }
        let mut i = hash(addr) & (INDEX_LEN - 1);
        loop {
            // SAFETY: `i` is masked below INDEX_LEN.
            let s = unsafe { *self.index.add(i) };
            if s.addr == addr {
                return Some(i);
            }
            if s.addr == EMPTY {
                return None;
            }
            i = (i + 1) & (INDEX_LEN - 1);
        }
    }

    fn find(&self, addr: usize) -> Option<usize> {
        // SAFETY: a slot found is below INDEX_LEN.
        self.find_slot(addr)
            .map(|i| unsafe { (*self.index.add(i)).rec } as usize)
    }

    fn put(&mut self, addr: usize, rec: u32) {
        let mut i = hash(addr) & (INDEX_LEN - 1);
        loop {
            // SAFETY: `i` is masked below INDEX_LEN.
            let s = unsafe { &mut *self.index.add(i) };
            if s.addr == EMPTY || s.addr == TOMB {
                if s.addr == TOMB {
                    self.tombs -= 1;
                }
                *s = Slot { addr, rec };
                return;
            }
            i = (i + 1) & (INDEX_LEN - 1);
        }
    }

    /// Rebuilds the index without tombstones (in place: cleared, then
    /// every live record put back).
    fn rebuild(&mut self) {
        // SAFETY: the whole mapped index, ours under the lock.
        unsafe { core::ptr::write_bytes(self.index, 0, INDEX_LEN) };
        self.tombs = 0;
        for r in 0..self.used {
            // SAFETY: records below `used` are in the mapped array.
            let a = unsafe { (*self.recs.add(r)).addr };
            if a != 0 {
                self.put(a, r as u32);
            }
        }
    }
}

pub(crate) mod alloc_free {
    //! A caller-provided buffer of samples: filling it allocates nothing.
    use super::Sample;

    pub(crate) struct Buf<'a> {
        pub(crate) v: &'a mut Vec<Sample>,
    }

    impl Buf<'_> {
        /// Appends `s` if there is room without growing; false when full.
        pub(crate) fn push(&mut self, s: &Sample) -> bool {
            if self.v.len() == self.v.capacity() {
                return false;
            }
            self.v.push(*s);
            true
        }
    }
}
