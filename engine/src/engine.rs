//! The engine: the inode map, the configuration, attributes and the
//! counters. The operations live beside it, one file per concern, each an
//! `impl Engine` block over the same fields:
//! * `namespace`: lookup, create, link, unlink, rename, readdir;
//! * `file`: open, read, write, fallocate, seek, copy_file_range;
//! * `xattr`: extended attributes.
//!
//! Every mutation of one inode goes through that node's actor (`node`,
//! `actor`); reads load the node's published snapshot and take no lock.

use std::borrow::Cow;

use crate::budget::{entry_cost, inode_cost, MetaBudget, PER_INODE};
use crate::data::Ctx;
use crate::gate::Gate;
use crate::node::{Meta, Node, Op, Special};
use crate::sector::{Pool, PoolStats};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex, ShardMap};
use crate::types::*;
use crate::{Error, Result};

/// The default sector size: one 4 KiB page. Chosen by the sweep in
/// `docs/BENCHMARKS.md` ("Sector size"): a source tree charges 1.08x its
/// bytes (64 KiB sectors: 2.77x), and streaming through the mount and 4 KiB
/// random overwrites run alike at 4 KiB and 64 KiB.
pub const DEFAULT_SECTOR_SIZE: usize = 4 << 10;

/// Whether `ss` is a sector size [`Engine::new`] takes: a power of two in
/// 4 KiB..=1 MiB.
pub fn sector_size_ok(ss: u64) -> bool {
    ss.is_power_of_two() && (4096..=1 << 20).contains(&ss)
}

/// The least `st_blksize` a file reports (the sector size if larger):
/// programs size their buffers by it (stdio, `cp`), and through FUSE every
/// buffer flushed is a round trip, so 4 KiB sectors must not mean 4 KiB
/// writes.
pub const PREFERRED_IO: u64 = 64 << 10;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bytes per sector: a power of two from 4 KiB to 1 MiB.
    pub sector_size: usize,
    /// Memory limit for file data, in bytes.
    pub max_bytes: u64,
    /// Most inodes (files, directories, links, ...), the root included.
    pub max_inodes: u64,
    /// Limit for metadata in bytes ([`crate::budget`]: inodes, names,
    /// symlink targets, extended attributes; 0: [`PER_INODE`] per inode of
    /// `max_inodes`, as tmpfs's inode space). Not kept in images.
    pub max_meta_bytes: u64,
    /// Files up to this size keep their data in one exact-size buffer
    /// (at most `sector_size`).
    pub inline_max: usize,
    /// Largest file size.
    pub max_file_size: u64,
    /// Case-insensitive, case-preserving names.
    pub case_insensitive: bool,
    /// Root directory permission bits.
    pub root_mode: u32,
    /// Root directory owner.
    pub root_uid: u32,
    /// Root directory group.
    pub root_gid: u32,
    /// Per-thread cache slots in the sector pool (0: twice the cores).
    pub cache_slots: usize,
    /// POSIX ACLs ([`crate::acl`]): keep `system.posix_acl_access` and
    /// `system.posix_acl_default`, in step with the mode bits, and let new
    /// nodes inherit their directory's default ACL. Off: those names are
    /// refused as any `system.` attribute is (`NotSupported`).
    pub posix_acl: bool,
    /// When reads update access times (default: never, as before this
    /// setting; the mount uses `relatime`'s rule unless told `noatime`).
    pub atime: Atime,
    /// Bytes of one page, the unit of copy-on-write inside a sector (0: 4
    /// KiB, or the sector size if smaller). For loom models and tests with
    /// tiny geometry (`Engine::new_unchecked`); internal, not semver.
    #[doc(hidden)]
    pub page_size: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            sector_size: DEFAULT_SECTOR_SIZE,
            max_bytes: 1 << 30,
            max_inodes: 1 << 20,
            max_meta_bytes: 0,
            inline_max: 4096,
            max_file_size: i64::MAX as u64,
            case_insensitive: false,
            root_mode: 0o1777,
            root_uid: 0,
            root_gid: 0,
            cache_slots: 0,
            posix_acl: false,
            atime: Atime::Never,
            page_size: 0,
        }
    }
}

