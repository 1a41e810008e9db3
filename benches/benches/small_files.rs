//! Small-file churn, the build-server pattern: each thread creates files of
//! 1 KiB or 16 KiB, writes them, reads them back, and deletes them, in its own
//! slice of names in one shared directory. Run with 1 and 2 threads for the
//! engine and the single-lock baseline (`mutexfs`) in the same run; compare
//! the ratio, not the absolute times (the machine is shared and noisy).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sectorfs_benches::{BenchFs, EngineFs, MutexFs};
use std::time::Duration;

/// `--features mimalloc`: the same rows on mimalloc, to compare allocators
/// (`docs/BENCHMARKS.md`, "Allocators").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FILES: usize = 2000;

fn churn(fs: &dyn BenchFs, threads: usize, size: usize) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let data = vec![t as u8; size];
                let mut buf = vec![0u8; size];
                let names: Vec<String> = (0..FILES / threads).map(|i| format!("t{t}-{i}.o")).collect();
                let ids: Vec<u64> = names.iter().map(|n| fs.create(n)).collect();
                for &id in &ids {
                    fs.write(id, 0, &data);
                }
                for &id in &ids {
                    assert_eq!(fs.read(id, 0, &mut buf), size);
                }
                for (n, &id) in names.iter().zip(&ids) {
                    fs.remove(n, id);
                }
            });
        }
    });
}

fn small_files(c: &mut Criterion) {
    let mut g = c.benchmark_group("small_file_churn");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(FILES as u64));
    for &size in &[1024usize, 16 << 10] {
        for &threads in &[1usize, 2] {
            let id = format!("{}KiB/{}t", size >> 10, threads);
            let engine = EngineFs::new(1 << 30, 64 << 10);
            g.bench_with_input(BenchmarkId::new("sectorfs", &id), &(), |b, _| b.iter(|| churn(&engine, threads, size)));
            let mutex = MutexFs::default();
            g.bench_with_input(BenchmarkId::new("mutexfs", &id), &(), |b, _| b.iter(|| churn(&mutex, threads, size)));
        }
    }
    g.finish();
}

criterion_group!(benches, small_files);
criterion_main!(benches);
