//! Under loom there is no profiler (no per-thread caches to gate): the
//! hooks of the slow roads, doing nothing. (Not every hook has a caller
//! under loom: fork is compiled out there.)
#![allow(dead_code)]

use core::ptr::NonNull;

use crate::kernel::Kernel;
use crate::Flags;

pub(crate) fn on() -> bool {
    false
}

pub(crate) fn tracking() -> bool {
    false
}

pub(crate) fn poll_start() {}

pub(crate) fn after_free(_: usize) {}

pub(crate) fn class_built(_: &'static uma::Zone) {}

pub(crate) fn alloc(_: &Kernel, _: usize, _: usize, _: Flags) -> Option<NonNull<u8>> {
    None
}

/// # Safety
///
/// None (does nothing).
pub(crate) unsafe fn free_if_sampled(_: *mut u8) -> bool {
    false
}

/// # Safety
///
/// None (does nothing).
pub(crate) unsafe fn realloc_if_sampled(_: *mut u8, _: usize, _: usize) -> Option<*mut u8> {
    None
}

pub(crate) fn init_from_env(_: impl Fn(&core::ffi::CStr) -> Option<&'static [u8]>) {}

pub(crate) fn fork_prepare() {}

pub(crate) fn fork_release() {}

/// # Safety
///
/// None (does nothing).
pub(crate) unsafe fn free_gated(_: *mut u8) -> bool {
    false
}

/// # Safety
///
/// None (does nothing).
pub(crate) unsafe fn free_sized_gated(_: *mut u8, _: usize, _: usize) -> bool {
    false
}

#[allow(clippy::extra_unused_type_parameters)] // the signature of the real one
pub(crate) fn alloc_gated<A>(_: usize, _: usize) -> Option<NonNull<u8>> {
    None
}
