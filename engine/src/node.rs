//! Inodes: the published per-node state, the node's actor, its life counts.
//!
//! # Fields in a node and who may touch them
//! * `snap` (`ArcSwap<Snap>`): the published metadata, file data and xattrs.
//!   Anyone loads it (once per operation); **only the node's runner stores
//!   it**, once per batch, so there is no read-modify-write race and no retry
//!   loop.
//! * `actor`: every mutation of `snap` is a request through it (see
//!   [`crate::actor`]).
//! * `life` (mutex): link count, lookup count (references the kernel or an
//!   embedder holds, released by `forget`), open count, and `gone`. When all
//!   three counts are zero the node is *gone*: nothing can name it again
//!   (no entry, no handle, no lookup reference), so it is removed from the
//!   inode map and freed when the last `Arc` drops. `nlink` mirrors the link
//!   count for lock-free `getattr`.
//! * `parent` (directories): the inode of `..`, written only under the rename
//!   lock and the directory locks involved.
//! * `dir` (directories): entries under a reader-writer lock.
//!
//! Lock order: directory locks (ancestor first, else lower inode first) →
//! `life` → nothing. A runner applying a batch takes no namespace lock;
//! only the pool's locks and, when it publishes, a `Block`'s.
//!
//! # Versions (issue 18)
//! Each batch publishes one new version ([`Snap`]) of the node, built as a
//! *draft* that shares everything it does not change with the current one:
//! the page table's nodes and pages are plain pointers (no reference counts,
//! `sector::table`), so who may free them is decided here, by versions:
//!
//! 1. The draft of version `n + 1` changes only what its batch made (table
//!    nodes of its number, fresh pages); everything it replaces or cuts off
//!    is *retired*: reachable from version `n` (and maybe older ones), from
//!    no newer one. Let `w` be the version of the newest [`Block`] alive
//!    when the draft began (rule 3; none: nothing is held but maybe `n`).
//!    What the batch retires that was made after `w` (a node numbered
//!    above `w`, a page taken after `w`: the leaf's `young` marks) is
//!    *young*: no version up to `w` reaches it (`Retired::is_young`).
//! 2. Publishing is one `ArcSwap::swap`, which returns version `n` counted
//!    exactly (`sync::ArcSwap::swap`: the cell pays its readers' debts
//!    first). If the runner's `Arc` is then the only one (`Arc::get_mut`,
//!    an acquire after every other holder's release), no reader holds `n`,
//!    nor any version after `w` (each was found alone in its turn): the
//!    young items go back at once (nodes to this thread's spare nodes,
//!    pages to the pool), and so does the rest unless `w`'s block is still
//!    alive, which then takes it. `n`'s allocation becomes the next draft
//!    (a thread-local spare). So a write on a file nobody is reading
//!    allocates nothing.
//! 3. Otherwise version `n` becomes *superseded*: it keeps the young items
//!    as its own (of the versions that reach them only `n` is alive; freed
//!    when its last holder drops it) and gets a new block for the rest,
//!    which waits for `n` **and every older version**: `w`'s block, while
//!    alive, holds it too (a chain of blocks, not of versions). `n`'s block
//!    is the newest now. So a reader holding an old version keeps what that
//!    version reaches, and hardly anything else (a subtree cut off whole is
//!    kept whole): 1,000 overwrites of one page under a held version keep
//!    two pages, not 1,000 (`engine/tests/issue_18_retention.rs`).
//! 4. The current version carries the pool and the newest block
//!    (`Link::Published`): if it is dropped without being superseded, it was
//!    the file's last; it frees its whole table at once, or gives it to the
//!    newest block if that is still alive (an older version may reach part
//!    of it).
//!
//! These rules decide when a *file* lets go of a page. A page cloned into
//! another file (issue 20) has one holder per table slot: each file gives
//! up its own through `Pool::free_pages`, which frees the page only with
//! the last holder. A clone takes the destination's holders in the source's
//! batch (`Op::Share`), before the version that marks the pages shared is
//! published, and hands them to the destination's batch (`Op::Install`) or
//! back to the pool (`sector::Transit`).
//!
//! A draft that is not published (no request of the batch succeeded, or the
//! batch panicked) gives back what its batch made and nothing else
//! (`Table::abort`, through the `Draft` guard even while unwinding).
//! loom: `reclaim.rs` (nothing freed while a reader holds a version that
//! reaches it, nothing leaked), `read_with.rs` (nothing reused while lent);
//! the injected bugs `version_reclaim_early`, `version_chain_unlinked`,
//! `retired_all_young`, `draft_reuses_gen` and `leaf_copy_keeps_fresh`.

use std::borrow::Cow;
use std::cell::RefCell;

use crate::acl::{Acl, AclKind};
use crate::actor::{Combiner, Request};
use crate::budget::XValue;
use crate::data::{Ctx, FileData};
use crate::dir::Dir;
use crate::sector::table::{free_one, free_retired, Edit, Retired};
use crate::sector::Pool;
use crate::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{thread_local, Arc, ArcSwap, Mutex, RwLock, SmallMutex, UnsafeCell};
use crate::types::{
    inode_flags, xattr_flags, FileType, Ino, SetAttr, SetTime, Time, NAME_MAX, XATTR_LIST_MAX, XATTR_SIZE_MAX,
};
use crate::{Error, Result};

/// Extended attributes of one node.
///
/// Persistent (rpds's red-black tree with structural sharing): a batch's
/// private copy of the published map is one reference count, and a set or
/// remove copies only the path to its key, so `setxattr` costs O(log n) in
/// time and memory however many attributes the inode has (issue 17).
/// Extended attributes by name; each value carries its metadata charge
/// (`budget.rs`), shared by the map versions that hold it.
pub(crate) type Xattrs = rpds::RedBlackTreeMapSync<Box<[u8]>, XValue>;

/// Metadata of a node.
///
/// 64 bytes, aligned to 4: its times are [`PTime`]s (12 bytes each, not
/// [`Time`]'s 16), which keeps every version 16 bytes smaller (issue 17).
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) perm: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: PTime,
    pub(crate) mtime: PTime,
    pub(crate) ctime: PTime,
    pub(crate) crtime: PTime,
    pub(crate) flags: u32,
}

impl Meta {
    /// A new node's metadata: every time stamp now, no flags.
    pub(crate) fn new(perm: u32, uid: u32, gid: u32) -> Meta {
        let now: PTime = Time::now().into();
        Meta { perm, uid, gid, atime: now, mtime: now, ctime: now, crtime: now, flags: 0 }
    }

    /// Whether a read now updates the access time under the rule `atime`:
    /// never with `inode_flags::NOATIME` (`chattr +A`).
    pub(crate) fn access_due(&self, atime: crate::types::Atime) -> bool {
        self.flags & inode_flags::NOATIME == 0 && atime.due(self.atime.get(), self.mtime.get(), self.ctime.get())
    }
}

/// A [`Time`] stored in 12 bytes (aligned to 4, no padding). Its fields are
/// only ever copied out (`get`), never borrowed, so the packing is safe.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
pub(crate) struct PTime {
    secs: i64,
    nanos: u32,
}

impl PTime {
    pub(crate) fn get(self) -> Time {
        Time { secs: self.secs, nanos: self.nanos }
    }
}

impl From<Time> for PTime {
    fn from(t: Time) -> PTime {
        PTime { secs: t.secs, nanos: t.nanos }
    }
}

/// One version of a node: published, superseded, or the runner's draft.
pub(crate) struct Snap {
    pub(crate) meta: Meta,
    pub(crate) data: FileData,
    pub(crate) xattrs: Option<Arc<Xattrs>>,
    /// The version's number (one more than the version its draft came
    /// from): the table nodes its batch made carry it.
    ver: u64,
    /// Where the version stands (see "Versions"). Written after
    /// publication only by the runner (while it holds an `Arc` to this
    /// version) and read only by `Drop` (which has the last one); readers
    /// never touch it.
    link: UnsafeCell<Link>,
}

// SAFETY: `link` is the only field with interior mutability. It is written
// only by the file's runner (one thread at a time, handed over with
// acquire/release by the actor) while that runner holds an `Arc` to the
// version, and read only in `Drop`, which runs after every other holder's
// release (the `Arc` protocol); readers never access it. Every other field
// is written only while the version is a draft (the runner's alone, before
// it is published) or after `Arc::get_mut` proves nobody else holds it.
// loom: `reclaim.rs` and `read_with.rs` run readers against the runner (the
// facade's `UnsafeCell` is loom's there, so each access is checked).
unsafe impl Sync for Snap {}

