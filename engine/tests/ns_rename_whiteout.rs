//! `renameat2(RENAME_WHITEOUT)` (overlayfs upper layers): the source name
//! becomes a whiteout (a character device 0/0, mode 0, owned by the caller)
//! in the same step as the rename; same directory and across, with
//! `NOREPLACE`, over an existing target, a directory source, refusals
//! (nothing changed, no inode taken), the inode limit, and a reader that
//! never sees the source name missing.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::rename_flags::{EXCHANGE, NOREPLACE, WHITEOUT};
use engine::{Attr, Config, Cred, Engine, Error, FileType, Ino, ROOT};
use support::*;

fn nlink(e: &Engine, ino: Ino) -> u32 {
    e.getattr(ino).unwrap().nlink
}

fn inodes(e: &Engine) -> u64 {
    e.stats().inodes
}

fn owner(uid: u32, gid: u32) -> Cred {
    Cred { uid, gid, groups: Vec::new() }
}

/// Asserts that `a` is a whiteout owned by `uid:gid`, as tmpfs leaves one.
fn assert_whiteout(a: &Attr, uid: u32, gid: u32) {
    assert_eq!(a.kind, FileType::CharDevice, "{a:?}");
    assert_eq!((a.perm, a.rdev, a.size, a.nlink), (0, 0, 0, 1), "{a:?}");
    assert_eq!((a.uid, a.gid), (uid, gid), "{a:?}");
}

#[test]
fn same_directory() {
    let e = small();
    let f = put(&e, ROOT, b"a", b"data");
    let before = inodes(&e);
    e.rename_as(ROOT, b"a", ROOT, b"b", WHITEOUT, &owner(1000, 100)).unwrap();
    let w = peek(&e, ROOT, b"a").unwrap();
    assert_whiteout(&w, 1000, 100);
    assert_ne!(w.ino, f);
    assert_eq!(peek(&e, ROOT, b"b").unwrap().ino, f);
    assert_eq!(read_all(&e, f), b"data");
    assert_eq!(inodes(&e), before + 1, "the whiteout is a new inode");
    let ents = entries(&e, ROOT);
    assert_eq!(ents.len(), 2);
    assert!(ents.contains(&(b"a".to_vec(), w.ino, FileType::CharDevice)), "{ents:?}");
    assert!(ents.contains(&(b"b".to_vec(), f, FileType::Regular)), "{ents:?}");
    assert_eq!(nlink(&e, ROOT), 2, "no directory moved");
    // Removing the whiteout frees it (no lookup reference was handed out).
    e.unlink(ROOT, b"a").unwrap();
    assert_eq!(e.getattr(w.ino), Err(Error::NotFound));
    teardown(&e);
}

#[test]
fn across_directories() {
    let e = small();
    let d1 = mkdir(&e, ROOT, b"d1");
    let d2 = mkdir(&e, ROOT, b"d2");
    let f = put(&e, d1, b"a", b"x");
    e.rename_as(d1, b"a", d2, b"b", WHITEOUT, &owner(7, 8)).unwrap();
    let w = peek(&e, d1, b"a").unwrap();
    assert_whiteout(&w, 7, 8);
    assert_eq!(peek(&e, d2, b"b").unwrap().ino, f);
    assert_eq!(names(&e, d1), vec![b"a".to_vec()]);
    assert_eq!(names(&e, d2), vec![b"b".to_vec()]);
    assert_eq!((nlink(&e, d1), nlink(&e, d2)), (2, 2));
    teardown(&e);
}

