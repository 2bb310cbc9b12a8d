//! Placement arithmetic: FreeBSD's `vmem_fit`, with the constraint checks
//! of `vmem_xalloc`.
//!
//! FreeBSD computes placements in wrapping `vmem_addr_t` arithmetic, which
//! is only correct away from the top of the address space. Here the
//! arithmetic is done in `u128`, so a segment ending at `usize::MAX`
//! is handled exactly.

use crate::Error;

/// Placement constraints for [`crate::Arena::xalloc`] (the `align`, `phase`,
/// `nocross`, `minaddr` and `maxaddr` arguments of FreeBSD `vmem_xalloc`).
///
/// The allocation `[a, a + size)` satisfies
/// `a % align == phase`, does not cross a multiple of `nocross`, and lies
/// within `[min_addr, max_addr]` (both inclusive: `max_addr` is the last
/// address the allocation may cover).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Constraints {
    /// Power of two (multiple of the quantum), or 0 for the quantum.
    pub align: usize,
    /// Offset from an `align` boundary (multiple of the quantum, `< align`).
    pub phase: usize,
    /// Power of two the allocation must not cross, or 0 for none.
    pub nocross: usize,
    /// Lowest address the allocation may start at.
    pub min_addr: usize,
    /// Highest address the allocation may cover.
    pub max_addr: usize,
}

impl Default for Constraints {
    fn default() -> Self {
        Self::NONE
    }
}

impl Constraints {
    /// No constraint beyond the quantum.
    pub const NONE: Constraints = Constraints {
        align: 0,
        phase: 0,
        nocross: 0,
        min_addr: 0,
        max_addr: usize::MAX,
    };

    /// No constraint beyond the quantum.
    pub const fn new() -> Self {
        Self::NONE
    }

    /// With alignment `align`.
    pub const fn align(mut self, align: usize) -> Self {
        self.align = align;
        self
    }

    /// With phase `phase` (offset from the alignment).
    pub const fn phase(mut self, phase: usize) -> Self {
        self.phase = phase;
        self
    }

    /// Must not cross a multiple of `nocross`.
    pub const fn nocross(mut self, nocross: usize) -> Self {
        self.nocross = nocross;
        self
    }

    /// Must lie within `[min, max]` (inclusive).
    pub const fn range(mut self, min: usize, max: usize) -> Self {
        self.min_addr = min;
        self.max_addr = max;
        self
    }

    /// Validates against the quantum and a size already rounded to it, and
    /// returns the constraints with `align` defaulted to the quantum.
    #[inline]
    pub(crate) fn validate(self, size: usize, quantum: usize) -> Result<Constraints, Error> {
        if self == Self::NONE {
            // `alloc`'s case: nothing to check.
            return Ok(self.align(quantum));
        }
        let mask = quantum - 1;
        let mut c = self;
        if c.align == 0 {
            c.align = quantum;
        }
        if !c.align.is_power_of_two() || c.align & mask != 0 {
            return Err(Error::BadAlign {
                align: self.align,
                quantum,
            });
        }
        if c.phase & mask != 0 || c.phase >= c.align {
            return Err(Error::BadPhase {
                phase: c.phase,
                align: c.align,
            });
        }
        if c.nocross != 0 {
            if !c.nocross.is_power_of_two() || c.nocross & mask != 0 {
                return Err(Error::BadNocross { nocross: c.nocross });
            }
            if c.nocross < size {
                return Err(Error::NocrossTooSmall {
                    nocross: c.nocross,
                    size,
                });
            }
            if crosses(c.phase as u128, size as u128, c.nocross as u128) {
                return Err(Error::PhaseCrossesNocross {
                    phase: c.phase,
                    size,
                    nocross: c.nocross,
                });
            }
        }
        if c.min_addr > c.max_addr {
            return Err(Error::BadRange {
                min: c.min_addr,
                max: c.max_addr,
            });
        }
        Ok(c)
    }
}

/// Whether `[start, start + size)` crosses a multiple of `boundary`
/// (`VMEM_CROSS_P`); never for a boundary of 0.
#[inline]
fn crosses(start: u128, size: u128, boundary: u128) -> bool {
    boundary != 0 && (start ^ (start + size - 1)) & !(boundary - 1) != 0
}

/// The smallest `x >= from` with `x % align == phase` (`align` a power of
/// two, `phase < align`).
#[inline]
fn align_up_phase(from: u128, align: u128, phase: u128) -> u128 {
    from + (phase.wrapping_sub(from) & (align - 1))
}

