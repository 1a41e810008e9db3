//! sectorfs as an overlayfs upper layer (issue 20, container storage):
//! the kernel's overlayfs mounts with its upper and work directories on
//! sectorfs, and the same sequence of changes (create, copy-up, delete a
//! lower file, rename a lower directory with `redirect_dir=on`, rename a
//! lower file, a directory over a whiteout) leaves the same upper layer as
//! on tmpfs (`/dev/shm`): whiteouts as 0/0 character devices, the
//! `trusted.overlay.*` (or `user.overlay.*`) xattrs, contents. Also
//! `renameat2(RENAME_WHITEOUT)` itself against tmpfs, its `ENOSPC` at the
//! inode limit, `trusted.*` names hidden from other users, and copy-ups
//! that keep working after the kernel evicted its caches.
//!
//! Needs root (overlayfs mounts, `trusted.*` xattrs); skipped otherwise.
//! Every overlay mount is a guard declared after the layers' mounts, so it
//! is unmounted first, also when a test fails.
#![cfg(target_os = "linux")]

mod common;

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

fn ready() -> bool {
    if !is_root() {
        eprintln!("SKIP: needs root (overlayfs mounts and trusted.* xattrs)");
        return false;
    }
    if !fs::read_to_string("/proc/filesystems").unwrap_or_default().contains("overlay") {
        // The module may load on the first mount: try one before giving up.
        let probe = tempfile::Builder::new().prefix("sectorfs-ovl-probe-").tempdir_in("/dev/shm").unwrap();
        let d = Layers::new(probe.path());
        match Overlay::mount(&d, "") {
            Ok(o) => drop(o),
            Err(e) => {
                eprintln!("SKIP: no overlayfs here ({e})");
                return false;
            }
        }
    }
    true
}

/// `lower`, `upper`, `work` and `merged` under one base directory.
struct Layers {
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

impl Layers {
    /// Makes the four directories under `base`.
    fn new(base: &Path) -> Layers {
        Layers::split(base, base)
    }

    /// The lower directory under `lower_base`, the rest under `base`.
    fn split(lower_base: &Path, base: &Path) -> Layers {
        let l = Layers {
            lower: lower_base.join("lower"),
            upper: base.join("upper"),
            work: base.join("work"),
            merged: base.join("merged"),
        };
        for d in [&l.lower, &l.upper, &l.work, &l.merged] {
            fs::create_dir_all(d).unwrap();
        }
        l
    }
}

/// An overlay mount on `merged`; unmounted on drop (lazily if busy).
struct Overlay {
    merged: PathBuf,
    mounted: bool,
}

impl Overlay {
    /// `mount -t overlay overlay -o lowerdir=..,upperdir=..,workdir=..<opts> merged`;
    /// `opts` starts with a comma or is empty.
    fn mount(l: &Layers, opts: &str) -> io::Result<Overlay> {
        let data =
            format!("lowerdir={},upperdir={},workdir={}{opts}", l.lower.display(), l.upper.display(), l.work.display());
        let (src, fstype, data) =
            (CString::new("overlay").unwrap(), CString::new("overlay").unwrap(), CString::new(data).unwrap());
        let target = cstr(&l.merged);
        // SAFETY: NUL-terminated strings that outlive the call; `data` is
        // the option string overlayfs parses.
        let r = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Overlay { merged: l.merged.clone(), mounted: true })
    }

    /// Unmounts now (failing the test if the overlay stays busy).
    fn unmount(mut self) {
        umount_settled(&self.merged).expect("umount overlay");
        self.mounted = false;
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted && umount2(&self.merged, 0).is_err() {
            let _ = umount2(&self.merged, libc::MNT_DETACH);
        }
    }
}

/// The lower layer every sequence starts from.
fn populate(lower: &Path) {
    fs::write(lower.join("f"), "lower f\n").unwrap();
    fs::write(lower.join("gone"), "g\n").unwrap();
    fs::write(lower.join("keep"), "k\n").unwrap();
    fs::create_dir(lower.join("dir")).unwrap();
    fs::write(lower.join("dir/inner"), "i\n").unwrap();
    fs::create_dir(lower.join("dir/sub")).unwrap();
}

