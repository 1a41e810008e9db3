//! Mount-level benchmark: a real `sectorfs` mount against tmpfs (`/dev/shm`)
//! and against `nullfs` (this crate's FUSE file system that stores nothing:
//! the transport's ceiling) in the same run, for each FUSE transport
//! (`--transports uring,classic`; default both where the kernel has FUSE
//! over io_uring) and each `--cache` mode asked for (`--modes
//! direct,writethrough,writeback`; default `direct`), on the workloads of the
//! FUSE-ceiling table in DESIGN.md ("What the FUSE transport allows on this
//! machine"), so that the ratios are comparable with it, plus the untar and
//! `rm -rf` of a source tree.
//!
//! # Rounds
//!
//! A round runs every workload on every side in lockstep: each side
//! (tmpfs, then sectorfs and nullfs for each mode and transport) gets a fresh
//! place (a FUSE mount, `sectorfs mount MP -f --size 4G --cache MODE
//! --transport T` or `nullfs MP --cache MODE --transport T`, on a fresh
//! temporary directory, so its memory is cold; or a fresh directory under
//! `/dev/shm`), then the first workload runs on each side in turn, then the
//! second, and so on, and the places are unmounted (removed) at the end. The
//! tree workloads follow, in lockstep again, on places of their own. Odd
//! rounds take the sides in that order, even rounds in the reverse order.
//! So the figures one ratio compares were taken seconds apart, not minutes:
//! on a shared machine whose load changes by the minute, that is what keeps
//! a ratio from measuring the load instead of the file systems. A
//! workload's untimed setup (writing the random-I/O file, dropping the
//! cache, deleting the file before "new file after delete") runs right
//! before it on the same side. All places live through a round: ~3 GiB of
//! RAM at peak for two transports in one mode, ~9 GiB for the three modes
//! (nullfs keeps no data, but the kernel caches what is written to it in the
//! cached modes).
//!
//! # What is reported
//!
//! Per workload: the median per side; "x of tmpfs" (tmpfs time / this time,
//! best of the rounds); for sectorfs "x of ceiling" (nullfs time / sectorfs
//! time, same transport and mode); for io_uring sides "x of classic" (the
//! same file system on the classic transport, same mode: classic time /
//! uring time). A second table gives, per FUSE side, the requests the daemon
//! served during the workload (the delta of the `req_*` counters from
//! `getxattr(MP, "user.sectorfs.stats")`, what `sectorfs stats --json`
//! prints, or `user.nullfs.stats`; the one `GETXATTR` that reads the
//! counters afterwards is not counted) and the daemon's CPU time per request:
//! `utime + stime` from `/proc/PID/stat` (all threads, also the ring's
//! threads and io_uring workers that ended during the workload) before and
//! after, summed over the rounds and divided by the requests summed over the
//! rounds. `/proc/PID/stat` counts in clock ticks (10 ms), so a workload
//! needs well over 10 ms of daemon CPU for the figure to mean much; summing
//! the rounds helps. nullfs reads zeros, so its reads are not checked.
//!
//! # Workloads (full size; `--quick` scales them down)
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
//! * `untar` / `rm -rf` (on a mount of its own, see Rounds): `tar -xf TAR
//!   -C DIR` of a source tree, then `rm -rf DIR`, each a child process timed
//!   from spawn to exit; then both again on the same mount ("again": freed
//!   memory reused, inode numbers and caches warm). The tar is read once
//!   before each untar (untimed) so it comes from the page cache. The tree is
//!   glibc's source: `--tree PATH` (or `SECTORFS_BENCH_TREE`), else the
//!   newest `/usr/src/glibc/glibc-*.tar.xz` (Debian's `glibc-source`
//!   package; `scripts/bench-mount` installs it where it can), decompressed
//!   once into `TARGET/bench-cache/` so the timing is tar extraction, not
//!   xz. glibc 2.36 (Debian 12) has 20,281 files, 834 directories and 1
//!   symlink (21,116 entries), 235.6 MB of file data (median file 1,338 B,
//!   10th percentile 72 B, 90th 7.9 KB, 99th 122 KB, largest 5.8 MB) in a
//!   252 MB tar. Without it, a deterministic synthetic tree of the same
//!   shape is generated once into the cache (same counts; log-normal sizes
//!   with glibc's median and 90th percentile, 1% of files drawn
//!   log-uniformly from 32 KiB to 4 MiB for the tail; `--tree synthetic`
//!   asks for it even where glibc's is installed). As root `tar` also
//!   restores owners and modes (its default), on tmpfs as on FUSE.
//!   `--no-tree` leaves these rows out.
//!
//! Usage: `mount_bench [--bin PATH] [--alt-bin PATH [--alt-label NAME]] [--rounds N] [--quick] [--size SIZE]
//! [--modes M,..] [--transports T,..] [--tree PATH] [--no-tree]
//! [--no-ceiling]`; `SECTORFS_BENCH_MOUNT_ARGS` adds mount options (e.g.
//! `--sector-size 16K`). Environment: `SECTORFS_BIN`,
//! `SECTORFS_BENCH_ROUNDS` (default 3), `SECTORFS_BENCH_QUICK=1`,
//! `SECTORFS_BENCH_MODES`, `SECTORFS_BENCH_TRANSPORTS`,
//! `SECTORFS_BENCH_TREE`. Without `--bin` the `sectorfs` binary next to this
//! one (same target directory) is used. Needs root or a user allowed to
//! mount FUSE (and, for io_uring, `enable_uring` on or root). Ctrl-C stops at
//! the next workload and cleans up.

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

    /// The kernel's switch for FUSE over io_uring (absent: not built in).
    const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

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
        /// `--alt-bin PATH`: a second sectorfs build measured beside `bin`
        /// in the same rounds (e.g. another allocator), labelled
        /// `--alt-label` (default "alt").
        alt_bin: Option<PathBuf>,
        alt_label: String,
        rounds: usize,
        quick: bool,
        size: String,
        /// `--cache` modes to run sectorfs (and the null fs) in.
        modes: Vec<String>,
        /// FUSE transports (`uring`, `classic`) to run them on.
        transports: Vec<String>,
        /// The null file system (`nullfs`), if it is to be run.
        nullfs: Option<PathBuf>,
        /// The untar / `rm -rf` workload, unless `--no-tree`.
        tree: Option<Tree>,
    }

    /// What one column of the table measures.
    #[derive(Clone, PartialEq, Eq)]
    enum Side {
        Tmpfs,
        /// `sectorfs mount --cache MODE --transport T` (`null` false) or
        /// `nullfs --cache MODE --transport T` (`null` true: the transport's
        /// ceiling for that mode).
        Fuse {
            null: bool,
            transport: String,
            mode: String,
            /// `--alt-bin`'s label when this side runs that binary instead
            /// of `--bin` (never on the null fs).
            alt: Option<String>,
        },
    }

    impl Side {
        fn label(&self) -> String {
            match self {
                Side::Tmpfs => "tmpfs".into(),
                Side::Fuse { null: false, transport, mode, alt: None } => format!("sectorfs {transport} {mode}"),
                Side::Fuse { null: false, transport, mode, alt: Some(l) } => format!("{l} {transport} {mode}"),
                Side::Fuse { null: true, transport, mode, .. } => format!("null fs {transport} {mode}"),
            }
        }

        fn is_null(&self) -> bool {
            matches!(self, Side::Fuse { null: true, .. })
        }

        /// The same file system on another transport or as the null fs.
        fn with(&self, null: bool, transport: &str) -> Option<Side> {
            match self {
                Side::Tmpfs => None,
                Side::Fuse { mode, alt, .. } => Some(Side::Fuse {
                    null,
                    transport: transport.into(),
                    mode: mode.clone(),
                    alt: if null { None } else { alt.clone() },
                }),
            }
        }

        /// The column this side's "x of ceiling" is taken against.
        fn ceiling(&self) -> Option<Side> {
            match self {
                Side::Fuse { null: false, transport, .. } => self.with(true, transport),
                _ => None,
            }
        }

        /// The column an io_uring side's "x of classic" is taken against.
        fn classic(&self) -> Option<Side> {
            match self {
                Side::Fuse { null, transport, .. } if transport == "uring" => self.with(*null, "classic"),
                _ => None,
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

    /// A sectorfs or nullfs mount on a fresh temporary directory, served by a
    /// child daemon (sectorfs with `-f`). Dropping it (also while unwinding from a panic)
    /// unmounts it, reaps the daemon (killing it if it does not exit), and
    /// removes the empty mountpoint directory.
    struct MountGuard {
        path: PathBuf,
        child: Option<Child>,
        /// The daemon's stdout, kept open until it is reaped.
        _stdout: Option<std::sync::mpsc::Receiver<ChildStdout>>,
    }

    impl MountGuard {
        /// Mounts `side` (a FUSE side): `sectorfs mount` from `bin` or
        /// `nullfs` from `nullfs`, with its `--cache` mode and `--transport`.
        fn new(opts: &Opts, side: &Side) -> io::Result<MountGuard> {
            let Side::Fuse { null, transport, mode, alt } = side else {
                return Err(io::Error::other("tmpfs is not a FUSE mount"));
            };
            let path = fresh_dir(&std::env::temp_dir(), "sectorfs-mount-bench")?;
            let mut g = MountGuard { path, child: None, _stdout: None };
            let (nullfs, size) = (opts.nullfs.as_deref(), &opts.size);
            let bin = match (null, alt, &opts.alt_bin) {
                (true, ..) => nullfs.ok_or_else(|| io::Error::other("no nullfs binary"))?,
                (false, Some(_), Some(b)) => b,
                _ => &opts.bin,
            };
            let mut cmd = Command::new(bin);
            if *null {
                cmd.arg(&g.path).args(["--cache", mode, "--transport", transport]);
            } else {
                cmd.arg("mount").arg(&g.path).arg("-f").arg("--size").arg(size);
                cmd.args(["--cache", mode, "--transport", transport]);
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
            // The transport asked for is the one serving (`--transport uring`
            // fails rather than fall back, but check what the daemon says).
            let st = Stats::read(&g.path, side)?;
            if st.transport.as_deref() != Some(transport.as_str()) {
                return Err(io::Error::other(format!(
                    "{}: asked for the {transport} transport, the daemon reports {:?}",
                    side.label(),
                    st.transport
                )));
            }
            if g.child.as_ref().map(Child::id) != Some(st.pid) {
                return Err(io::Error::other(format!("{}: stats pid {} is not the child's", side.label(), st.pid)));
            }
            Ok(g)
        }

        /// The daemon's pid (the child: it stays in the foreground).
        fn pid(&self) -> Option<u32> {
            self.child.as_ref().map(Child::id)
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
                eprintln!("warning: FUSE daemon did not exit after unmount: killing it (pid {:?})", self.pid());
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

    // ---------------------------------------------------- daemon counters

    /// What a FUSE daemon reports about itself: `sectorfs stats --json`
    /// (the virtual attribute `user.sectorfs.stats` on the mount's root), or
    /// nullfs's `user.nullfs.stats` of the same shape.
    struct Stats {
        pid: u32,
        transport: Option<String>,
        /// Requests served so far: the sum of the `req_<opcode>` counters.
        requests: u64,
    }

    impl Stats {
        fn read(mp: &Path, side: &Side) -> io::Result<Stats> {
            let name = if side.is_null() { c"user.nullfs.stats" } else { c"user.sectorfs.stats" };
            let path = cstr(mp);
            let mut buf = vec![0u8; 64 * KIB as usize];
            // SAFETY: `path` and `name` are NUL-terminated strings and `buf`
            // is a writable buffer of `buf.len()` bytes; all outlive the call.
            let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(e.kind(), format!("{}: reading {name:?}: {e}", mp.display())));
            }
            buf.truncate(n as usize);
            let json = String::from_utf8_lossy(&buf);
            let (mut pid, mut transport, mut requests) = (None, None, 0u64);
            // A flat object of numbers, strings and nulls: enough to split
            // on commas (a value that is not one of ours is skipped).
            for item in json.trim().trim_start_matches('{').trim_end_matches('}').split(',') {
                let Some((k, v)) = item.split_once(':') else { continue };
                let (k, v) = (k.trim().trim_matches('"'), v.trim());
                if k.starts_with("req_") {
                    requests += v.parse::<u64>().unwrap_or(0);
                } else if k == "pid" {
                    pid = v.parse().ok();
                } else if k == "transport" {
                    transport = Some(v.trim_matches('"').to_owned());
                }
            }
            let pid = pid.ok_or_else(|| io::Error::other(format!("{}: no pid in {json}", mp.display())))?;
            Ok(Stats { pid, transport, requests })
        }
    }

    /// The CPU time of every thread of process `pid` so far, living or
    /// ended (`utime + stime` in `/proc/PID/stat`, clock-tick resolution).
    fn process_cpu(pid: u32) -> Option<Duration> {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may contain spaces):
        // state is field 3, utime 14, stime 15.
        let rest = &st[st.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let hz = if hz > 0 { hz as u64 } else { 100 };
        Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
    }

    /// The load average line (`/proc/loadavg`: 1, 5, 15 minutes).
    fn loadavg() -> String {
        let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    }

    // ---------------------------------------------------------- source tree

    /// The tar of a source tree for the untar / `rm -rf` workload.
    struct Tree {
        tar: PathBuf,
        /// Where it came from, for the log.
        source: String,
        /// Short name for the rows (`glibc-2.36`).
        name: String,
        files: u64,
        dirs: u64,
        links: u64,
        bytes: u64,
    }

    impl Tree {
        fn entries(&self) -> u64 {
            self.files + self.dirs + self.links
        }
    }

    /// `TARGET/bench-cache`: next to the `release` directory this binary is in.
    fn cache_dir() -> io::Result<PathBuf> {
        let me = std::env::current_exe()?;
        let target = me.parent().and_then(Path::parent).ok_or_else(|| io::Error::other("no target directory"))?;
        let d = target.join("bench-cache");
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    fn run(cmd: &mut Command) -> io::Result<()> {
        let st = cmd.stdin(Stdio::null()).status()?;
        if st.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("{cmd:?}: {st}")))
        }
    }

    /// Finds or makes the tar (see the module docs) and counts its entries.
    fn prepare_tree(given: Option<PathBuf>) -> io::Result<Tree> {
        let cache = cache_dir()?;
        let glibc = || -> Option<PathBuf> {
            let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/src/glibc")
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    n.starts_with("glibc-") && n.ends_with(".tar.xz")
                })
                .collect();
            v.sort();
            v.pop()
        };
        // `--tree synthetic`: the generated tree even where glibc's is installed.
        let synthetic = given.as_deref() == Some(Path::new("synthetic"));
        let found = if synthetic { None } else { given.or_else(glibc) };
        let (tar, source) = match found {
            Some(p) if p.extension().is_some_and(|e| e == "xz") => {
                let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let out = cache.join(&stem);
                if !out.is_file() {
                    eprintln!("mount_bench: decompressing {} into {} (once)", p.display(), out.display());
                    let tmp = cache.join(format!("{stem}.part.{}", std::process::id()));
                    let r = run(Command::new("xz").arg("-dc").arg(&p).stdout(File::create(&tmp)?));
                    if let Err(e) = r {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e);
                    }
                    std::fs::rename(&tmp, &out)?;
                }
                (out, format!("{} (decompressed to {})", p.display(), cache.display()))
            }
            Some(p) => (p.clone(), p.display().to_string()),
            None => {
                let out = cache.join("synthetic-glibc-shape-v1.tar");
                if !out.is_file() {
                    eprintln!("mount_bench: no glibc source; generating {} (once)", out.display());
                    synthetic_tar(&cache, &out)?;
                }
                (out, "synthetic tree of glibc 2.36's shape".into())
            }
        };
        let name = tar.file_name().map(|n| n.to_string_lossy().trim_end_matches(".tar").to_owned()).unwrap_or_default();
        let list =
            Command::new("tar").arg("--numeric-owner").arg("-tvf").arg(&tar).stderr(Stdio::inherit()).output()?;
        if !list.status.success() {
            return Err(io::Error::other(format!("tar -tvf {}: {}", tar.display(), list.status)));
        }
        let mut t = Tree { tar, source, name, files: 0, dirs: 0, links: 0, bytes: 0 };
        for l in String::from_utf8_lossy(&list.stdout).lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            match l.as_bytes().first() {
                Some(b'd') => t.dirs += 1,
                Some(b'-') => {
                    t.files += 1;
                    t.bytes += f.get(2).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                }
                Some(_) => t.links += 1,
                None => {}
            }
        }
        Ok(t)
    }

    /// A standard normal deviate (Box-Muller).
    fn normal(r: &mut Rng) -> f64 {
        let u = |r: &mut Rng| ((r.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let (a, b) = (u(r), u(r));
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    }

    /// Writes a deterministic tree of glibc 2.36's shape (see the module
    /// docs) and tars it into `out` with fixed owners and times.
    fn synthetic_tar(cache: &Path, out: &Path) -> io::Result<()> {
        const FILES: usize = 20_281;
        const DIRS: usize = 834;
        const MAX_DEPTH: usize = 6;
        let work = fresh_dir(cache, "synthetic")?;
        let root = work.join("glibc-synthetic");
        std::fs::create_dir(&root)?;
        let mut r = Rng(SEED ^ 0x61BC);
        let mut dirs: Vec<(PathBuf, usize)> = vec![(root, 0)];
        while dirs.len() < DIRS {
            let (parent, depth) = dirs[(r.next() % dirs.len() as u64) as usize].clone();
            if depth < MAX_DEPTH {
                let d = parent.join(format!("dir{:03}", dirs.len()));
                std::fs::create_dir(&d)?;
                dirs.push((d, depth + 1));
            }
        }
        let text = pattern(5 * MIB as usize, 0x5A);
        for i in 0..FILES {
            let size = if r.next().is_multiple_of(100) {
                // The tail: log-uniform over 32 KiB .. 4 MiB.
                let u = (r.next() >> 11) as f64 / (1u64 << 53) as f64;
                (32.0 * KIB as f64 * 128f64.powf(u)) as usize
            } else {
                // The body: log-normal, median 1,338 B, 90th percentile 7.9 KB.
                (1338.0 * (1.387 * normal(&mut r)).exp()).min(4.0 * MIB as f64) as usize
            };
            let dir = &dirs[(r.next() % DIRS as u64) as usize].0;
            let at = i % 4096;
            std::fs::write(dir.join(format!("f{i:05}.c")), &text[at..at + size])?;
        }
        let tmp = out.with_extension(format!("part.{}", std::process::id()));
        let r = run(Command::new("tar")
            .args(["--sort=name", "--mtime=@1700000000", "--owner=0", "--group=0", "--numeric-owner", "-cf"])
            .arg(&tmp)
            .arg("-C")
            .arg(&work)
            .arg("glibc-synthetic"));
        std::fs::remove_dir_all(&work)?;
        r?;
        std::fs::rename(&tmp, out)
    }

    /// Reads `path` to the end (untimed), so the next read of it comes from
    /// the page cache.
    fn warm_file(path: &Path) -> io::Result<()> {
        let mut f = File::open(path)?;
        let mut buf = vec![0u8; MIB as usize];
        while f.read(&mut buf)? != 0 {}
        Ok(())
    }

    /// Runs `cmd` (a child process) and returns its wall time, spawn to exit.
    fn timed(cmd: &mut Command) -> io::Result<Duration> {
        let t = Instant::now();
        run(cmd)?;
        Ok(t.elapsed())
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
            // The clock starts before the threads are released: started
            // after, a main thread descheduled past the barrier would miss
            // part (or, on tmpfs, all) of the I/O.
            let t = Instant::now();
            barrier.wait();
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
        /// Per side: requests the daemon served, one per round (FUSE sides).
        reqs: Vec<Vec<u64>>,
    }

    struct Results {
        sides: Vec<Side>,
        rows: Vec<Row>,
        notes: Vec<String>,
    }

    impl Results {
        fn record(&mut self, side: &Side, name: &str, work: Work, d: Duration, daemon: Option<(Duration, u64)>) {
            let n = self.sides.len();
            let s = self.sides.iter().position(|x| x == side).expect("a known side");
            let i = match self.rows.iter().position(|r| r.name == name) {
                Some(i) => i,
                None => {
                    self.rows.push(Row {
                        name: name.to_owned(),
                        work,
                        times: vec![vec![]; n],
                        cpu: vec![vec![]; n],
                        reqs: vec![vec![]; n],
                    });
                    self.rows.len() - 1
                }
            };
            let row = &mut self.rows[i];
            row.times[s].push(d);
            if let Some((cpu, reqs)) = daemon {
                row.cpu[s].push(cpu);
                row.reqs[s].push(reqs);
            }
        }

        fn index(&self, side: &Side) -> Option<usize> {
            self.sides.iter().position(|x| x == side)
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

    /// Slowest round / fastest round.
    fn spread(v: &[Duration]) -> Option<f64> {
        let (lo, hi) = (v.iter().min()?, v.iter().max()?);
        Some(hi.as_secs_f64() / lo.as_secs_f64())
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

    fn ratio(s: Option<Duration>, t: Option<Duration>) -> String {
        match (s, t) {
            (Some(s), Some(t)) => format!("{:.2}x", t.as_secs_f64() / s.as_secs_f64()),
            _ => "-".to_owned(),
        }
    }

    /// Best against best, and in brackets the median over rounds of the
    /// ratio within one round (the two figures taken seconds apart).
    fn ratios(s: &[Duration], t: &[Duration]) -> String {
        let mut within: Vec<f64> = s.iter().zip(t).map(|(s, t)| t.as_secs_f64() / s.as_secs_f64()).collect();
        within.sort_by(f64::total_cmp);
        let n = within.len();
        let m = match n {
            0 => return ratio(best(s), best(t)),
            n if n % 2 == 1 => within[n / 2],
            n => (within[n / 2 - 1] + within[n / 2]) / 2.0,
        };
        format!("{} ({m:.2}x)", ratio(best(s), best(t)))
    }

    fn print_table(res: &Results, rounds: usize) {
        let tmpfs = res.index(&Side::Tmpfs).expect("tmpfs side");
        let fuse: Vec<(usize, &Side)> = res.sides.iter().enumerate().filter(|(_, x)| **x != Side::Tmpfs).collect();
        let other = |s: Option<Side>| s.and_then(|s| res.index(&s));

        println!();
        let mut head = String::from("| workload | tmpfs median |");
        let mut rule = String::from("|---|---|");
        for &(_, side) in &fuse {
            let l = side.label();
            head.push_str(&format!(" {l} median | {l} x of tmpfs |"));
            rule.push_str("---|---|");
            if other(side.ceiling()).is_some() {
                head.push_str(&format!(" {l} x of ceiling |"));
                rule.push_str("---|");
            }
            if other(side.classic()).is_some() {
                head.push_str(&format!(" {l} x of classic |"));
                rule.push_str("---|");
            }
        }
        println!("{head}");
        println!("{rule}");
        for r in &res.rows {
            let mut line = format!("| {} | {} |", r.name, cell(median(&r.times[tmpfs]), r.work));
            for &(i, side) in &fuse {
                let b = best(&r.times[i]);
                line.push_str(&format!(
                    " {} | {} |",
                    cell(median(&r.times[i]), r.work),
                    ratio(b, best(&r.times[tmpfs]))
                ));
                if let Some(c) = other(side.ceiling()) {
                    line.push_str(&format!(" {} |", ratios(&r.times[i], &r.times[c])));
                }
                if let Some(c) = other(side.classic()) {
                    line.push_str(&format!(" {} |", ratios(&r.times[i], &r.times[c])));
                }
            }
            println!("{line}");
        }
        println!();
        println!(
            "x of tmpfs = tmpfs time / this side's time, best of {rounds} interleaved rounds each; x of ceiling = the \
             null fs's time on the same transport and --cache mode / sectorfs's time (1.00x: as fast as a FUSE fs that \
             stores nothing); x of classic = the same fs on the classic transport / on io_uring. Both best against best; \
             in brackets the median over rounds of the same ratio within a round (taken seconds apart)."
        );

        // Daemon CPU per request.
        println!();
        let mut head = String::from("| workload |");
        let mut rule = String::from("|---|");
        for &(_, side) in &fuse {
            let l = side.label();
            head.push_str(&format!(" {l} requests | {l} CPU | {l} CPU per request |"));
            rule.push_str("---|---|---|");
        }
        println!("{head}");
        println!("{rule}");
        for r in &res.rows {
            let mut line = format!("| {} |", r.name);
            for &(i, _) in &fuse {
                let reqs: u64 = r.reqs[i].iter().sum();
                let cpu: Duration = r.cpu[i].iter().sum();
                let n = r.reqs[i].len().max(1) as f64;
                let per_op = match r.work {
                    Work::Ops(ops) if ops > 0 => format!(" ({:.2}/op)", reqs as f64 / n / ops as f64),
                    _ => String::new(),
                };
                let per_req =
                    if reqs > 0 { format!("{:.1} µs", cpu.as_secs_f64() * 1e6 / reqs as f64) } else { "-".to_owned() };
                line.push_str(&format!(
                    " {:.0}{per_op} | {:.0} ms | {per_req} |",
                    reqs as f64 / n,
                    cpu.as_secs_f64() * 1e3 / n
                ));
            }
            println!("{line}");
        }
        println!();
        println!(
            "requests = requests the daemon served during the workload (its req_* counters), mean per round; CPU = \
             utime+stime of the daemon process (/proc/PID/stat, 10 ms ticks), mean per round; CPU per request = \
             CPU summed over the rounds / requests summed over the rounds."
        );

        let labels: Vec<String> = res.sides.iter().map(Side::label).collect();
        println!("Per-round times, ms, in round order ({}):", labels.join(" | "));
        let ms =
            |v: &[Duration]| v.iter().map(|d| format!("{:.1}", d.as_secs_f64() * 1e3)).collect::<Vec<_>>().join(" ");
        for r in &res.rows {
            let cols: Vec<String> = r.times.iter().map(|v| ms(v)).collect();
            println!("  {:<48} {}", r.name, cols.join(" | "));
        }
        // Noise: how far apart the rounds of one side are.
        let mut line = String::from("Spread (slowest round / fastest), median over workloads:");
        for (i, l) in labels.iter().enumerate() {
            let mut v: Vec<f64> = res.rows.iter().filter_map(|r| spread(&r.times[i])).collect();
            v.sort_by(f64::total_cmp);
            if let (Some(m), Some(w)) = (v.get(v.len() / 2), v.last()) {
                line.push_str(&format!(" {l} {m:.2}x (worst {w:.2}x);"));
            }
        }
        println!("{line}");
        for n in &res.notes {
            println!("note: {n}");
        }
    }

    // ------------------------------------------------------------ workloads

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
        /// records it with the daemon's CPU time and the requests it served
        /// over the whole call.
        fn measure(&mut self, name: &str, work: Work, f: impl FnOnce() -> io::Result<Duration>) -> io::Result<()> {
            check_interrupt()?;
            // The counters are read around the CPU readings, so the CPU of
            // the two reads is not counted; the GETXATTR of the second read
            // is counted by the daemon before it answers, so it is taken off.
            let r0 = self.daemon.map(|_| Stats::read(self.dir, self.side)).transpose()?;
            let c0 = self.daemon.and_then(process_cpu);
            let d = f()?;
            let c1 = self.daemon.and_then(process_cpu);
            let r1 = self.daemon.map(|_| Stats::read(self.dir, self.side)).transpose()?;
            let cpu = c0.zip(c1).map(|(a, b)| b.saturating_sub(a));
            let reqs = r0.zip(r1).map(|(a, b)| b.requests.saturating_sub(a.requests).saturating_sub(1));
            self.res.record(self.side, name, work, d, cpu.zip(reqs));
            Ok(())
        }

        /// [`drop_cache`], with a note when more than 5% stayed cached on a
        /// FUSE side (on tmpfs the page cache is the storage).
        fn drop_cache_checked(&mut self, path: &Path) -> io::Result<()> {
            let left = drop_cache(path)?;
            if *self.side != Side::Tmpfs && left > 0.05 {
                let (l, f) = (self.side.label(), path.file_name().unwrap_or_default().to_string_lossy());
                self.res.notes.push(format!("{l}: {:.0}% of {f} stayed cached after DONTNEED", left * 100.0));
            }
            Ok(())
        }
    }

    /// One step of a round: untimed setup and what it measures, on one side
    /// (`cx.dir`: that side's directory).
    type Step<'a> = Box<dyn Fn(&mut Ctx<'_>) -> io::Result<()> + 'a>;

    /// The data workloads, as steps that run on every side in turn (each
    /// step's setup sits right before what it measures, so no other side
    /// runs in between).
    fn data_steps(p: &Params) -> Vec<Step<'_>> {
        let sz = fmt_size(p.seq_bytes);
        let (rsz, t) = (fmt_size(p.rand_file), p.threads);
        let seq = |cx: &Ctx<'_>| cx.dir.join("seq");
        let rand = |cx: &Ctx<'_>| cx.dir.join("rand");
        let names = |cx: &Ctx<'_>| -> Vec<PathBuf> {
            (0..p.small_files).map(|i| cx.dir.join("small").join(format!("f{i:05}.o"))).collect()
        };
        let verify = |cx: &Ctx<'_>| !cx.side.is_null();
        let bytes = Work::Bytes(p.seq_bytes);
        let rand_ops = Work::Ops((t * p.rand_ops_per_thread) as u64);
        let small_ops = Work::Ops(p.small_files as u64);
        let (n, block) = (p.seq_bytes, p.block);
        let small = |what: &str| format!("small files: {what} {} x {} B files", p.small_files, p.small_size);
        let (s_cold, s_warm) =
            (format!("seq write {sz}, cold (new file)"), format!("seq write {sz}, warm (overwrite)"));
        let (s_hot, s_dropped) =
            (format!("seq read {sz}, page cache hot"), format!("seq read {sz}, page cache dropped"));
        let s_new = format!("seq write {sz}, new file after delete");
        let r_hot = format!("4K rand read {rsz}, {t} thr, cache hot");
        let r_write = format!("4K rand write {rsz}, {t} thr, + fsync");
        let r_miss = format!("4K rand read {rsz}, {t} thr, misses");
        let (create, stat, delete) = (small("create"), small("stat"), small("delete"));
        vec![
            Box::new(move |cx| {
                let f = seq(cx);
                cx.measure(&s_cold, bytes, || seq_write(&f, n, block, true))
            }),
            Box::new(move |cx| {
                let f = seq(cx);
                cx.measure(&s_warm, bytes, || seq_write(&f, n, block, false))
            }),
            Box::new(move |cx| {
                let (f, v) = (seq(cx), verify(cx));
                cx.measure(&s_hot, bytes, || seq_read(&f, n, block, v))
            }),
            Box::new(move |cx| {
                let (f, v) = (seq(cx), verify(cx));
                cx.drop_cache_checked(&f)?;
                cx.measure(&s_dropped, bytes, || seq_read(&f, n, block, v))
            }),
            Box::new(move |cx| {
                std::fs::remove_file(seq(cx))?;
                let f = cx.dir.join("seq2");
                cx.measure(&s_new, bytes, || seq_write(&f, n, block, true))?;
                std::fs::remove_file(&f)
            }),
            Box::new(move |cx| {
                let f = rand(cx);
                seq_write(&f, p.rand_file, block, true)?;
                let offs = uniform_offsets(p.rand_file, t, p.rand_ops_per_thread, SEED);
                cx.measure(&r_hot, rand_ops, || rand_io(&f, &offs, false))
            }),
            Box::new(move |cx| {
                let f = rand(cx);
                let offs = uniform_offsets(p.rand_file, t, p.rand_ops_per_thread, SEED + 1);
                cx.measure(&r_write, rand_ops, || rand_io(&f, &offs, true))
            }),
            Box::new(move |cx| {
                let f = rand(cx);
                cx.drop_cache_checked(&f)?;
                let offs = distinct_offsets(p.rand_file, t, p.miss_ops_per_thread, SEED + 2);
                let ops = Work::Ops((t * p.miss_ops_per_thread) as u64);
                cx.measure(&r_miss, ops, || rand_io(&f, &offs, false))?;
                std::fs::remove_file(&f)
            }),
            Box::new(move |cx| {
                std::fs::create_dir(cx.dir.join("small"))?;
                let (names, data) = (names(cx), pattern(p.small_size, 0x3C));
                cx.measure(&create, small_ops, || {
                    let t = Instant::now();
                    for name in &names {
                        let mut f = OpenOptions::new().write(true).create_new(true).open(name)?;
                        f.write_all(&data)?;
                    }
                    Ok(t.elapsed())
                })
            }),
            Box::new(move |cx| {
                let (names, v) = (names(cx), verify(cx));
                cx.measure(&stat, small_ops, || {
                    let t = Instant::now();
                    for name in &names {
                        let m = std::fs::metadata(name)?;
                        if v && m.len() != p.small_size as u64 {
                            return Err(io::Error::other(format!("{}: size {} after create", name.display(), m.len())));
                        }
                    }
                    Ok(t.elapsed())
                })
            }),
            Box::new(move |cx| {
                let names = names(cx);
                cx.measure(&delete, small_ops, || {
                    let t = Instant::now();
                    for name in &names {
                        std::fs::remove_file(name)?;
                    }
                    Ok(t.elapsed())
                })?;
                std::fs::remove_dir(cx.dir.join("small"))
            }),
        ]
    }

    /// The untar / `rm -rf` workload (on a fresh mount or tmpfs directory):
    /// twice each, the first on fresh memory, the second on what the first
    /// freed.
    fn tree_steps(tree: &Tree) -> Vec<Step<'_>> {
        let ops = Work::Ops(tree.entries());
        let mut steps: Vec<Step<'_>> = vec![];
        for (untar, rm) in [("fresh fs", ""), ("again", ", again")] {
            let untar = format!("untar {}, {untar}", tree.name);
            let rm = format!("rm -rf {}{rm}", tree.name);
            steps.push(Box::new(move |cx| {
                let dest = cx.dir.join("tree");
                warm_file(&tree.tar)?;
                std::fs::create_dir(&dest)?;
                cx.measure(&untar, ops, || timed(Command::new("tar").arg("-xf").arg(&tree.tar).arg("-C").arg(&dest)))
            }));
            steps.push(Box::new(move |cx| {
                let dest = cx.dir.join("tree");
                cx.measure(&rm, ops, || timed(Command::new("rm").arg("-rf").arg(&dest)))?;
                if dest.exists() {
                    return Err(io::Error::other(format!("{} still exists after rm -rf", dest.display())));
                }
                Ok(())
            }));
        }
        steps
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
            "usage: mount_bench [--bin PATH_TO_SECTORFS] [--alt-bin PATH --alt-label NAME] [--rounds N] [--quick] [--size SIZE] \
             [--modes direct,writethrough,writeback] [--transports uring,classic] [--tree PATH] [--no-tree] \
             [--no-ceiling]"
        );
        eprintln!(
            "env: SECTORFS_BIN, SECTORFS_BENCH_ROUNDS (default 3), SECTORFS_BENCH_QUICK=1, \
             SECTORFS_BENCH_MODES (default direct), SECTORFS_BENCH_TRANSPORTS (default uring,classic where the \
             kernel has FUSE over io_uring), SECTORFS_BENCH_TREE"
        );
        std::process::exit(2);
    }

    fn list(s: &str) -> Vec<String> {
        s.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_owned).collect()
    }

    fn parse_opts() -> io::Result<Opts> {
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
        let default_transports = if Path::new(ENABLE_URING).exists() { "uring,classic" } else { "classic" };
        let mut transports =
            std::env::var("SECTORFS_BENCH_TRANSPORTS").unwrap_or_else(|_| default_transports.to_owned());
        let mut tree = std::env::var_os("SECTORFS_BENCH_TREE").map(PathBuf::from);
        let mut with_tree = true;
        let (mut alt_bin, mut alt_label) = (None, "alt".to_owned());
        let mut ceiling = true;
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--bin" => bin = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
                "--alt-bin" => alt_bin = Some(args.next().map(PathBuf::from).unwrap_or_else(|| usage())),
                "--alt-label" => alt_label = args.next().unwrap_or_else(|| usage()),
                "--rounds" => rounds = args.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage()),
                "--quick" => quick = true,
                "--size" => size = args.next().unwrap_or_else(|| usage()),
                "--modes" => modes = args.next().unwrap_or_else(|| usage()),
                "--transports" => transports = args.next().unwrap_or_else(|| usage()),
                "--tree" => tree = Some(args.next().map(PathBuf::from).unwrap_or_else(|| usage())),
                "--no-tree" => with_tree = false,
                "--no-ceiling" => ceiling = false,
                _ => usage(),
            }
        }
        let (modes, transports) = (list(&modes), list(&transports));
        let known_modes = ["direct", "writethrough", "writeback"];
        let known_transports = ["uring", "classic"];
        if rounds == 0
            || modes.is_empty()
            || modes.iter().any(|m| !known_modes.contains(&m.as_str()))
            || transports.is_empty()
            || transports.iter().any(|t| !known_transports.contains(&t.as_str()))
        {
            usage();
        }
        // The null fs is built next to this binary (`cargo build -p sectorfs-benches`).
        let me = std::env::current_exe().unwrap_or_default();
        let nullfs = me.parent().map(|d| d.join("nullfs")).filter(|p| ceiling && p.is_file());
        if ceiling && nullfs.is_none() {
            eprintln!("warning: no nullfs binary next to mount_bench: the ceiling is not measured");
        }
        let tree = if with_tree { Some(prepare_tree(tree)?) } else { None };
        Ok(Opts { bin, alt_bin, alt_label, rounds, quick, size, modes, transports, nullfs, tree })
    }

    /// Where one side's workloads run: a fresh tmpfs directory or a fresh
    /// FUSE mount (unmounted, or removed, when dropped).
    enum Place {
        Shm(ShmDir),
        Mount(MountGuard),
    }

    impl Place {
        fn new(opts: &Opts, side: &Side) -> io::Result<Place> {
            Ok(match side {
                Side::Tmpfs => Place::Shm(ShmDir::new()?),
                _ => Place::Mount(MountGuard::new(opts, side)?),
            })
        }

        fn path(&self) -> &Path {
            match self {
                Place::Shm(d) => &d.path,
                Place::Mount(m) => &m.path,
            }
        }

        fn pid(&self) -> Option<u32> {
            match self {
                Place::Shm(_) => None,
                Place::Mount(m) => m.pid(),
            }
        }
    }

    /// Runs `steps` in lockstep on the sides in `order`: each side gets a
    /// fresh place, then every step runs on each side in turn before the
    /// next step starts; the places go when all steps are done (or one
    /// failed).
    fn run_steps(opts: &Opts, order: &[&Side], steps: &[Step<'_>], res: &mut Results) -> io::Result<()> {
        let places: Vec<Place> = order.iter().map(|side| Place::new(opts, side)).collect::<io::Result<_>>()?;
        for step in steps {
            for (side, place) in order.iter().zip(&places) {
                step(&mut Ctx { dir: place.path(), side, daemon: place.pid(), res })?;
            }
        }
        Ok(())
    }

    pub(super) fn main() -> i32 {
        let opts = match parse_opts() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("mount_bench: preparing the source tree: {e}");
                return 2;
            }
        };
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
            "mount_bench: {} (--cache {}, --transport {}) vs tmpfs /dev/shm{}, {} interleaved rounds{}, {} threads \
             for random I/O, {} cores, load average {}",
            opts.bin.display(),
            opts.modes.join(","),
            opts.transports.join(","),
            if opts.nullfs.is_some() { " and the null fs" } else { "" },
            opts.rounds,
            if opts.quick { " (quick sizes)" } else { "" },
            p.threads,
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            loadavg(),
        );
        if let Some(t) = &opts.tree {
            println!(
                "source tree: {}: {} files, {} directories, {} other entries, {:.1} MB of file data",
                t.source,
                t.files,
                t.dirs,
                t.links,
                t.bytes as f64 / 1e6
            );
        }
        let mut sides = vec![Side::Tmpfs];
        for m in &opts.modes {
            for t in &opts.transports {
                for null in [false, true] {
                    if !null || opts.nullfs.is_some() {
                        sides.push(Side::Fuse { null, transport: t.clone(), mode: m.clone(), alt: None });
                    }
                    if !null && opts.alt_bin.is_some() {
                        let alt = Some(opts.alt_label.clone());
                        sides.push(Side::Fuse { null, transport: t.clone(), mode: m.clone(), alt });
                    }
                }
            }
        }
        let mut res = Results { sides: sides.clone(), rows: vec![], notes: vec![] };
        let start = Instant::now();
        let r = (|| -> io::Result<()> {
            let data = data_steps(&p);
            let trees: Vec<Vec<Step<'_>>> = opts.tree.iter().map(tree_steps).collect();
            for i in 1..=opts.rounds {
                // Every workload runs on every side before the next one
                // starts; every other round in the reverse order.
                let order: Vec<&Side> = if i % 2 == 1 { sides.iter().collect() } else { sides.iter().rev().collect() };
                let t = Instant::now();
                run_steps(&opts, &order, &data, &mut res)?;
                for steps in &trees {
                    run_steps(&opts, &order, steps, &mut res)?;
                }
                let (n, secs, load) = (opts.rounds, t.elapsed().as_secs_f64(), loadavg());
                eprintln!("round {i}/{n}: {secs:.1} s (load average {load})");
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
        println!("total {:.0} s, load average at the end {}", start.elapsed().as_secs_f64(), loadavg());
        0
    }
}
