//! Overwrites of a 1 GiB file already written (issue 18), against the same
//! run's `copy_from_slice` into owned memory (`memcpy`), the contiguous-buffer
//! baseline (`vecfs`) and the single-lock baseline (`mutexfs`).
//!
//! * `overwrite/<row>/<write>`: writes of 4 KiB, 64 KiB and 1 MiB at random
//!   offsets aligned to the write size, with 4K, 16K, 64K and 256K sectors;
//! * `seq_1M/sectorfs_<sector>_overwrite`: 1 MiB writes walking the file in
//!   order, and `_append`: 1 MiB appends to a new file up to 256 MiB (then
//!   removed), with 4K and 64K sectors;
//! * `read_4K/<sector>`: 4 KiB reads at random aligned offsets;
//! * `read_with/<row>/<size>`: 4 KiB and 1 MiB reads at random aligned
//!   offsets, `read` into a buffer (`read_<sector>`) against the zero-copy
//!   `read_with` that only sums the slice lengths (`read_with_<sector>`),
//!   with 4K and 64K sectors, and `memcpy` of the same size;
//! * `two_files_4K`: two threads, each overwriting its own 64 MiB file with
//!   4 KiB random writes (64K sectors), time per write per thread, beside
//!   `one_file_4K`, the same on one thread (scaling = 2 × one / two), and
//!   the machine's own scaling on the same pattern: `memcpy_one`/`memcpy_two`
//!   copy 4 KiB to random offsets of a 64 MiB buffer each thread owns;
//!   `read_one`/`read_two_same`: 4 KiB random reads of one 64 MiB file from
//!   one thread and from two at once (readers of one file share its
//!   published word: the cost of the version count under contention);
//! * `page/<row>`: the page size (the unit of copy-on-write inside a 64 KiB
//!   sector) that issue 18 chose, against larger ones: 4 KiB random
//!   overwrites, 1 MiB sequential overwrites and 4 KiB random reads with
//!   4K (the default), 16K and 64K pages (64K: the whole sector, as before
//!   issue 18's pages).
//!
//! The offsets come from a fixed xorshift sequence, the same for every row.
//! Criterion reports time per write (`iter` is one write); the table in
//! `docs/BENCHMARKS.md` ("Engine: overwrite") is these medians.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sectorfs_benches::{BenchFs, Buf, EngineFs, MutexFs, Offsets, VecFs};
use std::hint::black_box;
use std::time::{Duration, Instant};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const FILE: u64 = GIB;

/// A new file of `size` bytes, all written. The last MiB goes first, so
/// `vecfs` grows once (filling it in order would copy ~512 GiB).
fn filled(fs: &dyn BenchFs, name: &str, size: u64) -> u64 {
    let id = fs.create(name);
    let chunk = Buf::new(MIB as usize, 0x5A);
    fs.write(id, size - MIB, &chunk);
    let mut off = 0;
    while off < size - MIB {
        fs.write(id, off, &chunk);
        off += MIB;
    }
    id
}

fn engine(ss: usize) -> EngineFs {
    EngineFs::new(FILE + 256 * MIB, ss)
}

/// An engine with one written 1 GiB file of 64 KiB sectors in pages of
/// `page` bytes.
fn paged_file(page: u64) -> (EngineFs, u64) {
    let fs = EngineFs::with_page(FILE + 256 * MIB, 64 << 10, page as usize);
    let id = filled(&fs, "f", FILE);
    (fs, id)
}

/// The owned buffer `memcpy` rows copy into (made on first use).
fn memory() -> Buf {
    Buf::new(FILE as usize, 0x5A)
}

/// An engine with one written 1 GiB file (made on first use).
fn engine_file(ss: u64) -> (EngineFs, u64) {
    let fs = engine(ss as usize);
    let id = filled(&fs, "f", FILE);
    (fs, id)
}

