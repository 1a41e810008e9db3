//! lookup (incl. `.` and `..`), forget, getattr, name validation, engine
//! construction, and the case-insensitive configuration.

mod support;

use engine::{Config, Engine, Error, FileType, NAME_MAX, ROOT};
use support::*;

#[test]
fn new_validates_config() {
    for ss in [0usize, 512, 2048, 3000, 4097, 2 << 20] {
        let r = Engine::new(Config { sector_size: ss, ..Config::default() });
        assert_eq!(r.err(), Some(Error::InvalidArgument), "sector size {ss}");
    }
    let r = Engine::new(Config { max_inodes: 0, ..Config::default() });
    assert_eq!(r.err(), Some(Error::InvalidArgument));
    for ss in [4096usize, 64 << 10, 1 << 20] {
        let e = Engine::new(Config { sector_size: ss, inline_max: 1 << 30, ..Config::default() }).unwrap();
        assert_eq!(e.config().inline_max, ss, "inline_max is clamped to the sector size");
    }
}

#[test]
fn root_attributes() {
    let e = Engine::new(Config { root_mode: 0o40755, root_uid: 7, root_gid: 8, ..Config::default() }).unwrap();
    let a = e.getattr(ROOT).unwrap();
    assert_eq!(a.ino, ROOT);
    assert_eq!(a.kind, FileType::Directory);
    assert_eq!(a.perm, 0o755);
    assert_eq!((a.uid, a.gid), (7, 8));
    assert_eq!(a.nlink, 2);
    assert_eq!(a.blksize, 64 << 10);
}

#[test]
fn lookup_finds_and_counts_references() {
    let e = small();
    let f = e.create(ROOT, b"f", 0o600, 1, 2).unwrap();
    assert_eq!(f.kind, FileType::Regular);
    assert_eq!((f.perm, f.uid, f.gid, f.nlink, f.size), (0o600, 1, 2, 1, 0));
    let l = e.lookup(ROOT, b"f").unwrap();
    assert_eq!(l.ino, f.ino);
    assert_eq!(l, e.getattr(f.ino).unwrap());
    // Two references now (create + lookup); unlink keeps the node alive
    // until both are forgotten.
    e.unlink(ROOT, b"f").unwrap();
    assert_eq!(e.getattr(f.ino).unwrap().nlink, 0);
    e.forget(f.ino, 1);
    assert!(e.getattr(f.ino).is_ok(), "one reference left");
    e.forget(f.ino, 1);
    assert_eq!(e.getattr(f.ino), Err(Error::NotFound));
    // Forgetting an unknown or freed inode is harmless.
    e.forget(f.ino, 5);
    e.forget(9999, 1);
    assert_empty(&e);
}

#[test]
fn forget_counts_several_at_once() {
    let e = small();
    let ino = mkfile(&e, ROOT, b"f");
    for _ in 0..5 {
        e.lookup(ROOT, b"f").unwrap();
    }
    e.unlink(ROOT, b"f").unwrap();
    e.forget(ino, 4);
    assert!(e.getattr(ino).is_ok());
    e.forget(ino, 1);
    assert_eq!(e.getattr(ino), Err(Error::NotFound));
    assert_empty(&e);
}

#[test]
fn lookup_dot_and_dotdot() {
    let e = small();
    let d = mkdir(&e, ROOT, b"d");
    let s = mkdir(&e, d, b"s");
    assert_eq!(peek(&e, ROOT, b".").unwrap().ino, ROOT);
    assert_eq!(peek(&e, ROOT, b"..").unwrap().ino, ROOT, "the root is its own parent");
    assert_eq!(peek(&e, d, b".").unwrap().ino, d);
    assert_eq!(peek(&e, d, b"..").unwrap().ino, ROOT);
    assert_eq!(peek(&e, s, b"..").unwrap().ino, d);
    // After a move, `..` follows.
    e.rename(d, b"s", ROOT, b"s2", 0).unwrap();
    assert_eq!(peek(&e, s, b"..").unwrap().ino, ROOT);
    // `.` takes a reference like any lookup.
    e.lookup(s, b".").unwrap();
    e.rmdir(ROOT, b"s2").unwrap();
    assert!(e.getattr(s).is_ok(), "held by the `.` lookup");
    e.forget(s, 1);
    assert_eq!(e.getattr(s), Err(Error::NotFound));
    teardown(&e);
}