// What every file pays (issue 17, per-file cost; docs/ARCHITECTURE.md,
// "Node", "Size"): each `Arc` block (an 8-byte count, `triomphe`) sits at a
// glibc chunk boundary (80 and 128 bytes), so 8 bytes more in either cost
// 16 per file. A change that grows them must change this line and say why.
#[cfg(all(not(loom), target_os = "linux", target_pointer_width = "64"))]
const _: () = assert!(std::mem::size_of::<Node>() == 64 && std::mem::size_of::<Snap>() == 112);

/// Where a version stands (see "Versions"): what its [`Link`] holds.
enum LinkState {
    /// A draft, or a spare version waiting to become one.
    Draft,
    /// The current version. `pool` (set once the contents have ever been a
    /// table, and always with a block) frees the table should this turn
    /// out to be the file's last version; `newest` is the block of the
    /// newest superseded version (rule 3), which may be dead already.
    Published { pool: Option<Pool>, newest: Option<Arc<Block>> },
    /// Replaced while a reader still held it (rare, so boxed).
    Superseded(Box<Superseded>),
}

/// A [`LinkState`] in one word: a pointer whose two low bits say which
/// state (every pointee is aligned to at least 4). Issue 17, per-file
/// cost: the enum takes 24 bytes (a tag and two pointers) of every
/// version, this 8, which puts a version in a 128-byte heap chunk, not 144.
/// * `DRAFT`: null.
/// * `POOL`: published without a block: the pool's reference
///   (`Pool::into_raw`), or null for none.
/// * `BLOCK`: published with a block: the block's `Arc`; the pool is the
///   block's (one engine, one pool), given out as a clone.
/// * `SUPERSEDED`: the `Box`.
///
/// It owns what it points to (its `Drop` unpacks and drops it), and is
/// read and written only through [`Link::new`], [`Link::take`] and
/// [`Link::block`].
struct Link(*const ());

// SAFETY: a link owns a `Pool`, an `Arc<Block>` or a `Box<Superseded>`,
// each `Send`: moving the word to another thread moves that ownership.
unsafe impl Send for Link {}
const _: () = {
    const fn send<T: Send>() {}
    send::<Pool>();
    send::<Arc<Block>>();
    send::<Box<Superseded>>();
};

// The two tag bits are free in every pointer a link holds.
const _: () = assert!(
    std::mem::align_of::<Block>() >= 4
        && std::mem::align_of::<Superseded>() >= 4
        && crate::sector::Pool::RAW_ALIGN >= 4
);

impl Link {
    const TAG: usize = 0b11;
    const DRAFT: usize = 0;
    const POOL: usize = 1;
    const BLOCK: usize = 2;
    const SUPERSEDED: usize = 3;

    fn new(state: LinkState) -> Link {
        let (p, tag): (*const (), usize) = match state {
            LinkState::Draft => (std::ptr::null(), Self::DRAFT),
            LinkState::Published { pool, newest: Some(b) } => {
                debug_assert!(pool.as_ref().is_none_or(|p| p.same(&b.pool)), "one engine, one pool");
                (Arc::into_raw(b).cast(), Self::BLOCK)
            }
            LinkState::Published { pool, newest: None } => (pool.map_or(std::ptr::null(), Pool::into_raw), Self::POOL),
            LinkState::Superseded(s) => (Box::into_raw(s).cast_const().cast(), Self::SUPERSEDED),
        };
        Link(p.map_addr(|a| a | tag))
    }

    fn tag(&self) -> usize {
        self.0.addr() & Self::TAG
    }

    fn ptr(&self) -> *const () {
        self.0.map_addr(|a| a & !Self::TAG)
    }

    /// The state, leaving `Draft`.
    fn take(&mut self) -> LinkState {
        let (tag, p) = (self.tag(), self.ptr());
        self.0 = std::ptr::null();
        // SAFETY: `p` and `tag` were made by `Link::new` from the pointer's
        // owner (`into_raw`), and the word is null (`Draft`, owning
        // nothing) from here on, so each reference is taken back once.
        unsafe {
            match tag {
                Self::POOL => LinkState::Published { pool: (!p.is_null()).then(|| Pool::from_raw(p)), newest: None },
                Self::BLOCK => {
                    let b = Arc::from_raw(p.cast::<Block>());
                    LinkState::Published { pool: Some(b.pool.clone()), newest: Some(b) }
                }
                Self::SUPERSEDED => LinkState::Superseded(Box::from_raw(p.cast::<Superseded>().cast_mut())),
                _ => LinkState::Draft,
            }
        }
    }

    /// The newest block, if the version is published with one.
    fn block(&self) -> Option<&Block> {
        // SAFETY: a `BLOCK` link holds a reference to the block (`Arc`),
        // which lives while `self` does.
        (self.tag() == Self::BLOCK).then(|| unsafe { &*self.ptr().cast::<Block>() })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// A version replaced while a reader still held it: `own` (what only this
/// version reaches) goes back to `pool` when it is dropped; it releases
/// `block` then (rule 3).
struct Superseded {
    own: Vec<Retired>,
    pool: Option<Pool>,
    block: Option<Arc<Block>>,
}

/// What batches retired that a superseded version, or an older one, may
/// still reach: freed when the version it was made for and every older
/// version of the file are gone (rule 3 of "Versions").
pub(crate) struct Block {
    /// The version it was made for.
    ver: u64,
    /// Who keeps the items alive: the superseded version the block was made
    /// for, and the block of the next older superseded version while that
    /// one is alive. The `Arc` only keeps the allocation (the current
    /// version holds one to add to it): the items go when this reaches 0.
    holders: AtomicUsize,
    inner: Mutex<BlockInner>,
    pool: Pool,
}

struct BlockInner {
    items: Vec<Retired>,
    /// The block of the next newer superseded version (one of its holders).
    next: Option<Arc<Block>>,
    /// `holders` reached zero: the items were freed, none may be added.
    dead: bool,
}

impl Block {
    /// A block for a version just superseded while held, holding `items`;
    /// held by that version and, if `older` is alive, by `older`.
    fn new(ver: u64, items: Vec<Retired>, older: Option<&Arc<Block>>, pool: &Pool) -> Arc<Block> {
        let b = Arc::new(Block {
            ver,
            holders: AtomicUsize::new(1),
            inner: Mutex::new(BlockInner { items, next: None, dead: false }),
            pool: pool.clone(),
        });
        if let Some(older) = older {
            let mut g = older.inner.lock();
            #[cfg(not(loom_bug = "version_chain_unlinked"))]
            if !g.dead {
                // Counted before anyone can release `b` (only its version,
                // not yet superseded, and this link will hold it).
                b.holders.fetch_add(1, Ordering::Relaxed);
                g.next = Some(Arc::clone(&b));
            }
            // Injected bug (loom-tests/tests/read_with.rs): the new block does
            // not wait for the older versions, so what it holds goes back when
            // its own version is dropped while an older one still reaches it.
            #[cfg(loom_bug = "version_chain_unlinked")]
            let _ = &mut g;
        }
        b
    }

    /// Adds `items` (retired from the current version or cut from the
    /// file's last one) unless the block is dead; `false` (nothing taken)
    /// if it is: then every version it waited for is gone.
    fn add(&self, items: &mut Vec<Retired>) -> bool {
        let mut g = self.inner.lock();
        if g.dead {
            return false;
        }
        g.items.append(items);
        true
    }

    /// Drops one holder of `b`; the last frees the items and releases the
    /// next block (a loop down the chain, not a recursion).
    fn release(mut b: Arc<Block>) {
        loop {
            if b.holders.fetch_sub(1, Ordering::AcqRel) != 1 {
                return;
            }
            let (mut items, next) = {
                let mut g = b.inner.lock();
                g.dead = true;
                (std::mem::take(&mut g.items), g.next.take())
            };
            // SAFETY: no holder left: the version the block was made for
            // is gone, and so is every older one (the newest older
            // superseded version alive would hold it through its block's
            // `next`, and versions never superseded while held were found
            // alone). Every item is reachable only from those versions (rule
            // 3: added only while the block was alive, from versions no
            // newer than the current one, cut out of it).
            unsafe { free_retired(&mut items, &b.pool) };
            match next {
                Some(n) => b = n,
                None => return,
            }
        }
    }
}

impl std::fmt::Debug for Snap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snap").field("meta", &self.meta).field("data", &self.data).field("ver", &self.ver).finish()
    }
}

