//! Issue 19: every request's memory and time follow its effect, not its
//! arguments. A 10 TiB `fallocate`, `truncate` or `copy_file_range`, a write
//! at 2^62, a read or seek over a huge sparse range: on a 1 GiB engine each
//! answers `NoSpace` (changing nothing) or succeeds sparsely, with the heap
//! it uses bounded by what it really stores.
//!
//! Before the fix, `fallocate` planned one span per absent sector (10 TiB at
//! 64 KiB sectors: ~160 million, gigabytes of heap, and an allocation
//! failure aborts the process), `ZERO_RANGE` reserved its whole range up
//! front, and `copy_file_range` copied a sparse source's holes as zeros,
//! filling the destination until `NoSpace`.
//!
//! Memory is measured, not time: this binary's global allocator counts the
//! bytes each thread has live and the peak since the last reset, and every
//! test checks the peak of the calls it makes (the requests run on the
//! calling thread when nothing else writes the file).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use engine::data::{FALLOC_KEEP_SIZE as KEEP, FALLOC_PUNCH_HOLE as PUNCH, FALLOC_ZERO_RANGE as ZERO};
use engine::{Engine, Error, ROOT};
use support::*;

struct Counting;

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

// SAFETY: every method forwards to `System` with the caller's layout and
// pointer unchanged; the counting touches only const-initialised thread
// locals (no allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(-(l.size() as isize));
        // SAFETY: `p` came from `System.alloc` with `l` (above).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new as isize - l.size() as isize);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `f` and returns its result with the most heap bytes this thread
/// held at once during it, above what it held before.
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    (r, (PEAK.with(Cell::get) - base).max(0) as usize)
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
/// Heap a request may use whatever its arguments (its real effect here is
/// at most a few sectors and table nodes).
const SMALL: usize = 256 << 10;

/// A 1 GiB engine with the default 64 KiB sectors.
fn engine_1g() -> Engine {
    Engine::new(engine::Config { max_bytes: GIB, ..engine::Config::default() }).unwrap()
}

fn used(e: &Engine) -> u64 {
    e.stats().pool.used
}

#[test]
fn fallocate_of_10t_is_nospace_and_changes_nothing() {
    let e = engine_1g();
    let f = put(&e, ROOT, b"f", &[7; 100_000]);
    let before = (used(&e), e.getattr(f).unwrap().size);
    // 64 GiB first: before the fix it already planned a million spans
    // (~50 MB of heap) and failed here rather than trying 10 TiB.
    for len in [64 * GIB, 10 * TIB] {
        for mode in [0, KEEP, ZERO, ZERO | KEEP] {
            for off in [0, 50_000, 5 * TIB] {
                let (r, heap) = peak_heap(|| e.fallocate(f, mode, off, len));
                assert_eq!(r, Err(Error::NoSpace), "mode {mode:#x}, {len} at {off}");
                assert!(heap < SMALL, "mode {mode:#x}, {len} at {off}: {heap} bytes of heap");
                assert_eq!((used(&e), e.getattr(f).unwrap().size), before, "nothing changed");
            }
        }
    }
    assert_eq!(read_all(&e, f), vec![7; 100_000]);
    // Just past what is left: still refused, and refused before the work.
    let left = GIB - used(&e);
    assert_eq!(e.fallocate(f, 0, 0, 100_000 + left + 64 * KIB), Err(Error::NoSpace));
    assert_eq!(used(&e), before.0);
}

