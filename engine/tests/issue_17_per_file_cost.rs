//! Issue 17, item 3: what one small file costs the engine's heap, all-in
//! (node, version, directory entry, inline data, inode-map slot), counted by
//! a global allocator around the system one. The bench with RSS is
//! `benches/src/bin/per_file.rs` ("Per-file memory" in docs/BENCHMARKS.md);
//! this pins the heap bytes so a regression shows up in `cargo test`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use engine::{Config, Engine, ROOT};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments;
// the counter only adds up sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded (the caller's contract).
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE_BYTES.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded (the caller's contract).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: forwarded (the caller's contract).
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE_BYTES.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes requested per file for `n` files of `size` bytes, 1,000 per
/// directory.
fn per_file(n: u64, size: usize) -> f64 {
    let e = Engine::new(Config { max_inodes: 2 * n + 16, ..Config::default() }).unwrap();
    let dirs: Vec<_> =
        (0..n.div_ceil(1000)).map(|d| e.mkdir(ROOT, format!("d{d}").as_bytes(), 0o755, 0, 0).unwrap().ino).collect();
    let body = vec![7u8; size];
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for i in 0..n {
        let ino = e.create(dirs[(i / 1000) as usize], format!("file{i:06}.o").as_bytes(), 0o644, 0, 0).unwrap().ino;
        if size > 0 {
            e.write(ino, 0, &body).unwrap();
        }
    }
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    (after - before) as f64 / n as f64
}

/// The tests of this file one at a time: they read one global counter.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn small_files_cost_what_the_bench_says() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // At 200,000 files (the bench): 251 and 371 bytes requested (glibc
    // chunks and RSS: 267 and 395; issue 17's goals 300 and 400); a little
    // more here, at 20,000 (254 and 374). Before issue 17's work: 632 and
    // 780. 16 bytes more in any of a file's blocks fails this.
    let empty = per_file(20_000, 0);
    let hundred = per_file(20_000, 100);
    eprintln!("heap bytes per file: empty {empty:.0}, 100 bytes {hundred:.0}");
    assert!(empty <= 268.0, "an empty file costs {empty:.0} heap bytes");
    assert!(hundred <= 388.0, "a 100-byte file costs {hundred:.0} heap bytes");
}

/// Memory follows use for metadata too: after many files are created and
/// deleted, `Engine::compact` (the mount calls it each second) gives back
/// the inode map's emptied table. Without it, 300,000 files created and
/// deleted left ~5 MB of heap with one file on the disk (a probe: 2.9 MB
/// to 15 MB of heap at idle over a session).
#[test]
fn deletes_give_back_the_inode_maps_table() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let e = Engine::new(Config { max_inodes: 200_000, ..Config::default() }).unwrap();
    assert!(!e.compact(), "nothing to give back yet");
    let d = e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino;
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for i in 0..100_000u32 {
        let ino = e.create(d, format!("f{i}").as_bytes(), 0o644, 0, 0).unwrap().ino;
        e.forget(ino, 1);
    }
    for i in 0..100_000u32 {
        e.unlink(d, format!("f{i}").as_bytes()).unwrap();
    }
    let deleted = LIVE_BYTES.load(Ordering::Relaxed) - before;
    assert!(e.compact(), "a map emptied of 100,000 inodes is sparse");
    let compacted = LIVE_BYTES.load(Ordering::Relaxed) - before;
    eprintln!("heap left after deleting 100,000 files: {deleted} bytes, {compacted} after compact");
    assert!(deleted > 500_000, "the emptied table was {deleted} bytes (expected to be kept until compact)");
    assert!(compacted < 64 << 10, "{compacted} bytes kept after compact");
    assert!(!e.compact(), "compact twice: nothing left to give back");
}
