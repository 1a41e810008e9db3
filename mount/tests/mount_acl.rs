//! POSIX ACLs on a real mount (issue 20), compared with tmpfs (`/dev/shm`):
//! the same `setfacl`/`getfacl` sequence must print the same thing on both,
//! and an ACL entry must really grant access (the kernel checks it, with
//! `FUSE_POSIX_ACL`). Needs root (to act as uid 65534) and the `acl`
//! package (`scripts/test-all` installs it).
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

const NOBODY: u32 = 65534;

fn ready() -> bool {
    if !is_root() {
        eprintln!("SKIP: needs root (to act as another user)");
        return false;
    }
    if Command::new("setfacl").arg("--version").output().is_err() {
        eprintln!("SKIP: setfacl missing (apt-get install acl)");
        return false;
    }
    true
}

/// A fresh directory on tmpfs, open to everyone, removed on drop.
fn shm() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("sectorfs-acl-").tempdir_in("/dev/shm").unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// Runs `script` with `sh` in `dir`; its stdout and stderr, interleaved.
fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(format!("exec 2>&1\n{script}")).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "script failed in {}:\n{}", dir.display(), String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stdout).unwrap()
}

/// As uid/gid 65534 with no supplementary groups (a real process, so the
/// daemon sees its credentials in /proc).
const AS_NOBODY: &str = "setpriv --reuid 65534 --regid 65534 --clear-groups";

/// Access ACLs: set, mask after chmod, flags, removal of entries and of the
/// whole ACL, refusals; default ACLs and what files, directories, special
/// files and symlinks inherit, with the umask ignored there and applied
/// elsewhere.
const SEQUENCE: &str = r#"
set -u
umask 022
echo hi > f; chmod 600 f
setfacl -m u:65534:r f; getfacl f; stat -c '%n %a' f
chmod 640 f; getfacl f
chmod 2750 f; getfacl f
setfacl -m m::rwx f; stat -c '%n %a' f; getfacl f
setfacl -x u:65534 f; stat -c '%n %a' f; getfacl f
setfacl -m u:65534:rw f; setfacl -b f; stat -c '%n %a' f; getfacl f
setfacl -m u::rwx,g::r,o::- f; stat -c '%n %a' f; getfacl f
setfacl -d -m u:65534:r f || echo "default on a file refused"
ln -s f link
mkdir d; setfacl -d -m u:65534:rwx,g::rx,o::r d; getfacl d; stat -c '%n %a' d
umask 077
touch d/x; mkdir d/sub; mkfifo d/p; ln -s x d/l
getfacl d/x d/sub d/p; stat -c '%n %a' d/x d/sub d/p
touch d/sub/y; mkdir d/sub/z; getfacl d/sub/y d/sub/z
umask 027
touch plain; mkdir plaindir; stat -c '%n %a' plain plaindir
getfacl plain plaindir
setfacl -k d; getfacl d; touch d/after; getfacl d/after; stat -c '%n %a' d/after
mkdir -m 0700 e; setfacl -m d:u::rwx,d:g::-,d:o::- e; touch e/min; stat -c '%n %a' e/min; getfacl e/min
touch g; chown 65534:0 g; chmod 2770 g
SETPRIV setfacl -m u:0:r g; stat -c '%n %a' g; getfacl g
SETPRIV setfacl -m u:65534:rw f || echo "not the owner: refused"
chmod 755 d; chown 65534 d/x; SETPRIV setfacl -m u:0:rwx d/x; getfacl d/x
setfacl -R -b d; getfacl -p $(find d | sort)
"#;

#[test]
fn getfacl_matches_tmpfs() {
    if !ready() {
        return;
    }
    let Some(m) = Mount::new(&["--allow-other"]) else { return };
    let shm = shm();
    let script = SEQUENCE.replace("SETPRIV", AS_NOBODY);
    let tmpfs = sh(shm.path(), &script);
    let sectorfs = sh(&m.path, &script);
    assert!(tmpfs.contains("user:nobody:r--") && tmpfs.contains("default:user:nobody:rwx"), "{tmpfs}");
    let (t, s): (Vec<_>, Vec<_>) = (tmpfs.lines().collect(), sectorfs.lines().collect());
    for (i, (a, b)) in t.iter().zip(&s).enumerate() {
        assert_eq!(b, a, "line {i} differs (left: sectorfs, right: tmpfs)\n--- sectorfs:\n{sectorfs}");
    }
    assert_eq!(s.len(), t.len(), "--- sectorfs:\n{sectorfs}\n--- tmpfs:\n{tmpfs}");
}

