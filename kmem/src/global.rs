//! [`Kmem`]: kmem as Rust's global allocator, and `allocator_api2`.

use crate::sync::plain::Ordering;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use crate::classes::{class_of, class_of_small, fits_large, CLASS_SIZES, MAX_CLASS_SIZE};
use crate::fast;
use crate::fast_large;
use crate::kernel::{kernel, CLASS_ZONES};
use crate::malloc::{free_owned, free_small, owner_of, Owner};
use crate::os::round_page;
use crate::pagemeta;
use crate::report::{report, Report, ReportKind};
use crate::Flags;

/// kmem as a global allocator:
///
/// ```
/// #[global_allocator]
/// static A: kmem::Kmem = kmem::Kmem;
/// # fn main() { let v = vec![1u8; 100]; assert_eq!(v.len(), 100); }
/// ```
///
/// Small requests (up to 32 KiB, alignment up to 4 KiB) are items of the
/// size-class zones: a hit in the thread's cache takes no lock and no
/// atomic read-modify-write. Larger or more aligned requests are whole
/// pages of the kernel arena (any power-of-two alignment; 2 MiB and more
/// is fine). `dealloc` finds the zone from the layout, so it needs no
/// lookup; large blocks are checked against their page-metadata cookie.
///
/// Never panics: out of memory returns null (Rust then reports it);
/// corruption it detects is reported and aborts. Allocations never sleep
/// (`NOWAIT`). Safe across thread exit and `fork` (see the crate doc).
#[derive(Clone, Copy, Debug, Default)]
pub struct Kmem;

