//! getattr/setattr (mode, owner, size, times, flags), access, statfs, and
//! extended attributes.

mod support;

use engine::xattr_flags::{CREATE, REPLACE};
use engine::{access_mask, Cred, Engine, Error, SetAttr, SetTime, Time, ROOT, XATTR_SIZE_MAX};
use support::*;

fn t(secs: i64, nanos: u32) -> Time {
    Time { secs, nanos }
}

#[test]
fn mode_owner_and_flags() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    let before = e.getattr(f).unwrap();
    let a = e.setattr(f, &SetAttr { mode: Some(0o104755), ..SetAttr::default() }).unwrap();
    assert_eq!(a.perm, 0o4755, "only 0o7777 is kept; the type never changes");
    assert_eq!(a.kind, before.kind);
    let a = e.setattr(f, &SetAttr { uid: Some(1000), ..SetAttr::default() }).unwrap();
    assert_eq!((a.uid, a.gid), (1000, 0));
    let a = e.setattr(f, &SetAttr { gid: Some(2000), flags: Some(0x20), ..SetAttr::default() }).unwrap();
    assert_eq!((a.uid, a.gid, a.flags), (1000, 2000, 0x20));
    assert!(a.ctime >= before.ctime, "ctime set to now on change");
    assert_eq!(a.mtime, before.mtime, "metadata changes keep mtime");
    assert_eq!(e.getattr(f).unwrap(), a);
    // An empty change is fine and only touches ctime.
    let b = e.setattr(f, &SetAttr::default()).unwrap();
    assert_eq!((b.perm, b.uid, b.gid, b.size, b.mtime), (a.perm, a.uid, a.gid, a.size, a.mtime));
    // Directories and special files take metadata changes too.
    let d = e.setattr(ROOT, &SetAttr { mode: Some(0o700), uid: Some(5), ..SetAttr::default() }).unwrap();
    assert_eq!((d.perm, d.uid), (0o700, 5));
    let fifo = e.mknod(ROOT, b"p", 0o010600, 0, 0, 0).unwrap();
    assert_eq!(e.setattr(fifo.ino, &SetAttr { mode: Some(0o666), ..SetAttr::default() }).unwrap().perm, 0o666);
    e.forget(fifo.ino, 1);
    assert_eq!(e.setattr(9999, &SetAttr::default()).err(), Some(Error::NotFound));
    teardown(&e);
}

#[test]
fn explicit_times() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    let set = SetAttr {
        atime: Some(SetTime::At(t(100, 1))),
        mtime: Some(SetTime::At(t(-5, 999_999_999))),
        ctime: Some(t(300, 3)),
        crtime: Some(t(50, 4)),
        ..SetAttr::default()
    };
    let a = e.setattr(f, &set).unwrap();
    assert_eq!((a.atime, a.mtime, a.ctime, a.crtime), (t(100, 1), t(-5, 999_999_999), t(300, 3), t(50, 4)));
    assert_eq!(e.getattr(f).unwrap(), a);
    // "Now" for atime/mtime; ctime then defaults to now as well.
    let now = Time::now();
    let b = e.setattr(f, &SetAttr { atime: Some(SetTime::Now), ..SetAttr::default() }).unwrap();
    assert!(b.atime >= now && b.ctime >= now);
    assert_eq!((b.mtime, b.crtime), (a.mtime, a.crtime));
    let c = e.setattr(f, &SetAttr { mtime: Some(SetTime::Now), ..SetAttr::default() }).unwrap();
    assert!(c.mtime >= now);
    // Time converts to and from SystemTime, before the epoch included
    // (Windows' SystemTime counts 100 ns: found running this under wine).
    let fine = if cfg!(windows) { 100 } else { 1 };
    for x in [t(0, 0), t(1_700_000_000, 123 * fine), t(-1, fine), t(-2, 0)] {
        assert_eq!(Time::from(std::time::SystemTime::from(x)), x);
    }
    teardown(&e);
}

