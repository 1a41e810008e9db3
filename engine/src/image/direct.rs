//! Image files and the page cache: [`ImageWriter`] writes an image around
//! it (`O_DIRECT` on Linux) where the file system allows, and
//! [`ImageReader`] drops what a load has read from it.
//!
//! A save through the page cache needs as many fresh kernel pages as the
//! image is long, while the disk it saves is still in memory: an 8 GiB RAM
//! disk briefly holds 16 GiB, and on a VM whose host takes idle memory back
//! each of those pages first costs a fault on the host (`docs/BENCHMARKS.md`,
//! "Images": the write half of a 1 GiB save moved between 0.6 and 1.1 s
//! with the page cache, against about 0.4-0.6 s straight to the disk).
//!
//! [`Snapshot::write_to`](super::Snapshot::write_to) hands its writer
//! `WRITE_ALIGN`-aligned writes of whole blocks but the last; this writer
//! sends those past the page cache and turns `O_DIRECT` off for good at the
//! first write that is not aligned (the rest of a short write) or that the
//! file system refuses with `EINVAL` (a block size larger than
//! `WRITE_ALIGN`). What it writes is the same either way; only the path
//! differs. The caller still `fsync`s the file, which is what makes it
//! durable.
use std::fs::File;
use std::io::{self, Read, Write};

use super::WRITE_ALIGN;
use sys::{drop_cached, set_direct};

pub use sys::is_on_local_disk;

/// A [`Write`] for an image file (module doc). On other systems, or where
/// `O_DIRECT` cannot be set, it writes through the page cache. Dropping it
/// turns `O_DIRECT` off again.
#[derive(Debug)]
pub struct ImageWriter<'a> {
    file: &'a File,
    direct: bool,
}

impl<'a> ImageWriter<'a> {
    /// Writes to `file` (opened for writing), with `O_DIRECT` if it is on
    /// a local disk file system whose direct writes go to the disk
    /// ([`is_on_local_disk`]); elsewhere through the page cache.
    #[must_use]
    pub fn new(file: &'a File) -> Self {
        let direct = is_on_local_disk(file) && set_direct(file, true).is_ok();
        ImageWriter { file, direct }
    }

    /// Whether writes still bypass the page cache.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    fn buffered(&mut self) -> io::Result<()> {
        self.direct = false;
        set_direct(self.file, false)
    }
}

impl Write for ImageWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.direct && (b.as_ptr().addr() % WRITE_ALIGN != 0 || b.len() % WRITE_ALIGN != 0) {
            self.buffered()?;
        }
        match self.file.write(b) {
            // EINVAL: the device wants larger blocks than WRITE_ALIGN.
            Err(e) if self.direct && e.kind() == io::ErrorKind::InvalidInput => {
                self.buffered()?;
                self.file.write(b)
            }
            r => r,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ImageWriter<'_> {
    /// The caller's `File` goes back as it came (an unaligned write of its
    /// own would otherwise get `EINVAL`).
    fn drop(&mut self) {
        if self.direct {
            let _ = set_direct(self.file, false);
        }
    }
}

/// Bytes read between two `POSIX_FADV_DONTNEED`s of what was read; the
/// ranges dropped start and end on multiples of it, because the kernel
/// drops only whole folios (up to 2 MiB on x86-64) inside a range.
const DROP_EVERY: u64 = 16 << 20;

/// A [`Read`] of an image file that drops what it has read from the page
/// cache as it goes, and all of the file when it is dropped (after a load
/// that failed half-way, too): a load needs the image's bytes once, and the
/// pages go back to the kernel still warm, for the next read-ahead and the
/// engine's own memory, instead of the load asking the host for fresh
/// memory twice over (`docs/BENCHMARKS.md`, "Images"). The image stays
/// whole on its disk; only the cached copy goes. On tmpfs, where the cache
/// is the file, nothing is dropped.
#[derive(Debug)]
pub struct ImageReader {
    file: File,
    read: u64,
    dropped: u64,
}

impl ImageReader {
    /// Reads `file` from its start (a file just opened).
    #[must_use]
    pub fn new(file: File) -> Self {
        ImageReader { file, read: 0, dropped: 0 }
    }
}

impl Drop for ImageReader {
    fn drop(&mut self) {
        drop_cached(&self.file, 0, 0);
    }
}

impl Read for ImageReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read += n as u64;
        if n > 0 && self.read - self.dropped >= 2 * DROP_EVERY {
            let upto = self.read / DROP_EVERY * DROP_EVERY;
            drop_cached(&self.file, self.dropped, upto - self.dropped);
            self.dropped = upto;
        }
        Ok(n)
    }
}

#[cfg(all(target_os = "linux", not(loom)))]
mod sys {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    /// Whether `file` is on a local disk file system whose direct writes
    /// go to the disk: ext2/3/4 and XFS (`fstatfs` magic). Not Btrfs, which
    /// since Linux 6.14 writes checksummed files through the page cache
    /// even with `O_DIRECT`, nor F2FS and bcachefs, not measured here; not
    /// NFS or SMB, where each direct write would wait for the server, nor
    /// tmpfs and FUSE, which keep their data in memory anyway.
    #[must_use]
    pub fn is_on_local_disk(file: &File) -> bool {
        const LOCAL: [u32; 2] = [libc::EXT4_SUPER_MAGIC as u32, libc::XFS_SUPER_MAGIC as u32];
        // SAFETY: statfs is plain integers, for which all zeroes is a value.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a descriptor `file` owns, and a struct the kernel fills.
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
            return false;
        }
        // The magic numbers are 32 bits; f_type is 32 or 64 wide, signed.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let kind = st.f_type as u32;
        LOCAL.contains(&kind)
    }

    pub(super) fn set_direct(file: &File, on: bool) -> io::Result<()> {
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor `file` owns and keeps open across
        // the calls; F_GETFL and F_SETFL touch no memory of ours.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let want = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
        // SAFETY: as above.
        if want != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, want) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Drops `len` bytes of `file` from `off` (0: to its end) from the page
    /// cache, as far as the kernel will; best effort.
    pub(super) fn drop_cached(file: &File, off: u64, len: u64) {
        let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else {
            return;
        };
        // SAFETY: advice on a descriptor `file` owns; it touches no memory
        // of ours, and failing changes nothing but the page cache.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED) };
    }
}

/// Elsewhere: the page cache, as for any file.
#[cfg(not(all(target_os = "linux", not(loom))))]
mod sys {
    use std::fs::File;
    use std::io;

    /// Never, off Linux (see the Linux version).
    #[must_use]
    pub fn is_on_local_disk(_: &File) -> bool {
        false
    }

    pub(super) fn set_direct(_: &File, on: bool) -> io::Result<()> {
        if on {
            Err(io::ErrorKind::Unsupported.into())
        } else {
            Ok(())
        }
    }

    pub(super) fn drop_cached(_: &File, _: u64, _: u64) {}
}
