//! C++ `operator new` and `operator delete`, every form (plain, array,
//! `nothrow`, sized, aligned), so that a C++ program allocates without
//! the C++ runtime's wrappers around `malloc` and `free` (two more calls
//! per pair).
//!
//! - `new` takes the same fast path as `malloc`. On failure the C++
//!   semantics (the new-handler loop, then `std::bad_alloc`; `nullptr` for
//!   `nothrow`) come from the next definition of the same operator, the
//!   C++ runtime's, found with `dlsym(RTLD_NEXT)`: it calls `malloc` (or
//!   `aligned_alloc`), which is ours. The exception unwinds through the
//!   `C-unwind` frame of the operator.
//! - Every `delete` is `free`. A sized `delete` does not trust its size:
//!   the block is found from the page metadata as `free` finds it, so a
//!   wrong size (`new[]` with `delete`, a base-class `delete` without a
//!   virtual destructor) frees the right block, as it does with the C++
//!   runtime over glibc (jemalloc and tcmalloc trust the size, and such a
//!   program corrupts their heaps). The lookup costs a few instructions
//!   more than trusting the size would.

use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::{alloc, alloc16, free_impl, MIN_ALIGN};

/// The next definition of the operator `name` (the C++ runtime's), looked
/// up once; aborts with a message if there is none (a program that calls
/// an operator has a C++ runtime, so this does not happen).
#[cold]
fn next_definition(name: &CStr, cache: &AtomicUsize) -> usize {
    let mut p = cache.load(Ordering::Acquire);
    if p == 0 {
        // SAFETY: a NUL-terminated name; RTLD_NEXT searches the objects
        // loaded after this one.
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        if p == 0 {
            crate::write_stderr(format_args!(
                "bsdalloc: out of memory in {name:?}, and no C++ runtime definition to report it\n"
            ));
            // SAFETY: abort has no preconditions.
            unsafe { libc::abort() };
        }
        cache.store(p, Ordering::Release);
    }
    p
}

/// Defines one `operator new`: the allocation, then on failure the next
/// definition with the same arguments.
macro_rules! operator_new {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $t:ty),*) => alloc($size:expr, $align:expr)) => {
        $(#[$doc])*
        #[no_mangle]
        pub extern "C-unwind" fn $name($($arg: $t),*) -> *mut c_void {
            let p = if $align == MIN_ALIGN {
                alloc16($size)
            } else {
                alloc($size, $align)
            };
            if !p.is_null() {
                return p;
            }
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name = concat!(stringify!($name), "\0");
            // SAFETY: the literal ends with its only NUL.
            let name = unsafe { CStr::from_bytes_with_nul_unchecked(name.as_bytes()) };
            let f = next_definition(name, &NEXT);
            // SAFETY: the C++ runtime's definition of this very operator,
            // whose signature this one mirrors (the Itanium C++ ABI).
            let f = unsafe {
                core::mem::transmute::<usize, extern "C-unwind" fn($($t),*) -> *mut c_void>(f)
            };
            f($($arg),*)
        }
    };
}

/// `std::nothrow_t` (an empty tag passed by reference).
type Nothrow = *const c_void;

operator_new!(
    /// `operator new(size_t)`.
    _Znwm(size: usize) => alloc(size, MIN_ALIGN));
operator_new!(
    /// `operator new[](size_t)`.
    _Znam(size: usize) => alloc(size, MIN_ALIGN));
operator_new!(
    /// `operator new(size_t, const std::nothrow_t&)`.
    _ZnwmRKSt9nothrow_t(size: usize, nt: Nothrow) => alloc(size, MIN_ALIGN));
operator_new!(
    /// `operator new[](size_t, const std::nothrow_t&)`.
    _ZnamRKSt9nothrow_t(size: usize, nt: Nothrow) => alloc(size, MIN_ALIGN));
operator_new!(
    /// `operator new(size_t, std::align_val_t)`.
    _ZnwmSt11align_val_t(size: usize, align: usize) => alloc(size, align.max(MIN_ALIGN)));
operator_new!(
    /// `operator new[](size_t, std::align_val_t)`.
    _ZnamSt11align_val_t(size: usize, align: usize) => alloc(size, align.max(MIN_ALIGN)));
operator_new!(
    /// `operator new(size_t, std::align_val_t, const std::nothrow_t&)`.
    _ZnwmSt11align_val_tRKSt9nothrow_t(size: usize, align: usize, nt: Nothrow)
        => alloc(size, align.max(MIN_ALIGN)));
operator_new!(
    /// `operator new[](size_t, std::align_val_t, const std::nothrow_t&)`.
    _ZnamSt11align_val_tRKSt9nothrow_t(size: usize, align: usize, nt: Nothrow)
        => alloc(size, align.max(MIN_ALIGN)));

/// Defines `operator delete` forms: each is `free` of its first argument.
macro_rules! operator_delete {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $t:ty),*);)*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// As `free(3)`: `p` is null or a live block of this allocator.
        #[no_mangle]
        pub unsafe extern "C" fn $name(p: *mut c_void, $($arg: $t),*) {
            let _ = ($($arg,)*);
            // SAFETY: the caller's promise.
            unsafe { free_impl(p.cast()) }
        }
    )*};
}

operator_delete! {
    /// `operator delete(void*)`.
    _ZdlPv();
    /// `operator delete[](void*)`.
    _ZdaPv();
    /// `operator delete(void*, size_t)` (the size is not trusted).
    _ZdlPvm(size: usize);
    /// `operator delete[](void*, size_t)` (the size is not trusted).
    _ZdaPvm(size: usize);
    /// `operator delete(void*, const std::nothrow_t&)`.
    _ZdlPvRKSt9nothrow_t(nt: Nothrow);
    /// `operator delete[](void*, const std::nothrow_t&)`.
    _ZdaPvRKSt9nothrow_t(nt: Nothrow);
    /// `operator delete(void*, std::align_val_t)`.
    _ZdlPvSt11align_val_t(align: usize);
    /// `operator delete[](void*, std::align_val_t)`.
    _ZdaPvSt11align_val_t(align: usize);
    /// `operator delete(void*, size_t, std::align_val_t)`.
    _ZdlPvmSt11align_val_t(size: usize, align: usize);
    /// `operator delete[](void*, size_t, std::align_val_t)`.
    _ZdaPvmSt11align_val_t(size: usize, align: usize);
    /// `operator delete(void*, std::align_val_t, const std::nothrow_t&)`.
    _ZdlPvSt11align_val_tRKSt9nothrow_t(align: usize, nt: Nothrow);
    /// `operator delete[](void*, std::align_val_t, const std::nothrow_t&)`.
    _ZdaPvSt11align_val_tRKSt9nothrow_t(align: usize, nt: Nothrow);
}
