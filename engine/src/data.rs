//! File contents: exact-size inline bytes for small files, a page table for
//! the rest.
//!
//! A [`FileData`] lives inside one version of a file (`node::Snap`); the
//! file's runner builds the next version as a *draft* that shares
//! everything untouched with the published one (`FileData::share`), and
//! changes it through a `table::Edit`. The rules that make this race-free
//! are the page contract in [`crate::sector`]; this module applies them:
//!
//! * Every mutation first *plans* (read-only) how many fresh pages it needs,
//!   reserves them (failing with `NoSpace` before any change), takes them
//!   (failing with `OutOfMemory` if the OS refuses memory, still before any
//!   change), and only then *applies*, which cannot fail. So a failed
//!   operation leaves the file exactly as it was. The draft's table is
//!   changed in place, so should an apply unwind (a bug), what it made is
//!   reachable from the draft and goes back when the draft is dropped.
//! * Holes are whole sectors: writing into one takes a whole fresh sector
//!   (`sector_size / page_size` pages). A page present in the table is
//!   changed in place only if it is fresh (taken in this batch) or every
//!   byte changed is at or past its `init` (never shown to a reader).
//!   Otherwise that one page is copied first (copy-on-write of 4 KiB, never
//!   of the whole sector), and the page it replaces is retired.
//! * Bytes a file exposes that were never written read as zero: holes are
//!   absent sectors, and when a file grows over part of a page the newly
//!   visible bytes are zeroed (in place past `init`, else by copy-on-write).

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::ops::Range;

pub mod inline;

use inline::Inline;

use crate::sector::table::{Edit, Leaf, LeafMut, Retired, Table, LEAF, SLOT_COST};
use crate::sector::{Charge, Pool, Reservation};
use crate::sync::{Page, RawMem};
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
    /// The metadata budget (extended attributes' values are charged to it).
    pub(crate) meta: &'a crate::sync::Arc<crate::budget::MetaBudget>,
    pub(crate) inline_max: u64,
    pub(crate) max_size: u64,
}

impl Ctx<'_> {
    fn ss(&self) -> u64 {
        self.pool.sector_size() as u64
    }
    fn ps(&self) -> u64 {
        self.pool.page_size() as u64
    }
}

#[derive(Default)]
enum Content {
    #[default]
    Empty,
    Inline(Inline),
    Sectors(Table),
}

/// The contents of a regular file (one version of them).
#[derive(Default)]
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

/// One page's part in a mutation (byte offsets within the page).
#[derive(Clone, Copy)]
struct Span {
    /// Bytes of the page visible before and after the mutation.
    old_vis: usize,
    new_vis: usize,
    /// The written range within the page (`a == b`: none).
    a: usize,
    b: usize,
}

impl Span {
    /// The lowest byte changed in a present page, if any.
    fn modified_start(&self) -> Option<usize> {
        let w = (self.b > self.a).then_some(self.a);
        let g = (self.new_vis > self.old_vis).then_some(self.old_vis);
        match (w, g) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }
}

fn clamp(v: u64, base: u64, size: u64) -> usize {
    v.saturating_sub(base).min(size) as usize
}

