//! Streaming append of one file in 1 MiB writes, no preallocation, to 64 MiB,
//! 1 GiB and 4 GiB: the seed's headline (growth never copies), so the time per
//! GiB must not grow with the file size. Reported per size for:
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
//! Criterion prints time per iteration and throughput (GiB/s); per-GiB time is
//! 1 / throughput. `scripts/bench-append-report` turns the estimates into
//! ms per GiB and the 4 GiB / 64 MiB ratio.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sectorfs_benches::{append_file, EngineFs, MutexFs, VecFs};
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
                let fs = EngineFs::new(size + 64 * MIB, 64 << 10);
                append_file(&fs, "f", size, &chunk);
            })
        });
        let warm = EngineFs::new(size + 64 * MIB, 64 << 10);
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

criterion_group!(benches, append);
criterion_main!(benches);
