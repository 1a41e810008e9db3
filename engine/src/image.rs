//! Images: a whole file system saved to a byte stream and loaded back.
//!
//! # Saving: one point in time, writers held off only for the copy of pointers
//! [`Engine::snapshot`] closes the mutation gate (`gate.rs`): it waits for
//! the mutations in flight, holds off new ones, walks the tree from the root
//! copying each directory's entries (names and inode numbers) and each
//! reachable node's published `Arc<Snap>` (metadata, file data, xattrs: one
//! reference count each, never the bytes), and opens the gate again. Readers
//! never wait; writers wait for that walk only, O(files). [`Snapshot::write_to`]
//! then streams the image from those versions while the file system keeps
//! serving: file data is persistent (an overwrite copies the sector it
//! changes, a truncate drops only the table's references), so the sectors the
//! snapshot holds stay as they were. The image is the state after exactly the
//! mutations that completed before the gate closed.
//!
//! # Format (versions 1 and 2; integers little-endian)
//! ```text
//! header   128 bytes: magic "SECTORFS", version u32, header length u32
//!          = 128, flags u32 = 0, reserved u32 = 0; sector size, limit,
//!          inode limit, inline threshold, largest file (u64 each); root
//!          mode, uid, gid, options (bit 0 case-insensitive, bit 1 POSIX
//!          ACLs) (u32 each); nodes u64, data bytes u64, bytes in use u64;
//!          saved at (i64 s, u32 ns), reserved u32 = 0; crc32 of bytes 0..124
//! records  kind u8, reserved [0; 3], payload length u32, payload, crc32 of
//!          the kind, reserved, length and payload
//!   META   (first) key/value strings: key length u8, value length u16, key, value
//!   NODE   ino u64, type u8, [0; 3], perm, uid, gid, rdev, flags (u32 each),
//!          size u64, atime, mtime, ctime, crtime (i64 s, u32 ns each),
//!          then a symlink's target
//!   XATTR  ino u64, name length u16, name, value
//!   DATA   ino u64, offset u64, bytes (at most 1 MiB; only what holds data:
//!          holes are not written)
//!   CLONE  (version 2) ino u64, offset u64, source ino u64, source offset
//!          u64, length u64: these bytes of the file are those bytes of the
//!          source (written by an earlier DATA record), shared as
//!          `copy_file_range` shares them
//!   DIR    directory ino u64, then entries: name length u8, ino u64, name
//!   END    (last) records before it u64, nodes u64, entries u64, data
//!          bytes u64, crc32 of every earlier record's crc in order
//! ```
//! A node's XATTR, DATA and CLONE records follow its NODE record (and a
//! CLONE record its source's NODE); every NODE comes before the DIR records
//! that name it; DATA and CLONE offsets grow within a file.
//!
//! # Clones
//! Pages held by two table slots (a clone's, issue 20) are stored once: the
//! saver writes a page marked shared as DATA the first time it meets it,
//! and a whole sector all of whose pages it has met, in order in one file,
//! as a CLONE of those pages. The loader replays CLONE
//! records with [`Engine::copy_file_range`] once every file is in place
//! (and gives the files back their times), so a disk full of clones loads
//! under the limit it was saved under. An image without clones is written
//! as version 1, which older engines read.
//!
//! # Loading: everything checked before anything is shown
//! [`Engine::load_image`] builds a new engine that nobody else can see yet,
//! checking every record (checksums, lengths, names, types, times, links,
//! that every node is reachable from the root and every directory has one
//! name) and every count at the end; any fault is an [`ImageError`] naming
//! the byte where it was found, and the half-built engine is dropped (its
//! memory with it). It never panics on a hostile image, and its memory is
//! bounded by the limit in force plus one record (at most 1 MiB and a bit).

mod direct;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::acl::{Acl, AclKind};
use crate::budget::XValue;
use crate::data::FileData;
use crate::dir::Dir;
use crate::node::{FirstVersion, Meta, Node, Snap, Special, Xattrs, CAPS};
use crate::sync::atomic::Ordering;
use crate::sync::Arc;
use crate::types::*;
use crate::{Config, Engine, Error};
pub use direct::{is_on_local_disk, ImageReader, ImageWriter};

/// The first 8 bytes of every image.
pub const MAGIC: [u8; 8] = *b"SECTORFS";
/// The newest format version this engine writes and reads (version 2 adds
/// CLONE records; an image without them is written as version 1).
pub const VERSION: u32 = 2;
const HEADER_LEN: usize = 128;
/// Bytes of file data in one DATA record, at most.
pub const DATA_CHUNK: usize = 1 << 20;
const MAX_PAYLOAD: usize = DATA_CHUNK + 64;
const DIR_CHUNK: usize = 64 << 10;
const BUF: usize = 4 << 20;
/// Every write `write_to` hands its writer starts at an address aligned to
/// this and, but for the last, is a whole multiple of it long: what a file
/// opened with `O_DIRECT` asks (a writer need not care).
pub const WRITE_ALIGN: usize = 4096;

const META: u8 = 1;
const NODE: u8 = 2;
const XATTR: u8 = 3;
const DATA: u8 = 4;
const DIR: u8 = 5;
const END: u8 = 6;
const CLONE: u8 = 7;

const OPT_CASE_INSENSITIVE: u32 = 1;
const OPT_POSIX_ACL: u32 = 2;

/// Why an image cannot be loaded. Each message is one line with the numbers.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading the image failed.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    /// The first bytes are not an image's.
    #[error("not a sectorfs image (no SECTORFS magic at the start)")]
    NotAnImage,
    /// Written by another version of the format.
    #[error("image format version {0} is not supported (this sectorfs reads versions 1 to {VERSION})")]
    Version(u32),
    /// The image ends early.
    #[error("image is truncated at byte {at} (it ends before its END record)")]
    Truncated {
        /// Where the missing bytes should be.
        at: u64,
    },
    /// A checksum, length, count or value is wrong.
    #[error("image is corrupt at byte {at}: {what}")]
    Corrupt {
        /// Offset of the header or record that is wrong.
        at: u64,
        /// What is wrong with it.
        what: String,
    },
    /// More file data than the limit allows.
    #[error(
        "image holds {data} bytes of file data ({used} bytes in memory when saved), more than the limit of {limit} bytes"
    )]
    TooLarge {
        /// Bytes of file data in the image.
        data: u64,
        /// Bytes in use (data in sectors, inline buffers) when it was saved.
        used: u64,
        /// The limit it was loaded under.
        limit: u64,
    },
    /// File data within the limit that does not fit it as stored: in
    /// whole sectors of the size it is loaded with (a file's last sector
    /// is whole; a larger `sector_size` than it was saved with rounds up
    /// more), and with the table slots of the pages its clones share.
    #[error(
        "image holds {data} bytes of file data, which take more than the limit of {limit} bytes as stored \
         ({sector_size}-byte sectors, table slots of cloned pages; {used} bytes in memory when saved)"
    )]
    TooLargeInMemory {
        /// Bytes of file data in the image.
        data: u64,
        /// Bytes in use (data in sectors, inline buffers) when it was saved.
        used: u64,
        /// The limit it was loaded under.
        limit: u64,
        /// The sector size it was loaded with.
        sector_size: usize,
    },
    /// More inodes than the inode limit allows.
    #[error("image holds at least {nodes} files, more than the limit of {limit}")]
    TooManyFiles {
        /// Inodes in the image (those counted so far when the limit was
        /// passed before the end).
        nodes: u64,
        /// The inode limit it was loaded under.
        limit: u64,
    },
    /// More metadata than the metadata limit allows ([`crate::budget`]).
    #[error(
        "image needs {needed} bytes of metadata (inodes, names, extended attributes) or more, more than the limit of \
         {limit} bytes (1 KiB per inode of the inode limit)"
    )]
    TooMuchMetadata {
        /// Bytes of metadata the image's nodes charge (those read so far
        /// when the limit was passed before the end).
        needed: u64,
        /// The metadata limit it was loaded under.
        limit: u64,
    },
    /// The settings chosen for the image were refused.
    #[error("{0}")]
    Refused(String),
}