/// The slot of page `p` in its leaf.
fn slot(p: u64) -> usize {
    (p % LEAF as u64) as usize
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
    pub fn allocated(&self, _ss: u64) -> u64 {
        match &self.content {
            Content::Empty => 0,
            Content::Inline(b) => b.bytes().len() as u64,
            Content::Sectors(t) => t.count() * t.page_size(),
        }
    }

    /// Copies bytes at `off` into `buf`, returning how many (0 at or past EOF).
    pub fn read(&self, _ss: u64, off: u64, buf: &mut [u8]) -> usize {
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
                buf.copy_from_slice(&b.bytes()[o..o + n]);
            }
            Content::Sectors(t) => {
                let mut at = 0usize;
                runs(t, off, n as u64, |r| match r {
                    Run::Mem(m, within, take) => {
                        // SAFETY: the run is inside this version's size, so
                        // below the `init` its pages had when it was
                        // published (page contract rule 1), where no runner
                        // writes while a version reaching them can be read;
                        // and the pages stay live while `self` (this
                        // version) is borrowed (rule 5). loom: `table_publish`.
                        unsafe { m.read(within, &mut buf[at..at + take]) };
                        at += take;
                    }
                    Run::Zeros(take) => {
                        buf[at..at + take].fill(0);
                        at += take;
                    }
                });
            }
        }
        n
    }

    /// Calls `f` with the bytes at `off..off + len` (clipped at the end of
    /// the file; none at or past it) as slices in order: of the page memory
    /// of this version (adjacent pages of one region as one slice), of its
    /// inline buffer (small files), and of a static zero page (holes). No
    /// byte is copied, and up to [`READ_PIECES`] slices nothing is allocated
    /// (a 1 MiB read is at most 257 slices of pages and 16 of zeros): the
    /// slices are an array on the stack, left uninitialised except for the
    /// ones made. Past that they go into one `Vec` (still no copy of the
    /// bytes).
    ///
    /// # Why the slices are not written while `f` runs
    /// `f` runs while `self` is borrowed, so this version (its table, every
    /// node and page it reaches, the inline buffer) is held until `f`
    /// returns, and the borrow checker keeps the slices from outliving the
    /// call. A page this version reaches is written in place only (page
    /// contract, [`crate::sector`]):
    ///
    /// 1. past its `init`, which is at least as high as when this version
    ///    was published (`init` never goes down), while every slice lies
    ///    below this version's size and so below that `init` (rule 1);
    /// 2. or if it is fresh: taken in the batch being built, so no version
    ///    ever published reaches it (rule 3), this one included. Every other
    ///    change goes to a fresh page by copy-on-write;
    ///
    /// and it goes back to the pool (to be written as someone's fresh page)
    /// only when this version and every older one are gone (rule 5: it is
    /// retired into the version that last reached it, and versions are
    /// freed oldest first), so not before `f` returns. Inline buffers and
    /// the zero page are never written after they are made. So no byte lent
    /// to `f` is written while `f` runs, as `&[u8]` requires; the same
    /// argument as for [`FileData::read`], held for `f`'s duration instead
    /// of a copy's. loom: `read_with` (slices held across a concurrent
    /// overwrite, append, regrowth and reuse of freed pages).
    pub fn read_with<R>(&self, _ss: u64, off: u64, len: usize, f: impl FnOnce(&[IoSlice<'_>]) -> R) -> R {
        let most = self.most_pieces(off, len);
        #[cfg(not(loom))]
        {
            let mut iov = Iov::new(most);
            self.pieces(off, len, |p| match p {
                Piece::Mem(b) => iov.push(b),
                Piece::Zeros(n) => iov.zeros(n),
                // SAFETY: the range is inside this version's size, below the
                // `init` its pages had when this version was published, and
                // the slice cannot outlive `self` (this version) (see "Why
                // the slices are not written while `f` runs" above: pages are
                // written in place only past `init` or when fresh, and freed
                // only after every version reaching them is gone). loom:
                // `read_with`.
                Piece::Run(m, within, take) => iov.push(unsafe { m.lend(within, take) }),
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
            self.pieces(off, len, |p| {
                held.push(match p {
                    Piece::Mem(b) => Held::Mem(b),
                    Piece::Zeros(n) => Held::Zeros(n),
                    // SAFETY: as in the normal build above; loom checks it
                    // (`read_with`): the `Lent` marks the cells as being
                    // read until it drops, after `f` returns.
                    Piece::Run(m, within, take) => Held::Lent(unsafe { m.lend(within, take) }),
                })
            });
            let mut iov = Iov::new(most);
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

    /// An upper bound on the slices [`FileData::read_with`] makes: at most
    /// one per page touched, and a run of zeros takes one per 64 KiB.
    fn most_pieces(&self, off: u64, len: usize) -> usize {
        if off >= self.len {
            return 0;
        }
        let n = (self.len - off).min(len as u64);
        let zeros = n.div_ceil(ZEROS.len() as u64);
        let most = match &self.content {
            Content::Empty => zeros,
            Content::Inline(_) => 1,
            Content::Sectors(t) => (off % t.page_size() + n).div_ceil(t.page_size()) + zeros,
        };
        usize::try_from(most).unwrap_or(usize::MAX)
    }

    /// Walks the bytes at `off..off + len`, clipped at the end of the file,
    /// as pieces in order.
    fn pieces<'a>(&'a self, off: u64, len: usize, mut each: impl FnMut(Piece<'a>)) {
        if off >= self.len {
            return;
        }
        let n = (self.len - off).min(len as u64) as usize;
        match &self.content {
            Content::Empty => each(Piece::Zeros(n)),
            Content::Inline(b) => {
                // Inline bytes are exactly `len` long.
                let o = off as usize;
                each(Piece::Mem(&b.bytes()[o..o + n]));
            }
            Content::Sectors(t) => runs(t, off, n as u64, |r| match r {
                Run::Mem(m, within, take) => each(Piece::Run(m, within, take)),
                Run::Zeros(take) => each(Piece::Zeros(take)),
            }),
        }
    }

    /// A second value over the same contents: the start of the draft of the
    /// next version.
    ///
    /// # Safety
    /// As for `Table::share`: used only as the draft of the next version of
    /// the version holding `self`, while that version is alive.
    pub(crate) unsafe fn share(&self) -> FileData {
        let content = match &self.content {
            Content::Empty => Content::Empty,
            Content::Inline(b) => Content::Inline(b.clone()),
            // SAFETY: the caller's contract is `Table::share`'s.
            Content::Sectors(t) => Content::Sectors(unsafe { t.share() }),
        };
        FileData { len: self.len, content }
    }

    /// Page `p`'s address and whether it is marked shared (a clone's, see
    /// `Table`), if present: for the image saver, which stores a page held
    /// by two slots once (`image.rs`, CLONE records).
    pub(crate) fn page_shared(&self, p: u64) -> Option<(usize, bool)> {
        let Content::Sectors(t) = &self.content else { return None };
        let (l, _, i) = t.leaf(p)?;
        l.page(i).map(|m| (m.addr(), l.marked_shared(i)))
    }

    /// Whether the contents are a page table (so the version must be able
    /// to free it).
    pub(crate) fn has_table(&self) -> bool {
        matches!(self.content, Content::Sectors(_))
    }

    /// Takes the page table out as one retired subtree (the file's last
    /// version going away), leaving the contents empty: to be freed by the
    /// version protocol (`crate::node`, "Versions") once no version anyone
    /// can read reaches any of it.
    pub(crate) fn take_tree(&mut self) -> Option<Retired> {
        let t = match &mut self.content {
            Content::Sectors(t) => t.take_tree(),
            _ => None,
        };
        self.content = Content::Empty;
        t
    }

    /// Undoes a draft of `gen` that will not be published (see
    /// `Table::abort`), leaving the contents empty.
    ///
    /// # Safety
    /// As for `Table::abort`.
    pub(crate) unsafe fn abort(&mut self, gen: u64, pool: &Pool) {
        if let Content::Sectors(t) = &mut self.content {
            // SAFETY: the caller's contract.
            unsafe { t.abort(gen, pool) };
        }
        self.content = Content::Empty;
    }

    /// Forgets the contents without freeing anything (what they reach
    /// belongs to another version).
    pub(crate) fn forget(&mut self) {
        self.content = Content::Empty;
        self.len = 0;
    }

    /// Writes `data` at `off`, growing the file if needed.
    ///
    /// # Errors
    /// `FileTooBig` past the maximum size; `NoSpace` at the memory limit. On
    /// error nothing changed.
    pub(crate) fn write(&mut self, cx: &Ctx<'_>, ed: &mut Edit<'_>, off: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = off.checked_add(data.len() as u64).ok_or(Error::FileTooBig)?;
        if end > cx.max_size {
            return Err(Error::FileTooBig);
        }
        let new_len = self.len.max(end);
        let ch = Change { new_len, write: Some((off, end, Src::Bytes(data))), fill: None };
        if let Some(r) = self.overwrite_in_leaf(cx, ed, &ch) {
            return r;
        }
        self.mutate(cx, ed, &ch)
    }

    /// [`FileData::write`], or at the limit as much of `data` as fits: the
    /// partial write POSIX asks for at the end of a medium, which tmpfs
    /// makes (it stores what fits, returns the count, and the next call
    /// fails). The prefix ends on a sector boundary (memory is charged by
    /// the sector) and the free memory surely holds it: a prefix over `j`
    /// sectors needs at most `j` sectors. Each attempt is all or nothing
    /// (`write` reserves before it changes anything); when one still fails
    /// (another writer took the memory meanwhile, or the file's inline
    /// bytes move into a sector outside the prefix) the next takes fewer
    /// sectors, halving from the third on, so there are at most
    /// log2(sectors) + 3 attempts, each bounded like `write` by the
    /// range's sectors.
    ///
    /// # Errors
    /// As [`FileData::write`]; `NoSpace` only if not even the part up to the
    /// first sector boundary fits.
    pub(crate) fn write_some(&mut self, cx: &Ctx<'_>, ed: &mut Edit<'_>, off: u64, data: &[u8]) -> Result<usize> {
        match self.write(cx, ed, off, data) {
            Err(Error::NoSpace) => {}
            r => return r.map(|()| data.len()),
        }
        // `write` checked `off + len` (else `FileTooBig`, not `NoSpace`).
        let (ss, end) = (cx.ss(), off + data.len() as u64);
        let free = || cx.pool.limit().saturating_sub(cx.pool.used()) / ss;
        // First the longest prefix that needs no more new sectors than are
        // free, counting the sectors the file already has as it goes (a
        // write over fallocated or written sectors into a hole or past
        // them: a probe's page-cache write-back over a fallocated range
        // stored one sector of it, the kernel dropped the rest). Fails only
        // if another writer took the memory meanwhile, or the first sector
        // is new in another way (inline bytes moving out, a clone's page):
        // then the search below.
        if let Some(stop) = self.fits_until(ss, off, end, free()) {
            if stop > off && stop < end {
                let n = (stop - off) as usize;
                match self.write(cx, ed, off, &data[..n]) {
                    Err(Error::NoSpace) => {}
                    r => return r.map(|()| n),
                }
            }
        }
        // The prefixes: up to the sector boundaries strictly inside
        // `off..end`; the `j`-th (from 1) ends at `(first + j - 1) * ss`.
        let first = off / ss + 1;
        let bounds = ((end - 1) / ss + 1).saturating_sub(first);
        // The first prefix takes one sector more than are free (the sector
        // `off` is in may be there already: an append), the second as
        // many as are free, the rest half as many as the one before.
        let mut j = bounds.min(free() + 1);
        let mut tries = 0;
        while j > 0 {
            let n = ((first + j - 1) * ss - off) as usize;
            match self.write(cx, ed, off, &data[..n]) {
                Err(Error::NoSpace) => j = (if tries == 0 { j - 1 } else { j / 2 }).min(free()),
                r => return r.map(|()| n),
            }
            tries += 1;
        }
        Err(Error::NoSpace)
    }

    /// Where a write of `off..end` must stop to need at most `free` new
    /// sectors: the start of the `free + 1`-th sector of the range the file
    /// does not have (a hole, or past its sectors), else `end`. `None` for
    /// inline or empty contents (their first sector is new, and the bytes
    /// already there move into it). One table walk per run of absent
    /// sectors, at most `free + 1` of them.
    fn fits_until(&self, ss: u64, off: u64, end: u64, free: u64) -> Option<u64> {
        let Content::Sectors(t) = &self.content else { return None };
        let pps = ss / t.page_size();
        let (mut k, last) = (off / ss, (end - 1) / ss);
        let mut missing = 0u64;
        while k <= last {
            // Sectors are whole: a sector is present iff its first page is.
            let a = t.next_absent(k.saturating_mul(pps)) / pps;
            if a > last {
                break;
            }
            let back = t.next_present_before(a.saturating_mul(pps), (last + 1).saturating_mul(pps));
            let run_end = back.map_or(last + 1, |p| p / pps);
            let n = run_end - a;
            if missing + n > free {
                return Some(((a + (free - missing)).saturating_mul(ss)).clamp(off, end));
            }
            missing += n;
            k = run_end;
        }
        Some(end)
    }

    /// The common overwrite, planned and applied in one walk: `ch` writes
    /// inside the size (no growth, no fill) into pages of one table leaf
    /// that are all present. `None` if `ch` is not that (the general path
    /// then does it). The per-page rule is `change_page`, as on the general
    /// path.
    fn overwrite_in_leaf(&mut self, cx: &Ctx<'_>, ed: &mut Edit<'_>, ch: &Change<'_>) -> Option<Result<()>> {
        let Content::Sectors(t) = &mut self.content else { return None };
        let (off, end) = match ch.write {
            Some((off, end, Src::Bytes(_))) if end <= self.len && ch.fill.is_none() && off < end => (off, end),
            _ => return None,
        };
        let ps = t.page_size();
        let (p0, p1) = (off / ps, end.div_ceil(ps));
        if p0 / LEAF as u64 != (p1 - 1) / LEAF as u64 {
            return None;
        }
        let len = self.len;
        let span = |p: u64| Span {
            old_vis: clamp(len, p * ps, ps),
            new_vis: clamp(len, p * ps, ps),
            a: clamp(off, p * ps, ps),
            b: clamp(end, p * ps, ps),
        };
        // Plan: every page present, and how many need a copy.
        let (leaf, gen, _) = t.leaf(p0)?;
        let (mut cow, mut cow_shared) = (0, 0);
        for p in p0..p1 {
            let i = slot(p);
            leaf.page(i)?;
            let fresh = gen == ed.gen() && leaf.marked_fresh(i);
            if !(span(p).a >= leaf.init(i) || fresh) {
                if still_shared(cx.pool, leaf, i) {
                    cow_shared += 1;
                } else {
                    cow += 1;
                }
            }
        }
        // A copy-on-write replacement frees the page it replaces once no
        // reader holds it: forced, as on the general path; but not a page
        // another file holds too (a clone's): its copy is new memory.
        let mut res = match cx.pool.reserve_ref(cow_shared * ps) {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        res.join(cx.pool.reserve_forced_owed(cow * ps));
        let mut fresh = Fresh::new(cx.pool);
        if let Err(e) = res.take_pages((cow + cow_shared) as usize, &mut |m| fresh.push(m)) {
            return Some(Err(e));
        }
        // Every page is taken: nothing below fails.
        let mut joined = Joined::new(ch);
        let mut leaf = t.leaf_mut(p0, ed);
        for p in p0..p1 {
            let sp = span(p);
            change_page(&mut leaf, slot(p), &sp, sp.a, ch.src_at(p * ps, &sp), p * ps, &mut fresh, &mut joined, ed);
        }
        joined.flush();
        Some(Ok(()))
    }

    /// The source side of a clone (issue 20): hands the pages at page
    /// indices `first..first + n` to a clone, in *groups* of a sector's
    /// worth of pages (`first` need not start a sector: the destination's
    /// sectors are what must be whole), appending one entry per page to
    /// `out` (the page, or `None` for a hole), and returns how many pages
    /// it covered: a whole number of groups, each all present or all
    /// absent, stopping before the first group that is not, that is not
    /// wholly below the size, or that holds a page taken in this batch
    /// (fresh pages stay the runner's to write in place), or if the
    /// contents are inline (0: the caller copies instead).
    ///
    /// Each page handed out is marked shared in the draft (never written in
    /// place again, `init` at the page size) and gains one holder in the
    /// pool, which the pages in `out` carry: the caller puts them in
    /// another table ([`FileData::install_shared`]) or gives them back
    /// with `Pool::free_pages`. Each new holder's table slot is charged
    /// against the limit (`SLOT_COST`); at the limit nothing is shared. Nothing is allocated but the leaves'
    /// path copies; the holders are taken before the version that marks
    /// the pages is published, so none of them can be freed meanwhile.
    pub(crate) fn share_range(
        &mut self,
        cx: &Ctx<'_>,
        ed: &mut Edit<'_>,
        first: u64,
        n: u64,
        out: &mut Vec<Option<Page>>,
    ) -> u64 {
        let (ps, pps) = (cx.ps(), cx.ss() / cx.ps());
        // Pages wholly below the size: their `init` is the page size, so
        // sharing them (`init` raised to the page size) exposes nothing.
        let whole = self.len / ps;
        let end = first.saturating_add(n).min(whole);
        if end <= first {
            return 0;
        }
        let end = first + (end - first) / pps * pps;
        let t = match &mut self.content {
            Content::Empty => {
                out.extend(std::iter::repeat_n(None, (end - first) as usize));
                return end - first;
            }
            Content::Inline(_) => return 0,
            Content::Sectors(t) => t,
        };
        // Read-only: stop before the first group that is partly present
        // (it spans two of this file's sectors, one a hole) or has a fresh
        // page. Groups before the next present page are holes.
        let mut stop = end;
        let mut p = first;
        'groups: while p < end {
            let Some(q) = t.next_present_before(p, end) else { break };
            let k = q - (q - first) % pps;
            if t.count_range(k, k + pps) != pps {
                stop = k;
                break;
            }
            for r in k..k + pps {
                if let Some((l, g, i)) = t.leaf(r) {
                    if g == ed.gen() && l.marked_fresh(i) {
                        stop = k;
                        break 'groups;
                    }
                }
            }
            p = k + pps;
        }
        // The new holders' table slots are charged (`SLOT_COST` a page)
        // before anything changes: at the limit nothing is shared (0: the
        // caller copies, and that copy meets the limit itself).
        let Ok(slots) = cx.pool.reserve_ref(t.count_range(first, stop).saturating_mul(SLOT_COST)) else {
            return 0;
        };
        let start = out.len();
        out.reserve((stop - first) as usize);
        let mut p = first;
        while p < stop {
            let leaf_end = (p - p % LEAF as u64 + LEAF as u64).min(stop);
            if t.next_present_before(p, leaf_end).is_none() {
                out.extend(std::iter::repeat_n(None, (leaf_end - p) as usize));
                p = leaf_end;
                continue;
            }
            let mut leaf = t.leaf_mut(p, ed);
            for q in p..leaf_end {
                let i = slot(q);
                let m = leaf.page(i);
                if m.is_some() {
                    leaf.mark_shared(i, ps as usize);
                }
                out.push(m);
            }
            p = leaf_end;
        }
        // SAFETY: every page is reached by the draft, which only this
        // runner changes, and stays so until this returns.
        unsafe { cx.pool.share_pages(out[start..].iter().flatten().copied(), slots) };
        stop - first
    }

    /// The destination side of a clone (issue 20): puts `pages` (a clone's,
    /// one holder each: [`FileData::share_range`]) at page indices `first..`
    /// (whole sectors), `None` making a hole, growing the file to their
    /// end if shorter. What they replace is freed or retired as by any
    /// change; the pages are marked shared (never written in place,
    /// `init` at the page size). Allocates nothing but the leaves' path
    /// copies. `pages` is left as it was: their holders pass to this
    /// table's slots when the draft is published (`node::Draft`), and go
    /// back with the transit if it never is.
    ///
    /// # Errors
    /// `FileTooBig`; `NotSupported` if the contents are inline (the caller
    /// copies instead); `OutOfMemory` if growing the file to `first`
    /// copies a partial page and the OS refuses memory. On error nothing
    /// changed.
    pub(crate) fn install_shared(
        &mut self,
        cx: &Ctx<'_>,
        ed: &mut Edit<'_>,
        first: u64,
        pages: &[Option<Page>],
    ) -> Result<()> {
        let ps = cx.ps();
        let off = first.checked_mul(ps).ok_or(Error::FileTooBig)?;
        let end = (pages.len() as u64).checked_mul(ps).and_then(|b| off.checked_add(b)).ok_or(Error::FileTooBig)?;
        if end > cx.max_size {
            return Err(Error::FileTooBig);
        }
        match self.content {
            Content::Inline(_) => return Err(Error::NotSupported),
            Content::Empty => self.len = self.len.max(off),
            // The bytes between the old end and `off` read as zeros (a
            // partial last page is zeroed, in place or by copy-on-write).
            Content::Sectors(_) if self.len < off => self.set_len(cx, ed, off)?,
            Content::Sectors(_) => {}
        }
        // Nothing fails from here on.
        if matches!(self.content, Content::Empty) {
            if pages.iter().all(Option::is_none) {
                self.len = self.len.max(end);
                return Ok(());
            }
            self.content = Content::Sectors(Table::new(ps as usize));
        }
        let Content::Sectors(t) = &mut self.content else { unreachable!("a table, made above if need be") };
        let n = pages.len();
        let mut j = 0;
        while j < n {
            let hole = pages[j].is_none();
            let mut k = j;
            while k < n && pages[k].is_none() == hole {
                k += 1;
            }
            if hole {
                t.remove_range(first + j as u64, first + k as u64, ed);
            } else {
                let mut at = j;
                while at < k {
                    let p = first + at as u64;
                    let leaf_end = (at + LEAF - slot(p)).min(k);
                    let mut leaf = t.leaf_mut(p, ed);
                    for (q, m) in pages[at..leaf_end].iter().enumerate() {
                        if let Some(m) = *m {
                            leaf.put_shared(slot(p + q as u64), m, ps as usize, ed);
                        }
                    }
                    at = leaf_end;
                }
            }
            j = k;
        }
        self.len = self.len.max(end);
        Ok(())
    }

    /// Sets the size (truncate or extend with zeros).
    ///
    /// # Errors
    /// `FileTooBig`, `NoSpace` (growing only). On error nothing changed.
    pub(crate) fn set_len(&mut self, cx: &Ctx<'_>, ed: &mut Edit<'_>, new_len: u64) -> Result<()> {
        if new_len > cx.max_size {
            return Err(Error::FileTooBig);
        }
        let trim = new_len == self.len && matches!(self.content, Content::Sectors(_));
        if new_len < self.len || trim {
            // Also for the same size: sectors reserved past the end (by
            // `fallocate` with `KEEP_SIZE`) go back, as on tmpfs.
            self.shrink(cx, ed, new_len);
            Ok(())
        } else if new_len > self.len {
            self.mutate(cx, ed, &Change { new_len, write: None, fill: None })
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
    /// `FileTooBig`; `NoSpace` only if growing converts an inline file;
    /// `OutOfMemory` if the OS refuses a copy-on-write page for a partial
    /// page. On error nothing changed.
    pub(crate) fn zero(&mut self, cx: &Ctx<'_>, ed: &mut Edit<'_>, off: u64, end: u64) -> Result<()> {
        if end > cx.max_size {
            return Err(Error::FileTooBig);
        }
        if end > self.len {
            // The pages the punch needs are taken first, counted on this
            // table at the size after the growth (an upper bound: growing
            // adds no page below the old size and only makes pages fresh),
            // then the growth; both can fail, nothing after them can.
            let old = self.len;
            let mut fresh = self.punch_pages(cx, ed.gen(), off, old, end)?;
            self.set_len(cx, ed, end)?;
            self.punch_with(cx, ed, off, old, &mut fresh);
            Ok(())
        } else {
            self.punch(cx, ed, off, end)
        }
    }

    /// `fallocate(2)` with `mode` over `off..off + len`.
    ///
    /// # Errors
    /// `InvalidArgument` for a zero length or bad flag combination,
    /// `NotSupported` for unknown modes, `FileTooBig`, `NoSpace`,
    /// `OutOfMemory` (the OS refusing memory, also for a punch). On error
    /// nothing changed.
    pub(crate) fn fallocate(&mut self, cx: &Ctx<'_>, ed: &mut Edit<'_>, mode: u32, off: u64, len: u64) -> Result<()> {
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
            return self.punch(cx, ed, off, end.min(self.len));
        }
        let new_len = if keep { self.len } else { self.len.max(end) };
        // ZERO_RANGE zeroes what is there inside the size (in place or by
        // copy-on-write, like an overwrite with zeros: no more memory once
        // done) and allocates the holes; the plain modes allocate the holes
        // and give the pages a clone shares their own copies.
        let write = (mode & FALLOC_ZERO_RANGE != 0 && off < new_len).then_some((off, end.min(new_len), Src::Zeros));
        let ch = Change { new_len, write, fill: Some((off, end)) };
        let unshare = Unshare::new(self.len, cx.ps(), &ch);
        let n = self.count_unshared(cx, &unshare);
        if n > 0 {
            return self.unshare_and_fill(cx, ed, &ch, &unshare, n);
        }
        self.mutate(cx, ed, &ch)
    }

    /// How many pages of `u`'s range another table slot still holds (a
    /// clone's) that `u`'s change does not write itself: the copies
    /// `fallocate` makes. In time bounded by the leaves that hold pages in
    /// the range, and none at all while nothing in the pool is shared.
    fn count_unshared(&self, cx: &Ctx<'_>, u: &Unshare) -> u64 {
        let Content::Sectors(t) = &self.content else { return 0 };
        if !cx.pool.any_shared() {
            return 0;
        }
        let (mut n, mut p) = (0, u.pages.start);
        while let Some((_, mask, next)) = u.next_leaf(t, cx.pool, p) {
            n += u64::from(mask.count_ones());
            p = next;
        }
        n
    }

    /// `fallocate` over pages a clone shares (`n` of them, from
    /// [`FileData::count_unshared`]): each gets a copy of its own (a page
    /// wholly past the size, a fresh page), and the holes of `ch` are
    /// allocated, all or nothing: one reservation, taken before anything
    /// changes (POSIX: once `fallocate` succeeds, writes to the range do
    /// not fail for lack of space, which an overwrite of a shared page
    /// would). The pages `ch` writes itself (`ZERO_RANGE`, the growth past
    /// the old size) are the plan's to copy, once.
    fn unshare_and_fill(
        &mut self,
        cx: &Ctx<'_>,
        ed: &mut Edit<'_>,
        ch: &Change<'_>,
        u: &Unshare,
        n: u64,
    ) -> Result<()> {
        let ps = cx.ps();
        let mut res = self.reserve_for(cx, ch, ed.gen(), n)?;
        let mut fresh = Fresh::new(cx.pool);
        res.take_pages(n as usize, &mut |m| fresh.push(m))?;
        // Nothing below fails but `apply` taking its pages (the OS refusing
        // memory), which leaves the copies made: the same bytes, unshared.
        // This walk finds at most the pages the count found: only this
        // file's runner adds a holder to its pages, other holders only
        // let go.
        let len = self.len;
        let Content::Sectors(t) = &mut self.content else { unreachable!("shared pages are in a table") };
        let mut p = u.pages.start;
        while let Some((base, mut mask, next)) = u.next_leaf(t, cx.pool, p) {
            let mut leaf = t.leaf_mut(base + u64::from(mask.trailing_zeros()), ed);
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let Some(m) = leaf.page(i) else { continue };
                let vis = clamp(len, (base + i as u64) * ps, ps);
                let pg = fresh.take();
                // SAFETY: `pg` is fresh (taken in this batch: no table
                // reaches it yet); `m`, which published versions reach, is
                // only read below `vis <= init`, as readers do (rule 3).
                // Distinct pages.
                unsafe { pg.mem(ps as usize).copy_from(0, &m.mem(ps as usize), 0, vis) };
                leaf.put_fresh(i, pg, vis, ed);
            }
            p = next;
        }
        drop(fresh);
        self.apply(cx, ed, ch, res)
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
            (Content::Sectors(t), data) => {
                // Sectors are whole: a sector is present iff its first page is.
                let pps = ss / t.page_size();
                let first = (off / ss).saturating_mul(pps);
                let k = if data { t.next_present(first).map(|p| p / pps) } else { Some(t.next_absent(first) / pps) };
                match (k, data) {
                    (Some(k), true) => {
                        let pos = (k.saturating_mul(ss)).max(off);
                        if pos >= self.len {
                            Err(Error::NoSuchOffset)
                        } else {
                            Ok(pos)
                        }
                    }
                    (None, true) => Err(Error::NoSuchOffset),
                    (k, false) => Ok(k.unwrap_or(u64::MAX).saturating_mul(ss).max(off).min(self.len)),
                }
            }
        }
    }

    fn inline_bytes(&self) -> &[u8] {
        match &self.content {
            Content::Inline(b) => b.bytes(),
            _ => &[],
        }
    }

    /// Makes the contents `bytes`, inline, charged by `charge` (of exactly
    /// their length; an empty file gives it back at once).
    fn set_inline(&mut self, bytes: Vec<u8>, charge: Charge) {
        debug_assert_eq!(charge.bytes(), bytes.len() as u64, "an inline buffer is charged its length");
        self.len = bytes.len() as u64;
        self.content = if bytes.is_empty() { Content::Empty } else { Content::Inline(Inline::new(&bytes, charge)) };
    }

    fn shrink(&mut self, cx: &Ctx<'_>, ed: &mut Edit<'_>, new_len: u64) {
        let (ss, ps) = (cx.ss(), cx.ps());
        match &mut self.content {
            Content::Empty => self.len = new_len,
            Content::Inline(b) => {
                let bytes = b.bytes()[..new_len as usize].to_vec();
                // Shrinking must not fail when full: the new buffer is smaller
                // than the one it replaces, which is freed right after.
                let charge = cx.pool.reserve_forced(new_len).charge(new_len);
                match charge {
                    Ok(c) => self.set_inline(bytes, c),
                    Err(_) => unreachable!("a forced reservation holds the bytes it was made for"),
                }
            }
            Content::Sectors(t) => {
                let pps = ss / ps;
                t.remove_range(new_len.div_ceil(ss).saturating_mul(pps), u64::MAX, ed);
                self.len = new_len;
                if new_len == 0 {
                    self.content = Content::Empty;
                }
            }
        }
    }

    /// Zeros `off..end` (clipped to the size) without allocating: whole
    /// sectors become holes, partial ones are zeroed page by page
    /// (copy-on-write when published).
    ///
    /// # Errors
    /// `OutOfMemory` if the OS refuses a copy-on-write page (forced past the
    /// limit, so never `NoSpace`). On error nothing changed.
    fn punch(&mut self, cx: &Ctx<'_>, ed: &mut Edit<'_>, off: u64, end: u64) -> Result<()> {
        let mut fresh = self.punch_pages(cx, ed.gen(), off, end, self.len)?;
        self.punch_with(cx, ed, off, end, &mut fresh);
        Ok(())
    }

    /// Takes the copy-on-write pages a punch of `off..end` needs once the
    /// size is `len`: the published pages of its (at most two) partial
    /// sectors that it zeroes part of, so at most 2 × pages per sector.
    /// Forced: the pages they replace are freed once no reader holds them,
    /// so a punch works when full.
    fn punch_pages<'p>(&self, cx: &Ctx<'p>, gen: u64, off: u64, end: u64, len: u64) -> Result<Fresh<'p>> {
        let mut fresh = Fresh::new(cx.pool);
        let Content::Sectors(t) = &self.content else { return Ok(fresh) };
        let (ss, ps) = (cx.ss(), cx.ps());
        let pps = ss / ps;
        let (mut n, mut shared) = (0u64, 0u64);
        for (k, a, b, vis) in punch_edges(ss, len, off, end) {
            if t.get(k * pps).is_none() || (a == 0 && b >= vis) {
                continue;
            }
            for p in (k * pps + a / ps)..(k * pps + b.div_ceil(ps)) {
                let Some((l, g, i)) = t.leaf(p) else { continue };
                if l.page(i).is_some() && !(g == gen && l.marked_fresh(i)) {
                    n += 1;
                    shared += u64::from(still_shared(cx.pool, l, i));
                }
            }
        }
        if n > 0 {
            // A copy of a page another file holds too (a clone's) is new
            // memory: limit-checked.
            let mut res = cx.pool.reserve_ref(shared * ps)?;
            res.join(cx.pool.reserve_forced_owed((n - shared) * ps));
            // On error the pages taken so far go back as `fresh` drops.
            res.take_pages(n as usize, &mut |m| fresh.push(m))?;
        }
        Ok(fresh)
    }

    /// Does a punch of `off..end` with the pages [`FileData::punch_pages`]
    /// took for it (at the current size): cannot fail.
    fn punch_with(&mut self, cx: &Ctx<'_>, ed: &mut Edit<'_>, off: u64, end: u64, fresh: &mut Fresh<'_>) {
        if off >= end {
            return;
        }
        let (ss, ps) = (cx.ss(), cx.ps());
        let pps = ss / ps;
        let len = self.len;
        match &mut self.content {
            Content::Empty => {}
            Content::Inline(b) => {
                let mut bytes = b.bytes().to_vec();
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
                if first_whole < end_whole {
                    t.remove_range(first_whole * pps, end_whole * pps, ed);
                }
                for (k, a, b, vis) in punch_edges(ss, len, off, end) {
                    let base = k * ss;
                    if t.get(k * pps).is_none() {
                        continue;
                    }
                    if a == 0 && b >= vis {
                        t.remove_range(k * pps, (k + 1) * pps, ed);
                        continue;
                    }
                    for p in (k * pps + a / ps)..(k * pps + b.div_ceil(ps)) {
                        let pbase = p * ps - base;
                        let pvis = clamp(vis, pbase, ps);
                        let (pa, pb) = (clamp(a, pbase, ps), clamp(b, pbase, ps));
                        let mut leaf = t.leaf_mut(p, ed);
                        let i = slot(p);
                        // Sectors are whole: every page of a present one is.
                        let Some(m) = leaf.page(i).map(|pg| pg.mem(ps as usize)) else { continue };
                        if leaf.is_fresh(i) {
                            // SAFETY: a fresh page (taken in this batch) is
                            // reached by no published version (rule 3).
                            unsafe { m.zero(pa, pb - pa) };
                            continue;
                        }
                        // Copy-on-write of this page, with a page taken
                        // before anything changed (`punch_pages`).
                        let pg = fresh.take();
                        let n = pg.mem(ps as usize);
                        // SAFETY: `n` is fresh (no table reaches it yet); `m`'s
                        // bytes below `pvis` are only read, as readers do
                        // (rule 3 forbids writing them). Distinct pages.
                        unsafe {
                            n.copy_from(0, &m, 0, pa);
                            n.zero(pa, pb - pa);
                            n.copy_from(pb, &m, pb, pvis - pb);
                        }
                        leaf.put_fresh(i, pg, pvis, ed);
                    }
                }
            }
        }
    }

    /// Applies `ch` all or nothing: plans it (counts, read-only), reserves
    /// and takes what the plan needs (`NoSpace`, `OutOfMemory`), then
    /// applies it (infallible).
    fn mutate(&mut self, cx: &Ctx<'_>, ed: &mut Edit<'_>, ch: &Change<'_>) -> Result<()> {
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
        let res = self.reserve_for(cx, ch, ed.gen(), 0)?;
        self.apply(cx, ed, ch, res)
    }

    /// The one reservation a sector change takes before it changes
    /// anything: what `ch` needs (its plan) and `copies` pages more, against
    /// the limit.
    fn reserve_for<'p>(&self, cx: &Ctx<'p>, ch: &Change<'_>, gen: u64, copies: u64) -> Result<Reservation<&'p Pool>> {
        let plan = self.plan(cx, ch, gen);
        let pages = plan.replace_shared.checked_add(copies).and_then(|n| n.checked_mul(cx.ps()));
        let new_bytes = plan.grow.checked_mul(cx.ss()).zip(pages).and_then(|(g, p)| g.checked_add(p));
        let mut res = cx.pool.reserve_ref(new_bytes.ok_or(Error::NoSpace)?)?;
        if plan.replace > 0 {
            // A copy-on-write replacement frees the page it replaces as soon
            // as the last reader of the old version is done: the file's use
            // does not grow, so it may pass the limit for that moment, and an
            // overwrite works on a full file system (as on tmpfs).
            res.join(cx.pool.reserve_forced_owed(plan.replace * cx.ps()));
        }
        Ok(res)
    }

    /// How many fresh sectors and pages `ch` needs, read-only, in time
    /// bounded by the sectors the file has in the touched ranges (never by
    /// the ranges' length: a 10 TiB `fallocate` costs a few table walks).
    fn plan(&self, cx: &Ctx<'_>, ch: &Change<'_>, gen: u64) -> Plan {
        let shape = Shape::new(self.len, cx.ss(), cx.ps(), ch);
        let pps = shape.pps;
        let Content::Sectors(t) = &self.content else {
            // Converting: every written or filled sector is fresh, and so is
            // sector 0 for the inline bytes if nothing else covers it.
            let covered = shape.covered();
            let inline0 = matches!(self.content, Content::Inline(_)) && !covered.iter().any(|r| r.contains(&0));
            let grow = covered.iter().map(|r| r.end - r.start).sum::<u64>() + u64::from(inline0);
            return Plan { grow, replace: 0, replace_shared: 0 };
        };
        // Holes in the written or filled ranges each take a fresh sector.
        let grow = shape
            .covered()
            .iter()
            .map(|r| (r.end - r.start) - t.count_range(r.start.saturating_mul(pps), r.end.saturating_mul(pps)) / pps)
            .sum();
        // Pages of present sectors that change take a copy unless changed
        // in place.
        let (mut replace, mut replace_shared) = (0, 0);
        // One walk per leaf, not per page (nor per sector: a leaf holds 64
        // pages, so 64 sectors of one page each).
        // The leaf at hand: its index and what `Table::leaf` gave for it.
        type AtHand<'t> = Option<(u64, Option<(&'t Leaf, u64, usize)>)>;
        let mut leaf: AtHand<'_> = None;
        for r in shape.present_ranges() {
            let mut k = r.start;
            while k < r.end {
                // The next present sector: `k` itself when the leaf at hand
                // holds its first page (a dense file: no walk from the root
                // per sector), else a search that skips holes.
                let p0 = k.saturating_mul(pps);
                let here = match leaf {
                    Some((at, Some((l, _, _)))) if at == p0 / LEAF as u64 => l.page(slot(p0)).is_some(),
                    _ => false,
                };
                let s = if here {
                    k
                } else {
                    match t.next_present_before(p0, r.end.saturating_mul(pps)) {
                        Some(p) => p / pps,
                        None => break,
                    }
                };
                for q in shape.pages_changed(s) {
                    let Some(ms) = shape.page_span(q).modified_start() else { continue };
                    if leaf.is_none_or(|(at, _)| at != q / LEAF as u64) {
                        leaf = Some((q / LEAF as u64, t.leaf(q)));
                    }
                    let Some(Some((l, g, _))) = leaf.map(|(_, l)| l) else { continue };
                    let i = slot(q);
                    if l.page(i).is_none() {
                        continue;
                    }
                    let fresh = g == gen && l.marked_fresh(i);
                    if !(ms >= l.init(i) || fresh) {
                        if still_shared(cx.pool, l, i) {
                            replace_shared += 1;
                        } else {
                            replace += 1;
                        }
                    }
                }
                k = s + 1;
            }
        }
        Plan { grow, replace, replace_shared }
    }

    /// Applies `ch` with the pages `res` holds (the plan's count): takes
    /// them all first (the one step that fails: the OS refusing memory),
    /// then changes the draft, which cannot fail.
    ///
    /// The table is changed in place in `self.content`, never in a local
    /// copy: if anything below unwinds (a bug, or the `data.apply`
    /// failpoint), every node and page this batch made is reachable from the
    /// draft, and the draft's drop gives it all back (`FileData::abort`).
    fn apply(&mut self, cx: &Ctx<'_>, ed: &mut Edit<'_>, ch: &Change<'_>, mut res: Reservation<&Pool>) -> Result<()> {
        let shape = Shape::new(self.len, cx.ss(), cx.ps(), ch);
        let (ps, pps) = (shape.ps, shape.pps);
        // Take every page before changing anything (as many as the plan
        // reserved: bounded by the limit and by the file's own pages). On
        // error the pages taken so far go back as `fresh` drops.
        let mut fresh = Fresh::new(cx.pool);
        let n = (res.remaining() / ps) as usize;
        fresh.more.reserve_exact(n.saturating_sub(fresh.few.len()));
        res.take_pages(n, &mut |m| fresh.push(m))?;
        // Nothing fails from here on.
        let old = match &mut self.content {
            Content::Sectors(_) => None,
            c => Some(std::mem::replace(c, Content::Sectors(Table::new(ps as usize)))),
        };
        let Content::Sectors(table) = &mut self.content else { unreachable!("made a table just above") };
        if let Some(Content::Inline(b)) = old {
            // Converting: the inline bytes go to sector 0's fresh pages.
            let bytes = b.bytes();
            for p in 0..pps {
                let lo = (p * ps) as usize;
                let hi = (lo + ps as usize).min(bytes.len());
                let m = fresh.take();
                if lo < hi {
                    // SAFETY: `m` is fresh: no table reaches it yet.
                    unsafe { m.mem(ps as usize).write(0, &bytes[lo..hi]) };
                }
                table.leaf_mut(p, ed).put_fresh(slot(p), m, hi.saturating_sub(lo), ed);
            }
        }
        let mut cursor = Cursor { next: 0 };
        let mut joined = Joined::new(ch);
        while let Some(k) = cursor.next(&shape, table) {
            // Sectors of one page that the write covers and that are all
            // present in `k`'s leaf, or all holes: one walk (and path copy)
            // for the leaf, not two per sector (issue 18: at 4 KiB sectors
            // those walks were most of a 1 MiB overwrite's bookkeeping).
            // The same changes as `apply_sector` makes for each.
            if pps == 1 && shape.w.contains(&k) {
                let end = shape.w.end.min((k / LEAF as u64 + 1) * LEAF as u64);
                let (present, holes) = match table.leaf(k) {
                    None => (false, true),
                    Some((l, _, _)) => {
                        let at = |p: u64| l.page(slot(p)).is_some();
                        ((k..end).all(at), (k..end).all(|p| !at(p)))
                    }
                };
                if (present || holes) && end > k + 1 {
                    let mut leaf = table.leaf_mut(k, ed);
                    for p in k..end {
                        if holes {
                            // A hole the write covers, filled as `apply_sector` does.
                            fill_page(&mut leaf, p, &shape, ch, &mut fresh, &mut joined, ed);
                        } else {
                            let sp = shape.page_span(p);
                            if let Some(ms) = sp.modified_start() {
                                let src = ch.src_at(p * ps, &sp);
                                change_page(&mut leaf, slot(p), &sp, ms, src, p * ps, &mut fresh, &mut joined, ed);
                            }
                        }
                        // After each sector, as below.
                        crate::fault::fail_point!("data.apply");
                    }
                    cursor.next = end;
                    continue;
                }
            }
            apply_sector(table, ed, &shape, ch, k, &mut fresh, &mut joined);
            crate::fault::fail_point!("data.apply");
        }
        joined.flush();
        self.len = ch.new_len;
        Ok(())
    }
}

