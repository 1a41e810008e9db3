//! Linux: one daemon per image (`--image FILE`).
//!
//! Two daemons must not share an image: each would save its own disk over
//! the other's. And a plain `umount` returns before the daemon's final save
//! (`daemon.rs`, "Mount life cycle", 4), so `umount X; sectorfs mount X
//! --image F` would load F as it was before that save, and the new disk's
//! first save would then lose what the old one had just written, for good.
//!
//! A lock file beside the image, `.NAME.sectorfs-lock`, carries two
//! open-file-description locks (`F_OFD_SETLK`: they belong to the daemon's
//! open file, so they go when it exits, however it exits):
//! * byte 0, *mounted*: taken before the image is read, let go when the
//!   disk is unmounted. A mount that finds it taken is refused.
//! * byte 1, *owned*: taken before the image is read, let go when the
//!   daemon exits, after its last save. A mount that finds it taken waits
//!   for it, and says so.
//!
//! The file holds its holder's pid and mountpoint, for those messages. The
//! daemon removes it as it exits; whoever locked a file that is no longer
//! at that path (removed or replaced while it waited) lets it go and starts
//! again with the new one.
//!
//! Where no lock file can be made because the image's directory cannot be
//! written (a read-only file system, a directory without write permission)
//! the disk is mounted without one: it cannot save there either. A lock
//! file that exists but cannot be opened (another user's) refuses the mount.
//! A lock file deleted by hand (or by a cleaner of `/tmp`) while held lets
//! a second disk in: keep images where nothing removes files behind you.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

/// The byte of the lock file that a mounted disk holds.
const MOUNTED: i64 = 0;
/// The byte of the lock file that a live daemon holds.
const OWNED: i64 = 1;
/// How long a mount waits for byte 0 of a daemon whose mountpoint is no
/// longer mounted here (a `umount` just now: the daemon lets go of it once
/// its workers have ended).
const UNMOUNT_GRACE: Duration = Duration::from_secs(if cfg!(test) { 1 } else { 10 });

/// The image's lock, held by its daemon (module doc).
#[derive(Debug)]
pub(crate) struct ImageLock {
    file: File,
    path: PathBuf,
}

/// `dir/.NAME.sectorfs-lock` for `image` = `dir/NAME`.
pub(crate) fn lock_path(image: &Path) -> PathBuf {
    crate::save::side_path(image, "lock")
}

impl ImageLock {
    /// Takes `image`'s lock for a disk to be mounted at `mountpoint`:
    /// refused while another disk with this image is mounted, waits while
    /// another daemon is still saving it. `None`: no lock file can be made
    /// in the image's directory.
    ///
    /// # Errors
    /// The image is in use by a mounted disk, or the lock file cannot be
    /// opened or locked.
    pub(crate) fn take(image: &Path, mountpoint: &Path) -> Result<Option<ImageLock>> {
        let path = lock_path(image);
        let mut said = false;
        loop {
            // Checked before the open too, so that nothing but a regular
            // file (a device planted there, say) is ever opened.
            let not_a_file =
                || anyhow!("{} is not a regular file: it is the lock of the image {}", path.display(), image.display());
            if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
                return Err(not_a_file());
            }
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                // Not through a symlink; and a FIFO planted there must not
                // block the open (it is refused just below).
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if unwritable_dir(&e, &path) => {
                    log::warn!(
                        "no lock for the image {} ({}: {e}); it cannot be saved there",
                        image.display(),
                        path.display()
                    );
                    return Ok(None);
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot open {}, the lock of the image {}", path.display(), image.display())
                    })
                }
            };
            if !file.metadata().is_ok_and(|m| m.is_file()) {
                return Err(not_a_file());
            }
            match take_mounted(&file, image)? {
                Mounted::Taken => {}
                Mounted::InUse => bail!(
                    "the image {} is in use by {}: unmount that disk first, or give this one another image",
                    image.display(),
                    holder(&file)
                ),
                Mounted::Lingering => bail!(
                    "the image {} is still held by {}, which was unmounted while files on it were open (a lazy \
                     unmount): close them, or give this disk another image",
                    image.display(),
                    holder(&file)
                ),
            }
            // Who had it (for the message below), then who has it now (for
            // the messages of other mounts).
            let last = holder(&file);
            note(&file, mountpoint);
            if !set(&file, OWNED, libc::F_WRLCK, false)? {
                if !said {
                    // Before the daemon detaches, this reaches the caller.
                    let _ = writeln!(
                        io::stderr(),
                        "sectorfs: waiting for {last} to finish saving the image {}",
                        image.display()
                    );
                    said = true;
                }
                set(&file, OWNED, libc::F_WRLCK, true)?;
            }
            if !same_file(&file, &path) {
                continue; // removed (its daemon exited) or replaced: again
            }
            return Ok(Some(ImageLock { file, path }));
        }
    }

    /// The disk is unmounted: another may mount this image (after waiting
    /// for this daemon's last save).
    pub(crate) fn unmounted(&self) {
        if let Err(e) = set(&self.file, MOUNTED, libc::F_UNLCK, false) {
            log::warn!("cannot unlock {}: {e}", self.path.display());
        }
    }
}

