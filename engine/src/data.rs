//! File contents: exact-size inline bytes for small files, a sector table for
//! the rest.
//!
//! A [`FileData`] is a value (cloning it is O(1)); the published version of a
//! file holds one, and the file's runner mutates a private working copy that
//! shares everything untouched with the published one. The rules that make
//! this race-free are in [`crate::sector::Sector`] ("Contract"); this module
//! applies them:
//!
//! * Every mutation first *plans* (read-only) how many fresh sectors it needs,
//!   reserves them (failing with `NoSpace` before any change), takes them, and
//!   only then *applies*, which cannot fail. So a failed operation leaves the
//!   file exactly as it was.
//! * A sector present in the table is changed in place only if it is
//!   exclusive, or if every byte changed is at or past its `init` (never shown
//!   to a reader). Otherwise it is copied first.
//! * Bytes a file exposes that were never written read as zero: holes are
//!   absent sectors, and when a file grows over part of a sector the newly
//!   visible bytes are zeroed (in place past `init`, else by copy-on-write).

use std::io::IoSlice;
use std::ops::Range;

use crate::sector::table::Table;
use crate::sector::{Charge, Pool, Reservation, Sector};
use crate::sync::Arc;
use crate::{Error, Result};

/// `fallocate` mode: keep the file size.
pub const FALLOC_KEEP_SIZE: u32 = 0x01;
/// `fallocate` mode: deallocate the range (with `KEEP_SIZE`).
pub const FALLOC_PUNCH_HOLE: u32 = 0x02;
/// `fallocate` mode: zero the range, allocating it.
pub const FALLOC_ZERO_RANGE: u32 = 0x10;

/// What the data layer needs from the engine.
pub(crate) struct Ctx<'a> {
    pub(crate) pool: &'a Pool,
    pub(crate) inline_max: u64,
    pub(crate) max_size: u64,
}

impl Ctx<'_> {
    fn ss(&self) -> u64 {
        self.pool.sector_size() as u64
    }
}

struct Inline {
    bytes: Box<[u8]>,
    _charge: Option<Charge>,
}

#[derive(Clone, Default)]
enum Content {
    #[default]
    Empty,
    Inline(Arc<Inline>),
    Sectors(Table),
}

/// The contents of a regular file.
#[derive(Clone, Default)]
pub struct FileData {
    len: u64,
    content: Content,
}

impl std::fmt::Debug for FileData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.content {
            Content::Empty => "empty",
            Content::Inline(_) => "inline",
            Content::Sectors(_) => "sectors",
        };
        f.debug_struct("FileData").field("len", &self.len).field("content", &kind).finish()
    }
}

/// One sector's part in a mutation.
#[derive(Clone, Copy)]
struct Span {
    k: u64,
    /// Bytes of the sector visible before and after the mutation.
    old_vis: usize,
    new_vis: usize,
    /// The written range within the sector (`a == b`: none).
    a: usize,
    b: usize,
    /// Fill a hole here (fallocate).
    fill: bool,
}

impl Span {
    /// The lowest byte changed in a present sector, if any.
    fn modified_start(&self) -> Option<usize> {
        let w = (self.b > self.a).then_some(self.a);
        let g = (self.new_vis > self.old_vis).then_some(self.old_vis);
        match (w, g) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }
}

fn clamp(v: u64, base: u64, ss: u64) -> usize {
    v.saturating_sub(base).min(ss) as usize
}

impl FileData {
    /// The file size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of memory holding this file's data (for `st_blocks`).
    pub fn allocated(&self, ss: u64) -> u64 {
        match &self.content {
            Content::Empty => 0,
            Content::Inline(b) => b.bytes.len() as u64,
            Content::Sectors(t) => t.count() * ss,
        }
    }

    /// Copies bytes at `off` into `buf`, returning how many (0 at or past EOF).
    pub fn read(&self, ss: u64, off: u64, buf: &mut [u8]) -> usize {
        if off >= self.len {
            return 0;
        }
        let n = (self.len - off).min(buf.len() as u64) as usize;
        let buf = &mut buf[..n];
        match &self.content {
            Content::Empty => buf.fill(0),
            Content::Inline(b) => {
                // Inline bytes are exactly `len` long.
                let o = off as usize;
                buf.copy_from_slice(&b.bytes[o..o + n]);
            }
            Content::Sectors(t) => {
                let mut done = 0usize;
                while done < n {
                    let pos = off + done as u64;
                    let (k, within) = (pos / ss, (pos % ss) as usize);
                    let take = (ss as usize - within).min(n - done);
                    let dst = &mut buf[done..done + take];
                    match t.get(k) {
                        // SAFETY: `dst` is inside this version's size, so below
                        // the `init` the sector had when `t` was published
                        // (contract rule 1), where no runner writes while a
                        // table reaching the sector is published. loom:
                        // `table_publish`.
                        Some(s) => unsafe { s.read(within, dst) },
                        None => dst.fill(0),
                    }
                    done += take;
                }
            }
        }
        n
    }

