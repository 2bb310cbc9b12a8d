//! Import sources (`vmem_import_t` / `vmem_release_t`).

use crate::{Arena, Constraints, Flags};

/// Where an arena imports spans from when it runs out of space, and where
/// it releases wholly free imported spans (FreeBSD `vmem_set_import`).
///
/// vmem treats spans as integers, so a wrong answer here cannot break
/// memory safety; it is still a contract:
/// - `import(size, flags)` returns the start of `size` bytes the arena may
///   manage, aligned to the arena's quantum and not wrapping the address
///   space (vmem stops the process otherwise), or `None`;
/// - it is called without the importing arena's lock, may call into other
///   arenas, and may sleep only if `flags` contains [`Flags::WAITOK`];
/// - `release(addr, size)` gets back exactly a span that `import` returned.
pub trait Source: Sync {
    /// Provides a span of `size` bytes.
    fn import(&self, size: usize, flags: Flags) -> Option<usize>;
    /// Takes back a span returned by `import`.
    fn release(&self, addr: usize, size: usize);

    /// An alignment (a power of two) that every span `import` returns
    /// has, beyond the arena's quantum; 0 (the default) promises none. An
    /// allocation aligned to at most this (with no phase or boundary)
    /// then imports only its size, where otherwise the arena asks for two
    /// alignments more than the size to be sure an aligned place exists
    /// (FreeBSD's overestimate: a 4 MiB segment aligned to 2 MiB imported
    /// 8 MiB). A span that does not hold the allocation after all is
    /// released again and the arena imports once more with the
    /// overestimate, so a wrong answer costs an import, never a misplaced
    /// segment or a failed allocation.
    fn span_align(&self) -> usize {
        0
    }
}

/// An arena is the usual source of another: a child imports with `xalloc`
/// and releases with `xfree` (FreeBSD passes `vmem_xalloc`/`vmem_xfree`).
impl Source for Arena<'_> {
    fn import(&self, size: usize, flags: Flags) -> Option<usize> {
        self.xalloc(size, &Constraints::NONE, flags).ok()
    }

    fn release(&self, addr: usize, size: usize) {
        if let Err(e) = self.xfree(addr, size) {
            crate::report::report!("vmem: releasing span to parent: {e}");
        }
    }
}
