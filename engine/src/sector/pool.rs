//! The sector pool: where sectors come from and go back to, and the exact
//! memory limit (reservations and charges).
//!
//! # Pool
//! A [`Pool`] hands out [`Sector`]s of one size (a power of two, 4 KiB to
//! 1 MiB). Memory comes from private anonymous regions of at least 2 MiB
//! (`sync::Region`), never the process heap. Freed sectors go to one of
//! `2 × cores` *cache slots* chosen by the freeing thread (a per-thread cache:
//! each thread sticks to one slot, so slots are almost never contended), which
//! spill half their contents to the shared free list when they hold more than
//! [`CACHE_MAX`] sectors, and refill from it in batches of [`CACHE_BATCH`].
//! Regions are only unmapped when the pool is dropped (unmount frees
//! everything at once), but their free sectors' pages go back to the OS on
//! demand ([`Pool::trim`]): free sectors beyond a warm reserve are taken off
//! the shared free list, `madvise(MADV_DONTNEED)`d (the daemon's resident
//! memory goes down; the mapping stays), and kept on a *cold* list that is
//! used only when no warm sector is left (its pages are fresh zeros then,
//! which costs a first touch, as a new region would).
//!
//! # Memory limit (exact)
//! `used` counts bytes *charged*: sectors held by files, exact-size inline
//! buffers of small files, and outstanding [`Reservation`]s. A mutation first
//! reserves everything it may need with one compare-and-swap loop that never
//! lets `used` pass `limit` ([`Pool::reserve`]); if that fails it returns
//! `NoSpace` before touching anything. Sectors and inline buffers are then cut
//! from the reservation, and what is left over is returned when the
//! reservation drops. Dropping a sector or an inline buffer uncharges it.
//! Shrinking operations (truncate, punch hole) may take a *forced* reservation
//! of at most one sector beyond the limit, so that they never fail when full.
//!
//! # Fields and who touches them
//! * `used`, `peak`, `sectors`, `allocs`: atomics, any thread.
//! * cache slot `i`: under its own mutex, any thread (by convention the
//!   threads mapped to slot `i`).
//! * `shared` (warm and cold free lists, regions): under its mutex; taken only
//!   on a cache miss or spill, by [`Pool::trim`] and by `stats`, never while
//!   a slot lock is held. A sector being trimmed is on neither list: `trim`
//!   takes it off the warm list, gives its pages back, then puts it on the
//!   cold list, so no other thread can reach it meanwhile (loom
//!   `pool::trim_races_alloc_and_free`, injected bug `pool_trim_in_list`).
//! * A sector's bytes: see [`Sector`].
//!
//! loom: `loom-tests/tests/pool.rs` (no sector handed out twice, none leaked,
//! exact in-use count) and `limit_reservation.rs` (the limit is never passed
//! and `NoSpace` only when it is truly reached).

use crossbeam_utils::CachePadded;

use super::Sector;
use crate::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{thread_local, Arc, Mutex, RawMem, Region, REGION_BYTES};
use crate::Error;

/// Most sectors a cache slot keeps before spilling to the shared list.
pub const CACHE_MAX: usize = 64;
/// How many sectors move between a slot and the shared list at once.
pub const CACHE_BATCH: usize = 16;

/// A pool of fixed-size sectors with an exact byte limit. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    pub(super) inner: Arc<PoolInner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("sector_size", &self.inner.sector_size)
            .field("limit", &self.inner.limit)
            .field("used", &self.used())
            .finish()
    }
}

pub(super) struct PoolInner {
    pub(super) sector_size: usize,
    limit: u64,
    // Each hot counter on its own cache line: every reservation and every
    // sector hand-out or free touches `used` and `sectors`, from every
    // thread; sharing a line would make writers of unrelated files contend.
    used: CachePadded<AtomicU64>,
    peak: CachePadded<AtomicU64>,
    pub(super) sectors: CachePadded<AtomicU64>,
    allocs: CachePadded<AtomicU64>,
    // Drop order matters: slots and shared free lists hold pointers into
    // `shared.regions`; `RawMem` has no destructor, so any order is sound.
    slots: Box<[Mutex<Vec<RawMem>>]>,
    shared: Mutex<Shared>,
}

struct Shared {
    /// Free sectors whose pages are resident (warm).
    free: Vec<RawMem>,
    /// Free sectors whose pages were given back to the OS ([`Pool::trim`]).
    cold: Vec<RawMem>,
    regions: Vec<Region>,
    mapped: u64,
}

/// A snapshot of the pool's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Bytes of one sector.
    pub sector_size: u64,
    /// The byte limit.
    pub limit: u64,
    /// Bytes charged (sectors, inline buffers, outstanding reservations).
    pub used: u64,
    /// Highest `used` seen.
    pub peak: u64,
    /// Sectors held by files.
    pub sectors: u64,
    /// Sectors handed out since the pool was made.
    pub allocs: u64,
    /// Bytes of private memory mapped from the OS.
    pub mapped: u64,
    /// Bytes of free sectors kept resident for reuse (the warm reserve:
    /// per-thread caches and the shared free list).
    pub free_warm: u64,
    /// Bytes of free sectors whose pages were given back to the OS (mapped,
    /// not resident).
    pub returned: u64,
}

