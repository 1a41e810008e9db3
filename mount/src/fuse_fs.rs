//! The Linux FUSE frontend: a thin adapter from `fuser` requests to
//! [`engine::Engine`] calls.
//!
//! Each handler validates its arguments, makes one engine call (through
//! [`call`], which turns a panic into `EIO` so a worker thread never dies and
//! a reply is never dropped), and ends in one `match` into `reply.*`. No
//! fuser type reaches the engine.
//!
//! # Kernel contract
//! * **Lookup count.** Every reply that hands the kernel an inode (`lookup`,
//!   `create`, `mknod`, `mkdir`, `symlink`, `link`, and each `readdirplus`
//!   entry other than `.`/`..` that fits in the buffer) takes one engine
//!   lookup reference; `forget` (and fuser's default `batch_forget`, which
//!   calls `forget` per inode, since fuser 0.18 does not export `ForgetOne`)
//!   gives them back.
//! * **Open count.** `open` and `create` call [`engine::Engine::open`];
//!   `release` calls [`engine::Engine::release`]. An unlinked file lives
//!   until its last close and last forget.
//! * **Caching** (`--cache`, [`CacheMode`]). The mount is its only writer,
//!   so attributes and entries get long TTLs ([`TTL`]) and negative lookups
//!   are cached too (with a case-insensitive mount several names lead to
//!   one inode, so entries are not cached at all). File data depends on the
//!   mode. `direct` (the default) answers `open`/`create` with
//!   `FOPEN_DIRECT_IO` and negotiates `FUSE_DIRECT_IO_ALLOW_MMAP`: every
//!   `read(2)`/`write(2)` is a request to the daemon, so a write that returns
//!   success is stored and `ENOSPC` comes from the `write(2)` that would pass
//!   the limit, and the kernel holds no copy of file data except the pages of
//!   mmapped files (exec, `ld`, rustc's metadata), which it keeps coherent
//!   with direct reads and writes. `writethrough` keeps the page cache for
//!   reads (`FOPEN_KEEP_CACHE`) and sends every write at once (same write
//!   guarantee, data held twice until the kernel reclaims clean pages).
//!   `writeback` turns on the kernel's writeback cache: the kernel owns size
//!   and mtime while pages are dirty, a write past the limit fails only at
//!   `fsync`/`close`, and a killed daemon loses acknowledged writes.
//! * **Fewer round trips.** `FUSE_ATOMIC_O_TRUNC` (open truncates, no
//!   `SETATTR` after it); `FUSE_NO_OPENDIR_SUPPORT`; readdirplus fills the
//!   dentry cache; `FLUSH`/`FSYNC` end for good with `ENOSYS`. Every request
//!   is counted by opcode ([`Requests`], `sectorfs stats`).
//! * **Dropping privileges.** `FUSE_HANDLE_KILLPRIV_V2` is negotiated, so
//!   the kernel stops asking for `security.capability` before every write
//!   (one round trip per write) and leaves it to us to clear set-user-ID and
//!   set-group-ID bits on chown, on truncate, fallocate and copy_file_range
//!   by an unprivileged caller, and on writes it flags
//!   `FUSE_WRITE_KILL_SUIDGID` (see [`SectorFs::kill_suidgid`]).
//! * **Requests we end for good.** `flush`, `fsync` and `fsyncdir` answer
//!   `ENOSYS`, which the kernel remembers: it still writes dirty pages back
//!   and reports their errors, but no longer asks the daemon. `opendir` does
//!   too when the kernel grants `FUSE_NO_OPENDIR_SUPPORT`.
//! * **Permissions.** The mount uses `default_permissions`: the kernel checks
//!   mode bits, ownership and sticky bits against our attributes, with the
//!   caller's supplementary groups (which fuser does not pass to us).
//! * **POSIX ACLs.** `FUSE_POSIX_ACL` (the kernel checks ACLs, validates
//!   and permission-checks `setfacl`, leaves mode sync and inheritance to
//!   us) and `FUSE_DONT_MASK` (unmasked modes, the `umask` passed to
//!   `create`/`mkdir`/`mknod` for the engine to apply unless a default ACL
//!   is inherited). See `engine::acl`.
//! * **Not available in fuser 0.18:** `O_TMPFILE` (no `FUSE_TMPFILE` opcode:
//!   the kernel answers `EOPNOTSUPP`), `syncfs` (a no-op), interrupts.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use engine::{rename_flags, xattr_flags, Attr, Cred, Engine, Error, FileType, SetAttr, SetTime, Time};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use crate::requests::{Op, Requests};
use crate::stats::{Report, STATS_XATTR};
use crate::telemetry::Telemetry;
use crate::CacheMode;

