//! Reports, and FreeBSD INVARIANTS-style debugging behind the `invariants`
//! feature: trash fill on free and verify on alloc ("memory modified after
//! free"), a per-slab debug bitset catching duplicate allocs and frees,
//! and detection of foreign, misaligned and wrong-zone pointers.
//!
//! Every report names the pointer, the zone and the slab. By default a
//! report is printed to stderr and the process aborts; a test (or kmem) can
//! install a [`set_report_hook`]: the hook is called instead and the bad
//! operation is dropped (the item is neither freed nor reused).
//!
//! Internal corruption found without the feature (a keg asked to free an
//! item twice, a misaligned slab from a source) always aborts through
//! [`fatal`]; under loom it panics so the model reports it.

use core::fmt;

use crate::sync::unmodeled::{AtomicUsize, Ordering};

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    /// The item was already free.
    DoubleFree,
    /// The pointer is in no slab of any zone of the instance.
    ForeignPointer,
    /// The pointer is an item of another zone's keg.
    WrongZone,
    /// The pointer is inside a slab of the zone but not at an item start.
    Misaligned,
    /// A free item's trash pattern changed before it was reallocated.
    ModifiedAfterFree,
    /// An item was handed out while already allocated.
    DuplicateAlloc,
}

/// A bad-input or corruption report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// What went wrong.
    pub kind: ReportKind,
    /// The pointer.
    pub ptr: usize,
    /// The zone the operation was on.
    pub zone: &'static str,
    /// The slab (its base address) the pointer fell in, 0 if none.
    pub slab: usize,
    /// For `WrongZone`: the zone the item belongs to.
    pub owner: Option<&'static str>,
    /// Byte offset: in the item for `ModifiedAfterFree`, in the slab for
    /// `Misaligned`.
    pub offset: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ReportKind::DoubleFree => "duplicate free",
            ReportKind::ForeignPointer => "free of a foreign pointer (item did not belong to zone)",
            ReportKind::WrongZone => "free to the wrong zone (item did not belong to zone)",
            ReportKind::Misaligned => "invalid free: pointer is not an item start",
            ReportKind::ModifiedAfterFree => "memory modified after free",
            ReportKind::DuplicateAlloc => "duplicate alloc",
        };
        write!(
            f,
            "uma: {} of {:#x} in zone \"{}\"",
            what, self.ptr, self.zone
        )?;
        if self.slab != 0 {
            write!(f, ", slab {:#x}", self.slab)?;
        } else {
            f.write_str(", no slab")?;
        }
        if let Some(o) = self.owner {
            write!(f, ", item belongs to zone \"{}\"", o)?;
        }
        match self.kind {
            ReportKind::ModifiedAfterFree => write!(f, ", at offset {}", self.offset),
            ReportKind::Misaligned => write!(f, ", offset {} in the slab", self.offset),
            _ => Ok(()),
        }
    }
}

static HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs (or with `None` removes) the report hook. With a hook, reports
/// call it and the bad operation is dropped; without, they abort.
pub fn set_report_hook(hook: Option<fn(&Report)>) {
    HOOK.store(hook.map_or(0, |h| h as usize), Ordering::SeqCst);
}

/// Delivers a report: to the hook, or to stderr and abort.
pub fn report(r: &Report) {
    let h = HOOK.load(Ordering::SeqCst);
    if h != 0 {
        // SAFETY: HOOK only ever holds 0 or a `fn(&Report)` stored by
        // set_report_hook.
        let f: fn(&Report) = unsafe { core::mem::transmute::<usize, fn(&Report)>(h) };
        f(r);
        return;
    }
    fatal(format_args!("{}", r));
}