impl Snap {
    /// The first version of a node.
    fn new(meta: Meta, xattrs: Option<Arc<Xattrs>>) -> Snap {
        Snap {
            meta,
            data: FileData::default(),
            xattrs,
            ver: 0,
            link: UnsafeCell::new(Link::new(LinkState::Published { pool: None, newest: None })),
        }
    }

    /// The published first version of a file whose contents were built
    /// by `data` (an image being loaded).
    pub(crate) fn loaded(meta: Meta, mut data: FirstVersion, xattrs: Option<Arc<Xattrs>>) -> Snap {
        data.finish_retired();
        let contents = std::mem::take(&mut data.data);
        let pool = contents.has_table().then(|| data.pool.clone());
        // `data` now holds an empty draft: its drop frees nothing.
        drop(data);
        Snap {
            meta,
            data: contents,
            xattrs,
            ver: FirstVersion::GEN,
            link: UnsafeCell::new(Link::new(LinkState::Published { pool, newest: None })),
        }
    }

    /// Takes the link out (replaced by `Draft`).
    fn take_link(&mut self) -> LinkState {
        // SAFETY: `&mut self`: no other access to the cell.
        self.link.with_mut(|l| unsafe { (*l).take() })
    }

    /// Turns a version nobody else holds into a spare allocation for a
    /// later version: drops what it holds (its table belongs to newer
    /// versions).
    fn recycle(&mut self) {
        self.xattrs = None;
        self.data.forget();
        self.take_link();
    }
}

impl Drop for Snap {
    fn drop(&mut self) {
        match self.take_link() {
            LinkState::Draft => {}
            LinkState::Published { pool, newest } => {
                debug_assert!(pool.is_some() || !self.data.has_table(), "a table without its pool leaks");
                let Some(pool) = pool else { return };
                // A published version dropped without being superseded is
                // the file's last (only the runner supersedes, and a node's
                // versions are dropped after the node stops publishing).
                let Some(tree) = self.data.take_tree() else { return };
                if let Some(b) = newest {
                    if b.add(&mut vec![tree]) {
                        return;
                    }
                }
                // SAFETY: no block alive, so every older version is gone
                // (rule 3): nobody else reaches the table.
                unsafe { free_one(tree, &pool) };
            }
            LinkState::Superseded(sup) => {
                let Superseded { mut own, pool, block } = *sup;
                if let Some(pool) = pool {
                    // SAFETY: this version is being dropped (no holder left)
                    // and no other version reaches its own items (rule 1).
                    unsafe { free_retired(&mut own, &pool) };
                }
                debug_assert!(own.is_empty(), "retired without a pool");
                if let Some(b) = block {
                    Block::release(b);
                }
            }
        }
    }
}

/// A file's contents built before its node exists (an image being loaded):
/// the draft of version 1 of a file whose version 0 is empty, which only
/// the builder reaches until [`Snap::loaded`] publishes it. Dropped
/// unpublished (the load failed), it gives back everything it took.
pub(crate) struct FirstVersion {
    data: FileData,
    retired: Vec<Retired>,
    pool: Pool,
}

impl FirstVersion {
    const GEN: u64 = 1;

    pub(crate) fn new(pool: &Pool) -> Self {
        FirstVersion { data: FileData::default(), retired: Vec::new(), pool: pool.clone() }
    }

    pub(crate) fn len(&self) -> u64 {
        self.data.len()
    }

    /// Runs `f` on the draft with the right to change it.
    fn edit<R>(&mut self, f: impl FnOnce(&mut FileData, &Ctx<'_>, &mut Edit<'_>) -> R, cx: &Ctx<'_>) -> R {
        // SAFETY: no version of this file has been published and no other
        // table reaches this one's nodes (it was made empty here), so nodes
        // of `GEN` are the builder's alone; nothing it replaces is
        // reachable by anyone else either (see `finish_retired`).
        let mut ed = unsafe { Edit::new(Self::GEN, &mut self.retired, &self.pool) };
        let r = f(&mut self.data, cx, &mut ed);
        // As at the end of a runner's batch ("Memory limit" in
        // `sector/pool.rs`).
        self.pool.settle_owed();
        r
    }

    /// Writes `bytes` at `off` (as `FileData::write`).
    pub(crate) fn write(&mut self, cx: &Ctx<'_>, off: u64, bytes: &[u8]) -> Result<()> {
        self.edit(|d, cx, ed| d.write(cx, ed, off, bytes), cx)
    }

    /// Sets the size (as `FileData::set_len`).
    pub(crate) fn set_len(&mut self, cx: &Ctx<'_>, len: u64) -> Result<()> {
        self.edit(|d, cx, ed| d.set_len(cx, ed, len), cx)
    }

    /// Frees what the builder's own edits replaced: nothing published ever
    /// reached it, so nobody can.
    fn finish_retired(&mut self) {
        // SAFETY: every entry was made by this builder and cut out of its
        // private draft; no version was ever published.
        unsafe { free_retired(&mut self.retired, &self.pool) };
    }
}

impl Drop for FirstVersion {
    fn drop(&mut self) {
        self.finish_retired();
        // SAFETY: never published: everything the table reaches is of
        // `GEN` and the builder's alone.
        unsafe { self.data.abort(Self::GEN, &self.pool) };
    }
}

/// Takes the young items out of `retired` (rule 1).
fn split_young(retired: &mut Vec<Retired>) -> Vec<Retired> {
    if !retired.iter().any(Retired::is_young) {
        return Vec::new();
    }
    let young = retired.iter().copied().filter(Retired::is_young).collect();
    retired.retain(|r| !r.is_young());
    young
}

/// Spare versions (their allocations) kept per thread for the next draft.
const SPARE_SNAPS: usize = 4;

thread_local! {
    #[allow(clippy::missing_const_for_thread_local)] // loom's thread_local! has no const form
    static SPARES: RefCell<Vec<Arc<Snap>>> = RefCell::new(Vec::new());
    /// Emptied retired lists (their capacity), for the next drafts.
    #[allow(clippy::missing_const_for_thread_local)]
    static LISTS: RefCell<Vec<Vec<Retired>>> = RefCell::new(Vec::new());
}

/// The runner's draft of the next version: on drop (not published, or
/// unwinding from a panic in the batch), gives back what the batch made.
///
/// The draft is a plain value (the runner's alone); a spare allocation
/// (a recycled version) is kept beside it and filled only at publication,
/// so a batch touches the reference counts of its versions a few times, not
/// once per step (each is a scheduling point under loom).
struct Draft<'p> {
    w: Snap,
    /// What the batch cut out of the current version (given to it, or
    /// freed, at publication). Kept here, not in every version (issue 17).
    retiring: Vec<Retired>,
    /// The version of the newest block alive when the draft began
    /// (`u64::MAX`: none): what the batch retires that was made after it is
    /// young (`Edit::young_after`).
    young_after: u64,
    /// The clones whose pages the batch put in the draft's table
    /// (`Op::Install`): their transits keep the pages' holders until the
    /// draft is published (a slot of the new version holds them then), so
    /// a draft dropped unpublished gives them back with the transit.
    installed: Vec<ClonePages>,
    spare: Option<Arc<Snap>>,
    published: bool,
    pool: &'p Pool,
}

impl<'p> Draft<'p> {
    /// A draft of the version after `cur`.
    ///
    /// # Safety
    /// `cur` is the file's published version, the caller is its runner (no
    /// other draft of the file exists), and it holds `cur` until the draft
    /// is published or dropped.
    unsafe fn new(cur: &Snap, pool: &'p Pool) -> Self {
        let spare = take_spare();
        // SAFETY: the runner reads the link of the version it holds; only
        // it writes links, and readers never touch them.
        let young_after = cur.link.with(|l| match unsafe { &*l }.block() {
            Some(b) if b.holders.load(Ordering::Acquire) != 0 => b.ver,
            _ => u64::MAX,
        });
        let retiring = LISTS.try_with(|l| l.borrow_mut().pop()).ok().flatten().unwrap_or_default();
        let w = Snap {
            meta: cur.meta.clone(),
            xattrs: cur.xattrs.clone(),
            // SAFETY: the draft of `cur`'s next version; `cur` is held by the
            // runner until the draft is published or aborted.
            data: unsafe { cur.data.share() },
            #[cfg(not(loom_bug = "draft_reuses_gen"))]
            ver: cur.ver + 1,
            // Injected bug (loom-tests): the draft takes the number of the
            // version it replaces, so that version's nodes look private and
            // are changed in place under its readers.
            #[cfg(loom_bug = "draft_reuses_gen")]
            ver: cur.ver,
            link: UnsafeCell::new(Link::new(LinkState::Draft)),
        };
        Draft { w, retiring, young_after, installed: Vec::new(), spare, published: false, pool }
    }