#[test]
fn fallocate_that_fits_allocates_only_the_holes() {
    let e = engine_1g();
    let f = put(&e, ROOT, b"f", &[7; 200_000]);
    let held = used(&e);
    // 256 MiB, of which the first 4 sectors are already there.
    let (r, heap) = peak_heap(|| e.fallocate(f, 0, 0, 256 * MIB));
    assert_eq!(r, Ok(()));
    assert_eq!(used(&e), 256 * MIB, "only the holes were allocated");
    assert!(used(&e) > held);
    // The plan is not a list of the sectors: the heap is the table's nodes
    // and the sectors' handles, a small fraction of the data.
    assert!(heap < (256 * MIB / 64) as usize, "{heap} bytes of heap for 4096 sectors");
    assert_eq!(e.getattr(f).unwrap().size, 256 * MIB);
    assert_eq!(read_at(&e, f, 0, 200_000), vec![7; 200_000]);
    assert_eq!(read_at(&e, f, 200_000, 100_000), vec![0; 100_000]);
    // Again over the same range: nothing to do, nothing allocated.
    let (r, heap) = peak_heap(|| e.fallocate(f, 0, 0, 256 * MIB));
    assert_eq!(r, Ok(()));
    assert!(heap < SMALL, "{heap}");
    assert_eq!(used(&e), 256 * MIB);
}

#[test]
fn zero_range_of_present_data_works_on_a_full_file_system() {
    let e = Engine::new(engine::Config { max_bytes: 8 * MIB, ..engine::Config::default() }).unwrap();
    let f = put(&e, ROOT, b"f", &vec![7; 8 * MIB as usize]);
    assert_eq!(used(&e), 8 * MIB, "full");
    // Zeroing data that is there needs no more memory once done.
    assert_eq!(e.fallocate(f, ZERO | KEEP, 100, 6 * MIB), Ok(()));
    assert_eq!(used(&e), 8 * MIB);
    let all = read_all(&e, f);
    assert!(all[..100].iter().all(|&b| b == 7));
    assert!(all[100..100 + 6 * MIB as usize].iter().all(|&b| b == 0));
    assert!(all[100 + 6 * MIB as usize..].iter().all(|&b| b == 7));
    // Past the end it allocates, so on a full file system it is refused.
    assert_eq!(e.fallocate(f, ZERO, 8 * MIB, 64 * KIB), Err(Error::NoSpace));
    assert_eq!(e.getattr(f).unwrap().size, 8 * MIB);
}

#[test]
fn punch_hole_of_10t_is_quick_and_frees() {
    let e = engine_1g();
    let f = put(&e, ROOT, b"f", &[7; 300_000]);
    truncate(&e, f, 10 * TIB).unwrap();
    e.write(f, 9 * TIB, &[8; 100_000]).unwrap();
    let (r, heap) = peak_heap(|| e.fallocate(f, PUNCH | KEEP, 100, 20 * TIB));
    assert_eq!(r, Ok(()));
    assert!(heap < SMALL, "{heap}");
    let ss = e.config().sector_size as u64;
    assert_eq!(used(&e), ss, "only the first sector's first 100 bytes remain");
    assert_eq!(e.getattr(f).unwrap().size, 10 * TIB);
    assert_eq!(read_at(&e, f, 0, 200), [&[7; 100][..], &[0; 100][..]].concat());
    assert_eq!(read_at(&e, f, 9 * TIB, 1000), vec![0; 1000]);
}

#[test]
fn truncate_up_to_10t_and_to_the_largest_size_is_sparse() {
    let e = engine_1g();
    let f = put(&e, ROOT, b"f", &[7; 100_000]);
    let held = used(&e);
    for size in [10 * TIB, i64::MAX as u64, 3 * TIB] {
        let (r, heap) = peak_heap(|| truncate(&e, f, size));
        assert_eq!(r.map(|a| a.size), Ok(size));
        assert!(heap < SMALL, "{heap}");
        assert_eq!(used(&e), held, "extending is sparse");
    }
    assert_eq!(truncate(&e, f, i64::MAX as u64 + 1).map(|a| a.size), Err(Error::FileTooBig));
    assert_eq!(read_at(&e, f, 0, 100_000), vec![7; 100_000]);
    // Bytes of the last sector past the old end read as zeros.
    assert_eq!(read_at(&e, f, 100_000, 100_000), vec![0; 100_000]);
    let (buf, heap) = peak_heap(|| read_at(&e, f, 2 * TIB, 16 * MIB as usize));
    assert!(buf.iter().all(|&b| b == 0));
    assert!(heap <= 16 * MIB as usize + SMALL, "only the caller's buffer: {heap}");
    let ss = e.config().sector_size as u64;
    assert_eq!(e.seek(f, 0, false), Ok(100_000u64.next_multiple_of(ss)), "the hole after the data");
    assert_eq!(e.seek(f, 200 * KIB, true), Err(Error::NoSuchOffset), "no data after it");
    truncate(&e, f, 50).unwrap();
    assert_eq!(read_all(&e, f), vec![7; 50]);
}