    /// Calls `f` with the bytes at `off..off + len` (clipped at the end of
    /// the file; none at or past it) as slices in order: of the sector memory
    /// of this version (present sectors), of its inline buffer (small
    /// files), and of a static zero page (holes). No byte is copied, and up
    /// to [`READ_PIECES`] slices nothing is allocated (a 1 MiB read is at
    /// most 17 slices of 64 KiB sectors, 257 of 4 KiB ones): the slices are
    /// an array on the stack, of 32 or 320 by the most the read can need.
    /// Past that they go into one `Vec` (still no copy of the bytes).
    ///
    /// # Why the slices are not written while `f` runs
    /// `f` runs while `self` is borrowed, so this version (its table, every
    /// sector it reaches, the inline buffer) is held until `f` returns: no
    /// sector it reaches is freed, and the borrow checker keeps the slices
    /// from outliving the call. The runner writes a sector's bytes in place
    /// only (sector contract, [`Sector`]):
    ///
    /// 1. past the sector's `init`, which is at least as high as when this
    ///    version was published (`init` never goes down), while every slice
    ///    lies below this version's size and so below that `init` (rule 1);
    /// 2. or in a sector no table but the runner's working copy reaches
    ///    (`Arc` count 1 along its path, rule 3). This version's table
    ///    holds a count on every node and sector it reaches, whether it is
    ///    still the published one or only held here, so no sector lent here
    ///    is ever exclusive: overwrites of it are copy-on-write into a fresh
    ///    sector, and this version keeps the old one until `f` returns.
    ///
    /// Inline buffers and the zero page are never written after they are
    /// made. So no byte lent to `f` is written while `f` runs, as `&[u8]`
    /// requires; the same argument as for [`FileData::read`], held for `f`'s
    /// duration instead of a copy's. loom: `read_with` (slices held across a
    /// concurrent overwrite, append and reuse of freed sectors).
    pub fn read_with<R>(&self, ss: u64, off: u64, len: usize, f: impl FnOnce(&[IoSlice<'_>]) -> R) -> R {
        // The array is sized to the read: filling 320 empty slices costs
        // more than a whole 4 KiB read does (~180 ns against ~100 ns).
        let most = self.most_pieces(ss, off, len);
        if most <= FEW_PIECES {
            self.lend_into::<FEW_PIECES, R>(ss, off, len, most, f)
        } else if most <= READ_PIECES {
            self.lend_into::<READ_PIECES, R>(ss, off, len, most, f)
        } else {
            self.lend_into::<0, R>(ss, off, len, most, f)
        }
    }

    /// An upper bound on the slices [`FileData::read_with`] makes: at most
    /// one per sector touched, except that a run of zeros takes one per
    /// 64 KiB (so more than one per sector only for sectors past 64 KiB).
    fn most_pieces(&self, ss: u64, off: u64, len: usize) -> usize {
        if off >= self.len {
            return 0;
        }
        let n = (self.len - off).min(len as u64);
        let zeros = n.div_ceil(ZEROS.len() as u64);
        let most = match self.content {
            Content::Empty => zeros,
            Content::Inline(_) => 1,
            Content::Sectors(_) => {
                let touched = (off % ss + n).div_ceil(ss);
                if ss > ZEROS.len() as u64 {
                    touched + zeros
                } else {
                    touched
                }
            }
        };
        usize::try_from(most).unwrap_or(usize::MAX)
    }

    /// [`FileData::read_with`] with `N` slices on the stack (`most` is the
    /// bound from `most_pieces`; past `N` they go into a `Vec` of that size).
    fn lend_into<const N: usize, R>(
        &self,
        ss: u64,
        off: u64,
        len: usize,
        most: usize,
        f: impl FnOnce(&[IoSlice<'_>]) -> R,
    ) -> R {
        #[cfg(not(loom))]
        {
            let mut iov = Iov::<N>::new(most);
            self.pieces(ss, off, len, |p| match p {
                Piece::Mem(b) => iov.push(b),
                Piece::Zeros(n) => iov.zeros(n),
                // SAFETY: the range is inside this version's size, below the
                // `init` the sector had when this version was published, and
                // the slice cannot outlive `self` (this version) (see "Why
                // the slices are not written while `f` runs" on `read_with`:
                // the runner writes in place only past `init` or in sectors
                // no held table reaches). loom: `read_with`.
                Piece::Sector(s, within, take) => iov.push(unsafe { s.lend(within, take) }),
            });
            f(iov.slices())
        }
        #[cfg(loom)]
        {
            // Under loom a lent range is a `Lent` holding the cells as being
            // read, so the pieces are collected first and lent in order.
            enum Held<'a> {
                Mem(&'a [u8]),
                Zeros(usize),
                Lent(crate::sync::Lent<'a>),
            }
            let mut held = Vec::new();
            self.pieces(ss, off, len, |p| {
                held.push(match p {
                    Piece::Mem(b) => Held::Mem(b),
                    Piece::Zeros(n) => Held::Zeros(n),
                    // SAFETY: as in the normal build above; loom checks it
                    // (`read_with`): the `Lent` marks the cells as being
                    // read until it drops, after `f` returns.
                    Piece::Sector(s, within, take) => Held::Lent(unsafe { s.lend(within, take) }),
                })
            });
            let mut iov = Iov::<N>::new(most);
            for h in &held {
                match h {
                    Held::Mem(b) => iov.push(b),
                    Held::Zeros(n) => iov.zeros(*n),
                    Held::Lent(l) => iov.push(l),
                }
            }
            f(iov.slices())
        }
    }

    /// Walks the bytes at `off..off + len`, clipped at the end of the file,
    /// as pieces in order: at most one per sector.
    fn pieces<'a>(&'a self, ss: u64, off: u64, len: usize, mut each: impl FnMut(Piece<'a>)) {
        if off >= self.len {
            return;
        }
        let n = (self.len - off).min(len as u64) as usize;
        match &self.content {
            Content::Empty => each(Piece::Zeros(n)),
            Content::Inline(b) => {
                // Inline bytes are exactly `len` long.
                let o = off as usize;
                each(Piece::Mem(&b.bytes[o..o + n]));
            }
            Content::Sectors(t) => {
                let mut done = 0usize;
                while done < n {
                    let pos = off + done as u64;
                    let (k, within) = (pos / ss, (pos % ss) as usize);
                    let take = (ss as usize - within).min(n - done);
                    match t.get(k) {
                        Some(s) => each(Piece::Sector(s, within, take)),
                        None => each(Piece::Zeros(take)),
                    }
                    done += take;
                }
            }
        }
    }

    /// Writes `data` at `off`, growing the file if needed.
    ///
    /// # Errors
    /// `FileTooBig` past the maximum size; `NoSpace` at the memory limit. On
    /// error nothing changed.
    pub(crate) fn write(&mut self, cx: &Ctx<'_>, off: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = off.checked_add(data.len() as u64).ok_or(Error::FileTooBig)?;
        if end > cx.max_size {
            return Err(Error::FileTooBig);
        }
        let new_len = self.len.max(end);
        self.mutate(cx, &Change { new_len, write: Some((off, end, Src::Bytes(data))), fill: None })
    }

    /// Sets the size (truncate or extend with zeros).
    ///
    /// # Errors
    /// `FileTooBig`, `NoSpace` (growing only). On error nothing changed.
    pub(crate) fn set_len(&mut self, cx: &Ctx<'_>, new_len: u64) -> Result<()> {
        if new_len > cx.max_size {
            return Err(Error::FileTooBig);
        }
        let trim = new_len == self.len && matches!(self.content, Content::Sectors(_));
        if new_len < self.len || trim {
            // Also for the same size: sectors reserved past the end (by
            // `fallocate` with `KEEP_SIZE`) go back, as on tmpfs.
            self.shrink(cx, new_len);
            Ok(())
        } else if new_len > self.len {
            self.mutate(cx, &Change { new_len, write: None, fill: None })
        } else {
            Ok(())
        }
    }

    /// Makes `off..end` read as zeros without allocating for it: the file
    /// grows to `end` if shorter (sparsely), whole sectors inside the old
    /// size become holes, partial ones are zeroed (what `copy_file_range`
    /// does for a hole of its source).
    ///
    /// # Errors
    /// `FileTooBig`; `NoSpace` only if growing converts an inline file.
    pub(crate) fn zero(&mut self, cx: &Ctx<'_>, off: u64, end: u64) -> Result<()> {
        if end > cx.max_size {
            return Err(Error::FileTooBig);
        }
        if end > self.len {
            // Growth first: it is the step that can fail.
            let old = self.len;
            self.set_len(cx, end)?;
            self.punch(cx, off, old);
        } else {
            self.punch(cx, off, end);
        }
        Ok(())
    }

    /// `fallocate(2)` with `mode` over `off..off + len`.
    ///
    /// # Errors
    /// `InvalidArgument` for a zero length or bad flag combination,
    /// `NotSupported` for unknown modes, `FileTooBig`, `NoSpace`.
    pub(crate) fn fallocate(&mut self, cx: &Ctx<'_>, mode: u32, off: u64, len: u64) -> Result<()> {
        if mode & !(FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE) != 0 {
            return Err(Error::NotSupported);
        }
        if len == 0 {
            return Err(Error::InvalidArgument);
        }
        let end = off.checked_add(len).ok_or(Error::FileTooBig)?;
        if end > cx.max_size || end > i64::MAX as u64 {
            return Err(Error::FileTooBig);
        }
        let keep = mode & FALLOC_KEEP_SIZE != 0;
        if mode & FALLOC_PUNCH_HOLE != 0 {
            if !keep {
                return Err(Error::NotSupported);
            }
            if mode & FALLOC_ZERO_RANGE != 0 {
                return Err(Error::InvalidArgument);
            }
            self.punch(cx, off, end.min(self.len));
            return Ok(());
        }
        let new_len = if keep { self.len } else { self.len.max(end) };
        // ZERO_RANGE zeroes what is there inside the size (in place or by
        // copy-on-write, like an overwrite with zeros: no more memory once
        // done) and allocates the holes; the plain modes only allocate holes.
        let write = (mode & FALLOC_ZERO_RANGE != 0 && off < new_len).then_some((off, end.min(new_len), Src::Zeros));
        self.mutate(cx, &Change { new_len, write, fill: Some((off, end)) })
    }

    /// `SEEK_DATA` (`data = true`) or `SEEK_HOLE` from `off`.
    ///
    /// # Errors
    /// `NoSuchOffset` if `off` is at or past the end (or no data follows it).
    pub fn seek(&self, ss: u64, off: u64, data: bool) -> Result<u64> {
        if off >= self.len {
            return Err(Error::NoSuchOffset);
        }
        match (&self.content, data) {
            (Content::Empty, true) => Err(Error::NoSuchOffset),
            (Content::Empty, false) => Ok(off),
            (Content::Inline(_), true) => Ok(off),
            (Content::Inline(_), false) => Ok(self.len),
            (Content::Sectors(t), true) => match t.next_present(off / ss) {
                Some(k) => {
                    let pos = (k.saturating_mul(ss)).max(off);
                    if pos >= self.len {
                        Err(Error::NoSuchOffset)
                    } else {
                        Ok(pos)
                    }
                }
                None => Err(Error::NoSuchOffset),
            },
            (Content::Sectors(t), false) => {
                let k = t.next_absent(off / ss);
                Ok(k.saturating_mul(ss).max(off).min(self.len))
            }
        }
    }

    fn inline_bytes(&self) -> &[u8] {
        match &self.content {
            Content::Inline(b) => &b.bytes,
            _ => &[],
        }
    }

    fn set_inline(&mut self, bytes: Vec<u8>, charge: Charge) {
        self.len = bytes.len() as u64;
        self.content = if bytes.is_empty() {
            Content::Empty
        } else {
            Content::Inline(Arc::new(Inline { bytes: bytes.into_boxed_slice(), _charge: Some(charge) }))
        };
    }

    fn shrink(&mut self, cx: &Ctx<'_>, new_len: u64) {
        let ss = cx.ss();
        match &mut self.content {
            Content::Empty => self.len = new_len,
            Content::Inline(b) => {
                let bytes = b.bytes[..new_len as usize].to_vec();
                // Shrinking must not fail when full: the new buffer is smaller
                // than the one it replaces, which is freed right after.
                let charge = cx.pool.reserve_forced(new_len).charge(new_len);
                match charge {
                    Ok(c) => self.set_inline(bytes, c),
                    Err(_) => unreachable!("a forced reservation holds the bytes it was made for"),
                }
            }
            Content::Sectors(t) => {
                t.remove_range(new_len.div_ceil(ss), u64::MAX);
                self.len = new_len;
                if new_len == 0 {
                    self.content = Content::Empty;
                }
            }
        }
    }

    /// Zeros `off..end` (clipped to the size) without allocating: whole
    /// sectors become holes, partial ones are zeroed (copy-on-write when shared).
    fn punch(&mut self, cx: &Ctx<'_>, off: u64, end: u64) {
        if off >= end {
            return;
        }
        let ss = cx.ss();
        let len = self.len;
        match &mut self.content {
            Content::Empty => {}
            Content::Inline(b) => {
                let mut bytes = b.bytes.to_vec();
                bytes[off as usize..end as usize].fill(0);
                let charge = cx.pool.reserve_forced(len).charge(len);
                match charge {
                    Ok(c) => self.set_inline(bytes, c),
                    Err(_) => unreachable!("a forced reservation holds the bytes it was made for"),
                }
            }
            Content::Sectors(t) => {
                let first_whole = off.div_ceil(ss);
                let end_whole = end / ss;
                let mut edges = Vec::with_capacity(2);
                if off % ss != 0 {
                    edges.push(off / ss);
                }
                if end % ss != 0 {
                    edges.push(end / ss);
                }
                edges.dedup();
                if first_whole < end_whole {
                    t.remove_range(first_whole, end_whole);
                }
                for k in edges {
                    let base = k * ss;
                    let vis = clamp(len, base, ss);
                    let a = clamp(off, base, ss);
                    let b = clamp(end, base, ss).min(vis);
                    if a >= b {
                        continue;
                    }
                    // Exclusivity first: the clone below is one more `Arc`.
                    let exclusive = t.is_exclusive(k);
                    let Some(s) = t.get(k).cloned() else { continue };
                    if a == 0 && b >= vis {
                        t.set(k, None);
                    } else if exclusive {
                        // SAFETY: no published table reaches `s` (exclusive along
                        // its path, rule 3), and this runner is its only user.
                        unsafe { s.zero(a, b - a) };
                    } else {
                        let mut res = cx.pool.reserve_forced(ss);
                        // A forced reservation of one sector only fails if the
                        // OS refuses memory; then leave the bytes (still a
                        // consistent file) rather than panic.
                        if let Ok(n) = res.sector() {
                            // SAFETY: `n` is fresh (no table reaches it yet);
                            // `s`'s bytes below `vis` are only read, as readers
                            // do (rule 3 forbids writing them). Distinct sectors.
                            unsafe {
                                n.copy_from(&s, 0, a);
                                n.zero(a, b - a);
                                n.copy_from(&s, b, vis - b);
                            }
                            n.set_init(vis);
                            t.set(k, Some(n));
                        }
                    }
                }
            }
        }
    }

    /// Applies `ch` all or nothing: plans it (counts, read-only), reserves
    /// what the plan needs, then applies it (infallible but for the OS
    /// refusing memory).
    fn mutate(&mut self, cx: &Ctx<'_>, ch: &Change<'_>) -> Result<()> {
        // A reservation past the end (`fallocate` with `KEEP_SIZE`) needs
        // sectors: an inline buffer holds exactly the file's bytes.
        let past_end = ch.fill.is_some_and(|(_, end)| end > ch.new_len);
        let inline = ch.new_len <= cx.inline_max && !past_end && !matches!(self.content, Content::Sectors(_));
        if inline {
            // The new buffer replaces the old one, which is freed right after:
            // only the growth counts against the limit, so an overwrite works
            // on a full file system (as it does for sectors).
            let old_len = self.inline_bytes().len() as u64;
            let mut res = cx.pool.reserve(ch.new_len - old_len)?;
            res.join(cx.pool.reserve_forced(old_len));
            let mut bytes = vec![0u8; ch.new_len as usize];
            let old = self.inline_bytes();
            bytes[..old.len()].copy_from_slice(old);
            if let Some((off, end, src)) = ch.write {
                let dst = &mut bytes[off as usize..end as usize];
                match src {
                    Src::Bytes(d) => dst.copy_from_slice(d),
                    Src::Zeros => dst.fill(0),
                }
            }
            let charge = res.charge(ch.new_len)?;
            self.set_inline(bytes, charge);
            return Ok(());
        }
        let ss = cx.ss();
        let plan = self.plan(ss, ch);
        let mut res = cx.pool.reserve(plan.grow.checked_mul(ss).ok_or(Error::NoSpace)?)?;
        if plan.replace > 0 {
            // A copy-on-write replacement frees the sector it replaces as soon
            // as the last reader of the old table is done: the file's use does
            // not grow, so it may pass the limit for that moment, and an
            // overwrite works on a full file system (as on tmpfs).
            res.join(cx.pool.reserve_forced(plan.replace * ss));
        }
        self.apply(cx, ch, res)
    }

    /// How many fresh sectors `ch` needs, read-only, in time bounded by the
    /// sectors the file has in the touched ranges (never by the ranges'
    /// length: a 10 TiB `fallocate` costs a few table walks).
    fn plan(&self, ss: u64, ch: &Change<'_>) -> Plan {
        let shape = Shape::new(self.len, ss, ch);
        let Content::Sectors(t) = &self.content else {
            // Converting: every written or filled sector is fresh, and so is
            // sector 0 for the inline bytes if nothing else covers it.
            let covered = shape.covered();
            let inline0 = matches!(self.content, Content::Inline(_)) && !covered.iter().any(|r| r.contains(&0));
            let grow = covered.iter().map(|r| r.end - r.start).sum::<u64>() + u64::from(inline0);
            return Plan { grow, replace: 0 };
        };
        // Holes in the written or filled ranges each take a fresh sector.
        let grow = shape.covered().iter().map(|r| (r.end - r.start) - t.count_range(r.start, r.end)).sum();
        // Present sectors that change take a twin unless changed in place.
        let mut replace = 0;
        for r in shape.present_ranges() {
            let mut k = r.start;
            while let Some(p) = t.next_present_before(k, r.end) {
                if needs_fresh(t, &shape.span(p)) {
                    replace += 1;
                }
                k = p + 1;
            }
        }
        Plan { grow, replace }
    }

    fn apply(&mut self, cx: &Ctx<'_>, ch: &Change<'_>, mut res: Reservation) -> Result<()> {
        let ss = cx.ss();
        let shape = Shape::new(self.len, ss, ch);
        // Take every sector before changing anything (as many as the plan
        // reserved: bounded by the limit and by the file's own sectors).
        let mut fresh = Fresh { few: [None, None], more: Vec::new(), pool: cx.pool };
        let n = (res.remaining() / ss) as usize;
        if n > fresh.few.len() {
            fresh.more.reserve_exact(n);
        }
        for i in 0..n {
            let s = res.sector()?;
            match fresh.few.get_mut(i).filter(|_| n <= 2) {
                Some(slot) => *slot = Some(s),
                None => fresh.more.push(s),
            }
        }
        let mut table = match std::mem::take(&mut self.content) {
            Content::Sectors(t) => t,
            Content::Empty => Table::default(),
            Content::Inline(b) => {
                let mut t = Table::default();
                let s = fresh.take()?;
                let n = b.bytes.len();
                // SAFETY: `s` is fresh: no table reaches it yet.
                unsafe { s.write(0, &b.bytes) };
                s.set_init(n);
                t.set(0, Some(s));
                t
            }
        };
        let mut cursor = Cursor { next: 0 };
        while let Some(k) = cursor.next(&shape, &table) {
            let sp = shape.span(k);
            let src = match ch.write {
                Some((off, _, Src::Bytes(d))) if sp.b > sp.a => {
                    let from = (k * ss + sp.a as u64 - off) as usize;
                    Src::Bytes(&d[from..from + (sp.b - sp.a)])
                }
                _ => Src::Zeros,
            };
            if let Err(e) = apply_span(&mut table, &sp, src, &mut fresh) {
                // Only a failed mapping of new memory gets here; the spans
                // applied so far are whole, so keep the table they built.
                self.content = Content::Sectors(table);
                return Err(e);
            }
        }
        self.len = ch.new_len;
        self.content = Content::Sectors(table);
        Ok(())
    }
}

/// Slices a read lends without a heap allocation ([`FileData::read_with`]):
/// 1 MiB of 4 KiB sectors with holes between them is at most 257 (129
/// sectors, 128 holes), and the FUSE frontend's `writev` takes up to 319
/// pieces after its header.
pub const READ_PIECES: usize = 320;

/// Zeros for holes: a hole is lent as slices of this (adjacent holes merged,
/// 64 KiB a slice). Never written (an immutable static).
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// One piece of a read, in file order.
enum Piece<'a> {
    /// Bytes of an immutable buffer (an inline file's).
    Mem(&'a [u8]),
    /// Bytes that read as zero (a hole, an empty file's size).
    Zeros(usize),
    /// `len` bytes at `within` of a sector this version reaches.
    Sector(&'a Sector, usize, usize),
}

/// The stack array for reads of a few slices (a 4 KiB read, 1 MiB of
/// 64 KiB sectors): 512 bytes to fill instead of 5 KiB.
const FEW_PIECES: usize = 32;

/// The slices of one read: `N` on the stack; past that all of them in one
/// `Vec` (sized to the bound the caller gives, so it allocates once).
struct Iov<'a, const N: usize> {
    stack: [IoSlice<'a>; N],
    n: usize,
    heap: Vec<IoSlice<'a>>,
    /// How many slices to reserve once they no longer fit on the stack.
    most: usize,
    /// Zero bytes not yet pushed: adjacent holes become one run.
    zeros: usize,
}

impl<'a, const N: usize> Iov<'a, N> {
    fn new(most: usize) -> Self {
        Iov { stack: [IoSlice::new(&[]); N], n: 0, heap: Vec::new(), most, zeros: 0 }
    }

    fn push(&mut self, b: &'a [u8]) {
        self.flush_zeros();
        self.push_slice(b);
    }

    fn zeros(&mut self, n: usize) {
        self.zeros += n;
    }

    fn flush_zeros(&mut self) {
        while self.zeros > 0 {
            let k = self.zeros.min(ZEROS.len());
            self.push_slice(&ZEROS[..k]);
            self.zeros -= k;
        }
    }

    fn push_slice(&mut self, b: &'a [u8]) {
        if b.is_empty() {
            return;
        }
        if self.heap.is_empty() && self.n < N {
            self.stack[self.n] = IoSlice::new(b);
            self.n += 1;
            return;
        }
        if self.heap.is_empty() {
            self.heap.reserve(self.most.max(2 * N));
            self.heap.extend_from_slice(&self.stack[..self.n]);
        }
        self.heap.push(IoSlice::new(b));
    }

    fn slices(&mut self) -> &[IoSlice<'a>] {
        self.flush_zeros();
        debug_assert!(self.n.max(self.heap.len()) <= self.most, "more slices than most_pieces");
        if self.heap.is_empty() {
            &self.stack[..self.n]
        } else {
            &self.heap
        }
    }
}

/// What a mutation writes into its range.
#[derive(Clone, Copy)]
enum Src<'a> {
    Bytes(&'a [u8]),
    Zeros,
}

/// One mutation of a file's contents: the size becomes `new_len` (never
/// smaller), `write` (a byte range within `new_len`, and what goes there) is
/// written, and holes in `fill` (a byte range) are allocated, zeroed.
struct Change<'a> {
    new_len: u64,
    write: Option<(u64, u64, Src<'a>)>,
    fill: Option<(u64, u64)>,
}

/// What a mutation needs from the pool.
struct Plan {
    /// Fresh sectors for holes (counted against the limit).
    grow: u64,
    /// Copy-on-write twins of visible sectors (forced: they replace one).
    replace: u64,
}

/// A mutation in sector indices: which sectors it touches and how.
///
/// The sectors touched are, in order: every sector of the written range
/// `w`; the holes of the filled range `f`; and, when the file grows, the
/// partial last sector `tail` and the sectors present in `g` (reserved past
/// the old end, whose newly visible bytes must read as zeros).
struct Shape {
    ss: u64,
    old_len: u64,
    new_len: u64,
    write: Option<(u64, u64)>,
    fill: Option<(u64, u64)>,
    w: Range<u64>,
    f: Range<u64>,
    tail: Option<u64>,
    g: Range<u64>,
}

impl Shape {
    fn new(old_len: u64, ss: u64, ch: &Change<'_>) -> Shape {
        let write = ch.write.map(|(off, end, _)| (off, end)).filter(|&(off, end)| off < end);
        let fill = ch.fill.filter(|&(off, end)| off < end);
        let sectors = |r: Option<(u64, u64)>| r.map_or(0..0, |(off, end)| off / ss..end.div_ceil(ss));
        let grows = ch.new_len > old_len;
        Shape {
            ss,
            old_len,
            new_len: ch.new_len,
            write,
            fill,
            w: sectors(write),
            f: sectors(fill),
            tail: (grows && old_len % ss != 0).then_some(old_len / ss),
            g: if grows { old_len.div_ceil(ss)..ch.new_len.div_ceil(ss) } else { 0..0 },
        }
    }

    /// The sector ranges whose holes take a fresh sector: `w` and `f`, as
    /// disjoint pieces (so nothing is counted twice).
    fn covered(&self) -> [Range<u64>; 2] {
        disjoint([self.w.clone(), self.f.clone()])
    }

    /// The ranges whose present sectors may change: `w`, `tail` and `g`.
    fn present_ranges(&self) -> [Range<u64>; 3] {
        disjoint([self.w.clone(), self.tail.map_or(0..0, |k| k..k + 1), self.g.clone()])
    }

    /// Sector `k`'s part in the mutation.
    fn span(&self, k: u64) -> Span {
        let (ss, base) = (self.ss, k * self.ss);
        let (a, b) = match self.write {
            Some((off, end)) => {
                let (a, b) = (clamp(off, base, ss), clamp(end, base, ss));
                if a < b {
                    (a, b)
                } else {
                    (0, 0)
                }
            }
            None => (0, 0),
        };
        let fill = self.fill.is_some_and(|(off, end)| off < base + ss && end > base);
        Span { k, old_vis: clamp(self.old_len, base, ss), new_vis: clamp(self.new_len, base, ss), a, b, fill }
    }
}

/// The union of `rs` as disjoint ranges in order, padded with empty ones.
fn disjoint<const N: usize>(mut rs: [Range<u64>; N]) -> [Range<u64>; N] {
    rs.sort_unstable_by_key(|r| (r.start >= r.end, r.start));
    let mut out: [Range<u64>; N] = std::array::from_fn(|_| 0..0);
    let mut n = 0usize;
    for r in rs.into_iter().filter(|r| r.start < r.end) {
        match n.checked_sub(1).map(|i| &mut out[i]) {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => {
                out[n] = r;
                n += 1;
            }
        }
    }
    out
}

/// Walks the sectors a [`Shape`] touches in increasing order, asking the
/// table (which the caller changes between steps, only at indices already
/// walked) for the next hole of `f` and the next present sector of `g`, so
/// each step is O(log n) and the walk visits only sectors it changes.
struct Cursor {
    next: u64,
}

impl Cursor {
    fn next(&mut self, sh: &Shape, t: &Table) -> Option<u64> {
        let from = self.next;
        let mut best: Option<u64> = None;
        let mut offer = |k: Option<u64>| {
            if let Some(k) = k {
                best = Some(best.map_or(k, |b| b.min(k)));
            }
        };
        offer(Some(from.max(sh.w.start)).filter(|&k| k < sh.w.end));
        let f0 = from.max(sh.f.start);
        // Bounded by the range: an unbounded search from `f0` would walk
        // every sector after it when nothing is filled (issue 18).
        offer(t.next_absent_before(f0, sh.f.end));
        offer(sh.tail.filter(|&k| k >= from));
        let g0 = from.max(sh.g.start);
        offer(t.next_present_before(g0, sh.g.end));
        let k = best?;
        self.next = k.checked_add(1)?;
        Some(k)
    }
}

fn needs_fresh(t: &Table, sp: &Span) -> bool {
    match t.get(sp.k) {
        None => sp.b > sp.a || sp.fill,
        Some(s) => match sp.modified_start() {
            None => false,
            Some(ms) => !(ms >= s.init() || t.is_exclusive(sp.k)),
        },
    }
}

/// Zeros `from..to` of `s` except the written range `a..b`.
///
/// # Safety
/// As for [`Sector::write`] over `from..to`: the range is the caller's alone.
unsafe fn zero_except(s: &Sector, from: usize, to: usize, a: usize, b: usize) {
    if from >= to {
        return;
    }
    if b <= a {
        // SAFETY: inside `from..to`, the caller's alone.
        unsafe { s.zero(from, to - from) };
        return;
    }
    if from < a {
        // SAFETY: inside `from..to`, the caller's alone.
        unsafe { s.zero(from, a.min(to) - from) };
    }
    if to > b {
        let z = from.max(b);
        // SAFETY: inside `from..to`, the caller's alone.
        unsafe { s.zero(z, to - z) };
    }
}

/// Puts `src` (exactly `b - a` bytes, or zeros) at `a..b` of `s`.
///
/// # Safety
/// As for [`Sector::write`] over `a..b`: the range is the caller's alone.
unsafe fn put(s: &Sector, a: usize, b: usize, src: Src<'_>) {
    if b > a {
        match src {
            // SAFETY: `a..b` is the caller's alone (this function's contract).
            Src::Bytes(d) => unsafe { s.write(a, d) },
            // SAFETY: as above.
            Src::Zeros => unsafe { s.zero(a, b - a) },
        }
    }
}

/// The sectors a plan reserved, handed out by `apply_span`: up to two
/// (a write inside one sector or across a boundary) without a `Vec`.
struct Fresh<'a> {
    few: [Option<Arc<Sector>>; 2],
    more: Vec<Arc<Sector>>,
    pool: &'a Pool,
}

impl Fresh<'_> {
    /// A reserved sector. Should the plan have reserved too few (a bug), a
    /// forced reservation keeps the write whole rather than dropping bytes
    /// that are about to be acknowledged.
    fn take(&mut self) -> Result<Arc<Sector>> {
        if let Some(s) = self.more.pop().or_else(|| self.few.iter_mut().find_map(Option::take)) {
            return Ok(s);
        }
        debug_assert!(false, "plan_mutation reserved too few sectors");
        self.pool.reserve_forced(self.pool.sector_size() as u64).sector()
    }
}

fn apply_span(t: &mut Table, sp: &Span, src: Src<'_>, fresh: &mut Fresh<'_>) -> Result<()> {
    let Span { k, old_vis, new_vis, a, b, fill } = *sp;
    // Decided before the sector is cloned out below: that clone is one more
    // `Arc` and would make every sector look shared (then the copy-on-write
    // branch wants a fresh sector the plan did not reserve).
    let exclusive = t.is_exclusive(k);
    match t.get(k).cloned() {
        None => {
            if b <= a && !fill {
                return Ok(());
            }
            let s = fresh.take()?;
            // SAFETY: `s` is fresh: no table reaches it yet (rule 3).
            unsafe {
                zero_except(&s, 0, new_vis, a, b);
                put(&s, a, b, src);
            }
            s.set_init(new_vis.max(b));
            t.set(k, Some(s));
        }
        Some(s) => {
            let Some(ms) = sp.modified_start() else { return Ok(()) };
            #[cfg(not(any(loom_bug = "sector_write_shared", loom_bug = "sector_write_past_size")))]
            let in_place = ms >= s.init() || exclusive;
            // Injected bug (loom-tests/tests/table_publish.rs): write in place below `init` when shared.
            #[cfg(loom_bug = "sector_write_shared")]
            let in_place = {
                let _ = (ms, exclusive);
                true
            };
            // Injected bug (loom-tests/tests/read_with.rs): take "past the old
            // size" for "past `init`", so a file truncated into a sector and
            // grown again rewrites in place bytes an older version still shows.
            #[cfg(loom_bug = "sector_write_past_size")]
            let in_place = ms >= old_vis || exclusive;
            if in_place {
                // SAFETY: every byte changed is at or past `ms`: either past
                // `init`, which no table exposes (rule 2: readers of the
                // published table read only below it), or the sector is
                // exclusive along its table path (rule 3). loom:
                // `table_publish::append_in_place_past_init`,
                // `overwrite_visible_sector` (bug `sector_write_shared`).
                unsafe {
                    if new_vis > old_vis {
                        zero_except(&s, old_vis, new_vis, a, b);
                    }
                    put(&s, a, b, src);
                }
                s.set_init(s.init().max(new_vis).max(b));
            } else {
                let n = fresh.take()?;
                // SAFETY: `n` is fresh (no table reaches it yet); `s`'s bytes
                // below `old_vis <= init` are only read, as readers do (rule 3
                // forbids writing them: `s` is shared). Distinct sectors.
                // loom: `table_publish::partial_overwrite`.
                unsafe {
                    if b > a {
                        n.copy_from(&s, 0, a.min(old_vis));
                        if b < old_vis {
                            n.copy_from(&s, b, old_vis - b);
                        }
                    } else {
                        n.copy_from(&s, 0, old_vis);
                    }
                    zero_except(&n, old_vis, new_vis, a, b);
                    put(&n, a, b, src);
                }
                n.set_init(new_vis.max(b));
                t.set(k, Some(n));
            }
        }
    }
    Ok(())
}
