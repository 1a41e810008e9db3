//! loom model of namespace races: create / unlink / rename / link on the
//! same names from two threads, through the real `Engine` operations.
//!
//! # Invariant
//! * Two creates of one name: exactly one wins, the other gets `Exists`,
//!   and the name resolves to the winner's inode.
//! * Create vs unlink of one name: the unlink finds the file (`Ok`) or not
//!   (`NotFound`); the name exists at the end iff the unlink missed; inode
//!   and memory counts are exact once every reference is forgotten.
//! * Rename over an existing target vs lookup of the target name: the lookup
//!   sees the old target or the renamed file, never neither; the old name is
//!   gone or still the source; the replaced inode is freed once forgotten.
//! * Link vs unlink: the link count is exact (1 if the link won the race,
//!   else 0, and then `link` fails with `NotFound`), both when the two
//!   operations share the directory lock and when they do not (then only
//!   the node's `life` mutex orders them); two links racing each other and
//!   an unlink leave exactly the links that exist as names.
//! * Rename of a directory vs create inside it: the create lands in the
//!   directory under its old or new name. Rename over an empty directory vs
//!   create inside that target: never both succeed (no entry is created in
//!   a removed directory).
//! * A file moved from a directory into its parent vs removing that
//!   directory (which locks the parent, then the child), and into its
//!   grandparent vs two removals down the path at once: all finish.
//! * Rename with `WHITEOUT` vs a listing of the directory (one read lock, an
//!   atomic view): the listing shows the source name as the file and no
//!   target, or the source name as a whiteout and the target as the file;
//!   never the source name missing, never two names for one inode. Against
//!   a create when one inode is left: exactly one of them gets it, the
//!   other fails with `NoInodes` having changed nothing.
//!
//! # What the model covers
//! `Engine::{create, mkdir, lookup, unlink, rename, link, forget, getattr,
//! readdir}`:
//! the directory `RwLock`s, the inode map (the facade's `ShardMap`
//! stand-in, linearisable per key like a dashmap shard), the `life` mutex,
//! the rename lock, and the directories' `Touch` requests through their
//! actors.
//!
//! # What it does not cover
//! dashmap's sharding (the stand-in is one map under one lock, so cross-shard
//! deadlocks such as dashmap #74/#369 cannot show up here; the facade's
//! `ShardMap` never returns a guard, which rules them out by construction);
//! case-insensitive names; `readdir` cookies (engine/tests/ns_readdir.rs).
//!
//! # Injected bug
//! `bash .ci/loom-bugs ns_create_in_dead_dir`, i.e.
//! `RUSTFLAGS='--cfg loom -C debug-assertions --cfg loom_bug="ns_create_in_dead_dir"' \
//!  CARGO_TARGET_DIR=target/loom-bugs cargo test -p loom-tests --release \
//!  --test ns_races -- tests::rename_over_empty_dir_vs_create_inside_it`
//! drops the `dead` check in `make`; loom finds the create that lands in the
//! directory the rename just removed ("never both").
//!
//! `bash .ci/loom-bugs ns_rename_lock_order` makes a rename wait for its
//! second parent in inode order instead of trying it;
//! `rename_up_vs_rmdir_of_the_source` and
//! `rename_to_a_grandparent_vs_chained_rmdirs` deadlock.
//!
//! `bash .ci/loom-bugs ns_whiteout_late` inserts the whiteout only after the
//! rename dropped its directory locks; `rename_whiteout_vs_readdir` finds
//! the listing without the source name.

#[cfg(loom)]
mod tests {
    use engine::rename_flags::WHITEOUT;
    use engine::sync::Arc;
    use engine::{Config, Engine, Error, FileType, ROOT};
    use loom::thread;
    use loom_tests::{tiny_engine, Bound, SS};

    fn engine() -> Arc<Engine> {
        Arc::new(tiny_engine(1024, 0))
    }