    /// Publishes the draft as the version after `cur` (which `slot` holds),
    /// then frees what the batch retired at once if nobody holds `cur`, or
    /// leaves it to `cur` and its block (see "Versions").
    ///
    /// # Safety
    /// The caller is the node's runner: the only one who stores into `slot`.
    unsafe fn publish(mut self, slot: &ArcSwap<Snap>, cur: Arc<Snap>) {
        let pool = self.pool;
        let mut retired = std::mem::take(&mut self.retiring);
        // The pool and the newest block travel with the current version
        // (rule 4).
        // SAFETY: `cur` is published; only the runner (here) writes its
        // link while it holds `cur`, and readers never touch it.
        let (carried, newest) = cur.link.with_mut(|l| match unsafe { &mut *l }.take() {
            LinkState::Published { pool, newest } => (pool, newest),
            // Not reached (`cur` is the published version); left as it was.
            other => {
                // SAFETY: as above.
                unsafe { *l = Link::new(other) };
                (None, None)
            }
        });
        let carried = carried.or_else(|| self.w.data.has_table().then(|| pool.clone()));
        // A dead block never takes items again: let it go.
        let newest = newest.filter(|b| b.holders.load(Ordering::Acquire) != 0);
        self.w.link = UnsafeCell::new(Link::new(LinkState::Published { pool: carried, newest: newest.clone() }));
        self.published = true;
        let placeholder = Snap::new(self.w.meta.clone(), None);
        let w = std::mem::replace(&mut self.w, placeholder);
        let w = match self.spare.take() {
            Some(mut a) => match Arc::get_mut(&mut a) {
                Some(s) => {
                    *s = w;
                    a
                }
                None => Arc::new(w),
            },
            None => Arc::new(w),
        };
        let old = slot.swap(w);
        // The new version's slots hold the installed pages now: their
        // transits must not give them back.
        for t in self.installed.drain(..) {
            t.lock().clear();
        }
        // Everything below relies on it (what `old` reaches is what the
        // draft was made from): checked in every build, before anything is
        // freed.
        assert!(Arc::ptr_eq(&old, &cur), "only the runner publishes");
        drop(cur);
        #[cfg(not(loom_bug = "version_reclaim_early"))]
        let alone = recycle_if_alone(old);
        // Injected bug (loom-tests/tests/read_with.rs): reclaim at once even
        // while a reader holds the old version.
        #[cfg(loom_bug = "version_reclaim_early")]
        let alone = recycle_if_alone(old).or_else(|old| {
            drop(old);
            Ok::<(), Arc<Snap>>(())
        });
        match alone {
            Ok(()) => {
                // Nobody else held `old` (it was unique, an acquire after
                // every other holder's release). What the batch retired may
                // still be reached by older versions: those the newest block
                // waits for, if it is alive (versions between it and `old`
                // are gone: each was found alone). Not `old`'s own items.
                if let Some(b) = &newest {
                    let mut young = split_young(&mut retired);
                    // SAFETY: made after the block's version, they are
                    // reached by no version up to it, and every version
                    // between it and `old` is gone, `old` too.
                    unsafe { free_retired(&mut young, pool) };
                    // What the block takes may be released by another
                    // thread: the copies that replaced it are charged first
                    // ("Memory limit" in `sector/pool.rs`).
                    #[cfg(not(loom_bug = "pool_owed_block_settled_late"))]
                    pool.settle_owed();
                    b.add(&mut retired);
                }
                // SAFETY: no block alive (or it took the rest), so no older
                // version reaches what is left, and `old` is gone.
                unsafe { free_retired(&mut retired, pool) };
                give_back_list(retired);
            }
            Err(old) => {
                // Readers hold `old`: what it reaches may be released by
                // one of them, on another thread, so the copies that
                // replaced it are charged first ("Memory limit" in
                // `sector/pool.rs`).
                #[cfg(not(loom_bug = "pool_owed_settled_late"))]
                pool.settle_owed();
                // Made after the newest block's version: of the versions
                // that reach them, only `old` is still alive.
                let own = split_young(&mut retired);
                // Readers hold `old`: it keeps its own items; the rest wait
                // for it and every older version in a new block, which is
                // the newest now.
                let block = Block::new(old.ver, retired, newest.as_ref(), pool);
                let keep = (!own.is_empty()).then(|| pool.clone());
                // SAFETY: the runner holds `old` (so no `Drop` runs
                // meanwhile) and readers never touch the link.
                old.link.with_mut(|l| unsafe {
                    *l = Link::new(LinkState::Superseded(Box::new(Superseded {
                        own,
                        pool: keep,
                        block: Some(Arc::clone(&block)),
                    })))
                });
                // SAFETY: the caller is the runner, the only one who
                // stores into `slot`.
                let now = unsafe { slot.load_writer() };
                // SAFETY: as above, for the version just published, which
                // the runner holds in `now`.
                now.link.with_mut(|l| unsafe {
                    *l = Link::new(match (*l).take() {
                        LinkState::Published { pool, .. } => LinkState::Published { pool, newest: Some(block) },
                        // Not reached (`now` was just published); left as it was.
                        other => other,
                    });
                });
            }
        }
    }
}

impl Drop for Draft<'_> {
    fn drop(&mut self) {
        // The batch ends: what its copies still owe goes to `forced`
        // (nothing, when the pages they replaced were freed here), last,
        // and even if something below panics.
        struct Settle<'p>(&'p Pool);
        impl Drop for Settle<'_> {
            fn drop(&mut self) {
                self.0.settle_owed();
            }
        }
        let _settle = Settle(self.pool);
        if let Some(a) = self.spare.take() {
            let _ = SPARES.try_with(move |sp| {
                let mut sp = sp.borrow_mut();
                if sp.len() < SPARE_SNAPS {
                    sp.push(a);
                }
            });
        }
        if !self.published {
            // SAFETY: an unpublished draft: its table changed only through
            // edits of `w.ver`, and it is dropped here.
            unsafe { self.w.data.abort(self.w.ver, self.pool) };
            // What the batch retired is still reached by the current version.
            let mut list = std::mem::take(&mut self.retiring);
            list.clear();
            give_back_list(list);
        }
    }
}

/// If nobody but the caller holds `old` (a version just swapped out), takes
/// it: in normal builds its allocation becomes this thread's spare for a
/// later version (`Arc::get_mut`, so a write allocates nothing); under loom
/// it is unwrapped and dropped (`Arc::try_unwrap`: the same uniqueness
/// check as one scheduling point instead of two, which keeps the models'
/// state space as it was). Else hands it back.
fn recycle_if_alone(mut old: Arc<Snap>) -> std::result::Result<(), Arc<Snap>> {
    #[cfg(not(loom))]
    {
        let Some(o) = Arc::get_mut(&mut old) else { return Err(old) };
        o.recycle();
        let _ = SPARES.try_with(move |s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARE_SNAPS {
                s.push(old);
            }
        });
        Ok(())
    }
    #[cfg(loom)]
    {
        let _ = &mut old;
        let mut o = Arc::try_unwrap(old)?;
        o.recycle();
        Ok(())
    }
}

/// A spare version allocation of this thread (normal builds).
fn take_spare() -> Option<Arc<Snap>> {
    #[cfg(not(loom))]
    return SPARES.try_with(|s| s.borrow_mut().pop()).ok().flatten();
    #[cfg(loom)]
    return None;
}

/// Keeps an emptied retired list's capacity for this thread's next draft.
fn give_back_list(list: Vec<Retired>) {
    debug_assert!(list.is_empty());
    if list.capacity() > 0 {
        let _ = LISTS.try_with(move |l| {
            let mut l = l.borrow_mut();
            if l.len() < SPARE_SNAPS {
                l.push(list);
            }
        });
    }
}

/// A clone's pages in transit between the source's runner and the
/// destination's (`sector::Transit`).
pub(crate) type ClonePages = Arc<crate::sector::Transit>;