#[test]
fn write_at_2_pow_62_is_sparse() {
    let e = engine_1g();
    let f = mkfile(&e, ROOT, b"f");
    let at = 1u64 << 62;
    let (r, heap) = peak_heap(|| e.write(f, at, &[9; 5000]));
    assert_eq!(r, Ok(5000));
    assert!(heap < SMALL, "{heap}");
    let ss = e.config().sector_size as u64;
    assert_eq!(used(&e), 5000u64.next_multiple_of(ss), "the sectors of 5,000 bytes");
    assert_eq!(e.getattr(f).unwrap().size, at + 5000);
    assert_eq!(read_at(&e, f, at - 10, 5020), [&[0; 10][..], &[9; 5000][..]].concat());
    assert_eq!(e.seek(f, 0, true), Ok(at));
    assert_eq!(e.seek(f, at, false), Ok(at + 5000));
    assert_eq!(e.seek(f, 0, false), Ok(0));
    // Past the largest size, or overflowing: refused, nothing changed.
    assert_eq!(e.write(f, i64::MAX as u64 - 10, &[1; 100]), Err(Error::FileTooBig));
    assert_eq!(e.write(f, u64::MAX - 10, &[1; 100]), Err(Error::FileTooBig));
    assert_eq!(e.getattr(f).unwrap().size, at + 5000);
    // The whole file goes with one truncate.
    truncate(&e, f, 0).unwrap();
    assert_eq!(used(&e), 0);
}

#[test]
fn copy_file_range_of_10t_copies_the_data_not_the_holes() {
    let e = engine_1g();
    let src = mkfile(&e, ROOT, b"src");
    truncate(&e, src, 10 * TIB).unwrap();
    e.write(src, 0, &[1; MIB as usize]).unwrap();
    e.write(src, 5 * TIB + 123, &[2; MIB as usize]).unwrap();
    let dst = mkfile(&e, ROOT, b"dst");
    let held = used(&e);
    let (r, heap) = peak_heap(|| e.copy_file_range(src, 0, dst, 0, 20 * TIB));
    assert_eq!(r, Ok(10 * TIB), "to the end of the source");
    assert!(heap < 2 * MIB as usize, "{heap}");
    assert_eq!(e.getattr(dst).unwrap().size, 10 * TIB);
    assert!(used(&e) <= 2 * held + 64 * KIB, "the copy is as sparse as the source: {} vs {held}", used(&e));
    assert_eq!(read_at(&e, dst, 0, MIB as usize + 10), [&[1; MIB as usize][..], &[0; 10][..]].concat());
    assert_eq!(read_at(&e, dst, 5 * TIB + 123, MIB as usize), vec![2; MIB as usize]);
    assert_eq!(read_at(&e, dst, 3 * TIB, 1000), vec![0; 1000]);
    // Onto a huge offset of another file, and past the largest size.
    let far = mkfile(&e, ROOT, b"far");
    assert_eq!(e.copy_file_range(src, 0, far, 1 << 62, 4 * KIB), Ok(4 * KIB));
    assert_eq!(e.getattr(far).unwrap().size, (1 << 62) + 4 * KIB);
    assert_eq!(e.copy_file_range(src, 0, far, i64::MAX as u64 - 10, 100), Err(Error::FileTooBig));
}

