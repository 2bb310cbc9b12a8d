//! Messages about errors vmem cannot return to anyone (a failed release in
//! a `Drop` or a quantum cache's flush): on standard error with `std`,
//! dropped without it.

/// Writes a line to standard error with `std`; formats nothing without it.
macro_rules! report {
    ($($arg:tt)*) => {{
        #[cfg(feature = "std")]
        {
            std::eprintln!($($arg)*);
        }
        #[cfg(not(feature = "std"))]
        {
            let _ = format_args!($($arg)*);
        }
    }};
}
pub(crate) use report;
