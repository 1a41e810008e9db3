//! FUSE over io_uring on a live mount, with a minimal session written here
//! (the real one is `session.rs`/`dev.rs`): `/dev/fuse`, `mount(2)`, the
//! `INIT` handshake, a classic `read(2)` loop, and [`Ring`].
//!
//! Needs root, `/dev/fuse` and a kernel with FUSE over io_uring
//! (`/sys/module/fuse/parameters/enable_uring`, which is switched on if it is
//! off: that only changes what later `INIT`s offer). Skipped, with a note,
//! otherwise. The tests run one at a time (they measure, and they check that
//! their threads are gone). Every mount is a fresh tempdir, unmounted
//! (`MNT_DETACH`) by a guard even when the test fails.
#![cfg(target_os = "linux")]

use std::ffi::CString;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sectorfs_fuse::abi::{self, opcode};
use sectorfs_fuse::reply::Sink;
use sectorfs_fuse::uring::{self, Ring, RingConfig, RingHandler};
use zerocopy::{FromBytes, IntoBytes};

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";
const MAX_WRITE: u32 = 1 << 20;
const MAX_PAGES: u16 = 256;
const READ_BUF: usize = (1 << 20) + 4096;

/// One test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why this machine cannot run the tests, if it cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if !Path::new(PARAM).exists() {
        return Some(format!("no {PARAM}: the kernel has no FUSE over io_uring"));
    }
    let on = std::fs::read_to_string(PARAM).map(|s| s.trim() == "Y").unwrap_or(false);
    if !on {
        if let Err(e) = std::fs::write(PARAM, "Y") {
            return Some(format!("cannot enable FUSE over io_uring: {e}"));
        }
    }
    None
}