/// The changes made through the overlay: create, copy-up by append, delete
/// a lower file, rename a lower directory (`rename_dir`: with
/// `redirect_dir=on`; else overlayfs refuses with `EXDEV`), rename a lower
/// file, a directory over a whiteout, delete in a renamed directory.
fn changes(m: &Path, rename_dir: bool) {
    fs::write(m.join("new"), "new\n").unwrap();
    fs::OpenOptions::new().append(true).open(m.join("f")).unwrap().write_all(b"more\n").unwrap();
    fs::remove_file(m.join("gone")).unwrap();
    fs::create_dir(m.join("gone")).unwrap();
    let d = if rename_dir {
        renameat2(&m.join("dir"), &m.join("dir2"), 0).expect("rename of a lower directory (redirect_dir=on)");
        "dir2"
    } else {
        assert_eq!(errno(renameat2(&m.join("dir"), &m.join("dir2"), 0)), libc::EXDEV);
        "dir"
    };
    fs::remove_dir(m.join(d).join("sub")).unwrap();
    fs::rename(m.join("keep"), m.join("keep2")).unwrap();
    // The merged view.
    let mut names: Vec<String> =
        fs::read_dir(m).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, [d, "f", "gone", "keep2", "new"]);
    assert_eq!(fs::read_to_string(m.join("f")).unwrap(), "lower f\nmore\n");
    assert_eq!(fs::read_to_string(m.join(d).join("inner")).unwrap(), "i\n");
    assert_eq!(fs::read_to_string(m.join("keep2")).unwrap(), "k\n");
    assert!(fs::read_dir(m.join("gone")).unwrap().next().is_none(), "the new directory hides nothing");
}

/// One line per entry below `dir` (sorted, recursive): type, permission
/// bits, device number, link count, owner, the content of regular files,
/// and xattrs (values of the ones that name things; file handles and uuids
/// differ between file systems, so only their presence).
fn describe(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    describe_into(dir, dir, &mut out);
    out
}

fn describe_into(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut ents: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    ents.sort();
    for p in ents {
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "chr"
        } else {
            "other"
        };
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        // Names in the work directory are overlayfs's counters (#1, #2, ...).
        let rel = if rel.starts_with("work/#") { "work/#N".to_string() } else { rel };
        let mut line = format!(
            "{rel} {kind} {:o} rdev={} nlink={} {}:{}",
            md.mode() & 0o7777,
            md.rdev(),
            md.nlink(),
            md.uid(),
            md.gid()
        );
        if ft.is_file() {
            line += &format!(" {:?}", fs::read_to_string(&p).unwrap());
        }
        for x in listxattr(&p).unwrap() {
            let shown = ["redirect", "opaque", "metacopy", "nlink", "impure"];
            if shown.iter().any(|s| x.ends_with(&format!("overlay.{s}"))) {
                line += &format!(" {x}={:?}", String::from_utf8_lossy(&getxattr(&p, &x).unwrap()));
            } else {
                line += &format!(" {x}");
            }
        }
        out.push(line);
        if ft.is_dir() {
            describe_into(root, &p, out);
        }
    }
}

/// Mounts the overlay on `l` with `opts`, makes the changes, unmounts it,
/// and describes the upper and work directories.
fn sequence(l: &Layers, opts: &str, rename_dir: bool) -> (Vec<String>, Vec<String>) {
    populate(&l.lower);
    let ov = Overlay::mount(l, opts).unwrap_or_else(|e| panic!("overlay mount ({opts}): {e}"));
    changes(&l.merged, rename_dir);
    ov.unmount();
    (describe(&l.upper), describe(&l.work))
}