/// A truncate to the size of a file that holds no data changes no time
/// (tmpfs, `truncate(2)`); with data, with the modification time passed
/// along (`ftruncate(2)`, `O_TRUNC`), or to a new size, both times change.
#[test]
fn truncate_to_the_same_size_changes_no_time() {
    let e = small();
    let old = SetAttr { mtime: Some(SetTime::At(t(100, 1))), ctime: Some(t(200, 2)), ..SetAttr::default() };
    let size = |n| SetAttr { size: Some(n), ..SetAttr::default() };
    let now = Time::now();
    let empty = mkfile(&e, ROOT, b"empty");
    let sparse = mkfile(&e, ROOT, b"sparse");
    e.setattr(sparse, &size(1 << 20)).unwrap();
    for (g, n) in [(empty, 0), (sparse, 1 << 20)] {
        e.setattr(g, &old).unwrap();
        let a = e.setattr(g, &size(n)).unwrap();
        assert_eq!((a.mtime, a.ctime, a.size), (t(100, 1), t(200, 2), n), "no data, same size: no time");
        let b = e.setattr(g, &SetAttr { mtime: Some(SetTime::Now), ..size(n) }).unwrap();
        assert!(b.mtime >= now && b.ctime >= now, "same size with the time passed: both");
    }
    let f = put(&e, ROOT, b"f", b"0123456789");
    e.setattr(f, &old).unwrap();
    let a = e.setattr(f, &size(10)).unwrap();
    assert!(a.mtime >= now && a.ctime >= now, "data, same size: both");
    e.setattr(f, &old).unwrap();
    let c = e.setattr(f, &size(4)).unwrap();
    assert!(c.mtime >= now && c.ctime >= now && c.size == 4, "a new size: both");
    // Dropping file capabilities is a change of status: ctime.
    e.setxattr(empty, b"security.capability", &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0)
        .unwrap();
    e.setattr(empty, &old).unwrap();
    let c = e.setattr(empty, &size(0)).unwrap();
    assert_eq!(c.mtime, t(100, 1));
    assert!(c.ctime >= now, "capabilities dropped: ctime");
    assert_eq!(e.getxattr(empty, b"security.capability"), Err(Error::NoData));
    // Dropping set-user-ID bits is a change of status: ctime.
    e.setattr(empty, &SetAttr { mode: Some(0o4755), ..old }).unwrap();
    let d = e.setattr(empty, &SetAttr { kill_suidgid: true, ..size(0) }).unwrap();
    assert_eq!((d.perm, d.mtime), (0o755, t(100, 1)));
    assert!(d.ctime >= now);
    teardown(&e);
}

/// Found by the fuzzer (issue 19): a time with nanoseconds out of range was
/// stored and handed back by `getattr` (and `SystemTime::from` of it can
/// overflow). Refused like `utimensat(2)` does, changing nothing; the edges
/// of the valid range (any `secs`, nanoseconds up to 999,999,999) are kept.
#[test]
fn setattr_refuses_nanoseconds_out_of_range() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    let before = e.getattr(f).unwrap();
    for bad in [1_000_000_000, u32::MAX] {
        let sets = [
            SetAttr { atime: Some(SetTime::At(t(1, bad))), ..SetAttr::default() },
            SetAttr { mtime: Some(SetTime::At(t(1, bad))), size: Some(10), ..SetAttr::default() },
            SetAttr { ctime: Some(t(1, bad)), mode: Some(0o600), ..SetAttr::default() },
            SetAttr { crtime: Some(t(i64::MAX, bad)), ..SetAttr::default() },
        ];
        for set in sets {
            assert_eq!(e.setattr(f, &set), Err(Error::InvalidArgument), "{set:?}");
            assert_eq!(e.getattr(f).unwrap(), before, "a refused setattr changes nothing");
        }
    }
    for edge in [t(i64::MAX, 999_999_999), t(i64::MIN, 0), t(-1, 999_999_999)] {
        let a = e.setattr(f, &SetAttr { mtime: Some(SetTime::At(edge)), ..SetAttr::default() }).unwrap();
        assert_eq!(a.mtime, edge);
        if cfg!(unix) {
            // Representable in Unix's SystemTime (i64 seconds): no overflow.
            let _ = std::time::SystemTime::from(a.mtime);
        }
    }
}

