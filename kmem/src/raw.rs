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
//! - In debug mode ([`set_debug`](crate::set_debug), `BSDALLOC_DEBUG`)
//!   every block has redzones and patterns, checked by [`free`],
//!   [`realloc`] and [`usable_size`]; [`usable_size`] is then the size
//!   asked for.
//!
//! Each call is the shared fast path (`kmem/src/fast.rs`: a hit in the calling
//! thread's cache, as for [`Kmem`](crate::Kmem)), then the slow road. A
//! front door with a slow road of its own (the C ABI, whose slow road
//! carries a recursion guard) calls the `*_fast` functions, which do
//! only the hit and say when they missed. Every function here reaches
//! the thread's caches through a TLS-descriptor word
//! ([`uma::TlsDescriptor`]): the cheap way from a shared library, one
//! load more than Rust's thread-local from an executable, and, in a
//! library loaded at start-up, never a call to `__tls_get_addr` (which
//! may wait for the loader's lock right after a `dlopen`: see
//! `uma::tls_block`).

use core::ptr::{self, NonNull};

use crate::classes::{class_of, CLASS_SIZES};
use crate::debugmode;
use crate::fast::{self, TlsDescriptor};
use crate::fast_large;
use crate::malloc::{free_untyped, realloc_untyped, usable_size_untyped};
use crate::pagemeta;
use crate::Flags;

/// A hit of the fast path for `size` bytes (at most 1 KiB) aligned to
/// `align` (a power of two at most 16): an uninitialized block from the
/// calling thread's cache, or `None` on a miss and for any other request.
/// Call [`alloc_mid_fast`], then [`alloc`] (or your own slow road).
#[inline(always)]
pub fn alloc_fast(size: usize, align: usize) -> Option<NonNull<u8>> {
    fast::alloc::<TlsDescriptor>(size, align)
}

/// [`alloc_fast`] for `align` 16 (C's `malloc`): the same hit, with a
/// shorter table lookup.
#[inline(always)]
pub fn alloc_fast_align16(size: usize) -> Option<NonNull<u8>> {
    fast::alloc_align16::<TlsDescriptor>(size)
}

/// [`alloc_fast`] for 1 KiB to 32 KiB (out of line: call it after
/// `alloc_fast` missed).
#[inline]
pub fn alloc_mid_fast(size: usize, align: usize) -> Option<NonNull<u8>> {
    fast::alloc_mid::<TlsDescriptor>(size, align)
}

/// After [`alloc_fast`] and [`alloc_mid_fast`] missed: a large block of the
/// quantum cache's sizes (32 KiB to 64 KiB) from the thread's cache, or
/// `None` (then your slow road). Not zeroed.
#[inline]
pub fn alloc_large_fast(size: usize, align: usize) -> Option<NonNull<u8>> {
    fast_large::alloc_large::<TlsDescriptor>(size, align)
}

/// After [`free_fast`] missed: the free of a large block of the quantum
/// cache's sizes into the thread's cache; false (nothing done) for
/// anything else.
///
/// # Safety
///
/// As [`free`].
#[inline]
pub unsafe fn free_large_fast(ptr: *mut u8) -> bool {
    // SAFETY: the caller's promise.
    unsafe { fast_large::free_large::<TlsDescriptor>(ptr) }
}

/// A hit of the fast path for `free(ptr)`: true when `ptr` was the start of
/// a small block of kmem and went into the calling thread's cache; false
/// (nothing done) on a miss, among them null, large blocks and anything
/// that is not a kmem block. Call [`free`] (or your own slow road) then.
///
/// # Safety
///
/// As [`free`].
#[inline(always)]
pub unsafe fn free_fast(ptr: *mut u8) -> bool {
    // SAFETY: the caller's promise.
    unsafe { fast::free::<TlsDescriptor>(ptr) }
}