/// Whether slot `i` of `l` holds a page that another file slot holds too
/// (marked shared, and the pool still counts another holder): a
/// copy-on-write of it adds a page to what is charged.
fn still_shared(pool: &Pool, l: &Leaf, i: usize) -> bool {
    l.marked_shared(i) && l.page(i).is_some_and(|m| pool.is_shared(m))
}

/// The pages a `fallocate` gives copies of their own if a clone shares
/// them: those of its range but the ones its change writes itself (the
/// zeros of `ZERO_RANGE`, the growth past the old size), which the plan
/// copies anyway.
struct Unshare {
    pages: std::ops::Range<u64>,
    written: std::ops::Range<u64>,
    grown: std::ops::Range<u64>,
}

impl Unshare {
    fn new(len: u64, ps: u64, ch: &Change<'_>) -> Unshare {
        let pages = |a: u64, b: u64| if b > a { a / ps..b.div_ceil(ps) } else { 0..0 };
        let (off, end) = ch.fill.unwrap_or((0, 0));
        let written = ch.write.as_ref().map_or(0..0, |&(a, b, _)| pages(a, b));
        Unshare { pages: pages(off, end), written, grown: pages(len, ch.new_len) }
    }

    /// The next leaf at or after page `p` with such pages: its first page,
    /// a mask of their slots, and the page to look on from. One walk from
    /// the root per leaf that holds pages; a leaf with nothing marked shared
    /// is skipped whole.
    fn next_leaf(&self, t: &Table, pool: &Pool, mut p: u64) -> Option<(u64, u64, u64)> {
        while let Some(q) = t.next_present_before(p, self.pages.end) {
            let base = q - q % LEAF as u64;
            let stop = base.saturating_add(LEAF as u64).min(self.pages.end);
            let mut mask = 0u64;
            if let Some((l, _, _)) = t.leaf(q).filter(|(l, _, _)| l.any_marked_shared()) {
                for r in q..stop {
                    if !self.written.contains(&r) && !self.grown.contains(&r) && still_shared(pool, l, slot(r)) {
                        mask |= 1 << slot(r);
                    }
                }
            }
            if mask != 0 {
                return Some((base, mask, stop));
            }
            p = stop;
        }
        None
    }
}

