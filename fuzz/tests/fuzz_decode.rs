//! The decoder fuzz target: hostile FUSE messages against
//! `sectorfs_fuse::decode` on both transports (`sectorfs_fuzz::decode::run`,
//! which documents the input format and every check).
//!
//! * `decode`: bolero's random engine hands `run` byte strings of up to
//!   1 KiB for a time budget: one second in a plain `cargo test`,
//!   `BOLERO_RANDOM_TEST_TIME_MS` otherwise (`scripts/fuzz`). A failing
//!   input is shrunk by bolero; the smallest one seen is written to
//!   `fuzz/corpus/decode/` and its name printed.
//! * `corpus`: replays every file of `fuzz/corpus/decode/`: the seeds (a
//!   zero byte, then a real classic message, named after it) and any saved
//!   failure.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sectorfs_fuzz::decode::{CASES, DECODED, DECODES};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join("decode")
}

#[test]
fn decode() {
    let start = Instant::now();
    let check = bolero::check!().with_shrink_time(Duration::from_secs(10));
    check.with_generator(bolero::produce::<Vec<u8>>().with().len(0usize..=1024)).for_each(|data| {
        if let Err(panic) = std::panic::catch_unwind(|| sectorfs_fuzz::decode::run(data)) {
            sectorfs_fuzz::save_crash(&corpus_dir(), data);
            std::panic::resume_unwind(panic);
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let (cases, decodes, decoded) =
        (CASES.load(Ordering::Relaxed), DECODES.load(Ordering::Relaxed), DECODED.load(Ordering::Relaxed));
    println!(
        "fuzz decode: {cases} cases, {decodes} decodes ({decoded} decoded, {} refused) in {secs:.1} s: {:.0} cases/s, {:.0} decodes/s",
        decodes - decoded,
        cases as f64 / secs,
        decodes as f64 / secs
    );
}

#[test]
fn corpus() {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(corpus_dir()).expect("fuzz/corpus/decode").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(!files.is_empty(), "fuzz/corpus/decode has no seeds");
    for f in files.iter().filter(|f| f.is_file()) {
        let data = std::fs::read(f).expect("read corpus file");
        eprintln!("fuzz corpus: {}", f.display());
        let before = DECODED.load(Ordering::Relaxed);
        sectorfs_fuzz::decode::run(&data);
        // A seed is a valid message: it decodes (on some path, for some
        // `Proto`), or it would not lead the fuzzer anywhere useful.
        let seed = !f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("crash-"));
        assert!(!seed || DECODED.load(Ordering::Relaxed) > before, "seed {} does not decode", f.display());
    }
}
