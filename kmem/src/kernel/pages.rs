//! Pages of the kernel arena under the memory limit, and the kernel
//! arena's import source (the OS).

use vmem::{Arena, Constraints};

use super::qcache::QCACHE_MAX;
use crate::os::{self, CHUNK_SIZE, PAGE_SIZE};
use crate::pagemeta;
use crate::sync::plain::{AtomicUsize, Ordering};
use crate::Flags;

/// uma flags -> vmem flags for a page allocation.
pub(crate) fn vflags(flags: Flags) -> vmem::Flags {
    if flags.contains(Flags::WAITOK) {
        vmem::Flags::WAITOK
    } else {
        vmem::Flags::NOWAIT
    }
}

/// Allocates pages from the kernel arena and labels them (`kmem_back`).
/// With `zero` they are zero-filled: free arena pages read as zero except
/// those labelled dirty (see `dirty`), which are cleared here.
pub(crate) fn arena_pages(
    arena: &Arena<'static>,
    size: usize,
    align: usize,
    vf: vmem::Flags,
    word: usize,
    zero: bool,
) -> Option<usize> {
    let c = if align > PAGE_SIZE {
        Constraints::new().align(align)
    } else {
        Constraints::NONE
    };
    let force = vf.contains(vmem::Flags::USE_RESERVE);
    let mut reused = false;
    let addr = charged(size, vf, |first| {
        // Large requests first look for pages a recent free left dirty.
        if first && size > QCACHE_MAX && align <= PAGE_SIZE && !force {
            if let Some((a, cut)) = crate::dirty::reuse(arena, size, false) {
                reused = cut;
                return Ok(a);
            }
        }
        arena.xalloc(size, &c, vf)
    })?;
    if reused {
        crate::dirty::taken_reused(addr, size / PAGE_SIZE, word, zero);
    } else {
        crate::dirty::taken(addr, size / PAGE_SIZE, word, zero);
    }
    Some(addr)
}

/// Runs `alloc` for `size` bytes of the kernel arena under the memory
/// limit (`pressure`): charges first (boundary-tag slabs, `USE_RESERVE`,
/// are charged but never refused; `WAITOK` sleeps at the limit until memory
/// is freed), retries once after a reclaim pass if the arena fails (reclaim
/// before failure, seed 003; `alloc` gets `false` then), and uncharges on
/// failure. A failure, at the limit or in the arena (out of address
/// space), is counted as a pressure failure: the program's request gets
/// null (see [`charged_meta`] for the allocator's own).
pub(crate) fn charged(
    size: usize,
    vf: vmem::Flags,
    alloc: impl FnMut(bool) -> Result<usize, vmem::Error>,
) -> Option<usize> {
    charged_as(size, vf, crate::pressure::Failure::Program, true, alloc)
}

/// As [`charged`] for the allocator's own pages (the metadata arena): a
/// failure there is counted apart (a bucket that could not be had is not
/// a null for anyone). `reclaim`: whether a failure may run a reclaim pass
/// (over the process's kernel) before the retry.
pub(crate) fn charged_meta(
    size: usize,
    vf: vmem::Flags,
    reclaim: bool,
    alloc: impl FnMut(bool) -> Result<usize, vmem::Error>,
) -> Option<usize> {
    charged_as(size, vf, crate::pressure::Failure::Meta, reclaim, alloc)
}

fn charged_as(
    size: usize,
    vf: vmem::Flags,
    what: crate::pressure::Failure,
    reclaim: bool,
    mut alloc: impl FnMut(bool) -> Result<usize, vmem::Error>,
) -> Option<usize> {
    let force = vf.contains(vmem::Flags::USE_RESERVE);
    if !crate::pressure::charge(size, vf.contains(vmem::Flags::WAITOK), force) {
        crate::pressure::count_failure(what);
        return None;
    }
    let addr = match alloc(true) {
        Ok(a) => Ok(a),
        Err(_) if reclaim && crate::pressure::reclaim_for_retry() => alloc(false),
        Err(e) => Err(e),
    };
    if addr.is_err() {
        crate::pressure::uncharge(size);
        crate::pressure::count_failure(what);
    }
    addr.ok()
}

/// Unlabels, unbacks and frees pages to the kernel arena.
///
/// # Safety
///
/// `[addr, addr + size)` came from [`arena_pages`] and nothing uses it.
pub(crate) unsafe fn arena_free(arena: &Arena<'static>, addr: usize, size: usize) {
    pagemeta::set(addr, size / PAGE_SIZE, 0);
    // SAFETY: the caller's promise.
    unsafe { os::unback(addr, size) };
    if let Err(e) = arena.xfree(addr, size) {
        crate::report::fatal(format_args!(
            "kmem: freeing {size} bytes at {addr:#x} to the kernel arena: {e}"
        ));
    }
    crate::pressure::uncharge(size);
}

