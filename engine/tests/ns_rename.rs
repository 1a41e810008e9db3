//! rename and renameat2 flags: plain, replace, NOREPLACE, EXCHANGE, loops,
//! type mismatches, same-inode no-ops, and link counts throughout.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use engine::rename_flags::{EXCHANGE, NOREPLACE, WHITEOUT};
use engine::{Engine, Error, FileType, Ino, ROOT};
use support::*;

fn nlink(e: &Engine, ino: Ino) -> u32 {
    e.getattr(ino).unwrap().nlink
}

/// Runs `f` on another thread and fails (instead of hanging the suite) if it
/// does not finish: the engine must never deadlock.
fn no_deadlock<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("the operation deadlocked")
}

#[test]
fn plain_same_dir_and_across() {
    let e = small();
    let a = put(&e, ROOT, b"a", b"contents");
    let d = mkdir(&e, ROOT, b"d");
    e.rename(ROOT, b"a", ROOT, b"b", 0).unwrap();
    assert_eq!(peek(&e, ROOT, b"a").err(), Some(Error::NotFound));
    assert_eq!(peek(&e, ROOT, b"b").unwrap().ino, a);
    e.rename(ROOT, b"b", d, b"c", 0).unwrap();
    assert_eq!(names(&e, ROOT), vec![b"d".to_vec()]);
    assert_eq!(names(&e, d), vec![b"c".to_vec()]);
    assert_eq!(read_all(&e, a), b"contents");
    assert_eq!(nlink(&e, a), 1);
    assert_eq!((nlink(&e, ROOT), nlink(&e, d)), (3, 2));
    teardown(&e);
}

#[test]
fn directory_moves_update_links_and_dotdot() {
    let e = small();
    let a = mkdir(&e, ROOT, b"a");
    let b = mkdir(&e, ROOT, b"b");
    let s = mkdir(&e, a, b"s");
    mkfile(&e, s, b"f");
    assert_eq!((nlink(&e, ROOT), nlink(&e, a), nlink(&e, b)), (4, 3, 2));
    e.rename(a, b"s", b, b"t", 0).unwrap();
    assert_eq!((nlink(&e, ROOT), nlink(&e, a), nlink(&e, b), nlink(&e, s)), (4, 2, 3, 2));
    assert_eq!(peek(&e, s, b"..").unwrap().ino, b);
    assert_eq!(names(&e, s), vec![b"f".to_vec()]);
    // Same-directory rename of a directory changes no link count.
    e.rename(b, b"t", b, b"u", 0).unwrap();
    assert_eq!((nlink(&e, b), nlink(&e, s)), (3, 2));
    // Up to the root.
    e.rename(b, b"u", ROOT, b"top", 0).unwrap();
    assert_eq!((nlink(&e, ROOT), nlink(&e, b)), (5, 2));
    assert_eq!(peek(&e, s, b"..").unwrap().ino, ROOT);
    teardown(&e);
}

#[test]
fn replace_file() {
    let e = small();
    let a = put(&e, ROOT, b"a", b"new");
    let d = mkdir(&e, ROOT, b"d");
    let b = put(&e, d, b"b", &vec![9u8; 100_000]);
    e.rename(ROOT, b"a", d, b"b", 0).unwrap();
    assert_eq!(peek(&e, d, b"b").unwrap().ino, a);
    assert_eq!(e.getattr(b), Err(Error::NotFound), "replaced file freed");
    assert_eq!(read_all(&e, a), b"new");
    assert_eq!(e.stats().pool.used, 3, "the replaced file's memory is back");
    // Replacing a file that has another link only drops that link.
    let c = put(&e, ROOT, b"c", b"c");
    e.forget(e.link(c, ROOT, b"c2").unwrap().ino, 1);
    mkfile(&e, ROOT, b"x");
    e.rename(ROOT, b"x", ROOT, b"c", 0).unwrap();
    assert_eq!(nlink(&e, c), 1);
    assert_eq!(read_all(&e, peek(&e, ROOT, b"c2").unwrap().ino), b"c");
    // Replacing an open file leaves a readable orphan.
    let o = put(&e, ROOT, b"o", b"orphan");
    e.open(o).unwrap();
    mkfile(&e, ROOT, b"y");
    e.rename(ROOT, b"y", ROOT, b"o", 0).unwrap();
    assert_eq!(nlink(&e, o), 0);
    assert_eq!(read_all(&e, o), b"orphan");
    e.release(o);
    assert_eq!(e.getattr(o), Err(Error::NotFound));
    teardown(&e);
}