/// For a front door with a slow road of its own, first thing on it: an
/// allocation of `size` bytes aligned to `align` that the heap profiler's
/// gate sent off the fast path is counted and served (uninitialized);
/// `None` (nothing done) for anything else. `None` without profiling.
#[inline]
pub fn alloc_gated(size: usize, align: usize) -> Option<NonNull<u8>> {
    crate::prof::alloc_gated::<TlsDescriptor>(size, align)
}

/// For a front door with a slow road of its own, first thing on it: a
/// free that the heap profiler's gate sent off the fast path is served
/// (true); false (nothing done) for anything else. A no-op without
/// profiling.
///
/// # Safety
///
/// As [`free`].
#[inline]
pub unsafe fn free_gated(ptr: *mut u8) -> bool {
    // SAFETY: the caller's promise.
    unsafe { crate::prof::free_gated(ptr) }
}

/// The size class of the live small block starting at `ptr`, when the
/// page metadata proves it one (a hit of the fast path's lookup) and it
/// does not hold the double-free key; `None` for anything else (null,
/// large blocks, foreign or interior pointers, freed blocks), without a
/// report. Its usable size is `CLASS_SIZES[c]`.
#[inline(always)]
pub fn class_of_block(ptr: *const u8) -> Option<usize> {
    live_class(ptr)
}

/// [`class_of_block`].
#[inline(always)]
fn live_class(ptr: *const u8) -> Option<usize> {
    let c = fast::class_of_ptr(ptr)?;
    // SAFETY: `class_of_ptr` proved `ptr` the start of a small block.
    (!unsafe { fast::holds_key(ptr, fast::free_key()) }).then_some(c)
}

/// `size` bytes aligned to `align` (a power of two; anything else gives
/// null), or null when memory cannot be had at once. `size == 0` gives the
/// smallest block (a unique pointer). The contents are uninitialized.
#[inline]
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    match fast::alloc::<TlsDescriptor>(size, align) {
        Some(p) => p.as_ptr(),
        None => {
            fast::alloc_slow(size, align, Flags::NOWAIT).map_or(ptr::null_mut(), |p| p.as_ptr())
        }
    }
}

/// For a front door with a slow road of its own, after [`alloc_fast`] and
/// [`alloc_mid_fast`] missed: the cheapest step of the slow road alone,
/// an item from the thread's free bucket swapped in (no lock); `None`
/// (nothing done) when that does not serve. Never while profiling.
#[inline]
pub fn alloc_swap(size: usize, align: usize) -> Option<NonNull<u8>> {
    fast::alloc_swap::<TlsDescriptor>(size, align)
}

/// As [`alloc_swap`] for a free after [`free_fast`] missed: `ptr` goes
/// into the thread's free bucket swapped in; false (nothing done) when
/// that does not serve.
///
/// # Safety
///
/// As [`free`].
#[inline]
pub unsafe fn free_swap(ptr: *mut u8) -> bool {
    // SAFETY: the caller's promise.
    unsafe { fast::free_swap::<TlsDescriptor>(ptr, None) }
}

/// For a front door with a slow road of its own, after [`alloc_fast`],
/// [`alloc_mid_fast`] and [`alloc_gated`] missed: [`alloc`] (zero-filled
/// with `zero`) without trying them again (each a thread-local lookup
/// more, a `__tls_get_addr` call in a shared library).
#[inline]
pub fn alloc_missed(size: usize, align: usize, zero: bool) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    let flags = if zero {
        Flags::NOWAIT.with(Flags::ZERO)
    } else {
        Flags::NOWAIT
    };
    fast::alloc_missed(size, align, flags).map_or(ptr::null_mut(), |p| p.as_ptr())
}

