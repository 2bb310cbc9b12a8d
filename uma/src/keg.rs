//! Kegs: the slab layer behind one or more zones (FreeBSD `struct uma_keg`,
//! `keg_fetch_slab`, `keg_alloc_slab`, `zone_import`, `zone_release`,
//! `keg_drain`).

use core::ptr::{self, NonNull};

use crate::debug;
use crate::instance::Uma;
use crate::reserve;
use crate::slab::{
    compute_layout, PartialLists, Slab, SlabHash, SlabLayout, SlabList, ON_FREE, ON_FULL,
    ON_PARTIAL, SLAB_HDR,
};
use crate::source::{SlabSource, PAGE_SIZE};
use crate::sync::{Condvar, Mutex};
use crate::{Fini, Flags, Init, Reclaim, Zone, ZoneFlags};

/// Longest sleep of a `WAITOK` allocation waiting for the page source.
pub(crate) const MEM_WAIT_MAX_MS: u64 = 100;

/// What [`Keg::grow`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grow {
    /// A new slab is on the free list.
    Done,
    /// The page source (or the off-page header zone) had no memory.
    NoMemory,
    /// The keg init failed on an item of the new slab.
    InitFailed,
}

/// Keg state written under the keg lock.
pub(crate) struct KegState {
    pub free: SlabList,
    /// Partial slabs, binned by fullness (fullest first).
    pub partial: PartialLists,
    pub full: SlabList,
    pub nslabs: usize,
    /// Free items in free and partial slabs.
    pub free_items: usize,
    /// `zone_reserve`: items ordinary callers leave alone.
    pub reserve: usize,
    /// Source for new slabs (old slabs remember their own).
    pub source: &'static dyn SlabSource,
    pub hash: SlabHash,
    /// Zones sharing this keg (primary + secondaries).
    pub zones: usize,
    /// `WAITOK` allocations sleeping on `mem_cv` for memory.
    pub mem_waiters: usize,
    hash_growing: bool,
}

/// A keg (FreeBSD `struct uma_keg`).
pub(crate) struct Keg {
    // constant after create
    pub name: &'static str,
    pub size: usize,
    pub layout: SlabLayout,
    pub shift: u32,
    /// Slabs found through the hash (off-page headers, or every keg under
    /// INVARIANTS so foreign pointers are detected without touching them).
    pub use_hash: bool,
    pub flags: ZoneFlags,
    pub init: Option<Init>,
    pub fini: Option<Fini>,
    /// INVARIANTS: fill new items with the trash pattern.
    pub trash: bool,
    pub uma: *const Uma,
    // under keg lock
    pub state: Mutex<KegState>,
    /// Where `WAITOK` allocations sleep when the page source fails; items
    /// and slabs freed to the keg wake them.
    pub mem_cv: Condvar,
    /// Fork prepare holds `state` (a keg shared by several zones is locked
    /// once). Only touched by the fork handlers, which hold every UMA lock.
    #[cfg(not(loom))]
    pub fork_held: core::cell::Cell<bool>,
}

// SAFETY: raw pointers inside point to UMA-owned memory whose mutable parts
// are only touched under `state`'s lock; `uma` is immutable shared state.
unsafe impl Send for Keg {}
// SAFETY: as above.
unsafe impl Sync for Keg {}

/// What a keg looks like, for tests and statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KegInfo {
    /// The slab layout.
    pub layout: SlabLayout,
    /// Slabs held.
    pub slabs: usize,
    /// Free items in free and partial slabs.
    pub free_items: usize,
    /// Free slabs.
    pub free_slabs: usize,
    /// The reserve.
    pub reserve: usize,
}

