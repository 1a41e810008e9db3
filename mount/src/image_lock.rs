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
//! Where no lock file can be made (the image's directory is read-only) the
//! disk is mounted without one: it cannot save there either.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};

/// The byte of the lock file that a mounted disk holds.
const MOUNTED: i64 = 0;
/// The byte of the lock file that a live daemon holds.
const OWNED: i64 = 1;

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
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS)) => {
                    log::warn!(
                        "no lock for the image {} ({}: {e}); it cannot be saved there",
                        image.display(),
                        path.display()
                    );
                    return Ok(None);
                }
                Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
            };
            if !set(&file, MOUNTED, libc::F_WRLCK, false)? {
                bail!(
                    "the image {} is in use by {}: unmount that disk first, or give this one another image",
                    image.display(),
                    holder(&file)
                );
            }
            if !set(&file, OWNED, libc::F_WRLCK, false)? {
                if !said {
                    // Before the daemon detaches, this reaches the caller.
                    let _ = writeln!(
                        io::stderr(),
                        "sectorfs: waiting for {} to finish saving the image {}",
                        holder(&file),
                        image.display()
                    );
                    said = true;
                }
                set(&file, OWNED, libc::F_WRLCK, true)?;
            }
            if !same_file(&file, &path) {
                continue; // removed (its daemon exited) or replaced: again
            }
            let mut lock = ImageLock { file, path };
            lock.note(mountpoint);
            return Ok(Some(lock));
        }
    }

    /// Writes who holds the lock (for the messages of other mounts).
    fn note(&mut self, mountpoint: &Path) {
        let text = format!("{} {}\n", std::process::id(), mountpoint.display());
        let _ = self.file.set_len(0);
        let _ = std::os::unix::fs::FileExt::write_all_at(&self.file, text.as_bytes(), 0);
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

/// "the disk at MP (pid N)", from the lock file.
fn holder(mut file: &File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim_end().split_once(' ') {
        Some((pid, mp)) if pid.parse::<u32>().is_ok() => format!("the sectorfs disk at {mp} (pid {pid})"),
        _ => "another sectorfs daemon".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_daemon_per_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let a = ImageLock::take(&img, Path::new("/mnt/a")).unwrap().expect("a lock");
        assert_eq!(std::fs::read_to_string(lock_path(&img)).unwrap(), format!("{} /mnt/a\n", std::process::id()));
        // Another open file description: another daemon, as far as the
        // kernel's OFD locks go.
        let err = ImageLock::take(&img, Path::new("/mnt/b")).unwrap_err().to_string();
        assert!(err.contains("in use by the sectorfs disk at /mnt/a (pid"), "{err}");
        drop(a);
        assert!(!lock_path(&img).exists(), "the lock file stays behind");
        let b = ImageLock::take(&img, Path::new("/mnt/b")).unwrap().expect("b lock");
        drop(b);
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