fn corrupt(at: u64, what: impl Into<String>) -> ImageError {
    ImageError::Corrupt { at, what: what.into() }
}

/// What an image's header and META record say.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The format version it was written in.
    pub version: u32,
    /// The engine settings it was saved with (the root's mode and owner as
    /// they were).
    pub config: Config,
    /// Inodes in the image.
    pub nodes: u64,
    /// Bytes of file data in the image's DATA records (holes, and what
    /// CLONE records share, not counted).
    pub data_bytes: u64,
    /// Bytes in use when it was saved (as `Stats::pool.used`).
    pub used_bytes: u64,
    /// When it was saved.
    pub saved_at: Time,
    /// Key/value strings the saver added (e.g. a mount's label).
    pub extras: Vec<(String, String)>,
}

/// What [`Snapshot::write_to`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveReport {
    /// Inodes written.
    pub nodes: u64,
    /// Directory entries written.
    pub entries: u64,
    /// Bytes of file data written.
    pub data_bytes: u64,
    /// Bytes of the whole image.
    pub image_bytes: u64,
}

/// One consistent version of a whole file system ([`Engine::snapshot`]).
/// Holding it keeps the versions it took alive: space freed by deletes and
/// overwrites after it was taken comes back when it drops.
pub struct Snapshot {
    cfg: Config,
    /// The engine's page size (clones share pages).
    ps: u64,
    /// Some page was held by two table slots when it was taken (so some
    /// CLONE records may be due).
    any_shared: bool,
    used: u64,
    nodes: Vec<(Arc<Node>, Arc<Snap>)>,
    /// Per directory (by index in `nodes`): its entries, encoded as in a DIR record.
    dirs: Vec<(usize, Vec<u8>)>,
    entries: u64,
    data_bytes: u64,
    held: Duration,
    /// [`Engine::changes`] at the capture.
    changes: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("nodes", &self.nodes.len())
            .field("entries", &self.entries)
            .field("data_bytes", &self.data_bytes)
            .finish()
    }
}

/// Whole sectors of a file stored as a CLONE of bytes an earlier DATA
/// record holds.
#[derive(Debug, Clone, Copy)]
struct CloneRun {
    off: u64,
    src: Ino,
    src_off: u64,
    len: u64,
}

/// If every page of the sector at page `first` of `d` is marked shared and
/// was met before (`seen`: its file and index), in order in one file: that
/// file and the first page (a clone's source need only be page-aligned, as
/// for `copy_file_range`).
fn met_sector(d: &FileData, seen: &HashMap<usize, (Ino, u64)>, first: u64, pps: u64) -> Option<(Ino, u64)> {
    let mut at = None;
    for j in 0..pps {
        let (addr, shared) = d.page_shared(first + j)?;
        let &(ino, p) = seen.get(&addr).filter(|_| shared)?;
        match at {
            None => at = Some((ino, p)),
            Some((i0, p0)) if i0 == ino && p0 + j == p => {}
            _ => return None,
        }
    }
    at
}

/// The byte ranges of `d` that hold data (`SEEK_DATA`/`SEEK_HOLE` order).
fn extents(d: &FileData, ss: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut pos = 0u64;
    std::iter::from_fn(move || {
        let start = d.seek(ss, pos, true).ok()?;
        let end = d.seek(ss, start, false).unwrap_or(d.len()).max(start);
        pos = end;
        (end > start).then_some((start, end))
    })
}

impl Engine {
    /// A consistent version of the whole file system, for [`Snapshot::write_to`].
    ///
    /// Waits for the mutations in flight and holds off new ones while it
    /// copies every directory's entries and one reference to every reachable
    /// node's current version (O(files), no file bytes); readers are never
    /// held off. Unlinked files that are still open (and `O_TMPFILE` files
    /// without a name) are not part of it.
    pub fn snapshot(&self) -> Snapshot {
        let ss = self.cfg.sector_size as u64;
        let closed = self.gate.close();
        let t0 = Instant::now();
        let mut nodes: Vec<(Arc<Node>, Arc<Snap>)> = Vec::new();
        let mut dirs = Vec::new();
        let mut seen: HashMap<Ino, ()> = HashMap::new();
        let mut entries = 0u64;
        if let Some(root) = self.nodes.get(&ROOT) {
            let s = root.load_full();
            nodes.push((root, s));
        }
        let mut i = 0;
        while i < nodes.len() {
            let n = Arc::clone(&nodes[i].0);
            if let Some(d) = n.dir() {
                let d = d.read();
                let mut enc = Vec::with_capacity(d.len() * 24);
                for (name, e) in d.iter_from(0) {
                    // A directory has one name and most files one link: only
                    // a file with more is looked up in `seen`.
                    let first = match self.nodes.get(&e.ino) {
                        Some(c) if c.kind == FileType::Directory || c.nlink.load(Ordering::Acquire) <= 1 => Some(c),
                        Some(c) => seen.insert(e.ino, ()).is_none().then_some(c),
                        None => continue,
                    };
                    if let Some(c) = first {
                        let s = c.load_full();
                        nodes.push((c, s));
                    }
                    enc.push(name.len() as u8);
                    enc.extend_from_slice(&e.ino.to_le_bytes());
                    enc.extend_from_slice(name);
                    entries += 1;
                }
                dirs.push((i, enc));
            }
            i += 1;
        }
        let mut cfg = self.cfg.clone();
        if let Some((_, s)) = nodes.first() {
            cfg.root_mode = s.meta.perm;
            cfg.root_uid = s.meta.uid;
            cfg.root_gid = s.meta.gid;
        }
        let used = self.pool.used();
        let any_shared = self.pool.any_shared();
        // Exact: the gate is closed.
        let changes = self.gate.changes();
        let held = t0.elapsed();
        drop(closed);
        // Outside the gate: the versions are immutable.
        let data_bytes = nodes
            .iter()
            .filter(|(n, _)| n.kind == FileType::Regular)
            .map(|(_, s)| extents(&s.data, ss).map(|(a, b)| b - a).sum::<u64>())
            .sum();
        let ps = self.pool.page_size() as u64;
        Snapshot { cfg, ps, any_shared, used, nodes, dirs, entries, data_bytes, held, changes }
    }

