//! The wiring of the recursion (seed 002): the boot region, the kernel
//! and metadata arenas, the btag zone, and the page and tag sources that
//! connect them, as one [`Wiring`] value.
//!
//! The process's kernel is built on the static [`WIRING`] over a 2 MiB
//! boot chunk, importing from the OS (`super::build`). The loom model and
//! the stress test of seed 002 (`src/tests/`) build the same wiring small
//! ([`Small::build`]): a region of a few pages, a fixed kernel-arena span,
//! a btag zone of few tags per slab and a reserve of their choosing. Both
//! go through [`build_core`]: what the models check is this code.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

use uma::{SlabSource, Uma, Zone, ZoneArgs};
use vmem::{Arena, Constraints, TagSource};

use super::pages::{arena_free, arena_free_slab, arena_slab, charged_meta, vflags};
use crate::os::{round_page, PAGE_SIZE};
use crate::pagemeta::{self, WORD_INTERNAL};
use crate::sync::plain::{AtomicPtr, AtomicUsize, Mutex, Ordering};
use crate::Flags;

/// A cell written once by the building thread before it publishes it.
pub(crate) struct StaticCell<T>(pub(crate) UnsafeCell<MaybeUninit<T>>);
// SAFETY: written once by the initializing thread before it publishes the
// value (a Release store of a pointer to it, or of the READY state); read
// only after observing that (Acquire).
unsafe impl<T: Sync> Sync for StaticCell<T> {}

impl<T> StaticCell<T> {
    pub(crate) const fn new() -> Self {
        StaticCell(UnsafeCell::new(MaybeUninit::uninit()))
    }

    /// Writes the value and returns it for the rest of the program.
    ///
    /// # Safety
    ///
    /// Called once, by the one building thread, before anything reads the
    /// cell.
    pub(crate) unsafe fn write(&'static self, v: T) -> &'static T {
        // SAFETY: the caller's promise: no other access yet.
        unsafe { (*self.0.get()).write(v) }
    }
}

/// The boot region: pages are bump-allocated from its start until the
/// arenas exist; then the rest becomes the metadata arena's first span.
struct Boot {
    base: usize,
    next: usize,
    end: usize,
    /// Boot pages UMA gave back (they stay here: FreeBSD's boot pages are
    /// never freed either).
    returned: usize,
}

/// One kernel's wiring: what the page and tag sources see of it.
pub(crate) struct Wiring {
    boot: Mutex<Boot>,
    /// The boot region, and where the bump stopped when its rest went to
    /// the metadata arena (addresses at or above are arena memory).
    boot_base: AtomicUsize,
    boot_end: AtomicUsize,
    boot_split: AtomicUsize,
    /// The kernel arena once built (null during the first boot steps):
    /// the page sources switch from the boot region when it is set.
    arena: AtomicPtr<Arena<'static>>,
    /// The metadata arena once built (set with `arena`).
    meta: AtomicPtr<Arena<'static>>,
    /// The btag zone once created.
    btag: AtomicPtr<Zone>,
    /// The process's kernel: a failing allocation may run a reclaim pass
    /// over it (a small kernel's failures just fail).
    process: bool,
}

impl Wiring {
    pub(crate) const fn new(process: bool) -> Wiring {
        Wiring {
            boot: Mutex::new(Boot {
                base: 0,
                next: 0,
                end: 0,
                returned: 0,
            }),
            boot_base: AtomicUsize::new(0),
            boot_end: AtomicUsize::new(0),
            boot_split: AtomicUsize::new(usize::MAX),
            arena: AtomicPtr::new(ptr::null_mut()),
            meta: AtomicPtr::new(ptr::null_mut()),
            btag: AtomicPtr::new(ptr::null_mut()),
            process,
        }
    }

    fn boot(&self) -> crate::sync::plain::MutexGuard<'_, Boot> {
        self.boot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kernel arena, once the switch happened.
    pub(crate) fn arena(&self) -> Option<&'static Arena<'static>> {
        let a = self.arena.load(Ordering::Acquire);
        // SAFETY: set once to an arena that lives for the program.
        (!a.is_null()).then(|| unsafe { &*a })
    }