/// Attribute and entry lifetime in the kernel's caches. Every change goes
/// through this mount, and the kernel invalidates what each of its own
/// requests changes, so a day is as good as forever.
pub(crate) const TTL: Duration = Duration::from_secs(24 * 3600);

/// Largest write request (the kernel caps requests at 1 MiB anyway).
pub(crate) const MAX_WRITE: u32 = 1 << 20;

thread_local! {
    /// A FUSE worker's read buffer (at most one request's size: 1 MiB).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The FUSE file system: an engine and the caching policy.
pub(crate) struct SectorFs {
    engine: Arc<Engine>,
    entry_ttl: Duration,
    attr_ttl: Duration,
    cache_negative: bool,
    pid: u32,
    /// The kernel agreed to FUSE_NO_OPENDIR_SUPPORT.
    no_opendir: bool,
    /// The data path's caching mode (`--cache`).
    cache: CacheMode,
    /// What `open` and `create` answer for a regular file (from `cache`).
    fopen: FopenFlags,
    /// Requests served, by opcode (`stats`).
    req: Requests,
    /// Usage over time (`stats`): the sampler's history.
    telemetry: Arc<Telemetry>,
}

impl SectorFs {
    /// A frontend for `engine` (whose usage `telemetry` samples). A
    /// case-insensitive engine turns off entry caching.
    pub(crate) fn new(engine: Arc<Engine>, cache: CacheMode, telemetry: Arc<Telemetry>) -> SectorFs {
        let ci = engine.config().case_insensitive;
        let fopen = match cache {
            // Every read and write goes to the daemon; the kernel keeps no
            // copy (mmap aside, FUSE_DIRECT_IO_ALLOW_MMAP). Non-extending
            // writes to one file may come in parallel: its actor orders them.
            CacheMode::Direct => FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
            // Pages stay valid across opens: every change goes through us.
            CacheMode::Writethrough | CacheMode::Writeback => FopenFlags::FOPEN_KEEP_CACHE,
        };
        SectorFs {
            engine,
            entry_ttl: if ci { Duration::ZERO } else { TTL },
            attr_ttl: TTL,
            cache_negative: !ci,
            pid: std::process::id(),
            no_opendir: false,
            cache,
            fopen,
            req: Requests::default(),
            telemetry,
        }
    }

    fn entry(&self, reply: ReplyEntry, a: &Attr) {
        reply.entry_with_ttls(&self.attr_ttl, &self.entry_ttl, &file_attr(a), Generation(0));
    }

    /// `create` without `O_EXCL` found `name` existing: open it instead, as
    /// `open(2)` would (a race between the kernel's lookup and create).
    fn open_existing(&self, req: &Request, parent: u64, name: &[u8], flags: i32) -> engine::Result<Attr> {
        let a = self.engine.lookup(parent, name)?;
        let undo = |e: Error| {
            self.engine.forget(a.ino, 1);
            e
        };
        if a.kind == FileType::Directory {
            return Err(undo(Error::IsDir));
        }
        let want = match flags & libc::O_ACCMODE {
            libc::O_RDONLY => engine::access_mask::R,
            libc::O_WRONLY => engine::access_mask::W,
            _ => engine::access_mask::R | engine::access_mask::W,
        };
        self.engine.access(a.ino, want, &cred(req)).map_err(undo)?;
        if flags & libc::O_TRUNC != 0 {
            self.truncate_for_open(req, &a).map_err(undo)?;
        }
        self.engine.open(a.ino).map_err(undo)
    }

    /// `O_TRUNC` of an existing file at open: to size 0, dropping privileges
    /// as `truncate(2)` by this caller would.
    fn truncate_for_open(&self, req: &Request, a: &Attr) -> engine::Result<()> {
        if a.kind != FileType::Regular {
            return Ok(());
        }
        let (kill_suidgid, kill_sgid) = (!privileged(req), kill_sgid_always(req, a));
        let set = SetAttr { size: Some(0), kill_suidgid, kill_sgid, ..SetAttr::default() };
        self.engine.setattr(a.ino, &set).map(|_| ())
    }

    /// `create`: a new file, or the existing one without `O_EXCL`; opened once.
    fn create_open(
        &self,
        req: &Request,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> engine::Result<Attr> {
        match self.engine.create_umask(parent, name, mode, umask, req.uid(), req.gid()) {
            Ok(a) => self.engine.open(a.ino),
            Err(Error::Exists) if flags & libc::O_EXCL == 0 => self.open_existing(req, parent, name, flags),
            Err(e) => Err(e),
        }
    }

    /// Drops set-user-ID/set-group-ID bits and file capabilities, as a
    /// write, truncate or fallocate by an unprivileged caller does; only
    /// when there is something to drop (both checks read a published
    /// snapshot without a lock): most files have neither.
    fn kill_suidgid(&self, req: &Request, ino: u64) -> engine::Result<()> {
        let a = self.engine.getattr(ino)?;
        let kill_sgid = kill_sgid_always(req, &a);
        let bits = a.perm & 0o4000 != 0 || a.perm & 0o2010 == 0o2010 || kill_sgid;
        if bits || self.engine.getxattr(ino, b"security.capability").is_ok() {
            self.engine.setattr(ino, &SetAttr { kill_suidgid: true, kill_sgid, ..SetAttr::default() })?;
        }
        Ok(())
    }

    /// The ACL an attribute name stands for, on a mount with ACLs.
    fn acl_kind(&self, name: &OsStr) -> Option<engine::acl::AclKind> {
        let on = self.engine.config().posix_acl;
        on.then(|| engine::acl::AclKind::of_name(name.as_bytes())).flatten()
    }

    fn stats_json(&self) -> Vec<u8> {
        let mut snap = Report::new(&self.engine, self.pid, Some(&self.telemetry.trends()));
        snap.add_requests(&self.req);
        snap.to_json().into_bytes()
    }
}

/// Runs one engine call; a panic becomes `EIO` (and is logged) instead of
/// killing the worker thread with a reply unanswered.
fn call<T>(f: impl FnOnce() -> engine::Result<T>) -> Result<T, Errno> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(errno(e)),
        Err(_) => {
            log::error!("engine call panicked; answering EIO");
            Err(Errno::EIO)
        }
    }
}

