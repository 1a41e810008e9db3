//! Permission checks on a multi-user mount (`--allow-other`,
//! `default_permissions`): a non-root user (uid/gid 65534, via a thread with
//! that fsuid/fsgid) gets EACCES/EPERM where Linux says so.
#![cfg(target_os = "linux")]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;

const NOBODY: u32 = 65534;

#[test]
fn non_root_user_is_checked() {
    if !is_root() {
        eprintln!("SKIP: permission tests need root (to act as another user)");
        return;
    }
    let Some(m) = Mount::new(&["--allow-other"]) else { return };
    // Set up as root: a private dir, a read-only dir, files with modes whose
    // group bits equal the other bits (the test thread keeps root's groups).
    fs::create_dir(m.p("ro")).unwrap();
    fs::set_permissions(m.p("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(m.p("ro/f"), b"root").unwrap();
    fs::set_permissions(m.p("ro/f"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(m.p("private")).unwrap();
    fs::set_permissions(m.p("private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(m.p("secret"), b"s").unwrap();
    fs::set_permissions(m.p("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(m.p("rootfile"), b"r").unwrap();
    fs::set_permissions(m.p("rootfile"), fs::Permissions::from_mode(0o666)).unwrap();

    as_user(NOBODY, NOBODY, || {
        // Reading is allowed by the bits; writing is not.
        assert_eq!(fs::read(m.p("ro/f")).unwrap(), b"root");
        assert_eq!(errno(OpenOptions::new().write(true).open(m.p("ro/f"))), libc::EACCES);
        assert_eq!(errno(File::open(m.p("secret"))), libc::EACCES);
        assert_eq!(errno(File::create(m.p("ro/new"))), libc::EACCES);
        assert_eq!(errno(fs::create_dir(m.p("ro/newdir"))), libc::EACCES);
        assert_eq!(errno(fs::remove_file(m.p("ro/f"))), libc::EACCES);
        assert_eq!(errno(fs::rename(m.p("ro/f"), m.p("stolen"))), libc::EACCES);
        assert_eq!(errno(fs::read_dir(m.p("private"))), libc::EACCES);
        assert_eq!(errno(fs::metadata(m.p("private/x"))), libc::EACCES);
        assert_eq!(errno(OpenOptions::new().write(true).open(m.p("ro/f")).and_then(|f| f.set_len(0))), libc::EACCES);
        assert_eq!(errno(setxattr(&m.p("ro/f"), "user.x", b"1", 0)), libc::EACCES);
        // Only the owner may chmod, chown, or set times other than "now".
        assert_eq!(errno(fs::set_permissions(m.p("ro/f"), fs::Permissions::from_mode(0o777))), libc::EPERM);
        assert_eq!(errno(std::os::unix::fs::chown(m.p("ro/f"), Some(NOBODY), None)), libc::EPERM);
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        let f = OpenOptions::new().write(true).open(m.p("rootfile")).unwrap();
        assert_eq!(errno(f.set_times(fs::FileTimes::new().set_modified(t))), libc::EPERM);
        drop(f);
        // The sticky root (1777): creating is fine, deleting others' files is not.
        fs::write(m.p("mine"), b"m").unwrap();
        assert_eq!(errno(fs::remove_file(m.p("rootfile"))), libc::EPERM);
        assert_eq!(errno(fs::rename(m.p("rootfile"), m.p("mine2"))), libc::EPERM);
        // Own files: everything is allowed, and they belong to the caller.
        let md = fs::metadata(m.p("mine")).unwrap();
        assert_eq!((md.uid(), md.gid()), (NOBODY, NOBODY));
        fs::set_permissions(m.p("mine"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::create_dir(m.p("mydir")).unwrap();
        fs::write(m.p("mydir/x"), b"x").unwrap();
        // chown to someone else is not allowed even for the owner.
        assert_eq!(errno(std::os::unix::fs::chown(m.p("mine"), Some(0), None)), libc::EPERM);
        fs::remove_file(m.p("mydir/x")).unwrap();
        fs::remove_dir(m.p("mydir")).unwrap();
        fs::remove_file(m.p("mine")).unwrap();
    });
    // Root still may do everything, and nothing the user tried went through.
    assert_eq!(fs::read(m.p("ro/f")).unwrap(), b"root");
    assert_eq!(fs::metadata(m.p("ro/f")).unwrap().mode() & 0o777, 0o644);
    assert!(fs::metadata(m.p("rootfile")).is_ok());
    assert!(fs::metadata(m.p("mine")).is_err());
}

#[test]
fn owner_only_mount_refuses_other_users() {
    if !is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    // Without --allow-other only the mounting user gets in.
    let Some(m) = Mount::new(&[]) else { return };
    fs::write(m.p("f"), b"x").unwrap();
    fs::set_permissions(m.p("f"), fs::Permissions::from_mode(0o666)).unwrap();
    as_user(NOBODY, NOBODY, || {
        assert_eq!(errno(File::create(m.p("g"))), libc::EACCES);
    });
}

#[test]
fn root_dir_mode_and_owner_options() {
    if !is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let Some(m) = Mount::new(&["--mode", "0750", "--uid", "65534", "--gid", "65534", "--allow-other"]) else {
        return;
    };
    let md = fs::metadata(&m.path).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o750);
    assert_eq!((md.uid(), md.gid()), (NOBODY, NOBODY));
    as_user(NOBODY, NOBODY, || {
        fs::write(m.p("by-nobody"), b"n").unwrap();
    });
    as_user(1000, 1000, || {
        assert_eq!(errno(fs::read_dir(&m.path)), libc::EACCES);
    });
}

/// A user other than root mounts through the setuid `fusermount3`, uses the
/// mount, is alone in it (no `--allow-other`: even root is refused), reads
/// stats, and unmounts. Runs in a private mount namespace with its own
/// 0666 `/dev/fuse` node bound over the machine's (which may be 0600, as in
/// containers, where `fusermount3` refuses other users), so nothing outside
/// the test sees a change.
#[test]
fn non_root_user_mounts_through_fusermount3() {
    if !is_root() || !fuse_available() {
        eprintln!("SKIP: needs root (to act as another user) and /dev/fuse");
        return;
    }
    for tool in ["unshare", "setpriv", "fusermount3"] {
        let found = std::process::Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output();
        if !found.is_ok_and(|o| o.status.success()) {
            eprintln!("SKIP: {tool} is missing");
            return;
        }
    }
    let w = tempfile::Builder::new().prefix("sectorfs-user-").tempdir().unwrap();
    let wp = w.path().canonicalize().unwrap();
    fs::set_permissions(&wp, fs::Permissions::from_mode(0o755)).unwrap();
    fs::copy(BIN, wp.join("sectorfs")).unwrap();
    fs::set_permissions(wp.join("sectorfs"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(wp.join("mp")).unwrap();
    std::os::unix::fs::chown(wp.join("mp"), Some(NOBODY), Some(NOBODY)).unwrap();
    let script = format!(
        r#"set -eu
w={w}
U="setpriv --reuid={u} --regid={u} --clear-groups"
trap '$U $w/sectorfs unmount $w/mp 2>/dev/null || umount -l $w/mp 2>/dev/null || true' EXIT
mknod $w/fuse c 10 229 && chmod 666 $w/fuse && mount --bind $w/fuse /dev/fuse
$U $w/sectorfs mount $w/mp --size 64M
echo "pid $($U $w/sectorfs stats $w/mp --json | sed -E 's/.*"pid":([0-9]+).*/\1/')"
grep " $w/mp " /proc/self/mounts
$U sh -c "echo hello > $w/mp/f && mkdir $w/mp/d && cat $w/mp/f"
stat -c 'owner %u:%g' $w/mp/f 2>&1 || true
$U stat -c 'owner %u:%g' $w/mp/f
$U $w/sectorfs stats $w/mp --json
$U $w/sectorfs unmount $w/mp
echo unmounted
grep -c " $w/mp " /proc/self/mounts || true
"#,
        w = wp.display(),
        u = NOBODY
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Whatever happened, no daemon may outlive the test (its mount lives in
    // the private namespace and goes with its last process).
    if let Some(pid) = stdout.lines().find_map(|l| l.strip_prefix("pid ")).and_then(|p| p.trim().parse::<i32>().ok()) {
        let start = std::time::Instant::now();
        while !process_gone(pid) && start.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if !process_gone(pid) {
            // SAFETY: kill has no memory preconditions; the pid is the daemon this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("daemon {pid} still running after unmount");
        }
    }
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let mount_line = stdout.lines().find(|l| l.contains("/mp ")).unwrap_or_default();
    assert!(mount_line.contains("user_id=65534") && mount_line.contains("default_permissions"), "{stdout}");
    assert!(stdout.contains("hello\n"), "{stdout}");
    // Root is not the mounting user and there is no allow_other.
    assert!(stdout.contains("Permission denied"), "root got in: {stdout}");
    assert!(stdout.contains("owner 65534:65534"), "{stdout}");
    assert!(stdout.contains("\"files\":3"), "{stdout}");
    assert!(stdout.trim_end().ends_with("unmounted\n0"), "still mounted after unmount: {stdout}");
}

/// Writes, truncates (`O_TRUNC` too), fallocate and copy_file_range by an
/// unprivileged user, chown by root and `chown(f, -1, -1)` by the owner
/// drop set-user-ID and set-group-ID bits exactly as on tmpfs, and the
/// kernel's cached mode says so at once (`statx(STATX_MODE)`, what exec's
/// permission check reads); and every one of them, by root too, drops file capabilities
/// (`security.capability`), as on tmpfs. (The mount negotiates
/// FUSE_HANDLE_KILLPRIV_V2, so the daemon, not the kernel, drops them.)
#[test]
fn privilege_drops_match_tmpfs() {
    if !is_root() {
        eprintln!("SKIP: needs root (to act as another user)");
        return;
    }
    let Some(m) = Mount::new(&["--allow-other"]) else { return };
    let shm = tempfile::Builder::new().prefix("sectorfs-privs-").tempdir_in("/dev/shm").unwrap();
    fs::set_permissions(shm.path(), fs::Permissions::from_mode(0o777)).unwrap();
    // (name, mode, what happens to it)
    let cases: [(&str, u32, &str); 20] = [
        ("w_suid", 0o4777, "user write"),
        ("w_sgid_x", 0o2777, "user write"),
        ("w_sgid_nox", 0o2767, "user write"),
        ("w_both", 0o6777, "user write"),
        ("w_plain", 0o777, "user write"),
        ("w_sgid_nox_group", 0o2767, "user write in group"),
        ("t_suid", 0o4777, "user truncate"),
        ("t_both", 0o6777, "user truncate"),
        ("o_both", 0o6777, "user open O_TRUNC"),
        ("f_suid", 0o4777, "user fallocate"),
        ("c_suid", 0o6777, "user copy"),
        ("root_write", 0o6777, "root write"),
        ("root_append", 0o6777, "root append"),
        ("root_truncate", 0o6777, "root truncate"),
        ("root_fallocate", 0o6777, "root fallocate"),
        ("root_copy", 0o6777, "root copy"),
        ("chown_both", 0o6755, "root chown"),
        ("chown_sgid_nox", 0o2745, "root chown"),
        ("none_owner_both", 0o6745, "user chown -1 -1"),
        ("none_owner_sgid_nox", 0o2745, "user chown -1 -1"),
    ];
    let mut got = Vec::new();
    for root in [shm.path(), m.path.as_path()] {
        fs::write(root.join("src"), vec![9u8; 8192]).unwrap();
        for (name, mode, _) in cases {
            let p = root.join(name);
            fs::write(&p, vec![1u8; 4096]).unwrap();
            if name.ends_with("_group") {
                std::os::unix::fs::chown(&p, None, Some(NOBODY)).unwrap();
            }
            if name.starts_with("none_owner") {
                std::os::unix::fs::chown(&p, Some(NOBODY), None).unwrap();
            }
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            setxattr(&p, "security.capability", &CAP_NET_RAW, 0).unwrap();
        }
        for (name, _, what) in cases {
            let p = root.join(name);
            let src = root.join("src");
            let act = move || -> std::io::Result<()> {
                match what {
                    "user write" | "user write in group" | "root write" => {
                        OpenOptions::new().write(true).open(&p)?.write_all_at(b"x", 10)?
                    }
                    "root append" => OpenOptions::new().append(true).open(&p)?.write_all(b"x")?,
                    "user open O_TRUNC" => drop(OpenOptions::new().write(true).truncate(true).open(&p)?),
                    "user truncate" | "root truncate" => OpenOptions::new().write(true).open(&p)?.set_len(100)?,
                    "user fallocate" | "root fallocate" => {
                        fallocate(&OpenOptions::new().write(true).open(&p)?, 0, 0, 8192)?
                    }
                    "user copy" | "root copy" => {
                        let (a, b) = (File::open(&src)?, OpenOptions::new().write(true).open(&p)?);
                        copy_file_range(&a, 0, &b, 0, 4096)?;
                    }
                    "root chown" => std::os::unix::fs::chown(&p, Some(NOBODY), None)?,
                    "user chown -1 -1" => std::os::unix::fs::chown(&p, None, None)?,
                    _ => unreachable!(),
                }
                Ok(())
            };
            if what.starts_with("user") {
                as_user(NOBODY, NOBODY, act).unwrap();
            } else {
                act().unwrap();
            }
            let caps = getxattr(&root.join(name), "security.capability").is_ok();
            // The mode alone, as exec's permission check reads it: from the
            // kernel's cache unless the change invalidated it (a full stat
            // refreshes anyway, since a write invalidates the times).
            let mode = statx_mode(&root.join(name)) & 0o7777;
            got.push(format!("{name}: {mode:o}{}", if caps { " caps" } else { "" }));
        }
    }
    let (tmpfs, sectorfs) = got.split_at(cases.len());
    assert_eq!(sectorfs, tmpfs, "modes after each change (right: tmpfs)");
    // The cases do drop bits (the test would pass vacuously otherwise).
    assert!(tmpfs.iter().any(|l| l == "w_suid: 777") && tmpfs.iter().any(|l| l == "chown_both: 755"), "{tmpfs:?}");
    assert!(tmpfs.iter().any(|l| l == "root_write: 6777"), "root keeps set-user-ID, loses capabilities: {tmpfs:?}");
}

/// `statx(p, STATX_MODE)`: the mode bits, from the kernel's attribute
/// cache while it is valid.
fn statx_mode(p: &std::path::Path) -> u32 {
    let c = cstr(p);
    let mut st = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c` is NUL-terminated and `st` a writable statx buffer; both
    // outlive the call.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_MODE, st.as_mut_ptr()) };
    assert_eq!(r, 0, "statx {}: {}", p.display(), std::io::Error::last_os_error());
    // SAFETY: statx filled it.
    u32::from(unsafe { st.assume_init() }.stx_mode)
}

/// A valid `security.capability` value (revision 2, effective,
/// `cap_net_raw` permitted), as `setcap cap_net_raw+ep` writes it: the
/// kernel checks the format before either file system sees it.
const CAP_NET_RAW: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