#[test]
fn size_up_and_down() {
    let e = small();
    let f = put(&e, ROOT, b"f", b"hello world");
    let m0 = e.getattr(f).unwrap().mtime;
    let a = truncate(&e, f, 5).unwrap();
    assert_eq!(a.size, 5);
    assert!(a.mtime >= m0);
    assert_eq!(read_all(&e, f), b"hello");
    let a = truncate(&e, f, 10_000).unwrap();
    assert_eq!(a.size, 10_000);
    let mut want = b"hello".to_vec();
    want.resize(10_000, 0);
    assert_eq!(read_all(&e, f), want, "growth reads as zeros");
    assert_eq!(truncate(&e, f, 0).unwrap().size, 0);
    assert_eq!(read_all(&e, f), b"");
    assert_eq!(e.getattr(f).unwrap().blocks, 0);
    assert_eq!(e.stats().pool.used, 0);
    // Size together with other changes, applied together.
    let a = e.setattr(f, &SetAttr { size: Some(3), mode: Some(0o600), ..SetAttr::default() }).unwrap();
    assert_eq!((a.size, a.perm), (3, 0o600));
    assert_eq!(read_all(&e, f), [0, 0, 0]);
    teardown(&e);
}

#[test]
fn size_errors_change_nothing() {
    let e = small();
    let d = mkdir(&e, ROOT, b"d");
    let l = e.symlink(ROOT, b"l", b"target", 0, 0).unwrap();
    let p = e.mknod(ROOT, b"p", 0o010644, 0, 0, 0).unwrap();
    let sz = |s| SetAttr { size: Some(s), mode: Some(0o700), ..SetAttr::default() };
    assert_eq!(e.setattr(d, &sz(0)).err(), Some(Error::IsDir));
    assert_eq!(e.setattr(ROOT, &sz(10)).err(), Some(Error::IsDir));
    assert_eq!(e.setattr(l.ino, &sz(0)).err(), Some(Error::InvalidArgument));
    assert_eq!(e.setattr(p.ino, &sz(0)).err(), Some(Error::InvalidArgument));
    assert_ne!(e.getattr(d).unwrap().perm, 0o700, "nothing changed on error");
    assert_eq!(e.getattr(l.ino).unwrap().perm, 0o777);
    assert_eq!(e.readlink(l.ino).unwrap(), b"target");
    e.forget(l.ino, 1);
    e.forget(p.ino, 1);
    teardown(&e);
}

#[test]
fn access_checks_mode_bits() {
    let e = small();
    let a = e.create(ROOT, b"f", 0o640, 10, 20).unwrap();
    let user = Cred { uid: 10, gid: 99, groups: vec![] };
    let group = Cred { uid: 11, gid: 20, groups: vec![] };
    let suppl = Cred { uid: 11, gid: 1, groups: vec![5, 20] };
    let other = Cred { uid: 12, gid: 1, groups: vec![] };
    let root = Cred::default();
    use access_mask::{R, W, X};
    assert_eq!(e.access(a.ino, R | W, &user), Ok(()));
    assert_eq!(e.access(a.ino, X, &user), Err(Error::Access));
    assert_eq!(e.access(a.ino, R, &group), Ok(()));
    assert_eq!(e.access(a.ino, W, &group), Err(Error::Access));
    assert_eq!(e.access(a.ino, R, &suppl), Ok(()));
    assert_eq!(e.access(a.ino, R, &other), Err(Error::Access));
    assert_eq!(e.access(a.ino, 0, &other), Ok(()), "existence check");
    assert_eq!(e.access(a.ino, R | W, &root), Ok(()));
    assert_eq!(e.access(a.ino, X, &root), Err(Error::Access), "root needs one x bit to execute");
    assert_eq!(e.access(ROOT, X, &root), Ok(()), "root may search any directory");
    assert_eq!(e.access(9999, 0, &root), Err(Error::NotFound));
    e.forget(a.ino, 1);
    teardown(&e);
}

