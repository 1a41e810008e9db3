//! The Linux FUSE frontend: a thin adapter from the session layer's
//! requests (`sectorfs-fuse`) to [`engine::Engine`] calls.
//!
//! Each handler validates its arguments, makes one engine call (through
//! [`call`], which turns a panic into `EIO` so a worker thread never dies and
//! a reply is never dropped), and ends in one `match` into `reply.*`. No
//! FUSE type reaches the engine.
//!
//! # Kernel contract
//! * **Lookup count.** Every reply that hands the kernel an inode (`lookup`,
//!   `create`, `mknod`, `mkdir`, `symlink`, `link`, `tmpfile`,
//!   and each `readdirplus` entry other than `.`/`..` that fits in the
//!   buffer) takes one engine lookup reference; `forget` and `batch_forget`
//!   give them back.
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
//! * **Fewer round trips.** Readdirplus fills the
//!   dentry cache; `FLUSH`/`FSYNC` end for good with `ENOSYS`. Every request
//!   is counted by opcode ([`Requests`], `sectorfs stats`).
//! * **Dropping privileges.** `FUSE_HANDLE_KILLPRIV_V2` is negotiated, so
//!   the kernel stops asking for `security.capability` before every write
//!   (one round trip per write) and leaves it to us to clear set-user-ID and
//!   set-group-ID bits on chown, on truncate, fallocate and copy_file_range
//!   by an unprivileged caller, and on writes it flags
//!   `FUSE_WRITE_KILL_SUIDGID` (see [`SectorFs::kill_suidgid`]; the kernel
//!   is told the mode changed: [`SectorFs::attrs_changed`]); file
//!   capabilities go with every change of a file's data, root's too (the
//!   engine drops `security.capability` in the same batch).
//! * **Requests we end for good.** `flush`, `fsync` and `fsyncdir` answer
//!   `ENOSYS`, which the kernel remembers: it still writes dirty pages back
//!   and reports their errors, but no longer asks the daemon. `opendir` is
//!   answered (no `FUSE_NO_OPENDIR_SUPPORT`), so the kernel caches no
//!   listing: an open listing sees entries deleted after it began go.
//! * **Permissions.** The mount uses `default_permissions`: the kernel checks
//!   mode bits, ownership and sticky bits against our attributes, with the
//!   caller's supplementary groups (which FUSE does not pass to us).
//! * **POSIX ACLs.** `FUSE_POSIX_ACL` (the kernel checks ACLs, validates
//!   and permission-checks `setfacl`, leaves mode sync and inheritance to
//!   us) and `FUSE_DONT_MASK` (unmasked modes, the `umask` passed to
//!   `create`/`mkdir`/`mknod` for the engine to apply unless a default ACL
//!   is inherited). See `engine::acl`.
//! * **overlayfs upper layer** (issue 20). What the kernel's overlayfs
//!   requires of a FUSE (a "remote", revalidating) upper file system at
//!   mount time: `d_type` in `readdir`, `RENAME_WHITEOUT`
//!   (`Engine::rename_as` leaves a 0/0 character device owned by the
//!   caller's fsuid/fsgid) and `trusted.overlay.*` xattrs (the kernel allows
//!   `trusted.` to `CAP_SYS_ADMIN` only, and passes them through; `listxattr`
//!   hides them from other callers, as tmpfs does). In use: `O_TMPFILE`,
//!   `mknod` 0/0 and hard links of it (shared whiteouts), `RENAME_EXCHANGE`,
//!   xattrs on directories (`redirect`, `opaque`).
//! * **File handles.** `FUSE_EXPORT_SUPPORT` is deliberately not negotiated:
//!   with it the kernel decodes a handle of an inode it no longer caches
//!   into a new, disconnected dentry that FUSE can never revalidate (its
//!   epoch is 0), and overlayfs revalidates the copy-up origins it decodes:
//!   after a cache eviction every copied-up file whose lower layer is on
//!   sectorfs then fails with `ESTALE` (measured, also with `index=off`).
//!   Without it such a handle is stale and overlayfs treats the origin as
//!   unknown (the file keeps working; its `st_ino` becomes the upper one).
//!   Every inode but the root has one random generation per mount, so a
//!   handle from an earlier mount (whose inode numbers started over) is
//!   stale, never another file.
//! * **`O_TMPFILE`** (`FUSE_TMPFILE`): an anonymous file from
//!   `Engine::tmpfile`, opened once. **`statx`** (`FUSE_STATX`, sent for the
//!   birth time): all basic fields and `btime`. **`syncfs`**: nothing to do.
//!   Interrupts are not needed: every request is answered as soon as it is
//!   served.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::{inode_flags, rename_flags, xattr_flags, Attr, Cred, Engine, Error, FileType, SetAttr, SetTime, Time};
use sectorfs_fuse::abi;
use sectorfs_fuse::decode::{Header, Op, Request};
use sectorfs_fuse::reply::{DirBuf, Reply};
use sectorfs_fuse::session::{Filesystem, InitConfig};

use crate::requests::{Op as Counted, Requests};
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
    /// A FUSE worker's directory listing buffer.
    static DIR_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How the mount's requests travel, for `stats`.
pub(crate) struct TransportInfo {
    /// `uring` or `classic`.
    pub(crate) kind: &'static str,
    /// The transport's request and reply buffers, at most.
    pub(crate) buffer_bytes: u64,
    /// The ring's served counters (`uring`).
    pub(crate) ring: Option<sectorfs_fuse::uring::RingCounter>,
}

/// The FUSE file system: an engine and the caching policy.
/// An open directory handle: where its listing ends (`SectorFs::readdir`).
/// The kernel sends one handle's reads one at a time (under the file's
/// position lock), so relaxed loads and stores do.
#[derive(Clone)]
struct DirHandle(Arc<DirEnd>);

struct DirEnd {
    fh: u64,
    end: AtomicU64,
}

impl engine::sync::Keyed for DirHandle {
    fn key(&self) -> &u64 {
        &self.0.fh
    }
}

