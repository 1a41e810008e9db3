//! Issue 16: `Engine::read_with` lends the bytes of one version as slices of
//! sector memory, inline bytes and a static zero page.
//!
//! Checked here: the slices always hold exactly what `Engine::read` copies
//! (seeded random offsets and lengths over sparse, inline, empty, truncated
//! and regrown files, sector boundaries and the end of the file, in 16 B,
//! 4 KiB, 64 KiB and 1 MiB sectors); a read of up to 1 MiB allocates nothing
//! (this binary's global allocator counts each thread's allocations) and
//! fits `READ_PIECES`; the version is held while `f` runs (a write from
//! inside `f`, and writers on other threads, never change what it was lent).
//! The concurrency proof is the loom model `loom-tests/tests/read_with.rs`.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::IoSlice;

use engine::data::READ_PIECES;
use engine::{Engine, Error, Ino, ROOT};
use support::*;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's layout and
// pointer unchanged; the counting touches only a const-initialised thread
// local (no allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with `l` (above).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocs<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCS.with(Cell::get);
    let r = f();
    (r, ALLOCS.with(Cell::get) - before)
}

/// A small xorshift generator (deterministic per seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Geometries: (sector size, inline threshold).
const GEOMS: [(usize, usize); 7] = [(16, 0), (16, 8), (4096, 0), (4096, 1024), (65536, 0), (65536, 4096), (1 << 20, 0)];

/// What `read_with` lends at `off..off + len`, concatenated, and how many slices.
fn lent(e: &Engine, ino: Ino, off: u64, len: usize) -> (Vec<u8>, usize) {
    e.read_with(ino, off, len, |s: &[IoSlice<'_>]| {
        assert!(s.iter().all(|p| !p.is_empty()), "no empty slices");
        let mut all = Vec::new();
        for p in s {
            all.extend_from_slice(p);
        }
        (all, s.len())
    })
    .unwrap()
}

/// `read_with` and `read` agree at `off..off + len`.
fn check(e: &Engine, ino: Ino, off: u64, len: usize, what: &str) {
    let (got, pieces) = lent(e, ino, off, len);
    let want = read_at(e, ino, off, len);
    assert_eq!(got.len(), want.len(), "{what}: length at {off}+{len}");
    assert!(got == want, "{what}: bytes differ at {off}+{len}");
    let ss = e.config().sector_size;
    // At most one slice per sector touched, plus one per 64 KiB of zeros.
    let bound = (off as usize % ss + len).div_ceil(ss) + len.div_ceil(64 << 10) + 1;
    assert!(pieces <= bound, "{what}: {pieces} slices at {off}+{len} (bound {bound})");
}

/// Files of every shape in `e`: empty, small (inline where the geometry has
/// it), one exact sector, sparse with islands and a trailing hole, and one
/// truncated down into a sector then grown again.
fn shapes(e: &Engine, rng: &mut Rng) -> Vec<(Ino, &'static str)> {
    let ss = e.config().sector_size as u64;
    let mut out = vec![(mkfile(e, ROOT, b"empty"), "empty")];
    let small = mkfile(e, ROOT, b"small");
    let n = 1 + rng.below(e.config().inline_max.max(5) as u64) as usize;
    e.write(small, 0, &(0..n).map(|i| i as u8 ^ 0x5A).collect::<Vec<_>>()).unwrap();
    out.push((small, "small"));
    out.push((put(e, ROOT, b"sector", &vec![0xC3; ss as usize]), "one sector"));
    let sparse = mkfile(e, ROOT, b"sparse");
    for i in 0..6u64 {
        let at = rng.below(12 * ss);
        let len = 1 + rng.below(2 * ss) as usize;
        e.write(sparse, at, &vec![(i as u8) * 17 + 1; len]).unwrap();
    }
    let size = e.getattr(sparse).unwrap().size;
    truncate(e, sparse, size + 3 * ss + 5).unwrap();
    out.push((sparse, "sparse"));
    let regrown = put(e, ROOT, b"regrown", &(0..3 * ss + 7).map(|i| (i % 251) as u8 + 1).collect::<Vec<_>>());
    truncate(e, regrown, ss + ss / 3).unwrap();
    truncate(e, regrown, 4 * ss).unwrap();
    e.write(regrown, 2 * ss + 1, b"tail").unwrap();
    out.push((regrown, "regrown"));
    out
}

#[test]
fn matches_read_at_random_offsets() {
    for (ss, inline) in GEOMS {
        let e = tiny(ss, 256 << 20, inline);
        let mut rng = Rng(0x05EC_70F5 ^ ss as u64);
        for (ino, name) in shapes(&e, &mut rng) {
            let what = format!("ss {ss} inline {inline}: {name}");
            let size = e.getattr(ino).unwrap().size;
            let s = ss as u64;
            // Boundaries: sector edges and the end of the file.
            for off in [0, 1, s - 1, s, s + 1, 2 * s, size.saturating_sub(1), size, size + 1] {
                for len in [0, 1, ss - 1, ss, ss + 1, 2 * ss + 3, size as usize, size as usize + ss] {
                    check(&e, ino, off, len, &what);
                }
            }
            // Fewer in the big geometries: each read there is megabytes.
            for _ in 0..if ss >= 65536 { 40 } else { 200 } {
                let off = rng.below(size + 2 * s);
                let len = rng.below(size.max(1) + 3 * s) as usize;
                check(&e, ino, off, len, &what);
            }
        }
        teardown(&e);
    }
}

