//! Real primitives: std, the hazard-slot publication cell (`hazard.rs`), dashmap,
//! crossbeam-channel, mmapped sector memory.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hash::Hash;

use super::Keyed;

pub use std::alloc::{alloc, dealloc};
pub use std::sync::atomic;

/// A counter for accounting only (the metadata budget): a plain atomic
/// here; under loom one that loom does not branch on (`model.rs`).
pub(crate) type TallyU64 = std::sync::atomic::AtomicU64;
/// A node's chattr `i`/`a` flags, mirrored (`model.rs`).
pub(crate) type FlagsU8 = std::sync::atomic::AtomicU8;
/// Reference counting without weak counts (`triomphe`): one word of header
/// instead of std's two, 8 bytes off every node, version and block, which
/// puts a node (64 bytes) and a version (128) one glibc chunk class lower
/// (issue 17, per-file cost). The engine has no weak references.
pub use triomphe::Arc;

/// Raises the count of the `Arc` whose [`Arc::into_raw`] pointer is `p`
/// (std's `Arc::increment_strong_count`, which `triomphe` lacks).
///
/// # Safety
/// `p` came from `Arc::into_raw` of an `Arc<T>` that is still alive (some
/// count of it is held for as long as this runs).
pub unsafe fn arc_increment<T>(p: *const T) {
    // SAFETY: `p` is a live `Arc`'s (the caller's contract); `ManuallyDrop`
    // keeps the borrowed count, the clone's count is leaked on purpose: it
    // is the one this function adds.
    let a = std::mem::ManuallyDrop::new(unsafe { Arc::from_raw(p) });
    std::mem::forget(Arc::clone(&a));
}

/// Drops one count of the `Arc` whose [`Arc::into_raw`] pointer is `p`
/// (std's `Arc::decrement_strong_count`).
///
/// # Safety
/// `p` came from `Arc::into_raw` and the caller owns one count of it, which
/// this gives up.
pub unsafe fn arc_decrement<T>(p: *const T) {
    // SAFETY: a count the caller owns (contract), dropped here.
    drop(unsafe { Arc::from_raw(p) });
}
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

/// A mutex whose lock is one byte (`parking_lot`), for a small value in a
/// structure every inode has (a node's life counts: issue 17, per-file
/// cost); no poisoning. Not for [`Condvar`].
pub type SmallMutex<T> = parking_lot::Mutex<T>;

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
pub struct ArcSwap<T>(super::hazard::HazardSwap<T>);

/// A short-lived read guard of an [`ArcSwap`]; keep it on the stack only.
pub type Guard<T> = super::hazard::HazardGuard<T>;

impl<T> ArcSwap<T> {
    /// Publishes `value` as the first version.
    pub fn new(value: Arc<T>) -> Self {
        ArcSwap(super::hazard::HazardSwap::new(value))
    }
    /// The current version, without taking a lock.
    pub fn load(&self) -> Guard<T> {
        self.0.load()
    }
    /// The current version as an owned `Arc` (may outlive blocking steps).
    pub fn load_full(&self) -> Arc<T> {
        self.0.load_full()
    }
    /// The current version as an owned `Arc`, for the cell's only writer
    /// (`HazardSwap::load_writer`: no hazard slot).
    ///
    /// # Safety
    /// No other thread stores into or swaps the cell until this returns.
    pub unsafe fn load_writer(&self) -> Arc<T> {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.load_writer() }
    }
    /// Publishes a new version. The old one is freed when its last reader is done.
    pub fn store(&self, value: Arc<T>) {
        self.0.store(value)
    }
    /// Publishes a new version and returns the old one.
    ///
    /// When this returns, every reader still holding the old version holds a
    /// counted reference to it: the cell pays the debts of its guards (the
    /// fast, uncounted loads in hazard slots, `hazard.rs`) for the old
    /// pointer before `swap` returns, and no later `load` can return it. So `Arc::get_mut` on the result
    /// succeeds exactly when no reader holds it any more, and (an acquire
    /// on the count) happens after everything those readers did with it.
    /// `engine/src/node.rs` ("Versions") relies on this; `tests::
    /// swap_counts_the_guards_of_the_old_version` checks it.
    pub fn swap(&self, value: Arc<T>) -> Arc<T> {
        self.0.swap(value)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for ArcSwap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ArcSwap").field(&&*self.0.load()).finish()
    }
}

