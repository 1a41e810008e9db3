//! Linux: images of a mount (`--image FILE`, `sectorfs save`), on top of
//! `engine::image`.
//!
//! # How `sectorfs save` asks the daemon
//! Through the root directory's virtual attribute [`SAVE_XATTR`], like the
//! stats: `setxattr(MP, "user.sectorfs.save", TOKEN NUL FILE)` starts a save
//! (FILE empty: the mount's `--image`) and returns at once; the save runs on
//! a thread of its own (`sectorfs-save`), so no FUSE worker or ring queue
//! waits for it. `getxattr(MP, "user.sectorfs.save")` answers the state as
//! JSON ([`Status`]): the image, the TOKEN of the save running, and the last
//! [`KEPT`] outcomes by TOKEN. The CLI picks a fresh TOKEN and polls until
//! its outcome is there. One save at a time: another request gets `EBUSY`.
//! Only the user who mounted (the daemon's user) or root may save (`EPERM`
//! otherwise): a save writes a file with the daemon's rights. FILE must be
//! absolute and outside the mount (`EINVAL`).
//!
//! # Writing an image file
//! [`save_to`]: a temporary file `.NAME.sectorfs-save` in the same
//! directory (mode 0600; always made anew, never through a symbolic link:
//! [`open_temp`]; locked with `flock`, so two savers of one file refuse
//! each other rather than mix), the snapshot
//! streamed into it through [`ImageWriter`] (`O_DIRECT` on a local disk
//! file system: the image does not fill the page cache, which would hold
//! the disk's data a second time), `fsync`, `rename` over NAME,
//! `fsync` of the directory; on a local disk the image it replaced is
//! closed (its blocks freed) on a thread of its own after that.
//! A crash at any point leaves the previous NAME as it was; a failed save
//! removes its temporary file.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use engine::image::{ImageInfo, ImageReader, ImageWriter, SaveReport};
use engine::Engine;
use serde::{Deserialize, Serialize};

/// The root's virtual attribute that starts a save and reports on it.
pub(crate) const SAVE_XATTR: &str = "user.sectorfs.save";

/// Outcomes kept for `sectorfs save` to find.
pub(crate) const KEPT: usize = 16;

/// How one save ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Outcome {
    /// The requester's token.
    pub(crate) token: String,
    /// The image file.
    pub(crate) path: String,
    /// The error, one line; `None`: saved.
    pub(crate) error: Option<String>,
    /// Inodes saved.
    pub(crate) files: u64,
    /// Bytes of file data saved.
    pub(crate) data_bytes: u64,
    /// Bytes of the image.
    pub(crate) image_bytes: u64,
    /// How long writers were held off while the snapshot was taken.
    pub(crate) held_ms: f64,
    /// The whole save, snapshot to directory fsync.
    pub(crate) seconds: f64,
    /// Nothing changed since the file was saved or loaded: it was kept
    /// (its times set), not written again.
    pub(crate) unchanged: bool,
}

/// The state [`SAVE_XATTR`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Status {
    /// The mount's `--image`, if any.
    pub(crate) image: Option<String>,
    /// The token of the save running.
    pub(crate) running: Option<String>,
    /// The last outcomes, oldest first.
    pub(crate) done: Vec<Outcome>,
}

struct State {
    running: Option<String>,
    thread: Option<JoinHandle<()>>,
    done: VecDeque<Outcome>,
    /// The last save that succeeded: its target, the engine's change
    /// count at its capture, and the image file it made (device, inode).
    last: Option<(PathBuf, u64, (u64, u64))>,
}

/// A mount's saver: on-demand saves while it serves, and the last save.
pub(crate) struct Saver {
    engine: Arc<Engine>,
    image: Option<PathBuf>,
    mountpoint: PathBuf,
    owner: u32,
    label: String,
    state: Mutex<State>,
}