/// A read of up to 1 MiB allocates nothing and fits `READ_PIECES`, in the
/// worst layout (sectors and holes alternating, an unaligned offset); past
/// that the slices go into one `Vec`, still exactly the bytes.
#[test]
fn no_allocation_up_to_one_mib() {
    for ss in [4096usize, 65536, 1 << 20] {
        let e = tiny(ss, 64 << 20, 0);
        let f = mkfile(&e, ROOT, b"f");
        let sectors = (4 << 20) / ss as u64;
        for k in (0..sectors).step_by(2) {
            e.write(f, k * ss as u64, &vec![k as u8 | 1; ss]).unwrap();
        }
        truncate(&e, f, 4 << 20).unwrap();
        let mut rng = Rng(0xA110C ^ ss as u64);
        let mut most = 0;
        for _ in 0..32 {
            let off = rng.below(3 << 20);
            let ((total, pieces), n) = allocs(|| {
                e.read_with(f, off, 1 << 20, |s| (s.iter().map(|p| p.len()).sum::<usize>(), s.len())).unwrap()
            });
            assert_eq!(total, 1 << 20);
            assert_eq!(n, 0, "ss {ss}: read_with of 1 MiB at {off} allocated");
            assert!(pieces <= READ_PIECES);
            most = most.max(pieces);
            check(&e, f, off, 1 << 20, &format!("ss {ss}"));
        }
        if ss == 4096 {
            assert_eq!(most, 257, "1 MiB unaligned over alternating 4 KiB sectors and holes");
            // 2 MiB: 513 slices, past the stack array: one Vec, no copy.
            let ((total, pieces), n) =
                allocs(|| e.read_with(f, 5, 2 << 20, |s| (s.iter().map(|p| p.len()).sum::<usize>(), s.len())).unwrap());
            assert_eq!((total, pieces), (2 << 20, 513));
            assert_eq!(n, 1, "one Vec for the slices past READ_PIECES");
            check(&e, f, 5, 2 << 20, "ss 4096, 2 MiB");
        }
        teardown(&e);
    }
}

/// The version is held while `f` runs: a write to the lent range from
/// inside `f` (copy-on-write into a new sector, published) does not change
/// what `f` was lent, and its old sector is freed when `f` returns.
#[test]
fn lent_version_survives_a_write_inside_f() {
    for (ss, inline) in GEOMS {
        let e = tiny(ss, 64 << 20, inline);
        let small = put(&e, ROOT, b"small", b"inline bytes");
        let f = put(&e, ROOT, b"f", &vec![1u8; 2 * ss + 3]);
        let sectors = e.stats().pool.sectors;
        e.read_with(f, 0, 4 * ss, |s| {
            e.write(f, 0, &vec![2u8; 2 * ss + 3]).unwrap();
            assert_eq!(read_all(&e, f), vec![2u8; 2 * ss + 3], "the write is published");
            assert!(e.stats().pool.sectors > sectors, "new sectors beside the lent ones");
            assert!(s.iter().all(|p| p.iter().all(|&b| b == 1)), "ss {ss}: lent bytes changed");
            assert_eq!(s.iter().map(|p| p.len()).sum::<usize>(), 2 * ss + 3);
        })
        .unwrap();
        assert_eq!(e.stats().pool.sectors, sectors, "ss {ss}: the lent version's sectors freed after f");
        e.read_with(small, 0, 100, |s| {
            e.write(small, 0, b"INLINE").unwrap();
            let got: Vec<u8> = s.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(got, b"inline bytes");
        })
        .unwrap();
        assert_eq!(read_all(&e, small), b"INLINE bytes");
        teardown(&e);
    }
}

/// Writers on other threads overwrite a 1 MiB range with one byte value
/// per write while readers hold `read_with` slices: each read is one whole
/// version (a single value throughout), and stays so until `f` returns.
#[test]
fn concurrent_writers_never_tear_a_lent_version() {
    for ss in [4096usize, 65536] {
        let e = tiny(ss, 256 << 20, 0);
        let f = put(&e, ROOT, b"f", &vec![0u8; 1 << 20]);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|sc| {
            let w = sc.spawn(|| {
                let mut v = 0u8;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    v = v.wrapping_add(1);
                    e.write(f, 0, &vec![v; 1 << 20]).unwrap();
                }
            });
            let mut rng = Rng(0xF00D ^ ss as u64);
            for _ in 0..300 {
                let off = rng.below(1 << 20);
                let len = 1 + rng.below(1 << 20) as usize;
                e.read_with(f, off, len, |s| {
                    let first = s[0][0];
                    for _ in 0..2 {
                        assert!(s.iter().all(|p| p.iter().all(|&b| b == first)), "ss {ss}: torn at {off}+{len}");
                        std::thread::yield_now();
                    }
                })
                .unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            w.join().unwrap();
        });
        teardown(&e);
    }
}

#[test]
fn errors_as_read_and_f_not_called() {
    let e = small();
    let d = mkdir(&e, ROOT, b"d");
    let l = e.symlink(ROOT, b"l", b"target", 0, 0).unwrap().ino;
    for (ino, want) in [(d, Error::IsDir), (l, Error::InvalidArgument), (9999, Error::NotFound)] {
        let r = e.read_with(ino, 0, 10, |_| panic!("f called for an error"));
        assert_eq!(r.unwrap_err(), want);
    }
}