/// As [`alloc`], zero-filled.
#[inline]
pub fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    if let Some(p) = fast::alloc::<TlsDescriptor>(size, align) {
        // SAFETY: a fresh item of at least `size` bytes, ours.
        unsafe { ptr::write_bytes(p.as_ptr(), 0, size) };
        return p.as_ptr();
    }
    fast::alloc_slow(size, align, Flags::NOWAIT.with(Flags::ZERO))
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
    if debugmode::on() {
        // SAFETY: the caller's promise.
        return unsafe { debugmode::free(ptr, "free") };
    }
    // SAFETY: the caller's promise.
    unsafe { fast::free::<TlsDescriptor>(ptr) || free_missed(ptr) }
}

/// For a front door with a slow road of its own, after [`free_fast`] (and
/// [`free_gated`]) missed: [`free`] without trying the fast path again.
///
/// # Safety
///
/// As [`free`].
#[inline]
pub unsafe fn free_missed(ptr: *mut u8) -> bool {
    if debugmode::on() {
        // SAFETY: the caller's promise.
        return unsafe { debugmode::free(ptr, "free") };
    }
    // SAFETY: the caller's promise.
    unsafe {
        (crate::prof::tracking() && crate::prof::free_if_sampled(ptr))
            || match free_untyped(ptr, "free") {
                Some(crate::malloc::Owner::Class(c)) => {
                    crate::prof::after_free(c);
                    true
                }
                o => o.is_some(),
            }
    }
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
    if debugmode::on() {
        // SAFETY: the caller's promise.
        return unsafe { debugmode::realloc(ptr, size, align, fast::alloc_plain) };
    }
    if crate::prof::tracking() {
        // SAFETY: the caller's promise.
        if let Some(new) = unsafe { crate::prof::realloc_if_sampled(ptr, size, align) } {
            return new;
        }
    }
    if let Some(c) = live_class(ptr) {
        if class_of(size, align) == Some(c) {
            return ptr;
        }
        let new = alloc(size, align);
        if !new.is_null() {
            // SAFETY: `ptr` is a live item of class `c` (CLASS_SIZES[c]
            // bytes), `new` a fresh block of `size`; distinct. Then `ptr`
            // goes back as `free` would (the caller's promise).
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, CLASS_SIZES[c].min(size));
                if !fast::free_class::<TlsDescriptor>(NonNull::new_unchecked(ptr), c) {
                    free_untyped(ptr, "realloc");
                }
            }
        }
        return new;
    }
    // SAFETY: the caller's promise.
    unsafe { realloc_untyped(ptr, size, align, Flags::NOWAIT) }
        .map_or(ptr::null_mut(), |p| p.as_ptr())
}

/// For a front door's `realloc` of a block that is not a small one: true
/// when `ptr` is the start of a live large block that `realloc` to `size`
/// bytes aligned to `align` keeps as it is (see
/// `crate::malloc::large_keeps`: a buffer grown a few bytes at a time into
/// its pages or the room it was moved with), so that the caller returns
/// `ptr` without its slow road (recursion guard, policy, validation and
/// reports): a page word's look and a few compares. False for anything
/// else, null and pointers not of kmem included (the slow road decides,
/// and reports what is bad), and while debug mode or the profiler is on
/// (their `realloc` has work to do).
#[inline]
pub fn realloc_keeps_large(ptr: *mut u8, size: usize, align: usize) -> bool {
    if debugmode::on() || crate::prof::tracking() {
        return false;
    }
    let word = pagemeta::lookup(ptr as usize);
    pagemeta::is_large(word) && crate::malloc::large_keeps(word >> 3, ptr as usize, size, align)
}

/// The usable bytes of the allocation starting at `ptr` (at least the size
/// asked for). 0 for null; 0 after a report for anything that is not a
/// kmem allocation start.
#[inline]
pub fn usable_size(ptr: *const u8) -> usize {
    if debugmode::on() {
        return debugmode::usable_size(ptr);
    }
    match fast::class_of_ptr(ptr) {
        Some(c) => CLASS_SIZES[c],
        None => usable_size_untyped(ptr, "malloc_usable_size"),
    }
}