/// Bytes of size-class slabs in the kernel arena now ([`arena_slab`],
/// [`arena_free_slab`]): with the large blocks', what the dirty budget
/// follows (`dirty::dirty_budget`).
static SLAB_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes of size-class slabs in the kernel arena now.
pub(crate) fn slab_bytes_in_use() -> usize {
    SLAB_BYTES.load(Ordering::Relaxed)
}

/// A size-class slab of `size` bytes aligned to `align` from the kernel
/// arena, labelled `word`. Its pages hold old data where they were dirty
/// (a freed slab's or large block's, see [`arena_free_slab`]) unless the
/// keg asks for [`Flags::ZERO`] (uma's `SlabSource` contract: a keg
/// initialises its slabs itself, and a zone zeroes a `ZERO` item itself):
/// reusing them costs no page fault and no clearing. In debug mode they
/// are cleared all the same: its write-after-free check trusts a freed
/// header it finds in an item to be that item's own, and a page of
/// another class's slab can hold one at any offset (a `malloc-4096` item
/// was reported modified after free, 2026-12-07).
pub(crate) fn arena_slab(
    arena: &Arena<'static>,
    size: usize,
    align: usize,
    flags: Flags,
    word: usize,
) -> Option<usize> {
    // Caches past their soft cap give their excess back first.
    #[cfg(not(loom))]
    crate::timeout::before_taking_pages();
    let addr = arena_pages(
        arena,
        size,
        align,
        vflags(flags),
        word,
        flags.contains(Flags::ZERO)
            || crate::debugmode::decide() != crate::debugmode::DebugFlags::NONE,
    )?;
    SLAB_BYTES.fetch_add(size, Ordering::Relaxed);
    Some(addr)
}

/// [`arena_free`] for a size-class slab ([`arena_slab`]) that its keg
/// freed (a trim or a drain): back to the arena with its pages kept
/// ([`crate::dirty::free_slab`]), so that the next slab of any class
/// reuses them instead of faulting fresh pages in; the dirty budget and
/// decay purge them. A program whose working set moves from class to
/// class (strings grown by `realloc` in turn, each leaving a class
/// behind) reuses the same pages for each class's slabs.
///
/// # Safety
///
/// As [`arena_free`], for a slab of [`arena_slab`].
pub(crate) unsafe fn arena_free_slab(arena: &Arena<'static>, addr: usize, size: usize) {
    pagemeta::set(addr, size / PAGE_SIZE, 0);
    // Counted out first: the budget the free checks is of what stays.
    SLAB_BYTES.fetch_sub(size, Ordering::Relaxed);
    // SAFETY: the caller's promise: a whole slab of the arena, unused.
    unsafe { crate::dirty::free_slab(arena, addr, size) };
    crate::pressure::uncharge(size);
}

/// `size` bytes (whole chunks) of 2 MiB-aligned chunks mapped from the OS
/// and registered in the page metadata: the kernel arena's imports, and
/// the large classes' arena's (`qcache`). What takes the process's mapped
/// bytes past their peak counts toward the lazy timeout's early pass
/// ([`crate::timeout::GROWTH_PASS_BYTES`]); mapping again what was
/// unmapped does not (a program that cycles within the memory it had
/// would trim, unmap and map again in a loop).
pub(crate) fn map_registered(size: usize) -> Option<usize> {
    let peak = os::peak_mapped();
    let base = os::map_chunks(size)?;
    let beyond = os::peak_mapped().saturating_sub(peak);
    #[cfg(not(loom))]
    crate::timeout::mapped(beyond);
    #[cfg(loom)]
    let _ = beyond;
    if !pagemeta::register(base, size) {
        // SAFETY: just mapped, unused.
        unsafe { os::unmap(base, size) };
        return None;
    }
    Some(base)
}

/// The kernel arena's import source: 2 MiB-aligned chunks from `mmap`,
/// registered in the page metadata; released spans are kept mapped for a
/// while and reused by later imports, then unmapped (see `dirty`).
pub(crate) struct OsChunks;
pub(crate) static OS_CHUNKS: OsChunks = OsChunks;

impl vmem::Source for OsChunks {
    fn import(&self, size: usize, _flags: vmem::Flags) -> Option<usize> {
        let size = size.checked_next_multiple_of(CHUNK_SIZE)?;
        if let Some(base) = crate::dirty::take_span(size) {
            return Some(base);
        }
        crate::dirty::unmap_outgrown_spans();
        map_registered(size)
    }

    fn release(&self, addr: usize, size: usize) {
        // vmem releases a span only when it is wholly free.
        if !crate::dirty::retain_span(addr, size) {
            crate::dirty::unmap_span(addr, size);
        }
    }

    /// Chunks are 2 MiB aligned, and a retained span is cut into whole
    /// chunks: a large block aligned to up to 2 MiB imports only its
    /// size, not its size and twice its alignment.
    fn span_align(&self) -> usize {
        CHUNK_SIZE
    }
}
