//! Fuzzing the engine with hostile input (issue 19).
//!
//! [`run`] decodes a byte string into an engine geometry and a sequence of
//! operations ([`Op`], decoded with [`arbitrary`]) whose arguments are chosen
//! to hurt: offsets and sizes up to `u64::MAX`, `i64::MAX`, 2^62 and the
//! maximum file size ± a little, lengths around sector boundaries, names with
//! `/` or NUL, empty, `.`/`..`, 255/256/1000+ bytes, raw bytes; unknown flags
//! and modes, file types, times with out-of-range nanoseconds, inode numbers
//! that do not exist. Each operation runs against the engine's public API and
//! a reference model (a namespace of `BTreeMap`s and sparse, chunked file
//! contents), and after each step the harness checks:
//!
//! * no panic (any panic, in the engine or in a check, is a failure);
//! * every result is the one the model expects: the `Ok` value, or one of the
//!   [`Error`] variants the inputs call for (where several apply, any of them;
//!   `NoSpace` only when the operation could need more memory than is free);
//! * data: what a read returns equals the model, byte for byte (holes are
//!   zeros); files changed by the step are read back in full (their written
//!   chunks and their tail);
//! * the namespace: kinds, link counts, sizes and every directory's entries;
//! * pool accounting: `used <= limit`, `used` equals what the live files hold
//!   (their `st_blocks`, to 512 bytes a file), inode and logical byte counts;
//!   at the end, with everything deleted, released and forgotten, `used`,
//!   sectors and logical bytes are back to 0 and only the root is left;
//! * heap per call: with [`CountingAlloc`] as the global allocator, no call
//!   uses more heap than a constant plus twice the bytes it was handed
//!   (a 2^62-byte `fallocate` must not plan 2^50 sectors).
//!
//! The bytes are what libFuzzer and AFL hand a target, so the corpus
//! (`tests/__fuzz__/ops/`) serves `cargo test` (bolero's random engine on
//! stable), `scripts/fuzz` (the same, for a time budget) and `cargo bolero`
//! with libFuzzer or AFL where a nightly toolchain is available.
//!
//! The second target, [`decode`], fuzzes the FUSE request decoder
//! (`sectorfs-fuse`) on both transports; the third, [`image`], fuzzes the
//! image loader; [`save_crash`] keeps a failing input of any target.

pub mod decode;
pub mod image;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::{Arbitrary, Unstructured};
use engine::data::{FALLOC_KEEP_SIZE as KEEP, FALLOC_PUNCH_HOLE as PUNCH, FALLOC_ZERO_RANGE as ZERO};
use engine::inode_flags;
use engine::rename_flags::{EXCHANGE, NOREPLACE, WHITEOUT};
use engine::xattr_flags::{CREATE, REPLACE};
use engine::{
    Config, Cred, Engine, Error, FileType, Ino, SetAttr, SetTime, Time, NAME_MAX, PATH_MAX, ROOT, XATTR_SIZE_MAX,
};

// ------------------------------------------------------------ failing inputs

/// Keeps the smallest failing input this process saw in `dir`, as
/// `crash-<hash>` (the larger one saved before is removed), and prints its
/// name. A target's test calls it when its run panics.
pub fn save_crash(dir: &std::path::Path, data: &[u8]) {
    use std::path::PathBuf;
    use std::sync::Mutex;
    static SMALLEST: Mutex<Option<(usize, PathBuf)>> = Mutex::new(None);
    let mut s = SMALLEST.lock().unwrap_or_else(|p| p.into_inner());
    if s.as_ref().is_some_and(|(len, _)| *len <= data.len()) {
        return;
    }
    if let Some((_, old)) = s.take() {
        let _ = std::fs::remove_file(old);
    }
    let hash = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let path = dir.join(format!("crash-{hash:016x}"));
    match std::fs::write(&path, data) {
        Ok(()) => {
            eprintln!("fuzz: failing input ({} bytes) saved to {}", data.len(), path.display());
            *s = Some((data.len(), path));
        }
        Err(e) => eprintln!("fuzz: cannot save the failing input to {}: {e}", path.display()),
    }
}

// ------------------------------------------------------------ counters

/// Byte strings run by [`run`] in this process.
pub static CASES: AtomicU64 = AtomicU64::new(0);
/// Operations applied by [`run`] in this process.
pub static OPS: AtomicU64 = AtomicU64::new(0);

/// Input bytes handed to [`run`] in this process.
pub static BYTES: AtomicU64 = AtomicU64::new(0);

/// Most operations decoded from one input.
pub const MAX_OPS: usize = 400;

// ------------------------------------------------------------ heap counting

/// A global allocator that counts the bytes each thread has live and the
/// peak since the last mark. Install it in the fuzzing binary with
/// `#[global_allocator]`; without it the per-call heap check sees nothing.
pub struct CountingAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|l| {
        let now = l.get() + delta;
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

/// Larger requests are failures: one would abort the process (allocation
/// failure is not a panic), so the input is saved first, with a backtrace.
const HUGE: usize = 1 << 32;

thread_local! {
    static INPUT: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Where to save the input being run when an allocation would abort.
pub static CRASH_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

#[cold]
fn huge(size: usize) {
    if IN_HOOK.with(|h| h.replace(true)) {
        return;
    }
    let (p, n) = INPUT.with(Cell::get);
    eprintln!("fuzz: allocation of {size} bytes:\n{}", std::backtrace::Backtrace::force_capture());
    if let (false, Some(dir)) = (p.is_null(), CRASH_DIR.get()) {
        // SAFETY: `run` stores its input slice here for the length of the
        // run and clears it after; we are inside that run (on its thread).
        let data = unsafe { std::slice::from_raw_parts(p, n) };
        let path = dir.join(format!("crash-alloc-{size:x}"));
        if std::fs::write(&path, data).is_ok() {
            eprintln!("fuzz: failing input ({n} bytes) saved to {}", path.display());
        }
    }
    IN_HOOK.with(|h| h.set(false));
}

// SAFETY: every method forwards to `System` with the caller's layout and
// pointer unchanged; the counting touches only const-initialised thread
// locals (no allocation, no destructor). `huge` allocates (a backtrace, a
// path) only for requests that are about to abort the process anyway.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() >= HUGE {
            huge(l.size());
        }
        note(l.size() as isize);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() >= HUGE {
            huge(l.size());
        }
        note(l.size() as isize);
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(-(l.size() as isize));
        // SAFETY: `p` came from `System` with `l` (above).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new >= HUGE {
            huge(new);
        }
        note(new as isize - l.size() as isize);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(p, l, new) }
    }
}

/// Resets this thread's peak to its live bytes; returns the live bytes
/// (with [`CountingAlloc`] installed; 0 without).
pub fn heap_mark() -> isize {
    let live = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(live));
    live
}

/// The most bytes this thread had live since [`heap_mark`] returned `mark`.
pub fn heap_peak_since(mark: isize) -> isize {
    PEAK.with(Cell::get) - mark
}

/// Heap a call may use beyond twice the bytes it is handed: bookkeeping,
/// table nodes on a path, the 1 MiB `copy_file_range` buffer, the clone of
/// a node's extended attributes.
const HEAP_SLACK: isize = 3 << 20;

// ------------------------------------------------------------ hostile values

/// An offset or size: small, near a sector boundary, or huge.
#[derive(Debug, Clone, Copy)]
pub struct Off(pub u64);

impl<'a> Arbitrary<'a> for Off {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let sel = u8::arbitrary(u)?;
        let r = u32::arbitrary(u)? as u64;
        let small = r % 4097;
        Ok(Off(match sel % 16 {
            0..=4 => r % 300,
            5 => r % (1 << 20),
            6 => (r % 40) * 4096 + [0, 1, 4095, 15, 16, 17, 63, 64][(r >> 8) as usize % 8],
            7 => (1 << 62) - small,
            8 => (1 << 62) + small,
            9 => u64::MAX - small,
            10 => i64::MAX as u64 - small,
            11 => (i64::MAX as u64).wrapping_add(1 + small),
            12 => (1 << 40) - small,
            13 => (1 << 40) + small,
            14 => u64::arbitrary(u)?,
            _ => r % 200_000,
        }))
    }
}

/// A buffer length (the harness allocates it): up to 128 KiB.
#[derive(Debug, Clone, Copy)]
pub struct Len(pub usize);

impl<'a> Arbitrary<'a> for Len {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let sel = u8::arbitrary(u)?;
        let r = u32::arbitrary(u)? as usize;
        Ok(Len(match sel % 8 {
            0..=3 => r % 200,
            4 => [15, 16, 17, 4095, 4096, 4097, 65535, 65536, 65537][r % 9],
            5 => r % 70_000,
            6 => r % (128 << 10),
            _ => 0,
        }))
    }
}

/// A name component: mostly one of four valid names (so names collide),
/// else a hostile one or raw bytes.
#[derive(Debug, Clone)]
pub struct Name(pub Vec<u8>);

