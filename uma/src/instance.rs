//! The UMA instance and its API (FreeBSD `uma_zcreate`,
//! `uma_zsecond_create`, `uma_zcache_create`, `uma_zdestroy`,
//! `uma_reclaim`, `uma_timeout`, `sysctl vm.zone_stats`): zone creation and
//! destruction, the zone list, reclaims and the periodic pass, the `vmstat
//! -z` table, and the instance's fork hooks. [`Uma::bootstrap`]
//! (`startup`) builds an instance; zones are made from [`ZoneArgs`] and
//! [`CacheArgs`] (`args`).

use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

use crate::args::{CacheArgs, ZoneArgs};
use crate::keg::Keg;
use crate::source::SlabSource;
use crate::startup::{BootPages, NINTERNAL, NO_SLOT};
use crate::sync::{Mutex, MutexGuard};
use crate::zone::{Zone, ZoneParts};
use crate::{debug, Ctor, Dtor, Fini, Flags, Init, Reclaim, ZoneFlags};

/// The instance's zones (under `Uma::list`), oldest first (FreeBSD's
/// `vmstat -z` order).
pub(crate) struct ZoneList {
    pub(crate) head: *const Zone,
    pub(crate) tail: *const Zone,
    pub(crate) count: usize,
}

impl ZoneList {
    /// Puts `z` at the tail: a walk that counts its place from the head
    /// (the statistics tables copy rows a chunk at a time) stays in step
    /// while zones are created, as they are on first use.
    fn insert(&mut self, z: &Zone) {
        z.list_next.set(ptr::null());
        z.list_prev.set(self.tail);
        if self.tail.is_null() {
            self.head = z;
        } else {
            // SAFETY: list lock held; listed zones are alive.
            unsafe { (*self.tail).list_next.set(z) };
        }
        self.tail = z;
        self.count += 1;
    }
}

crate::zeroed_thread_local! {
    /// The address of the instance whose zone list the calling thread
    /// holds through a [`ListGuard`] (0: none).
    fn list_held: core::cell::Cell<usize> = "bsdalloc_uma_list_held_v01";
}

/// The zone list, locked by the calling thread: the zones created by this
/// thread while it held the list (`Uma::pending`) are listed when it lets
/// the list go, and the thread is marked as the holder meanwhile (see
/// [`Uma::link_zone`]).
pub(crate) struct ListGuard<'a> {
    uma: &'a Uma,
    prev: usize,
    g: MutexGuard<'a, ZoneList>,
}

impl<'a> ListGuard<'a> {
    fn new(uma: &'a Uma, g: MutexGuard<'a, ZoneList>) -> ListGuard<'a> {
        let prev = list_held(|h| h.replace(uma as *const Uma as usize));
        ListGuard { uma, prev, g }
    }
}

impl core::ops::Deref for ListGuard<'_> {
    type Target = ZoneList;
    fn deref(&self) -> &ZoneList {
        &self.g
    }
}

impl core::ops::DerefMut for ListGuard<'_> {
    fn deref_mut(&mut self) -> &mut ZoneList {
        &mut self.g
    }
}

impl Drop for ListGuard<'_> {
    fn drop(&mut self) {
        // Still locked: the lock goes with `g`, after this.
        self.uma.list_pending(&mut self.g);
        list_held(|h| h.set(self.prev));
    }
}

/// One UMA instance: its internal zones, its zone list, its page source
/// for internal memory. [`global`](crate::global) is the process's default
/// instance; kmem bootstraps its own over the kernel arena.
pub struct Uma {
    // constant after create
    pub(crate) source: &'static dyn SlabSource,
    pub(crate) ncpu: usize,
    pub(crate) zones: [MaybeUninit<Zone>; NINTERNAL],
    pub(crate) kegs: [MaybeUninit<Keg>; NINTERNAL],
    // under the boot lock
    pub(crate) boot: Mutex<BootPages>,
    // under the list lock
    pub(crate) list: Mutex<ZoneList>,
    /// Zones created by a thread while it held the list (an allocation
    /// inside its own walk of the zones: a statistics sink, a reclaim's
    /// callback, that needed a zone built on first use), waiting to be
    /// listed when its [`ListGuard`] goes: a stack through their
    /// `list_next`, pushed and emptied by the holder only.
    pub(crate) pending: crate::sync::AtomicPtr<Zone>,
    pub(crate) reclaiming: Mutex<()>,
    #[cfg(loom)]
    pub(crate) registry: Mutex<()>,
    /// The next instance on the process's list of instances (`fork`).
    #[cfg(not(loom))]
    pub(crate) next_instance: crate::sync::AtomicPtr<Uma>,
}

