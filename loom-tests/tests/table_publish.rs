//! loom model of sector-table publication: a reader racing a writer on one
//! file, through `Engine::read` and `Engine::write`.
//!
//! # Invariant
//! A reader sees the file as it was before a write or after it, never a mix
//! (no torn read), and never reads a byte while it is being written: sector
//! bytes are loom cells, so a runner writing a byte that a published table
//! lets readers see (a copy-on-write skipped, `init` set too early) is a
//! loom data race. Bytes appended past a sector's `init` may be written in
//! place while readers read the prefix (contract rule 2), and overwrites of
//! visible bytes go to a fresh sector (rule 3).
//!
//! # What the model covers
//! The real write path: `Engine::write` → the node's `Combiner` →
//! `Node::apply_ops` → `FileData::write` (plan, reserve, take pages,
//! `change_page`) → one `ArcSwap::swap`; and the real read path:
//! `Engine::read` → one `load` → `FileData::read` → `RawMem::read`. Geometry:
//! 16-byte sectors of two 8-byte pages, inline data off (`inline_max` 0) so
//! every byte lives in a page, one cache slot.
//!
//! # What it does not cover
//! arc-swap's own load/store (the facade's stand-in is a loom mutex around
//! an `Arc` with the same happens-before edges); the inline path for small
//! files (an immutable `Arc<[u8]>` per version, nothing to race on). Tables
//! deeper than one leaf are covered: under loom a leaf holds 2 pages (one
//! sector) under 2-way inner nodes, so a two-sector file path-copies an
//! inner node, and every node changed in place writes its loom-visible
//! stamp (`table.rs`).
//!
//! # Injected bugs
//! * `bash .ci/loom-bugs sector_write_shared`, i.e.
//!   `RUSTFLAGS='--cfg loom -C debug-assertions --cfg loom_bug="sector_write_shared"' \
//!   CARGO_TARGET_DIR=target/loom-bugs cargo test -p loom-tests --release \
//!   --test table_publish -- tests::overwrite_visible_sector`
//!   makes `change_page` write in place below `init` in a page that a
//!   published version reaches; loom reports the reader's access to those
//!   cells as a causality violation (a data race).
//! * `bash .ci/loom-bugs leaf_copy_keeps_fresh`: a table leaf copied into a
//!   draft keeps the "fresh" marks of the batch that made it, so pages that
//!   batch published look fresh (rule 3) and are overwritten in place;
//!   `overwrite_visible_sector` fails the same way.
//! * `bash .ci/loom-bugs draft_reuses_gen`: a draft takes the number of the
//!   version it replaces instead of the next one, so that version's nodes
//!   (and its pages marked fresh) look private to the draft and are changed
//!   in place while the reader walks them; `overwrite_visible_sector` fails
//!   with loom's report of the runner's write to a node stamp (or page) the
//!   reader read without a happens-before edge.

#[cfg(loom)]
mod tests {
    use engine::sync::Arc;
    use engine::{Engine, ROOT};
    use loom::thread;
    use loom_tests::{tiny_engine, Bound, SS};

    /// An engine with one file holding `init`; returns the engine and the inode.
    fn file_with(init: &[u8]) -> (Arc<Engine>, u64) {
        let e = tiny_engine(8 * SS as u64, 0);
        let ino = e.create(ROOT, b"f", 0o644, 0, 0).expect("create").ino;
        e.write(ino, 0, init).expect("initial write");
        (Arc::new(e), ino)
    }

    fn read_all(e: &Engine, ino: u64) -> Vec<u8> {
        let mut buf = [0u8; 2 * SS];
        let n = e.read(ino, 0, &mut buf).expect("read");
        buf[..n].to_vec()
    }

    /// Overwriting a whole visible sector: the reader sees all-old or all-new.
    #[test]
    fn overwrite_visible_sector() {
        loom_tests::check("table_publish::overwrite_visible_sector", Bound::Exhaustive, || {
            let (e, ino) = file_with(&[1; SS]);
            let w = Arc::clone(&e);
            let writer = thread::spawn(move || {
                w.write(ino, 0, &[2; SS]).expect("write");
            });
            let got = read_all(&e, ino);
            assert!(got == [1; SS] || got == [2; SS], "torn read: {got:?}");
            writer.join().unwrap();
            assert_eq!(read_all(&e, ino), [2; SS]);
        });
    }

    /// Overwriting the middle of a visible sector (copy-on-write of the rest).
    #[test]
    fn partial_overwrite() {
        loom_tests::check("table_publish::partial_overwrite", Bound::Exhaustive, || {
            let (e, ino) = file_with(&[1; SS]);
            let w = Arc::clone(&e);
            let writer = thread::spawn(move || {
                w.write(ino, 4, &[2; 8]).expect("write");
            });
            let mut new = [1u8; SS];
            new[4..12].fill(2);
            let got = read_all(&e, ino);
            assert!(got == [1; SS] || got == new, "torn read: {got:?}");
            writer.join().unwrap();
            assert_eq!(read_all(&e, ino), new);
        });
    }

    /// Appending inside the last sector (in place, past `init`) and into a
    /// fresh one, while the reader reads the prefix: it sees the old size
    /// with the old bytes or the new size with all of them.
    #[test]
    fn append_in_place_past_init() {
        loom_tests::check("table_publish::append_in_place_past_init", Bound::Exhaustive, || {
            let (e, ino) = file_with(&[1; 8]);
            let w = Arc::clone(&e);
            let writer = thread::spawn(move || {
                w.write(ino, 8, &[2; SS]).expect("append");
            });
            let mut new = vec![1u8; 8];
            new.extend([2u8; SS]);
            let got = read_all(&e, ino);
            assert!(got == [1; 8] || got == new, "torn read: {got:?}");
            writer.join().unwrap();
            assert_eq!(read_all(&e, ino), new);
        });
    }

    /// Two writers combine through the actor (one may apply both in one
    /// batch) while the main thread reads: every read is one of the three
    /// versions, and the final contents are the last applied write.
    #[test]
    fn two_writers_one_reader() {
        loom_tests::check("table_publish::two_writers_one_reader", Bound::Preemptions(3), || {
            let (e, ino) = file_with(&[1; SS]);
            let hs: Vec<_> = [2u8, 3]
                .into_iter()
                .map(|b| {
                    let w = Arc::clone(&e);
                    thread::spawn(move || {
                        w.write(ino, 0, &[b; SS]).expect("write");
                    })
                })
                .collect();
            let got = read_all(&e, ino);
            assert!(got == [1; SS] || got == [2; SS] || got == [3; SS], "torn read: {got:?}");
            for h in hs {
                h.join().unwrap();
            }
            let last = read_all(&e, ino);
            assert!(last == [2; SS] || last == [3; SS], "lost write: {last:?}");
            assert_eq!(e.stats().pool.sectors, 1, "old versions' sectors freed");
        });
    }
}
