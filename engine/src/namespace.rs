//! Namespace operations: lookup, create, link, unlink, rename, readdir.
//!
//! # Namespace
//! Inodes live in a sharded map (`ShardMap<Arc<Node>>`, a dashmap of the
//! nodes by their inode numbers); no method holds a map guard across any
//! other call (values are cloned out).
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
//! link count, lookup references and open count are all zero is freed. A
//! whiteout made by `rename` starts with none.

use crate::budget::{entry_cost, XValue};
use crate::dir::{Dir, FIRST_COOKIE};
use crate::node::{Meta, Node, Special};
use crate::sync::atomic::Ordering;
use crate::sync::{Arc, RwLockWriteGuard};
use crate::types::*;
use crate::{Engine, Error, Result};

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
    uid: u32,
    gid: u32,
    /// A symlink's target or a device's number.
    special: Special,
    /// Bits to clear from `perm` unless a default ACL is inherited.
    umask: u32,
}

impl Engine {
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
            let up = self.node(p.parent())?;
            return Ok(self.hand_out(&up));
        }
        check_name(name)?;
        let key = self.key(name);
        let dir = p.dir().ok_or(Error::NotDir)?.read();
        let ino = dir.get(&key).ok_or(Error::NotFound)?.ino;
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

    // ---------------------------------------------------------------- create

    /// A new node for directory `p`, not yet in the inode map or any
    /// directory (the caller reserved its inode): the parent's default ACL
    /// or the umask applied, the set-group-ID directory rule, link count
    /// `nlink`, no lookup reference.
    ///
    /// # Errors
    /// `NoSpace`: no metadata left for the inherited ACLs.
    fn new_node(&self, p: &Node, new: New, nlink: u32) -> Result<Arc<Node>> {
        let New { kind, perm, uid, gid, special, umask } = new;
        let psnap = p.load_full();
        let pmeta = &psnap.meta;
        let mut gid = gid;
        let mut perm = perm & 0o7777;
        // The parent's default ACL or the umask (Linux `posix_acl_create`),
        // decided from the same snapshot of the parent and set on the node
        // before anyone can see it. Symlinks take neither.
        let mut xattrs = None;
        if kind != FileType::Symlink {
            let default =
                if self.cfg.posix_acl { psnap.xattrs.as_ref().and_then(|x| x.get(crate::acl::DEFAULT)) } else { None };
            let inh = crate::acl::inherit(default.map(|v| &**v), perm, umask, kind == FileType::Directory);
            perm = inh.perm;
            let mut x = crate::node::Xattrs::new_sync();
            for (name, v) in [(crate::acl::ACCESS, inh.access), (crate::acl::DEFAULT, inh.default)] {
                if let Some(v) = v {
                    x.insert_mut(name.into(), XValue::new(&self.meta, name.len(), v.into_boxed_slice())?);
                }
            }
            xattrs = (!x.is_empty()).then(|| Arc::new(x));
        }
        if pmeta.perm & 0o2000 != 0 {
            // Set-group-ID directory: new entries take its group, and new
            // directories inherit the bit.
            gid = pmeta.gid;
            if kind == FileType::Directory {
                perm |= 0o2000;
            }
        }
        let mut meta = Meta::new(perm, uid, gid);
        meta.flags = pmeta.flags & inode_flags::INHERITED;
        let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Node::new(ino, kind, meta, nlink, p.ino, special, xattrs)))
    }

    fn make(&self, parent: Ino, name: &[u8], new: New) -> Result<Attr> {
        let _gate = self.gate.enter();
        check_name(name)?;
        let p = self.dir_node(parent)?;
        let key = self.key(name);
        let pdir = p.dir().ok_or(Error::NotDir)?;
        let mut d = pdir.write();
        // Injected bug when off (loom-tests/tests/ns_races.rs): create inside a removed directory.
        #[cfg(not(loom_bug = "ns_create_in_dead_dir"))]
        if d.dead {
            return Err(Error::NotFound);
        }
        if d.contains(&key) {
            return Err(Error::Exists);
        }
        may_add(&p)?;
        let kind = new.kind;
        let inode = (new.special.boxed(kind), new.special.target_len());
        let reserved = self.reserve(Some(inode), entry_cost(name.len()))?;
        let node = self.new_node(&p, new, if kind == FileType::Directory { 2 } else { 1 })?;
        reserved.commit();
        let ino = node.ino;
        node.life.lock().lookups = 1;
        self.nodes.insert(Arc::clone(&node));
        d.insert(&key, name, ino, kind);
        p.sync_entries(&d);
        if kind == FileType::Directory {
            let mut pl = p.life.lock();
            let nl = p.links(&pl) + 1;
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
    /// `InvalidName`, `NoInodes`, `NoSpace` (the metadata limit:
    /// [`crate::budget`]). Nothing changed on error.
    ///
    /// # References
    /// `open(2)` with `O_CREAT | O_EXCL`
    pub fn create(&self, parent: Ino, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.create_umask(parent, name, mode, 0, uid, gid)
    }

    /// [`Engine::create`] with the caller's `umask`, applied as Linux does
    /// on a file system with POSIX ACLs: when `Config::posix_acl` is on and
    /// `parent` has a default ACL, the new file inherits it and the umask is
    /// ignored; otherwise `mode & !umask`.
    ///
    /// # Errors
    /// As [`Engine::create`].
    pub fn create_umask(&self, parent: Ino, name: &[u8], mode: u32, umask: u32, uid: u32, gid: u32) -> Result<Attr> {
        let new = New { kind: FileType::Regular, perm: mode, uid, gid, special: Special::None, umask };
        self.make(parent, name, new)
    }

    /// Creates a directory.
    ///
    /// # Errors
    /// As [`Engine::create`], and `TooManyLinks` never (no limit on subdirectories).
    ///
    /// # References
    /// `mkdir(2)`
    pub fn mkdir(&self, parent: Ino, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.mkdir_umask(parent, name, mode, 0, uid, gid)
    }

    /// [`Engine::mkdir`] with the caller's `umask`, as [`Engine::create_umask`];
    /// a directory that inherits a default ACL also keeps it as its own.
    ///
    /// # Errors
    /// As [`Engine::mkdir`].
    pub fn mkdir_umask(&self, parent: Ino, name: &[u8], mode: u32, umask: u32, uid: u32, gid: u32) -> Result<Attr> {
        let new = New { kind: FileType::Directory, perm: mode, uid, gid, special: Special::None, umask };
        self.make(parent, name, new)
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
        self.mknod_umask(parent, name, mode, 0, rdev, Cred { uid, gid, groups: Vec::new() })
    }

    /// [`Engine::mknod`] with the caller's `umask`, as [`Engine::create_umask`];
    /// the owner is `owner.uid`/`owner.gid` (`groups` unused).
    ///
    /// # Errors
    /// As [`Engine::mknod`].
    pub fn mknod_umask(&self, parent: Ino, name: &[u8], mode: u32, umask: u32, rdev: u32, owner: Cred) -> Result<Attr> {
        let Cred { uid, gid, .. } = owner;
        let kind = FileType::from_mode(mode).ok_or(Error::InvalidArgument)?;
        if matches!(kind, FileType::Directory | FileType::Symlink) {
            return Err(Error::InvalidArgument);
        }
        let rdev = if matches!(kind, FileType::CharDevice | FileType::BlockDevice) { rdev } else { 0 };
        self.make(parent, name, New { kind, perm: mode, uid, gid, special: Special::Device(rdev), umask })
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
            New { kind: FileType::Symlink, perm: 0o777, uid, gid, special: Special::Target(target.into()), umask: 0 },
        )
    }

    /// The target of a symbolic link.
    ///
    /// # Errors
    /// `NotFound`, `InvalidArgument` (not a symlink).
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let n = self.node(ino)?;
        let target = n.target().map(|t| t.to_vec()).ok_or(Error::InvalidArgument)?;
        self.accessed(&n);
        Ok(target)
    }

    /// An anonymous regular file in `parent`'s file system (`O_TMPFILE`):
    /// link count 0, opened once and referenced once. `link` may give it a
    /// name. It takes `parent`'s group if that is a set-group-ID directory,
    /// as [`Engine::create`].
    ///
    /// # Errors
    /// `NotFound`, `NotDir`, `NoInodes`, `NoSpace` (metadata).
    pub fn tmpfile(&self, parent: Ino, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.tmpfile_umask(parent, mode, 0, uid, gid)
    }

    /// [`Engine::tmpfile`] with the caller's `umask`, as
    /// [`Engine::create_umask`]: `parent`'s default ACL, if it has one, or
    /// the umask (Linux's `O_TMPFILE` goes through the same
    /// `posix_acl_create` as `open(O_CREAT)`).
    ///
    /// # Errors
    /// As [`Engine::tmpfile`].
    pub fn tmpfile_umask(&self, parent: Ino, mode: u32, umask: u32, uid: u32, gid: u32) -> Result<Attr> {
        let p = self.dir_node(parent)?;
        may_add(&p)?;
        let reserved = self.reserve(Some((false, 0)), 0)?;
        let new = New { kind: FileType::Regular, perm: mode, uid, gid, special: Special::None, umask };
        let node = self.new_node(&p, new, 0)?;
        reserved.commit();
        {
            let mut l = node.life.lock();
            l.lookups = 1;
            l.opens = 1;
        }
        self.nodes.insert(Arc::clone(&node));
        Ok(self.attr_of(&node))
    }

    /// Adds a hard link `newparent/newname` to `ino` and takes a lookup reference.
    ///
    /// # Errors
    /// `Permission` (directories), `Exists`, `NotFound`, `NotDir`,
    /// `TooManyLinks`, `NoInodes` (each name beyond a file's first counts
    /// as an inode, as on tmpfs), `NoSpace` (metadata), name errors.
    ///
    /// # References
    /// `link(2)`
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Attr> {
        let _gate = self.gate.enter();
        check_name(newname)?;
        let n = self.node(ino)?;
        if n.kind == FileType::Directory {
            return Err(Error::Permission);
        }
        let p = self.dir_node(newparent)?;
        let key = self.key(newname);
        let mut d = p.dir().ok_or(Error::NotDir)?.write();
        if d.dead {
            return Err(Error::NotFound);
        }
        if d.contains(&key) {
            return Err(Error::Exists);
        }
        may_add(&p)?;
        if n.guards() != 0 {
            return Err(Error::Permission);
        }
        let mut reserved = self.reserve(None, entry_cost(newname.len()))?;
        {
            let mut l = n.life.lock();
            if n.gone(&l) || (n.links(&l) == 0 && l.opens == 0) {
                return Err(Error::NotFound);
            }
            if n.links(&l) >= LINK_MAX {
                return Err(Error::TooManyLinks);
            }
            if n.links(&l) > 0 {
                // A name beyond the file's first is an inode (an
                // `O_TMPFILE` file's first name is not: it has one).
                reserved.add_inode()?;
            }
            let nl = n.links(&l) + 1;
            n.set_nlink(&mut l, nl);
            l.lookups += 1;
        }
        reserved.commit();
        d.insert(&key, newname, ino, n.kind);
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
        let _gate = self.gate.enter();
        check_name(name)?;
        let p = self.dir_node(parent)?;
        let key = self.key(name);
        let mut d = p.dir().ok_or(Error::NotDir)?.write();
        let e = d.get(&key).ok_or(Error::NotFound)?;
        let child = self.node(e.ino)?;
        may_remove(&p, &child)?;
        if e.kind == FileType::Directory {
            return Err(Error::IsDir);
        }
        if let Some((_, stored)) = d.remove(&key) {
            self.release_entry(stored.len());
        }
        p.sync_entries(&d);
        self.touch(&p, true);
        if !self.drop_name(&child) {
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
        let _gate = self.gate.enter();
        check_name(name)?;
        let p = self.dir_node(parent)?;
        let key = self.key(name);
        let mut d = p.dir().ok_or(Error::NotDir)?.write();
        let e = d.get(&key).ok_or(Error::NotFound)?;
        let child = self.node(e.ino)?;
        may_remove(&p, &child)?;
        if e.kind != FileType::Directory {
            return Err(Error::NotDir);
        }
        {
            let mut cd = child.dir().ok_or(Error::NotDir)?.write();
            if !cd.is_empty() {
                return Err(Error::NotEmpty);
            }
            cd.dead = true;
        }
        if let Some((_, stored)) = d.remove(&key) {
            self.release_entry(stored.len());
        }
        p.sync_entries(&d);
        self.unlink_dir_locked(&p, &child);
        drop(d);
        Ok(())
    }

    /// Drops the links of removed directory `child` of `p` (both locked by the caller).
    fn unlink_dir_locked(&self, p: &Node, child: &Node) {
        {
            let mut pl = p.life.lock();
            let nl = p.links(&pl).saturating_sub(1);
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
            // No clone of the node: two atomic operations fewer a level.
            match self.nodes.with(&ino, |n| n.parent()) {
                Some(p) => ino = p,
                None => return false,
            }
        }
    }

    /// Renames `parent/name` to `newparent/newname`, atomically replacing an
    /// existing target (`flags`: [`rename_flags`]).
    ///
    /// A concurrent lookup of the target sees the old or the new node, never
    /// neither. With [`rename_flags::WHITEOUT`] the whiteout is owned by
    /// 0:0 (root; [`Engine::rename_as`] names the owner).
    ///
    /// # Errors
    /// `NotFound`; `Exists` (`NOREPLACE`); `NotDir`/`IsDir` (type mismatch);
    /// `NotEmpty` (a non-empty directory target); `WouldLoop` (a directory
    /// moved below itself); `InvalidArgument` (bad flags); `Busy` (the root);
    /// `NoInodes` (`WHITEOUT` with no inode left); `NoSpace` (the metadata
    /// limit: a longer name, or a whiteout; a rename to a name no longer
    /// than the old one never fails so). Nothing changed on error.
    ///
    /// # References
    /// `rename(2)`, `renameat2(2)`
    pub fn rename(&self, parent: Ino, name: &[u8], newparent: Ino, newname: &[u8], flags: u32) -> Result<()> {
        self.rename_as(parent, name, newparent, newname, flags, &Cred::default())
    }

    /// [`Engine::rename`] on behalf of `owner` (`groups` unused), who owns
    /// the whiteout that [`rename_flags::WHITEOUT`] leaves.
    ///
    /// **Whiteout.** With `WHITEOUT` (overlayfs renaming in its upper
    /// layer), the source name does not go away: in the same step it names
    /// a new whiteout, a character device 0/0 with mode 0 owned by `owner`
    /// (the group of a set-group-ID parent, and its default ACL, apply as
    /// for `mknod`), link count 1 and no lookup reference, as Linux's
    /// `vfs_rename` on tmpfs leaves it. Source removal, whiteout insertion
    /// and target replacement happen under the write locks of both
    /// parents, so no lookup or `readdir` ever sees the source name missing,
    /// or the source and the target naming the same inode. The whiteout's
    /// inode is reserved before anything changes: with none left the call
    /// fails with `NoInodes` (or `NoSpace`) and changes nothing. A directory being renamed
    /// leaves a whiteout too. `WHITEOUT` may be combined with `NOREPLACE`,
    /// not with `EXCHANGE` (`InvalidArgument`, as Linux). Renaming a name
    /// onto itself (or onto another link of the same inode) changes
    /// nothing and leaves no whiteout, as `vfs_rename` does.
    ///
    /// # Errors
    /// As [`Engine::rename`].
    ///
    /// # References
    /// `renameat2(2)` (`RENAME_WHITEOUT`), Linux `fs/namei.c` `vfs_rename`,
    /// `mm/shmem.c` `shmem_whiteout`
    pub fn rename_as(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: u32,
        owner: &Cred,
    ) -> Result<()> {
        let _gate = self.gate.enter();
        use rename_flags::{EXCHANGE, NOREPLACE, WHITEOUT};
        if flags & !(EXCHANGE | NOREPLACE | WHITEOUT) != 0
            || (flags & EXCHANGE != 0 && flags & (NOREPLACE | WHITEOUT) != 0)
        {
            return Err(Error::InvalidArgument);
        }
        let whiteout = flags & WHITEOUT != 0;
        check_name(name)?;
        check_name(newname)?;
        let p1 = self.dir_node(parent)?;
        let p2 = self.dir_node(newparent)?;
        let k1 = self.key(name);
        let k2 = self.key(newname);
        let cross = parent != newparent;
        let _rl = cross.then(|| self.rename_lock.lock());
        // Lock the parents: an ancestor before its descendant, else the
        // lower inode first. Every holder of two directory locks keeps this
        // order: `rmdir` and a rename over a directory in one parent hold a
        // parent and wait for its child, and such waits chain down a tree,
        // so a rename holding a directory while it waits for any ancestor
        // of it could close a cycle (a review found one, three threads deep,
        // in a version that put only a direct parent first; loom:
        // `ns_races::rename_to_a_grandparent_vs_chained_rmdirs`). Ancestry
        // is walked through `parent` pointers, stable under the rename lock.
        let (g1, g2): (RwLockWriteGuard<'_, Dir>, Option<RwLockWriteGuard<'_, Dir>>);
        let d1 = p1.dir().ok_or(Error::NotDir)?;
        let d2 = p2.dir().ok_or(Error::NotDir)?;
        if !cross {
            g1 = d1.write();
            g2 = None;
        } else {
            // Injected bug (loom-tests/tests/ns_races.rs): inode order alone.
            #[cfg(loom_bug = "ns_rename_lock_order")]
            let p1_first = parent < newparent;
            #[cfg(not(loom_bug = "ns_rename_lock_order"))]
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
        let src = g1.get(&k1).ok_or(Error::NotFound)?;
        let dst = match &g2 {
            Some(g) => g.get(&k2),
            None => g1.get(&k2),
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
                    let old = g1.name_len(&k1).unwrap_or(newname.len());
                    self.reserve(None, newname.len().saturating_sub(old) as u64)?.commit();
                    g1.set_name(&k1, newname);
                    self.release_meta(old.saturating_sub(newname.len()) as u64);
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
        may_remove(&p1, &src_node)?;
        match &dst {
            // The target's name is replaced (or exchanged): removed.
            Some(t) => may_remove(&p2, &*self.node(t.ino)?)?,
            None => may_add(&p2)?,
        }
        if flags & EXCHANGE != 0 {
            let dst = dst.ok_or(Error::NotFound)?;
            let dst_dir = dst.kind == FileType::Directory;
            let dst_node = self.node(dst.ino)?;
            // Swap which inode each name points to, keeping names and cookies.
            let set = |g: &mut Dir, key: &[u8], e: &crate::dir::Ent| g.set_target(key, e.ino, e.kind);
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
                let nl = gain.links(&l) + 1;
                gain.set_nlink(&mut l, nl);
                drop(l);
                let mut l = lose.life.lock();
                let nl = lose.links(&l).saturating_sub(1);
                lose.set_nlink(&mut l, nl);
            }
            if src_dir {
                src_node.set_parent(newparent);
            }
            if dst_dir {
                dst_node.set_parent(parent);
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
        // The metadata a rename adds (the moved entry grows by the
        // difference of its names; a whiteout is an inode and an entry
        // under the source's name as stored) is reserved once the rename
        // can no longer fail otherwise (as tmpfs: `ENOTEMPTY` before
        // `ENOSPC`), and before anything changes.
        let src_len = g1.name_len(&k1).unwrap_or(name.len());
        let wkind = whiteout.then_some((false, 0)); // a 0/0 device: no `Extra`
        let grow = newname.len().saturating_sub(src_len) as u64;
        let shrink = src_len.saturating_sub(newname.len()) as u64;
        let bytes = grow + if whiteout { entry_cost(src_len) } else { 0 };
        let mut reserved = None;
        // The reservation, and the whiteout node (a 0/0 character device,
        // with the directory's default ACL if it has one) made but not yet
        // reachable.
        let prepare = || -> Result<_> {
            let r = self.reserve(wkind, bytes)?;
            let wnode = if whiteout {
                let (uid, gid) = (owner.uid, owner.gid);
                let new = New { kind: FileType::CharDevice, perm: 0, uid, gid, special: Special::None, umask: 0 };
                Some(self.new_node(&p1, new, 1)?)
            } else {
                None
            };
            Ok((r, wnode))
        };
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
                let mut td = tn.dir().ok_or(Error::NotDir)?.write();
                if !td.is_empty() {
                    return Err(Error::NotEmpty);
                }
                reserved = Some(prepare()?);
                td.dead = true;
            }
            victim = Some(tn);
        }
        let (reserved, wnode) = match reserved {
            Some(r) => r,
            None => prepare()?,
        };
        // Commit: nothing below fails.
        reserved.commit();
        let moved = g1.remove(&k1);
        let target_dir: &mut Dir = match &mut g2 {
            Some(b) => b,
            None => &mut g1,
        };
        if dst.is_some() {
            if let Some((_, stored)) = target_dir.remove(&k2) {
                self.release_entry(stored.len());
            }
        }
        let mut src_name = None;
        if let Some((e, stored)) = moved {
            target_dir.insert(&k2, newname, e.ino, e.kind);
            self.release_meta(shrink);
            src_name = Some(stored);
        }
        // The whiteout takes the source's name (as stored) in the source
        // directory, under the same locks: the name is never missing.
        let wout = wnode.map(|n| {
            self.nodes.insert(Arc::clone(&n));
            (k1, src_name.unwrap_or_else(|| name.into()), n.ino)
        });
        // Injected bug when on (loom-tests/tests/ns_races.rs): the whiteout
        // is inserted only after the locks are dropped, so the source name
        // is missing for a moment.
        #[cfg(not(loom_bug = "ns_whiteout_late"))]
        if let Some((key, wname, ino)) = wout {
            g1.insert(&key, &wname, ino, FileType::CharDevice);
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
                self.drop_name(tn);
            }
        }
        if src_dir && cross {
            src_node.set_parent(newparent);
            for (p, up) in [(&p1, false), (&p2, true)] {
                let mut l = p.life.lock();
                let nl = if up { p.links(&l) + 1 } else { p.links(&l).saturating_sub(1) };
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
        #[cfg(loom_bug = "ns_whiteout_late")]
        if let Some((key, wname, ino)) = wout {
            let mut g = d1.write();
            g.insert(&key, &wname, ino, FileType::CharDevice);
            p1.sync_entries(&g);
        }
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
    pub fn readdir(&self, ino: Ino, from: u64, f: impl FnMut(DirEntry<'_>) -> bool) -> Result<()> {
        self.readdir_to(ino, from, u64::MAX, f)
    }

    /// Where a listing of `ino` that starts now ends: an entry whose
    /// `DirEntry::next` is past this was made after (by a create, or a
    /// rename into the directory, which gives the name a new cookie at the
    /// end). A listing that stops there lists each entry once even while
    /// entries are renamed in and out of the directory (without it, a
    /// reader that renamed each entry it read, to another name and back,
    /// met it again at the end, and never finished: xfstests generic/736;
    /// tmpfs and ext4 end such a listing, btrfs does as this since its fix
    /// 9b378f6ad48c). POSIX leaves it open whether entries added during a
    /// listing are returned; `rewinddir` takes a new end.
    ///
    /// # Errors
    /// `NotFound`, `NotDir`.
    pub fn readdir_end(&self, ino: Ino) -> Result<u64> {
        let n = self.dir_node(ino)?;
        let end = n.dir().ok_or(Error::NotDir)?.read().next_cookie();
        Ok(end)
    }

    /// [`Engine::readdir`] up to `end` ([`Engine::readdir_end`]): entries
    /// with `next` past it are left out.
    ///
    /// # Errors
    /// `NotFound`, `NotDir`.
    pub fn readdir_to(&self, ino: Ino, from: u64, end: u64, mut f: impl FnMut(DirEntry<'_>) -> bool) -> Result<()> {
        let n = self.dir_node(ino)?;
        let parent = n.parent();
        let d = n.dir().ok_or(Error::NotDir)?.read();
        if from < 1 && !f(DirEntry { ino, kind: FileType::Directory, name: b".", next: 1 }) {
            return Ok(());
        }
        if from < 2 && !f(DirEntry { ino: parent, kind: FileType::Directory, name: b"..", next: 2 }) {
            return Ok(());
        }
        for (name, e) in d.iter_from(from.max(FIRST_COOKIE)) {
            if e.cookie >= end || !f(DirEntry { ino: e.ino, kind: e.kind, name, next: e.cookie + 1 }) {
                break;
            }
        }
        drop(d);
        self.accessed(&n);
        Ok(())
    }

    /// Like [`Engine::readdir`] with each entry's attributes; every entry
    /// other than `.` and `..` that `f` accepts takes a lookup reference.
    ///
    /// # Errors
    /// `NotFound`, `NotDir`.
    pub fn readdir_plus(&self, ino: Ino, from: u64, f: impl FnMut(DirEntry<'_>, &Attr) -> bool) -> Result<()> {
        self.readdir_plus_to(ino, from, u64::MAX, f)
    }

    /// [`Engine::readdir_plus`] up to `end` ([`Engine::readdir_end`]).
    ///
    /// # Errors
    /// `NotFound`, `NotDir`.
    pub fn readdir_plus_to(
        &self,
        ino: Ino,
        from: u64,
        end: u64,
        mut f: impl FnMut(DirEntry<'_>, &Attr) -> bool,
    ) -> Result<()> {
        let n = self.dir_node(ino)?;
        // `attr_of` takes no directory lock, so calling it for `.`, `..` and
        // children under this directory's read lock keeps the lock order.
        self.readdir_to(ino, from, end, |e| {
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
}

/// chattr `i` on directory `p` forbids new entries (Linux `may_create`:
/// EPERM, to root too; the VFS does not see the flag on a FUSE inode).
fn may_add(p: &Node) -> Result<()> {
    if p.guards() & inode_flags::IMMUTABLE != 0 {
        return Err(Error::Permission);
    }
    Ok(())
}

/// chattr `i` or `a` on directory `p` or on `child` forbids removing (or
/// renaming, or replacing) `child`'s name there (Linux `may_delete`).
fn may_remove(p: &Node, child: &Node) -> Result<()> {
    if p.guards() != 0 || child.guards() != 0 {
        return Err(Error::Permission);
    }
    Ok(())
}