// SAFETY: all mutable state is behind the locks named on the fields; the
// internal zones/kegs are Sync themselves.
unsafe impl Sync for Uma {}
// SAFETY: as above.
unsafe impl Send for Uma {}

impl fmt::Debug for Uma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uma")
            .field("source", &self.source.name())
            .finish_non_exhaustive()
    }
}

impl Uma {
    /// The registry lock (see `pcpu`): process-wide outside loom.
    pub(crate) fn registry_lock(&self) -> MutexGuard<'_, ()> {
        #[cfg(not(loom))]
        return crate::pcpu::tls::REGISTRY.lock();
        #[cfg(loom)]
        return self.registry.lock();
    }

    /// Locks the zone list (see [`ListGuard`]).
    pub(crate) fn lock_list(&self) -> ListGuard<'_> {
        ListGuard::new(self, self.list.lock())
    }

    /// Whether the calling thread holds this instance's zone list.
    fn holds_list(&self) -> bool {
        list_held(|h| h.get()) == self as *const Uma as usize
    }

    /// Lists the zones waiting in `pending` (the list lock held).
    fn list_pending(&self, l: &mut ZoneList) {
        let mut z = self
            .pending
            .swap(ptr::null_mut(), crate::sync::Ordering::Acquire);
        while !z.is_null() {
            // SAFETY: a zone pushed by `link_zone`, alive (created and not
            // destroyed: a destroy takes it out of `pending` first).
            let zr = unsafe { &*z };
            z = zr.list_next.get() as *mut Zone;
            l.insert(zr);
        }
    }

    /// Lists a new zone. A thread that holds the list already (it is
    /// inside its own walk of the zones, [`for_each_zone`](Self::for_each_zone)
    /// or a reclaim, whose code allocated from a zone built on first use)
    /// would wait for itself: the zone waits in `pending` instead, usable
    /// at once, and is listed when that walk lets the list go. Any other
    /// thread waits for the list, so a zone it creates is listed before
    /// it can be handed out (a fork's prepare, which takes the list,
    /// always sees it).
    pub(crate) fn link_zone(&self, z: &Zone) {
        if self.holds_list() {
            let o = crate::sync::Ordering::Relaxed;
            z.list_prev.set(ptr::null());
            z.list_next.set(self.pending.load(o));
            self.pending.store(z as *const Zone as *mut Zone, o);
            return;
        }
        self.lock_list().insert(z);
    }

    fn unlink_zone(&self, z: &Zone) {
        if self.holds_list() && self.unpend(z) {
            return;
        }
        let mut l = self.lock_list();
        let (p, n) = (z.list_prev.get(), z.list_next.get());
        if p.is_null() {
            l.head = n;
        } else {
            // SAFETY: list lock held; listed zones are alive.
            unsafe { (*p).list_next.set(n) };
        }
        if n.is_null() {
            l.tail = p;
        } else {
            // SAFETY: as above.
            unsafe { (*n).list_prev.set(p) };
        }
        l.count -= 1;
    }

    /// Creates a zone with its own keg (FreeBSD `uma_zcreate`). `None` on
    /// bad arguments (size 0, alignment not a power of two or above a page)
    /// or without memory.
    pub fn create_zone(&'static self, args: &ZoneArgs) -> Option<&'static Zone> {
        let source = args.source.unwrap_or(self.source);
        let zmem = self.zones_zone().internal_alloc(Flags::NOWAIT)?;
        let Some(kmem) = self.kegs_zone().internal_alloc(Flags::NOWAIT) else {
            // SAFETY: unused item of ours.
            unsafe { self.zones_zone().internal_free(zmem) };
            return None;
        };
        let flags = args.flags;
        let Some(keg) = Keg::new(
            args.name,
            args.size,
            args.align,
            flags,
            args.init,
            args.fini,
            args.max_ipers,
            source,
            self,
        ) else {
            // SAFETY: unused items of ours.
            unsafe {
                self.zones_zone().internal_free(zmem);
                self.kegs_zone().internal_free(kmem);
            }
            return None;
        };
        let kp: *mut Keg = kmem.as_ptr().cast();
        // SAFETY: an unused "UMA Kegs" item, sized and aligned for Keg.
        unsafe { kp.write(keg) };
        self.finish_zone(
            zmem,
            ZoneParts {
                name: args.name,
                size: args.size,
                flags,
                ctor: args.ctor,
                dtor: args.dtor,
                zinit: None,
                zfini: None,
                arg: args.arg,
                import: None,
                release: None,
                keg: kp,
                uma: self,
                slot: NO_SLOT,
                bucket_size: args.bucket_size,
            },
        )
    }

    /// Creates a secondary zone over `master`'s keg (FreeBSD
    /// `uma_zsecond_create`): its own ctor/dtor and zinit/zfini (run when
    /// items move between the keg and this zone).
    pub fn create_secondary(
        &'static self,
        name: &'static str,
        ctor: Option<Ctor>,
        dtor: Option<Dtor>,
        zinit: Option<Init>,
        zfini: Option<Fini>,
        master: &'static Zone,
    ) -> Option<&'static Zone> {
        let keg = master.keg()?;
        let zmem = self.zones_zone().internal_alloc(Flags::NOWAIT)?;
        keg.state.lock().zones += 1;
        self.finish_zone(
            zmem,
            ZoneParts {
                name,
                size: master.size,
                flags: master.flags.with(ZoneFlags::SECONDARY),
                ctor,
                dtor,
                zinit,
                zfini,
                arg: master.arg,
                import: None,
                release: None,
                keg,
                uma: self,
                slot: NO_SLOT,
                bucket_size: None,
            },
        )
    }

    /// Creates a cache-only zone (FreeBSD `uma_zcache_create`).
    pub fn create_cache(&'static self, args: &CacheArgs) -> Option<&'static Zone> {
        let zmem = self.zones_zone().internal_alloc(Flags::NOWAIT)?;
        self.finish_zone(
            zmem,
            ZoneParts {
                name: args.name,
                size: args.size,
                flags: args.flags.with(ZoneFlags::CACHE),
                ctor: args.ctor,
                dtor: args.dtor,
                zinit: None,
                zfini: None,
                arg: args.arg,
                import: Some(args.import),
                release: Some(args.release),
                keg: ptr::null(),
                uma: self,
                slot: NO_SLOT,
                bucket_size: args.bucket_size,
            },
        )
    }

    fn finish_zone(
        &'static self,
        zmem: NonNull<u8>,
        mut parts: ZoneParts,
    ) -> Option<&'static Zone> {
        #[cfg(not(loom))]
        if !parts.flags.contains(ZoneFlags::NOBUCKET) {
            parts.slot = crate::pcpu::tls::alloc_slot();
        }
        #[cfg(loom)]
        let _ = &mut parts;
        let zp: *mut Zone = zmem.as_ptr().cast();
        // SAFETY: an unused "UMA Zones" item, sized and aligned for Zone.
        let z: &'static Zone = unsafe {
            zp.write(Zone::new(parts));
            &*zp
        };
        self.link_zone(z);
        Some(z)
    }

    /// Destroys a zone (FreeBSD `uma_zdestroy`): drains every per-thread
    /// cache and the bucket cache, reports leaked items by count, and frees
    /// the keg when its last zone goes (dropping its reserve). Returns the
    /// number of items still allocated from the zone.
    ///
    /// # Safety
    ///
    /// No thread uses `zone` during or after the call (items still
    /// allocated from it must not be freed to it any more).
    pub unsafe fn destroy(&'static self, zone: &'static Zone) -> usize {
        if zone.flags.contains(ZoneFlags::INTERNAL) || !ptr::eq(zone.uma, self) {
            debug::warn(format_args!(
                "uma: refusing to destroy zone {} (internal or of another instance)\n",
                zone.name
            ));
            return 0;
        }
        self.unlink_zone(zone);
        let list = crate::pcpu::drain_zone_caches(zone, true);
        // Exiting threads whose caches left the list before the drain may
        // still be giving their buckets back.
        crate::pcpu::wait_exit_flushes(zone);
        zone.release_list(list);
        zone.bucket_cache_reclaim(crate::zone::Keep::Nothing);
        let st = zone.stats();
        let leaked = st.used as usize;
        if leaked > 0 {
            debug::warn(format_args!(
                "uma: zone {} destroyed with {} items still allocated\n",
                zone.name, leaked
            ));
        }
        if let Some(keg) = zone.keg() {
            let last = {
                let mut g = keg.state.lock();
                g.zones -= 1;
                g.zones == 0
            };
            if last {
                keg.teardown();
                let kp = keg as *const Keg as *mut Keg;
                // SAFETY: the last zone of the keg is going; nothing else
                // references the keg struct, an item of "UMA Kegs".
                unsafe {
                    ptr::drop_in_place(kp);
                    self.kegs_zone()
                        .internal_free(NonNull::new_unchecked(kp.cast()));
                }
            }
        }
        #[cfg(not(loom))]
        crate::pcpu::tls::free_slot(zone.pcpu_slot);
        let zp = zone as *const Zone as *mut Zone;
        // SAFETY: caller contract: nobody uses the zone any more.
        unsafe {
            ptr::drop_in_place(zp);
            self.zones_zone()
                .internal_free(NonNull::new_unchecked(zp.cast()));
        }
        leaked
    }

    /// Takes `z` out of `pending` if it waits there (by the holder of the
    /// list: a zone created and destroyed inside one walk).
    fn unpend(&self, z: &Zone) -> bool {
        let o = crate::sync::Ordering::Relaxed;
        let target = z as *const Zone;
        let mut prev: *const Zone = ptr::null();
        let mut cur = self.pending.load(o) as *const Zone;
        while !cur.is_null() {
            // SAFETY: pending zones are alive; only this thread (the list's
            // holder) edits the stack.
            let next = unsafe { (*cur).list_next.get() };
            if cur == target {
                if prev.is_null() {
                    self.pending.store(next as *mut Zone, o);
                } else {
                    // SAFETY: as above.
                    unsafe { (*prev).list_next.set(next) };
                }
                return true;
            }
            prev = cur;
            cur = next;
        }
        false
    }

    /// Calls `f` on every zone (internal ones included) under the list lock.
    /// `f` may allocate from zones of this instance, even ones created on
    /// first use (such a zone waits on a pending stack and is listed when
    /// the walk ends); it must not destroy a zone that
    /// was listed when the walk began.
    pub fn for_each_zone(&self, mut f: impl FnMut(&Zone)) {
        let l = self.lock_list();
        let mut z = l.head;
        while !z.is_null() {
            // SAFETY: list lock held; listed zones are alive.
            unsafe {
                f(&*z);
                z = (*z).list_next.get();
            }
        }
    }

    /// Number of zones (internal ones included).
    pub fn zone_count(&self) -> usize {
        self.lock_list().count
    }

    /// Reclaims from every zone (FreeBSD `uma_reclaim`); UNMANAGED zones are
    /// skipped. Bounded: one pass; a reclaim already running (for example
    /// one re-entered from a page source) makes this call return at once.
    ///
    /// It runs every zone's fini, zfini, release and page-source callbacks
    /// in the calling thread, with the zone list locked: call it from a
    /// thread that holds none of the locks those callbacks take (FreeBSD
    /// calls it from its reclaim thread), and not from inside a
    /// [`for_each_zone`](Self::for_each_zone) walk. From a thread that may
    /// hold such locks, use [`reclaim_plain`](Self::reclaim_plain).
    ///
    /// A reclaim or timeout pass already running (a lazy timeout pass of
    /// kmem's, or this very reclaim re-entered from a page source) is given
    /// a short bounded while to end, as in
    /// [`reclaim_plain`](Self::reclaim_plain); returns false, having done
    /// nothing, if it does not.
    pub fn reclaim(&self, how: Reclaim) -> bool {
        let Some(_busy) = try_lock_for(&self.reclaiming, PLAIN_LOCK_TRIES) else {
            return false;
        };
        self.for_each_zone(|z| {
            if !z.flags.contains(ZoneFlags::UNMANAGED) {
                z.reclaim(how);
            }
        });
        true
    }

    /// The periodic work of FreeBSD `uma_timeout`: [`Zone::timeout`] for
    /// every managed zone (working-set estimate, bucket cache trimmed to
    /// it, free slabs back to the page source), then the pass of
    /// [`timeout_internal`](Self::timeout_internal). kmem's reclaim worker (or
    /// the application) calls this every few seconds. Returns at once if
    /// a reclaim or another timeout pass is running. Runs callbacks as
    /// [`reclaim`](Self::reclaim) does, with the same rules for the caller.
    pub fn timeout(&self) {
        let Some(_busy) = self.reclaiming.try_lock() else {
            return;
        };
        self.for_each_zone(|z| {
            if !z.flags.contains(ZoneFlags::UNMANAGED) {
                z.timeout();
            }
        });
        self.drain_internal_kegs();
    }

    /// [`Zone::timeout`] for every managed zone whose trim runs no code of
    /// the application ([`Zone::trim_runs_callbacks`] false: no fini, no
    /// release, the instance's page source), so that the pass may run in
    /// any thread that holds no UMA lock, whatever locks of its own it
    /// holds (kmem runs it from its size-class zones' slow-path hook).
    /// Skipped, returning false, if a reclaim or a timeout pass is running
    /// or the zone list is locked (a zone being created or destroyed, or
    /// a statistics walk, maybe by this very thread).
    pub fn timeout_plain(&self) -> bool {
        self.for_each_plain_zone(None, 0, |z| {
            z.timeout();
        })
        .is_some()
    }

    /// [`reclaim`](Self::reclaim) for the same zones as
    /// [`timeout_plain`](Self::timeout_plain): what an allocating thread
    /// may run when memory runs short (kmem's reclaim before failure),
    /// whatever locks of its own it holds. Zones with callbacks are left to
    /// a thread that holds none of the application's locks (FreeBSD runs
    /// them from its reclaim worker and pagedaemon, never in the failing
    /// thread): [`reclaim`](Self::reclaim) or [`timeout`](Self::timeout),
    /// called by the application or by kmem's reclaim worker.
    ///
    /// The reclaim and zone-list locks are only try-locked, retried for a
    /// short bounded while (a statistics walk or a zone creation ends
    /// soon); blocking could deadlock, since their holder may be waiting
    /// for a lock of the caller's (a statistics sink, a callback of
    /// [`reclaim`](Self::reclaim)), or be the caller itself (an allocation
    /// inside a [`for_each_zone`](Self::for_each_zone) walk). `None` when
    /// they stayed busy.
    pub fn reclaim_plain(&self, how: Reclaim) -> Option<PlainReclaim> {
        self.reclaim_plain_with(how, None)
    }

    /// [`reclaim_plain`](Self::reclaim_plain), also reclaiming the zones
    /// (without a fini or release) over the page source `src`, which the
    /// caller calls anyway (a `WAITOK` allocation whose source failed).
    pub(crate) fn reclaim_plain_with(
        &self,
        how: Reclaim,
        src: Option<&dyn SlabSource>,
    ) -> Option<PlainReclaim> {
        self.for_each_plain_zone(src, PLAIN_LOCK_TRIES, |z| z.reclaim(how))
    }

    /// Calls `f` on every managed zone whose trim runs no application code
    /// (`src`, if given, counting as UMA's own page source), holding the
    /// reclaim and zone-list locks, both only try-locked (`tries` more
    /// times after the first, yielding in between). `None` (nothing done)
    /// if either stayed held.
    fn for_each_plain_zone(
        &self,
        src: Option<&dyn SlabSource>,
        tries: usize,
        mut f: impl FnMut(&Zone),
    ) -> Option<PlainReclaim> {
        let _busy = try_lock_for(&self.reclaiming, tries)?;
        let l = ListGuard::new(self, try_lock_for(&self.list, tries)?);
        let mut r = PlainReclaim::default();
        let mut z = l.head;
        while !z.is_null() {
            // SAFETY: list lock held; listed zones are alive.
            unsafe {
                let zr = &*z;
                if !zr.flags.contains(ZoneFlags::UNMANAGED) {
                    if zr.trim_runs_callbacks_besides(src) {
                        r.skipped += 1;
                    } else {
                        f(zr);
                        r.reclaimed += 1;
                    }
                }
                z = zr.list_next.get();
            }
        }
        Some(r)
    }

    /// The timeout pass for UMA's internal zones (zones, kegs, offpage slab
    /// headers, buckets, per-thread caches): they cache nothing in buckets,
    /// so their items go straight back to their kegs, and this frees the
    /// kegs' free slabs (above their reserves) to the page source. They
    /// run no callbacks of the application, so this pass may run in any
    /// thread that holds no UMA lock (kmem runs it from its size-class
    /// zones' slow-path hook). Takes no zone-list lock; returns at once if
    /// a reclaim or a timeout pass is running. Returns the slabs freed.
    pub fn timeout_internal(&self) -> usize {
        let Some(_busy) = self.reclaiming.try_lock() else {
            return 0;
        };
        self.drain_internal_kegs()
    }

    fn drain_internal_kegs(&self) -> usize {
        (0..NINTERNAL)
            .filter_map(|i| self.internal(i).keg())
            .map(|k| k.drain())
            .sum()
    }

    /// Writes the `vmstat -z` table of every zone.
    ///
    /// The rows are read under the zone-list lock a few at a time (into a
    /// stack array) and written after it is dropped, so `w` may allocate,
    /// block (a full pipe) or take locks of its own without holding up zone
    /// creation, destruction and reclaims in other threads. Zones created or
    /// destroyed meanwhile may be missed or listed twice.
    pub fn write_vmstat(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        const CHUNK: usize = 16;
        crate::stats::write_header(w)?;
        let mut done = 0;
        loop {
            let mut rows: [Option<crate::ZoneStats>; CHUNK] = [None; CHUNK];
            let mut n = 0;
            {
                let l = self.lock_list();
                let mut z = l.head;
                let mut i = 0;
                while !z.is_null() && n < CHUNK {
                    // SAFETY: list lock held; listed zones are alive.
                    unsafe {
                        if i >= done {
                            rows[n] = Some((*z).stats());
                            n += 1;
                        }
                        i += 1;
                        z = (*z).list_next.get();
                    }
                }
            }
            for r in rows.iter().flatten() {
                crate::stats::write_row(w, r)?;
            }
            if n < CHUNK {
                return Ok(());
            }
            done += n;
        }
    }

    /// Checks every internal zone's structure. Test aid.
    pub fn check_internal(&self) {
        for i in 0..NINTERNAL {
            if let Some(k) = self.internal(i).keg() {
                k.check_invariants();
            }
        }
    }
}

