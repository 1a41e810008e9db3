//! loom model of zero-copy reads: a reader holds the slices `Engine::read_with`
//! lends it while a writer changes the same range of the same file.
//!
//! # Invariant
//! The slices a reader is lent are never written while it holds them (a
//! `&[u8]` over bytes another thread writes is a data race), the sectors
//! under them are not freed or reused before it lets go, and together they
//! show one version of the file: the whole old or the whole new contents of
//! the range, never a mix, from the first look to the last. Under loom a lent
//! range is a `Lent` (the stand-in for the real `&[u8]` over sector memory)
//! that keeps its loom cells marked as being read until it drops, so a write
//! to a lent byte while it is held is a loom failure ("currently reading from
//! cell"), and one after it that does not happen after the reader let go is a
//! causality violation.
//!
//! # What the model covers
//! The real read path `Engine::read_with` → one `load` → `FileData::read_with`
//! (`pieces`, `RawMem::lend`) → `f`, and the real write path (actor, plan,
//! `change_page`, page copy-on-write or in place, one `ArcSwap::swap`, what
//! the batch retired freed at once if nobody holds the old version, else by
//! the old version's last holder, oldest version first: `node.rs`,
//! "Versions"). `f` looks at its slices, passes a scheduling point (an
//! atomic operation, so the writer can run while the slices are held, as a
//! `writev` would let it), and looks again. Geometry: 16-byte sectors of two
//! 8-byte pages, inline data off, one cache slot (a page freed too early is
//! the next one a writer gets), table nodes with loom-visible stamps (a node
//! reused while a reader may walk it is a loom error too).
//!
//! # What it does not cover
//! The real `&[u8]` (loom sees the `Lent` stand-in: the same ranges, held
//! for the same time); holes and inline bytes (a static zero page and an
//! immutable buffer: nothing writes them; `engine/tests/issue_16_read_with.rs`
//! checks their contents); the kernel's copy out of the slices in `writev`.
//!
//! # Injected bugs
//! * `bash .ci/loom-bugs version_reclaim_early`: the runner frees what a
//!   batch retired as soon as it has published, without checking that
//!   nobody holds the version it replaced; `reuse_after_lent_version_dropped`
//!   fails with loom's report of the next copy-on-write writing a page the
//!   reader holds lent.
//! * `bash .ci/loom-bugs version_chain_unlinked`: the block of a version
//!   superseded while held is not held by the block of the older held
//!   version, so what it keeps goes back when its own version is dropped
//!   while the older one, which still reaches it, is lent;
//!   `nested_holders_in_order` fails with loom's report of a write to lent
//!   cells.
//! * `bash .ci/loom-bugs retired_all_young`: everything a batch retires
//!   counts as made after the newest held version, so it goes back while
//!   that version still reaches it; `older_version_keeps_newer_alive` fails.
//! * `bash .ci/loom-bugs leaf_copy_keeps_fresh` also runs
//!   `overwrite_while_lent`: a leaf copied into a draft keeps its "fresh"
//!   marks, so pages published by an earlier batch look fresh and are
//!   overwritten in place under the reader.
//! * `bash .ci/loom-bugs sector_write_past_size`: `change_page` decides "in
//!   place" by the old size instead of `init`, so growing a file that was
//!   truncated into a sector rewrites, in place, bytes that an older
//!   version (held by the reader) still shows; `regrow_while_lent` fails
//!   with loom's report of the write to cells the reader holds. No `read`
//!   model catches it (none truncates and regrows).
//! * `bash .ci/loom-bugs sector_write_shared` also runs
//!   `overwrite_while_lent`: `change_page` writes in place below `init` in a
//!   sector a table reaches; loom reports the write to cells the reader
//!   holds.

#[cfg(loom)]
mod tests {
    use engine::sync::Arc;
    use engine::{Engine, ROOT};
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;
    use loom_tests::{flat, read_lent, tiny_engine, Bound, SS};

    /// An engine with one file holding `init`; returns the engine and the inode.
    fn file_with(init: &[u8], max_sectors: u64) -> (Arc<Engine>, u64) {
        let e = tiny_engine(max_sectors * SS as u64, 0);
        let ino = e.create(ROOT, b"f", 0o644, 0, 0).expect("create").ino;
        e.write(ino, 0, init).expect("initial write");
        (Arc::new(e), ino)
    }

    /// A write over two whole visible sectors (copy-on-write of both, one
    /// publish) while the reader holds slices of both: it was lent all-old
    /// or all-new, and nothing it holds is written.
    #[test]
    fn overwrite_while_lent() {
        loom_tests::check("read_with::overwrite_while_lent", Bound::Exhaustive, || {
            let (e, ino) = file_with(&[1; 2 * SS], 8);
            let w = Arc::clone(&e);
            let writer = thread::spawn(move || {
                w.write(ino, 0, &[2; 2 * SS]).expect("write");
            });
            let tick = AtomicUsize::new(0);
            let got = read_lent(&e, ino, 2 * SS, &tick);
            assert!(got == [1; 2 * SS] || got == [2; 2 * SS], "torn read: {got:?}");
            writer.join().unwrap();
            assert_eq!(read_lent(&e, ino, 2 * SS, &tick), [2; 2 * SS]);
        });
    }