/// A mutation of one node.
pub(crate) enum Op<'a> {
    /// `short`: at the limit, store what fits and return its length
    /// (`FileData::write_some`); else all or nothing.
    /// `cached`: page-cache write-back (`Engine::write_cached`), which
    /// chattr `i` and `a` do not refuse.
    Write {
        off: u64,
        data: Cow<'a, [u8]>,
        short: bool,
        cached: bool,
    },
    Append {
        data: Cow<'a, [u8]>,
    },
    SetAttr(SetAttr),
    Fallocate {
        mode: u32,
        off: u64,
        len: u64,
    },
    /// Make `off..end` read as zeros, growing the file to `end`, allocating
    /// nothing for it (`copy_file_range` over a hole of its source).
    Zero {
        off: u64,
        end: u64,
    },
    /// A clone's source side (issue 20): hand the pages of whole sectors at
    /// page indices `first..first + n` to `out`, one holder each, marked
    /// shared (`FileData::share_range`); returns the pages covered.
    Share {
        first: u64,
        n: u64,
        out: ClonePages,
    },
    /// A clone's destination side: put `pages` at page indices `first..`
    /// (`FileData::install_shared`); they leave the transit when the batch
    /// is published (`Draft::installed`).
    Install {
        first: u64,
        pages: ClonePages,
    },
    SetXattr {
        name: Cow<'a, [u8]>,
        value: Cow<'a, [u8]>,
        flags: u32,
    },
    RemoveXattr {
        name: Cow<'a, [u8]>,
    },
    /// Set (`Some`, already validated) or remove (`None`) a POSIX ACL,
    /// keeping the mode bits in step ([`crate::acl`]). `kill_sgid`: the
    /// caller is outside the file's group and unprivileged, so setting an
    /// access ACL clears the set-group-ID bit (Linux `posix_acl_update_mode`).
    SetAcl {
        kind: AclKind,
        acl: Option<Acl>,
        flags: u32,
        kill_sgid: bool,
    },
    /// Set mtime and/or ctime to now (directory changes, link count changes).
    Touch {
        mtime: bool,
        ctime: bool,
    },
    /// A read: the access time becomes now if `atime` says it is due (the
    /// runner checks again: of readers racing after one change, one
    /// publishes). Returns 1 if it changed, 0 (and publishes nothing) if not.
    Accessed {
        atime: crate::types::Atime,
    },
}

/// Whether `op` may change a file whose `guards` (`IMMUTABLE`, `APPEND`,
/// not both 0) are set and whose size is `len`: Linux refuses the rest
/// with EPERM, to root too (`may_setattr`, `vfs_fallocate`,
/// `xattr_permission`, `may_open`), where the VFS sees the flags; on a FUSE
/// inode it does not, so the file's runner checks, in the same batch order
/// as the `chattr` that set them. Only the inode flags themselves may
/// change on an immutable file; an append-only one takes data at its end
/// and reservations (`fallocate` with no mode but `KEEP_SIZE`).
fn allowed_when_guarded(op: &Op<'_>, guards: u32, len: u64) -> bool {
    let append_only = guards & inode_flags::IMMUTABLE == 0;
    match op {
        // Write-back carries writes made while the file allowed them (a
        // file made immutable or append-only with dirty pages in the
        // kernel's cache: Linux's own file systems write those back too).
        Op::Write { cached: true, .. } => true,
        Op::Write { off, .. } => append_only && *off >= len,
        Op::Append { .. } => append_only,
        Op::Fallocate { mode, .. } => append_only && mode & !crate::data::FALLOC_KEEP_SIZE == 0,
        Op::SetAttr(s) if s.cached_times => {
            *s == SetAttr { mtime: s.mtime, ctime: s.ctime, cached_times: true, ..SetAttr::default() }
        }
        Op::SetAttr(s) => {
            // Both times to now (`utimensat` with no times, `touch`) is the
            // one time change an append-only file takes (Linux `ATTR_TOUCH`;
            // any other is `ATTR_TIMES_SET`, refused).
            let touch = matches!((s.atime, s.mtime), (Some(SetTime::Now), Some(SetTime::Now)));
            let times = (s.atime.is_some() || s.mtime.is_some()) && !(append_only && touch);
            let owner_or_size = s.mode.is_some() || s.uid.is_some() || s.gid.is_some() || s.size.is_some();
            let other = s.ctime.is_some() || s.crtime.is_some() || s.flags.is_some();
            !owner_or_size && !times && (append_only || !other)
        }
        // A clone's source only lends pages; time updates from reads and
        // from changes elsewhere (a link count, entries) are the kernel's.
        Op::Share { .. } | Op::Touch { .. } | Op::Accessed { .. } => true,
        Op::Zero { .. } | Op::Install { .. } | Op::SetXattr { .. } | Op::RemoveXattr { .. } | Op::SetAcl { .. } => {
            false
        }
    }
}

/// `IMMUTABLE` and `APPEND` of `flags` as the byte `Node::guard_bits` keeps.
fn guard_byte(flags: u32) -> u8 {
    ((flags & inode_flags::GUARDS) >> 24) as u8
}

fn own(c: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
    Cow::Owned(c.into_owned())
}

impl<'a> Request<'a> for Op<'a> {
    type Owned = Op<'static>;
    fn into_owned(self) -> Op<'static> {
        match self {
            Op::Write { off, data, short, cached } => Op::Write { off, data: own(data), short, cached },
            Op::Append { data } => Op::Append { data: own(data) },
            Op::SetAttr(s) => Op::SetAttr(s),
            Op::Fallocate { mode, off, len } => Op::Fallocate { mode, off, len },
            Op::Zero { off, end } => Op::Zero { off, end },
            Op::Share { first, n, out } => Op::Share { first, n, out },
            Op::Install { first, pages } => Op::Install { first, pages },
            Op::SetXattr { name, value, flags } => Op::SetXattr { name: own(name), value: own(value), flags },
            Op::RemoveXattr { name } => Op::RemoveXattr { name: own(name) },
            Op::SetAcl { kind, acl, flags, kill_sgid } => Op::SetAcl { kind, acl, flags, kill_sgid },
            Op::Touch { mtime, ctime } => Op::Touch { mtime, ctime },
            Op::Accessed { atime } => Op::Accessed { atime },
        }
    }
    fn from_owned(o: Op<'static>) -> Op<'a> {
        o
    }
}

/// Lookup and open counts (under the node's `life` mutex; the link count,
/// changed under it too, is the node's `nlink`: [`Node::links`]).
///
/// 12 bytes aligned to 4, so that with a one-byte lock the mutex is 16 and
/// the node 64 (issue 17: per-file cost): the open count is a `u32` (open
/// handles are bounded by the kernel's file table long before that), the
/// lookup count a `u64` (the kernel's `nlookup`) packed to 4-byte
/// alignment (its fields are only copied, never borrowed), and `gone` sits
/// in the node ([`Node::gone`]).
#[derive(Debug, Default, Clone, Copy)]
#[repr(C, packed(4))]
pub(crate) struct Life {
    pub(crate) lookups: u64,
    pub(crate) opens: u32,
}

/// What only directories, symlinks and devices have, boxed: a regular file
/// (most inodes) pays one pointer for it.
enum Extra {
    Dir(DirNode),
    Symlink(Box<[u8]>),
    /// A device number (never 0): fixed at `mknod`, so a node's, not a
    /// version's (every version of every file would pay 4 bytes for it).
    Device(u32),
}

/// What a new node of some types has beyond its metadata.
pub(crate) enum Special {
    None,
    /// A symlink's target.
    Target(Box<[u8]>),
    /// A device's number.
    Device(u32),
}

impl Special {
    /// Whether a node of `kind` with this gets a boxed [`Extra`].
    pub(crate) fn boxed(&self, kind: FileType) -> bool {
        kind == FileType::Directory
            || matches!(self, Special::Target(_))
            || matches!(self, Special::Device(r) if *r != 0)
    }

    /// The length of a symlink's target (0: not a symlink).
    pub(crate) fn target_len(&self) -> usize {
        match self {
            Special::Target(t) => t.len(),
            _ => 0,
        }
    }
}

/// A directory's own part of its node.
pub(crate) struct DirNode {
    /// The entries, under the directory's lock.
    lock: RwLock<Dir>,
    /// The inode of `..`, written only under the rename lock and the
    /// directory locks involved.
    parent: AtomicU64,
    /// Entries in `lock`, mirrored so `getattr` takes no directory lock.
    entries: AtomicU64,
}

impl DirNode {
    pub(crate) fn read(&self) -> crate::sync::RwLockReadGuard<'_, Dir> {
        self.lock.read()
    }
    pub(crate) fn write(&self) -> crate::sync::RwLockWriteGuard<'_, Dir> {
        self.lock.write()
    }
}