/// What [`Uma::reclaim_plain`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlainReclaim {
    /// Managed zones reclaimed.
    pub reclaimed: usize,
    /// Managed zones left alone: their reclaim would run application
    /// callbacks.
    pub skipped: usize,
}

/// Extra tries [`Uma::reclaim_plain`] gives a busy lock (each after a
/// yield): enough to outlast a statistics walk or a zone creation, bounded
/// so that a lock held for good (by the caller itself) costs little. None
/// under loom, whose models would branch on every try.
const PLAIN_LOCK_TRIES: usize = if cfg!(loom) { 0 } else { 64 };

fn try_lock_for<T>(m: &Mutex<T>, tries: usize) -> Option<MutexGuard<'_, T>> {
    for _ in 0..tries {
        if let Some(g) = m.try_lock() {
            return Some(g);
        }
        crate::sync::spin_wait();
    }
    m.try_lock()
}

#[cfg(not(loom))]
impl Uma {
    /// The next instance on the process's list (null at the end).
    pub(crate) fn next_instance(&self) -> *mut Uma {
        self.next_instance.load(crate::sync::Ordering::Acquire)
    }

    /// Sets the link to the next instance (before publication).
    pub(crate) fn set_next_instance(&self, next: *mut Uma) {
        self.next_instance
            .store(next, crate::sync::Ordering::Relaxed);
    }

