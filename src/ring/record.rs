//! Records in the ring: an 8-byte header, the payload, padding to 8 bytes.
//!
//! ```text
//! header (u64, little end first):  bits 0..32  payload length
//!                                  bits 32..40 kind
//!                                  bits 40..48 TAG (0xA5), catches garbage
//!                                  bits 48..64 zero, except in the ownership markers
//!                                              CLAIMED and TAKEN: an owner mark
//!                                              (`peers::owner_mark`; 0 = unknown)
//! ```
//!
//! A message that fits in one record is `WHOLE`. A larger one travels as `FIRST` (payload starts
//! with the u64 total length), any number of `MIDDLE`, and `LAST`; an aborted large send (deadline
//! passed half way) ends with `ABORT` and the receiver drops the pieces. `PAD` fills the space up
//! to the end of the ring when the next record does not fit there; records never wrap.

use crate::error::Corrupt;

/// Alignment of every record (and so of every position).
pub const ALIGN: usize = 8;
/// Size of a record header.
pub const HDR: usize = 8;
const TAG: u64 = 0xA5;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Whole = 1,
    First = 2,
    Middle = 3,
    Last = 4,
    Pad = 5,
    Abort = 6,
    /// MPSC only: space claimed by a producer that has not committed yet; `len` is the whole
    /// claim's extent in bytes (what `unblock` skips if that producer died).
    Claimed = 7,
    /// MPMC only: a unit taken by a consumer that has not released it yet; `len` is the unit's
    /// size in bytes (what a producer frees if that consumer died).
    Taken = 8,
    /// Layout 2's RECOVERING marker (a dead consumer's unit being freed); not written since
    /// layout 3, where reclaiming is a CAS of the unit's sequence word. Still decoded as an
    /// owned kind, so that no reader takes it for a record.
    Recovering = 9,
}

/// The header word of a record.
#[inline]
pub fn encode(kind: Kind, len: u32) -> u64 {
    (len as u64) | ((kind as u64) << 32) | (TAG << 40)
}

/// The CLAIMED marker of a claim of `extent` bytes by the attachment with owner mark `owner`
/// (`peers::owner_mark`; 0: unknown).
#[inline]
pub fn encode_claimed(extent: u32, owner: u16) -> u64 {
    encode_owned(Kind::Claimed, extent, owner)
}

/// An ownership marker (CLAIMED or TAKEN) of `len` bytes owned by `owner`.
#[inline]
pub fn encode_owned(kind: Kind, len: u32, owner: u16) -> u64 {
    debug_assert!(kind.carries_owner());
    encode(kind, len) | (u64::from(owner) << 48)
}

/// The owner recorded in an ownership marker (0 = unknown).
#[inline]
pub fn claim_owner(raw: u64) -> u16 {
    (raw >> 48) as u16
}

impl Kind {
    /// Whether a header of this kind may carry an owner mark in bits 48..64.
    #[inline]
    pub fn carries_owner(self) -> bool {
        matches!(self, Kind::Claimed | Kind::Taken | Kind::Recovering)
    }
}

/// Decode and check a header word read from shared memory.
#[inline]
pub fn decode(raw: u64) -> Result<(Kind, u32), Corrupt> {
    let owned = matches!((raw >> 32) & 0xff, 7..=9);
    if (raw >> 40) & 0xff != TAG || (raw >> 48 != 0 && !owned) {
        return Err(Corrupt::new(format!("record header {raw:#018x} has no valid tag")));
    }
    let kind = match (raw >> 32) & 0xff {
        1 => Kind::Whole,
        2 => Kind::First,
        3 => Kind::Middle,
        4 => Kind::Last,
        5 => Kind::Pad,
        6 => Kind::Abort,
        7 => Kind::Claimed,
        8 => Kind::Taken,
        9 => Kind::Recovering,
        k => return Err(Corrupt::new(format!("record header has unknown kind {k}"))),
    };
    Ok((kind, raw as u32))
}

/// Bytes a record with `len` payload bytes occupies.
#[inline]
pub fn size(len: usize) -> usize {
    HDR + len.next_multiple_of(ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        for kind in [
            Kind::Whole,
            Kind::First,
            Kind::Middle,
            Kind::Last,
            Kind::Pad,
            Kind::Abort,
            Kind::Claimed,
            Kind::Taken,
            Kind::Recovering,
        ] {
            for len in [0u32, 1, 7, 8, 4096, u32::MAX] {
                assert_eq!(decode(encode(kind, len)).unwrap(), (kind, len));
            }
        }
        assert!(decode(0).is_err());
        assert!(decode(u64::MAX).is_err());
        assert!(decode(encode(Kind::Whole, 3) ^ (1 << 36)).is_err(), "kind 17");
        assert!(decode((TAG << 40) | (10 << 32)).is_err(), "unknown kind");
        assert!(decode(TAG << 40).is_err(), "kind 0");
        let taken = encode_owned(Kind::Taken, 256, 0x1234);
        assert_eq!(decode(taken).unwrap(), (Kind::Taken, 256));
        assert_eq!(claim_owner(taken), 0x1234);
        // Only CLAIMED markers carry a claimer in bits 48..64.
        let marker = encode_claimed(4096, 17);
        assert_eq!(decode(marker).unwrap(), (Kind::Claimed, 4096));
        assert_eq!(claim_owner(marker), 17);
        assert_eq!(claim_owner(encode(Kind::Claimed, 8)), 0);
        assert!(decode(encode(Kind::Whole, 8) | (17 << 48)).is_err(), "high bits on a WHOLE header");
        assert_eq!(size(0), 8);
        assert_eq!(size(1), 16);
        assert_eq!(size(8), 16);
        assert_eq!(size(9), 24);
    }
}
