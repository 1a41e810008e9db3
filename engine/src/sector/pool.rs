//! The sector pool: where sectors come from and go back to, and the exact
//! memory limit (reservations and charges).
//!
//! # Pool
//! A [`Pool`] hands out *pages* of sector memory (`page_size`: 4 KiB, or the
//! sector size if that is smaller) as [`Page`] handles; a file's sector of
//! `sector_size` bytes is `sector_size / page_size` pages (issue 18: a page
//! is the unit of copy-on-write, so a 4 KiB overwrite copies at most one
//! page, and the unit memory is freed and reused in, so nothing fragments
//! into half-used sectors). Pages of a fresh region, and pages freed
//! together, come out in ascending address order, so a sector taken at once
//! is usually one contiguous run (reads then copy or lend it as one piece).
//! Memory comes from private anonymous regions of at least 2 MiB
//! (`sync::Region`), never the process heap. Freed pages go to one of
//! `2 × cores` *cache slots* chosen by the freeing thread (a per-thread cache:
//! each thread sticks to one slot, so slots are almost never contended), which
//! spill half their contents to the shared free list when they hold more than
//! [`CACHE_MAX`] sectors' worth, and refill from it in batches of
//! [`CACHE_BATCH`] sectors' worth (a sector counting at least 64 KiB here,
//! so 4 KiB sectors keep 4 MiB warm per slot as 64 KiB ones do). Regions are
//! only unmapped when the pool is dropped (unmount frees everything at
//! once), but free pages go back to the OS on demand ([`Pool::trim`]): free
//! pages beyond a warm reserve are taken off the shared free list,
//! `madvise(MADV_DONTNEED)`d (the daemon's resident memory goes down; the
//! mapping stays), and kept on a *cold* list that is used only when no warm
//! page is left (its memory is fresh zeros then, which costs a first touch,
//! as a new region would).
//!
//! # Memory limit (exact)
//! `used` counts bytes *charged*: pages held by files, exact-size inline
//! buffers of small files, and outstanding [`Reservation`]s. A mutation
//! first reserves everything it may need with one compare-and-swap loop
//! that never lets `used` pass `limit` ([`Pool::reserve`]); if that fails it
//! returns `NoSpace` before touching anything. Pages and inline buffers are
//! then cut from the reservation, and what is left over is returned when
//! the reservation drops. Freeing a page ([`Pool::free_pages`]) or dropping
//! an inline buffer uncharges it.
//!
//! Copy-on-write replacements and shrinking operations (truncate, punch
//! hole) take a *forced* reservation ([`Pool::reserve_forced`]): the copy
//! replaces memory that is freed once no reader holds it, so the files'
//! use does not grow, and the operation works when full. A forced charge
//! goes to its own counter, `forced`, not to `used`: an overwrite in flight
//! must not take the room of a writer that grows another file (as on
//! tmpfs, where an overwrite takes no memory; a probe saw appenders get
//! short writes at 95% full while another process overwrote in place).
//! Every release ([`Pool::uncharge`]) first matches forced charges
//! outstanding, then comes off `used`. Releases are not labelled, so one
//! that is not the replaced memory's (a truncate elsewhere) may match a
//! forced charge first; then `forced` is below the replaced memory still
//! held and `used` above what the files hold, never the other way round:
//! `used` bounds the files' use from above (the limit holds), and both are
//! exact again once the replaced memory is freed (`forced` 0). What the
//! daemon holds beyond the limit is `forced`'s at most: the copies in
//! flight and replaced pages readers still hold (loom:
//! `limit_reservation::an_overwrite_leaves_an_appenders_room`, injected bug
//! `pool_forced_in_used`).
//!
//! A file's runner defers its copies' forced charges
//! ([`Pool::reserve_forced_owed`]): the bytes are *owed* by its thread
//! (a thread-local count, for one pool at a time) instead of added to
//! `forced`, and every release on that thread cancels what it owes first
//! (as it would have matched `forced` first). The runner settles what is
//! left ([`Pool::settle_owed`]: added to `forced`) before anything its
//! batch replaced can reach another thread (a version readers still hold,
//! a block of older versions) and when the batch ends. So in the usual
//! overwrite, where nobody holds the old version, the copy's charge and
//! the replaced page's release cancel on the runner's thread and no
//! shared counter is written (two writers of two files wrote `forced`
//! twice a write each: 10-12% of their scaling, BENCHMARKS "two
//! threads"); while a reader holds the replaced page, its copy is in
//! `forced` as before, and that reader's release (on another thread)
//! matches it. A release on another thread never sees owed bytes, and
//! owed bytes are only ever the batch's own copies, whose replaced memory
//! no other thread can release before the settle; `used` is not touched
//! by either (loom: `limit_reservation::a_held_overwrite_settles_its_copy`
//! and `::an_overwrite_into_a_live_block_settles_its_copy`, injected bugs
//! `pool_owed_settled_late` and `pool_owed_block_settled_late`).
//!
//! # Fields and who touches them
//! * `used`, `forced`, `peak`: atomics, any thread, each on its own cache line.
//! * slot `i`'s `held` and `allocs` counters: atomics, written by the threads
//!   mapped to slot `i`, summed (relaxed: statistics) by `stats`.
//! * cache slot `i`: under its own mutex, any thread (by convention the
//!   threads mapped to slot `i`).
//! * `shared` (warm and cold free lists, regions): under its mutex; taken only
//!   on a cache miss or spill, by [`Pool::trim`] and by `stats`, never while
//!   a slot lock is held. A page being trimmed is on neither list: `trim`
//!   takes it off the warm list, gives it back, then puts it on the cold
//!   list, so no other thread can reach it meanwhile (loom
//!   `pool::trim_races_alloc_and_free`, injected bug `pool_trim_in_list`).
//! * `shares` (share counts, issue 20): under its mutex, any thread; taken
//!   with no other pool lock held (never inside a slot's or `shared`'s).
//!   `any_shared` mirrors its number of shared pages, and `filter` its
//!   groups per bucket, both written under the mutex and read without it by
//!   every free (the fast paths: no page is shared; none of the freed
//!   pages' buckets holds a shared group).
//! * A page's bytes: see the page contract in `sector/mod.rs`.
//!
//! # Shared pages (clones, issue 20)
//! A page table has no reference counts: a page is reachable from versions
//! of one file, and that file's version protocol frees it once
//! (`crate::node`, "Versions"). A clone (`Engine::copy_file_range`) puts a
//! page in a second table slot (of another file, or of the same file at
//! another index); each slot that holds it is one *holder*, and frees it
//! once, by its own file's version protocol. `shares` counts, for a page
//! held by more than one slot, its holders *beyond the first* (in arrays
//! per 2 MiB block of pages, so a clone of a run of pages counts in an
//! array instead of hashing each page);
//! [`Pool::free_pages`] (the one way a page goes back) drops one holder:
//! a page with an entry loses one from its count (the entry goes at zero),
//! and only a page without one is freed. So a shared page is charged once
//! (it is one page of memory) and goes back when its last holder lets go.
//! A clone takes its holders ([`Pool::share_pages`]) in the source's batch,
//! before the version that marks the pages shared is published: from then
//! on the pages in transit are held by the clone itself, which hands them
//! to the destination's table or gives them back with `free_pages`. Every
//! free of a page happens after the increment that made it shared (the
//! source's runner, or a thread that synchronised with it through the
//! version or the clone), so a free that reads `any_shared == 0` (acquire)
//! is right to skip the map, and so is one that reads 0 in the `filter`
//! bucket of each of its pages (a bucket counts the groups with a shared
//! page that hash to it, 1,024 buckets of 2 MiB groups: a bucket is 0 only
//! once every such group has gone, so a page with a count never reads 0).
//! Once anything is shared, frees of unshared pages elsewhere still take no
//! lock. loom: `clone_share.rs` (injected bugs `share_count_lost` and
//! `share_filter_unset`).
//!
//! loom: `loom-tests/tests/pool.rs` (no page handed out twice, none leaked,
//! exact in-use count) and `limit_reservation.rs` (the limit is never passed
//! and `NoSpace` only when it is truly reached).