    /// Fork prepare: the reclaim lock and the zone-list lock.
    pub(crate) fn fork_lock_lists(&self) {
        self.reclaiming.force_lock();
        self.list.force_lock();
        // (Empty: only a holder of the list pushes there, and lists what
        // it pushed before letting the list go.)
        debug_assert!(self.pending.load(crate::sync::Ordering::Relaxed).is_null());
    }

    /// Undoes [`fork_lock_lists`](Self::fork_lock_lists).
    ///
    /// # Safety
    ///
    /// `fork_lock_lists` was called by this thread (in a child: by the
    /// thread that forked) and not yet undone.
    pub(crate) unsafe fn fork_unlock_lists(&self) {
        // SAFETY: the caller's promise.
        unsafe {
            self.list.force_unlock();
            self.reclaiming.force_unlock();
        }
    }

    /// Calls `f` on every zone, for a holder of the list lock through
    /// [`fork_lock_lists`](Self::fork_lock_lists).
    ///
    /// # Safety
    ///
    /// The calling thread holds the list lock through `fork_lock_lists`.
    pub(crate) unsafe fn fork_each_zone(&self, mut f: impl FnMut(&Zone)) {
        // SAFETY: the list lock is held (caller's promise).
        let mut z = unsafe { (*self.list.data_ptr()).head };
        while !z.is_null() {
            // SAFETY: list lock held; listed zones are alive.
            unsafe {
                f(&*z);
                z = (*z).list_next.get();
            }
        }
    }
}