/// An inode.
pub(crate) struct Node {
    pub(crate) ino: Ino,
    pub(crate) kind: FileType,
    /// Published only by the runner (`Draft::publish`): see "Versions".
    snap: ArcSwap<Snap>,
    pub(crate) actor: Combiner<Op<'static>, Result<u64>>,
    pub(crate) life: SmallMutex<Life>,
    pub(crate) nlink: AtomicU32,
    /// Set once, under `life`, when the three counts of `life` were all zero
    /// (`Node::settle`): nothing can name the node again. Read and written
    /// only under `life`; an atomic only so it can sit in the node's padding
    /// instead of making `Life` (and its mutex) 8 bytes larger.
    gone: AtomicBool,
    /// The published version's `IMMUTABLE` and `APPEND` (shifted down to
    /// a byte), for the namespace's checks (`guards`): written by the
    /// runner with the version that changes them. A hint read relaxed: a
    /// check races a `chattr` either way; the runner checks its own
    /// operations against the version itself.
    guard_bits: crate::sync::FlagsU8,
    /// A directory's entries and `..`, or a symlink's target.
    extra: Option<Box<Extra>>,
}

/// The inode map holds nodes by their inode number, which never changes.
impl crate::sync::Keyed for Arc<Node> {
    fn key(&self) -> &u64 {
        &self.ino
    }
}

impl Node {
    /// The published version, for reading (no lock).
    pub(crate) fn load(&self) -> crate::sync::Guard<Snap> {
        self.snap.load()
    }

    /// The published version, held (for longer reads and snapshots).
    pub(crate) fn load_full(&self) -> Arc<Snap> {
        self.snap.load_full()
    }

    pub(crate) fn new(
        ino: Ino,
        kind: FileType,
        meta: Meta,
        nlink: u32,
        parent: Ino,
        special: Special,
        xattrs: Option<Arc<Xattrs>>,
    ) -> Node {
        Self::with_version(ino, kind, Snap::new(meta, xattrs), nlink, parent, special)
    }

    /// A node whose first version is `snap` (`Snap::loaded`: an image's
    /// file, its contents built before the node exists).
    pub(crate) fn with_version(
        ino: Ino,
        kind: FileType,
        snap: Snap,
        nlink: u32,
        parent: Ino,
        special: Special,
    ) -> Node {
        let boxed = special.boxed(kind);
        let snap_flags = snap.meta.flags;
        let extra = match special {
            _ if kind == FileType::Directory => Some(Extra::Dir(DirNode {
                lock: RwLock::new(Dir::new()),
                parent: AtomicU64::new(parent),
                entries: AtomicU64::new(0),
            })),
            Special::Target(t) => Some(Extra::Symlink(t)),
            Special::Device(r) if r != 0 => Some(Extra::Device(r)),
            Special::Device(_) | Special::None => None,
        }
        .map(Box::new);
        debug_assert_eq!(extra.is_some(), boxed, "what budget.rs charges");
        Node {
            ino,
            kind,
            snap: ArcSwap::new(Arc::new(snap)),
            actor: Combiner::new(),
            life: SmallMutex::new(Life { lookups: 0, opens: 0 }),
            nlink: AtomicU32::new(nlink),
            gone: AtomicBool::new(false),
            guard_bits: crate::sync::FlagsU8::new(guard_byte(snap_flags)),
            extra,
        }
    }

    /// The directory part (`None`: not a directory).
    pub(crate) fn dir(&self) -> Option<&DirNode> {
        match self.extra.as_deref() {
            Some(Extra::Dir(d)) => Some(d),
            _ => None,
        }
    }

    /// A symlink's target.
    pub(crate) fn target(&self) -> Option<&[u8]> {
        match self.extra.as_deref() {
            Some(Extra::Symlink(t)) => Some(t),
            _ => None,
        }
    }

    /// Whether the node has a boxed [`Extra`] (charged in `budget.rs`).
    pub(crate) fn has_extra(&self) -> bool {
        self.extra.is_some()
    }

    /// A device's number (0: none).
    pub(crate) fn rdev(&self) -> u32 {
        match self.extra.as_deref() {
            Some(Extra::Device(r)) => *r,
            _ => 0,
        }
    }

    /// The inode of `..` (a directory; others: their own inode).
    pub(crate) fn parent(&self) -> Ino {
        self.dir().map_or(self.ino, |d| d.parent.load(Ordering::Acquire))
    }

    /// Sets `..` (a directory; caller holds the rename lock and the
    /// directory locks involved).
    pub(crate) fn set_parent(&self, parent: Ino) {
        if let Some(d) = self.dir() {
            d.parent.store(parent, Ordering::Release);
        }
    }

    /// Entries of the directory (mirror; 0 for others).
    pub(crate) fn entries(&self) -> u64 {
        self.dir().map_or(0, |d| d.entries.load(Ordering::Acquire))
    }

    /// Whether the node was found with nothing naming it (caller holds `life`).
    pub(crate) fn gone(&self, _life: &Life) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Whether nothing can name the node any more (and it was not yet
    /// marked); marks it. The caller holds `life` (given as `life`).
    pub(crate) fn settle(&self, life: &Life) -> bool {
        if !self.gone(life) && self.links(life) == 0 && life.lookups == 0 && life.opens == 0 {
            self.gone.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// The link count, for a caller that holds `life` (given as `life`),
    /// under which it changes.
    pub(crate) fn links(&self, _life: &Life) -> u32 {
        self.nlink.load(Ordering::Relaxed)
    }

    /// Sets the link count, under `life` (the caller holds it).
    pub(crate) fn set_nlink(&self, _life: &mut Life, n: u32) {
        self.nlink.store(n, Ordering::Release);
    }

    /// Mirrors the entry count of `d` (this node's directory, write-locked by the caller).
    pub(crate) fn sync_entries(&self, d: &Dir) {
        if let Some(dn) = self.dir() {
            dn.entries.store(d.len() as u64, Ordering::Release);
        }
    }

    /// Submits one mutation through the node's actor.
    pub(crate) fn submit(&self, cx: &Ctx<'_>, logical: &AtomicU64, op: Op<'_>) -> Result<u64> {
        let one = |op: Op<'_>| {
            let mut out = Err(Error::Internal);
            self.apply_ops(cx, logical, std::iter::once(op), &mut |r| out = r);
            out
        };
        let batch = |ops: Vec<Op<'_>>| {
            let mut out = Vec::with_capacity(ops.len());
            self.apply_ops(cx, logical, ops.into_iter(), &mut |r| out.push(r));
            out
        };
        self.actor.submit_with(op, &one, &batch)
    }

    /// Applies a batch (runner only), handing each result to `out` in
    /// order, and publishes one new version.
    fn apply_ops<'o>(
        &self,
        cx: &Ctx<'_>,
        logical: &AtomicU64,
        ops: impl Iterator<Item = Op<'o>>,
        out: &mut dyn FnMut(Result<u64>),
    ) {
        // SAFETY: the caller is the node's runner (`Node::submit` through
        // the actor), the only one who stores `snap`. Not `load`: a writer
        // uses no hazard slot (a load writes the thread's slot, which every
        // other thread's publish then reads).
        let cur = unsafe { self.snap.load_writer() };
        // SAFETY: the caller is the node's runner, and `cur` is what the
        // node publishes (only a runner stores it) held until `publish` or
        // the end of this function.
        let mut draft = unsafe { Draft::new(&cur, cx.pool) };
        let before = cur.data.len();
        let mut changed = false;
        let after_ver = draft.young_after;
        let (w, retiring, installed) = (&mut draft.w, &mut draft.retiring, &mut draft.installed);
        for op in ops {
            let clone = match &op {
                Op::Install { pages, .. } => Some(Arc::clone(pages)),
                _ => None,
            };
            let access = matches!(op, Op::Accessed { .. });
            let r = self.apply_one(cx, w, retiring, after_ver, op);
            // An access that was not due (0) changes nothing.
            if r.is_ok() && !(access && r == Ok(0)) {
                changed = true;
                installed.extend(clone);
            }
            out(r);
        }
        let after = w.data.len();
        crate::fault::fail_point!("node.publish");
        if changed {
            // Only a size change touches the engine-wide counter: an
            // overwrite must not write a line every writer shares.
            if after > before {
                logical.fetch_add(after - before, Ordering::Relaxed);
            } else if after < before {
                logical.fetch_sub(before - after, Ordering::Relaxed);
            }
            // SAFETY: the caller is the node's runner.
            unsafe { draft.publish(&self.snap, cur) };
        } else {
            drop(draft);
        }
    }