    /// A write across the boundary of two sectors (copy-on-write keeping the
    /// rest of each) while the reader holds both: old or new, whole.
    #[test]
    fn partial_overwrite_while_lent() {
        loom_tests::check("read_with::partial_overwrite_while_lent", Bound::Exhaustive, || {
            let (e, ino) = file_with(&[1; 2 * SS], 8);
            let w = Arc::clone(&e);
            let writer = thread::spawn(move || {
                w.write(ino, 8, &[2; SS]).expect("write");
            });
            let mut new = [1u8; 2 * SS];
            new[8..8 + SS].fill(2);
            let tick = AtomicUsize::new(0);
            let got = read_lent(&e, ino, 2 * SS, &tick);
            assert!(got == [1; 2 * SS] || got == new, "torn read: {got:?}");
            writer.join().unwrap();
            assert_eq!(read_lent(&e, ino, 2 * SS, &tick), new);
        });
    }

    /// An append inside the last sector (in place, past `init`) and into a
    /// fresh one while the reader holds a read of more than the file: it is
    /// lent exactly the old size (never the bytes past it, which the append
    /// writes in place) or the new contents.
    #[test]
    fn append_while_lent() {
        loom_tests::check("read_with::append_while_lent", Bound::Exhaustive, || {
            let (e, ino) = file_with(&[1; 8], 8);
            let w = Arc::clone(&e);
            let writer = thread::spawn(move || {
                w.write(ino, 8, &[2; SS]).expect("append");
            });
            let mut new = vec![1u8; 8];
            new.extend([2u8; SS]);
            let tick = AtomicUsize::new(0);
            let got = read_lent(&e, ino, 2 * SS, &tick);
            assert!(got == [1; 8] || got == new, "torn read: {got:?}");
            writer.join().unwrap();
            assert_eq!(read_lent(&e, ino, 2 * SS, &tick), new);
        });
    }

    /// Truncating into a sector and growing it again while the reader holds
    /// the longer first version: the regrown bytes are past the new size but
    /// below the sector's `init` (which never goes down), so they are
    /// written by copy-on-write, never in place under the reader's slices.
    #[test]
    fn regrow_while_lent() {
        loom_tests::check("read_with::regrow_while_lent", Bound::Exhaustive, || {
            let (e, ino) = file_with(&[1; SS], 8);
            let w = Arc::clone(&e);
            let writer = thread::spawn(move || {
                let cut = engine::SetAttr { size: Some(8), ..engine::SetAttr::default() };
                w.setattr(ino, &cut).expect("truncate");
                w.write(ino, 8, &[2; 8]).expect("regrow");
            });
            let mut new = [1u8; SS];
            new[8..].fill(2);
            let tick = AtomicUsize::new(0);
            let got = read_lent(&e, ino, 2 * SS, &tick);
            assert!(got == [1; SS] || got == [1; 8] || got == new, "torn read: {got:?}");
            writer.join().unwrap();
            assert_eq!(read_lent(&e, ino, 2 * SS, &tick), new);
            assert_eq!(e.stats().pool.sectors, 1, "old versions' sectors freed");
        });
    }

    /// Two overwrites in a row while the reader holds version 1: the second
    /// copy-on-write takes the page the first one freed, so a version
    /// released before `f` returns would have its pages rewritten under
    /// the reader (the injected bug `version_reclaim_early`: the runner frees
    /// what a batch retired without checking that nobody holds the version it
    /// replaced). Every read is one whole version; old pages are freed once
    /// nobody holds them.
    #[test]
    fn reuse_after_lent_version_dropped() {
        loom_tests::check("read_with::reuse_after_lent_version_dropped", Bound::Exhaustive, || {
            let (e, ino) = file_with(&[1; SS], 4);
            let w = Arc::clone(&e);
            let writer = thread::spawn(move || {
                w.write(ino, 0, &[2; SS]).expect("write 2");
                w.write(ino, 0, &[3; SS]).expect("write 3");
            });
            let tick = AtomicUsize::new(0);
            let got = read_lent(&e, ino, SS, &tick);
            assert!(got == [1; SS] || got == [2; SS] || got == [3; SS], "torn read: {got:?}");
            writer.join().unwrap();
            assert_eq!(read_lent(&e, ino, SS, &tick), [3; SS]);
            assert_eq!(e.stats().pool.sectors, 1, "old versions' sectors freed");
        });
    }

