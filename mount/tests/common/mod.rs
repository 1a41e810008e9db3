//! Shared helpers of the mount-level tests: a guard that mounts sectorfs on a
//! fresh temporary directory and always unmounts it (and ends its daemon),
//! and thin `libc` wrappers returning `io::Result`.
#![allow(dead_code, unreachable_pub)]

use std::ffi::CString;
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `sectorfs` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sectorfs");

/// Whether mount tests can run here; prints why not.
pub fn fuse_available() -> bool {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP: /dev/fuse is missing: no FUSE on this machine, mount tests skipped");
        return false;
    }
    true
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A sectorfs mount on a fresh temporary directory. Dropping it unmounts it
/// and ends its daemon (by pid), even when the test failed.
pub struct Mount {
    dir: Option<tempfile::TempDir>,
    /// The mountpoint (canonical).
    pub path: PathBuf,
    child: Option<Child>,
    pid: Option<i32>,
}

impl Mount {
    /// Mounts in the foreground mode (`-f`) as a child process with `extra`
    /// options, and waits for its readiness line. `None`: FUSE is missing.
    pub fn new(extra: &[&str]) -> Option<Mount> {
        if !fuse_available() {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("sectorfs-test-").tempdir().expect("tempdir");
        let path = dir.path().canonicalize().expect("canonicalize");
        let mut child = Command::new(BIN)
            .arg("mount")
            .arg(&path)
            .arg("-f")
            .args(env_args(extra))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sectorfs");
        let pid = child.id() as i32;
        let mut m = Mount { dir: Some(dir), path, child: None, pid: Some(pid) };
        let out = child.stdout.take().expect("stdout");
        m.child = Some(child);
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        assert!(line.starts_with("sectorfs: mounted"), "mount did not become ready: {line:?}");
        Some(m)
    }

    /// Mounts in the background mode (no `-f`): the command must return only
    /// once the mount serves. The daemon's pid comes from `sectorfs stats`.
    pub fn background(extra: &[&str]) -> Option<Mount> {
        if !fuse_available() {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("sectorfs-test-").tempdir().expect("tempdir");
        let path = dir.path().canonicalize().expect("canonicalize");
        let mut m = Mount { dir: Some(dir), path, child: None, pid: None };
        let out = Command::new(BIN)
            .arg("mount")
            .arg(&m.path)
            .args(env_args(extra))
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "background mount failed: {}", String::from_utf8_lossy(&out.stderr));
        // Ready means serving: this must work at once, with no retry.
        let st = getxattr(&m.path, "user.sectorfs.stats").expect("stats right after mount");
        let json = String::from_utf8(st).unwrap();
        m.pid = Some(json_field(&json, "pid") as i32);
        Some(m)
    }

    /// `self.path.join(rel)`.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.pid.expect("pid")
    }

    /// One counter of `sectorfs stats --json`.
    pub fn stat(&self, key: &str) -> u64 {
        let out = Command::new(BIN).arg("stats").arg(&self.path).arg("--json").output().unwrap();
        assert!(out.status.success(), "stats failed: {}", String::from_utf8_lossy(&out.stderr));
        json_field(&String::from_utf8_lossy(&out.stdout), key)
    }

    /// Whether our mountpoint is still in the mount table.
    pub fn mounted(&self) -> bool {
        is_mounted(&self.path)
    }