#[test]
fn xattr_set_get_list_remove() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    assert_eq!(e.listxattr(f).unwrap(), b"");
    assert_eq!(e.getxattr(f, b"user.a").err(), Some(Error::NoData));
    e.setxattr(f, b"user.b", b"2", 0).unwrap();
    e.setxattr(f, b"user.a", b"1", 0).unwrap();
    e.setxattr(f, b"trusted.t", b"", 0).unwrap();
    e.setxattr(f, b"security.selinux", b"ctx", 0).unwrap();
    assert_eq!(e.getxattr(f, b"user.a").unwrap(), b"1");
    assert_eq!(e.getxattr(f, b"trusted.t").unwrap(), b"");
    assert_eq!(e.listxattr(f).unwrap(), b"security.selinux\0trusted.t\0user.a\0user.b\0");
    // Overwrite.
    e.setxattr(f, b"user.a", b"one", 0).unwrap();
    assert_eq!(e.getxattr(f, b"user.a").unwrap(), b"one");
    // CREATE and REPLACE.
    assert_eq!(e.setxattr(f, b"user.a", b"x", CREATE), Err(Error::Exists));
    assert_eq!(e.setxattr(f, b"user.new", b"x", REPLACE), Err(Error::NoData));
    assert_eq!(e.getxattr(f, b"user.new").err(), Some(Error::NoData));
    e.setxattr(f, b"user.new", b"x", CREATE).unwrap();
    e.setxattr(f, b"user.new", b"y", REPLACE).unwrap();
    assert_eq!(e.getxattr(f, b"user.new").unwrap(), b"y");
    // Both flags: whichever applies (tmpfs: ENODATA, then EEXIST).
    assert_eq!(e.setxattr(f, b"user.none", b"x", CREATE | REPLACE), Err(Error::NoData));
    assert_eq!(e.setxattr(f, b"user.a", b"y", CREATE | REPLACE), Err(Error::Exists));
    assert_eq!(e.setxattr(f, b"user.a", b"x", 4), Err(Error::InvalidArgument));
    assert_eq!(e.getxattr(f, b"user.a").unwrap(), b"one", "refused sets change nothing");
    // Remove.
    e.removexattr(f, b"user.a").unwrap();
    assert_eq!(e.removexattr(f, b"user.a"), Err(Error::NoData));
    assert_eq!(e.getxattr(f, b"user.a").err(), Some(Error::NoData));
    for n in [&b"user.b"[..], b"trusted.t", b"security.selinux", b"user.new"] {
        e.removexattr(f, n).unwrap();
    }
    assert_eq!(e.listxattr(f).unwrap(), b"");
    // Directories, symlinks and special files have xattrs too.
    e.setxattr(ROOT, b"user.d", b"dir", 0).unwrap();
    assert_eq!(e.getxattr(ROOT, b"user.d").unwrap(), b"dir");
    let l = e.symlink(ROOT, b"l", b"x", 0, 0).unwrap();
    e.setxattr(l.ino, b"trusted.l", b"lnk", 0).unwrap();
    assert_eq!(e.listxattr(l.ino).unwrap(), b"trusted.l\0");
    e.forget(l.ino, 1);
    // Unknown inode.
    assert_eq!(e.setxattr(9999, b"user.a", b"", 0), Err(Error::NotFound));
    assert_eq!(e.getxattr(9999, b"user.a").err(), Some(Error::NotFound));
    assert_eq!(e.listxattr(9999).err(), Some(Error::NotFound));
    assert_eq!(e.removexattr(9999, b"user.a"), Err(Error::NotFound));
    teardown(&e);
}

#[test]
fn xattr_name_and_value_limits() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    let long = [b"user.".to_vec(), vec![b'n'; 251]].concat();
    assert_eq!(long.len(), 256);
    let max = &long[..255];
    assert_eq!(e.setxattr(f, b"", b"v", 0), Err(Error::Range));
    assert_eq!(e.setxattr(f, &long, b"v", 0), Err(Error::Range));
    assert_eq!(e.getxattr(f, b"").err(), Some(Error::Range));
    assert_eq!(e.getxattr(f, &long).err(), Some(Error::Range));
    assert_eq!(e.removexattr(f, b""), Err(Error::Range));
    e.setxattr(f, max, b"v", 0).unwrap();
    assert_eq!(e.getxattr(f, max).unwrap(), b"v");
    for bad in [&b"other.x"[..], b"system.posix_acl_access", b"user", b"USER.x", b"x"] {
        assert_eq!(e.setxattr(f, bad, b"v", 0), Err(Error::NotSupported), "{bad:?}");
        assert_eq!(e.getxattr(f, bad).err(), Some(Error::NotSupported), "{bad:?}");
        assert_eq!(e.removexattr(f, bad), Err(Error::NotSupported), "{bad:?}");
    }
    // A bare prefix: EINVAL, as on tmpfs.
    for bad in [&b"user."[..], b"trusted.", b"security."] {
        assert_eq!(e.setxattr(f, bad, b"v", 0), Err(Error::InvalidArgument), "{bad:?}");
        assert_eq!(e.getxattr(f, bad).err(), Some(Error::InvalidArgument), "{bad:?}");
        assert_eq!(e.removexattr(f, bad), Err(Error::InvalidArgument), "{bad:?}");
    }
    assert_eq!(e.setxattr(f, b"user.a\0b", b"v", 0), Err(Error::InvalidArgument));
    let big = vec![7u8; XATTR_SIZE_MAX];
    e.setxattr(f, b"user.big", &big, 0).unwrap();
    assert_eq!(e.getxattr(f, b"user.big").unwrap(), big);
    let too_big = vec![7u8; XATTR_SIZE_MAX + 1];
    assert_eq!(e.setxattr(f, b"user.big", &too_big, 0), Err(Error::TooBig));
    assert_eq!(e.setxattr(f, b"user.other", &too_big, 0), Err(Error::TooBig));
    assert_eq!(e.getxattr(f, b"user.big").unwrap().len(), XATTR_SIZE_MAX);
    assert_eq!(e.listxattr(f).unwrap(), [&b"user.big\0"[..], max, b"\0"].concat(), "sorted by name");
    teardown(&e);
}

