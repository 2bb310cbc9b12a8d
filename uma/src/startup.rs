//! The bootstrap of a UMA instance (FreeBSD `uma_startup1`,
//! `uma_startup2`): its internal zones ("UMA Zones", "UMA Kegs", "UMA
//! Slabs", "UMA Caches" and the bucket zones) and the process's default
//! instance ([`global`]). What an instance does once built is in
//! `instance`.
//!
//! [`Uma::bootstrap`] takes one first chunk of pages from a page source and
//! builds everything else from it, with no global allocator: the `Uma`
//! struct and the internal zones' own `Zone`/`Keg` structs sit at the end
//! of the chunk, and its first pages are the boot slabs of the internal
//! kegs (never given back). From then on zones and kegs are items of "UMA
//! Zones"/"UMA Kegs", off-page slab headers items of "UMA Slabs", buckets
//! items of the bucket zones and per-thread caches items of "UMA Caches".

use core::mem::size_of;
use core::ptr::{self, NonNull};

use crate::bucket::{
    bucket_zone_size, zone_index_for, Bucket, OwnedBucket, BUCKET_ENTRIES, NBUCKETZONES,
};
#[cfg(not(loom))]
use crate::debug;
use crate::instance::{Uma, ZoneList};
use crate::keg::Keg;
use crate::pcpu::Cache;
use crate::slab::{MAX_IPERS, SLAB_HDR};
use crate::source::{SlabSource, PAGE_SIZE};
use crate::sync::Mutex;
use crate::zone::{Zone, ZoneParts};
use crate::{Flags, ZoneFlags};

#[cfg(not(loom))]
pub(crate) use crate::pcpu::tls::NO_SLOT;
/// Under loom there is no TLS table: every zone is uncached by TLS.
#[cfg(loom)]
pub(crate) const NO_SLOT: usize = 512;

/// Indices of the internal zones in `Uma::zones`/`Uma::kegs`.
const Z_ZONES: usize = 0;
const Z_KEGS: usize = 1;
const Z_SLABS: usize = 2;
const Z_CACHES: usize = 3;
const Z_BUCKETS: usize = 4;
/// Number of internal zones.
pub(crate) const NINTERNAL: usize = Z_BUCKETS + NBUCKETZONES;

/// Pages of the first chunk used as boot slabs.
const BOOT_PAGES: usize = 16;
/// Alignment of the first chunk (boot slabs are naturally aligned in it).
const BOOT_ALIGN: usize = BOOT_PAGES * PAGE_SIZE;

/// The boot pages not yet taken (under `Uma::boot`).
pub(crate) struct BootPages {
    next: usize,
    end: usize,
}

