//! The engine: the inode map, the namespace operations, and the file
//! operations that route through each node's actor.
//!
//! # Namespace
//! Inodes live in a sharded map (`ShardMap<Ino, Arc<Node>>`, a dashmap); no
//! method holds a map guard across any other call (values are cloned out).
//! Each directory keeps its entries under its own reader-writer lock: a
//! lookup is one map probe for the directory plus a read-locked hash probe;
//! creates and deletes in different directories never contend.
//!
//! # Locks and their order
//! 1. `rename_lock` (only for renames between two different directories, so
//!    ancestry cannot change under a loop check; like Linux's
//!    `s_vfs_rename_mutex`);
//! 2. directory locks: an ancestor before its descendant, else the lower
//!    inode number first; a directory being removed (rmdir, or replaced by
//!    rename) is locked after its parent(s);
//! 3. a node's `life` mutex (a leaf lock: nothing is taken while it is held).
//!
//! Actor requests (time stamps of a directory) may be submitted while
//! directory locks are held: the actor takes no directory lock.
//!
//! # Lookup references
//! Like the kernel's `nlookup`, every call that hands out an inode (`lookup`,
//! `create`, `mkdir`, `mknod`, `symlink`, `link`, `tmpfile`, each entry of
//! `readdir_plus`) takes one reference, which `forget` releases. A node whose
//! link count, lookup references and open count are all zero is freed.

use std::borrow::Cow;

use crate::data::Ctx;
use crate::node::{Dir, Meta, Node, Op, FIRST_COOKIE};
use crate::sector::{Pool, PoolStats};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{Arc, Mutex, RwLockWriteGuard, ShardMap};
use crate::types::*;
use crate::{Error, Result};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bytes per sector: a power of two from 4 KiB to 1 MiB.
    pub sector_size: usize,
    /// Memory limit for file data, in bytes.
    pub max_bytes: u64,
    /// Most inodes (files, directories, links, ...), the root included.
    pub max_inodes: u64,
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
}

impl Default for Config {
    fn default() -> Config {
        Config {
            sector_size: 64 << 10,
            max_bytes: 1 << 30,
            max_inodes: 1 << 20,
            inline_max: 4096,
            max_file_size: i64::MAX as u64,
            case_insensitive: false,
            root_mode: 0o1777,
            root_uid: 0,
            root_gid: 0,
            cache_slots: 0,
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
}

/// An in-memory file system.
///
/// All operations take `&self` and may be called from any number of threads.
pub struct Engine {
    cfg: Config,
    pool: Pool,
    nodes: ShardMap<Ino, Arc<Node>>,
    next_ino: AtomicU64,
    inodes: AtomicU64,
    logical: AtomicU64,
    rename_lock: Mutex<()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("cfg", &self.cfg).field("pool", &self.pool).finish()
    }
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&b| b == b'/' || b == 0) {
        return Err(Error::InvalidName);
    }
    Ok(())
}

/// What a new node is made of.
struct New {
    kind: FileType,
    perm: u32,
    rdev: u32,
    uid: u32,
    gid: u32,
    target: Option<Box<[u8]>>,
}

impl Engine {
    /// A new, empty file system with a root directory.
    ///
    /// # Errors
    /// `InvalidArgument` if the sector size is not a power of two in
    /// 4 KiB..=1 MiB, or the inode limit is zero.
    pub fn new(mut cfg: Config) -> Result<Engine> {
        let ss = cfg.sector_size;
        if !ss.is_power_of_two() || !(4096..=1 << 20).contains(&ss) || cfg.max_inodes == 0 {
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
        let pool = Pool::new(cfg.sector_size, cfg.max_bytes, slots);
        let now = Time::now();
        let meta = Meta {
            perm: cfg.root_mode & 0o7777,
            uid: cfg.root_uid,
            gid: cfg.root_gid,
            rdev: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            flags: 0,
        };
        let root = Arc::new(Node::new(ROOT, FileType::Directory, meta, 2, ROOT, None));
        let nodes = ShardMap::new();
        nodes.insert(ROOT, root);
        Engine {
            cfg,
            pool,
            nodes,
            next_ino: AtomicU64::new(ROOT + 1),
            inodes: AtomicU64::new(1),
            logical: AtomicU64::new(0),
            rename_lock: Mutex::new(()),
        }
    }

    /// The settings this engine was made with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn cx(&self) -> Ctx<'_> {
        Ctx { pool: &self.pool, inline_max: self.cfg.inline_max as u64, max_size: self.cfg.max_file_size }
    }