// Every row makes its file system inside its closure, on first use, so a
// filtered run (`cargo bench --bench overwrite -- NAME`) fills only what it
// measures; each is dropped after its row.
fn overwrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("overwrite");
    g.sample_size(20);
    for ws in [4 * KIB, 64 * KIB, MIB] {
        let data = Buf::new(ws as usize, 0xC3);
        let label = format!("{}K", ws / KIB);
        let mut mem = None;
        let mut o = Offsets::new(FILE, ws);
        g.bench_function(BenchmarkId::new("memcpy", &label), |b| {
            let mem = mem.get_or_insert_with(memory);
            b.iter(|| {
                let off = o.pick() as usize;
                mem[off..off + ws as usize].copy_from_slice(black_box(&data));
            })
        });
        drop(mem);
        for ss in [4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB] {
            let mut st = None;
            let mut o = Offsets::new(FILE, ws);
            g.bench_function(BenchmarkId::new(format!("sectorfs_{}K", ss / KIB), &label), |b| {
                let (fs, id) = st.get_or_insert_with(|| engine_file(ss));
                b.iter(|| fs.write(*id, o.pick(), black_box(&data)))
            });
        }
        for name in ["vecfs", "mutexfs"] {
            let mut st: Option<(Box<dyn BenchFs>, u64)> = None;
            let mut o = Offsets::new(FILE, ws);
            g.bench_function(BenchmarkId::new(name, &label), |b| {
                let (fs, id) = st.get_or_insert_with(|| {
                    let fs: Box<dyn BenchFs> =
                        if name == "vecfs" { Box::new(VecFs::default()) } else { Box::new(MutexFs::default()) };
                    let id = filled(&*fs, "f", FILE);
                    (fs, id)
                });
                b.iter(|| fs.write(*id, o.pick(), black_box(&data)))
            });
        }
    }
    g.finish();
}