    /// Runs `f` on a second thread and `g` on this one; returns both results.
    fn race<A: Send + 'static, B>(
        e: &Arc<Engine>,
        f: impl FnOnce(&Engine) -> A + Send + 'static,
        g: impl FnOnce(&Engine) -> B,
    ) -> (A, B) {
        let e2 = Arc::clone(e);
        let h = thread::spawn(move || f(&e2));
        let b = g(e);
        (h.join().unwrap(), b)
    }

    /// Looks `name` up in `dir`, returning its inode and dropping the
    /// lookup reference again.
    fn ino_of(e: &Engine, dir: u64, name: &[u8]) -> Result<u64, Error> {
        let a = e.lookup(dir, name)?;
        e.forget(a.ino, 1);
        Ok(a.ino)
    }

    /// Two creates of one name: exactly one wins, the other gets `Exists`,
    /// the name resolves to the winner, and only one inode was made.
    #[test]
    fn create_same_name() {
        loom_tests::check("ns_races::create_same_name", Bound::Exhaustive, || {
            let e = engine();
            let (a, b) = race(&e, |e| e.create(ROOT, b"x", 0o644, 1, 1), |e| e.create(ROOT, b"x", 0o644, 2, 2));
            let winner = match (&a, &b) {
                (Ok(w), Err(Error::Exists)) | (Err(Error::Exists), Ok(w)) => w.ino,
                _ => panic!("exactly one create wins: {a:?} {b:?}"),
            };
            assert_eq!(ino_of(&e, ROOT, b"x"), Ok(winner));
            assert_eq!(e.stats().inodes, 2);
        });
    }

    /// Create (then forget) vs unlink of one name: the unlink finds the file
    /// or not; the name exists at the end iff the unlink missed, and an
    /// unlinked, forgotten file is freed (inode count exact).
    #[test]
    fn create_vs_unlink() {
        loom_tests::check("ns_races::create_vs_unlink", Bound::Exhaustive, || {
            let e = engine();
            let (c, u) = race(
                &e,
                |e| {
                    let a = e.create(ROOT, b"x", 0o644, 0, 0).expect("create");
                    e.forget(a.ino, 1);
                    a.ino
                },
                |e| e.unlink(ROOT, b"x"),
            );
            match u {
                Ok(()) => {
                    assert_eq!(ino_of(&e, ROOT, b"x"), Err(Error::NotFound));
                    assert_eq!(e.stats().inodes, 1, "the unlinked, forgotten file is freed");
                    assert_eq!(e.getattr(c).err(), Some(Error::NotFound));
                }
                Err(Error::NotFound) => {
                    assert_eq!(ino_of(&e, ROOT, b"x"), Ok(c));
                    assert_eq!(e.stats().inodes, 2);
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        });
    }

    /// Rename `a` over an existing `b` vs lookups of `a` then `b`: `b` always
    /// resolves (old target or the renamed file, never neither); once `a` is
    /// gone `b` is the renamed file; the replaced file is freed.
    #[test]
    fn rename_replace_vs_lookup() {
        loom_tests::check("ns_races::rename_replace_vs_lookup", Bound::Exhaustive, || {
            let e = engine();
            let src = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino;
            let old = e.create(ROOT, b"b", 0o644, 0, 0).unwrap().ino;
            e.forget(src, 1);
            e.forget(old, 1);
            // Old name first, then the target: once `a` is gone the rename
            // is done, so `b` must then be the renamed file.
            let (r, (seen_a, seen_b)) =
                race(&e, |e| e.rename(ROOT, b"a", ROOT, b"b", 0), |e| (ino_of(e, ROOT, b"a"), ino_of(e, ROOT, b"b")));
            r.expect("rename");
            assert!(seen_b == Ok(old) || seen_b == Ok(src), "target name missing: {seen_b:?}");
            assert!(seen_a == Ok(src) || seen_a == Err(Error::NotFound), "old name: {seen_a:?}");
            assert!(!(seen_a == Err(Error::NotFound) && seen_b == Ok(old)), "a was gone but b was still the old file");
            assert_eq!(ino_of(&e, ROOT, b"b"), Ok(src));
            assert_eq!(e.getattr(old).err(), Some(Error::NotFound), "the replaced file is freed");
            assert_eq!(e.stats().inodes, 2);
        });
    }

    /// Link `a` as `b` vs unlink `a` (same directory, so the two serialise on
    /// its lock): the link count is exact (1 if the link came first, else 0
    /// and the link fails with `NotFound`), and names match the count.
    #[test]
    fn link_vs_unlink() {
        loom_tests::check("ns_races::link_vs_unlink", Bound::Exhaustive, || {
            let e = engine();
            let f = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino; // one lookup ref kept
            let (l, u) = race(&e, move |e| e.link(f, ROOT, b"b"), |e| e.unlink(ROOT, b"a"));
            u.expect("unlink");
            let nlink = e.getattr(f).unwrap().nlink;
            match l {
                Ok(a) => {
                    assert_eq!(nlink, 1);
                    assert_eq!(ino_of(&e, ROOT, b"b"), Ok(f));
                    e.forget(a.ino, 1);
                }
                Err(Error::NotFound) => {
                    assert_eq!(nlink, 0);
                    assert_eq!(ino_of(&e, ROOT, b"b"), Err(Error::NotFound));
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
            assert_eq!(ino_of(&e, ROOT, b"a"), Err(Error::NotFound));
        });
    }

    /// A file moved from directory `c` up into its parent `p` (created
    /// later, so the higher inode) vs `rmdir p/c` (which locks `p`, then
    /// `c`): neither waits forever; the removal fails `NotEmpty` if it ran
    /// before the move, else removes the emptied directory. Catches
    /// `loom_bug = "ns_rename_lock_order"` (the parents in inode order
    /// alone: the rename holds `c` while the removal holds `p`).
    #[test]
    fn rename_up_vs_rmdir_of_the_source() {
        loom_tests::check("ns_races::rename_up_vs_rmdir_of_the_source", Bound::Exhaustive, || {
            let e = engine();
            let c = e.mkdir(ROOT, b"c", 0o755, 0, 0).unwrap().ino;
            let p = e.mkdir(ROOT, b"p", 0o755, 0, 0).unwrap().ino;
            e.rename(ROOT, b"c", p, b"c", 0).unwrap();
            let f = e.create(c, b"f", 0o644, 0, 0).unwrap().ino;
            e.forget(f, 1);
            e.forget(c, 1);
            e.forget(p, 1);
            let (r, d) = race(&e, move |e| e.rename(c, b"f", p, b"f", 0), move |e| e.rmdir(p, b"c"));
            r.expect("rename");
            assert_eq!(ino_of(&e, p, b"f"), Ok(f));
            match d {
                Ok(()) => assert_eq!(ino_of(&e, p, b"c"), Err(Error::NotFound)),
                Err(Error::NotEmpty) => assert_eq!(ino_of(&e, p, b"c"), Ok(c)),
                Err(other) => panic!("unexpected {other:?}"),
            }
        });
    }

    /// A file moved from `a` to its grandparent `b` (`b/c/a`; `a` made
    /// first, so the lower inode) vs `rmdir b/c` and `rmdir c/a` at once:
    /// each removal holds a parent and waits for its child, and such waits
    /// chain down the tree, so a rename that held `a` while waiting for `b`
    /// would close a cycle (a review found it in a version that ordered
    /// only a direct parent first). All three finish; the removals fail
    /// `NotEmpty` or succeed, the file is in `b`. Catches
    /// `loom_bug = "ns_rename_lock_order"`.
    #[test]
    fn rename_to_a_grandparent_vs_chained_rmdirs() {
        loom_tests::check("ns_races::rename_to_a_grandparent_vs_chained_rmdirs", Bound::Preemptions(2), || {
            let e = engine();
            let a = e.mkdir(ROOT, b"a", 0o755, 0, 0).unwrap().ino;
            let b = e.mkdir(ROOT, b"b", 0o755, 0, 0).unwrap().ino;
            let c = e.mkdir(b, b"c", 0o755, 0, 0).unwrap().ino;
            e.rename(ROOT, b"a", c, b"a", 0).unwrap();
            let f = e.create(a, b"f", 0o644, 0, 0).unwrap().ino;
            for i in [f, a, b, c] {
                e.forget(i, 1);
            }
            assert!(a < b);
            let e1 = Arc::clone(&e);
            let h1 = thread::spawn(move || e1.rmdir(b, b"c"));
            let e2 = Arc::clone(&e);
            let h2 = thread::spawn(move || e2.rmdir(c, b"a"));
            e.rename(a, b"f", b, b"f", 0).expect("rename");
            for r in [h1.join().unwrap(), h2.join().unwrap()] {
                assert!(matches!(r, Ok(()) | Err(Error::NotEmpty)), "{r:?}");
            }
            assert_eq!(ino_of(&e, b, b"f"), Ok(f));
        });
    }

    /// Rename of directory `d` to `p/e` vs create of `x` inside `d`: the
    /// create succeeds (the directory stays alive), and `x` is reachable under
    /// the directory's new name only.
    #[test]
    fn rename_dir_vs_create_inside() {
        loom_tests::check("ns_races::rename_dir_vs_create_inside", Bound::Exhaustive, || {
            let e = engine();
            let d = e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino;
            let p = e.mkdir(ROOT, b"p", 0o755, 0, 0).unwrap().ino;
            let (r, c) = race(&e, move |e| e.rename(ROOT, b"d", p, b"e", 0), move |e| e.create(d, b"x", 0o644, 0, 0));
            r.expect("rename");
            let x = c.expect("create inside a live directory").ino;
            assert_eq!(ino_of(&e, p, b"e"), Ok(d));
            assert_eq!(ino_of(&e, d, b"x"), Ok(x));
            assert_eq!(ino_of(&e, ROOT, b"d"), Err(Error::NotFound));
            assert_eq!(e.getattr(d).unwrap().kind, FileType::Directory);
        });
    }

    /// Rename of `d` over the empty directory `t` vs create of `x` inside
    /// `t`: never both succeed (no entry is created in a directory that the
    /// rename removed); whichever lost gets `NotFound` or `NotEmpty`, and the
    /// replaced directory is freed. Catches `loom_bug = "ns_create_in_dead_dir"`.
    #[test]
    fn rename_over_empty_dir_vs_create_inside_it() {
        loom_tests::check("ns_races::rename_over_empty_dir_vs_create_inside_it", Bound::Exhaustive, || {
            let e = engine();
            let d = e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino;
            let t = e.mkdir(ROOT, b"t", 0o755, 0, 0).unwrap().ino;
            e.forget(t, 1);
            let (r, c) = race(&e, |e| e.rename(ROOT, b"d", ROOT, b"t", 0), move |e| e.create(t, b"x", 0o644, 0, 0));
            match (&r, &c) {
                (Ok(()), Err(Error::NotFound)) => {
                    assert_eq!(ino_of(&e, ROOT, b"t"), Ok(d));
                    assert_eq!(e.stats().inodes, 2, "root and d (now t): the replaced t is freed");
                }
                (Err(Error::NotEmpty), Ok(x)) => {
                    assert_eq!(ino_of(&e, t, b"x"), Ok(x.ino));
                    assert_eq!(ino_of(&e, ROOT, b"d"), Ok(d));
                }
                _ => panic!("rename {r:?} and create {c:?}: never both"),
            }
        });
    }

    /// Link into another directory vs unlink of the only name: the two hold
    /// different directory locks, so only the node's `life` mutex orders
    /// them. The link count is exact and matches the names that exist: 1
    /// and `d/b` if the link came first, else 0, `NotFound`, and no `d/b`.
    #[test]
    fn link_elsewhere_vs_unlink() {
        loom_tests::check("ns_races::link_elsewhere_vs_unlink", Bound::Exhaustive, || {
            let e = engine();
            let d = e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino;
            let f = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino; // one lookup ref kept
            let (l, u) = race(&e, move |e| e.link(f, d, b"b"), |e| e.unlink(ROOT, b"a"));
            u.expect("unlink");
            let nlink = e.getattr(f).unwrap().nlink;
            match l {
                Ok(a) => {
                    assert_eq!(a.ino, f);
                    assert_eq!(nlink, 1);
                    assert_eq!(ino_of(&e, d, b"b"), Ok(f));
                    e.forget(f, 1);
                }
                Err(Error::NotFound) => {
                    assert_eq!(nlink, 0);
                    assert_eq!(ino_of(&e, d, b"b"), Err(Error::NotFound));
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
            e.forget(f, 1);
            let freed = e.getattr(f).is_err();
            assert_eq!(freed, nlink == 0, "freed iff no name is left (nlink {nlink})");
        });
    }

    /// Two links of one file into two directories race each other (the
    /// main thread then unlinks the original name): no link-count update
    /// is lost, the count is 3 before the unlink and 2 after.
    #[test]
    fn two_links_race() {
        loom_tests::check("ns_races::two_links_race", Bound::Env, || {
            let e = engine();
            let d = e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino;
            let f = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino; // one lookup ref kept
            let (l1, l2) = race(&e, move |e| e.link(f, d, b"b"), move |e| e.link(f, ROOT, b"c"));
            l1.expect("link d/b");
            l2.expect("link c");
            assert_eq!(e.getattr(f).unwrap().nlink, 3);
            e.unlink(ROOT, b"a").unwrap();
            assert_eq!(e.getattr(f).unwrap().nlink, 2);
            assert_eq!(ino_of(&e, d, b"b"), Ok(f));
            assert_eq!(ino_of(&e, ROOT, b"c"), Ok(f));
            e.forget(f, 3);
            assert_eq!(e.getattr(f).unwrap().nlink, 2, "forget does not drop links");
        });
    }

    /// `(name, ino, kind)` of every entry of `dir`, from one listing.
    fn listing(e: &Engine, dir: u64) -> Vec<(Vec<u8>, u64, FileType)> {
        let mut out = Vec::new();
        e.readdir(dir, 0, |d| {
            if d.name != b"." && d.name != b".." {
                out.push((d.name.to_vec(), d.ino, d.kind));
            }
            true
        })
        .unwrap();
        out.sort_by(|x, y| x.0.cmp(&y.0));
        out
    }

    /// Rename `a` to `b` with `WHITEOUT` vs a listing of the directory (one
    /// read lock: an atomic view): `a` is the file and there is no `b`, or
    /// `a` is a whiteout and `b` the file; never `a` missing, never both
    /// names for the file. Catches `loom_bug = "ns_whiteout_late"`.
    #[test]
    fn rename_whiteout_vs_readdir() {
        loom_tests::check("ns_races::rename_whiteout_vs_readdir", Bound::Exhaustive, || {
            let e = engine();
            let src = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino;
            e.forget(src, 1);
            let (r, seen) = race(&e, |e| e.rename(ROOT, b"a", ROOT, b"b", WHITEOUT), |e| listing(e, ROOT));
            r.expect("rename");
            match &seen[..] {
                [(a, i, FileType::Regular)] => assert_eq!((&a[..], *i), (&b"a"[..], src), "before: {seen:?}"),
                [(a, w, FileType::CharDevice), (b, i, FileType::Regular)] => {
                    assert_eq!((&a[..], &b[..], *i), (&b"a"[..], &b"b"[..], src), "after: {seen:?}");
                    assert_ne!(*w, src);
                }
                _ => panic!("the source name missing or doubled: {seen:?}"),
            }
            let w = ino_of(&e, ROOT, b"a").expect("the whiteout");
            assert_eq!(e.getattr(w).unwrap().kind, FileType::CharDevice);
            assert_eq!(ino_of(&e, ROOT, b"b"), Ok(src));
            assert_eq!(e.stats().inodes, 3);
        });
    }

    /// Rename `d1/a` to `d2/b` with `WHITEOUT` vs lookups of `d1/a` then
    /// `d2/b`: `a` always resolves (the file, or the whiteout); once it is
    /// the whiteout, `b` is the file. Six preemptions (55,000 executions,
    /// ~7 s): the full exploration is 4.6 million (~10 min here).
    #[test]
    fn rename_whiteout_across_vs_lookup() {
        loom_tests::check("ns_races::rename_whiteout_across_vs_lookup", Bound::Preemptions(6), || {
            let e = engine();
            let d1 = e.mkdir(ROOT, b"d1", 0o755, 0, 0).unwrap().ino;
            let d2 = e.mkdir(ROOT, b"d2", 0o755, 0, 0).unwrap().ino;
            let src = e.create(d1, b"a", 0o644, 0, 0).unwrap().ino;
            e.forget(src, 1);
            let (r, (seen_a, seen_b)) = race(
                &e,
                move |e| e.rename(d1, b"a", d2, b"b", WHITEOUT),
                move |e| (ino_of(e, d1, b"a"), ino_of(e, d2, b"b")),
            );
            r.expect("rename");
            let a = seen_a.expect("the source name always resolves");
            if a != src {
                assert_eq!(seen_b, Ok(src), "a was the whiteout but b was not the file");
            }
            let w = ino_of(&e, d1, b"a").unwrap();
            assert_ne!(w, src);
            assert_eq!(e.getattr(w).unwrap().kind, FileType::CharDevice);
            assert_eq!(ino_of(&e, d2, b"b"), Ok(src));
        });
    }

    /// Rename with `WHITEOUT` vs a create when one inode is left: exactly one
    /// gets it; the other fails with `NoInodes` and changed nothing (a failed
    /// rename leaves `a` the file and makes no `b`).
    #[test]
    fn rename_whiteout_vs_create_at_inode_limit() {
        loom_tests::check("ns_races::rename_whiteout_vs_create_at_inode_limit", Bound::Exhaustive, || {
            let cfg = Config {
                sector_size: SS,
                max_bytes: 1024,
                max_inodes: 3,
                inline_max: 0,
                cache_slots: 1,
                ..Config::default()
            };
            let e = Arc::new(Engine::new_unchecked(cfg));
            let src = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino;
            e.forget(src, 1);
            let (r, c) =
                race(&e, |e| e.rename(ROOT, b"a", ROOT, b"b", WHITEOUT), |e| e.create(ROOT, b"c", 0o644, 0, 0));
            let names: Vec<(Vec<u8>, FileType)> = listing(&e, ROOT).into_iter().map(|(n, _, k)| (n, k)).collect();
            match (&r, &c) {
                (Ok(()), Err(Error::NoInodes)) => {
                    assert_eq!(names, vec![(b"a".to_vec(), FileType::CharDevice), (b"b".to_vec(), FileType::Regular)]);
                    assert_eq!(ino_of(&e, ROOT, b"b"), Ok(src));
                }
                (Err(Error::NoInodes), Ok(x)) => {
                    assert_eq!(names, vec![(b"a".to_vec(), FileType::Regular), (b"c".to_vec(), FileType::Regular)]);
                    assert_eq!(ino_of(&e, ROOT, b"a"), Ok(src));
                    e.forget(x.ino, 1);
                }
                _ => panic!("rename {r:?}, create {c:?}: exactly one gets the last inode"),
            }
            assert_eq!(e.stats().inodes, 3);
        });
    }
}