#[test]
fn replace_empty_dir() {
    let e = small();
    let a = mkdir(&e, ROOT, b"a");
    let p = mkdir(&e, ROOT, b"p");
    let t = mkdir(&e, p, b"t");
    mkfile(&e, a, b"inside");
    assert_eq!((nlink(&e, ROOT), nlink(&e, p)), (4, 3));
    e.rename(ROOT, b"a", p, b"t", 0).unwrap();
    assert_eq!(e.getattr(t), Err(Error::NotFound), "replaced directory freed");
    assert_eq!(peek(&e, p, b"t").unwrap().ino, a);
    assert_eq!(names(&e, a), vec![b"inside".to_vec()]);
    assert_eq!((nlink(&e, ROOT), nlink(&e, p), nlink(&e, a)), (3, 3, 2));
    // Same directory.
    mkdir(&e, p, b"e");
    e.rename(p, b"t", p, b"e", 0).unwrap();
    assert_eq!(names(&e, p), vec![b"e".to_vec()]);
    assert_eq!(nlink(&e, p), 3);
    // A referenced replaced directory is dead: nothing can be created in it.
    let v = e.mkdir(p, b"v", 0o755, 0, 0).unwrap();
    mkdir(&e, p, b"w");
    e.rename(p, b"w", p, b"v", 0).unwrap();
    assert_eq!(nlink(&e, v.ino), 0);
    assert_eq!(e.create(v.ino, b"x", 0o644, 0, 0).err(), Some(Error::NotFound));
    assert_eq!(e.rename(p, b"e", v.ino, b"x", 0).err(), Some(Error::NotFound));
    e.forget(v.ino, 1);
    assert_eq!(nlink(&e, p), 4);
    teardown(&e);
}

#[test]
fn refusals_change_nothing() {
    let e = small();
    let f = put(&e, ROOT, b"f", b"f");
    let d = mkdir(&e, ROOT, b"d");
    let full = mkdir(&e, ROOT, b"full");
    mkfile(&e, full, b"x");
    let before = entries(&e, ROOT);
    let check = |e: &Engine| {
        assert_eq!(entries(e, ROOT), before);
        assert_eq!(names(e, full), vec![b"x".to_vec()]);
        assert_eq!((nlink(e, ROOT), nlink(e, d), nlink(e, full), nlink(e, f)), (4, 2, 2, 1));
    };
    assert_eq!(e.rename(ROOT, b"d", ROOT, b"full", 0), Err(Error::NotEmpty));
    check(&e);
    assert_eq!(e.rename(ROOT, b"f", ROOT, b"d", 0), Err(Error::IsDir));
    check(&e);
    assert_eq!(e.rename(ROOT, b"d", ROOT, b"f", 0), Err(Error::NotDir));
    check(&e);
    assert_eq!(e.rename(ROOT, b"f", ROOT, b"d", NOREPLACE), Err(Error::Exists));
    assert_eq!(e.rename(ROOT, b"d", full, b"x", NOREPLACE), Err(Error::Exists));
    check(&e);
    assert_eq!(e.rename(ROOT, b"nope", ROOT, b"g", 0), Err(Error::NotFound));
    assert_eq!(e.rename(ROOT, b"f", 9999, b"g", 0), Err(Error::NotFound));
    assert_eq!(e.rename(9999, b"f", ROOT, b"g", 0), Err(Error::NotFound));
    assert_eq!(e.rename(f, b"f", ROOT, b"g", 0), Err(Error::NotDir));
    assert_eq!(e.rename(ROOT, b"f", f, b"g", 0), Err(Error::NotDir));
    assert_eq!(e.rename(ROOT, b"f", ROOT, b"g", EXCHANGE), Err(Error::NotFound), "exchange needs both");
    for bad in [8u32, 0x100, EXCHANGE | NOREPLACE, EXCHANGE | WHITEOUT, EXCHANGE | WHITEOUT | NOREPLACE, u32::MAX] {
        assert_eq!(e.rename(ROOT, b"f", ROOT, b"g", bad), Err(Error::InvalidArgument), "flags {bad:#x}");
    }
    check(&e);
    teardown(&e);
}