/// Telemetry counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Sector pool counters (bytes used, limit, peak, sectors, ...).
    pub pool: PoolStats,
    /// Inodes in use.
    pub inodes: u64,
    /// The inode limit.
    pub max_inodes: u64,
    /// Sum of file sizes (logical bytes, holes included).
    pub logical_bytes: u64,
    /// Metadata charged ([`crate::budget`]).
    pub meta_bytes: u64,
    /// The metadata limit.
    pub max_meta_bytes: u64,
}

/// An in-memory file system.
///
/// All operations take `&self` and may be called from any number of threads.
pub struct Engine {
    pub(crate) cfg: Config,
    pub(crate) pool: Pool,
    pub(crate) nodes: ShardMap<Arc<Node>>,
    pub(crate) next_ino: AtomicU64,
    pub(crate) inodes: AtomicU64,
    /// Metadata charged and its limit ([`crate::budget`]).
    pub(crate) meta: Arc<MetaBudget>,
    pub(crate) logical: AtomicU64,
    pub(crate) rename_lock: Mutex<()>,
    /// Held shared by every mutation, closed by an image capture (`gate`).
    pub(crate) gate: Gate,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("cfg", &self.cfg).field("pool", &self.pool).finish()
    }
}

impl Engine {
    /// A new, empty file system with a root directory.
    ///
    /// # Errors
    /// `InvalidArgument` if the sector size is not a power of two in
    /// 4 KiB..=1 MiB, the inode limit is zero, or a page size is given that
    /// is not a power of two of 512 B..=64 KiB dividing the sector size.
    pub fn new(mut cfg: Config) -> Result<Engine> {
        let ss = cfg.sector_size;
        if !sector_size_ok(ss as u64) || cfg.max_inodes == 0 {
            return Err(Error::InvalidArgument);
        }
        let ps = cfg.page_size;
        if ps != 0 && (!ps.is_power_of_two() || !(512..=64 << 10).contains(&ps) || ps > ss) {
            return Err(Error::InvalidArgument);
        }
        Ok(Self::new_unchecked({
            cfg.inline_max = cfg.inline_max.min(ss);
            cfg
        }))
    }

    /// Like [`Engine::new`] without the sector size bounds, for loom models and
    /// tests with tiny geometry. Internal, not semver.
    #[doc(hidden)]
    pub fn new_unchecked(cfg: Config) -> Engine {
        let slots = if cfg.cache_slots == 0 {
            2 * std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            cfg.cache_slots
        };
        let pool = match cfg.page_size {
            0 => Pool::new(cfg.sector_size, cfg.max_bytes, slots),
            ps => Pool::with_page_size(cfg.sector_size, ps, cfg.max_bytes, slots),
        };
        let limit = match cfg.max_meta_bytes {
            0 => cfg.max_inodes.saturating_mul(PER_INODE),
            n => n,
        };
        let budget = MetaBudget::new(limit);
        // The root is charged even past a tiny limit: it always exists.
        budget.force(inode_cost(true, 0));
        let meta = Meta::new(cfg.root_mode & 0o7777, cfg.root_uid, cfg.root_gid);
        let root = Arc::new(Node::new(ROOT, FileType::Directory, meta, 2, ROOT, Special::None, None));
        let nodes = ShardMap::new();
        nodes.insert(root);
        Engine {
            cfg,
            pool,
            nodes,
            next_ino: AtomicU64::new(ROOT + 1),
            inodes: AtomicU64::new(1),
            meta: Arc::new(budget),
            logical: AtomicU64::new(0),
            rename_lock: Mutex::new(()),
            gate: Gate::new(slots),
        }
    }

    /// The settings this engine was made with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A read of `n` (a file's data, a directory's entries, a symlink's
    /// target): updates its access time if
    /// `Config::atime` says it is due, through the node's actor (the read
    /// itself took no lock; when nothing is due this is three comparisons
    /// and a coarse clock read). It enters no gate: a capture never holds a
    /// reader up, and shows an access time from just before or after.
    pub(crate) fn accessed(&self, n: &Node) {
        // The guard goes before the update: a publish while a reader holds
        // the version it replaces takes the slower path.
        let due = self.access_due(&n.load().meta);
        if due {
            self.touch_access(n);
        }
    }

    /// Submits the access-time update (the runner checks again whether it
    /// is due).
    fn touch_access(&self, n: &Node) {
        let _ = n.submit(&self.cx(), &self.logical, Op::Accessed { atime: self.cfg.atime });
    }