#[test]
fn with_noreplace() {
    let e = small();
    let f = mkfile(&e, ROOT, b"a");
    let g = mkfile(&e, ROOT, b"taken");
    let before = inodes(&e);
    // Onto an existing name: refused, nothing changed, no inode taken.
    assert_eq!(e.rename(ROOT, b"a", ROOT, b"taken", WHITEOUT | NOREPLACE), Err(Error::Exists));
    assert_eq!(inodes(&e), before);
    assert_eq!(peek(&e, ROOT, b"a").unwrap().ino, f);
    assert_eq!(peek(&e, ROOT, b"taken").unwrap().ino, g);
    // Onto a free name: done, with the whiteout.
    e.rename(ROOT, b"a", ROOT, b"b", WHITEOUT | NOREPLACE).unwrap();
    assert_whiteout(&peek(&e, ROOT, b"a").unwrap(), 0, 0);
    assert_eq!(peek(&e, ROOT, b"b").unwrap().ino, f);
    assert_eq!(inodes(&e), before + 1);
    teardown(&e);
}

#[test]
fn over_an_existing_target() {
    let e = small();
    let d = mkdir(&e, ROOT, b"d");
    let src = put(&e, ROOT, b"a", b"new");
    let old = put(&e, d, b"b", b"old");
    let before = inodes(&e);
    e.rename(ROOT, b"a", d, b"b", WHITEOUT).unwrap();
    assert_eq!(e.getattr(old), Err(Error::NotFound), "the replaced file is freed");
    assert_eq!(peek(&e, d, b"b").unwrap().ino, src);
    assert_whiteout(&peek(&e, ROOT, b"a").unwrap(), 0, 0);
    assert_eq!(inodes(&e), before, "one inode freed, one made");
    // The whiteout can itself be replaced (overlayfs copies a file up over it).
    let up = put(&e, ROOT, b"up", b"up");
    let w = peek(&e, ROOT, b"a").unwrap().ino;
    e.rename(ROOT, b"up", ROOT, b"a", 0).unwrap();
    assert_eq!(e.getattr(w), Err(Error::NotFound), "the whiteout is freed");
    assert_eq!(peek(&e, ROOT, b"a").unwrap().ino, up);
    teardown(&e);
}

#[test]
fn directory_source_leaves_a_whiteout_too() {
    let e = small();
    let p1 = mkdir(&e, ROOT, b"p1");
    let p2 = mkdir(&e, ROOT, b"p2");
    let s = mkdir(&e, p1, b"s");
    mkfile(&e, s, b"inside");
    assert_eq!((nlink(&e, p1), nlink(&e, p2)), (3, 2));
    e.rename(p1, b"s", p2, b"t", WHITEOUT).unwrap();
    assert_whiteout(&peek(&e, p1, b"s").unwrap(), 0, 0);
    assert_eq!(peek(&e, p2, b"t").unwrap().ino, s);
    assert_eq!(peek(&e, s, b"..").unwrap().ino, p2);
    assert_eq!(names(&e, s), vec![b"inside".to_vec()]);
    // The directory left p1 (the whiteout is no subdirectory) and joined p2.
    assert_eq!((nlink(&e, p1), nlink(&e, p2), nlink(&e, s)), (2, 3, 2));
    // Over an empty directory, in one directory: the target is removed.
    let v = mkdir(&e, ROOT, b"v");
    let t = mkdir(&e, ROOT, b"t");
    let root_links = nlink(&e, ROOT);
    e.rename(ROOT, b"v", ROOT, b"t", WHITEOUT).unwrap();
    assert_eq!(e.getattr(t), Err(Error::NotFound));
    assert_eq!(peek(&e, ROOT, b"t").unwrap().ino, v);
    assert_whiteout(&peek(&e, ROOT, b"v").unwrap(), 0, 0);
    assert_eq!(nlink(&e, ROOT), root_links - 1, "one subdirectory fewer (t), the whiteout is none");
    teardown(&e);
}

