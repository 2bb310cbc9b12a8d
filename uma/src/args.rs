//! The arguments of a new zone: [`ZoneArgs`] (FreeBSD `uma_zcreate`'s)
//! and [`CacheArgs`] (`uma_zcache_create`'s), for
//! [`Uma::create_zone`](crate::Uma::create_zone) and
//! [`Uma::create_cache`](crate::Uma::create_cache).

use core::fmt;

use crate::slab::MAX_IPERS;
use crate::source::SlabSource;
use crate::{Ctor, Dtor, Fini, Import, Init, Release, ZoneFlags};

/// Callbacks and options of a new zone (FreeBSD `uma_zcreate` arguments).
#[derive(Clone, Copy)]
pub struct ZoneArgs {
    /// Name shown in statistics.
    pub name: &'static str,
    /// Item size in bytes.
    pub size: usize,
    /// Item alignment (a power of two up to a page; default 8).
    pub align: usize,
    /// Runs on every allocation; `false` fails it.
    pub ctor: Option<Ctor>,
    /// Runs on every free.
    pub dtor: Option<Dtor>,
    /// Keg init: once per item when its slab is created; `false` fails it.
    pub init: Option<Init>,
    /// Keg fini: once per item when its slab is freed.
    pub fini: Option<Fini>,
    /// Passed to ctor/dtor (and import/release of cache-only zones).
    pub arg: usize,
    /// Zone flags.
    pub flags: ZoneFlags,
    /// Caps items per slab (tiny test configurations; default 256).
    pub max_ipers: usize,
    /// Fixes the bucket size (entries; 0 disables buckets), or `None` for
    /// UMA's adaptive choice.
    pub bucket_size: Option<usize>,
    /// Page source for the keg (default: the instance's source).
    pub source: Option<&'static dyn SlabSource>,
}

impl fmt::Debug for ZoneArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZoneArgs")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ZoneArgs {
    /// Arguments for a plain zone of `size`-byte items.
    pub const fn new(name: &'static str, size: usize) -> Self {
        ZoneArgs {
            name,
            size,
            align: 8,
            ctor: None,
            dtor: None,
            init: None,
            fini: None,
            arg: 0,
            flags: ZoneFlags::NONE,
            max_ipers: MAX_IPERS,
            bucket_size: None,
            source: None,
        }
    }
    /// Sets the constructor.
    pub const fn ctor(mut self, f: Ctor) -> Self {
        self.ctor = Some(f);
        self
    }
    /// Sets the destructor.
    pub const fn dtor(mut self, f: Dtor) -> Self {
        self.dtor = Some(f);
        self
    }
    /// Sets the keg init.
    pub const fn init(mut self, f: Init) -> Self {
        self.init = Some(f);
        self
    }
    /// Sets the keg fini.
    pub const fn fini(mut self, f: Fini) -> Self {
        self.fini = Some(f);
        self
    }
    /// Sets the callback argument.
    pub const fn arg(mut self, a: usize) -> Self {
        self.arg = a;
        self
    }
    /// Sets the alignment.
    pub const fn align(mut self, a: usize) -> Self {
        self.align = a;
        self
    }
    /// Sets the flags.
    pub const fn flags(mut self, f: ZoneFlags) -> Self {
        self.flags = f;
        self
    }
    /// Caps items per slab.
    pub const fn max_ipers(mut self, n: usize) -> Self {
        self.max_ipers = n;
        self
    }
    /// Fixes the bucket size.
    pub const fn bucket_size(mut self, n: usize) -> Self {
        self.bucket_size = Some(n);
        self
    }
    /// Sets the page source.
    pub const fn source(mut self, s: &'static dyn SlabSource) -> Self {
        self.source = Some(s);
        self
    }
}

/// Arguments of a cache-only zone (FreeBSD `uma_zcache_create`): items come
/// from `import` and go back through `release`; they are opaque non-zero
/// words (addresses or integers, as vmem quantum caches use them), zero is
/// not cacheable. This is a kmem hook.
#[derive(Clone, Copy, Debug)]
pub struct CacheArgs {
    /// Name shown in statistics.
    pub name: &'static str,
    /// Nominal item size (statistics, bucket size choice).
    pub size: usize,
    /// Fills a slice with up to `len` items; returns how many.
    pub import: Import,
    /// Takes items back.
    pub release: Release,
    /// Passed to import/release/ctor/dtor.
    pub arg: usize,
    /// Optional constructor/destructor.
    pub ctor: Option<Ctor>,
    /// Optional destructor.
    pub dtor: Option<Dtor>,
    /// Zone flags (NOBUCKET, UNMANAGED, MAXBUCKET apply).
    pub flags: ZoneFlags,
    /// Fixes the bucket size.
    pub bucket_size: Option<usize>,
}
