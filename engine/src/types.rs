//! Plain value types of the engine's API.

/// An inode number. The root is [`ROOT`]; numbers are never reused.
pub type Ino = u64;

/// The root directory's inode number.
pub const ROOT: Ino = 1;

/// Longest name component, in bytes.
pub const NAME_MAX: usize = 255;
/// Longest symlink target, in bytes.
pub const PATH_MAX: usize = 4096;
/// Longest extended attribute value, in bytes.
pub const XATTR_SIZE_MAX: usize = 65536;
/// Longest list of a node's extended attribute names (each with its NUL),
/// in bytes: what `listxattr(2)` can return (Linux `XATTR_LIST_MAX`).
pub const XATTR_LIST_MAX: usize = 65536;
/// Most hard links to one file: the 32-bit link count's limit, as tmpfs
/// has no other (ext4 stops at 65,000; a build cache that hard-links one
/// object into many trees may pass that). The metadata limit (each link is
/// a directory entry) is reached long before.
pub const LINK_MAX: u32 = u32::MAX - 1;

/// What kind of node an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
    /// A unix socket node.
    Socket,
}

impl FileType {
    /// The `S_IFMT` bits of this type.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => 0o100000,
            FileType::Directory => 0o040000,
            FileType::Symlink => 0o120000,
            FileType::Fifo => 0o010000,
            FileType::CharDevice => 0o020000,
            FileType::BlockDevice => 0o060000,
            FileType::Socket => 0o140000,
        }
    }

    /// The type named by the `S_IFMT` bits of `mode`, if any.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        Some(match mode & 0o170000 {
            0o100000 | 0 => FileType::Regular,
            0o040000 => FileType::Directory,
            0o120000 => FileType::Symlink,
            0o010000 => FileType::Fifo,
            0o020000 => FileType::CharDevice,
            0o060000 => FileType::BlockDevice,
            0o140000 => FileType::Socket,
            _ => return None,
        })
    }
}

/// When reads update a node's access time (the mount options `noatime`,
/// `relatime` and `strictatime`). Reads of regular files, directory
/// listings and symlink reads count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Atime {
    /// Never: reads change nothing (`noatime`; the engine's default).
    #[default]
    Never,
    /// The first read after the node changed (access time not after its
    /// modification or change time), or a day after the last update
    /// (`relatime`, Linux's default and the mount's): a node read over and
    /// over is updated once, and the read path stays a few comparisons.
    Relative,
    /// Every read (`strictatime`): each read publishes a new version.
    Always,
}

impl Atime {
    /// Whether a read of a node with these times updates its access time.
    pub fn due(self, atime: Time, mtime: Time, ctime: Time) -> bool {
        match self {
            Atime::Never => false,
            Atime::Always => true,
            Atime::Relative => {
                atime <= mtime || atime <= ctime || Time::coarse_secs().saturating_sub(atime.secs) >= 24 * 3600
            }
        }
    }
}

/// A point in time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time {
    /// Seconds since the epoch (negative before it).
    pub secs: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Time {
    /// The current wall-clock time.
    pub fn now() -> Time {
        Time::from(std::time::SystemTime::now())
    }

    /// Seconds since the epoch, from the kernel's coarse clock where there
    /// is one (a few milliseconds behind, a few nanoseconds to read: the
    /// `relatime` check runs on every read).
    pub fn coarse_secs() -> i64 {
        #[cfg(all(target_os = "linux", not(loom)))]
        {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `ts` is a valid, writable timespec for the call.
            if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
                return ts.tv_sec;
            }
        }
        Time::now().secs
    }
}

impl From<std::time::SystemTime> for Time {
    fn from(t: std::time::SystemTime) -> Time {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Time { secs: d.as_secs() as i64, nanos: d.subsec_nanos() },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Time { secs: -(d.as_secs() as i64), nanos: 0 }
                } else {
                    Time { secs: -(d.as_secs() as i64) - 1, nanos: 1_000_000_000 - d.subsec_nanos() }
                }
            }
        }
    }
}

impl From<Time> for std::time::SystemTime {
    fn from(t: Time) -> std::time::SystemTime {
        let nanos = std::time::Duration::from_nanos(u64::from(t.nanos));
        if t.secs >= 0 {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.secs as u64) + nanos
        } else {
            std::time::UNIX_EPOCH - std::time::Duration::from_secs(t.secs.unsigned_abs()) + nanos
        }
    }
}

/// The attributes of an inode, as `stat(2)` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Node type.
    pub kind: FileType,
    /// Permission bits, including set-user-ID, set-group-ID and sticky (`0o7777`).
    pub perm: u32,
    /// Hard link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number for device nodes.
    pub rdev: u32,
    /// Size in bytes.
    pub size: u64,
    /// 512-byte blocks of memory held.
    pub blocks: u64,
    /// Preferred I/O size (the sector size, at least [`crate::engine::PREFERRED_IO`]).
    pub blksize: u32,
    /// Last access.
    pub atime: Time,
    /// Last data change.
    pub mtime: Time,
    /// Last status change.
    pub ctime: Time,
    /// Creation (birth) time.
    pub crtime: Time,
    /// Windows file attributes (opaque to the engine) in the bits below
    /// 24, and the engine's inode flags ([`inode_flags`]) above.
    pub flags: u32,
}

