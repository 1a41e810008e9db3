//! The FUSE transport's ceiling on this machine: a file system with the same
//! fuser settings as `sectorfs mount` (threads, cloned fds, capabilities,
//! TTLs, max write, and the `--cache` mode's open flags) that keeps only
//! names and sizes and answers every request at once from memory. Writes are
//! acknowledged and dropped; reads return zeros. `mount_bench` runs it beside
//! tmpfs and sectorfs, so every row reads "x of tmpfs" and "x of the
//! ceiling" from one run.
//!
//! Usage: `nullfs MOUNTPOINT [--cache direct|writethrough|writeback]
//! [--threads N]`; stays in the foreground, prints `nullfs: mounted ...` once
//! it serves, unmounts on SIGINT/SIGTERM or an external `umount`.

#[cfg(target_os = "linux")]
fn main() {
    std::process::exit(linux::main());
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("nullfs: only for Linux (FUSE)");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashMap;
    use std::ffi::{OsStr, OsString};
    use std::io::{self, Write};
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    use fuser::{
        Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
        MountOption, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
        ReplyStatfs, ReplyWrite, ReplyXattr, Request, Session, SessionACL, TimeOrNow, WriteFlags,
    };

    /// As `sectorfs mount` (`mount/src/fuse_fs.rs`).
    const TTL: Duration = Duration::from_secs(24 * 3600);
    const MAX_WRITE: u32 = 1 << 20;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Cache {
        Direct,
        Writethrough,
        Writeback,
    }

    struct Node {
        attr: FileAttr,
        /// Directories: name → inode.
        entries: HashMap<OsString, u64>,
    }

    struct Tree {
        nodes: HashMap<u64, Node>,
        next: u64,
    }

    struct NullFs {
        tree: Mutex<Tree>,
        cache: Cache,
    }

    fn attr(ino: u64, kind: FileType, perm: u16, uid: u32, gid: u32) -> FileAttr {
        let now = SystemTime::now();
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    impl NullFs {
        fn new(cache: Cache) -> NullFs {
            // SAFETY: geteuid/getegid have no preconditions.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            let root = Node { attr: attr(1, FileType::Directory, 0o1777, uid, gid), entries: HashMap::new() };
            NullFs { tree: Mutex::new(Tree { nodes: HashMap::from([(1, root)]), next: 2 }), cache }
        }

        fn fopen(&self) -> FopenFlags {
            match self.cache {
                Cache::Direct => FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
                _ => FopenFlags::FOPEN_KEEP_CACHE,
            }
        }

        fn make(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            kind: FileType,
            mode: u32,
        ) -> Result<FileAttr, Errno> {
            let mut t = self.tree.lock().unwrap();
            let ino = t.next;
            let dir = t.nodes.get_mut(&parent.0).ok_or(Errno::ENOENT)?;
            if dir.entries.contains_key(name) {
                return Err(Errno::EEXIST);
            }
            dir.entries.insert(name.to_owned(), ino);
            t.next += 1;
            let a = attr(ino, kind, (mode & 0o7777) as u16, req.uid(), req.gid());
            t.nodes.insert(ino, Node { attr: a, entries: HashMap::new() });
            Ok(a)
        }

        fn remove(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
            let mut t = self.tree.lock().unwrap();
            let dir = t.nodes.get_mut(&parent.0).ok_or(Errno::ENOENT)?;
            let ino = dir.entries.remove(name).ok_or(Errno::ENOENT)?;
            t.nodes.remove(&ino);
            Ok(())
        }
    }

    impl Filesystem for NullFs {
        fn init(&mut self, _req: &Request, cfg: &mut KernelConfig) -> io::Result<()> {
            let data_path = match self.cache {
                Cache::Direct => Some(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP),
                Cache::Writethrough => None,
                Cache::Writeback => Some(InitFlags::FUSE_WRITEBACK_CACHE),
            };
            for cap in data_path.into_iter().chain([
                // (No readdirplus: the bench lists no directory, and plain
                // readdir is enough for `ls` by hand.)
                InitFlags::FUSE_PARALLEL_DIROPS,
                InitFlags::FUSE_CACHE_SYMLINKS,
                InitFlags::FUSE_HANDLE_KILLPRIV_V2,
                InitFlags::FUSE_NO_OPENDIR_SUPPORT,
            ]) {
                let _ = cfg.add_capabilities(cap);
            }
            if let Err(n) = cfg.set_max_write(MAX_WRITE) {
                let _ = cfg.set_max_write(n);
            }
            if let Err(n) = cfg.set_max_background(64) {
                let _ = cfg.set_max_background(n);
            }
            Ok(())
        }

        fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
            let t = self.tree.lock().unwrap();
            match t.nodes.get(&parent.0).and_then(|d| d.entries.get(name)).and_then(|i| t.nodes.get(i)) {
                Some(n) => reply.entry(&TTL, &n.attr, Generation(0)),
                None => reply.error(Errno::ENOENT),
            }
        }

        fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
            match self.tree.lock().unwrap().nodes.get(&ino.0) {
                Some(n) => reply.attr(&TTL, &n.attr),
                None => reply.error(Errno::ENOENT),
            }
        }

        fn setattr(
            &self,
            _req: &Request,
            ino: INodeNo,
            mode: Option<u32>,
            uid: Option<u32>,
            gid: Option<u32>,
            size: Option<u64>,
            atime: Option<TimeOrNow>,
            mtime: Option<TimeOrNow>,
            _ctime: Option<SystemTime>,
            _fh: Option<FileHandle>,
            _crtime: Option<SystemTime>,
            _chgtime: Option<SystemTime>,
            _bkuptime: Option<SystemTime>,
            _flags: Option<fuser::BsdFileFlags>,
            reply: ReplyAttr,
        ) {
            let mut t = self.tree.lock().unwrap();
            let Some(n) = t.nodes.get_mut(&ino.0) else { return reply.error(Errno::ENOENT) };
            let time = |x: TimeOrNow| match x {
                TimeOrNow::Now => SystemTime::now(),
                TimeOrNow::SpecificTime(t) => t,
            };
            if let Some(m) = mode {
                n.attr.perm = (m & 0o7777) as u16;
            }
            n.attr.uid = uid.unwrap_or(n.attr.uid);
            n.attr.gid = gid.unwrap_or(n.attr.gid);
            if let Some(s) = size {
                n.attr.size = s;
            }
            if let Some(a) = atime {
                n.attr.atime = time(a);
            }
            if let Some(m) = mtime {
                n.attr.mtime = time(m);
            }
            reply.attr(&TTL, &n.attr);
        }

        fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
            match self.make(req, parent, name, FileType::Directory, mode) {
                Ok(a) => reply.entry(&TTL, &a, Generation(0)),
                Err(e) => reply.error(e),
            }
        }

        fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
            match self.remove(parent, name) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        }

        fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
            match self.remove(parent, name) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        }

        fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
            reply.opened(FileHandle(0), self.fopen());
        }

        fn create(
            &self,
            req: &Request,
            parent: INodeNo,
            name: &OsStr,
            mode: u32,
            _umask: u32,
            _flags: i32,
            reply: ReplyCreate,
        ) {
            match self.make(req, parent, name, FileType::RegularFile, mode) {
                Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), self.fopen()),
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
            _lock: Option<fuser::LockOwner>,
            reply: ReplyData,
        ) {
            static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
            let len = self.tree.lock().unwrap().nodes.get(&ino.0).map_or(0, |n| n.attr.size);
            let n = len.saturating_sub(offset).min(u64::from(size)).min(ZEROS.len() as u64) as usize;
            reply.data(&ZEROS[..n]);
        }

        fn write(
            &self,
            _req: &Request,
            ino: INodeNo,
            _fh: FileHandle,
            offset: u64,
            data: &[u8],
            _wf: WriteFlags,
            _flags: OpenFlags,
            _lock: Option<fuser::LockOwner>,
            reply: ReplyWrite,
        ) {
            if let Some(n) = self.tree.lock().unwrap().nodes.get_mut(&ino.0) {
                let end = offset + data.len() as u64;
                if end > n.attr.size {
                    n.attr.size = end;
                    n.attr.blocks = end.div_ceil(512);
                }
            }
            reply.written(data.len() as u32);
        }

        fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _o: fuser::LockOwner, reply: ReplyEmpty) {
            reply.error(Errno::ENOSYS);
        }

        fn release(
            &self,
            _req: &Request,
            _ino: INodeNo,
            _fh: FileHandle,
            _flags: OpenFlags,
            _lock: Option<fuser::LockOwner>,
            _flush: bool,
            reply: ReplyEmpty,
        ) {
            reply.ok();
        }

        fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _d: bool, reply: ReplyEmpty) {
            reply.error(Errno::ENOSYS);
        }

        fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
            reply.error(Errno::ENOSYS);
        }

        fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
            let t = self.tree.lock().unwrap();
            let Some(d) = t.nodes.get(&ino.0) else { return reply.error(Errno::ENOENT) };
            for (i, (name, child)) in d.entries.iter().enumerate().skip(offset as usize) {
                let kind = t.nodes.get(child).map_or(FileType::RegularFile, |n| n.attr.kind);
                if reply.add(INodeNo(*child), i as u64 + 1, kind, name) {
                    break;
                }
            }
            reply.ok();
        }

        fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
            reply.statfs(1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 4096, 255, 4096);
        }

        fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
            reply.error(Errno::ENODATA);
        }

        fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _d: bool, reply: ReplyEmpty) {
            reply.error(Errno::ENOSYS);
        }
    }

    pub(crate) fn main() -> i32 {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut mp = None;
        let mut cache = Cache::Direct;
        let mut threads = 2usize;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--cache" => {
                    cache = match it.next().map(String::as_str) {
                        Some("direct") => Cache::Direct,
                        Some("writethrough") => Cache::Writethrough,
                        Some("writeback") => Cache::Writeback,
                        other => {
                            eprintln!("nullfs: --cache {other:?}: direct, writethrough or writeback");
                            return 2;
                        }
                    }
                }
                "--threads" => match it.next().and_then(|s| s.parse().ok()) {
                    Some(n) if n > 0 => threads = n,
                    _ => {
                        eprintln!("nullfs: --threads N (N >= 1)");
                        return 2;
                    }
                },
                "-f" | "--foreground" => {}
                m if mp.is_none() && !m.starts_with('-') => mp = Some(m.to_owned()),
                other => {
                    eprintln!("nullfs: unexpected argument {other:?}");
                    return 2;
                }
            }
        }
        let Some(mp) = mp else {
            eprintln!("usage: nullfs MOUNTPOINT [--cache MODE] [--threads N]");
            return 2;
        };
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            MountOption::FSName("nullfs".into()),
            MountOption::Subtype("nullfs".into()),
            MountOption::DefaultPermissions,
            MountOption::RW,
        ];
        cfg.acl = SessionACL::Owner;
        cfg.n_threads = Some(threads);
        cfg.clone_fd = threads > 1;
        // SIGINT/SIGTERM: unmount (the session then ends).
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises `set`; sigaddset/pthread_sigmask
        // read the initialised set; blocking the signals before any thread
        // starts makes every thread inherit the mask.
        let set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            let mut set = set.assume_init();
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        let mut session = match Session::new(NullFs::new(cache), std::path::Path::new(&mp), &cfg) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("nullfs: cannot mount {mp}: {e}");
                return 1;
            }
        };
        let mut unmounter = session.unmount_callable();
        std::thread::spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is an initialised signal set; `sig` is written.
            unsafe { libc::sigwait(&set, &mut sig) };
            let _ = unmounter.unmount();
        });
        println!("nullfs: mounted {mp} ({threads} threads)");
        let _ = io::stdout().flush();
        match session.run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("nullfs: {e}");
                1
            }
        }
    }
}
