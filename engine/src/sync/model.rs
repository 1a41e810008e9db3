//! loom primitives and loom-visible stand-ins (built only under `--cfg loom`).
//!
//! dashmap and crossbeam-channel synchronise with atomics loom cannot see, and
//! the publication cell (`hazard.rs`) would multiply every engine model's
//! interleavings (it has a model of its own, `loom-tests/tests/hazard.rs`), so
//! here they are replaced by stand-ins with the same contract built from
//! loom's `Mutex`: `ArcSwap` (load = clone of the current `Arc` under a lock,
//! store = replace under the lock; the lock gives the release/acquire edge that
//! the cell's store/load give), `ShardMap` (one map under one lock: linearisable
//! per key, as each dashmap shard is) and `Mailbox` (a `VecDeque` under a lock:
//! FIFO, multi-producer). The models check the engine's protocols on top of
//! these contracts; they do not check the crates' internals.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use super::Keyed;
use std::collections::{HashMap, VecDeque};

pub use loom::alloc::{alloc, dealloc};
pub use loom::sync::atomic;

/// A counter for accounting only, which loom does not branch on: std's
/// atomic even under loom. For the metadata budget (`budget.rs`), which no
/// memory-safety or ordering protocol depends on: as a loom atomic, its
/// compare-and-swap in every create and its subtraction in every removal
/// multiplied the interleavings of the namespace models (`ns_races`: 125 s
/// to 301 s). Its limit pattern (compare-and-swap below a bound, give back
/// on failure) is the one `Engine::reserve_inode` and the pool's
/// reservations use, which the models do check (`limit_reservation`,
/// `ns_races::rename_whiteout_vs_create_at_inode_limit`).
pub(crate) type TallyU64 = std::sync::atomic::AtomicU64;

/// A node's chattr `i`/`a` flags mirrored for the namespace's checks
/// (`Node::guards`): std's atomic even under loom, as [`TallyU64`]. No
/// memory-safety or ordering protocol depends on it (a check races a
/// `chattr` either way, as on Linux); read as the published version's
/// flags (a hazard-protected load) in every create, unlink and rename, it
/// multiplied the namespace models' interleavings (CI's loom pass went past
/// its budget).
pub(crate) type FlagsU8 = std::sync::atomic::AtomicU8;
pub use loom::sync::Arc;

/// Raises the count of the `Arc` whose `into_raw` pointer is `p` (real:
/// `real::arc_increment`).
///
/// # Safety
/// `p` came from `Arc::into_raw` of an `Arc<T>` that is still alive.
pub unsafe fn arc_increment<T>(p: *const T) {
    // SAFETY: the caller's contract.
    unsafe { Arc::increment_strong_count(p) }
}

/// Drops one count of the `Arc` whose `into_raw` pointer is `p`.
///
/// # Safety
/// The caller owns one count of `p`'s `Arc`, which this gives up.
pub unsafe fn arc_decrement<T>(p: *const T) {
    // SAFETY: the caller's contract.
    unsafe { Arc::decrement_strong_count(p) }
}
pub use loom::thread_local;

/// Spinning under loom must yield so the scheduler can run someone else.
pub fn spin_loop() {
    loom::thread::yield_now();
}

/// The one-byte mutex of real builds (`real::SmallMutex`): loom's, here.
pub type SmallMutex<T> = Mutex<T>;

/// loom `Mutex` without poisoning.
#[derive(Debug)]
pub struct Mutex<T>(loom::sync::Mutex<T>);
/// Guard of [`Mutex`].
pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A new mutex.
    pub fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }
    /// Locks, ignoring poison.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

/// loom `Condvar`.
#[derive(Debug)]
pub struct Condvar(loom::sync::Condvar);

impl Condvar {
    /// A new condition variable.
    pub fn new() -> Self {
        Condvar(loom::sync::Condvar::new())
    }
    /// Blocks until notified.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(guard).unwrap_or_else(|p| p.into_inner())
    }
    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.0.notify_all();
    }
}

impl Default for Condvar {
    fn default() -> Self {
        Self::new()
    }
}

/// loom `RwLock` without poisoning.
#[derive(Debug)]
pub struct RwLock<T>(loom::sync::RwLock<T>);
/// Shared guard.
pub type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
/// Exclusive guard.
pub type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;

