//! The FUSE transport's ceiling on this machine: a file system on the same
//! session layer and settings as `sectorfs mount` (transport, threads,
//! cloned fds, capabilities,
//! TTLs, max write, and the `--cache` mode's open flags) that keeps only
//! names, sizes and symlink targets and answers every request at once from
//! memory. Writes are
//! acknowledged and dropped; reads return zeros. `mount_bench` runs it beside
//! tmpfs and sectorfs, so every row reads "x of tmpfs" and "x of the
//! ceiling" from one run.
//!
//! With `--transport uring` it starts FUSE over io_uring after `INIT`, as
//! `sectorfs mount` does (one queue per possible CPU,
//! [`sectorfs_fuse::uring::DEFAULT_DEPTH`] entries each, one classic worker
//! for `FORGET`s and `INTERRUPT`s), and fails if the kernel does not grant it.
//!
//! It counts the requests it serves by opcode (one relaxed atomic add each,
//! as sectorfs's `req_*` counters) and answers `getxattr(MOUNTPOINT,
//! "user.nullfs.stats")` with `{"pid":…,"transport":…,"req_<opcode>":…}`
//! (the shape of `sectorfs stats --json`), so that `mount_bench` can divide
//! the daemon's CPU time by the requests it served. The answering
//! `GETXATTR` is counted before the reply is built, as in sectorfs.
//!
//! Usage: `nullfs MOUNTPOINT [--cache direct|writethrough|writeback]
//! [--threads N] [--transport classic|uring]`; stays in the foreground,
//! prints `nullfs: mounted ... pid N` once
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
    use std::io::{self, Write};
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use sectorfs_fuse::abi;
    use sectorfs_fuse::decode::{Op, Request};
    use sectorfs_fuse::reply::{DirBuf, Reply};
    use sectorfs_fuse::session::{Filesystem, InitConfig, Session};

    /// As `sectorfs mount` (`mount/src/fuse_fs.rs`).
    const TTL: Duration = Duration::from_secs(24 * 3600);
    const MAX_WRITE: u32 = 1 << 20;
    /// The virtual attribute on the root that reports the request counts.
    const STATS_XATTR: &[u8] = b"user.nullfs.stats";
    /// Opcodes counted one by one; higher ones share the last slot.
    const COUNTED: usize = 64;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Cache {
        Direct,
        Writethrough,
        Writeback,
    }

    struct Node {
        attr: abi::fuse_attr,
        /// Directories: name → inode.
        entries: HashMap<Vec<u8>, u64>,
        /// Symlinks: the target (untar makes them).
        target: Vec<u8>,
    }

    struct Tree {
        nodes: HashMap<u64, Node>,
        next: u64,
    }

    struct NullFs {
        tree: Mutex<Tree>,
        cache: Cache,
        uring: bool,
        /// Requests served, by opcode (`COUNTED - 1`: every higher opcode).
        served: [AtomicU64; COUNTED],
        /// The transport that serves the mount, once it runs.
        transport: OnceLock<&'static str>,
    }

    /// The name `sectorfs stats` gives an opcode (`op<N>` for the rest).
    fn op_name(op: u32) -> String {
        use abi::opcode::*;
        let name = match op {
            FUSE_LOOKUP => "lookup",
            FUSE_FORGET => "forget",
            FUSE_GETATTR => "getattr",
            FUSE_SETATTR => "setattr",
            FUSE_READLINK => "readlink",
            FUSE_SYMLINK => "symlink",
            FUSE_MKDIR => "mkdir",
            FUSE_UNLINK => "unlink",
            FUSE_RMDIR => "rmdir",
            FUSE_OPEN => "open",
            FUSE_READ => "read",
            FUSE_WRITE => "write",
            FUSE_STATFS => "statfs",
            FUSE_RELEASE => "release",
            FUSE_FSYNC => "fsync",
            FUSE_GETXATTR => "getxattr",
            FUSE_LISTXATTR => "listxattr",
            FUSE_FLUSH => "flush",
            FUSE_OPENDIR => "opendir",
            FUSE_READDIR => "readdir",
            FUSE_RELEASEDIR => "releasedir",
            FUSE_CREATE => "create",
            FUSE_BATCH_FORGET => "batch_forget",
            FUSE_SYNCFS => "syncfs",
            _ => return format!("op{op}"),
        };
        name.to_owned()
    }

    fn attr(ino: u64, mode: u32, uid: u32, gid: u32) -> abi::fuse_attr {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let (secs, nanos) = (now.as_secs(), now.subsec_nanos());
        abi::fuse_attr {
            ino,
            atime: secs,
            mtime: secs,
            ctime: secs,
            atimensec: nanos,
            mtimensec: nanos,
            ctimensec: nanos,
            mode,
            nlink: if mode & libc::S_IFMT == libc::S_IFDIR { 2 } else { 1 },
            uid,
            gid,
            blksize: 4096,
            ..Default::default()
        }
    }

    fn entry(a: &abi::fuse_attr) -> abi::fuse_entry_out {
        abi::fuse_entry_out {
            nodeid: a.ino,
            entry_valid: TTL.as_secs(),
            attr_valid: TTL.as_secs(),
            attr: *a,
            ..Default::default()
        }
    }

    fn attr_out(a: &abi::fuse_attr) -> abi::fuse_attr_out {
        abi::fuse_attr_out { attr_valid: TTL.as_secs(), attr: *a, ..Default::default() }
    }

    impl NullFs {
        fn new(cache: Cache, uring: bool) -> NullFs {
            // SAFETY: geteuid/getegid have no preconditions.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            let root =
                Node { attr: attr(1, libc::S_IFDIR | 0o1777, uid, gid), entries: HashMap::new(), target: Vec::new() };
            NullFs {
                tree: Mutex::new(Tree { nodes: HashMap::from([(1, root)]), next: 2 }),
                cache,
                uring,
                served: std::array::from_fn(|_| AtomicU64::new(0)),
                transport: OnceLock::new(),
            }
        }

        /// The stats attribute's value: pid, transport and the counters.
        fn stats_json(&self) -> String {
            let mut s = format!(
                "{{\"pid\":{},\"transport\":\"{}\"",
                std::process::id(),
                self.transport.get().copied().unwrap_or("classic")
            );
            for (op, n) in self.served.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    s.push_str(&format!(",\"req_{}\":{n}", op_name(op as u32)));
                }
            }
            s.push('}');
            s
        }

        fn fopen(&self) -> u32 {
            match self.cache {
                Cache::Direct => abi::FOPEN_DIRECT_IO | abi::FOPEN_PARALLEL_DIRECT_WRITES,
                _ => abi::FOPEN_KEEP_CACHE,
            }
        }

        fn make(&self, req: &Request<'_>, name: &[u8], mode: u32, target: &[u8]) -> Result<abi::fuse_attr, i32> {
            let mut t = self.tree.lock().unwrap();
            let ino = t.next;
            let dir = t.nodes.get_mut(&req.header.nodeid).ok_or(libc::ENOENT)?;
            if dir.entries.contains_key(name) {
                return Err(libc::EEXIST);
            }
            dir.entries.insert(name.to_owned(), ino);
            t.next += 1;
            let mut a = attr(ino, mode, req.header.uid, req.header.gid);
            a.size = target.len() as u64;
            t.nodes.insert(ino, Node { attr: a, entries: HashMap::new(), target: target.to_owned() });
            Ok(a)
        }

        fn remove(&self, parent: u64, name: &[u8]) -> Result<(), i32> {
            let mut t = self.tree.lock().unwrap();
            let dir = t.nodes.get_mut(&parent).ok_or(libc::ENOENT)?;
            let ino = dir.entries.remove(name).ok_or(libc::ENOENT)?;
            t.nodes.remove(&ino);
            Ok(())
        }
    }

    impl Filesystem for NullFs {
        fn init(&mut self, _offered: u64, cfg: &mut InitConfig) {
            cfg.want |= match self.cache {
                Cache::Direct => abi::FUSE_DIRECT_IO_ALLOW_MMAP,
                Cache::Writethrough => 0,
                Cache::Writeback => abi::FUSE_WRITEBACK_CACHE,
            };
            // (No readdirplus: the bench lists no directory, and plain
            // readdir is enough for `ls` by hand.)
            cfg.want |= abi::FUSE_PARALLEL_DIROPS
                | abi::FUSE_CACHE_SYMLINKS
                | abi::FUSE_HANDLE_KILLPRIV_V2
                | abi::FUSE_NO_OPENDIR_SUPPORT;
            if self.uring {
                cfg.want |= abi::FUSE_OVER_IO_URING;
            }
            cfg.max_write = MAX_WRITE;
            cfg.max_background = 64;
        }

        fn handle(&self, req: Request<'_>, reply: Reply<'_>) {
            let ino = req.header.nodeid;
            self.served[(req.header.opcode as usize).min(COUNTED - 1)].fetch_add(1, Ordering::Relaxed);
            match req.op {
                Op::Lookup { name } => {
                    let t = self.tree.lock().unwrap();
                    match t.nodes.get(&ino).and_then(|d| d.entries.get(name)).and_then(|i| t.nodes.get(i)) {
                        Some(n) => reply.entry(&entry(&n.attr)),
                        None => reply.error(libc::ENOENT),
                    }
                }
                Op::Forget { .. } | Op::BatchForget(_) => reply.no_reply(),
                Op::Getattr { .. } => match self.tree.lock().unwrap().nodes.get(&ino) {
                    Some(n) => reply.attr(&attr_out(&n.attr)),
                    None => reply.error(libc::ENOENT),
                },
                Op::Setattr(s) => {
                    let mut t = self.tree.lock().unwrap();
                    let Some(n) = t.nodes.get_mut(&ino) else { return reply.error(libc::ENOENT) };
                    if s.valid & abi::FATTR_MODE != 0 {
                        n.attr.mode = (n.attr.mode & libc::S_IFMT) | (s.mode & 0o7777);
                    }
                    if s.valid & abi::FATTR_UID != 0 {
                        n.attr.uid = s.uid;
                    }
                    if s.valid & abi::FATTR_GID != 0 {
                        n.attr.gid = s.gid;
                    }
                    if s.valid & abi::FATTR_SIZE != 0 {
                        n.attr.size = s.size;
                    }
                    if s.valid & abi::FATTR_ATIME != 0 {
                        (n.attr.atime, n.attr.atimensec) = (s.atime, s.atimensec);
                    }
                    if s.valid & abi::FATTR_MTIME != 0 {
                        (n.attr.mtime, n.attr.mtimensec) = (s.mtime, s.mtimensec);
                    }
                    reply.attr(&attr_out(&n.attr));
                }
                Op::Mkdir { name, mode, .. } => match self.make(&req, name, libc::S_IFDIR | (mode & 0o7777), b"") {
                    Ok(a) => reply.entry(&entry(&a)),
                    Err(e) => reply.error(e),
                },
                Op::Symlink { name, target } => match self.make(&req, name, libc::S_IFLNK | 0o777, target) {
                    Ok(a) => reply.entry(&entry(&a)),
                    Err(e) => reply.error(e),
                },
                Op::Readlink => match self.tree.lock().unwrap().nodes.get(&ino) {
                    Some(n) => reply.data(&n.target),
                    None => reply.error(libc::ENOENT),
                },
                Op::Unlink { name } | Op::Rmdir { name } => match self.remove(ino, name) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(e),
                },
                Op::Open { .. } => reply.open(0, self.fopen()),
                Op::Create { arg, name } => match self.make(&req, name, libc::S_IFREG | (arg.mode & 0o7777), b"") {
                    Ok(a) => reply.create(&entry(&a), 0, self.fopen()),
                    Err(e) => reply.error(e),
                },
                Op::Read(r) => {
                    static ZEROS: [u8; 1 << 20] = [0; 1 << 20];
                    let len = self.tree.lock().unwrap().nodes.get(&ino).map_or(0, |n| n.attr.size);
                    let n = len.saturating_sub(r.offset).min(u64::from(r.size)).min(ZEROS.len() as u64) as usize;
                    reply.data(&ZEROS[..n]);
                }
                Op::Write { arg, data } => {
                    if let Some(n) = self.tree.lock().unwrap().nodes.get_mut(&ino) {
                        let end = arg.offset + data.len() as u64;
                        if end > n.attr.size {
                            n.attr.size = end;
                            n.attr.blocks = end.div_ceil(512);
                        }
                    }
                    reply.written(data.len() as u32);
                }
                Op::Release(_) | Op::Releasedir(_) | Op::Syncfs => reply.ok(),
                Op::Flush(_) | Op::Fsync { .. } | Op::Fsyncdir { .. } | Op::Opendir { .. } => reply.error(libc::ENOSYS),
                Op::Readdir(r) => {
                    let t = self.tree.lock().unwrap();
                    let Some(d) = t.nodes.get(&ino) else { return reply.error(libc::ENOENT) };
                    let mut buf = Vec::new();
                    let mut out = DirBuf::new(&mut buf, r.size as usize);
                    for (i, (name, child)) in d.entries.iter().enumerate().skip(r.offset as usize) {
                        let mode = t.nodes.get(child).map_or(libc::S_IFREG, |n| n.attr.mode);
                        if !out.add(*child, i as u64 + 1, (mode & libc::S_IFMT) >> 12, name) {
                            break;
                        }
                    }
                    reply.data(out.bytes());
                }
                Op::Statfs => reply.statfs(abi::fuse_kstatfs {
                    blocks: 1 << 20,
                    bfree: 1 << 20,
                    bavail: 1 << 20,
                    files: 1 << 20,
                    ffree: 1 << 20,
                    bsize: 4096,
                    namelen: 255,
                    frsize: 4096,
                    ..Default::default()
                }),
                Op::Getxattr { name, size } if ino == abi::FUSE_ROOT_ID && name == STATS_XATTR => {
                    let v = self.stats_json();
                    match size {
                        0 => reply.xattr_size(v.len() as u32),
                        s if (s as usize) < v.len() => reply.error(libc::ERANGE),
                        _ => reply.data(v.as_bytes()),
                    }
                }
                Op::Getxattr { .. } | Op::Listxattr { .. } => reply.error(libc::ENODATA),
                _ => reply.error(libc::ENOSYS),
            }
        }
    }

    fn lazy_unmount(mp: &str) {
        let c = std::ffi::CString::new(mp).unwrap_or_default();
        // SAFETY: `c` is a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }

    pub(crate) fn main() -> i32 {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut mp = None;
        let mut cache = Cache::Direct;
        let mut threads = 2usize;
        let mut uring = false;
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
                "--transport" => {
                    uring = match it.next().map(String::as_str) {
                        Some("uring") => true,
                        Some("classic") => false,
                        other => {
                            eprintln!("nullfs: --transport {other:?}: classic or uring");
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
            eprintln!("usage: nullfs MOUNTPOINT [--cache MODE] [--threads N] [--transport classic|uring]");
            return 2;
        };
        // SIGINT/SIGTERM: unmount (the workers then end).
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
        if uring {
            if let Err(e) = sectorfs_fuse::dev::enable_uring() {
                eprintln!("nullfs: FUSE over io_uring: {e}");
                return 1;
            }
        }
        let path = std::path::PathBuf::from(&mp);
        let opts = sectorfs_fuse::dev::MountOptions {
            fsname: "nullfs".into(),
            subtype: "nullfs".into(),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            default_permissions: true,
            allow_other: false,
        };
        let fd = match sectorfs_fuse::dev::open_dev()
            .and_then(|fd| sectorfs_fuse::dev::mount(&path, fd.as_fd(), &opts).map(|()| fd))
        {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("nullfs: cannot mount {mp}: {e}");
                return 1;
            }
        };
        let mut session = Session::new(NullFs::new(cache, uring));
        let neg = match sectorfs_fuse::dev::handshake(&mut session, fd.as_fd()) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("nullfs: INIT: {e}");
                lazy_unmount(&mp);
                return 1;
            }
        };
        let session = Arc::new(session);
        // As `sectorfs mount`: the ring where INIT granted it (requests wait
        // in the kernel until every queue has its entries), and then one
        // classic worker for FORGETs and INTERRUPTs.
        let ring = if uring && neg.has(abi::FUSE_OVER_IO_URING) {
            match sectorfs_fuse::uring::start(&session, fd.as_fd(), sectorfs_fuse::uring::DEFAULT_DEPTH) {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("nullfs: cannot start FUSE over io_uring: {e}");
                    lazy_unmount(&mp);
                    return 1;
                }
            }
        } else if uring {
            eprintln!("nullfs: the kernel did not grant FUSE over io_uring at INIT");
            lazy_unmount(&mp);
            return 1;
        } else {
            None
        };
        let _ = session.fs().transport.set(if ring.is_some() { "uring" } else { "classic" });
        let workers = if ring.is_some() { 1 } else { threads };
        let unmount_mp = mp.clone();
        std::thread::spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is an initialised signal set; `sig` is written.
            unsafe { libc::sigwait(&set, &mut sig) };
            lazy_unmount(&unmount_mp);
        });
        match &ring {
            Some(r) => println!(
                "nullfs: mounted {mp} (io_uring, {} queues, {workers} classic worker, pid {})",
                r.config().queues,
                std::process::id()
            ),
            None => println!("nullfs: mounted {mp} ({workers} threads, classic, pid {})", std::process::id()),
        }
        let _ = io::stdout().flush();
        let served = sectorfs_fuse::dev::run(&session, fd, workers);
        // Unmounted: the ring's threads have ended (or end now).
        drop(ring);
        match served {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("nullfs: {e}");
                1
            }
        }
    }
}
