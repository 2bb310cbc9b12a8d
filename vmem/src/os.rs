//! Anonymous memory from the OS for vmem's own metadata (boundary tags of
//! the standalone source, busy-hash tables). Never the global allocator.

use core::ptr::NonNull;

/// Maps `bytes` (rounded up to pages) of zeroed, read-write memory.
pub(crate) fn map(bytes: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with no address hint touches no
    // existing memory; failure is reported as MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// The size and alignment of a transparent huge page on x86-64 and arm64
/// (with 4 KiB base pages).
pub(crate) const HUGE: usize = 2 << 20;

/// Maps `bytes` (a multiple of [`HUGE`]) of zeroed, read-write memory
/// aligned to [`HUGE`], and asks for transparent huge pages on it
/// (`MADV_HUGEPAGE`; the kernel may decline, and the memory is then
/// ordinary pages). For metadata spread over many megabytes (tags, hash
/// tables) that a lookup reaches at random: one TLB entry covers 512 base
/// pages.
pub(crate) fn map_huge(bytes: usize) -> Option<NonNull<u8>> {
    debug_assert!(bytes % HUGE == 0 && bytes > 0);
    let raw = map(bytes.checked_add(HUGE)?)?;
    let addr = raw.as_ptr() as usize;
    let aligned = addr.next_multiple_of(HUGE);
    let (head, tail) = (aligned - addr, HUGE - (aligned - addr));
    // SAFETY: `raw` is our fresh mapping of `bytes + HUGE` bytes; the head
    // before the aligned start and the tail after `aligned + bytes` are
    // whole pages of it that nothing refers to.
    unsafe {
        if head != 0 {
            libc::munmap(raw.as_ptr().cast(), head);
        }
        if tail != 0 {
            libc::munmap((aligned + bytes) as *mut libc::c_void, tail);
        }
        libc::madvise(aligned as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE);
    }
    NonNull::new(aligned as *mut u8)
}

/// Unmaps memory returned by [`map`] or [`map_huge`].
///
/// # Safety
/// `ptr` and `bytes` must be exactly a mapping returned by [`map`] that is
/// no longer referenced.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, bytes: usize) {
    // SAFETY: the caller passes a whole mapping of ours that nobody uses.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), bytes);
    }
}