    /// How many mutations the engine has taken so far (namespace changes,
    /// writes, attribute changes: everything an image holds except access
    /// times; an attempt that failed counts too). Monotonic; compare with
    /// [`Snapshot::changes`] to tell whether a saved image is still current.
    pub fn changes(&self) -> u64 {
        self.gate.changes()
    }

    /// Loads an image written by [`Snapshot::write_to`] into a new engine.
    ///
    /// `choose` gets the image's header (its settings, counts, extras) and
    /// returns the settings to load it with (a caller overrides what its
    /// user asked for; the root's mode and owner come from these settings).
    ///
    /// # Errors
    /// [`ImageError`]: not an image, another version, truncated or corrupt
    /// (with the byte offset), more data than `max_bytes` or more inodes
    /// than `max_inodes` of the chosen settings, settings refused by
    /// `choose` or by [`Engine::new`]. Nothing is kept on error.
    pub fn load_image<R: Read>(
        r: R,
        choose: impl FnOnce(&ImageInfo) -> Result<Config, String>,
    ) -> Result<Engine, ImageError> {
        let mut rd = Reader::new(r);
        let info = read_head(&mut rd)?;
        let cfg = choose(&info).map_err(ImageError::Refused)?;
        if info.nodes > cfg.max_inodes {
            return Err(ImageError::TooManyFiles { nodes: info.nodes, limit: cfg.max_inodes });
        }
        if info.data_bytes > cfg.max_bytes {
            return Err(info.too_large(&cfg));
        }
        let engine = Engine::new(cfg).map_err(|e| ImageError::Refused(format!("bad settings: {e}")))?;
        // The kernel zeroes fresh memory on first touch: fault it in on the
        // other core while this one copies (issue 21: about half of a large
        // load's time was that zeroing).
        #[cfg(all(target_os = "linux", not(loom)))]
        let _prefault = (info.data_bytes >= PREFAULT_MIN).then(|| engine.pool.prefault(info.data_bytes)).flatten();
        let mut ld =
            Loader { engine, info, staged: HashMap::new(), clones: Vec::new(), entries: 0, data_bytes: 0, nodes: 0 };
        loop {
            let (kind, at, payload) = rd.record()?;
            if kind == END {
                let end = payload.to_vec();
                let chain = rd.chain_before_last;
                rd.expect_eof()?;
                return ld.finish(at, &end, rd.records - 1, chain);
            }
            ld.record(kind, at, payload)?;
        }
    }
}

/// Images with less file data than this load without a prefault thread.
#[cfg(all(target_os = "linux", not(loom)))]
const PREFAULT_MIN: u64 = 32 << 20;

/// Reads the header and the META record.
fn read_head<R: Read>(rd: &mut Reader<R>) -> Result<ImageInfo, ImageError> {
    if !rd.fill(8)? || rd.peek(8) != MAGIC {
        return Err(ImageError::NotAnImage);
    }
    if !rd.fill(HEADER_LEN)? {
        return Err(ImageError::Truncated { at: rd.avail() as u64 });
    }
    let h = rd.peek(HEADER_LEN).to_vec();
    let mut c = Cur { b: &h, p: 8, at: 0 };
    let version = c.u32()?;
    if !(1..=VERSION).contains(&version) {
        return Err(ImageError::Version(version));
    }
    if crc32fast::hash(&h[..HEADER_LEN - 4]) != u32::from_le_bytes([h[124], h[125], h[126], h[127]]) {
        return Err(corrupt(0, "header checksum mismatch"));
    }
    let (len, flags, reserved) = (c.u32()?, c.u32()?, c.u32()?);
    if len as usize != HEADER_LEN || flags != 0 || reserved != 0 {
        return Err(corrupt(0, format!("header length {len}, flags {flags:#x}: not what version {version} writes")));
    }
    let sector_size = c.u64()?;
    if !crate::sector_size_ok(sector_size) {
        return Err(corrupt(0, format!("sector size {sector_size} is not a power of two from 4 KiB to 1 MiB")));
    }
    let sector_size = sector_size as usize;
    let (max_bytes, max_inodes) = (c.u64()?, c.u64()?);
    let inline_max = usize::try_from(c.u64()?).map_err(|_| corrupt(0, "inline threshold out of range"))?;
    let max_file_size = c.u64()?;
    let (root_mode, root_uid, root_gid, opts) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?);
    if root_mode > 0o7777 || opts & !(OPT_CASE_INSENSITIVE | OPT_POSIX_ACL) != 0 {
        return Err(corrupt(0, "root mode or options out of range"));
    }
    let (nodes, data_bytes, used_bytes) = (c.u64()?, c.u64()?, c.u64()?);
    let saved_at = c.time()?;
    if c.u64()? != 0 {
        return Err(corrupt(0, "reserved header bytes are not zero"));
    }
    rd.consume(HEADER_LEN);
    let config = Config {
        sector_size,
        max_bytes,
        max_inodes,
        inline_max,
        max_file_size,
        case_insensitive: opts & OPT_CASE_INSENSITIVE != 0,
        root_mode,
        root_uid,
        root_gid,
        cache_slots: 0,
        page_size: 0,
        posix_acl: opts & OPT_POSIX_ACL != 0,
        max_meta_bytes: 0,
        atime: Atime::default(),
    };
    let (kind, at, p) = rd.record()?;
    if kind != META {
        return Err(corrupt(at, "the first record is not META"));
    }
    let mut c = Cur { b: p, p: 0, at };
    let mut extras = Vec::new();
    while !c.done() {
        let (kl, vl) = (c.u8()? as usize, c.u16()? as usize);
        let k = String::from_utf8(c.bytes(kl)?.to_vec()).map_err(|_| corrupt(at, "META key is not UTF-8"))?;
        let v = String::from_utf8(c.bytes(vl)?.to_vec()).map_err(|_| corrupt(at, "META value is not UTF-8"))?;
        extras.push((k, v));
    }
    Ok(ImageInfo { version, config, nodes, data_bytes, used_bytes, saved_at, extras })
}

impl ImageInfo {
    /// The error for this image's file data not fitting the limit of `cfg`.
    fn too_large(&self, cfg: &Config) -> ImageError {
        let (data, used, limit) = (self.data_bytes, self.used_bytes, cfg.max_bytes);
        if data > limit {
            ImageError::TooLarge { data, used, limit }
        } else {
            ImageError::TooLargeInMemory { data, used, limit, sector_size: cfg.sector_size }
        }
    }
}

/// Reads an image's header (and its extras) without loading it.
///
/// # Errors
/// As [`Engine::load_image`] for the first bytes of an image.
pub fn read_info<R: Read>(r: R) -> Result<ImageInfo, ImageError> {
    read_head(&mut Reader::new(r))
}

// ------------------------------------------------------------------ writing

struct Out<W: Write> {
    w: W,
    /// `lead` bytes of padding, then the records not written yet; it never
    /// grows past its capacity, so `buf[lead..]` stays `WRITE_ALIGN`-aligned.
    buf: Vec<u8>,
    lead: usize,
    written: u64,
    records: u64,
    chain: crc32fast::Hasher,
}