impl Saver {
    pub(crate) fn new(engine: Arc<Engine>, image: Option<PathBuf>, mountpoint: PathBuf, label: String) -> Saver {
        Saver {
            engine,
            image,
            mountpoint,
            owner: nix::unistd::geteuid().as_raw(),
            label,
            state: Mutex::new(State { running: None, thread: None, done: VecDeque::new(), last: None }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `setxattr` of [`SAVE_XATTR`] by `uid` with `value` (`TOKEN NUL FILE`).
    ///
    /// # Errors
    /// An errno: `EPERM` (not the mounting user or root), `EINVAL` (a bad
    /// value, a relative FILE or one inside the mount, no FILE and no
    /// `--image`), `EBUSY` (a save is running), `EAGAIN` (no thread).
    pub(crate) fn request(self: &Arc<Self>, uid: u32, value: &[u8]) -> Result<(), i32> {
        if uid != 0 && uid != self.owner {
            return Err(libc::EPERM);
        }
        let nul = value.iter().position(|&b| b == 0).ok_or(libc::EINVAL)?;
        let token = std::str::from_utf8(&value[..nul]).map_err(|_| libc::EINVAL)?.to_string();
        if token.is_empty() || token.len() > 64 {
            return Err(libc::EINVAL);
        }
        let file = &value[nul + 1..];
        let path = if file.is_empty() {
            self.image.clone().ok_or(libc::EINVAL)?
        } else {
            PathBuf::from(OsString::from_vec(file.to_vec()))
        };
        if !path.is_absolute() || path.starts_with(&self.mountpoint) || path.file_name().is_none() {
            return Err(libc::EINVAL);
        }
        let mut st = self.lock();
        if st.running.is_some() {
            return Err(libc::EBUSY);
        }
        if let Some(t) = st.thread.take() {
            let _ = t.join();
        }
        let me = Arc::clone(self);
        let tok = token.clone();
        let t = std::thread::Builder::new()
            .name("sectorfs-save".into())
            .spawn(move || {
                unpin();
                let out = me.save(&tok, &path, true);
                let mut st = me.lock();
                st.running = None;
                st.done.push_back(out);
                while st.done.len() > KEPT {
                    st.done.pop_front();
                }
            })
            .map_err(|_| libc::EAGAIN)?;
        st.running = Some(token);
        st.thread = Some(t);
        Ok(())
    }

    /// Who else holds `path` as its image (through any symbolic links).
    fn owned_elsewhere(&self, path: &Path) -> Option<String> {
        #[cfg(target_os = "linux")]
        {
            crate::image_lock::held_by(&image_target(path).ok()?)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = path;
            None
        }
    }

    /// Saves to `path` now and tells how it went.
    /// `mounted`: the disk still serves (a requested save, on the save
    /// thread, not on the FUSE worker that took the request: the stat of a
    /// path on this mount is a request to this daemon). After the unmount,
    /// the mountpoint is the directory under it, whose device says nothing.
    fn save(&self, token: &str, path: &Path, mounted: bool) -> Outcome {
        let t0 = Instant::now();
        let mut out = Outcome { token: token.into(), path: path.display().to_string(), ..Outcome::default() };
        if let Some(other) = self.owned_elsewhere(path) {
            out.error = Some(format!(
                "{} is the image of {other}: saving over it would replace that disk's image; choose another file",
                path.display()
            ));
            return out;
        }
        if mounted && on_the_mount(path, &self.mountpoint) {
            out.error = Some(format!(
                "{} would be inside the disk it saves (its directory is on the file system mounted at {})",
                path.display(),
                self.mountpoint.display()
            ));
            return out;
        }
        if self.current(path) {
            // Nothing changed since the disk was saved to (or loaded from)
            // this very file: it is current, and writing it again would
            // need room for a second copy beside it. `sectorfs unmount`
            // saves while the disk serves, then the daemon saves after the
            // unmount: the second used to fail for lack of that room on an
            // image file system with room for one copy (reported as a lost
            // final save, though nothing was lost), and a write between
            // the two saves was lost so. Its times are set to now (what
            // tells the unmount command that its final save is done).
            let image = File::open(path).and_then(|f| {
                f.set_modified(std::time::SystemTime::now())?;
                f.metadata()
            });
            match image {
                Ok(m) => {
                    out.image_bytes = m.len();
                    out.unchanged = true;
                    log::info!("{} is current (nothing changed since it was saved)", path.display());
                }
                Err(e) => out.error = Some(format!("cannot set the times of {}: {e}", path.display())),
            }
            out.seconds = t0.elapsed().as_secs_f64();
            return out;
        }
        match save_to(&self.engine, path, &self.label) {
            Ok((r, held, changes)) => {
                self.lock().last = file_id(path).map(|id| (path.to_path_buf(), changes, id));
                out.files = r.nodes;
                out.data_bytes = r.data_bytes;
                out.image_bytes = r.image_bytes;
                out.held_ms = held.as_secs_f64() * 1e3;
                log::info!("saved {} ({} files, {} data bytes)", path.display(), r.nodes, r.data_bytes);
            }
            Err(e) => {
                log::error!("saving {} failed: {e:#}", path.display());
                out.error = Some(format!("{e:#}"));
            }
        }
        out.seconds = t0.elapsed().as_secs_f64();
        out
    }

    /// The JSON of [`Status`].
    pub(crate) fn status_json(&self) -> Vec<u8> {
        let st = self.lock();
        let s = Status {
            image: self.image.as_ref().map(|p| p.display().to_string()),
            running: st.running.clone(),
            done: st.done.iter().cloned().collect(),
        };
        serde_json::to_vec(&s).unwrap_or_default()
    }

    /// After the unmount: waits for a save in flight, then saves to the
    /// mount's `--image` (if any). `None`: nothing to save. Should that
    /// save fail while the disk holds something its image does not, the
    /// disk is saved to a rescue copy ([`rescue_path`]) instead of being
    /// lost with the daemon; the outcome's error names it.
    pub(crate) fn finish(&self) -> Option<Outcome> {
        let t = self.lock().thread.take();
        if let Some(t) = t {
            let _ = t.join();
        }
        let path = self.image.clone()?;
        let mut out = self.save("unmount", &path, false);
        if let Some(e) = &out.error {
            let rescued = rescue_path(&path, std::process::id(), true).into_iter().find_map(|p| {
                match save_to(&self.engine, &p, &self.label) {
                    Ok(_) => Some(p),
                    Err(e) => {
                        log::error!("cannot save a rescue copy to {}: {e:#}", p.display());
                        None
                    }
                }
            });
            if let Some(p) = rescued {
                log::error!("the disk was saved to {} instead of its image {}", p.display(), path.display());
                out.error = Some(format!("{e}; the disk was saved to {} instead (mount it with --image)", p.display()));
            }
        }
        Some(out)
    }

    /// The engine was just loaded from its image: that file holds the disk
    /// as it is, like an image a save just made ([`Saver::current`]).
    pub(crate) fn loaded(&self) {
        if let Some(p) = &self.image {
            self.lock().last = file_id(p).map(|id| (p.clone(), self.engine.changes(), id));
        }
    }

    /// Whether the last successful save went to `path`, the image there is
    /// still the one it made, and the engine has not changed since its
    /// capture (access times aside: `Engine::changes`).
    fn current(&self, path: &Path) -> bool {
        let st = self.lock();
        st.last.as_ref().is_some_and(|(p, changes, id)| {
            p == path && *changes == self.engine.changes() && file_id(path).as_ref() == Some(id)
        })
    }
}

/// Lets this thread run on every CPU: a thread started by a ring queue's
/// thread inherits its pinning to one CPU, and a long save there would take
/// that CPU's queue half its time.
fn unpin() {
    // SAFETY: a zeroed `cpu_set_t` is a valid empty set; `CPU_SET` writes
    // bits inside it (indices below `CPU_SETSIZE`); `sched_setaffinity`
    // only reads the set, which lives across the call. Exercised by every
    // `sectorfs save` in mount/tests/mount_image.rs.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            log::debug!("sched_setaffinity: {}", io::Error::last_os_error());
        }
    }
}

/// Whether the directory of the image `path` is on the file system mounted
/// at `mountpoint` (the same device): through a bind mount of the disk, a
/// path that does not start with the mountpoint can still lead into it (a
/// probe saved a disk into itself so). `false` when either cannot be
/// looked at (the save then reports why). Not a complete guard: a file
/// system stacked on the disk (overlayfs with its upper layer here) has a
/// device of its own.
pub(crate) fn on_the_mount(path: &Path, mountpoint: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(image_dir(path)), std::fs::metadata(mountpoint)) {
        (Ok(d), Ok(m)) => d.dev() == m.dev(),
        _ => false,
    }
}