/// A mark in a table node that loom can see (see the loom version in
/// `sync/model.rs`): readers `observe` each node they pass, the runner
/// `renew`s a node it (re)initialises, so loom reports a node reused while
/// a reader of an older version may still walk it. Nothing in real builds.
#[derive(Debug, Default)]
pub struct Stamp;

impl Stamp {
    /// A new stamp.
    pub fn new() -> Self {
        Stamp
    }
    /// A reader passes the node.
    #[inline(always)]
    pub fn observe(&self) {}
    /// The runner (re)initialises the node (`&mut`: nobody else can reach it).
    #[inline(always)]
    pub fn renew(&mut self) {}
}

/// `std::cell::UnsafeCell` with loom's closure API (as in tokio's
/// `loom/std/unsafe_cell.rs`), so the same code runs under loom, which
/// checks every access.
#[derive(Debug, Default)]
pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

impl<T> UnsafeCell<T> {
    /// A new cell.
    pub fn new(v: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(v))
    }
    /// Calls `f` with a shared pointer to the value.
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }
    /// Calls `f` with an exclusive pointer to the value.
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// A concurrent set of values that carry their own key ([`Keyed`]), looked
/// up by that key: a dashmap of the values alone (issue 17, per-file cost:
/// the inode map keeps one pointer per inode, not the inode number beside
/// it, ~9 bytes less per file).
///
/// **Locking:** every method locks one shard for the duration of the call
/// only; values are cloned out, so no guard outlives the call (dashmap #74, #369).
pub struct ShardMap<V>(dashmap::DashMap<ByKey<V>, (), crate::hash::BuildIntHasher>);

/// A value as the dashmap's key: hashed and compared by its own key, and
/// found by it (`Borrow<u64>`; the hash of a `ByKey` is the hash of its
/// key, as `Borrow` requires).
struct ByKey<V>(V);

impl<V: Keyed> Hash for ByKey<V> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.key().hash(h);
    }
}

impl<V: Keyed> PartialEq for ByKey<V> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl<V: Keyed> Eq for ByKey<V> {}

impl<V: Keyed> std::borrow::Borrow<u64> for ByKey<V> {
    fn borrow(&self) -> &u64 {
        self.0.key()
    }
}

impl<V: Keyed + Clone> ShardMap<V> {
    /// An empty map.
    pub fn new() -> Self {
        ShardMap(dashmap::DashMap::with_hasher(crate::hash::BuildIntHasher))
    }
    /// A clone of the value for `key`.
    pub fn get(&self, key: &u64) -> Option<V> {
        self.0.get(key).map(|r| r.key().0.clone())
    }
    /// `f` of the value for `key`, without cloning it (under the shard's
    /// read lock: `f` must be short and must not touch the map).
    pub fn with<R>(&self, key: &u64, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.0.get(key).map(|r| f(&r.key().0))
    }
    /// Inserts `value` under its key, returning the value it replaces.
    pub fn insert(&self, value: V) -> Option<V> {
        match self.0.entry(ByKey(value)) {
            dashmap::Entry::Occupied(o) => Some(o.replace_entry(()).0 .0),
            dashmap::Entry::Vacant(v) => {
                v.insert(());
                None
            }
        }
    }
    /// Removes and returns the value for `key`.
    pub fn remove(&self, key: &u64) -> Option<V> {
        self.0.remove(key).map(|(k, ())| k.0)
    }
    /// Removes the value for `key` if `pred` holds for it, atomically.
    pub fn remove_if(&self, key: &u64, pred: impl FnOnce(&V) -> bool) -> Option<V> {
        self.0.remove_if(key, |k, ()| pred(&k.0)).map(|(k, ())| k.0)
    }
    /// The number of entries (a snapshot; may be stale).
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Gives back table memory the map no longer needs: when it holds fewer
    /// than a quarter of the entries it has room for (a hash table keeps
    /// its capacity after deletes: 300,000 files created and deleted left
    /// ~5 MB of empty table), its shards are rebuilt to fit (each under its
    /// write lock, one at a time). Returns whether it shrank.
    pub fn shrink_if_sparse(&self) -> bool {
        let sparse = super::sparse(self.0.len(), self.0.capacity());
        if sparse {
            self.0.shrink_to_fit();
        }
        sparse
    }
    /// Whether the map is empty (a snapshot; may be stale).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Clones out every value (for teardown and checks, not for hot paths).
    pub fn values(&self) -> Vec<V> {
        self.0.iter().map(|r| r.key().0.clone()).collect()
    }
}