impl<W: Write> Out<W> {
    fn new(w: W) -> Self {
        let mut buf: Vec<u8> = Vec::with_capacity(BUF + WRITE_ALIGN);
        let lead = buf.as_ptr().addr().wrapping_neg() % WRITE_ALIGN;
        buf.resize(lead, 0);
        Out { w, buf, lead, written: 0, records: 0, chain: crc32fast::Hasher::new() }
    }

    /// Starts a record: returns where its header is.
    fn begin(&mut self, kind: u8) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
        at
    }

    /// Ends the record begun at `at`: length, checksum; flushes a full buffer.
    fn end(&mut self, at: usize) -> io::Result<()> {
        let len = (self.buf.len() - at - 8) as u32;
        self.buf[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[at..]);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.chain.update(&crc.to_le_bytes());
        self.records += 1;
        if self.buf.len() >= BUF - MAX_PAYLOAD - 16 {
            self.flush(false)?;
        }
        Ok(())
    }

    /// Writes the whole `WRITE_ALIGN` blocks of the buffer and keeps the
    /// rest, under 4 KiB, at its start; if `last`, writes that rest too (a
    /// write of its own: the blocks before it stay aligned).
    fn flush(&mut self, last: bool) -> io::Result<()> {
        let lead = self.lead;
        // Every record fits below the flush threshold plus one record, so
        // the buffer never moves (an `O_DIRECT` writer would fall back to
        // the page cache if it did: same bytes, slower).
        debug_assert_eq!(self.buf[lead..].as_ptr().addr() % WRITE_ALIGN, 0);
        let n = (self.buf.len() - lead) / WRITE_ALIGN * WRITE_ALIGN;
        if n > 0 {
            self.w.write_all(&self.buf[lead..lead + n])?;
            self.written += n as u64;
            self.buf.copy_within(lead + n.., lead);
            self.buf.truncate(self.buf.len() - n);
        }
        if last && self.buf.len() > lead {
            self.w.write_all(&self.buf[lead..])?;
            self.written += (self.buf.len() - lead) as u64;
            self.buf.truncate(lead);
        }
        Ok(())
    }
}

fn put_time(b: &mut Vec<u8>, t: Time) {
    b.extend_from_slice(&t.secs.to_le_bytes());
    b.extend_from_slice(&t.nanos.to_le_bytes());
}

fn kind_byte(k: FileType) -> u8 {
    match k {
        FileType::Regular => 1,
        FileType::Directory => 2,
        FileType::Symlink => 3,
        FileType::Fifo => 4,
        FileType::CharDevice => 5,
        FileType::BlockDevice => 6,
        FileType::Socket => 7,
    }
}

fn kind_of(b: u8) -> Option<FileType> {
    Some(match b {
        1 => FileType::Regular,
        2 => FileType::Directory,
        3 => FileType::Symlink,
        4 => FileType::Fifo,
        5 => FileType::CharDevice,
        6 => FileType::BlockDevice,
        7 => FileType::Socket,
        _ => return None,
    })
}

impl Snapshot {
    /// Inodes in the snapshot.
    pub fn nodes(&self) -> u64 {
        self.nodes.len() as u64
    }

    /// Bytes of file data it holds (holes not counted).
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// How long the mutation gate was closed while it was taken.
    pub fn held(&self) -> Duration {
        self.held
    }

    /// How many mutations the engine had taken when this was captured
    /// ([`Engine::changes`]): if the engine's count is still this, the file
    /// system is what this snapshot holds (access times aside).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Every directory entry in the snapshot: (directory, name, inode).
    /// For the loom models and tests; internal, not semver.
    #[doc(hidden)]
    pub fn entries(&self) -> Vec<(Ino, Vec<u8>, Ino)> {
        let mut out = Vec::new();
        for (i, enc) in &self.dirs {
            let dir = self.nodes[*i].0.ino;
            let mut p = 0;
            while p + 9 <= enc.len() {
                let n = enc[p] as usize;
                let mut ino = [0u8; 8];
                ino.copy_from_slice(&enc[p + 1..p + 9]);
                out.push((dir, enc[p + 9..p + 9 + n].to_vec(), u64::from_le_bytes(ino)));
                p += 9 + n;
            }
        }
        out
    }

    /// Reads `ino`'s data as the snapshot holds it (0 bytes if it has no
    /// such file). For the loom models and tests; internal, not semver.
    #[doc(hidden)]
    pub fn read(&self, ino: Ino, off: u64, buf: &mut [u8]) -> usize {
        let ss = self.cfg.sector_size as u64;
        self.nodes.iter().find(|(n, _)| n.ino == ino).map_or(0, |(_, s)| s.data.read(ss, off, buf))
    }

    /// Which sectors to store as CLONE records (per node index, by offset)
    /// and the bytes they cover. A page marked shared is remembered (by
    /// address) where it is first written as DATA; a whole sector whose
    /// pages were all met before, in order in one file, is a clone of those
    /// pages. Pages wholly inside both files'
    /// sizes only. O(pages) lookups, and nothing at all unless some page
    /// was shared when the snapshot was taken.
    fn clone_plan(&self) -> (HashMap<usize, Vec<CloneRun>>, u64) {
        let mut plan = HashMap::new();
        let mut cloned = 0;
        if !self.any_shared {
            return (plan, cloned);
        }
        let (ss, ps) = (self.cfg.sector_size as u64, self.ps);
        let pps = ss / ps;
        let mut seen: HashMap<usize, (Ino, u64)> = HashMap::new();
        for (idx, (n, s)) in self.nodes.iter().enumerate() {
            if n.kind != FileType::Regular {
                continue;
            }
            let whole = s.data.len() / ps;
            let mut runs: Vec<CloneRun> = Vec::new();
            for (a, e) in extents(&s.data, ss) {
                // Whole sectors inside the extent and the whole pages (no
                // sum that could pass `u64::MAX` near the largest files).
                let mut k = a.div_ceil(ss);
                while k < whole / pps && k < e / ss {
                    let first = k * pps;
                    match met_sector(&s.data, &seen, first, pps) {
                        Some((src, sp)) => {
                            let (off, src_off) = (k * ss, sp * ps);
                            match runs.last_mut() {
                                Some(r) if r.src == src && r.off + r.len == off && r.src_off + r.len == src_off => {
                                    r.len += ss;
                                }
                                _ => runs.push(CloneRun { off, src, src_off, len: ss }),
                            }
                            cloned += ss;
                        }
                        None => {
                            for p in first..first + pps {
                                if let Some((addr, true)) = s.data.page_shared(p) {
                                    seen.entry(addr).or_insert((n.ino, p));
                                }
                            }
                        }
                    }
                    k += 1;
                }
            }
            if !runs.is_empty() {
                plan.insert(idx, runs);
            }
        }
        (plan, cloned)
    }

