//! Allocation flags (FreeBSD `M_*` from `sys/malloc.h`, as vmem uses them).

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign, Not};

/// Flags for arena operations: exactly one of [`Flags::WAITOK`] /
/// [`Flags::NOWAIT`], at most one fit policy, and the tag-source hints
/// [`Flags::USE_RESERVE`] and [`Flags::NOVM`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u32);

impl Flags {
    /// Fail with [`crate::Error::NoMemory`] rather than sleep.
    pub const NOWAIT: Flags = Flags(0x0001);
    /// Sleep until the request can be satisfied; never fails for lack of
    /// space (FreeBSD `M_WAITOK`).
    pub const WAITOK: Flags = Flags(0x0002);
    /// The tag source must not recurse into the VM (it may be called with an
    /// arena lock held).
    pub const NOVM: Flags = Flags(0x0200);
    /// The caller may dip into reserves (passed to the tag source only for
    /// arenas created with [`crate::ArenaBuilder::tag_reserve`]).
    pub const USE_RESERVE: Flags = Flags(0x0400);
    /// Instant fit (FreeBSD `M_FIRSTFIT`): take the head of the first
    /// freelist whose every segment is large enough; retried as best fit.
    /// This is the default policy.
    pub const FIRSTFIT: Flags = Flags(0x1000);
    /// Instant fit: an alias of [`Flags::FIRSTFIT`], the name Bonwick and
    /// Adams use.
    pub const INSTANTFIT: Flags = Flags::FIRSTFIT;
    /// Best fit: scan the freelists for the smallest segment that fits.
    pub const BESTFIT: Flags = Flags(0x2000);
    /// Next fit: continue from a cursor after the last allocation (cycling
    /// ID spaces such as PIDs).
    pub const NEXTFIT: Flags = Flags(0x8000);

    const WAITMASK: u32 = Self::NOWAIT.0 | Self::WAITOK.0;
    pub(crate) const FITMASK: Flags = Flags(Self::FIRSTFIT.0 | Self::BESTFIT.0 | Self::NEXTFIT.0);
    /// The flags a tag source or import function may see.
    pub(crate) const BT_FLAGS: Flags =
        Flags(Self::NOWAIT.0 | Self::WAITOK.0 | Self::USE_RESERVE.0 | Self::NOVM.0);
    const ALL: u32 = Self::WAITMASK | Self::NOVM.0 | Self::USE_RESERVE.0 | Self::FITMASK.0;

    /// No flags.
    pub const fn empty() -> Flags {
        Flags(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set in `self`.
    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    /// `self` without the flags of `other`.
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    /// `self` with the flags of `other`.
    pub const fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// Checks that the flags are well formed: known bits only, exactly one
    /// of WAITOK/NOWAIT, at most one fit policy.
    pub(crate) fn validate(self) -> Result<Policy, crate::Error> {
        let wait = self.0 & Self::WAITMASK;
        let fit = self.0 & Self::FITMASK.0;
        // Bit tricks rather than `count_ones`, a dozen instructions without
        // a popcount instruction in the baseline target: `wait` must be one
        // of its mask's two bits, `fit` a power of two or 0.
        let one_wait = wait == Self::NOWAIT.0 || wait == Self::WAITOK.0;
        if self.0 & !Self::ALL != 0 || !one_wait || fit & fit.wrapping_sub(1) != 0 {
            return Err(crate::Error::BadFlags { flags: self });
        }
        Ok(match Flags(fit) {
            Self::BESTFIT => Policy::Best,
            Self::NEXTFIT => Policy::Next,
            _ => Policy::Instant,
        })
    }
}

/// The fit policy of one allocation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Policy {
    Instant,
    Best,
    Next,
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Flags {
    type Output = Flags;
    fn bitand(self, rhs: Flags) -> Flags {
        Flags(self.0 & rhs.0)
    }
}

impl Not for Flags {
    type Output = Flags;
    fn not(self) -> Flags {
        Flags(!self.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(Flags, &str); 7] = [
            (Flags::NOWAIT, "NOWAIT"),
            (Flags::WAITOK, "WAITOK"),
            (Flags::NOVM, "NOVM"),
            (Flags::USE_RESERVE, "USE_RESERVE"),
            (Flags::FIRSTFIT, "FIRSTFIT"),
            (Flags::BESTFIT, "BESTFIT"),
            (Flags::NEXTFIT, "NEXTFIT"),
        ];
        let mut rest = self.0;
        let mut first = true;
        for (flag, name) in NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !flag.0;
            }
        }
        if rest != 0 || first {
            if !first {
                f.write_str(" | ")?;
            }
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}