impl Keg {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: &'static str,
        size: usize,
        align: usize,
        flags: ZoneFlags,
        init: Option<Init>,
        fini: Option<Fini>,
        max_ipers: usize,
        source: &'static dyn SlabSource,
        uma: *const Uma,
    ) -> Option<Keg> {
        let internal = flags.contains(ZoneFlags::INTERNAL);
        let layout = compute_layout(
            size,
            align,
            internal,
            flags.contains(ZoneFlags::OFFPAGE),
            max_ipers,
        )?;
        let use_hash = layout.offpage || (cfg!(feature = "invariants") && !internal);
        Some(Keg {
            name,
            size,
            layout,
            shift: layout.slab_size.trailing_zeros(),
            use_hash,
            flags,
            init,
            fini,
            trash: cfg!(feature = "invariants") && !internal && init.is_none() && fini.is_none(),
            uma,
            state: Mutex::new(KegState {
                free: SlabList::new(),
                partial: PartialLists::new(),
                full: SlabList::new(),
                nslabs: 0,
                free_items: 0,
                reserve: 0,
                source,
                hash: SlabHash::new(),
                zones: 1,
                mem_waiters: 0,
                hash_growing: false,
            }),
            mem_cv: Condvar::new(),
            #[cfg(not(loom))]
            fork_held: core::cell::Cell::new(false),
        })
    }

    /// Fork child: forgets the waiters and the hash growth of threads that
    /// do not exist in the child. Call with no UMA lock held by the caller.
    #[cfg(not(loom))]
    pub(crate) fn fork_child_reset(&self) {
        let mut g = self.state.lock();
        g.mem_waiters = 0;
        g.hash_growing = false;
    }

    fn uma(&self) -> &Uma {
        // SAFETY: a keg never outlives its Uma instance.
        unsafe { &*self.uma }
    }

    /// Item `idx` of a slab at `base`.
    #[inline]
    pub(crate) fn item(&self, base: *mut u8, idx: usize) -> *mut u8 {
        base.wrapping_add(idx * self.layout.rsize)
    }

    /// Finds the header of the slab `item` would belong to (null if the keg
    /// has no such slab; only hashed kegs can tell).
    ///
    /// # Safety
    ///
    /// Keg lock held (`g`). For unhashed kegs `item` must be an item of this
    /// keg (its slab header is read by masking).
    pub(crate) unsafe fn slab_of(&self, g: &mut KegState, item: *mut u8) -> *mut Slab {
        let base = ((item as usize) & !(self.layout.slab_size - 1)) as *mut u8;
        if self.use_hash {
            // SAFETY: keg lock held.
            unsafe { g.hash.lookup(base, self.shift) }
        } else {
            base.wrapping_add(self.layout.hdr_off()).cast()
        }
    }

    /// Index of `item` in `slab`, if it is exactly an item start.
    ///
    /// # Safety
    ///
    /// `slab` is a valid header of this keg.
    pub(crate) unsafe fn index_of(&self, slab: *mut Slab, item: *mut u8) -> Option<usize> {
        // SAFETY: caller contract.
        let base = unsafe { (*slab).base } as usize;
        let off = (item as usize).wrapping_sub(base);
        let idx = off / self.layout.rsize;
        (off % self.layout.rsize == 0 && idx < self.layout.ipers).then_some(idx)
    }

    /// A slab to take an item from under the reserve rule, or null: the
    /// fullest partial slab, else a free one (see [`PartialLists`]).
    fn fetch_slab(&self, g: &mut KegState, flags: Flags) -> *mut Slab {
        if !reserve::may_take(g.free_items, g.reserve, flags.contains(Flags::USE_RESERVE)) {
            return ptr::null_mut();
        }
        let s = g.partial.fullest();
        if !s.is_null() {
            s
        } else {
            g.free.head
        }
    }

    /// Takes up to `out.len()` free items of `s`, lowest first, into
    /// `out`, moving the slab between lists once (not once per item: a
    /// bucket's worth from one slab under one lock hold). Returns how many
    /// (at least one).
    ///
    /// # Safety
    ///
    /// Keg lock held; `s` is a header on the free or partial list; `out`
    /// is not empty.
    unsafe fn take_items(&self, g: &mut KegState, s: *mut Slab, out: &mut [*mut u8]) -> usize {
        // SAFETY: caller contract: s is valid and ours; lists hold it.
        unsafe {
            let was = (*s).list;
            let base = (*s).base;
            let mut k = 0;
            let n = (*s).take_lowest(out.len(), |idx| {
                out[k] = self.item(base, idx);
                k += 1;
            });
            if n == 0 {
                debug::fatal(format_args!(
                    "uma: keg {}: slab {:p} on a free list has no free item",
                    self.name, s
                ));
            }
            g.free_items -= n;
            let now_full = (*s).free == 0;
            let ipers = self.layout.ipers;
            if was == ON_FREE {
                g.free.remove(s);
                if now_full {
                    g.full.push(s, ON_FULL);
                } else {
                    g.partial.push(s, ipers);
                }
            } else if now_full {
                g.partial.remove(s);
                g.full.push(s, ON_FULL);
            } else {
                g.partial.rebin(s, ipers);
            }
            n
        }
    }

    /// Fills `out` with up to `out.len()` items (FreeBSD `zone_import`).
    /// Grows the keg (no lock held while the source runs) unless `NOVM`;
    /// honours the reserve; a fill stops once it dips into the reserve.
    ///
    /// For the first item a `WAITOK` caller never gives up for lack of
    /// memory (FreeBSD `keg_fetch_slab` with `M_WAITOK`): when the source
    /// fails it waits ([`wait_for_memory`](Self::wait_for_memory)) and
    /// tries again. Later items never block.
    pub(crate) fn import(&self, zone: &Zone, out: &mut [*mut u8], flags: Flags) -> usize {
        let mut n = 0;
        let mut waits = 0u32;
        let mut g = self.state.lock();
        'fill: while n < out.len() {
            let s = self.fetch_slab(&mut g, flags);
            if s.is_null() {
                if flags.contains(Flags::NOVM) {
                    break;
                }
                // After the first item never block (FreeBSD zone_import).
                let gflags = if n > 0 { flags.nowait() } else { flags };
                let src = g.source;
                drop(g);
                match self.grow(src, gflags) {
                    Grow::Done => {}
                    Grow::NoMemory if gflags.may_sleep() => {
                        self.wait_for_memory(zone, src, waits, flags.contains(Flags::USE_RESERVE));
                        waits = waits.saturating_add(1);
                    }
                    Grow::NoMemory | Grow::InitFailed => {
                        g = self.state.lock();
                        break;
                    }
                }
                g = self.state.lock();
                continue;
            }
            // With a reserve, a fill stops once the keg's free items are
            // down to it: at most the items above it (or the one item a
            // `USE_RESERVE` caller may dip), then no more.
            let mut want = out.len() - n;
            let mut last = false;
            if g.reserve > 0 {
                let above = g.free_items.saturating_sub(g.reserve).max(1);
                if above <= want {
                    want = above;
                    last = true;
                }
            }
            // SAFETY: lock held; s came from fetch_slab; want >= 1.
            let got = unsafe { self.take_items(&mut g, s, &mut out[n..n + want]) };
            n += got;
            if last && got == want {
                debug_assert!(reserve::stop_after_take(g.free_items, g.reserve));
                break 'fill;
            }
        }
        drop(g);
        n
    }

    /// A `WAITOK` allocation found the page source `src` out of memory
    /// (FreeBSD `vm_wait` in `keg_fetch_slab`): reclaim (round 0 `Trim`,
    /// round 1 `Drain`, later rounds `DrainCpu`), then, unless items turned
    /// up in the keg meanwhile, sleep for a backoff of `2^round` ms up to
    /// [`MEM_WAIT_MAX_MS`]. Items or slabs freed to the keg wake the
    /// sleeper early; the caller then tries again. Called with no lock
    /// held.
    ///
    /// The reclaim covers the zones whose reclaim runs nothing this thread
    /// would not run anyway ([`Uma::reclaim_plain`], with `src` allowed):
    /// no fini, zfini or release, and either the instance's page source or
    /// `src`, which this thread just called. The requesting `zone`'s cached
    /// items also go back to this keg, fini or not
    /// ([`Zone::reclaim_to_keg`]: no slab is freed, so no fini runs), so a
    /// zone never waits for items parked in its own caches. Other zones are
    /// left to [`Uma::reclaim`] calls of the application: their callbacks
    /// may want a lock this thread holds, or the zone list (an allocation
    /// inside a [`Uma::for_each_zone`] walk is skipped, not deadlocked).
    /// FreeBSD, too, leaves reclaims to its reclaim thread and pagedaemon
    /// rather than the waiting thread.
    ///
    /// [`Uma::reclaim_plain`]: crate::Uma::reclaim_plain
    /// [`Uma::reclaim`]: crate::Uma::reclaim
    /// [`Uma::for_each_zone`]: crate::Uma::for_each_zone
    fn wait_for_memory(
        &self,
        zone: &Zone,
        src: &'static dyn SlabSource,
        round: u32,
        use_reserve: bool,
    ) {
        let how = match round {
            0 => Reclaim::Trim,
            1 => Reclaim::Drain,
            _ => Reclaim::DrainCpu,
        };
        let _ = self.uma().reclaim_plain_with(how, Some(src));
        zone.reclaim_to_keg(how);
        let ms = (1u64 << round.min(7)).min(MEM_WAIT_MAX_MS);
        let mut g = self.state.lock();
        if reserve::may_take(g.free_items, g.reserve, use_reserve) {
            return;
        }
        g.mem_waiters += 1;
        g = self
            .mem_cv
            .wait_timeout(g, std::time::Duration::from_millis(ms))
            .0;
        g.mem_waiters -= 1;
    }

    /// Wakes `WAITOK` allocations waiting for memory (keg lock held).
    fn wake_mem_waiters(&self, g: &KegState) {
        if g.mem_waiters > 0 {
            self.mem_cv.notify_all();
        }
    }

    /// Gives items back to their slabs (FreeBSD `zone_release`).
    pub(crate) fn release(&self, items: &[*mut u8]) {
        let mut g = self.state.lock();
        for &it in items {
            // SAFETY: lock held; items of this keg (checked below for hashed
            // kegs; unhashed kegs trust the zone layer, whose INVARIANTS
            // checks ran before).
            unsafe {
                let s = self.slab_of(&mut g, it);
                if s.is_null() {
                    debug::fatal(format_args!(
                        "uma: keg {}: item {:p} is not in any slab of the keg",
                        self.name, it
                    ));
                }
                let Some(idx) = self.index_of(s, it) else {
                    debug::fatal(format_args!(
                        "uma: keg {}: {:p} is not an item start in slab {:p}",
                        self.name, it, s
                    ));
                };
                if (*s).is_free(idx) {
                    debug::fatal(format_args!(
                        "uma: keg {}: item {:p} freed twice (already free in slab {:p})",
                        self.name, it, s
                    ));
                }
                (*s).set_free(idx);
                g.free_items += 1;
                let ipers = self.layout.ipers;
                if (*s).list == ON_FULL {
                    g.full.remove(s);
                    if (*s).free as usize == ipers {
                        g.free.push(s, ON_FREE);
                    } else {
                        g.partial.push(s, ipers);
                    }
                } else if (*s).free as usize == ipers {
                    g.partial.remove(s);
                    g.free.push(s, ON_FREE);
                } else {
                    g.partial.rebin(s, ipers);
                }
            }
        }
        self.wake_mem_waiters(&g);
    }

    /// Adds one slab (FreeBSD `keg_alloc_slab`). Called with no lock held.
    pub(crate) fn grow(&self, src: &'static dyn SlabSource, flags: Flags) -> Grow {
        let l = self.layout;
        let uma = self.uma();
        let boot = if self.flags.contains(ZoneFlags::INTERNAL) {
            uma.boot_take(l.slab_size)
        } else {
            None
        };
        let (mem, rec): (NonNull<u8>, Option<&'static dyn SlabSource>) = match boot {
            Some(p) => (p, None),
            None => match src.alloc(l.slab_size, l.slab_size, flags) {
                Some(p) => (p, Some(src)),
                None => return Grow::NoMemory,
            },
        };
        let give_back = |mem: NonNull<u8>| {
            if let Some(r) = rec {
                // SAFETY: mem came from r.alloc with these arguments and is unused.
                unsafe { r.free(mem, l.slab_size, l.slab_size) };
            }
        };
        if (mem.as_ptr() as usize) & (l.slab_size - 1) != 0 {
            debug::fatal(format_args!(
                "uma: keg {}: source {} returned {:p}, not aligned to the slab size {}",
                self.name,
                src.name(),
                mem,
                l.slab_size
            ));
        }
        let hdr: *mut Slab = if l.offpage {
            match uma.slabs_zone().internal_alloc(flags.without(Flags::ZERO)) {
                Some(h) => h.as_ptr().cast(),
                None => {
                    give_back(mem);
                    return Grow::NoMemory;
                }
            }
        } else {
            mem.as_ptr().wrapping_add(l.hdr_off()).cast()
        };
        Slab::init(hdr, mem.as_ptr(), self, l.ipers, rec);
        if let Some(init) = self.init {
            for i in 0..l.ipers {
                let it = self.item(mem.as_ptr(), i);
                // SAFETY: `it` is an item of the fresh slab.
                if !init(unsafe { NonNull::new_unchecked(it) }, self.size, flags) {
                    if let Some(fini) = self.fini {
                        for j in 0..i {
                            // SAFETY: items 0..i were initialised above.
                            fini(
                                unsafe { NonNull::new_unchecked(self.item(mem.as_ptr(), j)) },
                                self.size,
                            );
                        }
                    }
                    if l.offpage {
                        // SAFETY: hdr came from slabs_zone and is unused.
                        unsafe {
                            uma.slabs_zone()
                                .internal_free(NonNull::new_unchecked(hdr.cast()))
                        };
                    }
                    give_back(mem);
                    return Grow::InitFailed;
                }
            }
        } else if self.trash {
            for i in 0..l.ipers {
                debug::trash(self.item(mem.as_ptr(), i), self.size);
            }
        }
        let mut g = self.state.lock();
        // SAFETY: lock held; hdr is a fresh valid header on no list.
        unsafe {
            if self.use_hash {
                g.hash.insert(hdr, self.shift);
            }
            g.free.push(hdr, ON_FREE);
        }
        g.nslabs += 1;
        g.free_items += l.ipers;
        if g.hash.wants_grow() && !g.hash_growing {
            g.hash_growing = true;
            let want = g.hash.next_size();
            drop(g);
            self.grow_hash(want);
        }
        Grow::Done
    }

    /// Replaces the hash table by one of `heads` heads (allocated with no
    /// lock held, FreeBSD `hash_expand` from `keg_timeout`).
    fn grow_hash(&self, heads: usize) {
        let bytes = (heads * core::mem::size_of::<*mut Slab>()).max(PAGE_SIZE);
        let isrc = self.uma().source;
        let table = isrc.alloc(bytes, PAGE_SIZE, Flags::NOWAIT.with(Flags::ZERO));
        let mut g = self.state.lock();
        g.hash_growing = false;
        let Some(t) = table else { return };
        // SAFETY: lock held; t is `bytes` zeroed bytes (sources zero on ZERO,
        // and we zero again to not depend on it).
        let (old, old_heads) = unsafe {
            ptr::write_bytes(t.as_ptr(), 0, bytes);
            g.hash.rehash(
                t.as_ptr().cast(),
                bytes / core::mem::size_of::<*mut Slab>(),
                self.shift,
            )
        };
        drop(g);
        if let Some(old) = NonNull::new(old.cast::<u8>()) {
            let ob = (old_heads * core::mem::size_of::<*mut Slab>()).max(PAGE_SIZE);
            // SAFETY: the old table came from isrc.alloc(ob, PAGE_SIZE) and
            // is no longer referenced.
            unsafe { isrc.free(old, ob, PAGE_SIZE) };
        }
    }

    /// Gives a slab's memory back (fini each item, header, pages through the
    /// source that produced them). Called with no lock held.
    ///
    /// # Safety
    ///
    /// `s` is a header of this keg on no list and not in the hash, with
    /// every item free; nothing else references it.
    unsafe fn free_slab(&self, s: *mut Slab) {
        // SAFETY: caller contract.
        let (base, src) = unsafe { ((*s).base, (*s).source) };
        if let Some(fini) = self.fini {
            for i in 0..self.layout.ipers {
                // SAFETY: every item was initialised when the slab was made.
                fini(
                    unsafe { NonNull::new_unchecked(self.item(base, i)) },
                    self.size,
                );
            }
        }
        if self.layout.offpage {
            // SAFETY: off-page headers are "UMA Slabs" items.
            unsafe {
                self.uma()
                    .slabs_zone()
                    .internal_free(NonNull::new_unchecked(s.cast()))
            };
        }
        match src {
            // SAFETY: `base` came from src.alloc(slab_size, slab_size) and
            // no item of it is in use.
            Some(src) => unsafe {
                src.free(
                    NonNull::new_unchecked(base),
                    self.layout.slab_size,
                    self.layout.slab_size,
                )
            },
            None => debug::fatal(format_args!(
                "uma: keg {}: tried to free a boot slab {:p}",
                self.name, base
            )),
        }
    }

    /// Whether the keg's page source is its instance's or `also`.
    pub(crate) fn uses_instance_source_or(&self, also: Option<&dyn SlabSource>) -> bool {
        let mine = self.state.lock().source as *const dyn SlabSource;
        let is = |s: &dyn SlabSource| ptr::addr_eq(mine, s as *const dyn SlabSource);
        is(self.uma().source) || also.is_some_and(is)
    }

    /// Frees free slabs while free items stay >= the reserve (FreeBSD
    /// `keg_drain` with D26772). NOFREE kegs and boot slabs are kept.
    /// Returns the slabs freed.
    pub(crate) fn drain(&self) -> usize {
        if self.flags.contains(ZoneFlags::NOFREE) {
            return 0;
        }
        let ipers = self.layout.ipers;
        let mut victims: *mut Slab = ptr::null_mut();
        let mut n = 0;
        let mut g = self.state.lock();
        let mut cur = g.free.head;
        while !cur.is_null() && reserve::may_drain_slab(g.free_items, ipers, g.reserve) {
            // SAFETY: lock held; cur is a valid header on the free list.
            unsafe {
                let next = (*cur).next;
                if (*cur).source.is_some() {
                    g.free.remove(cur);
                    if self.use_hash {
                        g.hash.remove(cur, self.shift);
                    }
                    g.nslabs -= 1;
                    g.free_items -= ipers;
                    (*cur).next = victims;
                    victims = cur;
                    n += 1;
                }
                cur = next;
            }
        }
        drop(g);
        while !victims.is_null() {
            // SAFETY: victims were unlinked above and are ours alone.
            unsafe {
                let next = (*victims).next;
                self.free_slab(victims);
                victims = next;
            }
        }
        if n > 0 {
            // The pages are back in the source: let waiters try again.
            self.wake_mem_waiters(&self.state.lock());
        }
        n
    }

    /// Grows until at least `items` items are free (FreeBSD `uma_prealloc`).
    pub(crate) fn prealloc(&self, items: usize, flags: Flags) -> usize {
        loop {
            let g = self.state.lock();
            if g.free_items >= items {
                return g.free_items;
            }
            let src = g.source;
            let have = g.free_items;
            drop(g);
            // No waiting here: a preallocation takes what the source gives.
            if self.grow(src, flags) != Grow::Done {
                return have;
            }
        }
    }

    pub(crate) fn info(&self) -> KegInfo {
        let g = self.state.lock();
        KegInfo {
            layout: self.layout,
            slabs: g.nslabs,
            free_items: g.free_items,
            free_slabs: g.free.len,
            reserve: g.reserve,
        }
    }

    /// Destroys the keg's memory: drops the reserve, frees every free slab,
    /// reports (and leaks) slabs that still hold items. Returns the items
    /// still allocated. The keg struct itself is freed by the caller.
    pub(crate) fn teardown(&self) -> usize {
        let mut g = self.state.lock();
        g.reserve = 0;
        let leaked = g.nslabs * self.layout.ipers - g.free_items;
        let kept = g.partial.len + g.full.len;
        drop(g);
        self.drain();
        let mut g = self.state.lock();
        let (heap, heads) = g.hash.take_heap();
        drop(g);
        if leaked > 0 {
            debug::warn(format_args!(
                "uma: keg {} destroyed with {} items still allocated; {} slabs ({} bytes) lost\n",
                self.name,
                leaked,
                kept,
                kept * self.layout.slab_size
            ));
        }
        if let Some(h) = NonNull::new(heap.cast::<u8>()) {
            let b = (heads * core::mem::size_of::<*mut Slab>()).max(PAGE_SIZE);
            // SAFETY: the heap table came from the internal source with these
            // arguments; nobody uses the keg any more.
            unsafe { self.uma().source.free(h, b, PAGE_SIZE) };
        }
        leaked
    }

    /// Walks every slab and checks the keg's accounting; panics with a
    /// description on the first violation. Test aid.
    pub(crate) fn check_invariants(&self) {
        let mut g = self.state.lock();
        let g = &mut *g;
        let ipers = self.layout.ipers as u32;
        let mut slabs = 0;
        let mut free = 0usize;
        let mut lists: [(&SlabList, u8, usize); 2 + crate::slab::PARTIAL_BINS] =
            [(&g.free, ON_FREE, 0); 2 + crate::slab::PARTIAL_BINS];
        lists[1] = (&g.full, ON_FULL, 0);
        for (b, list) in g.partial.bins.iter().enumerate() {
            lists[2 + b] = (list, ON_PARTIAL, b);
        }
        let mut partial_slabs = 0;
        for (list, tag, bin) in lists {
            let mut n = 0;
            let mut prev: *mut Slab = ptr::null_mut();
            let mut s = list.head;
            while !s.is_null() {
                // SAFETY: lock held; list nodes are valid headers.
                let h = unsafe { &*s };
                assert_eq!(
                    h.list, tag,
                    "keg {}: slab {:p} has list tag {} on list {}",
                    self.name, s, h.list, tag
                );
                assert_eq!(
                    h.prev, prev,
                    "keg {}: slab {:p} prev link broken",
                    self.name, s
                );
                assert!(
                    ptr::eq(h.keg, self),
                    "keg {}: slab {:p} names another keg",
                    self.name,
                    s
                );
                assert_eq!(
                    h.popcount(),
                    h.free,
                    "keg {}: slab {:p} bitset/free count mismatch",
                    self.name,
                    s
                );
                assert!(
                    !h.stray_bits(self.layout.ipers),
                    "keg {}: slab {:p} has bits past ipers",
                    self.name,
                    s
                );
                assert_eq!(
                    h.base as usize & (self.layout.slab_size - 1),
                    0,
                    "keg {}: slab misaligned",
                    self.name
                );
                match tag {
                    ON_FREE => assert_eq!(
                        h.free, ipers,
                        "keg {}: non-free slab on free list",
                        self.name
                    ),
                    ON_FULL => {
                        assert_eq!(h.free, 0, "keg {}: non-full slab on full list", self.name)
                    }
                    _ => {
                        assert!(
                            h.free > 0 && h.free < ipers,
                            "keg {}: bad partial slab",
                            self.name
                        );
                        assert!(
                            h.bin as usize == bin
                                && PartialLists::bin_of(h.free, self.layout.ipers) == bin,
                            "keg {}: partial slab {:p} ({} free) in the wrong bin {}",
                            self.name,
                            s,
                            h.free,
                            bin
                        );
                        partial_slabs += 1;
                    }
                }
                if self.use_hash {
                    // SAFETY: lock held.
                    let f = unsafe { g.hash.lookup(h.base, self.shift) };
                    assert_eq!(f, s, "keg {}: slab {:p} missing from hash", self.name, s);
                } else {
                    assert_eq!(h.base.wrapping_add(self.layout.hdr_off()).cast::<Slab>(), s);
                }
                free += h.free as usize;
                n += 1;
                prev = s;
                s = h.next;
            }
            assert_eq!(n, list.len, "keg {}: list length mismatch", self.name);
            slabs += n;
        }
        assert_eq!(
            partial_slabs, g.partial.len,
            "keg {}: partial count mismatch",
            self.name
        );
        assert_eq!(slabs, g.nslabs, "keg {}: slab count mismatch", self.name);
        assert_eq!(
            free, g.free_items,
            "keg {}: free item count mismatch",
            self.name
        );
        if self.use_hash {
            assert_eq!(
                g.hash.count, g.nslabs,
                "keg {}: hash count mismatch",
                self.name
            );
        }
    }
}

/// Slab header size, for reports and docs.
pub const SLAB_HEADER_BYTES: usize = SLAB_HDR;
