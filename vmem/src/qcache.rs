//! Quantum caches: the hook in front of small allocations.
//!
//! `alloc` and `free` of sizes up to the arena's `qcache_max` go to a cache
//! of segments per size class (class `n` holds segments of `n` quanta), as
//! in Bonwick & Adams section 3 and FreeBSD `qc_init`. In the kernel the
//! caches are UMA cache-only zones whose import and release call
//! `vmem_xalloc`/`vmem_xfree`; `kmem` plugs those in through
//! [`QuantumCache`]. [`SimpleQuantumCache`] is a small mutex-protected
//! implementation for arenas used alone.

use crate::sync::Mutex;
use crate::{Arena, Constraints, Flags, QCACHE_MAX_CLASSES, QCACHE_MIN_ADDR};

/// A cache of small segments in front of an arena.
///
/// Contract (logical; vmem's memory safety does not depend on it):
/// - `alloc(arena, class, flags)` returns a segment of exactly
///   `class * quantum` bytes that is allocated in `arena`, obtained with
///   `arena.xalloc(class * quantum, &Constraints::new().range(QCACHE_MIN_ADDR,
///   usize::MAX), flags)` and not handed out twice; `flags` never contains
///   `WAITOK`.
/// - `free` takes such a segment back; `drain` returns every cached segment
///   with `arena.xfree`.
/// - All three are called without the arena lock and may call `xalloc` and
///   `xfree` (never `alloc`/`free`, which would come back here). The arena
///   calls `drain` when it is out of space and before it is destroyed.
pub trait QuantumCache: Sync {
    /// A cached segment of `class` quanta, or `None` to fall back to `xalloc`.
    fn alloc(&self, arena: &Arena<'_>, class: usize, flags: Flags) -> Option<usize>;
    /// Takes back a segment of `class` quanta.
    fn free(&self, arena: &Arena<'_>, class: usize, addr: usize);
    /// Returns every cached segment to `arena`.
    fn drain(&self, arena: &Arena<'_>);
}

/// Segments cached per class.
const DEPTH: usize = 16;

struct Stack {
    items: [usize; DEPTH],
    len: usize,
}

/// A simple quantum cache: per class, a stack of up to 16 segments under a
/// mutex, filled and emptied half a stack at a time. No global allocator;
/// the arena is never called with a stack locked, so an arena that drains
/// the cache from inside an allocation cannot deadlock on it.
pub struct SimpleQuantumCache {
    classes: [Mutex<Stack>; QCACHE_MAX_CLASSES],
}

impl core::fmt::Debug for SimpleQuantumCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimpleQuantumCache")
            .field("cached", &self.cached())
            .finish()
    }
}

impl SimpleQuantumCache {
    /// An empty cache.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        SimpleQuantumCache {
            classes: [const {
                Mutex::new(Stack {
                    items: [0; DEPTH],
                    len: 0,
                })
            }; QCACHE_MAX_CLASSES],
        }
    }

    /// An empty cache.
    #[cfg(loom)]
    pub fn new() -> Self {
        SimpleQuantumCache {
            classes: core::array::from_fn(|_| {
                Mutex::new(Stack {
                    items: [0; DEPTH],
                    len: 0,
                })
            }),
        }
    }

    /// Segments cached, over all classes.
    pub fn cached(&self) -> usize {
        self.classes.iter().map(|c| c.lock().len).sum()
    }

    fn stack(&self, class: usize) -> Option<&Mutex<Stack>> {
        self.classes.get(class.checked_sub(1)?)
    }

    /// Takes every stack lock for a fork (`pthread_atfork` prepare). The
    /// stacks are leaves (nothing is called with one held), so they may be
    /// taken at any point of the global order.
    ///
    /// # Safety
    ///
    /// As [`Arena::fork_prepare`](crate::Arena::fork_prepare): exactly one of
    /// [`fork_parent`](Self::fork_parent) or [`fork_child`](Self::fork_child)
    /// follows in this thread, which holds none of the locks already.
    #[cfg(all(not(loom), feature = "std"))]
    pub unsafe fn fork_prepare(&self) {
        for s in &self.classes {
            s.force_lock();
        }
    }

    /// Releases the stack locks in the parent after a fork.
    ///
    /// # Safety
    ///
    /// [`fork_prepare`](Self::fork_prepare) was called by this thread and
    /// not yet undone.
    #[cfg(all(not(loom), feature = "std"))]
    pub unsafe fn fork_parent(&self) {
        for s in &self.classes {
            // SAFETY: taken by fork_prepare in this thread.
            unsafe { s.force_unlock() };
        }
    }

    /// Releases the stack locks in the child after a fork. Segments that a
    /// vanished thread held outside the stacks are lost to the child.
    ///
    /// # Safety
    ///
    /// Called in the child, by the thread that forked, after
    /// [`fork_prepare`](Self::fork_prepare) in the prepare handler.
    #[cfg(all(not(loom), feature = "std"))]
    pub unsafe fn fork_child(&self) {
        // SAFETY: as fork_parent; the forking thread is this one.
        unsafe { self.fork_parent() };
    }
}

