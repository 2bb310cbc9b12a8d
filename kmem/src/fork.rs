//! Fork safety: the `pthread_atfork` handlers (installed once, when the
//! allocator is built).
//!
//! A fork copies the address space with whatever locks the other threads
//! hold at that instant, and only the forking thread exists in the child;
//! a lock held elsewhere would stay held in the child forever, and its next
//! allocation would hang. So `prepare` takes every lock an allocation or a
//! free can take, in the global order below, and `parent` and `child`
//! release them; `child` also repairs what the vanished threads left
//! behind (see [`uma::fork`] and [`vmem::Arena::fork_child`]).
//!
//! # The global lock order
//!
//! A thread only ever acquires a lock while holding locks that come earlier
//! in this list, so the prepare handler, which takes them in this order,
//! cannot deadlock with a concurrent allocation:
//!
//! 1. UMA's default-instance bootstrap lock (`uma::global`);
//! 2. per UMA instance: the reclaim lock, then the zone-list lock. A
//!    reclaim holds both while kegs free slabs to their page sources, which
//!    free them to the kernel arena (3);
//! 3. the **kernel arena** lock (vmem). Page sources call the arena with no
//!    UMA lock held; the arena, with its lock held, takes boundary tags from
//!    the btag zone with `NOVM`, which may register a per-thread cache (4)
//!    and fill a bucket from the btag keg and the bucket zones (5), so the
//!    arena lock comes before every zone and keg lock; then the
//!    **metadata arena** lock (it imports from and releases to the kernel
//!    arena with its own lock dropped, so the two arena locks are never
//!    held together), then the **large classes' arena** lock (the same
//!    with the kernel arena; its tags come from the btag zone, as the
//!    kernel arena's), then the lock of vmem's **standalone tag pool**, the
//!    metadata arena's tag source (taken with that arena's lock held; it
//!    takes no other lock);
//! 4. UMA's per-thread cache registry lock (held while caches are linked,
//!    unlinked and emptied; the buckets go back to their zones after it is
//!    dropped, since a quantum cache's release takes the arena lock (3));
//! 5. every zone lock and keg lock (leaves: nothing is locked while one is
//!    held);
//! 6. UMA's leaves: boot pages, TLS slot ids, the pthread key, the
//!    membarrier set-up and the mprotect barrier;
//! 7. kmem's boot-chunk lock (`BOOT`; held around the bump and page
//!    metadata words, which take no lock);
//! 8. kmem's dirty-page lists lock (`dirty`; held only to edit the lists of
//!    dirty ranges and retained spans: no other lock, no arena call);
//! 9. kmem's page-metadata pool lock (`POOL`; held around `mmap`).
//!
//! The malloc type list is lock-free; the kernel arena has no quantum
//! cache, and its tag source is the btag zone (locks of 4-6).
//!
//! # In the child
//!
//! The forking thread allocates and frees as before (its per-thread caches
//! included). The kernel arena counts back the spare tags vanished threads
//! had set aside. UMA's per-thread caches of the vanished threads become
//! orphans: a cache whose owner the fork caught inside an operation is
//! dropped unread (it may be half changed), the others stay registered and
//! their items come back with a [`reclaim`](crate::reclaim) with
//! `DrainCpu` (details in [`uma::fork`]). What a vanished thread held
//! privately at the instant of the fork (a block it was allocating, a span
//! it was importing) is lost to the child, never corrupt.
//!
//! A fork while another thread is still building the allocator (its very
//! first allocation) is not covered: the handlers are installed at the end
//! of the build. In a Rust program the runtime allocates before `main`, so
//! the build is over before any thread can fork.
//!
//! The build marks the allocator ready before it installs the handlers
//! (`pthread_atfork` may allocate, and with the C ABI that is us). A
//! second thread that registers handlers in that window, during the
//! process's very first allocation, registers them before kmem's, and
//! they must then not allocate (see below). Making such threads wait for
//! the install instead could deadlock: the install looks symbols up
//! (`dlsym`, under glibc's loader lock), and a thread in `dlopen` holds
//! that lock while its constructors register handlers.
//!
//! # Other `pthread_atfork` handlers
//!
//! `fork` runs prepare handlers in the reverse order of their registration
//! and parent and child handlers in that order. A handler registered after
//! kmem's may allocate in all three; one registered before kmem's must not
//! allocate, because its prepare handler runs while kmem's holds every
//! lock (and its parent and child handlers before kmem's release them).
//! So kmem's should be registered first. The C ABI (`bsdalloc-capi`) sees
//! to it: it interposes glibc's `__register_atfork` (through which every
//! `pthread_atfork` registers) and builds the allocator before passing any
//! registration on, so kmem's handlers are the first registered even when
//! a library's constructor registers before the program's first `malloc`.
//! A Rust program builds kmem at the runtime's first allocation, before
//! `main`; handlers registered by constructors of C libraries it links come
//! before that, and must not allocate.
//!
//! # A process with one thread
//!
//! When the forking thread is the process's only thread (glibc's
//! `__libc_single_threaded`, which turns false before a second thread is
//! created; looked up with `dlsym`, so a C library without it forks as
//! a threaded one), no other thread can hold a lock, be inside an operation or
//! leave a cache behind, so the handlers take and release nothing, as
//! glibc's own `fork` skips its malloc locks then; the child only renews
//! its `membarrier` registration. Taking the locks is not what costs: it
//! is releasing them after the fork, when every page that holds a zone's,
//! a keg's or an arena's lock word is shared with the child and the write
//! copies it, in the parent and in the child (a fork-and-wait loop of a
//! one-thread program took 1.8x glibc's time, a third of it such faults).