    /// Whether a read that found these times updates the access time.
    pub(crate) fn access_due(&self, m: &Meta) -> bool {
        m.access_due(self.cfg.atime)
    }

    /// [`Engine::accessed`] for a read that holds no node, once it is known
    /// to be due: looks the node up (one gone meanwhile needs nothing).
    pub(crate) fn access_now(&self, ino: Ino) {
        if let Ok(n) = self.node(ino) {
            self.touch_access(&n);
        }
    }

    pub(crate) fn cx(&self) -> Ctx<'_> {
        Ctx {
            pool: &self.pool,
            meta: &self.meta,
            inline_max: self.cfg.inline_max as u64,
            max_size: self.cfg.max_file_size,
        }
    }

    /// **Locking:** one map shard, for the duration of the call.
    pub(crate) fn node(&self, ino: Ino) -> Result<Arc<Node>> {
        self.nodes.get(&ino).ok_or(Error::NotFound)
    }

    pub(crate) fn dir_node(&self, ino: Ino) -> Result<Arc<Node>> {
        let n = self.node(ino)?;
        if n.dir().is_none() {
            return Err(Error::NotDir);
        }
        Ok(n)
    }

    pub(crate) fn key<'a>(&self, name: &'a [u8]) -> Cow<'a, [u8]> {
        if !self.cfg.case_insensitive {
            return Cow::Borrowed(name);
        }
        match std::str::from_utf8(name) {
            // Character by character, not `str::to_lowercase`, whose Greek
            // final-sigma rule lowers a capital sigma by its place in the
            // word (a probe: `ΑΣ` matched `ας` but not `ασ`); and the final
            // small sigma folds with the other (as Windows' upcase table
            // does), so that `σ`, `ς` and `Σ` are one letter.
            Ok(s) => Cow::Owned(
                s.chars()
                    .flat_map(char::to_lowercase)
                    .map(|c| if c == 'ς' { 'σ' } else { c })
                    .collect::<String>()
                    .into_bytes(),
            ),
            Err(_) => Cow::Owned(name.to_ascii_lowercase()),
        }
    }

    pub(crate) fn touch(&self, n: &Node, mtime: bool) {
        // Touch cannot fail.
        let _ = n.submit(&self.cx(), &self.logical, Op::Touch { mtime, ctime: true });
    }

    pub(crate) fn attr_of(&self, n: &Node) -> Attr {
        let s = n.load();
        let ss = self.cfg.sector_size as u64;
        let size = match n.kind {
            FileType::Regular => s.data.len(),
            FileType::Symlink => n.target().map_or(0, |t| t.len() as u64),
            FileType::Directory => (n.entries() + 2) * 20,
            _ => 0,
        };
        Attr {
            ino: n.ino,
            kind: n.kind,
            perm: s.meta.perm,
            nlink: n.nlink.load(Ordering::Acquire),
            uid: s.meta.uid,
            gid: s.meta.gid,
            rdev: n.rdev(),
            size,
            blocks: s.data.allocated(ss).div_ceil(512),
            blksize: ss.max(PREFERRED_IO) as u32,
            atime: s.meta.atime.get(),
            mtime: s.meta.mtime.get(),
            ctime: s.meta.ctime.get(),
            crtime: s.meta.crtime.get(),
            flags: s.meta.flags,
        }
    }

    /// Takes one lookup reference on `n` and returns its attributes.
    pub(crate) fn hand_out(&self, n: &Node) -> Attr {
        n.life.lock().lookups += 1;
        self.attr_of(n)
    }

    /// Applies `f` to `n`'s life counts and frees `n` if nothing names it now.
    /// Returns whether `n` was freed.
    pub(crate) fn adjust_life(&self, n: &Node, f: impl FnOnce(&Node, &mut crate::node::Life)) -> bool {
        let gone = {
            let mut life = n.life.lock();
            f(n, &mut life);
            n.settle(&life)
        };
        if gone {
            self.free(n);
        }
        gone
    }

    pub(crate) fn free(&self, n: &Node) {
        if let Some(node) = self.nodes.remove_if(&n.ino, |v| std::ptr::eq(&**v, n)) {
            self.inodes.fetch_sub(1, Ordering::AcqRel);
            self.meta.release(inode_cost(node.has_extra(), node.target().map_or(0, <[u8]>::len)));
            let len = node.load().data.len();
            self.logical.fetch_sub(len, Ordering::Relaxed);
            // The node (and its sectors) is freed when the last Arc drops:
            // here, or when a concurrent reader finishes.
            drop(node);
        }
    }

    /// Reserves what a namespace operation adds: an inode (`inode`: one of
    /// `max_inodes` and its metadata charge, [`inode_cost`] of its two
    /// values: whether it has a boxed `Extra`, its symlink target's length)
    /// and `bytes` more metadata (directory entries: [`entry_cost`]). Given
    /// back when the guard drops unless it is [committed](Reserved::commit).
    ///
    /// # Errors
    /// `NoInodes`, `NoSpace` (metadata); nothing reserved then.
    pub(crate) fn reserve(&self, inode: Option<(bool, usize)>, bytes: u64) -> Result<Reserved<'_>> {
        let meta = inode.map_or(0, |(extra, target_len)| inode_cost(extra, target_len)) + bytes;
        if inode.is_some() {
            self.reserve_inode()?;
        }
        // From here the guard gives the inode back if the charge fails.
        let mut r = Reserved { engine: self, meta: 0, inode: inode.is_some() };
        self.meta.charge(meta)?;
        r.meta = meta;
        Ok(r)
    }

    /// Removes one name of non-directory `n` (its link count drops) and
    /// frees `n` if nothing names it now; returns whether it was freed. A
    /// name that leaves another gives back the inode it held: tmpfs counts
    /// every name of a file beyond its first (each pins a dentry), and so
    /// does `link` ([`Reserved::add_inode`]).
    pub(crate) fn drop_name(&self, n: &Node) -> bool {
        let mut named = false;
        let freed = self.adjust_life(n, |n, l| {
            let nl = n.links(l).saturating_sub(1);
            n.set_nlink(l, nl);
            named = nl > 0;
        });
        if named {
            self.inodes.fetch_sub(1, Ordering::AcqRel);
        }
        freed
    }

    /// Releases the charge of a removed directory entry of `name_len` bytes.
    pub(crate) fn release_entry(&self, name_len: usize) {
        self.meta.release(entry_cost(name_len));
    }

    /// Releases `bytes` of metadata charged before.
    pub(crate) fn release_meta(&self, bytes: u64) {
        self.meta.release(bytes);
    }

    fn reserve_inode(&self) -> Result<()> {
        let mut cur = self.inodes.load(Ordering::Relaxed);
        loop {
            if cur >= self.cfg.max_inodes {
                return Err(Error::NoInodes);
            }
            match self.inodes.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// The attributes of `ino`, without taking any lock on the file.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        Ok(self.attr_of(&*self.node(ino)?))
    }

    /// Changes attributes; a size change truncates or extends with zeros.
    ///
    /// # Errors
    /// `NotFound`; `InvalidArgument` for a time with nanoseconds outside
    /// `0..1_000_000_000` (as `utimensat(2)`); for `size`: `IsDir`,
    /// `InvalidArgument` (not a regular file), `FileTooBig`, `NoSpace`. On
    /// error nothing changed.
    ///
    /// # References
    /// `chmod(2)`, `chown(2)`, `truncate(2)`, `utimensat(2)`
    pub fn setattr(&self, ino: Ino, set: &SetAttr) -> Result<Attr> {
        let n = self.node(ino)?;
        let at = |t: Option<SetTime>| match t {
            Some(SetTime::At(t)) => Some(t),
            _ => None,
        };
        if [at(set.atime), at(set.mtime), set.ctime, set.crtime].into_iter().flatten().any(|t| t.nanos >= 1_000_000_000)
        {
            // Found by the fuzzer (issue 19): a time the engine would store
            // and hand out, that `Time`'s own contract and `SystemTime` reject.
            return Err(Error::InvalidArgument);
        }
        if set.inode_flags.is_some_and(|f| f & !inode_flags::SETTABLE != 0) {
            return Err(Error::NotSupported);
        }
        let gate = self.gate.enter();
        n.submit(&self.cx(), &self.logical, Op::SetAttr(*set))?;
        drop(gate);
        Ok(self.attr_of(&n))
    }
    // ---------------------------------------------------------------- misc

    /// Checks `mask` ([`access_mask`]) for `cred` against `ino`'s mode bits.
    ///
    /// # Errors
    /// `NotFound`, `Access`.
    ///
    /// # References
    /// `access(2)`
    pub fn access(&self, ino: Ino, mask: u32, cred: &Cred) -> Result<()> {
        let a = self.getattr(ino)?;
        if mask == 0 {
            return Ok(());
        }
        if cred.uid == 0 {
            let any_x = a.perm & 0o111 != 0 || a.kind == FileType::Directory;
            return if mask & access_mask::X != 0 && !any_x { Err(Error::Access) } else { Ok(()) };
        }
        let bits = if cred.uid == a.uid {
            (a.perm >> 6) & 7
        } else if cred.gid == a.gid || cred.groups.contains(&a.gid) {
            (a.perm >> 3) & 7
        } else {
            a.perm & 7
        };
        if mask & bits == mask {
            Ok(())
        } else {
            Err(Error::Access)
        }
    }

    /// Totals for `statfs(2)`, in 4 KiB blocks: the limit and what is left.
    /// Free inodes are the fewer of those left under `max_inodes` and the
    /// metadata left in units of [`PER_INODE`] (as tmpfs counts free inodes
    /// from its inode space), so `df -i` shows a disk whose names and
    /// attributes used up the metadata limit as full.
    pub fn statfs(&self) -> StatFs {
        let bsize = 4096u64;
        let limit = self.pool.limit();
        let used = self.pool.used().min(limit);
        let inodes = self.inodes.load(Ordering::Acquire);
        let meta_free = self.meta.limit().saturating_sub(self.meta.used()) / PER_INODE;
        let free = (limit - used) / bsize;
        StatFs {
            bsize: bsize as u32,
            blocks: limit / bsize,
            bfree: free,
            bavail: free,
            files: self.cfg.max_inodes,
            ffree: self.cfg.max_inodes.saturating_sub(inodes).min(meta_free),
            namelen: NAME_MAX as u32,
        }
    }

    /// Telemetry counters.
    pub fn stats(&self) -> Stats {
        Stats {
            pool: self.pool.stats(),
            inodes: self.inodes.load(Ordering::Acquire),
            max_inodes: self.cfg.max_inodes,
            logical_bytes: self.logical.load(Ordering::Relaxed),
            meta_bytes: self.meta.used(),
            max_meta_bytes: self.meta.limit(),
        }
    }

    /// Gives back the inode map's table memory once most of it is empty
    /// (after many deletes; see `ShardMap::shrink_if_sparse`). Cheap when
    /// there is nothing to do (two counts); for a caller's periodic
    /// housekeeping, as the mount's telemetry thread does each second.
    /// Returns whether it shrank.
    pub fn compact(&self) -> bool {
        self.nodes.shrink_if_sparse()
    }

    /// The sector pool (for checks and telemetry). Internal, not semver.
    #[doc(hidden)]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Requests counted in `ino`'s actor and not yet completed (0 for an
    /// unknown inode). For tests; internal, not semver.
    #[doc(hidden)]
    pub fn pending_requests(&self, ino: Ino) -> usize {
        self.node(ino).map_or(0, |n| n.actor.pending())
    }

    /// Sizes of the per-inode structures (name, bytes), for the per-file
    /// memory bench. Internal, not semver.
    #[doc(hidden)]
    pub fn mem_layout() -> Vec<(&'static str, usize)> {
        crate::node::layout()
    }
}

/// An inode and metadata, reserved ([`Engine::reserve`]): given back on
/// drop unless committed.
pub(crate) struct Reserved<'a> {
    engine: &'a Engine,
    meta: u64,
    inode: bool,
}

impl Reserved<'_> {
    /// The node is made: its inode and charge stay until it is freed (and
    /// its entry's until the entry is removed).
    pub(crate) fn commit(self) {
        std::mem::forget(self);
    }

    /// Adds one of `max_inodes` to the reservation (a hard link's: a name
    /// beyond a file's first counts as an inode, as on tmpfs; given back by
    /// [`Engine::drop_name`]).
    ///
    /// # Errors
    /// `NoInodes`; the reservation is unchanged then.
    pub(crate) fn add_inode(&mut self) -> Result<()> {
        debug_assert!(!self.inode, "one inode a reservation");
        self.engine.reserve_inode()?;
        self.inode = true;
        Ok(())
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.inode {
            self.engine.inodes.fetch_sub(1, Ordering::AcqRel);
        }
        self.engine.meta.release(self.meta);
    }
}