    /// Waits until the daemon exits (bounded by `limit`); true if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            let gone = match (&mut self.child, self.pid) {
                (Some(c), _) => matches!(c.try_wait(), Ok(Some(_))),
                (None, Some(pid)) => process_gone(pid),
                (None, None) => true,
            };
            if gone {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The child's exit status, once it exited (foreground mounts only).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

/// Unmounts whatever is mounted at its path when dropped (a test's own
/// mount or bind mount that no [`Mount`] guards), failed test or not:
/// lazily if it is busy.
pub struct Detach(pub PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        if is_mounted(&self.0) && umount2(&self.0, 0).is_err() {
            let _ = umount2(&self.0, libc::MNT_DETACH);
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted() {
            if let Err(e) = umount2(&self.path, 0) {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    let _ = umount2(&self.path, libc::MNT_DETACH);
                }
            }
        }
        if !self.wait_exit(Duration::from_secs(20)) {
            if let Some(pid) = self.pid {
                eprintln!("daemon {pid} did not exit after unmount: killing it");
                // SAFETY: kill has no memory preconditions; `pid` is the
                // daemon this guard started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = self.wait_exit(Duration::from_secs(10));
        }
        if let Some(c) = &mut self.child {
            let _ = c.wait();
        }
        if self.mounted() {
            let _ = umount2(&self.path, libc::MNT_DETACH);
        }
        if self.mounted() {
            // Never delete through a live mount: leak the directory instead.
            if let Some(d) = self.dir.take() {
                let _ = d.keep();
            }
        }
    }
}

/// Mount options for every test mount from `SECTORFS_TEST_MOUNT_ARGS`
/// (space-separated, e.g. `--cache writethrough`), so that CI can run the
/// whole suite in another mode; an option the test gives itself wins.
pub fn env_args(extra: &[&str]) -> Vec<String> {
    let all = std::env::var("SECTORFS_TEST_MOUNT_ARGS").unwrap_or_default();
    let words: Vec<String> = all.split_whitespace().map(str::to_string).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        // An option and its value (if the next word is not an option).
        let takes_value = words.get(i + 1).is_some_and(|w| !w.starts_with('-'));
        let n = if takes_value { 2 } else { 1 };
        if !extra.contains(&words[i].as_str()) {
            out.extend_from_slice(&words[i..i + n]);
        }
        i += n;
    }
    out
}

/// A page-aligned buffer of `len` bytes (for `O_DIRECT`, and so that a
/// 1 MiB write spans 256 pages, one FUSE request), filled with a pattern
/// that differs per byte position and `seed` (a misplaced or lost chunk
/// shows).
pub struct Aligned {
    ptr: *mut u8,
    len: usize,
}