/// A fresh directory on tmpfs that other users may enter (as the root of
/// a sectorfs mount), removed on drop.
fn shm(tag: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(&format!("sectorfs-ovl-{tag}-")).tempdir_in("/dev/shm").unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn is_whiteout(p: &Path) -> bool {
    let md = fs::symlink_metadata(p).unwrap();
    md.file_type().is_char_device() && md.rdev() == 0 && md.mode() & 0o7777 == 0
}

/// Lower, upper and work directories all on one sectorfs mount, with
/// `redirect_dir=on`: the upper layer has what tmpfs's has.
#[test]
fn overlay_on_sectorfs_matches_tmpfs() {
    if !ready() {
        return;
    }
    let Some(m) = Mount::new(&[]) else { return };
    let t = shm("all");
    let opts = ",redirect_dir=on,index=off,metacopy=off";
    let ours = sequence(&Layers::new(&m.path), opts, true);
    let want = sequence(&Layers::new(t.path()), opts, true);
    let u = m.p("upper");
    assert!(is_whiteout(&u.join("keep")), "renamed lower file: a whiteout (RENAME_WHITEOUT)");
    assert!(is_whiteout(&u.join("dir")), "renamed lower directory: a whiteout");
    assert_eq!(getxattr(&u.join("dir2"), "trusted.overlay.redirect").unwrap(), b"dir");
    assert_eq!(getxattr(&u.join("gone"), "trusted.overlay.opaque").unwrap(), b"y");
    assert!(is_whiteout(&u.join("dir2/sub")), "deleted lower directory: a whiteout");
    assert_eq!(fs::read_to_string(u.join("f")).unwrap(), "lower f\nmore\n");
    assert_eq!(ours.0, want.0, "upper layer: sectorfs vs tmpfs");
    assert_eq!(ours.1, want.1, "work directory: sectorfs vs tmpfs");
}

/// The lower layer on tmpfs, upper and work on sectorfs (an image unpacked
/// elsewhere, the container's writes in RAM).
#[test]
fn overlay_lower_on_tmpfs_upper_on_sectorfs() {
    if !ready() {
        return;
    }
    let Some(m) = Mount::new(&[]) else { return };
    let lower = shm("lower");
    let t = shm("ref");
    let opts = ",redirect_dir=on,index=off,metacopy=off";
    let ours = sequence(&Layers::split(lower.path(), &m.path), opts, true);
    let want = sequence(&Layers::new(t.path()), opts, true);
    assert_eq!(ours.0, want.0, "upper layer: sectorfs vs tmpfs");
    assert_eq!(ours.1, want.1, "work directory: sectorfs vs tmpfs");
}

/// `userxattr` (what rootless podman uses): `user.overlay.*` xattrs; no
/// redirects then, so a lower directory cannot be renamed (`EXDEV`).
#[test]
fn overlay_userxattr_matches_tmpfs() {
    if !ready() {
        return;
    }
    let Some(m) = Mount::new(&[]) else { return };
    let t = shm("ux");
    let ours = sequence(&Layers::new(&m.path), ",userxattr", false);
    let want = sequence(&Layers::new(t.path()), ",userxattr", false);
    assert_eq!(getxattr(&m.p("upper/gone"), "user.overlay.opaque").unwrap(), b"y");
    assert!(is_whiteout(&m.p("upper/keep")));
    assert_eq!(ours.0, want.0, "upper layer: sectorfs vs tmpfs");
}

/// Copy-ups keep working after the kernel dropped its dentries and inodes
/// (the overlay remounted, `drop_caches`): overlayfs then finds the copy-up
/// origins it recorded in `trusted.overlay.origin` stale and goes on
/// without them. (With `FUSE_EXPORT_SUPPORT` they decode to dentries that
/// FUSE cannot revalidate, and every access failed with `ESTALE`.)
#[test]
fn overlay_survives_cache_eviction() {
    if !ready() {
        return;
    }
    let Some(m) = Mount::new(&[]) else { return };
    for (i, opts) in [",index=off", ",index=on", ",redirect_dir=on,metacopy=on"].into_iter().enumerate() {
        let base = m.p(&format!("ev{i}"));
        let l = Layers::new(&base);
        fs::write(l.lower.join("a"), "a\n").unwrap();
        fs::write(l.lower.join("b"), "b\n").unwrap();
        fs::hard_link(l.lower.join("b"), l.lower.join("b2")).unwrap();
        let ov = Overlay::mount(&l, opts).unwrap();
        fs::OpenOptions::new().append(true).open(l.merged.join("a")).unwrap().write_all(b"x\n").unwrap();
        fs::OpenOptions::new().append(true).open(l.merged.join("b")).unwrap().write_all(b"y\n").unwrap();
        ov.unmount();
        fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
        let ov = Overlay::mount(&l, opts).unwrap();
        // Without the index a copy-up breaks the hard link (overlayfs's rule).
        let b2 = if opts.contains("index=on") { "b\ny\n" } else { "b\n" };
        for _ in 0..3 {
            assert_eq!(fs::read_to_string(l.merged.join("a")).unwrap(), "a\nx\n", "{opts}");
            assert_eq!(fs::read_to_string(l.merged.join("b")).unwrap(), "b\ny\n", "{opts}");
            assert_eq!(fs::read_to_string(l.merged.join("b2")).unwrap(), b2, "{opts}: the other link");
            fs::metadata(l.merged.join("a")).unwrap();
        }
        ov.unmount();
    }
}

/// What `renameat2(RENAME_WHITEOUT)` leaves, as root and as another user
/// (its fsuid/fsgid own the whiteout), for a file and a directory, with
/// `RENAME_NOREPLACE`, and its refusals: the same on sectorfs as on tmpfs.
#[test]
fn rename_whiteout_matches_tmpfs() {
    if !ready() {
        return;
    }
    let Some(m) = Mount::new(&["--allow-other"]) else { return };
    let t = shm("rw");
    let run = |base: &Path| -> Vec<String> {
        let d = base.join("rw");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(d.join("a"), "a").unwrap();
        renameat2(&d.join("a"), &d.join("b"), libc::RENAME_WHITEOUT).unwrap();
        fs::create_dir(d.join("dir")).unwrap();
        renameat2(&d.join("dir"), &d.join("dir2"), libc::RENAME_WHITEOUT | libc::RENAME_NOREPLACE).unwrap();
        fs::write(d.join("c"), "c").unwrap();
        assert_eq!(
            errno(renameat2(&d.join("c"), &d.join("b"), libc::RENAME_WHITEOUT | libc::RENAME_NOREPLACE)),
            libc::EEXIST
        );
        assert_eq!(
            errno(renameat2(&d.join("c"), &d.join("b"), libc::RENAME_WHITEOUT | libc::RENAME_EXCHANGE)),
            libc::EINVAL
        );
        // Over an existing file, by another user.
        as_user(4321, 1234, || {
            fs::write(d.join("u"), "u").unwrap();
            renameat2(&d.join("u"), &d.join("c"), libc::RENAME_WHITEOUT).unwrap();
        });
        let whiteouts: Vec<bool> = ["a", "dir", "u"].iter().map(|n| is_whiteout(&d.join(n))).collect();
        assert_eq!(whiteouts, [true, true, true], "{}", base.display());
        // A whiteout is an ordinary node otherwise: it can be removed.
        fs::remove_file(d.join("dir")).unwrap();
        describe(&d)
    };
    let ours = run(&m.path);
    let want = run(t.path());
    assert_eq!(ours, want);
    assert!(ours.iter().any(|l| l.starts_with("u chr 0 rdev=0 nlink=1 4321:1234")), "{ours:#?}");
}

/// At the inode limit the whiteout does not fit: `ENOSPC`, and nothing
/// changed (the source is still there, no target appeared).
#[test]
fn rename_whiteout_enospc_at_the_inode_limit() {
    if !ready() {
        return;
    }
    let Some(m) = Mount::new(&["--max-files", "8"]) else { return };
    let mut made = 0;
    while fs::write(m.p(&format!("f{made}")), "x").is_ok() {
        made += 1;
        assert!(made < 100, "the inode limit did not apply");
    }
    assert!(made > 0);
    assert_eq!(errno(renameat2(&m.p("f0"), &m.p("g"), libc::RENAME_WHITEOUT)), libc::ENOSPC);
    assert_eq!(fs::read_to_string(m.p("f0")).unwrap(), "x");
    assert!(fs::symlink_metadata(m.p("g")).is_err(), "no target appeared");
    // A plain rename needs no inode; with one freed the whiteout fits. (An
    // unlinked inode counts until the kernel forgets it, which it sends
    // on its own time.)
    renameat2(&m.p("f0"), &m.p("g"), 0).unwrap();
    fs::remove_file(m.p("f1")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match renameat2(&m.p("g"), &m.p("f0"), libc::RENAME_WHITEOUT) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("rename with one inode free: {e}"),
        }
    }
    assert!(is_whiteout(&m.p("g")));
}