    /// Writes the image to `w` (in pieces of up to 4 MiB; `w` needs no
    /// buffer of its own), with `extras` (key/value strings of at most 255
    /// and 65,535 bytes; longer ones are cut) in its META record.
    ///
    /// # Errors
    /// The first error of `w`.
    pub fn write_to<W: Write>(&self, w: W, extras: &[(&str, &str)]) -> io::Result<SaveReport> {
        let ss = self.cfg.sector_size as u64;
        let (plan, cloned) = self.clone_plan();
        let mut o = Out::new(w);
        // Header.
        let c = &self.cfg;
        let b = &mut o.buf;
        b.extend_from_slice(&MAGIC);
        let version = if plan.is_empty() { 1 } else { VERSION };
        for v in [version, HEADER_LEN as u32, 0, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [c.sector_size as u64, c.max_bytes, c.max_inodes, c.inline_max as u64, c.max_file_size] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let opts = u32::from(c.case_insensitive) * OPT_CASE_INSENSITIVE + u32::from(c.posix_acl) * OPT_POSIX_ACL;
        for v in [c.root_mode, c.root_uid, c.root_gid, opts] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.nodes.len() as u64, self.data_bytes - cloned, self.used] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        put_time(b, Time::now());
        b.extend_from_slice(&[0u8; 8]);
        let crc = crc32fast::hash(&b[o.lead..]);
        b.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(b.len() - o.lead, HEADER_LEN);
        // Extras.
        let at = o.begin(META);
        for (k, v) in extras {
            let k = &k.as_bytes()[..k.len().min(255)];
            let v = &v.as_bytes()[..v.len().min(u16::MAX as usize)];
            o.buf.push(k.len() as u8);
            o.buf.extend_from_slice(&(v.len() as u16).to_le_bytes());
            o.buf.extend_from_slice(k);
            o.buf.extend_from_slice(v);
        }
        o.end(at)?;
        // Nodes, their xattrs and data.
        let mut data_bytes = 0u64;
        for (idx, (n, s)) in self.nodes.iter().enumerate() {
            let at = o.begin(NODE);
            let m = &s.meta;
            let b = &mut o.buf;
            b.extend_from_slice(&n.ino.to_le_bytes());
            b.extend_from_slice(&[kind_byte(n.kind), 0, 0, 0]);
            for v in [m.perm, m.uid, m.gid, n.rdev(), m.flags] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            let size = if n.kind == FileType::Regular { s.data.len() } else { 0 };
            b.extend_from_slice(&size.to_le_bytes());
            for t in [m.atime.get(), m.mtime.get(), m.ctime.get(), m.crtime.get()] {
                put_time(b, t);
            }
            if let Some(t) = n.target() {
                b.extend_from_slice(t);
            }
            o.end(at)?;
            if let Some(x) = &s.xattrs {
                for (k, v) in x.iter() {
                    let at = o.begin(XATTR);
                    o.buf.extend_from_slice(&n.ino.to_le_bytes());
                    o.buf.extend_from_slice(&(k.len() as u16).to_le_bytes());
                    o.buf.extend_from_slice(k);
                    o.buf.extend_from_slice(v);
                    o.end(at)?;
                }
            }
            if n.kind != FileType::Regular {
                continue;
            }
            let mut runs = plan.get(&idx).map_or(&[][..], Vec::as_slice).iter().peekable();
            for (a, e) in extents(&s.data, ss) {
                let mut pos = a;
                while pos < e {
                    if let Some(r) = runs.next_if(|r| r.off <= pos) {
                        let at = o.begin(CLONE);
                        for v in [n.ino, r.off, r.src, r.src_off, r.len] {
                            o.buf.extend_from_slice(&v.to_le_bytes());
                        }
                        o.end(at)?;
                        pos = r.off + r.len;
                        continue;
                    }
                    // Chunks end on DATA_CHUNK boundaries (sector-aligned
                    // writes at load) and where the next clone starts.
                    let next = ((pos / DATA_CHUNK as u64) + 1).saturating_mul(DATA_CHUNK as u64);
                    let end = next.min(e).min(runs.peek().map_or(u64::MAX, |r| r.off));
                    let len = (end - pos) as usize;
                    let at = o.begin(DATA);
                    o.buf.extend_from_slice(&n.ino.to_le_bytes());
                    o.buf.extend_from_slice(&pos.to_le_bytes());
                    // Straight from the version's pages into the buffer
                    // (no zero-fill of the buffer first: one pass less).
                    let buf = &mut o.buf;
                    let got = s.data.read_with(ss, pos, len, |iov| {
                        let mut n = 0;
                        for sl in iov {
                            buf.extend_from_slice(sl);
                            n += sl.len();
                        }
                        n
                    });
                    o.end(at)?;
                    data_bytes += got as u64;
                    if got < len {
                        break; // cannot happen: the extent is inside this version's size
                    }
                    pos = end;
                }
            }
        }
        // Directories, in pieces of about 64 KiB.
        for (i, enc) in &self.dirs {
            let ino = self.nodes[*i].0.ino;
            let mut rest = &enc[..];
            loop {
                let mut cut = 0;
                while cut < rest.len() && cut < DIR_CHUNK {
                    cut += 9 + rest[cut] as usize;
                }
                let at = o.begin(DIR);
                o.buf.extend_from_slice(&ino.to_le_bytes());
                o.buf.extend_from_slice(&rest[..cut]);
                o.end(at)?;
                rest = &rest[cut..];
                if rest.is_empty() {
                    break;
                }
            }
        }
        let chain = o.chain.clone().finalize();
        let at = o.begin(END);
        for v in [o.records, self.nodes.len() as u64, self.entries, data_bytes] {
            o.buf.extend_from_slice(&v.to_le_bytes());
        }
        o.buf.extend_from_slice(&chain.to_le_bytes());
        o.end(at)?;
        o.flush(true)?;
        o.w.flush()?;
        Ok(SaveReport { nodes: self.nodes.len() as u64, entries: self.entries, data_bytes, image_bytes: o.written })
    }
}

// ------------------------------------------------------------------ reading

/// A reader that hands out whole records from one growing buffer (no copy
/// per record beyond the read itself).
struct Reader<R: Read> {
    r: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Offset in the image of `buf[start]`.
    pos: u64,
    eof: bool,
    records: u64,
    chain: crc32fast::Hasher,
    chain_before_last: u32,
}

impl<R: Read> Reader<R> {
    fn new(r: R) -> Reader<R> {
        Reader {
            r,
            buf: Vec::new(),
            start: 0,
            end: 0,
            pos: 0,
            eof: false,
            records: 0,
            chain: crc32fast::Hasher::new(),
            chain_before_last: 0,
        }
    }

    fn avail(&self) -> usize {
        self.end - self.start
    }

    /// Makes `need` bytes available; `false` if the image ends first.
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        if self.avail() >= need {
            return Ok(true);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < need {
            // Grows with the record being read (bounded by MAX_PAYLOAD), in
            // steps of at least 64 KiB, at most BUF.
            let want = need.max(self.buf.len() * 2).clamp(64 << 10, BUF.max(need));
            self.buf.resize(want, 0);
        }
        while self.end < need && !self.eof {
            match self.r.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end >= need)
    }

    fn peek(&self, n: usize) -> &[u8] {
        &self.buf[self.start..self.start + n]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.pos += n as u64;
    }

