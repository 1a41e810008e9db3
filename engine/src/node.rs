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
//! `life` → nothing. The runner takes no lock while applying a batch.
//!
//! # Versions (issue 18)
//! Each batch publishes one new version ([`Snap`]) of the node, built as a
//! *draft* that shares everything it does not change with the current one:
//! the page table's nodes and pages are plain pointers (no reference counts,
//! `sector::table`), so who may free them is decided here, by versions:
//!
//! 1. The draft of version `n + 1` changes only what its batch made (table
//!    nodes of its number, fresh pages); everything it replaces or cuts off
//!    is *retired*: reachable from version `n` (and older ones), from no
//!    newer one.
//! 2. Publishing is one `ArcSwap::swap`, which returns version `n` counted
//!    exactly (`sync::ArcSwap::swap`: arc-swap pays its readers' debts
//!    first). If the runner's `Arc` is then the only one (`Arc::get_mut`,
//!    an acquire after every other holder's release), no reader holds `n`
//!    and, by 3, none holds an older one: the runner frees what the batch
//!    retired at once (nodes to this thread's spare nodes, pages to the
//!    pool) and keeps `n`'s allocation as the next draft (a thread-local
//!    spare). So a write on a file nobody is reading allocates nothing.
//! 3. Otherwise version `n` becomes *superseded*: it keeps the retired list
//!    and an `Arc` to version `n + 1`. A version is therefore alive while
//!    any older one is, and when the last holder drops version `n`, every
//!    older version is gone: its retired list is freed then, by whichever
//!    thread drops it, and the drop goes on down the chain (a loop, not a
//!    recursion).
//! 4. The current version carries the pool (`Link::Published`): if it is
//!    dropped without being superseded, it was the file's last, and it
//!    frees its whole table.
//!
//! A draft that is not published (no request of the batch succeeded, or the
//! batch panicked) gives back what its batch made and nothing else
//! (`Table::abort`, through the `Draft` guard even while unwinding).
//! loom: `reclaim.rs` (nothing freed while a reader holds a version that
//! reaches it, nothing leaked), `read_with.rs` (nothing reused while lent);
//! the injected bugs `version_reclaim_early` and `version_chain_unlinked`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use crate::acl::{Acl, AclKind};
use crate::actor::{Combiner, Request};
use crate::data::{Ctx, FileData};
use crate::sector::table::{free_retired, Edit, Retired};
use crate::sector::Pool;
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::sync::{thread_local, Arc, ArcSwap, Mutex, RwLock, UnsafeCell};
use crate::types::{xattr_flags, FileType, Ino, SetAttr, SetTime, Time, NAME_MAX, XATTR_SIZE_MAX};
use crate::{Error, Result};

/// Extended attributes of one node.
///
/// Persistent (rpds's red-black tree with structural sharing): a batch's
/// private copy of the published map is one reference count, and a set or
/// remove copies only the path to its key, so `setxattr` costs O(log n) in
/// time and memory however many attributes the inode has (issue 17).
pub(crate) type Xattrs = rpds::RedBlackTreeMapSync<Box<[u8]>, Box<[u8]>>;

/// Metadata of a node.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) perm: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) rdev: u32,
    pub(crate) atime: Time,
    pub(crate) mtime: Time,
    pub(crate) ctime: Time,
    pub(crate) crtime: Time,
    pub(crate) flags: u32,
}