#[test]
fn refusals_change_nothing_and_take_no_inode() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    let d = mkdir(&e, ROOT, b"d");
    let full = mkdir(&e, ROOT, b"full");
    mkfile(&e, full, b"x");
    let before = entries(&e, ROOT);
    let n = inodes(&e);
    let check = |e: &Engine| {
        assert_eq!(entries(e, ROOT), before);
        assert_eq!(inodes(e), n, "no inode taken");
        assert_eq!((nlink(e, ROOT), nlink(e, d), nlink(e, f)), (4, 2, 1));
    };
    assert_eq!(e.rename(ROOT, b"d", ROOT, b"full", WHITEOUT), Err(Error::NotEmpty));
    check(&e);
    assert_eq!(e.rename(ROOT, b"f", ROOT, b"d", WHITEOUT), Err(Error::IsDir));
    assert_eq!(e.rename(ROOT, b"d", ROOT, b"f", WHITEOUT), Err(Error::NotDir));
    assert_eq!(e.rename(ROOT, b"nope", ROOT, b"g", WHITEOUT), Err(Error::NotFound));
    assert_eq!(e.rename(ROOT, b"d", d, b"below", WHITEOUT), Err(Error::WouldLoop));
    assert_eq!(e.rename(ROOT, b"f", ROOT, b"d", WHITEOUT | EXCHANGE), Err(Error::InvalidArgument));
    assert_eq!(e.rename(ROOT, b"f", ROOT, b"g", WHITEOUT | 8), Err(Error::InvalidArgument));
    check(&e);
    // Onto itself: nothing to do and no whiteout, as `vfs_rename`.
    e.rename(ROOT, b"f", ROOT, b"f", WHITEOUT).unwrap();
    check(&e);
    teardown(&e);
}

#[test]
fn inode_limit() {
    // Root, `a`, `b` and the empty directories `e1`, `e2`: the limit is full.
    let e = Engine::new(Config { max_inodes: 5, ..support::cfg(4096, 1 << 20, 64) }).unwrap();
    let a = put(&e, ROOT, b"a", b"a");
    let b = put(&e, ROOT, b"b", b"b");
    let e1 = mkdir(&e, ROOT, b"e1");
    let e2 = mkdir(&e, ROOT, b"e2");
    let before = entries(&e, ROOT);
    let unchanged = |e: &Engine| {
        assert_eq!(entries(e, ROOT), before);
        assert_eq!(inodes(e), 5);
        assert_eq!((read_all(e, a), read_all(e, b)), (b"a".to_vec(), b"b".to_vec()));
    };
    // To a free name, and over an existing file (the target would be freed,
    // but the whiteout is made first, as on tmpfs): ENOSPC, nothing changed.
    assert_eq!(e.rename(ROOT, b"a", ROOT, b"c", WHITEOUT), Err(Error::NoInodes));
    unchanged(&e);
    assert_eq!(e.rename(ROOT, b"a", ROOT, b"b", WHITEOUT), Err(Error::NoInodes));
    unchanged(&e);
    // Over an empty directory: the target is not left half removed.
    assert_eq!(e.rename(ROOT, b"e1", ROOT, b"e2", WHITEOUT), Err(Error::NoInodes));
    unchanged(&e);
    e.unlink(ROOT, b"b").unwrap();
    mkfile(&e, e2, b"still-usable");
    e.unlink(e2, b"still-usable").unwrap();
    // The plain rename needs no inode; with one free the whiteout fits.
    e.rename(ROOT, b"a", ROOT, b"c", 0).unwrap();
    e.rename(ROOT, b"c", ROOT, b"a", WHITEOUT).unwrap();
    assert_whiteout(&peek(&e, ROOT, b"c").unwrap(), 0, 0);
    assert_eq!(inodes(&e), 5);
    assert_eq!(e.rename(ROOT, b"e1", ROOT, b"e3", WHITEOUT), Err(Error::NoInodes));
    assert_eq!(peek(&e, ROOT, b"e1").unwrap().ino, e1);
    teardown(&e);
}