impl<T> RwLock<T> {
    /// A new lock.
    pub fn new(value: T) -> Self {
        RwLock(loom::sync::RwLock::new(value))
    }
    /// Shared access.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }
    /// Exclusive access.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stand-in for the publication cell (`hazard.rs`; see the module docs).
pub struct ArcSwap<T>(loom::sync::Mutex<Arc<T>>);

/// Stand-in for the cell's guard: an owned clone.
pub struct Guard<T>(Arc<T>);

impl<T> std::ops::Deref for Guard<T> {
    type Target = Arc<T>;
    fn deref(&self) -> &Arc<T> {
        &self.0
    }
}

impl<T> ArcSwap<T> {
    /// Publishes the first version.
    pub fn new(value: Arc<T>) -> Self {
        ArcSwap(loom::sync::Mutex::new(value))
    }
    /// The current version.
    pub fn load(&self) -> Guard<T> {
        Guard(self.load_full())
    }
    /// The current version, owned.
    pub fn load_full(&self) -> Arc<T> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&g)
    }
    /// The current version, owned, for the cell's only writer (the real
    /// one's contract, kept so callers are written once).
    ///
    /// # Safety
    /// No other thread stores into or swaps the cell until this returns.
    pub unsafe fn load_writer(&self) -> Arc<T> {
        self.load_full()
    }
    /// Publishes a new version and returns the old one (counted exactly:
    /// every holder has an `Arc` clone here).
    pub fn swap(&self, value: Arc<T>) -> Arc<T> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *g, value)
    }
    /// Publishes a new version; the old one is dropped outside the lock.
    pub fn store(&self, value: Arc<T>) {
        let old = {
            let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *g, value)
        };
        drop(old);
    }
}

impl<T> std::fmt::Debug for ArcSwap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArcSwap(model)")
    }
}

/// Stand-in for the dashmap wrapper: one map (by each value's key) under
/// one loom lock.
pub struct ShardMap<V>(loom::sync::Mutex<HashMap<u64, V>>);

