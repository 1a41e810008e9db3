//! The image loader target: hostile images against `Engine::load_image`
//! (`sectorfs_fuzz::image::run`, which documents the input format and
//! every check).
//!
//! * `image`: bolero's random engine hands `run` byte strings of up to
//!   4 KiB for a time budget: one second in a plain `cargo test`,
//!   `BOLERO_RANDOM_TEST_TIME_MS` otherwise (`scripts/fuzz`). A failing
//!   input is shrunk; the smallest one seen is written to
//!   `fuzz/corpus/image/` and its name printed.
//! * `corpus`: replays every file of `fuzz/corpus/image/`, then the seed
//!   image as it is and with four bits of each byte flipped in turn
//!   (resealed: a node left without a name is found this way).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sectorfs_fuzz::image::{seed_image, CASES, LOADED};
use sectorfs_fuzz::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join("image")
}

#[test]
fn image() {
    let start = Instant::now();
    let check = bolero::check!().with_shrink_time(Duration::from_secs(10));
    check.with_generator(bolero::produce::<Vec<u8>>().with().len(0usize..=4096)).for_each(|data| {
        if let Err(panic) = std::panic::catch_unwind(|| sectorfs_fuzz::image::run(data)) {
            sectorfs_fuzz::save_crash(&corpus_dir(), data);
            std::panic::resume_unwind(panic);
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let (cases, loaded) = (CASES.load(Ordering::Relaxed), LOADED.load(Ordering::Relaxed));
    println!("fuzz image: {cases} cases ({loaded} loaded) in {secs:.1} s: {:.0} cases/s", cases as f64 / secs);
}

#[test]
fn corpus() {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(corpus_dir()).map(|d| d.map(|e| e.expect("entry").path()).collect()).unwrap_or_default();
    files.sort();
    for f in files.iter().filter(|f| f.is_file()) {
        eprintln!("fuzz corpus: {}", f.display());
        sectorfs_fuzz::image::run(&std::fs::read(f).expect("read corpus file"));
    }
    // The seed as it is (mode 0), and every byte of it flipped and resealed.
    let mut whole = vec![0u8];
    whole.extend_from_slice(seed_image());
    sectorfs_fuzz::image::run(&whole);
    for at in 0..seed_image().len() as u16 {
        let [a, b] = at.to_le_bytes();
        for x in [0x01, 0x02, 0x10, 0x80] {
            sectorfs_fuzz::image::run(&[1, a, b, x]);
        }
    }
}
