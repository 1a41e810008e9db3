//! create, mkdir, mknod, symlink, readlink, tmpfile, link, unlink, rmdir,
//! open/release and orphans (unlinked but open files).

mod support;

use engine::{Error, FileType, PATH_MAX, ROOT};
use support::*;

#[test]
fn create_sets_attributes_and_touches_parent() {
    let e = small();
    let before = e.getattr(ROOT).unwrap();
    let a = e.create(ROOT, b"f", 0o100644 | 0o4000, 10, 20).unwrap();
    assert_eq!(a.kind, FileType::Regular);
    assert_eq!(a.perm, 0o4644, "only 0o7777 is kept");
    assert_eq!((a.uid, a.gid, a.nlink, a.size, a.blocks, a.rdev), (10, 20, 1, 0, 0, 0));
    assert_eq!(a.blksize, engine::PREFERRED_IO as u32, "4 KiB sectors still ask for 64 KiB I/O");
    assert!(a.crtime == a.mtime && a.mtime == a.ctime && a.ctime == a.atime);
    let after = e.getattr(ROOT).unwrap();
    assert!(after.mtime >= before.mtime && after.ctime >= before.ctime);
    assert!(after.mtime >= a.crtime, "parent mtime updated by the create");
    assert_eq!(after.nlink, 2, "a file does not add a link to its parent");
    assert!(after.ino > 0 && a.ino != ROOT);
    e.forget(a.ino, 1);
    teardown(&e);
}

#[test]
fn create_errors() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    assert_eq!(e.create(ROOT, b"f", 0o644, 0, 0).err(), Some(Error::Exists));
    assert_eq!(e.mkdir(ROOT, b"f", 0o755, 0, 0).err(), Some(Error::Exists));
    assert_eq!(e.symlink(ROOT, b"f", b"x", 0, 0).err(), Some(Error::Exists));
    assert_eq!(e.mknod(ROOT, b"f", 0o010644, 0, 0, 0).err(), Some(Error::Exists));
    assert_eq!(e.create(f, b"x", 0o644, 0, 0).err(), Some(Error::NotDir));
    assert_eq!(e.mkdir(f, b"x", 0o755, 0, 0).err(), Some(Error::NotDir));
    assert_eq!(e.create(999, b"x", 0o644, 0, 0).err(), Some(Error::NotFound));
    // A removed directory that is still referenced refuses new entries.
    let d = e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap();
    e.rmdir(ROOT, b"d").unwrap();
    assert_eq!(e.create(d.ino, b"x", 0o644, 0, 0).err(), Some(Error::NotFound));
    assert_eq!(e.mkdir(d.ino, b"x", 0o755, 0, 0).err(), Some(Error::NotFound));
    assert_eq!(e.link(f, d.ino, b"x").err(), Some(Error::NotFound));
    assert_eq!(e.tmpfile(f, 0o600, 0, 0).err(), Some(Error::NotDir));
    assert_eq!(e.tmpfile(999, 0o600, 0, 0).err(), Some(Error::NotFound));
    e.forget(d.ino, 1);
    assert_eq!(e.stats().inodes, 2);
    teardown(&e);
}

#[test]
fn mkdir_links_and_setgid() {
    let e = small();
    let d = e.mkdir(ROOT, b"d", 0o2775, 1, 50).unwrap();
    assert_eq!((d.kind, d.perm, d.nlink), (FileType::Directory, 0o2775, 2));
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 3);
    // A set-group-ID directory gives its group to new entries, and the bit to new directories.
    let f = e.create(d.ino, b"f", 0o644, 2, 99).unwrap();
    assert_eq!((f.uid, f.gid, f.perm), (2, 50, 0o644));
    let s = e.mkdir(d.ino, b"s", 0o755, 2, 99).unwrap();
    assert_eq!((s.gid, s.perm), (50, 0o2755));
    assert_eq!(e.getattr(d.ino).unwrap().nlink, 3);
    let n = e.mknod(d.ino, b"n", 0o010600, 0, 2, 99).unwrap();
    assert_eq!(n.gid, 50);
    // Without the bit, the caller's group.
    let g = e.create(ROOT, b"g", 0o644, 2, 99).unwrap();
    assert_eq!(g.gid, 99);
    for a in [d, f, s, n, g] {
        e.forget(a.ino, 1);
    }
    teardown(&e);
}

