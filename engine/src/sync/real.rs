//! Real primitives: std, arc-swap, dashmap, crossbeam-channel, mmapped sector memory.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hash::Hash;

pub use std::sync::atomic;
pub use std::sync::{Arc, Weak};
pub use std::thread_local;

/// Hints that the caller is spinning.
pub fn spin_loop() {
    std::hint::spin_loop();
}

/// A mutex without poisoning: a panic while it was held does not make later
/// `lock()` calls fail (the engine's state stays consistent because every
/// mutation is validated before it is applied).
#[derive(Debug, Default)]
pub struct Mutex<T>(std::sync::Mutex<T>);

/// Guard of [`Mutex`].
pub type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A new mutex holding `value`.
    pub fn new(value: T) -> Self {
        Mutex(std::sync::Mutex::new(value))
    }
    /// Locks, ignoring poison.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A condition variable for [`Mutex`].
#[derive(Debug, Default)]
pub struct Condvar(std::sync::Condvar);

impl Condvar {
    /// A new condition variable.
    pub fn new() -> Self {
        Condvar(std::sync::Condvar::new())
    }
    /// Blocks until notified (spurious wake-ups possible: loop on a condition).
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(guard).unwrap_or_else(|p| p.into_inner())
    }
    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// A reader-writer lock without poisoning.
#[derive(Debug, Default)]
pub struct RwLock<T>(std::sync::RwLock<T>);

/// Shared guard of [`RwLock`].
pub type RwLockReadGuard<'a, T> = std::sync::RwLockReadGuard<'a, T>;
/// Exclusive guard of [`RwLock`].
pub type RwLockWriteGuard<'a, T> = std::sync::RwLockWriteGuard<'a, T>;

impl<T> RwLock<T> {
    /// A new lock holding `value`.
    pub fn new(value: T) -> Self {
        RwLock(std::sync::RwLock::new(value))
    }
    /// Shared access, ignoring poison.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
    /// Exclusive access, ignoring poison.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A published `Arc<T>`: readers `load` without locking, one writer `store`s.
///
/// # Consistency
/// Call [`ArcSwap::load`] once per operation and keep the guard: two loads
/// may see two different versions.
pub struct ArcSwap<T>(arc_swap::ArcSwap<T>);

/// A short-lived read guard of an [`ArcSwap`]; keep it on the stack only.
pub type Guard<T> = arc_swap::Guard<Arc<T>>;

impl<T> ArcSwap<T> {
    /// Publishes `value` as the first version.
    pub fn new(value: Arc<T>) -> Self {
        ArcSwap(arc_swap::ArcSwap::new(value))
    }
    /// The current version, without taking a lock.
    pub fn load(&self) -> Guard<T> {
        self.0.load()
    }
    /// The current version as an owned `Arc` (may outlive blocking steps).
    pub fn load_full(&self) -> Arc<T> {
        self.0.load_full()
    }
    /// Publishes a new version. The old one is freed when its last reader is done.
    pub fn store(&self, value: Arc<T>) {
        self.0.store(value)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for ArcSwap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ArcSwap").field(&self.0.load()).finish()
    }
}

/// A concurrent hash map whose methods never hand out a guard.
///
/// **Locking:** every method locks one shard for the duration of the call
/// only; values are cloned out, so no guard outlives the call (dashmap #74, #369).
pub struct ShardMap<K, V>(dashmap::DashMap<K, V>);

impl<K: Eq + Hash, V: Clone> ShardMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        ShardMap(dashmap::DashMap::new())
    }
    /// A clone of the value for `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        self.0.get(key).map(|r| r.value().clone())
    }
    /// Inserts, returning the previous value.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        self.0.insert(key, value)
    }
    /// Removes and returns the value for `key`.
    pub fn remove(&self, key: &K) -> Option<V> {
        self.0.remove(key).map(|(_, v)| v)
    }
    /// Removes the value for `key` if `pred` holds for it, atomically.
    pub fn remove_if(&self, key: &K, pred: impl FnOnce(&V) -> bool) -> Option<V> {
        self.0.remove_if(key, |_, v| pred(v)).map(|(_, v)| v)
    }
    /// The number of entries (a snapshot; may be stale).
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether the map is empty (a snapshot; may be stale).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Clones out every value (for teardown and checks, not for hot paths).
    pub fn values(&self) -> Vec<V> {
        self.0.iter().map(|r| r.value().clone()).collect()
    }
}