    /// The metadata arena, once the switch happened.
    pub(crate) fn meta(&self) -> Option<&'static Arena<'static>> {
        let a = self.meta.load(Ordering::Acquire);
        // SAFETY: set once to an arena that lives for the program.
        (!a.is_null()).then(|| unsafe { &*a })
    }

    fn btag(&self) -> Option<&'static Zone> {
        let z = self.btag.load(Ordering::Acquire);
        // SAFETY: set once to a zone that is never destroyed.
        (!z.is_null()).then(|| unsafe { &*z })
    }

    fn boot_alloc(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let mut b = self.boot();
        let size = round_page(size)?;
        let align = align.max(PAGE_SIZE);
        let start = b.next.checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size)?;
        if b.base == 0 || end > b.end {
            return None;
        }
        b.next = end;
        pagemeta::set(start, size / PAGE_SIZE, WORD_INTERNAL);
        NonNull::new(start as *mut u8)
    }

    /// Whether `addr` is a boot page (below the split, in the boot region).
    fn in_boot(&self, addr: usize) -> bool {
        let base = self.boot_base.load(Ordering::Acquire);
        base != 0 && addr >= base && addr < self.boot_split.load(Ordering::Acquire)
    }

    fn boot_free(&self, size: usize) {
        self.boot().returned += size;
    }

    /// Boot pages in use and given back (bytes).
    pub(crate) fn boot_usage(&self) -> (usize, usize) {
        let b = self.boot();
        (b.next.saturating_sub(b.base), b.returned)
    }

    /// Takes the boot lock for a fork. It is a leaf of the lock order
    /// (held only around the bump and the page-metadata words).
    #[cfg(not(loom))]
    pub(crate) fn fork_lock_boot(&'static self) -> BootLock {
        BootLock(self.boot())
    }

    /// Allocates zero-filled pages of the metadata arena, labelled
    /// internal, under the memory limit (as `arena_pages`; its free pages
    /// are never dirty: they are unbacked when freed, and [`MetaChunks`]
    /// cleans what it imports). The boot region first (it is never given
    /// back), then best fit over the imported chunks, so the metadata that
    /// outlives a burst sits in the boot region and in few chunks, and the
    /// others go back whole.
    fn meta_pages(
        &self,
        meta: &Arena<'static>,
        size: usize,
        align: usize,
        vf: vmem::Flags,
    ) -> Option<usize> {
        let vf = vf
            .without(vmem::Flags::FIRSTFIT)
            .without(vmem::Flags::NEXTFIT)
            .with(vmem::Flags::BESTFIT);
        let c = if align > PAGE_SIZE {
            Constraints::new().align(align)
        } else {
            Constraints::NONE
        };
        let (lo, hi) = (
            self.boot_split.load(Ordering::Acquire),
            self.boot_end.load(Ordering::Acquire),
        );
        let addr = charged_meta(size, vf, self.process, |first| {
            if first && lo < hi {
                let boot = c.range(lo, hi - 1);
                let quick = vf.without(vmem::Flags::WAITOK).with(vmem::Flags::NOWAIT);
                meta_no_import(|f| f.set(true));
                let r = meta.xalloc(size, &boot, quick);
                meta_no_import(|f| f.set(false));
                if r.is_ok() {
                    return r;
                }
            }
            meta.xalloc(size, &c, vf)
        })?;
        pagemeta::set(addr, size / PAGE_SIZE, WORD_INTERNAL);
        Some(addr)
    }

    /// Frees pages of a slab source: boot pages stay, others go back to
    /// the metadata arena (`meta`) or the kernel arena.
    fn free_pages(&self, addr: usize, size: usize, meta: bool) {
        if self.in_boot(addr) {
            self.boot_free(size);
            return;
        }
        match (self.arena(), self.meta()) {
            // SAFETY: UMA gives back exactly a slab we allocated, from this
            // arena (the source of each slab is recorded: free matches alloc).
            (_, Some(m)) if meta => unsafe { arena_free(m, addr, size) },
            // SAFETY: as above; a size-class slab, whose pages nothing
            // uses from now on.
            (Some(a), _) if !meta => unsafe { arena_free_slab(a, addr, size) },
            _ => self.boot_free(size),
        }
    }
}