/// One piece of [`runs`]: bytes of page memory (`within`, `take` bytes of
/// the handle), or bytes that read as zero.
enum Run {
    Mem(RawMem, usize, usize),
    Zeros(usize),
}

/// Walks bytes `off..off + n` of `t` as runs in order: page memory (the
/// pieces of adjacent pages of one region joined into one run) and zeros
/// (holes). One walk from the root per leaf touched.
fn runs(t: &Table, off: u64, n: u64, mut each: impl FnMut(Run)) {
    let ps = t.page_size();
    let end = off + n;
    let mut pos = off;
    let mut mem: Option<(RawMem, usize, usize)> = None;
    let mut zeros = 0usize;
    while pos < end {
        let p = pos / ps;
        let Some((leaf, _, first)) = t.leaf(p) else {
            // No leaf: a hole to the end of the leaf's span at least.
            let leaf_end = (p - p % LEAF as u64).saturating_add(LEAF as u64).saturating_mul(ps);
            let take = (leaf_end.min(end) - pos) as usize;
            if let Some(r) = mem.take() {
                each(Run::Mem(r.0, r.1, r.2));
            }
            zeros += take;
            pos += take as u64;
            continue;
        };
        for i in first..LEAF {
            if pos >= end {
                break;
            }
            let within = (pos % ps) as usize;
            let take = (ps - within as u64).min(end - pos) as usize;
            match leaf.page(i).map(|pg| pg.mem(ps as usize)) {
                None => {
                    if let Some(r) = mem.take() {
                        each(Run::Mem(r.0, r.1, r.2));
                    }
                    zeros += take;
                }
                Some(m) => {
                    if zeros > 0 {
                        each(Run::Zeros(std::mem::take(&mut zeros)));
                    }
                    mem = match mem {
                        // The run so far ends at its handle's end and this
                        // page starts at 0 right after it: one run.
                        Some((r, w, t)) if w + t == r.len() && within == 0 => match r.join(&m) {
                            Some(j) => Some((j, w, t + take)),
                            None => {
                                each(Run::Mem(r, w, t));
                                Some((m, within, take))
                            }
                        },
                        Some((r, w, t)) => {
                            each(Run::Mem(r, w, t));
                            Some((m, within, take))
                        }
                        None => Some((m, within, take)),
                    };
                }
            }
            pos += take as u64;
        }
    }
    if let Some(r) = mem {
        each(Run::Mem(r.0, r.1, r.2));
    }
    if zeros > 0 {
        each(Run::Zeros(zeros));
    }
}