impl<V: Keyed + Clone> ShardMap<V> {
    fn map(&self) -> loom::sync::MutexGuard<'_, HashMap<u64, V>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// An empty map.
    pub fn new() -> Self {
        ShardMap(loom::sync::Mutex::new(HashMap::new()))
    }
    /// A clone of the value for `key`.
    pub fn get(&self, key: &u64) -> Option<V> {
        self.map().get(key).cloned()
    }
    /// `f` of the value for `key`, without cloning it (under the lock).
    pub fn with<R>(&self, key: &u64, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.map().get(key).map(f)
    }
    /// Inserts `value` under its key, returning the value it replaces.
    pub fn insert(&self, value: V) -> Option<V> {
        self.map().insert(*value.key(), value)
    }
    /// Removes and returns.
    pub fn remove(&self, key: &u64) -> Option<V> {
        self.map().remove(key)
    }
    /// Removes if `pred` holds, atomically.
    pub fn remove_if(&self, key: &u64, pred: impl FnOnce(&V) -> bool) -> Option<V> {
        let mut m = self.map();
        if m.get(key).is_some_and(pred) {
            m.remove(key)
        } else {
            None
        }
    }
    /// The number of entries.
    pub fn len(&self) -> usize {
        self.map().len()
    }
    /// As the real map's: shrinks the table when it is sparse.
    pub fn shrink_if_sparse(&self) -> bool {
        let mut m = self.map();
        let sparse = super::sparse(m.len(), m.capacity());
        if sparse {
            m.shrink_to_fit();
        }
        sparse
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
    /// Clones out every value.
    pub fn values(&self) -> Vec<V> {
        self.map().values().cloned().collect()
    }
}

impl<V: Keyed + Clone> Default for ShardMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Stand-in for the crossbeam-channel mailbox: a FIFO under a loom lock.
pub struct Mailbox<T>(loom::sync::Mutex<VecDeque<T>>);

impl<T> Mailbox<T> {
    /// An empty mailbox.
    pub fn new() -> Self {
        Mailbox(loom::sync::Mutex::new(VecDeque::new()))
    }
    /// Enqueues.
    pub fn send(&self, msg: T) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push_back(msg);
    }
    /// Dequeues one if present.
    pub fn try_recv(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Regions are tiny under loom.
pub const REGION_BYTES: usize = 64;

/// Stand-in region: one loom cell per byte, owned here; pages are handles
/// into it (as real pages are pointers into a mapping).
pub struct Region {
    cells: Box<[loom::cell::UnsafeCell<u8>]>,
}

impl Region {
    /// A region of `bytes`.
    pub fn map(bytes: usize) -> Option<Region> {
        Some(Region { cells: (0..bytes).map(|_| loom::cell::UnsafeCell::new(0u8)).collect() })
    }
    /// Splits into pages of `unit` bytes, in descending order (as the real
    /// `carve`).
    pub fn carve(&mut self, unit: usize) -> Vec<Page> {
        let base = self.cells.as_ptr();
        (0..self.cells.len() / unit)
            .rev()
            .map(|i| Page {
                cells: std::ptr::NonNull::new(base.wrapping_add(i * unit).cast_mut()).expect("a box is not at null"),
                region: base as usize,
            })
            .collect()
    }
}

/// One page: a pointer into a [`Region`]'s cells and the region it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    cells: std::ptr::NonNull<loom::cell::UnsafeCell<u8>>,
    region: usize,
}

// SAFETY: as for `RawMem`: a plain name for cells loom tracks.
unsafe impl Send for Page {}
// SAFETY: as for `Send`.
unsafe impl Sync for Page {}

impl Page {
    /// The page's `len` bytes.
    pub fn mem(self, len: usize) -> RawMem {
        RawMem { cells: self.cells, len: len as u32, region: self.region }
    }
    /// The page's address (to sort).
    pub fn addr(self) -> usize {
        self.cells.as_ptr() as usize
    }
    /// A hint in the real build; nothing here.
    pub fn prefetch_write(self, _len: usize) {}
}

/// Sector bytes lent to a reader (the stand-in for the real `&[u8]` over
/// sector memory, which loom cannot track): a copy of the bytes taken
/// through loom `ConstPtr`s that live as long as it does. So loom reports a
/// write to a lent cell while the reader holds it ("currently reading from
/// cell"), and a later write that does not happen after the reader let go
/// (a causality violation). On drop it also checks that the cells still hold
/// the bytes it lent.
pub struct Lent<'a> {
    copy: Box<[u8]>,
    reads: Vec<loom::cell::ConstPtr<u8>>,
    _mem: std::marker::PhantomData<&'a [u8]>,
}

impl std::ops::Deref for Lent<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.copy
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for (p, b) in self.reads.iter().zip(self.copy.iter()) {
            // SAFETY: the cell outlives the `Lent` (`'a`); the read is the
            // one loom has tracked since `lend`.
            let now = unsafe { *p.deref() };
            assert_eq!(now, *b, "a lent sector byte changed while lent");
        }
    }
}

/// A handle to sector bytes as loom cells (a pointer into a [`Region`]'s
/// cells), so loom checks every access for races. `Copy`, as the real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMem {
    cells: std::ptr::NonNull<loom::cell::UnsafeCell<u8>>,
    len: u32,
    region: usize,
}

// SAFETY: every access to the cells goes through loom's `with`/`with_mut`,
// which track it; the engine's protocol (the contract being modelled) is what
// keeps accesses ordered, and loom reports any access that is not.
unsafe impl Sync for RawMem {}
// SAFETY: as for `Sync`: the handle names plain bytes.
unsafe impl Send for RawMem {}

