//! Images on a real mount (issue 21): `--image` loads at mount and saves at
//! unmount and on SIGTERM; `sectorfs save` saves while the mount serves;
//! everything comes back (content, holes, modes, owners, nanosecond times,
//! links, xattrs and ACLs, every file type, inode numbers); a daemon killed
//! in the middle of a save leaves the previous image whole; a bad image is
//! refused with one line and nothing mounted.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn sectorfs(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().unwrap()
}

fn run_ok(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "sectorfs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn statx_btime(p: &Path) -> (i64, u32) {
    let c = cstr(p);
    // SAFETY: a zeroed statx is a valid out-buffer; `c` is NUL-terminated.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` and `st` live across the call; the kernel writes `st`.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), libc::AT_SYMLINK_NOFOLLOW, libc::STATX_BTIME, &mut st) };
    assert_eq!(r, 0, "statx {}", p.display());
    (st.stx_btime.tv_sec, st.stx_btime.tv_nsec)
}

fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3))
}

/// Every path under `root` with what an image must keep.
fn manifest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        // The contents first: reading them may update the access time
        // (relatime), which the attributes read after them then show.
        let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
        let mut content = String::new();
        if ft.is_dir() {
            let mut kids: Vec<_> = std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()).collect();
            kids.sort();
            stack.extend(kids);
        } else if ft.is_symlink() {
            content += &format!(" -> {:?}", std::fs::read_link(&p).unwrap());
        } else if ft.is_file() {
            let f = std::fs::File::open(&p).unwrap();
            content += &format!(" data {:x}", hash(&std::fs::read(&p).unwrap()));
            let mut pos = 0i64;
            while let Ok(a) = lseek(&f, pos, libc::SEEK_DATA) {
                let b = lseek(&f, a, libc::SEEK_HOLE).unwrap();
                content += &format!(" [{a}..{b})");
                pos = b;
            }
        }
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let mut d = format!(
            "ino {} mode {:o} uid {} gid {} nlink {} rdev {:x} size {} a {}.{} m {}.{} c {}.{} b {:?}",
            m.ino(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.nlink(),
            m.rdev(),
            if m.is_dir() { 0 } else { m.size() },
            m.atime(),
            m.atime_nsec(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            statx_btime(&p)
        );
        if !ft.is_symlink() {
            let mut names = listxattr(&p).unwrap();
            names.sort();
            for n in names {
                d += &format!(" x[{n}]={:?}", getxattr(&p, &n).unwrap());
            }
        }
        out.insert(rel, d + &content);
    }
    out
}

fn same(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) {
    for k in a.keys().chain(b.keys()) {
        assert_eq!(a.get(k), b.get(k), "{k:?} differs");
    }
}

