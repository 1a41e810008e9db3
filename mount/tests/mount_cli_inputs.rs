//! Every `sectorfs` command-line input a user can get wrong, on the real
//! binary: one clear line on stderr, exit status 2 for a bad option value (as
//! clap does), 1 for an operation that failed, no daemon left behind and no
//! mount made; and the inputs that must work (a symlink to the mountpoint, a
//! tiny `--size`, a label the kernel shows).
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use common::*;

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Runs `mount DIR args…` on a fresh empty directory and expects a refusal
/// with exit status `code` and one line containing `want`; the directory
/// must not have been mounted.
fn refused(args: &[&str], code: i32, want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().to_str().unwrap();
    let mut all = vec!["mount", mp];
    all.extend_from_slice(args);
    let out = run(&all);
    let err = String::from_utf8_lossy(&out.stderr);
    if is_mounted(dir.path()) {
        let _ = umount2(dir.path(), libc::MNT_DETACH);
        panic!("{args:?} mounted; stderr: {err}");
    }
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line: {err:?}");
    assert!(!err.contains("EINVAL") && !err.contains("mount()"), "{args:?}: no raw mount(2) error: {err}");
}

#[test]
fn bad_option_values_are_one_line_and_exit_2() {
    if !fuse_available() {
        return;
    }
    refused(&["--threads", "100000"], 2, "--threads 100000: at most");
    refused(&["--threads", "0"], 2, "at least one worker thread");
    refused(&["--label", ""], 2, "--label must not be empty");
    refused(&["--label", &"x".repeat(5000)], 2, "--label is 5000 bytes long; at most 255");
    refused(&["--label", "a\tb"], 2, "control character");
    refused(&["--sector-size", "3K"], 2, "--sector-size 3 KiB: must be a power of two from 4K to 1M");
    refused(&["--sector-size", "2M"], 2, "--sector-size 2 MiB");
    refused(&["--max-files", "0"], 2, "--max-files 0: at least 1");
    refused(&["--max-files", "9223372036854775807"], 2, "--max-files 9223372036854775807: at most 18014398509481983");
    refused(&["--uid", "4294967295"], 2, "--uid 4294967295: not a valid id");
    refused(&["--gid", "4294967295"], 2, "--gid 4294967295: not a valid id");
    // Values clap itself refuses: also exit 2.
    for (args, want) in [
        (&["--size", "0"][..], "must be more than zero"),
        (&["--size", "12X"][..], "bad size unit"),
        (&["--size", "101%"][..], "out of range"),
        (&["--mode", "8"][..], "bad mode"),
        (&["--threads=-1"][..], "invalid value"),
        (&["--uid", "x"][..], "invalid value"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec!["mount", dir.path().to_str().unwrap()];
        all.extend_from_slice(args);
        let out = run(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!is_mounted(dir.path()));
    }
    // Through the mount.fuse3 helper form: a value that starts with '-'
    // reaches its option's check.
    for (opts, want) in [("size=-1", "invalid value '-1' for '--size"), ("mode=-7", "invalid value '-7' for '--mode")] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(&["ram", dir.path().to_str().unwrap(), "-o", opts]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{opts}: {err}");
        assert!(err.contains(want), "{opts}: {err}");
        assert!(!is_mounted(dir.path()));
    }
    // In the foreground too (the daemon's own check).
    refused(&["-f", "--threads", "100000"], 2, "--threads 100000");
    // A mountpoint problem is an operation failure: exit 1.
    let out = run(&["mount", "/nonexistent/sectorfs-mp"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_open_file_limit_bounds_threads() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["mount", dir.path().to_str().unwrap(), "--threads", "100"]);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit { rlim_cur: 100, rlim_max: 100 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!is_mounted(dir.path()));
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("at most 36 with this open-file limit (100"), "{err}");
}

#[test]
fn the_most_threads_allowed_mount_and_serve() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let max = (cores * 64).to_string();
    let Some(m) = Mount::background(&["--threads", &max, "--size", "16M"]) else { return };
    std::fs::write(m.p("f"), b"ok").unwrap();
    assert_eq!(std::fs::read(m.p("f")).unwrap(), b"ok");
}

#[test]
fn tiny_size_rounds_up_to_a_sector_and_df_shows_it() {
    let Some(m) = Mount::new(&["--size", "1K", "--sector-size", "64K"]) else { return };
    let (bsize, blocks, ..) = statvfs(&m.path).unwrap();
    assert_eq!(bsize * blocks, 64 << 10, "one 64 KiB sector, not 0");
    assert_eq!(m.stat("limit_bytes"), 64 << 10);
    std::fs::write(m.p("f"), vec![1u8; 64 << 10]).unwrap();
    // (Written and synced: a write-back cache may report the error only there.)
    let more = || -> std::io::Result<()> {
        let mut g = std::fs::File::create(m.p("g"))?;
        g.write_all(&[1u8; 8 << 10])?;
        g.sync_all()
    };
    assert_eq!(errno(more()), libc::ENOSPC, "the limit is one sector");
    let Some(m) = Mount::new(&["--size", "100K", "--sector-size", "4K"]) else { return };
    let (bsize, blocks, ..) = statvfs(&m.path).unwrap();
    assert_eq!(bsize * blocks, 100 << 10, "a multiple of the sector size stays exact");
}

#[test]
fn label_is_what_mount_and_df_show() {
    let label = "scratch disk, fast";
    let long = "L".repeat(255);
    for l in [label, long.as_str()] {
        let Some(m) = Mount::new(&["--label", l]) else { return };
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info.lines().find(|x| x.contains(m.path.to_str().unwrap())).unwrap().to_string();
        let shown = l.replace(' ', "\\040");
        assert!(line.contains(&format!(" - fuse.sectorfs {shown} ")), "{line}");
    }
}

#[test]
fn unmount_follows_a_symlink_to_the_mountpoint() {
    let Some(mut m) = Mount::background(&["--size", "16M"]) else { return };
    let links = tempfile::tempdir().unwrap();
    let direct = links.path().join("direct");
    std::os::unix::fs::symlink(&m.path, &direct).unwrap();
    // A relative link to that link.
    let chained = links.path().join("chained");
    std::os::unix::fs::symlink("direct", &chained).unwrap();
    let out = run(&["unmount", chained.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!m.mounted());
    assert!(m.wait_exit(std::time::Duration::from_secs(10)));
    let out = run(&["unmount", direct.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("is not mounted"), "{err}");
}

#[test]
fn unmount_by_another_user_says_who_may() {
    if !is_root() {
        eprintln!("SKIP: needs root to mount as one user and unmount as another");
        return;
    }
    let Some(m) = Mount::background(&["--size", "16M"]) else { return };
    let out = Command::new(BIN).args(["unmount", m.path.to_str().unwrap()]).uid(65534).gid(65534).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("it was mounted by root; only that user or root can unmount it"), "{err}");
    assert!(!err.contains("mtab"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(m.mounted(), "still mounted");
}