pub(crate) struct SectorFs {
    engine: Arc<Engine>,
    entry_ttl: Duration,
    attr_ttl: Duration,
    cache_negative: bool,
    pid: u32,
    /// The kernel sends unmasked modes and the umask (FUSE_DONT_MASK).
    dont_mask: bool,
    /// The data path's caching mode (`--cache`).
    cache: CacheMode,
    /// What `open` and `create` answer for a regular file (from `cache`).
    fopen: u32,
    /// Ask for FUSE over io_uring at INIT.
    want_uring: bool,
    /// Requests served, by opcode (`stats`).
    req: Requests,
    /// The transport, once it runs (`stats`).
    transport: std::sync::OnceLock<TransportInfo>,
    /// Usage over time (`stats`): the sampler's history.
    telemetry: Arc<Telemetry>,
    /// The generation of every inode but the root (which the kernel fixes
    /// at 0): random per mount, so that a file handle from an earlier mount
    /// (whose inode numbers started over) is stale, not another file.
    generation: u64,
    /// Images: `sectorfs save` through the root's `user.sectorfs.save`.
    saver: Option<Arc<crate::save::Saver>>,
    /// Bytes of page-cache writeback refused at the limit (`stats`).
    writeback_refused: AtomicU64,
    /// Notifications to the kernel on the mount's connection (set once it is
    /// mounted, dropped when the session ends so that its descriptor does
    /// not keep the connection open): attributes a request changed without
    /// a reply that carries them.
    notifier: std::sync::Mutex<Option<sectorfs_fuse::dev::Notifier<std::os::fd::OwnedFd>>>,
    /// Open directory handles: where each one's listing ends
    /// (`Engine::readdir_end`, taken again at offset 0). One entry per
    /// directory the kernel holds open, gone at `RELEASEDIR`.
    dir_ends: engine::sync::ShardMap<DirHandle>,
    /// The next directory handle number.
    next_dir_fh: AtomicU64,
}

impl SectorFs {
    /// A frontend for `engine` (whose usage `telemetry` samples). A
    /// case-insensitive engine turns off entry caching.
    pub(crate) fn new(engine: Arc<Engine>, cache: CacheMode, telemetry: Arc<Telemetry>) -> SectorFs {
        let ci = engine.config().case_insensitive;
        let fopen = match cache {
            // Every read and write goes to the daemon; the kernel keeps no
            // copy (mmap aside, FUSE_DIRECT_IO_ALLOW_MMAP). Not
            // FOPEN_PARALLEL_DIRECT_WRITES: a write(2) larger than a request
            // (max_write) reaches us as several WRITEs, and without the
            // inode's lock those of two writers to one range interleave, so
            // the range ends up holding parts of both (a probe: 13 of 30
            // rounds of four 1 MiB pwrites; POSIX, and tmpfs, make each
            // write atomic against the others). The lock serialises writers
            // of one file only; reads stay parallel.
            CacheMode::Direct => abi::FOPEN_DIRECT_IO,
            // Pages stay valid across opens: every change goes through us.
            CacheMode::Writethrough | CacheMode::Writeback => abi::FOPEN_KEEP_CACHE,
        };
        SectorFs {
            engine,
            entry_ttl: if ci { Duration::ZERO } else { TTL },
            attr_ttl: TTL,
            cache_negative: !ci,
            pid: std::process::id(),
            dont_mask: false,
            cache,
            fopen,
            want_uring: false,
            req: Requests::default(),
            transport: std::sync::OnceLock::new(),
            telemetry,
            generation: mount_generation(),
            saver: None,
            writeback_refused: AtomicU64::new(0),
            notifier: std::sync::Mutex::new(None),
            dir_ends: engine::sync::ShardMap::default(),
            next_dir_fh: AtomicU64::new(1),
        }
    }

    /// Serves `user.sectorfs.save` on the root with `saver` (`crate::save`).
    pub(crate) fn set_saver(&mut self, saver: Arc<crate::save::Saver>) {
        self.saver = Some(saver);
    }

    /// The connection to send notifications on (a descriptor of the mount's
    /// `/dev/fuse` connection).
    pub(crate) fn set_notifier(&mut self, fd: std::os::fd::OwnedFd) {
        *self.notifier.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(sectorfs_fuse::dev::Notifier::new(fd));
    }

    /// Closes the notification descriptor (the session ended).
    pub(crate) fn close_notifier(&self) {
        self.notifier.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }

