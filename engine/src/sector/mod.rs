//! Sectors: fixed-size blocks of file data (this file: [`Sector`] and the
//! contract for who may touch which of its bytes), the pool they come from
//! and the exact memory limit (`pool.rs`: [`Pool`], [`Reservation`],
//! [`Charge`]), and the persistent table that maps a file's sector indices
//! to sectors (`table.rs`).
//!
//! A sector's bytes: see [`Sector`]; the pool's fields and who touches
//! them: `pool.rs`.

mod pool;
pub mod table;

pub use pool::{Charge, Pool, PoolStats, Reservation, CACHE_BATCH, CACHE_MAX};

use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sync::{Lent, RawMem};

/// One sector of file data.
///
/// # Contract (who may touch which bytes)
/// A sector is shared (`Arc`) by every table version that reaches it. `init`
/// is the number of leading bytes that have ever been written (or zeroed);
/// bytes at `init..` have never been exposed to any reader, because a table
/// only lets readers see bytes below the file size it was published with, and
/// a writer raises `init` past every byte before a table that exposes it is
/// published. Hence:
///
/// 1. Readers read only `0..visible` of a sector, where `visible <= init` at
///    the time the table they loaded was published.
/// 2. The file's runner (the one thread applying a batch) may write bytes at
///    `init..` in place even while readers use the sector: no reader reads
///    there (rule 1), so there is no data race.
/// 3. The runner may write bytes below `init` only if the sector is
///    *exclusive* (`Arc` count 1 along the whole table path, so no other
///    table reaches it: neither the published one nor an older one a reader
///    still holds); otherwise it copies the sector first (copy-on-write).
///    `init` never goes down (truncation leaves it), so rule 2 never
///    reaches below a byte that some version showed.
/// 4. `init` itself is only read and written by the runner (relaxed atomics;
///    the runner role is handed over with acquire/release by the actor).
///
/// Rules 1–3 hold for as long as a reader holds a table, not only at the
/// moment it copies: that is what lets [`Sector::lend`] hand out slices of
/// the memory itself for the length of a `read_with`.
///
/// loom: `table_publish.rs` (no torn read, no byte written while readable),
/// `reclaim.rs` (freed only after the last reader) and `read_with.rs`
/// (no byte written while lent).
pub struct Sector {
    mem: Option<RawMem>,
    init: AtomicU32,
    pool: Pool,
}

impl std::fmt::Debug for Sector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sector").field("init", &self.init()).finish()
    }
}

impl Sector {
    fn mem(&self) -> &RawMem {
        // `mem` is only `None` inside `drop`.
        self.mem.as_ref().expect("sector memory present until drop")
    }

    /// Bytes in the sector.
    pub fn len(&self) -> usize {
        self.mem().len()
    }

    /// Always false (sectors are never empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The initialised prefix length (runner only).
    pub fn init(&self) -> usize {
        self.init.load(Ordering::Relaxed) as usize
    }

    pub(crate) fn set_init(&self, v: usize) {
        self.init.store(v as u32, Ordering::Relaxed);
    }

    /// Copies `buf.len()` bytes at `off` out of the sector (nothing if the
    /// range is out of bounds).
    ///
    /// # Safety
    /// No thread writes any byte of `off..off + buf.len()` while this runs.
    /// That holds for a reader holding a table that exposes the range
    /// (contract rule 1: the runner writes only past `init` or in sectors no
    /// published table reaches), and for the runner itself.
    pub unsafe fn read(&self, off: usize, buf: &mut [u8]) {
        let m = self.mem();
        if off.checked_add(buf.len()).is_some_and(|e| e <= m.len()) {
            // SAFETY:
            //  [1] in bounds: checked just above;
            //  [2] no concurrent writer of these bytes: the caller's contract.
            //  Exercised by loom `table_publish` (bytes are loom cells there).
            unsafe { m.read(off, buf) }
        }
    }

