//! Thread-locals that never call `__tls_get_addr` from a library in
//! static TLS: [`zeroed_thread_local!`](crate::zeroed_thread_local).
//!
//! Rust's `thread_local!` uses the general-dynamic TLS model: in a shared
//! library every access is a call to the C library's `__tls_get_addr`.
//! For an allocator that a program preloads that call is not only slow
//! (about 15 instructions) but unsafe to make: right after a `dlopen` of a
//! module with TLS, glibc's `__tls_get_addr` brings the calling thread's
//! DTV up to date, which may take the loader's TLS lock
//! (`dl_load_tls_lock`) or call `realloc` (ours) from inside the update.
//! A thread doing so while it holds one of the allocator's locks
//! deadlocks with a `dlopen` that holds the loader's lock and calls
//! `malloc` (seen: a boundary-tag refill under the kernel arena's lock,
//! 2026-12-06).
//!
//! A block declared with the macro lives in the library's TLS segment
//! (`.tbss`, so zero-initialised) and is reached through a TLS descriptor
//! (the x86-64 psABI's GNU2 dialect, [`tlsdesc_offset!`]): for a library
//! in static TLS (preloaded, or linked by the executable) the dynamic
//! linker makes the descriptor's function `_dl_tlsdesc_return`, which
//! returns the offset and touches neither the DTV nor a lock; in an
//! executable the linker rewrites the call into a move of the constant.
//! A `dlopen`ed library's descriptor resolves through the dynamic path,
//! like `__tls_get_addr`; such a library is not the process's `malloc`,
//! so no `dlopen` waits for its locks. Elsewhere (other targets, loom)
//! the macro is a `thread_local!` with the same zeroed initial value.
//!
//! [`tlsdesc_offset!`]: crate::tlsdesc_offset

/// Types whose all-zero bytes are a valid value, the initial value of a
/// [`zeroed_thread_local!`](crate::zeroed_thread_local) block.
///
/// # Safety
///
/// Every byte of `Self` zero must be a valid, initialised `Self`, and the
/// type must be usable without running a constructor or a destructor (no
/// `Drop`: a TLS block is never dropped).
pub unsafe trait ZeroInit {}

// SAFETY: zero is `false` / 0 for each; none has a destructor.
unsafe impl ZeroInit for core::cell::Cell<bool> {}
// SAFETY: as above.
unsafe impl ZeroInit for core::cell::Cell<u8> {}
// SAFETY: as above.
unsafe impl ZeroInit for core::cell::Cell<u64> {}
// SAFETY: as above.
unsafe impl ZeroInit for core::cell::Cell<usize> {}
// SAFETY: an array of zero-valid elements is zero-valid, no destructor.
unsafe impl<const N: usize> ZeroInit for core::cell::Cell<[u64; N]> {}
// SAFETY: as above.
unsafe impl<const N: usize> ZeroInit for core::cell::Cell<[usize; N]> {}

/// The thread pointer (`%fs:0`, the TCB's self-pointer on x86-64 Linux).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[doc(hidden)]
#[inline(always)]
pub fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: reads the thread pointer, which the C library keeps at
    // `%fs:0` (the TCB's first word points at the TCB).
    unsafe {
        core::arch::asm!(
            "movq %fs:0, {tp}",
            tp = out(reg) tp,
            options(att_syntax, nostack, preserves_flags, readonly, pure),
        );
    }
    tp
}

/// Declares `$vis fn $name<R>(f: impl FnOnce(&$ty) -> R) -> R`, which runs
/// `f` on the calling thread's `$ty`, zero-initialised in every thread
/// (`$ty:` [`ZeroInit`](crate::ZeroInit)), without `__tls_get_addr` where
/// the library is in static TLS (see the module `tls_block`). `$sym` is
/// the block's symbol: unique in the link, with a version in the name so
/// that two versions of a crate keep two blocks.
///
/// An item, so at module level (not in a function body):
///
/// ```
/// use core::cell::Cell;
///
/// uma::zeroed_thread_local! {
///     /// How many times this thread asked.
///     fn asked: Cell<u64> = "doc_example_asked_v01";
/// }
///
/// fn main() {
///     asked(|c| c.set(c.get() + 1));
///     assert_eq!(asked(Cell::get), 1);
///     std::thread::spawn(|| assert_eq!(asked(Cell::get), 0)).join().unwrap();
/// }
/// ```
#[macro_export]
macro_rules! zeroed_thread_local {
    ($(#[$attr:meta])* $vis:vis fn $name:ident: $ty:ty = $sym:literal;) => {
        #[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
        core::arch::global_asm!(
            concat!(".pushsection .tbss.", $sym, ",\"awT\",@nobits"),
            ".p2align {align}",
            concat!(".globl ", $sym),
            concat!(".hidden ", $sym),
            concat!(".type ", $sym, ",@object"),
            concat!(".size ", $sym, ",{size}"),
            concat!($sym, ":"),
            ".zero {size}",
            ".popsection",
            size = const core::mem::size_of::<$ty>(),
            align = const core::mem::align_of::<$ty>().trailing_zeros(),
        );

        $(#[$attr])*
        #[inline(always)]
        $vis fn $name<R>(f: impl FnOnce(&$ty) -> R) -> R {
            const fn zero_init<T: $crate::ZeroInit>() {}
            const _: () = zero_init::<$ty>();
            #[cfg(all(target_arch = "x86_64", target_os = "linux", not(loom)))]
            {
                let at = $crate::tls_block::thread_pointer()
                    .wrapping_add($crate::tlsdesc_offset!($sym));
                // SAFETY: the calling thread's copy of the block (thread
                // pointer + its offset; a static offset is negative, hence
                // wrapping, as the hardware adds), sized and aligned for
                // `$ty` by the declaration above, zero-initialised (a valid
                // `$ty`: `ZeroInit`), alive as long as the thread; `$ty` is
                // used by this thread only (the reference is lent to `f`
                // alone and cannot outlive the call).
                f(unsafe { &*(at as *const $ty) })
            }
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(loom))))]
            {
                std::thread_local! {
                    // SAFETY: `$ty: ZeroInit`, all-zero bytes are a valid value.
                    static BLOCK: $ty = const { unsafe { core::mem::zeroed() } };
                }
                BLOCK.with(f)
            }
        }
    };
}