    /// **Locking:** one map shard, for the duration of the call.
    fn node(&self, ino: Ino) -> Result<Arc<Node>> {
        self.nodes.get(&ino).ok_or(Error::NotFound)
    }

    fn dir_node(&self, ino: Ino) -> Result<Arc<Node>> {
        let n = self.node(ino)?;
        if n.dir.is_none() {
            return Err(Error::NotDir);
        }
        Ok(n)
    }

    fn key<'a>(&self, name: &'a [u8]) -> Cow<'a, [u8]> {
        if !self.cfg.case_insensitive {
            return Cow::Borrowed(name);
        }
        match std::str::from_utf8(name) {
            Ok(s) => Cow::Owned(s.to_lowercase().into_bytes()),
            Err(_) => Cow::Owned(name.to_ascii_lowercase()),
        }
    }

    fn touch(&self, n: &Node, mtime: bool) {
        // Touch cannot fail.
        let _ = n.submit(&self.cx(), &self.logical, Op::Touch { mtime, ctime: true });
    }

    fn attr_of(&self, n: &Node) -> Attr {
        let s = n.snap.load();
        let ss = self.cfg.sector_size as u64;
        let size = match n.kind {
            FileType::Regular => s.data.len(),
            FileType::Symlink => n.target.as_ref().map_or(0, |t| t.len() as u64),
            FileType::Directory => (n.entries.load(Ordering::Acquire) + 2) * 20,
            _ => 0,
        };
        Attr {
            ino: n.ino,
            kind: n.kind,
            perm: s.meta.perm,
            nlink: n.nlink.load(Ordering::Acquire),
            uid: s.meta.uid,
            gid: s.meta.gid,
            rdev: s.meta.rdev,
            size,
            blocks: s.data.allocated(ss).div_ceil(512),
            blksize: ss as u32,
            atime: s.meta.atime,
            mtime: s.meta.mtime,
            ctime: s.meta.ctime,
            crtime: s.meta.crtime,
            flags: s.meta.flags,
        }
    }

    /// Takes one lookup reference on `n` and returns its attributes.
    fn hand_out(&self, n: &Node) -> Attr {
        n.life.lock().lookups += 1;
        self.attr_of(n)
    }

    /// Applies `f` to `n`'s life counts and frees `n` if nothing names it now.
    /// Returns whether `n` was freed.
    fn adjust_life(&self, n: &Node, f: impl FnOnce(&Node, &mut crate::node::Life)) -> bool {
        let gone = {
            let mut life = n.life.lock();
            f(n, &mut life);
            life.settle()
        };
        if gone {
            self.free(n);
        }
        gone
    }

    fn free(&self, n: &Node) {
        if let Some(node) = self.nodes.remove_if(&n.ino, |v| std::ptr::eq(&**v, n)) {
            self.inodes.fetch_sub(1, Ordering::AcqRel);
            let len = node.snap.load().data.len();
            self.logical.fetch_sub(len, Ordering::Relaxed);
            // The node (and its sectors) is freed when the last Arc drops:
            // here, or when a concurrent reader finishes.
            drop(node);
        }
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

    // ---------------------------------------------------------------- lookup

    /// Looks `name` up in directory `parent` and takes a lookup reference.
    /// `.` and `..` resolve to the directory and its parent.
    ///
    /// # Errors
    /// `NotFound`, `NotDir` (parent), `NameTooLong`, `InvalidName`.
    ///
    /// # References
    /// `path_resolution(7)`
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        let p = self.dir_node(parent)?;
        if name == b"." {
            return Ok(self.hand_out(&p));
        }
        if name == b".." {
            let up = self.node(p.parent.load(Ordering::Acquire))?;
            return Ok(self.hand_out(&up));
        }
        check_name(name)?;
        let key = self.key(name);
        let dir = p.dir.as_ref().ok_or(Error::NotDir)?.read();
        let ino = dir.by_key.get(&*key).ok_or(Error::NotFound)?.ino;
        // Held under the directory's read lock, so the entry (and so the
        // node) cannot be removed before the reference is taken.
        let n = self.node(ino)?;
        let attr = self.hand_out(&n);
        drop(dir);
        Ok(attr)
    }

    /// Releases `n` lookup references taken by `lookup` and friends.
    pub fn forget(&self, ino: Ino, n: u64) {
        if let Ok(node) = self.node(ino) {
            self.adjust_life(&node, |_, l| l.lookups = l.lookups.saturating_sub(n));
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
    /// `NotFound`; for `size`: `IsDir`, `InvalidArgument` (not a regular
    /// file), `FileTooBig`, `NoSpace`. On error nothing changed.
    ///
    /// # References
    /// `chmod(2)`, `chown(2)`, `truncate(2)`, `utimensat(2)`
    pub fn setattr(&self, ino: Ino, set: &SetAttr) -> Result<Attr> {
        let n = self.node(ino)?;
        n.submit(&self.cx(), &self.logical, Op::SetAttr(*set))?;
        Ok(self.attr_of(&n))
    }

    // ---------------------------------------------------------------- create

    fn make(&self, parent: Ino, name: &[u8], new: New) -> Result<Attr> {
        let New { kind, perm, rdev, uid, gid, target } = new;
        check_name(name)?;
        let p = self.dir_node(parent)?;
        let key = self.key(name);
        let pdir = p.dir.as_ref().ok_or(Error::NotDir)?;
        let mut d = pdir.write();
        // Injected bug when off (loom-tests/tests/ns_races.rs): create inside a removed directory.
        #[cfg(not(loom_bug = "ns_create_in_dead_dir"))]
        if d.dead {
            return Err(Error::NotFound);
        }
        if d.by_key.contains_key(&*key) {
            return Err(Error::Exists);
        }
        self.reserve_inode()?;
        let pmeta = p.snap.load().meta.clone();
        let mut gid = gid;
        let mut perm = perm & 0o7777;
        if pmeta.perm & 0o2000 != 0 {
            // Set-group-ID directory: new entries take its group, and new
            // directories inherit the bit.
            gid = pmeta.gid;
            if kind == FileType::Directory {
                perm |= 0o2000;
            }
        }
        let now = Time::now();
        let meta = Meta { perm, uid, gid, rdev, atime: now, mtime: now, ctime: now, crtime: now, flags: 0 };
        let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
        let nlink = if kind == FileType::Directory { 2 } else { 1 };
        let node = Arc::new(Node::new(ino, kind, meta, nlink, parent, target));
        node.life.lock().lookups = 1;
        self.nodes.insert(ino, Arc::clone(&node));
        d.insert(key.into_owned().into_boxed_slice(), name.into(), ino, kind);
        p.sync_entries(&d);
        if kind == FileType::Directory {
            let mut pl = p.life.lock();
            let nl = pl.nlink + 1;
            p.set_nlink(&mut pl, nl);
        }
        self.touch(&p, true);
        drop(d);
        Ok(self.attr_of(&node))
    }

    /// Creates a regular file (exclusively) and takes a lookup reference.
    ///
    /// # Errors
    /// `Exists`, `NotFound` (parent removed), `NotDir`, `NameTooLong`,
    /// `InvalidName`, `NoInodes`.
    ///
    /// # References
    /// `open(2)` with `O_CREAT | O_EXCL`
    pub fn create(&self, parent: Ino, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.make(parent, name, New { kind: FileType::Regular, perm: mode, rdev: 0, uid, gid, target: None })
    }

    /// Creates a directory.
    ///
    /// # Errors
    /// As [`Engine::create`], and `TooManyLinks` never (no limit on subdirectories).
    ///
    /// # References
    /// `mkdir(2)`
    pub fn mkdir(&self, parent: Ino, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.make(parent, name, New { kind: FileType::Directory, perm: mode, rdev: 0, uid, gid, target: None })
    }

    /// Creates a regular file, fifo, socket or device node. The type comes
    /// from the `S_IFMT` bits of `mode` (none: regular).
    ///
    /// # Errors
    /// As [`Engine::create`]; `InvalidArgument` for directory, symlink or
    /// unknown types.
    ///
    /// # References
    /// `mknod(2)`
    pub fn mknod(&self, parent: Ino, name: &[u8], mode: u32, rdev: u32, uid: u32, gid: u32) -> Result<Attr> {
        let kind = FileType::from_mode(mode).ok_or(Error::InvalidArgument)?;
        if matches!(kind, FileType::Directory | FileType::Symlink) {
            return Err(Error::InvalidArgument);
        }
        let rdev = if matches!(kind, FileType::CharDevice | FileType::BlockDevice) { rdev } else { 0 };
        self.make(parent, name, New { kind, perm: mode, rdev, uid, gid, target: None })
    }

    /// Creates a symbolic link to `target`.
    ///
    /// # Errors
    /// As [`Engine::create`]; `BadTarget` for an empty target, `NameTooLong`
    /// for one over 4096 bytes or with a NUL.
    ///
    /// # References
    /// `symlink(2)`
    pub fn symlink(&self, parent: Ino, name: &[u8], target: &[u8], uid: u32, gid: u32) -> Result<Attr> {
        if target.is_empty() {
            return Err(Error::BadTarget);
        }
        if target.len() >= PATH_MAX || target.contains(&0) {
            return Err(Error::NameTooLong);
        }
        self.make(
            parent,
            name,
            New { kind: FileType::Symlink, perm: 0o777, rdev: 0, uid, gid, target: Some(target.into()) },
        )
    }

    /// The target of a symbolic link.
    ///
    /// # Errors
    /// `NotFound`, `InvalidArgument` (not a symlink).
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let n = self.node(ino)?;
        n.target.as_ref().map(|t| t.to_vec()).ok_or(Error::InvalidArgument)
    }

    /// An anonymous regular file in `parent`'s file system (`O_TMPFILE`):
    /// link count 0, opened once and referenced once. `link` may give it a name.
    ///
    /// # Errors
    /// `NotFound`, `NotDir`, `NoInodes`.
    pub fn tmpfile(&self, parent: Ino, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        let p = self.dir_node(parent)?;
        self.reserve_inode()?;
        let now = Time::now();
        let meta =
            Meta { perm: mode & 0o7777, uid, gid, rdev: 0, atime: now, mtime: now, ctime: now, crtime: now, flags: 0 };
        let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
        let node = Arc::new(Node::new(ino, FileType::Regular, meta, 0, p.ino, None));
        {
            let mut l = node.life.lock();
            l.lookups = 1;
            l.opens = 1;
        }
        self.nodes.insert(ino, Arc::clone(&node));
        Ok(self.attr_of(&node))
    }

    /// Adds a hard link `newparent/newname` to `ino` and takes a lookup reference.
    ///
    /// # Errors
    /// `Permission` (directories), `Exists`, `NotFound`, `NotDir`,
    /// `TooManyLinks`, name errors.
    ///
    /// # References
    /// `link(2)`
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Attr> {
        check_name(newname)?;
        let n = self.node(ino)?;
        if n.kind == FileType::Directory {
            return Err(Error::Permission);
        }
        let p = self.dir_node(newparent)?;
        let key = self.key(newname);
        let mut d = p.dir.as_ref().ok_or(Error::NotDir)?.write();
        if d.dead {
            return Err(Error::NotFound);
        }
        if d.by_key.contains_key(&*key) {
            return Err(Error::Exists);
        }
        {
            let mut l = n.life.lock();
            if l.gone || (l.nlink == 0 && l.opens == 0) {
                return Err(Error::NotFound);
            }
            if l.nlink >= LINK_MAX {
                return Err(Error::TooManyLinks);
            }
            let nl = l.nlink + 1;
            n.set_nlink(&mut l, nl);
            l.lookups += 1;
        }
        d.insert(key.into_owned().into_boxed_slice(), newname.into(), ino, n.kind);
        p.sync_entries(&d);
        self.touch(&p, true);
        drop(d);
        self.touch(&n, false);
        Ok(self.attr_of(&n))
    }

    /// Removes the name `parent/name` of a non-directory.
    ///
    /// # Errors
    /// `NotFound`, `NotDir` (parent), `IsDir`, name errors.
    ///
    /// # References
    /// `unlink(2)`
    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Result<()> {
        check_name(name)?;
        let p = self.dir_node(parent)?;
        let key = self.key(name);
        let mut d = p.dir.as_ref().ok_or(Error::NotDir)?.write();
        let e = d.by_key.get(&*key).ok_or(Error::NotFound)?;
        if e.kind == FileType::Directory {
            return Err(Error::IsDir);
        }
        let child = self.node(e.ino)?;
        d.remove(&key);
        p.sync_entries(&d);
        self.touch(&p, true);
        let freed = self.adjust_life(&child, |n, l| {
            let nl = l.nlink.saturating_sub(1);
            n.set_nlink(l, nl);
        });
        if !freed {
            // Another link or an open handle still shows the status change.
            self.touch(&child, false);
        }
        drop(d);
        Ok(())
    }

    /// Removes the empty directory `parent/name`.
    ///
    /// # Errors
    /// `NotFound`, `NotDir`, `NotEmpty`, name errors.
    ///
    /// # References
    /// `rmdir(2)`
    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<()> {
        check_name(name)?;
        let p = self.dir_node(parent)?;
        let key = self.key(name);
        let mut d = p.dir.as_ref().ok_or(Error::NotDir)?.write();
        let e = d.by_key.get(&*key).ok_or(Error::NotFound)?;
        if e.kind != FileType::Directory {
            return Err(Error::NotDir);
        }
        let child = self.node(e.ino)?;
        {
            let mut cd = child.dir.as_ref().ok_or(Error::NotDir)?.write();
            if !cd.by_key.is_empty() {
                return Err(Error::NotEmpty);
            }
            cd.dead = true;
        }
        d.remove(&key);
        p.sync_entries(&d);
        self.unlink_dir_locked(&p, &child);
        drop(d);
        Ok(())
    }

    /// Drops the links of removed directory `child` of `p` (both locked by the caller).
    fn unlink_dir_locked(&self, p: &Node, child: &Node) {
        {
            let mut pl = p.life.lock();
            let nl = pl.nlink.saturating_sub(1);
            p.set_nlink(&mut pl, nl);
        }
        self.touch(p, true);
        self.touch(child, false);
        self.adjust_life(child, |n, l| n.set_nlink(l, 0));
    }

    /// Whether directory `anc` is `ino` or one of its ancestors.
    /// Ancestry is stable while the caller holds `rename_lock`.
    fn is_ancestor(&self, anc: Ino, mut ino: Ino) -> bool {
        loop {
            if ino == anc {
                return true;
            }
            if ino == ROOT {
                return false;
            }
            match self.nodes.get(&ino) {
                Some(n) => ino = n.parent.load(Ordering::Acquire),
                None => return false,
            }
        }
    }

    /// Renames `parent/name` to `newparent/newname`, atomically replacing an
    /// existing target (`flags`: [`rename_flags`]).
    ///
    /// A concurrent lookup of the target sees the old or the new node, never
    /// neither.
    ///
    /// # Errors
    /// `NotFound`; `Exists` (`NOREPLACE`); `NotDir`/`IsDir` (type mismatch);
    /// `NotEmpty` (a non-empty directory target); `WouldLoop` (a directory
    /// moved below itself); `InvalidArgument` (bad flags); `Busy` (the root).
    ///
    /// # References
    /// `rename(2)`, `renameat2(2)`
    pub fn rename(&self, parent: Ino, name: &[u8], newparent: Ino, newname: &[u8], flags: u32) -> Result<()> {
        use rename_flags::{EXCHANGE, NOREPLACE};
        if flags & !(EXCHANGE | NOREPLACE) != 0 || flags == EXCHANGE | NOREPLACE {
            return Err(Error::InvalidArgument);
        }
        check_name(name)?;
        check_name(newname)?;
        let p1 = self.dir_node(parent)?;
        let p2 = self.dir_node(newparent)?;
        let k1 = self.key(name);
        let k2 = self.key(newname);
        let cross = parent != newparent;
        let _rl = cross.then(|| self.rename_lock.lock());
        // Lock the parents: ancestor first, else lower inode first.
        let (g1, g2): (RwLockWriteGuard<'_, Dir>, Option<RwLockWriteGuard<'_, Dir>>);
        let d1 = p1.dir.as_ref().ok_or(Error::NotDir)?;
        let d2 = p2.dir.as_ref().ok_or(Error::NotDir)?;
        if !cross {
            g1 = d1.write();
            g2 = None;
        } else {
            let p1_first = if self.is_ancestor(parent, newparent) {
                true
            } else if self.is_ancestor(newparent, parent) {
                false
            } else {
                parent < newparent
            };
            if p1_first {
                g1 = d1.write();
                g2 = Some(d2.write());
            } else {
                let b = d2.write();
                g1 = d1.write();
                g2 = Some(b);
            }
        }
        let (mut g1, mut g2) = (g1, g2);
        if g1.dead || g2.as_ref().is_some_and(|g| g.dead) {
            return Err(Error::NotFound);
        }
        let src = g1.by_key.get(&*k1).cloned().ok_or(Error::NotFound)?;
        let dst = match &g2 {
            Some(g) => g.by_key.get(&*k2).cloned(),
            None => g1.by_key.get(&*k2).cloned(),
        };
        if src.ino == ROOT {
            return Err(Error::Busy);
        }
        let src_dir = src.kind == FileType::Directory;
        if src_dir && cross && self.is_ancestor(src.ino, newparent) {
            return Err(Error::WouldLoop);
        }
        if let Some(t) = &dst {
            if flags & NOREPLACE != 0 {
                return Err(Error::Exists);
            }
            if t.ino == src.ino {
                // Same inode (the same entry or two hard links): nothing to
                // do, except a case-only rename on a case-insensitive mount.
                if !cross && k1 == k2 && name != newname {
                    if let Some(e) = g1.by_key.get_mut(&*k1) {
                        e.name = newname.into();
                    }
                }
                return Ok(());
            }
            if cross && t.kind == FileType::Directory && self.is_ancestor(t.ino, parent) {
                // The target contains the source (it is, or is above, the
                // source's parent): it is not empty. Checked before locking it,
                // since the caller may already hold its lock as a parent.
                return Err(if flags & EXCHANGE != 0 { Error::WouldLoop } else { Error::NotEmpty });
            }
        }
        let src_node = self.node(src.ino)?;
        if flags & EXCHANGE != 0 {
            let dst = dst.ok_or(Error::NotFound)?;
            let dst_dir = dst.kind == FileType::Directory;
            let dst_node = self.node(dst.ino)?;
            // Swap which inode each name points to, keeping names and cookies.
            let set = |g: &mut Dir, key: &[u8], e: &crate::node::Ent| {
                if let Some(slot) = g.by_key.get_mut(key) {
                    slot.ino = e.ino;
                    slot.kind = e.kind;
                }
            };
            match &mut g2 {
                Some(b) => {
                    set(&mut g1, &k1, &dst);
                    set(b, &k2, &src);
                }
                None => {
                    set(&mut g1, &k1, &dst);
                    set(&mut g1, &k2, &src);
                }
            }
            if cross && src_dir != dst_dir {
                let (gain, lose) = if src_dir { (&p2, &p1) } else { (&p1, &p2) };
                let mut l = gain.life.lock();
                let nl = l.nlink + 1;
                gain.set_nlink(&mut l, nl);
                drop(l);
                let mut l = lose.life.lock();
                let nl = l.nlink.saturating_sub(1);
                lose.set_nlink(&mut l, nl);
            }
            if src_dir {
                src_node.parent.store(newparent, Ordering::Release);
            }
            if dst_dir {
                dst_node.parent.store(parent, Ordering::Release);
            }
            self.touch(&p1, true);
            if cross {
                self.touch(&p2, true);
            }
            self.touch(&src_node, false);
            self.touch(&dst_node, false);
            return Ok(());
        }
        let mut victim = None;
        if let Some(t) = &dst {
            let t_dir = t.kind == FileType::Directory;
            match (src_dir, t_dir) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                _ => {}
            }
            let tn = self.node(t.ino)?;
            if t_dir {
                // `tn` is a child of newparent (locked above): lock it after.
                let mut td = tn.dir.as_ref().ok_or(Error::NotDir)?.write();
                if !td.by_key.is_empty() {
                    return Err(Error::NotEmpty);
                }
                td.dead = true;
            }
            victim = Some(tn);
        }
        // Commit: nothing below fails.
        let moved = g1.remove(&k1);
        let target_dir: &mut Dir = match &mut g2 {
            Some(b) => b,
            None => &mut g1,
        };
        if dst.is_some() {
            target_dir.remove(&k2);
        }
        if let Some(e) = moved {
            target_dir.insert(k2.into_owned().into_boxed_slice(), newname.into(), e.ino, e.kind);
        }
        p1.sync_entries(&g1);
        if let Some(b) = &g2 {
            p2.sync_entries(b);
        }
        if let Some(tn) = &victim {
            if tn.kind == FileType::Directory {
                self.unlink_dir_locked(&p2, tn);
            } else {
                self.touch(tn, false);
                self.adjust_life(tn, |n, l| {
                    let nl = l.nlink.saturating_sub(1);
                    n.set_nlink(l, nl);
                });
            }
        }
        if src_dir && cross {
            src_node.parent.store(newparent, Ordering::Release);
            for (p, up) in [(&p1, false), (&p2, true)] {
                let mut l = p.life.lock();
                let nl = if up { l.nlink + 1 } else { l.nlink.saturating_sub(1) };
                p.set_nlink(&mut l, nl);
            }
        }
        self.touch(&p1, true);
        if cross {
            self.touch(&p2, true);
        }
        self.touch(&src_node, false);
        drop(g2);
        drop(g1);
        Ok(())
    }

    // ---------------------------------------------------------------- dirs

    /// Lists directory `ino` from offset `from` (0: the start), calling `f`
    /// for each entry until it returns `false`. Offsets stay valid while other
    /// threads create and delete entries: an entry present for the whole
    /// listing is reported exactly once.
    ///
    /// **Locking:** holds the directory's read lock while calling `f`; `f`
    /// must not call back into the engine for this directory.
    ///
    /// # Errors
    /// `NotFound`, `NotDir`.
    pub fn readdir(&self, ino: Ino, from: u64, mut f: impl FnMut(DirEntry<'_>) -> bool) -> Result<()> {
        let n = self.dir_node(ino)?;
        let parent = n.parent.load(Ordering::Acquire);
        let d = n.dir.as_ref().ok_or(Error::NotDir)?.read();
        if from < 1 && !f(DirEntry { ino, kind: FileType::Directory, name: b".", next: 1 }) {
            return Ok(());
        }
        if from < 2 && !f(DirEntry { ino: parent, kind: FileType::Directory, name: b"..", next: 2 }) {
            return Ok(());
        }
        for (cookie, key) in d.order.range(from.max(FIRST_COOKIE)..) {
            if let Some(e) = d.by_key.get(key) {
                if !f(DirEntry { ino: e.ino, kind: e.kind, name: &e.name, next: cookie + 1 }) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Like [`Engine::readdir`] with each entry's attributes; every entry
    /// other than `.` and `..` that `f` accepts takes a lookup reference.
    ///
    /// # Errors
    /// `NotFound`, `NotDir`.
    pub fn readdir_plus(&self, ino: Ino, from: u64, mut f: impl FnMut(DirEntry<'_>, &Attr) -> bool) -> Result<()> {
        let n = self.dir_node(ino)?;
        // `attr_of` takes no directory lock, so calling it for `.`, `..` and
        // children under this directory's read lock keeps the lock order.
        self.readdir(ino, from, |e| {
            let node = if e.name == b"." { Some(Arc::clone(&n)) } else { self.nodes.get(&e.ino) };
            let Some(node) = node else { return true };
            let dots = e.name == b"." || e.name == b"..";
            let attr = if dots { self.attr_of(&node) } else { self.hand_out(&node) };
            if f(e, &attr) {
                true
            } else {
                if !dots {
                    self.adjust_life(&node, |_, l| l.lookups = l.lookups.saturating_sub(1));
                }
                false
            }
        })
    }

    // ---------------------------------------------------------------- files

    /// Opens `ino` (one more open handle). Opening never fails for an existing inode.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn open(&self, ino: Ino) -> Result<Attr> {
        let n = self.node(ino)?;
        n.life.lock().opens += 1;
        Ok(self.attr_of(&n))
    }

    /// Closes one handle of `ino`; an unlinked file is freed on its last close.
    pub fn release(&self, ino: Ino) {
        if let Ok(n) = self.node(ino) {
            self.adjust_life(&n, |_, l| l.opens = l.opens.saturating_sub(1));
        }
    }

    /// Reads up to `buf.len()` bytes at `off`, returning how many were read
    /// (0 at or past the end). Takes no lock and never waits for a writer.
    ///
    /// # Errors
    /// `NotFound`, `IsDir`, `InvalidArgument` (not a regular file).
    ///
    /// # References
    /// `pread(2)`
    pub fn read(&self, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize> {
        let n = self.node(ino)?;
        match n.kind {
            FileType::Regular => {}
            FileType::Directory => return Err(Error::IsDir),
            _ => return Err(Error::InvalidArgument),
        }
        let snap = n.snap.load();
        Ok(snap.data.read(self.cfg.sector_size as u64, off, buf))
    }

    /// Writes `data` at `off`, growing the file if needed; returns `data.len()`.
    ///
    /// # Errors
    /// `NotFound`, `IsDir`, `InvalidArgument`, `FileTooBig`, `NoSpace`. On
    /// error the file is exactly as it was.
    ///
    /// # References
    /// `pwrite(2)`
    pub fn write(&self, ino: Ino, off: u64, data: &[u8]) -> Result<usize> {
        let n = self.node(ino)?;
        n.submit(&self.cx(), &self.logical, Op::Write { off, data: Cow::Borrowed(data) }).map(|w| w as usize)
    }

    /// Appends `data` atomically at the end; returns the offset it was written at.
    ///
    /// # Errors
    /// As [`Engine::write`].
    pub fn append(&self, ino: Ino, data: &[u8]) -> Result<u64> {
        let n = self.node(ino)?;
        n.submit(&self.cx(), &self.logical, Op::Append { data: Cow::Borrowed(data) })
    }

    /// `fallocate(2)`: `mode` 0 (allocate and extend), `KEEP_SIZE`,
    /// `PUNCH_HOLE | KEEP_SIZE`, `ZERO_RANGE` (optionally `| KEEP_SIZE`).
    ///
    /// # Errors
    /// `NotFound`, `IsDir`, `InvalidArgument`, `NotSupported`, `FileTooBig`, `NoSpace`.
    pub fn fallocate(&self, ino: Ino, mode: u32, off: u64, len: u64) -> Result<()> {
        let n = self.node(ino)?;
        n.submit(&self.cx(), &self.logical, Op::Fallocate { mode, off, len }).map(|_| ())
    }

    /// `lseek(2)` with `SEEK_DATA` (`data = true`) or `SEEK_HOLE`.
    ///
    /// # Errors
    /// `NotFound`, `NoSuchOffset` (at or past the end), `InvalidArgument`.
    pub fn seek(&self, ino: Ino, off: u64, data: bool) -> Result<u64> {
        let n = self.node(ino)?;
        if n.kind != FileType::Regular {
            return Err(Error::InvalidArgument);
        }
        n.snap.load().data.seek(self.cfg.sector_size as u64, off, data)
    }

    /// Copies `len` bytes from `ino_in` at `off_in` to `ino_out` at `off_out`;
    /// returns the bytes copied (short at the end of the input).
    ///
    /// # Errors
    /// As [`Engine::read`] and [`Engine::write`]; `InvalidArgument` for
    /// overlapping ranges of one file.
    pub fn copy_file_range(&self, ino_in: Ino, off_in: u64, ino_out: Ino, off_out: u64, len: u64) -> Result<u64> {
        if ino_in == ino_out {
            let (a, b) = (off_in, off_out);
            let end_a = a.checked_add(len).ok_or(Error::Overflow)?;
            let end_b = b.checked_add(len).ok_or(Error::Overflow)?;
            if a < end_b && b < end_a {
                return Err(Error::InvalidArgument);
            }
        }
        let src = self.node(ino_in)?;
        let dst = self.node(ino_out)?;
        for n in [&src, &dst] {
            match n.kind {
                FileType::Regular => {}
                FileType::Directory => return Err(Error::IsDir),
                _ => return Err(Error::InvalidArgument),
            }
        }
        let ss = self.cfg.sector_size as u64;
        let snap = src.snap.load_full();
        let total = len.min(snap.data.len().saturating_sub(off_in));
        let mut buf = vec![0u8; total.min(1 << 20) as usize];
        let mut done = 0u64;
        while done < total {
            let n = (total - done).min(buf.len() as u64) as usize;
            let got = snap.data.read(ss, off_in + done, &mut buf[..n]);
            if got == 0 {
                break;
            }
            let dst_off = off_out.checked_add(done).ok_or(Error::FileTooBig)?;
            match dst.submit(&self.cx(), &self.logical, Op::Write { off: dst_off, data: Cow::Borrowed(&buf[..got]) }) {
                Ok(_) => done += got as u64,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(done)
    }

    // ---------------------------------------------------------------- xattrs

    /// Sets extended attribute `name` (`flags`: [`xattr_flags`]).
    ///
    /// # Errors
    /// `NotFound`, `Exists` (`CREATE`), `NoData` (`REPLACE`), `Range` (empty
    /// or over-long name), `TooBig` (value over 64 KiB), `NotSupported`
    /// (namespace other than `user.`, `trusted.`, `security.`), `InvalidArgument`.
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        let n = self.node(ino)?;
        let op = Op::SetXattr { name: Cow::Borrowed(name), value: Cow::Borrowed(value), flags };
        n.submit(&self.cx(), &self.logical, op).map(|_| ())
    }

    /// The value of extended attribute `name`.
    ///
    /// # Errors
    /// `NotFound`, `NoData`, name errors as [`Engine::setxattr`].
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        crate::node::check_xattr_name(name)?;
        let n = self.node(ino)?;
        let s = n.snap.load();
        s.xattrs.as_ref().and_then(|x| x.get(name)).map(|v| v.to_vec()).ok_or(Error::NoData)
    }

    /// The names of all extended attributes, each followed by a NUL.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let n = self.node(ino)?;
        let s = n.snap.load();
        let mut out = Vec::new();
        if let Some(x) = &s.xattrs {
            for k in x.keys() {
                out.extend_from_slice(k);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// Removes extended attribute `name`.
    ///
    /// # Errors
    /// `NotFound`, `NoData`, name errors.
    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        let n = self.node(ino)?;
        n.submit(&self.cx(), &self.logical, Op::RemoveXattr { name: Cow::Borrowed(name) }).map(|_| ())
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
    pub fn statfs(&self) -> StatFs {
        let bsize = 4096u64;
        let limit = self.pool.limit();
        let used = self.pool.used().min(limit);
        let inodes = self.inodes.load(Ordering::Acquire);
        let free = (limit - used) / bsize;
        StatFs {
            bsize: bsize as u32,
            blocks: limit / bsize,
            bfree: free,
            bavail: free,
            files: self.cfg.max_inodes,
            ffree: self.cfg.max_inodes.saturating_sub(inodes),
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
        }
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
}
