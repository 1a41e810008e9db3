//! Multi-threaded stress: many threads on shared names and shared files,
//! then invariants (link counts match the tree, private data intact, no torn
//! reads, memory back to zero). Tests are serialized behind one lock
//! (arc-swap's `tests/stress.rs`) so each gets the machine to itself; sizes
//! are bounded so each finishes in well under a few seconds in release.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};

use engine::rename_flags::{EXCHANGE, NOREPLACE};
use engine::{Engine, Error, FileType, Ino, ROOT};
use support::*;

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

const THREADS: usize = 4;

/// A small xorshift generator, one per thread (deterministic per seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every block of `data` (the last may be partial only if `partial_ok`) is
/// one repeated byte.
fn assert_uniform_blocks(data: &[u8], block: usize, what: &str) {
    for (i, b) in data.chunks(block).enumerate() {
        assert!(b.iter().all(|&x| x == b[0]), "{what}: block {i} is torn: {:?}..", &b[..b.len().min(16)]);
    }
}

/// Writers overwrite whole blocks (straddling sector boundaries) with one
/// repeated byte; readers must only ever see uniform blocks.
#[test]
fn readers_never_see_torn_writes() {
    let _g = lock();
    for (ss, block, blocks) in [(4096usize, 3000usize, 24usize), (65536, 10_000, 16), (16, 40, 64)] {
        let e = Arc::new(tiny(ss, 256 << 20, 0));
        let f = put(&e, ROOT, b"f", &vec![0u8; block * blocks]);
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let mut hs = Vec::new();
        for t in 0..2u64 {
            let (e, stop, reads) = (Arc::clone(&e), Arc::clone(&stop), Arc::clone(&reads));
            hs.push(std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9 + t);
                let mut buf = vec![0u8; block * blocks];
                while !stop.load(Ordering::Relaxed) {
                    if rng.below(2) == 0 {
                        let n = e.read(f, 0, &mut buf).unwrap();
                        assert_eq!(n, block * blocks, "the size never changes");
                        assert_uniform_blocks(&buf, block, "whole-file read");
                    } else {
                        let k = rng.below(blocks as u64) as usize;
                        let n = e.read(f, (k * block) as u64, &mut buf[..block]).unwrap();
                        assert_eq!(n, block);
                        assert_uniform_blocks(&buf[..block], block, "block read");
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let writers: Vec<_> = (0..2u64)
            .map(|t| {
                let e = Arc::clone(&e);
                std::thread::spawn(move || {
                    let mut rng = Rng(0x1234_5678 + t);
                    for i in 0..10_000u64 {
                        let k = rng.below(blocks as u64) as usize;
                        let v = (1 + t * 100 + i % 97) as u8;
                        e.write(f, (k * block) as u64, &vec![v; block]).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        // Let readers run at least a little after the writers, then stop.
        let seen = reads.load(Ordering::Relaxed);
        while reads.load(Ordering::Relaxed) < seen + 10 {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().unwrap();
        }
        assert_uniform_blocks(&read_all(&e, f), block, "final");
        teardown(&e);
    }
}

/// Concurrent appends of whole blocks: none is lost or torn, and readers
/// only ever see a whole number of uniform blocks.
#[test]
fn concurrent_appends_are_atomic() {
    let _g = lock();
    for ss in [16usize, 4096] {
        let block = 100usize;
        let e = Arc::new(tiny(ss, 256 << 20, 64));
        let f = mkfile(&e, ROOT, b"log");
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (e, done) = (Arc::clone(&e), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                while !done.load(Ordering::Relaxed) {
                    let n = e.read(f, 0, &mut buf).unwrap();
                    assert_eq!(n % block, 0, "a partial append is visible");
                    assert_uniform_blocks(&buf[..n], block, "append reader");
                }
            })
        };
        let per = 1000usize;
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let e = Arc::clone(&e);
                std::thread::spawn(move || {
                    let mut offs = Vec::with_capacity(per);
                    for _ in 0..per {
                        offs.push(e.append(f, &[t as u8 + 1; 100]).unwrap());
                    }
                    offs
                })
            })
            .collect();
        let mut offsets = HashSet::new();
        for h in hs {
            for o in h.join().unwrap() {
                assert_eq!(o % block as u64, 0);
                assert!(offsets.insert(o), "two appends at one offset");
            }
        }
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        let data = read_all(&e, f);
        assert_eq!(data.len(), THREADS * per * block);
        assert_uniform_blocks(&data, block, "final log");
        let mut counts = HashMap::new();
        for b in data.chunks(block) {
            *counts.entry(b[0]).or_insert(0usize) += 1;
        }
        for t in 0..THREADS {
            assert_eq!(counts.get(&(t as u8 + 1)), Some(&per), "appends of thread {t}");
        }
        teardown(&e);
    }
}

/// What one churn thread may legitimately be told by the engine.
fn expected(r: engine::Result<()>) {
    if let Err(e) = r {
        assert!(
            matches!(
                e,
                Error::NotFound
                    | Error::Exists
                    | Error::NotEmpty
                    | Error::IsDir
                    | Error::NotDir
                    | Error::WouldLoop
                    | Error::Permission
            ),
            "unexpected error {e:?}"
        );
    }
}

/// Walks the tree from the root, checking that every directory is reached
/// once, `..` is its parent, and every link count matches the names found.
/// Returns the number of distinct inodes reached (the root included).
fn check_tree(e: &Engine) -> usize {
    let mut names_of: HashMap<Ino, u32> = HashMap::new();
    let mut dirs = vec![(ROOT, ROOT)];
    let mut seen_dirs = HashSet::new();
    let mut subdirs: HashMap<Ino, u32> = HashMap::new();
    while let Some((dir, parent)) = dirs.pop() {
        assert!(seen_dirs.insert(dir), "directory {dir} reached twice: a loop");
        let mut dots = Vec::new();
        e.readdir(dir, 0, |d| {
            if d.name == b"." || d.name == b".." {
                dots.push(d.ino);
            }
            true
        })
        .unwrap();
        assert_eq!(dots, vec![dir, parent], "`.` and `..` of {dir}");
        for (_, ino, kind) in entries(e, dir) {
            assert_eq!(e.getattr(ino).unwrap().kind, kind, "entry kind of {ino}");
            if kind == FileType::Directory {
                *subdirs.entry(dir).or_default() += 1;
                dirs.push((ino, dir));
            } else {
                *names_of.entry(ino).or_default() += 1;
            }
        }
    }
    for &d in &seen_dirs {
        assert_eq!(e.getattr(d).unwrap().nlink, 2 + subdirs.get(&d).copied().unwrap_or(0), "nlink of dir {d}");
    }
    for (&ino, &n) in &names_of {
        assert_eq!(e.getattr(ino).unwrap().nlink, n, "nlink of {ino}");
    }
    // Every node, and every name of a file beyond its first (as tmpfs).
    seen_dirs.len() + names_of.values().map(|&n| n as usize).sum::<usize>()
}

/// Threads create, link, rename (all flags, across directories, directories
/// included), unlink, rmdir, list and look up a few shared names, while each
/// also keeps a private file whose content it checks. Afterwards the tree is
/// consistent, private data is intact, and deleting everything returns all
/// memory.
#[test]
fn namespace_churn_on_shared_names() {
    let _g = lock();
    let e = Arc::new(tiny(4096, 512 << 20, 256));
    let tops: Vec<Ino> = (0..3).map(|i| mkdir(&e, ROOT, format!("D{i}").as_bytes())).collect();
    let names: Vec<Vec<u8>> = (0..6).map(|i| format!("n{i}").into_bytes()).collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let hs: Vec<_> = (0..THREADS)
        .map(|t| {
            let (e, tops, names, barrier) = (Arc::clone(&e), tops.clone(), names.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut rng = Rng(0xDEAD_BEEF ^ (t as u64 * 0x1_0000_0001));
                let mine = format!("private{t}").into_bytes();
                let home = tops[t % tops.len()];
                let p = mkfile(&e, home, &mine);
                let mut model: Vec<u8> = Vec::new();
                barrier.wait();
                // Picks a parent: a top directory, or a directory found under one.
                let parent = |rng: &mut Rng| -> Ino {
                    let top = tops[rng.below(tops.len() as u64) as usize];
                    if rng.below(3) == 0 {
                        let n = &names[rng.below(names.len() as u64) as usize];
                        if let Ok(a) = e.lookup(top, n) {
                            e.forget(a.ino, 1);
                            if a.kind == FileType::Directory {
                                return a.ino;
                            }
                        }
                    }
                    top
                };
                for i in 0..20_000u32 {
                    let d1 = parent(&mut rng);
                    let n1 = names[rng.below(names.len() as u64) as usize].clone();
                    match rng.below(12) {
                        0 | 1 => match e.create(d1, &n1, 0o644, 0, 0) {
                            Ok(a) => {
                                expected(e.write(a.ino, 0, &[t as u8; 5000]).map(|_| ()));
                                e.forget(a.ino, 1);
                            }
                            Err(err) => expected(Err(err)),
                        },
                        2 => match e.mkdir(d1, &n1, 0o755, 0, 0) {
                            Ok(a) => e.forget(a.ino, 1),
                            Err(err) => expected(Err(err)),
                        },
                        3 => expected(e.unlink(d1, &n1)),
                        4 => expected(e.rmdir(d1, &n1)),
                        5 | 6 => {
                            let d2 = parent(&mut rng);
                            let n2 = &names[rng.below(names.len() as u64) as usize];
                            let flags = [0, 0, NOREPLACE, EXCHANGE][rng.below(4) as usize];
                            expected(e.rename(d1, &n1, d2, n2, flags));
                        }
                        7 => {
                            if let Ok(a) = e.lookup(d1, &n1) {
                                let d2 = parent(&mut rng);
                                let n2 = &names[rng.below(names.len() as u64) as usize];
                                match e.link(a.ino, d2, n2) {
                                    Ok(l) => e.forget(l.ino, 1),
                                    Err(err) => expected(Err(err)),
                                }
                                e.forget(a.ino, 1);
                            }
                        }
                        8 => {
                            let mut taken = Vec::new();
                            expected(e.readdir_plus(d1, 0, |x, _| {
                                if x.name != b"." && x.name != b".." {
                                    taken.push(x.ino);
                                }
                                true
                            }));
                            for ino in taken {
                                e.forget(ino, 1);
                            }
                        }
                        9 => {
                            if let Ok(a) = e.lookup(d1, &n1) {
                                if a.kind == FileType::Regular {
                                    let mut buf = vec![0u8; 6000];
                                    let n = e.read(a.ino, 0, &mut buf).unwrap();
                                    assert_uniform_blocks(&buf[..n], 5000, "shared file");
                                }
                                e.forget(a.ino, 1);
                            }
                        }
                        _ => {
                            // The private file: only this thread writes it.
                            let off = rng.below(20_000) as usize;
                            let len = rng.below(9000) as usize;
                            let v = (i % 251) as u8;
                            if rng.below(8) == 0 {
                                truncate(&e, p, off as u64).unwrap();
                                model.resize(off, 0);
                            } else {
                                e.write(p, off as u64, &vec![v; len]).unwrap();
                                if len > 0 {
                                    if model.len() < off + len {
                                        model.resize(off + len, 0);
                                    }
                                    model[off..off + len].fill(v);
                                }
                            }
                            assert_eq!(read_all(&e, p), model, "private file of thread {t}");
                        }
                    }
                }
                (t, home, mine, p, model)
            })
        })
        .collect();
    let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let inodes = check_tree(&e);
    assert_eq!(e.stats().inodes as usize, inodes, "no inode is held by anything but a name");
    for (t, home, mine, p, model) in results {
        assert_eq!(peek(&e, home, &mine).unwrap().ino, p);
        assert_eq!(read_all(&e, p), model, "private file of thread {t} at the end");
    }
    teardown(&e);
}

/// Files are opened, read, unlinked and released by different threads:
/// an open file stays readable, and memory returns once all is closed.
#[test]
fn orphans_across_threads() {
    let _g = lock();
    let e = Arc::new(tiny(4096, 512 << 20, 0));
    let hs: Vec<_> = (0..THREADS)
        .map(|t| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || {
                let mut rng = Rng(77 + t as u64);
                for i in 0..2000u32 {
                    let name = format!("o{}", rng.below(4));
                    let v = (t * 50 + (i as usize % 50)) as u8;
                    match e.create(ROOT, name.as_bytes(), 0o644, 0, 0) {
                        Ok(a) => {
                            e.write(a.ino, 0, &vec![v; 20_000]).unwrap();
                            e.open(a.ino).unwrap();
                            e.forget(a.ino, 1);
                            // Someone may unlink or replace it now; our handle keeps it.
                            for _ in 0..3 {
                                let mut buf = vec![0u8; 20_000];
                                assert_eq!(e.read(a.ino, 0, &mut buf).unwrap(), 20_000);
                                assert!(buf.iter().all(|&b| b == v), "open file changed under us");
                            }
                            e.release(a.ino);
                        }
                        Err(err) => assert_eq!(err, Error::Exists),
                    }
                    match rng.below(3) {
                        0 => expected(e.unlink(ROOT, name.as_bytes())),
                        1 => {
                            expected(e.rename(ROOT, name.as_bytes(), ROOT, format!("o{}", rng.below(4)).as_bytes(), 0))
                        }
                        _ => {}
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    check_tree(&e);
    teardown(&e);
}