/// One version of a node: published, superseded, or the runner's draft.
pub(crate) struct Snap {
    pub(crate) meta: Meta,
    pub(crate) data: FileData,
    pub(crate) xattrs: Option<Arc<Xattrs>>,
    /// The version's number (one more than the version its draft came
    /// from): the table nodes its batch made carry it.
    ver: u64,
    /// While a draft: what the batch cut out of the current version. Empty
    /// once published (taken at publication).
    retiring: Vec<Retired>,
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

enum Link {
    /// A draft, or a spare version waiting to become one.
    Draft,
    /// The current version. `pool` (set once the contents have ever been a
    /// table) frees the table should this turn out to be the file's last
    /// version.
    Published(Option<Pool>),
    /// Replaced by `next` while a reader still held it: `retired` (what
    /// `next`'s batch cut out of this version) goes back to `pool` once this
    /// version and every older one are gone. (`next` is `None` only in the
    /// injected bug `version_chain_unlinked`.)
    Superseded { next: Option<Arc<Snap>>, retired: Vec<Retired>, pool: Option<Pool> },
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
            retiring: Vec::new(),
            link: UnsafeCell::new(Link::Published(None)),
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
            retiring: Vec::new(),
            link: UnsafeCell::new(Link::Published(pool)),
        }
    }

    /// Takes the link out (replaced by `Draft`).
    fn take_link(&mut self) -> Link {
        // SAFETY: `&mut self`: no other access to the cell.
        self.link.with_mut(|l| unsafe { std::mem::replace(&mut *l, Link::Draft) })
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
            Link::Draft => {}
            Link::Published(pool) => {
                debug_assert!(pool.is_some() || !self.data.has_table(), "a table without its pool leaks");
                if let Some(pool) = pool {
                    // SAFETY: a published version dropped without being
                    // superseded is the file's last (only the runner
                    // supersedes, and a node's versions are dropped after
                    // the node stops publishing), and every older version
                    // is gone (each would hold this one through `next`):
                    // nobody else reaches its table.
                    unsafe { self.data.free_all(&pool) };
                }
            }
            Link::Superseded { next, mut retired, pool } => {
                release(&mut retired, pool.as_ref());
                if let Some(next) = next {
                    drop_chain(next);
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
        f(&mut self.data, cx, &mut ed)
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

/// Frees what a gone version retired.
fn release(retired: &mut Vec<Retired>, pool: Option<&Pool>) {
    if let Some(pool) = pool {
        // SAFETY: called for a version being dropped (no holder left) whose
        // older versions are all gone (they hold it through `next`): nothing
        // anyone can read reaches what its successor's batch retired.
        unsafe { free_retired(retired, pool) };
    }
    debug_assert!(retired.is_empty(), "retired without a pool");
}

/// Drops a chain of superseded versions from `next` on, iteratively: each
/// one whose last holder was the version before it goes too.
fn drop_chain(mut next: Arc<Snap>) {
    loop {
        match Arc::try_unwrap(next) {
            Ok(mut s) => match s.take_link() {
                Link::Superseded { next: n, mut retired, pool } => {
                    release(&mut retired, pool.as_ref());
                    let Some(n) = n else { return };
                    next = n;
                    // `s` (now a `Draft`) drops here and frees nothing.
                }
                Link::Published(Some(pool)) => {
                    // SAFETY: as in `Drop`: the file's last version.
                    unsafe { s.data.free_all(&pool) };
                    return;
                }
                _ => return,
            },
            Err(_) => return,
        }
    }
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
    spare: Option<Arc<Snap>>,
    published: bool,
    pool: &'p Pool,
}

impl<'p> Draft<'p> {
    /// A draft of the version after `cur`.
    fn new(cur: &Snap, pool: &'p Pool) -> Self {
        let spare = take_spare();
        let retiring = LISTS.try_with(|l| l.borrow_mut().pop()).ok().flatten().unwrap_or_default();
        let w = Snap {
            meta: cur.meta.clone(),
            xattrs: cur.xattrs.clone(),
            // SAFETY: the draft of `cur`'s next version; `cur` is held by the
            // runner until the draft is published or aborted.
            data: unsafe { cur.data.share() },
            ver: cur.ver + u64::from(cfg!(not(loom_bug = "draft_reuses_gen"))), // 1; 0 is an injected bug (loom)
            retiring,
            link: UnsafeCell::new(Link::Draft),
        };
        Draft { w, spare, published: false, pool }
    }

    /// Publishes the draft as the version after `cur` (which `slot` holds),
    /// then frees what the batch retired at once if nobody holds `cur`, or
    /// leaves it to `cur`'s last holder (see "Versions").
    fn publish(mut self, slot: &ArcSwap<Snap>, cur: Arc<Snap>) {
        let pool = self.pool;
        let mut retired = std::mem::take(&mut self.w.retiring);
        // The pool travels with the current version (rule 4).
        // SAFETY: `cur` is published; only the runner (here) writes its
        // link while it holds `cur`, and readers never touch it.
        let carried = cur.link.with_mut(|l| match unsafe { &mut *l } {
            Link::Published(p) => p.take(),
            _ => None,
        });
        let carried = carried.or_else(|| self.w.data.has_table().then(|| pool.clone()));
        self.w.link = UnsafeCell::new(Link::Published(carried));
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
        debug_assert!(Arc::ptr_eq(&old, &cur), "only the runner publishes");
        drop(cur);
        #[cfg(not(loom_bug = "version_reclaim_early"))]
        let alone = recycle_if_alone(old);
        // Injected bug (loom-tests/tests/read_with.rs): reclaim at once even
        // while a reader holds the old version.
        #[cfg(loom_bug = "version_reclaim_early")]
        let alone = recycle_if_alone(old).or_else(|old| {
            // SAFETY: as below (the runner holds `old`).
            old.link.with_mut(|l| unsafe {
                *l = Link::Superseded { next: None, retired: Vec::new(), pool: None };
            });
            Ok::<(), Arc<Snap>>(())
        });
        let old = match alone {
            Ok(()) => {
                // SAFETY: nobody else held `old` (it was unique, an acquire
                // after every other holder's release) and so no older
                // version either (each would hold `old` through `next`):
                // what the batch retired (reachable from `old` and older
                // versions only) is unreachable.
                unsafe { free_retired(&mut retired, pool) };
                give_back_list(retired);
                return;
            }
            Err(old) => old,
        };
        // Readers hold `old`: it keeps what the batch retired, and the new
        // version (the one `slot` holds: only the runner publishes).
        let next = slot.load_full();
        #[cfg(not(loom_bug = "version_chain_unlinked"))]
        let next = Some(next);
        // Injected bug (loom-tests/tests/read_with.rs): the superseded
        // version does not keep the next one alive, so a newer version can
        // be found alone (and its retired list freed) while this one, which
        // still reaches part of that list, is held.
        #[cfg(loom_bug = "version_chain_unlinked")]
        let next = {
            drop(next);
            None::<Arc<Snap>>
        };
        let keep = (!retired.is_empty()).then(|| pool.clone());
        // SAFETY: the runner holds `old` (so no `Drop` runs meanwhile) and
        // readers never touch the link.
        old.link.with_mut(|l| unsafe { *l = Link::Superseded { next, retired, pool: keep } });
    }
}

impl Drop for Draft<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.spare.take() {
            let _ = SPARES.try_with(move |sp| {
                let mut sp = sp.borrow_mut();
                if sp.len() < SPARE_SNAPS {
                    sp.push(a);
                }
            });
        }
        if self.published {
            return;
        }
        // SAFETY: an unpublished draft: its table changed only through
        // edits of `w.ver`, and it is dropped here.
        unsafe { self.w.data.abort(self.w.ver, self.pool) };
        // What the batch retired is still reached by the current version.
        let mut list = std::mem::take(&mut self.w.retiring);
        list.clear();
        give_back_list(list);
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

/// A mutation of one node.
pub(crate) enum Op<'a> {
    Write {
        off: u64,
        data: Cow<'a, [u8]>,
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
}

fn own(c: Cow<'_, [u8]>) -> Cow<'static, [u8]> {
    Cow::Owned(c.into_owned())
}

impl<'a> Request<'a> for Op<'a> {
    type Owned = Op<'static>;
    fn into_owned(self) -> Op<'static> {
        match self {
            Op::Write { off, data } => Op::Write { off, data: own(data) },
            Op::Append { data } => Op::Append { data: own(data) },
            Op::SetAttr(s) => Op::SetAttr(s),
            Op::Fallocate { mode, off, len } => Op::Fallocate { mode, off, len },
            Op::Zero { off, end } => Op::Zero { off, end },
            Op::SetXattr { name, value, flags } => Op::SetXattr { name: own(name), value: own(value), flags },
            Op::RemoveXattr { name } => Op::RemoveXattr { name: own(name) },
            Op::SetAcl { kind, acl, flags, kill_sgid } => Op::SetAcl { kind, acl, flags, kill_sgid },
            Op::Touch { mtime, ctime } => Op::Touch { mtime, ctime },
        }
    }
    fn from_owned(o: Op<'static>) -> Op<'a> {
        o
    }
}

/// Link, lookup and open counts.
#[derive(Debug, Default)]
pub(crate) struct Life {
    pub(crate) nlink: u32,
    pub(crate) lookups: u64,
    pub(crate) opens: u64,
    pub(crate) gone: bool,
}

impl Life {
    /// Whether nothing can name the node any more (and it was not yet marked).
    pub(crate) fn settle(&mut self) -> bool {
        if !self.gone && self.nlink == 0 && self.lookups == 0 && self.opens == 0 {
            self.gone = true;
            return true;
        }
        false
    }
}

/// One directory entry.
#[derive(Debug, Clone)]
pub(crate) struct Ent {
    pub(crate) name: Box<[u8]>,
    pub(crate) ino: Ino,
    pub(crate) kind: FileType,
    pub(crate) cookie: u64,
}

/// A directory's entries: by (folded) name, and in creation order by cookie.
#[derive(Debug)]
pub(crate) struct Dir {
    pub(crate) by_key: HashMap<Box<[u8]>, Ent>,
    pub(crate) order: BTreeMap<u64, Box<[u8]>>,
    pub(crate) next_cookie: u64,
    /// Set by rmdir (and rename over it): nothing may be created inside.
    pub(crate) dead: bool,
}

/// The first cookie of a real entry (1 and 2 are `.` and `..`).
pub(crate) const FIRST_COOKIE: u64 = 3;

impl Dir {
    pub(crate) fn new() -> Dir {
        Dir { by_key: HashMap::new(), order: BTreeMap::new(), next_cookie: FIRST_COOKIE, dead: false }
    }
    pub(crate) fn insert(&mut self, key: Box<[u8]>, name: Box<[u8]>, ino: Ino, kind: FileType) {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.order.insert(cookie, key.clone());
        self.by_key.insert(key, Ent { name, ino, kind, cookie });
    }
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Ent> {
        let e = self.by_key.remove(key)?;
        self.order.remove(&e.cookie);
        Some(e)
    }
}

/// An inode.
pub(crate) struct Node {
    pub(crate) ino: Ino,
    pub(crate) kind: FileType,
    pub(crate) snap: ArcSwap<Snap>,
    pub(crate) actor: Combiner<Op<'static>, Result<u64>>,
    pub(crate) life: Mutex<Life>,
    pub(crate) nlink: AtomicU32,
    pub(crate) parent: AtomicU64,
    /// Entries in `dir`, mirrored so `getattr` takes no directory lock.
    pub(crate) entries: AtomicU64,
    /// Boxed: a regular file (most inodes) pays one pointer, not a lock
    /// and two empty maps (issue 17: per-file cost).
    pub(crate) dir: Option<Box<RwLock<Dir>>>,
    pub(crate) target: Option<Box<[u8]>>,
}

impl Node {
    pub(crate) fn new(
        ino: Ino,
        kind: FileType,
        meta: Meta,
        nlink: u32,
        parent: Ino,
        target: Option<Box<[u8]>>,
        xattrs: Option<Arc<Xattrs>>,
    ) -> Node {
        Node {
            ino,
            kind,
            snap: ArcSwap::new(Arc::new(Snap::new(meta, xattrs))),
            actor: Combiner::new(),
            life: Mutex::new(Life { nlink, lookups: 0, opens: 0, gone: false }),
            nlink: AtomicU32::new(nlink),
            parent: AtomicU64::new(parent),
            entries: AtomicU64::new(0),
            dir: (kind == FileType::Directory).then(|| Box::new(RwLock::new(Dir::new()))),
            target,
        }
    }

    /// Updates the link count under `life` (caller holds it) and its mirror.
    pub(crate) fn set_nlink(&self, life: &mut Life, n: u32) {
        life.nlink = n;
        self.nlink.store(n, Ordering::Release);
    }

    /// Mirrors the entry count of `d` (this node's directory, write-locked by the caller).
    pub(crate) fn sync_entries(&self, d: &Dir) {
        self.entries.store(d.by_key.len() as u64, Ordering::Release);
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
        let cur = self.snap.load_full();
        let mut draft = Draft::new(&cur, cx.pool);
        let before = cur.data.len();
        let mut changed = false;
        let w = &mut draft.w;
        for op in ops {
            let r = self.apply_one(cx, w, op);
            changed |= r.is_ok();
            out(r);
        }
        let after = w.data.len();
        crate::fault::fail_point!("node.publish");
        if changed {
            if after > before {
                logical.fetch_add(after - before, Ordering::Relaxed);
            } else {
                logical.fetch_sub(before - after, Ordering::Relaxed);
            }
            draft.publish(&self.snap, cur);
        }
    }

    /// An edit of the draft `w`'s table.
    fn edit<'a>(cx: &Ctx<'a>, retiring: &'a mut Vec<Retired>, ver: u64) -> Edit<'a> {
        // SAFETY: `ver` is one more than the current version's, and every
        // node any published version of this file reaches was made by a
        // published batch (numbered at most the current version's) or by a
        // draft that was aborted (whose nodes `Table::abort` freed); nodes
        // never move between files. So nodes numbered `ver` are this
        // draft's own. `retiring` is the draft's list, given to the current
        // version when the draft is published (`Draft::publish`).
        unsafe { Edit::new(ver, retiring, cx.pool) }
    }

    fn apply_one(&self, cx: &Ctx<'_>, w: &mut Snap, op: Op<'_>) -> Result<u64> {
        let now = Time::now();
        match op {
            Op::Write { off, data } => {
                self.regular()?;
                w.data.write(cx, &mut Self::edit(cx, &mut w.retiring, w.ver), off, &data)?;
                if !data.is_empty() {
                    w.meta.mtime = now;
                    w.meta.ctime = now;
                }
                Ok(data.len() as u64)
            }
            Op::Append { data } => {
                self.regular()?;
                let off = w.data.len();
                w.data.write(cx, &mut Self::edit(cx, &mut w.retiring, w.ver), off, &data)?;
                w.meta.mtime = now;
                w.meta.ctime = now;
                Ok(off)
            }
            Op::SetAttr(s) => {
                if let Some(size) = s.size {
                    match self.kind {
                        FileType::Regular => {}
                        FileType::Directory => return Err(Error::IsDir),
                        _ => return Err(Error::InvalidArgument),
                    }
                    w.data.set_len(cx, &mut Self::edit(cx, &mut w.retiring, w.ver), size)?;
                    w.meta.mtime = now;
                }
                if let Some(mode) = s.mode {
                    // chmod rewrites a stored access ACL's owner, group
                    // class and other entries (Linux `posix_acl_chmod`).
                    let stored = w.xattrs.as_ref().and_then(|x| x.get(crate::acl::ACCESS));
                    if let Some(Ok(Some(mut acl))) = stored.map(|v| Acl::parse(v)) {
                        acl.chmod(mode);
                        let mut x = w.xattrs.as_deref().cloned().unwrap_or_else(Xattrs::new_sync);
                        x.insert_mut(crate::acl::ACCESS.into(), acl.to_bytes().into_boxed_slice());
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
                    m.atime = resolve(t, now);
                }
                if let Some(t) = s.mtime {
                    m.mtime = resolve(t, now);
                }
                if let Some(t) = s.crtime {
                    m.crtime = t;
                }
                if let Some(f) = s.flags {
                    m.flags = f;
                }
                if s.kill_suidgid && self.kind != FileType::Directory {
                    m.perm &= !0o4000;
                    if m.perm & 0o010 != 0 || s.kill_sgid {
                        m.perm &= !0o2000;
                    }
                    if w.xattrs.as_ref().is_some_and(|x| x.contains_key(&b"security.capability"[..])) {
                        let mut x = w.xattrs.as_deref().cloned().unwrap_or_else(Xattrs::new_sync);
                        x.remove_mut(&b"security.capability"[..]);
                        w.xattrs = (!x.is_empty()).then(|| Arc::new(x));
                    }
                }
                w.meta.ctime = s.ctime.unwrap_or(now);
                Ok(0)
            }
            Op::Fallocate { mode, off, len } => {
                self.regular()?;
                w.data.fallocate(cx, &mut Self::edit(cx, &mut w.retiring, w.ver), mode, off, len)?;
                w.meta.mtime = now;
                w.meta.ctime = now;
                Ok(0)
            }
            Op::Zero { off, end } => {
                self.regular()?;
                w.data.zero(cx, &mut Self::edit(cx, &mut w.retiring, w.ver), off, end)?;
                w.meta.mtime = now;
                w.meta.ctime = now;
                Ok(0)
            }
            Op::SetXattr { name, value, flags } => {
                check_xattr_name(&name)?;
                if value.len() > XATTR_SIZE_MAX {
                    return Err(Error::TooBig);
                }
                if flags & !(xattr_flags::CREATE | xattr_flags::REPLACE) != 0
                    || flags == xattr_flags::CREATE | xattr_flags::REPLACE
                {
                    return Err(Error::InvalidArgument);
                }
                let exists = w.xattrs.as_ref().is_some_and(|x| x.contains_key(&*name));
                if flags & xattr_flags::CREATE != 0 && exists {
                    return Err(Error::Exists);
                }
                if flags & xattr_flags::REPLACE != 0 && !exists {
                    return Err(Error::NoData);
                }
                let mut x = w.xattrs.as_deref().cloned().unwrap_or_else(Xattrs::new_sync);
                x.insert_mut(name.into_owned().into_boxed_slice(), value.into_owned().into_boxed_slice());
                w.xattrs = Some(Arc::new(x));
                w.meta.ctime = now;
                Ok(0)
            }
            Op::RemoveXattr { name } => {
                check_xattr_name(&name)?;
                let mut x = w.xattrs.as_deref().cloned().unwrap_or_else(Xattrs::new_sync);
                if !x.remove_mut(&*name) {
                    return Err(Error::NoData);
                }
                w.xattrs = if x.is_empty() { None } else { Some(Arc::new(x)) };
                w.meta.ctime = now;
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
                let mut keep = acl;
                if let (AclKind::Access, Some(a)) = (kind, &keep) {
                    // The mode follows the ACL; an ACL the mode says in full
                    // is not stored (Linux `posix_acl_update_mode`).
                    let (mode, extended) = a.equiv_mode();
                    w.meta.perm = (w.meta.perm & !0o777) | mode;
                    if kill_sgid {
                        w.meta.perm &= !0o2000;
                    }
                    if !extended {
                        keep = None;
                    }
                }
                let mut x = w.xattrs.as_deref().cloned().unwrap_or_else(Xattrs::new_sync);
                match keep {
                    Some(a) => x.insert_mut(name.into(), a.to_bytes().into_boxed_slice()),
                    None => {
                        x.remove_mut(name);
                    }
                }
                w.xattrs = (!x.is_empty()).then(|| Arc::new(x));
                w.meta.ctime = now;
                Ok(0)
            }
            Op::Touch { mtime, ctime } => {
                if mtime {
                    w.meta.mtime = now;
                }
                if ctime {
                    w.meta.ctime = now;
                }
                Ok(0)
            }
        }
    }

    fn regular(&self) -> Result<()> {
        match self.kind {
            FileType::Regular => Ok(()),
            FileType::Directory => Err(Error::IsDir),
            _ => Err(Error::InvalidArgument),
        }
    }
}

fn resolve(t: SetTime, now: Time) -> Time {
    match t {
        SetTime::Now => now,
        SetTime::At(t) => t,
    }
}

/// Checks an xattr name: non-empty, at most 255 bytes, no NUL, in a namespace
/// this file system keeps (`user.`, `trusted.`, `security.`).
pub(crate) fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(Error::Range);
    }
    if name.contains(&0) {
        return Err(Error::InvalidArgument);
    }
    const KEPT: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];
    if !KEPT.iter().any(|p| name.starts_with(p) && name.len() > p.len()) {
        return Err(Error::NotSupported);
    }
    Ok(())
}
