//! Where `realloc` moves a large block it cannot resize in place: with
//! room to go on growing there (a block grown a small step at a time), or
//! onto the widest range of dirty pages a free left.

use core::ptr::NonNull;

use super::large_handout;
use crate::classes::large_pages;
use crate::kernel::{Kernel, QCACHE_MAX};
use crate::os::{round_page, PAGE_SIZE};
use crate::pagemeta;
use crate::Flags;

/// Whether growing a large block from `old` to `new` bytes is a small
/// step (by at most half): the pattern in-place growth and a move with
/// room are for. A larger step moves as any allocation does, to pages a
/// freed block left dirty, since the pages after a block and a roomy place
/// are mostly clean, a page fault for each page written.
pub(crate) fn grows_a_little(old: usize, new: usize) -> bool {
    new > old && new <= old + old / 2
}

/// Where `realloc` moves a large block it grows to `size` bytes, for
/// either front door; `None`: the caller allocates as usual. With `room`
/// (a small step, [`grows_a_little`]): a free range of the arena with that
/// room ([`moved_with_room`] without import), else the widest range of
/// dirty pages ([`realloc_target`]), else room imported for a block that
/// outgrows the heap. Without: the widest range of dirty pages.
pub(crate) fn place_grown(
    k: &Kernel,
    size: usize,
    room: Option<usize>,
    align: usize,
    flags: Flags,
) -> Option<NonNull<u8>> {
    let Some(room) = room else {
        return realloc_target(k, size, align, flags);
    };
    moved_with_room(k, size, room, align, flags, false)
        .or_else(|| realloc_target(k, size, align, flags))
        .or_else(|| moved_with_room(k, size, room, align, flags, true))
}

/// A large block of `size` bytes with `room` bytes free from its start
/// ([`large_alloc_with_room`]), for a block `realloc` grows by a small
/// step; `None` for a request that must take the usual road
/// (over-aligned, zero-filled, or seen by the profiler's sampling), or
/// when there is no such room. [`place_grown`] asks twice: for a free
/// range the arena has (`import` false), then, once the dirty ranges
/// failed too, for room imported (below: for which blocks).
fn moved_with_room(
    k: &Kernel,
    size: usize,
    room: usize,
    align: usize,
    flags: Flags,
    import: bool,
) -> Option<NonNull<u8>> {
    if align > PAGE_SIZE || flags.contains(Flags::ZERO) || crate::prof::on() {
        return None;
    }
    // Room is imported only for a block larger than the shared spans the
    // arena imports (64 MiB) and half or more of the large bytes in use:
    // one that outgrows the heap, with no freed range of its size to take.
    // A smaller one takes the usual road (the pages that other blocks left
    // dirty, in spans that others share): importing room for each of 64
    // buffers grown in turn to 8 MiB left those pages unused (882 MB peak
    // against 682), and the spans imported for 16 MiB buffers went back
    // to the OS wholly free when the buffers moved on, their dirty pages
    // with them (`realloc_sizes.c`: 260k page faults against 183k).
    if import
        && (size < crate::kernel::IMPORT_GROWTH_MAX
            || size.saturating_mul(2) < super::large_bytes_in_use())
    {
        return None;
    }
    large_alloc_with_room(k, size, room, import)
}

/// A large block of `size` bytes (page aligned) at the start of a free
/// range of at least `room` bytes, so that it can grow in place later:
/// a free range the arena has ([`vmem::Arena::alloc_with_room`]), or else,
/// with `import`, `room` bytes of address space taken whole (imported if
/// the arena has no such range) and cut down to the block, its tail left
/// free after it (pages nobody touches until the block grows into them).
/// `None` when there is no such room (no reclaim: the caller allocates as
/// usual).
///
/// Without the import, a block that outgrew every free range (a buffer
/// grown by half at a time to 512 MiB) went into a span of its own size,
/// with no room, and was copied at nearly every step: 528k page faults
/// (2.1 GB) for a 512 MiB buffer, 4 times glibc's, and 3-7 times its time.
fn large_alloc_with_room(
    k: &Kernel,
    size: usize,
    room: usize,
    import: bool,
) -> Option<NonNull<u8>> {
    // Its large class's pages, as every new large block's.
    let bytes = large_pages(size, PAGE_SIZE)? * PAGE_SIZE;
    if bytes <= QCACHE_MAX || bytes > crate::os::max_request() {
        return None;
    }
    let room = round_page(room)?.max(bytes);
    if !crate::pressure::charge(bytes, false, false) {
        return None;
    }
    let addr = if !import {
        k.arena.alloc_with_room(bytes, room).ok()
    } else {
        front_of(k, room, bytes)
    };
    handout(addr, bytes)
}

/// The first `bytes` of `whole` bytes taken from the kernel arena (from a
/// free range it has, else imported), the rest given back, free after
/// them: a block with room to grow in place.
fn front_of(k: &Kernel, whole: usize, bytes: usize) -> Option<usize> {
    let a = k
        .arena
        .xalloc(whole, &vmem::Constraints::NONE, vmem::Flags::NOWAIT)
        .ok()?;
    if k.arena.xresize(a, whole, bytes).is_ok() {
        Some(a)
    } else {
        let _ = k.arena.xfree(a, whole);
        None
    }
}

/// The last step of a move's new block of `bytes` bytes (charged): its
/// pages' dirty labels and its head word, or the charge back when there
/// is no place (`addr` `None`).
fn handout(addr: Option<usize>, bytes: usize) -> Option<NonNull<u8>> {
    let Some(addr) = addr else {
        crate::pressure::uncharge(bytes);
        return None;
    };
    let n = bytes / PAGE_SIZE;
    crate::dirty::taken(addr, n, 0, false);
    large_handout(addr, n, pagemeta::direct_word(n))
}

/// A new place for a block that `realloc` moves to grow it to `size`
/// bytes (more than the quantum cache serves, aligned to a page or less):
/// the front of the largest range of dirty pages a recent free left
/// ([`crate::dirty::reuse`]), so that the block can go on growing there in
/// place, with no copy and no page fault. Taking the smallest range that
/// fit, a `Vec` pushed to 8 MiB again and again was copied at 2 and at
/// 4 MiB every time, into the ranges the same steps had left the time
/// before (glibc grows it in place or with `mremap`, copying nothing).
/// `None` when no listed range fits, or where the profiler must see the
/// allocation: the caller allocates as usual.
fn realloc_target(k: &Kernel, size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
    // A new block's pages (its class's in the large classes' range): with
    // the request's whole pages, `patterns buffers` faulted 218k pages
    // instead of 195k; the resizes that follow take whole pages
    // (`large_resize`), as `realloc_sizes.c` wants (class pages there
    // listed more dirty pages than were written, 246k faults against
    // 207k).
    let bytes = large_pages(size, align)? * PAGE_SIZE;
    if bytes <= QCACHE_MAX
        || bytes > crate::os::max_request()
        || align > PAGE_SIZE
        || flags.contains(Flags::ZERO)
        || crate::prof::on()
    {
        return None;
    }
    if !crate::pressure::charge(bytes, false, false) {
        return None;
    }
    let span = crate::dirty::roomier_span(bytes);
    let r = if span != 0 {
        // The whole span back into the arena (an import takes the smallest
        // retained span that fits; free arena space as large would do as
        // well), cut down to the block at its front.
        front_of(k, span, bytes)
    } else {
        crate::dirty::reuse(k.arena, bytes, true).map(|(a, _)| a)
    };
    handout(r, bytes)
}