#[test]
fn lookup_errors() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    assert_eq!(e.lookup(ROOT, b"missing").err(), Some(Error::NotFound));
    assert_eq!(e.lookup(f, b"x").err(), Some(Error::NotDir));
    assert_eq!(e.lookup(f, b".").err(), Some(Error::NotDir));
    assert_eq!(e.lookup(424242, b"x").err(), Some(Error::NotFound));
    assert_eq!(e.lookup(ROOT, b"").err(), Some(Error::InvalidName));
    assert_eq!(e.lookup(ROOT, b"a/b").err(), Some(Error::InvalidName));
    assert_eq!(e.lookup(ROOT, b"a\0b").err(), Some(Error::InvalidName));
    assert_eq!(e.lookup(ROOT, &[b'x'; NAME_MAX + 1]).err(), Some(Error::NameTooLong));
    assert_eq!(e.getattr(424242), Err(Error::NotFound));
    teardown(&e);
}

/// Every name-taking operation rejects bad names the same way and changes nothing.
#[test]
fn bad_names_everywhere() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    let d = mkdir(&e, ROOT, b"d");
    let long = vec![b'n'; NAME_MAX + 1];
    let cases: [(&[u8], Error); 7] = [
        (b"", Error::InvalidName),
        (b".", Error::InvalidName),
        (b"..", Error::InvalidName),
        (b"a/b", Error::InvalidName),
        (b"/", Error::InvalidName),
        (b"a\0", Error::InvalidName),
        (&long, Error::NameTooLong),
    ];
    for (name, want) in cases {
        let w = Some(want);
        assert_eq!(e.create(ROOT, name, 0o644, 0, 0).err(), w, "create {name:?}");
        assert_eq!(e.mkdir(ROOT, name, 0o755, 0, 0).err(), w, "mkdir {name:?}");
        assert_eq!(e.mknod(ROOT, name, 0o010644, 0, 0, 0).err(), w, "mknod {name:?}");
        assert_eq!(e.symlink(ROOT, name, b"t", 0, 0).err(), w, "symlink {name:?}");
        assert_eq!(e.link(f, ROOT, name).err(), w, "link {name:?}");
        assert_eq!(e.unlink(ROOT, name).err(), w, "unlink {name:?}");
        assert_eq!(e.rmdir(ROOT, name).err(), w, "rmdir {name:?}");
        assert_eq!(e.rename(ROOT, b"f", ROOT, name, 0).err(), w, "rename to {name:?}");
        assert_eq!(e.rename(ROOT, name, ROOT, b"g", 0).err(), w, "rename from {name:?}");
    }
    // A name of exactly 255 bytes is fine; any byte but '/' and NUL is too.
    let max = vec![b'm'; NAME_MAX];
    mkfile(&e, ROOT, &max);
    mkfile(&e, ROOT, b"\xff\x01 *?:\\");
    assert_eq!(names(&e, ROOT), vec![b"f".to_vec(), b"d".to_vec(), max, b"\xff\x01 *?:\\".to_vec()]);
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 3);
    assert_eq!(e.getattr(f).unwrap().nlink, 1);
    assert_eq!(names(&e, d), Vec::<Vec<u8>>::new());
    teardown(&e);
}

fn ci() -> Engine {
    Engine::new(Config { case_insensitive: true, sector_size: 4096, ..Config::default() }).unwrap()
}

