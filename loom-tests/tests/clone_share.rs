//! loom model of clones (issue 20): pages shared by two files through
//! `copy_file_range` have share counts in the pool, and each file's version
//! protocol gives up its holder; a page goes back only with its last holder.
//!
//! # Invariant
//! * A page cloned into a second file is freed only when neither file (no
//!   version of either that anyone still holds) reaches it: overwriting or
//!   deleting one side while a reader holds a version of the other leaves
//!   the reader's bytes untouched. The pool has one cache slot, so the next
//!   page anyone takes is the one freed last, and the models write into it
//!   at once: a premature free shows up as a loom report of a write to cells
//!   the reader holds lent (or as wrong bytes).
//! * Nothing leaks and `used` stays exact: after both files are gone,
//!   `used == 0`, no page is held or shared, and every mapped page is free.
//! * A clone racing an overwrite of its source copies one version of it
//!   whole (the source's runner hands out the pages of the version it is
//!   building, and takes their holders before publishing it).
//! * The limit stays exact: a copy-on-write of a page the other file still
//!   holds is limit-checked (`NoSpace` at the limit, nothing changed), and
//!   forced only once the other holder let go.
//!
//! # What the model covers
//! The real `Engine::copy_file_range` (`Op::Share` in the source's actor,
//! `Op::Install` in the destination's, the pages in transit), writes,
//! `read_with`, `unlink`/`forget`, the versions' retired lists and blocks,
//! and `Pool::free_pages` / `share_pages` with their mutex and the
//! `any_shared` fast path.
//!
//! # What it does not cover
//! Image capture (clones are expanded by a save and load); chunks of more
//! than one step (a 64 MiB chunk is one step here too: the file is one
//! sector).
//!
//! # Injected bug
//! `bash .ci/loom-bugs share_count_lost`: `Pool::free_pages` ignores the
//! share counts, so the first file to let go of a cloned page frees it
//! under the other; `overwrite_both_sides_while_lent` fails.

#[cfg(loom)]
mod tests {
    use engine::sync::Arc;
    use engine::{Engine, ROOT};
    use loom::sync::atomic::AtomicUsize;
    use loom::thread;
    use loom_tests::{read_lent, tiny_engine, Bound, PS, SS};

    /// What a clone of one sector charges: its pages' table slots.
    const SLOTS: u64 = (SS / PS) as u64 * engine::sector::SLOT_COST;

    fn no_leak(e: &Engine) {
        let st = e.stats();
        assert_eq!(st.pool.used, 0, "bytes still charged");
        assert_eq!(st.pool.pages, 0, "pages still held");
        assert_eq!(st.pool.shared_pages, 0, "pages still shared");
        assert_eq!(e.pool().free_pages_count() as u64 * e.pool().page_size() as u64, st.pool.mapped, "a page leaked");
    }

    fn gone(e: &Engine, name: &[u8], ino: u64) {
        e.unlink(ROOT, name).expect("unlink");
        e.forget(ino, 1);
    }

    /// Files `a` (one sector of 1s) and `b` (empty), in the root.
    fn a_and_b(e: &Engine) -> (u64, u64) {
        let a = e.create(ROOT, b"a", 0o644, 0, 0).expect("create").ino;
        let b = e.create(ROOT, b"b", 0o644, 0, 0).expect("create").ino;
        e.write(a, 0, &[1; SS]).expect("write");
        (a, b)
    }

    /// A thread that reads `ino`'s first sector lent (`read_lent`: unchanged
    /// while held) and checks it is all `either[0]` or all `either[1]`.
    fn lent_reader(e: &Arc<Engine>, ino: u64, either: [u8; 2]) -> thread::JoinHandle<()> {
        let r = Arc::clone(e);
        thread::spawn(move || {
            let tick = AtomicUsize::new(0);
            let got = read_lent(&r, ino, SS, &tick);
            assert!(got == [either[0]; SS] || got == [either[1]; SS], "read {got:?}");
        })
    }