/// Slices a read lends without a heap allocation ([`FileData::read_with`]):
/// 1 MiB of 4 KiB pages with holes between them is at most 273 (257 page
/// pieces, 16 zero slices), and the FUSE frontend's `writev` takes up to 319
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
    /// `take` bytes at `within` of a run of pages this version reaches.
    Run(RawMem, usize, usize),
}

/// The slices of one read: up to [`READ_PIECES`] in an uninitialised array
/// on the stack (nothing to fill: only the slices made are written); past
/// that all of them in one `Vec` (sized to the bound the caller gives, so it
/// allocates once).
struct Iov<'a> {
    stack: [MaybeUninit<IoSlice<'a>>; READ_PIECES],
    n: usize,
    heap: Vec<IoSlice<'a>>,
    /// How many slices to reserve once they no longer fit on the stack.
    most: usize,
    /// Zero bytes not yet pushed: adjacent holes become one run.
    zeros: usize,
}

impl<'a> Iov<'a> {
    fn new(most: usize) -> Self {
        Iov { stack: [const { MaybeUninit::uninit() }; READ_PIECES], n: 0, heap: Vec::new(), most, zeros: 0 }
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
        if self.heap.is_empty() && self.n < READ_PIECES {
            self.stack[self.n].write(IoSlice::new(b));
            self.n += 1;
            return;
        }
        if self.heap.is_empty() {
            self.heap.reserve(self.most.max(2 * READ_PIECES));
            // SAFETY: the first `n` entries were written (`push_slice`).
            self.heap.extend_from_slice(unsafe { stack_prefix(&self.stack, self.n) });
        }
        self.heap.push(IoSlice::new(b));
    }