#[test]
fn noreplace_to_a_free_name() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    e.rename(ROOT, b"f", ROOT, b"g", NOREPLACE).unwrap();
    assert_eq!(peek(&e, ROOT, b"g").unwrap().ino, f);
    teardown(&e);
}

#[test]
fn loops_are_refused() {
    let e = small();
    let a = mkdir(&e, ROOT, b"a");
    let b = mkdir(&e, a, b"b");
    let c = mkdir(&e, b, b"c");
    assert_eq!(e.rename(ROOT, b"a", a, b"x", 0), Err(Error::WouldLoop), "into itself");
    assert_eq!(e.rename(ROOT, b"a", c, b"x", 0), Err(Error::WouldLoop), "below itself");
    assert_eq!(e.rename(a, b"b", c, b"x", 0), Err(Error::WouldLoop));
    assert_eq!(e.rename(ROOT, b"a", c, b"x", NOREPLACE), Err(Error::WouldLoop));
    mkfile(&e, c, b"file");
    assert_eq!(e.rename(ROOT, b"a", c, b"file", EXCHANGE), Err(Error::WouldLoop));
    assert_eq!(e.rename(c, b"file", ROOT, b"a", EXCHANGE), Err(Error::WouldLoop), "target is an ancestor");
    assert_eq!(names(&e, ROOT), vec![b"a".to_vec()]);
    assert_eq!(peek(&e, c, b"..").unwrap().ino, b);
    assert_eq!((nlink(&e, a), nlink(&e, b), nlink(&e, c)), (3, 3, 2));
    teardown(&e);
}

/// The target is an ancestor of the source (here: its own parent). Linux
/// says ENOTEMPTY: the target cannot be empty, it contains the source. This
/// once deadlocked: rename locked the parent, then the target (the same
/// directory) again.
#[test]
fn target_is_the_source_parent() {
    let e = std::sync::Arc::new(small());
    let d = mkdir(&e, ROOT, b"d");
    let s = mkdir(&e, d, b"s");
    let g = mkdir(&e, s, b"g");
    let e2 = std::sync::Arc::clone(&e);
    let r = no_deadlock(move || e2.rename(d, b"s", ROOT, b"d", 0));
    assert_eq!(r, Err(Error::NotEmpty));
    let e2 = std::sync::Arc::clone(&e);
    let r = no_deadlock(move || e2.rename(s, b"g", ROOT, b"d", 0));
    assert_eq!(r, Err(Error::NotEmpty), "grandparent");
    assert_eq!(peek(&e, ROOT, b"d").unwrap().ino, d);
    assert_eq!(peek(&e, s, b"..").unwrap().ino, d);
    assert_eq!(peek(&e, g, b"..").unwrap().ino, s);
    assert_eq!((nlink(&e, ROOT), nlink(&e, d), nlink(&e, s), nlink(&e, g)), (3, 3, 3, 2));
    teardown(&e);
}

#[test]
fn same_inode_is_a_noop() {
    let e = small();
    let f = put(&e, ROOT, b"f", b"x");
    e.rename(ROOT, b"f", ROOT, b"f", 0).unwrap();
    e.rename(ROOT, b"f", ROOT, b"f", EXCHANGE).unwrap();
    let d = mkdir(&e, ROOT, b"d");
    e.rename(ROOT, b"d", ROOT, b"d", 0).unwrap();
    e.forget(e.link(f, ROOT, b"g").unwrap().ino, 1);
    // Two links to one inode: rename does nothing, both names stay.
    e.rename(ROOT, b"f", ROOT, b"g", 0).unwrap();
    assert_eq!(names(&e, ROOT), vec![b"f".to_vec(), b"d".to_vec(), b"g".to_vec()]);
    assert_eq!((nlink(&e, f), nlink(&e, d), nlink(&e, ROOT)), (2, 2, 3));
    assert_eq!(read_all(&e, f), b"x");
    teardown(&e);
}

