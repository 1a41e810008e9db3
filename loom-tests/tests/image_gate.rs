//! loom model of the image capture's mutation gate (`engine/src/gate.rs`):
//! `Engine::snapshot` against mutations in flight, through the real engine
//! code (the gate's reader-writer slots, directory locks, actors).
//!
//! # Invariant
//! A snapshot is one point in time: the state after some prefix of the
//! mutations, never a mix.
//! * A rename that moves a file between two directories while a snapshot
//!   is taken: the snapshot has the file exactly once (in the old or the
//!   new directory), never in both, never in neither.
//! * One thread writes file `f`, then file `g`: a snapshot that has `g`'s
//!   write has `f`'s too.
//!
//! # What the model covers
//! `Gate::enter` (shared, per-thread slot; two slots here, so the capture's
//! `close` takes more than one lock) in `rename` and `write`,
//! `Gate::close` and the walk in `Engine::snapshot`.
//!
//! # What it does not cover
//! Three or more mutators; the re-entrant path (a gated operation calling
//! another, checked by `gate.rs`'s unit test); writing and loading the
//! image (`engine/tests/image_roundtrip.rs`).
//!
//! # Injected bug
//! `bash .ci/loom-bugs image_gate_open`: mutators ignore the gate, and the
//! capture sees the moved file twice or not at all.

#[cfg(loom)]
mod tests {
    use engine::sync::Arc;
    use engine::{Config, Engine, ROOT};
    use loom::thread;
    use loom_tests::{Bound, SS};

    /// Two gate slots (two cache slots), inline data so writes take no sector.
    fn engine() -> Arc<Engine> {
        Arc::new(Engine::new_unchecked(Config {
            sector_size: SS,
            max_bytes: 1024,
            max_inodes: 16,
            inline_max: SS,
            cache_slots: 2,
            ..Config::default()
        }))
    }

    #[test]
    fn capture_sees_a_rename_whole() {
        loom_tests::check("image_gate::capture_sees_a_rename_whole", Bound::Exhaustive, || {
            let e = engine();
            let a = e.mkdir(ROOT, b"a", 0o755, 0, 0).unwrap().ino;
            let b = e.mkdir(ROOT, b"b", 0o755, 0, 0).unwrap().ino;
            let x = e.create(a, b"x", 0o644, 0, 0).unwrap().ino;
            let e2 = Arc::clone(&e);
            let t = thread::spawn(move || e2.rename(a, b"x", b, b"x", 0).unwrap());
            let s = e.snapshot();
            let places: Vec<u64> = s.entries().into_iter().filter(|(_, _, i)| *i == x).map(|(d, _, _)| d).collect();
            assert_eq!(places.len(), 1, "the moved file is in {places:?}");
            t.join().unwrap();
        });
    }

    #[test]
    fn capture_sees_a_threads_writes_in_order() {
        loom_tests::check("image_gate::capture_sees_a_threads_writes_in_order", Bound::Exhaustive, || {
            let e = engine();
            let f = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
            let g = e.create(ROOT, b"g", 0o644, 0, 0).unwrap().ino;
            let e2 = Arc::clone(&e);
            let t = thread::spawn(move || {
                e2.write(f, 0, b"1").unwrap();
                e2.write(g, 0, b"1").unwrap();
            });
            let s = e.snapshot();
            let (mut bf, mut bg) = ([0u8; 1], [0u8; 1]);
            let (nf, ng) = (s.read(f, 0, &mut bf), s.read(g, 0, &mut bg));
            assert!(ng == 0 || nf == 1, "g's write without f's");
            t.join().unwrap();
        });
    }
}
