//! Dirty-page retention (kmem/src/dirty.rs): freed large blocks keep their
//! pages and free spans their address space for a bounded size and time;
//! zero-filled allocations never see old data; reclaim gives it all back.
#![cfg(not(loom))]

use std::sync::Mutex;
use std::time::Duration;

use kmem::{dirty_stats, os_stats, Flags, DECAY_NS, DIRTY_MAX, IMPORT_QUANTUM};

kmem::malloc_define!(M_DIRTY, "dirtytest", "dirty-page tests");

/// The figures are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    kmem::reclaim(uma::Reclaim::Drain);
    g
}

fn filled(size: usize, byte: u8) -> *mut u8 {
    let p = kmem::malloc(size, &M_DIRTY, Flags::WAITOK)
        .expect("malloc")
        .as_ptr();
    // SAFETY: `size` bytes of ours.
    unsafe { p.write_bytes(byte, size) };
    p
}

fn free(p: *mut u8) {
    // SAFETY: a live allocation of M_DIRTY, unused afterwards.
    unsafe { kmem::free(p, &M_DIRTY) };
}

fn all_zero(p: *const u8, size: usize) -> bool {
    // SAFETY: `size` readable bytes of ours.
    unsafe { std::slice::from_raw_parts(p, size) }
        .iter()
        .all(|&b| b == 0)
}

#[test]
fn zero_filled_allocations_never_see_old_data() {
    let _s = serial();
    // (Above the large classes' 256 KiB: their blocks go to their cache
    // zones, not to the dirty lists; `large_classes.rs` tests their zero
    // fill.)
    for size in [260 << 10, 300 << 10, 1 << 20, 3 << 20, 9 << 20] {
        let old = filled(size, 0xab);
        free(old);
        assert!(
            dirty_stats().dirty >= size,
            "{size}: freed pages kept dirty"
        );
        let z = kmem::malloc(size, &M_DIRTY, Flags::WAITOK.with(Flags::ZERO)).unwrap();
        assert!(all_zero(z.as_ptr(), size), "malloc(ZERO) of {size}");
        free(z.as_ptr());
        let k = kmem::kmem_malloc(size, Flags::WAITOK).unwrap();
        assert!(all_zero(k.as_ptr(), size), "kmem_malloc of {size}");
        // SAFETY: from kmem_malloc(size), unused afterwards.
        unsafe { kmem::kmem_free(k, size) };
    }
    // Slabs built on pages dirty blocks left behind: every small class
    // allocated with ZERO reads zero.
    let junk: Vec<*mut u8> = (0..8).map(|_| filled(2 << 20, 0x5a)).collect();
    junk.into_iter().for_each(free);
    let mut small = Vec::new();
    for i in 0..20_000usize {
        let size = 16 + (i * 37) % 8000;
        let p = kmem::malloc(size, &M_DIRTY, Flags::WAITOK.with(Flags::ZERO)).unwrap();
        assert!(
            all_zero(p.as_ptr(), size),
            "small ZERO allocation of {size}"
        );
        small.push(p.as_ptr());
    }
    small.into_iter().for_each(free);
}

/// A zero-filled allocation over dirty pages the freed block never
/// touched unbacks them instead of writing zeros over them (which would
/// fault every one in); over pages it did write, it writes zeros. Both
/// read zero.
#[test]
fn zero_filled_allocations_do_not_fault_in_untouched_dirty_pages() {
    let _s = serial();
    let size = 4 << 20;
    for touched in [false, true] {
        let p = kmem::malloc(size, &M_DIRTY, Flags::WAITOK)
            .unwrap()
            .as_ptr();
        // One byte in every 16th page, or every page.
        let step = if touched { 4096 } else { 16 * 4096 };
        for i in (0..size).step_by(step) {
            // SAFETY: `size` bytes of ours.
            unsafe { p.add(i).write(0xab) };
        }
        free(p);
        let before = dirty_stats();
        let resident = kmem::os_stats().resident;
        let z = kmem::malloc(size, &M_DIRTY, Flags::WAITOK.with(Flags::ZERO)).unwrap();
        let after = dirty_stats();
        let unbacked = after.purged_total - before.purged_total;
        let grew = kmem::os_stats().resident.saturating_sub(resident);
        assert!(all_zero(z.as_ptr(), size), "touched {touched}");
        if touched {
            assert!(
                unbacked < size / 4,
                "written pages zeroed in place: {unbacked} unbacked"
            );
        } else {
            assert!(unbacked >= size / 2, "untouched pages unbacked: {unbacked}");
            assert!(grew < size / 4, "resident grew by {grew}");
        }
        free(z.as_ptr());
    }
}

