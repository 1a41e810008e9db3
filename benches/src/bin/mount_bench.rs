//! Mount-level benchmark: a real `sectorfs` mount against tmpfs (`/dev/shm`)
//! and against `nullfs` (this crate's FUSE file system that stores nothing:
//! the transport's ceiling) in the same run, for each `--cache` mode asked
//! for (`--modes direct,writethrough,writeback`; default `direct`), on the
//! workloads of the FUSE-ceiling table in DESIGN.md ("What the FUSE transport
//! allows on this machine"), so that the ratios are comparable with it.
//!
//! Rounds are interleaved: tmpfs, then sectorfs and nullfs in each mode, then
//! round 2, ... Each FUSE round mounts fresh (`sectorfs mount MP -f --size 4G
//! --cache MODE` or `nullfs MP --cache MODE`) on a fresh temporary directory
//! (so its memory is cold at the start of the round) and unmounts it at the
//! end; each tmpfs round uses a fresh directory under `/dev/shm`, removed at
//! the end. Per workload it prints the median per side, "x of tmpfs" (tmpfs
//! time / this time, best of the rounds) and, for sectorfs, "x of ceiling"
//! (nullfs time / sectorfs time in the same mode) and the daemon's CPU time.
//! nullfs reads zeros, so its reads are not checked.
//!
//! What each workload measures (full size; `--quick` scales them down):
//!
//! * `seq write, cold`: a new 1 GiB file written in 1 MiB blocks, `fsync`,
//!   close, on a fresh mount / fresh tmpfs directory. Every page is touched
//!   for the first time in this round (kernel page cache and, for sectorfs,
//!   the daemon's sectors). On this VM the very first touch of guest memory is
//!   ~10x dearer than a rewrite, so round 1 can be much slower than the rest;
//!   the per-round figures are printed below the table.
//! * `seq write, warm (overwrite)`: the same file rewritten in place (no
//!   truncate): page cache and sectors exist already.
//! * `seq write, new file after delete`: the file is deleted and a new one of
//!   the same size written: sectorfs reuses its freed sectors (warm pool) but
//!   the kernel page cache of the new inode is new; tmpfs gets pages back
//!   from the kernel.
//! * `seq read, page cache hot`: reading the file just written. In the
//!   cached modes (`writethrough`, `writeback`: `FOPEN_KEEP_CACHE`) the
//!   written pages are in the FUSE inode's page cache and this read never
//!   reaches the daemon; in `direct` mode every read is a request.
//! * `seq read, page cache dropped`: the same after
//!   `posix_fadvise(DONTNEED)` on the (clean, fsynced) file: every read goes
//!   to the daemon (FUSE READ requests, with kernel readahead). The share of
//!   pages still cached after the drop is checked with `mincore` and reported
//!   if the drop did not work. On tmpfs the advice is a no-op (the page cache
//!   is the storage), so both tmpfs read rows measure the same thing.
//! * `4K rand read, 2 thr, cache hot`: a 256 MiB file (written untimed), two
//!   threads each doing a fixed number of 4 KiB `pread`s at seeded uniformly
//!   random page-aligned offsets (`POSIX_FADV_RANDOM`, as fio does). All hits
//!   in the page cache.
//! * `4K rand write, 2 thr, + fsync`: the same with `pwrite`, then one `fsync`
//!   (inside the timing, so that sectorfs's writeback to the daemon counts).
//! * `4K rand read, 2 thr, misses`: after dropping the cache, each thread reads
//!   a distinct set of pages (a seeded permutation): every read is a miss and
//!   a FUSE round trip on sectorfs (no readahead under `FADV_RANDOM`).
//! * `small files: create / stat / delete`: N files of 1 KiB in one directory
//!   (`O_CREAT|O_EXCL`, write, close), then `stat` of each, then `unlink` of
//!   each, timed separately, one thread.
//!
//! Usage: `mount_bench [--bin PATH] [--rounds N] [--quick] [--size SIZE]`;
//! `SECTORFS_BENCH_MOUNT_ARGS` adds mount options (e.g. `--sector-size 16K`).
//! Environment: `SECTORFS_BIN`, `SECTORFS_BENCH_ROUNDS` (default 3),
//! `SECTORFS_BENCH_QUICK=1`. Without `--bin` the `sectorfs` binary next to
//! this one (same target directory) is used. Needs root or a user allowed
//! to mount FUSE. Ctrl-C stops at the next workload and cleans up.