/// A time to set: now, or a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// The current time.
    Now,
    /// This time.
    At(Time),
}

/// Which attributes to change (`None`: leave as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    /// New permission bits (only `0o7777` is kept).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (regular files only).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
    /// New status change time (otherwise it is set to now on any change).
    pub ctime: Option<Time>,
    /// New creation time.
    pub crtime: Option<Time>,
    /// New Windows file attributes (the bits of [`Attr::flags`] below the
    /// inode flags, which stay).
    pub flags: Option<u32>,
    /// New inode flags ([`inode_flags`], as `chattr(1)` sets them): only
    /// these bits of [`Attr::flags`] change. `NotSupported` if any is
    /// outside [`inode_flags::SETTABLE`].
    pub inode_flags: Option<u32>,
    /// Drop privileges as a write, truncate or chown does (non-directories
    /// only): clear the set-user-ID bit, the set-group-ID bit where group
    /// execute is set, and the `security.capability` attribute. Applied
    /// after `mode`.
    pub kill_suidgid: bool,
    /// With `kill_suidgid`: clear the set-group-ID bit even without group
    /// execute (the caller is outside the file's group and unprivileged).
    pub kill_sgid: bool,
    /// The kernel's write-back of the modification and change times it
    /// kept for writes through its cache (FUSE's writeback cache flushes
    /// them with the data): as `Engine::write_cached`, chattr `i` and `a`
    /// do not refuse it. Only `mtime` and `ctime` may be set with it.
    pub cached_times: bool,
}

/// `renameat2(2)` flags.
pub mod rename_flags {
    /// Fail with `Exists` if the target exists.
    pub const NOREPLACE: u32 = 1;
    /// Atomically swap source and target (both must exist).
    pub const EXCHANGE: u32 = 2;
    /// Leave a whiteout (a character device 0/0, mode 0) at the source
    /// name in the same step (overlayfs upper layers); not with `EXCHANGE`.
    pub const WHITEOUT: u32 = 4;
}

/// Inode flags, the Linux `FS_IOC_GETFLAGS` flags the engine keeps (in
/// [`Attr::flags`] above the Windows attributes, which use the bits below
/// 24). As on tmpfs, a new node inherits `NODUMP` and `NOATIME` from its
/// directory.
pub mod inode_flags {
    /// `chattr +i`: the file cannot be changed, renamed, linked or
    /// removed, nor can entries of a directory (`Permission`, to root too,
    /// as Linux; only the flags themselves can be changed). Not inherited.
    pub const IMMUTABLE: u32 = 1 << 24;
    /// `chattr +a`: data can only be added at the end (writes below the
    /// size, truncation and `fallocate` other than a reservation are
    /// `Permission`); the file cannot be renamed, linked or removed, nor
    /// its mode, owner, times or extended attributes changed; a directory
    /// takes new entries but loses none. Not inherited.
    pub const APPEND: u32 = 1 << 25;
    /// `chattr +d`: not for `dump(8)` and the backup tools that honour it.
    pub const NODUMP: u32 = 1 << 26;
    /// `chattr +A`: reads do not update the access time.
    pub const NOATIME: u32 = 1 << 27;
    /// The flags the engine keeps and acts on.
    pub const SETTABLE: u32 = IMMUTABLE | APPEND | NODUMP | NOATIME;
    /// The flags that forbid changes ([`IMMUTABLE`], [`APPEND`]).
    pub const GUARDS: u32 = IMMUTABLE | APPEND;
    /// The flags a new node takes from its directory.
    pub const INHERITED: u32 = NODUMP | NOATIME;
    /// Every bit of [`super::Attr::flags`] that is an inode flag.
    pub const ALL: u32 = 0xff << 24;
}

/// `setxattr(2)` flags.
pub mod xattr_flags {
    /// Fail with `Exists` if the attribute exists.
    pub const CREATE: u32 = 1;
    /// Fail with `NoData` if the attribute does not exist.
    pub const REPLACE: u32 = 2;
}

/// One directory entry as `readdir` reports it.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    /// Inode number.
    pub ino: Ino,
    /// Node type.
    pub kind: FileType,
    /// Name as created.
    pub name: &'a [u8],
    /// The offset to pass to resume after this entry.
    pub next: u64,
}

/// File system totals, as `statfs(2)` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Block size the counts are in.
    pub bsize: u32,
    /// Total blocks (the memory limit).
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Inode limit.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Longest name.
    pub namelen: u32,
}

/// Caller identity for permission checks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cred {
    /// Effective user.
    pub uid: u32,
    /// Effective group.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// `access(2)` mask bits.
pub mod access_mask {
    /// Read.
    pub const R: u32 = 4;
    /// Write.
    pub const W: u32 = 2;
    /// Execute or search.
    pub const X: u32 = 1;
}
