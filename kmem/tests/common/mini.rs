//! A miniature kernel for the seed-002 tests: a vmem arena over a small
//! region, whose boundary tags come from a UMA btag zone whose slabs come
//! from that same arena (`USE_RESERVE | NOVM | NOWAIT | BESTFIT`), exactly
//! the recursion kmem's kernel arena has, but with a tunable reserve and
//! slab size, and builds fresh for every loom execution.

#![allow(dead_code)]

use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};

use uma::{Flags, SlabSource, TestSource, Uma, Zone, ZoneArgs, ZoneFlags};
use vmem::{Arena, Constraints, TagSource};

pub const PAGE: usize = 4096;

/// The btag zone's page source: boot pages from the test source until the
/// arena is set, then the arena (FreeBSD `vmem_bt_alloc`).
pub struct BtPages {
    arena: AtomicPtr<Arena<'static>>,
    boot: &'static TestSource,
    region: (usize, usize),
}

// SAFETY: arena pages lie in the region the test source mapped (readable,
// writable, aligned by the xalloc constraint); boot pages come from the
// test source; each is freed by the matching function. Never sleeps.
unsafe impl SlabSource for BtPages {
    fn alloc(&self, size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
        let a = self.arena.load(Ordering::Acquire);
        if a.is_null() {
            return self.boot.alloc(size, align, flags);
        }
        let vf = vmem::Flags::NOWAIT
            .with(vmem::Flags::NOVM)
            .with(vmem::Flags::USE_RESERVE)
            .with(vmem::Flags::BESTFIT);
        // SAFETY: the arena outlives every user of the mini kernel.
        let arena = unsafe { &*a };
        let addr = arena
            .xalloc(size, &Constraints::new().align(align.max(PAGE)), vf)
            .ok()?;
        NonNull::new(addr as *mut u8)
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, align: usize) {
        let addr = ptr.as_ptr() as usize;
        if addr >= self.region.0 && addr < self.region.0 + self.region.1 {
            let a = self.arena.load(Ordering::Acquire);
            // SAFETY: region pages exist only once the arena is set.
            if unsafe { &*a }.xfree(addr, size).is_err() {
                panic!("mini: slab free to the arena failed");
            }
        } else {
            // SAFETY: a boot slab of the test source.
            unsafe { self.boot.free(ptr, size, align) }
        }
    }

    fn name(&self) -> &'static str {
        "mini-bt"
    }
}

/// The arena's tag source: the btag zone.
pub struct Tags {
    zone: AtomicPtr<Zone>,
}

// SAFETY: btag items are TAG_SIZE bytes aligned to TAG_ALIGN; NOVM is
// passed through, so with the arena lock held the zone never calls its
// page source (the zone is ZoneFlags::VM, so neither do its buckets).
unsafe impl TagSource for Tags {
    fn alloc_tag(&self, flags: vmem::Flags) -> Option<NonNull<u8>> {
        // SAFETY: set before the arena was built, never cleared.
        let z = unsafe { &*self.zone.load(Ordering::Acquire) };
        let mut f = if flags.contains(vmem::Flags::WAITOK) {
            Flags::WAITOK
        } else {
            Flags::NOWAIT
        };
        if flags.contains(vmem::Flags::NOVM) {
            f = f.with(Flags::NOVM);
        }
        if flags.contains(vmem::Flags::USE_RESERVE) {
            f = f.with(Flags::USE_RESERVE);
        }
        z.alloc(f)
    }

    unsafe fn free_tag(&self, tag: NonNull<u8>) {
        // SAFETY: as alloc_tag; the tag came from this zone.
        unsafe { (*self.zone.load(Ordering::Acquire)).free(tag) }
    }
}

pub struct Mini {
    pub src: &'static TestSource,
    pub uma: &'static Uma,
    pub btag: &'static Zone,
    pub arena: &'static Arena<'static>,
    pub reserve: usize,
}

impl Mini {
    /// A mini kernel: an arena of `pages` pages, a btag zone of `ipers`
    /// tags per one-page slab, with a reserve of `reserve` tags
    /// (preallocated).
    pub fn new(pages: usize, ipers: usize, reserve: usize) -> Mini {
        let src: &'static TestSource = Box::leak(Box::new(TestSource::new()));
        let uma = Uma::bootstrap(src).expect("bootstrap");
        let region = src
            .alloc(pages * PAGE, PAGE, Flags::NOWAIT)
            .expect("region")
            .as_ptr() as usize;
        let bt: &'static BtPages = Box::leak(Box::new(BtPages {
            arena: AtomicPtr::new(core::ptr::null_mut()),
            boot: src,
            region: (region, pages * PAGE),
        }));
        let btag = uma
            .create_zone(
                &ZoneArgs::new("mini btag", vmem::TAG_SIZE)
                    .align(vmem::TAG_ALIGN)
                    .flags(ZoneFlags::VM)
                    .max_ipers(ipers)
                    .source(bt),
            )
            .expect("btag zone");
        let tags: &'static Tags = Box::leak(Box::new(Tags {
            zone: AtomicPtr::new(btag as *const Zone as *mut Zone),
        }));
        let arena: &'static Arena<'static> = Box::leak(Box::new(
            Arena::builder("mini kernel")
                .quantum(PAGE)
                .tag_source(tags)
                .tag_reserve(true)
                .build()
                .expect("arena"),
        ));
        // The span's tags still come from boot slabs; then the switch.
        arena
            .add(region, pages * PAGE, vmem::Flags::NOWAIT)
            .expect("span");
        bt.arena
            .store(arena as *const Arena<'static> as *mut _, Ordering::Release);
        btag.reserve(reserve);
        if reserve > 0 {
            btag.prealloc(reserve);
        }
        Mini {
            src,
            uma,
            btag,
            arena,
            reserve,
        }
    }

    /// Free tags in the btag keg (the reserve counts these).
    pub fn btag_free(&self) -> usize {
        self.btag.keg_info().map_or(0, |i| i.free_items)
    }

    /// Unmaps everything (end of a loom execution).
    ///
    /// # Safety
    ///
    /// Nothing uses the mini kernel any more.
    pub unsafe fn release(self) {
        // SAFETY: the caller's promise.
        unsafe { self.src.release_all() };
    }
}