impl RawMem {
    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// As the real `join`.
    pub fn join(&self, next: &RawMem) -> Option<RawMem> {
        let adjacent =
            self.region == next.region && self.cells.as_ptr().wrapping_add(self.len as usize) == next.cells.as_ptr();
        adjacent.then(|| RawMem { cells: self.cells, len: self.len + next.len, region: self.region })
    }
    fn cell(&self, i: usize) -> &loom::cell::UnsafeCell<u8> {
        assert!(i < self.len(), "out of the handle's bounds");
        // SAFETY: in bounds (asserted) of a region's cells, which live as
        // long as the pool (the caller's contract: the memory is live).
        unsafe { &*self.cells.as_ptr().add(i) }
    }
    /// Copies bytes out. Same contract as the real one; loom checks it.
    ///
    /// # Safety
    /// As for the real `RawMem::read`.
    pub unsafe fn read(&self, off: usize, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: loom tracks this access and reports a concurrent write.
            *b = self.cell(off + i).with(|p| unsafe { *p });
        }
    }
    /// The stand-in for lending `len` bytes at `off` as a slice of the sector
    /// memory: a [`Lent`] that keeps those cells marked as being read until it
    /// drops.
    ///
    /// # Safety
    /// As for the real `RawMem::lend`: in bounds, live for `'a`, and no
    /// thread writes the range while the returned value lives (loom checks
    /// that).
    pub unsafe fn lend<'a>(self, off: usize, len: usize) -> Lent<'a> {
        let reads: Vec<_> = (off..off + len).map(|i| self.cell(i).get()).collect();
        // SAFETY: each `ConstPtr` points into a region's cells, which outlive
        // `'a` (the caller's contract); loom tracks the read from `get`
        // until the pointer drops and reports any write meanwhile.
        let copy = reads.iter().map(|p| unsafe { *p.deref() }).collect();
        Lent { copy, reads, _mem: std::marker::PhantomData }
    }
    /// Copies bytes in.
    ///
    /// # Safety
    /// As for the real `RawMem::write`.
    pub unsafe fn write(&self, off: usize, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            // SAFETY: loom tracks this access and reports a concurrent access.
            self.cell(off + i).with_mut(|p| unsafe { *p = *b });
        }
    }
    /// Copies `len` bytes at `from` of `src` to `to`.
    ///
    /// # Safety
    /// As for the real `RawMem::copy_from`.
    pub unsafe fn copy_from(&self, to: usize, src: &RawMem, from: usize, len: usize) {
        for i in 0..len {
            // SAFETY: loom tracks both accesses and reports races.
            let b = src.cell(from + i).with(|p| unsafe { *p });
            // SAFETY: as above.
            self.cell(to + i).with_mut(|p| unsafe { *p = b });
        }
    }
    /// The stand-in for handing a page back to the OS: every byte becomes
    /// 0, as a write loom checks.
    ///
    /// # Safety
    /// As for the real [`discard`].
    pub unsafe fn discard_one(&self) {
        // SAFETY: the caller's contract.
        unsafe { self.zero(0, self.len()) }
    }
    /// Writes zeros.
    ///
    /// # Safety
    /// As for the real `RawMem::zero`.
    pub unsafe fn zero(&self, off: usize, len: usize) {
        for i in off..off + len {
            // SAFETY: loom tracks this access and reports a concurrent access.
            self.cell(i).with_mut(|p| unsafe { *p = 0 });
        }
    }
}

/// As the real `discard`: every byte of `pages` becomes 0 (a write loom
/// checks).
///
/// # Safety
/// As for the real `discard`.
pub unsafe fn discard(pages: &mut [Page], len: usize) {
    for p in pages.iter() {
        // SAFETY: the caller's contract.
        unsafe { p.mem(len).discard_one() }
    }
}

/// A mark in a table node that loom can see: a loom cell that readers read
/// (`observe`) as they pass the node and the runner writes (`renew`) when it
/// (re)initialises the node. A node reused while a reader of an older
/// version can still walk it is then a loom causality violation, though the
/// node's own fields are plain memory loom does not track.
#[derive(Debug)]
pub struct Stamp(loom::cell::UnsafeCell<u8>);

impl Stamp {
    /// A new stamp.
    pub fn new() -> Self {
        Stamp(loom::cell::UnsafeCell::new(0))
    }
    /// A reader passes the node.
    pub fn observe(&self) {
        // SAFETY: a tracked read of a plain byte.
        self.0.with(|p| unsafe { std::ptr::read_volatile(p) });
    }
    /// The runner (re)initialises the node.
    pub fn renew(&mut self) {
        // SAFETY: a tracked write of a plain byte.
        self.0.with_mut(|p| unsafe { *p = (*p).wrapping_add(1) });
    }
}

impl Default for Stamp {
    fn default() -> Self {
        Self::new()
    }
}

/// loom's `UnsafeCell` (every access tracked).
pub use loom::cell::UnsafeCell;