/// The errno for an engine error (the engine's exhaustive table).
pub(crate) fn errno(e: Error) -> Errno {
    Errno::from_i32(e.errno())
}

fn kind(k: FileType) -> fuser::FileType {
    match k {
        FileType::Regular => fuser::FileType::RegularFile,
        FileType::Directory => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::CharDevice => fuser::FileType::CharDevice,
        FileType::BlockDevice => fuser::FileType::BlockDevice,
        FileType::Socket => fuser::FileType::Socket,
    }
}

/// Engine attributes as fuser's `FileAttr`.
pub(crate) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.into(),
        mtime: a.mtime.into(),
        ctime: a.ctime.into(),
        crtime: a.crtime.into(),
        kind: kind(a.kind),
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(Time::from(t)),
    }
}

/// Whether the caller may keep set-user-ID bits when it changes a file
/// (`CAP_FSETID`; fuser passes no capabilities, so: root).
fn privileged(req: &Request) -> bool {
    req.uid() == 0
}

/// Whether dropping privileges must clear a set-group-ID bit that has no
/// group execute: the caller is unprivileged and outside the file's group
/// (as `setattr_should_drop_sgid` in the kernel).
fn kill_sgid_always(req: &Request, a: &Attr) -> bool {
    a.perm & 0o2000 != 0 && !privileged(req) && !in_group(req, a.gid)
}

