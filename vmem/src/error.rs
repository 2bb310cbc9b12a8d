//! Typed errors for bad input and exhaustion.

use core::fmt;

/// An arena's name, stored inline (no heap) so errors can carry it.
///
/// Names longer than [`Name::MAX`] bytes are truncated at a character
/// boundary, as FreeBSD's `strlcpy` into `vm_name` truncates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name {
    buf: [u8; Name::MAX],
    len: u8,
}

impl Name {
    /// The longest name kept, in bytes.
    pub const MAX: usize = 31;

    /// Copies (and if needed truncates) `name`.
    pub const fn new(name: &str) -> Name {
        let bytes = name.as_bytes();
        let mut len = if bytes.len() < Self::MAX {
            bytes.len()
        } else {
            Self::MAX
        };
        // Back off to a character boundary (continuation bytes are 10xxxxxx).
        while len < bytes.len() && len > 0 && bytes[len] & 0xC0 == 0x80 {
            len -= 1;
        }
        let mut buf = [0u8; Self::MAX];
        let mut i = 0;
        while i < len {
            buf[i] = bytes[i];
            i += 1;
        }
        Name {
            buf,
            len: len as u8,
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        // `new` only ever copies whole characters of a `&str`.
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("?")
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Why an arena operation failed. Every variant is a caller error except
/// [`Error::NoMemory`] (exhaustion under `NOWAIT`, or a tag source that
/// could not supply boundary tags) and [`Error::Busy`].
// Field meanings are given by each variant's description.
#[allow(missing_docs)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Error {
    /// A size of zero was requested or freed.
    ZeroSize,
    /// The size overflows once rounded up to the quantum (or an import
    /// covering it would).
    TooLarge { size: usize },
    /// The quantum is zero or not a power of two.
    BadQuantum { quantum: usize },
    /// The alignment is not a power of two or not a multiple of the quantum.
    BadAlign { align: usize, quantum: usize },
    /// The phase is not a multiple of the quantum or not below the alignment.
    BadPhase { phase: usize, align: usize },
    /// The boundary (`nocross`) is not a power of two or not a multiple of
    /// the quantum.
    BadNocross { nocross: usize },
    /// The boundary is smaller than the size, so no placement can avoid
    /// crossing it.
    NocrossTooSmall { nocross: usize, size: usize },
    /// `phase..phase + size` itself crosses the boundary, so every placement
    /// with this phase would.
    PhaseCrossesNocross {
        phase: usize,
        size: usize,
        nocross: usize,
    },
    /// `min_addr > max_addr`.
    BadRange { min: usize, max: usize },
    /// Unknown bits, both or neither of WAITOK/NOWAIT, or several fit policies.
    BadFlags { flags: crate::Flags },
    /// An address or size given to `add`, or an address given to `claim`,
    /// is not a multiple of the quantum.
    Unaligned {
        arena: Name,
        value: usize,
        quantum: usize,
    },
    /// `addr + size` wraps around the address space.
    Overflow { addr: usize, size: usize },
    /// A span given to `add` overlaps space the arena already manages.
    Overlap {
        arena: Name,
        addr: usize,
        size: usize,
    },
    /// No space (or no boundary tags) and the caller said `NOWAIT`.
    NoMemory { arena: Name },
    /// `free`/`xfree` of an address that is not the start of an allocated
    /// segment of this arena.
    NotAllocated { arena: Name, addr: usize },
    /// `free`/`xfree` with a size that does not match the allocation.
    SizeMismatch {
        arena: Name,
        addr: usize,
        size: usize,
        allocated: usize,
    },
    /// `free_handle` of a handle from another arena (the segment stays
    /// allocated in the arena it came from).
    ForeignHandle { arena: Name, addr: usize },
    /// `destroy` of an arena that still has allocated segments.
    Busy {
        arena: Name,
        segments: usize,
        bytes: usize,
    },
    /// The arena was built without a tag source (only possible without the
    /// `std` feature or under loom, where the process-wide standalone source
    /// does not exist).
    NoTagSource,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::ZeroSize => write!(f, "size must be non-zero"),
            Error::TooLarge { size } => write!(f, "size {size:#x} is too large"),
            Error::BadQuantum { quantum } => {
                write!(f, "quantum {quantum:#x} is not a non-zero power of two")
            }
            Error::BadAlign { align, quantum } => write!(
                f,
                "alignment {align:#x} is not a power of two multiple of the quantum {quantum:#x}"
            ),
            Error::BadPhase { phase, align } => write!(
                f,
                "phase {phase:#x} is not a quantum multiple below the alignment {align:#x}"
            ),
            Error::BadNocross { nocross } => write!(
                f,
                "boundary {nocross:#x} is not a power of two multiple of the quantum"
            ),
            Error::NocrossTooSmall { nocross, size } => {
                write!(
                    f,
                    "boundary {nocross:#x} is smaller than the size {size:#x}"
                )
            }
            Error::PhaseCrossesNocross {
                phase,
                size,
                nocross,
            } => write!(
                f,
                "phase {phase:#x} with size {size:#x} always crosses the boundary {nocross:#x}"
            ),
            Error::BadRange { min, max } => {
                write!(f, "minimum address {min:#x} is above maximum {max:#x}")
            }
            Error::BadFlags { flags } => write!(
                f,
                "bad flags {flags:?}: need exactly one of WAITOK/NOWAIT and at most one fit policy"
            ),
            Error::Unaligned {
                arena,
                value,
                quantum,
            } => write!(
                f,
                "vmem arena '{arena}': {value:#x} is not a multiple of the quantum {quantum:#x}"
            ),
            Error::Overflow { addr, size } => {
                write!(f, "range {addr:#x} + {size:#x} wraps the address space")
            }
            Error::Overlap { arena, addr, size } => write!(
                f,
                "vmem arena '{arena}': span [{addr:#x}, +{size:#x}) overlaps existing space"
            ),
            Error::NoMemory { arena } => write!(f, "vmem arena '{arena}': out of space"),
            Error::NotAllocated { arena, addr } => write!(
                f,
                "vmem arena '{arena}': free of {addr:#x}, which is not an allocated segment"
            ),
            Error::ForeignHandle { arena, addr } => write!(
                f,
                "vmem arena '{arena}': free_handle of {addr:#x}, a handle from another arena"
            ),
            Error::SizeMismatch {
                arena,
                addr,
                size,
                allocated,
            } => write!(
                f,
                "vmem arena '{arena}': free of {addr:#x} with size {size:#x}, \
                 but {allocated:#x} bytes were allocated there"
            ),
            Error::Busy {
                arena,
                segments,
                bytes,
            } => write!(
                f,
                "vmem arena '{arena}': destroy with {segments} allocated segments \
                 ({bytes:#x} bytes) still in use"
            ),
            Error::NoTagSource => write!(f, "the arena has no boundary-tag source"),
        }
    }
}

impl core::error::Error for Error {}