/// Finds where in the free segment `[seg_start, seg_start + seg_size)` an
/// allocation of `size` bytes can be placed under `c` (validated, `align`
/// non-zero). Returns the lowest such address (`vmem_fit`).
#[inline]
pub(crate) fn fit(
    seg_start: usize,
    seg_size: usize,
    size: usize,
    c: &Constraints,
) -> Option<usize> {
    debug_assert!(size > 0 && seg_size >= size);
    let mut start = (seg_start as u128).max(c.min_addr as u128);
    let end = (seg_start as u128 + seg_size as u128 - 1).min(c.max_addr as u128);
    if start > end {
        return None;
    }
    let (size, align, phase, nocross) = (
        size as u128,
        c.align as u128,
        c.phase as u128,
        c.nocross as u128,
    );
    start = align_up_phase(start, align, phase);
    if crosses(start, size, nocross) {
        // Validation guarantees that `phase` itself does not cross, so the
        // next `nocross` boundary plus the phase is aligned (nocross > align
        // whenever a crossing is possible) and does not cross.
        start = align_up_phase(start, nocross, phase);
        debug_assert!(!crosses(start, size, nocross));
    }
    if start <= end && end - start >= size - 1 {
        Some(start as usize)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(align: usize, phase: usize, nocross: usize) -> Constraints {
        Constraints::new()
            .align(align)
            .phase(phase)
            .nocross(nocross)
    }

    fn checked(cons: Constraints, size: usize) -> Constraints {
        cons.validate(size, 16).unwrap()
    }

    #[test]
    fn plain_fit_takes_segment_start() {
        assert_eq!(
            fit(0x1000, 0x100, 0x10, &checked(Constraints::NONE, 0x10)),
            Some(0x1000)
        );
        assert_eq!(
            fit(0x1000, 0x10, 0x10, &checked(Constraints::NONE, 0x10)),
            Some(0x1000)
        );
    }

    #[test]
    fn alignment_and_phase() {
        let k = checked(c(0x100, 0x20, 0), 0x10);
        assert_eq!(fit(0x1010, 0x1000, 0x10, &k), Some(0x1020));
        assert_eq!(fit(0x1030, 0x1000, 0x10, &k), Some(0x1120));
        // Too small once aligned.
        assert_eq!(fit(0x1030, 0xf0, 0x10, &k), None);
    }

    #[test]
    fn nocross_moves_to_next_boundary() {
        let k = checked(c(0, 0, 0x100), 0x40);
        assert_eq!(fit(0x10e0, 0x1000, 0x40, &k), Some(0x1100));
        assert_eq!(fit(0x10c0, 0x1000, 0x40, &k), Some(0x10c0));
    }

    #[test]
    fn min_and_max_address_are_inclusive() {
        let k = checked(Constraints::new().range(0x2000, 0x200f), 0x10);
        assert_eq!(fit(0x1000, 0x2000, 0x10, &k), Some(0x2000));
        let k = checked(Constraints::new().range(0x2000, 0x200e), 0x10);
        assert_eq!(fit(0x1000, 0x2000, 0x10, &k), None);
    }

    #[test]
    fn top_of_address_space_does_not_wrap() {
        let top = usize::MAX - 0xff; // a segment covering the last 256 bytes
        let k = checked(c(0x100, 0x10, 0), 0x10);
        // The next 0x100 boundary + 0x10 is past the end: no placement.
        assert_eq!(fit(top + 0x20, 0xe0, 0x10, &k), None);
        assert_eq!(fit(top, 0x100, 0x10, &k), Some(top + 0x10));
        let k = checked(Constraints::NONE, 0x100);
        assert_eq!(fit(top, 0x100, 0x100, &k), Some(top));
    }

    #[test]
    fn validation_rejects_bad_constraints() {
        let v = |k: Constraints, size| k.validate(size, 16);
        assert!(matches!(v(c(24, 0, 0), 16), Err(Error::BadAlign { .. })));
        assert!(matches!(v(c(8, 0, 0), 16), Err(Error::BadAlign { .. })));
        assert!(matches!(v(c(32, 32, 0), 16), Err(Error::BadPhase { .. })));
        assert!(matches!(v(c(32, 8, 0), 16), Err(Error::BadPhase { .. })));
        assert!(matches!(v(c(0, 16, 0), 16), Err(Error::BadPhase { .. })));
        assert!(matches!(v(c(0, 0, 48), 16), Err(Error::BadNocross { .. })));
        assert!(matches!(
            v(c(0, 0, 32), 64),
            Err(Error::NocrossTooSmall { .. })
        ));
        assert!(matches!(
            v(c(64, 48, 64), 32),
            Err(Error::PhaseCrossesNocross { .. })
        ));
        assert!(matches!(
            v(Constraints::new().range(10, 5), 16),
            Err(Error::BadRange { .. })
        ));
        assert_eq!(v(Constraints::NONE, 16).unwrap().align, 16);
    }

    #[test]
    fn exhaustive_small_fits_match_brute_force() {
        // Every placement returned is valid and is the lowest valid one.
        for align in [16usize, 32, 64] {
            for phase in (0..align).step_by(16) {
                for nocross in [0usize, 64, 128] {
                    for size in [16usize, 32, 48, 64] {
                        let Ok(k) = c(align, phase, nocross).validate(size, 16) else {
                            continue;
                        };
                        for seg_start in (0..256).step_by(16) {
                            for seg_size in (size..=256).step_by(16) {
                                let got = fit(seg_start, seg_size, size, &k);
                                let want = (seg_start..=seg_start + seg_size - size)
                                    .step_by(16)
                                    .find(|&a| {
                                        a % align == phase
                                            && !crosses(a as u128, size as u128, nocross as u128)
                                    });
                                assert_eq!(got, want, "a{align} p{phase} n{nocross} s{size} seg {seg_start}+{seg_size}");
                            }
                        }
                    }
                }
            }
        }
    }
}
