//! # UMA: FreeBSD's zone/keg slab allocator in userspace Rust
//!
//! A port of the Universal Memory Allocator of FreeBSD (`sys/vm/uma_core.c`,
//! `uma_int.h`, `uma.h`; Jeff Roberson 2002, per-CPU buckets after
//! Bonwick & Adams' magazines, 2001). The facts and the design carry over;
//! the code is new. The crate stands alone (an mmap page source ships with
//! it); `kmem` plugs it into the kernel arena through the hooks below.
//!
//! ## Example
//!
//! A typed zone with a constructor and a destructor, then `vmstat -z`:
//!
//! ```
//! use core::ptr::NonNull;
//! use uma::{Flags, ZoneArgs};
//!
//! /// What the zone holds: one item is one `Conn`.
//! struct Conn {
//!     id: u64,
//!     open: bool,
//! }
//!
//! // The constructor runs on every allocation, the destructor on every free
//! // (FreeBSD `uma_zcreate`'s ctor/dtor); `init`/`fini` would run once per
//! // item when its slab is created and freed.
//! fn conn_ctor(item: NonNull<u8>, _size: usize, _arg: usize, _flags: Flags) -> bool {
//!     // SAFETY: UMA passes a whole item, sized and aligned for a `Conn`.
//!     unsafe { item.cast::<Conn>().write(Conn { id: 0, open: true }) };
//!     true
//! }
//! fn conn_dtor(item: NonNull<u8>, _size: usize, _arg: usize) {
//!     // SAFETY: the item holds the `Conn` the constructor wrote.
//!     unsafe { (*item.cast::<Conn>().as_ptr()).open = false };
//! }
//!
//! fn main() {
//!     let uma = uma::global(); // the process-wide instance, over mmap
//!     let args = ZoneArgs::new("conn", size_of::<Conn>())
//!         .align(align_of::<Conn>())
//!         .ctor(conn_ctor)
//!         .dtor(conn_dtor);
//!     let conns = uma.create_zone(&args).expect("zone");
//!
//!     let item = conns.alloc(Flags::WAITOK).expect("item");
//!     let conn = item.cast::<Conn>();
//!     // SAFETY: a live item of `conns`, constructed by conn_ctor; freed once.
//!     unsafe {
//!         assert!((*conn.as_ptr()).open);
//!         (*conn.as_ptr()).id = 7;
//!         conns.free(item);
//!     }
//!
//!     // vmstat -z: ITEM SIZE LIMIT USED FREE REQ FAIL SLEEP
//!     let mut table = String::new();
//!     uma.write_vmstat(&mut table).unwrap();
//!     assert!(table.contains("conn:"));
//!     print!("{table}");
//! }
//! ```
//!
//! ## Terminology
//!
//! - **host page**: a 4 KiB page of the operating system ([`PAGE_SIZE`]).
//! - **slab**: `2^k` host pages, naturally aligned (its size is its
//!   alignment), cut into equal **items** plus a slab header (inline at the
//!   end of the slab, or off-page in the "UMA Slabs" zone).
//! - **item**: what a zone hands out; `rsize` bytes apart in a slab.
//! - **keg**: the slabs of one item layout, with its free/partial/full slab
//!   lists, page source and reserve. One or more zones share a keg.
//! - **zone**: the typed front end: ctor/dtor, limit, buckets, per-thread
//!   caches, statistics. **bucket**: an array of free items.
//!
//! ## Allocation order
//!
//! 1. the calling thread's **per-thread cache** (alloc/free bucket pair;
//!    no lock, no atomic read-modify-write; frees go into the alloc bucket,
//!    so the next allocation reuses the item freed last),
//! 2. the zone's **bucket cache** of full buckets (zone lock),
//! 3. a **keg slab**: a bucket is filled from partial, then free slabs
//!    (keg lock), honouring the reserve,
//! 4. the keg's **page source** ([`SlabSource`]) for a new slab, called with
//!    no UMA lock held.
//!
//! ## Limits and sleeping
//!
//! - A zone limit ([`Zone::set_max`]) counts items allocated *and* cached.
//!   Per-thread caches hold at most half of it together, however many
//!   threads there are: buckets are capped at
//!   `limit / 2 / (2 * max(CPUs, registered caches))` items, and the caches
//!   are clamped whenever a newly registered one lowers the cap (at a cap of
//!   0 threads bypass their caches). The bucket cache holds at most half.
//! - A [`Flags::WAITOK`] allocation at the limit takes back what every
//!   thread's cache and the bucket cache hold before it sleeps, so items
//!   cached elsewhere never keep it asleep; frees and cache refills check
//!   for such sleepers inside the cache's critical section (`pcpu`).
//! - A `WAITOK` allocation whose page source fails reclaims the instance
//!   (`Trim`, `Drain`, then `DrainCpu`), sleeps with a 1 to 100 ms backoff
//!   (woken early by items or slabs freed to its keg) and retries: it never
//!   returns `None` for lack of memory. `NOWAIT` fails at once.
//! - The bucket size adapts: each contended zone lock acquisition grows it
//!   by one up to the cap, `Drain`/`DrainCpu` reclaims shrink it.
//! - Departure from FreeBSD: a [`ZoneFlags::RAMP`] zone starts its
//!   buckets at a slab's items and doubles them at each refill of a
//!   cache until `bucket_select`'s size (a process may be short-lived; a
//!   kernel zone is not). kmem's size classes use it.
//! - Departure from FreeBSD: besides full buckets, a zone keeps up to 32
//!   empty ones (the empty list of Bonwick and Adams' magazine depot). A
//!   thread trades its dry alloc bucket for a full one, and its full free
//!   bucket for an empty one, in one zone-lock hold; FreeBSD frees and
//!   allocates a bucket each time, cheap there because its bucket zones
//!   have per-CPU caches, which ours (internal zones) do not.
//!   [`ZoneStats::empty_buckets`] counts them; reclaims give them back.
//!
//! ## Where things are
//!
//! One module per noun; the path names the room.
//!
//! | module | holds |
//! |---|---|
//! | `startup` | the boot: [`Uma::bootstrap`], the internal zones ("UMA Zones", "UMA Kegs", "UMA Slabs", "UMA Caches", the bucket zones), [`global`] |
//! | `instance` | [`Uma`], the instance API: zone creation and [`Uma::destroy`], the zone list, [`Uma::reclaim`], [`Uma::timeout`], [`Uma::write_vmstat`], an instance's fork hooks |
//! | `args` | [`ZoneArgs`], [`CacheArgs`] |
//! | `zone` | [`Zone`] and its fast paths ([`Zone::alloc`], [`Zone::free`]: one generic path for the TLS front door and the loom models' explicit caches), the slow road to the keg, statistics, the invariant walker |
//! | `zone::trade` | the bucket trades at the zone lock, the bucket cache and the empty-bucket depot |
//! | `zone::limit` | the zone limit, its sleepers, the per-thread cap |
//! | `zone::reclaim` | the working-set estimate, trims and drains |
//! | `bucket` | `Bucket`, the owned `BucketList` every bucket list is, bucket sizes |
//! | `pcpu` | the per-thread `Cache` and its drain protocol (a state table), `ThreadCache` (how an operation reaches its cache) |
//! | `pcpu::registry` | each zone's list of caches: registration, clamps, drains, exit flushes, peeks |
//! | `pcpu::tls` | the thread-local table of caches, [`FastSlot`], thread exit |
//! | `keg`, `slab`, `reserve` | kegs, slabs and their layout, the reserve's rules |
//! | [`source`], [`stats`], [`debug`], [`fork`], `flags`, `sync` | page sources, statistics, reports and INVARIANTS, fork safety, flags, the one door to atomics (loom) |
//!
//! ## FreeBSD names and ours
//!
//! | FreeBSD | here |
//! |---|---|
//! | `uma_zcreate`, `uma_zsecond_create`, `uma_zcache_create` | [`Uma::create_zone`], [`Uma::create_secondary`], [`Uma::create_cache`] |
//! | `uma_zalloc_arg`, `uma_zfree_arg` | [`Zone::alloc`], [`Zone::free`] |
//! | `uma_zdestroy` | [`Uma::destroy`] |
//! | `uma_zone_reserve`, `uma_prealloc`, `uma_zone_set_max` | [`Zone::reserve`], [`Zone::prealloc`], [`Zone::set_max`] |
//! | `uma_zone_set_allocf`/`freef` | [`Zone::set_source`] with a [`SlabSource`] |
//! | `uma_reclaim`, `uma_zone_reclaim`, `UMA_RECLAIM_*` | [`Uma::reclaim`], [`Zone::reclaim`], [`Reclaim`] |
//! | `uma_timeout` (working-set update and trim) | [`Uma::timeout`] |
//! | `M_WAITOK`, `M_NOWAIT`, `M_ZERO`, `M_USE_RESERVE`, `M_NOVM` | [`Flags`] |
//! | `UMA_ZONE_NOFREE`, `OFFPAGE`, `NOBUCKET`, `UNMANAGED`, `MAXBUCKET` | [`ZoneFlags`] |
//! | `struct uma_keg`, `keg_drain`, `zone_import`, `zone_release` | `keg::Keg`, `Keg::drain`, `Keg::import`, `Keg::release` |
//! | `struct uma_slab`, `keg_layout` | `slab::Slab`, `slab::compute_layout` |
//! | `struct uma_bucket`, `bucket_zones[]`, `bucket_select` | `bucket::Bucket`, `bucket::BucketList`, `bucket::BUCKET_ENTRIES`, `bucket::bucket_select` |
//! | `cache_alloc_retry`, `cache_free`, `zone_fetch_bucket`, `zone_put_bucket`, `zone_alloc_bucket` | `zone::trade` |
//! | `zone_alloc_limit`, `zone_free_limit` | `zone::limit` |
//! | `bucket_cache_reclaim`, `zone_timeout` | `zone::reclaim` |
//! | `struct uma_cache`, `critical_enter` | `pcpu::Cache` and its drain protocol (see `pcpu`) |
//! | `uma_startup`, "UMA Zones", "UMA Kegs", "UMA Slabs" | [`Uma::bootstrap`] and the internal zones (`startup`) |
//! | `INVARIANTS` (`uma_dbg_alloc/free`, `trash_*`) | feature `invariants`, [`debug`] |
//! | `sysctl vm.zone_stats` / `vmstat -z` | [`Zone::stats`], [`Uma::write_vmstat`] |
//!
//! ## kmem hooks
//!
//! - [`SlabSource`]: the alloc/free pair a keg takes slabs from (with its
//!   written contract: alignment, sleeping, recursion, locks); each slab
//!   records the source that produced it and is freed through it.
//! - [`Uma::bootstrap`]: an instance over kmem's kernel arena, built from
//!   one first chunk with no global allocator.
//! - [`Uma::create_cache`]: cache-only zones over import/release callbacks
//!   (vmem quantum caches).
//! - [`Zone::reserve`] + [`Flags::USE_RESERVE`]`|`[`Flags::NOVM`]: the btag
//!   zone's recursion breaker.
//! - [`Uma::reclaim`] / [`Uma::timeout`]: the low-memory and periodic paths.
//! - [`debug::set_report_hook`]: where bad-input reports go.
//!
//! ## Rules the code keeps
//!
//! - UMA never allocates through the Rust global allocator: everything it
//!   needs comes from its internal zones (`tests/no_global_alloc.rs`).
//! - Locks: registry -> zone -> keg, never a page source call under any of
//!   them. Concurrency goes through `sync` (loom under `cfg(loom)`).
//! - No panic on allocation paths for bad input; internal corruption is
//!   reported and aborts (panics under loom).
//! - Fork safe: [`fork`] has the `pthread_atfork` steps (every lock of
//!   every instance, in the global lock order written there) and what a
//!   child gets.
#![deny(unsafe_op_in_unsafe_fn)]
// Under loom the TLS layer is compiled out; its helpers are reached only
// from the models.
#![cfg_attr(loom, allow(dead_code))]