    /// Lends the `len` bytes at `off` as a slice of the sector memory itself
    /// (no copy), for as long as `self` is borrowed: the zero-copy sibling of
    /// [`Sector::read`].
    ///
    /// # Panics
    /// If the range is out of bounds.
    ///
    /// # Safety
    /// No thread writes any byte of `off..off + len` while the returned value
    /// lives (a `&[u8]` over bytes another thread writes is a data race).
    /// That holds for a reader that holds a table exposing the range for at
    /// least as long as the slice lives (contract rules 1–3: the runner
    /// writes in place only past `init`, which no table exposes, or in a
    /// sector no published *or held* table reaches; see
    /// `FileData::read_with`), and for the runner itself.
    pub unsafe fn lend(&self, off: usize, len: usize) -> Lent<'_> {
        let m = self.mem();
        assert!(off.checked_add(len).is_some_and(|e| e <= m.len()), "lend past the sector's end");
        // SAFETY:
        //  [1] in bounds: asserted just above;
        //  [2] no writer of these bytes while the `Lent` lives: the caller's
        //      contract, and the `Lent` borrows `self`, so it cannot outlive
        //      the sector (or the memory under it).
        //  Exercised by loom `read_with` (a `Lent` keeps the cells marked as
        //  being read there until it drops).
        unsafe { m.lend(off, len) }
    }

    /// Writes `data` at `off` of a sector the loom pool model owns alone, to
    /// mark it. Only under `--cfg loom`.
    ///
    /// # Safety
    /// As for [`Sector::write`]: no other thread reads or writes the range.
    #[cfg(loom)]
    #[doc(hidden)]
    pub unsafe fn model_write(&self, off: usize, data: &[u8]) {
        // SAFETY: the caller's contract is `write`'s.
        unsafe { self.write(off, data) }
    }

    /// Writes `data` at `off` (nothing if the range is out of bounds).
    ///
    /// # Safety
    /// No other thread reads or writes any byte of `off..off + data.len()`
    /// while this runs. For the file's runner (the only writer of a file's
    /// sectors) that means contract rule 2 or 3: the range is at or past
    /// `init` (no table exposes it), or no published table reaches the
    /// sector (a fresh sector, or one exclusive along its table path).
    pub(crate) unsafe fn write(&self, off: usize, data: &[u8]) {
        let m = self.mem();
        if off.checked_add(data.len()).is_some_and(|e| e <= m.len()) {
            // SAFETY:
            //  [1] in bounds: checked just above;
            //  [2] exclusive access to the range: the caller's contract.
            //  Exercised by loom `table_publish`.
            unsafe { m.write(off, data) }
        }
    }

    /// Copies `len` bytes at `off` from `src` into `self` at the same offset
    /// (nothing if either range is out of bounds).
    ///
    /// # Safety
    /// `self` and `src` are distinct sectors; `self`'s range is the caller's
    /// alone as for [`Sector::write`]; nobody writes `src`'s range while
    /// this runs (it is below `src`'s `init` in a sector a published table
    /// may reach, which only readers read: rule 3 forbids writing it).
    pub(crate) unsafe fn copy_from(&self, src: &Sector, off: usize, len: usize) {
        let (d, s) = (self.mem(), src.mem());
        if len > 0 && off.checked_add(len).is_some_and(|e| e <= d.len() && e <= s.len()) {
            // SAFETY:
            //  [1] in bounds for both: checked just above;
            //  [2] no concurrent access to `self`'s range and no writer of
            //      `src`'s range: the caller's contract;
            //  [3] distinct sectors (caller), so the ranges do not overlap.
            //  Exercised by loom `table_publish::partial_overwrite`.
            unsafe { d.copy_from(off, s, len) }
        }
    }

    /// Zeros `len` bytes at `off` (nothing if out of bounds).
    ///
    /// # Safety
    /// As for [`Sector::write`].
    pub(crate) unsafe fn zero(&self, off: usize, len: usize) {
        let m = self.mem();
        if off.checked_add(len).is_some_and(|e| e <= m.len()) && len > 0 {
            // SAFETY: in bounds (checked above); exclusive access to the
            // range is the caller's contract, as in `write`.
            unsafe { m.zero(off, len) }
        }
    }
}

impl Drop for Sector {
    fn drop(&mut self) {
        if let Some(m) = self.mem.take() {
            let inner = &self.pool.inner;
            inner.sectors.fetch_sub(1, Ordering::AcqRel);
            self.pool.put_mem(m);
            self.pool.uncharge(inner.sector_size as u64);
        }
    }
}