thread_local! {
    #[allow(clippy::missing_const_for_thread_local)] // loom's thread_local! has no const form
    static SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);
}
static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn my_slot(n: usize) -> usize {
    SLOT.with(|s| {
        let mut v = s.load(Ordering::Relaxed);
        if v == usize::MAX {
            v = NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            s.store(v, Ordering::Relaxed);
        }
        v % n
    })
}

impl Pool {
    /// A pool of sectors of `sector_size` bytes (a power of two) with a limit
    /// of `limit` bytes, with `slots` per-thread cache slots.
    pub fn new(sector_size: usize, limit: u64, slots: usize) -> Pool {
        let slots = (0..slots.max(1)).map(|_| Mutex::new(Vec::new())).collect();
        Pool {
            inner: Arc::new(PoolInner {
                sector_size,
                limit,
                used: CachePadded::new(AtomicU64::new(0)),
                peak: CachePadded::new(AtomicU64::new(0)),
                sectors: CachePadded::new(AtomicU64::new(0)),
                allocs: CachePadded::new(AtomicU64::new(0)),
                slots,
                shared: Mutex::new(Shared { free: Vec::new(), cold: Vec::new(), regions: Vec::new(), mapped: 0 }),
            }),
        }
    }

    /// Bytes of one sector.
    pub fn sector_size(&self) -> usize {
        self.inner.sector_size
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Acquire)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// The counters.
    pub fn stats(&self) -> PoolStats {
        let i = &self.inner;
        let ss = i.sector_size as u64;
        let sectors = i.sectors.load(Ordering::Acquire);
        let (mapped, returned) = {
            let sh = i.shared.lock();
            (sh.mapped, sh.cold.len() as u64 * ss)
        };
        PoolStats {
            sector_size: ss,
            limit: i.limit,
            used: i.used.load(Ordering::Acquire),
            peak: i.peak.load(Ordering::Relaxed),
            sectors,
            allocs: i.allocs.load(Ordering::Relaxed),
            mapped,
            // Every mapped sector is held by a file, cold, or warm (in a
            // slot or on the shared list), so the warm bytes follow without
            // taking every slot's lock. A sector moving between a list and
            // its holder at this instant counts as warm.
            free_warm: mapped.saturating_sub(sectors * ss + returned),
            returned,
        }
    }

    /// Gives the pages of free sectors on the shared list beyond `keep` warm
    /// bytes back to the OS; returns the bytes given back. The per-thread
    /// caches (at most [`CACHE_MAX`] sectors each) stay warm.
    ///
    /// Cost: one `madvise` per run of adjacent sectors, under the shared
    /// lock's protection only for the list moves (the sectors trimmed are
    /// owned by this call meanwhile).
    pub fn trim(&self, keep: u64) -> u64 {
        let i = &self.inner;
        let ss = i.sector_size as u64;
        let keep_n = usize::try_from(keep / ss).unwrap_or(usize::MAX);
        #[cfg(not(loom_bug = "pool_trim_in_list"))]
        {
            let mut batch = {
                let mut sh = i.shared.lock();
                let n = sh.free.len().saturating_sub(keep_n);
                let at = sh.free.len() - n;
                sh.free.split_off(at)
            };
            if batch.is_empty() {
                return 0;
            }
            // SAFETY: `batch` was taken off the free list under its lock, so
            // this call is its only owner: no `Sector` holds these sectors
            // and no list hands them out until they are pushed below.
            unsafe { crate::sync::discard(&mut batch) };
            let n = batch.len() as u64;
            i.shared.lock().cold.append(&mut batch);
            n * ss
        }
        // Injected bug (loom-tests/tests/pool.rs): give back the pages of
        // sectors that are still on the free list, where another thread can
        // take one and write it meanwhile.
        #[cfg(loom_bug = "pool_trim_in_list")]
        {
            let (ptr, n, at) = {
                let sh = i.shared.lock();
                let n = sh.free.len().saturating_sub(keep_n);
                (sh.free.as_ptr(), n, sh.free.len() - n)
            };
            for k in at..at + n {
                // SAFETY: none: this is the bug the model must catch.
                unsafe { (*ptr.add(k)).discard_one() };
            }
            n as u64 * ss
        }
    }

