//! File operations: open and release, read, write and append, fallocate,
//! seek, copy_file_range. Reads load the node's published snapshot and take
//! no lock; every change goes through the node's actor (`node::Op`).

use std::borrow::Cow;

use crate::node::{Node, Op};
use crate::sector::Transit;
use crate::sync::Arc;
use crate::types::*;
use crate::{Engine, Error, Result};

impl Engine {
    /// Opens `ino` (one more open handle). Opening never fails for an existing inode.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn open(&self, ino: Ino) -> Result<Attr> {
        self.open_for(ino, false, false)
    }

    /// [`Engine::open`] for writing (`write`: `O_WRONLY` or `O_RDWR`) or
    /// appending (`append`: `O_APPEND`). A truncating open is a
    /// [`Engine::setattr`] of the size.
    ///
    /// # Errors
    /// `NotFound`; `Permission` for writing to an immutable file, or to an
    /// append-only one without `append` (chattr `i`, `a`; Linux `may_open`).
    pub fn open_for(&self, ino: Ino, write: bool, append: bool) -> Result<Attr> {
        let n = self.node(ino)?;
        let guards = n.guards();
        if write && (guards & inode_flags::IMMUTABLE != 0 || (guards & inode_flags::APPEND != 0 && !append)) {
            return Err(Error::Permission);
        }
        let mut l = n.life.lock();
        l.opens = l.opens.saturating_add(1);
        drop(l);
        Ok(self.attr_of(&n))
    }

    /// Closes one handle of `ino`; an unlinked file is freed on its last close.
    pub fn release(&self, ino: Ino) {
        if let Ok(n) = self.node(ino) {
            self.adjust_life(&n, |_, l| l.opens = l.opens.saturating_sub(1));
        }
    }

    /// Reads up to `buf.len()` bytes at `off`, returning how many were read
    /// (0 at or past the end). Takes no lock and never waits for a writer.
    ///
    /// # Errors
    /// `NotFound`, `IsDir`, `InvalidArgument` (not a regular file).
    ///
    /// # References
    /// `pread(2)`
    pub fn read(&self, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize> {
        let snap = self.file_version(ino)?;
        let got = snap.data.read(self.cfg.sector_size as u64, off, buf);
        let due = self.access_due(&snap.meta);
        drop(snap);
        if due {
            self.access_now(ino);
        }
        Ok(got)
    }

    /// The published version of regular file `ino`, for a read: taken under
    /// the inode map's shard lock without cloning the node's `Arc` (two
    /// read-modify-writes of a line every reader of the file shares); the
    /// guard keeps the version, not the node, and may outlive both.
    fn file_version(&self, ino: Ino) -> Result<crate::sync::Guard<crate::node::Snap>> {
        self.nodes
            .with(&ino, |n| match n.kind {
                FileType::Regular => Ok(n.load()),
                FileType::Directory => Err(Error::IsDir),
                _ => Err(Error::InvalidArgument),
            })
            .ok_or(Error::NotFound)?
    }

    /// Calls `f` with the bytes at `off..off + len` (clipped at the end of
    /// the file; no slices at or past it) as slices, in order, of the memory
    /// of one published version of the file, and returns what `f` returns:
    /// the zero-copy [`Engine::read`], for a frontend that hands the bytes
    /// to the kernel with `writev(2)`. Present pages are lent as slices of
    /// their memory (one per run of adjacent pages), a small file's inline bytes as a slice of them,
    /// holes as slices of a static zero page. No byte is copied, no lock is
    /// taken, nothing waits for a writer, and up to
    /// [`data::READ_PIECES`](crate::data::READ_PIECES) slices (any read of
    /// up to 1 MiB) nothing is allocated; more
    /// slices go into one `Vec`.
    ///
    /// The version is held while `f` runs: nobody writes the lent bytes
    /// meanwhile (a concurrent write goes copy-on-write into other pages
    /// and is published as a newer version), and the pages are not freed
    /// before `f` returns. So `f` sees one version whole, as `read` would,
    /// but should not take long: memory that newer versions replaced stays
    /// in use until it returns. `f` may call the engine, even to write this
    /// file (the slices keep showing the version they were lent from).
    ///
    /// # Errors
    /// As [`Engine::read`]: `NotFound`, `IsDir`, `InvalidArgument` (not a
    /// regular file); `f` is not called then.
    ///
    /// # References
    /// `pread(2)`, `writev(2)`
    pub fn read_with<R>(
        &self,
        ino: Ino,
        off: u64,
        len: usize,
        f: impl FnOnce(&[std::io::IoSlice<'_>]) -> R,
    ) -> Result<R> {
        self.read_with_atime(ino, off, len, true, f)
    }

    /// [`Engine::read_with`] for a reader that may ask for no access-time
    /// update (`atime == false`: the file was opened with `O_NOATIME`).
    ///
    /// # Errors
    /// As [`Engine::read_with`].
    pub fn read_with_atime<R>(
        &self,
        ino: Ino,
        off: u64,
        len: usize,
        atime: bool,
        f: impl FnOnce(&[std::io::IoSlice<'_>]) -> R,
    ) -> Result<R> {
        // One load: the version `f` sees, held (this guard) until it returns.
        let snap = self.file_version(ino)?;
        // The access time before `f`, which may hand the bytes to a reader
        // who then asks for the attributes: they must show this read.
        if atime && self.access_due(&snap.meta) {
            self.access_now(ino);
        }
        Ok(snap.data.read_with(self.cfg.sector_size as u64, off, len, f))
    }

    /// Writes `data` at `off`, growing the file if needed; returns how many
    /// bytes it stored: `data.len()`, or fewer when the limit is reached
    /// partway (POSIX's partial write at the end of a medium, as on tmpfs:
    /// the prefix that fits, ending on a sector boundary, is stored; the
    /// next write then fails with `NoSpace`). Every byte it counts is
    /// stored.
    ///
    /// # Errors
    /// `NotFound`, `IsDir`, `InvalidArgument`, `FileTooBig`, `NoSpace` (not
    /// even the part up to the first sector boundary fits). On error the
    /// file is exactly as it was.
    ///
    /// # References
    /// `pwrite(2)`
    pub fn write(&self, ino: Ino, off: u64, data: &[u8]) -> Result<usize> {
        self.write_op(ino, off, data, true, false)
    }

    /// [`Engine::write`] for page-cache write-back (FUSE's cached writes,
    /// WinFsp's paging writes): the bytes were written into the kernel's
    /// cache while the file took them, so chattr `i` and `a` set since do
    /// not refuse them, as on Linux's own file systems, which write back a
    /// file's dirty pages whatever its flags became (without this, an
    /// append through the cache reached the daemon as whole pages from
    /// below the old size and was refused).
    ///
    /// # Errors
    /// As [`Engine::write`].
    pub fn write_cached(&self, ino: Ino, off: u64, data: &[u8]) -> Result<usize> {
        self.write_op(ino, off, data, true, true)
    }

    /// [`Engine::write`] all or nothing: at the limit it stores nothing and
    /// fails with `NoSpace` (Windows' `WriteFile` on a full disk).
    ///
    /// # Errors
    /// As [`Engine::write`], and `NoSpace` whenever all of `data` does not fit.
    pub fn write_whole(&self, ino: Ino, off: u64, data: &[u8]) -> Result<()> {
        self.write_op(ino, off, data, false, false).map(|_| ())
    }

    fn write_op(&self, ino: Ino, off: u64, data: &[u8], short: bool, cached: bool) -> Result<usize> {
        let _gate = self.gate.enter();
        let n = self.node(ino)?;
        let op = Op::Write { off, data: Cow::Borrowed(data), short, cached };
        n.submit(&self.cx(), &self.logical, op).map(|w| w as usize)
    }

    /// Appends `data` atomically at the end; returns the offset it was written at.
    ///
    /// # Errors
    /// As [`Engine::write`].
    pub fn append(&self, ino: Ino, data: &[u8]) -> Result<u64> {
        let _gate = self.gate.enter();
        let n = self.node(ino)?;
        n.submit(&self.cx(), &self.logical, Op::Append { data: Cow::Borrowed(data) })
    }

    /// `fallocate(2)`: `mode` 0 (allocate and extend), `KEEP_SIZE`,
    /// `PUNCH_HOLE | KEEP_SIZE`, `ZERO_RANGE` (optionally `| KEEP_SIZE`).
    ///
    /// # Errors
    /// `NotFound`, `IsDir`, `InvalidArgument`, `NotSupported`, `FileTooBig`,
    /// `NoSpace`; `OutOfMemory` if the OS refuses memory (also for a punch,
    /// whose partial pages are copied when readers can see them).
    pub fn fallocate(&self, ino: Ino, mode: u32, off: u64, len: u64) -> Result<()> {
        let _gate = self.gate.enter();
        let n = self.node(ino)?;
        n.submit(&self.cx(), &self.logical, Op::Fallocate { mode, off, len }).map(|_| ())
    }

    /// `lseek(2)` with `SEEK_DATA` (`data = true`) or `SEEK_HOLE`.
    ///
    /// # Errors
    /// `NotFound`, `NoSuchOffset` (at or past the end), `InvalidArgument`.
    pub fn seek(&self, ino: Ino, off: u64, data: bool) -> Result<u64> {
        let n = self.node(ino)?;
        if n.kind != FileType::Regular {
            return Err(Error::InvalidArgument);
        }
        n.load().data.seek(self.cfg.sector_size as u64, off, data)
    }

    /// Copies `len` bytes from `ino_in` at `off_in` to `ino_out` at `off_out`;
    /// returns the bytes copied (short at the end of the input, and when
    /// the limit is reached partway: what was copied is stored).
    ///
    /// Whole sectors of the destination are *cloned* when the two offsets
    /// are equal modulo the page size (issue 20): the destination's table
    /// gets the source's pages themselves, shared copy-on-write between the
    /// two files (and charged once), in O(pages) table updates with no byte
    /// copied; a later write to either side copies the pages it changes (a
    /// limit-checked reservation: `NoSpace` at the limit), and the other
    /// side never sees it. The unaligned edges, a destination sector whose
    /// source is part data and part hole, and every range when the offsets
    /// differ modulo the page size, are copied. Holes of the source stay
    /// holes.
    ///
    /// # Errors
    /// As [`Engine::read`] and [`Engine::write`]; `InvalidArgument` for
    /// overlapping ranges of one file.
    ///
    /// # References
    /// `copy_file_range(2)`
    pub fn copy_file_range(&self, ino_in: Ino, off_in: u64, ino_out: Ino, off_out: u64, len: u64) -> Result<u64> {
        if ino_in == ino_out {
            let (a, b) = (off_in, off_out);
            let end_a = a.checked_add(len).ok_or(Error::Overflow)?;
            let end_b = b.checked_add(len).ok_or(Error::Overflow)?;
            if a < end_b && b < end_a {
                return Err(Error::InvalidArgument);
            }
        }
        let src = self.node(ino_in)?;
        let dst = self.node(ino_out)?;
        for n in [&src, &dst] {
            match n.kind {
                FileType::Regular => {}
                FileType::Directory => return Err(Error::IsDir),
                _ => return Err(Error::InvalidArgument),
            }
        }
        let ss = self.cfg.sector_size as u64;
        // One version of the source for the whole copy.
        let snap = src.load_full();
        let total = len.min(snap.data.len().saturating_sub(off_in));
        let end_in = off_in + total;
        if total > 0 && off_out.checked_add(total).is_none_or(|e| e > self.cfg.max_file_size) {
            return Err(Error::FileTooBig);
        }
        // Clone whole sectors of the destination whose source bytes lie at
        // the same offsets within pages.
        let ps = self.pool.page_size() as u64;
        let cloning = off_in % ps == off_out % ps;
        // Extent by extent: whole sectors of data are cloned (a chunk of at
        // most `CLONE_CHUNK` at a time, so the pages in transit are
        // bounded), other data is copied (in pieces of at most 1 MiB, so
        // the buffer is bounded), a hole of the source becomes a hole (or
        // zeros) in the destination, allocating nothing. Time and memory
        // follow the data the source holds, not `len`.
        let mut buf = Vec::new();
        let mut pos = off_in;
        // Offsets here may come near `u64::MAX` (`Config::max_file_size`
        // allows it): sums past them saturate.
        // Copy, not clone, below this (a clone that fell back).
        let mut copy_until = off_in;
        while pos < end_in {
            let data_at = snap.data.seek(ss, pos, true).map_or(end_in, |p| p.min(end_in));
            let (op_end, op) = if data_at > pos {
                let (off, end) = (off_out + (pos - off_in), off_out + (data_at - off_in));
                (data_at, Op::Zero { off, end })
            } else {
                let hole_at = snap.data.seek(ss, pos, false).map_or(end_in, |p| p.min(end_in));
                let out_pos = off_out + (pos - off_in);
                if cloning && pos >= copy_until && out_pos % ss == 0 && hole_at - pos >= ss {
                    let whole_to = pos + (hole_at - pos) / ss * ss;
                    let chunk_end = whole_to.min(pos.saturating_add(CLONE_CHUNK));
                    // Both sides under one gate entry: a capture never sees
                    // pages in transit.
                    let gate = self.gate.enter();
                    match self.clone_chunk(&src, &dst, pos / ps, (chunk_end - pos) / ps, out_pos / ps) {
                        // Not clonable now (a fresh page, an inline
                        // destination, ...): copy one sector, then retry.
                        Ok(0) | Err(Error::NotSupported) => copy_until = pos.saturating_add(ss),
                        Ok(pages) => pos += pages * ps,
                        Err(e) if pos == off_in => return Err(e),
                        Err(_) => break,
                    }
                    drop(gate);
                    continue;
                }
                // Copy up to the next whole sector of the destination (where
                // cloning resumes).
                let mut stop = hole_at;
                if copy_until > pos {
                    stop = stop.min(copy_until);
                } else if cloning && out_pos % ss != 0 {
                    stop = stop.min(pos.saturating_add(ss - out_pos % ss));
                }
                let n = (stop - pos).min(1 << 20) as usize;
                buf.resize(n, 0);
                let got = snap.data.read(ss, pos, &mut buf[..n]);
                if got == 0 {
                    break; // cannot happen: `pos` is inside the snapshot's data
                }
                let op = Op::Write {
                    off: off_out + (pos - off_in),
                    data: Cow::Borrowed(&buf[..got]),
                    short: true,
                    cached: false,
                };
                (pos + got as u64, op)
            };
            // Only a write may store less than its piece (`Op::Zero` gives 0).
            let is_write = matches!(op, Op::Write { .. });
            // Piece by piece: a capture waits for one piece, not the copy.
            let gate = self.gate.enter();
            let done = dst.submit(&self.cx(), &self.logical, op);
            drop(gate);
            match done {
                // The limit reached partway through a piece: a short copy.
                Ok(n) if is_write && n < op_end - pos => {
                    pos += n;
                    break;
                }
                Ok(_) => pos = op_end,
                Err(e) if pos == off_in => return Err(e),
                Err(_) => break,
            }
        }
        Ok(pos - off_in)
    }

    /// Clones up to `n` pages (whole sectors of `dst`) of `src` at page
    /// `first` to `dst` at page `to` (a sector's first): the source's
    /// runner hands them out (marked shared, one holder each), the
    /// destination's puts them in its table. Returns the pages cloned (0:
    /// nothing could be, copy instead).
    ///
    /// # Errors
    /// As the destination's `Op::Install` (`NotSupported`: its contents are
    /// inline, copy instead). The pages in transit go back either way.
    fn clone_chunk(&self, src: &Node, dst: &Node, first: u64, n: u64, to: u64) -> Result<u64> {
        let transit = Arc::new(Transit::new(&self.pool));
        let cx = self.cx();
        let got = src.submit(&cx, &self.logical, Op::Share { first, n, out: Arc::clone(&transit) })?;
        if got == 0 {
            return Ok(0);
        }
        dst.submit(&cx, &self.logical, Op::Install { first: to, pages: transit })?;
        Ok(got)
    }
}

/// Most bytes one clone step hands from the source to the destination
/// (16,384 pages of 4 KiB in transit, 128 KiB of handles).
const CLONE_CHUNK: u64 = 64 << 20;