/// A zero-filled allocation over a long dirty run looks at the pages of
/// each piece's ends first: a run written from its start or up to its end
/// is still zeroed in place where written (and unbacked elsewhere), one
/// written in a page here and there is unbacked. All read zero.
#[test]
fn zero_filled_allocations_find_written_pages_at_either_end() {
    let _s = serial();
    let size = 9 << 20;
    let third = 3 << 20;
    // (written range, whether the written pages must be zeroed in place)
    for (from, to, in_place) in [
        (0, third, true),
        (size - third, size, true),
        (size / 2, size / 2 + 4096, false),
    ] {
        // Nothing else dirty: the zero-filled block takes this one's pages.
        kmem::reclaim(uma::Reclaim::Drain);
        let p = kmem::malloc(size, &M_DIRTY, Flags::WAITOK)
            .unwrap()
            .as_ptr();
        // SAFETY: `size` bytes of ours.
        unsafe {
            p.write(0xab);
            p.add(from).write_bytes(0xab, to - from);
        }
        free(p);
        let before = dirty_stats();
        let z = kmem::malloc(size, &M_DIRTY, Flags::WAITOK.with(Flags::ZERO)).unwrap();
        let unbacked = dirty_stats().purged_total - before.purged_total;
        assert!(all_zero(z.as_ptr(), size), "written {from}..{to}");
        if in_place {
            assert!(
                unbacked <= size - (to - from) + (1 << 20),
                "written {from}..{to} zeroed in place: {unbacked} unbacked"
            );
        } else {
            assert!(
                unbacked >= size / 2,
                "written {from}..{to}: {unbacked} unbacked"
            );
        }
        free(z.as_ptr());
    }
}

#[test]
fn freed_pages_are_reused_without_new_memory() {
    let _s = serial();
    let size = 2 << 20;
    let p = filled(size, 1);
    free(p);
    let before = dirty_stats();
    let q = filled(size, 2);
    let after = dirty_stats();
    assert!(
        after.reused_total - before.reused_total >= size,
        "the dirty pages of the freed block were reused: {before:?} -> {after:?}"
    );
    free(q);
}

/// Large blocks aligned to more than a page reuse the pages freed blocks
/// left dirty, as page-aligned ones do: a churn of blocks of 64 KiB-8 MiB
/// aligned to 64 KiB-2 MiB, 16 live at a time, reuses nearly all the bytes
/// it asks for. Before, an over-aligned block took whatever the arena's
/// aligned fit found: 132-151k page faults for 20,000 such blocks with
/// every page written, where page-aligned ones faulted 37k. Each block is
/// aligned and its usable size covers the request (a block takes the rest
/// of its dirty range after it, less than its alignment).
/// A large block aligned to up to 2 MiB imports only its size (in whole
/// 2 MiB chunks, which are 2 MiB aligned already), not its size and twice
/// its alignment as vmem asks of a source it knows nothing of: blocks of
/// 64 KiB-8 MiB aligned to 64 KiB-2 MiB, 16 live at a time, every page
/// written, faulted 150-250k pages per 20,000 blocks through those
/// inflated spans against 37k for the same blocks aligned to a page (now
/// 36-46k). Then a churn of such blocks: each aligned, its usable size
/// the request's, its contents its own.
#[test]
fn over_aligned_large_blocks_import_only_their_size() {
    let _s = serial();
    // Nothing free to place it in: the arena imports.
    let (size, align) = ((96 << 20) + 4096, 2 << 20);
    let mapped = os_stats().mapped;
    let p = kmem::raw::alloc(size, align);
    let grew = os_stats().mapped - mapped;
    assert!(!p.is_null());
    assert_eq!(p as usize % align, 0);
    // Its chunks (and perhaps a chunk of the allocator's own), not two
    // alignments more.
    let chunks = size.next_multiple_of(IMPORT_QUANTUM);
    assert!(
        grew < chunks + 2 * align,
        "{size} bytes aligned to {align} mapped {grew} bytes"
    );
    // SAFETY: a live block of kmem::raw, freed once.
    assert!(unsafe { kmem::raw::free(p) });

    let mut seed = 7u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    let mut live: Vec<(*mut u8, usize, u8)> = Vec::new();
    for i in 0..1000 {
        let size = (64 << 10) + rnd() % ((4 << 20) - (64 << 10));
        let align = (64 << 10) << (rnd() % 6);
        let p = kmem::raw::alloc(size, align);
        assert!(!p.is_null(), "{size} aligned to {align}");
        assert_eq!(p as usize % align, 0, "{size} aligned to {align}");
        let usable = kmem::raw::usable_size(p);
        assert!(usable >= size && usable < size + 4096, "usable {usable}");
        // SAFETY: the block's first and last bytes.
        unsafe {
            p.write(i as u8);
            p.add(size - 1).write(i as u8);
        }
        live.push((p, size, i as u8));
        if live.len() > 16 {
            let (p, size, b) = live.swap_remove(rnd() % live.len());
            // SAFETY: written above; a live block of kmem::raw, freed once.
            unsafe {
                assert_eq!((p.read(), p.add(size - 1).read()), (b, b));
                assert!(kmem::raw::free(p));
            }
        }
    }
    for (p, _, _) in live {
        // SAFETY: as above.
        assert!(unsafe { kmem::raw::free(p) });
    }
}