    /// An edit of the draft `w`'s table.
    fn edit<'a>(cx: &Ctx<'a>, retiring: &'a mut Vec<Retired>, ver: u64, young_after: u64) -> Edit<'a> {
        // SAFETY: `ver` is one more than the current version's, and every
        // node any published version of this file reaches was made by a
        // published batch (numbered at most the current version's) or by a
        // draft that was aborted (whose nodes `Table::abort` freed); nodes
        // never move between files. So nodes numbered `ver` are this
        // draft's own. `retiring` is the draft's list, given to the current
        // version when the draft is published (`Draft::publish`).
        unsafe { Edit::new(ver, retiring, cx.pool) }.young_after(young_after)
    }

    fn apply_one(
        &self,
        cx: &Ctx<'_>,
        w: &mut Snap,
        retiring: &mut Vec<Retired>,
        young_after: u64,
        op: Op<'_>,
    ) -> Result<u64> {
        let now = Time::now();
        let guards = w.meta.flags & inode_flags::GUARDS;
        if guards != 0 && !allowed_when_guarded(&op, guards, w.data.len()) {
            return Err(Error::Permission);
        }
        match op {
            Op::Write { off, data, short, .. } => {
                self.regular()?;
                let ed = &mut Self::edit(cx, retiring, w.ver, young_after);
                let n = if short {
                    w.data.write_some(cx, ed, off, &data)?
                } else {
                    w.data.write(cx, ed, off, &data)?;
                    data.len()
                };
                if n > 0 {
                    data_changed(w, now);
                }
                Ok(n as u64)
            }
            Op::Append { data } => {
                self.regular()?;
                let off = w.data.len();
                w.data.write(cx, &mut Self::edit(cx, retiring, w.ver, young_after), off, &data)?;
                if data.is_empty() {
                    w.meta.mtime = now.into();
                    w.meta.ctime = now.into();
                } else {
                    data_changed(w, now);
                }
                Ok(off)
            }
            Op::SetAttr(s) => {
                // A truncate to the size of a file that holds no data
                // changes no time, as on tmpfs (`truncate(2)`, whose
                // `shmem_truncate_range` sets both times only where pages
                // are allocated; `ftruncate(2)` and `O_TRUNC` pass the
                // modification time as well, and change both).
                let mut same_size = false;
                let (perm_before, had_caps) = (w.meta.perm, w.xattrs.as_ref().is_some_and(|x| x.get(CAPS).is_some()));
                if let Some(size) = s.size {
                    match self.kind {
                        FileType::Regular => {}
                        FileType::Directory => return Err(Error::IsDir),
                        _ => return Err(Error::InvalidArgument),
                    }
                    same_size = w.data.len() == size && w.data.allocated(0) == 0;
                    w.data.set_len(cx, &mut Self::edit(cx, retiring, w.ver, young_after), size)?;
                    if !same_size {
                        w.meta.mtime = now.into();
                    }
                    drop_capabilities(w);
                }
                if let Some(mode) = s.mode {
                    // chmod rewrites a stored access ACL's owner, group
                    // class and other entries (Linux `posix_acl_chmod`).
                    let stored = w.xattrs.as_ref().and_then(|x| x.get(crate::acl::ACCESS));
                    if let Some(Ok(Some(mut acl))) = stored.map(|v| Acl::parse(v)) {
                        acl.chmod(mode);
                        let mut x = w.xattrs.as_deref().cloned().unwrap_or_else(Xattrs::new_sync);
                        // Same entries, same size: the old value's charge
                        // goes with it, so this one may pass the limit.
                        let v = XValue::forced(cx.meta, crate::acl::ACCESS.len(), acl.to_bytes().into());
                        x.insert_mut(crate::acl::ACCESS.into(), v);
                        w.xattrs = Some(Arc::new(x));
                    }
                }
                let m = &mut w.meta;
                if let Some(mode) = s.mode {
                    m.perm = mode & 0o7777;
                }
                if let Some(uid) = s.uid {
                    m.uid = uid;
                }
                if let Some(gid) = s.gid {
                    m.gid = gid;
                }
                if let Some(t) = s.atime {
                    m.atime = resolve(t, now).into();
                }
                if let Some(t) = s.mtime {
                    m.mtime = resolve(t, now).into();
                }
                if let Some(t) = s.crtime {
                    m.crtime = t.into();
                }
                if let Some(f) = s.flags {
                    m.flags = (f & !inode_flags::ALL) | (m.flags & inode_flags::ALL);
                }
                if let Some(f) = s.inode_flags {
                    m.flags = (m.flags & !inode_flags::ALL) | (f & inode_flags::ALL);
                    // Nothing below fails: the draft is published with it.
                    self.guard_bits.store(guard_byte(m.flags), Ordering::Relaxed);
                }
                if s.kill_suidgid && self.kind != FileType::Directory {
                    m.perm &= !0o4000;
                    if m.perm & 0o010 != 0 || s.kill_sgid {
                        m.perm &= !0o2000;
                    }
                    drop_capabilities(w);
                }
                let size_only = SetAttr {
                    size: s.size,
                    kill_suidgid: s.kill_suidgid,
                    kill_sgid: s.kill_sgid,
                    ..SetAttr::default()
                };
                if !(same_size && s == size_only && w.meta.perm == perm_before && !had_caps) {
                    w.meta.ctime = s.ctime.unwrap_or(now).into();
                }
                Ok(0)
            }
            Op::Fallocate { mode, off, len } => {
                self.regular()?;
                w.data.fallocate(cx, &mut Self::edit(cx, retiring, w.ver, young_after), mode, off, len)?;
                data_changed(w, now);
                Ok(0)
            }
            Op::Zero { off, end } => {
                self.regular()?;
                w.data.zero(cx, &mut Self::edit(cx, retiring, w.ver, young_after), off, end)?;
                data_changed(w, now);
                Ok(0)
            }
            Op::Share { first, n, out } => {
                self.regular()?;
                let mut out = out.lock();
                Ok(w.data.share_range(cx, &mut Self::edit(cx, retiring, w.ver, young_after), first, n, &mut out))
            }
            Op::Install { first, pages } => {
                self.regular()?;
                let pages = pages.lock();
                w.data.install_shared(cx, &mut Self::edit(cx, retiring, w.ver, young_after), first, &pages)?;
                data_changed(w, now);
                Ok(0)
            }
            Op::SetXattr { name, value, flags } => {
                check_xattr_name(&name)?;
                if value.len() > XATTR_SIZE_MAX {
                    return Err(Error::TooBig);
                }
                // Both flags: `Exists` or `NoData`, whichever applies (as on
                // tmpfs; the kernel lets the pair through).
                if flags & !(xattr_flags::CREATE | xattr_flags::REPLACE) != 0 {
                    return Err(Error::InvalidArgument);
                }
                let exists = w.xattrs.as_ref().is_some_and(|x| x.contains_key(&*name));
                if flags & xattr_flags::CREATE != 0 && exists {
                    return Err(Error::Exists);
                }
                if flags & xattr_flags::REPLACE != 0 && !exists {
                    return Err(Error::NoData);
                }
                // A new name must leave the list of names listable.
                if !exists && names_len(w.xattrs.as_deref()) + name.len() + 1 > XATTR_LIST_MAX {
                    return Err(Error::NoSpace);
                }
                let value = XValue::new(cx.meta, name.len(), value.into_owned().into_boxed_slice())?;
                let mut x = w.xattrs.as_deref().cloned().unwrap_or_else(Xattrs::new_sync);
                x.insert_mut(name.into_owned().into_boxed_slice(), value);
                w.xattrs = Some(Arc::new(x));
                w.meta.ctime = now.into();
                Ok(0)
            }
            Op::RemoveXattr { name } => {
                check_xattr_name(&name)?;
                let mut x = w.xattrs.as_deref().cloned().unwrap_or_else(Xattrs::new_sync);
                if !x.remove_mut(&*name) {
                    return Err(Error::NoData);
                }
                w.xattrs = if x.is_empty() { None } else { Some(Arc::new(x)) };
                w.meta.ctime = now.into();
                Ok(0)
            }
            Op::SetAcl { kind, acl, flags, kill_sgid } => {
                match (kind, self.kind) {
                    (_, FileType::Symlink) => return Err(Error::NotSupported),
                    // Linux: EACCES for a default ACL on a non-directory,
                    // and removing one there is a successful no-op.
                    (AclKind::Default, k) if k != FileType::Directory => {
                        return if acl.is_some() { Err(Error::Access) } else { Ok(0) };
                    }
                    _ => {}
                }
                let name = kind.name();
                let exists = w.xattrs.as_ref().is_some_and(|x| x.contains_key(name));
                if flags & xattr_flags::CREATE != 0 && exists {
                    return Err(Error::Exists);
                }
                if flags & xattr_flags::REPLACE != 0 && !exists {
                    return Err(Error::NoData);
                }
                // The mode follows an access ACL; an ACL the mode says in
                // full is not stored (Linux `posix_acl_update_mode`).
                let mode = match (kind, &acl) {
                    (AclKind::Access, Some(a)) => Some(a.equiv_mode()),
                    _ => None,
                };
                let keep = if matches!(mode, Some((_, false))) { None } else { acl };
                // Charged before anything changes: at the limit, nothing does.
                let keep = keep.map(|a| XValue::new(cx.meta, name.len(), a.to_bytes().into())).transpose()?;
                if let Some((mode, _)) = mode {
                    w.meta.perm = (w.meta.perm & !0o777) | mode;
                    if kill_sgid {
                        w.meta.perm &= !0o2000;
                    }
                }
                let mut x = w.xattrs.as_deref().cloned().unwrap_or_else(Xattrs::new_sync);
                match keep {
                    Some(v) => x.insert_mut(name.into(), v),
                    None => {
                        x.remove_mut(name);
                    }
                }
                w.xattrs = (!x.is_empty()).then(|| Arc::new(x));
                w.meta.ctime = now.into();
                Ok(0)
            }
            Op::Touch { mtime, ctime } => {
                if mtime {
                    w.meta.mtime = now.into();
                }
                if ctime {
                    w.meta.ctime = now.into();
                }
                Ok(0)
            }
            Op::Accessed { atime } => {
                let m = &mut w.meta;
                if !m.access_due(atime) {
                    return Ok(0);
                }
                m.atime = now.into();
                Ok(1)
            }
        }
    }