/// The boot lock, held for a fork (see `fork`); unlocks on drop.
#[cfg(not(loom))]
pub(crate) struct BootLock(#[allow(dead_code)] crate::sync::plain::MutexGuard<'static, Boot>);

uma::zeroed_thread_local! {
    /// Set while this thread tries the boot region alone: the metadata
    /// arena's import then declines (read under the arena's lock: no
    /// `__tls_get_addr`, see `uma::tls_block`).
    fn meta_no_import: core::cell::Cell<bool> = "bsdalloc_kmem_meta_no_import_v01";
}

// ---------------------------------------------------------------- sources

/// The page source of UMA's internal zones and of the malloc class zones:
/// boot pages before the arenas exist, then the metadata arena (`meta`)
/// or the kernel arena. Each slab is labelled in the page metadata with
/// `word`.
pub(crate) struct KernelPages {
    pub(crate) w: &'static Wiring,
    pub(crate) word: usize,
    pub(crate) meta: bool,
    pub(crate) name: &'static str,
}

impl KernelPages {
    /// UMA's internal zones ("UMA Zones", "UMA Kegs", buckets, ...) and
    /// zones created without a page source: the metadata arena.
    pub(crate) const fn internal(w: &'static Wiring) -> KernelPages {
        KernelPages {
            w,
            word: WORD_INTERNAL,
            meta: true,
            name: "kernel-internal",
        }
    }
}

// SAFETY: boot pages and arena pages are disjoint, page aligned, aligned to
// `align` (bump alignment / xalloc constraint); boot and metadata pages are
// zero-filled (fresh mappings, pages unbacked on free), a class slab's are
// with `ZERO` (dirty pages cleared by `arena_slab`, and only then); it
// sleeps only for WAITOK (vmem's WAITOK); it calls no UMA function with a
// UMA lock held (it holds none: the arena's tag source may recurse into
// the btag zone, which UMA allows).
unsafe impl SlabSource for KernelPages {
    fn alloc(&self, size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
        let size = round_page(size)?;
        let w = self.w;
        let addr = match (w.arena(), w.meta()) {
            (Some(_), Some(m)) if self.meta => w.meta_pages(m, size, align, vflags(flags))?,
            (Some(a), _) => arena_slab(a, size, align, flags, self.word)?,
            _ => return w.boot_alloc(size, align),
        };
        NonNull::new(addr as *mut u8)
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, _align: usize) {
        let Some(size) = round_page(size) else { return };
        self.w.free_pages(ptr.as_ptr() as usize, size, self.meta);
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

/// The btag zone's page source (FreeBSD `vmem_bt_alloc`): pages from the
/// metadata arena, which imports chunks from the kernel arena, with
/// `USE_RESERVE | NOVM | NOWAIT | BESTFIT`, so the tags those allocations
/// need come from the btag zone's reserve, and the new slab refills it.
pub(crate) struct BtPages(pub(crate) &'static Wiring);

// SAFETY: as for KernelPages; `alloc` never sleeps except a 1 ms pause for
// WAITOK callers after a lost race (FreeBSD's `pause("btalloc", 1)`).
unsafe impl SlabSource for BtPages {
    fn alloc(&self, size: usize, align: usize, flags: Flags) -> Option<NonNull<u8>> {
        let size = round_page(size)?;
        let w = self.0;
        let (Some(_), Some(m)) = (w.arena(), w.meta()) else {
            return w.boot_alloc(size, align);
        };
        let vf = vmem::Flags::NOWAIT
            .with(vmem::Flags::NOVM)
            .with(vmem::Flags::USE_RESERVE)
            .with(vmem::Flags::BESTFIT);
        // Nested inside a kernel-arena allocation (seed 002): no reclaim
        // pass from in here.
        let nested = crate::pressure::NestGuard::btag();
        let got = w.meta_pages(m, size, align, vf);
        drop(nested);
        match got {
            Some(addr) => NonNull::new(addr as *mut u8),
            None => {
                // Out of address space or lost a fill race.
                #[cfg(not(loom))]
                if flags.contains(Flags::WAITOK) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                #[cfg(loom)]
                let _ = flags;
                None
            }
        }
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, _align: usize) {
        let Some(size) = round_page(size) else { return };
        self.0.free_pages(ptr.as_ptr() as usize, size, true);
    }

    fn name(&self) -> &'static str {
        "vmem-bt"
    }
}

/// The kernel arena's tag source: the btag zone.
pub(crate) struct BtTags(pub(crate) &'static Wiring);

// SAFETY: items of the btag zone are TAG_SIZE bytes aligned to TAG_ALIGN
// (its ZoneArgs), owned by the caller until freed. With NOVM the zone does
// not allocate a slab (so no arena call, no sleep); without NOVM the zone
// may call BtPages, which calls the kernel arena; it sleeps only for
// WAITOK.
unsafe impl TagSource for BtTags {
    fn alloc_tag(&self, flags: vmem::Flags) -> Option<NonNull<u8>> {
        let z = self.0.btag()?;

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
        if let Some(z) = self.0.btag() {
            // SAFETY: the tag came from this zone (alloc_tag).
            unsafe { z.free(tag) }
        }
    }
}

/// The metadata arena's import source: chunks of the kernel arena
/// (FreeBSD `kva_import_domain`), best fit, with the importing call's
/// wait and reserve flags (the btag recursion passes `USE_RESERVE | NOVM`
/// down). Not charged against the memory limit: it is address space; the
/// pages the metadata arena hands out are charged one by one.
pub(crate) struct MetaChunks(pub(crate) &'static Wiring);

impl vmem::Source for MetaChunks {
    fn import(&self, size: usize, flags: vmem::Flags) -> Option<usize> {
        if meta_no_import(|f| f.get()) {
            return None;
        }
        let a = self.0.arena()?;
        let keep = vmem::Flags::NOWAIT
            .with(vmem::Flags::WAITOK)
            .with(vmem::Flags::NOVM)
            .with(vmem::Flags::USE_RESERVE);
        let vf = (flags & keep).with(vmem::Flags::BESTFIT);
        let addr = a.xalloc(size, &Constraints::NONE, vf).ok()?;
        // Free metadata pages read as zero: clean what a freed large block
        // left dirty here.
        crate::dirty::taken_clean(addr, size / PAGE_SIZE);
        Some(addr)
    }

    fn release(&self, addr: usize, size: usize) {
        // A wholly free chunk: each of its pages was unbacked when it was
        // freed to the metadata arena (or never touched).
        if let Err(e) = self
            .0
            .arena()
            .map(|a| a.xfree(addr, size))
            .unwrap_or(Ok(()))
        {
            crate::report::fatal(format_args!(
                "kmem: returning metadata chunk {addr:#x} to the kernel arena: {e}"
            ));
        }
    }
}

/// The sources of one wiring.
pub(crate) struct Sources {
    pub(crate) w: &'static Wiring,
    pub(crate) internal: KernelPages,
    pub(crate) bt_pages: BtPages,
    pub(crate) bt_tags: BtTags,
    pub(crate) meta_chunks: MetaChunks,
}

impl Sources {
    pub(crate) const fn of(w: &'static Wiring) -> Sources {
        Sources {
            w,
            internal: KernelPages::internal(w),
            bt_pages: BtPages(w),
            bt_tags: BtTags(w),
            meta_chunks: MetaChunks(w),
        }
    }
}

// ---------------------------------------------------------------- build

/// What differs between the process's kernel and a small one.
pub(crate) struct Spec {
    /// The boot region `(base, len)`, registered in the page metadata.
    pub(crate) boot: (usize, usize),
    /// The kernel arena's memory: a fixed span `(base, len)` (small
    /// kernels), or `None` for imports from the OS with the quantum cache
    /// and the reclaim hook (the process's).
    pub(crate) span: Option<(usize, usize)>,
    /// The metadata arena's import size.
    pub(crate) meta_import: usize,
    /// Tags per btag slab (`None`: UMA's choice for one page).
    pub(crate) btag_ipers: Option<usize>,
    /// The btag zone's reserve (items), preallocated.
    pub(crate) reserve: usize,
}

/// The parts [`build_core`] made.
pub(crate) struct Core {
    pub(crate) uma: &'static Uma,
    pub(crate) btag: &'static Zone,
    pub(crate) arena: &'static Arena<'static>,
    pub(crate) meta: &'static Arena<'static>,
}

/// Steps 1-6 of the start-up (crate doc) on `src`'s wiring: the boot
/// region, UMA from boot pages, the btag zone, the kernel arena (tags from
/// the btag zone), the metadata arena, the reserve, the switch. The arenas
/// are written to `cells` (statics for the process, leaked for a small
/// kernel). Never touches the global allocator.
pub(crate) fn build_core(
    src: &'static Sources,
    spec: &Spec,
    cells: (
        &'static StaticCell<Arena<'static>>,
        &'static StaticCell<Arena<'static>>,
    ),
) -> Option<Core> {
    let w = src.w;
    let (base, len) = spec.boot;
    {
        let mut b = w.boot();
        (b.base, b.next, b.end) = (base, base, base + len);
    }
    w.boot_base.store(base, Ordering::Release);
    w.boot_end.store(base + len, Ordering::Release);
    // 2. UMA, from boot pages.
    let uma = Uma::bootstrap(&src.internal)?;
    // 3. The btag zone (its first slab from boot pages too).
    let mut btag_args = ZoneArgs::new("vmem btag", vmem::TAG_SIZE)
        .align(vmem::TAG_ALIGN)
        .flags(uma::ZoneFlags::VM)
        .source(&src.bt_pages);
    if let Some(n) = spec.btag_ipers {
        btag_args = btag_args.max_ipers(n);
    }
    let btag = uma.create_zone(&btag_args)?;
    w.btag
        .store(btag as *const Zone as *mut Zone, Ordering::Release);
    // 4. The kernel arena, its tags from the btag zone.
    let mut b = Arena::builder("kernel arena")
        .quantum(PAGE_SIZE)
        .tag_source(&src.bt_tags)
        .tag_reserve(true);
    if spec.span.is_none() {
        b = b
            .source(&super::pages::OS_CHUNKS, super::IMPORT_QUANTUM)
            .import_growth(super::IMPORT_GROWTH_MAX)
            .keep_idle(super::IMPORT_GROWTH_MAX)
            .qcache(super::qcache::QCACHE_MAX, &super::qcache::QCACHE)
            .reclaim(&crate::pressure::arena_reclaim);
    }
    // SAFETY: single building thread; published by the switch below.
    let arena: &'static Arena<'static> = unsafe { cells.0.write(b.build().ok()?) };
    if let Some((s, l)) = spec.span {
        arena.add(s, l, vmem::Flags::NOWAIT).ok()?;
    }
    // 4b. The metadata arena, importing chunks from the kernel arena.
    //     Its boundary tags come from vmem's standalone pool, not from the
    //     btag zone: a tag of the btag zone describing a btag slab would
    //     keep another btag slab alive (see the module doc).
    //     (Under loom there is no standalone pool: the btag zone.)
    #[cfg(not(loom))]
    let meta_tags: &'static dyn TagSource = &vmem::STANDALONE_TAGS;
    #[cfg(loom)]
    let meta_tags: &'static dyn TagSource = &src.bt_tags;
    let meta = Arena::builder("kmem meta")
        .quantum(PAGE_SIZE)
        .source(&src.meta_chunks, spec.meta_import)
        .tag_source(meta_tags)
        // New btag slabs' pages come from here: it may dip into the tag
        // reserve (under loom, where its tags are the btag zone's).
        .tag_reserve(true)
        .build()
        .ok()?;
    // SAFETY: single building thread; published by the switch below.
    let meta: &'static Arena<'static> = unsafe { cells.1.write(meta) };
    // 5. The reserve that breaks the recursion, filled now, from boot
    //    pages, with one fill of ordinary tags beyond it for the metadata
    //    arena's first span (added after the switch, when a new btag slab
    //    would have to come from that very arena).
    btag.reserve(spec.reserve);
    btag.prealloc(spec.reserve + vmem::BT_MAXALLOC);
    // 6. The switch: the rest of the boot region becomes the metadata
    //    arena's first (static) span, and the page sources move to the
    //    arenas.
    let rest = {
        let mut b = w.boot();
        b.end = b.next; // no more boot allocations
        b.next
    };
    w.boot_split.store(rest, Ordering::Release);
    w.meta.store(meta as *const _ as *mut _, Ordering::Release);
    w.arena
        .store(arena as *const _ as *mut _, Ordering::Release);
    if rest < base + len
        && meta
            .add(rest, base + len - rest, vmem::Flags::NOWAIT)
            .is_err()
    {
        return None;
    }
    Some(Core {
        uma,
        btag,
        arena,
        meta,
    })
}

// ---------------------------------------------------------------- small kernels

/// A small kernel on the real wiring, for the seed-002 loom model and
/// stress test: one registered 2 MiB chunk holding a boot region of
/// `boot_pages` and a kernel-arena span of `arena_pages`.
#[cfg(test)]
pub(crate) struct Small {
    pub(crate) core: Core,
    pub(crate) reserve: usize,
    #[cfg_attr(loom, allow(dead_code))]
    w: &'static Wiring,
    chunk: usize,
}

#[cfg(test)]
impl Small {
    /// Builds one (leaks its wiring, a few hundred bytes, on purpose: the
    /// arenas' sources hold `'static` references to it).
    pub(crate) fn build(
        boot_pages: usize,
        arena_pages: usize,
        btag_ipers: usize,
        reserve: usize,
    ) -> Small {
        use crate::os::CHUNK_SIZE;
        assert!((boot_pages + arena_pages) * PAGE_SIZE <= CHUNK_SIZE);
        let chunk = crate::os::map_chunks(CHUNK_SIZE).expect("map a chunk");
        assert!(pagemeta::register(chunk, CHUNK_SIZE), "register the chunk");
        let w: &'static Wiring = Box::leak(Box::new(Wiring::new(false)));
        let src: &'static Sources = Box::leak(Box::new(Sources::of(w)));
        let cells = (
            &*Box::leak(Box::new(StaticCell::new())),
            &*Box::leak(Box::new(StaticCell::new())),
        );
        let boot = (chunk, boot_pages * PAGE_SIZE);
        let spec = Spec {
            boot,
            span: Some((chunk + boot.1, arena_pages * PAGE_SIZE)),
            meta_import: PAGE_SIZE,
            btag_ipers: Some(btag_ipers),
            reserve,
        };
        let core = build_core(src, &spec, cells).expect("small kernel");
        Small {
            core,
            reserve,
            w,
            chunk,
        }
    }

    /// Boot pages in use and given back (bytes).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn boot_usage(&self) -> (usize, usize) {
        self.w.boot_usage()
    }

    /// Free tags in the btag keg (the reserve counts these).
    pub(crate) fn btag_free(&self) -> usize {
        self.core.btag.keg_info().map_or(0, |i| i.free_items)
    }

    /// Unmaps the chunk (the end of a model execution).
    ///
    /// # Safety
    ///
    /// Nothing uses the kernel any more.
    pub(crate) unsafe fn release(self) {
        use crate::os::CHUNK_SIZE;
        pagemeta::unregister(self.chunk, CHUNK_SIZE);
        // SAFETY: the caller's promise: nothing uses the chunk.
        unsafe { crate::os::unmap(self.chunk, CHUNK_SIZE) };
    }
}