use crossbeam_utils::CachePadded;

use crate::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(all(target_os = "linux", not(loom)))]
use crate::sync::Prefault;
use crate::sync::{thread_local, Arc, Mutex, MutexGuard, Page, Region, REGION_BYTES};
use crate::Error;

/// Most sectors' worth of pages (`Pool::cache_unit`: at least 64 KiB's) a
/// cache slot keeps before spilling to the shared list.
pub const CACHE_MAX: usize = 64;
/// The fewest pages [`CACHE_MAX`] and [`CACHE_BATCH`] count per sector
/// (with 4 KiB pages; see `Pool::cache_unit`).
pub const CACHE_UNIT_MIN: usize = 16;
/// How many sectors' worth of pages move between a slot and the shared list
/// at once.
pub const CACHE_BATCH: usize = 16;

/// The default page: the unit of copy-on-write and of the pool.
pub const PAGE: usize = 4096;

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
    /// Tells this pool's owed bytes from another's (`Pool::take_owed`): a number
    /// no other pool of the process has had.
    id: u64,
    pub(super) sector_size: usize,
    page_size: usize,
    limit: u64,
    // Each hot counter on its own cache line: every reservation and every
    // sector hand-out or free touches `used` and `sectors`, from every
    // thread; sharing a line would make writers of unrelated files contend.
    used: CachePadded<AtomicU64>,
    /// Forced charges not yet matched by a release ("Memory limit").
    forced: CachePadded<AtomicU64>,
    peak: CachePadded<AtomicU64>,
    // Drop order matters: slots and shared free lists hold handles into
    // `shared.regions`; `Page` has no destructor, so any order is sound.
    // Each slot on its own cache line, its counters with it: two threads
    // writing two files use two slots and share no line but `used`'s.
    slots: Box<[CachePadded<Slot>]>,
    shared: Mutex<Shared>,
    /// Pages held by more than one table slot: holders beyond the first
    /// (see "Shared pages").
    shares: Mutex<Shares>,
    /// Pages shared now (`Shares::pages`): the free path's fast check.
    any_shared: AtomicUsize,
    /// Per bucket of share-count groups ([`filter_bucket`]): how many groups
    /// with a shared page fall in it, written under `shares`' mutex. A
    /// page whose bucket reads 0 has no count: its free skips the mutex.
    filter: Box<[AtomicU32]>,
    /// Holders beyond the first, summed (statistics), written under
    /// `shares`' mutex.
    extra_holders: AtomicU64,
}

/// Pages per share-count group: a 2 MiB block of 4 KiB pages.
const GROUP: usize = 512;

/// Buckets of the share filter (4 KiB of counters). Under loom, two: the
/// models share a few pages, and two buckets still let a page's bucket be
/// another group's.
#[cfg(not(loom))]
const FILTER_BITS: u32 = 10;
#[cfg(loom)]
const FILTER_BITS: u32 = 1;
const FILTER: usize = 1 << FILTER_BITS;

/// The filter bucket of share-count group `g` (Fibonacci hashing).
fn filter_bucket(g: usize) -> usize {
    ((g as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_BITS)) as usize
}

/// Share counts: per page, its holders beyond the first, in groups of
/// [`GROUP`] pages with consecutive indices (`addr / page_size`), so a clone
/// of a run of pages (the usual case: a sector is one run) does one map
/// lookup per group and then counts in an array (a 1 GiB clone: 512
/// lookups, not 262,144 hash inserts).
#[derive(Default)]
pub(super) struct Shares {
    groups: std::collections::HashMap<usize, Box<Group>, crate::hash::BuildIntHasher>,
    /// Pages with a nonzero count.
    pages: usize,
}

struct Group {
    counts: [u32; GROUP],
    /// Nonzero entries of `counts` (the group goes when it reaches 0).
    live: u32,
}

impl Shares {
    /// The group and slot of the page at `addr` (pages are `ps` apart at
    /// least, so distinct pages have distinct `addr / ps`).
    fn at(addr: usize, ps: usize) -> (usize, usize) {
        let k = addr / ps;
        (k / GROUP, k % GROUP)
    }