impl Default for SimpleQuantumCache {
    fn default() -> Self {
        Self::new()
    }
}

impl QuantumCache for SimpleQuantumCache {
    fn alloc(&self, arena: &Arena<'_>, class: usize, flags: Flags) -> Option<usize> {
        let stack = self.stack(class)?;
        {
            let mut s = stack.lock();
            if s.len > 0 {
                s.len -= 1;
                return Some(s.items[s.len]);
            }
        }
        // Import half a stack without holding it, keep all but one.
        let size = class << arena.quantum().trailing_zeros();
        let c = Constraints::new().range(QCACHE_MIN_ADDR, usize::MAX);
        let mut batch = [0usize; DEPTH / 2];
        let mut n = 0;
        while n < batch.len() {
            match arena.xalloc(size, &c, flags) {
                Ok(addr) => batch[n] = addr,
                Err(_) => break,
            }
            n += 1;
        }
        let first = *batch[..n].first()?;
        let mut s = stack.lock();
        for &addr in &batch[1..n] {
            if s.len < DEPTH {
                let len = s.len;
                s.items[len] = addr;
                s.len += 1;
            } else {
                drop(s);
                let _ = arena.xfree(addr, size);
                s = stack.lock();
            }
        }
        Some(first)
    }

    fn free(&self, arena: &Arena<'_>, class: usize, addr: usize) {
        let size = class << arena.quantum().trailing_zeros();
        let Some(stack) = self.stack(class) else {
            let _ = arena.xfree(addr, size);
            return;
        };
        let mut s = stack.lock();
        if s.len < DEPTH {
            let len = s.len;
            s.items[len] = addr;
            s.len += 1;
            return;
        }
        // Full: release the older half, keep the new segment.
        let mut batch = [0usize; DEPTH / 2];
        batch.copy_from_slice(&s.items[..DEPTH / 2]);
        s.items.copy_within(DEPTH / 2.., 0);
        s.len = DEPTH / 2;
        let len = s.len;
        s.items[len] = addr;
        s.len += 1;
        drop(s);
        for a in batch {
            if let Err(e) = arena.xfree(a, size) {
                crate::report::report!("vmem: quantum cache release: {e}");
            }
        }
    }

    fn drain(&self, arena: &Arena<'_>) {
        for (i, stack) in self.classes.iter().enumerate() {
            let size = (i + 1) << arena.quantum().trailing_zeros();
            let mut s = stack.lock();
            let batch = s.items;
            let n = core::mem::replace(&mut s.len, 0);
            drop(s);
            for &a in &batch[..n] {
                if let Err(e) = arena.xfree(a, size) {
                    crate::report::report!("vmem: quantum cache release: {e}");
                }
            }
        }
    }
}
