//! Per-file memory (issue 17, item 3): what one small file costs the
//! process, all-in (node, versions, name, directory entry, inline data,
//! inode-map slot), measured against the process's RSS and against the
//! allocator, not only against structure sizes.
//!
//! For each file size (`--size BYTES`, repeatable; default 100 and 0) it
//! runs one child process (a fresh heap each, so one run's freed memory does
//! not flatter the next), which:
//! 1. makes an engine and `--files N / --per-dir M` directories under the
//!    root (default 200,000 files, 1,000 per directory: a build tree);
//! 2. reads RSS (`/proc/self/statm`) and the allocator counters;
//! 3. creates the N files through `Engine::create` and, if the size is not
//!    zero, one `Engine::write` of that many bytes each;
//! 4. reads them again, and prints the deltas divided by N.
//!
//! The allocator counters come from a counting global allocator around the
//! system allocator (or mimalloc, built with `--features mimalloc`): bytes
//! requested, and bytes of the blocks the allocator handed out for them
//! (glibc: `malloc_usable_size` + 8 bytes of chunk header; mimalloc:
//! `mi_usable_size`, it has no per-block header), live at the moment of
//! reading. RSS also sees what the allocator keeps but does not count
//! (fragmentation, arena slack, freed-but-kept memory).
//!
//! It ends with the sizes of the per-inode structures (`Engine::mem_layout`).
//!
//! Usage: `per_file [--files N] [--per-dir M] [--size BYTES]...`

use std::alloc::{GlobalAlloc, Layout};
use std::process::Command;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use engine::{Config, Engine, ROOT};

/// The allocator under test, counting live bytes (requested and held) and
/// live allocations.
struct Counting;

#[cfg(not(feature = "mimalloc"))]
use std::alloc::System as Base;
#[cfg(not(feature = "mimalloc"))]
const ALLOCATOR: &str = "system (glibc)";

#[cfg(feature = "mimalloc")]
use mimalloc::MiMalloc as Base;
#[cfg(feature = "mimalloc")]
const ALLOCATOR: &str = "mimalloc";

static REQUESTED: AtomicIsize = AtomicIsize::new(0);
static HELD: AtomicIsize = AtomicIsize::new(0);
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Bytes the allocator holds for a live block at `p`.
#[cfg(feature = "mimalloc")]
fn held(p: *mut u8) -> isize {
    // SAFETY: `p` is a live block of mimalloc (just returned by it, or about
    // to be given back to it).
    (unsafe { Base.usable_size(p) }) as isize
}

/// Bytes glibc holds for a live block at `p` (its chunk: usable + header).
#[cfg(not(feature = "mimalloc"))]
fn held(p: *mut u8) -> isize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `p` is a live block of the system allocator (just
        // returned by it, or about to be given back to it).
        (unsafe { libc::malloc_usable_size(p.cast()) } + 8) as isize
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = p;
        0
    }
}

fn count(p: *mut u8, size: usize, sign: isize) {
    if p.is_null() {
        return;
    }
    REQUESTED.fetch_add(sign * size as isize, Ordering::Relaxed);
    HELD.fetch_add(sign * held(p), Ordering::Relaxed);
    LIVE.fetch_add(sign, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `Base` with the caller's arguments;
// the counters only observe the blocks (`held` reads a live block's size).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout (the caller's contract).
        let p = unsafe { Base.alloc(l) };
        count(p, l.size(), 1);
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { Base.alloc_zeroed(l) };
        count(p, l.size(), 1);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(p, l.size(), -1);
        // SAFETY: `p` came from `Base` with layout `l` (the caller's contract).
        unsafe { Base.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        count(p, l.size(), -1);
        // SAFETY: forwarded with the caller's arguments (the caller's contract).
        let q = unsafe { Base.realloc(p, l, new) };
        if q.is_null() {
            // The old block is still there.
            count(p, l.size(), 1);
        } else {
            count(q, new, 1);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Resident bytes of this process.
fn rss() -> isize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: isize = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    #[cfg(target_os = "linux")]
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as isize;
    #[cfg(not(target_os = "linux"))]
    let page = 4096;
    pages * page
}

#[derive(Clone, Copy)]
struct Reading {
    rss: isize,
    requested: isize,
    held: isize,
    live: isize,
}

fn read() -> Reading {
    Reading {
        rss: rss(),
        requested: REQUESTED.load(Ordering::Relaxed),
        held: HELD.load(Ordering::Relaxed),
        live: LIVE.load(Ordering::Relaxed),
    }
}

fn child(files: u64, per_dir: u64, size: usize) {
    let dirs = files.div_ceil(per_dir).max(1);
    let e = Engine::new(Config { max_bytes: 8 << 30, max_inodes: files + dirs + 16, ..Config::default() }).unwrap();
    let mut parents = Vec::with_capacity(dirs as usize);
    for d in 0..dirs {
        parents.push(e.mkdir(ROOT, format!("d{d:04}").as_bytes(), 0o755, 0, 0).unwrap().ino);
    }
    let body = vec![b'x'; size];
    let before = read();
    let t = Instant::now();
    for i in 0..files {
        // Names like a build tree's object files.
        let name = format!("file{i:06}.o");
        let ino = e.create(parents[(i / per_dir) as usize], name.as_bytes(), 0o644, 0, 0).unwrap().ino;
        if size > 0 {
            e.write(ino, 0, &body).unwrap();
        }
    }
    let took = t.elapsed();
    let after = read();
    let n = files as f64;
    let per = |a: isize, b: isize| (a - b) as f64 / n;
    println!(
        "size={size} files={files} dirs={dirs} rss_per_file={:.0} held_per_file={:.0} requested_per_file={:.0} \
         allocs_per_file={:.2} rss_before_mib={:.1} rss_after_mib={:.1} secs={:.2}",
        per(after.rss, before.rss),
        per(after.held, before.held),
        per(after.requested, before.requested),
        per(after.live, before.live),
        before.rss as f64 / (1 << 20) as f64,
        after.rss as f64 / (1 << 20) as f64,
        took.as_secs_f64(),
    );
    drop(e);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut files = 200_000u64;
    let mut per_dir = 1_000u64;
    let mut sizes = Vec::new();
    let mut child_size = None;
    while let Some(a) = args.next() {
        let mut val = |what: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--files" => files = val("--files"),
            "--per-dir" => per_dir = val("--per-dir").max(1),
            "--size" => sizes.push(val("--size") as usize),
            "--child" => child_size = Some(val("--child") as usize),
            _ => panic!("usage: per_file [--files N] [--per-dir M] [--size BYTES]..."),
        }
    }
    if let Some(size) = child_size {
        child(files, per_dir, size);
        return;
    }
    if sizes.is_empty() {
        sizes = vec![100, 0];
    }
    let exe = std::env::current_exe().unwrap();
    println!("per_file: {files} files, {per_dir} per directory, one child process per size, allocator {ALLOCATOR}");
    for size in sizes {
        let out = Command::new(&exe)
            .args(["--files", &files.to_string(), "--per-dir", &per_dir.to_string(), "--child", &size.to_string()])
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
    }
    let layout: Vec<String> = Engine::mem_layout().iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("sizes (bytes): {}", layout.join(" "));
}
