//! The FUSE transport's ceiling on this machine: a file system on the same
//! session layer and settings as `sectorfs mount` (transport, threads,
//! cloned fds, capabilities,
//! TTLs, max write, and the `--cache` mode's open flags) that keeps only
//! names and sizes and answers every request at once from memory. Writes are
//! acknowledged and dropped; reads return zeros. `mount_bench` runs it beside
//! tmpfs and sectorfs, so every row reads "x of tmpfs" and "x of the
//! ceiling" from one run.
//!
//! Usage: `nullfs MOUNTPOINT [--cache direct|writethrough|writeback]
//! [--threads N] [--transport classic|uring]`; stays in the foreground,
//! prints `nullfs: mounted ...` once
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
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use sectorfs_fuse::abi;
    use sectorfs_fuse::decode::{Op, Request};
    use sectorfs_fuse::reply::{DirBuf, Reply};
    use sectorfs_fuse::session::{Filesystem, InitConfig, Session};

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
        attr: abi::fuse_attr,
        /// Directories: name → inode.
        entries: HashMap<Vec<u8>, u64>,
    }

    struct Tree {
        nodes: HashMap<u64, Node>,
        next: u64,
    }

    struct NullFs {
        tree: Mutex<Tree>,
        cache: Cache,
        uring: bool,
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
            let root = Node { attr: attr(1, libc::S_IFDIR | 0o1777, uid, gid), entries: HashMap::new() };
            NullFs { tree: Mutex::new(Tree { nodes: HashMap::from([(1, root)]), next: 2 }), cache, uring }
        }

        fn fopen(&self) -> u32 {
            match self.cache {
                Cache::Direct => abi::FOPEN_DIRECT_IO | abi::FOPEN_PARALLEL_DIRECT_WRITES,
                _ => abi::FOPEN_KEEP_CACHE,
            }
        }

        fn make(&self, req: &Request<'_>, name: &[u8], mode: u32) -> Result<abi::fuse_attr, i32> {
            let mut t = self.tree.lock().unwrap();
            let ino = t.next;
            let dir = t.nodes.get_mut(&req.header.nodeid).ok_or(libc::ENOENT)?;
            if dir.entries.contains_key(name) {
                return Err(libc::EEXIST);
            }
            dir.entries.insert(name.to_owned(), ino);
            t.next += 1;
            let a = attr(ino, mode, req.header.uid, req.header.gid);
            t.nodes.insert(ino, Node { attr: a, entries: HashMap::new() });
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
                Op::Mkdir { name, mode, .. } => match self.make(&req, name, libc::S_IFDIR | (mode & 0o7777)) {
                    Ok(a) => reply.entry(&entry(&a)),
                    Err(e) => reply.error(e),
                },
                Op::Unlink { name } | Op::Rmdir { name } => match self.remove(ino, name) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(e),
                },
                Op::Open { .. } => reply.open(0, self.fopen()),
                Op::Create { arg, name } => match self.make(&req, name, libc::S_IFREG | (arg.mode & 0o7777)) {
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
                Op::Getxattr { .. } | Op::Listxattr { .. } => reply.error(libc::ENODATA),
                _ => reply.error(libc::ENOSYS),
            }
        }
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
                let c = std::ffi::CString::new(mp.clone()).unwrap_or_default();
                // SAFETY: `c` is a NUL-terminated path that outlives the call.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                return 1;
            }
        };
        let uring = neg.has(abi::FUSE_OVER_IO_URING);
        let unmount_mp = mp.clone();
        std::thread::spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` is an initialised signal set; `sig` is written.
            unsafe { libc::sigwait(&set, &mut sig) };
            let c = std::ffi::CString::new(unmount_mp).unwrap_or_default();
            // SAFETY: `c` is a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        });
        println!("nullfs: mounted {mp} ({threads} threads, {} transport)", if uring { "uring" } else { "classic" });
        let _ = io::stdout().flush();
        match sectorfs_fuse::dev::run(&Arc::new(session), fd, threads) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("nullfs: {e}");
                1
            }
        }
    }
}
