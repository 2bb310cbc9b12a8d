//! Page-granular kernel memory: `kmem_malloc`/`kmem_free` (pages with
//! memory) and `kva_alloc`/`kva_free` (address space only).

use core::ptr::NonNull;

use crate::kernel::{arena_free, arena_pages, kernel, vflags};
use crate::os::{self, round_page, PAGE_SIZE};
use crate::pagemeta::{self, WORD_KVA};
use crate::report::{report, Report, ReportKind};
use crate::Flags;

/// Allocates `size` bytes (rounded up to pages) of zero-filled memory from
/// the kernel arena (FreeBSD `kmem_malloc`). `WAITOK` may sleep until
/// memory is freed; `NOWAIT` fails at once. `None`, `WAITOK` or not, for
/// more than physical memory plus swap.
pub fn kmem_malloc(size: usize, flags: Flags) -> Option<NonNull<u8>> {
    let bytes = round_page(size)?;
    if bytes == 0 || bytes > os::max_request() {
        return None;
    }
    let k = kernel()?;
    let addr = arena_pages(k.arena, bytes, PAGE_SIZE, vflags(flags), 0, true)?;
    // (Not a large class's block: a free of it goes back to the arena.)
    pagemeta::set(addr, 1, pagemeta::direct_word(bytes / PAGE_SIZE));
    NonNull::new(addr as *mut u8)
}

/// Frees what [`kmem_malloc`] returned; the pages are unbacked (RSS falls)
/// and the range goes back to the kernel arena. A size that does not match
/// the allocation is reported and the free dropped.
///
/// # Safety
///
/// `ptr` came from `kmem_malloc(size)` and is not used afterwards.
pub unsafe fn kmem_free(ptr: NonNull<u8>, size: usize) {
    let Some(k) = kernel() else { return };
    let Some(bytes) = round_page(size) else {
        return;
    };
    let addr = ptr.as_ptr() as usize;
    let word = pagemeta::lookup(addr);
    if word != pagemeta::direct_word(bytes / PAGE_SIZE) {
        let kind = if pagemeta::is_large(word) {
            ReportKind::WrongSize
        } else {
            ReportKind::NotAllocationStart
        };
        report(Report {
            size,
            actual: (word >> 3) * PAGE_SIZE,
            ..Report::new(kind, "kmem_free", addr, "large")
        });
        return;
    }
    // SAFETY: checked above to be a live kmem_malloc block of this size.
    unsafe { arena_free(k.arena, addr, bytes) };
}

/// Allocates `size` bytes (rounded up to pages) of address space with no
/// memory behind it (FreeBSD `kva_alloc`): the range is inaccessible until
/// freed. Use it to reserve address ranges.
pub fn kva_alloc(size: usize) -> Option<NonNull<u8>> {
    let bytes = round_page(size)?;
    if bytes == 0 {
        return None;
    }
    let k = kernel()?;
    // Contents are unreachable until kva_free unbacks them: no zeroing.
    let addr = arena_pages(k.arena, bytes, PAGE_SIZE, vmem::Flags::NOWAIT, 0, false)?;
    // SAFETY: fresh, unused pages of ours.
    if !unsafe { os::protect_none(addr, bytes) } {
        // SAFETY: still ours and unused.
        unsafe { arena_free(k.arena, addr, bytes) };
        return None;
    }
    pagemeta::set(addr, 1, WORD_KVA);
    NonNull::new(addr as *mut u8)
}

/// Gives back a [`kva_alloc`] range.
///
/// # Safety
///
/// `ptr` came from `kva_alloc(size)` and is not used afterwards.
pub unsafe fn kva_free(ptr: NonNull<u8>, size: usize) {
    let Some(k) = kernel() else { return };
    let Some(bytes) = round_page(size) else {
        return;
    };
    let addr = ptr.as_ptr() as usize;
    if pagemeta::lookup(addr) != WORD_KVA {
        report(Report {
            size,
            ..Report::new(ReportKind::NotAllocationStart, "kva_free", addr, "kva")
        });
        return;
    }
    // SAFETY: our kva range; made accessible again before it is reused
    // (the arena's free pages must be readable zero pages).
    unsafe {
        if !os::protect_rw(addr, bytes) {
            crate::report::fatal(format_args!("kmem: kva_free: mprotect failed at {addr:#x}"));
        }
        arena_free(k.arena, addr, bytes);
    }
}