    /// Adds one holder to each of `pages`; returns how many. A new group
    /// is counted in its `filter` bucket.
    fn add(&mut self, pages: impl Iterator<Item = Page>, ps: usize, filter: &[AtomicU32]) -> u64 {
        let mut added = 0;
        let mut cur: Option<(usize, &mut Group)> = None;
        for m in pages {
            let (g, i) = Self::at(m.addr(), ps);
            let grp = match cur.take() {
                Some((k, grp)) if k == g => grp,
                _ => &mut **self.groups.entry(g).or_insert_with(|| {
                    // Injected bug (loom-tests/tests/clone_share.rs): the
                    // filter misses the new group, so frees of its pages
                    // skip their counts.
                    #[cfg(not(loom_bug = "share_filter_unset"))]
                    filter[filter_bucket(g)].fetch_add(1, Ordering::Release);
                    Box::new(Group { counts: [0; GROUP], live: 0 })
                }),
            };
            if grp.counts[i] == 0 {
                grp.live += 1;
                self.pages += 1;
            }
            grp.counts[i] += 1;
            added += 1;
            cur = Some((g, grp));
        }
        added
    }

    /// Drops one holder of the page at `addr` if another slot holds it
    /// too (`true`); `false` if it has no count (its last holder). A group
    /// that goes leaves its `filter` bucket.
    fn drop_one(&mut self, addr: usize, ps: usize, filter: &[AtomicU32]) -> bool {
        let (g, i) = Self::at(addr, ps);
        let Some(grp) = self.groups.get_mut(&g) else { return false };
        if grp.counts[i] == 0 {
            return false;
        }
        grp.counts[i] -= 1;
        if grp.counts[i] == 0 {
            grp.live -= 1;
            self.pages -= 1;
            if grp.live == 0 {
                self.groups.remove(&g);
                filter[filter_bucket(g)].fetch_sub(1, Ordering::Release);
            }
        }
        true
    }

    fn contains(&self, addr: usize, ps: usize) -> bool {
        let (g, i) = Self::at(addr, ps);
        self.groups.get(&g).is_some_and(|grp| grp.counts[i] != 0)
    }
}

/// A cache slot: free pages, and the pages counted through it. A page may
/// be freed through another slot than the one it was taken through: only
/// the sums over all slots mean something (pages held, pages handed out).
#[derive(Default)]
struct Slot {
    free: Mutex<Vec<Page>>,
    /// Pages taken through this slot less pages freed through it.
    held: AtomicI64,
    /// Pages taken through this slot.
    allocs: AtomicU64,
}

struct Shared {
    /// Free pages that are resident (warm).
    free: Vec<Page>,
    /// Free pages given back to the OS ([`Pool::trim`]).
    cold: Vec<Page>,
    regions: Vec<Region>,
    mapped: u64,
}

/// A snapshot of the pool's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Bytes of one sector.
    pub sector_size: u64,
    /// Bytes of one page (the unit of copy-on-write and of the pool).
    pub page_size: u64,
    /// The byte limit.
    pub limit: u64,
    /// Bytes charged against the limit (sectors, inline buffers,
    /// outstanding reservations).
    pub used: u64,
    /// Bytes of copies that replace memory not freed yet (copy-on-write of
    /// pages a reader may still hold, shrinks of inline buffers): held
    /// beside `used`, outside the limit, for as long as the replaced
    /// memory is (see "Memory limit").
    pub forced: u64,
    /// Highest `used` seen.
    pub peak: u64,
    /// Sectors' worth of pages held by files (pages held × page size ÷
    /// sector size, rounded down).
    pub sectors: u64,
    /// Pages held by files (and replaced pages a reader may still hold).
    pub pages: u64,
    /// Sectors' worth of pages handed out since the pool was made.
    pub allocs: u64,
    /// Bytes of private memory mapped from the OS.
    pub mapped: u64,
    /// Bytes of free pages kept resident for reuse (the warm reserve:
    /// per-thread caches and the shared free list).
    pub free_warm: u64,
    /// Bytes of free pages given back to the OS (mapped, not resident).
    pub returned: u64,
    /// Pages held by more than one file slot (clones, issue 20): each is
    /// charged once, in `used` and `pages`.
    pub shared_pages: u64,
    /// Holders of shared pages beyond the first, summed: how many pages
    /// the files' sizes on disk (`st_blocks`) count more than once.
    pub shared_extra: u64,
}