    /// `IMMUTABLE` and `APPEND` of the published version (chattr `i`, `a`),
    /// from the node's mirror of them.
    pub(crate) fn guards(&self) -> u32 {
        u32::from(self.guard_bits.load(Ordering::Relaxed)) << 24
    }

    fn regular(&self) -> Result<()> {
        match self.kind {
            FileType::Regular => Ok(()),
            FileType::Directory => Err(Error::IsDir),
            _ => Err(Error::InvalidArgument),
        }
    }
}

/// Bytes of the list of `x`'s names, NULs included (what `listxattr`
/// returns). Only counted when it could pass [`XATTR_LIST_MAX`]: a map of
/// fewer names than fit at the longest name length is known to be short.
fn names_len(x: Option<&Xattrs>) -> usize {
    match x {
        Some(x) if x.size() >= XATTR_LIST_MAX / (NAME_MAX + 1) => x.keys().map(|k| k.len() + 1).sum(),
        _ => 0,
    }
}

/// A change of a file's data (a write, fallocate, a copy or clone into it):
/// new modification and change times, and no capabilities.
fn data_changed(w: &mut Snap, now: Time) {
    w.meta.mtime = now.into();
    w.meta.ctime = now.into();
    drop_capabilities(w);
}

/// A file's capabilities: the attribute a change of its data drops.
pub(crate) const CAPS: &[u8] = b"security.capability";

/// A change of a file's data (write, truncate, fallocate, a copy or clone
/// into it) drops its capabilities, whoever makes it (Linux
/// `file_remove_privs`: `security.capability` goes even for a caller with
/// `CAP_FSETID`, who keeps set-user-ID bits). Nothing to do, and no copy of
/// the attribute map, for a file without them.
fn drop_capabilities(w: &mut Snap) {
    if w.xattrs.as_ref().is_some_and(|x| x.contains_key(CAPS)) {
        let mut x = w.xattrs.as_deref().cloned().unwrap_or_else(Xattrs::new_sync);
        x.remove_mut(CAPS);
        w.xattrs = (!x.is_empty()).then(|| Arc::new(x));
    }
}

fn resolve(t: SetTime, now: Time) -> Time {
    match t {
        SetTime::Now => now,
        SetTime::At(t) => t,
    }
}

/// Checks an xattr name: non-empty, at most 255 bytes, no NUL, in a namespace
/// this file system keeps (`user.`, `trusted.`, `security.`), with a name
/// after the prefix (a bare prefix is `InvalidArgument`, as the kernel's
/// `xattr_resolve_name` makes it on tmpfs).
pub(crate) fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(Error::Range);
    }
    if name.contains(&0) {
        return Err(Error::InvalidArgument);
    }
    const KEPT: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];
    match KEPT.iter().find(|p| name.starts_with(p)) {
        Some(p) if name.len() == p.len() => Err(Error::InvalidArgument),
        Some(_) => Ok(()),
        None => Err(Error::NotSupported),
    }
}

/// Sizes of the per-inode structures, for the per-file memory bench
/// (`benches/src/bin/per_file.rs`). Internal, not semver.
pub(crate) fn layout() -> Vec<(&'static str, usize)> {
    use std::mem::size_of;
    vec![
        ("Node", size_of::<Node>()),
        ("Snap", size_of::<Snap>()),
        ("Meta", size_of::<Meta>()),
        ("PTime", size_of::<PTime>()),
        ("FileData", size_of::<FileData>()),
        ("Combiner", size_of::<Combiner<Op<'static>, Result<u64>>>()),
        ("Mutex<Life>", size_of::<SmallMutex<Life>>()),
        ("ArcSwap<Snap>", size_of::<ArcSwap<Snap>>()),
        ("Link", size_of::<Link>()),
        ("Dir", size_of::<Dir>()),
        ("Dir slot", Dir::SLOT_BYTES),
        ("Extra", size_of::<Extra>()),
    ]
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Every state comes back out of a [`Link`] as it went in, and every
    /// reference a link holds is given back once, whether it is taken out
    /// or dropped with the link.
    #[test]
    fn a_link_keeps_every_state_and_drops_what_it_holds() {
        let pool = Pool::new(4096, 1 << 20, 1);
        let base = pool.handles();
        let block = Block::new(7, Vec::new(), None, &pool);
        let with_block = pool.handles();
        let published = |p: Option<Pool>, b: Option<Arc<Block>>| LinkState::Published { pool: p, newest: b };
        let superseded = || {
            LinkState::Superseded(Box::new(Superseded {
                own: Vec::new(),
                pool: Some(pool.clone()),
                block: Some(Arc::clone(&block)),
            }))
        };
        // Taken out: the same state, the same references.
        assert!(matches!(Link::new(LinkState::Draft).take(), LinkState::Draft));
        match Link::new(published(None, None)).take() {
            LinkState::Published { pool: None, newest: None } => {}
            _ => panic!("published without a pool"),
        }
        match Link::new(published(Some(pool.clone()), None)).take() {
            LinkState::Published { pool: Some(p), newest: None } => assert!(p.same(&pool)),
            _ => panic!("published with a pool"),
        }
        for p in [Some(pool.clone()), None] {
            let mut l = Link::new(published(p, Some(Arc::clone(&block))));
            assert_eq!(l.block().map(|b| b.ver), Some(7));
            match l.take() {
                // The pool comes from the block.
                LinkState::Published { pool: Some(p), newest: Some(b) } => {
                    assert!(p.same(&pool) && Arc::ptr_eq(&b, &block));
                }
                _ => panic!("published with a block"),
            }
            assert!(l.block().is_none() && matches!(l.take(), LinkState::Draft), "taken: a draft");
        }
        match Link::new(superseded()).take() {
            LinkState::Superseded(s) => {
                assert!(s.pool.as_ref().is_some_and(|p| p.same(&pool)));
                assert!(s.block.as_ref().is_some_and(|b| Arc::ptr_eq(b, &block)));
            }
            _ => panic!("superseded"),
        }
        assert!(Link::new(published(Some(pool.clone()), None)).block().is_none());
        assert_eq!((pool.handles(), Arc::count(&block)), (with_block, 1), "every reference back");
        // Dropped with the link.
        for state in [
            LinkState::Draft,
            published(Some(pool.clone()), None),
            published(Some(pool.clone()), Some(Arc::clone(&block))),
            published(None, Some(Arc::clone(&block))),
            superseded(),
        ] {
            drop(Link::new(state));
        }
        assert_eq!((pool.handles(), Arc::count(&block)), (with_block, 1), "every reference back");
        drop(block);
        assert_eq!(pool.handles(), base);
    }
}