#[test]
fn xattrs_survive_data_changes_and_go_with_the_inode() {
    let e = small();
    let f = put(&e, ROOT, b"f", b"data");
    e.setxattr(f, b"user.k", b"v", 0).unwrap();
    e.write(f, 100_000, b"x").unwrap();
    truncate(&e, f, 2).unwrap();
    e.rename(ROOT, b"f", ROOT, b"g", 0).unwrap();
    e.forget(e.link(f, ROOT, b"h").unwrap().ino, 1);
    assert_eq!(e.getxattr(f, b"user.k").unwrap(), b"v");
    assert_eq!(read_all(&e, f), b"da");
    teardown(&e);
}

#[test]
fn statfs_reflects_limits_and_use() {
    let e = engine::Engine::new(engine::Config {
        sector_size: 4096,
        max_bytes: 1 << 20,
        max_inodes: 100,
        inline_max: 0,
        ..engine::Config::default()
    })
    .unwrap();
    let s = e.statfs();
    assert_eq!((s.bsize, s.blocks, s.bfree, s.bavail), (4096, 256, 256, 256));
    assert_eq!((s.files, s.ffree, s.namelen), (100, 99, 255));
    let f = put(&e, ROOT, b"f", &[1u8; 10_000]);
    let s = e.statfs();
    assert_eq!((s.bfree, s.bavail, s.ffree), (253, 253, 98));
    assert_eq!(e.getattr(f).unwrap().blocks, 3 * 8);
    let st = e.stats();
    assert_eq!(
        (st.pool.used, st.pool.limit, st.pool.sectors, st.inodes, st.max_inodes),
        (3 * 4096, 1 << 20, 3, 2, 100)
    );
    assert_eq!(st.logical_bytes, 10_000);
    assert!(st.pool.peak >= 3 * 4096);
    teardown(&e);
    let s = e.statfs();
    assert_eq!((s.bfree, s.ffree), (256, 99));
}

#[test]
fn kill_suidgid_drops_privileges() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    let kill = SetAttr { kill_suidgid: true, ..SetAttr::default() };
    let kill_all = SetAttr { kill_suidgid: true, kill_sgid: true, ..SetAttr::default() };
    let mode = |m| SetAttr { mode: Some(m), ..SetAttr::default() };
    for (from, with, want) in [
        (0o6755, kill, 0o755),      // set-user-ID, and set-group-ID with group execute
        (0o4700, kill, 0o700),      // set-user-ID alone
        (0o2745, kill, 0o2745),     // set-group-ID without group execute: a locking mark, kept
        (0o2745, kill_all, 0o745),  // ... unless the caller is outside the group
        (0o1777, kill_all, 0o1777), // sticky is not a privilege
        (0o755, kill, 0o755),       // nothing to drop
    ] {
        e.setattr(f, &mode(from)).unwrap();
        assert_eq!(e.setattr(f, &with).unwrap().perm, want, "{from:o}");
    }
    // Applied after a mode in the same change, atomically.
    let both = SetAttr { mode: Some(0o4711), kill_suidgid: true, ..SetAttr::default() };
    assert_eq!(e.setattr(f, &both).unwrap().perm, 0o711);
    // File capabilities go; other attributes stay.
    e.setxattr(f, b"security.capability", b"caps", 0).unwrap();
    e.setxattr(f, b"user.keep", b"v", 0).unwrap();
    e.setattr(f, &kill).unwrap();
    assert_eq!(e.getxattr(f, b"security.capability"), Err(Error::NoData));
    assert_eq!(e.getxattr(f, b"user.keep").unwrap(), b"v");
    // Directories keep their set-group-ID bit (it means "inherit the group").
    e.setattr(ROOT, &mode(0o2775)).unwrap();
    assert_eq!(e.setattr(ROOT, &kill_all).unwrap().perm, 0o2775);
    teardown(&e);
}

