//! The one door to atomics and locks (as vmem's and uma's `sync`).
//!
//! This is the only file of the crate that names `std::sync` or `loom`.
//! Two kinds of state go through it:
//!
//! - **Protocols** (the types at the top level): state that threads race
//!   on and whose interleavings matter, kept in instance structs — the
//!   lazy timeout's deadline and single flight ([`crate::timeout`]), the
//!   limit's account word (`pressure/account.rs`). Under `cfg(loom)` they
//!   are loom's types, and the models in `src/tests/loom_*.rs` explore the
//!   real structs. Their process-wide instances are declared with
//!   [`global!`](crate::sync::global): a plain `static` normally, a
//!   `loom::lazy_static` (fresh in every execution) under loom.
//! - **Process-wide plumbing** ([`plain`]): set-once publication of the
//!   kernel's parts, statistics counters, option words, and the mutexes
//!   of kmem's own lists (boot chunk, dirty pages, page-metadata pool,
//!   pressure sleepers). They are `static`s, which loom's types cannot be
//!   (their constructors are not `const`), so they stay std's under loom
//!   too: no model branches on them. std's `Mutex` and `Condvar` are
//!   futex words on Linux and never allocate; fork holds them through
//!   their guards (`fork.rs`).
//!
//! What loom checks of kmem is therefore what lives in a protocol struct;
//! a race moved into one gets a model (see `src/tests/`).

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU64};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64};

pub(crate) use core::sync::atomic::Ordering;

/// Process-wide plumbing: std's atomics and locks, under loom too (see
/// the module doc).
pub(crate) mod plain {
    #[cfg_attr(any(loom, feature = "invariants"), allow(unused_imports))]
    // the fast path's are not built there
    pub(crate) use core::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
    };
    pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
}

/// Declares `fn $name() -> &'static $ty`, the process-wide instance of a
/// protocol struct built by `$init`: a `static` normally (so `$init` must
/// be a `const` expression there), a `loom::lazy_static` under loom (one
/// per model execution). The struct's constructor is written with
/// [`const_new!`](crate::sync::const_new) so it is `const` where it can be.
macro_rules! global {
    ($(#[$m:meta])* $vis:vis fn $name:ident() -> $ty:ty = $init:expr;) => {
        $(#[$m])*
        #[cfg(not(loom))]
        #[inline(always)]
        $vis fn $name() -> &'static $ty {
            static G: $ty = $init;
            &G
        }
        $(#[$m])*
        #[cfg(loom)]
        $vis fn $name() -> &'static $ty {
            loom::lazy_static! {
                static ref G: $ty = $init;
            }
            &G
        }
    };
}
pub(crate) use global;

/// Writes a constructor that is `const fn` normally and a plain `fn` under
/// loom (whose atomics have no `const` constructors).
macro_rules! const_new {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $t:ty),*) -> $ret:ty $body:block) => {
        $(#[$m])*
        #[cfg(not(loom))]
        $vis const fn $name($($arg: $t),*) -> $ret $body
        $(#[$m])*
        #[cfg(loom)]
        $vis fn $name($($arg: $t),*) -> $ret $body
    };
}
pub(crate) use const_new;