fn hostile_names() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b".".to_vec(),
        b"..".to_vec(),
        b"a/b".to_vec(),
        b"/".to_vec(),
        b"a\0".to_vec(),
        b"\0".to_vec(),
        b"...".to_vec(),
        b"A".to_vec(),
        "é".as_bytes().to_vec(),
        vec![0xff, 0xfe],
        vec![b'n'; NAME_MAX],
        vec![b'n'; NAME_MAX + 1],
        vec![b'n'; 1000],
        vec![b'n'; 5000],
    ];
    let mut slash = vec![b'x'; NAME_MAX];
    slash[100] = b'/';
    v.push(slash.clone());
    slash.push(b'x');
    v.push(slash);
    v
}

impl<'a> Arbitrary<'a> for Name {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let sel = u8::arbitrary(u)?;
        Ok(Name(match sel % 16 {
            0..=11 => vec![b"abcd"[sel as usize % 4]],
            12..=13 => {
                let h = hostile_names();
                h[u8::arbitrary(u)? as usize % h.len()].clone()
            }
            _ => {
                let n = u.int_in_range(0..=300usize)?;
                u.bytes(n.min(u.len()))?.to_vec()
            }
        }))
    }
}

/// An extended attribute name.
#[derive(Debug, Clone)]
pub struct XName(pub Vec<u8>);

impl<'a> Arbitrary<'a> for XName {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let sel = u8::arbitrary(u)?;
        let mut long = b"user.".to_vec();
        long.resize(NAME_MAX + 1, b'x');
        let fixed: [&[u8]; 11] = [
            b"user.a",
            b"user.b",
            b"trusted.c",
            b"security.capability",
            b"user.",
            b"bad.x",
            b"",
            b"user.\0x",
            &long[..NAME_MAX],
            &long,
            b"system.posix_acl_access",
        ];
        Ok(XName(match sel % 14 {
            n @ 0..=10 => fixed[n as usize].to_vec(),
            _ => {
                let n = u.int_in_range(0..=300usize)?;
                u.bytes(n.min(u.len()))?.to_vec()
            }
        }))
    }
}

/// Flags: a valid combination or any `u32`.
#[derive(Debug, Clone, Copy)]
pub struct Flags(pub u32);

impl<'a> Arbitrary<'a> for Flags {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let sel = u8::arbitrary(u)?;
        Ok(Flags(match sel % 8 {
            0..=3 => 0,
            4 => 1,
            5 => 2,
            6 => 3,
            _ => u32::arbitrary(u)?,
        }))
    }
}

/// A `fallocate` mode: a known one or any `u32`.
#[derive(Debug, Clone, Copy)]
pub struct FMode(pub u32);

impl<'a> Arbitrary<'a> for FMode {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        const MODES: [u32; 8] = [0, KEEP, PUNCH | KEEP, ZERO, ZERO | KEEP, PUNCH, PUNCH | ZERO | KEEP, 0x04];
        let sel = u8::arbitrary(u)?;
        Ok(FMode(if sel < 240 { MODES[sel as usize % 8] } else { u32::arbitrary(u)? }))
    }
}

/// `renameat2` flags: as [`Flags`] (the same bytes taken, so older inputs
/// keep their shape), with `WHITEOUT` combinations from some of the
/// selectors that give 0 there.
#[derive(Debug, Clone, Copy)]
pub struct RFlags(pub u32);

impl<'a> Arbitrary<'a> for RFlags {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let sel = u8::arbitrary(u)?;
        Ok(RFlags(match sel % 8 {
            0..=3 if sel >= 160 => [WHITEOUT, WHITEOUT | NOREPLACE, WHITEOUT | EXCHANGE, WHITEOUT][(sel % 4) as usize],
            0..=3 => 0,
            4 => 1,
            5 => 2,
            6 => 3,
            _ => u32::arbitrary(u)?,
        }))
    }
}

/// A file mode for `mknod`: a type the engine makes, one it refuses, or any `u32`.
#[derive(Debug, Clone, Copy)]
pub struct Mode(pub u32);

impl<'a> Arbitrary<'a> for Mode {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        const TYPES: [u32; 9] = [0, 0o100000, 0o010000, 0o020000, 0o060000, 0o140000, 0o040000, 0o120000, 0o170000];
        let sel = u8::arbitrary(u)?;
        let perm = u32::from(u16::arbitrary(u)?) & 0o7777;
        Ok(Mode(if sel < 240 { TYPES[sel as usize % 9] | perm } else { u32::arbitrary(u)? }))
    }
}

/// A time: ordinary, at the ends of `i64`, or with nanoseconds out of range.
#[derive(Debug, Clone, Copy)]
pub struct TimeV(pub Time);

impl<'a> Arbitrary<'a> for TimeV {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let s = u8::arbitrary(u)?;
        let n = u8::arbitrary(u)?;
        let secs = [0, -1, 1_700_000_000, i64::MIN, i64::MAX, i64::arbitrary(u)?][s as usize % 6];
        let nanos = [0, 1, 999_999_999, 1_000_000_000, u32::MAX, u32::arbitrary(u)?][n as usize % 6];
        Ok(TimeV(Time { secs, nanos }))
    }
}

/// Which node an operation names: a live one of the wanted kind, any live
/// one, or an inode number that does not exist (see `Harness::pick`).
#[derive(Debug, Clone, Copy, Arbitrary)]
pub struct Pick(pub u8);

/// One operation of the engine's public API, with hostile arguments.
#[derive(Debug, Clone, Arbitrary)]
#[allow(missing_docs)]
pub enum Op {
    Create {
        dir: Pick,
        name: Name,
        mode: u32,
    },
    Mkdir {
        dir: Pick,
        name: Name,
        mode: u32,
    },
    Mknod {
        dir: Pick,
        name: Name,
        mode: Mode,
        rdev: u32,
    },
    Symlink {
        dir: Pick,
        name: Name,
        target: Off,
    },
    Tmpfile {
        dir: Pick,
        mode: u32,
    },
    Lookup {
        dir: Pick,
        name: Name,
    },
    Unlink {
        dir: Pick,
        name: Name,
    },
    Rmdir {
        dir: Pick,
        name: Name,
    },
    Rename {
        sdir: Pick,
        sname: Name,
        ddir: Pick,
        dname: Name,
        flags: RFlags,
    },
    Link {
        node: Pick,
        ddir: Pick,
        dname: Name,
    },
    Write {
        file: Pick,
        off: Off,
        len: Len,
        byte: u8,
    },
    Append {
        file: Pick,
        len: Len,
        byte: u8,
    },
    Read {
        file: Pick,
        off: Off,
        len: Len,
    },
    Truncate {
        file: Pick,
        size: Off,
    },
    Fallocate {
        file: Pick,
        mode: FMode,
        off: Off,
        len: Off,
    },
    Copy {
        src: Pick,
        off_in: Off,
        dst: Pick,
        off_out: Off,
        len: Off,
    },
    Seek {
        file: Pick,
        off: Off,
        data: bool,
    },
    SetXattr {
        node: Pick,
        name: XName,
        vlen: Len,
        flags: Flags,
    },
    GetXattr {
        node: Pick,
        name: XName,
    },
    RemoveXattr {
        node: Pick,
        name: XName,
    },
    ListXattr {
        node: Pick,
    },
    SetAttr {
        node: Pick,
        mode: Option<u32>,
        uid: Option<u32>,
        atime: Option<TimeV>,
        mtime: Option<TimeV>,
        ctime: Option<TimeV>,
        flags: Option<u32>,
    },
    Readdir {
        dir: Pick,
        from: Off,
        plus: bool,
        stop: u8,
    },
    Readlink {
        node: Pick,
    },
    Open {
        node: Pick,
    },
    Release {
        h: u8,
    },
    Forget {
        node: Pick,
        n: Off,
    },
    Getattr {
        node: Pick,
    },
    Access {
        node: Pick,
        mask: u32,
        uid: u32,
        gid: u32,
    },
    Statfs,
}

// ------------------------------------------------------------ geometry

/// An engine configuration the fuzzer runs with.
#[derive(Debug, Clone, Copy)]
pub struct Geom {
    /// Sector size.
    pub ss: u64,
    /// Inline threshold.
    pub inline: u64,
    /// Memory limit.
    pub limit: u64,
    /// Inode limit.
    pub max_inodes: u64,
    /// Largest file size.
    pub max_size: u64,
}

/// The geometries, chosen by the first input byte.
pub const GEOMS: [Geom; 5] = [
    // The mount's defaults, scaled down: 64 KiB sectors, 4 KiB inline.
    Geom { ss: 64 << 10, inline: 4096, limit: 8 << 20, max_inodes: 1 << 20, max_size: i64::MAX as u64 },
    // 4 KiB sectors, a tight limit and few inodes.
    Geom { ss: 4096, inline: 1024, limit: 256 << 10, max_inodes: 24, max_size: i64::MAX as u64 },
    // 4 KiB sectors, no inline data, a 1 TiB file size limit.
    Geom { ss: 4096, inline: 0, limit: 1 << 20, max_inodes: 1 << 20, max_size: 1 << 40 },
    // Tiny sectors (deep tables for huge offsets), tiny limit.
    Geom { ss: 16, inline: 8, limit: 64 * 16, max_inodes: 16, max_size: i64::MAX as u64 },
    // Tiny sectors with plenty of memory: `NoSpace` only for huge requests.
    Geom { ss: 64, inline: 64, limit: 64 << 20, max_inodes: 1 << 20, max_size: u64::MAX },
];