/// `u::rw-,u:65534:r--,g::r--,m::r--,o::---` in the kernel's xattr format.
fn acl_value() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(1u16, 6u16, u32::MAX), (2, 4, 65534), (4, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 0, u32::MAX)]
    {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// A tree with every kind of node and attribute.
fn build(mp: &Path) {
    std::fs::create_dir_all(mp.join("d/sub")).unwrap();
    std::fs::write(mp.join("d/small"), b"small file").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 + i / 4093) as u8).collect();
    std::fs::write(mp.join("big"), &big).unwrap();
    // Sparse: data at 0, a hole, data at 10 MiB, size 20 MiB.
    let f = std::fs::File::create(mp.join("d/sub/sparse")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"head", 0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 100_000], 10 << 20).unwrap();
    f.set_len(20 << 20).unwrap();
    drop(f);
    std::fs::hard_link(mp.join("d/small"), mp.join("small-link")).unwrap();
    std::fs::hard_link(mp.join("d/small"), mp.join("d/sub/small-link-2")).unwrap();
    std::os::unix::fs::symlink("d/small", mp.join("link")).unwrap();
    mknod(&mp.join("fifo"), libc::S_IFIFO | 0o640, 0).unwrap();
    mknod(&mp.join("sock"), libc::S_IFSOCK | 0o755, 0).unwrap();
    if is_root() {
        mknod(&mp.join("chr"), libc::S_IFCHR | 0o600, libc::makedev(1, 3)).unwrap();
        mknod(&mp.join("blk"), libc::S_IFBLK | 0o660, libc::makedev(8, 3)).unwrap();
        std::os::unix::fs::chown(mp.join("d/small"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(mp.join("link"), Some(42), Some(43)).unwrap();
    }
    std::fs::set_permissions(mp.join("big"), std::fs::Permissions::from_mode(0o4751)).unwrap();
    std::fs::set_permissions(mp.join("d"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    setxattr(&mp.join("d/small"), "user.colour", b"blue", 0).unwrap();
    setxattr(&mp.join("d"), "user.empty", b"", 0).unwrap();
    setxattr(&mp.join("big"), "system.posix_acl_access", &acl_value(), 0).unwrap();
    setxattr(&mp.join("d/sub"), "system.posix_acl_default", &acl_value(), 0).unwrap();
    for (i, p) in ["big", "d/small", "d/sub/sparse", "fifo", "link", "d/sub", "d"].iter().enumerate() {
        let i = i as i64;
        set_times(&mp.join(p), (1_000_000_000 + i, 123_456_789), (-86_400 * i, 999_999_999 - i));
    }
}

fn image_dir() -> tempfile::TempDir {
    // /dev/shm: fast, and another file system than the mount's parent.
    tempfile::Builder::new().prefix("sectorfs-image-").tempdir_in("/dev/shm").unwrap()
}

/// `n` bytes that do not compress.
fn noise(n: u32) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

/// A tmpfs of a few MiB for an image that must run out of room, in a
/// fresh directory; unmounted (and its directory removed) when dropped,
/// even on failure. `None` (the test is skipped) unless root.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn new(mib: u32) -> Option<SmallTmpfs> {
        if !is_root() {
            eprintln!("SKIP: mounting a tmpfs needs root");
            return None;
        }
        let t = SmallTmpfs { dir: image_dir() };
        let ok =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}M"), "tmpfs"]).arg(t.path()).status();
        assert!(ok.is_ok_and(|s| s.success()), "cannot mount a tmpfs on {}", t.path().display());
        Some(t)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn save_unmount_and_mount_again_keep_everything() {
    let dir = image_dir();
    let img = dir.path().join("disk.img");
    let early = dir.path().join("early.img");
    let Some(m) = Mount::new(&["--image", s(&img), "--size", "256M", "--label", "imgtest"]) else { return };
    build(&m.path);
    // What the save must hold, taken first: reading the files updates their
    // access times (relatime), which the image must then keep.
    let at_save = manifest(&m.path);
    // An explicit FILE, then the default (--image).
    let out = run_ok(&["save", s(&m.path), s(&early)]);
    assert!(out.contains("saved") && out.contains("files"), "{out}");
    // Keep writing: the saved image must not see this.
    std::fs::write(m.p("after-save"), b"later").unwrap();
    std::fs::OpenOptions::new().append(true).open(m.p("big")).unwrap().write_all(b"tail").unwrap();
    std::fs::rename(m.p("d/sub/sparse"), m.p("sparse-moved")).unwrap();
    std::fs::remove_file(m.p("small-link")).unwrap();
    run_ok(&["save", s(&m.path)]);
    std::fs::write(m.p("after-second-save"), b"only the unmount saves this").unwrap();
    let at_unmount = manifest(&m.path);
    // `sectorfs unmount` returns once the image is saved.
    run_ok(&["unmount", s(&m.path)]);
    assert!(!m.mounted());
    drop(m);
    let Some(m2) = Mount::new(&["--image", s(&img)]) else { return };
    same(&manifest(&m2.path), &at_unmount);
    // A report that cannot be printed is an error of one line, not a panic
    // (the save itself has happened).
    let full = Command::new(BIN)
        .args(["save", s(&m2.path), s(&dir.path().join("full.img"))])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{err}");
    assert!(err.contains("saved, but the report cannot be written") && !err.contains("panicked"), "{err}");
    // The settings came back with it.
    assert_eq!(m2.stat("limit_bytes"), 256 << 20);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(info.lines().any(|l| l.contains(s(&m2.path)) && l.contains(" imgtest ")), "label not restored");
    drop(m2);
    let Some(m3) = Mount::new(&["--image", s(&early)]) else { return };
    same(&manifest(&m3.path), &at_save);
    assert!(!m3.p("after-save").exists());
}

/// Clones (`cp` shares sectors, issue 20) are saved once and come back
/// shared: a disk whose files hold more bytes than its limit mounts again
/// from its image under the same limit.
#[test]
fn clones_are_saved_once_and_come_back_shared() {
    let dir = image_dir();
    let img = dir.path().join("clones.img");
    let Some(m) = Mount::new(&["--image", s(&img), "--size", "48M"]) else { return };
    let data: Vec<u8> = (0..32u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(m.p("a"), &data).unwrap();
    std::fs::create_dir(m.p("d")).unwrap();
    let st = Command::new("cp").arg(m.p("a")).arg(m.p("d/b")).status().unwrap();
    assert!(st.success());
    // 64 MiB of files in a 48 MiB disk.
    let (used, shared) = (m.stat("used_bytes"), m.stat("shared_bytes"));
    assert_eq!(shared, 32 << 20, "cp did not clone");
    let before = manifest(&m.path);
    run_ok(&["unmount", s(&m.path)]);
    drop(m);
    let len = std::fs::metadata(&img).unwrap().len();
    assert!(len < 33 << 20, "the image holds the clone's bytes again: {len} bytes");
    let Some(m2) = Mount::new(&["--image", s(&img)]) else { return };
    same(&manifest(&m2.path), &before);
    assert_eq!((m2.stat("used_bytes"), m2.stat("shared_bytes")), (used, shared));
    // Still two files: writing one leaves the other.
    std::fs::OpenOptions::new().write(true).open(m2.p("d/b")).unwrap().write_all(b"changed").unwrap();
    assert_eq!(hash(&std::fs::read(m2.p("a")).unwrap()), hash(&data));
}

#[test]
fn sigterm_saves_and_an_absent_image_is_an_empty_disk() {
    let dir = image_dir();
    let img = dir.path().join("term.img");
    let Some(mut m) = Mount::new(&["--image", s(&img), "--size", "64M"]) else { return };
    assert_eq!(std::fs::read_dir(&m.path).unwrap().count(), 0);
    std::fs::write(m.p("f"), b"saved by SIGTERM").unwrap();
    // SAFETY: kill has no memory preconditions; the pid is our daemon.
    unsafe { libc::kill(m.pid(), libc::SIGTERM) };
    assert!(m.wait_exit(Duration::from_secs(30)), "daemon did not exit");
    assert!(m.exit_status().is_some_and(|s| s.success()));
    drop(m);
    let Some(m2) = Mount::new(&["--image", s(&img)]) else { return };
    assert_eq!(std::fs::read(m2.p("f")).unwrap(), b"saved by SIGTERM");
}

/// Writes a file of `mib` MiB of `byte`, 1 MiB at a time.
fn write_mib(p: &Path, mib: usize, byte: u8) {
    let chunk = vec![byte; 1 << 20];
    let mut f = std::fs::File::create(p).unwrap();
    for _ in 0..mib {
        f.write_all(&chunk).unwrap();
    }
}

#[test]
fn a_daemon_killed_while_saving_leaves_the_previous_image() {
    let dir = image_dir();
    let img = dir.path().join("big.img");
    let tmp = dir.path().join(".big.img.sectorfs-save");
    let Some(m) = Mount::new(&["--image", s(&img), "--size", "1G"]) else { return };
    write_mib(&m.p("data"), 512, 1);
    run_ok(&["save", s(&m.path)]);
    let first = std::fs::metadata(&img).unwrap();
    // Change every byte, then save again and kill the daemon mid-stream.
    let two = vec![2u8; 1 << 20];
    let mut f = std::fs::OpenOptions::new().write(true).open(m.p("data")).unwrap();
    for _ in 0..512 {
        f.write_all(&two).unwrap();
    }
    drop(f);
    let mut saver = Command::new(BIN).arg("save").arg(&m.path).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while std::fs::metadata(&tmp).map_or(true, |t| t.len() < (64 << 20)) {
        assert!(start.elapsed() < Duration::from_secs(30), "no save in progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill has no memory preconditions; the pid is our daemon.
    unsafe { libc::kill(m.pid(), libc::SIGKILL) };
    assert!(!saver.wait().unwrap().success(), "the save cannot have succeeded");
    let now = std::fs::metadata(&img).unwrap();
    assert_eq!((now.ino(), now.len()), (first.ino(), first.len()), "the previous image was replaced");
    drop(m);
    let Some(m2) = Mount::new(&["--image", s(&img)]) else { return };
    let back = std::fs::read(m2.p("data")).unwrap();
    assert_eq!(back.len(), 512 << 20);
    assert!(back.iter().all(|&b| b == 1), "the image holds the first save");
}

/// A bad image: one line, exit status 1, nothing mounted, mountpoint untouched.
fn refused(img: &Path, extra: &[&str], want: &str) {
    if !fuse_available() {
        return;
    }
    let mp = tempfile::Builder::new().prefix("sectorfs-test-").tempdir().unwrap();
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["mount".as_ref(), mp.path().as_os_str(), "--image".as_ref(), img.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let out = sectorfs(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(want), "{err:?} should say {want:?}");
    assert!(!is_mounted(&mp.path().canonicalize().unwrap()));
    assert_eq!(std::fs::read_dir(mp.path()).unwrap().count(), 0);
}

/// An image inside the mountpoint is refused as such, and leaves the
/// mountpoint empty (the image's lock file was made there first, and the
/// mount was refused as "not empty").
#[test]
fn an_image_inside_the_mountpoint_is_named() {
    if !fuse_available() {
        return;
    }
    let mp = tempfile::Builder::new().prefix("sectorfs-test-").tempdir().unwrap();
    let img = mp.path().join("self.img");
    let out = sectorfs(&["mount".as_ref(), mp.path().as_os_str(), "--image".as_ref(), img.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is inside the mountpoint") && err.trim_end().lines().count() == 1, "{err}");
    assert!(!is_mounted(&mp.path().canonicalize().unwrap()));
    assert_eq!(std::fs::read_dir(mp.path()).unwrap().count(), 0);
}

/// A ^C while `sectorfs mount` waits for a disk to load from its image
/// ends the command and the daemon, and nothing is mounted: the daemon
/// stays in the caller's session until it is ready (it left at once, and
/// went on to mount the disk after the command had died; a probe). The
/// load is made slow with the failpoint `daemon.image.load` (a 1 GiB
/// image, as before, loaded faster than the ^C on a quiet host: the test
/// then failed on a good daemon).
#[cfg(feature = "failpoints")]
#[test]
fn ctrl_c_while_an_image_loads_mounts_nothing() {
    let dir = image_dir();
    let img = dir.path().join("slow.img");
    {
        let Some(m) = Mount::new(&["--image", s(&img), "--size", "64M"]) else { return };
        write_mib(&m.p("f"), 4, 0x5A);
    }
    assert!(img.exists());
    let mp = tempfile::Builder::new().prefix("sectorfs-test-").tempdir().unwrap();
    let mp_path = mp.path().canonicalize().unwrap();
    let _guard = Detach(mp_path.clone());
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.args(["mount", s(mp.path()), "--image", s(&img)])
        .env("FAILPOINTS", "daemon.image.load=sleep(5000)")
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // As in a terminal: SIGINT's default action. A shell starts a
    // background job (`./.ci/run &`) with SIGINT ignored, which every
    // process it starts inherits, and the ^C then did nothing at all.
    // SAFETY: `signal` is async-signal-safe, and the closure touches
    // nothing else between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let daemon_alive = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(s(mp.path())) && c.contains("--foreground")
            })
        })
    };
    let mut child = cmd.spawn().unwrap();
    // Once the daemon runs (it used to leave the session at once), and
    // long before its load is done.
    assert!(eventually(daemon_alive), "the daemon never started");
    std::thread::sleep(Duration::from_millis(50));
    // SAFETY: kill has no memory preconditions; the group is the command's.
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    let st = child.wait().unwrap();
    assert!(!st.success(), "the command went on: {st:?}");
    // Whatever the daemon was doing, it ends with nothing mounted: killed
    // while loading, or (past the mount) unmounting on the signal.
    assert!(eventually(|| !daemon_alive()), "a daemon is left");
    assert!(!is_mounted(&mp_path), "the disk was mounted after ^C");
}

/// One disk per image: a second mount with a mounted disk's image is
/// refused with one line that names the disk; the lock file beside the
/// image goes with the daemon.
#[test]
fn two_disks_cannot_share_an_image() {
    let dir = image_dir();
    let img = dir.path().join("one.img");
    let lock = dir.path().join(".one.img.sectorfs-lock");
    let Some(m) = Mount::new(&["--image", s(&img), "--size", "64M"]) else { return };
    std::fs::write(m.p("f"), b"mine").unwrap();
    assert!(lock.exists());
    refused(&img, &[], &format!("is in use by the sectorfs disk at {} (pid {})", m.path.display(), m.pid()));
    run_ok(&["unmount", s(&m.path)]);
    drop(m);
    assert!(!lock.exists(), "the lock file stays behind");
    let Some(m2) = Mount::new(&["--image", s(&img)]) else { return };
    assert_eq!(std::fs::read(m2.p("f")).unwrap(), b"mine");
}

#[test]
fn bad_images_are_refused() {
    let dir = image_dir();
    let good = dir.path().join("good.img");
    {
        let Some(m) = Mount::new(&["--image", s(&good), "--size", "64M"]) else { return };
        std::fs::write(m.p("f"), vec![5u8; 3 << 20]).unwrap();
        std::fs::create_dir(m.p("d")).unwrap();
    }
    let bytes = std::fs::read(&good).unwrap();
    let write = |name: &str, b: &[u8]| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    refused(&write("foreign.img", b"#!/bin/sh\necho not an image\n"), &[], "not a sectorfs image");
    refused(&write("empty.img", b""), &[], "not a sectorfs image");
    refused(&write("short.img", &bytes[..bytes.len() / 2]), &[], "truncated");
    let mut flipped = bytes.clone();
    let at = bytes.len() / 3;
    flipped[at] ^= 0x20;
    refused(&write("flipped.img", &flipped), &[], "corrupt");
    let mut v9 = bytes.clone();
    v9[8] = 9;
    refused(&write("v9.img", &v9), &[], "version 9");
    refused(&good, &["--size", "1M"], "more than the limit of 1048576 bytes");
    // The good one still mounts.
    let Some(m) = Mount::new(&["--image", s(&good)]) else { return };
    assert_eq!(std::fs::read(m.p("f")).unwrap().len(), 3 << 20);
    // An image inside the mount is refused.
    let out = Command::new(BIN).arg("save").arg(&m.path).arg(m.p("inside.img")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside"), "{}", String::from_utf8_lossy(&out.stderr));
    // Also through a bind mount of the disk, whose paths do not start with
    // the mountpoint: the CLI refuses, and so does the daemon when asked
    // directly (a probe saved a disk into itself so).
    if is_root() {
        let bind = tempfile::tempdir().unwrap();
        let _detach = Detach(bind.path().canonicalize().unwrap());
        let st = Command::new("mount").arg("--bind").arg(&m.path).arg(bind.path()).status().unwrap();
        assert!(st.success());
        let inside = bind.path().join("via-bind.img");
        let out = Command::new(BIN).arg("save").arg(&m.path).arg(&inside).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("inside"), "{err}");
        let mut req = b"bindtok\0".to_vec();
        req.extend_from_slice(inside.as_os_str().as_encoded_bytes());
        setxattr(&m.path, "user.sectorfs.save", &req, 0).unwrap();
        assert!(
            eventually(|| String::from_utf8_lossy(&getxattr(&m.path, "user.sectorfs.save").unwrap())
                .contains("would be inside the disk it saves")),
            "the daemon saved through a bind mount of itself"
        );
        assert!(!inside.exists() && !m.p("via-bind.img").exists());
    }
    // No --image and no FILE: the CLI says what to do.
    let Some(plain) = Mount::new(&["--size", "16M"]) else { return };
    let out = Command::new(BIN).arg("save").arg(&plain.path).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("without --image"));
}

/// A save that fails before its rename (failpoint `daemon.save.before_rename`)
/// reports the error, removes its temporary file and leaves the previous
/// image as it was; the next save works.
#[cfg(feature = "failpoints")]
#[test]
fn a_failed_save_leaves_the_previous_image() {
    let dir = image_dir();
    let img = dir.path().join("f.img");
    let Some(m) = Mount::new(&["--image", s(&img), "--size", "64M"]) else { return };
    std::fs::write(m.p("f"), b"first").unwrap();
    run_ok(&["save", s(&m.path)]);
    let first = std::fs::read(&img).unwrap();
    std::fs::write(m.p("f"), b"second").unwrap();
    setxattr(&m.path, "user.sectorfs.failpoint", b"daemon.save.before_rename=return", 0).unwrap();
    let out = Command::new(BIN).arg("save").arg(&m.path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("failpoint"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&img).unwrap(), first);
    assert!(!dir.path().join(".f.img.sectorfs-save").exists());
    setxattr(&m.path, "user.sectorfs.failpoint", b"daemon.save.before_rename=", 0).unwrap();
    run_ok(&["save", s(&m.path)]);
    assert_ne!(std::fs::read(&img).unwrap(), first);
}

/// A plain `umount` returns before the daemon's final save; a disk mounted
/// right after with the same image waits for that save (the image's lock)
/// instead of loading the image as it was. The save is slowed down with
/// the failpoint `daemon.save.before_rename`, so without the lock the new
/// disk would certainly come up without the file.
#[cfg(feature = "failpoints")]
#[test]
fn a_plain_umount_then_mount_waits_for_the_last_save() {
    let dir = image_dir();
    let img = dir.path().join("w.img");
    let Some(mut m) = Mount::new(&["--image", s(&img), "--size", "64M"]) else { return };
    std::fs::write(m.p("f"), b"written just before umount").unwrap();
    setxattr(&m.path, "user.sectorfs.failpoint", b"daemon.save.before_rename=sleep(1500)", 0).unwrap();
    umount_settled(&m.path).unwrap();
    assert!(!img.exists(), "the save was not slowed down");
    let start = Instant::now();
    let Some(m2) = Mount::new(&["--image", s(&img)]) else { return };
    assert!(m.wait_exit(Duration::from_secs(1)), "the new disk came up before the old daemon ended");
    assert_eq!(std::fs::read(m2.p("f")).unwrap(), b"written just before umount");
    eprintln!("the second mount waited {:?}", start.elapsed());
}

/// A save replaces only a regular file: a device, a FIFO or a directory at
/// the target is refused and left as it was (as root, `sectorfs save MP
/// /dev/null` once turned /dev/null into a file); a symbolic link is
/// followed, so the image lands where it points and the link stays. An
/// `--image` that is a FIFO is refused at once instead of waiting on it.
#[test]
fn saves_go_to_regular_files_only() {
    use std::os::unix::fs::FileTypeExt;
    let dir = image_dir();
    let fifo = dir.path().join("fifo");
    let dev = dir.path().join("null");
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated paths that live across each call.
    assert_eq!(unsafe { libc::mkfifo(c(&fifo).as_ptr(), 0o600) }, 0);
    // SAFETY: as above; a char device 1,3 (null), made only as root.
    let have_dev =
        is_root() && unsafe { libc::mknod(c(&dev).as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0;
    let target = dir.path().join("target.img");
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink("target.img", &link).unwrap();
    let Some(m) = Mount::new(&["--size", "64M"]) else { return };
    std::fs::write(m.p("f"), b"kept").unwrap();
    let mut refused = vec![fifo.clone()];
    if have_dev {
        refused.push(dev.clone());
    }
    for p in &refused {
        let out = sectorfs(&["save".as_ref(), m.path.as_os_str(), p.as_os_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("not a regular file"), "{}: {err}", p.display());
    }
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
    if have_dev {
        assert!(std::fs::symlink_metadata(&dev).unwrap().file_type().is_char_device(), "the device was replaced");
    }
    run_ok(&["save", s(&m.path), s(&link)]);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(std::fs::metadata(&target).unwrap().len() > 0, "the image is not where the link points");
    drop(m);
    let Some(m2) = Mount::new(&["--image", s(&link)]) else { return };
    assert_eq!(std::fs::read(m2.p("f")).unwrap(), b"kept");
    drop(m2);
    // A FIFO as --image: a clear error, no wait, nothing mounted.
    let mp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["mount".as_ref(), mp.path().as_os_str(), "--image".as_ref(), fifo.as_os_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mount --image FIFO hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "mounted with a FIFO image");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"), "{out:?}");
    assert!(!is_mounted(mp.path()));
}

/// `sectorfs unmount` keeps a disk mounted when its image cannot be saved
/// (before, it unmounted, the save at exit failed, and the disk's contents
/// were gone): the error says so and what to do; once the directory is
/// writable again, the unmount saves.
#[test]
fn unmount_keeps_the_disk_when_its_image_cannot_be_saved() {
    let dir = image_dir();
    let img = dir.path().join("w.img");
    let Some(m) = Mount::new(&["--image", s(&img), "--size", "64M"]) else { return };
    std::fs::write(m.p("new"), b"not saved yet").unwrap();
    /// Takes the immutable flag off the directory again, even on failure.
    struct Mutable<'a>(&'a Path);
    impl Drop for Mutable<'_> {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(self.0).status();
        }
    }
    let frozen = Command::new("chattr").arg("+i").arg(dir.path()).status().is_ok_and(|s| s.success());
    if !frozen {
        eprintln!("SKIP: chattr +i is not available here");
        return;
    }
    let guard = Mutable(dir.path());
    let out = sectorfs(&["unmount".as_ref(), m.path.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("stays mounted") && err.contains("cannot be saved"), "{err}");
    assert!(m.mounted(), "unmounted although the image cannot be saved");
    assert_eq!(std::fs::read(m.p("new")).unwrap(), b"not saved yet");
    drop(guard);
    run_ok(&["unmount", s(&m.path)]);
    drop(m);
    let Some(m2) = Mount::new(&["--image", s(&img)]) else { return };
    assert_eq!(std::fs::read(m2.p("new")).unwrap(), b"not saved yet");
}

/// `sectorfs unmount` keeps a disk mounted when its save fails partway
/// (the image's file system too small for it: 1 MiB of tmpfs for 3 MiB of
/// data); before, it unmounted, the save at exit failed, and the disk's
/// contents were gone. The previous image stays as it was; with room
/// again, the unmount saves.
#[test]
fn unmount_keeps_the_disk_when_its_save_fails_partway() {
    let Some(tmpfs) = SmallTmpfs::new(1) else { return };
    let small = tmpfs.path();
    let img = small.join("d.img");
    let Some(m) = Mount::new(&["--image", s(&img), "--size", "64M"]) else { return };
    std::fs::write(m.p("small"), b"fits").unwrap();
    run_ok(&["save", s(&m.path)]);
    let first = std::fs::read(&img).unwrap();
    let big = noise(3 << 20);
    std::fs::write(m.p("big"), &big).unwrap();
    let out = sectorfs(&["unmount".as_ref(), m.path.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("stays mounted"), "{err}");
    assert!(m.mounted(), "unmounted although the image could not be saved");
    assert_eq!(std::fs::read(m.p("big")).unwrap(), big, "the disk keeps its data");
    assert_eq!(std::fs::read(&img).unwrap(), first, "the previous image is intact");
    let leftovers: Vec<_> = std::fs::read_dir(small).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.iter().all(|n| n == "d.img" || n.to_string_lossy().ends_with("sectorfs-lock")), "{leftovers:?}");
    // With the big file gone the image fits: the unmount saves.
    std::fs::remove_file(m.p("big")).unwrap();
    run_ok(&["unmount", s(&m.path)]);
    drop(m);
    let Some(m2) = Mount::new(&["--image", s(&img)]) else { return };
    assert_eq!(std::fs::read(m2.p("small")).unwrap(), b"fits");
    assert!(!m2.p("big").exists());
    drop(m2);
    drop(tmpfs);
}

/// `sectorfs unmount` saves while the disk serves, then unmounts; the
/// daemon's final save then finds nothing changed and keeps that image
/// (setting its times) instead of writing a second copy beside it. An image
/// file system with room for one copy but not two (5 MiB of tmpfs for 3 MiB
/// of data) failed every such unmount with "its final save failed",
/// although nothing was lost (a probe); a write that came between the two
/// saves was lost so.
#[test]
fn an_unmount_needs_room_for_one_image_only() {
    let Some(tmpfs) = SmallTmpfs::new(5) else { return };
    let small = tmpfs.path();
    let img = small.join("d.img");
    let Some(mut m) = Mount::new(&["--image", s(&img), "--size", "64M"]) else { return };
    let big = noise(3 << 20);
    std::fs::write(m.p("big"), &big).unwrap();
    run_ok(&["unmount", s(&m.path)]);
    assert!(m.wait_exit(Duration::from_secs(20)), "the daemon did not exit");
    assert!(m.exit_status().is_some_and(|s| s.success()), "the daemon reported a failed save");
    drop(m);
    // Loaded and not changed: the image is current, so the unmount (its
    // save while serving and the daemon's after) writes nothing either.
    let Some(mut m2) = Mount::new(&["--image", s(&img)]) else { return };
    assert_eq!(std::fs::read(m2.p("big")).unwrap(), big);
    let out = run_ok(&["save", s(&m2.path)]);
    assert!(out.contains("is current"), "{out}");
    run_ok(&["unmount", s(&m2.path)]);
    assert!(m2.wait_exit(Duration::from_secs(20)), "the daemon did not exit");
    assert!(m2.exit_status().is_some_and(|s| s.success()), "the daemon reported a failed save");
    // Changed: saved again (3 MiB more does not fit beside the image).
    let Some(m3) = Mount::new(&["--image", s(&img)]) else { return };
    std::fs::write(m3.p("small"), b"changed").unwrap();
    std::fs::remove_file(m3.p("big")).unwrap();
    run_ok(&["unmount", s(&m3.path)]);
    drop(m3);
    let Some(m4) = Mount::new(&["--image", s(&img)]) else { return };
    assert_eq!(std::fs::read(m4.p("small")).unwrap(), b"changed");
    assert!(!m4.p("big").exists());
    drop(m4);
    drop(tmpfs);
}

/// A final save that fails (the image's file system has no room for a
/// second copy beside the first, and the disk changed since that was
/// saved) no longer ends the daemon with the disk's last changes: it saves
/// the disk to a rescue copy under `/var/tmp/sectorfs-rescue-UID`, says
/// where, and that copy mounts with everything. (A probe's appender lost
/// acknowledged lines so.)
#[test]
fn a_failed_final_save_leaves_a_rescue_copy() {
    let Some(tmpfs) = SmallTmpfs::new(5) else { return };
    let small = tmpfs.path();
    let img = small.join("d.img");
    let Some(mut m) = Mount::new(&["--image", s(&img), "--size", "64M"]) else { return };
    let big = noise(3 << 20);
    std::fs::write(m.p("big"), &big).unwrap();
    run_ok(&["save", s(&m.path)]);
    std::fs::write(m.p("late"), b"written after the last save").unwrap();
    let rescue = std::path::PathBuf::from(format!("/var/tmp/sectorfs-rescue-0/d.img-{}.img", m.pid()));
    /// Removes the rescue copy however the test ends.
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _remove = Remove(&rescue);
    // A plain umount: the daemon's final save is the only one.
    umount_settled(&m.path).unwrap();
    assert!(m.wait_exit(Duration::from_secs(20)), "the daemon did not exit");
    assert!(!m.exit_status().unwrap().success(), "the failed save was not reported");
    drop(m);
    assert!(rescue.exists(), "no rescue copy at {}", rescue.display());
    let Some(m2) = Mount::new(&["--image", s(&rescue)]) else { return };
    assert_eq!(std::fs::read(m2.p("late")).unwrap(), b"written after the last save");
    assert_eq!(std::fs::read(m2.p("big")).unwrap(), big);
    drop(m2);
    drop(tmpfs);
}

/// `sectorfs save` refuses to write over the image of another mounted disk
/// (directly or through a symbolic link): that disk's image would hold
/// this one's files, and a killed daemon would leave it so.
#[test]
fn save_refuses_another_disks_image() {
    let dir = image_dir();
    let (one, two) = (dir.path().join("one.img"), dir.path().join("two.img"));
    let Some(m1) = Mount::new(&["--image", s(&one), "--size", "64M"]) else { return };
    let Some(m2) = Mount::new(&["--image", s(&two), "--size", "64M"]) else { return };
    std::fs::write(m1.p("a"), b"one").unwrap();
    std::fs::write(m2.p("b"), b"two").unwrap();
    run_ok(&["save", s(&m1.path)]);
    let first = std::fs::read(&one).unwrap();
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&one, &link).unwrap();
    for target in [&one, &link] {
        let out = sectorfs(&["save".as_ref(), m2.path.as_os_str(), target.as_os_str()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("is the image of the sectorfs disk at"), "{err}");
        assert_eq!(std::fs::read(&one).unwrap(), first, "one.img replaced through {}", target.display());
    }
    // Its own image (however spelt), and a free file, are fine.
    run_ok(&["save", s(&m2.path), s(&two)]);
    run_ok(&["save", s(&m1.path), s(&dir.path().join(".").join("one.img"))]);
    run_ok(&["save", s(&m2.path), s(&dir.path().join("copy.img"))]);
}

/// Pages of the file at `p` in the page cache, and pages in all.
fn resident(p: &Path) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(p).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: a shared read-only mapping of a file we hold open, unmapped
    // below; only mincore looks at it (no byte is read through it).
    let m = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
    assert_ne!(m, libc::MAP_FAILED);
    let mut v = vec![0u8; len.div_ceil(4096)];
    // SAFETY: `m` maps `len` bytes; `v` has one byte per 4 KiB page of them.
    let r = unsafe { libc::mincore(m, len, v.as_mut_ptr()) };
    // SAFETY: the mapping made above, not used after.
    unsafe { libc::munmap(m, len) };
    assert_eq!(r, 0);
    (v.iter().filter(|&&b| b & 1 != 0).count(), v.len())
}

/// A save to a disk goes around the page cache (O_DIRECT), and a load
/// drops what it read from it: a RAM disk's image does not take as much
/// memory again; and what was written that way loads back.
#[test]
fn saves_and_loads_leave_no_copy_in_the_page_cache() {
    // On the disk (ext4 here and in CI), not tmpfs, whose files are memory.
    let dir = tempfile::Builder::new().prefix("sectorfs-image-").tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("disk.img");
    let probe = std::fs::File::create(dir.path().join("probe")).unwrap();
    if !engine::image::is_on_local_disk(&probe) {
        eprintln!("note: /var/tmp is on no local disk file system (ext4, XFS); skipped");
        return;
    }
    let Some(m) = Mount::new(&["--image", s(&img), "--size", "64M"]) else { return };
    let data: Vec<u8> = (0..24u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(m.p("big"), &data).unwrap();
    std::fs::write(m.p("small"), b"and a small one").unwrap();
    run_ok(&["save", s(&m.path)]);
    let (cached, pages) = resident(&img);
    // The tail (under 4 KiB) goes through the page cache.
    assert!(cached <= 1, "{cached} of the image's {pages} pages are in the page cache");
    run_ok(&["unmount", s(&m.path)]);
    drop(m);
    // Into the page cache, as a copy or a backup tool would leave it: the
    // load reads it and drops it behind itself.
    std::fs::read(&img).unwrap();
    let Some(m2) = Mount::new(&["--image", s(&img)]) else { return };
    let (cached, pages) = resident(&img);
    assert!(cached <= 1, "{cached} of the image's {pages} pages stayed in the page cache after the load");
    assert_eq!(hash(&std::fs::read(m2.p("big")).unwrap()), hash(&data));
    assert_eq!(std::fs::read(m2.p("small")).unwrap(), b"and a small one");
}