#[test]
fn mknod_kinds() {
    let e = small();
    let fifo = e.mknod(ROOT, b"fifo", 0o010640, 77, 0, 0).unwrap();
    assert_eq!((fifo.kind, fifo.perm, fifo.rdev, fifo.size), (FileType::Fifo, 0o640, 0, 0));
    let chr = e.mknod(ROOT, b"chr", 0o020600, 0x0105, 0, 0).unwrap();
    assert_eq!((chr.kind, chr.rdev), (FileType::CharDevice, 0x0105));
    let blk = e.mknod(ROOT, b"blk", 0o060600, 0x0801, 0, 0).unwrap();
    assert_eq!((blk.kind, blk.rdev), (FileType::BlockDevice, 0x0801));
    let sock = e.mknod(ROOT, b"sock", 0o140755, 5, 0, 0).unwrap();
    assert_eq!((sock.kind, sock.rdev, sock.perm), (FileType::Socket, 0, 0o755));
    let reg = e.mknod(ROOT, b"reg", 0o000644, 5, 0, 0).unwrap();
    assert_eq!((reg.kind, reg.rdev), (FileType::Regular, 0));
    let reg2 = e.mknod(ROOT, b"reg2", 0o100644, 0, 0, 0).unwrap();
    assert_eq!(reg2.kind, FileType::Regular);
    assert_eq!(e.mknod(ROOT, b"dir", 0o040755, 0, 0, 0).err(), Some(Error::InvalidArgument));
    assert_eq!(e.mknod(ROOT, b"lnk", 0o120777, 0, 0, 0).err(), Some(Error::InvalidArgument));
    assert_eq!(e.mknod(ROOT, b"bad", 0o170644, 0, 0, 0).err(), Some(Error::InvalidArgument));
    assert_eq!(e.mknod(ROOT, b"bad", 0o030644, 0, 0, 0).err(), Some(Error::InvalidArgument));
    // Special files hold no data.
    let mut buf = [0u8; 4];
    for a in [fifo, chr, blk, sock] {
        assert_eq!(e.read(a.ino, 0, &mut buf), Err(Error::InvalidArgument));
        assert_eq!(e.write(a.ino, 0, b"x"), Err(Error::InvalidArgument));
        assert_eq!(e.append(a.ino, b"x"), Err(Error::InvalidArgument));
        assert_eq!(e.fallocate(a.ino, 0, 0, 1), Err(Error::InvalidArgument));
        assert_eq!(e.seek(a.ino, 0, true), Err(Error::InvalidArgument));
        assert_eq!(e.readlink(a.ino), Err(Error::InvalidArgument));
    }
    let kinds: Vec<_> = entries(&e, ROOT).into_iter().map(|(_, _, k)| k).collect();
    assert_eq!(
        kinds,
        [
            FileType::Fifo,
            FileType::CharDevice,
            FileType::BlockDevice,
            FileType::Socket,
            FileType::Regular,
            FileType::Regular
        ]
    );
    for a in [fifo, chr, blk, sock, reg, reg2] {
        e.forget(a.ino, 1);
    }
    teardown(&e);
}

#[test]
fn symlink_and_readlink() {
    let e = small();
    let s = e.symlink(ROOT, b"l", b"../some/where", 3, 4).unwrap();
    assert_eq!((s.kind, s.perm, s.size, s.uid, s.gid, s.nlink), (FileType::Symlink, 0o777, 13, 3, 4, 1));
    assert_eq!(e.readlink(s.ino).unwrap(), b"../some/where");
    let long = vec![b'x'; PATH_MAX - 1];
    let l2 = e.symlink(ROOT, b"long", &long, 0, 0).unwrap();
    assert_eq!(e.readlink(l2.ino).unwrap(), long);
    assert_eq!(e.symlink(ROOT, b"e", b"", 0, 0).err(), Some(Error::BadTarget));
    assert_eq!(e.symlink(ROOT, b"e", &vec![b'x'; PATH_MAX], 0, 0).err(), Some(Error::NameTooLong));
    assert_eq!(e.symlink(ROOT, b"e", b"a\0b", 0, 0).err(), Some(Error::NameTooLong));
    assert_eq!(e.readlink(ROOT), Err(Error::InvalidArgument));
    let f = mkfile(&e, ROOT, b"f");
    assert_eq!(e.readlink(f), Err(Error::InvalidArgument));
    assert_eq!(e.readlink(9999), Err(Error::NotFound));
    let mut buf = [0u8; 4];
    assert_eq!(e.read(s.ino, 0, &mut buf), Err(Error::InvalidArgument));
    // A hard link to a symlink is allowed.
    let h = e.link(s.ino, ROOT, b"l2").unwrap();
    assert_eq!(h.nlink, 2);
    assert_eq!(e.readlink(h.ino).unwrap(), b"../some/where");
    e.forget(s.ino, 2);
    e.forget(l2.ino, 1);
    // The root, two symlinks, a file, and the second name (as tmpfs).
    assert_eq!(e.stats().inodes, 5);
    teardown(&e);
}