#[test]
fn copy_file_range_holes_zero_the_destination() {
    let e = engine_1g();
    let dst = put(&e, ROOT, b"dst", &[0xFF; 3 * MIB as usize]);
    let src = mkfile(&e, ROOT, b"src");
    truncate(&e, src, 2 * MIB).unwrap();
    e.write(src, MIB / 2, &[3; 1000]).unwrap();
    let held = used(&e);
    assert_eq!(e.copy_file_range(src, 0, dst, 1000, 10 * TIB), Ok(2 * MIB));
    let all = read_all(&e, dst);
    assert_eq!(all.len(), 3 * MIB as usize);
    let z = 1000 + MIB as usize / 2;
    assert!(all[..1000].iter().all(|&b| b == 0xFF));
    assert!(all[1000..z].iter().all(|&b| b == 0));
    assert!(all[z..z + 1000].iter().all(|&b| b == 3));
    assert!(all[z + 1000..1000 + 2 * MIB as usize].iter().all(|&b| b == 0));
    assert!(all[1000 + 2 * MIB as usize..].iter().all(|&b| b == 0xFF));
    assert!(used(&e) <= held, "holes became holes: {} > {held}", used(&e));
}

#[test]
fn copy_file_range_onto_a_full_file_system() {
    // Room for 4 MiB of data and the clone's table slots.
    let slots = (3 * MIB / 4096) * engine::sector::SLOT_COST;
    let e = Engine::new(engine::Config { max_bytes: 4 * MIB + slots, ..engine::Config::default() }).unwrap();
    let src = put(&e, ROOT, b"src", &[5; 3 * MIB as usize]);
    // Whole sectors at offsets equal modulo the sector size are cloned
    // (issue 20): only their table slots are charged, however full.
    let clone = mkfile(&e, ROOT, b"clone");
    assert_eq!(e.copy_file_range(src, 0, clone, 0, 3 * MIB), Ok(3 * MIB));
    assert_eq!(used(&e), 3 * MIB + slots);
    let dst = mkfile(&e, ROOT, b"dst");
    // Copied (offsets differ modulo the sector size), and only 1 MiB is
    // left: a short copy, then NoSpace for the next one.
    assert_eq!(e.copy_file_range(src, 1, dst, 0, 3 * MIB), Ok(MIB));
    assert_eq!(read_all(&e, dst), vec![5; MIB as usize]);
    assert_eq!(e.copy_file_range(src, MIB + 1, dst, MIB, 2 * MIB), Err(Error::NoSpace));
    assert_eq!(e.getattr(dst).unwrap().size, MIB);
}

#[test]
fn setxattr_costs_what_it_sets_not_what_the_inode_has() {
    // 2,000 attributes of 1 KiB on one file; one more set, replace or
    // remove must not copy them (before: the whole map, ~2 MiB, per call).
    let e = engine_1g();
    let f = put(&e, ROOT, b"f", b"x");
    let value = vec![9u8; 1024];
    for i in 0..2000 {
        e.setxattr(f, format!("user.a{i:05}").as_bytes(), &value, 0).unwrap();
    }
    let (r, heap) = peak_heap(|| e.setxattr(f, b"user.new", &value, 0));
    r.unwrap();
    assert!(heap < 16 * 1024, "setxattr on an inode with 2,000 attributes used {heap} bytes of heap");
    let (r, heap) = peak_heap(|| e.setxattr(f, b"user.a01000", b"short", engine::xattr_flags::REPLACE));
    r.unwrap();
    assert!(heap < 16 * 1024, "replace: {heap} bytes");
    let (r, heap) = peak_heap(|| e.removexattr(f, b"user.a00007"));
    r.unwrap();
    assert!(heap < 16 * 1024, "remove: {heap} bytes");
    assert_eq!(e.getxattr(f, b"user.a01000").unwrap(), b"short");
    assert_eq!(e.getxattr(f, b"user.new").unwrap(), value);
    assert_eq!(e.getxattr(f, b"user.a00007"), Err(Error::NoData));
    assert_eq!(e.getxattr(f, b"user.a01999").unwrap(), value);
}