impl<K: Eq + Hash, V: Clone> Default for ShardMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// A multi-producer FIFO mailbox (one consumer at a time, by protocol).
///
/// The channel is created on the first `send`: most files are never written
/// by two threads at once, and an idle crossbeam channel costs a few hundred
/// bytes per inode.
pub struct Mailbox<T> {
    chan: std::sync::OnceLock<(crossbeam_channel::Sender<T>, crossbeam_channel::Receiver<T>)>,
}

impl<T> Mailbox<T> {
    /// An empty, unbounded mailbox (allocates nothing yet).
    pub fn new() -> Self {
        Mailbox { chan: std::sync::OnceLock::new() }
    }
    /// Enqueues `msg`. Never blocks.
    pub fn send(&self, msg: T) {
        let (tx, _) = self.chan.get_or_init(crossbeam_channel::unbounded);
        // Both ends live in `self`, so the channel is never disconnected.
        let _ = tx.send(msg);
    }
    /// Dequeues one message if one is there.
    pub fn try_recv(&self) -> Option<T> {
        self.chan.get()?.1.try_recv().ok()
    }
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Size of one region of sector memory mapped at a time.
pub const REGION_BYTES: usize = 2 << 20;

/// A region of private anonymous memory from which sectors are carved.
///
/// Sector memory never comes from the process heap: each region is its own
/// mapping, returned to the OS when the pool is dropped.
pub struct Region {
    map: memmap2::MmapMut,
}

impl Region {
    /// Maps `bytes` of fresh zeroed memory. `None` if the OS refuses.
    pub fn map(bytes: usize) -> Option<Region> {
        crate::fault::fail_point!("region.map", |_| None);
        let map = memmap2::MmapOptions::new().len(bytes).map_anon().ok()?;
        #[cfg(target_os = "linux")]
        {
            // Best effort: transparent huge pages where the system allows.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        Some(Region { map })
    }
    /// Splits the region into `RawMem`s of `sector` bytes each.
    ///
    /// The returned pointers stay valid while `self` lives; the caller (the
    /// pool) keeps the region until every sector cut from it is gone.
    pub fn carve(&mut self, sector: usize) -> Vec<RawMem> {
        let base = self.map.as_mut_ptr();
        let n = self.map.len() / sector;
        (0..n)
            .map(|i| RawMem {
                // Offsets stay inside the mapping: i < len / sector.
                ptr: base.wrapping_add(i * sector),
                len: sector,
            })
            .collect()
    }
}

/// Sector bytes lent to a reader by [`RawMem::lend`]: the sector memory
/// itself. (Under loom, a copy that keeps the cells marked as being read
/// until it drops, so loom reports a write while it lives.)
pub type Lent<'a> = &'a [u8];

/// The bytes of one sector: a pointer into a [`Region`] and a length.
///
/// A `RawMem` is owned by exactly one `Sector` (or one free list) at a time.
/// Whoever reads or writes it must guarantee that no other thread writes an
/// overlapping byte range at the same time: the sector table protocol
/// (see `crate::sector`) provides that guarantee.
#[derive(Debug)]
pub struct RawMem {
    ptr: *mut u8,
    len: usize,
}

// SAFETY:
//  [1] `RawMem` is a unique handle to `len` bytes inside a mapping owned by the
//      pool, which outlives it (the pool keeps regions alive while any sector
//      exists: sectors hold an `Arc` to the pool).
//  [2] Concurrent access is only through `read`/`write`/`zero`, whose callers
//      guarantee that no two threads touch an overlapping range when one of
//      them writes (the table protocol; checked by the loom models
//      `table_publish` and `reclaim`, where this type is one loom cell per byte).
unsafe impl Send for RawMem {}
// SAFETY: as for `Send`; shared references only permit the documented accessors.
unsafe impl Sync for RawMem {}

impl RawMem {
    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the sector has zero length (never, for real sectors).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Copies `buf.len()` bytes starting at `off` into `buf`.
    ///
    /// # Safety
    /// `off + buf.len() <= self.len()`, and no thread writes any of those bytes
    /// while this runs.
    pub unsafe fn read(&self, off: usize, buf: &mut [u8]) {
        debug_assert!(off + buf.len() <= self.len);
        // SAFETY:
        //  [1] the range is in bounds (caller's contract), so `ptr + off` and the
        //      next `buf.len()` bytes are inside the live mapping;
        //  [2] no concurrent writer (caller's contract), so this is no data race;
        //  [3] `buf` is a distinct `&mut`, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), buf.as_mut_ptr(), buf.len()) }
    }
    /// The `len` bytes at `off`, lent out as a slice of the sector memory
    /// itself (no copy), for as long as `self` is borrowed.
    ///
    /// # Safety
    /// `off + len <= self.len()`, and no thread writes any of those bytes
    /// while the returned slice lives (a `&[u8]` over memory another thread
    /// writes is a data race, even if nobody looks at those bytes).
    pub unsafe fn lend(&self, off: usize, len: usize) -> Lent<'_> {
        debug_assert!(off + len <= self.len);
        // SAFETY:
        //  [1] `ptr + off .. ptr + off + len` is inside the live mapping (the
        //      range is in bounds by the caller's contract; the pool keeps the
        //      region mapped while this `RawMem` exists, and the returned
        //      lifetime is that of `&self`);
        //  [2] the bytes are initialised: the mapping is anonymous (zero
        //      pages) and only ever holds bytes;
        //  [3] no thread writes them while the slice lives: the caller's
        //      contract (the read path's argument: engine/src/data.rs,
        //      `FileData::read_with`; loom `read_with`, where a `Lent` keeps
        //      the cells marked as being read until it drops).
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
    }
    /// Copies `data` into the sector at `off`.
    ///
    /// # Safety
    /// `off + data.len() <= self.len()`, and no other thread reads or writes
    /// any of those bytes while this runs.
    pub unsafe fn write(&self, off: usize, data: &[u8]) {
        debug_assert!(off + data.len() <= self.len);
        // SAFETY: as in `read`, with exclusive access to the range by contract.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) }
    }
    /// Copies `len` bytes at `off` from `src` (another sector) to `self` at `off`.
    ///
    /// # Safety
    /// Both ranges in bounds, `self` and `src` distinct, no other thread
    /// writes either range or reads `self`'s range while this runs.
    pub unsafe fn copy_from(&self, off: usize, src: &RawMem, len: usize) {
        debug_assert!(off + len <= self.len && off + len <= src.len);
        // SAFETY: in bounds, distinct regions, no concurrent writer (caller).
        unsafe { std::ptr::copy_nonoverlapping(src.ptr.add(off), self.ptr.add(off), len) }
    }
    /// Writes zeros to `len` bytes at `off`.
    ///
    /// # Safety
    /// As for [`RawMem::write`].
    pub unsafe fn zero(&self, off: usize, len: usize) {
        debug_assert!(off + len <= self.len);
        // SAFETY: as in `write`.
        unsafe { std::ptr::write_bytes(self.ptr.add(off), 0, len) }
    }
}

/// Gives the pages of `mems` back to the OS (`MADV_DONTNEED`): the memory
/// stays mapped and reads as zeros when next touched, so the sectors can be
/// handed out again. Adjacent sectors are given back in one call.
///
/// # Safety
/// No thread reads or writes any byte of `mems` while this runs: the caller
/// holds them as a free list's owner (no `Sector` holds them, and no other
/// list does).
pub unsafe fn discard(mems: &mut [RawMem]) {
    mems.sort_unstable_by_key(|m| m.ptr as usize);
    let mut i = 0;
    while i < mems.len() {
        let start = mems[i].ptr;
        let mut len = mems[i].len;
        let mut j = i + 1;
        while j < mems.len() && mems[j].ptr as usize == start as usize + len {
            len += mems[j].len;
            j += 1;
        }
        #[cfg(unix)]
        // SAFETY:
        //  [1] `start..start + len` is inside one live mapping: adjacent
        //      sectors of one region (a run never crosses into memory that
        //      is not a sector of ours, because it only joins sectors whose
        //      ranges touch, and every sector lies inside a region);
        //  [2] page-aligned: regions are page-aligned mappings and sectors
        //      are whole multiples of 4 KiB;
        //  [3] nobody accesses these bytes meanwhile (caller's contract), so
        //      replacing them by zero pages is no data race. Exercised by
        //      loom `pool::trim_races_alloc_and_free` (bytes are cells there).
        unsafe {
            libc::madvise(start.cast(), len, libc::MADV_DONTNEED);
        }
        #[cfg(not(unix))]
        let _ = (start, len);
        i = j;
    }
}