    fn slices(&mut self) -> &[IoSlice<'a>] {
        self.flush_zeros();
        debug_assert!(self.n.max(self.heap.len()) <= self.most, "more slices than most_pieces");
        if self.heap.is_empty() {
            // SAFETY: the first `n` entries were written (`push_slice`).
            unsafe { stack_prefix(&self.stack, self.n) }
        } else {
            &self.heap
        }
    }
}

/// The first `n` entries of `stack`.
///
/// # Safety
/// They are initialised.
unsafe fn stack_prefix<'s, 'a>(stack: &'s [MaybeUninit<IoSlice<'a>>], n: usize) -> &'s [IoSlice<'a>] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, `n <= stack.len()` (the
    // slice below is bounds-checked) and the entries are initialised
    // (caller's contract).
    unsafe { &*(&stack[..n] as *const [MaybeUninit<IoSlice<'a>>] as *const [IoSlice<'a>]) }
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

impl<'a> Change<'a> {
    /// What goes at `sp.a..sp.b` of the page at byte `base`.
    fn src_at(&self, base: u64, sp: &Span) -> Src<'a> {
        match self.write {
            Some((off, _, Src::Bytes(d))) if sp.b > sp.a => {
                let from = (base + sp.a as u64 - off) as usize;
                Src::Bytes(&d[from..from + (sp.b - sp.a)])
            }
            _ => Src::Zeros,
        }
    }
}

