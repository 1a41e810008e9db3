//! The `sectorfs` command line on real mounts: backgrounding, readiness,
//! mountpoint errors, stats, unmount, signals.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn help_has_examples() {
    let (ok, out, _) = run(&["--help"]);
    assert!(ok && out.contains("Examples:") && out.contains("sectorfs mount"), "{out}");
    let (ok, out, _) = run(&["mount", "--help"]);
    assert!(ok && out.contains("--size") && out.contains("50%") && out.contains("Examples:"), "{out}");
    let (ok, _, err) = run(&["mount", "/tmp", "--size", "lots"]);
    assert!(!ok && err.contains("bad size"), "{err}");
}

#[test]
fn background_mount_is_ready_then_unmounts() {
    let Some(mut m) = Mount::background(&["--size", "64M", "--label", "testlabel"]) else { return };
    assert!(m.mounted());
    let pid = m.pid();
    assert_ne!(pid as u32, std::process::id());
    fs::write(m.p("f"), b"x").unwrap();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info.lines().find(|l| l.contains(m.path.to_str().unwrap())).unwrap().to_string();
    assert!(line.contains(" - fuse.sectorfs testlabel "), "{line}");
    assert!(line.contains("default_permissions"), "{line}");
    // stats, as a table and as JSON.
    let (ok, out, err) = run(&["stats", m.path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("limit") && out.contains("64 MiB"), "{out}");
    let (ok, out, _) = run(&["stats", m.path.to_str().unwrap(), "--json"]);
    assert!(ok);
    assert_eq!(json_field(&out, "limit_bytes"), 64 << 20);
    assert_eq!(json_field(&out, "files"), 2);
    assert_eq!(json_field(&out, "used_bytes"), 1);
    // The same mountpoint cannot be mounted twice.
    let (ok, _, err) = run(&["mount", m.path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("already mounted") && err.lines().count() == 1, "{err}");
    // unmount returns once the daemon is gone.
    let (ok, _, err) = run(&["unmount", m.path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(!m.mounted());
    assert!(m.wait_exit(Duration::from_secs(10)), "daemon still running after unmount");
    let (ok, _, err) = run(&["unmount", m.path.to_str().unwrap()]);
    assert!(!ok && err.contains("not mounted"), "{err}");
}

/// A limit above the memory this process may use is allowed, as on tmpfs,
/// with a warning: the daemon holds the disk, and the OOM killer would end
/// it and the disk (a probe filled such a mount in a small memory cgroup).
#[test]
fn a_limit_above_memory_is_warned_about() {
    if !fuse_available() || !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let _guard = Detach(t.path().canonicalize().unwrap());
    let (ok, _, err) = run(&["mount", t.path().to_str().unwrap(), "--size", "100T"]);
    assert!(ok, "{err}");
    assert!(err.contains("warning: the limit (100 TiB) is more than the memory") && err.contains("OOM"), "{err}");
    let (ok, _, err) = run(&["unmount", t.path().to_str().unwrap()]);
    assert!(ok, "{err}");
    // Within memory: no warning.
    let (ok, _, err) = run(&["mount", t.path().to_str().unwrap(), "--size", "64M"]);
    assert!(ok && err.is_empty(), "{err}");
}

#[test]
fn bad_mountpoints_fail_with_one_line() {
    if !fuse_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("missing");
    let (ok, _, err) = run(&["mount", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("does not exist") && err.trim().lines().count() == 1, "{err}");
    fs::write(t.path().join("file"), b"x").unwrap();
    let (ok, _, err) = run(&["mount", t.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("not empty") && err.trim().lines().count() == 1, "{err}");
    let (ok, _, err) = run(&["mount", t.path().join("file").to_str().unwrap(), "-f"]);
    assert!(!ok && err.contains("not a directory"), "{err}");
    let (ok, _, err) = run(&["mount", "/dev/shm"]);
    assert!(!ok && (err.contains("already mounted") || err.contains("not empty")), "{err}");
    let (ok, _, err) = run(&["unmount", t.path().to_str().unwrap()]);
    assert!(!ok && err.contains("not mounted"), "{err}");
    let (ok, _, err) = run(&["stats", t.path().to_str().unwrap()]);
    assert!(!ok && err.contains("not a sectorfs mount"), "{err}");
    let d = t.path().join("d");
    fs::create_dir(&d).unwrap();
    let (ok, _, err) = run(&["mount", d.to_str().unwrap(), "--sector-size", "3000"]);
    assert!(!ok && err.contains("sector-size"), "{err}");
    assert!(!is_mounted(&d));
}

#[test]
fn signals_unmount_cleanly() {
    // SIGQUIT (Ctrl-\ on a foreground mount), SIGPWR and SIGXCPU killed the
    // daemon before, leaving a dead mount and no final save.
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGPWR, libc::SIGXCPU] {
        let Some(mut m) = Mount::new(&["--size", "16M"]) else { return };
        fs::write(m.p("f"), b"x").unwrap();
        // SAFETY: kill has no memory preconditions; the pid is our child.
        assert_eq!(unsafe { libc::kill(m.pid(), sig) }, 0);
        assert!(m.wait_exit(Duration::from_secs(20)), "daemon did not exit on signal {sig}");
        assert!(m.exit_status().unwrap().success(), "exit status {:?}", m.exit_status());
        assert!(!m.mounted(), "still mounted after signal {sig}");
    }
}

/// Signals nothing sends a RAM disk on purpose, whose default action would
/// kill the daemon (and lose the disk), leave it serving.
#[test]
fn stray_signals_leave_the_disk_mounted() {
    let Some(m) = Mount::new(&["--size", "16M"]) else { return };
    fs::write(m.p("f"), b"kept").unwrap();
    for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM, libc::SIGVTALRM, libc::SIGPROF, libc::SIGIO, libc::SIGXFSZ]
    {
        // SAFETY: kill has no memory preconditions; the pid is our child.
        assert_eq!(unsafe { libc::kill(m.pid(), sig) }, 0);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!process_gone(m.pid()), "a stray signal killed the daemon");
    assert!(m.mounted());
    assert_eq!(fs::read(m.p("f")).unwrap(), b"kept");
}

#[test]
fn busy_mount_detaches_on_signal() {
    let Some(mut m) = Mount::new(&["--size", "16M"]) else { return };
    fs::create_dir(m.p("d")).unwrap();
    // Keep the mount busy with an open file.
    let f = fs::File::create(m.p("d/open")).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(m.pid(), libc::SIGTERM) }, 0);
    // Detached at once (no longer in the mount table); the daemon serves
    // the open file until it is closed.
    let mut detached = false;
    for _ in 0..2000 {
        if !m.mounted() {
            detached = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(detached, "busy mount not detached");
    drop(f);
    assert!(m.wait_exit(Duration::from_secs(20)), "daemon did not exit after the last user left");
}

/// A daemon that does not answer (stopped here; a hung one is the same to
/// the kernel) blocks every request to its mount. `unmount --force` takes
/// the mount away without asking it: on the classic transport the waiting
/// request fails at once; on io_uring the daemon had already taken it, and
/// it fails once the daemon runs again, which then exits.
#[test]
fn force_unmounts_a_daemon_that_does_not_answer() {
    if !is_root() {
        return;
    }
    for transport in ["classic", "uring"] {
        let Some(mut m) = Mount::new(&["--size", "16M", "--transport", transport]) else { return };
        fs::write(m.p("f"), b"x").unwrap();
        let resume = Stopped::new(m.pid());
        let mut reader = Command::new("cat").arg(m.p("f")).stdout(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(reader.try_wait().unwrap().is_none(), "{transport}: the read did not wait for the stopped daemon");
        // On io_uring, through a symlink to the mount point: followed
        // without looking at the mount point itself.
        let links = tempfile::tempdir().unwrap();
        let link = links.path().join("disk");
        std::os::unix::fs::symlink(&m.path, &link).unwrap();
        let target = if transport == "uring" { link.as_path() } else { m.path.as_path() };
        let mut un = Command::new(BIN).arg("unmount").arg("--force").arg(target).spawn().unwrap();
        let done = (0..1000).find_map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            un.try_wait().unwrap()
        });
        assert!(done.is_some_and(|s| s.success()), "{transport}: unmount --force: {done:?}");
        assert!(!m.mounted(), "{transport}: still mounted");
        if transport == "classic" {
            let r = (0..500).find_map(|_| {
                std::thread::sleep(Duration::from_millis(10));
                reader.try_wait().unwrap()
            });
            assert!(r.is_some_and(|s| !s.success()), "{transport}: the waiting read did not fail: {r:?}");
        }
        drop(resume);
        let r = reader.wait().unwrap();
        assert!(!r.success(), "{transport}: the read got data from an aborted mount");
        assert!(m.wait_exit(Duration::from_secs(20)), "{transport}: the daemon did not exit");
    }
}

/// A stopped daemon: `sectorfs stats` (once and `--watch`) and `sectorfs
/// unmount` say that it does not answer, name `unmount --force`, and exit
/// non-zero after their 10 s, instead of waiting for it forever (they did);
/// once it runs again the disk unmounts as usual.
#[test]
fn stats_and_unmount_say_when_the_daemon_does_not_answer() {
    let Some(m) = Mount::new(&["--size", "16M"]) else { return };
    let resume = Stopped::new(m.pid());
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg(&m.path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let kids = [
        ("stats", run(&["stats"])),
        ("stats --watch", run(&["stats", "--watch", "1"])),
        ("unmount", run(&["unmount"])),
    ];
    for (what, mut k) in kids {
        // A bound on the wait, so that a hang fails instead of blocking.
        let done = (0..3000).find_map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            k.try_wait().unwrap()
        });
        if done.is_none() {
            let _ = k.kill();
        }
        let out = k.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(done.is_some_and(|s| !s.success()), "{what}: {done:?} {err}");
        assert!(err.contains("did not answer within 10 s") && err.contains("unmount --force"), "{what}: {err}");
    }
    assert!(m.mounted(), "a daemon that does not answer is not unmounted without --force");
    drop(resume);
    let out = Command::new(BIN).arg("stats").arg(&m.path).output().unwrap();
    assert!(out.status.success(), "stats once the daemon runs again: {out:?}");
    let out = Command::new(BIN).arg("unmount").arg(&m.path).output().unwrap();
    assert!(out.status.success() && !m.mounted(), "unmount once the daemon runs again: {out:?}");
}

/// A daemon stopped with SIGSTOP (every one of its threads: `kill` returns
/// once one thread is signalled and the others stop when that one handles
/// it, and until all have, one could still answer), run again with SIGCONT
/// when dropped, whatever happens, so nothing stays blocked behind it.
struct Stopped(i32);

impl Stopped {
    fn new(pid: i32) -> Stopped {
        let s = Stopped(pid);
        // SAFETY: kill has no memory preconditions; `pid` is our child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        assert!(all_threads_stopped(pid), "the daemon did not stop");
        s
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Waits (up to 10 s) until every thread of `pid` is in the stopped state.
fn all_threads_stopped(pid: i32) -> bool {
    let stopped = || {
        fs::read_dir(format!("/proc/{pid}/task")).unwrap().all(|t| {
            let stat = fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
            // The state follows the command name's closing parenthesis.
            matches!(stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()), Some('T' | 't'))
        })
    };
    (0..1000).any(|_| {
        stopped() || {
            std::thread::sleep(Duration::from_millis(10));
            false
        }
    })
}

/// `unmount` (with or without `--force`) takes down sectorfs mounts only:
/// another file system's mount point is refused with one line and stays
/// mounted.
#[test]
fn unmount_refuses_other_file_systems() {
    if !is_root() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("sectorfs-test-tmpfs-").tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1M", "tmpfs", &path]).status().unwrap().success();
    if !ok {
        return;
    }
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(path.clone());
    let mounted = || fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&format!(" {path} "));
    for args in [vec!["unmount", path.as_str()], vec!["unmount", "--force", path.as_str()]] {
        let (ok, _, err) = run(&args);
        assert!(!ok && err.contains("is not a sectorfs mount (it is tmpfs)"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(mounted(), "{args:?} unmounted a tmpfs");
    }
}

#[test]
fn foreground_mount_ends_on_external_umount() {
    let Some(mut m) = Mount::new(&["--threads", "2"]) else { return };
    fs::write(m.p("f"), b"x").unwrap();
    let (ok, _, err) = run(&["umount", m.path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(m.wait_exit(Duration::from_secs(20)));
    assert!(m.exit_status().unwrap().success());
    assert!(!m.mounted());
    assert_eq!(fs::read_dir(&m.path).unwrap().count(), 0, "the directory under the mount is untouched");
}

/// A crash of the daemon (here SIGKILL, nothing cleaned up): the file system
/// is gone with it (RAM), the mountpoint answers `ENOTCONN` instead of
/// hanging, and `sectorfs unmount` clears the dead mount.
#[test]
fn killed_daemon_leaves_enotconn_until_unmounted() {
    let Some(mut m) = Mount::new(&["--size", "16M"]) else { return };
    fs::write(m.p("f"), b"acknowledged").unwrap();
    // SAFETY: kill has no memory preconditions; the pid is our child.
    assert_eq!(unsafe { libc::kill(m.pid(), libc::SIGKILL) }, 0);
    assert!(m.wait_exit(Duration::from_secs(20)), "daemon survived SIGKILL");
    assert!(m.mounted(), "the kernel keeps the dead mount until it is unmounted");
    // On the io_uring transport the kernel tears the rings down just after
    // the process is gone: a request caught in that moment ends with
    // ECONNABORTED (or ECANCELED, if it was handed to the dead ring); from
    // then on every one gets ENOTCONN.
    let mut e = errno(fs::metadata(&m.path));
    for _ in 0..200 {
        if e != libc::ECONNABORTED && e != libc::ECANCELED {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        e = errno(fs::metadata(&m.path));
    }
    assert_eq!(e, libc::ENOTCONN);
    assert_eq!(errno(fs::read(m.p("f"))), libc::ENOTCONN, "the data died with the daemon");
    let (ok, _, err) = run(&["unmount", m.path.to_str().unwrap()]);
    assert!(ok, "unmount of a dead mount: {err}");
    assert!(!m.mounted());
}
