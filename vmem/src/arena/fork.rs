//! Fork safety (`pthread_atfork`). Outside loom only.
//!
//! A fork copies the address space with whatever locks other threads hold
//! at that instant, and those threads do not exist in the child: a lock
//! held then stays held forever. These three calls let the process's
//! `pthread_atfork` handlers hold the arena lock across the fork, so the
//! arena is consistent in both processes. The caller (kmem) takes the locks
//! of everything in a global order: the arena lock comes after every lock
//! held while this arena is called (for kmem: UMA's zone lists, whose
//! reclaim frees slabs to the arena) and before every lock the arena's
//! hooks take with the lock held (the [`TagSource`] called with
//! [`Flags::NOVM`], for kmem the btag zone's locks). The import source, the
//! quantum cache and the reclaim callback are called without the lock.
//!
//! What the child gets: the segments, exactly; spare tags that a thread of
//! the parent had hidden across an unlock (`bt_save`) are counted back,
//! and a busy-hash resize that a vanished thread had started is forgotten
//! (the next operation that wants one starts it again). Space that a
//! vanished thread was importing or releasing, outside the lock, is lost
//! to the child (never corrupt).

use super::Arena;

impl Arena<'_> {
    /// Takes the arena lock for a fork (`pthread_atfork` prepare).
    ///
    /// # Safety
    ///
    /// Exactly one of [`fork_parent`](Self::fork_parent) (in the parent) or
    /// [`fork_child`](Self::fork_child) (in the child) follows, in the same
    /// thread, with nothing in between that uses this arena. The calling
    /// thread does not hold the lock already (it is not inside an arena
    /// operation or one of its hooks), and it takes the locks of the whole
    /// allocator in one global order (see above).
    pub unsafe fn fork_prepare(&self) {
        self.state.force_lock();
    }

    /// Releases the arena lock in the parent after a fork.
    ///
    /// # Safety
    ///
    /// [`fork_prepare`](Self::fork_prepare) was called by this thread and not
    /// yet undone.
    pub unsafe fn fork_parent(&self) {
        // SAFETY: fork_prepare took it in this thread (caller's promise).
        unsafe { self.state.force_unlock() };
    }

    /// Releases the arena lock in the child after a fork and repairs what
    /// threads that do not exist in the child left behind: tags hidden by
    /// `bt_save` are counted back, and an unfinished hash resize is
    /// forgotten.
    ///
    /// # Safety
    ///
    /// Called in the child of a fork whose prepare handler called
    /// [`fork_prepare`](Self::fork_prepare) in the thread that forked (the
    /// calling thread), before any other use of the arena in the child.
    pub unsafe fn fork_child(&self) {
        // SAFETY: the forking thread (this one) took the lock in
        // fork_prepare; the child has no other thread.
        unsafe { self.state.force_unlock() };
        let mut g = self.state.lock();
        // No operation is in flight in the child: every spare tag on the
        // list is free for use, including those hidden by threads that
        // vanished with the fork.
        let mut spare = 0;
        let mut cur = g.freetags;
        while let Some(t) = cur {
            spare += 1;
            cur = t.link_next();
        }
        g.nfreetags = spare;
        g.rehashing = false;
        g.sleepers = 0;
    }
}

#[cfg(test)]
mod tests {
    use crate::{Arena, Flags};

    /// What vanished threads leave in the arena at a fork (tags hidden by
    /// `bt_save` across an unlock, a hash resize in flight) is repaired by
    /// `fork_child`. (Run in-process: the arena is this test's alone, so
    /// prepare + child stands for a fork.)
    #[test]
    fn fork_child_counts_hidden_tags_back() {
        let arena = Arena::builder("fork")
            .quantum(16)
            .span(1 << 20, 1 << 20)
            .build()
            .unwrap();
        let held: Vec<usize> = (0..100)
            .map(|_| arena.alloc(48, Flags::NOWAIT).unwrap())
            .collect();
        {
            // A thread in the middle of an import or a WAITOK sleep.
            let g = arena.state.lock();
            let (mut g, ok) = arena.fill_tags(g, Flags::NOWAIT);
            assert!(ok);
            g.bt_save();
            g.rehashing = true;
        }
        assert!(arena.check_invariants().is_ok());
        // SAFETY: no other thread uses the arena; prepare then child, as the
        // forking thread would.
        unsafe {
            arena.fork_prepare();
            arena.fork_child();
        }
        {
            let g = arena.state.lock();
            assert!(!g.rehashing);
            let mut spare = 0;
            let mut cur = g.freetags;
            while let Some(t) = cur {
                spare += 1;
                cur = t.link_next();
            }
            assert_eq!(spare, g.nfreetags);
        }
        assert!(arena.check_invariants().is_ok());
        for a in held {
            arena.free(a, 48).unwrap();
        }
        let more: Vec<usize> = (0..1000)
            .map(|_| arena.alloc(32, Flags::NOWAIT).unwrap())
            .collect();
        for a in more {
            arena.free(a, 32).unwrap();
        }
        assert!(arena.check_invariants().is_ok());
        assert_eq!(arena.size_allocated(), 0);
    }
}