#[test]
fn reclaim_purges_dirty_pages_and_retained_spans() {
    let _s = serial();
    let blocks: Vec<*mut u8> = (0..8).map(|i| filled(4 << 20, i as u8 + 1)).collect();
    let live = os_stats().resident;
    blocks.into_iter().for_each(free);
    let held = dirty_stats();
    assert!(held.dirty >= 24 << 20, "freed blocks held dirty: {held:?}");
    assert!(
        os_stats().resident + (8 << 20) > live,
        "nothing was unbacked yet"
    );
    reclaim_gives_back(live, 24 << 20);
}

/// Runs a draining reclaim, then checks that no dirty page or retained
/// span is left and that the resident set fell by `at_least` bytes from
/// `live`.
fn reclaim_gives_back(live: usize, at_least: usize) {
    kmem::reclaim(uma::Reclaim::Drain);
    let d = dirty_stats();
    assert_eq!((d.dirty, d.retained), (0, 0), "{d:?}");
    let now = os_stats().resident;
    assert!(
        now + at_least <= live,
        "resident fell after reclaim: {} KiB -> {} KiB",
        live >> 10,
        now >> 10
    );
}

/// The page caches give their ranges back with the pages kept (here by
/// a drain, as a trim does): a reclaim then purges them, those of the
/// large classes' arena too, whose dirty runs the kernel arena cannot
/// claim (`dirty::purge_runs`).
#[test]
fn reclaim_purges_what_the_page_caches_gave_back() {
    let _s = serial();
    // 64 blocks of a large class (128 KiB) and of the quantum cache (48
    // KiB): 11 MiB, every byte written.
    let blocks: Vec<*mut u8> = (0..64u8)
        .flat_map(|i| [filled(128 << 10, i + 1), filled(48 << 10, i + 1)])
        .collect();
    let live = os_stats().resident;
    blocks.into_iter().for_each(free);
    reclaim_gives_back(live, 8 << 20);
}

#[test]
fn dirty_memory_stays_within_its_budget() {
    let _s = serial();
    // Freed blocks, each a page larger than the last, with a small live
    // block allocated after each: more is freed than the budget holds,
    // whether later blocks can reuse earlier ones' pages or not (that
    // depends on where the arena placed them). The budget follows the most
    // bytes in use in the last second, which an earlier test may have
    // raised: it can only fall meanwhile.
    let d0 = dirty_stats();
    let mut guards = Vec::new();
    let mut freed = 0;
    for i in 0..kmem::dirty_budget() / (4 << 20) + 16 {
        let size = (4 << 20) + i * 4096;
        let p = filled(size, i as u8);
        guards.push(filled(128 << 10, 1));
        free(p);
        freed += size;
        let d = dirty_stats();
        assert!(d.dirty <= kmem::dirty_budget(), "{d:?}");
        assert!(d.retained <= kmem::retain_budget(), "{d:?}");
    }
    // What was freed is dirty, or was purged or reused: more than the
    // budget went to the last two.
    let d = dirty_stats();
    let gone = (d.purged_total - d0.purged_total) + (d.reused_total - d0.reused_total);
    assert!(
        gone + kmem::dirty_budget() >= freed,
        "{freed} freed: {d0:?} -> {d:?}"
    );
    assert!(gone > 0, "{d:?}");
    guards.into_iter().for_each(free);
}

#[test]
fn the_budget_follows_the_recent_peak_of_large_bytes_in_use() {
    let _s = serial();
    // 96 MiB in use, then all freed: the bytes in use fall to nothing, but
    // a program that had them will likely want them again (a budget that
    // followed the bytes in use at the instant purged them as they fell).
    let n = DIRTY_MAX / (4 << 20) + 8;
    let blocks: Vec<*mut u8> = (0..n).map(|i| filled(4 << 20, i as u8)).collect();
    let before = dirty_stats();
    blocks.into_iter().for_each(free);
    let after = dirty_stats();
    assert!(after.dirty >= n * (4 << 20), "{before:?} -> {after:?}");
    assert!(after.dirty > DIRTY_MAX);
    assert_eq!(after.purged_total, before.purged_total, "{after:?}");
    kmem::reclaim(uma::Reclaim::Drain);
}