    /// Drops the kernel's cached attributes of `ino`, which a request changed
    /// without a reply that carries them (set-user-ID bits dropped by a
    /// write, truncate, fallocate or copy_file_range): the kernel keeps
    /// attributes for [`TTL`] and invalidates after a write only the size
    /// and times, so `statx(STATX_MODE)` and exec's permission check would
    /// still see the old mode. Sent before the reply, so no call that
    /// returns after it sees the old mode.
    fn attrs_changed(&self, ino: u64) {
        let n = self.notifier.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = n.as_ref() {
            match n.inval_inode(ino, -1, 0) {
                // ENOENT: the kernel holds no inode to invalidate.
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                    log::warn!("cannot invalidate the attributes of inode {ino}: {e}");
                }
                _ => {}
            }
        }
    }

    /// Asks for FUSE over io_uring at INIT (the daemon starts the ring if granted).
    pub(crate) fn want_uring(&mut self, on: bool) {
        self.want_uring = on;
    }

    /// Records the transport that serves the mount (once, before READY).
    pub(crate) fn set_transport(&self, t: TransportInfo) {
        let _ = self.transport.set(t);
    }

    fn entry_out(&self, a: &Attr) -> abi::fuse_entry_out {
        abi::fuse_entry_out {
            nodeid: a.ino,
            generation: if a.ino == engine::ROOT { 0 } else { self.generation },
            entry_valid: self.entry_ttl.as_secs(),
            attr_valid: self.attr_ttl.as_secs(),
            entry_valid_nsec: self.entry_ttl.subsec_nanos(),
            attr_valid_nsec: self.attr_ttl.subsec_nanos(),
            attr: fuse_attr(a),
        }
    }

    fn attr_out(&self, a: &Attr) -> abi::fuse_attr_out {
        abi::fuse_attr_out {
            attr_valid: self.attr_ttl.as_secs(),
            attr_valid_nsec: self.attr_ttl.subsec_nanos(),
            dummy: 0,
            attr: fuse_attr(a),
        }
    }

    fn entry(&self, reply: Reply<'_>, r: Result<Attr, i32>) {
        match r {
            Ok(a) => reply.entry(&self.entry_out(&a)),
            Err(e) => reply.error(e),
        }
    }

    /// `create` without `O_EXCL` found `name` existing: open it instead, as
    /// `open(2)` would (a race between the kernel's lookup and create).
    fn open_existing(&self, h: &Header, parent: u64, name: &[u8], flags: u32) -> engine::Result<Attr> {
        let a = self.engine.lookup(parent, name)?;
        let undo = |e: Error| {
            self.engine.forget(a.ino, 1);
            e
        };
        if a.kind == FileType::Directory {
            return Err(undo(Error::IsDir));
        }
        let want = match flags as i32 & libc::O_ACCMODE {
            libc::O_RDONLY => engine::access_mask::R,
            libc::O_WRONLY => engine::access_mask::W,
            _ => engine::access_mask::R | engine::access_mask::W,
        };
        // O_TRUNC needs write permission whatever the access mode (Linux's
        // may_open): the kernel, which took this CREATE for a new file,
        // checked nothing (from a review: O_RDONLY|O_CREAT|O_TRUNC by a
        // reader emptied the file).
        let trunc = flags as i32 & libc::O_TRUNC != 0;
        let want = if trunc { want | engine::access_mask::W } else { want };
        self.engine.access(a.ino, want, &cred(h)).map_err(undo)?;
        if trunc {
            self.truncate_for_open(h, &a).map_err(undo)?;
        }
        self.engine.open(a.ino).map_err(undo)
    }

    /// `O_TRUNC` of an existing file at open: to size 0, dropping privileges
    /// as `truncate(2)` by this caller would. Only for a `CREATE` (which
    /// keeps `O_TRUNC`) that finds the name taken: an `OPEN` never carries it
    /// (see `Op::Open`).
    fn truncate_for_open(&self, h: &Header, a: &Attr) -> engine::Result<()> {
        if a.kind != FileType::Regular {
            return Ok(());
        }
        let (kill_suidgid, kill_sgid) = (!privileged(h), kill_sgid_always(h, a));
        // O_TRUNC changes the times even of an empty file (Linux passes
        // them with the size; a bare truncate to the same size does not).
        let mtime = Some(SetTime::Now);
        let set = SetAttr { size: Some(0), mtime, kill_suidgid, kill_sgid, ..SetAttr::default() };
        self.setattr_unreplied(a, &set).map(|_| ())
    }

    /// `set` on the file `before` describes, for a request whose reply
    /// carries no attributes: the kernel is told if the mode changed.
    fn setattr_unreplied(&self, before: &Attr, set: &SetAttr) -> engine::Result<Attr> {
        let after = self.engine.setattr(before.ino, set)?;
        if after.perm != before.perm {
            self.attrs_changed(before.ino);
        }
        Ok(after)
    }

    /// `create`: a new file, or the existing one without `O_EXCL`; opened once.
    fn create_open(&self, h: &Header, name: &[u8], arg: &abi::fuse_create_in) -> engine::Result<Attr> {
        let (mode, umask) = self.mode_umask(arg.mode, arg.umask);
        match self.engine.create_umask(h.nodeid, name, mode, umask, h.uid, h.gid) {
            Ok(a) => self.engine.open(a.ino),
            Err(Error::Exists) if arg.flags as i32 & libc::O_EXCL == 0 => {
                self.open_existing(h, h.nodeid, name, arg.flags)
            }
            Err(e) => Err(e),
        }
    }

    /// The mode and umask to create with: without FUSE_DONT_MASK the kernel
    /// has applied the umask already.
    fn mode_umask(&self, mode: u32, umask: u32) -> (u32, u32) {
        (mode, if self.dont_mask { umask } else { 0 })
    }

    /// Drops set-user-ID/set-group-ID bits and file capabilities, as a
    /// write, truncate or fallocate by an unprivileged caller does; only
    /// when there is something to drop (both checks read a published
    /// snapshot without a lock): most files have neither.
    fn kill_suidgid(&self, h: &Header, ino: u64) -> engine::Result<()> {
        let a = self.engine.getattr(ino)?;
        let kill_sgid = kill_sgid_always(h, &a);
        let bits = a.perm & 0o4000 != 0 || a.perm & 0o2010 == 0o2010 || kill_sgid;
        if bits || self.engine.getxattr(ino, b"security.capability").is_ok() {
            self.setattr_unreplied(&a, &SetAttr { kill_suidgid: true, kill_sgid, ..SetAttr::default() })?;
        }
        Ok(())
    }

    /// The ACL an attribute name stands for, on a mount with ACLs.
    fn acl_kind(&self, name: &[u8]) -> Option<engine::acl::AclKind> {
        let on = self.engine.config().posix_acl;
        on.then(|| engine::acl::AclKind::of_name(name)).flatten()
    }

    fn stats_json(&self) -> Vec<u8> {
        let mut snap = Report::new(&self.engine, self.pid, Some(&self.telemetry.trends()));
        snap.add_requests(&self.req);
        snap.writeback_refused_bytes = self.writeback_refused.load(Ordering::Relaxed);
        if let Some(t) = self.transport.get() {
            snap.transport = Some(t.kind.to_string());
            snap.ring_requests = t.ring.as_ref().map(|r| r.total());
            snap.transport_buffer_bytes = Some(t.buffer_bytes);
        }
        snap.to_json().into_bytes()
    }

    /// `FUSE_IOCTL`: the inode flags of `lsattr`/`chattr` (`FS_IOC_GETFLAGS`
    /// and `FS_IOC_SETFLAGS`) and of `xfs_io`'s (`FS_IOC_FSGETXATTR`,
    /// `FS_IOC_FSSETXATTR`), which the kernel sends for a regular file or a
    /// directory it opened for the purpose; `ENOTTY` for any other command.
    /// As on tmpfs, `IMMUTABLE`, `APPEND`, `NODUMP` and `NOATIME` are kept
    /// (the last two inherited by new entries); any other flag is
    /// `EOPNOTSUPP`. The VFS does not see `i` and `a` on a FUSE inode, so
    /// the engine enforces them (`inode_flags::IMMUTABLE`, `APPEND`: every
    /// change they forbid is EPERM, to root too, as on Linux's own file
    /// systems). The kernel checked that the caller owns the
    /// file or has `CAP_FOWNER` (`vfs_fileattr_set`, with or without
    /// `default_permissions`), and `CAP_LINUX_IMMUTABLE` for `i` and `a`;
    /// a uid check here would refuse `CAP_FOWNER`. Returns the bytes to
    /// copy out.
    fn ioctl(&self, h: &Header, arg: &abi::fuse_ioctl_in, data: &[u8]) -> Result<Vec<u8>, i32> {
        let ino = h.nodeid;
        // The `i`-th `u32` of the input (an `int` flags word; a field of
        // `struct fsxattr`).
        let word = |i: usize| data.get(4 * i..4 * i + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        let set = |flags: u32| {
            call(|| self.engine.setattr(ino, &SetAttr { inode_flags: Some(flags), ..SetAttr::default() }))?;
            // The change time moved; the kernel's cached attributes did not.
            self.attrs_changed(ino);
            Ok(Vec::new())
        };
        let current = || call(|| self.engine.getattr(ino)).map(|a| a.flags);
        match arg.cmd {
            FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS => Ok(kernel_flags(current()?, &FS_FLAGS).to_ne_bytes().to_vec()),
            FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS => set(inode_flags_of(word(0).ok_or(libc::EINVAL)?, &FS_FLAGS)?),
            FS_IOC_FSGETXATTR => {
                let mut x = vec![0; FSXATTR_BYTES];
                x[..4].copy_from_slice(&kernel_flags(current()?, &XFLAGS).to_ne_bytes());
                Ok(x)
            }
            FS_IOC_FSSETXATTR => {
                if data.len() < FSXATTR_BYTES {
                    return Err(libc::EINVAL);
                }
                // extsize, projid, cowextsize: none kept (nextents is read-only).
                if [1, 3, 4].iter().any(|&i| word(i) != Some(0)) {
                    return Err(libc::EOPNOTSUPP);
                }
                set(inode_flags_of(word(0).ok_or(libc::EINVAL)? & !FS_XFLAG_READ_ONLY, &XFLAGS)?)
            }
            _ => Err(libc::ENOTTY),
        }
    }

    fn setattr(&self, h: &Header, s: &abi::fuse_setattr_in) -> Result<Attr, i32> {
        let has = |f: u32| s.valid & f != 0;
        let time = |now: u32, set: u32, secs: u64, nanos: u32| {
            if has(now) {
                Some(SetTime::Now)
            } else if has(set) {
                Some(SetTime::At(Time { secs: secs as i64, nanos }))
            } else {
                None
            }
        };
        let (uid, gid) = (has(abi::FATTR_UID).then_some(s.uid), has(abi::FATTR_GID).then_some(s.gid));
        let size = has(abi::FATTR_SIZE).then_some(s.size);
        // FUSE_HANDLE_KILLPRIV_V2: the kernel leaves dropping privileges to
        // us on chown (always) and on truncate by a caller without
        // CAP_FSETID (it flags those: FATTR_KILL_SUIDGID; root stands in too).
        // chown(path, -1, -1) arrives with no field at all (the kernel drops
        // the mode it computed for the privilege drop): by an unprivileged
        // owner it drops them as any chown. Root's cannot be told from the
        // empty SETATTR by which the kernel drops a file's capabilities
        // before root's fallocate or copy_file_range (which keep
        // set-user-ID), so it changes nothing (tmpfs drops the bits); nor
        // does another user's (tmpfs: EPERM where there are bits to drop).
        // An unprivileged caller's fallocate sends one too, and drops the
        // bits anyway.
        let fields = abi::FATTR_MODE
            | abi::FATTR_UID
            | abi::FATTR_GID
            | abi::FATTR_SIZE
            | abi::FATTR_ATIME
            | abi::FATTR_MTIME
            | abi::FATTR_ATIME_NOW
            | abi::FATTR_MTIME_NOW;
        let cur = self.engine.getattr(h.nodeid).map_err(|e| e.errno())?;
        let chown_none = s.valid & fields == 0 && cur.kind != FileType::Directory && !privileged(h) && cur.uid == h.uid;
        let kill_suidgid = uid.is_some()
            || gid.is_some()
            || chown_none
            || (size.is_some() && (has(abi::FATTR_KILL_SUIDGID) || !privileged(h)));
        let kill_sgid = kill_suidgid && kill_sgid_always(h, &cur);
        let set = SetAttr {
            mode: has(abi::FATTR_MODE).then_some(s.mode),
            uid,
            gid,
            size,
            atime: time(abi::FATTR_ATIME_NOW, abi::FATTR_ATIME, s.atime, s.atimensec),
            // A truncate changes the times even where the size stays: the
            // kernel sends an `O_TRUNC` open's truncate (and ftruncate's)
            // without them, as the same SETATTR as truncate(2)'s, and `: >
            // stamp` must renew an empty stamp file's mtime (tmpfs does; its
            // truncate(2) to the same size of an empty file does not, the
            // one case where we differ).
            mtime: time(abi::FATTR_MTIME_NOW, abi::FATTR_MTIME, s.mtime, s.mtimensec).or(size.map(|_| SetTime::Now)),
            ctime: has(abi::FATTR_CTIME).then_some(Time { secs: s.ctime as i64, nanos: s.ctimensec }),
            crtime: None,
            flags: None,
            inode_flags: None,
            kill_suidgid,
            kill_sgid,
            // Under the writeback cache the kernel keeps a file's times
            // while it writes through its cache and sends them back with
            // the data (`fuse_flush_times`): the modification and change
            // times alone.
            cached_times: self.cache == CacheMode::Writeback
                && s.valid & fields == abi::FATTR_MTIME
                && has(abi::FATTR_CTIME),
        };
        call(|| self.engine.setattr(h.nodeid, &set))
    }

    /// `noatime`: the file was opened with `O_NOATIME` (the kernel checked
    /// that the caller may), so the read changes no access time.
    fn read(&self, ino: u64, offset: u64, size: u32, noatime: bool, reply: Reply<'_>) {
        // The reply goes out from the sectors of the version read (holes
        // from a static zero page): no buffer, no copy in the daemon. The
        // classic transport hands the pieces to writev(2); the ring copies
        // them once into its entry.
        let size = (size as usize).min(MAX_WRITE as usize);
        let mut reply = Some(reply);
        let res = call(|| {
            self.engine.read_with_atime(ino, offset, size, !noatime, |pieces| {
                if let Some(r) = reply.take() {
                    r.data_vectored(pieces);
                }
            })
        });
        if let (Err(e), Some(r)) = (res, reply) {
            r.error(e);
        }
    }

    fn readdir(&self, ino: u64, arg: &abi::fuse_read_in, plus: bool, reply: Reply<'_>) {
        let max = (arg.size as usize).min(MAX_WRITE as usize);
        // Where this handle's listing ends: taken when it starts (offset 0:
        // the first read, or a `rewinddir`), so that entries renamed during
        // it, which move to the end, are not listed again and again.
        let end = if arg.offset == 0 {
            let end = match self.engine.readdir_end(ino) {
                Ok(e) => e,
                Err(e) => return reply.error(e.errno()),
            };
            self.dir_ends.with(&arg.fh, |h| h.0.end.store(end, Ordering::Relaxed));
            end
        } else {
            self.dir_ends.with(&arg.fh, |h| h.0.end.load(Ordering::Relaxed)).unwrap_or(u64::MAX)
        };
        DIR_BUF.with_borrow_mut(|buf| {
            let mut d = DirBuf::new(buf, max);
            let res = if plus {
                call(|| {
                    self.engine.readdir_plus_to(ino, arg.offset, end, |e, a| {
                        // False when the entry did not fit: the engine then
                        // gives back the lookup reference it took for it.
                        d.add_plus(&self.entry_out(a), e.next, dt(e.kind), e.name)
                    })
                })
            } else {
                call(|| self.engine.readdir_to(ino, arg.offset, end, |e| d.add(e.ino, e.next, dt(e.kind), e.name)))
            };
            match res {
                Ok(()) => reply.data(d.bytes()),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setxattr(&self, h: &Header, name: &[u8], value: &[u8], flags: u32, setxattr_flags: u32) -> Result<(), i32> {
        let ino = h.nodeid;
        let known = xattr_flags::CREATE | xattr_flags::REPLACE;
        #[cfg(feature = "failpoints")]
        if ino == engine::ROOT && name == crate::fault::ARM_XATTR.as_bytes() {
            return crate::fault::arm(value).map_err(|e| {
                log::error!("{}: {e}", crate::fault::ARM_XATTR);
                libc::EINVAL
            });
        }
        if is_save(ino, name) {
            // Starts a save on its own thread and returns (`crate::save`).
            self.saver.as_ref().map_or(Err(libc::EOPNOTSUPP), |s| s.request(h.uid, value))
        } else if is_stats(ino, name) {
            Err(libc::EPERM)
        } else if flags & !known != 0 {
            Err(libc::EINVAL)
        } else if let Some(kind) = self.acl_kind(name) {
            // The kernel checked the owner and the format (vfs_set_acl); it
            // leaves the mode to us, and flags the set-group-ID drop
            // (FUSE_SETXATTR_EXT).
            call(|| {
                let kill_sgid = setxattr_flags & abi::FUSE_SETXATTR_ACL_KILL_SGID != 0
                    || kill_sgid_always(h, &self.engine.getattr(ino)?);
                self.engine.set_acl(ino, kind, Some(value), flags, kill_sgid)
            })
        } else {
            call(|| self.engine.setxattr(ino, name, value, flags))
        }
    }

    fn statx(&self, h: &Header, reply: Reply<'_>) {
        match call(|| self.engine.getattr(h.nodeid)) {
            Ok(a) => {
                let t = |t: Time| abi::fuse_sx_time { tv_sec: t.secs, tv_nsec: t.nanos, __reserved: 0 };
                let stat = abi::fuse_statx {
                    // STATX_BASIC_STATS | STATX_BTIME
                    mask: 0x7ff | 0x800,
                    blksize: a.blksize,
                    nlink: a.nlink,
                    uid: a.uid,
                    gid: a.gid,
                    mode: (a.kind.mode_bits() | (a.perm & 0o7777)) as u16,
                    ino: a.ino,
                    size: a.size,
                    blocks: a.blocks,
                    atime: t(a.atime),
                    btime: t(a.crtime),
                    ctime: t(a.ctime),
                    mtime: t(a.mtime),
                    rdev_major: libc::major(u64::from(a.rdev)),
                    rdev_minor: libc::minor(u64::from(a.rdev)),
                    ..Default::default()
                };
                let out = abi::fuse_statx_out {
                    attr_valid: self.attr_ttl.as_secs(),
                    attr_valid_nsec: self.attr_ttl.subsec_nanos(),
                    stat,
                    ..Default::default()
                };
                reply.statx(&out)
            }
            Err(e) => reply.error(e),
        }
    }
}

/// A random generation for this mount's inodes: 32 bits (the kernel keeps
/// `i_generation` and file handles at 32), never 0 (the root's).
fn mount_generation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's random source once per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    u64::from((h.finish() as u32).max(1))
}

/// Runs one engine call; a panic becomes `EIO` (and is logged) instead of
/// killing the worker thread with a reply unanswered.
fn call<T>(f: impl FnOnce() -> engine::Result<T>) -> Result<T, i32> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.errno()),
        Err(_) => {
            log::error!("engine call panicked; answering EIO");
            Err(libc::EIO)
        }
    }
}