    /// The next record: kind, offset, checked payload.
    fn record(&mut self) -> Result<(u8, u64, &[u8]), ImageError> {
        let at = self.pos;
        if !self.fill(8)? {
            return Err(ImageError::Truncated { at: at + self.avail() as u64 });
        }
        let h = self.peek(8);
        let (kind, reserved) = (h[0], [h[1], h[2], h[3]]);
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        if reserved != [0; 3] || !(META..=CLONE).contains(&kind) {
            return Err(corrupt(at, format!("unknown record type {kind}")));
        }
        if len > MAX_PAYLOAD {
            return Err(corrupt(at, format!("record length {len} is more than {MAX_PAYLOAD}")));
        }
        if !self.fill(8 + len + 4)? {
            return Err(ImageError::Truncated { at: at + self.avail() as u64 });
        }
        let rec = self.peek(8 + len + 4);
        let want = u32::from_le_bytes([rec[8 + len], rec[9 + len], rec[10 + len], rec[11 + len]]);
        if crc32fast::hash(&rec[..8 + len]) != want {
            return Err(corrupt(at, "record checksum mismatch"));
        }
        self.chain_before_last = self.chain.clone().finalize();
        self.chain.update(&want.to_le_bytes());
        self.records += 1;
        self.consume(8 + len + 4);
        let s = self.start - len - 4;
        Ok((kind, at, &self.buf[s..s + len]))
    }

    fn expect_eof(&mut self) -> Result<(), ImageError> {
        if self.fill(1)? {
            return Err(corrupt(self.pos, "bytes after the END record"));
        }
        Ok(())
    }
}

/// A cursor over a checked payload; running out is corruption at `at`.
struct Cur<'a> {
    b: &'a [u8],
    p: usize,
    at: u64,
}

impl<'a> Cur<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ImageError> {
        let e =
            self.p.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| corrupt(self.at, "record too short"))?;
        let s = &self.b[self.p..e];
        self.p = e;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], ImageError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ImageError> {
        Ok(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, ImageError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, ImageError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, ImageError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn time(&mut self) -> Result<Time, ImageError> {
        let secs = i64::from_le_bytes(self.arr()?);
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(corrupt(self.at, format!("a time has {nanos} nanoseconds")));
        }
        Ok(Time { secs, nanos })
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.p..];
        self.p = self.b.len();
        s
    }
    fn done(&self) -> bool {
        self.p == self.b.len()
    }
}

/// A node read from the image, before the engine gets it.
struct Staged {
    kind: FileType,
    meta: Meta,
    size: u64,
    data: FirstVersion,
    /// Where the next DATA record may start.
    next_data: u64,
    xattrs: Option<Xattrs>,
    /// A symlink's target or a device's number.
    special: Special,
    dir: Option<Dir>,
    /// Names (non-directories) or the parent (directories).
    names: u32,
    parent: Ino,
}

impl Staged {
    /// Takes `off..off + len` of this file for a DATA or CLONE record, if
    /// it is a regular file, the range is not empty, starts at or after
    /// the last one taken (offsets grow) and ends inside the size; else
    /// `false`, and nothing changes.
    fn place(&mut self, off: u64, len: u64) -> bool {
        match off.checked_add(len).filter(|&e| e <= self.size) {
            Some(end) if self.kind == FileType::Regular && len > 0 && off >= self.next_data => {
                self.next_data = end;
                true
            }
            _ => false,
        }
    }
}

struct Loader {
    engine: Engine,
    info: ImageInfo,
    staged: HashMap<Ino, Staged>,
    /// CLONE records (where each was, its file), replayed once every file
    /// is in place.
    clones: Vec<(u64, Ino, CloneRun)>,
    entries: u64,
    data_bytes: u64,
    nodes: u64,
}

fn check_name(name: &[u8]) -> bool {
    !(name.is_empty()
        || name.len() > NAME_MAX
        || name == b"."
        || name == b".."
        || name.iter().any(|&b| b == b'/' || b == 0))
}

impl Loader {
    /// `Err` once the metadata charged so far passes the limit (the
    /// image's inodes are charged at the end, so before that it is a
    /// lower bound of what the image needs).
    fn within_metadata_limit(&self) -> Result<(), ImageError> {
        let meta = self.engine.meta.as_ref();
        if meta.used() > meta.limit() {
            return Err(ImageError::TooMuchMetadata { needed: meta.used(), limit: meta.limit() });
        }
        Ok(())
    }

    fn node(&mut self, ino: Ino, at: u64) -> Result<&mut Staged, ImageError> {
        self.staged.get_mut(&ino).ok_or_else(|| corrupt(at, format!("record for inode {ino}, which has no NODE")))
    }