thread_local! {
    #[allow(clippy::missing_const_for_thread_local)] // loom's thread_local! has no const form
    static SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);
    /// Forced bytes this thread's runner reserved and has not added to
    /// `forced` yet, and the pool they are owed to (its `id`): see
    /// "Memory limit".
    #[allow(clippy::missing_const_for_thread_local)]
    static OWED: std::cell::Cell<(u64, u64)> = std::cell::Cell::new((0, 0));
}
static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The next pool's `id` (a count, not a protocol: std's atomic under loom too).
static NEXT_POOL: crate::sync::TallyU64 = crate::sync::TallyU64::new(1);

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
    /// The alignment of [`Pool::into_raw`]'s pointer.
    pub(crate) const RAW_ALIGN: usize = std::mem::align_of::<PoolInner>();

    /// Whether `self` and `other` are the same pool.
    pub(crate) fn same(&self, other: &Pool) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// References to the pool alive (its handles).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn handles(&self) -> usize {
        Arc::count(&self.inner)
    }

    /// The pool as one pointer (its reference moves into it), aligned to
    /// [`Pool::RAW_ALIGN`]: for a version's one-word link (`node::Link`).
    pub(crate) fn into_raw(self) -> *const () {
        Arc::into_raw(self.inner).cast()
    }

    /// The pool whose reference [`Pool::into_raw`] moved into `p`.
    ///
    /// # Safety
    /// `p` came from `Pool::into_raw` and this takes its reference back:
    /// once per `into_raw`.
    pub(crate) unsafe fn from_raw(p: *const ()) -> Pool {
        // SAFETY: as the caller promises, `p` is `Arc::into_raw` of a pool's
        // `Arc<PoolInner>` whose reference nobody took back yet.
        Pool { inner: unsafe { Arc::from_raw(p.cast::<PoolInner>()) } }
    }

    /// A pool for sectors of `sector_size` bytes (a power of two) in pages
    /// of [`PAGE`] bytes (or `sector_size` if smaller), with a limit of
    /// `limit` bytes and `slots` per-thread cache slots.
    pub fn new(sector_size: usize, limit: u64, slots: usize) -> Pool {
        Self::with_page_size(sector_size, sector_size.min(PAGE), limit, slots)
    }

    /// As [`Pool::new`] with pages of `page_size` bytes (a power of two that
    /// divides `sector_size`, at most 64 KiB), for tests and loom models
    /// with tiny geometry.
    ///
    /// # Panics
    /// If `page_size` does not fit those bounds.
    pub fn with_page_size(sector_size: usize, page_size: usize, limit: u64, slots: usize) -> Pool {
        assert!(
            page_size.is_power_of_two()
                && page_size <= sector_size
                && sector_size % page_size == 0
                && page_size <= 1 << 16,
            "page size {page_size} for sectors of {sector_size}"
        );
        let slots = (0..slots.max(1)).map(|_| CachePadded::new(Slot::default())).collect();
        Pool {
            inner: Arc::new(PoolInner {
                id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
                sector_size,
                page_size,
                limit,
                used: CachePadded::new(AtomicU64::new(0)),
                forced: CachePadded::new(AtomicU64::new(0)),
                peak: CachePadded::new(AtomicU64::new(0)),
                slots,
                shared: Mutex::new(Shared { free: Vec::new(), cold: Vec::new(), regions: Vec::new(), mapped: 0 }),
                shares: Mutex::new(Shares::default()),
                any_shared: AtomicUsize::new(0),
                filter: (0..FILTER).map(|_| AtomicU32::new(0)).collect(),
                extra_holders: AtomicU64::new(0),
            }),
        }
    }

    /// Bytes of one sector.
    pub fn sector_size(&self) -> usize {
        self.inner.sector_size
    }

    /// Bytes of one page.
    pub fn page_size(&self) -> usize {
        self.inner.page_size
    }

    /// Pages in one sector.
    fn pages_per_sector(&self) -> usize {
        self.inner.sector_size / self.inner.page_size
    }

    /// Pages per unit of the slot caches' bounds ([`CACHE_MAX`],
    /// [`CACHE_BATCH`]): a sector's, but at least [`CACHE_UNIT_MIN`] pages
    /// (64 KiB of 4 KiB pages), so that small sectors (4 KiB, the default)
    /// keep as much memory warm per slot, and take as few trips to the shared
    /// list, as 64 KiB ones. Test geometries with pages under [`PAGE`] keep
    /// one sector per unit (the loom models spill after `CACHE_MAX` sectors).
    fn cache_unit(&self) -> usize {
        let pps = self.pages_per_sector();
        if self.inner.page_size >= PAGE {
            pps.max(CACHE_UNIT_MIN)
        } else {
            pps
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Acquire)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// Whether any page is held by more than one table slot now (a
    /// clone's; see "Shared pages").
    pub fn any_shared(&self) -> bool {
        self.inner.any_shared.load(Ordering::Acquire) != 0
    }

    /// The counters.
    pub fn stats(&self) -> PoolStats {
        let i = &self.inner;
        let (ss, ps) = (i.sector_size as u64, i.page_size as u64);
        // Relaxed sums: a snapshot for statistics (a page in flight between
        // two slots may be counted in neither or both for a moment).
        let held: i64 = i.slots.iter().map(|s| s.held.load(Ordering::Relaxed)).sum();
        let allocs: u64 = i.slots.iter().map(|s| s.allocs.load(Ordering::Relaxed)).sum();
        let pages = held.max(0) as u64;
        let (mapped, returned) = {
            let sh = i.shared.lock();
            (sh.mapped, sh.cold.len() as u64 * ps)
        };
        PoolStats {
            sector_size: ss,
            page_size: ps,
            limit: i.limit,
            used: i.used.load(Ordering::Acquire),
            forced: i.forced.load(Ordering::Acquire),
            peak: i.peak.load(Ordering::Relaxed),
            sectors: pages * ps / ss,
            pages,
            allocs: allocs * ps / ss,
            mapped,
            // Every mapped page is held by a file, cold, or warm (in a
            // slot or on the shared list), so the warm bytes follow without
            // taking every slot's lock. A page moving between a list and
            // its holder at this instant counts as warm.
            free_warm: mapped.saturating_sub(pages * ps + returned),
            returned,
            shared_pages: i.any_shared.load(Ordering::Relaxed) as u64,
            shared_extra: i.extra_holders.load(Ordering::Relaxed),
        }
    }

    /// Gives the free pages on the shared list beyond `keep` warm bytes back
    /// to the OS; returns the bytes given back. The per-thread caches (at
    /// most [`CACHE_MAX`] sectors' worth each) stay warm.
    ///
    /// Cost: one `madvise` per run of adjacent pages, under the shared
    /// lock's protection only for the list moves (the pages trimmed are
    /// owned by this call meanwhile).
    pub fn trim(&self, keep: u64) -> u64 {
        let i = &self.inner;
        let ss = i.page_size as u64;
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
            // this call is its only owner: no table reaches these pages and
            // no list hands them out until they are pushed below.
            unsafe { crate::sync::discard(&mut batch, i.page_size) };
            let n = batch.len() as u64;
            i.shared.lock().cold.append(&mut batch);
            n * ss
        }
        // Injected bug (loom-tests/tests/pool.rs): give back pages that are
        // still on the free list, where another thread can take one and
        // write it meanwhile.
        #[cfg(loom_bug = "pool_trim_in_list")]
        {
            let (ptr, n, at) = {
                let sh = i.shared.lock();
                let n = sh.free.len().saturating_sub(keep_n);
                (sh.free.as_ptr(), n, sh.free.len() - n)
            };
            for k in at..at + n {
                // SAFETY: none: this is the bug the model must catch.
                unsafe { (*ptr.add(k)).mem(i.page_size).discard_one() };
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
        self.reserve_in(bytes, || self.clone())
    }

    /// [`Pool::reserve`] borrowing the pool (no reference count touched:
    /// the write path's form).
    pub(crate) fn reserve_ref(&self, bytes: u64) -> Result<Reservation<&Pool>, Error> {
        self.reserve_in(bytes, || self)
    }

    /// The CAS loop; `pool` makes the reservation's handle on success only.
    fn reserve_in<P: AsRef<Pool>>(&self, bytes: u64, pool: impl FnOnce() -> P) -> Result<Reservation<P>, Error> {
        if bytes == 0 {
            return Ok(Reservation { pool: pool(), bytes });
        }
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
                    return Ok(Reservation { pool: pool(), bytes });
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Reserves `bytes` even past the limit (for copy-on-write replacements
    /// and shrinking operations, which must not fail when full: what they
    /// replace is freed once no reader holds it).
    pub fn reserve_forced(&self, bytes: u64) -> Reservation {
        self.reserve_forced_in(self.clone(), bytes)
    }

    /// [`Pool::reserve_forced`] borrowing the pool.
    pub(crate) fn reserve_forced_ref(&self, bytes: u64) -> Reservation<&Pool> {
        self.reserve_forced_in(self, bytes)
    }

    fn reserve_forced_in<P: AsRef<Pool>>(&self, pool: P, bytes: u64) -> Reservation<P> {
        // Injected bug (loom-tests/tests/limit_reservation.rs): charge it
        // to `used`, as before the forced count, so that an overwrite in
        // flight takes an appender's room.
        #[cfg(loom_bug = "pool_forced_in_used")]
        {
            let next = self.inner.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
            self.raise_peak(next);
        }
        #[cfg(not(loom_bug = "pool_forced_in_used"))]
        self.inner.forced.fetch_add(bytes, Ordering::AcqRel);
        Reservation { pool, bytes }
    }

    /// [`Pool::reserve_forced_ref`] for a file's runner inside a batch: the
    /// bytes are owed by this thread instead of added to `forced` ("Memory
    /// limit"), unless it owes another pool (then they are added at once).
    /// The runner calls [`Pool::settle_owed`] before anything its batch
    /// replaced can be released by another thread, and when the batch ends.
    pub(crate) fn reserve_forced_owed(&self, bytes: u64) -> Reservation<&Pool> {
        // Under the injected bug forced charges go to `used`: keep that
        // path (`an_overwrite_leaves_an_appenders_room` must still fail).
        #[cfg(not(loom_bug = "pool_forced_in_used"))]
        if bytes == 0 || self.owe(bytes) {
            return Reservation { pool: self, bytes };
        }
        self.reserve_forced_ref(bytes)
    }

    /// Adds `bytes` to what this thread owes this pool; `false` (nothing
    /// owed) if it owes another pool.
    fn owe(&self, bytes: u64) -> bool {
        let id = self.inner.id;
        OWED.try_with(|o| {
            let (at, n) = o.get();
            (n == 0 || at == id).then(|| o.set((id, n + bytes))).is_some()
        })
        .unwrap_or(false)
    }

    /// Adds what this thread owes this pool to `forced` ("Memory limit").
    pub(crate) fn settle_owed(&self) {
        let n = self.take_owed(u64::MAX);
        if n > 0 {
            self.inner.forced.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Cancels up to `bytes` of what this thread owes this pool; the bytes
    /// left to release.
    fn cancel_owed(&self, bytes: u64) -> u64 {
        bytes - self.take_owed(bytes)
    }

    /// Takes up to `most` bytes off what this thread owes this pool (the
    /// pool named by a number, not its address, which a later pool may
    /// have); the bytes taken.
    fn take_owed(&self, most: u64) -> u64 {
        let id = self.inner.id;
        OWED.try_with(|o| match o.get() {
            (at, n) if n > 0 && at == id => {
                let c = n.min(most);
                o.set((at, n - c));
                c
            }
            _ => 0,
        })
        .unwrap_or(0)
    }

    /// Raises `peak` to `v`; a plain load when it is already higher (the
    /// usual case once a mount is warm), so reservations do not all write
    /// the peak's cache line.
    fn raise_peak(&self, v: u64) {
        if self.inner.peak.load(Ordering::Relaxed) < v {
            self.inner.peak.fetch_max(v, Ordering::Relaxed);
        }
    }

    /// Gives `bytes` charged earlier back (a [`Charge`] dropped, or bytes
    /// a charge was kept for: [`Charge::keep`]).
    ///
    /// Forced charges outstanding are matched first ("Memory limit"): the
    /// bytes released come off `forced` as far as it goes, the rest off
    /// `used`.
    pub(crate) fn uncharge(&self, bytes: u64) {
        let i = &self.inner;
        // Owed bytes first: forced charges of this thread's batch not yet
        // added to `forced` (see `reserve_forced_owed`).
        let bytes = self.cancel_owed(bytes);
        if bytes == 0 {
            return;
        }
        let mut rest = bytes;
        let mut f = i.forced.load(Ordering::Acquire);
        while f > 0 {
            let d = f.min(bytes);
            match i.forced.compare_exchange_weak(f, f - d, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    rest = bytes - d;
                    break;
                }
                Err(now) => f = now,
            }
        }
        if rest > 0 {
            i.used.fetch_sub(rest, Ordering::AcqRel);
        }
    }

    /// Bytes of forced charges not yet matched by a release: copies made
    /// by copy-on-write (and shrinks) whose replaced memory is not freed
    /// yet, outside `used` and the limit ("Memory limit").
    pub fn forced(&self) -> u64 {
        self.inner.forced.load(Ordering::Acquire)
    }

    /// Takes `n` pages: own slot, then the shared list, then a new region;
    /// hands each to `each` (in ascending order when the slot holds a run).
    /// `false` if the OS refused memory (the pages handed out so far are
    /// the caller's).
    fn take_pages(&self, n: usize, each: &mut dyn FnMut(Page)) -> bool {
        let i = &self.inner;
        let slot = &i.slots[my_slot(i.slots.len())];
        let mut got = 0u64;
        let ok = self.take_pages_from(slot, n, &mut |m| {
            got += 1;
            each(m)
        });
        slot.held.fetch_add(got as i64, Ordering::Relaxed);
        slot.allocs.fetch_add(got, Ordering::Relaxed);
        ok
    }

    fn take_pages_from(&self, slot: &Slot, mut n: usize, each: &mut dyn FnMut(Page)) -> bool {
        {
            let mut s = slot.free.lock();
            while n > 0 {
                let Some(m) = s.pop() else { break };
                each(m);
                n -= 1;
            }
        }
        if n == 0 {
            return true;
        }
        // The slot ran out: the rest straight from a refill (in ascending
        // order, as the slot would have), what is left over into the slot.
        let Some(mut batch) = self.refill(n) else { return false };
        for _ in 0..n {
            match batch.pop() {
                Some(m) => each(m),
                None => return false,
            }
        }
        if !batch.is_empty() {
            slot.free.lock().append(&mut batch);
        }
        true
    }

    /// Pages from the shared list (or a new region) for a slot that ran out:
    /// at least `want`, and a batch of [`CACHE_BATCH`] sectors' worth.
    /// `None` if the OS refuses memory.
    fn refill(&self, want: usize) -> Option<Vec<Page>> {
        let i = &self.inner;
        let batch = (CACHE_BATCH * self.cache_unit()).max(want);
        let mut sh = i.shared.lock();
        if sh.free.len() < want && !sh.cold.is_empty() {
            // Pages given back to the OS: zero pages on first touch.
            let keep = sh.cold.len().saturating_sub(batch);
            let mut c = sh.cold.split_off(keep);
            sh.free.append(&mut c);
        }
        while sh.free.len() < want {
            let bytes = i.sector_size.div_ceil(REGION_BYTES).max(1) * REGION_BYTES;
            let mut region = Region::map(bytes)?;
            let mut pages = region.carve(i.page_size);
            // The new region's pages under the old ones: handed out first,
            // in ascending order.
            pages.append(&mut sh.free);
            sh.free = pages;
            sh.regions.push(region);
            sh.mapped += bytes as u64;
        }
        let keep = sh.free.len().saturating_sub(batch);
        Some(sh.free.split_off(keep))
    }

    /// Maps memory for `bytes` of pages ahead of a bulk load (an image) and
    /// starts a thread that faults it in, in the order the pages will be
    /// handed out, so the kernel's zeroing of fresh memory runs on the other
    /// core beside the loader's copies. The memory is free and warm until
    /// taken (trimmed like any free memory if a load leaves it unused).
    /// Best effort: `None` if the OS refuses memory or the thread. The
    /// thread holds the pool (so the memory stays mapped while it runs);
    /// dropping the guard stops and joins it.
    #[cfg(all(target_os = "linux", not(loom)))]
    pub(crate) fn prefault(&self, bytes: u64) -> Option<Prefault> {
        let want = usize::try_from(bytes).ok()?.div_ceil(REGION_BYTES).max(1) * REGION_BYTES;
        let mut region = Region::map(want)?;
        let span = region.span();
        {
            let mut sh = self.inner.shared.lock();
            // Under what is already free (handed out first), its own pages
            // in ascending order.
            let mut pages = region.carve(self.inner.page_size);
            pages.append(&mut sh.free);
            sh.free = pages;
            sh.regions.push(region);
            sh.mapped += want as u64;
        }
        // SAFETY: the region just mapped, which the pool keeps until it
        // drops; the thread holds a clone of the pool.
        unsafe { Prefault::start(span.0, span.1, self.clone()) }
    }

    /// Gives `pages` back: they go to this thread's cache slot (the last one
    /// first out), are uncharged, and stop counting as held.
    ///
    /// # Safety
    /// Every page came from this pool (a [`Reservation`]), is held (charged
    /// and not freed since), and the caller gives up one holder of it: no
    /// table slot of that holder that any thread can still read reaches it
    /// (the version protocol of `crate::node` decides when that is), and it
    /// is given up once. If that was its only holder, nobody reads or
    /// writes it after this call.
    ///
    /// A page held by more than one table slot (a clone's, see "Shared
    /// pages") loses one holder instead, and is freed only by its last one.
    pub unsafe fn free_pages(&self, pages: &[Page]) {
        if pages.is_empty() {
            return;
        }
        #[cfg(not(loom_bug = "share_count_lost"))]
        let some_shared = self.inner.any_shared.load(Ordering::Acquire) != 0;
        // Injected bug (loom-tests/tests/clone_share.rs): frees skip the
        // share counts, so the first file to let go of a cloned page frees
        // it under the other file.
        #[cfg(loom_bug = "share_count_lost")]
        let some_shared = false;
        let ps = self.inner.page_size;
        if !some_shared || pages.iter().all(|m| !self.maybe_shared(*m)) {
            // SAFETY: the caller's contract, and no page is shared.
            unsafe { self.free_unshared(pages) };
            return;
        }
        let mut sh = self.inner.shares.lock();
        let mut run = 0;
        let mut dropped = 0;
        for (k, m) in pages.iter().enumerate() {
            // Another slot still holds it: drop this holder only.
            if !sh.drop_one(m.addr(), ps, &self.inner.filter) {
                continue;
            }
            dropped += 1;
            // SAFETY: the caller's contract, for the pages before `m` that
            // no other slot holds.
            unsafe { self.free_unshared(&pages[run..k]) };
            run = k + 1;
        }
        self.inner.any_shared.store(sh.pages, Ordering::Release);
        self.inner.extra_holders.fetch_sub(dropped, Ordering::Relaxed);
        drop(sh);
        // The slots those holders were charged for (`share_pages`).
        self.uncharge(dropped * super::table::SLOT_COST);
        // SAFETY: as above, for the rest.
        unsafe { self.free_unshared(&pages[run..]) };
    }

    /// Adds one holder to each of `pages` (a clone puts them in one more
    /// table slot each): each is then freed by one more
    /// [`Pool::free_pages`] than before. `slots` is the charge for the new
    /// slots ([`SLOT_COST`](super::table::SLOT_COST) per page, reserved by
    /// the caller before it changed anything); it stays charged until each
    /// holder goes (`free_pages`).
    ///
    /// # Safety
    /// Every page is held (taken from this pool and not freed), and stays
    /// held until this returns (the caller reaches it through a version it
    /// holds, or through a clone's pages in transit).
    pub(crate) unsafe fn share_pages<P: AsRef<Pool>>(&self, pages: impl Iterator<Item = Page>, slots: Reservation<P>) {
        let mut sh = self.inner.shares.lock();
        let added = sh.add(pages, self.inner.page_size, &self.inner.filter);
        self.inner.any_shared.store(sh.pages, Ordering::Release);
        self.inner.extra_holders.fetch_add(added, Ordering::Relaxed);
        drop(sh);
        debug_assert_eq!(slots.remaining(), added * super::table::SLOT_COST, "a clone's slots reserved exactly");
        slots.keep();
    }

    /// Whether another table slot holds `m` too (a clone's page): a
    /// copy-on-write of it then adds a page to what is charged (the page it
    /// replaces is not freed), so it needs a limit-checked reservation.
    /// May say `true` for a page whose other holder is letting go (the
    /// cautious side); never `false` for a page another slot holds, if the
    /// caller holds `m` through the file whose runner it is (only that
    /// runner can add a holder to a page no other slot holds).
    pub(crate) fn is_shared(&self, m: Page) -> bool {
        self.inner.any_shared.load(Ordering::Acquire) != 0
            && self.maybe_shared(m)
            && self.inner.shares.lock().contains(m.addr(), self.inner.page_size)
    }

    /// Whether `m`'s filter bucket holds a group with a shared page: never
    /// `false` for a page with a count, if the caller's access to `m`
    /// happens after the increment that made it shared (as every free's
    /// does, see "Shared pages"). May be `true` for a page without one
    /// (another group in its bucket).
    fn maybe_shared(&self, m: Page) -> bool {
        let (g, _) = Shares::at(m.addr(), self.inner.page_size);
        self.inner.filter[filter_bucket(g)].load(Ordering::Acquire) != 0
    }

    /// [`Pool::free_pages`] for pages no other slot holds.
    ///
    /// # Safety
    /// As for [`Pool::free_pages`], and no page has an entry in `shares`.
    unsafe fn free_unshared(&self, pages: &[Page]) {
        if pages.is_empty() {
            return;
        }
        let i = &self.inner;
        let slot = &i.slots[my_slot(i.slots.len())];
        let max = CACHE_MAX * self.cache_unit();
        let spill = {
            let mut s = slot.free.lock();
            // Reversed: pages freed in ascending order are handed out again
            // in ascending order (a sector freed whole is reused as a run).
            s.extend(pages.iter().rev().copied());
            // The next page handed out, into the cache: the page a
            // copy-on-write replaced is usually cold, and the next
            // overwrite's copy into it waits for every line otherwise
            // (BENCHMARKS, "Engine: overwrite": 15-20% of a 4 KiB
            // overwrite).
            if let Some(&m) = s.last() {
                m.prefetch_write(i.page_size);
            }
            if s.len() > max {
                let keep = s.len() - max / 2;
                Some(s.split_off(keep))
            } else {
                None
            }
        };
        if let Some(spill) = spill {
            i.shared.lock().free.extend(spill);
        }
        let n = pages.len() as u64;
        slot.held.fetch_sub(n as i64, Ordering::Relaxed);
        self.uncharge(n * i.page_size as u64);
    }

    /// Counts free pages in slots and the shared list (for tests and checks).
    pub fn free_pages_count(&self) -> usize {
        let i = &self.inner;
        let in_slots: usize = i.slots.iter().map(|s| s.free.lock().len()).sum();
        let sh = i.shared.lock();
        in_slots + sh.free.len() + sh.cold.len()
    }

    /// Sectors' worth of free pages in slots and the shared list (for tests
    /// and checks; rounded down).
    pub fn free_sectors(&self) -> usize {
        self.free_pages_count() / self.pages_per_sector()
    }
}

impl AsRef<Pool> for Pool {
    fn as_ref(&self) -> &Pool {
        self
    }
}

/// Bytes reserved against the limit; what is not used is returned on drop.
/// `P` is how it holds its pool: a clone ([`Pool::reserve`]) or a borrow
/// (the write path's, which touches no reference count).
#[derive(Debug)]
pub struct Reservation<P: AsRef<Pool> = Pool> {
    pool: P,
    bytes: u64,
}

impl<P: AsRef<Pool>> Reservation<P> {
    /// Bytes still reserved.
    pub fn remaining(&self) -> u64 {
        self.bytes
    }

    /// Keeps what is left charged for good: whoever keeps it gives it back
    /// with [`Pool::uncharge`] (a clone's table slots: `Pool::share_pages`).
    pub(crate) fn keep(mut self) {
        self.bytes = 0;
    }

    /// Cuts `n` pages out of the reservation and hands each to `each`:
    /// they are charged (the reservation's bytes become theirs) and held
    /// until [`Pool::free_pages`]. A sector is `sector_size / page_size`
    /// pages, usually one contiguous run.
    ///
    /// # Errors
    /// [`Error::NoSpace`] if fewer than `n` pages are left in the
    /// reservation (nothing taken); [`Error::OutOfMemory`] if the OS refuses
    /// memory for a new region (the pages handed to `each` before that are
    /// taken and the caller's to free). Callers take all their pages before
    /// mutating.
    pub fn take_pages(&mut self, n: usize, each: &mut dyn FnMut(Page)) -> Result<(), Error> {
        let pool = self.pool.as_ref();
        let inner = &pool.inner;
        let bytes = n as u64 * inner.page_size as u64;
        if self.bytes < bytes {
            return Err(Error::NoSpace);
        }
        let mut got = 0u64;
        let ok = pool.take_pages(n, &mut |m| {
            got += 1;
            each(m)
        });
        self.bytes -= got * inner.page_size as u64;
        if ok {
            Ok(())
        } else {
            Err(Error::OutOfMemory)
        }
    }

    /// The pool this reservation is against.
    pub fn pool(&self) -> &Pool {
        self.pool.as_ref()
    }

    /// Moves `other`'s bytes into this reservation (both from one pool).
    pub fn join<Q: AsRef<Pool>>(&mut self, mut other: Reservation<Q>) {
        debug_assert!(self.pool.as_ref().same(other.pool.as_ref()), "reservations of two pools");
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
        Ok(Charge { pool: self.pool.as_ref().clone(), bytes })
    }
}

impl<P: AsRef<Pool>> Drop for Reservation<P> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.pool.as_ref().uncharge(self.bytes);
        }
    }
}

/// A clone's pages in transit from the source's table to the
/// destination's (issue 20): one entry per page (`None`: a hole), each page
/// with one holder taken for this clone ([`Pool::share_pages`]). The
/// destination's runner puts them in its draft and empties the list once
/// that draft is published; whatever is still here when the last handle
/// drops (the clone failed, or its batch panicked) loses its holder
/// ([`Pool::free_pages`]).
pub(crate) struct Transit {
    pool: Pool,
    pages: Mutex<Vec<Option<Page>>>,
}

impl Transit {
    pub(crate) fn new(pool: &Pool) -> Transit {
        Transit { pool: pool.clone(), pages: Mutex::new(Vec::new()) }
    }

    /// The list, for the runner filling it (`FileData::share_range`: every
    /// page pushed must carry one holder), the runner copying it into a
    /// draft (`FileData::install_shared`), and that runner emptying it once
    /// the draft is published (`node::Draft`: a slot holds every page from
    /// then on).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Vec<Option<Page>>> {
        self.pages.lock()
    }
}