impl Drop for ImageLock {
    fn drop(&mut self) {
        // Still ours (we hold byte 1 and nobody replaces a held file): the
        // next daemon makes it again. The locks go with the descriptor.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Who holds `image` (byte 1: a live daemon whose image it is), if anyone
/// but this process: `sectorfs save` to another disk's image would replace
/// that disk's image under it. Never creates a lock file.
pub(crate) fn held_by(image: &Path) -> Option<String> {
    let path = lock_path(image);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .ok()?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: OWNED,
        l_len: 1,
        l_pid: 0,
    };
    fcntl(&file, FcntlArg::F_OFD_GETLK(&mut fl)).ok()?;
    if fl.l_type == libc::F_UNLCK as libc::c_short || noted(&file).is_some_and(|(pid, _)| pid == std::process::id()) {
        return None;
    }
    Some(holder(&file))
}

/// What became of byte 0.
enum Mounted {
    Taken,
    /// Held by a disk mounted here (or somewhere we cannot tell).
    InUse,
    /// Still held after [`UNMOUNT_GRACE`] by a daemon whose mountpoint is no
    /// longer mounted here: detached lazily, with files still open.
    Lingering,
}

/// Takes byte 0. If another daemon holds it but the mountpoint it noted is
/// no longer mounted here, waits for it (and says so) up to
/// [`UNMOUNT_GRACE`].
fn take_mounted(file: &File, image: &Path) -> Result<Mounted> {
    let start = Instant::now();
    let mut said = false;
    loop {
        if set(file, MOUNTED, libc::F_WRLCK, false)? {
            return Ok(Mounted::Taken);
        }
        if noted(file).is_none_or(|(_, mp)| is_mounted(&mp)) {
            return Ok(Mounted::InUse);
        }
        if start.elapsed() > UNMOUNT_GRACE {
            return Ok(Mounted::Lingering);
        }
        if !said && start.elapsed() > Duration::from_millis(500) {
            let _ = writeln!(
                io::stderr(),
                "sectorfs: waiting for {}, unmounted, to let go of the image {}",
                holder(file),
                image.display()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `mp` is a mountpoint in this mount namespace (if in doubt, with
/// no `/proc`: yes).
fn is_mounted(mp: &Path) -> bool {
    !Path::new("/proc/self/mountinfo").exists() || crate::daemon::mount_entry(mp).is_some()
}

/// Whether opening `path` failed because its directory cannot be written
/// (not because a lock file is there that is not ours to open).
fn unwritable_dir(e: &io::Error, path: &Path) -> bool {
    match e.raw_os_error() {
        Some(libc::EROFS) => true,
        Some(libc::EACCES | libc::EPERM) => std::fs::symlink_metadata(path).is_err(),
        _ => false,
    }
}

/// Writes who holds the lock (for the messages of other mounts).
fn note(file: &File, mountpoint: &Path) {
    let text = format!("{} {}\n", std::process::id(), mountpoint.display());
    let _ = file.set_len(0);
    let _ = file.write_all_at(text.as_bytes(), 0);
}

/// The pid and mountpoint [`note`] wrote.
fn noted(file: &File) -> Option<(u32, PathBuf)> {
    let mut buf = [0u8; 4096];
    let n = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let (pid, mp) = text.strip_suffix('\n')?.split_once(' ')?;
    Some((pid.parse().ok()?, PathBuf::from(mp)))
}

/// "the sectorfs disk at MP (pid N)", from the lock file (read again a few
/// times if it is being rewritten).
fn holder(file: &File) -> String {
    let mut note = noted(file);
    for _ in 0..5 {
        if note.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        note = noted(file);
    }
    match note {
        Some((pid, mp)) => format!("the sectorfs disk at {} (pid {pid})", mp.display()),
        None => "another sectorfs daemon".into(),
    }
}

/// Sets (`F_WRLCK`) or clears (`F_UNLCK`) the lock on byte `byte`; with
/// `wait`, waits for a conflicting lock to go. False: taken by another.
fn set(file: &File, byte: i64, kind: libc::c_int, wait: bool) -> Result<bool> {
    let fl = libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte,
        l_len: 1,
        l_pid: 0,
    };
    loop {
        let r = if wait { fcntl(file, FcntlArg::F_OFD_SETLKW(&fl)) } else { fcntl(file, FcntlArg::F_OFD_SETLK(&fl)) };
        return match r {
            Ok(_) => Ok(true),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN | Errno::EACCES) if !wait => Ok(false),
            Err(e) => Err(io::Error::from(e)).context("cannot lock the image's lock file"),
        };
    }
}

/// Whether `path` is (still) the file open as `file`.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_daemon_per_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        // Noted at "/", which is mounted: a second disk is refused at once.
        let a = ImageLock::take(&img, Path::new("/")).unwrap().expect("a lock");
        assert_eq!(std::fs::read_to_string(lock_path(&img)).unwrap(), format!("{} /\n", std::process::id()));
        // Another open file description: another daemon, as far as the
        // kernel's OFD locks go.
        let err = ImageLock::take(&img, Path::new("/mnt/b")).unwrap_err().to_string();
        assert!(err.contains("in use by the sectorfs disk at / (pid"), "{err}");
        // A save sees whose image it is, but not its own daemon's (this
        // process noted itself), and nobody's once it is free.
        assert_eq!(held_by(&img), None);
        std::fs::write(lock_path(&img), "1 /mnt/other\n").unwrap();
        assert!(
            held_by(&img).is_some_and(|h| h.starts_with("the sectorfs disk at /mnt/other (pid 1)")),
            "{:?}",
            held_by(&img)
        );
        drop(a);
        assert!(!lock_path(&img).exists(), "the lock file stays behind");
        assert_eq!(held_by(&img), None);
        let b = ImageLock::take(&img, Path::new("/mnt/b")).unwrap().expect("b lock");
        drop(b);
    }

    #[test]
    fn a_lock_file_that_is_not_a_file_or_not_ours_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fifo.img");
        let c = std::ffi::CString::new(lock_path(&img).into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = ImageLock::take(&img, Path::new("/mnt/a")).unwrap_err().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
        // A directory that cannot be written: no lock, no error.
        let ro = tempfile::tempdir().unwrap();
        let img = ro.path().join("ro.img");
        std::fs::set_permissions(ro.path(), std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(ImageLock::take(&img, Path::new("/mnt/a")).unwrap().is_none());
        }
        std::fs::set_permissions(ro.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_holder_no_longer_mounted_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        // Mounted at a path that is no mountpoint: as after a `umount`,
        // before the daemon's workers end.
        let a = ImageLock::take(&img, &dir.path().join("nowhere")).unwrap().expect("a lock");
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            a.unmounted();
            a
        });
        let img2 = img.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let b = std::thread::spawn(move || {
            let r = ImageLock::take(&img2, Path::new("/mnt/b")).map(|l| l.is_some());
            tx.send(()).unwrap();
            r
        });
        let a = t.join().unwrap();
        // Byte 0 is free now; byte 1 waits for `a` to go.
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "did not wait for the save");
        drop(a);
        assert!(b.join().unwrap().unwrap());
        // A holder whose mountpoint is mounted is refused at once.
        let c = ImageLock::take(&img, Path::new("/")).unwrap().expect("c lock");
        let start = std::time::Instant::now();
        assert!(ImageLock::take(&img, Path::new("/mnt/d")).is_err());
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        drop(c);
    }