/// Every change of a file's data drops its capabilities, whoever the
/// caller (Linux `file_remove_privs`; a privileged writer keeps only the
/// set-user-ID bits): write, append, truncate, fallocate, a copy or clone
/// into it. Reads, an empty write, chmod and other attributes keep them.
#[test]
fn data_changes_drop_capabilities() {
    let e = small();
    let src = mkfile(&e, ROOT, b"src");
    e.write(src, 0, &vec![5u8; 3 * 4096]).unwrap();
    let f = mkfile(&e, ROOT, b"f");
    e.write(f, 0, &vec![1u8; 8192]).unwrap();
    let caps = |e: &Engine| {
        e.setxattr(f, b"security.capability", b"caps", 0).unwrap();
        e.setxattr(f, b"user.keep", b"v", 0).unwrap();
    };
    let has = |e: &Engine| e.getxattr(f, b"security.capability").is_ok();
    type Change = fn(&Engine, u64, u64);
    let keeps: [(&str, Change); 4] = [
        ("read", |e, f, _| assert!(e.read(f, 0, &mut [0u8; 10]).is_ok())),
        ("empty write", |e, f, _| assert_eq!(e.write(f, 5, b""), Ok(0))),
        ("chmod", |e, f, _| assert!(e.setattr(f, &SetAttr { mode: Some(0o4755), ..SetAttr::default() }).is_ok())),
        ("user xattr", |e, f, _| e.setxattr(f, b"user.other", b"x", 0).unwrap()),
    ];
    for (what, change) in keeps {
        caps(&e);
        change(&e, f, src);
        assert!(has(&e), "{what} dropped the capabilities");
    }
    let drops: [(&str, Change); 7] = [
        ("write", |e, f, _| assert_eq!(e.write(f, 10, b"x"), Ok(1))),
        ("append", |e, f, _| assert!(e.append(f, b"x").is_ok())),
        ("truncate", |e, f, _| assert!(e.setattr(f, &SetAttr { size: Some(8192), ..SetAttr::default() }).is_ok())),
        ("fallocate", |e, f, _| e.fallocate(f, 0, 0, 16384).unwrap()),
        ("copy", |e, f, src| assert_eq!(e.copy_file_range(src, 10, f, 10, 100), Ok(100))),
        ("clone", |e, f, src| assert_eq!(e.copy_file_range(src, 0, f, 0, 2 * 4096), Ok(8192))),
        ("hole copied", |e, f, src| {
            e.fallocate(src, engine::data::FALLOC_PUNCH_HOLE | engine::data::FALLOC_KEEP_SIZE, 8192, 4096).unwrap();
            assert_eq!(e.copy_file_range(src, 8192, f, 8192, 4096), Ok(4096));
        }),
    ];
    for (what, change) in drops {
        caps(&e);
        let mode = e.getattr(f).unwrap().perm;
        change(&e, f, src);
        assert!(!has(&e), "{what} kept the capabilities");
        assert_eq!(e.getxattr(f, b"user.keep").unwrap(), b"v", "{what}");
        assert_eq!(e.getattr(f).unwrap().perm, mode, "{what}: set-user-ID is the caller's business");
    }
    teardown(&e);
}