#[test]
fn owner_and_set_group_id_parent() {
    let e = small();
    let d = mkdir(&e, ROOT, b"d");
    e.setattr(d, &engine::SetAttr { mode: Some(0o2777), gid: Some(50), ..Default::default() }).unwrap();
    mkfile(&e, d, b"a");
    e.rename_as(d, b"a", d, b"b", WHITEOUT, &owner(1000, 1000)).unwrap();
    // As tmpfs: the parent's group, no set-group-ID bit on a non-directory.
    assert_whiteout(&peek(&e, d, b"a").unwrap(), 1000, 50);
    teardown(&e);
}

#[test]
fn whiteouts_can_be_linked_and_renamed_as_overlayfs_does() {
    let e = small();
    let work = mkdir(&e, ROOT, b"work");
    let upper = mkdir(&e, ROOT, b"upper");
    mkfile(&e, work, b"#1");
    e.rename(work, b"#1", work, b"#2", WHITEOUT).unwrap();
    let w = peek(&e, work, b"#1").unwrap().ino;
    // A shared whiteout: linked into place, then renamed over the entry.
    mkfile(&e, upper, b"gone");
    let l = e.link(w, work, b"#3").unwrap();
    e.forget(l.ino, 1);
    assert_eq!(nlink(&e, w), 2);
    e.rename(work, b"#3", upper, b"gone", 0).unwrap();
    assert_eq!(peek(&e, upper, b"gone").unwrap().ino, w);
    assert_eq!(nlink(&e, w), 2);
    teardown(&e);
}

#[test]
fn case_insensitive_keeps_the_stored_name() {
    let e = Engine::new(Config { case_insensitive: true, ..support::cfg(4096, 1 << 20, 64) }).unwrap();
    let f = mkfile(&e, ROOT, b"Foo");
    e.rename(ROOT, b"foo", ROOT, b"bar", WHITEOUT).unwrap();
    let ents = entries(&e, ROOT);
    assert_eq!(ents.len(), 2);
    assert!(ents.iter().any(|(n, _, k)| n == b"Foo" && *k == FileType::CharDevice), "{ents:?}");
    assert!(ents.contains(&(b"bar".to_vec(), f, FileType::Regular)), "{ents:?}");
    teardown(&e);
}

/// One thread renames `x` to `y` with a whiteout and back (replacing the
/// whiteout) while others list the directory and look names up. A listing
/// (one directory lock) always shows `x`; when it shows `y`, `x` is a
/// whiteout and `y` the file, never two names for one inode; `x` always
/// resolves.
#[test]
fn readers_never_see_the_source_missing() {
    let e = Arc::new(small());
    let f = mkfile(&e, ROOT, b"x");
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (e, stop) = (Arc::clone(&e), Arc::clone(&stop));
        readers.push(std::thread::spawn(move || {
            let mut seen = [0u64; 2];
            while !stop.load(Ordering::Relaxed) {
                let ents = entries(&e, ROOT);
                let x = ents.iter().find(|(n, _, _)| n == b"x").unwrap_or_else(|| panic!("x missing: {ents:?}"));
                match ents.iter().find(|(n, _, _)| n == b"y") {
                    None => {
                        assert_eq!((x.1, x.2), (f, FileType::Regular), "{ents:?}");
                        seen[0] += 1;
                    }
                    Some(y) => {
                        assert_eq!(x.2, FileType::CharDevice, "{ents:?}");
                        assert_eq!((y.1, y.2), (f, FileType::Regular), "{ents:?}");
                        seen[1] += 1;
                    }
                }
                let a = e.lookup(ROOT, b"x").expect("x always resolves");
                e.forget(a.ino, 1);
            }
            seen
        }));
    }
    for _ in 0..20_000 {
        e.rename(ROOT, b"x", ROOT, b"y", WHITEOUT).unwrap();
        e.rename(ROOT, b"y", ROOT, b"x", 0).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let seen = r.join().unwrap();
        assert!(seen[0] + seen[1] > 0);
    }
    assert_eq!(inodes(&e), 2, "every whiteout was freed when replaced");
    teardown(&e);
}