#[test]
fn exchange_files() {
    let e = small();
    let a = put(&e, ROOT, b"a", b"AAA");
    let d = mkdir(&e, ROOT, b"d");
    let b = put(&e, d, b"b", b"B");
    e.rename(ROOT, b"a", d, b"b", EXCHANGE).unwrap();
    assert_eq!(peek(&e, ROOT, b"a").unwrap().ino, b);
    assert_eq!(peek(&e, d, b"b").unwrap().ino, a);
    assert_eq!(read_all(&e, peek(&e, ROOT, b"a").unwrap().ino), b"B");
    assert_eq!((nlink(&e, a), nlink(&e, b), nlink(&e, ROOT), nlink(&e, d)), (1, 1, 3, 2));
    // Names keep their place in the listing (cookies).
    assert_eq!(names(&e, ROOT), vec![b"a".to_vec(), b"d".to_vec()]);
    // Same directory.
    put(&e, d, b"c", b"C");
    e.rename(d, b"b", d, b"c", EXCHANGE).unwrap();
    assert_eq!(read_all(&e, peek(&e, d, b"b").unwrap().ino), b"C");
    assert_eq!(read_all(&e, peek(&e, d, b"c").unwrap().ino), b"AAA");
    teardown(&e);
}

#[test]
fn exchange_dir_and_file_across_dirs() {
    let e = small();
    let p = mkdir(&e, ROOT, b"p");
    let q = mkdir(&e, ROOT, b"q");
    let dir = mkdir(&e, p, b"x");
    mkfile(&e, dir, b"inner");
    let file = put(&e, q, b"y", b"file");
    assert_eq!((nlink(&e, p), nlink(&e, q)), (3, 2));
    e.rename(p, b"x", q, b"y", EXCHANGE).unwrap();
    // p/x is now the file, q/y the directory.
    let px = peek(&e, p, b"x").unwrap();
    let qy = peek(&e, q, b"y").unwrap();
    assert_eq!((px.ino, px.kind), (file, FileType::Regular));
    assert_eq!((qy.ino, qy.kind), (dir, FileType::Directory));
    assert_eq!(entries(&e, p), vec![(b"x".to_vec(), file, FileType::Regular)]);
    assert_eq!(entries(&e, q), vec![(b"y".to_vec(), dir, FileType::Directory)]);
    assert_eq!((nlink(&e, p), nlink(&e, q), nlink(&e, dir), nlink(&e, file)), (2, 3, 2, 1));
    assert_eq!(peek(&e, dir, b"..").unwrap().ino, q);
    assert_eq!(names(&e, dir), vec![b"inner".to_vec()]);
    // And back, the other way round (file is the source).
    e.rename(p, b"x", q, b"y", EXCHANGE).unwrap();
    assert_eq!((nlink(&e, p), nlink(&e, q)), (3, 2));
    assert_eq!(peek(&e, dir, b"..").unwrap().ino, p);
    // Two directories across parents: counts unchanged, `..` swapped.
    let z = mkdir(&e, q, b"z");
    e.rename(p, b"x", q, b"z", EXCHANGE).unwrap();
    assert_eq!((nlink(&e, p), nlink(&e, q)), (3, 3));
    assert_eq!(peek(&e, dir, b"..").unwrap().ino, q);
    assert_eq!(peek(&e, z, b"..").unwrap().ino, p);
    teardown(&e);
}

#[test]
fn rename_over_removed_parent_fails() {
    let e = small();
    mkfile(&e, ROOT, b"f");
    let d = e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap();
    e.rmdir(ROOT, b"d").unwrap();
    assert_eq!(e.rename(ROOT, b"f", d.ino, b"f", 0), Err(Error::NotFound));
    e.forget(d.ino, 1);
    assert_eq!(names(&e, ROOT), vec![b"f".to_vec()]);
    teardown(&e);
}

#[test]
fn rename_touches_parents() {
    let e = small();
    let p = mkdir(&e, ROOT, b"p");
    mkfile(&e, ROOT, b"f");
    let t = engine::Time { secs: 1000, nanos: 0 };
    let old = engine::SetAttr { mtime: Some(engine::SetTime::At(t)), ..Default::default() };
    e.setattr(ROOT, &old).unwrap();
    e.setattr(p, &old).unwrap();
    e.rename(ROOT, b"f", p, b"f", 0).unwrap();
    assert!(e.getattr(ROOT).unwrap().mtime > t);
    assert!(e.getattr(p).unwrap().mtime > t);
    teardown(&e);
}