// ------------------------------------------------------------ model

const CH: u64 = 4096;

/// The end of chunk `c` (saturating: the last chunk ends at `u64::MAX`).
fn chunk_end(c: u64) -> u64 {
    (c + 1).saturating_mul(CH)
}

/// A sparse file: its size and the 4 KiB chunks ever written (absent: zeros).
/// Bytes of a chunk at or past `size` are always zero.
#[derive(Debug, Clone, Default)]
struct MFile {
    size: u64,
    chunks: BTreeMap<u64, Box<[u8]>>,
}

impl MFile {
    fn write(&mut self, off: u64, data: &[u8]) {
        let mut pos = 0usize;
        while pos < data.len() {
            let at = off + pos as u64;
            let (c, o) = (at / CH, (at % CH) as usize);
            let n = (CH as usize - o).min(data.len() - pos);
            let chunk = self.chunks.entry(c).or_insert_with(|| vec![0; CH as usize].into_boxed_slice());
            chunk[o..o + n].copy_from_slice(&data[pos..pos + n]);
            pos += n;
        }
        self.size = self.size.max(off + data.len() as u64);
    }

    /// Zeroes `off..end` (clipped to the size).
    fn zero(&mut self, off: u64, end: u64) {
        let end = end.min(self.size);
        if off >= end {
            return;
        }
        let keys: Vec<u64> = self.chunks.range(off / CH..=(end - 1) / CH).map(|(k, _)| *k).collect();
        for c in keys {
            let (a, b) = ((c * CH).max(off), chunk_end(c).min(end));
            if a == c * CH && b == chunk_end(c) {
                self.chunks.remove(&c);
            } else if let Some(ch) = self.chunks.get_mut(&c) {
                ch[(a - c * CH) as usize..(b - c * CH) as usize].fill(0);
            }
        }
    }

    fn set_len(&mut self, n: u64) {
        if n < self.size {
            let old = self.size;
            self.zero(n, old);
            self.chunks.retain(|&c, _| c * CH < n);
        }
        self.size = n;
    }

    fn read(&self, off: u64, len: usize) -> Vec<u8> {
        let n = (len as u64).min(self.size.saturating_sub(off)) as usize;
        let mut out = vec![0u8; n];
        if n == 0 {
            return out;
        }
        let end = off + n as u64;
        for (&c, ch) in self.chunks.range(off / CH..=(end - 1) / CH) {
            let (a, b) = ((c * CH).max(off), chunk_end(c).min(end));
            out[(a - off) as usize..(b - off) as usize]
                .copy_from_slice(&ch[(a - c * CH) as usize..(b - c * CH) as usize]);
        }
        out
    }

    /// The nonzero-capable pieces of `off..off + n` (the chunks present), as
    /// `(offset, bytes)`: a sparse read, bounded by the chunks held.
    fn pieces(&self, off: u64, n: u64) -> Vec<(u64, Vec<u8>)> {
        let end = off.saturating_add(n).min(self.size);
        if off >= end {
            return Vec::new();
        }
        self.chunks
            .range(off / CH..=(end - 1) / CH)
            .map(|(&c, ch)| {
                let (a, b) = ((c * CH).max(off), chunk_end(c).min(end));
                (a, ch[(a - c * CH) as usize..(b - c * CH) as usize].to_vec())
            })
            .collect()
    }

    fn is_zero(&self, off: u64, end: u64) -> bool {
        let end = end.min(self.size);
        off >= end
            || self.chunks.range(off / CH..=(end - 1) / CH).all(|(&c, ch)| {
                let (a, b) = ((c * CH).max(off), chunk_end(c).min(end));
                ch[(a - c * CH) as usize..(b - c * CH) as usize].iter().all(|&x| x == 0)
            })
    }
}

#[derive(Debug, Clone)]
enum Kind {
    File(MFile),
    /// `dead`: removed while open (no entries, no links, lives until closed).
    Dir {
        parent: Ino,
        entries: BTreeMap<Vec<u8>, Ino>,
        dead: bool,
    },
    Symlink(Vec<u8>),
    /// A fifo, socket or device, and its device number (0 but for devices).
    Special(FileType, u32),
}

#[derive(Debug, Clone)]
struct MNode {
    kind: Kind,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    opens: u32,
}

type R<T> = Result<T, Error>;

/// The metadata the engine charges for a node's extended attributes.
fn xattrs_meta(x: &BTreeMap<Vec<u8>, Vec<u8>>) -> u64 {
    x.iter().map(|(k, v)| engine::budget::XATTR_COST + (k.len() + v.len()) as u64).sum()
}

/// The most metadata one call adds (`engine::budget`): an xattr of the
/// longest name and value, or a symlink inode with the longest target and
/// name (with a whiteout's inode and entry: less).
const META_OP_MAX: u64 = {
    use engine::budget::{ENTRY_COST, EXTRA_COST, INODE_COST, XATTR_COST};
    let xattr = XATTR_COST + 255 + engine::XATTR_SIZE_MAX as u64;
    let symlink = INODE_COST + EXTRA_COST + engine::PATH_MAX as u64 + ENTRY_COST + 255;
    if xattr > symlink {
        xattr
    } else {
        symlink
    }
};

/// The engine, the model, and the open handles.
struct Harness {
    g: Geom,
    e: Engine,
    nodes: BTreeMap<Ino, MNode>,
    handles: Vec<Ino>,
    freed: Vec<Ino>,
    dirty: BTreeSet<Ino>,
    step: usize,
    op: String,
}

fn name_err(name: &[u8]) -> Option<Error> {
    if name.len() > NAME_MAX {
        Some(Error::NameTooLong)
    } else if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&b| b == b'/' || b == 0) {
        Some(Error::InvalidName)
    } else {
        None
    }
}

fn xattr_name_err(name: &[u8]) -> Option<Error> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Some(Error::Range);
    }
    if name.contains(&0) {
        return Some(Error::InvalidArgument);
    }
    let kept = [&b"user."[..], b"trusted.", b"security."];
    match kept.iter().find(|p| name.starts_with(p)) {
        Some(p) if name.len() == p.len() => Some(Error::InvalidArgument),
        Some(_) => None,
        None => Some(Error::NotSupported),
    }
}

