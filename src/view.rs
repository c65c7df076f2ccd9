//! [`View`]: one message borrowed in place from a ring, as handed out by the batch receive APIs.

use crate::ring::memory::{RawRing, RingMemory};
use std::marker::PhantomData;

/// One message of a received batch, still in the ring. Copy it out with
/// [`read_at`](View::read_at) or [`to_vec`](View::to_vec); its space goes back to the senders when
/// the batch that lent it is dropped.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ch = shmq::mpsc::Channel::anonymous(&shmq::Config::new())?;
/// let (tx, mut rx) = (ch.sender()?, ch.receiver()?);
/// tx.send(b"abc")?;
/// let batch = rx.recv_batch(16)?;
/// let view = batch.iter().next().unwrap();
/// assert_eq!((view.len(), view.to_vec()), (3, b"abc".to_vec()));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy)]
pub struct View<'a> {
    src: Src,
    off: usize,
    len: usize,
    _batch: PhantomData<&'a ()>,
}

/// Where the bytes are: in the ring, or in a buffer the receiver owns (a message assembled from
/// fragments).
#[derive(Clone, Copy)]
enum Src {
    Ring(RawRing),
    Heap(*const u8),
}

impl std::fmt::Debug for View<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").field("len", &self.len).finish()
    }
}

impl<'a> View<'a> {
    /// `off..off + len` of `ring` must be a committed message that stays owned by the receiver
    /// for `'a` (the caller's batch guarantees it).
    pub(crate) fn new(ring: RawRing, off: usize, len: usize) -> View<'a> {
        View { src: Src::Ring(ring), off, len, _batch: PhantomData }
    }

    /// A view of ordinary memory that outlives `'a`.
    pub(crate) fn heap(bytes: &'a [u8]) -> View<'a> {
        View { src: Src::Heap(bytes.as_ptr()), off: 0, len: bytes.len(), _batch: PhantomData }
    }

    fn heap_slice(&self, p: *const u8) -> &'a [u8] {
        // SAFETY: `Src::Heap` is only built by `heap` from a `&'a [u8]` of exactly `len` bytes.
        unsafe { std::slice::from_raw_parts(p, self.len) }
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy `dst.len()` bytes starting at `offset` out of the message.
    ///
    /// # Panics
    /// If the range is outside the message (as slice indexing would).
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) {
        assert!(
            offset <= self.len && dst.len() <= self.len - offset,
            "read of {} bytes at {offset} outside a {}-byte message",
            dst.len(),
            self.len
        );
        match self.src {
            Src::Ring(r) => r.read_bytes(self.off + offset, dst),
            Src::Heap(p) => dst.copy_from_slice(&self.heap_slice(p)[offset..offset + dst.len()]),
        }
    }

    /// Copy the whole message into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.copy_into(&mut v);
        v
    }

    /// Copy the message into `buf` (cleared first, allocation reused).
    pub fn copy_into(&self, buf: &mut Vec<u8>) {
        match self.src {
            Src::Ring(r) => r.read_to_vec(self.off, self.len, buf),
            Src::Heap(p) => {
                buf.clear();
                buf.extend_from_slice(self.heap_slice(p));
            }
        }
    }

    /// Pointer to the first payload byte, valid while the batch lives. The bytes are in shared
    /// memory: read them through raw pointers, not a long-lived slice.
    pub fn as_ptr(&self) -> *const u8 {
        match self.src {
            Src::Ring(r) => r.ptr_at(self.off, self.len),
            Src::Heap(p) => p,
        }
    }
}