impl<V: Keyed + Clone> Default for ShardMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// A multi-producer FIFO mailbox (one consumer at a time, by protocol).
///
/// The channel is created on the first `send`: most files are never written
/// by two threads at once, and an idle crossbeam channel costs a few hundred
/// bytes per inode. Boxed once created (`once_cell::race::OnceBox`: one
/// atomic pointer), so an idle mailbox is 8 bytes of the node, not 40
/// (issue 17: per-file cost). Two first senders may both build a channel;
/// one wins the pointer's CAS, the other's is dropped unused, and both send
/// into the winner's.
pub struct Mailbox<T> {
    #[allow(clippy::type_complexity)]
    chan: once_cell::race::OnceBox<(crossbeam_channel::Sender<T>, crossbeam_channel::Receiver<T>)>,
}

impl<T> Mailbox<T> {
    /// An empty, unbounded mailbox (allocates nothing yet).
    pub fn new() -> Self {
        Mailbox { chan: once_cell::race::OnceBox::new() }
    }
    /// Enqueues `msg`. Never blocks.
    pub fn send(&self, msg: T) {
        let (tx, _) = self.chan.get_or_init(|| Box::new(crossbeam_channel::unbounded()));
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

/// Size of one region of sector memory mapped at a time. Regions are also
/// aligned to it, so two pages in one `REGION_BYTES`-aligned block are in
/// one region (one mapping): what lets [`RawMem::join`] tell that adjacent
/// pages may be one slice without storing a region number per page.
pub const REGION_BYTES: usize = 2 << 20;

/// A region of private anonymous memory from which pages are carved.
///
/// Sector memory never comes from the process heap: each region is its own
/// mapping, returned to the OS when the pool is dropped. A region is
/// `REGION_BYTES`-aligned: the mapping is `REGION_BYTES` longer than the
/// region and the region starts at its first aligned address (the slack is
/// address space only: it is never touched, so it takes no memory).
pub struct Region {
    map: memmap2::MmapMut,
    at: usize,
    len: usize,
}

impl Region {
    /// Maps `bytes` (a multiple of [`REGION_BYTES`]) of fresh zeroed memory,
    /// aligned to [`REGION_BYTES`]. `None` if the OS refuses.
    pub fn map(bytes: usize) -> Option<Region> {
        crate::fault::fail_point!("region.map", |_| None);
        debug_assert_eq!(bytes % REGION_BYTES, 0);
        let mut map = memmap2::MmapOptions::new().len(bytes + REGION_BYTES).map_anon().ok()?;
        let at = map.as_mut_ptr().align_offset(REGION_BYTES);
        #[cfg(target_os = "linux")]
        {
            // Best effort: transparent huge pages where the system allows.
            let _ = map.advise_range(memmap2::Advice::HugePage, at, bytes);
        }
        Some(Region { map, at, len: bytes })
    }
    /// Where the region's memory is: its address and length (for
    /// [`populate`]).
    pub fn span(&self) -> (usize, usize) {
        (self.map.as_ptr() as usize + self.at, self.len)
    }

    /// Splits the region into pages of `unit` bytes each, in descending
    /// address order (so that popping them off a stack hands them out in
    /// ascending order: consecutive pages of a fresh sector are adjacent).
    ///
    /// The returned pointers stay valid while `self` lives; the caller (the
    /// pool) keeps the region until the pool drops.
    pub fn carve(&mut self, unit: usize) -> Vec<Page> {
        let base = self.map.as_mut_ptr().wrapping_add(self.at);
        let n = self.len / unit;
        (0..n)
            .rev()
            .map(|i| {
                // Offsets stay inside the mapping (`at + len` is within it,
                // i < len / unit), which is not at address 0.
                Page(std::ptr::NonNull::new(base.wrapping_add(i * unit)).expect("a mapping is not at null"))
            })
            .collect()
    }
}

/// Faults `len` bytes at `addr` in ahead of use (`MADV_POPULATE_WRITE`),
/// so the kernel's zeroing of fresh memory runs on the calling thread
/// instead of in the first writer's page faults. `false` if the kernel
/// refuses (older than 5.14, or the range is not mapped).
///
/// # Safety
/// `addr..addr + len` lies in a [`Region`] that stays mapped until this
/// returns. (It may be in use meanwhile: populating never changes what
/// memory holds, it only maps the pages a write would.)
#[cfg(target_os = "linux")]
pub unsafe fn populate(addr: usize, len: usize) -> bool {
    // SAFETY: the range is mapped (caller's contract); MADV_POPULATE_WRITE
    // touches no byte a program can see, so it races with no access.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) == 0 }
}

/// A thread that faults memory in ahead of use ([`populate`], 2 MiB at a
/// time, in address order): stopped and joined when dropped.
#[cfg(target_os = "linux")]
pub struct Prefault {
    stop: Arc<atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(target_os = "linux")]
impl Prefault {
    /// Starts faulting in `len` bytes at `addr`; the thread holds `keep`
    /// until it ends. `None` if no thread can be started.
    ///
    /// # Safety
    /// `addr..addr + len` lies in a [`Region`] that stays mapped while
    /// `keep` lives.
    pub unsafe fn start(addr: usize, len: usize, keep: impl Send + 'static) -> Option<Prefault> {
        let stop = Arc::new(atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sectorfs-prefault".into())
            .spawn(move || {
                let mut at = 0;
                while at < len && !flag.load(atomic::Ordering::Relaxed) {
                    let n = REGION_BYTES.min(len - at);
                    // SAFETY: inside the range, mapped while `keep` lives
                    // (the caller's contract), which this thread holds.
                    if !unsafe { populate(addr + at, n) } {
                        break;
                    }
                    at += n;
                }
                drop(keep);
            })
            .ok()?;
        Some(Prefault { stop, thread: Some(thread) })
    }
}

#[cfg(target_os = "linux")]
impl Drop for Prefault {
    fn drop(&mut self) {
        self.stop.store(true, atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sector bytes lent to a reader by [`RawMem::lend`]: the sector memory
/// itself. (Under loom, a copy that keeps the cells marked as being read
/// until it drops, so loom reports a write while it lives.)
pub type Lent<'a> = &'a [u8];

/// One page of sector memory: where it starts, 8 bytes (a table leaf holds
/// 64 of them). `Copy`: it names memory, it does not own it (see
/// [`RawMem`]). [`Page::mem`] gives the handle to its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page(std::ptr::NonNull<u8>);

// SAFETY: a plain address of memory the pool owns; using it takes a
// `RawMem`, whose accessors carry the contract (see `RawMem`'s impls).
unsafe impl Send for Page {}
// SAFETY: as for `Send`.
unsafe impl Sync for Page {}

impl Page {
    /// The page's `len` bytes (`len` is the pool's page size).
    pub fn mem(self, len: usize) -> RawMem {
        RawMem { ptr: self.0, len: len as u32 }
    }
    /// The page's address (to sort and merge runs).
    pub fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }
    /// Asks the CPU to bring the page's `len` bytes into its cache, for
    /// writing. A hint: it reads and writes nothing.
    #[inline]
    pub fn prefetch_write(self, len: usize) {
        #[cfg(target_arch = "x86_64")]
        for off in (0..len).step_by(64) {
            // SAFETY: a prefetch is a hint, not an access: it never faults
            // and changes no memory, whatever the address.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(
                    self.0.as_ptr().wrapping_add(off).cast(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = len;
    }
}

/// A handle to bytes of sector memory (one page, or a run of adjacent pages
/// of one region): a pointer into a [`Region`] and a length.
///
/// A handle is `Copy`: it names memory, it does not own it. Which handle
/// may be used how, and when the memory goes back to the pool, is the
/// protocol of `crate::sector` (the page contract) and `crate::node`
/// (versions and their retired lists); every accessor is `unsafe` and its
/// caller proves that no other thread writes bytes it reads, or touches
/// bytes it writes, at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMem {
    ptr: std::ptr::NonNull<u8>,
    len: u32,
}

// SAFETY:
//  [1] a `RawMem` names `len` bytes inside a mapping owned by its pool,
//      which outlives every handle in use (a version reaching the memory
//      holds the pool, see `crate::node`), and holds no other data;
//  [2] access is only through the `unsafe` accessors below, whose callers
//      guarantee that no two threads touch an overlapping range when one of
//      them writes (the page contract; checked by the loom models
//      `table_publish`, `reclaim` and `read_with`, where this type names
//      loom cells, one per byte).
unsafe impl Send for RawMem {}
// SAFETY: as for `Send`; a shared handle permits only the documented accessors.
unsafe impl Sync for RawMem {}

impl RawMem {
    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// Whether the handle names no bytes (never, for real pages).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// `self` and `next` as one handle, if `next` starts where `self` ends
    /// inside the same region (one allocated object, so a slice may span
    /// both): the same `REGION_BYTES`-aligned block, which regions are.
    /// Pure arithmetic on handles: nothing is accessed.
    pub fn join(&self, next: &RawMem) -> Option<RawMem> {
        let (a, b) = (self.ptr.as_ptr() as usize, next.ptr.as_ptr() as usize);
        let adjacent = a + self.len as usize == b && a / REGION_BYTES == (b + next.len as usize - 1) / REGION_BYTES;
        adjacent.then(|| RawMem { ptr: self.ptr, len: self.len + next.len })
    }
    /// Copies `buf.len()` bytes starting at `off` into `buf`.
    ///
    /// # Safety
    /// `off + buf.len() <= self.len()`, the memory is live (not given back to
    /// the pool), and no thread writes any of those bytes while this runs.
    pub unsafe fn read(&self, off: usize, buf: &mut [u8]) {
        debug_assert!(off + buf.len() <= self.len());
        // SAFETY:
        //  [1] the range is in bounds and live (caller's contract), so `ptr + off`
        //      and the next `buf.len()` bytes are inside the live mapping;
        //  [2] no concurrent writer (caller's contract), so this is no data race;
        //  [3] `buf` is a distinct `&mut`, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), buf.as_mut_ptr(), buf.len()) }
    }
    /// The `len` bytes at `off`, lent out as a slice of the sector memory
    /// itself (no copy), for the caller's `'a`.
    ///
    /// # Safety
    /// `off + len <= self.len()`, the memory stays live for `'a` (not given
    /// back to the pool), and no thread writes any of those bytes during `'a`
    /// (a `&[u8]` over memory another thread writes is a data race, even if
    /// nobody looks at those bytes).
    pub unsafe fn lend<'a>(self, off: usize, len: usize) -> Lent<'a> {
        debug_assert!(off + len <= self.len());
        // SAFETY:
        //  [1] `ptr + off .. ptr + off + len` is inside one live mapping (the
        //      range is in bounds by the caller's contract, a handle never
        //      spans two regions (`join`), and the memory stays live for
        //      `'a` by the caller's contract);
        //  [2] the bytes are initialised: the mapping is anonymous (zero
        //      pages) and only ever holds bytes;
        //  [3] no thread writes them during `'a`: the caller's contract (the
        //      read path's argument: engine/src/data.rs,
        //      `FileData::read_with`; loom `read_with`, where a `Lent` keeps
        //      the cells marked as being read until it drops).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) }
    }
    /// Copies `data` into the memory at `off`.
    ///
    /// # Safety
    /// `off + data.len() <= self.len()`, the memory is live, and no other
    /// thread reads or writes any of those bytes while this runs.
    pub unsafe fn write(&self, off: usize, data: &[u8]) {
        debug_assert!(off + data.len() <= self.len());
        // SAFETY: as in `read`, with exclusive access to the range by contract.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(off), data.len()) }
    }
    /// Copies `len` bytes at `from` of `src` to `self` at `to`.
    ///
    /// # Safety
    /// Both ranges in bounds and live, not overlapping, no other thread
    /// writes either range or reads `self`'s range while this runs.
    pub unsafe fn copy_from(&self, to: usize, src: &RawMem, from: usize, len: usize) {
        debug_assert!(to + len <= self.len() && from + len <= src.len());
        // SAFETY: in bounds and live, not overlapping, no concurrent writer (caller).
        unsafe { std::ptr::copy_nonoverlapping(src.ptr.as_ptr().add(from), self.ptr.as_ptr().add(to), len) }
    }
    /// Writes zeros to `len` bytes at `off`.
    ///
    /// # Safety
    /// As for [`RawMem::write`].
    pub unsafe fn zero(&self, off: usize, len: usize) {
        debug_assert!(off + len <= self.len());
        // SAFETY: as in `write`.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(off), 0, len) }
    }
}

/// Gives `pages` (of `len` bytes each) back to the OS (`MADV_DONTNEED`):
/// the memory stays mapped and reads as zeros when next touched, so the
/// pages can be handed out again. Adjacent pages of one region are given
/// back in one call; a run that is not whole OS pages (only with the tiny
/// test geometries) is left as it is.
///
/// Each 2 MiB block a run is in loses its huge-page advice
/// (`MADV_NOHUGEPAGE`, a region's mapping split where needed): else the
/// kernel fills the block again by itself, a whole 2 MiB page at the first
/// touch of a page of a block given back whole, and khugepaged collapsing a
/// block with one page in use into a 2 MiB one (its default
/// `max_ptes_none` is 511): a probe saw an idle, empty disk's resident
/// memory grow from 141 MB to 404 MB in three minutes after a fragmenting
/// workload. Such a block keeps 4 KiB pages from then on.
///
/// # Safety
/// No thread reads or writes any byte of `pages` while this runs: the caller
/// holds them as a free list's owner (no table reaches them, and no other
/// list holds them).
pub unsafe fn discard(pages: &mut [Page], len: usize) {
    pages.sort_unstable_by_key(|p| p.addr());
    // The end of the blocks advised so far: runs come in address order, and
    // a block with many runs (a fragmented give-back) is advised once.
    #[cfg(target_os = "linux")]
    let mut advised = 0usize;
    let mut i = 0;
    while i < pages.len() {
        let mut run = pages[i].mem(len);
        let mut j = i + 1;
        while let Some(r) = pages.get(j).and_then(|p| run.join(&p.mem(len))) {
            run = r;
            j += 1;
        }
        let (start, n) = (run.ptr.as_ptr(), run.len());
        let whole = start as usize % 4096 == 0 && n % 4096 == 0;
        #[cfg(unix)]
        if whole {
            // SAFETY:
            //  [1] `start..start + n` is inside one live mapping: adjacent
            //      pages of one region (`join` only joins pages of one
            //      region whose ranges touch);
            //  [2] whole OS pages: checked (`whole`), so the kernel gives back
            //      exactly these bytes and no neighbour's;
            //  [3] nobody accesses these bytes meanwhile (caller's contract), so
            //      replacing them by zero pages is no data race. Exercised by
            //      loom `pool::trim_races_alloc_and_free` (bytes are cells there).
            unsafe {
                libc::madvise(start.cast(), n, libc::MADV_DONTNEED);
            }
            #[cfg(target_os = "linux")]
            {
                let first = (start as usize / REGION_BYTES * REGION_BYTES).max(advised);
                let end = (start as usize + n).next_multiple_of(REGION_BYTES);
                if first < end {
                    // SAFETY: `first..end` is inside the run's region (regions
                    // are REGION_BYTES-aligned multiples of it, and the run
                    // is in one), a live mapping of the pool's; the advice
                    // changes no byte of it (pages other threads use
                    // included), only how the kernel backs the block from
                    // now on.
                    unsafe {
                        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_NOHUGEPAGE);
                    }
                    advised = end;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = (start, n, whole);
        i = j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `smaps` entry of the mapping that holds `addr`: its resident
    /// kilobytes and whether it carries `nh` (no huge pages).
    #[cfg(target_os = "linux")]
    fn smaps_of(addr: usize) -> (u64, bool) {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        let mut rss = 0;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ').filter(|(r, _)| r.contains('-') && !r.ends_with(':')) {
                let (a, b) = range.split_once('-').unwrap();
                let (a, b) = (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap());
                inside = (a..b).contains(&addr);
            } else if inside && line.starts_with("Rss:") {
                rss = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            } else if inside && line.starts_with("VmFlags:") {
                return (rss, line.split_whitespace().any(|f| f == "nh"));
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    /// A block given back whole, then touched at one page, takes one page
    /// again, not a 2 MiB huge page, and keeps no huge-page advice (so
    /// khugepaged leaves it alone too).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_block_given_back_takes_back_only_what_is_touched() {
        let mut r = Region::map(REGION_BYTES).unwrap();
        let mut pages = r.carve(4096);
        for p in &pages {
            // SAFETY: fresh pages of our own region, no other user.
            unsafe { p.mem(4096).zero(0, 4096) };
            // SAFETY: as above.
            unsafe { p.mem(4096).write(0, &[1]) };
        }
        let at = pages[0].addr();
        // SAFETY: nobody else uses these pages.
        unsafe { discard(&mut pages, 4096) };
        let (_, nh) = smaps_of(at);
        assert!(nh, "the block kept its huge-page advice");
        // SAFETY: as above (discarded pages may be written again).
        unsafe { pages[0].mem(4096).write(0, &[2]) };
        let (rss, _) = smaps_of(at);
        assert!(rss <= 64, "one page touched, {rss} kB resident");
        drop(r);
    }

    /// The property `ArcSwap::swap` documents, on the real cell
    /// (`hazard.rs`): a guard from `load` (uncounted, in a hazard slot)
    /// still held when the version is swapped out is counted in the
    /// returned `Arc`, from this thread and from others.
    #[test]
    fn swap_counts_the_guards_of_the_old_version() {
        for round in 0..200 {
            let s = ArcSwap::new(Arc::new(round));
            let g = s.load();
            let mut old = s.swap(Arc::new(-1));
            assert!(Arc::get_mut(&mut old).is_none(), "a held guard is not counted");
            drop(g);
            assert!(Arc::get_mut(&mut old).is_some(), "no holder left");
        }
        let s = Arc::new(ArcSwap::new(Arc::new(0u64)));
        let stop = Arc::new(atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(atomic::Ordering::Relaxed) {
                        let g = s.load();
                        let v = *g;
                        std::hint::black_box(v);
                    }
                })
            })
            .collect();
        for i in 1..20_000u64 {
            let mut old = s.swap(Arc::new(i));
            // Whoever holds `old` now is counted; once unique it stays unique
            // (no load can return it again).
            if Arc::get_mut(&mut old).is_some() {
                assert_eq!(Arc::strong_count(&old), 1);
            }
        }
        stop.store(true, atomic::Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
    }
}