#[test]
fn case_insensitive_lookup_preserves_case() {
    let e = ci();
    let f = mkfile(&e, ROOT, b"ReadMe.TXT");
    for n in [&b"readme.txt"[..], b"README.TXT", b"ReadMe.TXT", b"rEaDmE.tXt"] {
        assert_eq!(peek(&e, ROOT, n).unwrap().ino, f, "{n:?}");
    }
    assert_eq!(names(&e, ROOT), vec![b"ReadMe.TXT".to_vec()], "case preserved in readdir");
    assert_eq!(e.create(ROOT, b"README.txt", 0o644, 0, 0).err(), Some(Error::Exists));
    assert_eq!(e.mkdir(ROOT, b"readme.TXT", 0o755, 0, 0).err(), Some(Error::Exists));
    assert_eq!(e.link(f, ROOT, b"README.TXT").err(), Some(Error::Exists));
    // Non-ASCII letters fold too.
    let u = mkfile(&e, ROOT, "Ärger".as_bytes());
    assert_eq!(peek(&e, ROOT, "äRGER".as_bytes()).unwrap().ino, u);
    // Unlink and rmdir by another case.
    e.unlink(ROOT, b"readme.txt").unwrap();
    let d = mkdir(&e, ROOT, b"Dir");
    mkfile(&e, d, b"X");
    assert_eq!(peek(&e, d, b"x").unwrap().kind, FileType::Regular);
    e.unlink(d, b"x").unwrap();
    e.rmdir(ROOT, b"DIR").unwrap();
    assert_eq!(names(&e, ROOT), vec!["Ärger".as_bytes().to_vec()]);
    teardown(&e);
}

#[test]
fn case_insensitive_rename() {
    let e = ci();
    let a = mkfile(&e, ROOT, b"Alpha");
    let b = mkfile(&e, ROOT, b"beta");
    // Replace through another case of the target's name.
    e.rename(ROOT, b"ALPHA", ROOT, b"BETA", 0).unwrap();
    assert_eq!(peek(&e, ROOT, b"beta").unwrap().ino, a);
    assert_eq!(e.getattr(b), Err(Error::NotFound), "the replaced file is freed");
    assert_eq!(names(&e, ROOT), vec![b"BETA".to_vec()], "the new name's case is kept");
    // Renaming to another case of the same name changes the stored case.
    e.rename(ROOT, b"beta", ROOT, b"Beta", 0).unwrap();
    assert_eq!(names(&e, ROOT), vec![b"Beta".to_vec()]);
    assert_eq!(peek(&e, ROOT, b"BETA").unwrap().ino, a);
    teardown(&e);
}

#[test]
fn case_sensitive_by_default() {
    let e = small();
    let a = mkfile(&e, ROOT, b"a");
    let b = mkfile(&e, ROOT, b"A");
    assert_ne!(a, b);
    assert_eq!(peek(&e, ROOT, b"A").unwrap().ino, b);
    assert_eq!(names(&e, ROOT), vec![b"a".to_vec(), b"A".to_vec()]);
    teardown(&e);
}

/// Greek sigma folds as one letter wherever it stands: `str::to_lowercase`
/// lowers a capital sigma at the end of a word to the final form `ς`, so
/// `ΑΣ` matched `ας` but not `ασ`, and `ασ` and `ας` could both exist (a
/// probe).
#[test]
fn case_insensitive_sigma_is_one_letter() {
    let e = ci();
    let f = mkfile(&e, ROOT, "ΑΣ".as_bytes());
    for n in ["ας", "ασ", "Ας", "ΑΣ"] {
        assert_eq!(peek(&e, ROOT, n.as_bytes()).unwrap().ino, f, "{n}");
    }
    assert_eq!(e.create(ROOT, "ασ".as_bytes(), 0o644, 0, 0).err(), Some(Error::Exists));
    let g = mkfile(&e, ROOT, "σας".as_bytes());
    assert_eq!(peek(&e, ROOT, "ΣΑΣ".as_bytes()).unwrap().ino, g);
    assert_eq!(peek(&e, ROOT, "ςασ".as_bytes()).unwrap().ino, g);
}
