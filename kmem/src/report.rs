//! Bad-input reports from the malloc layer.
//!
//! A report names the pointer, the zone (or "large") and the malloc type
//! where known. By default it is written to stderr (without allocating) and
//! the process aborts, because continuing after a double or foreign free
//! risks silent corruption. [`set_report_hook`] installs a function called
//! instead; the bad operation is then dropped (nothing is freed).
//!
//! With the `invariants` feature, UMA's own debug checks (the per-slab
//! bitset that catches a double free reaching a zone, e.g. through
//! [`Kmem`](crate::Kmem)'s `dealloc` or the C ABI; trash verification on
//! allocation) report through the same hook: [`set_report_hook`] also
//! installs a forwarder as UMA's hook ([`uma::debug::set_report_hook`]),
//! which turns each UMA report into a kmem [`Report`]. Without a kmem hook,
//! UMA's reports abort with UMA's own message, as before.

use crate::sync::plain::{AtomicUsize, Ordering};
use core::fmt;

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
    /// UMA: the item belongs to another zone's keg (`invariants`).
    WrongZone,
    /// UMA: a free item's trash pattern changed before it was handed out
    /// again: a write after free (`invariants`).
    ModifiedAfterFree,
    /// UMA: an item was handed out while already allocated (`invariants`).
    DuplicateAlloc,
    /// Debug mode (`guards`): bytes past the end of the block were written.
    Overflow,
    /// Debug mode (`guards`): bytes before the start of the block were
    /// written.
    Underflow,
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
    /// The malloc type the caller named (`""` if none: untyped calls).
    pub mtype: &'static str,
    /// For [`ReportKind::WrongType`]: the malloc type that allocated the
    /// block, `""` if its tag names no type (an untyped block, from
    /// [`Kmem`](crate::Kmem) or [`raw`](crate::raw), or a tag overwritten
    /// by a buffer overrun).
    pub actual_type: &'static str,
    /// Debug mode with `audit`: the return addresses of the call that
    /// allocated the block (0 past the last, all 0 when not recorded).
    pub alloc_stack: [usize; crate::AUDIT_FRAMES],
    /// Debug mode with `audit`: the same for the call that freed it.
    pub free_stack: [usize; crate::AUDIT_FRAMES],
}

impl Report {
    /// A report with no sizes and no types.
    pub(crate) const fn new(
        kind: ReportKind,
        op: &'static str,
        ptr: usize,
        zone: &'static str,
    ) -> Report {
        Report {
            kind,
            op,
            ptr,
            zone,
            size: 0,
            actual: 0,
            mtype: "",
            actual_type: "",
            alloc_stack: [0; crate::AUDIT_FRAMES],
            free_stack: [0; crate::AUDIT_FRAMES],
        }
    }
}

/// Writes a stack, one frame per line, each symbolized with `dladdr` when
/// it can be (function name and offset, or the object and offset).
fn write_stack(f: &mut fmt::Formatter<'_>, what: &str, stack: &[usize]) -> fmt::Result {
    if stack[0] == 0 {
        return Ok(());
    }
    write!(f, "\n  {what}:")?;
    for &ip in stack.iter().take_while(|&&ip| ip != 0) {
        write!(f, "\n    {ip:#x}")?;
        let mut info = libc::Dl_info {
            dli_fname: core::ptr::null(),
            dli_fbase: core::ptr::null_mut(),
            dli_sname: core::ptr::null(),
            dli_saddr: core::ptr::null_mut(),
        };
        // SAFETY: `info` is a valid out-parameter; dladdr only reads the
        // loader's tables. A return address points just past the call, so
        // look up the byte before it.
        if unsafe { libc::dladdr((ip - 1) as *const libc::c_void, &mut info) } == 0 {
            continue;
        }
        if !info.dli_sname.is_null() {
            // SAFETY: dladdr's names are NUL-terminated strings.
            let name = unsafe { core::ffi::CStr::from_ptr(info.dli_sname) };
            write!(
                f,
                " {}+{:#x}",
                name.to_str().unwrap_or("?"),
                ip - info.dli_saddr as usize
            )?;
        } else if !info.dli_fname.is_null() {
            // SAFETY: as above.
            let file = unsafe { core::ffi::CStr::from_ptr(info.dli_fname) };
            write!(
                f,
                " {}+{:#x}",
                file.to_str().unwrap_or("?"),
                ip - info.dli_fbase as usize
            )?;
        }
    }
    Ok(())
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
            ReportKind::WrongZone => "item belongs to another zone",
            ReportKind::ModifiedAfterFree => "memory modified after free",
            ReportKind::DuplicateAlloc => "item handed out twice",
            ReportKind::Overflow => "write past the end of the allocation",
            ReportKind::Underflow => "write before the start of the allocation",
        };
        write!(f, "kmem: {}: {} {:#x}", self.op, what, self.ptr)?;
        if !self.zone.is_empty() {
            write!(f, " (zone \"{}\")", self.zone)?;
        }
        if self.size != 0 || self.actual != 0 {
            write!(f, ", size {} given, {} allocated", self.size, self.actual)?;
        }
        if self.kind == ReportKind::WrongType {
            write!(f, ", type \"{}\" given", self.mtype)?;
            if self.actual_type.is_empty() {
                f.write_str(", allocated with no type tag (untyped, or the tag was overwritten)")?;
            } else {
                write!(f, ", allocated by type \"{}\"", self.actual_type)?;
            }
        } else if !self.mtype.is_empty() {
            write!(f, ", type \"{}\"", self.mtype)?;
        }
        write_stack(f, "allocated by", &self.alloc_stack)?;
        write_stack(f, "freed by", &self.free_stack)
    }
}

static HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs (or with `None` removes) the report hook. With a hook, reports
/// call it and the bad operation is dropped; without one they abort.
///
/// It also installs (or removes) UMA's report hook
/// ([`uma::debug::set_report_hook`], process-wide): with a kmem hook,
/// UMA's `invariants` reports (a double free reaching a zone, a write
/// after free) arrive here as kmem reports, with `op` `"uma_zfree"` or
/// `"uma_zalloc"`. So a UMA hook set directly is replaced by this call;
/// set it after kmem's if you need both.
pub fn set_report_hook(hook: Option<fn(&Report)>) {
    HOOK.store(hook.map_or(0, |h| h as usize), Ordering::SeqCst);
    uma::debug::set_report_hook(hook.map(|_| forward_uma as fn(&uma::debug::Report)));
}

/// Whether a report hook is installed (the `BSDALLOC_BAD_FREE` option
/// installs one only if nobody has: the C ABI's comes first).
pub(crate) fn hook_installed() -> bool {
    HOOK.load(Ordering::SeqCst) != 0
}

/// UMA's report hook while a kmem hook is installed: the same report as a
/// kmem [`Report`]. UMA has dropped the bad operation already.
fn forward_uma(r: &uma::debug::Report) {
    use uma::debug::ReportKind as U;
    let (kind, op) = match r.kind {
        U::DoubleFree => (ReportKind::DoubleFree, "uma_zfree"),
        U::ForeignPointer => (ReportKind::ForeignPointer, "uma_zfree"),
        U::WrongZone => (ReportKind::WrongZone, "uma_zfree"),
        U::Misaligned => (ReportKind::NotAllocationStart, "uma_zfree"),
        U::ModifiedAfterFree => (ReportKind::ModifiedAfterFree, "uma_zalloc"),
        U::DuplicateAlloc => (ReportKind::DuplicateAlloc, "uma_zalloc"),
    };
    report(Report::new(kind, op, r.ptr, r.zone));
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