#[test]
fn link_and_unlink() {
    let e = small();
    let d = mkdir(&e, ROOT, b"d");
    let f = put(&e, ROOT, b"f", b"shared data");
    let l = e.link(f, d, b"g").unwrap();
    assert_eq!((l.ino, l.nlink), (f, 2));
    assert_eq!(e.getattr(f).unwrap().nlink, 2);
    assert_eq!(read_all(&e, peek(&e, d, b"g").unwrap().ino), b"shared data");
    // Writes through one name are seen through the other.
    e.write(f, 0, b"SHARED").unwrap();
    assert_eq!(read_all(&e, l.ino), b"SHARED data");
    e.forget(f, 1);
    // Errors.
    assert_eq!(e.link(d, ROOT, b"d2").err(), Some(Error::Permission), "no hard links to directories");
    assert_eq!(e.link(ROOT, d, b"r").err(), Some(Error::Permission));
    assert_eq!(e.link(f, ROOT, b"d").err(), Some(Error::Exists));
    assert_eq!(e.link(f, f, b"x").err(), Some(Error::NotDir));
    assert_eq!(e.link(9999, ROOT, b"x").err(), Some(Error::NotFound));
    assert_eq!(e.link(f, 9999, b"x").err(), Some(Error::NotFound));
    // unlink errors.
    assert_eq!(e.unlink(ROOT, b"nope"), Err(Error::NotFound));
    assert_eq!(e.unlink(ROOT, b"d"), Err(Error::IsDir));
    assert_eq!(e.unlink(f, b"x"), Err(Error::NotDir));
    assert_eq!(e.unlink(9999, b"x"), Err(Error::NotFound));
    // Dropping one name keeps the data.
    e.unlink(ROOT, b"f").unwrap();
    assert_eq!(e.getattr(f).unwrap().nlink, 1);
    assert_eq!(read_all(&e, f), b"SHARED data");
    assert_eq!(peek(&e, ROOT, b"f").err(), Some(Error::NotFound));
    e.unlink(d, b"g").unwrap();
    assert_eq!(e.getattr(f), Err(Error::NotFound), "last name gone, no reference, no handle: freed");
    teardown(&e);
}

#[test]
fn cannot_link_a_freed_or_unlinked_closed_file() {
    let e = small();
    let a = e.create(ROOT, b"f", 0o644, 0, 0).unwrap();
    e.unlink(ROOT, b"f").unwrap();
    // Still referenced (lookup) but no name and no handle: cannot be linked back.
    assert_eq!(e.link(a.ino, ROOT, b"g").err(), Some(Error::NotFound));
    // With an open handle it can (like O_TMPFILE, see tmpfile_then_link).
    e.open(a.ino).unwrap();
    e.link(a.ino, ROOT, b"g").unwrap();
    e.release(a.ino);
    e.forget(a.ino, 2);
    assert_eq!(read_all(&e, peek(&e, ROOT, b"g").unwrap().ino), b"");
    teardown(&e);
}

/// More hard links than ext4's 65,000, as on tmpfs (a probe made 70,000
/// there); the limit is the link count's width (`LINK_MAX`).
#[test]
fn links_past_ext4s_limit() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    let d = mkdir(&e, ROOT, b"d");
    for i in 1..=70_000u32 {
        let a = e.link(f, d, format!("l{i}").as_bytes()).unwrap();
        e.forget(a.ino, 1);
    }
    assert_eq!(e.getattr(f).unwrap().nlink, 70_001);
    for i in 1..=70_000u32 {
        e.unlink(d, format!("l{i}").as_bytes()).unwrap();
    }
    assert_eq!(e.getattr(f).unwrap().nlink, 1);
    teardown(&e);
}