impl Harness {
    fn new(g: Geom) -> Harness {
        let e = Engine::new_unchecked(Config {
            sector_size: g.ss as usize,
            max_bytes: g.limit,
            max_inodes: g.max_inodes,
            inline_max: g.inline as usize,
            max_file_size: g.max_size,
            ..Config::default()
        });
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            MNode {
                kind: Kind::Dir { parent: ROOT, entries: BTreeMap::new(), dead: false },
                xattrs: BTreeMap::new(),
                opens: 0,
            },
        );
        Harness {
            g,
            e,
            nodes,
            handles: Vec::new(),
            freed: Vec::new(),
            dirty: BTreeSet::new(),
            step: 0,
            op: String::new(),
        }
    }

    /// Fails the case with the step and the operation.
    #[track_caller]
    fn fail(&self, msg: String) -> ! {
        panic!("step {}: {}: {msg}", self.step, self.op)
    }

    /// Runs one engine call, checking the heap it uses: bounded by what the
    /// call hands over and what it stores, never by the sizes it names.
    fn call<T>(&self, handed: usize, f: impl FnOnce(&Engine) -> T) -> T {
        let allocs = self.e.stats().pool.allocs;
        let before = heap_mark();
        let out = f(&self.e);
        let peak = PEAK.with(Cell::get) - before;
        // Each sector handed out has its handle and its share of table
        // nodes on the heap (128 bytes is generous: ~100% of a 64-byte
        // sector, 3% of a 4 KiB one); mapping a 2 MiB region lists its
        // sectors in the pool's free list (64 bytes each, generous too).
        let sectors = self.e.stats().pool.allocs - allocs;
        let region = (2u64 << 20) / self.g.ss * 64;
        let allowed = HEAP_SLACK as u64 + 2 * handed as u64 + 128 * sectors + region;
        if peak > allowed as isize {
            self.fail(format!("used {peak} bytes of heap, allowed {allowed} (handed {handed}, {sectors} sectors)"));
        }
        out
    }

    // ---------------------------------------------------------- picking

    fn bogus(&self, p: u8) -> Ino {
        let cands = [0, u64::MAX, 1 << 62, self.freed.last().copied().unwrap_or(1 << 40), u64::MAX - 1, 1 << 40];
        let ino = cands[p as usize % cands.len()];
        if self.nodes.contains_key(&ino) {
            0
        } else {
            ino
        }
    }

    /// A node: mostly one for which `want` holds, sometimes any, rarely none.
    fn pick(&self, p: Pick, want: impl Fn(&Kind) -> bool) -> Ino {
        if p.0 >= 250 {
            return self.bogus(p.0);
        }
        let fit: Vec<Ino> = self.nodes.iter().filter(|(_, n)| want(&n.kind)).map(|(i, _)| *i).collect();
        if p.0 < 200 && !fit.is_empty() {
            return fit[p.0 as usize % fit.len()];
        }
        let all: Vec<Ino> = self.nodes.keys().copied().collect();
        all[p.0 as usize % all.len()]
    }

    fn dir(&self, p: Pick) -> Ino {
        self.pick(p, |k| matches!(k, Kind::Dir { .. }))
    }

    fn file(&self, p: Pick) -> Ino {
        self.pick(p, |k| matches!(k, Kind::File(_)))
    }

    fn any(&self, p: Pick) -> Ino {
        self.pick(p, |_| true)
    }

    // ---------------------------------------------------------- model queries

    fn kind(&self, ino: Ino) -> Option<&Kind> {
        self.nodes.get(&ino).map(|n| &n.kind)
    }

    fn ftype(&self, ino: Ino) -> FileType {
        match &self.nodes[&ino].kind {
            Kind::File(_) => FileType::Regular,
            Kind::Dir { .. } => FileType::Directory,
            Kind::Symlink(_) => FileType::Symlink,
            Kind::Special(t, _) => *t,
        }
    }

    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.kind(ino), Some(Kind::Dir { .. }))
    }

    fn entries(&self, dir: Ino) -> &BTreeMap<Vec<u8>, Ino> {
        match &self.nodes[&dir].kind {
            Kind::Dir { entries, .. } => entries,
            _ => unreachable!("not a dir"),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> &mut BTreeMap<Vec<u8>, Ino> {
        match &mut self.nodes.get_mut(&dir).expect("dir").kind {
            Kind::Dir { entries, .. } => entries,
            _ => unreachable!("not a dir"),
        }
    }

    fn get(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        match self.kind(dir) {
            Some(Kind::Dir { entries, .. }) => entries.get(name).copied(),
            _ => None,
        }
    }

    fn mfile(&self, ino: Ino) -> &MFile {
        match &self.nodes[&ino].kind {
            Kind::File(f) => f,
            _ => unreachable!("not a file"),
        }
    }

    /// The model of a file whose data a call changed: as any change of
    /// data, it dropped the file's capabilities.
    fn changed_file(&mut self, ino: Ino) -> &mut MFile {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.xattrs.remove(&b"security.capability"[..]);
        }
        self.mfile_mut(ino)
    }

    fn mfile_mut(&mut self, ino: Ino) -> &mut MFile {
        self.dirty.insert(ino);
        match &mut self.nodes.get_mut(&ino).expect("file").kind {
            Kind::File(f) => f,
            _ => unreachable!("not a file"),
        }
    }

    fn dead(&self, dir: Ino) -> bool {
        matches!(self.kind(dir), Some(Kind::Dir { dead: true, .. }))
    }

    /// A directory's last name is gone: freed, or dead while open.
    fn kill_dir(&mut self, t: Ino) {
        if let Some(Kind::Dir { dead, .. }) = self.nodes.get_mut(&t).map(|n| &mut n.kind) {
            *dead = true;
        }
        self.settle(t);
    }

    fn nlink(&self, ino: Ino) -> u32 {
        if self.dead(ino) {
            return 0;
        }
        if self.is_dir(ino) {
            let subdirs = self.entries(ino).values().filter(|&&i| self.is_dir(i)).count();
            return 2 + subdirs as u32;
        }
        let mut n = 0;
        for node in self.nodes.values() {
            if let Kind::Dir { entries, .. } = &node.kind {
                n += entries.values().filter(|&&i| i == ino).count() as u32;
            }
        }
        n
    }

    fn is_ancestor(&self, anc: Ino, mut ino: Ino) -> bool {
        loop {
            if ino == anc {
                return true;
            }
            if ino == ROOT {
                return false;
            }
            match self.kind(ino) {
                Some(Kind::Dir { parent, .. }) => ino = *parent,
                _ => return false,
            }
        }
    }

    /// Frees `ino` in the model if nothing names or holds it.
    fn settle(&mut self, ino: Ino) {
        if (self.is_dir(ino) && !self.dead(ino)) || !self.nodes.contains_key(&ino) {
            return;
        }
        if self.nlink(ino) == 0 && self.nodes[&ino].opens == 0 {
            self.nodes.remove(&ino);
            self.freed.push(ino);
            self.dirty.remove(&ino);
            if self.e.getattr(ino) != Err(Error::NotFound) {
                self.fail(format!("inode {ino} not freed with its last link and handle"));
            }
        }
    }

    /// The error a parent directory gives: `NotFound` or `NotDir`.
    fn dir_err(&self, dir: Ino) -> Option<Error> {
        match self.kind(dir) {
            None => Some(Error::NotFound),
            Some(Kind::Dir { .. }) => None,
            Some(_) => Some(Error::NotDir),
        }
    }

    /// The error a data operation gives for a node that is not a regular file.
    fn data_err(&self, ino: Ino) -> Option<Error> {
        match self.kind(ino) {
            None => Some(Error::NotFound),
            Some(Kind::File(_)) => None,
            Some(Kind::Dir { .. }) => Some(Error::IsDir),
            Some(_) => Some(Error::InvalidArgument),
        }
    }

    fn used(&self) -> u64 {
        self.e.stats().pool.used
    }

    /// Memory a data mutation of `range` bytes may need: its sectors, a few
    /// more (copy-on-write edges, partial sectors zeroed), and an inline file
    /// converted to sectors.
    fn need(&self, range: u64) -> u64 {
        (range / self.g.ss).saturating_add(4).saturating_mul(self.g.ss).saturating_add(self.g.inline + self.g.ss)
    }

    /// Checks `got` against the errors the inputs call for (`errs`, any of
    /// them; none: success). `need`: memory the call may need (`NoSpace`
    /// allowed only if less than that is free). Returns the value on success.
    fn expect<T: Debug>(&self, got: R<T>, errs: &[Error], need: u64, used: u64) -> Option<T> {
        match got {
            Ok(v) if errs.is_empty() => Some(v),
            Ok(v) => self.fail(format!("Ok({v:?}), expected one of {errs:?}")),
            Err(e) if errs.contains(&e) => None,
            Err(Error::NoSpace) if errs.is_empty() => {
                let free = self.g.limit.saturating_sub(used);
                // The metadata limit (`engine::budget`): allowed within what
                // one call can add of it (the engine changed nothing).
                let st = self.e.stats();
                let meta_full = st.max_meta_bytes.saturating_sub(st.meta_bytes) < META_OP_MAX;
                if free >= need && !meta_full {
                    self.fail(format!("NoSpace with {free} bytes free for at most {need}"));
                }
                None
            }
            Err(e) if errs.is_empty() => self.fail(format!("{e:?}, expected success")),
            Err(e) => self.fail(format!("{e:?}, expected one of {errs:?}")),
        }
    }

    /// Inodes the model holds: `NoInodes` expected when at the limit.
    fn inodes_full(&self) -> bool {
        self.inodes() >= self.g.max_inodes
    }

    /// Inodes counted against the limit: every node, and every name of a
    /// file beyond its first (as tmpfs).
    fn inodes(&self) -> u64 {
        let extra: u64 =
            self.nodes.keys().filter(|&&i| !self.is_dir(i)).map(|&i| u64::from(self.nlink(i).saturating_sub(1))).sum();
        self.nodes.len() as u64 + extra
    }

    // ---------------------------------------------------------- operations

    fn make(
        &mut self,
        dir: Ino,
        name: &[u8],
        kind: Kind,
        extra: &[Error],
        call: impl FnOnce(&Engine) -> R<engine::Attr>,
    ) {
        let mut errs: Vec<Error> = extra.to_vec();
        errs.extend(name_err(name));
        errs.extend(self.dir_err(dir));
        if errs.is_empty() && self.dead(dir) {
            errs.push(Error::NotFound);
        }
        if errs.is_empty() && self.get(dir, name).is_some() {
            errs.push(Error::Exists);
        }
        if errs.is_empty() && self.inodes_full() {
            errs.push(Error::NoInodes);
        }
        let got = self.call(name.len(), call);
        if let Some(a) = self.expect(got, &errs, 0, 0) {
            self.e.forget(a.ino, 1);
            let kind = match kind {
                Kind::Dir { .. } => Kind::Dir { parent: dir, entries: BTreeMap::new(), dead: false },
                k => k,
            };
            self.nodes.insert(a.ino, MNode { kind, xattrs: BTreeMap::new(), opens: 0 });
            self.entries_mut(dir).insert(name.to_vec(), a.ino);
            if a.kind != self.ftype(a.ino) {
                self.fail(format!("made a {:?}", a.kind));
            }
        }
    }

    fn write(&mut self, ino: Ino, off: u64, data: &[u8]) {
        let used = self.used();
        let mut errs: Vec<Error> = self.data_err(ino).into_iter().collect();
        if errs.is_empty() && !data.is_empty() && off.checked_add(data.len() as u64).is_none_or(|e| e > self.g.max_size)
        {
            errs.push(Error::FileTooBig);
        }
        let got = self.call(data.len(), |e| e.write(ino, off, data));
        let need = self.need(data.len() as u64);
        if let Some(n) = self.expect(got, &errs, need, used) {
            // At the limit a write stores the prefix that fits, up to a
            // sector boundary, and says how long it is.
            if n < data.len() {
                let free = self.g.limit.saturating_sub(used);
                if free >= need || n == 0 || (off + n as u64) % self.g.ss != 0 {
                    self.fail(format!("wrote {n} of {} at {off} with {free} bytes free", data.len()));
                }
            } else if n != data.len() {
                self.fail(format!("wrote {n} of {}", data.len()));
            }
            if n > 0 {
                self.changed_file(ino).write(off, &data[..n]);
            }
        }
    }

    fn append(&mut self, ino: Ino, data: &[u8]) {
        let used = self.used();
        let mut errs: Vec<Error> = self.data_err(ino).into_iter().collect();
        let at = if errs.is_empty() { self.mfile(ino).size } else { 0 };
        if errs.is_empty() && !data.is_empty() && at.checked_add(data.len() as u64).is_none_or(|e| e > self.g.max_size)
        {
            errs.push(Error::FileTooBig);
        }
        let got = self.call(data.len(), |e| e.append(ino, data));
        if let Some(off) = self.expect(got, &errs, self.need(data.len() as u64), used) {
            if off != at {
                self.fail(format!("appended at {off}, size was {at}"));
            }
            if data.is_empty() {
                self.mfile_mut(ino).write(at, data);
            } else {
                self.changed_file(ino).write(at, data);
            }
        }
    }

    fn read(&mut self, ino: Ino, off: u64, len: usize) {
        let mut buf = vec![0xA5; len];
        let errs: Vec<Error> = self.data_err(ino).into_iter().collect();
        let got = self.call(0, |e| e.read(ino, off, &mut buf));
        if let Some(n) = self.expect(got, &errs, 0, 0) {
            let want = self.mfile(ino).read(off, len);
            if n != want.len() || buf[..n] != want[..] {
                self.fail(format!("read {n} bytes at {off}, model has {}; contents differ or length", want.len()));
            }
        }
    }

    fn truncate(&mut self, ino: Ino, size: u64) {
        let used = self.used();
        let mut errs: Vec<Error> = self.data_err(ino).into_iter().collect();
        if errs.is_empty() && size > self.g.max_size {
            errs.push(Error::FileTooBig);
        }
        let set = SetAttr { size: Some(size), ..SetAttr::default() };
        let got = self.call(0, |e| e.setattr(ino, &set));
        if let Some(a) = self.expect(got, &errs, self.need(0), used) {
            if a.size != size {
                self.fail(format!("size {} after truncate", a.size));
            }
            self.changed_file(ino).set_len(size);
        }
    }

    fn fallocate(&mut self, ino: Ino, mode: u32, off: u64, len: u64) {
        let used = self.used();
        let mut errs: Vec<Error> = self.data_err(ino).into_iter().collect();
        if errs.is_empty() {
            if mode & !(KEEP | PUNCH | ZERO) != 0 {
                errs.push(Error::NotSupported);
            } else if len == 0 {
                errs.push(Error::InvalidArgument);
            } else if off.checked_add(len).is_none_or(|e| e > self.g.max_size || e > i64::MAX as u64) {
                errs.push(Error::FileTooBig);
            } else if mode & PUNCH != 0 && mode & KEEP == 0 {
                errs.push(Error::NotSupported);
            } else if mode & PUNCH != 0 && mode & ZERO != 0 {
                errs.push(Error::InvalidArgument);
            }
        }
        let need = if mode & PUNCH != 0 { self.need(0) } else { self.need(len) };
        let got = self.call(0, |e| e.fallocate(ino, mode, off, len));
        if self.expect(got, &errs, need, used).is_some() {
            let end = off + len;
            let f = self.changed_file(ino);
            if mode & PUNCH != 0 {
                f.zero(off, end);
            } else {
                let new_len = if mode & KEEP != 0 { f.size } else { f.size.max(end) };
                if mode & ZERO != 0 {
                    f.zero(off, end);
                }
                f.set_len(new_len);
            }
        }
    }

    fn copy(&mut self, src: Ino, off_in: u64, dst: Ino, off_out: u64, len: u64) {
        let used = self.used();
        let mut errs = Vec::new();
        let (ei, eo) = (off_in.checked_add(len), off_out.checked_add(len));
        if src == dst {
            match (ei, eo) {
                (Some(a), Some(b)) if off_in < b && off_out < a => errs.push(Error::InvalidArgument),
                (Some(_), Some(_)) => {}
                _ => errs.push(Error::Overflow),
            }
        }
        if errs.is_empty() {
            errs.extend(self.data_err(src));
            errs.extend(self.data_err(dst));
        }
        let total = if errs.is_empty() { len.min(self.mfile(src).size.saturating_sub(off_in)) } else { 0 };
        if errs.is_empty() && total > 0 && off_out.checked_add(total).is_none_or(|e| e > self.g.max_size) {
            errs.push(Error::FileTooBig);
        }
        let got = self.call(0, |e| e.copy_file_range(src, off_in, dst, off_out, len));
        let need = self.need(total);
        if let Some(n) = self.expect(got, &errs, need, used) {
            if n > total {
                self.fail(format!("copied {n} of at most {total}"));
            }
            if n < total && self.g.limit.saturating_sub(used) >= need {
                self.fail(format!("short copy {n} of {total} with memory free"));
            }
            if n > 0 {
                // Sparse: the engine copies holes as holes, so `n` may be 2^62.
                let pieces = self.mfile(src).pieces(off_in, n);
                let d = self.changed_file(dst);
                d.size = d.size.max(off_out + n);
                d.zero(off_out, off_out + n);
                for (at, bytes) in pieces {
                    d.write(off_out + (at - off_in), &bytes);
                }
            }
        }
    }

    fn seek(&mut self, ino: Ino, off: u64, data: bool) {
        // Where data lies is the engine's choice (written zeros and
        // allocated ranges are data): SEEK_DATA may find no data only where
        // the model has zeros, and must not skip a nonzero byte; SEEK_HOLE
        // must land on a zero byte or at the end.
        let errs: Vec<Error> = match self.kind(ino) {
            None => vec![Error::NotFound],
            Some(Kind::File(f)) if off >= f.size => vec![Error::NoSuchOffset],
            Some(Kind::File(_)) => vec![],
            Some(_) => vec![Error::InvalidArgument],
        };
        let got = self.call(0, |e| e.seek(ino, off, data));
        if got == Err(Error::NoSuchOffset) && data && errs.is_empty() {
            let f = self.mfile(ino);
            if !f.is_zero(off, f.size) {
                self.fail("SEEK_DATA found no data before nonzero bytes".into());
            }
            return;
        }
        if let Some(r) = self.expect(got, &errs, 0, 0) {
            let f = self.mfile(ino);
            if data {
                if r < off || r >= f.size || !f.is_zero(off, r) {
                    self.fail(format!("SEEK_DATA from {off} gave {r} (size {})", f.size));
                }
            } else if r < off || r > f.size || (r < f.size && !f.is_zero(r, r + 1)) {
                self.fail(format!("SEEK_HOLE from {off} gave {r} (size {})", f.size));
            }
        }
    }

    fn unlink(&mut self, dir: Ino, name: &[u8]) {
        let mut errs: Vec<Error> = name_err(name).into_iter().collect();
        errs.extend(self.dir_err(dir));
        let target = self.get(dir, name);
        if errs.is_empty() {
            match target {
                None => errs.push(Error::NotFound),
                Some(t) if self.is_dir(t) => errs.push(Error::IsDir),
                Some(_) => {}
            }
        }
        let got = self.call(name.len(), |e| e.unlink(dir, name));
        if self.expect(got, &errs, 0, 0).is_some() {
            let t = target.expect("target");
            self.entries_mut(dir).remove(name);
            self.settle(t);
        }
    }

    fn rmdir(&mut self, dir: Ino, name: &[u8]) {
        let mut errs: Vec<Error> = name_err(name).into_iter().collect();
        errs.extend(self.dir_err(dir));
        let target = self.get(dir, name);
        if errs.is_empty() {
            match target {
                None => errs.push(Error::NotFound),
                Some(t) if !self.is_dir(t) => errs.push(Error::NotDir),
                Some(t) if !self.entries(t).is_empty() => errs.push(Error::NotEmpty),
                Some(_) => {}
            }
        }
        let got = self.call(name.len(), |e| e.rmdir(dir, name));
        if self.expect(got, &errs, 0, 0).is_some() {
            let t = target.expect("target");
            self.entries_mut(dir).remove(name);
            self.kill_dir(t);
        }
    }

    fn rename_want(&self, sd: Ino, sn: &[u8], dd: Ino, dn: &[u8], flags: u32) -> Vec<Error> {
        let mut errs = Vec::new();
        if flags & !(EXCHANGE | NOREPLACE | WHITEOUT) != 0
            || (flags & EXCHANGE != 0 && flags & (NOREPLACE | WHITEOUT) != 0)
        {
            errs.push(Error::InvalidArgument);
        }
        errs.extend(name_err(sn));
        errs.extend(name_err(dn));
        errs.extend(self.dir_err(sd));
        errs.extend(self.dir_err(dd));
        if !errs.is_empty() {
            return errs;
        }
        if self.dead(sd) || self.dead(dd) {
            return vec![Error::NotFound];
        }
        let Some(src) = self.get(sd, sn) else { return vec![Error::NotFound] };
        let dst = self.get(dd, dn);
        let cross = sd != dd;
        if self.is_dir(src) && cross && self.is_ancestor(src, dd) {
            return vec![Error::WouldLoop];
        }
        if let Some(t) = dst {
            if flags & NOREPLACE != 0 {
                return vec![Error::Exists];
            }
            if t == src {
                return vec![];
            }
            if cross && self.is_dir(t) && self.is_ancestor(t, sd) {
                return vec![if flags & EXCHANGE != 0 { Error::WouldLoop } else { Error::NotEmpty }];
            }
        }
        if flags & EXCHANGE != 0 {
            return if dst.is_none() { vec![Error::NotFound] } else { vec![] };
        }
        if let Some(t) = dst {
            match (self.is_dir(src), self.is_dir(t)) {
                (true, false) => return vec![Error::NotDir],
                (false, true) => return vec![Error::IsDir],
                (true, true) if !self.entries(t).is_empty() => return vec![Error::NotEmpty],
                _ => {}
            }
        }
        // The whiteout needs an inode (the replaced target is freed only after).
        if flags & WHITEOUT != 0 && self.inodes_full() {
            return vec![Error::NoInodes];
        }
        vec![]
    }

    fn set_parent(&mut self, ino: Ino, p: Ino) {
        if let Some(Kind::Dir { parent, .. }) = self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            *parent = p;
        }
    }

    fn rename(&mut self, sd: Ino, sn: &[u8], dd: Ino, dn: &[u8], flags: u32) {
        let errs = self.rename_want(sd, sn, dd, dn, flags);
        let got = self.call(sn.len() + dn.len(), |e| e.rename(sd, sn, dd, dn, flags));
        if self.expect(got, &errs, 0, 0).is_none() {
            return;
        }
        let src = self.get(sd, sn).expect("source");
        let dst = self.get(dd, dn);
        if dst == Some(src) {
            return;
        }
        if flags & EXCHANGE != 0 {
            let dst = dst.expect("target");
            self.entries_mut(sd).insert(sn.to_vec(), dst);
            self.entries_mut(dd).insert(dn.to_vec(), src);
            self.set_parent(src, dd);
            self.set_parent(dst, sd);
            return;
        }
        self.entries_mut(sd).remove(sn);
        self.entries_mut(dd).insert(dn.to_vec(), src);
        self.set_parent(src, dd);
        if flags & WHITEOUT != 0 {
            // A character device 0/0, mode 0, at the source name.
            match self.e.lookup(sd, sn) {
                Ok(a) => {
                    self.e.forget(a.ino, 1);
                    if (a.kind, a.perm, a.rdev, a.nlink) != (FileType::CharDevice, 0, 0, 1) {
                        self.fail(format!("whiteout {a:?}"));
                    }
                    let node =
                        MNode { kind: Kind::Special(FileType::CharDevice, 0), xattrs: BTreeMap::new(), opens: 0 };
                    self.nodes.insert(a.ino, node);
                    self.entries_mut(sd).insert(sn.to_vec(), a.ino);
                }
                Err(e) => self.fail(format!("no whiteout at the source name: {e:?}")),
            }
        }
        if let Some(t) = dst {
            if self.is_dir(t) {
                self.kill_dir(t);
            } else {
                self.settle(t);
            }
        }
    }

    fn link(&mut self, ino: Ino, dd: Ino, dn: &[u8]) {
        let mut errs: Vec<Error> = name_err(dn).into_iter().collect();
        match self.kind(ino) {
            None => errs.push(Error::NotFound),
            Some(Kind::Dir { .. }) => errs.push(Error::Permission),
            _ => {}
        }
        errs.extend(self.dir_err(dd));
        if errs.is_empty() && self.dead(dd) {
            errs.push(Error::NotFound);
        }
        if errs.is_empty() && self.get(dd, dn).is_some() {
            errs.push(Error::Exists);
        }
        // A name beyond the first is an inode (not an `O_TMPFILE` file's first).
        if errs.is_empty() && self.nlink(ino) > 0 && self.inodes_full() {
            errs.push(Error::NoInodes);
        }
        let got = self.call(dn.len(), |e| e.link(ino, dd, dn));
        if let Some(a) = self.expect(got, &errs, 0, 0) {
            if a.ino != ino {
                self.fail(format!("link handed out {}", a.ino));
            }
            self.e.forget(ino, 1);
            self.entries_mut(dd).insert(dn.to_vec(), ino);
        }
    }

    fn setxattr(&mut self, ino: Ino, name: &[u8], vlen: usize, flags: u32) {
        let value: Vec<u8> = (0..vlen).map(|i| i as u8).collect();
        let mut errs: Vec<Error> = Vec::new();
        let exists = self.nodes.get(&ino).map(|n| n.xattrs.contains_key(name));
        match exists {
            None => errs.push(Error::NotFound),
            Some(exists) => {
                if let Some(e) = xattr_name_err(name) {
                    errs.push(e);
                } else if vlen > XATTR_SIZE_MAX {
                    errs.push(Error::TooBig);
                } else if flags & !(CREATE | REPLACE) != 0 {
                    errs.push(Error::InvalidArgument);
                } else if flags & CREATE != 0 && exists {
                    errs.push(Error::Exists);
                } else if flags & REPLACE != 0 && !exists {
                    errs.push(Error::NoData);
                }
            }
        }
        let got = self.call(name.len() + vlen, |e| e.setxattr(ino, name, &value, flags));
        if self.expect(got, &errs, 0, 0).is_some() {
            self.nodes.get_mut(&ino).expect("node").xattrs.insert(name.to_vec(), value);
        }
    }

    fn getxattr(&mut self, ino: Ino, name: &[u8]) {
        let mut errs: Vec<Error> = xattr_name_err(name).into_iter().collect();
        let node = self.nodes.get(&ino);
        if node.is_none() {
            errs.push(Error::NotFound);
        }
        let want = node.and_then(|n| n.xattrs.get(name).cloned());
        if errs.is_empty() && want.is_none() {
            errs.push(Error::NoData);
        }
        let got = self.call(name.len(), |e| e.getxattr(ino, name));
        if let Some(v) = self.expect(got, &errs, 0, 0) {
            if Some(&v) != want.as_ref() {
                self.fail(format!("getxattr {name:?}: {} bytes differ from the model", v.len()));
            }
        }
    }

    fn removexattr(&mut self, ino: Ino, name: &[u8]) {
        let errs: Vec<Error> = match self.nodes.get(&ino) {
            None => vec![Error::NotFound],
            Some(n) => match xattr_name_err(name) {
                Some(e) => vec![e],
                None if !n.xattrs.contains_key(name) => vec![Error::NoData],
                None => vec![],
            },
        };
        let got = self.call(name.len(), |e| e.removexattr(ino, name));
        if self.expect(got, &errs, 0, 0).is_some() {
            self.nodes.get_mut(&ino).expect("node").xattrs.remove(name);
        }
    }

    fn setattr(&mut self, ino: Ino, set: SetAttr) {
        let mut errs: Vec<Error> = Vec::new();
        if !self.nodes.contains_key(&ino) {
            errs.push(Error::NotFound);
        }
        let bad_time = |t: Option<SetTime>| matches!(t, Some(SetTime::At(t)) if t.nanos >= 1_000_000_000);
        if bad_time(set.atime) || bad_time(set.mtime) || set.ctime.is_some_and(|t| t.nanos >= 1_000_000_000) {
            errs.push(Error::InvalidArgument);
        }
        let got = self.call(0, |e| e.setattr(ino, &set));
        if let Some(a) = self.expect(got, &errs, 0, 0) {
            let at = |t: Option<SetTime>| match t {
                Some(SetTime::At(t)) => Some(t),
                _ => None,
            };
            let checks = [
                (set.mode.map(|m| m & 0o7777), a.perm, "perm"),
                (set.uid, a.uid, "uid"),
                // The Windows attributes; the inode flags above them stay.
                (set.flags.map(|f| f & !inode_flags::ALL), a.flags & !inode_flags::ALL, "flags"),
            ];
            for (want, got, what) in checks {
                if want.is_some_and(|w| w != got) {
                    self.fail(format!("{what} {got} after setting {want:?}"));
                }
            }
            let times = [(at(set.atime), a.atime), (at(set.mtime), a.mtime), (set.ctime, a.ctime)];
            for (want, got) in times {
                if want.is_some_and(|w| w != got) {
                    self.fail(format!("time {got:?} after setting {want:?}"));
                }
            }
        }
    }

    fn readdir(&mut self, dir: Ino, from: u64, plus: bool, stop: u8) {
        let errs: Vec<Error> = self.dir_err(dir).into_iter().collect();
        let mut seen: Vec<(Vec<u8>, Ino, u64)> = Vec::new();
        let limit = usize::from(stop % 8) + 1;
        let got = if plus {
            self.call(0, |e| {
                e.readdir_plus(dir, from, |d, a| {
                    if seen.len() == limit {
                        return false;
                    }
                    seen.push((d.name.to_vec(), a.ino, d.next));
                    true
                })
            })
        } else {
            self.call(0, |e| {
                e.readdir(dir, from, |d| {
                    if seen.len() == limit {
                        return false;
                    }
                    seen.push((d.name.to_vec(), d.ino, d.next));
                    true
                })
            })
        };
        if self.expect(got, &errs, 0, 0).is_none() {
            return;
        }
        let mut last = from;
        for (name, ino, next) in &seen {
            if plus && name != b"." && name != b".." {
                self.e.forget(*ino, 1);
            }
            if *next <= last && !(last == from && *next > from) {
                self.fail(format!("readdir cookies not increasing: {next} after {last}"));
            }
            last = *next;
            let ok = match &name[..] {
                b"." => *ino == dir,
                b".." => matches!(self.kind(dir), Some(Kind::Dir { parent, .. }) if *parent == *ino),
                n => self.get(dir, n) == Some(*ino),
            };
            if !ok {
                self.fail(format!("readdir gave {name:?} -> {ino}, not in the model"));
            }
        }
    }

    fn release(&mut self, h: u8) {
        if self.handles.is_empty() {
            return;
        }
        let ino = self.handles.remove(h as usize % self.handles.len());
        self.call(0, |e| e.release(ino));
        self.nodes.get_mut(&ino).expect("open node").opens -= 1;
        self.settle(ino);
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { dir, name, mode } => {
                let dir = self.dir(*dir);
                self.make(dir, &name.0, Kind::File(MFile::default()), &[], |e| e.create(dir, &name.0, *mode, 0, 0))
            }
            Op::Mkdir { dir, name, mode } => {
                let dir = self.dir(*dir);
                let kind = Kind::Dir { parent: dir, entries: BTreeMap::new(), dead: false };
                self.make(dir, &name.0, kind, &[], |e| e.mkdir(dir, &name.0, *mode, 0, 0))
            }
            Op::Mknod { dir, name, mode, rdev } => {
                let dir = self.dir(*dir);
                let (kind, extra) = match FileType::from_mode(mode.0) {
                    None | Some(FileType::Directory | FileType::Symlink) => {
                        (Kind::Special(FileType::Fifo, 0), vec![Error::InvalidArgument])
                    }
                    Some(FileType::Regular) => (Kind::File(MFile::default()), vec![]),
                    Some(t @ (FileType::CharDevice | FileType::BlockDevice)) => (Kind::Special(t, *rdev), vec![]),
                    Some(t) => (Kind::Special(t, 0), vec![]),
                };
                self.make(dir, &name.0, kind, &extra, |e| e.mknod(dir, &name.0, mode.0, *rdev, 0, 0))
            }
            Op::Symlink { dir, name, target } => {
                let dir = self.dir(*dir);
                let target: Vec<u8> = match target.0 % 8 {
                    0 => Vec::new(),
                    1 => vec![b't'; PATH_MAX],
                    2 => vec![b't'; PATH_MAX - 1],
                    3 => b"a\0b".to_vec(),
                    n => format!("../{}/{n}", target.0).into_bytes(),
                };
                let extra = if target.is_empty() {
                    vec![Error::BadTarget]
                } else if target.len() >= PATH_MAX || target.contains(&0) {
                    vec![Error::NameTooLong]
                } else {
                    vec![]
                };
                let t = target.clone();
                self.make(dir, &name.0, Kind::Symlink(target), &extra, |e| e.symlink(dir, &name.0, &t, 0, 0))
            }
            Op::Tmpfile { dir, mode } => {
                let dir = self.dir(*dir);
                let mut errs: Vec<Error> = self.dir_err(dir).into_iter().collect();
                if errs.is_empty() && self.inodes_full() {
                    errs.push(Error::NoInodes);
                }
                let got = self.call(0, |e| e.tmpfile(dir, *mode, 0, 0));
                if let Some(a) = self.expect(got, &errs, 0, 0) {
                    self.e.forget(a.ino, 1);
                    let node = MNode { kind: Kind::File(MFile::default()), xattrs: BTreeMap::new(), opens: 1 };
                    self.nodes.insert(a.ino, node);
                    self.handles.push(a.ino);
                }
            }
            Op::Lookup { dir, name } => {
                let dir = self.dir(*dir);
                let name = &name.0;
                let mut errs: Vec<Error> = self.dir_err(dir).into_iter().collect();
                let want = match &name[..] {
                    b"." => Some(dir),
                    b".." => match self.kind(dir) {
                        Some(Kind::Dir { parent, .. }) if self.nodes.contains_key(parent) => Some(*parent),
                        _ => None,
                    },
                    _ => {
                        errs.extend(name_err(name));
                        self.get(dir, name)
                    }
                };
                if errs.is_empty() && want.is_none() {
                    errs.push(Error::NotFound);
                }
                let got = self.call(name.len(), |e| e.lookup(dir, name));
                if let Some(a) = self.expect(got, &errs, 0, 0) {
                    self.e.forget(a.ino, 1);
                    if Some(a.ino) != want {
                        self.fail(format!("lookup found {}, model {want:?}", a.ino));
                    }
                }
            }
            Op::Unlink { dir, name } => self.unlink(self.dir(*dir), &name.0),
            Op::Rmdir { dir, name } => self.rmdir(self.dir(*dir), &name.0),
            Op::Rename { sdir, sname, ddir, dname, flags } => {
                self.rename(self.dir(*sdir), &sname.0, self.dir(*ddir), &dname.0, flags.0)
            }
            Op::Link { node, ddir, dname } => self.link(self.file(*node), self.dir(*ddir), &dname.0),
            Op::Write { file, off, len, byte } => self.write(self.file(*file), off.0, &vec![*byte; len.0]),
            Op::Append { file, len, byte } => self.append(self.file(*file), &vec![*byte; len.0]),
            Op::Read { file, off, len } => self.read(self.file(*file), off.0, len.0),
            Op::Truncate { file, size } => self.truncate(self.file(*file), size.0),
            Op::Fallocate { file, mode, off, len } => self.fallocate(self.file(*file), mode.0, off.0, len.0),
            Op::Copy { src, off_in, dst, off_out, len } => {
                self.copy(self.file(*src), off_in.0, self.file(*dst), off_out.0, len.0)
            }
            Op::Seek { file, off, data } => self.seek(self.file(*file), off.0, *data),
            Op::SetXattr { node, name, vlen, flags } => {
                // Up to just over XATTR_SIZE_MAX.
                let vlen = if vlen.0 > 65536 { XATTR_SIZE_MAX + 1 } else { vlen.0 };
                self.setxattr(self.any(*node), &name.0, vlen, flags.0)
            }
            Op::GetXattr { node, name } => self.getxattr(self.any(*node), &name.0),
            Op::RemoveXattr { node, name } => self.removexattr(self.any(*node), &name.0),
            Op::ListXattr { node } => {
                let ino = self.any(*node);
                let want = match self.nodes.get(&ino) {
                    None => Err(Error::NotFound),
                    Some(n) => Ok(n.xattrs.keys().flat_map(|k| k.iter().copied().chain([0])).collect::<Vec<u8>>()),
                };
                let got = self.call(0, |e| e.listxattr(ino));
                if got != want {
                    self.fail(format!("listxattr: {got:?}, model {want:?}"));
                }
            }
            Op::SetAttr { node, mode, uid, atime, mtime, ctime, flags } => {
                let set = SetAttr {
                    mode: *mode,
                    uid: *uid,
                    atime: atime.map(|t| SetTime::At(t.0)),
                    mtime: mtime.map(|t| SetTime::At(t.0)),
                    ctime: ctime.map(|t| t.0),
                    flags: *flags,
                    ..SetAttr::default()
                };
                self.setattr(self.any(*node), set)
            }
            Op::Readdir { dir, from, plus, stop } => self.readdir(self.dir(*dir), from.0, *plus, *stop),
            Op::Readlink { node } => {
                let ino = self.any(*node);
                let want = match self.kind(ino) {
                    None => Err(Error::NotFound),
                    Some(Kind::Symlink(t)) => Ok(t.clone()),
                    Some(_) => Err(Error::InvalidArgument),
                };
                let got = self.call(0, |e| e.readlink(ino));
                if got != want {
                    self.fail(format!("readlink: {got:?}, model {want:?}"));
                }
            }
            Op::Open { node } => {
                let ino = self.any(*node);
                let got = self.call(0, |e| e.open(ino));
                let errs: Vec<Error> = if self.nodes.contains_key(&ino) { vec![] } else { vec![Error::NotFound] };
                if self.expect(got, &errs, 0, 0).is_some() {
                    self.nodes.get_mut(&ino).expect("node").opens += 1;
                    self.handles.push(ino);
                }
            }
            Op::Release { h } => self.release(*h),
            Op::Forget { node, n } => {
                // The model holds no lookup reference: forgetting any number
                // of them (saturating) changes nothing.
                let ino = self.any(*node);
                self.call(0, |e| e.forget(ino, n.0));
            }
            Op::Getattr { node } => {
                let ino = self.any(*node);
                let errs: Vec<Error> = if self.nodes.contains_key(&ino) { vec![] } else { vec![Error::NotFound] };
                let got = self.call(0, |e| e.getattr(ino));
                self.expect(got, &errs, 0, 0);
            }
            Op::Access { node, mask, uid, gid } => {
                let ino = self.any(*node);
                let cred = Cred { uid: *uid, gid: *gid, groups: vec![*gid, 0] };
                let got = self.call(0, |e| e.access(ino, *mask, &cred));
                let errs: &[Error] = if self.nodes.contains_key(&ino) { &[Error::Access] } else { &[Error::NotFound] };
                if let Err(e) = got {
                    if !errs.contains(&e) {
                        self.fail(format!("access: {e:?}"));
                    }
                }
            }
            Op::Statfs => {
                let s = self.call(0, |e| e.statfs());
                let used = self.used().min(self.g.limit);
                if s.blocks != self.g.limit / 4096 || s.bfree != (self.g.limit - used) / 4096 || s.bfree > s.blocks {
                    self.fail(format!("statfs {s:?} with {used} used"));
                }
            }
        }
    }

    // ---------------------------------------------------------- invariants

    /// The engine's state equals the model's.
    fn check(&mut self) {
        let mut held = 0u64;
        let mut files = 0u64;
        let mut logical = 0u64;
        for (&ino, node) in &self.nodes {
            let a = self.e.getattr(ino).unwrap_or_else(|e| self.fail(format!("getattr {ino}: {e:?}")));
            if a.kind != self.ftype(ino) || a.nlink != self.nlink(ino) {
                self.fail(format!(
                    "inode {ino}: {:?} nlink {}, model {:?} nlink {}",
                    a.kind,
                    a.nlink,
                    self.ftype(ino),
                    self.nlink(ino)
                ));
            }
            let xl: Vec<u8> = node.xattrs.keys().flat_map(|k| k.iter().copied().chain([0])).collect();
            if self.e.listxattr(ino).ok() != Some(xl) {
                self.fail(format!("xattrs of {ino}"));
            }
            match &node.kind {
                Kind::File(f) => {
                    if a.size != f.size {
                        self.fail(format!("size of {ino}: {} model {}", a.size, f.size));
                    }
                    held += a.blocks * 512;
                    files += 1;
                    logical = logical.wrapping_add(f.size);
                }
                Kind::Dir { parent, entries, .. } => {
                    let mut got = BTreeMap::new();
                    let mut dots = Vec::new();
                    let r = self.e.readdir(ino, 0, |d| {
                        if d.name == b"." || d.name == b".." {
                            dots.push(d.ino);
                        } else {
                            got.insert(d.name.to_vec(), d.ino);
                        }
                        true
                    });
                    if r.is_err() || dots != [ino, *parent] || &got != entries {
                        self.fail(format!("entries of {ino}: {got:?} dots {dots:?}, model {entries:?}"));
                    }
                }
                Kind::Symlink(t) => {
                    if a.size != t.len() as u64 {
                        self.fail(format!("symlink size {}", a.size));
                    }
                }
                Kind::Special(_, rdev) => {
                    if a.rdev != *rdev {
                        self.fail(format!("device number {:#x}, model {rdev:#x}", a.rdev));
                    }
                }
            }
        }
        for ino in std::mem::take(&mut self.dirty) {
            if let Some(Kind::File(f)) = self.kind(ino) {
                let mut spots: Vec<u64> = f.chunks.keys().map(|c| c * CH).collect();
                spots.push(f.size.saturating_sub(CH + 1));
                for at in spots {
                    let want = f.read(at, 2 * CH as usize);
                    let mut buf = vec![0x5A; 2 * CH as usize];
                    let n = self.e.read(ino, at, &mut buf).unwrap_or_else(|e| self.fail(format!("read {ino}: {e:?}")));
                    if buf[..n] != want[..] {
                        self.fail(format!("content of {ino} at {at} differs ({n} bytes, model {})", want.len()));
                    }
                }
            }
        }
        let st = self.e.stats();
        if st.inodes != self.inodes() {
            self.fail(format!("{} inodes, model {}", st.inodes, self.inodes()));
        }
        if st.pool.used > self.g.limit {
            self.fail(format!("used {} over the limit {}", st.pool.used, self.g.limit));
        }
        // A page two files share (a clone, issue 20) is charged once but
        // counted in each file's blocks; each extra holder's table slot is
        // charged too (`SLOT_COST`), in no file's blocks.
        let held = held.saturating_sub(st.pool.shared_extra * st.pool.page_size);
        let used = st.pool.used.saturating_sub(st.pool.shared_extra * engine::sector::SLOT_COST);
        if used > held || held >= used + 512 * files.max(1) {
            self.fail(format!("used {} but files hold {held}: leak or lost charge", st.pool.used));
        }
        if st.logical_bytes != logical {
            self.fail(format!("logical bytes {} model {logical}", st.logical_bytes));
        }
        let meta = self.model_meta();
        if st.meta_bytes != meta || st.meta_bytes > st.max_meta_bytes {
            self.fail(format!("metadata charged {} of {}, model {meta}", st.meta_bytes, st.max_meta_bytes));
        }
    }

    /// The metadata the engine should have charged (`engine::budget`): every
    /// inode, every directory entry, every extended attribute.
    fn model_meta(&self) -> u64 {
        use engine::budget::{ENTRY_COST, EXTRA_COST, INODE_COST};
        let mut sum = 0;
        for node in self.nodes.values() {
            sum += INODE_COST;
            match &node.kind {
                Kind::Dir { entries, .. } => {
                    sum += EXTRA_COST + entries.keys().map(|n| ENTRY_COST + n.len() as u64).sum::<u64>();
                }
                Kind::Symlink(t) => sum += EXTRA_COST + t.len() as u64,
                // A device number lives in the node's boxed part.
                Kind::Special(_, rdev) if *rdev != 0 => sum += EXTRA_COST,
                Kind::File(_) | Kind::Special(..) => {}
            }
            sum += xattrs_meta(&node.xattrs);
        }
        sum
    }

    /// The engine saved to an image and loaded back is the same file system
    /// (what the root reaches: open unlinked files are not in images; tiny
    /// sectors are saved only). The load has no byte limit: a sector the engine shares in part is stored
    /// whole, so the copy may need more than the engine used.
    fn image_round_trip(&mut self) {
        self.op = "image round trip".into();
        let mut img = Vec::new();
        let snap = self.e.snapshot();
        snap.write_to(&mut img, &[]).unwrap_or_else(|e| self.fail(format!("saving into a Vec: {e}")));
        drop(snap);
        if self.g.ss < 4096 {
            // Saved (its offset arithmetic checked), but a tiny-sector
            // engine (`new_unchecked`) is no settings a load accepts.
            return;
        }
        let back = Engine::load_image(&img[..], |i| Ok(Config { max_bytes: u64::MAX / 4, ..i.config.clone() }))
            .unwrap_or_else(|e| self.fail(format!("the engine's image does not load: {e}")));
        if image::dump(&back) != image::dump(&self.e) {
            self.fail("the engine saved and loaded back differs".into());
        }
    }

    /// Deletes everything, releases every handle; every byte and inode is back.
    fn teardown(&mut self) {
        self.op = "teardown".into();
        for ino in std::mem::take(&mut self.handles) {
            self.e.release(ino);
        }
        self.remove_tree(ROOT);
        let s = self.e.stats();
        // The root and its attributes are all the metadata left.
        use engine::budget::{EXTRA_COST, INODE_COST};
        let meta = INODE_COST + EXTRA_COST + self.nodes.get(&ROOT).map_or(0, |r| xattrs_meta(&r.xattrs));
        if s.inodes != 1 || s.pool.used != 0 || s.pool.sectors != 0 || s.logical_bytes != 0 || s.meta_bytes != meta {
            self.fail(format!("after deleting everything: {s:?}"));
        }
    }

    fn remove_tree(&self, dir: Ino) {
        let mut list = Vec::new();
        self.e
            .readdir(dir, 0, |d| {
                if d.name != b"." && d.name != b".." {
                    list.push((d.name.to_vec(), d.ino, d.kind));
                }
                true
            })
            .unwrap_or_else(|e| self.fail(format!("readdir {dir}: {e:?}")));
        for (name, ino, kind) in list {
            let r = if kind == FileType::Directory {
                self.remove_tree(ino);
                self.e.rmdir(dir, &name)
            } else {
                self.e.unlink(dir, &name)
            };
            r.unwrap_or_else(|e| self.fail(format!("removing {name:?}: {e:?}")));
        }
    }
}

/// Decodes `data` into a geometry and operations and runs them; panics
/// (with the step, the operation and what differed) on any failure.
pub fn run(data: &[u8]) {
    INPUT.with(|i| i.set((data.as_ptr(), data.len())));
    run_ops(data);
    INPUT.with(|i| i.set((std::ptr::null(), 0)));
}

fn run_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let g = GEOMS[u8::arbitrary(&mut u).unwrap_or(0) as usize % GEOMS.len()];
    let mut h = Harness::new(g);
    let mut ops = 0;
    while !u.is_empty() && ops < MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        h.step = ops;
        h.op = format!("{op:?}");
        if h.op.len() > 300 {
            h.op.truncate(300);
            h.op.push_str("...");
        }
        h.apply(&op);
        h.check();
        ops += 1;
    }
    h.image_round_trip();
    h.teardown();
    CASES.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(data.len() as u64, Ordering::Relaxed);
    OPS.fetch_add(ops as u64, Ordering::Relaxed);
}
