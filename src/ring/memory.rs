//! The ring's data bytes, behind a small trait so that loom models can track every access.
//!
//! Production code reaches the bytes of a shared mapping through raw pointers only: never a
//! `&[u8]` over memory another process may write. Loom models use a vector of loom cells, so a
//! read that is not ordered after the write it should see is reported as a data race.

use crate::sync::{AtomicU64, Ordering};

/// The data area of a ring. Offsets are relative to its start; every access stays inside
/// `[0, capacity)` (checked: a violation is a shmq bug, not bad input, since every offset is
/// derived from validated positions).
pub trait RingMemory {
    /// Copy `src` to `off..off + src.len()`.
    fn write_bytes(&self, off: usize, src: &[u8]);
    /// Copy `off..off + dst.len()` to `dst`.
    fn read_bytes(&self, off: usize, dst: &mut [u8]);
    /// Write an aligned u64 (a record header).
    fn write_word(&self, off: usize, v: u64);
    /// Read an aligned u64 (a record header).
    fn read_word(&self, off: usize) -> u64;
    /// Atomically load the aligned word at `off` (MPSC record headers, MPMC cell headers: words
    /// that another side reads or writes concurrently).
    fn load_word(&self, off: usize, order: Ordering) -> u64;
    /// Atomically store the aligned word at `off`.
    fn store_word(&self, off: usize, v: u64, order: Ordering);
    /// Zero `off..off + len` (8-aligned): MPSC consumers wipe what they consumed, so a header
    /// word reads 0 until a producer claims it.
    fn zero(&self, off: usize, len: usize);
}

#[inline]
fn check(off: usize, len: usize, cap: usize) {
    assert!(off <= cap && len <= cap - off, "shmq bug: ring access {off}+{len} outside {cap}");
}

/// A data area inside a mapping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawRing {
    base: *mut u8,
    cap: usize,
}

// SAFETY: `RawRing` is a pointer into a shared mapping that its owner keeps alive; it is only
// dereferenced through `RingMemory`, whose callers follow the ring protocol (each byte range is
// owned by exactly one side at a time).
unsafe impl Send for RawRing {}
// SAFETY: as above; no method takes `&mut self`, and concurrent accesses are to disjoint ranges.
unsafe impl Sync for RawRing {}

impl RawRing {
    /// # Safety
    /// `base..base + cap` must be a mapping that stays valid for as long as this value is used,
    /// `base` must be 8-byte aligned and `cap` a power of two.
    pub(crate) unsafe fn new(base: *mut u8, cap: usize) -> RawRing {
        debug_assert!(cap.is_power_of_two() && (base as usize) % 8 == 0);
        RawRing { base, cap }
    }

    /// Pointer to `off` (for the zero-copy APIs). The caller must own `off..off + len`.
    pub(crate) fn ptr_at(&self, off: usize, len: usize) -> *mut u8 {
        check(off, len, self.cap);
        // SAFETY: `off <= cap` (checked), so the result stays within the mapping.
        unsafe { self.base.add(off) }
    }
}

impl RawRing {
    /// Replace `buf`'s contents with `off..off + len` of the ring, without zero-filling first.
    pub(crate) fn read_to_vec(&self, off: usize, len: usize, buf: &mut Vec<u8>) {
        let src = self.ptr_at(off, len);
        buf.clear();
        buf.reserve(len);
        // SAFETY: `src..src + len` is in bounds (ptr_at checks) and is a committed range the
        // consumer owns until it releases it; `buf` has capacity for `len` bytes after `reserve`
        // and cannot overlap the mapping; the copy initialises exactly the `len` bytes that
        // `set_len` then exposes.
        unsafe {
            std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), len);
            buf.set_len(len);
        }
    }
}