/// The directory an image `path` is in (`.` for a bare name).
fn image_dir(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// `dir/.NAME.sectorfs-save` for `path` = `dir/NAME`.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    side_path(path, "save")
}

/// `dir/.NAME.sectorfs-WHAT` for `path` = `dir/NAME`: the files a save
/// (`save`) and the image's lock (`lock`, `image_lock.rs`) keep beside it.
pub(crate) fn side_path(path: &Path, what: &str) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".sectorfs-");
    name.push(what);
    path.with_file_name(name)
}

/// Whether a save to `path` can start: its temporary file can be made in
/// the image's directory (made and removed again; one already there means
/// a save is running, which can). What `sectorfs unmount` checks before it
/// takes the disk away: a save that cannot even begin would lose it.
///
/// # Errors
/// Why the temporary file cannot be made.
pub(crate) fn can_save(path: &Path) -> io::Result<()> {
    // A short name of its own (not the image's name with a suffix: an image
    // name of 240 bytes, which a save can use, would make it too long).
    let probe = path.with_file_name(format!(".sectorfs-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&probe) {
        Ok(_) => std::fs::remove_file(&probe),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Where the final save of a disk whose image `image` could not be written
/// goes instead, for the daemon `pid` (its file system full, say: a probe
/// lost acknowledged appends so): `/var/tmp` (kept across reboots), then
/// `/tmp`, each in a directory `sectorfs-rescue-UID` that is ours alone
/// (mode 0700, made if absent; one that is a symbolic link, someone
/// else's, or open to others is passed over: the copy holds the disk's
/// data), named `IMAGE-PID.img`. `make`: the daemon, about to save there,
/// makes the directories; the unmount command only looks.
pub(crate) fn rescue_path(image: &Path, pid: u32, make: bool) -> Vec<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let uid = nix::unistd::geteuid().as_raw();
    let name = image.file_name().map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned());
    ["/var/tmp", "/tmp"]
        .iter()
        .map(|base| Path::new(base).join(format!("sectorfs-rescue-{uid}")))
        .filter(|dir| {
            if make {
                let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
            }
            std::fs::symlink_metadata(dir)
                .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0)
        })
        .map(|dir| dir.join(format!("{name}-{pid}.img")))
        .collect()
}