/// An access ACL entry grants uid 65534 read on a 0600 file it could not
/// read before; removing the entry takes it away again.
#[test]
fn acl_entry_grants_access() {
    if !ready() {
        return;
    }
    let Some(m) = Mount::new(&["--allow-other"]) else { return };
    let shm = shm();
    for root in [shm.path(), m.path.as_path()] {
        let f = root.join("secret");
        fs::write(&f, b"data").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        let read = || as_user(NOBODY, NOBODY, || fs::read(&f).map_err(|e| e.raw_os_error()));
        assert_eq!(read(), Err(Some(libc::EACCES)), "{}", root.display());
        sh(root, "setfacl -m u:65534:r secret");
        assert_eq!(read(), Ok(b"data".to_vec()), "{}", root.display());
        let write = as_user(NOBODY, NOBODY, || fs::write(&f, b"x").map_err(|e| e.raw_os_error()));
        assert_eq!(write, Err(Some(libc::EACCES)));
        // chmod 600 cuts the mask to nothing: the entry no longer grants.
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(), Err(Some(libc::EACCES)), "{}", root.display());
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read(), Ok(b"data".to_vec()));
        sh(root, "setfacl -b secret");
        assert_eq!(read(), Err(Some(libc::EACCES)), "{}", root.display());
        // A default ACL on the directory reaches a new file.
        sh(root, "mkdir -m 700 box && setfacl -m u:65534:rx,d:u:65534:r box && umask 077 && echo in > box/new");
        assert_eq!(as_user(NOBODY, NOBODY, || fs::read(root.join("box/new")).ok()), Some(b"in\n".to_vec()));
    }
}

/// A bad ACL value is refused (the kernel parses it before we see it) and
/// changes nothing.
#[test]
fn bad_acl_values_are_refused() {
    if !ready() {
        return;
    }
    let Some(m) = Mount::new(&["--allow-other"]) else { return };
    let f = m.p("f");
    fs::write(&f, b"").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    // Version 2, then a truncated entry.
    assert_eq!(errno(setxattr(&f, "system.posix_acl_access", &[2, 0, 0, 0, 1, 0, 6], 0)), libc::EINVAL);
    // USER_OBJ, a named USER, GROUP_OBJ, OTHER: no MASK.
    let mut v = vec![2, 0, 0, 0];
    for (tag, perm, id) in [(1u16, 6u16, u32::MAX), (2, 4, 65534), (4, 4, u32::MAX), (0x20, 0, u32::MAX)] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    assert_eq!(errno(setxattr(&f, "system.posix_acl_access", &v, 0)), libc::EINVAL);
    assert_eq!(errno(getxattr(&f, "system.posix_acl_access")), libc::ENODATA);
    assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o7777, 0o600);
}

/// An `O_TMPFILE` file linked into place inherits as `open(O_CREAT)` does,
/// on sectorfs as on tmpfs: the directory's default ACL (the umask
/// ignored) and a set-group-ID directory's group, for a caller of another
/// uid and gid. (sectorfs gave it the umask and the caller's group.)
#[test]
fn o_tmpfile_inherits_as_create() {
    if !ready() {
        return;
    }
    let Some(m) = Mount::new(&["--allow-other"]) else { return };
    let shm = shm();
    let mut outs = Vec::new();
    for root in [shm.path(), m.path.as_path()] {
        sh(
            root,
            "mkdir d plain; chgrp 100 d plain; chmod 2777 d plain
             setfacl -d -m u:65534:rwx,g::rx,o::- d",
        );
        for dir in ["d", "plain"] {
            let d = root.join(dir);
            as_user(NOBODY, NOBODY, || {
                let f = open_raw(&d, libc::O_TMPFILE | libc::O_WRONLY, 0o666).expect("O_TMPFILE");
                let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
                let src = cstr(Path::new(&format!("/proc/self/fd/{fd}")));
                let dst = cstr(&d.join("t"));
                // SAFETY: both paths are NUL-terminated and alive during the call.
                let r = unsafe {
                    libc::linkat(libc::AT_FDCWD, src.as_ptr(), libc::AT_FDCWD, dst.as_ptr(), libc::AT_SYMLINK_FOLLOW)
                };
                assert_eq!(r, 0, "linkat: {}", std::io::Error::last_os_error());
            });
        }
        outs.push(sh(root, "umask 022; getfacl -n d/t plain/t; stat -c '%n %a %u %g' d/t plain/t"));
    }
    assert!(outs[0].contains("user:65534:rwx") && outs[0].contains("d/t 660 65534 100"), "tmpfs:\n{}", outs[0]);
    assert_eq!(outs[1], outs[0], "sectorfs (left) against tmpfs (right)");
}
