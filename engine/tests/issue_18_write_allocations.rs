//! Issue 18: what an uncontended overwrite costs in heap allocations.
//!
//! This binary's global allocator counts the allocations each thread makes;
//! the tests write a warm file from one thread (the write runs on the
//! calling thread: the actor's fast path) and count the allocations of one
//! write. The count must not grow with the file (it is the table path
//! copied and the version published, O(log n)), and the read path allocates
//! nothing at all.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

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

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Allocations of one 4 KiB overwrite of a written file of `size` bytes
/// (the most over a few offsets), and of one 4 KiB read.
fn costs(ss: usize, size: u64) -> (u64, u64) {
    let e = tiny(ss, size + 16 * MIB, 0);
    let ino = mkfile(&e, engine::ROOT, b"f");
    let chunk = vec![7u8; MIB as usize];
    let mut off = 0;
    while off < size {
        e.write(ino, off, &chunk).unwrap();
        off += MIB;
    }
    let data = [9u8; 4096];
    let mut buf = [0u8; 4096];
    let (mut w, mut r) = (0, 0);
    for i in 0..8u64 {
        let at = (i * 7919 * 4 * KIB) % size;
        // Warm: the first write of a round may fill the pool's slot.
        e.write(ino, at, &data).unwrap();
        w = w.max(allocs(|| e.write(ino, at, &data).unwrap()).1);
        r = r.max(allocs(|| e.read(ino, at, &mut buf).unwrap()).1);
        assert_eq!(buf, data);
    }
    (w, r)
}

#[test]
fn reads_allocate_nothing_and_write_allocations_do_not_grow_with_the_file() {
    for ss in [4096, 64 << 10] {
        let (w_small, r_small) = costs(ss, 4 * MIB);
        let (w_big, r_big) = costs(ss, 256 * MIB);
        eprintln!("sector {ss}: 4 KiB overwrite allocates {w_small} (4 MiB file) / {w_big} (256 MiB file); read {r_small} / {r_big}");
        assert_eq!((r_small, r_big), (0, 0), "the read path allocates nothing");
        // Table nodes, versions and retired lists come from this thread's
        // spares, pages from the pool: nothing from the heap, whatever the
        // file's size.
        assert_eq!((w_small, w_big), (0, 0), "an uncontended 4 KiB overwrite allocated");
    }
}
