//! The fuzz target: random operation sequences with hostile arguments against
//! the engine and its reference model (`sectorfs_fuzz::run`, which documents
//! every check).
//!
//! * `ops`: bolero's random engine hands `run` byte strings of up to 8 KiB
//!   (about 200 operations) for a time budget: one second in a plain
//!   `cargo test`, `BOLERO_RANDOM_TEST_TIME_MS` otherwise (`scripts/fuzz 60s`
//!   sets it and builds in the `checked` profile: overflow checks on). A
//!   failing input is shrunk by bolero; the smallest failing byte string
//!   seen is written to `fuzz/corpus/` and its name printed.
//! * `corpus`: replays every file of `fuzz/corpus/` (raw bytes, as libFuzzer
//!   and AFL keep them), so a saved failure is a regression test at once.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sectorfs_fuzz::{CountingAlloc, BYTES, CASES, OPS};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

#[test]
fn ops() {
    let _ = sectorfs_fuzz::CRASH_DIR.set(corpus_dir());
    let start = Instant::now();
    // Shrinking gets 10 s (bolero's default is 1 s, little for 4 KiB inputs).
    let check = bolero::check!().with_shrink_time(Duration::from_secs(10));
    check.with_generator(bolero::produce::<Vec<u8>>().with().len(0usize..=8192)).for_each(|data| {
        if let Err(panic) = std::panic::catch_unwind(|| sectorfs_fuzz::run(data)) {
            sectorfs_fuzz::save_crash(&corpus_dir(), data);
            std::panic::resume_unwind(panic);
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let (cases, ops, bytes) =
        (CASES.load(Ordering::Relaxed), OPS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
    println!(
        "fuzz: {cases} cases ({:.0} bytes, {:.1} operations each), {ops} operations in {secs:.1} s: {:.0} cases/s, {:.0} ops/s",
        bytes as f64 / cases.max(1) as f64,
        ops as f64 / cases.max(1) as f64,
        cases as f64 / secs,
        ops as f64 / secs
    );
}

#[test]
fn corpus() {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(corpus_dir()).expect("fuzz/corpus").map(|e| e.expect("entry").path()).collect();
    files.sort();
    for f in files.iter().filter(|f| f.is_file()) {
        let data = std::fs::read(f).expect("read corpus file");
        eprintln!("fuzz corpus: {}", f.display());
        sectorfs_fuzz::run(&data);
    }
}