    /// `a` (one sector) is cloned into `b`; then a reader holds `b`'s
    /// version lent while one thread overwrites `a` and deletes it and the
    /// main thread overwrites `b`. The reader sees `b`'s old or new bytes,
    /// whole and unchanged while held; in the end nothing leaks.
    #[test]
    fn overwrite_both_sides_while_lent() {
        loom_tests::check("clone_share::overwrite_both_sides_while_lent", Bound::Preemptions(3), || {
            let e = Arc::new(tiny_engine(4 * SS as u64, 0));
            let (a, b) = a_and_b(&e);
            assert_eq!(e.copy_file_range(a, 0, b, 0, SS as u64), Ok(SS as u64));
            assert_eq!(e.stats().pool.used, SS as u64 + SLOTS, "the clone charges its table slots only");
            let reader = lent_reader(&e, b, [1, 3]);
            let w = Arc::clone(&e);
            let writer = thread::spawn(move || {
                w.write(a, 0, &[2; SS]).expect("write a");
                gone(&w, b"a", a);
            });
            e.write(b, 0, &[3; SS]).expect("write b");
            writer.join().unwrap();
            reader.join().unwrap();
            let mut buf = [0u8; SS];
            assert_eq!(e.read(b, 0, &mut buf), Ok(SS));
            assert_eq!(buf, [3; SS]);
            gone(&e, b"b", b);
            no_leak(&e);
        });
    }

    /// At the limit, a write into a page of `a` that `b` shares (a clone)
    /// races the deletion of `b`: while `b` holds the page its copy is new
    /// memory (`NoSpace`, `a` unchanged); once `b` let go it replaces the
    /// page (a forced copy-on-write, as for any overwrite when full). Either
    /// way `used` ends within the limit, and nothing leaks.
    #[test]
    fn write_at_the_limit_races_delete_of_the_clone() {
        loom_tests::check("clone_share::write_at_the_limit_races_delete_of_the_clone", Bound::Exhaustive, || {
            // Room for the sector and the clone's slots, not for a page more.
            let e = Arc::new(tiny_engine(SS as u64 + SLOTS, 0));
            let (a, b) = a_and_b(&e);
            assert_eq!(e.copy_file_range(a, 0, b, 0, SS as u64), Ok(SS as u64));
            let d = Arc::clone(&e);
            let deleter = thread::spawn(move || gone(&d, b"b", b));
            let r = e.write(a, 0, &[2; 4]);
            deleter.join().unwrap();
            let mut buf = [0u8; SS];
            assert_eq!(e.read(a, 0, &mut buf), Ok(SS));
            match r {
                Ok(_) => assert_eq!(&buf[..4], &[2; 4]),
                Err(engine::Error::NoSpace) => assert_eq!(buf, [1; SS], "a refused write changed a"),
                Err(err) => panic!("write: {err:?}"),
            }
            assert_eq!(&buf[4..], &[1; SS - 4]);
            assert_eq!(e.stats().pool.used, SS as u64, "one sector held, the limit kept");
            gone(&e, b"a", a);
            no_leak(&e);
        });
    }

    /// A clone of `a` into `b` races an overwrite of `a` while a reader
    /// holds `a`'s first version: `b` gets one version of `a` whole, `a`'s
    /// reader is undisturbed, and deleting `a` leaves `b` intact.
    #[test]
    fn clone_races_overwrite_of_its_source() {
        loom_tests::check("clone_share::clone_races_overwrite_of_its_source", Bound::Preemptions(3), || {
            let e = Arc::new(tiny_engine(4 * SS as u64, 0));
            let (a, b) = a_and_b(&e);
            let reader = lent_reader(&e, a, [1, 2]);
            let c = Arc::clone(&e);
            let cloner = thread::spawn(move || {
                assert_eq!(c.copy_file_range(a, 0, b, 0, SS as u64), Ok(SS as u64));
            });
            e.write(a, 0, &[2; SS]).expect("write a");
            cloner.join().unwrap();
            reader.join().unwrap();
            gone(&e, b"a", a);
            let mut buf = [0u8; SS];
            assert_eq!(e.read(b, 0, &mut buf), Ok(SS));
            assert!(buf == [1; SS] || buf == [2; SS], "b got {buf:?}");
            gone(&e, b"b", b);
            no_leak(&e);
        });
    }
}