mod args;
mod bucket;
pub mod debug;
mod flags;
#[cfg(not(loom))]
pub mod fork;
mod instance;
mod keg;
mod pcpu;
mod reserve;
mod slab;
pub mod source;
mod startup;
pub mod stats;
mod sync;
pub mod tls_block;
mod zone;

#[cfg(test)]
mod tests;

use core::ptr::NonNull;

pub use args::{CacheArgs, ZoneArgs};
pub use flags::{Flags, Reclaim, ZoneFlags};
pub use instance::{PlainReclaim, Uma};
pub use keg::{KegInfo, SLAB_HEADER_BYTES};
#[cfg(not(loom))]
pub use pcpu::tls::sample::{SamplePeek, MAX_CACHED};
#[cfg(not(loom))]
pub use pcpu::tls::{FastSlot, RustTls, TlsAccess, TlsDescriptor};
pub use slab::SlabLayout;
pub use source::{MmapSource, SlabSource, TestSource, MMAP_SOURCE, PAGE_SIZE};
#[cfg(not(loom))]
pub use startup::global;
pub use startup::online_cpus;
pub use stats::ZoneStats;
pub use tls_block::ZeroInit;
pub use zone::Zone;

/// Constructor: runs on every allocation with `(item, size, arg, flags)`;
/// returning `false` fails the allocation (the item goes back, no dtor).
pub type Ctor = fn(NonNull<u8>, usize, usize, Flags) -> bool;
/// Destructor: runs on every free with `(item, size, arg)`.
pub type Dtor = fn(NonNull<u8>, usize, usize);
/// Init: keg init (once per item when its slab is created) or a secondary
/// zone's zinit (when an item moves from the keg into the zone);
/// `(item, size, flags)`, `false` fails.
pub type Init = fn(NonNull<u8>, usize, Flags) -> bool;
/// Fini: the counterpart of [`Init`], `(item, size)`.
pub type Fini = fn(NonNull<u8>, usize);
/// Cache-only zone import: fill `store` with up to `store.len()` non-zero
/// items, return how many; `(arg, store, flags)`.
pub type Import = fn(usize, &mut [*mut u8], Flags) -> usize;
/// Cache-only zone release: take `items` back; `(arg, items)`.
pub type Release = fn(usize, &[*mut u8]);

/// Whether the drainer's heavy barrier of the per-thread cache protocol is
/// `membarrier(2)` (true) or the mprotect TLB-shootdown fallback (false:
/// kernel without membarrier, or before the first cache was registered).
pub fn membarrier_active() -> bool {
    sync::membarrier_active()
}