/// Whether the caller is in group `gid`: its primary group, or one of its
/// supplementary groups (fuser passes only the primary one, so they are read
/// from `/proc`; only a privilege drop on a set-group-ID file asks).
fn in_group(req: &Request, gid: u32) -> bool {
    if req.gid() == gid {
        return true;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", req.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}

fn cred(req: &Request) -> Cred {
    Cred { uid: req.uid(), gid: req.gid(), groups: Vec::new() }
}

/// An empty attribute set naming inode 0: a negative dentry when sent as an entry.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// Bytes added to the stats attribute's size when the kernel asks for it.
const STATS_SLACK: u32 = 1024;

fn is_stats(ino: INodeNo, name: &OsStr) -> bool {
    ino.0 == engine::ROOT && name.as_bytes() == STATS_XATTR.as_bytes()
}

impl Filesystem for SectorFs {
    fn init(&mut self, _req: &Request, cfg: &mut KernelConfig) -> io::Result<()> {
        // Ask for each capability on its own, so one the kernel lacks does not
        // cost the others.
        let data_path = match self.cache {
            CacheMode::Direct => Some(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP),
            CacheMode::Writethrough => None,
            CacheMode::Writeback => Some(InitFlags::FUSE_WRITEBACK_CACHE),
        };
        for cap in data_path.into_iter().chain([
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
        ]) {
            if let Err(missing) = cfg.add_capabilities(cap) {
                log::warn!("kernel lacks FUSE capability {missing:?}");
            }
        }
        self.no_opendir = cfg.add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT).is_ok();
        // POSIX ACLs: the kernel checks them (and turns on
        // default_permissions), and sends the umask with unmasked modes
        // (FUSE_DONT_MASK) so the engine applies a default ACL or the umask.
        if self.engine.config().posix_acl {
            for cap in [InitFlags::FUSE_POSIX_ACL, InitFlags::FUSE_DONT_MASK] {
                if let Err(missing) = cfg.add_capabilities(cap) {
                    log::warn!("kernel lacks FUSE capability {missing:?}: no POSIX ACLs");
                }
            }
        }
        if let Err(nearest) = cfg.set_max_write(MAX_WRITE) {
            let _ = cfg.set_max_write(nearest);
        }
        if let Err(nearest) = cfg.set_max_background(64) {
            let _ = cfg.set_max_background(nearest);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.req.count(Op::Lookup);
        match call(|| self.engine.lookup(parent.0, name.as_bytes())) {
            Ok(a) => self.entry(reply, &a),
            Err(e) if e == Errno::ENOENT && self.cache_negative => {
                reply.entry_with_ttls(&Duration::ZERO, &self.entry_ttl, &negative_attr(), Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.req.count(Op::Forget);
        let _ = call(|| {
            self.engine.forget(ino.0, nlookup);
            Ok(())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.req.count(Op::Getattr);
        match call(|| self.engine.getattr(ino.0)) {
            Ok(a) => reply.attr(&self.attr_ttl, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.req.count(Op::Setattr);
        // FUSE_HANDLE_KILLPRIV_V2: the kernel leaves dropping privileges to
        // us on chown (always) and on truncate (by a caller without
        // CAP_FSETID, which fuser does not tell us: root stands for it).
        let kill_suidgid = uid.is_some() || gid.is_some() || (size.is_some() && !privileged(req));
        let kill_sgid = kill_suidgid && self.engine.getattr(ino.0).is_ok_and(|a| kill_sgid_always(req, &a));
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(Time::from),
            crtime: crtime.map(Time::from),
            flags: None,
            kill_suidgid,
            kill_sgid,
        };
        match call(|| self.engine.setattr(ino.0, &set)) {
            Ok(a) => reply.attr(&self.attr_ttl, &file_attr(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.req.count(Op::Readlink);
        match call(|| self.engine.readlink(ino.0)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        self.req.count(Op::Mknod);
        let owner = engine::Cred { uid: req.uid(), gid: req.gid(), groups: Vec::new() };
        match call(|| self.engine.mknod_umask(parent.0, name.as_bytes(), mode, umask, rdev, owner)) {
            Ok(a) => self.entry(reply, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        self.req.count(Op::Mkdir);
        match call(|| self.engine.mkdir_umask(parent.0, name.as_bytes(), mode, umask, req.uid(), req.gid())) {
            Ok(a) => self.entry(reply, &a),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.req.count(Op::Unlink);
        match call(|| self.engine.unlink(parent.0, name.as_bytes())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.req.count(Op::Rmdir);
        match call(|| self.engine.rmdir(parent.0, name.as_bytes())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        self.req.count(Op::Symlink);
        let target = target.as_os_str().as_bytes();
        match call(|| self.engine.symlink(parent.0, link_name.as_bytes(), target, req.uid(), req.gid())) {
            Ok(a) => self.entry(reply, &a),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Rename);
        // Translate bit by bit; anything else (RENAME_WHITEOUT) is refused.
        let mut f = 0;
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            f |= rename_flags::NOREPLACE;
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            f |= rename_flags::EXCHANGE;
        }
        let known = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
        let res = if flags.difference(known).is_empty() {
            call(|| self.engine.rename(parent.0, name.as_bytes(), newparent.0, newname.as_bytes(), f))
        } else {
            Err(Errno::EINVAL)
        };
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        self.req.count(Op::Link);
        match call(|| self.engine.link(ino.0, newparent.0, newname.as_bytes())) {
            Ok(a) => self.entry(reply, &a),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.req.count(Op::Open);
        // FUSE_ATOMIC_O_TRUNC: the kernel passes O_TRUNC here instead of
        // sending a SETATTR (and a GETXATTR for the privilege check) after.
        match call(|| {
            if flags.0 & libc::O_TRUNC != 0 {
                self.truncate_for_open(req, &self.engine.getattr(ino.0)?)?;
            }
            self.engine.open(ino.0)
        }) {
            Ok(_) => reply.opened(FileHandle(0), self.fopen),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        self.req.count(Op::Read);
        // One buffer per worker thread, grown once to the largest read: no
        // allocation and no zero-fill per request (only the `n` bytes the
        // engine wrote are sent).
        READ_BUF.with_borrow_mut(|buf| {
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let buf = &mut buf[..size as usize];
            match call(|| self.engine.read(ino.0, offset, buf)) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(e),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        self.req.count(Op::Write);
        // The kernel resolves O_APPEND (in every --cache mode): always write
        // at the offset given. It sends writes that must drop privileges
        // (FUSE_HANDLE_KILLPRIV_V2) through, flagged, instead of caching them.
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match call(|| {
            if kill {
                self.kill_suidgid(req, ino.0)?;
            }
            self.engine.write(ino.0, offset, data)
        }) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _owner: fuser::LockOwner, reply: ReplyEmpty) {
        self.req.count(Op::Flush);
        // Nothing is buffered in the daemon. ENOSYS tells the kernel never to
        // send FLUSH again (one round trip less per close); it still writes
        // back dirty pages and reports their errors (ENOSPC) at close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Release);
        let res = call(|| {
            self.engine.release(ino.0);
            Ok(())
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.req.count(Op::Fsync);
        // A RAM disk has nothing to make durable. ENOSYS: the kernel stops
        // sending FSYNC but still writes back and reports errors first.
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.req.count(Op::Opendir);
        // Directory handles are stateless: readdir offsets are engine cookies.
        // With FUSE_NO_OPENDIR_SUPPORT, ENOSYS ends OPENDIR/RELEASEDIR for good.
        if self.no_opendir {
            reply.error(Errno::ENOSYS);
        } else {
            reply.opened(FileHandle(0), FopenFlags::empty());
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        self.req.count(Op::Readdir);
        let res = call(|| {
            self.engine.readdir(ino.0, offset, |e| {
                let full = reply.add(INodeNo(e.ino), e.next, kind(e.kind), OsStr::from_bytes(e.name));
                !full
            })
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        self.req.count(Op::Readdirplus);
        let (attr_ttl, entry_ttl) = (self.attr_ttl, self.entry_ttl);
        // Entry and attribute TTL are one value here: the shorter of the two.
        let ttl = attr_ttl.min(entry_ttl);
        let res = call(|| {
            self.engine.readdir_plus(ino.0, offset, |e, a| {
                // `add` returns true when the entry did not fit: the engine then
                // gives back the lookup reference it took for it.
                let full =
                    reply.add(INodeNo(e.ino), e.next, OsStr::from_bytes(e.name), &ttl, &file_attr(a), Generation(0));
                !full
            })
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.req.count(Op::Releasedir);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.req.count(Op::Fsyncdir);
        // As `fsync`.
        reply.error(Errno::ENOSYS);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.req.count(Op::Statfs);
        match call(|| Ok(self.engine.statfs())) {
            Ok(s) => reply.statfs(s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Setxattr);
        let known = (xattr_flags::CREATE | xattr_flags::REPLACE) as i32;
        #[cfg(feature = "failpoints")]
        if ino.0 == engine::ROOT && name.as_bytes() == crate::fault::ARM_XATTR.as_bytes() {
            return match crate::fault::arm(value) {
                Ok(()) => reply.ok(),
                Err(e) => {
                    log::error!("{}: {e}", crate::fault::ARM_XATTR);
                    reply.error(Errno::EINVAL)
                }
            };
        }
        let res = if is_stats(ino, name) {
            Err(Errno::EPERM)
        } else if position != 0 || flags & !known != 0 {
            Err(Errno::EINVAL)
        } else if let Some(kind) = self.acl_kind(name) {
            // The kernel checked the owner and the format (vfs_set_acl); it
            // leaves the mode to us, and the set-group-ID drop too (fuser
            // 0.18 cannot take FUSE_SETXATTR_EXT, which would flag it).
            call(|| {
                let kill_sgid = kill_sgid_always(req, &self.engine.getattr(ino.0)?);
                self.engine.set_acl(ino.0, kind, Some(value), flags as u32, kill_sgid)
            })
        } else {
            call(|| self.engine.setxattr(ino.0, name.as_bytes(), value, flags as u32))
        };
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.req.count(Op::Getxattr);
        let stats = is_stats(ino, name);
        let res = if stats { Ok(self.stats_json()) } else { call(|| self.engine.getxattr(ino.0, name.as_bytes())) };
        match res {
            // The stats change between a size probe and the read that
            // follows (getfattr): room for them to grow, not ERANGE.
            Ok(v) if size == 0 && stats => reply.size(v.len() as u32 + STATS_SLACK),
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.req.count(Op::Listxattr);
        match call(|| self.engine.listxattr(ino.0)) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.req.count(Op::Removexattr);
        let res = if is_stats(ino, name) {
            Err(Errno::EPERM)
        } else {
            call(|| self.engine.removexattr(ino.0, name.as_bytes()))
        };
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.req.count(Op::Access);
        // Only called without `default_permissions` (never by `sectorfs mount`).
        match call(|| self.engine.access(ino.0, mask.bits() as u32 & 7, &cred(req))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.req.count(Op::Create);
        match call(|| self.create_open(req, parent.0, name.as_bytes(), mode, umask, flags)) {
            Ok(a) => reply.created(&self.entry_ttl, &file_attr(&a), Generation(0), FileHandle(0), self.fopen),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.req.count(Op::Fallocate);
        // The kernel's file_modified() leaves dropping privileges to us
        // (FUSE_HANDLE_KILLPRIV_V2).
        match call(|| {
            if !privileged(req) {
                self.kill_suidgid(req, ino.0)?;
            }
            self.engine.fallocate(ino.0, mode as u32, offset, length)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        self.req.count(Op::Lseek);
        // The kernel resolves SEEK_SET/CUR/END itself; only DATA/HOLE come here.
        let res = match whence {
            _ if offset < 0 => Err(Errno::ENXIO),
            libc::SEEK_DATA | libc::SEEK_HOLE => {
                call(|| self.engine.seek(ino.0, offset as u64, whence == libc::SEEK_DATA))
            }
            _ => Err(Errno::EINVAL),
        };
        match res {
            Ok(off) => reply.offset(off as i64),
            Err(e) => reply.error(e),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.req.count(Op::CopyFileRange);
        // The reply carries a u32: copy at most 1 GiB per request (callers
        // loop on short copies).
        let len = len.min(1 << 30);
        let res = if flags.is_empty() {
            call(|| {
                if !privileged(req) {
                    self.kill_suidgid(req, ino_out.0)?;
                }
                self.engine.copy_file_range(ino_in.0, offset_in, ino_out.0, offset_out, len)
            })
        } else {
            Err(Errno::EINVAL)
        };
        match res {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table_passes_through() {
        assert_eq!(errno(Error::NotFound), Errno::ENOENT);
        assert_eq!(errno(Error::NotEmpty), Errno::ENOTEMPTY);
        assert_eq!(errno(Error::NoSpace).code(), libc::ENOSPC);
        assert_eq!(errno(Error::NoSuchOffset).code(), libc::ENXIO);
        assert_eq!(errno(Error::NoData).code(), libc::ENODATA);
    }

    #[test]
    fn panics_become_eio() {
        let r: Result<(), Errno> = call(|| panic!("boom"));
        assert_eq!(r, Err(Errno::EIO));
        assert_eq!(call(|| Ok(3)), Ok(3));
    }

    #[test]
    fn attr_conversion() {
        let e = Engine::new(engine::Config::default()).unwrap();
        let a = e.getattr(engine::ROOT).unwrap();
        let f = file_attr(&a);
        assert_eq!(f.ino, INodeNo::ROOT);
        assert_eq!(f.kind, fuser::FileType::Directory);
        assert_eq!(f.perm, 0o1777);
        assert_eq!(f.nlink, 2);
    }
}