struct StackBuf {
    buf: [u8; 512],
    len: usize,
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes a message to stderr without allocating (a 512-byte stack buffer;
/// longer messages are cut). Silent under loom. kmem's reports use it too.
pub fn warn(args: fmt::Arguments<'_>) {
    if cfg!(loom) {
        return; // thousands of model executions would repeat it
    }
    let mut b = StackBuf {
        buf: [0; 512],
        len: 0,
    };
    let _ = fmt::write(&mut b, args);
    // SAFETY: writes our stack buffer to fd 2.
    unsafe { libc::write(2, b.buf.as_ptr().cast(), b.len) };
}

/// Reports internal corruption and stops the process (panics under loom).
#[cold]
pub fn fatal(args: fmt::Arguments<'_>) -> ! {
    #[cfg(loom)]
    panic!("{}", args);
    #[cfg(not(loom))]
    {
        warn(format_args!("{}\n", args));
        std::process::abort();
    }
}

/// Byte pattern of freed items (FreeBSD `uma_junk`, 0xdeadc0de).
#[cfg_attr(not(feature = "invariants"), allow(dead_code))]
const TRASH: [u8; 4] = 0xdeadc0de_u32.to_le_bytes();

/// Fills an item with the trash pattern.
#[cfg_attr(not(feature = "invariants"), allow(dead_code))]
pub(crate) fn trash(item: *mut u8, size: usize) {
    for i in 0..size {
        // SAFETY: the item has `size` writable bytes.
        unsafe { *item.add(i) = TRASH[i % 4] };
    }
}

#[cfg(feature = "invariants")]
pub use invariants::is_allocated;
#[cfg(feature = "invariants")]
pub(crate) use invariants::{on_alloc, on_free, undo_alloc};

#[cfg(feature = "invariants")]
mod invariants {
    use super::*;
    use crate::keg::Keg;
    use crate::slab::Slab;
    use crate::zone::Zone;

    fn find_owner(zone: &Zone, item: *mut u8) -> Option<(&'static str, usize)> {
        let mut found = None;
        zone.uma().for_each_zone(|z| {
            if found.is_some() || core::ptr::eq(z.keg, zone.keg) {
                return;
            }
            if let Some(k) = z.keg() {
                if !k.use_hash {
                    return;
                }
                let mut g = k.state.lock();
                // SAFETY: keg lock held; hashed kegs never dereference item.
                let s = unsafe { k.slab_of(&mut g, item) };
                if !s.is_null() {
                    // SAFETY: a valid header of that keg, under its lock.
                    found = Some((z.name, unsafe { (*s).base } as usize));
                }
            }
        });
        found
    }

    /// The slab holding `item` in `k` (null if none) and its index there
    /// (`None` if `item` is not an item boundary of that slab).
    fn slab_and_index(
        k: &Keg,
        g: &mut crate::keg::KegState,
        item: *mut u8,
    ) -> (*mut Slab, Option<usize>) {
        // SAFETY: the caller holds the keg lock (`g` is its guarded state).
        let s = unsafe { k.slab_of(g, item) };
        if s.is_null() {
            return (s, None);
        }
        // SAFETY: a non-null result is a valid header of this keg.
        (s, unsafe { k.index_of(s, item) })
    }

    fn dbg_bit(s: *mut Slab, idx: usize) -> bool {
        // SAFETY: caller holds the keg lock; s valid.
        unsafe { (*s).dbg[idx / 64] & (1u64 << (idx % 64)) != 0 }
    }

    fn set_dbg(s: *mut Slab, idx: usize, on: bool) {
        // SAFETY: caller holds the keg lock; s valid.
        unsafe {
            if on {
                (*s).dbg[idx / 64] |= 1u64 << (idx % 64);
            } else {
                (*s).dbg[idx / 64] &= !(1u64 << (idx % 64));
            }
        }
    }

    fn keg(zone: &Zone) -> &Keg {
        match zone.keg() {
            Some(k) => k,
            None => crate::debug::fatal(format_args!(
                "uma: debug check on cache-only zone {}",
                zone.name
            )),
        }
    }

    /// With the `invariants` feature: what the debug bitset says of `item`
    /// in `zone`. `Some(true)`: handed out and not freed since;
    /// `Some(false)`: free (in a cache or a slab), so freeing it again is
    /// a double free; `None`: it cannot tell (a cache-only zone, an
    /// unhashed internal keg, or `item` is not an item start of the zone's
    /// keg). Takes the keg lock; never dereferences `item`.
    ///
    /// For a layer above UMA (kmem's malloc) that must tell a double free
    /// from another mistake before it calls [`Zone::free`].
    pub fn is_allocated(zone: &Zone, item: *const u8) -> Option<bool> {
        let k = zone.keg()?;
        if !k.use_hash {
            // Unhashed kegs find the header from the address itself, which
            // is only sound for real items of the keg.
            return None;
        }
        let mut g = k.state.lock();
        let (s, idx) = slab_and_index(k, &mut g, item.cast_mut());
        Some(dbg_bit(s, idx?))
    }

    /// Checks and records a free; false when it must be dropped.
    pub(crate) fn on_free(zone: &Zone, item: *mut u8) -> bool {
        let k = keg(zone);
        let mut g = k.state.lock();
        // SAFETY: keg lock held; the keg is hashed under INVARIANTS.
        let s = unsafe { k.slab_of(&mut g, item) };
        let mut r = Report {
            kind: ReportKind::DoubleFree,
            ptr: item as usize,
            zone: zone.name,
            slab: 0,
            owner: None,
            offset: 0,
        };
        if s.is_null() {
            drop(g);
            match find_owner(zone, item) {
                Some((owner, slab)) => {
                    r.kind = ReportKind::WrongZone;
                    r.owner = Some(owner);
                    r.slab = slab;
                }
                None => r.kind = ReportKind::ForeignPointer,
            }
            report(&r);
            return false;
        }
        // SAFETY: valid header under the keg lock.
        let base = unsafe { (*s).base } as usize;
        r.slab = base;
        // SAFETY: as above.
        let Some(idx) = (unsafe { k.index_of(s, item) }) else {
            drop(g);
            r.kind = ReportKind::Misaligned;
            r.offset = item as usize - base;
            report(&r);
            return false;
        };
        if !dbg_bit(s, idx) {
            drop(g);
            report(&r);
            return false;
        }
        set_dbg(s, idx, false);
        true
    }

    /// Records an allocation and verifies the trash pattern.
    pub(crate) fn on_alloc(zone: &Zone, item: *mut u8) {
        let k = keg(zone);
        let mut g = k.state.lock();
        let (s, idx) = slab_and_index(k, &mut g, item);
        let Some(idx) = idx else {
            crate::debug::fatal(format_args!(
                "uma: zone {}: cached item {:p} is not an item of its keg",
                zone.name, item
            ));
        };
        // SAFETY: valid header.
        let slab = unsafe { (*s).base } as usize;
        if dbg_bit(s, idx) {
            drop(g);
            report(&Report {
                kind: ReportKind::DuplicateAlloc,
                ptr: item as usize,
                zone: zone.name,
                slab,
                owner: None,
                offset: 0,
            });
            return;
        }
        set_dbg(s, idx, true);
        drop(g);
        if k.trash && zone.zinit.is_none() {
            for i in 0..zone.size {
                // SAFETY: the item has `size` readable bytes.
                if unsafe { *item.add(i) } != TRASH[i % 4] {
                    report(&Report {
                        kind: ReportKind::ModifiedAfterFree,
                        ptr: item as usize,
                        zone: zone.name,
                        slab,
                        owner: None,
                        offset: i,
                    });
                    return;
                }
            }
        }
    }

    /// Undoes `on_alloc` (constructor failure).
    pub(crate) fn undo_alloc(zone: &Zone, item: *mut u8) {
        let k = keg(zone);
        let mut g = k.state.lock();
        let (s, idx) = slab_and_index(k, &mut g, item);
        if let Some(idx) = idx {
            set_dbg(s, idx, false);
        }
        drop(g);
        if k.trash && zone.zinit.is_none() {
            trash(item, zone.size);
        }
    }
}