macro_rules! require_uring {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// What the root `stat`s, `statfs` and lookups of the tests need, and
/// switches to misbehave on purpose.
struct TestFs {
    payload_size: usize,
    lookups: AtomicU64,
    getattrs: AtomicU64,
    statfs: AtomicU64,
    statfs_mode: AtomicU8,
    /// The contents of `/file` (inode 2): READs are answered from it, WRITEs
    /// are compared with it.
    data: Vec<u8>,
    written: AtomicU64,
    write_mismatches: AtomicU64,
    /// The largest READ and WRITE seen.
    max_read: AtomicU64,
    max_write: AtomicU64,
}

const FILE_INO: u64 = 2;
const FILE_SIZE: usize = 4 << 20;

fn file_attr() -> abi::fuse_attr {
    abi::fuse_attr {
        ino: FILE_INO,
        size: FILE_SIZE as u64,
        blocks: (FILE_SIZE / 512) as u64,
        mode: libc::S_IFREG | 0o644,
        nlink: 1,
        blksize: 4096,
        ..Default::default()
    }
}

const NORMAL: u8 = 0;
const OVERSIZE: u8 = 1;
const PANIC: u8 = 2;

impl TestFs {
    fn new(payload_size: usize) -> Arc<TestFs> {
        Arc::new(TestFs {
            payload_size,
            lookups: AtomicU64::new(0),
            getattrs: AtomicU64::new(0),
            statfs: AtomicU64::new(0),
            statfs_mode: AtomicU8::new(NORMAL),
            // A byte pattern in which every page differs.
            data: (0..FILE_SIZE).map(|i| (i * 7 + i / 4096) as u8).collect(),
            written: AtomicU64::new(0),
            write_mismatches: AtomicU64::new(0),
            max_read: AtomicU64::new(0),
            max_write: AtomicU64::new(0),
        })
    }

    fn oversize(&self, unique: u64, sink: &mut dyn Sink) {
        let big = vec![0u8; self.payload_size + 1];
        assert!(sink.send(unique, 0, &[IoSlice::new(&big)]).is_err(), "an oversized reply is refused");
    }
}

impl RingHandler for TestFs {
    /// `op_in` is used by READ and WRITE only, which the classic loop here
    /// does not split out: they are for the ring.
    fn handle(&self, in_header: &[u8], op_in: &[u8], payload: &[u8], sink: &mut dyn Sink) {
        let (h, _) = abi::fuse_in_header::read_from_prefix(in_header).expect("short in_header");
        let _ = match h.opcode {
            opcode::FUSE_LOOKUP => {
                self.lookups.fetch_add(1, Ordering::Relaxed);
                let name = payload.split(|&b| b == 0).next().unwrap_or_default();
                match name {
                    b"big" => return self.oversize(h.unique, sink),
                    b"panic" => panic!("the handler panics on purpose"),
                    b"silent" => return,
                    b"file" => {
                        let out = abi::fuse_entry_out {
                            nodeid: FILE_INO,
                            generation: 1,
                            entry_valid: 60,
                            attr_valid: 60,
                            attr: file_attr(),
                            ..Default::default()
                        };
                        sink.send(h.unique, 0, &[IoSlice::new(out.as_bytes())])
                    }
                    _ => sink.send(h.unique, -libc::ENOENT, &[]),
                }
            }
            opcode::FUSE_GETATTR if h.nodeid == FILE_INO => {
                let out = abi::fuse_attr_out { attr_valid: 60, attr: file_attr(), ..Default::default() };
                sink.send(h.unique, 0, &[IoSlice::new(out.as_bytes())])
            }
            opcode::FUSE_OPEN if h.nodeid == FILE_INO => {
                // Direct I/O: each read(2)/write(2) of up to 1 MiB is one request.
                let out = abi::fuse_open_out { fh: 7, open_flags: abi::FOPEN_DIRECT_IO, ..Default::default() };
                sink.send(h.unique, 0, &[IoSlice::new(out.as_bytes())])
            }
            opcode::FUSE_READ => {
                let (r, _) = abi::fuse_read_in::read_from_prefix(op_in).expect("short fuse_read_in");
                let start = (r.offset as usize).min(FILE_SIZE);
                let end = (start + r.size as usize).min(FILE_SIZE);
                self.max_read.fetch_max((end - start) as u64, Ordering::Relaxed);
                // Straight from "sector memory" into the ring.
                sink.send(h.unique, 0, &[IoSlice::new(&self.data[start..end])])
            }
            opcode::FUSE_WRITE => {
                let (w, _) = abi::fuse_write_in::read_from_prefix(op_in).expect("short fuse_write_in");
                let at = w.offset as usize;
                let expected = self.data.get(at..at + w.size as usize);
                if payload.len() != w.size as usize || expected != Some(payload) {
                    self.write_mismatches.fetch_add(1, Ordering::Relaxed);
                }
                self.written.fetch_add(payload.len() as u64, Ordering::Relaxed);
                self.max_write.fetch_max(payload.len() as u64, Ordering::Relaxed);
                let out = abi::fuse_write_out { size: w.size, padding: 0 };
                sink.send(h.unique, 0, &[IoSlice::new(out.as_bytes())])
            }
            opcode::FUSE_FLUSH | opcode::FUSE_RELEASE => sink.send(h.unique, 0, &[]),
            opcode::FUSE_GETATTR if h.nodeid == abi::FUSE_ROOT_ID => {
                self.getattrs.fetch_add(1, Ordering::Relaxed);
                let out = abi::fuse_attr_out {
                    attr: abi::fuse_attr {
                        ino: abi::FUSE_ROOT_ID,
                        mode: libc::S_IFDIR | 0o755,
                        nlink: 2,
                        blksize: 4096,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                sink.send(h.unique, 0, &[IoSlice::new(out.as_bytes())])
            }
            opcode::FUSE_STATFS => {
                self.statfs.fetch_add(1, Ordering::Relaxed);
                match self.statfs_mode.load(Ordering::Relaxed) {
                    OVERSIZE => return self.oversize(h.unique, sink),
                    PANIC => panic!("the handler panics on purpose"),
                    _ => {}
                }
                let out = abi::fuse_statfs_out {
                    st: abi::fuse_kstatfs {
                        blocks: 1000,
                        bfree: 500,
                        bavail: 500,
                        files: 100,
                        ffree: 50,
                        bsize: 4096,
                        namelen: 255,
                        frsize: 4096,
                        ..Default::default()
                    },
                };
                sink.send(h.unique, 0, &[IoSlice::new(out.as_bytes())])
            }
            _ => sink.send(h.unique, -libc::ENOSYS, &[]),
        };
    }
}

/// The classic channel's sink: one `writev(2)` of header and parts.
struct DevSink<'a>(BorrowedFd<'a>);

impl Sink for DevSink<'_> {
    fn send(&mut self, unique: u64, error: i32, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let len = size_of::<abi::fuse_out_header>() + parts.iter().map(|p| p.len()).sum::<usize>();
        let out = abi::fuse_out_header { len: len as u32, error, unique };
        let mut iov = Vec::with_capacity(parts.len() + 1);
        iov.push(IoSlice::new(out.as_bytes()));
        iov.extend_from_slice(parts);
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix, and every
        // slice outlives the call.
        let n = unsafe { libc::writev(self.0.as_raw_fd(), iov.as_ptr().cast(), iov.len() as libc::c_int) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What a classic loop saw.
#[derive(Default)]
struct Classic {
    forgets: AtomicU64,
    interrupts: AtomicU64,
    /// Everything else (served, or answered ENOSYS).
    others: AtomicU64,
}

fn read_dev(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The classic `read(2)` loop. With `serve`, requests go to `fs` (the
/// message split as in-header, no `op_in`, the rest as payload: enough for
/// `TestFs`); without, they are answered ENOSYS. FORGETs and INTERRUPTs get
/// no reply. Ends when the read fails with ENODEV (unmounted).
fn classic_loop(dev: Arc<OwnedFd>, fs: Arc<TestFs>, serve: bool, seen: Arc<Classic>) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match read_dev(dev.as_fd(), &mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::ENOENT)) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return,
            Err(e) => panic!("read /dev/fuse: {e}"),
        };
        let msg = &buf[..n];
        let (h, _) = abi::fuse_in_header::read_from_prefix(msg).expect("short request");
        match h.opcode {
            opcode::FUSE_FORGET | opcode::FUSE_BATCH_FORGET => {
                seen.forgets.fetch_add(1, Ordering::Relaxed);
            }
            opcode::FUSE_INTERRUPT => {
                seen.interrupts.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                seen.others.fetch_add(1, Ordering::Relaxed);
                let mut sink = DevSink(dev.as_fd());
                if serve {
                    let hdr = size_of::<abi::fuse_in_header>();
                    fs.handle(&msg[..hdr], &[], &msg[hdr..], &mut sink);
                } else {
                    let _ = sink.send(h.unique, -libc::ENOSYS, &[]);
                }
            }
        }
    }
}

fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("NUL in path")
}

/// The mount itself, shared with the watchdog.
struct Mounted {
    mnt: PathBuf,
    mounted: AtomicBool,
}

impl Mounted {
    /// Lazily unmounts (once): the kernel aborts the connection as soon as
    /// nothing uses the mount any more, which ends the ring's entries
    /// (ENOTCONN) and the classic loops' reads (ENODEV). `force` aborts the
    /// connection at once (`MNT_FORCE` runs FUSE's `umount_begin`), failing
    /// requests in flight: a hung request would otherwise keep the mount in
    /// use, and so itself waiting, forever.
    fn unmount(&self, force: bool) {
        if self.mounted.swap(false, Ordering::SeqCst) {
            let target = cstring(&self.mnt);
            let flags = libc::MNT_DETACH | if force { libc::MNT_FORCE } else { 0 };
            // SAFETY: a live NUL-terminated path; the mount is ours.
            if unsafe { libc::umount2(target.as_ptr(), flags) } != 0 {
                eprintln!("umount2 {}: {}", self.mnt.display(), io::Error::last_os_error());
            }
        }
    }
}

/// How long a test may keep its mount before the watchdog unmounts it, so
/// that a hung request fails the test (ENOTCONN) instead of hanging it.
const WATCHDOG: Duration = Duration::from_secs(60);

/// A mounted test filesystem with its threads. Dropping it unmounts first
/// (which ends the ring's threads and the classic loops), then stops the
/// ring and joins the loops and the watchdog.
struct Harness {
    mnt: PathBuf,
    m: Arc<Mounted>,
    dev: Arc<OwnedFd>,
    fs: Arc<TestFs>,
    ring: Option<Ring>,
    classic: Vec<JoinHandle<()>>,
    seen: Arc<Classic>,
    watchdog: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Mounts and answers INIT, granting FUSE_OVER_IO_URING if `uring`.
    fn mount(uring: bool) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().to_path_buf();
        // SAFETY: opens a path from a NUL-terminated literal.
        let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(fd >= 0, "open /dev/fuse: {}", io::Error::last_os_error());
        // SAFETY: `fd` is new and ours.
        let dev = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let data = CString::new(format!("fd={fd},rootmode=40000,user_id=0,group_id=0")).unwrap();
        let target = cstring(&mnt);
        // SAFETY: every pointer is a live NUL-terminated string.
        let rc = unsafe {
            libc::mount(
                c"sectorfs-test".as_ptr(),
                target.as_ptr(),
                c"fuse.sectorfs-test".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount: {}", io::Error::last_os_error());
        let m = Arc::new(Mounted { mnt: mnt.clone(), mounted: AtomicBool::new(true) });
        let (stop, stopped) = mpsc::channel::<()>();
        let dog = m.clone();
        let watchdog = thread::Builder::new()
            .name("fuse-watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(WATCHDOG) {
                    eprintln!("watchdog: unmounting {} after {WATCHDOG:?}", dog.mnt.display());
                    dog.unmount(true);
                }
            })
            .expect("spawn");
        let payload_size = uring::payload_size(MAX_WRITE, MAX_PAGES);
        let mut h = Harness {
            mnt,
            m,
            dev,
            fs: TestFs::new(payload_size),
            ring: None,
            classic: Vec::new(),
            seen: Arc::new(Classic::default()),
            watchdog: Some((stop, watchdog)),
            _dir: dir,
        };
        h.init(uring);
        h
    }

    fn init(&mut self, uring: bool) {
        let mut buf = vec![0u8; READ_BUF];
        let n = read_dev(self.dev.as_fd(), &mut buf).expect("read INIT");
        let (h, rest) = abi::fuse_in_header::read_from_prefix(&buf[..n]).expect("short INIT");
        assert_eq!(h.opcode, opcode::FUSE_INIT);
        let (init, _) = abi::fuse_init_in::read_from_prefix(rest).expect("short fuse_init_in");
        let offered = u64::from(init.flags) | (u64::from(init.flags2) << 32);
        assert!(offered & abi::FUSE_INIT_EXT != 0, "the kernel offers no FUSE_INIT_EXT");
        // PARALLEL_DIROPS: lookups in one directory from several CPUs at once.
        let mut flags = abi::FUSE_INIT_EXT | abi::FUSE_MAX_PAGES | abi::FUSE_PARALLEL_DIROPS;
        if uring {
            assert!(offered & abi::FUSE_OVER_IO_URING != 0, "the kernel offers no FUSE_OVER_IO_URING");
            flags |= abi::FUSE_OVER_IO_URING;
        }
        let out = abi::fuse_init_out {
            major: abi::FUSE_KERNEL_VERSION,
            minor: abi::FUSE_KERNEL_MINOR_VERSION,
            max_readahead: init.max_readahead,
            flags: flags as u32,
            flags2: (flags >> 32) as u32,
            max_write: MAX_WRITE,
            max_pages: MAX_PAGES,
            time_gran: 1,
            ..Default::default()
        };
        DevSink(self.dev.as_fd()).send(h.unique, 0, &[IoSlice::new(out.as_bytes())]).expect("INIT reply");
    }

    fn config(&self) -> RingConfig {
        RingConfig {
            queues: uring::possible_cpus().expect("possible CPUs"),
            depth: 8,
            payload_size: self.fs.payload_size,
        }
    }

    fn start_ring(&mut self, cfg: RingConfig) -> io::Result<()> {
        self.ring = Some(Ring::start(self.dev.as_fd(), cfg, self.fs.clone())?);
        Ok(())
    }

    fn start_classic(&mut self, threads: usize, serve: bool) {
        for i in 0..threads {
            let (dev, fs, seen) = (self.dev.clone(), self.fs.clone(), self.seen.clone());
            let t = thread::Builder::new()
                .name(format!("fuse-classic-{i}"))
                .spawn(move || classic_loop(dev, fs, serve, seen))
                .expect("spawn");
            self.classic.push(t);
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    fn unmount(&self) {
        self.m.unmount(false);
    }

    /// Unmounts (forcibly, if the test has not: it failed), stops the ring,
    /// joins the classic loops and the watchdog.
    fn teardown(&mut self) -> thread::Result<()> {
        self.m.unmount(true);
        drop(self.ring.take());
        let mut res = Ok(());
        for t in self.classic.drain(..) {
            res = res.and(t.join());
        }
        if let Some((stop, dog)) = self.watchdog.take() {
            drop(stop);
            res = res.and(dog.join());
        }
        res
    }

    /// Unmounts, checks that the ring's threads end by themselves (the
    /// kernel ends their entries with ENOTCONN), tears down, and checks that
    /// no thread of ours is left.
    fn finish(mut self) {
        self.unmount();
        let ended_alone = wait_until(Duration::from_secs(5), || ring_threads().is_empty());
        assert!(ended_alone, "ring threads still running after the unmount: {:?}", ring_threads());
        self.teardown().expect("a classic loop or the watchdog panicked");
        // A joined thread may linger in /proc for a moment: `pthread_join`
        // returns when the kernel clears its tid, a little before it is reaped.
        let gone = wait_until(Duration::from_secs(2), || our_threads().is_empty());
        assert!(gone, "threads left behind: {:?}", our_threads());
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_owned())
        .collect()
}

fn ring_threads() -> Vec<String> {
    thread_names().into_iter().filter(|n| n.starts_with("sectorfs-ring")).collect()
}

fn our_threads() -> Vec<String> {
    let ours = ["sectorfs-ring", "fuse-classic", "fuse-watchdog"];
    thread_names().into_iter().filter(|n| ours.iter().any(|o| n.starts_with(o))).collect()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    done()
}

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is a small CPU number, inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: passes a live cpu_set_t and its size.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "pin to CPU {cpu}: {}", io::Error::last_os_error());
}