/// chattr `i` and `a` (`inode_flags::IMMUTABLE`, `APPEND`): the engine
/// refuses what Linux refuses for them (`Permission`), whoever asks, and
/// lets the flags themselves be cleared.
#[test]
fn immutable_and_append_only_refuse_changes() {
    use engine::data::{FALLOC_KEEP_SIZE as KEEP, FALLOC_PUNCH_HOLE as PUNCH};
    use engine::inode_flags::{APPEND, IMMUTABLE};
    let e = Engine::new(engine::Config::default()).unwrap();
    let set_flags = |ino, f| e.setattr(ino, &SetAttr { inode_flags: Some(f), ..SetAttr::default() }).map(drop);
    let perm = Err(Error::Permission);
    let f = put(&e, ROOT, b"f", b"data");
    let d = mkdir(&e, ROOT, b"d");
    let inside = put(&e, d, b"in", b"");

    set_flags(f, IMMUTABLE).unwrap();
    assert_eq!(e.write(f, 4, b"x").map(drop), perm);
    assert_eq!(e.append(f, b"x").map(drop), perm);
    assert_eq!(e.fallocate(f, KEEP, 0, 4096), perm);
    assert_eq!(e.setattr(f, &SetAttr { size: Some(0), ..SetAttr::default() }).map(drop), perm);
    assert_eq!(e.setattr(f, &SetAttr { mode: Some(0o600), ..SetAttr::default() }).map(drop), perm);
    let touch = SetAttr { atime: Some(SetTime::Now), mtime: Some(SetTime::Now), ..SetAttr::default() };
    assert_eq!(e.setattr(f, &touch).map(drop), perm);
    assert_eq!(e.setxattr(f, b"user.x", b"1", 0), perm);
    assert_eq!(e.open_for(f, true, true).map(drop), perm);
    assert!(e.open_for(f, false, false).is_ok(), "reading is fine");
    e.release(f);
    assert_eq!(e.unlink(ROOT, b"f"), perm);
    assert_eq!(e.rename(ROOT, b"f", ROOT, b"g", 0), perm);
    assert_eq!(e.link(f, ROOT, b"g").map(drop), perm);
    assert_eq!(read_all(&e, f), b"data");
    assert_eq!(e.getattr(f).unwrap().flags & engine::inode_flags::ALL, IMMUTABLE);

    // Append-only: data at the end and reservations only.
    set_flags(f, APPEND).unwrap();
    assert_eq!(e.write(f, 0, b"x").map(drop), perm);
    assert_eq!(e.write(f, 4, b"+").map(drop), Ok(()));
    assert_eq!(e.append(f, b"+").map(drop), Ok(()));
    assert_eq!(e.fallocate(f, KEEP, 0, 4096), Ok(()));
    assert_eq!(e.fallocate(f, PUNCH | KEEP, 0, 1), perm);
    assert_eq!(e.setattr(f, &SetAttr { size: Some(1), ..SetAttr::default() }).map(drop), perm);
    // Times: `touch` (both to now) only.
    let times = |a, m| SetAttr { atime: a, mtime: m, ..SetAttr::default() };
    assert!(e.setattr(f, &times(Some(SetTime::Now), Some(SetTime::Now))).is_ok());
    assert_eq!(e.setattr(f, &times(Some(SetTime::Now), None)).map(drop), perm);
    assert_eq!(e.setattr(f, &times(None, Some(SetTime::At(t(5, 0))))).map(drop), perm);
    assert_eq!(e.open_for(f, true, false).map(drop), perm);
    assert!(e.open_for(f, true, true).is_ok());
    e.release(f);
    assert_eq!(e.unlink(ROOT, b"f"), perm);
    assert_eq!(read_all(&e, f), b"data++");

    // Directories.
    set_flags(d, IMMUTABLE).unwrap();
    assert_eq!(e.create(d, b"new", 0o644, 0, 0).map(drop), perm);
    assert_eq!(e.mkdir(d, b"sub", 0o755, 0, 0).map(drop), perm);
    assert_eq!(e.tmpfile(d, 0o600, 0, 0).map(drop), perm);
    assert_eq!(e.unlink(d, b"in"), perm);
    assert_eq!(e.rename(ROOT, b"f", d, b"f", 0), perm);
    set_flags(d, APPEND).unwrap();
    let new = put(&e, d, b"new", b"");
    assert_eq!(e.unlink(d, b"new"), perm);
    assert_eq!(e.rename(d, b"in", ROOT, b"out", 0), perm);
    assert_eq!(e.rmdir(ROOT, b"d"), perm);

    // Cleared, everything works again.
    set_flags(f, 0).unwrap();
    set_flags(d, 0).unwrap();
    e.unlink(ROOT, b"f").unwrap();
    e.unlink(d, b"in").unwrap();
    e.unlink(d, b"new").unwrap();
    e.rmdir(ROOT, b"d").unwrap();
    for ino in [f, inside, new, d] {
        e.forget(ino, 1);
    }
}