fn sequential(c: &mut Criterion) {
    let mut g = c.benchmark_group("seq_1M");
    g.sample_size(20);
    let data = Buf::new(MIB as usize, 0xC3);
    let mut mem = None;
    let mut off = 0u64;
    g.bench_function("memcpy", |b| {
        let mem = mem.get_or_insert_with(memory);
        b.iter(|| {
            let o = off as usize;
            mem[o..o + MIB as usize].copy_from_slice(black_box(&data));
            off = (off + MIB) % FILE;
        })
    });
    drop(mem);
    for ss in [4 * KIB, 64 * KIB] {
        let mut st = None;
        let mut off = 0u64;
        g.bench_function(format!("sectorfs_{}K_overwrite", ss / KIB), |b| {
            let (fs, id) = st.get_or_insert_with(|| engine_file(ss));
            b.iter(|| {
                fs.write(*id, off, black_box(&data));
                off = (off + MIB) % FILE;
            })
        });
        drop(st);
        // Appends to a new file, 256 MiB per file (the memory is warm: the
        // engine reuses the sectors of the file removed before).
        let per_file = 256 * MIB;
        let mut st = None;
        g.bench_function(format!("sectorfs_{}K_append", ss / KIB), |b| {
            let (fs, cur) = st.get_or_insert_with(|| {
                let fs = engine(ss as usize);
                let id = fs.create("a");
                (fs, (id, 0u64))
            });
            b.iter(|| {
                if cur.1 == per_file {
                    fs.remove("a", cur.0);
                    *cur = (fs.create("a"), 0);
                }
                fs.write(cur.0, cur.1, black_box(&data));
                cur.1 += MIB;
            })
        });
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_4K");
    g.sample_size(20);
    let mut buf = Buf::new(4 * KIB as usize, 0);
    let mut mem = None;
    let mut o = Offsets::new(FILE, 4 * KIB);
    g.bench_function("memcpy", |b| {
        let mem = mem.get_or_insert_with(memory);
        b.iter(|| {
            let off = o.pick() as usize;
            buf.copy_from_slice(&mem[off..off + 4 * KIB as usize]);
            black_box(&buf);
        })
    });
    drop(mem);
    for ss in [4 * KIB, 64 * KIB] {
        let mut st = None;
        let mut o = Offsets::new(FILE, 4 * KIB);
        g.bench_function(format!("sectorfs_{}K", ss / KIB), |b| {
            let (fs, id) = st.get_or_insert_with(|| engine_file(ss));
            b.iter(|| fs.read(*id, o.pick(), black_box(&mut buf)))
        });
    }
    g.finish();
}

/// Zero-copy reads (issue 16): `read` into a buffer against `read_with`,
/// whose `f` only sums the slice lengths (a frontend hands the slices to
/// `writev`, so the copy moves into the kernel's), at random offsets aligned
/// to the read size, with 4K and 64K sectors; `memcpy` copies the same size
/// out of owned memory.
fn read_vectored(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_with");
    g.sample_size(20);
    let sizes = [4 * KIB, MIB];
    let mut mem = None;
    for rs in sizes {
        let mut buf = Buf::new(rs as usize, 0);
        let mut o = Offsets::new(FILE, rs);
        g.bench_function(BenchmarkId::new("memcpy", format!("{}K", rs / KIB)), |b| {
            let mem = mem.get_or_insert_with(memory);
            b.iter(|| {
                let off = o.pick() as usize;
                buf.copy_from_slice(&mem[off..off + rs as usize]);
                black_box(&buf);
            })
        });
    }
    drop(mem);
    for ss in [4 * KIB, 64 * KIB] {
        let mut st = None;
        for rs in sizes {
            let label = format!("{}K", rs / KIB);
            let mut buf = Buf::new(rs as usize, 0);
            let mut o = Offsets::new(FILE, rs);
            g.bench_function(BenchmarkId::new(format!("read_{}K", ss / KIB), &label), |b| {
                let (fs, id) = st.get_or_insert_with(|| engine_file(ss));
                b.iter(|| fs.read(*id, o.pick(), black_box(&mut buf)))
            });
            let mut o = Offsets::new(FILE, rs);
            g.bench_function(BenchmarkId::new(format!("read_with_{}K", ss / KIB), &label), |b| {
                let (fs, id) = st.get_or_insert_with(|| engine_file(ss));
                b.iter(|| {
                    let n = fs.0.read_with(*id, o.pick(), rs as usize, |s| s.iter().map(|p| p.len()).sum::<usize>());
                    black_box(n.expect("read_with"))
                })
            });
        }
    }
    g.finish();
}

/// Runs `op(state, offset)` `iters` times on one thread per `(seed, state)`,
/// at random 4 KiB-aligned offsets of 64 MiB (the sequence xored with
/// `seed`); returns the time until all are done (per operation per thread:
/// divided by `iters`).
fn timed_threads<T: Send>(states: Vec<(u64, T)>, iters: u64, op: impl Fn(&mut T, u64) + Sync) -> Duration {
    let op = &op;
    let start = Instant::now();
    std::thread::scope(|s| {
        for (seed, mut st) in states {
            s.spawn(move || {
                let mut o = Offsets::new(64 * MIB, 4 * KIB);
                o.x ^= seed;
                for _ in 0..iters {
                    op(&mut st, o.pick());
                }
            });
        }
    });
    start.elapsed()
}

/// Each thread overwrites its own 64 MiB file (one per id).
fn per_thread(fs: &EngineFs, ids: &[u64], iters: u64) -> Duration {
    let data = Buf::new(4 * KIB as usize, 0xC3);
    timed_threads(ids.iter().map(|&id| (id, id)).collect(), iters, |id, off| {
        fs.write(*id, off, &data);
    })
}

/// `threads` threads each read 4 KiB at random offsets of the same 64 MiB
/// file.
fn per_thread_read(fs: &EngineFs, id: u64, threads: u64, iters: u64) -> Duration {
    let bufs = (0..threads).map(|t| (t + 1, Buf::new(4 * KIB as usize, 0))).collect();
    timed_threads(bufs, iters, |buf, off| {
        fs.read(id, off, buf);
    })
}

/// The same pattern as `per_thread` with `copy_from_slice` into a 64 MiB
/// buffer per thread: what the machine's two vCPUs scale to on this work.
fn per_thread_memcpy(mems: &mut [Buf], iters: u64) -> Duration {
    let data = Buf::new(4 * KIB as usize, 0xC3);
    let mems = mems.iter_mut().enumerate().map(|(i, m)| (i as u64 + 1, m)).collect();
    timed_threads(mems, iters, |mem: &mut &mut Buf, off| {
        let at = off as usize;
        mem[at..at + data.len()].copy_from_slice(&data);
        black_box(&mem[at]);
    })
}

fn two_files(c: &mut Criterion) {
    let mut g = c.benchmark_group("threads_4K");
    g.sample_size(20);
    let mut st = None;
    let mut setup = || {
        let fs = engine(64 << 10);
        let ids = [filled(&fs, "a", 64 * MIB), filled(&fs, "b", 64 * MIB)];
        (fs, ids)
    };
    g.bench_function("one_file_4K", |b| {
        let (fs, ids) = st.get_or_insert_with(&mut setup);
        b.iter_custom(|n| per_thread(fs, &ids[..1], n))
    });
    g.bench_function("two_files_4K", |b| {
        let (fs, ids) = st.get_or_insert_with(&mut setup);
        b.iter_custom(|n| per_thread(fs, ids, n))
    });
    // The same, once a clone elsewhere in the file system shares pages
    // (issue 20: every free then checks the share counts).
    g.bench_function("two_files_4K_clone_elsewhere", |b| {
        let (fs, ids) = st.get_or_insert_with(&mut setup);
        if fs.0.stats().pool.shared_pages == 0 {
            let c = filled(fs, "c", 2 * MIB);
            let d = fs.0.create(engine::ROOT, b"d", 0o644, 0, 0).unwrap().ino;
            fs.0.copy_file_range(c, 0, d, 0, MIB).unwrap();
            assert!(fs.0.stats().pool.shared_pages > 0);
        }
        b.iter_custom(|n| per_thread(fs, ids, n))
    });
    g.bench_function("read_one", |b| {
        let (fs, ids) = st.get_or_insert_with(&mut setup);
        b.iter_custom(|n| per_thread_read(fs, ids[0], 1, n))
    });
    g.bench_function("read_two_same", |b| {
        let (fs, ids) = st.get_or_insert_with(&mut setup);
        b.iter_custom(|n| per_thread_read(fs, ids[0], 2, n))
    });
    drop(st);
    let mut mems = [Buf::new(64 * MIB as usize, 0x5A), Buf::new(64 * MIB as usize, 0x5A)];
    g.bench_function("memcpy_one", |b| b.iter_custom(|n| per_thread_memcpy(&mut mems[..1], n)));
    g.bench_function("memcpy_two", |b| b.iter_custom(|n| per_thread_memcpy(&mut mems, n)));
    g.finish();
}

/// The page size (issue 18's unit of copy-on-write), decided here: 64 KiB
/// sectors in pages of 4K (the default), 16K or 64K (one page per sector:
/// a 4 KiB overwrite copies the whole sector, as before pages).
fn page_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("page");
    g.sample_size(20);
    let small = Buf::new(4 * KIB as usize, 0xC3);
    let big = Buf::new(MIB as usize, 0xC3);
    let mut buf = Buf::new(4 * KIB as usize, 0);
    for page in [4 * KIB, 16 * KIB, 64 * KIB] {
        let p = format!("{}K", page / KIB);
        let mut st = None;
        let mut o = Offsets::new(FILE, 4 * KIB);
        g.bench_function(BenchmarkId::new("write_4K", &p), |b| {
            let (fs, id) = st.get_or_insert_with(|| paged_file(page));
            b.iter(|| fs.write(*id, o.pick(), black_box(&small)))
        });
        let mut off = 0u64;
        g.bench_function(BenchmarkId::new("seq_1M", &p), |b| {
            let (fs, id) = st.get_or_insert_with(|| paged_file(page));
            b.iter(|| {
                fs.write(*id, off, black_box(&big));
                off = (off + MIB) % FILE;
            })
        });
        let mut o = Offsets::new(FILE, 4 * KIB);
        g.bench_function(BenchmarkId::new("read_4K", &p), |b| {
            let (fs, id) = st.get_or_insert_with(|| paged_file(page));
            b.iter(|| fs.read(*id, o.pick(), black_box(&mut buf)))
        });
    }
    g.finish();
}

criterion_group!(benches, overwrite, sequential, read, read_vectored, two_files, page_size);
criterion_main!(benches);
