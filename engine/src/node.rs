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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::acl::{Acl, AclKind};
use crate::actor::{Combiner, Request};
use crate::data::{Ctx, FileData};
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::sync::{Arc, ArcSwap, Mutex, RwLock};
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

/// One published version of a node.
#[derive(Debug, Clone)]
pub(crate) struct Snap {
    pub(crate) meta: Meta,
    pub(crate) data: FileData,
    pub(crate) xattrs: Option<Arc<Xattrs>>,
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
            snap: ArcSwap::new(Arc::new(Snap { meta, data: FileData::default(), xattrs })),
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
        let mut work = Snap::clone(&cur);
        drop(cur);
        let before = work.data.len();
        let mut changed = false;
        for op in ops {
            let r = self.apply_one(cx, &mut work, op);
            changed |= r.is_ok();
            out(r);
        }
        crate::fault::fail_point!("node.publish");
        if changed {
            let after = work.data.len();
            if after > before {
                logical.fetch_add(after - before, Ordering::Relaxed);
            } else {
                logical.fetch_sub(before - after, Ordering::Relaxed);
            }
            self.snap.store(Arc::new(work));
        }
    }

    fn apply_one(&self, cx: &Ctx<'_>, w: &mut Snap, op: Op<'_>) -> Result<u64> {
        let now = Time::now();
        match op {
            Op::Write { off, data } => {
                self.regular()?;
                w.data.write(cx, off, &data)?;
                if !data.is_empty() {
                    w.meta.mtime = now;
                    w.meta.ctime = now;
                }
                Ok(data.len() as u64)
            }
            Op::Append { data } => {
                self.regular()?;
                let off = w.data.len();
                w.data.write(cx, off, &data)?;
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
                    w.data.set_len(cx, size)?;
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
                w.data.fallocate(cx, mode, off, len)?;
                w.meta.mtime = now;
                w.meta.ctime = now;
                Ok(0)
            }
            Op::Zero { off, end } => {
                self.regular()?;
                w.data.zero(cx, off, end)?;
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