/// What a mutation needs from the pool.
struct Plan {
    /// Fresh sectors for holes (counted against the limit).
    grow: u64,
    /// Copy-on-write copies of visible pages (forced: they replace one).
    replace: u64,
    /// Copy-on-write copies of pages another file slot holds too (a
    /// clone's, issue 20): counted against the limit, since the page they
    /// replace is not freed.
    replace_shared: u64,
}

/// A mutation in sector indices: which sectors it touches and how.
///
/// The sectors touched are, in order: every sector of the written range
/// `w`; the holes of the filled range `f`; and, when the file grows, the
/// partial last sector `tail` and the sectors present in `g` (reserved past
/// the old end, whose newly visible bytes must read as zeros).
struct Shape {
    ss: u64,
    ps: u64,
    pps: u64,
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
    fn new(old_len: u64, ss: u64, ps: u64, ch: &Change<'_>) -> Shape {
        let write = ch.write.map(|(off, end, _)| (off, end)).filter(|&(off, end)| off < end);
        let fill = ch.fill.filter(|&(off, end)| off < end);
        let sectors = |r: Option<(u64, u64)>| r.map_or(0..0, |(off, end)| off / ss..end.div_ceil(ss));
        let grows = ch.new_len > old_len;
        Shape {
            ss,
            ps,
            pps: ss / ps,
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

    /// Whether a hole at sector `k` takes a fresh sector (written or filled).
    fn fills(&self, k: u64) -> bool {
        let (base, end) = (k * self.ss, (k + 1).saturating_mul(self.ss));
        let hit = |r: Option<(u64, u64)>| r.is_some_and(|(off, e)| off < end && e > base);
        hit(self.write) || hit(self.fill)
    }

    /// The pages of present sector `k` that may change: those overlapping
    /// the written range or the bytes the growth makes visible.
    fn pages_changed(&self, k: u64) -> Range<u64> {
        let (base, end) = (k * self.ss, (k + 1).saturating_mul(self.ss));
        let mut lo = end;
        let mut hi = base;
        if let Some((off, e)) = self.write {
            lo = lo.min(off.max(base));
            hi = hi.max(e.min(end));
        }
        if self.new_len > self.old_len {
            lo = lo.min(self.old_len.max(base));
            hi = hi.max(self.new_len.min(end));
        }
        if lo >= hi {
            return 0..0;
        }
        lo / self.ps..hi.div_ceil(self.ps)
    }

    /// Page `p`'s part in the mutation.
    fn page_span(&self, p: u64) -> Span {
        let (ps, base) = (self.ps, p * self.ps);
        let (a, b) = match self.write {
            Some((off, end)) => {
                let (a, b) = (clamp(off, base, ps), clamp(end, base, ps));
                if a < b {
                    (a, b)
                } else {
                    (0, 0)
                }
            }
            None => (0, 0),
        };
        Span { old_vis: clamp(self.old_len, base, ps), new_vis: clamp(self.new_len, base, ps), a, b }
    }
}

/// The partial sectors of a punch of `off..end` in a file of `len` bytes,
/// at most two: per sector `k`, the bytes `a..b` of it to zero (nonempty)
/// and `vis`, its bytes below `len` (all relative to the sector).
fn punch_edges(ss: u64, len: u64, off: u64, end: u64) -> impl Iterator<Item = (u64, u64, u64, u64)> {
    let edges = [(off % ss != 0).then_some(off / ss), (end % ss != 0).then_some(end / ss)];
    let edges = match edges {
        [Some(a), Some(b)] if a == b => [Some(a), None],
        e => e,
    };
    edges.into_iter().flatten().filter_map(move |k| {
        let base = k * ss;
        let vis = clamp(len, base, ss) as u64;
        let a = clamp(off, base, ss) as u64;
        let b = (clamp(end, base, ss) as u64).min(vis);
        (a < b).then_some((k, a, b, vis))
    })
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
        // Every candidate below is at least `from`: a sector the write
        // covers is the next one without searching (a search per sector
        // would scan the rest of the range each time: O(n²) in the pages
        // of one write).
        if from >= sh.w.start && from < sh.w.end {
            self.next = from + 1;
            return Some(from);
        }
        let pps = sh.pps;
        let mut best: Option<u64> = None;
        let mut offer = |k: Option<u64>| {
            if let Some(k) = k {
                best = Some(best.map_or(k, |b| b.min(k)));
            }
        };
        offer(Some(from.max(sh.w.start)).filter(|&k| k < sh.w.end));
        let f0 = from.max(sh.f.start);
        // Bounded by the range: an unbounded search from `f0` would walk
        // every sector after it when nothing is filled (issue 18). Sectors
        // are whole, so a sector is absent iff its first page is.
        offer(t.next_absent_before(f0.saturating_mul(pps), sh.f.end.saturating_mul(pps)).map(|p| p / pps));
        offer(sh.tail.filter(|&k| k >= from));
        let g0 = from.max(sh.g.start);
        offer(t.next_present_before(g0.saturating_mul(pps), sh.g.end.saturating_mul(pps)).map(|p| p / pps));
        let k = best?;
        self.next = k.checked_add(1)?;
        Some(k)
    }
}

/// Zeros `from..to` of `m` except the written range `a..b`.
///
/// # Safety
/// As for [`RawMem::write`] over `from..to`: the range is the caller's alone.
unsafe fn zero_except(m: RawMem, from: usize, to: usize, a: usize, b: usize) {
    if from >= to {
        return;
    }
    if b <= a {
        // SAFETY: inside `from..to`, the caller's alone.
        unsafe { m.zero(from, to - from) };
        return;
    }
    if from < a {
        // SAFETY: inside `from..to`, the caller's alone.
        unsafe { m.zero(from, a.min(to) - from) };
    }
    if to > b {
        let z = from.max(b);
        // SAFETY: inside `from..to`, the caller's alone.
        unsafe { m.zero(z, to - z) };
    }
}

/// Puts `src` (exactly `b - a` bytes, or zeros) at `a..b` of `m`.
///
/// # Safety
/// As for [`RawMem::write`] over `a..b`: the range is the caller's alone.
unsafe fn put(m: RawMem, a: usize, b: usize, src: Src<'_>) {
    if b > a {
        match src {
            // SAFETY: `a..b` is the caller's alone (this function's contract).
            Src::Bytes(d) => unsafe { m.write(a, d) },
            // SAFETY: as above.
            Src::Zeros => unsafe { m.zero(a, b - a) },
        }
    }
}

/// The pages a plan reserved, handed out in the order they were taken (a
/// sector's pages in ascending address order, as the pool gives them): up
/// to 32 (a write of up to two sectors' worth of pages) without a `Vec`.
/// Pages left over go back to the pool on drop (they were never published).
struct Fresh<'a> {
    few: [Option<Page>; 32],
    more: Vec<Page>,
    n: usize,
    next: usize,
    pool: &'a Pool,
}

impl<'a> Fresh<'a> {
    fn new(pool: &'a Pool) -> Self {
        Fresh { few: [None; 32], more: Vec::new(), n: 0, next: 0, pool }
    }

    fn push(&mut self, m: Page) {
        if self.n < self.few.len() {
            self.few[self.n] = Some(m);
        } else {
            self.more.push(m);
        }
        self.n += 1;
    }

    /// A reserved page: the caller took every page it needs before changing
    /// anything, so this does not fail. Should the plan have counted too few
    /// (a bug), a forced reservation keeps the change whole rather than
    /// dropping bytes about to be acknowledged; if the OS refuses even that,
    /// it panics: the runner fails the whole batch (`Internal`) and the
    /// draft's drop gives back everything it made, as for any panic in a
    /// batch (issue 18: the table is changed in place in the draft).
    fn take(&mut self) -> Page {
        while self.next < self.n {
            let i = self.next;
            self.next += 1;
            let m = if i < self.few.len() { self.few[i].take() } else { Some(self.more[i - self.few.len()]) };
            if let Some(m) = m {
                return m;
            }
        }
        debug_assert!(false, "the plan reserved too few pages");
        let mut res = self.pool.reserve_forced_ref(self.pool.page_size() as u64);
        let mut got = None;
        let ok = res.take_pages(1, &mut |m| got = Some(m));
        match (ok, got) {
            (Ok(()), Some(m)) => m,
            _ => panic!("the plan reserved too few pages and the OS refuses memory"),
        }
    }
}

