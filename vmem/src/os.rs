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

/// Unmaps memory returned by [`map`].
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