/// A directory entry's type (`DT_*`).
fn dt(k: FileType) -> u32 {
    k.mode_bits() >> 12
}

/// Engine attributes as the kernel's `fuse_attr`.
pub(crate) fn fuse_attr(a: &Attr) -> abi::fuse_attr {
    abi::fuse_attr {
        ino: a.ino,
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.secs as u64,
        mtime: a.mtime.secs as u64,
        ctime: a.ctime.secs as u64,
        atimensec: a.atime.nanos,
        mtimensec: a.mtime.nanos,
        ctimensec: a.ctime.nanos,
        mode: a.kind.mode_bits() | (a.perm & 0o7777),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

/// Whether the caller may keep set-user-ID bits when it changes a file
/// (`CAP_FSETID`; FUSE passes no capabilities, so: root).
fn privileged(h: &Header) -> bool {
    h.uid == 0
}

/// Whether dropping privileges must clear a set-group-ID bit that has no
/// group execute: the caller is unprivileged and outside the file's group
/// (as `setattr_should_drop_sgid` in the kernel).
fn kill_sgid_always(h: &Header, a: &Attr) -> bool {
    a.perm & 0o2000 != 0 && !privileged(h) && !in_group(h, a.gid)
}

/// Whether the caller is in group `gid`: its primary group, or one of its
/// supplementary groups (FUSE passes only the primary one, so they are read
/// from `/proc`; only a privilege drop on a set-group-ID file asks).
fn in_group(h: &Header, gid: u32) -> bool {
    if h.gid == gid {
        return true;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid)).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}

fn cred(h: &Header) -> Cred {
    Cred { uid: h.uid, gid: h.gid, groups: Vec::new() }
}

/// Bytes added to the stats attribute's size when the kernel asks for it.
const STATS_SLACK: u32 = 1024;

fn is_stats(ino: u64, name: &[u8]) -> bool {
    ino == engine::ROOT && name == STATS_XATTR.as_bytes()
}

/// A `listxattr` list without its `trusted.` names: the kernel lets only
/// `CAP_SYS_ADMIN` read them (overlayfs keeps its `trusted.overlay.*` there)
/// and, for FUSE, leaves hiding their names from others to the file system,
/// as tmpfs's `simple_xattr_list` hides them.
fn hide_trusted(list: Vec<u8>) -> Vec<u8> {
    if !list.windows(8).any(|w| w == b"trusted.") {
        return list;
    }
    let mut out = Vec::with_capacity(list.len());
    for name in list.split_inclusive(|&b| b == 0) {
        if !name.starts_with(b"trusted.") {
            out.extend_from_slice(name);
        }
    }
    out
}

fn is_save(ino: u64, name: &[u8]) -> bool {
    ino == engine::ROOT && name == crate::save::SAVE_XATTR.as_bytes()
}

/// An xattr value or list for a `size`-byte buffer (0: its size).
fn xattr_reply(reply: Reply<'_>, res: Result<Vec<u8>, i32>, size: u32, slack: u32) {
    match res {
        Ok(v) if size == 0 => reply.xattr_size(v.len() as u32 + slack),
        Ok(v) if v.len() > size as usize => reply.error(libc::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

// The inode-flag ioctls (`linux/fs.h`), as the kernel's `fuse_priv_ioctl`
// sends them: the native and 32-bit numbers of `FS_IOC_GETFLAGS` and
// `FS_IOC_SETFLAGS` (an `int` either way) and the `struct fsxattr` pair.
const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC32_GETFLAGS: u32 = 0x8004_6601;
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

/// The inode flags the engine knows; [`FS_FLAGS`] and [`XFLAGS`] hold the
/// kernel's bit for each, in this order.
const INODE_FLAGS: [u32; 4] = [inode_flags::IMMUTABLE, inode_flags::APPEND, inode_flags::NODUMP, inode_flags::NOATIME];
/// `FS_IMMUTABLE_FL`, `FS_APPEND_FL`, `FS_NODUMP_FL`, `FS_NOATIME_FL`.
const FS_FLAGS: [u32; 4] = [0x10, 0x20, 0x40, 0x80];
/// `FS_XFLAG_IMMUTABLE`, `_APPEND`, `_NODUMP`, `_NOATIME`.
const XFLAGS: [u32; 4] = [0x8, 0x10, 0x80, 0x40];
/// `FS_XFLAG_PREALLOC | FS_XFLAG_HASATTR`: reported by some filesystems,
/// ignored when set.
const FS_XFLAG_READ_ONLY: u32 = 0x2 | 0x8000_0000;

/// `struct fsxattr`: five `u32`s (`xflags`, `extsize`, `nextents`,
/// `projid`, `cowextsize`) and 8 bytes of padding.
const FSXATTR_BYTES: usize = 28;

/// The kernel's bits (of `table`: [`FS_FLAGS`] or [`XFLAGS`]) for the
/// inode flags in `Attr::flags`.
fn kernel_flags(flags: u32, table: &[u32; 4]) -> u32 {
    INODE_FLAGS.iter().zip(table).filter(|(f, _)| flags & **f != 0).fold(0, |acc, (_, k)| acc | k)
}

/// The engine's inode flags for kernel flags `k` (of `table`'s kind);
/// `EOPNOTSUPP` for a bit the engine does not know (tmpfs: the same for
/// any it does not keep).
fn inode_flags_of(k: u32, table: &[u32; 4]) -> Result<u32, i32> {
    let known = table.iter().fold(0, |acc, b| acc | b);
    if k & !known != 0 {
        return Err(libc::EOPNOTSUPP);
    }
    Ok(INODE_FLAGS.iter().zip(table).filter(|(_, b)| k & **b != 0).fold(0, |acc, (f, _)| acc | f))
}

fn empty(reply: Reply<'_>, r: Result<(), i32>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for SectorFs {
    fn init(&mut self, offered: u64, cfg: &mut InitConfig) {
        // Ask for each capability on its own: one the kernel lacks does not
        // cost the others.
        let mut want = match self.cache {
            CacheMode::Direct => abi::FUSE_DIRECT_IO_ALLOW_MMAP,
            CacheMode::Writethrough => 0,
            CacheMode::Writeback => abi::FUSE_WRITEBACK_CACHE,
        };
        want |= abi::FUSE_PARALLEL_DIROPS
            | abi::FUSE_DO_READDIRPLUS
            | abi::FUSE_READDIRPLUS_AUTO
            | abi::FUSE_CACHE_SYMLINKS
            | abi::FUSE_HANDLE_KILLPRIV_V2
            | abi::FUSE_SETXATTR_EXT;
        // POSIX ACLs: the kernel checks them (and turns on
        // default_permissions), and sends the umask with unmasked modes
        // (FUSE_DONT_MASK) so the engine applies a default ACL or the umask.
        if self.engine.config().posix_acl {
            want |= abi::FUSE_POSIX_ACL | abi::FUSE_DONT_MASK;
        }
        if self.want_uring {
            want |= abi::FUSE_OVER_IO_URING;
        }
        let missing = want & !offered;
        if missing != 0 {
            log::warn!("kernel lacks FUSE capabilities {missing:#x}");
        }
        cfg.want |= want;
        self.dont_mask = offered & abi::FUSE_DONT_MASK != 0 && self.engine.config().posix_acl;
        cfg.max_write = MAX_WRITE;
        cfg.max_background = 64;
    }

    fn handle(&self, req: Request<'_>, reply: Reply<'_>) {
        let h = &req.header;
        let ino = h.nodeid;
        match req.op {
            Op::Lookup { name } => {
                self.req.count(Counted::Lookup);
                match call(|| self.engine.lookup(ino, name)) {
                    Ok(a) => reply.entry(&self.entry_out(&a)),
                    Err(libc::ENOENT) if self.cache_negative => {
                        // An entry for inode 0: a negative dentry, cached.
                        let out = abi::fuse_entry_out {
                            entry_valid: self.entry_ttl.as_secs(),
                            entry_valid_nsec: self.entry_ttl.subsec_nanos(),
                            ..Default::default()
                        };
                        reply.entry(&out)
                    }
                    Err(e) => reply.error(e),
                }
            }
            Op::Forget { nlookup } => {
                self.req.count(Counted::Forget);
                let _ = call(|| {
                    self.engine.forget(ino, nlookup);
                    Ok(())
                });
                reply.no_reply();
            }
            Op::BatchForget(nodes) => {
                self.req.count(Counted::BatchForget);
                for (ino, nlookup) in nodes {
                    let _ = call(|| {
                        self.engine.forget(ino, nlookup);
                        Ok(())
                    });
                }
                reply.no_reply();
            }
            Op::Getattr { .. } => {
                self.req.count(Counted::Getattr);
                match call(|| self.engine.getattr(ino)) {
                    Ok(a) => reply.attr(&self.attr_out(&a)),
                    Err(e) => reply.error(e),
                }
            }
            Op::Setattr(s) => {
                self.req.count(Counted::Setattr);
                match self.setattr(h, &s) {
                    Ok(a) => reply.attr(&self.attr_out(&a)),
                    Err(e) => reply.error(e),
                }
            }
            Op::Readlink => {
                self.req.count(Counted::Readlink);
                match call(|| self.engine.readlink(ino)) {
                    Ok(t) => reply.data(&t),
                    Err(e) => reply.error(e),
                }
            }
            Op::Mknod { name, mode, rdev, umask } => {
                self.req.count(Counted::Mknod);
                let (mode, umask) = self.mode_umask(mode, umask);
                let owner = Cred { uid: h.uid, gid: h.gid, groups: Vec::new() };
                self.entry(reply, call(|| self.engine.mknod_umask(ino, name, mode, umask, rdev, owner)));
            }
            Op::Mkdir { name, mode, umask } => {
                self.req.count(Counted::Mkdir);
                let (mode, umask) = self.mode_umask(mode, umask);
                self.entry(reply, call(|| self.engine.mkdir_umask(ino, name, mode, umask, h.uid, h.gid)));
            }
            Op::Unlink { name } => {
                self.req.count(Counted::Unlink);
                empty(reply, call(|| self.engine.unlink(ino, name)));
            }
            Op::Rmdir { name } => {
                self.req.count(Counted::Rmdir);
                empty(reply, call(|| self.engine.rmdir(ino, name)));
            }
            Op::Symlink { name, target } => {
                self.req.count(Counted::Symlink);
                self.entry(reply, call(|| self.engine.symlink(ino, name, target, h.uid, h.gid)));
            }
            Op::Rename { newdir, flags, name, newname } => {
                self.req.count(Counted::Rename);
                // Translate bit by bit; anything else is refused. The kernel
                // checked CAP_MKNOD for RENAME_WHITEOUT (overlayfs renaming in
                // its upper layer); the whiteout is the caller's (fsuid/fsgid).
                let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT;
                let mut f = 0;
                if flags & libc::RENAME_NOREPLACE != 0 {
                    f |= rename_flags::NOREPLACE;
                }
                if flags & libc::RENAME_EXCHANGE != 0 {
                    f |= rename_flags::EXCHANGE;
                }
                if flags & libc::RENAME_WHITEOUT != 0 {
                    f |= rename_flags::WHITEOUT;
                }
                let res = if flags & !known == 0 {
                    call(|| self.engine.rename_as(ino, name, newdir, newname, f, &cred(h)))
                } else {
                    Err(libc::EINVAL)
                };
                empty(reply, res);
            }
            Op::Link { oldnodeid, name } => {
                self.req.count(Counted::Link);
                self.entry(reply, call(|| self.engine.link(oldnodeid, ino, name)));
            }
            Op::Open { flags, .. } => {
                self.req.count(Counted::Open);
                // Not FUSE_ATOMIC_O_TRUNC: the kernel strips O_TRUNC here and
                // truncates with a SETATTR under the inode's lock, which
                // orders it against writes. A truncating OPEN is not under
                // that lock: an O_APPEND writer that had taken the old size
                // as its offset then wrote there, after the truncate, and
                // the file began with that many NUL bytes (a probe's `: >
                // log` beside a logging process; tmpfs: none).
                let write = flags as i32 & libc::O_ACCMODE != libc::O_RDONLY;
                let append = flags as i32 & libc::O_APPEND != 0;
                match call(|| self.engine.open_for(ino, write, append)) {
                    Ok(_) => reply.open(0, self.fopen),
                    Err(e) => reply.error(e),
                }
            }
            Op::Read(r) => {
                self.req.count(Counted::Read);
                self.read(ino, r.offset, r.size, r.flags as i32 & libc::O_NOATIME != 0, reply);
            }
            Op::Write { arg, data } => {
                self.req.count(Counted::Write);
                // The kernel resolves O_APPEND (in every --cache mode): always write
                // at the offset given. It sends writes that must drop privileges
                // (FUSE_HANDLE_KILLPRIV_V2) through, flagged, instead of caching them.
                let kill = arg.write_flags & abi::FUSE_WRITE_KILL_SUIDGID != 0;
                // Page-cache writeback (stores through a shared mapping; every
                // write with --cache writeback) takes any count as the whole:
                // the kernel would drop what a short write left out. So there a
                // write that does not fit fails (after storing what fits), and
                // the kernel keeps the error for the file's next fsync, msync
                // or close. A write(2) gets the short count (POSIX).
                let cached = arg.write_flags & abi::FUSE_WRITE_CACHE != 0;
                match call(|| {
                    if kill {
                        self.kill_suidgid(h, ino)?;
                    }
                    let stored = if cached {
                        self.engine.write_cached(ino, arg.offset, data)
                    } else {
                        self.engine.write(ino, arg.offset, data)
                    };
                    let n = match stored {
                        Err(Error::NoSpace) if cached => 0,
                        r => r?,
                    };
                    if cached && n < data.len() {
                        self.writeback_refused.fetch_add((data.len() - n) as u64, Ordering::Relaxed);
                        return Err(engine::Error::NoSpace);
                    }
                    Ok(n)
                }) {
                    Ok(n) => reply.written(n as u32),
                    Err(e) => reply.error(e),
                }
            }
            Op::Statfs => {
                self.req.count(Counted::Statfs);
                match call(|| Ok(self.engine.statfs())) {
                    Ok(s) => reply.statfs(abi::fuse_kstatfs {
                        blocks: s.blocks,
                        bfree: s.bfree,
                        bavail: s.bavail,
                        files: s.files,
                        ffree: s.ffree,
                        bsize: s.bsize,
                        namelen: s.namelen,
                        frsize: s.bsize,
                        ..Default::default()
                    }),
                    Err(e) => reply.error(e),
                }
            }
            Op::Release(_) => {
                self.req.count(Counted::Release);
                empty(
                    reply,
                    call(|| {
                        self.engine.release(ino);
                        Ok(())
                    }),
                );
            }
            Op::Flush(_) => {
                self.req.count(Counted::Flush);
                // Nothing is buffered in the daemon. ENOSYS tells the kernel never to
                // send FLUSH again (one round trip less per close); it still writes
                // back dirty pages and reports their errors (ENOSPC) at close.
                reply.error(libc::ENOSYS);
            }
            Op::Fsync { .. } => {
                self.req.count(Counted::Fsync);
                // A RAM disk has nothing to make durable. ENOSYS: the kernel stops
                // sending FSYNC but still writes back and reports errors first.
                reply.error(libc::ENOSYS);
            }
            Op::Fsyncdir { .. } => {
                self.req.count(Counted::Fsyncdir);
                reply.error(libc::ENOSYS);
            }
            Op::Syncfs => {
                self.req.count(Counted::Syncfs);
                reply.ok();
            }
            Op::Ioctl { arg, data } => {
                self.req.count(Counted::Ioctl);
                match self.ioctl(h, &arg, data) {
                    Ok(out) => reply.ioctl(0, &out[..out.len().min(arg.out_size as usize)]),
                    Err(e) => reply.error(e),
                }
            }
            Op::Opendir { .. } => {
                self.req.count(Counted::Opendir);
                // Readdir offsets are engine cookies; a handle holds where
                // its listing ends (`readdir`). Answered, and without
                // FOPEN_CACHE_DIR: the kernel then keeps no copy of the
                // listing. Under FUSE_NO_OPENDIR_SUPPORT (ENOSYS here) it
                // caches every listing and an open one went on returning
                // entries deleted after it began (a probe: 12,286-20,000 of
                // 20,000 deleted names; tmpfs, the 1,022 of the reader's
                // first buffer).
                let fh = self.next_dir_fh.fetch_add(1, Ordering::Relaxed);
                self.dir_ends.insert(DirHandle(Arc::new(DirEnd { fh, end: AtomicU64::new(u64::MAX) })));
                reply.open(fh, 0);
            }
            Op::Readdir(r) => {
                self.req.count(Counted::Readdir);
                self.readdir(ino, &r, false, reply);
            }
            Op::Readdirplus(r) => {
                self.req.count(Counted::Readdirplus);
                self.readdir(ino, &r, true, reply);
            }
            Op::Releasedir(r) => {
                self.req.count(Counted::Releasedir);
                self.dir_ends.remove(&r.fh);
                reply.ok();
            }
            Op::Setxattr { name, value, flags, setxattr_flags } => {
                self.req.count(Counted::Setxattr);
                empty(reply, self.setxattr(h, name, value, flags, setxattr_flags));
            }
            Op::Getxattr { name, size } => {
                self.req.count(Counted::Getxattr);
                // The stats change between a size probe and the read that
                // follows (getfattr): room for them to grow, not ERANGE.
                if is_stats(ino, name) {
                    xattr_reply(reply, Ok(self.stats_json()), size, STATS_SLACK);
                } else if let (true, Some(s)) = (is_save(ino, name), &self.saver) {
                    xattr_reply(reply, Ok(s.status_json()), size, STATS_SLACK);
                } else {
                    xattr_reply(reply, call(|| self.engine.getxattr(ino, name)), size, 0);
                }
            }
            Op::Listxattr { size } => {
                self.req.count(Counted::Listxattr);
                let mut list = call(|| self.engine.listxattr(ino));
                if !privileged(h) {
                    list = list.map(hide_trusted);
                }
                xattr_reply(reply, list, size, 0);
            }
            Op::Removexattr { name } => {
                self.req.count(Counted::Removexattr);
                let res = if is_stats(ino, name) || is_save(ino, name) {
                    Err(libc::EPERM)
                } else {
                    call(|| self.engine.removexattr(ino, name))
                };
                empty(reply, res);
            }
            Op::Access { mask } => {
                self.req.count(Counted::Access);
                // Only called without `default_permissions` (never by `sectorfs mount`).
                empty(reply, call(|| self.engine.access(ino, mask & 7, &cred(h))));
            }
            Op::Create { arg, name } => {
                self.req.count(Counted::Create);
                match call(|| self.create_open(h, name, &arg)) {
                    Ok(a) => reply.create(&self.entry_out(&a), 0, self.fopen),
                    Err(e) => reply.error(e),
                }
            }
            Op::Tmpfile { arg } => {
                self.req.count(Counted::Tmpfile);
                // Opened once and referenced once by the engine, as CREATE.
                let (mode, umask) = self.mode_umask(arg.mode, arg.umask);
                match call(|| self.engine.tmpfile_umask(ino, mode, umask, h.uid, h.gid)) {
                    Ok(a) => reply.create(&self.entry_out(&a), 0, self.fopen),
                    Err(e) => reply.error(e),
                }
            }
            Op::Fallocate(f) => {
                self.req.count(Counted::Fallocate);
                // The kernel's file_modified() leaves dropping privileges to us
                // (FUSE_HANDLE_KILLPRIV_V2).
                empty(
                    reply,
                    call(|| {
                        if !privileged(h) {
                            self.kill_suidgid(h, ino)?;
                        }
                        self.engine.fallocate(ino, f.mode, f.offset, f.length)
                    }),
                );
            }
            Op::Lseek(l) => {
                self.req.count(Counted::Lseek);
                // The kernel resolves SEEK_SET/CUR/END itself; only DATA/HOLE come here.
                let res = match l.whence as i32 {
                    _ if (l.offset as i64) < 0 => Err(libc::ENXIO),
                    libc::SEEK_DATA | libc::SEEK_HOLE => {
                        call(|| self.engine.seek(ino, l.offset, l.whence as i32 == libc::SEEK_DATA))
                    }
                    _ => Err(libc::EINVAL),
                };
                match res {
                    Ok(off) => reply.offset(off),
                    Err(e) => reply.error(e),
                }
            }
            Op::CopyFileRange { arg, wide } => {
                self.req.count(Counted::CopyFileRange);
                // The narrow reply carries a u32: copy at most 1 GiB per
                // request then (callers loop on short copies).
                let len = if wide { arg.len } else { arg.len.min(1 << 30) };
                let res = if arg.flags == 0 {
                    call(|| {
                        if !privileged(h) {
                            self.kill_suidgid(h, arg.nodeid_out)?;
                        }
                        self.engine.copy_file_range(ino, arg.off_in, arg.nodeid_out, arg.off_out, len)
                    })
                } else {
                    Err(libc::EINVAL)
                };
                match res {
                    Ok(n) if wide => reply.copied(n),
                    Ok(n) => reply.written(n as u32),
                    Err(e) => reply.error(e),
                }
            }
            Op::Statx(_) => {
                self.req.count(Counted::Statx);
                self.statx(h, reply);
            }
            // The session answers the rest itself.
            _ => reply.error(libc::ENOSYS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CREATE that finds its name taken opens the file as open(2) would,
    /// with open(2)'s permission checks: O_TRUNC needs write permission in
    /// any access mode (the kernel, taking the file for a new one, checked
    /// nothing). A reader's O_RDONLY|O_CREAT|O_TRUNC emptied the file.
    #[test]
    fn a_create_that_finds_the_name_checks_o_trunc_for_write() {
        let e = Arc::new(Engine::new(engine::Config { posix_acl: true, ..engine::Config::default() }).unwrap());
        let f = e.create(engine::ROOT, b"f", 0o644, 0, 0).unwrap().ino;
        e.write(f, 0, b"kept").unwrap();
        let fs = SectorFs::new(e.clone(), CacheMode::Direct, Arc::new(Telemetry::new(e.clone())));
        let reader = Header { unique: 1, opcode: 35, nodeid: engine::ROOT, uid: 1000, gid: 1000, pid: 1 };
        let flags = (libc::O_RDONLY | libc::O_CREAT | libc::O_TRUNC) as u32;
        assert_eq!(fs.open_existing(&reader, engine::ROOT, b"f", flags).map(|a| a.ino), Err(Error::Access));
        assert_eq!(e.getattr(f).unwrap().size, 4, "the reader emptied the file");
        // Reading it without O_TRUNC is allowed; the owner may truncate.
        let flags = (libc::O_RDONLY | libc::O_CREAT) as u32;
        assert_eq!(fs.open_existing(&reader, engine::ROOT, b"f", flags).map(|a| a.ino), Ok(f));
        let owner = Header { uid: 0, gid: 0, ..reader };
        let flags = (libc::O_RDONLY | libc::O_CREAT | libc::O_TRUNC) as u32;
        assert_eq!(fs.open_existing(&owner, engine::ROOT, b"f", flags).map(|a| a.ino), Ok(f));
        assert_eq!(e.getattr(f).unwrap().size, 0);
    }

    #[test]
    fn errno_table_passes_through() {
        assert_eq!(Error::NotFound.errno(), libc::ENOENT);
        assert_eq!(Error::NotEmpty.errno(), libc::ENOTEMPTY);
        assert_eq!(Error::NoSpace.errno(), libc::ENOSPC);
        assert_eq!(Error::NoSuchOffset.errno(), libc::ENXIO);
        assert_eq!(Error::NoData.errno(), libc::ENODATA);
    }

    #[test]
    fn trusted_names_hidden() {
        assert_eq!(hide_trusted(b"user.a\0trusted.overlay.opaque\0security.x\0".to_vec()), b"user.a\0security.x\0");
        assert_eq!(hide_trusted(b"trusted.a\0".to_vec()), b"");
        assert_eq!(hide_trusted(b"user.trusted.a\0".to_vec()), b"user.trusted.a\0");
        assert_eq!(hide_trusted(Vec::new()), b"");
    }

    #[test]
    fn panics_become_eio() {
        let r: Result<(), i32> = call(|| panic!("boom"));
        assert_eq!(r, Err(libc::EIO));
        assert_eq!(call(|| Ok(3)), Ok(3));
    }

    #[test]
    fn attr_conversion() {
        let e = Engine::new(engine::Config::default()).unwrap();
        let a = e.getattr(engine::ROOT).unwrap();
        let f = fuse_attr(&a);
        assert_eq!(f.ino, abi::FUSE_ROOT_ID);
        assert_eq!(f.mode, libc::S_IFDIR | 0o1777);
        assert_eq!(f.nlink, 2);
    }
}