use crate::sync::plain::{AtomicBool, AtomicPtr, Ordering};
use core::cell::UnsafeCell;
use core::ffi::c_char;
use core::ptr;

use crate::dirty::{self, ListsLock};
use crate::kernel::{self, BootLock};
use crate::pagemeta::{self, PoolLock};

/// kmem's own locks, held by the forking thread between the handlers.
struct Held {
    boot: Option<BootLock>,
    dirty: Option<ListsLock>,
    pool: Option<PoolLock>,
}

struct HeldCell(UnsafeCell<Held>);

// SAFETY: only the forking thread touches it, between `prepare` and
// `parent`/`child`, while it holds UMA's default-instance bootstrap lock
// (taken first by prepare, released last by parent/child), which
// serializes forking threads.
unsafe impl Sync for HeldCell {}

static HELD: HeldCell = HeldCell(UnsafeCell::new(Held {
    boot: None,
    dirty: None,
    pool: None,
}));

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether the fork under way is a one-thread process's: set by `prepare`
/// before every fork, written only when it changes (so never by `parent`
/// or `child`, and not at every fork: each write would copy the page),
/// read by them.
static SOLO: AtomicBool = AtomicBool::new(false);

/// glibc's `__libc_single_threaded` (2.32), looked up when the handlers are
/// installed rather than linked, so that kmem still links against older C
/// libraries; null where there is none.
static SINGLE_THREADED: AtomicPtr<c_char> = AtomicPtr::new(ptr::null_mut());

/// Whether the calling thread is the process's only one (see the module
/// doc). False where the C library does not say.
fn single_threaded() -> bool {
    let p = SINGLE_THREADED.load(Ordering::Relaxed);
    // SAFETY: null, or glibc's byte, which lives as long as the process
    // and only changes from true to false in `pthread_create` (which this
    // thread, the only one if it reads true, is not running).
    !p.is_null() && unsafe { ptr::read_volatile(p) } != 0
}

/// Installs the fork handlers (once).
pub(crate) fn install() {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    #[cfg(not(loom))]
    {
        // SAFETY: a NUL-terminated name; the default scope.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) };
        SINGLE_THREADED.store(p.cast(), Ordering::Relaxed);
    }
    // SAFETY: the handlers are extern "C" functions that never unwind.
    let r = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if r != 0 {
        crate::report::warn(format_args!(
            "kmem: pthread_atfork failed ({r}): fork is not safe while other threads allocate\n"
        ));
    }
}

/// The kernel (always built when a handler runs: they are installed after).
fn kernel() -> Option<&'static kernel::Kernel> {
    kernel::kernel()
}

extern "C" fn prepare() {
    let Some(k) = kernel() else { return };
    let solo = single_threaded();
    // Only when it changes: the last fork left this page write-protected
    // in the parent, so every store would be a copy-on-write fault.
    if SOLO.load(Ordering::Relaxed) != solo {
        SOLO.store(solo, Ordering::Relaxed);
    }
    if solo {
        return;
    }
    // SAFETY: we are the forking thread in its prepare handler, holding no
    // allocator lock (nothing forks from inside the allocator); the locks
    // are taken in the global order of the module doc, and exactly one of
    // `parent`/`child` follows in this thread.
    unsafe {
        uma::fork::prepare_lists();
        k.arena.fork_prepare();
        k.meta.fork_prepare();
        if let Some(a) = kernel::lc_arena() {
            a.fork_prepare();
        }
        vmem::STANDALONE_TAGS.fork_prepare();
        uma::fork::prepare_zones();
        let h = &mut *HELD.0.get();
        h.boot = Some(kernel::fork_lock_boot());
        h.dirty = Some(dirty::fork_lock());
        h.pool = Some(pagemeta::fork_lock_pool());
    }
    crate::prof::fork_prepare();
}

/// Releases kmem's own locks, in the reverse of the order `prepare` took
/// them.
///
/// # Safety
///
/// Called by the forking thread from `parent` or `child`, after `prepare`.
unsafe fn release_own_locks() {
    // SAFETY: the caller's promise: HELD is this thread's until UMA's
    // bootstrap lock is released.
    let h = unsafe { &mut *HELD.0.get() };
    h.pool = None;
    h.dirty = None;
    h.boot = None;
}

extern "C" fn parent() {
    let Some(k) = kernel() else { return };
    if SOLO.load(Ordering::Relaxed) {
        return;
    }
    crate::prof::fork_release();
    // SAFETY: `prepare` took every lock in this thread; HELD is ours until
    // uma::fork::parent releases the bootstrap lock (last).
    unsafe {
        release_own_locks();
        vmem::STANDALONE_TAGS.fork_parent();
        if let Some(a) = kernel::lc_arena() {
            a.fork_parent();
        }
        k.meta.fork_parent();
        k.arena.fork_parent();
        uma::fork::parent();
    }
}

extern "C" fn child() {
    let Some(k) = kernel() else { return };
    if SOLO.load(Ordering::Relaxed) {
        uma::fork::child_of_single_thread();
        return;
    }
    crate::prof::fork_release();
    // SAFETY: the child's only thread is the one whose `prepare` took every
    // lock; nothing has used the allocator since.
    unsafe {
        release_own_locks();
        vmem::STANDALONE_TAGS.fork_child();
        if let Some(a) = kernel::lc_arena() {
            a.fork_child();
        }
        k.meta.fork_child();
        k.arena.fork_child();
        uma::fork::child();
    }
    crate::pressure::fork_child();
    crate::timeout::fork_child();
}
