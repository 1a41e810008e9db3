//! `/dev/fuse`: mounting, the classic read/write loop, notifications.
//!
//! The classic transport is one `read(2)` per request and one `writev(2)`
//! per reply. Each worker thread reads from its own clone of the session's
//! fd (`FUSE_DEV_IOC_CLONE`), so the kernel hands requests to workers without
//! a shared lock; a reply's pieces go out straight from where they are (a
//! read's, from the sectors that hold the data).

use std::ffi::CString;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use zerocopy::IntoBytes;

use crate::abi;
use crate::reply::Sink;
use crate::session::{Filesystem, Negotiated, Session};

/// Opens `/dev/fuse` (close-on-exec).
pub fn open_dev() -> io::Result<OwnedFd> {
    // SAFETY: the path is a NUL-terminated literal; open returns a new fd or -1.
    let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new fd for the same connection as `session_fd` (`FUSE_DEV_IOC_CLONE`):
/// the kernel gives each clone its own queue of replies in progress.
pub fn clone_fd(session_fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fd = open_dev()?;
    let mut src = session_fd.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the fd to clone) through the
    // pointer, which points at `src` for the duration of the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), abi::FUSE_DEV_IOC_CLONE as _, &mut src as *mut u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// How to mount with `mount(2)` (as root).
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// The source shown in `/proc/mounts` (`fsname`).
    pub fsname: String,
    /// The type shown is `fuse.<subtype>`.
    pub subtype: String,
    /// `MS_*` flags (e.g. `MS_NOSUID | MS_NODEV`).
    pub flags: libc::c_ulong,
    /// The kernel checks permissions from the attributes.
    pub default_permissions: bool,
    /// Users other than the mounting one may use the mount.
    pub allow_other: bool,
}

/// Mounts the connection `fd` (from [`open_dev`]) on `mp` with `mount(2)`.
pub fn mount(mp: &Path, fd: BorrowedFd<'_>, opts: &MountOptions) -> io::Result<()> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!("fd={},rootmode=40000,user_id={uid},group_id={gid}", fd.as_raw_fd());
    if opts.default_permissions {
        data.push_str(",default_permissions");
    }
    if opts.allow_other {
        data.push_str(",allow_other");
    }
    let bad = |_| io::Error::from_raw_os_error(libc::EINVAL);
    let source = CString::new(opts.fsname.as_bytes()).map_err(bad)?;
    let target = CString::new(mp.as_os_str().as_bytes()).map_err(bad)?;
    let fstype = CString::new(format!("fuse.{}", opts.subtype)).map_err(bad)?;
    let data = CString::new(data).map_err(bad)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let r = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), opts.flags, data.as_ptr().cast()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads one message from `fd` into `buf`: `Ok(None)` once the mount is
/// gone (`ENODEV`); interrupted or aborted reads are retried.
pub fn receive(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // ENOENT: the request was interrupted before we read it.
            Some(libc::EINTR | libc::EAGAIN | libc::ENOENT) => continue,
            Some(libc::ENODEV) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// Most pieces a classic reply is sent in with one `writev(2)`; more are
/// copied into one buffer first (a 1 MiB read of 4 KiB sectors is 256).
const MAX_PARTS: usize = 320;

/// Replies with `writev(2)` on a `/dev/fuse` fd.
pub struct DevSink<'f> {
    fd: BorrowedFd<'f>,
}

