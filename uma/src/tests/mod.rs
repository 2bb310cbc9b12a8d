//! In-crate tests: loom models of the concurrent protocols.