    fn record(&mut self, kind: u8, at: u64, p: &[u8]) -> Result<(), ImageError> {
        let mut c = Cur { b: p, p: 0, at };
        match kind {
            NODE => {
                let ino = c.u64()?;
                let k = c.arr::<4>()?;
                let kind = kind_of(k[0])
                    .filter(|_| k[1..] == [0; 3])
                    .ok_or_else(|| corrupt(at, format!("unknown file type {}", k[0])))?;
                let (perm, uid, gid, rdev, flags) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?, c.u32()?);
                let size = c.u64()?;
                let (atime, mtime, ctime, crtime) = (c.time()?, c.time()?, c.time()?, c.time()?);
                let target = c.rest();
                if ino == 0 || ino >= u64::MAX / 2 {
                    return Err(corrupt(at, format!("inode number {ino} out of range")));
                }
                if perm > 0o7777 {
                    return Err(corrupt(at, format!("mode {perm:o} has bits beyond 7777")));
                }
                if rdev != 0 && !matches!(kind, FileType::CharDevice | FileType::BlockDevice) {
                    return Err(corrupt(at, "a device number on a node that is not a device"));
                }
                if size != 0 && kind != FileType::Regular {
                    return Err(corrupt(at, "a size on a node that is not a regular file"));
                }
                if size > self.engine.cfg.max_file_size {
                    return Err(corrupt(at, format!("file size {size} is more than the largest file")));
                }
                let special = match kind {
                    FileType::Symlink => {
                        if target.is_empty() || target.len() >= PATH_MAX || target.contains(&0) {
                            return Err(corrupt(at, "bad symlink target"));
                        }
                        Special::Target(target.into())
                    }
                    _ if !target.is_empty() => return Err(corrupt(at, "a target on a node that is not a symlink")),
                    _ => Special::Device(rdev),
                };
                if ino == ROOT && kind != FileType::Directory {
                    return Err(corrupt(at, "the root is not a directory"));
                }
                self.nodes += 1;
                if self.nodes > self.info.nodes {
                    return Err(corrupt(at, "more NODE records than the header says"));
                }
                let meta = Meta {
                    perm,
                    uid,
                    gid,
                    atime: atime.into(),
                    mtime: mtime.into(),
                    ctime: ctime.into(),
                    crtime: crtime.into(),
                    // Inode flags the engine does not keep (an embedder's
                    // `SetAttr::flags` could set any bit before they had a
                    // meaning) are dropped, not shown by `lsattr`.
                    flags: flags & !(crate::types::inode_flags::ALL & !crate::types::inode_flags::SETTABLE),
                };
                let dir = (kind == FileType::Directory).then(Dir::new);
                let st = Staged {
                    kind,
                    meta,
                    size,
                    data: FirstVersion::new(&self.engine.pool),
                    next_data: 0,
                    xattrs: None,
                    special,
                    dir,
                    names: 0,
                    parent: 0,
                };
                if self.staged.insert(ino, st).is_some() {
                    return Err(corrupt(at, format!("inode {ino} appears twice")));
                }
            }
            XATTR => {
                let ino = c.u64()?;
                let nl = c.u16()? as usize;
                let name = c.bytes(nl)?;
                let value = c.rest();
                let acl = AclKind::of_name(name);
                let ok = match acl {
                    Some(_) => self.engine.cfg.posix_acl && matches!(Acl::parse(value), Ok(Some(_))),
                    None => crate::node::check_xattr_name(name).is_ok(),
                };
                if !ok || value.len() > XATTR_SIZE_MAX {
                    return Err(corrupt(at, format!("bad extended attribute {:?}", String::from_utf8_lossy(name))));
                }
                let budget = Arc::clone(&self.engine.meta);
                let n = self.node(ino, at)?;
                if acl == Some(AclKind::Default) && n.kind != FileType::Directory
                    || acl.is_some() && n.kind == FileType::Symlink
                {
                    return Err(corrupt(at, "an ACL on a node that cannot have it"));
                }
                let x = n.xattrs.get_or_insert_with(Xattrs::new_sync);
                if x.contains_key(name) {
                    return Err(corrupt(at, "an extended attribute appears twice"));
                }
                // Charged past the limit, checked at once: an image whose
                // attributes alone pass it is refused before it takes more
                // memory (a probe's 250 MiB of attributes took 250 MiB of
                // heap, loaded under a limit of 1 MB, before the refusal).
                x.insert_mut(name.into(), XValue::forced(&budget, name.len(), value.into()));
                self.within_metadata_limit()?;
            }
            DATA => {
                let ino = c.u64()?;
                let off = c.u64()?;
                let bytes = c.rest();
                let cx = self.engine.cx();
                let n = self
                    .staged
                    .get_mut(&ino)
                    .ok_or_else(|| corrupt(at, format!("DATA for inode {ino}, which has no NODE")))?;
                if !n.place(off, bytes.len() as u64) {
                    return Err(corrupt(
                        at,
                        "DATA out of place (not a regular file, empty, overlapping or past the size)",
                    ));
                }
                // More than the header counted: damaged, not too large for
                // the limit (which the header's count was checked against).
                if self.data_bytes + bytes.len() as u64 > self.info.data_bytes {
                    return Err(corrupt(
                        at,
                        format!("more file data than the header's {} bytes", self.info.data_bytes),
                    ));
                }
                match n.data.write(&cx, off, bytes) {
                    Ok(()) => {}
                    Err(Error::NoSpace) => return Err(self.info.too_large(&self.engine.cfg)),
                    Err(e) => return Err(corrupt(at, format!("cannot store DATA: {e}"))),
                }
                self.data_bytes += bytes.len() as u64;
            }
            CLONE if self.info.version >= 2 => {
                let (ino, off, src, src_off, len) = (c.u64()?, c.u64()?, c.u64()?, c.u64()?, c.u64()?);
                if !c.done() {
                    return Err(corrupt(at, "CLONE record of the wrong length"));
                }
                let src_size = match self.staged.get(&src) {
                    Some(s) if s.kind == FileType::Regular => s.size,
                    _ => {
                        return Err(corrupt(at, format!("CLONE from inode {src}, which is no regular file before it")))
                    }
                };
                let n = self.node(ino, at)?;
                let src_end = src_off.checked_add(len).filter(|&e| e <= src_size);
                let overlap = src == ino && off < src_off.saturating_add(len) && src_off < off.saturating_add(len);
                if src_end.is_none() || overlap || !n.place(off, len) {
                    return Err(corrupt(
                        at,
                        "CLONE out of place (not a regular file, empty, overlapping, or past either file's size)",
                    ));
                }
                self.clones.push((at, ino, CloneRun { off, src, src_off, len }));
            }
            DIR => {
                let dino = c.u64()?;
                if !matches!(self.staged.get(&dino), Some(s) if s.dir.is_some()) {
                    return Err(corrupt(at, format!("DIR for inode {dino}, which is not a directory")));
                }
                while !c.done() {
                    let nl = c.u8()? as usize;
                    let ino = c.u64()?;
                    let name = c.bytes(nl)?;
                    if !check_name(name) {
                        return Err(corrupt(at, format!("bad name {:?}", String::from_utf8_lossy(name))));
                    }
                    let child = self.node(ino, at)?;
                    let ckind = child.kind;
                    if ckind == FileType::Directory {
                        if ino == ROOT || child.names > 0 {
                            return Err(corrupt(at, format!("directory {ino} has more than one name")));
                        }
                        child.parent = dino;
                        child.names = 1;
                    } else {
                        child.names += 1;
                        if child.names > LINK_MAX {
                            return Err(corrupt(at, format!("inode {ino} has more than {LINK_MAX} links")));
                        }
                    }
                    let key = self.engine.key(name);
                    let d = self.staged.get_mut(&dino).and_then(|s| s.dir.as_mut());
                    let Some(d) = d else { return Err(corrupt(at, "directory vanished")) };
                    match d.name_of(&key) {
                        // Names an image saved case-sensitively may hold, which
                        // one directory of a case-insensitive disk cannot.
                        Some(other) if other != name => {
                            return Err(ImageError::Refused(format!(
                                "the image has names that differ only in case ({:?} and {:?} in one directory), \
                                 which a case-insensitive disk cannot hold (load it without --case-insensitive; \
                                 if it was saved from a case-insensitive disk, the image is damaged)",
                                String::from_utf8_lossy(other),
                                String::from_utf8_lossy(name)
                            )))
                        }
                        Some(_) => {
                            return Err(corrupt(at, format!("name {:?} appears twice", String::from_utf8_lossy(name))))
                        }
                        None => {}
                    }
                    d.insert(&key, name, ino, ckind);
                    // Charged past the limit, checked at once (as attributes).
                    self.engine.meta.force(crate::budget::entry_cost(name.len()));
                    self.entries += 1;
                    self.within_metadata_limit()?;
                    // Every name is an inode, or an inode's further name
                    // that counts as one (`link`), and the root has none:
                    // past the limit already (a probe's million hard links
                    // took 91 MB, loaded under a limit of 60,000 files).
                    if self.entries + 1 > self.engine.cfg.max_inodes {
                        return Err(ImageError::TooManyFiles {
                            nodes: self.entries + 1,
                            limit: self.engine.cfg.max_inodes,
                        });
                    }
                }
            }
            META => return Err(corrupt(at, "a second META record")),
            _ => return Err(corrupt(at, format!("unknown record type {kind}"))),
        }
        Ok(())
    }

    fn finish(mut self, at: u64, end: &[u8], records: u64, chain: u32) -> Result<Engine, ImageError> {
        let mut c = Cur { b: end, p: 0, at };
        let (n_rec, n_nodes, n_entries, n_data, n_chain) = (c.u64()?, c.u64()?, c.u64()?, c.u64()?, c.u32()?);
        if !c.done()
            || n_rec != records
            || n_chain != chain
            || n_nodes != self.nodes
            || n_nodes != self.info.nodes
            || n_entries != self.entries
            || n_data != self.data_bytes
            || n_data != self.info.data_bytes
        {
            return Err(corrupt(
                at,
                format!(
                    "END says {n_rec} records, {n_nodes} nodes, {n_entries} entries, {n_data} data bytes; \
                     read {records}, {}, {}, {} (header: {} nodes, {} data bytes){}",
                    self.nodes,
                    self.entries,
                    self.data_bytes,
                    self.info.nodes,
                    self.info.data_bytes,
                    if n_chain != chain { "; record chain checksum mismatch" } else { "" }
                ),
            ));
        }
        // Every node reachable from the root, every directory named once.
        if !self.staged.contains_key(&ROOT) {
            return Err(corrupt(at, "no root directory"));
        }
        let mut reached = 1u64;
        let mut stack = vec![ROOT];
        while let Some(d) = stack.pop() {
            let kids: Vec<Ino> = match self.staged.get(&d).and_then(|s| s.dir.as_ref()) {
                Some(dir) => {
                    dir.iter_from(0).filter(|(_, e)| e.kind == FileType::Directory).map(|(_, e)| e.ino).collect()
                }
                None => Vec::new(),
            };
            reached += kids.len() as u64;
            stack.extend(kids);
        }
        let named = self.staged.values().filter(|s| s.kind != FileType::Directory && s.names > 0).count() as u64;
        if reached + named != self.nodes {
            return Err(corrupt(at, "some nodes are not reachable from the root (a loop, or a node without a name)"));
        }
        // Every name of a file beyond its first counts as an inode, as on
        // tmpfs (`Reserved::add_inode`).
        let links: u64 = self
            .staged
            .values()
            .filter(|s| s.kind != FileType::Directory)
            .map(|s| u64::from(s.names.saturating_sub(1)))
            .sum();
        let inodes = self.nodes + links;
        if inodes > self.engine.cfg.max_inodes {
            return Err(ImageError::TooManyFiles { nodes: inodes, limit: self.engine.cfg.max_inodes });
        }
        // The root is charged already (the engine made one).
        let nodes = self.staged.iter().filter(|(&ino, _)| ino != ROOT);
        let meta = self.engine.meta.as_ref();
        meta.force(
            nodes.map(|(_, s)| crate::budget::inode_cost(s.special.boxed(s.kind), s.special.target_len())).sum(),
        );
        self.within_metadata_limit()?;
        let cx = self.engine.cx();
        let mut logical = 0u64;
        let mut max_ino = ROOT;
        let subdirs: HashMap<Ino, u32> = {
            let mut m = HashMap::new();
            for s in self.staged.values().filter(|s| s.kind == FileType::Directory && s.names > 0) {
                *m.entry(s.parent).or_insert(0u32) += 1;
            }
            m
        };
        let cfg = self.engine.cfg.clone();
        // A clone's destination gets its times, capabilities and inode
        // flags back after the replay (which, as any change of data, drops
        // the first two, and which chattr `i` or `a` would refuse).
        let mut restore = HashMap::new();
        for &(_, ino, _) in &self.clones {
            if let Some(s) = self.staged.get_mut(&ino) {
                let caps = s.xattrs.as_ref().and_then(|x| x.get(CAPS)).map(|v| v.to_vec());
                let flags = s.meta.flags & inode_flags::ALL;
                s.meta.flags &= !inode_flags::GUARDS;
                restore.insert(ino, (s.meta.mtime.get(), s.meta.ctime.get(), caps, flags));
            }
        }
        for (ino, mut s) in self.staged.drain() {
            if s.kind == FileType::Regular && s.data.len() < s.size {
                s.data.set_len(&cx, s.size).map_err(|_| self.info.too_large(&cfg))?;
            }
            // Modulo 2^64, as the engine's own counter (`fetch_add`): files
            // may each be near `u64::MAX` bytes long.
            logical = logical.wrapping_add(s.data.len());
            max_ino = max_ino.max(ino);
            let (nlink, parent) = match s.kind {
                FileType::Directory => (2u32.saturating_add(subdirs.get(&ino).copied().unwrap_or(0)), s.parent),
                _ => (s.names, 0),
            };
            let mut meta = s.meta;
            if ino == ROOT {
                meta.perm = cfg.root_mode & 0o7777;
                meta.uid = cfg.root_uid;
                meta.gid = cfg.root_gid;
            }
            let parent = if ino == ROOT { ROOT } else { parent };
            let xattrs = s.xattrs.map(Arc::new);
            let node = Node::with_version(ino, s.kind, Snap::loaded(meta, s.data, xattrs), nlink, parent, s.special);
            if let (Some(d), Some(staged)) = (node.dir(), s.dir) {
                let mut g = d.write();
                *g = staged;
                node.sync_entries(&g);
            }
            self.engine.nodes.insert(Arc::new(node));
        }
        self.engine.inodes.store(inodes, Ordering::Release);
        self.engine.logical.store(logical, Ordering::Relaxed);
        self.engine.next_ino.store(max_ino + 1, Ordering::Relaxed);
        for (at, ino, r) in std::mem::take(&mut self.clones) {
            match self.engine.copy_file_range(r.src, r.src_off, ino, r.off, r.len) {
                Ok(n) if n == r.len => {}
                Err(Error::NoSpace) => return Err(self.info.too_large(&cfg)),
                Ok(n) => return Err(corrupt(at, format!("CLONE of {} bytes replayed {n}", r.len))),
                Err(e) => return Err(corrupt(at, format!("cannot replay CLONE: {e}"))),
            }
        }
        for (ino, (mtime, ctime, caps, flags)) in restore {
            let fail = |e: Error| corrupt(at, format!("cannot restore a file after CLONE: {e}"));
            if let Some(c) = caps {
                self.engine.setxattr(ino, CAPS, &c, 0).map_err(fail)?;
            }
            let back = SetAttr {
                mtime: Some(SetTime::At(mtime)),
                ctime: Some(ctime),
                inode_flags: Some(flags),
                ..SetAttr::default()
            };
            self.engine.setattr(ino, &back).map_err(fail)?;
        }
        Ok(self.engine)
    }
}

/// Recomputes every checksum of `img` (header, records, the END record's
/// record count and chain) so that a test or fuzzer can change a value and
/// reach the checks behind the checksums. Stops at the first record whose
/// length runs past the end. Internal, not semver.
#[doc(hidden)]
pub fn reseal(img: &mut [u8]) {
    if img.len() < HEADER_LEN {
        return;
    }
    let crc = crc32fast::hash(&img[..HEADER_LEN - 4]);
    img[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    let mut p = HEADER_LEN;
    let mut chain = crc32fast::Hasher::new();
    let mut records = 0u64;
    while p + 8 <= img.len() {
        let len = u32::from_le_bytes([img[p + 4], img[p + 5], img[p + 6], img[p + 7]]) as usize;
        let Some(end) = p.checked_add(8 + len).filter(|&e| e + 4 <= img.len()) else { return };
        if img[p] == END && len >= 36 {
            img[p + 8..p + 16].copy_from_slice(&records.to_le_bytes());
            let c = chain.clone().finalize();
            img[p + 40..p + 44].copy_from_slice(&c.to_le_bytes());
        }
        let crc = crc32fast::hash(&img[p..end]);
        img[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        chain.update(&crc.to_le_bytes());
        records += 1;
        p = end + 4;
    }
}
