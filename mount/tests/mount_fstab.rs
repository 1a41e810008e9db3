//! `mount -t fuse.sectorfs` and fstab lines (`mount -T FILE`), through the
//! real mount(8) and `mount.fuse3` (issue 21).
//!
//! mount(8) runs its helpers without `PATH`, so `mount.fuse3`'s `sh -c
//! sectorfs ...` finds the program in the shell's default path
//! (`/usr/local/bin`, ...), where an installed sectorfs lives. The test runs
//! in a private mount namespace (`unshare -m`) in which a temporary directory
//! holding a `sectorfs` link to the binary under test is bound over
//! `/usr/local/bin`: nothing outside the namespace changes, and every mount
//! it makes is unmounted by the script (on failure too, by its trap) and
//! disappears with the namespace.
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn mount_t_fuse_sectorfs_and_an_fstab_line() {
    if !is_root() || !fuse_available() {
        eprintln!("SKIP: needs root and FUSE");
        return;
    }
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        eprintln!("SKIP: mount.fuse3 (Debian: fuse3) is missing");
        return;
    }
    let tmp = tempfile::Builder::new().prefix("sectorfs-fstab-").tempdir().unwrap();
    let bindir = tmp.path().join("bin");
    let mp = tmp.path().join("mp");
    std::fs::create_dir(&bindir).unwrap();
    std::fs::create_dir(&mp).unwrap();
    std::os::unix::fs::symlink(BIN, bindir.join("sectorfs")).unwrap();
    let fstab = tmp.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# a throwaway fstab\nbuild {} fuse.sectorfs size=32M,mode=1777,nodev,x-systemd.automount 0 0\n",
            mp.display()
        ),
    )
    .unwrap();
    let script = r#"
set -eu
mount --bind "$BINDIR" /usr/local/bin
trap 'umount "$MP" 2>/dev/null || true' EXIT

mount -t fuse.sectorfs ramdisk "$MP" -o size=64M,nr_inodes=1k,mode=700,uid=65534,gid=65534,nosuid
echo "mounts: $(grep " $MP " /proc/self/mounts)"
echo "root: $(stat -c '%a %u %g' "$MP")"
echo "size: $(df -B1 --output=size "$MP" | tail -1 | tr -d ' ')"
echo "inodes: $(df --output=itotal "$MP" | tail -1 | tr -d ' ')"
echo hello > "$MP/x"
echo "read: $(cat "$MP/x")"
# remount: the kernel's flags change in place, the disk stays.
mount -o remount,ro "$MP"
echo "ro mounts: $(grep " $MP " /proc/self/mounts)"
if echo more > "$MP/y" 2>/dev/null; then echo "ro write: written"; else echo "ro write: refused"; fi
mount -o remount,rw "$MP"
echo more > "$MP/y"
echo "rw read: $(cat "$MP/x") $(cat "$MP/y")"
if mount -o remount,bogus "$MP" 2>"$TMP/rerr"; then echo "bad remount: done"; else echo "bad remount: $(cat "$TMP/rerr")"; fi
umount "$MP"
echo "after umount: $(grep -c " $MP " /proc/self/mounts || true)"

mount -T "$FSTAB" "$MP"
echo "fstab mounts: $(grep " $MP " /proc/self/mounts)"
echo "fstab root: $(stat -c '%a' "$MP")"
echo "fstab size: $(df -B1 --output=size "$MP" | tail -1 | tr -d ' ')"
umount "$MP"

if mount -t fuse.sectorfs ramdisk "$MP" -o size=64M,bogus=1 2>"$TMP/err"; then
    echo "bad option: mounted"; umount "$MP"
else
    echo "bad option: $(cat "$TMP/err")"
fi
"#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("BINDIR", &bindir)
        .env("MP", &mp)
        .env("FSTAB", &fstab)
        .env("TMP", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(out.status.success(), "the script failed:\n{stdout}\n{stderr}");
    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key:?} in:\n{stdout}"))
            .trim()
            .to_string()
    };
    let mounts = line("mounts:");
    assert!(mounts.starts_with("ramdisk "), "the source names the disk: {mounts}");
    // (fuser 0.18's mount(2) path does not set the `fuse.sectorfs` subtype.)
    assert!(mounts.contains(" fuse.sectorfs ") || mounts.contains(" fuse "), "{mounts}");
    // nosuid as asked; dev as mount.fuse3 passes it by default.
    assert!(mounts.contains("nosuid") && !mounts.contains("nodev"), "{mounts}");
    assert_eq!(line("root:"), "700 65534 65534");
    assert_eq!(line("size:"), (64u64 << 20).to_string());
    assert_eq!(line("inodes:"), "1024");
    assert_eq!(line("read:"), "hello");
    let ro = line("ro mounts:");
    assert!(ro.contains(" ro,") && ro.contains("nosuid"), "remounted read-only, nosuid kept: {ro}");
    assert_eq!(line("ro write:"), "refused");
    assert_eq!(line("rw read:"), "hello more");
    let bad = line("bad remount:");
    assert!(bad.contains("bogus") && bad.contains("unknown mount option"), "{bad}");
    assert_eq!(line("after umount:"), "0");
    let fm = line("fstab mounts:");
    assert!(fm.starts_with("build ") && fm.contains("nodev"), "{fm}");
    assert_eq!(line("fstab root:"), "1777");
    assert_eq!(line("fstab size:"), (32u64 << 20).to_string());
    let bad = line("bad option:");
    assert!(bad.contains("bogus=1") && bad.contains("unknown mount option"), "{bad}");
    // Nothing left behind: the namespace is gone, and no daemon serves.
    assert!(!is_mounted(&mp));
}