/// The identity of file `p` (device, inode), if it exists.
fn file_id(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Saves `engine` to `path` atomically (module doc); returns what was
/// written, how long writers were held off, and the engine's change count
/// at the capture (`Engine::changes`).
pub(crate) fn save_to(engine: &Engine, path: &Path, label: &str) -> Result<(SaveReport, std::time::Duration, u64)> {
    // Checked again here: the daemon runs as root, its client may not be
    // ours, and the target may have changed since the mount.
    let path = &image_target(path)?;
    let dir = image_dir(path);
    let tmp = temp_path(path);
    let file = open_temp(&tmp, path)?;
    let result = (|| -> Result<(SaveReport, std::time::Duration, u64)> {
        let snap = engine.snapshot();
        let (held, changes) = (snap.held(), snap.changes());
        let report = snap.write_to(ImageWriter::new(&file), &[("label", label)]).context("cannot write the image")?;
        drop(snap);
        crate::fault::fail_point!("daemon.save.before_rename", |_| Err(anyhow!("failpoint daemon.save.before_rename")));
        file.sync_all().context("cannot fsync the image")?;
        let replaced = open_replaced(path);
        std::fs::rename(&tmp, path).with_context(|| format!("cannot rename the image to {}", path.display()))?;
        let d = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
        d.sync_all().with_context(|| format!("cannot fsync {}", dir.display()))?;
        if let Some(old) = replaced {
            // If the thread cannot start, the closure (and the file) drops here.
            let _ = std::thread::Builder::new().name("sectorfs-close".into()).spawn(move || drop(old));
        }
        Ok((report, held, changes))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes the temporary file `tmp` of a save to `path` (mode 0600) and locks
/// it, without trusting what is already at that name: the daemon runs as
/// root, and whoever can write to the image's directory can put anything
/// there. The file is always made anew (`O_CREAT|O_EXCL`, which follows no
/// symbolic link): a symlink there (a root save overwrote the file it
/// pointed to), a FIFO (it hung every later save), a hard link to another
/// file, someone else's file, or a file a dead save left, is removed first
/// (not what it leads to). Only a regular file another save has locked is
/// left alone: that save is running (`EBUSY`). What this makes is ours
/// whatever owner the file system shows (NFS root squash, vfat's `uid=`).
/// After the lock, the name must still lead to the file locked: another
/// save that took it for one left behind has replaced it, and goes on.
fn open_temp(tmp: &Path, path: &Path) -> Result<File> {
    use std::os::unix::fs::MetadataExt;
    let lock = |f: &File| {
        // SAFETY: flock on a descriptor we own, alive across the call.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    };
    let flags = libc::O_CLOEXEC | libc::O_NOFOLLOW;
    for _ in 0..3 {
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(flags).open(tmp) {
            Ok(file) => {
                if !lock(&file) {
                    bail_busy(path)?;
                }
                let (m, now) = (file.metadata()?, std::fs::symlink_metadata(tmp));
                if !now.is_ok_and(|n| n.ino() == m.ino() && n.dev() == m.dev()) {
                    bail_busy(path)?;
                }
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let what = std::fs::symlink_metadata(tmp);
                if what.as_ref().is_ok_and(|m| m.is_dir()) {
                    bail!("cannot create {}: a directory is in the way; remove it", tmp.display());
                }
                // Only a regular file is opened, to see whether a save holds
                // it: opening a FIFO could block, a device could act.
                if what.is_ok_and(|m| m.is_file()) {
                    let existing =
                        std::fs::OpenOptions::new().write(true).custom_flags(flags | libc::O_NONBLOCK).open(tmp);
                    if existing.is_ok_and(|f| f.metadata().is_ok_and(|m| m.is_file()) && !lock(&f)) {
                        bail_busy(path)?;
                    }
                }
                match std::fs::remove_file(tmp) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => bail!("cannot replace {}: {e}", tmp.display()),
                    _ => {}
                }
            }
            Err(e) => bail!("cannot create {}: {e}", tmp.display()),
        }
    }
    bail!("cannot create {}: something else keeps taking that name", tmp.display())
}

/// The image a save is about to replace, held across the rename, so that
/// the file system frees its blocks when this last reference goes, on a
/// thread just after the save has returned, and not inside `rename`
/// (0.1-0.3 s per GiB on ext4 here, a fifth of a save: `docs/BENCHMARKS.md`,
/// "Images"). Redis closes a rewritten AOF file the same way. Only on a
/// local disk ([`engine::image::is_on_local_disk`]): an NFS client renames
/// an open target aside first (`.nfsXXXX`) and then over it, two steps
/// where the server did one. An `O_PATH` descriptor: it opens nothing (not
/// a device or FIFO put there since `image_target` looked) and needs no
/// right to read. `None` if there is no such regular file.
fn open_replaced(path: &Path) -> Option<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    (f.metadata().ok()?.is_file() && engine::image::is_on_local_disk(&f)).then_some(f)
}

fn bail_busy(path: &Path) -> Result<()> {
    Err(anyhow!("another save to {} is in progress", path.display()))
}

/// The absolute form of `p` without needing `p` to exist (its directory
/// must): the directory canonicalized, the name appended; then where an
/// image at it goes ([`image_target`]).
pub(crate) fn absolute_image_path(p: &Path) -> Result<PathBuf> {
    let name = p.file_name().ok_or_else(|| anyhow!("{}: not a file name", p.display()))?;
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = dir.canonicalize().with_context(|| format!("cannot use the directory of {}", p.display()))?;
    image_target(&dir.join(name))
}

/// Where an image at `path` is written and read: `path`, or the file a
/// symbolic link there points to (a user may keep the image behind one; a
/// save replaces the file, not the link). Refused: anything there that is
/// not a regular file (a device, a FIFO, a socket, a directory): a save
/// renames a new file over what is there, and `sectorfs save MP /dev/null`
/// as root must not replace /dev/null, nor `--image` a FIFO wait forever.
pub(crate) fn image_target(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    // As the kernel: at most 40 links in a row.
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => bail!("cannot use {} as an image: {e}", path.display()),
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p).with_context(|| format!("cannot read the link {}", p.display()))?;
                p = match p.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
            }
            Ok(m) if m.is_file() => return Ok(p),
            Ok(_) => bail!("{} is not a regular file: an image is saved to and loaded from one", p.display()),
        }
    }
    bail!("cannot use {} as an image: too many levels of symbolic links", path.display())
}