impl Drop for Transit {
    fn drop(&mut self) {
        let left: Vec<Page> = std::mem::take(&mut *self.pages.lock()).into_iter().flatten().collect();
        // SAFETY: each page in the list carries one holder taken for this
        // clone (`lock`'s contract) and was not put in any table (it would
        // have been taken out): giving that holder up is this drop's, once.
        unsafe { self.pool.free_pages(&left) };
    }
}

/// Bytes charged against the limit for as long as this lives.
#[derive(Debug)]
pub struct Charge {
    pool: Pool,
    bytes: u64,
}

impl Charge {
    /// Bytes charged.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Keeps the charge for good: returns its pool, to which the holder
    /// gives the same bytes back itself ([`Pool::uncharge`]; a small file's
    /// inline buffer, which knows its length, so it need not store it).
    pub(crate) fn keep(self) -> Pool {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped nor used again, so the pool is
        // moved out of it exactly once (its `Drop`, which would uncharge,
        // does not run). Tested: every inline file's bytes go back
        // (`uncharged_exactly_once_when_kept` below, and the engine tests'
        // `used == 0` after deleting small files).
        unsafe { std::ptr::read(&me.pool) }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.pool.uncharge(self.bytes);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A kept charge stays charged until its holder gives it back, once;
    /// the pool's handle moved out of it is a working clone.
    #[test]
    fn uncharged_exactly_once_when_kept() {
        let pool = Pool::new(4096, 1 << 20, 1);
        let c = pool.reserve(100).unwrap().charge(100).unwrap();
        assert_eq!(pool.used(), 100);
        let kept = c.keep();
        assert_eq!(pool.used(), 100, "keeping does not uncharge");
        assert_eq!(Arc::strong_count(&pool.inner), 2, "one handle moved out, none leaked");
        kept.uncharge(100);
        drop(kept);
        assert_eq!((pool.used(), Arc::strong_count(&pool.inner)), (0, 1));
    }

    /// A page with extra holders is freed by its last `free_pages` only;
    /// counts, `shared_pages` and `shared_extra` follow; pages of several
    /// groups and repeated pages in one call are counted one by one.
    #[test]
    fn shared_pages_go_back_with_their_last_holder() {
        let pool = Pool::new(4096, 1 << 30, 1);
        let mut res = pool.reserve(3000 * 4096).unwrap();
        let mut v = Vec::new();
        res.take_pages(3000, &mut |m| v.push(m)).unwrap();
        drop(res);
        let ps = 4096u64;
        let slot = super::super::table::SLOT_COST;
        let slots = |n: u64| pool.reserve(n * slot).unwrap();
        // SAFETY: every page is held by this test.
        unsafe { pool.share_pages(v.iter().copied(), slots(3000)) };
        // SAFETY: as above; page 7 gets a third holder.
        unsafe { pool.share_pages([v[7], v[7]].into_iter(), slots(2)) };
        let st = pool.stats();
        assert_eq!((st.pages, st.shared_pages, st.shared_extra), (3000, 3000, 3002));
        assert_eq!(st.used, 3000 * ps + 3002 * slot, "each extra holder's slot is charged");
        assert!(pool.is_shared(v[2999]) && pool.is_shared(v[0]));
        // SAFETY: one holder each given up (the test's second).
        unsafe { pool.free_pages(&v) };
        let st = pool.stats();
        assert_eq!((st.pages, st.shared_pages, st.shared_extra), (3000, 1, 2));
        assert_eq!(st.used, 3000 * ps + 2 * slot, "a holder's slot goes with it");
        assert!(!pool.is_shared(v[0]) && pool.is_shared(v[7]));
        // SAFETY: page 7's extra holders, then every page's last one (7 twice
        // in one call: two holders given up in order).
        unsafe { pool.free_pages(&[v[7], v[7]]) };
        assert_eq!(pool.stats().shared_pages, 0);
        // SAFETY: the last holder of each.
        unsafe { pool.free_pages(&v) };
        let st = pool.stats();
        assert_eq!((st.pages, st.used, st.shared_pages, st.shared_extra), (0, 0, 0, 0));
        assert!(pool.inner.shares.lock().groups.is_empty(), "empty groups go");
    }
}
