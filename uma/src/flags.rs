//! Allocation flags (FreeBSD `M_*`) and zone creation flags (`UMA_ZONE_*`).

use core::fmt;
use core::ops::BitOr;

/// Flags of one allocation request (FreeBSD `M_WAITOK`, `M_NOWAIT`, ...).
///
/// They are passed through to the keg's [`SlabSource`](crate::SlabSource)
/// when the request needs a new slab.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u32);

impl Flags {
    /// No flags: the same as `NOWAIT`.
    pub const NONE: Flags = Flags(0);
    /// Fail instead of sleeping (the default when `WAITOK` is absent).
    pub const NOWAIT: Flags = Flags(1 << 0);
    /// May sleep (limit, page source); never returns `None` for lack of
    /// memory: at the limit it sleeps until items come back, and when the
    /// page source fails it reclaims, backs off and retries (see
    /// [`Zone::alloc`](crate::Zone::alloc)).
    pub const WAITOK: Flags = Flags(1 << 1);
    /// Zero the item after the constructor ran.
    pub const ZERO: Flags = Flags(1 << 2);
    /// May take the keg's reserved items (`zone_reserve`).
    pub const USE_RESERVE: Flags = Flags(1 << 3);
    /// Never ask the page source for a new slab: only existing free items.
    pub const NOVM: Flags = Flags(1 << 4);

    /// Raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
    /// True when every bit of `other` is set in `self`.
    #[inline(always)]
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    /// `self` without the bits of `other`.
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
    /// `self` with the bits of `other`.
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    /// The request may sleep.
    pub const fn may_sleep(self) -> bool {
        self.contains(Flags::WAITOK) && !self.contains(Flags::NOWAIT)
    }
    /// The same request made never to sleep.
    pub const fn nowait(self) -> Flags {
        Flags((self.0 & !Flags::WAITOK.0) | Flags::NOWAIT.0)
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Flags::NOWAIT, "NOWAIT"),
            (Flags::WAITOK, "WAITOK"),
            (Flags::ZERO, "ZERO"),
            (Flags::USE_RESERVE, "USE_RESERVE"),
            (Flags::NOVM, "NOVM"),
        ];
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("0")?;
        }
        Ok(())
    }
}

/// Zone creation flags (FreeBSD `UMA_ZONE_*`).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct ZoneFlags(u32);

impl ZoneFlags {
    /// No flags.
    pub const NONE: ZoneFlags = ZoneFlags(0);
    /// Slabs are never given back to the page source (`UMA_ZONE_NOFREE`).
    pub const NOFREE: ZoneFlags = ZoneFlags(1 << 0);
    /// Slab headers live off the slab, found through the keg hash
    /// (`UMA_ZONE_OFFPAGE`).
    pub const OFFPAGE: ZoneFlags = ZoneFlags(1 << 1);
    /// No buckets and no per-thread caches: every request goes to the keg
    /// (`UMA_ZONE_NOBUCKET`).
    pub const NOBUCKET: ZoneFlags = ZoneFlags(1 << 2);
    /// Caches are not trimmed by working-set trimming nor by reclaim of all
    /// zones; only an explicit reclaim of this zone or destroy drains them
    /// (`UMA_ZONE_UNMANAGED`).
    pub const UNMANAGED: ZoneFlags = ZoneFlags(1 << 3);
    /// Start with the largest bucket size (`UMA_ZONE_MAXBUCKET`).
    pub const MAXBUCKET: ZoneFlags = ZoneFlags(1 << 4);
    /// A zone the page allocator itself depends on (`UMA_ZONE_VM`, e.g.
    /// kmem's btag zone): UMA's own allocations on its behalf (buckets,
    /// per-thread cache registration) are made with [`Flags::NOVM`], so they
    /// never call a page source. That keeps the promise of a `NOVM` caller
    /// (the kernel arena, holding its lock) that nothing below it
    /// recurses into the arena.
    pub const VM: ZoneFlags = ZoneFlags(1 << 5);
    /// Slow start, not in FreeBSD (a kernel zone lives as long as the
    /// machine; a process may live for a millisecond): the bucket size
    /// starts at a slab's items and doubles at each refill of a thread's
    /// cache (a bucket from the keg or the zone, or a full free bucket
    /// traded) until it reaches UMA's own choice (`bucket_select`), from where
    /// it adapts as without the flag. A process that makes a few
    /// allocations of a size then touches a page of that class, not the
    /// four that a first 16 KiB bucket fill takes. kmem's size classes use
    /// it. No effect with `MAXBUCKET` or a fixed bucket size.
    pub const RAMP: ZoneFlags = ZoneFlags(1 << 6);
    /// Internal: a zone of UMA's own bootstrap (no buckets, inline headers,
    /// boot pages first).
    pub(crate) const INTERNAL: ZoneFlags = ZoneFlags(1 << 16);
    /// Internal: a secondary zone (shares its master's keg).
    pub(crate) const SECONDARY: ZoneFlags = ZoneFlags(1 << 17);
    /// Internal: a cache-only zone (import/release callbacks, no keg).
    pub(crate) const CACHE: ZoneFlags = ZoneFlags(1 << 18);

    /// True when every bit of `other` is set in `self`.
    pub const fn contains(self, other: ZoneFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// `self` with the bits of `other`.
    pub const fn with(self, other: ZoneFlags) -> ZoneFlags {
        ZoneFlags(self.0 | other.0)
    }
}

impl BitOr for ZoneFlags {
    type Output = ZoneFlags;
    fn bitor(self, rhs: ZoneFlags) -> ZoneFlags {
        ZoneFlags(self.0 | rhs.0)
    }
}

/// How hard [`Zone::reclaim`](crate::Zone::reclaim) and
/// [`Uma::reclaim`](crate::Uma::reclaim) work (FreeBSD `UMA_RECLAIM_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reclaim {
    /// Trim the zone bucket cache to the working-set estimate, then free the
    /// keg's free slabs above the reserve.
    Trim,
    /// Free the whole zone bucket cache, shrink the bucket size, then free
    /// the keg's free slabs above the reserve.
    Drain,
    /// Also flush every per-thread cache of the zone first.
    DrainCpu,
}

impl Flags {
    /// Flags from raw bits (unknown bits are kept and ignored).
    pub const fn from_bits(bits: u32) -> Flags {
        Flags(bits)
    }
}