/// `trusted.*` xattrs (overlayfs's `trusted.overlay.*`) are listed to root
/// only, as on tmpfs; `user.*` to everyone. The other user is a real
/// process (this test binary again, as uid/gid 65534): a thread with
/// another fsuid keeps `CAP_SYS_ADMIN`, which tmpfs asks about.
#[test]
fn trusted_xattr_names_hidden_from_users() {
    if !ready() {
        return;
    }
    let Some(m) = Mount::new(&["--allow-other"]) else { return };
    let t = shm("tx");
    let run = |base: &Path| -> (Vec<String>, Vec<String>) {
        let f = base.join("tx");
        fs::write(&f, "").unwrap();
        setxattr(&f, "trusted.overlay.opaque", b"y", 0).unwrap();
        setxattr(&f, "user.note", b"n", 0).unwrap();
        (listxattr(&f).unwrap(), list_as_nobody(&f))
    };
    let ours = run(&m.path);
    assert_eq!(ours.0, ["trusted.overlay.opaque", "user.note"]);
    assert_eq!(ours.1, ["user.note"]);
    assert_eq!(ours, run(t.path()));
}

/// The xattr names of `p` as listed by a process running as uid/gid 65534.
fn list_as_nobody(p: &Path) -> Vec<String> {
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "list_xattrs_for_parent", "--nocapture", "--test-threads", "1"])
        .env(LIST_ENV, p)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // The harness prints "test ... " before the test's own output, on one line.
    let at = text.find("XATTRS:").unwrap_or_else(|| panic!("no list: {text}")) + "XATTRS:".len();
    let line = text[at..].lines().next().unwrap_or("");
    line.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

const LIST_ENV: &str = "SECTORFS_TEST_LIST_XATTRS";

/// Not a test on its own: `list_as_nobody` runs it in a child process.
#[test]
fn list_xattrs_for_parent() {
    if let Some(p) = std::env::var_os(LIST_ENV) {
        let names = listxattr(Path::new(&p)).unwrap();
        println!("XATTRS:{}", names.join(","));
    }
}
