//! Bad-input reports from the malloc layer.
//!
//! A report names the pointer, the zone (or "large") and the malloc type
//! where known. By default it is written to stderr (without allocating) and
//! the process aborts, because continuing after a double or foreign free
//! risks silent corruption. [`set_report_hook`] installs a function called
//! instead; the bad operation is then dropped (nothing is freed).

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

/// What was wrong with a pointer handed to kmem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    /// The pointer is not in memory kmem manages.
    ForeignPointer,
    /// The pointer is in kmem's memory but no allocation starts there.
    NotAllocationStart,
    /// The pointer is an allocation start, but of UMA's internal memory.
    InternalMemory,
    /// The size given with the pointer does not match its allocation.
    WrongSize,
    /// The malloc type given with the pointer is not the one that
    /// allocated it (seen only when per-type checks are on).
    WrongType,
    /// The allocation was already free.
    DoubleFree,
}

/// One report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// What went wrong.
    pub kind: ReportKind,
    /// The operation (`"free"`, `"realloc"`, `"dealloc"`, ...).
    pub op: &'static str,
    /// The pointer.
    pub ptr: usize,
    /// The zone the pointer falls in (`"large"` for page allocations, `""`
    /// if none).
    pub zone: &'static str,
    /// The size the caller claimed (0 if none).
    pub size: usize,
    /// The size of the allocation found there (0 if none).
    pub actual: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ReportKind::ForeignPointer => "pointer not allocated by kmem",
            ReportKind::NotAllocationStart => "pointer is not the start of an allocation",
            ReportKind::InternalMemory => "pointer is allocator-internal memory",
            ReportKind::WrongSize => "size does not match the allocation",
            ReportKind::WrongType => "malloc type does not match the allocation",
            ReportKind::DoubleFree => "allocation already freed",
        };
        write!(f, "kmem: {}: {} {:#x}", self.op, what, self.ptr)?;
        if !self.zone.is_empty() {
            write!(f, " (zone \"{}\")", self.zone)?;
        }
        if self.size != 0 || self.actual != 0 {
            write!(f, ", size {} given, {} allocated", self.size, self.actual)?;
        }
        Ok(())
    }
}

static HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs (or with `None` removes) the report hook. With a hook, reports
/// call it and the bad operation is dropped; without one they abort.
pub fn set_report_hook(hook: Option<fn(&Report)>) {
    HOOK.store(hook.map_or(0, |h| h as usize), Ordering::SeqCst);
}

/// Delivers a report: to the hook, or to stderr and abort.
#[cold]
#[inline(never)]
pub(crate) fn report(r: Report) {
    let h = HOOK.load(Ordering::SeqCst);
    if h != 0 {
        // SAFETY: HOOK holds 0 or a `fn(&Report)` stored by set_report_hook.
        let f: fn(&Report) = unsafe { core::mem::transmute::<usize, fn(&Report)>(h) };
        f(&r);
        return;
    }
    fatal(format_args!("{r}"));
}

/// Writes a line to stderr without allocating (UMA's writer).
pub(crate) fn warn(args: fmt::Arguments<'_>) {
    uma::debug::warn(format_args!("{args}\n"));
}

/// Reports and aborts (never unwinds: it may be called inside
/// `GlobalAlloc`).
#[cold]
pub(crate) fn fatal(args: fmt::Arguments<'_>) -> ! {
    warn(args);
    std::process::abort();
}
