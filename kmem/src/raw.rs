//! The untyped allocator for C-style callers (the `malloc(3)` family of the
//! `bsdalloc-capi` crate): sizes and alignments in, raw pointers out, no
//! malloc type, no `Layout`.
//!
//! - Every function is `NOWAIT`: out of memory (or an absurd size or
//!   alignment) gives null at once, never a sleep, a panic or an abort.
//! - [`free`], [`realloc`] and [`usable_size`] look the pointer up in the
//!   page metadata (O(1)). One that is not the start of a live kmem
//!   allocation (foreign, interior, allocator-internal) is reported through
//!   [`set_report_hook`](crate::set_report_hook) (without a hook: a message
//!   and abort) and then left alone.
//! - Nothing here calls the global allocator.

use core::ptr;

use crate::malloc::{alloc_untyped, free_untyped, realloc_untyped, usable_size_untyped};
use crate::Flags;

/// `size` bytes aligned to `align` (a power of two; anything else gives
/// null), or null when memory cannot be had at once. `size == 0` gives the
/// smallest block (a unique pointer). The contents are uninitialized.
#[inline]
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    alloc_untyped(size, align, Flags::NOWAIT).map_or(ptr::null_mut(), |p| p.as_ptr())
}

/// As [`alloc`], zero-filled.
#[inline]
pub fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    alloc_untyped(size, align, Flags::NOWAIT.with(Flags::ZERO))
        .map_or(ptr::null_mut(), |p| p.as_ptr())
}

/// Frees a block of [`alloc`], [`alloc_zeroed`] or [`realloc`]. Null is a
/// no-op. Returns whether something was freed: false for null and for a
/// pointer that was reported (not a kmem allocation start).
///
/// # Safety
///
/// If `ptr` is a live kmem allocation, nothing uses it afterwards. (A
/// pointer kmem never handed out is detected and reported, and so is a
/// second free of a large block. A second free of a small block is caught
/// only with the `invariants` feature, by UMA's debug bitset: it is
/// reported through the same hook and dropped, and this function returns
/// false for it.)
///
/// Blocks of the typed [`malloc`](crate::malloc) must go back through
/// [`kmem::free`](crate::free): this function frees them too, but their
/// type's statistics keep counting them (with `invariants` they are also
/// [`MALLOC_TAG_BYTES`](crate::MALLOC_TAG_BYTES) longer than asked).
#[inline]
pub unsafe fn free(ptr: *mut u8) -> bool {
    // SAFETY: the caller's promise.
    unsafe { free_untyped(ptr, "free") }.is_some()
}

/// Resizes `ptr` to `size` bytes aligned to `align` (a power of two): in
/// place when its size class (or page count) does not change, else a new
/// block holding the old contents (up to the smaller size) and the old one
/// freed. Null `ptr` allocates. Returns null, leaving `ptr` untouched, when
/// memory cannot be had, when `align` is not a power of two, or when `ptr`
/// is not a kmem allocation (reported).
///
/// # Safety
///
/// `ptr` is null or a live kmem allocation; unless null is returned, it
/// must not be used again (except as the returned pointer).
#[inline]
pub unsafe fn realloc(ptr: *mut u8, size: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    // SAFETY: the caller's promise.
    unsafe { realloc_untyped(ptr, size, align, Flags::NOWAIT) }
        .map_or(ptr::null_mut(), |p| p.as_ptr())
}

/// The usable bytes of the allocation starting at `ptr` (at least the size
/// asked for). 0 for null; 0 after a report for anything that is not a
/// kmem allocation start.
#[inline]
pub fn usable_size(ptr: *const u8) -> usize {
    usable_size_untyped(ptr, "malloc_usable_size")
}
