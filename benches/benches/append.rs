//! Streaming append of one file in 1 MiB writes, no preallocation, to 64 MiB,
//! 1 GiB and 4 GiB: the seed's headline (growth never copies), so the time per
//! GiB must not grow with the file size. Reported per size (default sector
//! size) for:
//!
//! * `cold`: a new engine each iteration (fresh memory: first touches);
//! * `warm`: one engine, the file deleted after each iteration, so its sectors
//!   are reused (memory already owned);
//! * `fresh_memory_fill`: filling fresh memory of the same size with no file
//!   system (the VM's first-touch floor that `cold` cannot beat);
//! * the baselines in the same run: `mutexfs` (Vec doubling) at every size,
//!   `vecfs` (exact growth, the original memfs) at 64 MiB only (it is
//!   quadratic: at 1 GiB it copies ~512 GiB).
//!
//! `sector_size/<row>/<sector>` is the sweep that chose the default sector
//! size (issue 17): 1 GiB appended in 1 MiB writes, cold and warm, and read
//! back in 1 MiB reads, with 4K, 16K and 64K sectors (the other axes of the
//! sweep, 4 KiB random overwrite and a source tree's footprint, are the
//! `overwrite` bench and `scripts/bench-sector-size`).
//!
//! Criterion prints time per iteration and throughput (GiB/s); per-GiB time is
//! 1 / throughput. `scripts/bench-append-report` turns the estimates into
//! ms per GiB and the 4 GiB / 64 MiB ratio.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sectorfs_benches::{append_file, BenchFs, EngineFs, MutexFs, VecFs};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn append(c: &mut Criterion) {
    let chunk = vec![0xA5u8; MIB as usize];
    let mut g = c.benchmark_group("append_1MiB_writes");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(8));
    for &size in &[64 * MIB, 1024 * MIB, 4096 * MIB] {
        g.throughput(Throughput::Bytes(size));
        let label = format!("{}MiB", size / MIB);
        g.bench_with_input(BenchmarkId::new("sectorfs_cold", &label), &size, |b, &size| {
            b.iter(|| {
                let fs = EngineFs::new(size + 64 * MIB, engine::DEFAULT_SECTOR_SIZE);
                append_file(&fs, "f", size, &chunk);
            })
        });
        let warm = EngineFs::new(size + 64 * MIB, engine::DEFAULT_SECTOR_SIZE);
        append_file(&warm, "f", size, &chunk);
        g.bench_with_input(BenchmarkId::new("sectorfs_warm", &label), &size, |b, &size| {
            b.iter(|| append_file(&warm, "f", size, &chunk))
        });
        drop(warm);
        g.bench_with_input(BenchmarkId::new("mutexfs", &label), &size, |b, &size| {
            b.iter(|| append_file(&MutexFs::default(), "f", size, &chunk))
        });
        // The floor for cold writes on this VM: fill fresh memory of the
        // same size in 1 MiB copies (no file system at all).
        g.bench_with_input(BenchmarkId::new("fresh_memory_fill", &label), &size, |b, &size| {
            b.iter(|| {
                let mut v: Vec<u8> = Vec::with_capacity(size as usize);
                while (v.len() as u64) < size {
                    v.extend_from_slice(&chunk);
                }
                std::hint::black_box(&v);
            })
        });
        if size <= 64 * MIB {
            g.bench_with_input(BenchmarkId::new("vecfs", &label), &size, |b, &size| {
                b.iter(|| append_file(&VecFs::default(), "f", size, &chunk))
            });
        }
    }
    g.finish();
}

fn sector_size(c: &mut Criterion) {
    let chunk = vec![0xA5u8; MIB as usize];
    let size = 1024 * MIB;
    let mut g = c.benchmark_group("sector_size");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(size));
    for ss in [4usize << 10, 16 << 10, 64 << 10] {
        let label = format!("{}K", ss >> 10);
        g.bench_with_input(BenchmarkId::new("append_cold", &label), &ss, |b, &ss| {
            b.iter(|| {
                let fs = EngineFs::new(size + 64 * MIB, ss);
                append_file(&fs, "f", size, &chunk);
            })
        });
        // Made on first use, so a filtered run fills only what it measures.
        let mut st = None;
        let setup = |ss| {
            // Room for the file read and the one appended beside it.
            let fs = EngineFs::new(2 * size + 64 * MIB, ss);
            append_file(&fs, "f", size, &chunk);
            let id = fs.create("r");
            let mut off = 0;
            while off < size {
                fs.write(id, off, &chunk);
                off += MIB;
            }
            (fs, id)
        };
        g.bench_with_input(BenchmarkId::new("append_warm", &label), &ss, |b, &ss| {
            let (fs, _) = st.get_or_insert_with(|| setup(ss));
            b.iter(|| append_file(fs, "f", size, &chunk))
        });
        let mut buf = vec![0u8; MIB as usize];
        g.bench_with_input(BenchmarkId::new("read", &label), &ss, |b, &ss| {
            let (fs, id) = st.get_or_insert_with(|| setup(ss));
            b.iter(|| {
                let mut off = 0;
                while off < size {
                    fs.read(*id, off, &mut buf);
                    off += MIB;
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, append, sector_size);
criterion_main!(benches);