impl Aligned {
    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(len, 4096).unwrap()
    }
    pub fn new(len: usize, seed: u8) -> Aligned {
        // SAFETY: the layout has a non-zero size (`len.max(1)`).
        let ptr = unsafe { std::alloc::alloc_zeroed(Self::layout(len.max(1))) };
        assert!(!ptr.is_null());
        let mut a = Aligned { ptr, len };
        for (i, b) in a.as_mut().iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        }
        a
    }
    pub fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` owns `len` bytes, initialized (zeroed, then filled).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_ref`; `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, Self::layout(self.len.max(1))) };
    }
}

/// The resident set of process `pid`, in bytes (`VmRSS`).
pub fn rss(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Whether `/proc/<pid>` is gone or a zombie.
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Whether `path` is a mount point in `/proc/self/mountinfo`.
pub fn is_mounted(path: &Path) -> bool {
    let want = path.as_os_str().as_bytes();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|l| l.split(' ').nth(4).is_some_and(|p| p.replace("\\040", " ").as_bytes() == want))
}

/// The unsigned integer `key` of a flat JSON object.
pub fn json_field(json: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\":");
    let at = json.find(&pat).unwrap_or_else(|| panic!("{key} not in {json}")) + pat.len();
    json[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
}

/// The errno of a failed result (panics on success).
pub fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("not an OS error: {e}")),
    }
}

/// Polls `cond` every 10 ms for up to 20 s; true once it holds. (The kernel
/// sends RELEASE and FORGET after `close(2)` returns: what they free shows a
/// moment later.)
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..2000 {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    cond()
}

/// `p` as a C string (no NUL inside: test paths).
pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `umount2(2)`.
pub fn umount2(p: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = cstr(p);
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    check(unsafe { libc::umount2(c.as_ptr(), flags) })
}

/// `umount2(p, 0)`, retried while it fails with `EBUSY` for up to 10 s.
/// Tests run in parallel threads, and a process another test forks (a
/// `Command` with `uid`, the daemon's spawn) holds a copy of every file
/// this process had open at that instant until its `exec` closes them; a
/// mount that one of those files is on is busy for that while.
pub fn umount_settled(p: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match umount2(p, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// `setxattr(2)`.
pub fn setxattr(p: &Path, name: &str, value: &[u8], flags: libc::c_int) -> io::Result<()> {
    let (c, n) = (cstr(p), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings and a valid slice, all alive during the call.
    check(unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), flags) })
}

/// `getxattr(2)` with a 64 KiB buffer.
pub fn getxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    getxattr_sized(p, name, 65536)
}

/// `getxattr(2)` with a buffer of `size` bytes (0: ask for the size only).
pub fn getxattr_sized(p: &Path, name: &str, size: usize) -> io::Result<Vec<u8>> {
    let (c, n) = (cstr(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 { std::ptr::null_mut() } else { buf.as_mut_ptr().cast() };
    // SAFETY: NUL-terminated strings; the kernel writes at most `size` bytes
    // into `buf` (or nothing when `ptr` is null and `size` 0).
    let n = check_size(unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), ptr, size) })?;
    buf.resize(n, 0);
    Ok(buf)
}

/// `listxattr(2)`: the names, sorted.
pub fn listxattr(p: &Path) -> io::Result<Vec<String>> {
    let c = cstr(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated path; the kernel writes at most `buf.len()` bytes.
    let n = check_size(unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    let mut names: Vec<String> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// `lremovexattr(2)`.
pub fn removexattr(p: &Path, name: &str) -> io::Result<()> {
    let (c, n) = (cstr(p), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings alive during the call.
    check(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) })
}

/// `renameat2(2)` with both paths absolute.
pub fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (a, b) = (cstr(from), cstr(to));
    // SAFETY: NUL-terminated absolute paths (the dirfds are ignored).
    check(unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) })
}

/// `mknod(2)`.
pub fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cstr(p);
    // SAFETY: NUL-terminated path alive during the call.
    check(unsafe { libc::mknod(c.as_ptr(), mode, dev) })
}

/// `fallocate(2)` on an open file.
pub fn fallocate(f: &std::fs::File, mode: libc::c_int, off: i64, len: i64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open file descriptor for the duration of the call.
    check(unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) })
}

/// `lseek(2)` with any `whence` (e.g. `SEEK_DATA`, `SEEK_HOLE`).
pub fn lseek(f: &std::fs::File, off: i64, whence: libc::c_int) -> io::Result<i64> {
    use std::os::fd::AsRawFd;
    // SAFETY: `f` is an open file descriptor for the duration of the call.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `copy_file_range(2)` between explicit offsets.
pub fn copy_file_range(a: &std::fs::File, off_a: i64, b: &std::fs::File, off_b: i64, len: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let (mut oa, mut ob) = (off_a, off_b);
    // SAFETY: both fds are open; the offsets are valid locals the kernel updates.
    check_size(unsafe { libc::copy_file_range(a.as_raw_fd(), &mut oa, b.as_raw_fd(), &mut ob, len, 0) })
}

/// `statvfs(3)`: (block size, total blocks, free blocks, total inodes, free inodes).
pub fn statvfs(p: &Path) -> io::Result<(u64, u64, u64, u64, u64)> {
    let c = cstr(p);
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: NUL-terminated path; `s` is a writable statvfs the call fills.
    check(unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) })?;
    // SAFETY: statvfs succeeded, so it initialized `s`.
    let s = unsafe { s.assume_init() };
    Ok((s.f_frsize, s.f_blocks, s.f_bfree, s.f_files, s.f_ffree))
}

/// `open(2)` with raw flags (e.g. `O_TMPFILE`).
pub fn open_raw(p: &Path, flags: libc::c_int, mode: libc::mode_t) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let c = cstr(p);
    // SAFETY: NUL-terminated path alive during the call.
    let fd = unsafe { libc::open(c.as_ptr(), flags, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open and is owned by nothing else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Runs `f` on a new thread whose file-system identity (fsuid/fsgid, which
/// is per thread on Linux and what permission checks and FUSE requests use)
/// is `uid`/`gid`. The capabilities that bypass permission checks are
/// dropped for that thread. Needs root.
pub fn as_user<T: Send>(uid: u32, gid: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setfsgid/setfsuid change only this thread's credentials
            // (raw per-thread syscalls); the thread ends right after `f`.
            unsafe {
                libc::setfsgid(gid);
                libc::setfsuid(uid);
                assert_eq!(libc::setfsuid(uid), uid as i32, "setfsuid failed");
            }
            f()
        })
        .join()
        .expect("user thread panicked")
    })
}

/// Sets `p`'s access and modification times (seconds, nanoseconds; the
/// nanoseconds may be `libc::UTIME_OMIT` to leave one as it is).
#[allow(dead_code)]
pub fn set_times(p: &Path, a: (i64, i64), m: (i64, i64)) {
    let c = cstr(p);
    let ts = [libc::timespec { tv_sec: a.0, tv_nsec: a.1 }, libc::timespec { tv_sec: m.0, tv_nsec: m.1 }];
    // SAFETY: `c` is NUL-terminated, `ts` two valid timespecs; both live across the call.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat {}", p.display());
}