#[cfg(target_os = "linux")]
fn main() {
    std::process::exit(linux::main());
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("mount_bench: only for Linux (FUSE)");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::CString;
    use std::fs::{File, OpenOptions};
    use std::io::{self, BufRead, BufReader, Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, ChildStdout, Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    const PAGE: u64 = 4 * KIB;
    const SEED: u64 = 0x5EC7_0F5B;

    /// Workload sizes.
    struct Params {
        seq_bytes: u64,
        block: u64,
        rand_file: u64,
        threads: usize,
        rand_ops_per_thread: usize,
        miss_ops_per_thread: usize,
        small_files: usize,
        small_size: usize,
    }

    impl Params {
        fn full() -> Params {
            Params {
                seq_bytes: GIB,
                block: MIB,
                rand_file: 256 * MIB,
                threads: 2,
                rand_ops_per_thread: 100_000,
                // 2 x 8192 distinct pages = 64 MiB of the 256 MiB file.
                miss_ops_per_thread: 8192,
                small_files: 5000,
                small_size: KIB as usize,
            }
        }
        fn quick() -> Params {
            Params {
                seq_bytes: 256 * MIB,
                rand_file: 64 * MIB,
                rand_ops_per_thread: 20_000,
                miss_ops_per_thread: 2048,
                small_files: 1000,
                ..Params::full()
            }
        }
    }

    struct Opts {
        bin: PathBuf,
        rounds: usize,
        quick: bool,
        size: String,
        /// `--cache` modes to run sectorfs (and the null fs) in.
        modes: Vec<String>,
        /// The null file system (`nullfs`), if it is to be run.
        nullfs: Option<PathBuf>,
    }

    /// What one column of the table measures.
    #[derive(Clone, PartialEq, Eq)]
    enum Side {
        Tmpfs,
        /// `sectorfs mount --cache MODE`.
        Sectorfs(String),
        /// `nullfs --cache MODE`: the transport's ceiling in that mode.
        Nullfs(String),
    }

    impl Side {
        fn label(&self) -> String {
            match self {
                Side::Tmpfs => "tmpfs".into(),
                Side::Sectorfs(m) => format!("sectorfs {m}"),
                Side::Nullfs(m) => format!("null fs {m}"),
            }
        }
    }

    // ---------------------------------------------------------------- signals

    static INTERRUPTED: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_sig: libc::c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }

    /// SIGINT/SIGTERM set a flag (checked between workloads) instead of
    /// killing the process, so that the guards unmount and clean up.
    fn install_signal_handlers() {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: `sa` is zero-initialised (a valid `sigaction`: empty
            // mask, no flags) before its fields are set; `on_signal` is an
            // `extern "C"` function that only stores to an atomic, which is
            // async-signal-safe; the null old-action pointer is allowed.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
    }

    fn check_interrupt() -> io::Result<()> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted by a signal"));
        }
        Ok(())
    }

    // ------------------------------------------------------------ temp dirs

    /// Creates a new directory `base/prefix.PID.N` (never an existing one).
    fn fresh_dir(base: &Path, prefix: &str) -> io::Result<PathBuf> {
        let pid = std::process::id();
        for n in 0..1000u32 {
            let p = base.join(format!("{prefix}.{pid}.{n}"));
            match std::fs::create_dir(&p) {
                Ok(()) => return p.canonicalize(),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free temporary directory name"))
    }

    /// A fresh directory under `/dev/shm`; removed (recursively) on drop.
    struct ShmDir {
        path: PathBuf,
    }

    impl ShmDir {
        fn new() -> io::Result<ShmDir> {
            Ok(ShmDir { path: fresh_dir(Path::new("/dev/shm"), "sectorfs-mount-bench")? })
        }
    }

    impl Drop for ShmDir {
        fn drop(&mut self) {
            // Only ever our own directory, and never a mount point.
            if !is_mounted(&self.path) {
                if let Err(e) = std::fs::remove_dir_all(&self.path) {
                    eprintln!("warning: could not remove {}: {e}", self.path.display());
                }
            }
        }
    }

    // ---------------------------------------------------------------- mount

    /// A sectorfs mount on a fresh temporary directory, served by a child
    /// daemon (`-f`). Dropping it (also while unwinding from a panic)
    /// unmounts it, reaps the daemon (killing it if it does not exit), and
    /// removes the empty mountpoint directory.
    struct MountGuard {
        path: PathBuf,
        child: Option<Child>,
        /// The daemon's stdout, kept open until it is reaped.
        _stdout: Option<std::sync::mpsc::Receiver<ChildStdout>>,
    }

    impl MountGuard {
        /// `sectorfs mount` (`null` false) or `nullfs` (`null` true) with
        /// `--cache mode`.
        fn new(bin: &Path, size: &str, mode: &str, null: bool) -> io::Result<MountGuard> {
            let path = fresh_dir(&std::env::temp_dir(), "sectorfs-mount-bench")?;
            let mut g = MountGuard { path, child: None, _stdout: None };
            let mut cmd = Command::new(bin);
            if null {
                cmd.arg(&g.path).args(["--cache", mode]);
            } else {
                cmd.arg("mount").arg(&g.path).arg("-f").arg("--size").arg(size).args(["--cache", mode]);
                // Extra mount options to compare settings, e.g. "--sector-size 16K".
                cmd.args(std::env::var("SECTORFS_BENCH_MOUNT_ARGS").unwrap_or_default().split_whitespace());
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("spawn {}: {e}", bin.display())))?;
            let out = child.stdout.take().expect("piped stdout");
            g.child = Some(child);
            // Read the readiness line on a helper thread, so that a daemon
            // that hangs before it is ready cannot hang the bench.
            let (line_tx, line_rx) = std::sync::mpsc::channel();
            let (out_tx, out_rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut r = BufReader::new(out);
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let _ = line_tx.send(line);
                let _ = out_tx.send(r.into_inner());
            });
            let line = line_rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
            g._stdout = Some(out_rx);
            if !line.starts_with("sectorfs: mounted") && !line.starts_with("nullfs: mounted") {
                return Err(io::Error::other(format!("mount did not become ready: {line:?}")));
            }
            if !is_mounted(&g.path) {
                return Err(io::Error::other("readiness line seen but the mountpoint is not mounted"));
            }
            Ok(g)
        }

        fn wait_exit(&mut self, limit: Duration) -> bool {
            let start = Instant::now();
            let Some(c) = &mut self.child else { return true };
            loop {
                if matches!(c.try_wait(), Ok(Some(_)) | Err(_)) {
                    return true;
                }
                if start.elapsed() > limit {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    impl Drop for MountGuard {
        fn drop(&mut self) {
            if is_mounted(&self.path) {
                if let Err(e) = umount2(&self.path, 0) {
                    if e.raw_os_error() == Some(libc::EBUSY) {
                        let _ = umount2(&self.path, libc::MNT_DETACH);
                    } else {
                        eprintln!("warning: umount {}: {e}", self.path.display());
                    }
                }
            }
            if !self.wait_exit(Duration::from_secs(20)) {
                eprintln!("warning: sectorfs daemon did not exit after unmount: killing it");
                if let Some(c) = &mut self.child {
                    let _ = c.kill();
                }
            }
            if let Some(c) = &mut self.child {
                let _ = c.wait();
            }
            if is_mounted(&self.path) {
                let _ = umount2(&self.path, libc::MNT_DETACH);
            }
            if is_mounted(&self.path) {
                eprintln!("warning: {} is still mounted; leaving it", self.path.display());
            } else {
                // Non-recursive: only the (now empty) mountpoint itself.
                let _ = std::fs::remove_dir(&self.path);
            }
        }
    }

    fn cstr(p: &Path) -> CString {
        CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
    }

    fn umount2(p: &Path, flags: libc::c_int) -> io::Result<()> {
        let c = cstr(p);
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        let r = unsafe { libc::umount2(c.as_ptr(), flags) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Whether `path` is a mount point in `/proc/self/mountinfo`.
    fn is_mounted(path: &Path) -> bool {
        mount_fstype(path).is_some()
    }

    /// The file system type of the mount whose mount point is `path`.
    fn mount_fstype(path: &Path) -> Option<String> {
        let want = path.as_os_str().as_bytes();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines().rev().find_map(|l| {
            let mp = l.split(' ').nth(4)?;
            if mp.replace("\\040", " ").as_bytes() != want {
                return None;
            }
            let (_, rest) = l.split_once(" - ")?;
            rest.split(' ').next().map(str::to_owned)
        })
    }

    // ------------------------------------------------------------- file I/O

    fn fadvise(f: &File, advice: libc::c_int) -> io::Result<()> {
        // SAFETY: posix_fadvise only reads its integer arguments; the fd is
        // open for the duration of the call.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, advice) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(r))
        }
    }

    /// Drops the clean page-cache pages of `path` and returns the share of
    /// its pages still resident afterwards (0.0 = all dropped).
    fn drop_cache(path: &Path) -> io::Result<f64> {
        let f = File::open(path)?;
        f.sync_all()?;
        fadvise(&f, libc::POSIX_FADV_DONTNEED)?;
        resident_share(&f)
    }

    /// The share of `f`'s pages in the page cache (`mmap` + `mincore`; the
    /// mapping is never touched, so this faults nothing in).
    fn resident_share(f: &File) -> io::Result<f64> {
        let len = f.metadata()?.len() as usize;
        if len == 0 {
            return Ok(0.0);
        }
        // SAFETY: a fresh shared read-only mapping of an open file; no Rust
        // reference to its memory is ever created.
        let addr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let pages = len.div_ceil(PAGE as usize);
        let mut vec = vec![0u8; pages];
        // SAFETY: `addr..addr+len` is the mapping made above; `vec` has one
        // byte per page of it, as mincore requires.
        let r = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
        let err = io::Error::last_os_error();
        // SAFETY: unmaps exactly the mapping made above, which nothing uses.
        unsafe { libc::munmap(addr, len) };
        if r != 0 {
            return Err(err);
        }
        Ok(vec.iter().filter(|&&b| b & 1 != 0).count() as f64 / pages as f64)
    }

    /// Writes `total` bytes in `block`-sized writes (each block starts with
    /// its index, so reads can check placement), then fsync and close.
    fn seq_write(path: &Path, total: u64, block: u64, new: bool) -> io::Result<Duration> {
        let mut buf = pattern(block as usize, 0xA5);
        let t = Instant::now();
        let mut f = OpenOptions::new().write(true).create_new(new).open(path)?;
        for i in 0..total / block {
            buf[..8].copy_from_slice(&i.to_le_bytes());
            f.write_all(&buf)?;
        }
        f.sync_all()?;
        drop(f);
        Ok(t.elapsed())
    }

    /// Reads the whole file in `block`-sized reads and checks each block's
    /// index.
    /// Reads the file `seq_write` wrote; `verify` checks each block (not on
    /// the null fs, which reads zeros).
    fn seq_read(path: &Path, total: u64, block: u64, verify: bool) -> io::Result<Duration> {
        let mut buf = vec![0u8; block as usize];
        let t = Instant::now();
        let mut f = File::open(path)?;
        for i in 0..total / block {
            f.read_exact(&mut buf)?;
            if verify && buf[..8] != i.to_le_bytes() {
                return Err(io::Error::other(format!("{}: block {i} has wrong contents", path.display())));
            }
        }
        if f.read(&mut buf[..1])? != 0 {
            return Err(io::Error::other(format!("{}: longer than {total} bytes", path.display())));
        }
        drop(f);
        Ok(t.elapsed())
    }

    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect()
    }

    /// splitmix64: a small seeded generator (no dependency).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    /// Per thread, `ops` page-aligned offsets drawn uniformly from the file.
    fn uniform_offsets(file: u64, threads: usize, ops: usize, seed: u64) -> Vec<Vec<u64>> {
        let pages = file / PAGE;
        (0..threads)
            .map(|t| {
                let mut r = Rng(seed ^ (t as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
                (0..ops).map(|_| (r.next() % pages) * PAGE).collect()
            })
            .collect()
    }

    /// Per thread, `ops` offsets of pages no other read touches (a seeded
    /// permutation of the file's pages, cut into slices).
    fn distinct_offsets(file: u64, threads: usize, ops: usize, seed: u64) -> Vec<Vec<u64>> {
        let pages = file / PAGE;
        let mut all: Vec<u64> = (0..pages).collect();
        let mut r = Rng(seed);
        for i in (1..all.len()).rev() {
            all.swap(i, (r.next() % (i as u64 + 1)) as usize);
        }
        assert!(threads * ops <= all.len(), "more distinct reads than pages");
        all.chunks(ops).take(threads).map(|c| c.iter().map(|p| p * PAGE).collect()).collect()
    }

    /// One thread per offset list, each with its own descriptor
    /// (`FADV_RANDOM`), doing 4 KiB `pread`s or `pwrite`s; `fsync` at the end
    /// of writes. The offsets are made before the clock starts.
    fn rand_io(path: &Path, offsets: &[Vec<u64>], write: bool) -> io::Result<Duration> {
        let files: Vec<File> = offsets
            .iter()
            .map(|_| {
                let f = OpenOptions::new().read(true).write(write).open(path)?;
                fadvise(&f, libc::POSIX_FADV_RANDOM)?;
                Ok(f)
            })
            .collect::<io::Result<_>>()?;
        let barrier = std::sync::Barrier::new(offsets.len() + 1);
        let t = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .iter()
                .zip(offsets)
                .enumerate()
                .map(|(i, (f, offs))| {
                    let barrier = &barrier;
                    s.spawn(move || -> io::Result<()> {
                        let mut buf = pattern(PAGE as usize, i as u8);
                        barrier.wait();
                        for &off in offs {
                            if write {
                                f.write_all_at(&buf, off)?;
                            } else {
                                f.read_exact_at(&mut buf, off)?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            barrier.wait();
            let t = Instant::now();
            for h in handles {
                h.join().expect("I/O thread panicked")?;
            }
            if write {
                files[0].sync_all()?;
            }
            Ok::<_, io::Error>(t.elapsed())
        })?;
        Ok(t)
    }

    // ------------------------------------------------------------- results

    #[derive(Clone, Copy)]
    enum Work {
        Bytes(u64),
        Ops(u64),
    }

    struct Row {
        name: String,
        work: Work,
        /// Per side (index into `Results::sides`): wall times, one per round.
        times: Vec<Vec<Duration>>,
        /// Per side: the daemon's CPU time, one per round (FUSE sides).
        cpu: Vec<Vec<Duration>>,
    }

    struct Results {
        sides: Vec<Side>,
        rows: Vec<Row>,
        notes: Vec<String>,
    }

    impl Results {
        fn record(&mut self, side: &Side, name: &str, work: Work, d: Duration, cpu: Option<Duration>) {
            let n = self.sides.len();
            let s = self.sides.iter().position(|x| x == side).expect("a known side");
            let i = match self.rows.iter().position(|r| r.name == name) {
                Some(i) => i,
                None => {
                    self.rows.push(Row { name: name.to_owned(), work, times: vec![vec![]; n], cpu: vec![vec![]; n] });
                    self.rows.len() - 1
                }
            };
            let row = &mut self.rows[i];
            row.times[s].push(d);
            row.cpu[s].extend(cpu);
        }
    }

    fn best(v: &[Duration]) -> Option<Duration> {
        v.iter().min().copied()
    }

    fn median(v: &[Duration]) -> Option<Duration> {
        let mut s = v.to_vec();
        s.sort();
        match s.len() {
            0 => None,
            n if n % 2 == 1 => Some(s[n / 2]),
            n => Some((s[n / 2 - 1] + s[n / 2]) / 2),
        }
    }

    fn cell(d: Option<Duration>, work: Work) -> String {
        let Some(d) = d else { return "-".to_owned() };
        let secs = d.as_secs_f64();
        let rate = match work {
            Work::Bytes(b) => format!("{:.2} GiB/s", b as f64 / GIB as f64 / secs),
            Work::Ops(n) => format!("{:.0} k/s", n as f64 / secs / 1e3),
        };
        format!("{:.1} ms ({rate})", secs * 1e3)
    }

    /// Daemon CPU time and its share of the wall time (over 100%: more
    /// than one daemon thread busy).
    fn cpu_cell(cpu: Option<Duration>, wall: Option<Duration>) -> String {
        match (cpu, wall) {
            (Some(c), Some(w)) => {
                format!("{:.1} ms ({:.0}%)", c.as_secs_f64() * 1e3, c.as_secs_f64() / w.as_secs_f64() * 100.0)
            }
            _ => "-".to_owned(),
        }
    }

    fn ratio(s: Option<Duration>, t: Option<Duration>) -> String {
        match (s, t) {
            (Some(s), Some(t)) => format!("{:.2}x", t.as_secs_f64() / s.as_secs_f64()),
            _ => "-".to_owned(),
        }
    }

    fn print_table(res: &Results, rounds: usize) {
        let tmpfs = res.sides.iter().position(|x| *x == Side::Tmpfs).expect("tmpfs side");
        let ceiling = |s: &Side| match s {
            Side::Sectorfs(m) => res.sides.iter().position(|x| *x == Side::Nullfs(m.clone())),
            _ => None,
        };
        println!();
        let mut head = String::from("| workload | tmpfs median |");
        let mut rule = String::from("|---|---|");
        for side in res.sides.iter().filter(|x| **x != Side::Tmpfs) {
            let l = side.label();
            head.push_str(&format!(" {l} median | {l} x of tmpfs |"));
            rule.push_str("---|---|");
            if ceiling(side).is_some() {
                head.push_str(&format!(" {l} x of ceiling |"));
                rule.push_str("---|");
            }
            if matches!(side, Side::Sectorfs(_)) {
                head.push_str(&format!(" {l} daemon CPU |"));
                rule.push_str("---|");
            }
        }
        println!("{head}");
        println!("{rule}");
        for r in &res.rows {
            let mut line = format!("| {} | {} |", r.name, cell(median(&r.times[tmpfs]), r.work));
            for (i, side) in res.sides.iter().enumerate().filter(|(_, x)| **x != Side::Tmpfs) {
                line.push_str(&format!(
                    " {} | {} |",
                    cell(median(&r.times[i]), r.work),
                    ratio(best(&r.times[i]), best(&r.times[tmpfs]))
                ));
                if let Some(c) = ceiling(side) {
                    line.push_str(&format!(" {} |", ratio(best(&r.times[i]), best(&r.times[c]))));
                }
                if matches!(side, Side::Sectorfs(_)) {
                    line.push_str(&format!(" {} |", cpu_cell(median(&r.cpu[i]), median(&r.times[i]))));
                }
            }
            println!("{line}");
        }
        println!();
        println!(
            "x of tmpfs = tmpfs time / this side's time, best of {rounds} interleaved rounds each; x of ceiling = the \
             null fs's time in the same --cache mode / sectorfs's time (1.00x: as fast as a FUSE fs that stores nothing)."
        );
        println!("daemon CPU = CPU time of all daemon threads during the workload, median (% of its wall time).");
        let labels: Vec<String> = res.sides.iter().map(Side::label).collect();
        println!("Per-round times, ms ({}):", labels.join(" | "));
        let ms =
            |v: &[Duration]| v.iter().map(|d| format!("{:.1}", d.as_secs_f64() * 1e3)).collect::<Vec<_>>().join(" ");
        for r in &res.rows {
            let cols: Vec<String> = r.times.iter().map(|v| ms(v)).collect();
            println!("  {:<40} {}", r.name, cols.join(" | "));
        }
        for n in &res.notes {
            println!("note: {n}");
        }
    }

    // ------------------------------------------------------------ workloads

    /// Total CPU time of the daemon's threads so far (`schedstat`, ns).
    fn daemon_cpu(pid: u32) -> Option<Duration> {
        let mut ns = 0u64;
        for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let st = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
            ns += st.split(' ').next()?.parse::<u64>().ok()?;
        }
        Some(Duration::from_nanos(ns))
    }

    /// Where a round runs and where its figures go.
    struct Ctx<'a> {
        dir: &'a Path,
        side: &'a Side,
        /// The daemon's pid (FUSE rounds).
        daemon: Option<u32>,
        res: &'a mut Results,
    }

    impl Ctx<'_> {
        /// Runs one timed workload (`f` returns the measured time) and
        /// records it with the daemon's CPU time over the whole call.
        fn measure(&mut self, name: &str, work: Work, f: impl FnOnce() -> io::Result<Duration>) -> io::Result<()> {
            check_interrupt()?;
            let c0 = self.daemon.and_then(daemon_cpu);
            let d = f()?;
            let c1 = self.daemon.and_then(daemon_cpu);
            let cpu = c0.zip(c1).map(|(a, b)| b.saturating_sub(a));
            self.res.record(self.side, name, work, d, cpu);
            Ok(())
        }
    }

    /// One round of every workload in `cx.dir` (an empty directory on the
    /// file system under test).
    fn round(cx: &mut Ctx<'_>, p: &Params) -> io::Result<()> {
        let (dir, side) = (cx.dir, cx.side.clone());
        let verify = !matches!(side, Side::Nullfs(_));
        let (n, block) = (p.seq_bytes, p.block);
        let sz = fmt_size(n);
        let seq = dir.join("seq");
        cx.measure(&format!("seq write {sz}, cold (new file)"), Work::Bytes(n), || seq_write(&seq, n, block, true))?;
        cx.measure(&format!("seq write {sz}, warm (overwrite)"), Work::Bytes(n), || seq_write(&seq, n, block, false))?;
        cx.measure(&format!("seq read {sz}, page cache hot"), Work::Bytes(n), || seq_read(&seq, n, block, verify))?;
        let left = drop_cache(&seq)?;
        if side != Side::Tmpfs && left > 0.05 {
            let l = side.label();
            cx.res.notes.push(format!("{l}: {:.0}% of the seq file stayed cached after DONTNEED", left * 100.0));
        }
        cx.measure(&format!("seq read {sz}, page cache dropped"), Work::Bytes(n), || seq_read(&seq, n, block, verify))?;
        std::fs::remove_file(&seq)?;
        let seq2 = dir.join("seq2");
        cx.measure(&format!("seq write {sz}, new file after delete"), Work::Bytes(n), || {
            seq_write(&seq2, n, block, true)
        })?;
        std::fs::remove_file(&seq2)?;

        check_interrupt()?;
        let (rn, t) = (p.rand_file, p.threads);
        let rsz = fmt_size(rn);
        let rand = dir.join("rand");
        seq_write(&rand, rn, block, true)?;
        let ops = Work::Ops((t * p.rand_ops_per_thread) as u64);
        let offs = uniform_offsets(rn, t, p.rand_ops_per_thread, SEED);
        cx.measure(&format!("4K rand read {rsz}, {t} thr, cache hot"), ops, || rand_io(&rand, &offs, false))?;
        let offs = uniform_offsets(rn, t, p.rand_ops_per_thread, SEED + 1);
        cx.measure(&format!("4K rand write {rsz}, {t} thr, + fsync"), ops, || rand_io(&rand, &offs, true))?;
        let left = drop_cache(&rand)?;
        if side != Side::Tmpfs && left > 0.05 {
            let l = side.label();
            cx.res.notes.push(format!("{l}: {:.0}% of the rand file stayed cached after DONTNEED", left * 100.0));
        }
        let offs = distinct_offsets(rn, t, p.miss_ops_per_thread, SEED + 2);
        let mops = Work::Ops((t * p.miss_ops_per_thread) as u64);
        cx.measure(&format!("4K rand read {rsz}, {t} thr, misses"), mops, || rand_io(&rand, &offs, false))?;
        std::fs::remove_file(&rand)?;

        let files = p.small_files;
        let small = dir.join("small");
        std::fs::create_dir(&small)?;
        let names: Vec<PathBuf> = (0..files).map(|i| small.join(format!("f{i:05}.o"))).collect();
        let data = pattern(p.small_size, 0x3C);
        let label = format!("{files} x {} B files", p.small_size);
        let ops = Work::Ops(files as u64);
        cx.measure(&format!("small files: create {label}"), ops, || {
            let t = Instant::now();
            for name in &names {
                let mut f = OpenOptions::new().write(true).create_new(true).open(name)?;
                f.write_all(&data)?;
            }
            Ok(t.elapsed())
        })?;
        cx.measure(&format!("small files: stat {label}"), ops, || {
            let t = Instant::now();
            for name in &names {
                let m = std::fs::metadata(name)?;
                if verify && m.len() != data.len() as u64 {
                    return Err(io::Error::other(format!("{}: size {} after create", name.display(), m.len())));
                }
            }
            Ok(t.elapsed())
        })?;
        cx.measure(&format!("small files: delete {label}"), ops, || {
            let t = Instant::now();
            for name in &names {
                std::fs::remove_file(name)?;
            }
            Ok(t.elapsed())
        })?;
        std::fs::remove_dir(&small)?;
        Ok(())
    }

    fn fmt_size(b: u64) -> String {
        // The sizes used are whole GiB or whole MiB.
        if b >= GIB {
            format!("{} GiB", b / GIB)
        } else {
            format!("{} MiB", b / MIB)
        }
    }

    // ----------------------------------------------------------------- main

    fn usage() -> ! {
        eprintln!(
            "usage: mount_bench [--bin PATH_TO_SECTORFS] [--rounds N] [--quick] [--size SIZE] \
             [--modes direct,writethrough,writeback] [--no-ceiling]"
        );
        eprintln!(
            "env: SECTORFS_BIN, SECTORFS_BENCH_ROUNDS (default 3), SECTORFS_BENCH_QUICK=1, \
             SECTORFS_BENCH_MODES (default direct)"
        );
        std::process::exit(2);
    }

    fn parse_opts() -> Opts {
        let env_bin = std::env::var_os("SECTORFS_BIN").map(PathBuf::from);
        let mut bin = env_bin.unwrap_or_else(|| {
            let me = std::env::current_exe().unwrap_or_default();
            me.parent().map(|d| d.join("sectorfs")).unwrap_or_else(|| PathBuf::from("sectorfs"))
        });
        let mut rounds: usize = match std::env::var("SECTORFS_BENCH_ROUNDS") {
            Ok(s) => s.parse().unwrap_or_else(|_| usage()),
            Err(_) => 3,
        };
        let mut quick = std::env::var("SECTORFS_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let mut size = "4G".to_owned();
        let mut modes = std::env::var("SECTORFS_BENCH_MODES").unwrap_or_else(|_| "direct".into());
        let mut ceiling = true;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--bin" => bin = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
                "--rounds" => rounds = args.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage()),
                "--quick" => quick = true,
                "--size" => size = args.next().unwrap_or_else(|| usage()),
                "--modes" => modes = args.next().unwrap_or_else(|| usage()),
                "--no-ceiling" => ceiling = false,
                _ => usage(),
            }
        }
        let modes: Vec<String> = modes.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_owned).collect();
        let known = ["direct", "writethrough", "writeback"];
        if rounds == 0 || modes.is_empty() || modes.iter().any(|m| !known.contains(&m.as_str())) {
            usage();
        }
        // The null fs is built next to this binary (`cargo build -p sectorfs-benches`).
        let me = std::env::current_exe().unwrap_or_default();
        let nullfs = me.parent().map(|d| d.join("nullfs")).filter(|p| ceiling && p.is_file());
        if ceiling && nullfs.is_none() {
            eprintln!("warning: no nullfs binary next to mount_bench: the ceiling is not measured");
        }
        Opts { bin, rounds, quick, size, modes, nullfs }
    }

    pub(super) fn main() -> i32 {
        let opts = parse_opts();
        if !opts.bin.is_file() {
            eprintln!(
                "mount_bench: no sectorfs binary at {} (build it: cargo build --release -p sectorfs, or pass --bin)",
                opts.bin.display()
            );
            return 2;
        }
        if !Path::new("/dev/fuse").exists() {
            eprintln!("mount_bench: /dev/fuse is missing: no FUSE on this machine");
            return 2;
        }
        match mount_fstype(Path::new("/dev/shm")).as_deref() {
            Some("tmpfs") => {}
            other => eprintln!("warning: /dev/shm is not a tmpfs mount ({other:?}); the baseline is not tmpfs"),
        }
        install_signal_handlers();
        let p = if opts.quick { Params::quick() } else { Params::full() };
        println!(
            "mount_bench: {} (--cache {}) vs tmpfs /dev/shm{}, {} interleaved rounds{}, {} threads for random I/O, {} cores",
            opts.bin.display(),
            opts.modes.join(","),
            if opts.nullfs.is_some() { " and the null fs" } else { "" },
            opts.rounds,
            if opts.quick { " (quick sizes)" } else { "" },
            p.threads,
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        );
        let mut sides = vec![Side::Tmpfs];
        for m in &opts.modes {
            sides.push(Side::Sectorfs(m.clone()));
            if opts.nullfs.is_some() {
                sides.push(Side::Nullfs(m.clone()));
            }
        }
        let mut res = Results { sides: sides.clone(), rows: vec![], notes: vec![] };
        let start = Instant::now();
        let r = (|| -> io::Result<()> {
            for i in 1..=opts.rounds {
                // Interleaved: every side once per round.
                for side in &sides {
                    let t = Instant::now();
                    match side {
                        Side::Tmpfs => {
                            let d = ShmDir::new()?;
                            round(&mut Ctx { dir: &d.path, side, daemon: None, res: &mut res }, &p)?;
                        }
                        Side::Sectorfs(mode) | Side::Nullfs(mode) => {
                            let null = matches!(side, Side::Nullfs(_));
                            let bin = if null { opts.nullfs.as_ref().expect("nullfs") } else { &opts.bin };
                            let m = MountGuard::new(bin, &opts.size, mode, null)?;
                            let daemon = m.child.as_ref().map(Child::id);
                            round(&mut Ctx { dir: &m.path, side, daemon, res: &mut res }, &p)?;
                        }
                    }
                    eprintln!("round {i}/{}: {} {:.1} s", opts.rounds, side.label(), t.elapsed().as_secs_f64());
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            eprintln!("mount_bench: {e}");
            if !res.rows.is_empty() {
                print_table(&res, opts.rounds);
            }
            return 1;
        }
        print_table(&res, opts.rounds);
        println!("total {:.0} s", start.elapsed().as_secs_f64());
        0
    }
}