impl Uma {
    /// Builds an instance from one first chunk of pages of `source`, which
    /// also backs every internal zone afterwards. Never uses the global
    /// allocator. `None` if the source cannot give the first chunk.
    pub fn bootstrap(source: &'static dyn SlabSource) -> Option<&'static Uma> {
        let uma_bytes = (size_of::<Uma>() + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
        let total = BOOT_PAGES * PAGE_SIZE + uma_bytes;
        let chunk = source.alloc(total, BOOT_ALIGN, Flags::NOWAIT.with(Flags::ZERO))?;
        let base = chunk.as_ptr() as usize;
        let up: *mut Uma = (base + BOOT_PAGES * PAGE_SIZE) as *mut Uma;
        // SAFETY: `up` points at uma_bytes of fresh writable memory of ours,
        // page aligned; every field is written before any is read.
        unsafe {
            ptr::addr_of_mut!((*up).source).write(source);
            ptr::addr_of_mut!((*up).ncpu).write(ncpu());
            ptr::addr_of_mut!((*up).boot).write(Mutex::new(BootPages {
                next: base,
                end: base + BOOT_PAGES * PAGE_SIZE,
            }));
            ptr::addr_of_mut!((*up).list).write(Mutex::new(ZoneList {
                head: ptr::null(),
                tail: ptr::null(),
                count: 0,
            }));
            ptr::addr_of_mut!((*up).pending).write(crate::sync::AtomicPtr::new(ptr::null_mut()));
            ptr::addr_of_mut!((*up).reclaiming).write(Mutex::new(()));
            #[cfg(loom)]
            ptr::addr_of_mut!((*up).registry).write(Mutex::new(()));
            #[cfg(not(loom))]
            ptr::addr_of_mut!((*up).next_instance)
                .write(crate::sync::AtomicPtr::new(ptr::null_mut()));
            let mut names: [(&'static str, usize, usize); NINTERNAL] = [("", 0, 0); NINTERNAL];
            names[Z_ZONES] = ("UMA Zones", size_of::<Zone>(), 16);
            names[Z_KEGS] = ("UMA Kegs", size_of::<Keg>(), 16);
            names[Z_SLABS] = ("UMA Slabs", SLAB_HDR, 16);
            names[Z_CACHES] = ("UMA Caches", size_of::<Cache>(), 64);
            for (i, n) in BUCKET_NAMES.iter().enumerate() {
                names[Z_BUCKETS + i] = (n, bucket_zone_size(i), 16);
            }
            for (i, &(name, size, align)) in names.iter().enumerate() {
                let kp = ptr::addr_of_mut!((*up).kegs[i]).cast::<Keg>();
                let keg = Keg::new(
                    name,
                    size,
                    align,
                    ZoneFlags::INTERNAL,
                    None,
                    None,
                    MAX_IPERS,
                    source,
                    up,
                )?;
                kp.write(keg);
                let zp = ptr::addr_of_mut!((*up).zones[i]).cast::<Zone>();
                zp.write(Zone::new(ZoneParts {
                    name,
                    size,
                    flags: ZoneFlags::INTERNAL,
                    ctor: None,
                    dtor: None,
                    zinit: None,
                    zfini: None,
                    arg: 0,
                    import: None,
                    release: None,
                    keg: kp,
                    uma: up,
                    slot: NO_SLOT,
                    bucket_size: None,
                }));
            }
            let uma: &'static Uma = &*up;
            for i in 0..NINTERNAL {
                uma.link_zone(uma.zones[i].assume_init_ref());
            }
            // Complete: from now on fork handlers lock it.
            #[cfg(not(loom))]
            crate::fork::register_instance(uma);
            Some(uma)
        }
    }

    /// Takes `size` bytes (naturally aligned) of boot pages, if left.
    pub(crate) fn boot_take(&self, size: usize) -> Option<NonNull<u8>> {
        let mut b = self.boot.lock();
        let start = (b.next + size - 1) & !(size - 1);
        if start.checked_add(size)? > b.end {
            return None;
        }
        b.next = start + size;
        NonNull::new(start as *mut u8)
    }

    pub(crate) fn internal(&self, i: usize) -> &Zone {
        // SAFETY: every internal zone was written in bootstrap.
        unsafe { self.zones[i].assume_init_ref() }
    }
    pub(crate) fn zones_zone(&self) -> &Zone {
        self.internal(Z_ZONES)
    }
    pub(crate) fn kegs_zone(&self) -> &Zone {
        self.internal(Z_KEGS)
    }
    pub(crate) fn slabs_zone(&self) -> &Zone {
        self.internal(Z_SLABS)
    }
    pub(crate) fn caches_zone(&self) -> &Zone {
        self.internal(Z_CACHES)
    }

    /// An empty bucket of `entries` usable slots (`None` on failure).
    pub(crate) fn bucket_alloc(&self, entries: usize, flags: Flags) -> Option<OwnedBucket> {
        let i = zone_index_for(entries)?;
        let p = self
            .internal(Z_BUCKETS + i)
            .internal_alloc(flags.nowait().without(Flags::ZERO))?;
        let b: NonNull<Bucket> = p.cast();
        // SAFETY: an unused item of bucket zone i, sized for its entries
        // (entries fit); set up here, it is the caller's alone.
        unsafe {
            Bucket::init(b.as_ptr(), entries, i);
            Some(OwnedBucket::from_raw(b))
        }
    }

    /// Frees a bucket to its bucket zone.
    pub(crate) fn bucket_free(&self, b: OwnedBucket) {
        let z = self.internal(Z_BUCKETS + b.zidx());
        // SAFETY: every bucket comes from bucket_alloc (an item of the bucket
        // zone it names); the handle was its one owner, now given up.
        unsafe { z.internal_free(b.into_raw().cast()) };
    }
}

const BUCKET_NAMES: [&str; NBUCKETZONES] = [
    "2 Bucket",
    "4 Bucket",
    "8 Bucket",
    "16 Bucket",
    "32 Bucket",
    "64 Bucket",
    "128 Bucket",
    "256 Bucket",
];
const _: () = assert!(BUCKET_ENTRIES.len() == BUCKET_NAMES.len());

/// Under loom: one CPU, so the limit arithmetic of the tiny models only
/// depends on the caches they register.
#[cfg(loom)]
fn ncpu() -> usize {
    1
}

#[cfg(not(loom))]
fn ncpu() -> usize {
    online_cpus()
}

/// The number of online CPUs (at least 1), read once per process and
/// kept: `sysconf(_SC_NPROCESSORS_ONLN)` reads a sysfs file, 6-8 us a
/// call here, and a process's start under kmem's C library made two
/// (UMA's bootstrap and kmem's boundary-tag reserve).
pub fn online_cpus() -> usize {
    use core::sync::atomic::{AtomicUsize, Ordering};
    static ONLINE: AtomicUsize = AtomicUsize::new(0);
    let n = ONLINE.load(Ordering::Relaxed);
    if n != 0 {
        return n;
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    ONLINE.store(n, Ordering::Relaxed);
    n
}

/// The process's default instance over [`MmapSource`](crate::MmapSource),
/// bootstrapped on first use.
#[cfg(not(loom))]
pub fn global() -> &'static Uma {
    let g = GLOBAL.load(crate::sync::Ordering::Acquire);
    if !g.is_null() {
        // SAFETY: published once, after the bootstrap; never freed.
        return unsafe { &*g };
    }
    global_slow()
}

/// The default instance, once built.
#[cfg(not(loom))]
static GLOBAL: crate::sync::AtomicPtr<Uma> = crate::sync::AtomicPtr::new(ptr::null_mut());
/// Serializes the default instance's bootstrap. A lock rather than a
/// `OnceLock` so that the fork prepare handler can hold it (a bootstrap
/// caught running by a fork would block the child forever otherwise).
#[cfg(not(loom))]
static GLOBAL_INIT: Mutex<()> = Mutex::new(());

#[cfg(not(loom))]
#[cold]
#[inline(never)]
fn global_slow() -> &'static Uma {
    let _g = GLOBAL_INIT.lock();
    let g = GLOBAL.load(crate::sync::Ordering::Acquire);
    if !g.is_null() {
        // SAFETY: as in `global`.
        return unsafe { &*g };
    }
    match Uma::bootstrap(&crate::source::MMAP_SOURCE) {
        Some(u) => {
            GLOBAL.store(u as *const Uma as *mut Uma, crate::sync::Ordering::Release);
            u
        }
        None => debug::fatal(format_args!(
            "uma: bootstrap failed: no first chunk of pages"
        )),
    }
}

// ---- fork hooks (see `crate::fork`)

/// Fork prepare: the default instance's bootstrap lock (first of all).
#[cfg(not(loom))]
pub(crate) fn fork_lock_global() {
    GLOBAL_INIT.force_lock();
}

/// Undoes [`fork_lock_global`].
///
/// # Safety
///
/// [`fork_lock_global`] was called by this thread (in a child: by the
/// thread that forked) and not yet undone.
#[cfg(not(loom))]
pub(crate) unsafe fn fork_unlock_global() {
    // SAFETY: the caller's promise.
    unsafe { GLOBAL_INIT.force_unlock() };
}

#[cfg(not(loom))]
impl Uma {
    /// Fork prepare: the boot-pages lock (a leaf).
    pub(crate) fn fork_lock_boot(&self) {
        self.boot.force_lock();
    }

    /// Undoes [`fork_lock_boot`](Self::fork_lock_boot).
    ///
    /// # Safety
    ///
    /// As [`fork_unlock_lists`](Self::fork_unlock_lists).
    pub(crate) unsafe fn fork_unlock_boot(&self) {
        // SAFETY: the caller's promise.
        unsafe { self.boot.force_unlock() };
    }
}