// SAFETY: every block is `layout.size()` usable bytes aligned to
// `layout.align()` (class_of / xalloc alignment), disjoint from every
// other live block; dealloc takes back exactly what alloc gave.
unsafe impl GlobalAlloc for Kmem {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match fast::alloc::<fast::RustTls>(layout.size(), layout.align()) {
            Some(p) => p.as_ptr(),
            None => alloc_miss(layout, Flags::NOWAIT),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: `ptr` (not null) came from
        // `alloc` with this layout, and is not used afterwards.
        if unsafe {
            fast::free_sized::<fast::RustTls>(
                NonNull::new_unchecked(ptr),
                layout.size(),
                layout.align(),
            )
        } {
            return;
        }
        // SAFETY: as above.
        unsafe { dealloc_miss(ptr, layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(p) = fast::alloc::<fast::RustTls>(layout.size(), layout.align()) {
            // SAFETY: an item of the class, at least `layout.size()` bytes,
            // ours.
            unsafe { ptr::write_bytes(p.as_ptr(), 0, layout.size()) };
            return p.as_ptr();
        }
        // Large blocks above the quantum cache clear only the dirty pages
        // they get; clean arena pages read as zero (see `large_alloc`).
        alloc_miss(layout, Flags::NOWAIT.with(Flags::ZERO))
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        if crate::debugmode::on() {
            // SAFETY: GlobalAlloc's contract for realloc.
            return unsafe { crate::debugmode::realloc(ptr, new_size, align, fast::alloc_plain) };
        }
        let old = class_of(layout.size(), align);
        let new = class_of(new_size, align);
        match (old, new) {
            (Some(a), Some(b)) if a == b => return ptr,
            (None, None) if large_fits(ptr, new_size, align) => return ptr,
            (None, None) if resize_large(ptr, layout.size(), new_size, align) => return ptr,
            _ => {}
        }
        // SAFETY: GlobalAlloc's contract for realloc: new_size rounded to
        // align does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        let grown = match (new, kernel()) {
            (None, Some(k)) if new_size > layout.size() => {
                // A small step gets room to go on growing in place, as the
                // C ABI's `realloc` gives it (its size is the layout's, so
                // the room is the C road's 2.5 times its size).
                let room = crate::malloc::grows_a_little(layout.size(), new_size)
                    .then(|| new_size.saturating_mul(5) / 2);
                crate::malloc::place_grown(k, new_size, room, align, Flags::NOWAIT)
            }
            _ => None,
        };
        // SAFETY: a valid layout of non-zero size.
        let p = grown.map_or_else(|| unsafe { self.alloc(new_layout) }, NonNull::as_ptr);
        if !p.is_null() {
            // SAFETY: both blocks live, distinct; copy the smaller size.
            unsafe {
                ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        p
    }
}

/// Whether the large block at `ptr` serves `new_size` bytes aligned to
/// `align` as it is (`classes::fits_large`: its pages are the request's
/// whole pages or its large class's), so that `realloc` keeps it.
fn large_fits(ptr: *mut u8, new_size: usize, align: usize) -> bool {
    let word = pagemeta::lookup(ptr as usize);
    pagemeta::is_large(word) && ptr as usize % align == 0 && fits_large(word >> 3, new_size, align)
}

/// `realloc` of a large block to another large page count, in place
/// ([`crate::malloc::large_resize`]): true if done. Not for sampled blocks
/// (the profiler keeps their size), nor when the page word disagrees with
/// the layout (the move's `dealloc` reports that).
fn resize_large(ptr: *mut u8, old_size: usize, new_size: usize, align: usize) -> bool {
    if crate::prof::tracking() {
        return false;
    }
    let (Some(k), Some(new)) = (kernel(), round_page(new_size)) else {
        return false;
    };
    let word = pagemeta::lookup(ptr as usize);
    let n = word >> 3;
    pagemeta::is_large(word)
        && fits_large(n, old_size, align)
        && crate::malloc::large_resize(k, ptr as usize, n, new)
}

/// Everything but a hit of the fast path (see [`fast::alloc_slow`]).
#[cfg_attr(not(feature = "invariants"), cold)]
#[inline(never)]
fn alloc_miss(layout: Layout, flags: Flags) -> *mut u8 {
    if !flags.contains(Flags::ZERO) {
        if let Some(p) = fast_large::alloc_large::<fast::RustTls>(layout.size(), layout.align()) {
            return p.as_ptr();
        }
    }
    fast::alloc_slow(layout.size(), layout.align(), flags).map_or(ptr::null_mut(), NonNull::as_ptr)
}

/// As [`alloc_miss`], for `dealloc`: small blocks through their class
/// zone, large ones through [`dealloc_slow`].
///
/// # Safety
///
/// `GlobalAlloc::dealloc`'s contract.
#[cfg_attr(not(feature = "invariants"), cold)]
#[inline(never)]
unsafe fn dealloc_miss(ptr: *mut u8, layout: Layout) {
    // SAFETY: the caller's contract.
    if crate::prof::tracking()
        // SAFETY: the caller's contract; a sampled block is taken first.
        && unsafe {
            crate::prof::free_if_sampled(ptr)
                || crate::prof::free_sized_gated(ptr, layout.size(), layout.align())
        }
    {
        return;
    }
    if crate::debugmode::on() {
        // SAFETY: the caller's contract.
        unsafe { crate::debugmode::free(ptr, "dealloc") };
        return;
    }
    // SAFETY: the caller's contract (`ptr` is not null).
    if unsafe {
        fast::free_mid::<fast::RustTls>(NonNull::new_unchecked(ptr), layout.size(), layout.align())
            || fast::free_swap::<fast::RustTls>(ptr, Some((layout.size(), layout.align())))
            || (layout.size() > MAX_CLASS_SIZE && fast_large::free_large::<fast::RustTls>(ptr))
    } {
        return;
    }
    if layout.align() <= 16 {
        if let Some(c) = class_of_small(layout.size(), layout.align()) {
            let z = CLASS_ZONES[c].load(Ordering::Acquire);
            if !z.is_null() {
                #[cfg(feature = "invariants")]
                if !check_class(ptr, layout) {
                    return;
                }
                fast::ensure_published();
                // SAFETY: the caller's contract: `ptr` came from `alloc`
                // with this layout, i.e. from this zone (set once to a zone
                // that lives for the process).
                unsafe { free_small(&*z, NonNull::new_unchecked(ptr), c, "dealloc") };
                crate::prof::after_free(c);
                return;
            }
        }
    }
    // SAFETY: the caller's contract.
    unsafe { dealloc_slow(ptr, layout) }
}

/// # Safety
///
/// `GlobalAlloc::dealloc`'s contract.
#[cold]
#[inline(never)]
unsafe fn dealloc_slow(ptr: *mut u8, layout: Layout) {
    let Some(k) = kernel() else { return };
    let expect = match class_of(layout.size(), layout.align()) {
        Some(c) => Owner::Class(c),
        None => {
            // Large frees are rare and costly anyway: check the cookie. A
            // new block has its large class's pages, one that `realloc`
            // resized in place the request's whole pages (`fits_large`).
            let Some(found) = owner_of(k, ptr as usize, "dealloc") else {
                return;
            };
            match found {
                Owner::Large(m) if fits_large(m, layout.size(), layout.align()) => found,
                _ => {
                    report(Report {
                        size: layout.size(),
                        actual: found.size(),
                        ..Report::new(ReportKind::WrongSize, "dealloc", ptr as usize, "large")
                    });
                    return;
                }
            }
        }
    };
    // (Large blocks had their cookie checked above; `check_class` expects
    // a class and would report every one of them.)
    #[cfg(feature = "invariants")]
    if matches!(expect, Owner::Class(_)) && !check_class(ptr, layout) {
        return;
    }
    // SAFETY: GlobalAlloc's contract, and the cookie check above.
    unsafe { free_owned(k, NonNull::new_unchecked(ptr), expect, "dealloc") };
}

/// With `invariants`: the page metadata of a small block must agree with
/// the layout. False (after a report) when the dealloc must be dropped.
#[cfg(feature = "invariants")]
fn check_class(ptr: *mut u8, layout: Layout) -> bool {
    let Some(k) = kernel() else { return false };
    let Some(found) = owner_of(k, ptr as usize, "dealloc") else {
        return false;
    };
    if Some(found) != class_of(layout.size(), layout.align()).map(Owner::Class) {
        report(Report {
            size: layout.size(),
            actual: found.size(),
            ..Report::new(ReportKind::WrongSize, "dealloc", ptr as usize, found.zone())
        });
        return false;
    }
    true
}

/// The usable size of a block from [`Kmem`] with this layout.
pub fn usable_size(layout: Layout) -> usize {
    match class_of(layout.size(), layout.align()) {
        Some(c) => CLASS_SIZES[c],
        // At least the request's whole pages (a new block of a large
        // class has more: `malloc_usable_size` reads the block's own).
        None => round_page(layout.size().max(1)).unwrap_or(0),
    }
}

/// Whether `ptr` lies in memory kmem manages (a cheap page-metadata probe).
pub fn owns(ptr: *const u8) -> bool {
    pagemeta::is_ours(ptr as usize)
}

// ---------------------------------------------------------------- allocator_api2

use allocator_api2::alloc::{AllocError, Allocator};

// SAFETY: blocks stay valid until deallocated, are `layout.size()` bytes
// aligned to `layout.align()`; `Kmem` is a stateless handle, so copies and
// references allocate from the same allocator.
unsafe impl Allocator for Kmem {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            // A dangling, aligned pointer: zero-sized blocks need no memory.
            let p = ptr::without_provenance_mut::<u8>(layout.align());
            // SAFETY: align is non-zero.
            let p = unsafe { NonNull::new_unchecked(p) };
            return Ok(NonNull::slice_from_raw_parts(p, 0));
        }
        // SAFETY: non-zero size.
        let p = unsafe { GlobalAlloc::alloc(self, layout) };
        NonNull::new(p)
            .map(|p| NonNull::slice_from_raw_parts(p, layout.size()))
            .ok_or(AllocError)
    }

    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return self.allocate(layout);
        }
        // SAFETY: non-zero size.
        let p = unsafe { GlobalAlloc::alloc_zeroed(self, layout) };
        NonNull::new(p)
            .map(|p| NonNull::slice_from_raw_parts(p, layout.size()))
            .ok_or(AllocError)
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: Allocator's contract: allocated here with `layout`.
            unsafe { GlobalAlloc::dealloc(self, ptr.as_ptr(), layout) }
        }
    }
}

/// A typed UMA zone as an `allocator_api2` allocator: serves layouts that
/// fit one item (size at most the item size, alignment at most the zone's
/// item alignment), fails the rest with `AllocError`. Useful for
/// `allocator_api2::boxed::Box<T, ZoneAllocator>` of one `T` per item.
#[derive(Clone, Copy, Debug)]
pub struct ZoneAllocator {
    zone: &'static uma::Zone,
    align: usize,
}

impl ZoneAllocator {
    /// An allocator over `zone`, whose items are aligned to `align`.
    pub fn new(zone: &'static uma::Zone, align: usize) -> Self {
        ZoneAllocator { zone, align }
    }
}

// SAFETY: items are `zone.size()` bytes aligned to `align` (the zone's own
// alignment, given at creation) and valid until freed to the same zone.
unsafe impl Allocator for ZoneAllocator {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() > self.zone.size() || layout.align() > self.align {
            return Err(AllocError);
        }
        let p = self.zone.alloc(Flags::NOWAIT).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, self.zone.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, _layout: Layout) {
        // SAFETY: Allocator's contract: it came from `allocate`, i.e. the zone.
        unsafe { self.zone.free(ptr) }
    }
}
