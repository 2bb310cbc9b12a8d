//! glibc's own names for its allocator, and its introspection calls, so
//! that a program (or a library it loads) that uses them gets kmem too.
//!
//! - `__libc_malloc`, `__libc_free`, `__libc_calloc`, `__libc_realloc`,
//!   `__libc_memalign`, `__libc_valloc`, `__libc_pvalloc`: glibc exports
//!   its allocator under these names as well (version `GLIBC_2.2.5`), and
//!   code that hooks `malloc` calls them to reach "the real one". Left to
//!   glibc, they would allocate from glibc's own (otherwise unused) heap,
//!   and the block's `free` (ours) would be a bad free. jemalloc, mimalloc
//!   and tcmalloc export them for the same reason. Each is its plain
//!   counterpart.
//! - `mallinfo2` and `mallinfo`: kmem's figures ([`kmem::stats`]), not
//!   glibc's empty heap's, so a program that watches its own memory this
//!   way sees it.
//! - `mallopt`: accepted and ignored (kmem has none of glibc's tunables);
//!   it returns 1 as glibc does, and 0 only where glibc would (`M_MXFAST`
//!   out of range).
//!
//! - C23's `free_sized` and `free_aligned_sized`: `free`, the sizes
//!   unused (`free` finds the block from its address, and a wrong size
//!   frees the right block, as the C++ sized `delete` does). A C library
//!   that has them frees with its own allocator there, so a program built
//!   against one must reach ours.
//!
//! Not here: `malloc_info` (glibc's XML about its own arenas; kmem's
//! statistics are `malloc_stats`), and `cfree`, gone from glibc's API
//! since 2.26 (its compatibility symbol is glibc's `free`, which a program
//! linked against it reaches directly).

use core::ffi::{c_int, c_void};

use crate::{errno, set_errno};

/// `__libc_malloc`: [`malloc`](crate::malloc).
#[no_mangle]
pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    crate::malloc(size)
}

/// `__libc_free`: [`free`](crate::free).
///
/// # Safety
///
/// As `free`: `p` is NULL or a live block of this allocator, not used
/// afterwards.
#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: the caller's promise.
    unsafe { crate::free(p) }
}

/// C23 `free_sized(3)`: [`free`](crate::free); `size` is not used.
///
/// # Safety
///
/// As `free`.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, _size: usize) {
    // SAFETY: the caller's promise.
    unsafe { crate::free(p) }
}

/// C23 `free_aligned_sized(3)`: [`free`](crate::free); `align` and `size`
/// are not used.
///
/// # Safety
///
/// As `free`.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: the caller's promise.
    unsafe { crate::free(p) }
}

/// `__libc_calloc`: [`calloc`](crate::calloc).
#[no_mangle]
pub extern "C" fn __libc_calloc(n: usize, size: usize) -> *mut c_void {
    crate::calloc(n, size)
}

/// `__libc_realloc`: [`realloc`](crate::realloc).
///
/// # Safety
///
/// As `realloc`: `p` is NULL or a live block of this allocator; after a
/// non-NULL return (or a size of 0) only the returned pointer may be used.
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller's promise.
    unsafe { crate::realloc(p, size) }
}

/// `__libc_memalign`: [`memalign`](crate::memalign).
#[no_mangle]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    crate::memalign(align, size)
}

/// `__libc_valloc`: [`valloc`](crate::valloc).
#[no_mangle]
pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    crate::valloc(size)
}

/// `__libc_pvalloc`: [`pvalloc`](crate::pvalloc).
#[no_mangle]
pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    crate::pvalloc(size)
}