fn stat(path: &Path) -> io::Result<libc::stat> {
    let path = cstring(path);
    // SAFETY: all-zero is a valid `struct stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a live NUL-terminated path and a live `struct stat`.
    if unsafe { libc::stat(path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn statfs(path: &Path) -> io::Result<libc::statfs> {
    let path = cstring(path);
    // SAFETY: all-zero is a valid `struct statfs`.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a live NUL-terminated path and a live `struct statfs`.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn errno(r: io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

fn check_root(h: &Harness) {
    let st = stat(&h.mnt).expect("stat of the root");
    assert_eq!(st.st_mode, libc::S_IFDIR | 0o755);
    assert_eq!(st.st_nlink, 2);
    assert_eq!(st.st_ino, abi::FUSE_ROOT_ID);
}

/// `per_cpu` stats on each CPU at once (a thread pinned to each), of fresh
/// missing names, or alternately of such names and of the root with `root`.
/// Returns the elapsed time.
fn stat_storm(h: &Harness, cpus: usize, per_cpu: usize, root: bool, tag: &str) -> Duration {
    let start = Instant::now();
    thread::scope(|s| {
        for cpu in 0..cpus {
            s.spawn(move || {
                pin(cpu);
                for i in 0..per_cpu {
                    if root && i % 2 == 1 {
                        check_root(h);
                    } else {
                        let r = stat(&h.path(&format!("{tag}-{cpu}-{i}")));
                        assert_eq!(errno(r), Some(libc::ENOENT));
                    }
                }
            });
        }
    });
    start.elapsed()
}

/// 10,000 stats (missing names and the root) from both CPUs go through the
/// ring, each to its CPU's queue; nothing but FORGETs reaches `/dev/fuse`;
/// after the unmount the ring's threads end by themselves.
#[test]
fn ring_serves_stats() {
    let _serial = serial();
    require_uring!();
    let mut h = Harness::mount(true);
    h.start_classic(1, false);
    let cfg = h.config();
    let queues = cfg.queues;
    h.start_ring(cfg).expect("Ring::start");
    assert_eq!(ring_threads().len(), queues);

    let cpus = queues.min(thread::available_parallelism().map_or(1, |n| n.get()));
    let per_cpu = 10_000 / cpus;
    stat_storm(&h, cpus, per_cpu, true, "missing");
    let served = h.ring.as_ref().unwrap().served();
    let (lookups, getattrs) = (h.fs.lookups.load(Ordering::Relaxed), h.fs.getattrs.load(Ordering::Relaxed));
    let others = h.seen.others.load(Ordering::Relaxed);
    eprintln!("served per queue {served:?}; lookups {lookups}, getattrs {getattrs}; over /dev/fuse: {others}");
    let total = (cpus * per_cpu) as u64;
    assert!(lookups + getattrs >= total, "every stat asked the filesystem");
    assert!(served.iter().sum::<u64>() >= total, "every request came through the ring");
    for (cpu, &n) in served.iter().enumerate().take(cpus) {
        assert!(n >= per_cpu as u64, "queue {cpu} served {n} < the {per_cpu} stats pinned to CPU {cpu}");
    }
    assert_eq!(others, 0, "no request but FORGET/INTERRUPT comes over /dev/fuse once the ring is ready");
    h.finish();
}

/// A reply larger than the payload buffer, a handler that panics and one
/// that does not reply each give the caller EIO, on the staged (LOOKUP, with
/// a name) and the direct (STATFS, no payload) path; the mount keeps serving.
#[test]
fn ring_errors_become_eio() {
    let _serial = serial();
    require_uring!();
    let mut h = Harness::mount(true);
    h.start_classic(1, false);
    h.start_ring(h.config()).expect("Ring::start");

    assert_eq!(statfs(&h.mnt).expect("statfs").f_blocks, 1000);
    for name in ["big", "panic", "silent"] {
        assert_eq!(errno(stat(&h.path(name))), Some(libc::EIO), "LOOKUP {name}");
        check_root(&h);
    }
    for mode in [OVERSIZE, PANIC] {
        h.fs.statfs_mode.store(mode, Ordering::Relaxed);
        assert_eq!(errno(statfs(&h.mnt)), Some(libc::EIO), "STATFS mode {mode}");
        h.fs.statfs_mode.store(NORMAL, Ordering::Relaxed);
        assert_eq!(statfs(&h.mnt).expect("statfs").f_blocks, 1000);
    }
    assert_eq!(errno(stat(&h.path("missing"))), Some(libc::ENOENT));
    // Every entry came back: a full round of requests on every queue still works.
    stat_storm(&h, h.config().queues, 64, true, "after");
    assert_eq!(h.seen.others.load(Ordering::Relaxed), 0);
    h.finish();
}

/// When `Ring::start` fails after `INIT` granted io_uring, the connection is
/// handed back to `/dev/fuse`: by our own refusal (too few queues, no
/// registration at all) and by the kernel's (payload buffer too small).
#[test]
fn failed_start_falls_back_to_dev() {
    let _serial = serial();
    require_uring!();
    let cpus = uring::possible_cpus().expect("possible CPUs");
    let mut cases = vec![("payload buffer too small", RingConfig { queues: cpus, depth: 2, payload_size: 8192 })];
    if cpus > 1 {
        cases.push(("too few queues", RingConfig { queues: cpus - 1, depth: 2, payload_size: 1 << 20 }));
    }
    for (what, cfg) in cases {
        let mut h = Harness::mount(true);
        h.start_classic(1, true);
        let e = h.start_ring(cfg).expect_err(what);
        eprintln!("{what}: Ring::start failed as it should: {e}");
        let gone = wait_until(Duration::from_secs(2), || ring_threads().is_empty());
        assert!(gone, "{what}: threads left after a failed start: {:?}", ring_threads());
        check_root(&h);
        assert_eq!(errno(stat(&h.path("missing"))), Some(libc::ENOENT));
        assert!(h.seen.others.load(Ordering::Relaxed) >= 2, "{what}: served over /dev/fuse");
        h.finish();
    }
}

/// Rates of stats of missing names (one LOOKUP each) through the ring and
/// through the classic loop alone (`INIT` without io_uring, one reader thread
/// per CPU), from one CPU and from every CPU at once. Both mounts are up at
/// once and measured in alternation, best of several rounds (the machine may
/// be busy with other work). Printed, not asserted.
#[test]
fn rates_ring_vs_classic() {
    let _serial = serial();
    require_uring!();
    let cpus =
        uring::possible_cpus().expect("possible CPUs").min(thread::available_parallelism().map_or(1, |n| n.get()));
    let mut classic = Harness::mount(false);
    classic.start_classic(cpus, true);
    let mut ring = Harness::mount(true);
    ring.start_classic(1, false);
    ring.start_ring(ring.config()).expect("Ring::start");
    let (rounds, per_cpu) = (5, if cfg!(debug_assertions) { 5_000 } else { 20_000 });
    let mut rates = vec![[Vec::new(), Vec::new()]; 2];
    for round in 0..=rounds {
        for (which, h) in [&classic, &ring].into_iter().enumerate() {
            for (i, callers) in [1, cpus].into_iter().enumerate() {
                let t = stat_storm(h, callers, per_cpu, false, &format!("r{round}-{callers}"));
                if round > 0 {
                    // Round 0 warms up.
                    rates[which][i].push((callers * per_cpu) as f64 / t.as_secs_f64());
                }
            }
        }
    }
    for (which, name) in ["classic", "io_uring"].into_iter().enumerate() {
        for (i, callers) in [1, cpus].into_iter().enumerate() {
            let r = &mut rates[which][i];
            r.sort_by(f64::total_cmp);
            eprintln!(
                "{name:>8}, {callers} caller(s): best {:>7.0} LOOKUPs/s, median {:>7.0} ({rounds} rounds of {})",
                r[r.len() - 1],
                r[r.len() / 2],
                callers * per_cpu
            );
        }
    }
    assert_eq!(ring.seen.others.load(Ordering::Relaxed), 0);
    // One harness at a time checks for leftover threads: the classic one is
    // torn down first, and `finish` then checks for both.
    classic.unmount();
    drop(classic);
    ring.finish();
}

/// Megabytes both ways: 1 MiB READ replies (as large as the payload buffer)
/// go straight into the buffer, 1 MiB WRITE payloads arrive whole in it.
#[test]
fn ring_moves_megabytes() {
    let _serial = serial();
    require_uring!();
    let mut h = Harness::mount(true);
    h.start_classic(1, false);
    h.start_ring(h.config()).expect("Ring::start");
    let path = cstring(&h.path("file"));
    // SAFETY: a live NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open: {}", io::Error::last_os_error());
    // SAFETY: `fd` is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let chunk = MAX_WRITE as usize;
    // Page-aligned, so that 1 MiB is 256 pages and one request, not 257.
    let mut backing = vec![0u8; chunk + 4096];
    let at = backing.as_ptr().align_offset(4096);
    let buf = &mut backing[at..at + chunk];
    for round in 0..4 {
        for off in (0..FILE_SIZE).step_by(chunk) {
            // SAFETY: reads at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), chunk, off as libc::off_t) };
            assert_eq!(n, chunk as isize, "pread at {off}: {}", io::Error::last_os_error());
            assert!(*buf == h.fs.data[off..off + chunk], "round {round}: wrong bytes at {off}");
            // SAFETY: writes `buf.len()` bytes from `buf` (what was just read).
            let n = unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), chunk, off as libc::off_t) };
            assert_eq!(n, chunk as isize, "pwrite at {off}: {}", io::Error::last_os_error());
        }
    }
    drop(fd);
    let payload = h.fs.payload_size as u64;
    assert_eq!(h.fs.max_read.load(Ordering::Relaxed), payload, "READ replies as large as the buffer");
    assert_eq!(h.fs.max_write.load(Ordering::Relaxed), payload, "WRITE payloads as large as the buffer");
    assert_eq!(h.fs.written.load(Ordering::Relaxed), 4 * FILE_SIZE as u64);
    assert_eq!(h.fs.write_mismatches.load(Ordering::Relaxed), 0, "a WRITE payload arrived wrong");
    assert_eq!(h.seen.others.load(Ordering::Relaxed), 0);
    h.finish();
}

/// From the `INIT` reply that grants io_uring until every queue has entries,
/// the kernel holds new requests (Linux 6.14+), neither failing them nor
/// sending them over `/dev/fuse`; `Ring::start` releases them to the ring.
#[test]
fn requests_wait_for_the_ring() {
    let _serial = serial();
    require_uring!();
    let mut h = Harness::mount(true);
    h.start_classic(1, true);
    let cfg = h.config();
    let ring = thread::scope(|s| {
        let waiter = s.spawn(|| check_root(&h));
        thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished(), "a stat before the ring is ready was answered");
        assert_eq!(h.seen.others.load(Ordering::Relaxed), 0, "it was sent over /dev/fuse");
        let ring = Ring::start(h.dev.as_fd(), cfg, h.fs.clone()).expect("Ring::start");
        waiter.join().expect("the held stat");
        ring
    });
    assert_eq!(ring.served().iter().sum::<u64>(), 1, "the held stat went through the ring");
    h.ring = Some(ring);
    h.finish();
}

/// `stop` on a live mount wakes the threads through their eventfds and joins
/// them (a session stops the ring after the unmount; this is the other way).
#[test]
fn stop_wakes_waiting_threads() {
    let _serial = serial();
    require_uring!();
    let mut h = Harness::mount(true);
    h.start_classic(1, false);
    h.start_ring(h.config()).expect("Ring::start");
    check_root(&h);
    let t = Instant::now();
    h.ring.take().expect("the ring").stop();
    eprintln!("stopped in {:?}", t.elapsed());
    let gone = wait_until(Duration::from_secs(2), || ring_threads().is_empty());
    assert!(gone, "ring threads left after stop: {:?}", ring_threads());
    h.finish();
}