impl RingMemory for RawRing {
    #[inline]
    fn write_bytes(&self, off: usize, src: &[u8]) {
        let dst = self.ptr_at(off, src.len());
        // SAFETY: in bounds (ptr_at checks); the range belongs to the producer until it commits,
        // so nobody reads it concurrently; `src` is ordinary memory and cannot overlap the ring.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) }
    }
    #[inline]
    fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        let src = self.ptr_at(off, dst.len());
        // SAFETY: in bounds; the range is committed and not yet released, so a well-behaved
        // producer does not write it. A hostile one can only change byte values, never bounds.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) }
    }
    #[inline]
    fn write_word(&self, off: usize, v: u64) {
        let p = self.ptr_at(off, 8) as *mut u64;
        // SAFETY: in bounds and 8-aligned (base is 8-aligned, offsets are record-aligned).
        unsafe { std::ptr::write_volatile(p, v.to_le()) }
    }
    #[inline]
    fn read_word(&self, off: usize) -> u64 {
        let p = self.ptr_at(off, 8) as *const u64;
        // SAFETY: in bounds and 8-aligned. Read once into a local, so the value we validate is
        // the value we use, whatever a hostile peer writes afterwards.
        u64::from_le(unsafe { std::ptr::read_volatile(p) })
    }
    #[inline]
    fn load_word(&self, off: usize, order: Ordering) -> u64 {
        self.atomic_at(off).load(order)
    }
    #[inline]
    fn store_word(&self, off: usize, v: u64, order: Ordering) {
        self.atomic_at(off).store(v, order)
    }
    #[inline]
    fn zero(&self, off: usize, len: usize) {
        let p = self.ptr_at(off, len);
        // SAFETY: in bounds (ptr_at checks); the range was consumed and is not yet released to
        // producers, so only this consumer touches it.
        unsafe { std::ptr::write_bytes(p, 0, len) }
    }
}

impl RawRing {
    #[inline]
    fn atomic_at(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0, "shmq bug: unaligned atomic word at {off}");
        let p = self.ptr_at(off, 8) as *const AtomicU64;
        // SAFETY: in bounds and 8-aligned (checked above; base is 8-aligned). AtomicU64 has the
        // size and alignment of u64 and accepts any bit pattern; the mapping outlives `self`'s
        // users (see `RawRing::new`). Other processes access these words atomically too.
        unsafe { &*p }
    }
}

/// Heap-backed ring for loom models: every byte is a loom cell, and every aligned word also has
/// a loom atomic for the atomic header operations (the two views are kept apart: the protocols
/// never access one offset both ways at once, and loom checks each view's own ordering).
#[cfg(shmq_loom)]
#[doc(hidden)]
pub struct LoomRing {
    cells: Vec<loom::cell::UnsafeCell<u8>>,
    words: Vec<AtomicU64>,
}

// SAFETY: like the shared mapping it stands for, a `LoomRing` is accessed from several threads
// at once, each owning a disjoint byte range by the ring protocol. Every access goes through a
// loom cell, so loom reports any pair of accesses the protocol fails to order: that check is
// the point of the model.
#[cfg(shmq_loom)]
unsafe impl Sync for LoomRing {}

#[cfg(shmq_loom)]
impl LoomRing {
    pub fn new(cap: usize) -> LoomRing {
        assert!(cap.is_power_of_two());
        LoomRing {
            cells: (0..cap).map(|_| loom::cell::UnsafeCell::new(0)).collect(),
            words: (0..cap / 8).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

#[cfg(shmq_loom)]
impl RingMemory for LoomRing {
    fn write_bytes(&self, off: usize, src: &[u8]) {
        check(off, src.len(), self.cells.len());
        for (i, b) in src.iter().enumerate() {
            // SAFETY: loom checks that no other access to this cell is concurrent.
            self.cells[off + i].with_mut(|p| unsafe { *p = *b });
        }
    }
    fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        check(off, dst.len(), self.cells.len());
        for (i, b) in dst.iter_mut().enumerate() {
            // SAFETY: loom checks that no write to this cell is concurrent.
            *b = self.cells[off + i].with(|p| unsafe { *p });
        }
    }
    fn write_word(&self, off: usize, v: u64) {
        self.write_bytes(off, &v.to_le_bytes());
    }
    fn read_word(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        self.read_bytes(off, &mut b);
        u64::from_le_bytes(b)
    }
    fn load_word(&self, off: usize, order: Ordering) -> u64 {
        check(off, 8, self.cells.len());
        self.words[off / 8].load(order)
    }
    fn store_word(&self, off: usize, v: u64, order: Ordering) {
        check(off, 8, self.cells.len());
        self.words[off / 8].store(v, order)
    }
    fn zero(&self, off: usize, len: usize) {
        self.write_bytes(off, &vec![0; len]);
        for w in off / 8..(off + len) / 8 {
            self.words[w].store(0, Ordering::Relaxed);
        }
    }
}