impl<'f> DevSink<'f> {
    pub fn new(fd: BorrowedFd<'f>) -> DevSink<'f> {
        DevSink { fd }
    }
}

/// Writes one message (a header and its pieces) to `fd`.
fn write_message(fd: BorrowedFd<'_>, head: &[u8], parts: &[IoSlice<'_>]) -> io::Result<()> {
    if parts.len() >= MAX_PARTS {
        let mut all = Vec::with_capacity(head.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        all.extend_from_slice(head);
        for p in parts {
            all.extend_from_slice(p);
        }
        return write_message(fd, &all, &[]);
    }
    let mut iov = [IoSlice::new(&[]); MAX_PARTS];
    iov[0] = IoSlice::new(head);
    iov[1..=parts.len()].copy_from_slice(parts);
    let iov = &iov[..=parts.len()];
    // SAFETY: IoSlice is ABI-compatible with iovec; every slice outlives the call.
    let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr().cast(), iov.len() as libc::c_int) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Sink for DevSink<'_> {
    fn send(&mut self, unique: u64, error: i32, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let len = size_of::<abi::fuse_out_header>() + parts.iter().map(|p| p.len()).sum::<usize>();
        let h = abi::fuse_out_header { len: len as u32, error, unique };
        write_message(self.fd, h.as_bytes(), parts)
    }
}

/// Takes the kernel's `INIT` on the session's fd: reads and answers until
/// the connection is settled.
pub fn handshake<F: Filesystem>(session: &mut Session<F>, fd: BorrowedFd<'_>) -> io::Result<Negotiated> {
    let mut buf = vec![0u8; abi::FUSE_MIN_READ_BUFFER.max(4096 + (1 << 20))];
    loop {
        let Some(n) = receive(fd, &mut buf)? else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "unmounted before INIT"));
        };
        if let Some(neg) = session.handshake(&buf[..n], &mut DevSink::new(fd))? {
            return Ok(neg);
        }
    }
}

/// Serves requests from `fd` until the mount is gone: the classic worker loop.
pub fn serve<F: Filesystem>(session: &Session<F>, fd: BorrowedFd<'_>) -> io::Result<()> {
    let size = session.negotiated().map_or(abi::FUSE_MIN_READ_BUFFER, |n| n.buffer_size());
    let mut buf = vec![0u8; size];
    while let Some(n) = receive(fd, &mut buf)? {
        session.dispatch_classic(&buf[..n], &mut DevSink::new(fd));
    }
    Ok(())
}

/// The fuse module's switch for FUSE over io_uring (Linux 6.14+).
const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether the kernel offers FUSE over io_uring to new mounts: `None` when
/// it cannot at all (no such parameter: an older kernel, or built without it).
pub fn uring_enabled() -> Option<bool> {
    let v = std::fs::read_to_string(ENABLE_URING).ok()?;
    Some(matches!(v.trim(), "Y" | "y" | "1"))
}

/// Makes the kernel offer FUSE over io_uring to new mounts (root only; it
/// changes nothing for mounts that do not ask for it).
pub fn enable_uring() -> io::Result<()> {
    match uring_enabled() {
        Some(true) => Ok(()),
        Some(false) => std::fs::write(ENABLE_URING, "Y")
            .map_err(|e| io::Error::new(e.kind(), format!("cannot turn on {ENABLE_URING} ({e}; root can)"))),
        None => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this kernel has no FUSE over io_uring (Linux 6.14+ with CONFIG_FUSE_IO_URING)",
        )),
    }
}