/// Reads the header of the image at `path`; `None` if there is no file.
pub(crate) fn read_info(path: &Path) -> Result<Option<ImageInfo>> {
    match File::open(path) {
        Ok(f) => engine::image::read_info(io::BufReader::new(f))
            .map(Some)
            .map_err(|e| anyhow!("cannot load image {}: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("cannot open image {}: {e}", path.display())),
    }
}

/// Loads the image at `path` with settings `cfg` (the image's, with the
/// command line's overrides), dropping what it has read from the page cache
/// as it goes (`ImageReader`: the disk's data is in the engine now).
pub(crate) fn load(path: &Path, cfg: engine::Config) -> Result<Engine> {
    let f = File::open(path).with_context(|| format!("cannot open image {}", path.display()))?;
    crate::fault::fail_point!("daemon.image.load");
    Engine::load_image(ImageReader::new(f), |_| Ok(cfg))
        .map_err(|e| anyhow!("cannot load image {}: {e}", path.display()))
}

/// A fresh token for `sectorfs save`.
pub(crate) fn token() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{}", std::process::id(), t.as_nanos())
}

/// The value of the save request: `TOKEN NUL FILE`.
pub(crate) fn request_value(token: &str, file: Option<&Path>) -> Vec<u8> {
    let mut v = token.as_bytes().to_vec();
    v.push(0);
    if let Some(f) = file {
        v.extend_from_slice(f.as_os_str().as_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn temp_names_and_requests() {
        assert_eq!(temp_path(Path::new("/a/b/disk.img")), Path::new("/a/b/.disk.img.sectorfs-save"));
        assert_eq!(request_value("t", Some(Path::new("/x"))), b"t\0/x");
        assert_eq!(request_value("t", None), b"t\0");
    }

    #[test]
    fn requests_are_checked() {
        let e = Arc::new(Engine::new(engine::Config::default()).unwrap());
        let s = Arc::new(Saver::new(e, None, PathBuf::from("/mnt/ram"), "x".into()));
        let me = nix::unistd::geteuid().as_raw();
        let other = if me == 0 { 1 } else { me + 1 };
        if me != 0 {
            assert_eq!(s.request(other, b"t\0/tmp/x"), Err(libc::EPERM));
        }
        assert_eq!(s.request(me, b"no-nul"), Err(libc::EINVAL));
        assert_eq!(s.request(me, b"t\0"), Err(libc::EINVAL)); // no FILE, no --image
        assert_eq!(s.request(me, b"t\0rel/x"), Err(libc::EINVAL));
        assert_eq!(s.request(me, b"t\0/mnt/ram/x"), Err(libc::EINVAL));
        let _ = other;
    }

    #[test]
    fn save_is_atomic_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img");
        let e = Engine::new(engine::Config::default()).unwrap();
        let f = e.create(engine::ROOT, b"f", 0o644, 0, 0).unwrap().ino;
        e.write(f, 0, b"one").unwrap();
        save_to(&e, &p, "l").unwrap();
        e.write(f, 0, b"two").unwrap();
        save_to(&e, &p, "l").unwrap();
        assert!(!temp_path(&p).exists());
        let info = read_info(&p).unwrap().unwrap();
        assert_eq!(info.extras, [("label".into(), "l".into())]);
        let l = load(&p, info.config).unwrap();
        let mut b = [0u8; 3];
        l.read(l.lookup(engine::ROOT, b"f").unwrap().ino, 0, &mut b).unwrap();
        assert_eq!(&b, b"two");
        assert!(read_info(&d.path().join("none")).unwrap().is_none());
        // A directory that does not exist: an error, nothing left behind.
        assert!(save_to(&e, &d.path().join("no/such"), "l").is_err());
    }

    /// Whatever someone put at the temporary name is neither followed,
    /// waited on, nor written: it is replaced by a file of the save's own,
    /// the save succeeds, and the file a link points to keeps its bytes (a
    /// root daemon overwrote it with the image before; a FIFO hung it).
    #[test]
    fn a_save_trusts_nothing_at_its_temporary_name() {
        let d = tempfile::tempdir().unwrap();
        let e = Engine::new(engine::Config::default()).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let saved = |name: &str| {
            let p = d.path().join(name);
            save_to(&e, &p, "l").unwrap();
            assert!(read_info(&p).unwrap().is_some(), "{name}: no image");
            assert!(!temp_path(&p).exists(), "{name}: the temporary file is left");
        };
        std::os::unix::fs::symlink(&victim, temp_path(&d.path().join("a"))).unwrap();
        saved("a");
        nix::unistd::mkfifo(&temp_path(&d.path().join("b")), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        saved("b");
        std::fs::hard_link(&victim, temp_path(&d.path().join("c"))).unwrap();
        saved("c");
        // A file a save left behind, and (as root) someone else's file.
        std::fs::write(temp_path(&d.path().join("h")), b"left over").unwrap();
        saved("h");
        if nix::unistd::geteuid().is_root() {
            let t = temp_path(&d.path().join("g"));
            std::fs::write(&t, b"theirs").unwrap();
            std::os::unix::fs::chown(&t, Some(65534), None).unwrap();
            saved("g");
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::metadata(&victim).unwrap().nlink(), 1);
        // A directory is not removed: the save says what is in the way.
        std::fs::create_dir(temp_path(&d.path().join("f"))).unwrap();
        let err = save_to(&e, &d.path().join("f"), "l").unwrap_err().to_string();
        assert!(err.contains("a directory is in the way"), "{err}");
        // A temporary file another save holds (locked) is that save's: busy.
        let held = std::fs::File::create(temp_path(&d.path().join("i"))).unwrap();
        // SAFETY: flock on a descriptor we own, alive across the call.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        let err = save_to(&e, &d.path().join("i"), "l").unwrap_err().to_string();
        assert!(err.contains("in progress"), "{err}");
        assert!(temp_path(&d.path().join("i")).exists(), "the running save's file was removed");
    }

    /// `sectorfs unmount` checks a save could start with a short name of its
    /// own: an image name of 240 bytes, which a save can use, made the old
    /// probe name (the image's name and two suffixes) 256 bytes long.
    #[test]
    fn can_save_with_the_longest_image_name() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x".repeat(240));
        can_save(&p).unwrap();
        let e = Engine::new(engine::Config::default()).unwrap();
        save_to(&e, &p, "l").unwrap();
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "only the image is left");
    }
}