#[test]
fn rmdir_cases() {
    let e = small();
    let d = mkdir(&e, ROOT, b"d");
    let s = mkdir(&e, d, b"s");
    mkfile(&e, s, b"f");
    assert_eq!(e.rmdir(ROOT, b"d"), Err(Error::NotEmpty));
    assert_eq!(e.rmdir(d, b"s"), Err(Error::NotEmpty));
    assert_eq!(e.rmdir(s, b"f"), Err(Error::NotDir));
    assert_eq!(e.rmdir(ROOT, b"nope"), Err(Error::NotFound));
    assert_eq!(e.rmdir(9999, b"x"), Err(Error::NotFound));
    let f = peek(&e, s, b"f").unwrap().ino;
    assert_eq!(e.rmdir(f, b"x"), Err(Error::NotDir));
    assert_eq!(e.getattr(d).unwrap().nlink, 3);
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 3);
    e.unlink(s, b"f").unwrap();
    // A directory with lookup references survives rmdir as a dead, empty directory.
    let held = e.lookup(d, b"s").unwrap();
    e.rmdir(d, b"s").unwrap();
    assert_eq!(e.getattr(d).unwrap().nlink, 2, "the parent loses the `..` link");
    let a = e.getattr(held.ino).unwrap();
    assert_eq!(a.nlink, 0);
    assert_eq!(names(&e, held.ino), Vec::<Vec<u8>>::new());
    assert_eq!(peek(&e, d, b"s").err(), Some(Error::NotFound));
    e.forget(held.ino, 1);
    assert_eq!(e.getattr(s), Err(Error::NotFound));
    e.rmdir(ROOT, b"d").unwrap();
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 2);
    assert_empty(&e);
}

#[test]
fn orphan_readable_until_last_release() {
    let e = small();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let ino = put(&e, ROOT, b"f", &data);
    let used = e.stats().pool.used;
    assert!(used >= 100_000);
    e.open(ino).unwrap();
    e.open(ino).unwrap();
    e.unlink(ROOT, b"f").unwrap();
    assert_eq!(peek(&e, ROOT, b"f").err(), Some(Error::NotFound));
    assert_eq!(e.getattr(ino).unwrap().nlink, 0);
    assert_eq!(read_all(&e, ino), data);
    assert_eq!(e.stats().pool.used, used, "an orphan keeps its memory");
    // Still writable through the handle.
    e.write(ino, 0, b"orphan").unwrap();
    assert_eq!(&read_at(&e, ino, 0, 6), b"orphan");
    e.release(ino);
    assert_eq!(read_at(&e, ino, 6, 10), &data[6..16]);
    e.release(ino);
    assert_eq!(e.getattr(ino), Err(Error::NotFound));
    assert_eq!(e.open(ino).err(), Some(Error::NotFound));
    // Extra releases are harmless.
    e.release(ino);
    assert_empty(&e);
}

#[test]
fn open_release_of_named_file_keeps_it() {
    let e = small();
    let ino = put(&e, ROOT, b"f", b"x");
    let a = e.open(ino).unwrap();
    assert_eq!((a.ino, a.size), (ino, 1));
    e.release(ino);
    assert_eq!(read_all(&e, ino), b"x", "a named file survives its last close");
    assert_eq!(e.open(9999).err(), Some(Error::NotFound));
    e.release(9999);
    teardown(&e);
}

#[test]
fn tmpfile_then_link() {
    let e = small();
    let d = mkdir(&e, ROOT, b"d");
    let t = e.tmpfile(d, 0o600, 5, 6).unwrap();
    assert_eq!((t.kind, t.nlink, t.perm, t.uid, t.gid), (FileType::Regular, 0, 0o600, 5, 6));
    assert_eq!(names(&e, d), Vec::<Vec<u8>>::new(), "anonymous");
    e.write(t.ino, 0, &[7u8; 10_000]).unwrap();
    let l = e.link(t.ino, d, b"named").unwrap();
    assert_eq!(l.nlink, 1);
    e.release(t.ino);
    e.forget(t.ino, 2);
    let a = peek(&e, d, b"named").unwrap();
    assert_eq!(a.ino, t.ino);
    assert_eq!(read_all(&e, a.ino), vec![7u8; 10_000]);
    teardown(&e);
}

#[test]
fn tmpfile_freed_on_release_without_link() {
    let e = small();
    let t = e.tmpfile(ROOT, 0o600, 0, 0).unwrap();
    e.write(t.ino, 0, &[1u8; 50_000]).unwrap();
    assert!(e.stats().pool.used > 0);
    assert_eq!(e.stats().inodes, 2);
    e.forget(t.ino, 1);
    assert_eq!(read_all(&e, t.ino).len(), 50_000, "still open");
    e.release(t.ino);
    assert_eq!(e.getattr(t.ino), Err(Error::NotFound));
    assert_empty(&e);
}

#[test]
fn inode_numbers_are_not_reused() {
    let e = small();
    let a = mkfile(&e, ROOT, b"a");
    e.unlink(ROOT, b"a").unwrap();
    let b = mkfile(&e, ROOT, b"a");
    assert!(b > a);
    teardown(&e);
}