    #[test]
    fn a_disk_detached_with_files_open_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("lazy.img");
        // Noted at a path that is not mounted, and never lets go of byte 0:
        // a lazy unmount whose files stay open.
        let a = ImageLock::take(&img, &dir.path().join("gone")).unwrap().expect("a lock");
        let start = std::time::Instant::now();
        let err = ImageLock::take(&img, Path::new("/mnt/b")).unwrap_err().to_string();
        assert!(err.contains("was unmounted while files on it were open"), "{err}");
        assert!(start.elapsed() >= UNMOUNT_GRACE, "it did not wait");
        // Not a regular file: refused before it is opened.
        drop(a);
        std::fs::create_dir(lock_path(&img)).unwrap();
        let err = ImageLock::take(&img, Path::new("/mnt/b")).unwrap_err().to_string();
        assert!(err.contains("is not a regular file"), "{err}");
    }

    #[test]
    fn a_new_disk_waits_for_the_last_save() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let a = ImageLock::take(&img, Path::new("/mnt/a")).unwrap().expect("a lock");
        a.unmounted();
        let (tx, rx) = std::sync::mpsc::channel();
        let img2 = img.clone();
        let t = std::thread::spawn(move || {
            let b = ImageLock::take(&img2, Path::new("/mnt/b")).unwrap().expect("b lock");
            tx.send(()).unwrap();
            b
        });
        // Still saving: the new disk waits.
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "did not wait");
        drop(a);
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("b never got the lock");
        let b = t.join().unwrap();
        assert!(same_file(&b.file, &lock_path(&img)), "b holds a removed file");
    }
}