    /// Reserves `bytes` against the limit.
    ///
    /// # Errors
    /// [`Error::NoSpace`] if `used + bytes` would pass the limit; nothing is
    /// charged then.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, Error> {
        let used = &self.inner.used;
        let mut cur = used.load(Ordering::Relaxed);
        loop {
            let next = cur.checked_add(bytes).filter(|&n| n <= self.inner.limit).ok_or(Error::NoSpace)?;
            #[cfg(not(loom_bug = "pool_reserve_racy"))]
            let won = used.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed);
            // Injected bug (loom-tests/tests/limit_reservation.rs): check, then add.
            #[cfg(loom_bug = "pool_reserve_racy")]
            let won = Ok::<u64, u64>(used.fetch_add(bytes, Ordering::AcqRel));
            match won {
                Ok(_) => {
                    self.raise_peak(next);
                    return Ok(Reservation { pool: self.clone(), bytes });
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Reserves `bytes` even past the limit (for shrinking operations that
    /// need at most one sector of scratch space and must not fail when full).
    pub fn reserve_forced(&self, bytes: u64) -> Reservation {
        let next = self.inner.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.raise_peak(next);
        Reservation { pool: self.clone(), bytes }
    }

    /// Raises `peak` to `v`; a plain load when it is already higher (the
    /// usual case once a mount is warm), so reservations do not all write
    /// the peak's cache line.
    fn raise_peak(&self, v: u64) {
        if self.inner.peak.load(Ordering::Relaxed) < v {
            self.inner.peak.fetch_max(v, Ordering::Relaxed);
        }
    }

    pub(super) fn uncharge(&self, bytes: u64) {
        self.inner.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Takes raw memory for one sector: own slot, then the shared list, then a
    /// new region. `None` if the OS refuses memory.
    fn take_mem(&self) -> Option<RawMem> {
        let i = &self.inner;
        let slot = &i.slots[my_slot(i.slots.len())];
        if let Some(m) = slot.lock().pop() {
            return Some(m);
        }
        let mut batch = {
            let mut sh = i.shared.lock();
            if sh.free.is_empty() && !sh.cold.is_empty() {
                // Sectors given back to the OS: zero pages on first touch.
                let keep = sh.cold.len().saturating_sub(CACHE_BATCH);
                let mut c = sh.cold.split_off(keep);
                sh.free.append(&mut c);
            }
            if sh.free.is_empty() {
                let bytes = REGION_BYTES.max(i.sector_size);
                let mut region = Region::map(bytes)?;
                sh.free.extend(region.carve(i.sector_size));
                sh.regions.push(region);
                sh.mapped += bytes as u64;
            }
            let keep = sh.free.len().saturating_sub(CACHE_BATCH);
            sh.free.split_off(keep)
        };
        let m = batch.pop();
        if !batch.is_empty() {
            slot.lock().append(&mut batch);
        }
        m
    }

    pub(super) fn put_mem(&self, m: RawMem) {
        let i = &self.inner;
        let slot = &i.slots[my_slot(i.slots.len())];
        let spill = {
            let mut s = slot.lock();
            s.push(m);
            if s.len() > CACHE_MAX {
                let keep = s.len() - CACHE_MAX / 2;
                Some(s.split_off(keep))
            } else {
                None
            }
        };
        if let Some(spill) = spill {
            i.shared.lock().free.extend(spill);
        }
    }

    /// Counts free sectors in slots and the shared list (for tests and checks).
    pub fn free_sectors(&self) -> usize {
        let i = &self.inner;
        let in_slots: usize = i.slots.iter().map(|s| s.lock().len()).sum();
        let sh = i.shared.lock();
        in_slots + sh.free.len() + sh.cold.len()
    }
}

/// Bytes reserved against the limit; what is not used is returned on drop.
#[derive(Debug)]
pub struct Reservation {
    pool: Pool,
    bytes: u64,
}

impl Reservation {
    /// Bytes still reserved.
    pub fn remaining(&self) -> u64 {
        self.bytes
    }

    /// Cuts one sector out of the reservation.
    ///
    /// # Errors
    /// [`Error::NoSpace`] if less than a sector is left in the reservation;
    /// [`Error::OutOfMemory`] if the OS refuses memory for a new region.
    /// Callers take all their sectors before mutating.
    pub fn sector(&mut self) -> Result<Arc<Sector>, Error> {
        let size = self.pool.inner.sector_size as u64;
        if self.bytes < size {
            return Err(Error::NoSpace);
        }
        let mem = self.pool.take_mem().ok_or(Error::OutOfMemory)?;
        self.bytes -= size;
        self.pool.inner.sectors.fetch_add(1, Ordering::AcqRel);
        self.pool.inner.allocs.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Sector { mem: Some(mem), init: AtomicU32::new(0), pool: self.pool.clone() }))
    }

    /// Moves `other`'s bytes into this reservation (both from one pool).
    pub fn join(&mut self, mut other: Reservation) {
        debug_assert!(Arc::ptr_eq(&self.pool.inner, &other.pool.inner), "reservations of two pools");
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Cuts `bytes` out of the reservation as a [`Charge`] that uncharges on drop.
    ///
    /// # Errors
    /// [`Error::NoSpace`] if fewer bytes are left.
    pub fn charge(&mut self, bytes: u64) -> Result<Charge, Error> {
        if self.bytes < bytes {
            return Err(Error::NoSpace);
        }
        self.bytes -= bytes;
        Ok(Charge { pool: self.pool.clone(), bytes })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.pool.uncharge(self.bytes);
        }
    }
}

/// Bytes charged against the limit for as long as this lives.
#[derive(Debug)]
pub struct Charge {
    pool: Pool,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.pool.uncharge(self.bytes);
    }
}