    /// Three writes while the reader holds version 1 of a one-sector file
    /// of two pages: page 1, then page 0, then page 1 again. The second
    /// write retires page 0's memory, which version 1 still shows, into
    /// version 2, which nobody holds: it was made before version 1, so it
    /// may go back only when version 1 is gone too (it waits in version 1's
    /// block, "Versions" rule 3). The third write's copy-on-write takes the
    /// page freed last (one cache slot), so freeing it early is a write
    /// under the reader's slices (the injected bug `retired_all_young`).
    #[test]
    fn older_version_keeps_newer_alive() {
        loom_tests::check("read_with::older_version_keeps_newer_alive", Bound::Preemptions(7), || {
            let (e, ino) = file_with(&[1; SS], 8);
            let w = Arc::clone(&e);
            let half = SS / 2;
            let writer = thread::spawn(move || {
                w.write(ino, half as u64, &[2; SS / 2]).expect("write page 1");
                w.write(ino, 0, &[3; SS / 2]).expect("write page 0");
                w.write(ino, half as u64, &[4; SS / 2]).expect("write page 1 again");
            });
            let version = |a: u8, b: u8| {
                let mut v = vec![a; half];
                v.extend(vec![b; half]);
                v
            };
            let tick = AtomicUsize::new(0);
            let got = read_lent(&e, ino, SS, &tick);
            assert!([version(1, 1), version(1, 2), version(3, 2), version(3, 4)].contains(&got), "torn read: {got:?}");
            writer.join().unwrap();
            assert_eq!(read_lent(&e, ino, SS, &tick), version(3, 4));
            assert_eq!(e.stats().pool.sectors, 1, "old versions' pages freed");
        });
    }

    /// Two readers of two versions, nested (the outer one lent the older
    /// version), the inner and newer one let go first, while a writer
    /// changes both pages: the outer slices never change, and every old
    /// page goes back once both let go (blocks chained, "Versions" rule 3).
    #[test]
    fn nested_holders_newer_dropped_first() {
        loom_tests::check("read_with::nested_holders_newer_dropped_first", Bound::Preemptions(3), || {
            let (e, ino) = file_with(&[1; SS], 8);
            let w = Arc::clone(&e);
            let writer = thread::spawn(move || {
                w.write(ino, (SS / 2) as u64, &[2; SS / 2]).expect("page 1");
                w.write(ino, 0, &[3; SS / 2]).expect("page 0");
                w.write(ino, (SS / 2) as u64, &[4; SS / 2]).expect("page 1 again");
            });
            let tick = AtomicUsize::new(0);
            e.read_with(ino, 0, SS, |outer| {
                let a = flat(outer);
                tick.fetch_add(1, Ordering::SeqCst);
                e.read_with(ino, 0, SS, |s| {
                    let x = flat(s);
                    tick.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(x, flat(s), "inner lent bytes changed");
                })
                .expect("inner read_with");
                tick.fetch_add(1, Ordering::SeqCst);
                assert_eq!(a, flat(outer), "outer lent bytes changed after the inner reader let go");
            })
            .expect("outer read_with");
            writer.join().unwrap();
            assert_eq!(e.stats().pool.sectors, 1, "old versions' pages freed");
        });
    }

    /// The same in one order, step by step (each side waits for the other,
    /// so it needs no preemption): the outer reader is lent version 1, a
    /// write makes version 2, the inner reader is lent version 2, a write
    /// makes version 3 (cutting out the page version 1 still shows), the
    /// inner reader lets go, a write takes a fresh page. A block that did
    /// not wait for version 1 would have given that page back, and the last
    /// write would reuse it under the outer reader.
    #[test]
    fn nested_holders_in_order() {
        fn wait(step: &AtomicUsize, n: usize) {
            while step.load(Ordering::SeqCst) < n {
                thread::yield_now();
            }
        }
        loom_tests::check("read_with::nested_holders_in_order", Bound::Preemptions(1), || {
            let (e, ino) = file_with(&[1; SS], 8);
            let step = Arc::new(AtomicUsize::new(0));
            let (w, st) = (Arc::clone(&e), Arc::clone(&step));
            let writer = thread::spawn(move || {
                wait(&st, 1);
                w.write(ino, (SS / 2) as u64, &[2; SS / 2]).expect("page 1");
                st.store(2, Ordering::SeqCst);
                wait(&st, 3);
                w.write(ino, 0, &[3; SS / 2]).expect("page 0");
                st.store(4, Ordering::SeqCst);
                wait(&st, 5);
                w.write(ino, (SS / 2) as u64, &[4; SS / 2]).expect("page 1 again");
                st.store(6, Ordering::SeqCst);
            });
            e.read_with(ino, 0, SS, |outer| {
                let a = flat(outer);
                step.store(1, Ordering::SeqCst);
                wait(&step, 2);
                e.read_with(ino, 0, SS, |inner| {
                    let x = flat(inner);
                    step.store(3, Ordering::SeqCst);
                    wait(&step, 4);
                    assert_eq!(x, flat(inner), "inner lent bytes changed");
                })
                .expect("inner read_with");
                step.store(5, Ordering::SeqCst);
                wait(&step, 6);
                assert_eq!(a, flat(outer), "outer lent bytes changed after the inner reader let go");
            })
            .expect("outer read_with");
            writer.join().unwrap();
            assert_eq!(e.stats().pool.sectors, 1, "old versions' pages freed");
        });
    }
}