/// glibc's `struct mallinfo2` (`<malloc.h>`, glibc 2.33).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MallInfo2 {
    /// Bytes of address space kmem has mapped from the OS
    /// ([`kmem::Stats::mapped`]): glibc's "non-mmapped space", here all of
    /// it (kmem has no separate `mmap` blocks).
    pub arena: usize,
    /// Free chunks: not counted (0).
    pub ordblks: usize,
    /// Fastbin chunks: none (0).
    pub smblks: usize,
    /// `mmap`ed blocks: none apart from the arena (0).
    pub hblks: usize,
    /// Bytes in `mmap`ed blocks: 0 (see `hblks`).
    pub hblkhd: usize,
    /// Always 0, as in glibc.
    pub usmblks: usize,
    /// Bytes in fastbins: 0.
    pub fsmblks: usize,
    /// Bytes in blocks the program holds ([`kmem::Stats::allocated`]).
    pub uordblks: usize,
    /// `arena - uordblks`: what kmem holds that the program does not
    /// (caches, free items, dirty and retained pages, metadata).
    pub fordblks: usize,
    /// Releasable at the top of the heap: 0 (kmem's `malloc_trim` gives
    /// back what it can wherever it is).
    pub keepcost: usize,
}

/// glibc's `struct mallinfo`: [`MallInfo2`] in `int`s.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MallInfo {
    /// See [`MallInfo2`]'s fields, in the same order.
    pub arena: c_int,
    /// See [`MallInfo2`].
    pub ordblks: c_int,
    /// See [`MallInfo2`].
    pub smblks: c_int,
    /// See [`MallInfo2`].
    pub hblks: c_int,
    /// See [`MallInfo2`].
    pub hblkhd: c_int,
    /// See [`MallInfo2`].
    pub usmblks: c_int,
    /// See [`MallInfo2`].
    pub fsmblks: c_int,
    /// See [`MallInfo2`].
    pub uordblks: c_int,
    /// See [`MallInfo2`].
    pub fordblks: c_int,
    /// See [`MallInfo2`].
    pub keepcost: c_int,
}

/// `mallinfo2(3)`: kmem's memory as glibc's fields (see [`MallInfo2`]);
/// all zero before the allocator has started. Allocates nothing; `errno`
/// is left as it was.
#[no_mangle]
pub extern "C" fn mallinfo2() -> MallInfo2 {
    let saved = errno();
    let info = kmem::stats().map_or(MallInfo2::default(), |s| MallInfo2 {
        arena: s.mapped,
        uordblks: s.allocated,
        fordblks: s.mapped.saturating_sub(s.allocated),
        ..MallInfo2::default()
    });
    set_errno(saved);
    info
}

/// `mallinfo(3)`: [`mallinfo2`] with each figure clamped to `INT_MAX`
/// (glibc's wraps around past 2 GiB).
#[no_mangle]
pub extern "C" fn mallinfo() -> MallInfo {
    let i = mallinfo2();
    let c = |v: usize| c_int::try_from(v).unwrap_or(c_int::MAX);
    MallInfo {
        arena: c(i.arena),
        ordblks: c(i.ordblks),
        smblks: c(i.smblks),
        hblks: c(i.hblks),
        hblkhd: c(i.hblkhd),
        usmblks: c(i.usmblks),
        fsmblks: c(i.fsmblks),
        uordblks: c(i.uordblks),
        fordblks: c(i.fordblks),
        keepcost: c(i.keepcost),
    }
}

/// glibc's `M_MXFAST` and the largest value it accepts for it
/// (`80 * sizeof(size_t) / 4`).
const M_MXFAST: c_int = 1;
const MAX_FAST_SIZE: c_int = 80 * core::mem::size_of::<usize>() as c_int / 4;

/// `mallopt(3)`: kmem has none of glibc's tunables, so every parameter is
/// accepted and has no effect: 1, as glibc returns for a parameter it
/// takes, except for an `M_MXFAST` outside `0..=160` (0, as glibc).
#[no_mangle]
pub extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    c_int::from(param != M_MXFAST || (0..=MAX_FAST_SIZE).contains(&value))
}

/// `__libc_mallinfo`: [`mallinfo`].
#[no_mangle]
pub extern "C" fn __libc_mallinfo() -> MallInfo {
    mallinfo()
}

/// `__libc_mallopt`: [`mallopt`].
#[no_mangle]
pub extern "C" fn __libc_mallopt(param: c_int, value: c_int) -> c_int {
    mallopt(param, value)
}
