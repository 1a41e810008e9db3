//! loom model of sector reclamation: a sector goes back to the pool only
//! after the last reader that could reach it is done, and nothing leaks.
//!
//! # Invariant
//! * A sector replaced by a copy-on-write, cut off by a truncate, or owned
//!   by a file that was unlinked and forgotten is freed only when the last
//!   table version that reaches it is dropped: by the writer, or by a reader
//!   that still holds that version. The pool has one cache slot, so the next
//!   sector anyone takes is the one freed last, and the models write into it
//!   at once: a premature free shows up as a loom data race between that
//!   write and the reader still copying from the sector (and as a wrong
//!   byte in what it read).
//! * After everything is dropped or removed: `used == 0`, no sector in use,
//!   and (loom's leak check, run after every execution) no `Arc` leaked.
//!
//! # What the model covers
//! The real `Engine::read`/`write`/`setattr` (truncate)/`unlink`/`forget`,
//! the node's `ArcSwap` (the facade stand-in), the page table's nodes and
//! pages shared between versions without counts (freed by versions and
//! blocks, `node.rs` "Versions"), the retired lists and the pool's free
//! path.
//!
//! # What it does not cover
//! arc-swap's own deferred reclamation (its debt slots): the stand-in drops
//! the old version as soon as the last clone goes, which is the contract
//! arc-swap documents. Orphans that stay open (`open`/`release`) follow the
//! same path as lookup references and are not modelled separately.

#[cfg(loom)]
mod tests {
    use engine::sync::Arc;
    use engine::{Engine, Error, SetAttr, ROOT};
    use loom::thread;
    use loom_tests::{tiny_engine, Bound, SS};

    fn uniform(buf: &[u8]) -> bool {
        buf.iter().all(|&b| b == buf[0])
    }

    fn no_leak(e: &Engine) {
        let st = e.stats();
        assert_eq!(st.pool.used, 0, "bytes still charged");
        assert_eq!(st.pool.sectors, 0, "sectors still in use");
        assert_eq!(e.pool().free_sectors() as u64 * SS as u64, st.pool.mapped, "a sector leaked");
    }

    /// A reader copies out of version 1 while the writer publishes version 2
    /// (a copy-on-write, freeing version 1's sector when nobody holds it) and
    /// then version 3 (which takes the freed sector, if it was freed).
    #[test]
    fn cow_frees_old_sector_after_reader() {
        loom_tests::check("reclaim::cow_frees_old_sector_after_reader", Bound::Exhaustive, || {
            let e = Arc::new(tiny_engine(4 * SS as u64, 0));
            let ino = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
            e.write(ino, 0, &[1; SS]).unwrap();
            let r = Arc::clone(&e);
            let reader = thread::spawn(move || {
                let mut buf = [0u8; SS];
                assert_eq!(r.read(ino, 0, &mut buf).unwrap(), SS);
                assert!(uniform(&buf) && (1..=3).contains(&buf[0]), "read {buf:?}");
            });
            e.write(ino, 0, &[2; SS]).unwrap();
            e.write(ino, 0, &[3; SS]).unwrap();
            reader.join().unwrap();
            assert_eq!(e.stats().pool.sectors, 1);
            e.unlink(ROOT, b"f").unwrap();
            e.forget(ino, 1);
            no_leak(&e);
        });
    }

    /// A reader races a truncate to 0 (which drops the table) followed by a
    /// write to another file (which takes the freed sector).
    #[test]
    fn truncate_frees_after_reader() {
        loom_tests::check("reclaim::truncate_frees_after_reader", Bound::Exhaustive, || {
            let e = Arc::new(tiny_engine(4 * SS as u64, 0));
            let a = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino;
            let b = e.create(ROOT, b"b", 0o644, 0, 0).unwrap().ino;
            e.write(a, 0, &[1; SS]).unwrap();
            let r = Arc::clone(&e);
            let reader = thread::spawn(move || {
                let mut buf = [0u8; SS];
                let n = r.read(a, 0, &mut buf).unwrap();
                assert!(n == 0 || (n == SS && buf == [1; SS]), "read {n} bytes: {buf:?}");
            });
            e.setattr(a, &SetAttr { size: Some(0), ..SetAttr::default() }).unwrap();
            e.write(b, 0, &[9; SS]).unwrap();
            reader.join().unwrap();
            for (name, ino) in [(&b"a"[..], a), (b"b", b)] {
                e.unlink(ROOT, name).unwrap();
                e.forget(ino, 1);
            }
            no_leak(&e);
        });
    }

    /// As `truncate_frees_after_reader`, with a table above the leaves (issue
    /// 18): under loom a leaf is 2 pages (one sector) under 2-way inner
    /// nodes, so a three-sector file is a table of height 2. Truncating it to
    /// one sector cuts the path to sector 1 (a copy of the inner nodes above
    /// it), retires sector 1's leaf and sector 2's whole subtree
    /// (`Retired::Tree`), and prunes the height back to 0; the write to
    /// another file then takes the freed pages and nodes (one cache slot,
    /// spare nodes per thread), so a premature free of any of them is a
    /// data race with the reader still walking or copying them.
    #[test]
    fn truncate_deep_table_frees_after_reader() {
        loom_tests::check("reclaim::truncate_deep_table_frees_after_reader", Bound::Exhaustive, || {
            let e = Arc::new(tiny_engine(6 * SS as u64, 0));
            let a = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino;
            let b = e.create(ROOT, b"b", 0o644, 0, 0).unwrap().ino;
            e.write(a, 0, &[1; 3 * SS]).unwrap();
            let r = Arc::clone(&e);
            let reader = thread::spawn(move || {
                let mut buf = [0u8; 3 * SS];
                let n = r.read(a, 0, &mut buf).unwrap();
                assert!((n == SS || n == 3 * SS) && buf[..n].iter().all(|&x| x == 1), "read {n} bytes: {buf:?}");
            });
            e.setattr(a, &SetAttr { size: Some(SS as u64), ..SetAttr::default() }).unwrap();
            e.write(b, 0, &[9; 2 * SS]).unwrap();
            reader.join().unwrap();
            assert_eq!(e.stats().pool.sectors, 3, "a's cut sectors freed");
            for (name, ino) in [(&b"a"[..], a), (b"b", b)] {
                e.unlink(ROOT, name).unwrap();
                e.forget(ino, 1);
            }
            no_leak(&e);
        });
    }

    /// A reader races the unlink and last `forget` of the file it reads
    /// (which frees the node and its sectors) and a write to a new file.
    #[test]
    fn unlink_frees_after_reader() {
        loom_tests::check("reclaim::unlink_frees_after_reader", Bound::Exhaustive, || {
            let e = Arc::new(tiny_engine(4 * SS as u64, 0));
            let a = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino;
            e.write(a, 0, &[1; SS]).unwrap();
            let r = Arc::clone(&e);
            let reader = thread::spawn(move || {
                let mut buf = [0u8; SS];
                match r.read(a, 0, &mut buf) {
                    Ok(n) => assert!(n == SS && buf == [1; SS], "read {n} bytes: {buf:?}"),
                    Err(err) => assert_eq!(err, Error::NotFound),
                }
            });
            e.unlink(ROOT, b"a").unwrap();
            e.forget(a, 1);
            let b = e.create(ROOT, b"b", 0o644, 0, 0).unwrap().ino;
            e.write(b, 0, &[9; SS]).unwrap();
            reader.join().unwrap();
            assert_eq!(e.stats().inodes, 2, "root and b");
            e.unlink(ROOT, b"b").unwrap();
            e.forget(b, 1);
            no_leak(&e);
        });
    }
}