impl Drop for Fresh<'_> {
    fn drop(&mut self) {
        for i in self.next..self.n {
            let m = if i < self.few.len() { self.few[i].take() } else { Some(self.more[i - self.few.len()]) };
            if let Some(m) = m {
                // SAFETY: taken for this mutation and never put in a table:
                // nobody else reaches it.
                unsafe { self.pool.free_pages(&[m]) };
            }
        }
    }
}

/// Whole-page writes into fresh pages, held back and done as one copy over
/// each run of adjacent pages: a copy of 64 KiB or more takes the CPU's
/// fast string path, while 16 separate 4 KiB copies into cold memory cost
/// about 1.6x as much (`page/seq_1M` in `benches/benches/overwrite.rs`).
struct Joined<'d> {
    /// The written data (`Change::write`'s bytes) and where it starts in
    /// the file.
    data: &'d [u8],
    off: u64,
    /// The run so far: adjacent fresh pages and the file position of its
    /// first byte.
    run: Option<(RawMem, u64)>,
}

impl<'d> Joined<'d> {
    fn new(ch: &Change<'d>) -> Self {
        match ch.write {
            Some((off, _, Src::Bytes(data))) => Joined { data, off, run: None },
            _ => Joined { data: &[], off: 0, run: None },
        }
    }

    /// Writes the bytes of the file at `pos..pos + m.len()` (all inside the
    /// written range) into `m`, a fresh page, now or with the next ones.
    ///
    /// # Safety
    /// `m` is fresh (taken in this batch, reached by no published version),
    /// so it is the runner's alone until the draft is published, which
    /// happens after [`Joined::flush`].
    unsafe fn put(&mut self, m: RawMem, pos: u64) {
        if let Some((r, at)) = self.run {
            if at + r.len() as u64 == pos {
                if let Some(j) = r.join(&m) {
                    self.run = Some((j, at));
                    return;
                }
            }
            self.flush();
        }
        self.run = Some((m, pos));
    }

    /// Does the held-back copy.
    fn flush(&mut self) {
        if let Some((r, at)) = self.run.take() {
            let from = (at - self.off) as usize;
            // SAFETY: every page of `r` was `put` fresh (the runner's alone
            // until the draft is published, which is after this), and its
            // bytes are inside the written range.
            unsafe { r.write(0, &self.data[from..from + r.len()]) };
        }
    }
}

/// Changes page `i` of the draft's private leaf as `sp` says (`ms`: the
/// lowest byte changed; `src`: what goes at `sp.a..sp.b`; `pos`: the page's
/// file position): in place if the page contract allows it (every byte
/// changed at or past `init`, or the page fresh), else into a fresh page
/// from `fresh` (copy-on-write, copying only the bytes kept).
#[allow(clippy::too_many_arguments)] // one page's whole context, on the hot path
fn change_page(
    leaf: &mut LeafMut<'_>,
    i: usize,
    sp: &Span,
    ms: usize,
    src: Src<'_>,
    pos: u64,
    fresh: &mut Fresh<'_>,
    joined: &mut Joined<'_>,
    ed: &mut Edit<'_>,
) {
    let ps = fresh.pool.page_size();
    // Sectors are whole, and callers change only pages of present sectors.
    debug_assert!(leaf.page(i).is_some(), "change_page on an absent page");
    let Some(m) = leaf.page(i).map(|pg| pg.mem(ps)) else { return };
    #[cfg(not(any(loom_bug = "sector_write_shared", loom_bug = "sector_write_past_size")))]
    let in_place = ms >= leaf.init(i) || leaf.is_fresh(i);
    // Injected bug (loom-tests/tests/table_publish.rs): write in place below `init` when shared.
    #[cfg(loom_bug = "sector_write_shared")]
    let in_place = {
        let _ = ms;
        true
    };
    // Injected bug (loom-tests/tests/read_with.rs): take "past the old
    // size" for "past `init`", so a file truncated into a page and grown
    // again rewrites in place bytes an older version still shows.
    #[cfg(loom_bug = "sector_write_past_size")]
    let in_place = ms >= sp.old_vis || leaf.is_fresh(i);
    if in_place {
        // SAFETY: every byte changed is at or past `ms`: either past
        // `init`, which no version exposes (rule 2: readers read only
        // below it), or the page is fresh, reached by no published
        // version (rule 3). loom: `table_publish::append_in_place_past_init`,
        // `overwrite_visible_sector` (bug `sector_write_shared`).
        unsafe {
            if sp.new_vis > sp.old_vis {
                zero_except(m, sp.old_vis, sp.new_vis, sp.a, sp.b);
            }
            put(m, sp.a, sp.b, src);
        }
        leaf.raise_init(i, sp.new_vis.max(sp.b));
    } else if sp.a == 0 && sp.b == ps && matches!(src, Src::Bytes(_)) {
        // The whole page is replaced: nothing of `m` to keep.
        let pg = fresh.take();
        // SAFETY: the page is fresh (no table reaches it yet), wholly written.
        unsafe { joined.put(pg.mem(ps), pos) };
        leaf.put_fresh(i, pg, sp.new_vis.max(sp.b), ed);
    } else {
        let pg = fresh.take();
        let n = pg.mem(ps);
        let (a, b, old) = (sp.a, sp.b, sp.old_vis);
        // SAFETY: `n` is fresh (no table reaches it yet); `m`'s bytes
        // below `old_vis <= init` are only read, as readers do (rule 3
        // forbids writing them: a published version reaches `m`).
        // Distinct pages. loom: `table_publish::partial_overwrite`.
        unsafe {
            if b > a {
                n.copy_from(0, &m, 0, a.min(old));
                if b < old {
                    n.copy_from(b, &m, b, old - b);
                }
            } else {
                n.copy_from(0, &m, 0, old);
            }
            zero_except(n, old, sp.new_vis, a, b);
            put(n, a, b, src);
        }
        leaf.put_fresh(i, pg, sp.new_vis.max(b), ed);
    }
}

/// Puts a fresh page at page `p` of a hole the change fills, in `leaf`
/// (`p`'s leaf): the written bytes, zeros around them up to the new size.
fn fill_page(
    leaf: &mut LeafMut<'_>,
    p: u64,
    sh: &Shape,
    ch: &Change<'_>,
    fresh: &mut Fresh<'_>,
    joined: &mut Joined<'_>,
    ed: &mut Edit<'_>,
) {
    let ps = sh.ps;
    let sp = sh.page_span(p);
    let pg = fresh.take();
    let m = pg.mem(ps as usize);
    if sp.a == 0 && sp.b == ps as usize && !joined.data.is_empty() {
        // SAFETY: `m` is fresh (taken in this batch, no table reaches it
        // yet), and the whole page is written.
        unsafe { joined.put(m, p * ps) };
    } else {
        // SAFETY: `m` is fresh: taken in this batch, no table reaches it
        // yet, so it is this runner's alone (rule 3).
        unsafe {
            zero_except(m, 0, sp.new_vis, sp.a, sp.b);
            put(m, sp.a, sp.b, ch.src_at(p * ps, &sp));
        }
    }
    leaf.put_fresh(slot(p), pg, sp.new_vis.max(sp.b), ed);
}

fn apply_sector(
    t: &mut Table,
    ed: &mut Edit<'_>,
    sh: &Shape,
    ch: &Change<'_>,
    k: u64,
    fresh: &mut Fresh<'_>,
    joined: &mut Joined<'_>,
) {
    let (ps, pps) = (sh.ps, sh.pps);
    let first = k * pps;
    if t.get(first).is_none() {
        if !sh.fills(k) {
            return;
        }
        // A hole: a whole fresh sector.
        let mut leaf: Option<(u64, LeafMut<'_>)> = None;
        for p in first..first + pps {
            if leaf.as_ref().is_none_or(|(at, _)| *at != p / LEAF as u64) {
                leaf = Some((p / LEAF as u64, t.leaf_mut(p, ed)));
            }
            if let Some((_, l)) = leaf.as_mut() {
                fill_page(l, p, sh, ch, fresh, joined, ed);
            }
        }
        return;
    }
    // One walk (and path copy) per leaf, not per page.
    let mut cur: Option<(u64, LeafMut<'_>)> = None;
    for p in sh.pages_changed(k) {
        let sp = sh.page_span(p);
        let Some(ms) = sp.modified_start() else { continue };
        let i = slot(p);
        if cur.as_ref().is_none_or(|(at, _)| *at != p / LEAF as u64) {
            cur = Some((p / LEAF as u64, t.leaf_mut(p, ed)));
        }
        let Some((_, leaf)) = cur.as_mut() else { continue };
        change_page(leaf, i, &sp, ms, ch.src_at(p * ps, &sp), p * ps, fresh, joined, ed);
    }
}