#[test]
fn old_dirty_pages_decay() {
    let _s = serial();
    free(filled(1 << 20, 7));
    assert!(dirty_stats().dirty >= 1 << 20);
    std::thread::sleep(Duration::from_nanos(DECAY_NS) + Duration::from_millis(100));
    // The next large free purges what is older than the decay time, and
    // keeps itself.
    // (Above the large classes' 256 KiB: it goes to the dirty lists.)
    let small = 512 << 10;
    // (With `invariants`, malloc adds a type tag: ask for whole pages.)
    free(filled(small - kmem::MALLOC_TAG_BYTES, 8));
    let d = dirty_stats();
    assert_eq!(d.dirty, small, "{d:?}");
}

#[test]
fn wholly_free_spans_are_kept_and_reused() {
    let _s = serial();
    // Bigger than an import quantum: a span of its own each. The arena
    // keeps the latest wholly free span (`keep_idle`); freeing the second
    // releases the first, which `dirty` keeps mapped (retained).
    let size = IMPORT_QUANTUM * 2 + (1 << 20);
    let (a, b) = (filled(size, 3), filled(size, 5));
    free(a);
    free(b);
    let d = dirty_stats();
    assert!(d.retained >= size, "span kept: {d:?}");
    let maps = os_stats().map_calls;
    // One from the span the arena kept, one from the retained span (or
    // both retained, if a timeout pass released the kept one meanwhile).
    let (p, q) = (filled(size, 4), filled(size, 6));
    assert_eq!(os_stats().map_calls, maps, "no new mmap");
    assert!(dirty_stats().span_hits > d.span_hits);
    free(p);
    free(q);
}

#[test]
fn a_lone_large_block_freed_and_allocated_again_stays_in_the_arena() {
    let _s = serial();
    // The pattern of a program with one big buffer at a time: the span it
    // emptied stays in the arena (`keep_idle`), with no release to the
    // retained spans and no import from them per pair.
    let size = IMPORT_QUANTUM * 2 + (1 << 20);
    free(filled(size, 7));
    let (d, o) = (dirty_stats(), os_stats());
    for i in 0..100 {
        free(filled(size, i as u8));
    }
    let (d2, o2) = (dirty_stats(), os_stats());
    assert_eq!(o2.map_calls, o.map_calls, "no new mmap");
    // A timeout pass may release the kept span once in a while (once a
    // period), and the next block imports it back.
    assert!(
        d2.span_hits - d.span_hits <= 2,
        "span released and imported per pair: {d:?} -> {d2:?}"
    );
}

#[test]
fn churn_of_mixed_large_sizes_purges_nothing_under_budget() {
    let _s = serial();
    // mstress's pattern: large blocks of varied sizes, a few live at a
    // time, each freed soon and its pages reused by the next of another
    // size. The listing must follow: a stale entry (pages since allocated
    // and freed again) evicted from a full ring used to purge pages that
    // had just been freed, a `madvise` and a TLB shootdown each time.
    let sizes = [
        96 << 10,
        200 << 10,
        520 << 10,
        1 << 20,
        136 << 10,
        700 << 10,
    ];
    let before = dirty_stats();
    let mut live = std::collections::VecDeque::new();
    for i in 0..5000 {
        live.push_back(filled(sizes[i % sizes.len()] + (i % 7) * 4096, i as u8));
        if live.len() > 3 {
            free(live.pop_front().unwrap());
        }
    }
    live.into_iter().for_each(free);
    let after = dirty_stats();
    assert!(after.dirty <= DIRTY_MAX, "{after:?}");
    assert_eq!(
        after.purged_total, before.purged_total,
        "purged while under budget and young: {before:?} -> {after:?}"
    );
    assert!(after.reused_total > before.reused_total + (500 << 20));
}

/// Over-aligned blocks of up to 64 KiB are taken from the arena directly
/// (the quantum cache's blocks are only page aligned) and must go back
/// there when freed, not into the quantum cache, whose allocations never
/// ask for them: they piled up there (520 MB of address space, 377 MB
/// resident, in a `posix_memalign` churn).
#[test]
fn freed_over_aligned_blocks_go_back_to_the_arena() {
    let _s = serial();
    let before = kmem::stats().expect("stats").active;
    for round in 0..4 {
        let blocks: Vec<*mut u8> = (0..2000)
            .map(|i| {
                let size = 4096 << (i % 4); // 4 to 32 KiB
                let p = kmem::raw::alloc(size, 8192 << (round % 3));
                assert!(!p.is_null() && p as usize % (8192 << (round % 3)) == 0);
                // SAFETY: `size` bytes of ours.
                unsafe { p.write_bytes(1, size) };
                p
            })
            .collect();
        for p in blocks {
            // SAFETY: live, unused afterwards.
            assert!(unsafe { kmem::raw::free(p) });
        }
    }
    let grew = kmem::stats().expect("stats").active.saturating_sub(before);
    // 8,000 blocks of 15 KiB on average went through; a few MiB may stay
    // in caches.
    assert!(grew < 16 << 20, "active grew by {} KiB", grew >> 10);
}
