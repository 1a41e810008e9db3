//! loom model of the published pointer behind a node's versions
//! (`engine/src/sync/hazard.rs`: `HazardSwap`, which `sync::ArcSwap` wraps
//! in real builds).
//!
//! # Invariant
//! * A guard's version is never freed or handed out as exclusive while the
//!   guard lives: when `swap` returns the old `Arc`, every guard still
//!   holding that version has a count in it, so `Arc::get_mut` succeeds only
//!   when no reader holds it; the same when the cell itself is dropped
//!   under a guard.
//! * What a reader read through its guard happens before what the writer
//!   then does with the version it got back exclusively (mutating or
//!   freeing it).
//! * Counts balance: every version is freed exactly once, after its last
//!   holder (loom checks that no `Arc` leaks at the end of each execution).
//!
//! # What the model covers
//! The real `load` (slot store, re-check, retract), guard drop (the CAS that
//! finds a paid debt), `swap` (scan and pay), `load_full`, the writer's
//! `load_writer`, and the cell's drop. A version is a loom `UnsafeCell`:
//! the reader reads it through its guard, the writer writes it once
//! `Arc::get_mut` grants it, and its `Drop` writes it too, so any overlap is
//! a loom data-race report.
//!
//! # What it does not cover
//! More than [`SLOTS`] guards on one thread (the slow path borrows a chunk
//! and takes a count: single-threaded unit tests in `hazard.rs`'s users), and
//! chunk reuse by a later thread (loom runs each model's threads once).
//!
//! # Injected bugs
//! `bash .ci/loom-bugs hazard_no_recheck`: the reader trusts its first load
//! of the cell without loading it again after publishing its slot, so a
//! swap that scanned the slots before the slot was written does not pay for
//! it; `reader_vs_swap` fails with loom's report of the writer's write to a
//! version the reader is reading.
//! `bash .ci/loom-bugs writer_load_uncounted`: the writer's load takes no
//! count of its own, so its `Arc` and the cell's share one;
//! `writer_load_vs_reader` fails when dropping the writer's frees the
//! version the reader holds (or loom reports the count gone below zero).

#[cfg(loom)]
mod tests {
    use engine::sync::hazard::HazardSwap;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;
    use loom_tests::Bound;

    /// A version: its contents, written by whoever holds it exclusively and
    /// by its drop.
    struct Version(UnsafeCell<u64>);

    impl Version {
        fn new(v: u64) -> Arc<Version> {
            Arc::new(Version(UnsafeCell::new(v)))
        }
        fn read(&self) -> u64 {
            // SAFETY: loom checks this read against every write of the cell
            // (a race is the failure the model looks for).
            self.0.with(|p| unsafe { *p })
        }

        /// Writes `v` into the version `old` if `Arc::get_mut` says no
        /// reader holds it (what the models check: loom reports one that
        /// still reads it).
        fn write_if_alone(old: &mut Arc<Version>, v: u64) {
            if let Some(m) = Arc::get_mut(old) {
                // SAFETY: `get_mut` says nobody else holds it; loom checks it.
                m.0.with_mut(|p| unsafe { *p = v });
            }
        }
    }

    impl Drop for Version {
        fn drop(&mut self) {
            // SAFETY: the last owner; loom checks it against every read.
            self.0.with_mut(|p| unsafe { *p = u64::MAX });
        }
    }

    /// A reader loads and reads while a writer publishes a new version,
    /// then, if the old one is exclusively its own, writes it.
    #[test]
    fn reader_vs_swap() {
        loom_tests::check("hazard::reader_vs_swap", Bound::Exhaustive, || {
            let cell = Arc::new(HazardSwap::new(Version::new(1)));
            let c2 = Arc::clone(&cell);
            let reader = thread::spawn(move || {
                let g = c2.load();
                let v = g.read();
                assert!(v == 1 || v == 2, "a published version: {v}");
                assert_eq!(g.read(), v, "a guard's version does not change");
            });
            let mut old = cell.swap(Version::new(2));
            Version::write_if_alone(&mut old, 7);
            drop(old);
            reader.join().unwrap();
            assert_eq!(cell.load().read(), 2);
        });
    }

    /// Two swaps in a row against a reader that loads twice: the second
    /// load may meet a swapped-out pointer and retract.
    #[test]
    fn two_loads_vs_two_swaps() {
        loom_tests::check("hazard::two_loads_vs_two_swaps", Bound::Exhaustive, || {
            let cell = Arc::new(HazardSwap::new(Version::new(1)));
            let c2 = Arc::clone(&cell);
            let reader = thread::spawn(move || {
                let a = c2.load().read();
                let b = c2.load_full();
                assert!(a <= b.read() && b.read() <= 3, "versions only move forward: {a} then {}", b.read());
            });
            for v in [2, 3] {
                let mut old = cell.swap(Version::new(v));
                Version::write_if_alone(&mut old, 9);
            }
            reader.join().unwrap();
        });
    }

    /// The cell is dropped while a reader holds a guard of its version:
    /// the drop pays the guard's debt instead of freeing the version.
    #[test]
    fn guard_outlives_cell() {
        loom_tests::check("hazard::guard_outlives_cell", Bound::Exhaustive, || {
            let cell = Arc::new(HazardSwap::new(Version::new(5)));
            let c2 = Arc::clone(&cell);
            let reader = thread::spawn(move || {
                let g = c2.load();
                drop(c2);
                assert_eq!(g.read(), 5);
            });
            drop(cell);
            reader.join().unwrap();
        });
    }

    /// The writer's own load (`load_writer`, a node's runner at the start
    /// of each batch: no hazard slot, one count) against a reader: the
    /// writer publishes twice from what it loaded, and writes a replaced
    /// version only when `get_mut` says it is alone.
    #[test]
    fn writer_load_vs_reader() {
        loom_tests::check("hazard::writer_load_vs_reader", Bound::Exhaustive, || {
            let cell = Arc::new(HazardSwap::new(Version::new(1)));
            let c2 = Arc::clone(&cell);
            let reader = thread::spawn(move || {
                let g = c2.load();
                let v = g.read();
                assert!((1..=3).contains(&v), "a published version: {v}");
            });
            for v in [2, 3] {
                // SAFETY: this thread is the cell's only writer.
                let cur = unsafe { cell.load_writer() };
                assert_eq!(cur.read(), v - 1, "the writer loads what it published");
                let mut old = cell.swap(Version::new(v));
                assert!(Arc::ptr_eq(&old, &cur));
                drop(cur);
                Version::write_if_alone(&mut old, 9);
            }
            reader.join().unwrap();
        });
    }
}