/// Serves the mount with `threads` classic workers, each on its own clone of
/// `fd` where the process may open `/dev/fuse` (otherwise all on `fd`), until
/// it is unmounted. The first error of a worker is returned after all ended.
pub fn run<F: Filesystem>(session: &Arc<Session<F>>, fd: OwnedFd, threads: usize) -> io::Result<()> {
    let fd = Arc::new(fd);
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads.max(1) {
        let own = if i == 0 { None } else { clone_fd(fd.as_fd()).ok() };
        let (session, fd) = (Arc::clone(session), Arc::clone(&fd));
        let w = std::thread::Builder::new().name(format!("sectorfs-fuse-{i}")).spawn(move || match &own {
            Some(own) => serve(&session, own.as_fd()),
            None => serve(&session, fd.as_fd()),
        })?;
        workers.push(w);
    }
    let mut first = Ok(());
    for w in workers {
        let r = w.join().unwrap_or_else(|_| Err(io::Error::other("a FUSE worker panicked")));
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// Sends the kernel notifications (cache invalidations) on a connection.
pub struct Notifier<F: AsFd> {
    fd: F,
}

impl<F: AsFd> Notifier<F> {
    /// A notifier on the connection `fd` (the session's fd or a clone).
    pub fn new(fd: F) -> Notifier<F> {
        Notifier { fd }
    }

    fn notify(&self, code: i32, parts: &[IoSlice<'_>]) -> io::Result<()> {
        let len = size_of::<abi::fuse_out_header>() + parts.iter().map(|p| p.len()).sum::<usize>();
        // A notification is a reply to request 0 whose error is its code.
        let h = abi::fuse_out_header { len: len as u32, error: code, unique: 0 };
        write_message(self.fd.as_fd(), h.as_bytes(), parts)
    }

    /// Drops the kernel's cached attributes of `ino` and its cached data in
    /// `[off, off + len)` (`len` 0: to the end; `off` -1: attributes only).
    pub fn inval_inode(&self, ino: u64, off: i64, len: i64) -> io::Result<()> {
        let a = abi::fuse_notify_inval_inode_out { ino, off, len };
        self.notify(abi::notify::FUSE_NOTIFY_INVAL_INODE, &[IoSlice::new(a.as_bytes())])
    }

    /// Drops the kernel's cached entry `name` in directory `parent`.
    pub fn inval_entry(&self, parent: u64, name: &[u8]) -> io::Result<()> {
        let a = abi::fuse_notify_inval_entry_out { parent, namelen: name.len() as u32, flags: 0 };
        self.notify(
            abi::notify::FUSE_NOTIFY_INVAL_ENTRY,
            &[IoSlice::new(a.as_bytes()), IoSlice::new(name), IoSlice::new(&[0])],
        )
    }

    /// Tells the kernel `name` in `parent` (inode `child`) is gone.
    pub fn delete(&self, parent: u64, child: u64, name: &[u8]) -> io::Result<()> {
        let a = abi::fuse_notify_delete_out { parent, child, namelen: name.len() as u32, padding: 0 };
        self.notify(
            abi::notify::FUSE_NOTIFY_DELETE,
            &[IoSlice::new(a.as_bytes()), IoSlice::new(name), IoSlice::new(&[0])],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use zerocopy::FromBytes;

    /// A notification is one message: an out header (unique 0, error = the
    /// code, len = all of it), the struct, and the NUL-terminated name.
    #[test]
    fn notifications_are_whole_messages() {
        let (r, w) = std::io::pipe().unwrap();
        let n = Notifier::new(OwnedFd::from(w));
        n.inval_entry(7, b"name").unwrap();
        n.delete(7, 9, b"gone").unwrap();
        n.inval_inode(9, -1, 0).unwrap();
        drop(n);
        let mut bytes = Vec::new();
        std::fs::File::from(OwnedFd::from(r)).read_to_end(&mut bytes).unwrap();
        let mut at = &bytes[..];
        for (code, body) in [
            (abi::notify::FUSE_NOTIFY_INVAL_ENTRY, 16 + 5),
            (abi::notify::FUSE_NOTIFY_DELETE, 24 + 5),
            (abi::notify::FUSE_NOTIFY_INVAL_INODE, 24),
        ] {
            let (h, rest) = abi::fuse_out_header::read_from_prefix(at).unwrap();
            assert_eq!((h.unique, h.error, h.len as usize), (0, code, 16 + body));
            at = &rest[body..];
        }
        assert!(at.is_empty());
        let (e, name) = abi::fuse_notify_inval_entry_out::read_from_prefix(&bytes[16..]).unwrap();
        assert_eq!((e.parent, e.namelen), (7, 4));
        assert_eq!(&name[..5], b"name\0");
    }
}
