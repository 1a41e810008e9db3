//! Every operation through a real kernel mount, with `std::fs` and `libc`,
//! including the errors.
#![cfg(target_os = "linux")]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirEntryExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::time::Duration;

use common::*;

#[test]
fn files_read_write_create() {
    let Some(m) = Mount::new(&["--size", "256M"]) else { return };
    let a = m.p("a");
    fs::write(&a, b"hello").unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"hello");
    assert_eq!(fs::metadata(&a).unwrap().len(), 5);
    // O_APPEND (the kernel resolves it under the writeback cache).
    let mut f = OpenOptions::new().append(true).open(&a).unwrap();
    f.write_all(b" world").unwrap();
    drop(f);
    assert_eq!(fs::read(&a).unwrap(), b"hello world");
    // Exclusive create of an existing name.
    assert_eq!(errno(OpenOptions::new().write(true).create_new(true).open(&a)), libc::EEXIST);
    // Non-exclusive create of an existing name opens it.
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&a).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello world");
    // O_TRUNC.
    drop(OpenOptions::new().write(true).truncate(true).open(&a).unwrap());
    assert_eq!(fs::metadata(&a).unwrap().len(), 0);
    // Missing files.
    assert_eq!(errno(File::open(m.p("nope"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(m.p("nope/x"))), libc::ENOENT);
    // Positional writes with a hole, and reads across it.
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.p("sparse")).unwrap();
    f.write_all_at(b"end", 300_000).unwrap();
    f.write_all_at(b"start", 0).unwrap();
    let mut buf = vec![1u8; 300_003];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..5], b"start");
    assert!(buf[5..300_000].iter().all(|&b| b == 0));
    assert_eq!(&buf[300_000..], b"end");
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    // Names: 255 bytes is fine, 256 is too long.
    fs::write(m.p(&"n".repeat(255)), b"x").unwrap();
    assert_eq!(errno(fs::write(m.p(&"n".repeat(256)), b"x")), libc::ENAMETOOLONG);
    assert_eq!(errno(fs::create_dir(m.p(&"d".repeat(300)))), libc::ENAMETOOLONG);
    assert_eq!(errno(fs::metadata(m.p(&"q".repeat(256)))), libc::ENAMETOOLONG);
}

#[test]
fn large_file_round_trip() {
    let Some(m) = Mount::new(&["--size", "512M", "--threads", "4"]) else { return };
    let p = m.p("big");
    let data: Vec<u8> = (0..48u64 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut f = File::create(&p).unwrap();
    for chunk in data.chunks((1 << 20) + 4093) {
        f.write_all(chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::metadata(&p).unwrap().len(), data.len() as u64);
    // Read it back from several threads at once, in odd-sized pieces.
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (p, data) = (&p, &data);
            s.spawn(move || {
                let f = File::open(p).unwrap();
                let mut buf = vec![0u8; 777_777];
                let mut off = t * 12345;
                while off < data.len() as u64 {
                    let n = f.read_at(&mut buf, off).unwrap();
                    assert!(n > 0);
                    assert_eq!(&buf[..n], &data[off as usize..off as usize + n], "at {off}");
                    off += n as u64;
                }
            });
        }
    });
    // Drop the page cache so the next read comes from the daemon.
    let _ = fs::write("/proc/sys/vm/drop_caches", b"1");
    assert!(fs::read(&p).unwrap() == data);
    assert!(m.stat("used_bytes") >= data.len() as u64);
}

#[test]
fn directories() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::create_dir(m.p("d")).unwrap();
    assert_eq!(errno(fs::create_dir(m.p("d"))), libc::EEXIST);
    fs::create_dir_all(m.p("d/e/f")).unwrap();
    fs::write(m.p("d/file"), b"x").unwrap();
    assert_eq!(errno(fs::remove_dir(m.p("d"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::remove_dir(m.p("d/file"))), libc::ENOTDIR);
    assert_eq!(errno(fs::remove_file(m.p("d/e"))), libc::EISDIR);
    assert_eq!(errno(fs::create_dir(m.p("d/file/x"))), libc::ENOTDIR);
    assert_eq!(errno(File::open(m.p("d/file/x"))), libc::ENOTDIR);
    assert_eq!(errno(OpenOptions::new().write(true).open(m.p("d/e"))), libc::EISDIR);
    assert_eq!(errno(fs::remove_dir(m.p("d/nope"))), libc::ENOENT);
    // Link counts of directories: 2 + subdirectories.
    assert_eq!(fs::metadata(m.p("d")).unwrap().nlink(), 3);
    assert_eq!(fs::metadata(m.p("d/e/f")).unwrap().nlink(), 2);
    fs::remove_dir(m.p("d/e/f")).unwrap();
    assert_eq!(fs::metadata(m.p("d/e")).unwrap().nlink(), 2);
    // A long listing (several readdir batches), entries exactly once.
    let names: Vec<String> = (0..1500).map(|i| format!("entry-with-a-longish-name-{i:05}")).collect();
    for n in &names {
        File::create(m.p(&format!("d/e/{n}"))).unwrap();
    }
    let mut got: Vec<String> =
        fs::read_dir(m.p("d/e")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    got.sort();
    assert_eq!(got, names);
    // Entry types and inode numbers from readdir(plus) match stat.
    for e in fs::read_dir(m.p("d")).unwrap() {
        let e = e.unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        assert_eq!(e.file_type().unwrap().is_dir(), md.is_dir());
        assert_eq!(e.ino(), md.ino());
    }
    // Deleting while listing: the survivors are each listed once.
    let mut rd = fs::read_dir(m.p("d/e")).unwrap();
    let first = rd.next().unwrap().unwrap().file_name().into_string().unwrap();
    for n in names.iter().skip(700) {
        fs::remove_file(m.p(&format!("d/e/{n}"))).unwrap();
    }
    let mut rest: Vec<String> = rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    rest.push(first);
    rest.sort();
    rest.dedup();
    for n in names.iter().take(700) {
        assert!(rest.binary_search(n).is_ok(), "{n} missing");
    }
    assert!(fs::remove_dir_all(m.p("d")).is_ok());
    assert_eq!(fs::read_dir(&m.path).unwrap().count(), 0);
}

/// A listing that is open while its entries are deleted stops returning
/// them, but for what its reader already holds (the C library's buffer of
/// at most 32 KiB of entries): on tmpfs 1,022 of 20,000. When the kernel
/// cached listings (`FUSE_NO_OPENDIR_SUPPORT`), an open listing kept
/// returning all 20,000 and the entries' old inode numbers.
#[test]
fn an_open_listing_sees_deletions() {
    let Some(m) = Mount::new(&["--size", "256M"]) else { return };
    let d = m.p("d");
    fs::create_dir(&d).unwrap();
    for i in 0..20_000 {
        File::create(d.join(format!("entry-{i:05}"))).unwrap();
    }
    assert_eq!(fs::read_dir(&d).unwrap().count(), 20_000); // a whole listing first
    let mut open = fs::read_dir(&d).unwrap();
    let first = open.next().unwrap().unwrap().file_name();
    for i in 0..20_000 {
        fs::remove_file(d.join(format!("entry-{i:05}"))).unwrap();
    }
    let stale: Vec<_> = open.map(|e| e.unwrap().file_name()).collect();
    assert!(stale.len() < 2_000, "{} deleted entries after {first:?} still listed", stale.len());
    assert_eq!(fs::read_dir(&d).unwrap().count(), 0);
}

#[test]
fn links_symlinks_special_files() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::write(m.p("f"), b"data").unwrap();
    fs::hard_link(m.p("f"), m.p("g")).unwrap();
    assert_eq!(fs::metadata(m.p("f")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(m.p("f")).unwrap().ino(), fs::metadata(m.p("g")).unwrap().ino());
    assert_eq!(errno(fs::hard_link(m.p("f"), m.p("g"))), libc::EEXIST);
    fs::create_dir(m.p("dir")).unwrap();
    assert_eq!(errno(fs::hard_link(m.p("dir"), m.p("dir2"))), libc::EPERM);
    assert_eq!(errno(fs::hard_link(m.p("nope"), m.p("x"))), libc::ENOENT);
    fs::remove_file(m.p("f")).unwrap();
    assert_eq!(fs::metadata(m.p("g")).unwrap().nlink(), 1);
    assert_eq!(fs::read(m.p("g")).unwrap(), b"data");

    std::os::unix::fs::symlink("g", m.p("s")).unwrap();
    std::os::unix::fs::symlink("/some/where/else", m.p("abs")).unwrap();
    assert_eq!(fs::read_link(m.p("s")).unwrap().to_str(), Some("g"));
    assert_eq!(fs::read_link(m.p("abs")).unwrap().to_str(), Some("/some/where/else"));
    assert_eq!(fs::read(m.p("s")).unwrap(), b"data");
    let md = fs::symlink_metadata(m.p("abs")).unwrap();
    assert!(md.file_type().is_symlink());
    assert_eq!(md.len(), 16);
    assert_eq!(errno(std::os::unix::fs::symlink("x", m.p("s"))), libc::EEXIST);
    assert_eq!(errno(fs::read_link(m.p("g"))), libc::EINVAL);
    let long_target = "t".repeat(4000);
    std::os::unix::fs::symlink(&long_target, m.p("long")).unwrap();
    assert_eq!(fs::read_link(m.p("long")).unwrap().to_str(), Some(long_target.as_str()));

    mknod(&m.p("fifo"), libc::S_IFIFO | 0o644, 0).unwrap();
    mknod(&m.p("sock"), libc::S_IFSOCK | 0o600, 0).unwrap();
    mknod(&m.p("reg"), libc::S_IFREG | 0o600, 0).unwrap();
    assert!(fs::symlink_metadata(m.p("fifo")).unwrap().file_type().is_fifo());
    assert!(fs::symlink_metadata(m.p("sock")).unwrap().file_type().is_socket());
    assert!(fs::symlink_metadata(m.p("reg")).unwrap().is_file());
    if is_root() {
        let dev = libc::makedev(1, 3);
        mknod(&m.p("chr"), libc::S_IFCHR | 0o600, dev).unwrap();
        mknod(&m.p("blk"), libc::S_IFBLK | 0o600, libc::makedev(7, 0)).unwrap();
        let md = fs::symlink_metadata(m.p("chr")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!(md.rdev(), dev);
        assert!(fs::symlink_metadata(m.p("blk")).unwrap().file_type().is_block_device());
    }
    assert_eq!(errno(mknod(&m.p("fifo"), libc::S_IFIFO | 0o644, 0)), libc::EEXIST);
}

#[test]
fn renames() {
    let Some(m) = Mount::new(&[]) else { return };
    fs::write(m.p("a"), b"A").unwrap();
    fs::write(m.p("b"), b"B").unwrap();
    fs::rename(m.p("a"), m.p("c")).unwrap();
    assert_eq!(errno(fs::metadata(m.p("a"))), libc::ENOENT);
    assert_eq!(fs::read(m.p("c")).unwrap(), b"A");
    // Over an existing file.
    fs::rename(m.p("c"), m.p("b")).unwrap();
    assert_eq!(fs::read(m.p("b")).unwrap(), b"A");
    assert_eq!(errno(fs::rename(m.p("c"), m.p("x"))), libc::ENOENT);
    // NOREPLACE and EXCHANGE.
    fs::write(m.p("c"), b"C").unwrap();
    assert_eq!(errno(renameat2(&m.p("c"), &m.p("b"), libc::RENAME_NOREPLACE)), libc::EEXIST);
    renameat2(&m.p("c"), &m.p("d"), libc::RENAME_NOREPLACE).unwrap();
    renameat2(&m.p("b"), &m.p("d"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(m.p("b")).unwrap(), b"C");
    assert_eq!(fs::read(m.p("d")).unwrap(), b"A");
    assert_eq!(errno(renameat2(&m.p("b"), &m.p("zz"), libc::RENAME_EXCHANGE)), libc::ENOENT);
    // Directories: across parents, into themselves, over (non-)empty dirs.
    fs::create_dir_all(m.p("x/y")).unwrap();
    fs::create_dir(m.p("z")).unwrap();
    fs::write(m.p("x/y/f"), b"F").unwrap();
    fs::rename(m.p("x/y"), m.p("z/y")).unwrap();
    assert_eq!(fs::read(m.p("z/y/f")).unwrap(), b"F");
    assert_eq!(fs::metadata(m.p("x")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(m.p("z")).unwrap().nlink(), 3);
    assert_eq!(errno(fs::rename(m.p("z"), m.p("z/y/inside"))), libc::EINVAL);
    fs::create_dir(m.p("empty")).unwrap();
    fs::rename(m.p("empty"), m.p("x")).unwrap();
    assert_eq!(errno(fs::rename(m.p("x"), m.p("z"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::rename(m.p("b"), m.p("z"))), libc::EISDIR);
    assert_eq!(errno(fs::rename(m.p("x"), m.p("b"))), libc::ENOTDIR);
    // Exchanging a file and a directory.
    renameat2(&m.p("b"), &m.p("x"), libc::RENAME_EXCHANGE).unwrap();
    assert!(fs::metadata(m.p("b")).unwrap().is_dir());
    assert_eq!(fs::read(m.p("x")).unwrap(), b"C");
}

#[test]
fn attributes() {
    let Some(m) = Mount::new(&[]) else { return };
    let p = m.p("f");
    fs::write(&p, vec![7u8; 10_000]).unwrap();
    // truncate down and up: zeros, never stale bytes.
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.set_len(100).unwrap();
    f.set_len(5000).unwrap();
    drop(f);
    let d = fs::read(&p).unwrap();
    assert_eq!(d.len(), 5000);
    assert!(d[..100].iter().all(|&b| b == 7) && d[100..].iter().all(|&b| b == 0));
    // chmod, chown.
    fs::set_permissions(&p, fs::Permissions::from_mode(0o4751)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o4751);
    if is_root() {
        std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
        let md = fs::metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 5678));
        std::os::unix::fs::lchown(&p, Some(0), None).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().uid(), 0);
    }
    // utimens: exact times, nanoseconds kept.
    let t = std::time::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    let f = File::options().write(true).open(&p).unwrap();
    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t)).unwrap();
    drop(f);
    let md = fs::metadata(&p).unwrap();
    assert_eq!(md.modified().unwrap(), t);
    assert_eq!(md.accessed().unwrap(), t);
    assert_eq!(md.mtime_nsec(), 123_456_789);
    // Root directory: mode 1777 by default, owned by the mounter.
    let root = fs::metadata(&m.path).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o1777);
    assert!(root.is_dir());
    assert_eq!(errno(fs::metadata(m.p("missing"))), libc::ENOENT);
    assert_eq!(errno(File::open(m.p("missing")).and_then(|f| f.set_len(1))), libc::ENOENT);
}

#[test]
fn xattrs_and_stats_attribute() {
    let Some(m) = Mount::new(&[]) else { return };
    let p = m.p("f");
    fs::write(&p, b"x").unwrap();
    setxattr(&p, "user.one", b"1", 0).unwrap();
    setxattr(&p, "user.two", b"22", 0).unwrap();
    assert_eq!(getxattr(&p, "user.one").unwrap(), b"1");
    assert_eq!(getxattr_sized(&p, "user.two", 0).unwrap().len(), 2);
    assert_eq!(errno(getxattr_sized(&p, "user.two", 1)), libc::ERANGE);
    assert_eq!(listxattr(&p).unwrap(), ["user.one", "user.two"]);
    assert_eq!(errno(setxattr(&p, "user.one", b"x", libc::XATTR_CREATE)), libc::EEXIST);
    assert_eq!(errno(setxattr(&p, "user.nope", b"x", libc::XATTR_REPLACE)), libc::ENODATA);
    setxattr(&p, "user.one", b"111", libc::XATTR_REPLACE).unwrap();
    assert_eq!(getxattr(&p, "user.one").unwrap(), b"111");
    removexattr(&p, "user.one").unwrap();
    assert_eq!(errno(getxattr(&p, "user.one")), libc::ENODATA);
    assert_eq!(errno(removexattr(&p, "user.one")), libc::ENODATA);
    let big = vec![9u8; 60_000];
    setxattr(&p, "user.big", &big, 0).unwrap();
    assert_eq!(getxattr(&p, "user.big").unwrap(), big);
    // Directories have xattrs too; the stats attribute is virtual and read-only.
    setxattr(&m.path, "user.root", b"r", 0).unwrap();
    assert_eq!(listxattr(&m.path).unwrap(), ["user.root"]);
    let st = String::from_utf8(getxattr(&m.path, "user.sectorfs.stats").unwrap()).unwrap();
    assert!(st.starts_with('{') && st.contains("\"limit_bytes\":"), "{st}");
    assert_eq!(errno(setxattr(&m.path, "user.sectorfs.stats", b"x", 0)), libc::EPERM);
    assert_eq!(errno(removexattr(&m.path, "user.sectorfs.stats")), libc::EPERM);
    assert_eq!(errno(getxattr(&p, "user.sectorfs.stats")), libc::ENODATA);
}

#[test]
fn fallocate_seek_copy_range() {
    let Some(m) = Mount::new(&["--sector-size", "64K"]) else { return };
    let p = m.p("f");
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
    // Plain allocation extends the size.
    fallocate(&f, 0, 0, 100_000).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 100_000);
    // KEEP_SIZE does not.
    fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 0, 500_000).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 100_000);
    // Punch a hole: zeros in the middle.
    f.write_all_at(&vec![5u8; 100_000], 0).unwrap();
    fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 10_000, 20_000).unwrap();
    let mut buf = vec![0u8; 100_000];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..10_000].iter().all(|&b| b == 5));
    assert!(buf[10_000..30_000].iter().all(|&b| b == 0));
    assert!(buf[30_000..].iter().all(|&b| b == 5));
    fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 50_000, 1000).unwrap();
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[50_000..51_000].iter().all(|&b| b == 0) && buf[51_000] == 5);
    assert_eq!(errno(fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 10)), libc::EOPNOTSUPP);
    drop(f);

    // SEEK_DATA / SEEK_HOLE on a sparse file: data at [0, 64K) and [1M, 1M+64K).
    let s = m.p("sparse");
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&s).unwrap();
    f.write_all_at(&[1u8; 65536], 0).unwrap();
    f.write_all_at(&[2u8; 65536], 1 << 20).unwrap();
    f.set_len(2 << 20).unwrap();
    assert_eq!(lseek(&f, 0, libc::SEEK_DATA).unwrap(), 0);
    assert_eq!(lseek(&f, 0, libc::SEEK_HOLE).unwrap(), 65536);
    assert_eq!(lseek(&f, 65536, libc::SEEK_DATA).unwrap(), 1 << 20);
    assert_eq!(lseek(&f, 1 << 20, libc::SEEK_HOLE).unwrap(), (1 << 20) + 65536);
    assert_eq!(lseek(&f, (1 << 20) + 65536, libc::SEEK_DATA).map_err(|e| e.raw_os_error()), Err(Some(libc::ENXIO)));
    assert_eq!(errno(lseek(&f, 3 << 20, libc::SEEK_HOLE)), libc::ENXIO);
    let mut g = &f;
    assert_eq!(g.seek(SeekFrom::End(0)).unwrap(), 2 << 20);

    // copy_file_range inside the mount.
    let src = m.p("src");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(&src, &data).unwrap();
    let a = File::open(&src).unwrap();
    let b = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.p("dst")).unwrap();
    let mut done = 0;
    while done < data.len() {
        let n = copy_file_range(&a, done as i64, &b, 1000 + done as i64, data.len() - done).unwrap();
        assert!(n > 0);
        done += n;
    }
    assert_eq!(copy_file_range(&a, data.len() as i64, &b, 0, 10).unwrap(), 0);
    drop(b);
    let got = fs::read(m.p("dst")).unwrap();
    assert_eq!(got.len(), 1000 + data.len());
    assert!(got[..1000].iter().all(|&b| b == 0));
    assert!(got[1000..] == data[..]);
}

#[test]
fn open_unlinked_files_and_forget() {
    let Some(m) = Mount::new(&[]) else { return };
    let p = m.p("f");
    let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
    f.write_all(&vec![3u8; 1 << 20]).unwrap();
    fs::remove_file(&p).unwrap();
    assert_eq!(errno(fs::metadata(&p)), libc::ENOENT);
    // Still readable and writable through the open handle.
    f.write_all_at(b"tail", 1 << 20).unwrap();
    f.sync_all().unwrap();
    let mut buf = vec![0u8; 4];
    f.read_exact_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(&buf, b"tail");
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    assert!(m.stat("used_bytes") >= 1 << 20);
    drop(f);
    // After the last close (and the kernel's forget) the memory is free and
    // the inode gone: only the root is left.
    let ok = eventually(|| m.stat("used_bytes") == 0 && m.stat("files") == 1);
    assert!(ok, "unlinked file not freed: used {} files {}", m.stat("used_bytes"), m.stat("files"));
    // Many lookups, then the kernel forgets them (drop_caches): still consistent.
    fs::create_dir(m.p("d")).unwrap();
    for i in 0..200 {
        fs::write(m.p(&format!("d/{i}")), i.to_string()).unwrap();
    }
    let _ = fs::write("/proc/sys/vm/drop_caches", b"2");
    for i in 0..200 {
        assert_eq!(fs::read_to_string(m.p(&format!("d/{i}"))).unwrap(), i.to_string());
    }
}

#[test]
fn o_tmpfile() {
    let Some(m) = Mount::new(&[]) else { return };
    // An anonymous file: writable, readable, no name, link count 0.
    let mut f = open_raw(&m.path, libc::O_TMPFILE | libc::O_RDWR, 0o640).expect("O_TMPFILE");
    f.write_all(b"anonymous").unwrap();
    let md = f.metadata().unwrap();
    assert_eq!((md.nlink(), md.len(), md.mode() & 0o7777), (0, 9, 0o640 & !umask()));
    assert_eq!(fs::read_dir(&m.path).unwrap().count(), 0);
    // linkat(2) from /proc/self/fd gives it a name (as root: AT_SYMLINK_FOLLOW).
    let src = cstr(std::path::Path::new(&format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f))));
    let dst = cstr(&m.p("named"));
    // SAFETY: both paths are NUL-terminated and alive during the call.
    let r =
        unsafe { libc::linkat(libc::AT_FDCWD, src.as_ptr(), libc::AT_FDCWD, dst.as_ptr(), libc::AT_SYMLINK_FOLLOW) };
    assert_eq!(r, 0, "linkat: {}", std::io::Error::last_os_error());
    assert_eq!(fs::read(m.p("named")).unwrap(), b"anonymous");
    assert_eq!(f.metadata().unwrap().nlink(), 1);
    drop(f);
    // One left unnamed is freed at its last close (and the kernel's forget).
    let mut g = open_raw(&m.p(""), libc::O_TMPFILE | libc::O_WRONLY, 0o600).unwrap();
    g.write_all(&vec![7u8; 1 << 20]).unwrap();
    drop(g);
    assert!(eventually(|| m.stat("files") == 2), "unnamed O_TMPFILE not freed: files {}", m.stat("files"));
    // Not in a file: ENOTDIR.
    assert_eq!(errno(open_raw(&m.p("named"), libc::O_TMPFILE | libc::O_RDWR, 0o600)), libc::ENOTDIR);
}

/// The process umask.
fn umask() -> u32 {
    // SAFETY: umask cannot fail; it is set back at once.
    let u = unsafe { libc::umask(0o022) };
    // SAFETY: as above.
    unsafe { libc::umask(u) };
    u
}

#[test]
fn limits_enospc() {
    let Some(m) = Mount::new(&["--size", "4M", "--max-files", "20", "--sector-size", "64K"]) else { return };
    let (bsize, blocks, bfree, files, _ffree) = statvfs(&m.path).unwrap();
    assert_eq!(bsize * blocks, 4 << 20);
    assert_eq!(bsize * bfree, 4 << 20);
    assert_eq!(files, 20);
    // A write past the limit fails with ENOSPC: with the writeback cache at
    // the latest on fsync, for O_SYNC writers at the write itself.
    let p = m.p("big");
    let r = (|| -> std::io::Result<()> {
        let mut f = File::create(&p)?;
        f.write_all(&vec![1u8; 8 << 20])?;
        f.sync_all()
    })();
    assert_eq!(errno(r), libc::ENOSPC);
    let r = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create(true).custom_flags(libc::O_SYNC).open(m.p("sync"))?;
        for _ in 0..8 {
            f.write_all(&vec![2u8; 1 << 20])?;
        }
        Ok(())
    })();
    assert_eq!(errno(r), libc::ENOSPC);
    // Deleting frees the space; reads and deletes always work.
    fs::remove_file(&p).unwrap();
    fs::remove_file(m.p("sync")).unwrap();
    let mut ok = false;
    for _ in 0..2000 {
        if m.stat("used_bytes") == 0 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ok, "space not returned: used {}", m.stat("used_bytes"));
    fs::write(m.p("fits"), vec![3u8; 2 << 20]).unwrap();
    assert_eq!(fs::read(m.p("fits")).unwrap().len(), 2 << 20);
    // Exactly full: overwriting in place still works (no growth).
    fs::write(m.p("fill"), vec![4u8; 2 << 20]).unwrap();
    assert_eq!(m.stat("used_bytes"), 4 << 20);
    let f = OpenOptions::new().write(true).open(m.p("fits")).unwrap();
    f.write_all_at(&vec![5u8; 1 << 20], 4096).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let got = fs::read(m.p("fits")).unwrap();
    assert!(got[4096..4096 + (1 << 20)].iter().all(|&b| b == 5) && got[..4096].iter().all(|&b| b == 3));
    assert_eq!(
        errno(OpenOptions::new().append(true).open(m.p("fill")).and_then(|mut f| {
            f.write_all(&[6u8; 65536])?;
            f.sync_all()
        })),
        libc::ENOSPC
    );
    fs::remove_file(m.p("fill")).unwrap();
    // An unlinked file's inode is freed at the kernel's FORGET, which comes
    // asynchronously (over /dev/fuse, also on io_uring): wait for it, or the
    // count below races with it.
    assert!(eventually(|| m.stat("files") == 2), "unlinked files not freed: files {}", m.stat("files"));
    // The inode limit: 20 inodes including the root and "fits".
    let mut made = 0;
    let err = loop {
        match File::create(m.p(&format!("n{made}"))) {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
        assert!(made < 100, "inode limit not enforced");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(made, 18);
    assert_eq!(errno(fs::create_dir(m.p("dir"))), libc::ENOSPC);
    fs::remove_file(m.p("n0")).unwrap();
    let mut ok = false;
    for _ in 0..2000 {
        if fs::create_dir(m.p("dir")).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ok, "inode not returned after unlink");
}

#[test]
fn case_insensitive_mount() {
    let Some(m) = Mount::new(&["--case-insensitive"]) else { return };
    fs::write(m.p("Hello.TXT"), b"hi").unwrap();
    assert_eq!(fs::read(m.p("hello.txt")).unwrap(), b"hi");
    assert_eq!(errno(OpenOptions::new().write(true).create_new(true).open(m.p("HELLO.txt"))), libc::EEXIST);
    let names: Vec<String> =
        fs::read_dir(&m.path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["Hello.TXT"]);
    fs::remove_file(m.p("HELLO.TXT")).unwrap();
    assert_eq!(errno(fs::metadata(m.p("Hello.TXT"))), libc::ENOENT);
}

/// Reads update access times as on tmpfs (`relatime`, the default): the
/// first read of a file or listing of a directory after a change, once;
/// not a read through `O_NOATIME`; `--atime noatime` never does.
#[test]
fn reads_update_access_times_as_relatime() {
    let shm = tempfile::Builder::new().prefix("sectorfs-atime-").tempdir_in("/dev/shm").unwrap();
    let Some(m) = Mount::new(&[]) else { return };
    let Some(n) = Mount::new(&["--atime", "noatime"]) else { return };
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = |p: &std::path::Path| info.lines().find(|l| l.contains(p.to_str().unwrap())).unwrap_or("").to_string();
    assert!(line(&n.path).contains("noatime"), "{}", line(&n.path));
    let mut got = Vec::new();
    for root in [shm.path(), m.path.as_path(), n.path.as_path()] {
        let (f, d) = (root.join("f"), root.join("d"));
        fs::write(&f, b"hello").unwrap();
        fs::create_dir(&d).unwrap();
        fs::write(d.join("x"), b"").unwrap();
        // Access times long before the last change.
        for p in [&f, &d] {
            set_times(p, (946_684_800, 0), (0, libc::UTIME_OMIT));
        }
        let old = |p: &std::path::Path| fs::metadata(p).unwrap().atime() == 946_684_800;
        let stale = (old(&f), old(&d));
        let _ = fs::read(&f).unwrap();
        let _ = fs::read_dir(&d).unwrap().count();
        let first = (old(&f), old(&d));
        let (fa, da) = (fs::metadata(&f).unwrap().atime_nsec(), fs::metadata(&d).unwrap().atime_nsec());
        std::thread::sleep(Duration::from_millis(20));
        let _ = fs::read(&f).unwrap();
        let _ = fs::read_dir(&d).unwrap().count();
        let again = (fs::metadata(&f).unwrap().atime_nsec() == fa, fs::metadata(&d).unwrap().atime_nsec() == da);
        // A reader that opened with O_NOATIME (the owner may) changes nothing.
        set_times(&f, (946_684_800, 0), (0, libc::UTIME_OMIT));
        let mut buf = Vec::new();
        OpenOptions::new().read(true).custom_flags(libc::O_NOATIME).open(&f).unwrap().read_to_end(&mut buf).unwrap();
        got.push((stale, first, again, old(&f)));
    }
    assert_eq!(got[0], ((true, true), (false, false), (true, true), true), "tmpfs");
    assert_eq!(got[1], got[0], "sectorfs (right: tmpfs)");
    assert_eq!(got[2], ((true, true), (true, true), (true, true), true), "sectorfs --atime noatime");
}

/// Which truncates change the times, as on tmpfs: `truncate(2)` of an empty
/// file to its size changes neither (of one with data, both: tmpfs truncates
/// its pages), `ftruncate(2)` to the same size and `O_TRUNC` of an empty
/// file change both, a new size changes both.
#[test]
fn truncates_change_times_as_on_tmpfs() {
    let shm = tempfile::Builder::new().prefix("sectorfs-trunc-").tempdir_in("/dev/shm").unwrap();
    let Some(m) = Mount::new(&[]) else { return };
    let mut got = Vec::new();
    for root in [shm.path(), m.path.as_path()] {
        let mut row = Vec::new();
        for (name, body, how) in [
            ("empty", "", "truncate 0"),
            ("same", "abc", "truncate 3"),
            ("fsame", "abc", "ftruncate 3"),
            ("otrunc", "", "O_TRUNC"),
            ("fempty", "", "ftruncate 0"),
            ("grow", "abc", "truncate 9"),
        ] {
            let p = root.join(name);
            fs::write(&p, body).unwrap();
            set_times(&p, (946_684_800, 0), (946_684_800, 0));
            let before = fs::metadata(&p).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            match how {
                "truncate 0" => truncate(&p, 0),
                "truncate 3" => truncate(&p, 3),
                "ftruncate 3" => OpenOptions::new().write(true).open(&p).unwrap().set_len(3).unwrap(),
                "ftruncate 0" => OpenOptions::new().write(true).open(&p).unwrap().set_len(0).unwrap(),
                "O_TRUNC" => drop(OpenOptions::new().write(true).truncate(true).open(&p).unwrap()),
                "truncate 9" => truncate(&p, 9),
                _ => unreachable!(),
            }
            let after = fs::metadata(&p).unwrap();
            let changed = |a: (i64, i64), b: (i64, i64)| a != b;
            row.push((
                name,
                changed((before.mtime(), before.mtime_nsec()), (after.mtime(), after.mtime_nsec())),
                changed((before.ctime(), before.ctime_nsec()), (after.ctime(), after.ctime_nsec())),
            ));
        }
        got.push(row);
    }
    let want = [
        ("empty", false, false),
        ("same", true, true),
        ("fsame", true, true),
        ("otrunc", true, true),
        ("fempty", true, true),
        ("grow", true, true),
    ];
    assert_eq!(got[0], want, "tmpfs");
    // The one difference, chosen: the kernel sends truncate(2)'s truncate
    // and an O_TRUNC open's as the same SETATTR (no FUSE_ATOMIC_O_TRUNC,
    // which let an appender write past a truncate: mount_datapath::
    // o_trunc_beside_an_appender), and `: > stamp` must renew an empty
    // stamp's times, so truncate(2) of an empty file to its size does too.
    let mut tmpfs = got[0].clone();
    tmpfs[0] = ("empty", true, true);
    assert_eq!(got[1], tmpfs, "sectorfs (right: tmpfs, but for truncate(2) of an empty file)");
}

/// `truncate(2)` by path.
fn truncate(p: &std::path::Path, len: i64) {
    let c = cstr(p);
    // SAFETY: `c` is NUL-terminated and alive during the call.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), len) }, 0, "{}", std::io::Error::last_os_error());
}

/// `lsattr`/`chattr`'s ioctls, which the kernel forwards as `FUSE_IOCTL`:
/// `NODUMP` (`d`) and `NOATIME` (`A`) are kept, shown, inherited by new
/// entries and saved; the flags tmpfs also keeps but this filesystem does
/// not (`i`, `a`) and unknown ones are `EOPNOTSUPP`, changing nothing; any
/// other ioctl is `ENOTTY`. `xfs_io`'s `FS_IOC_FSGETXATTR`/`FSSETXATTR`
/// see the same flags.
#[test]
fn inode_flags_as_chattr_sets_them() {
    const GETFLAGS: libc::c_ulong = 0x8008_6601;
    const SETFLAGS: libc::c_ulong = 0x4008_6602;
    const FSGETXATTR: libc::c_ulong = 0x801c_581f;
    const FSSETXATTR: libc::c_ulong = 0x401c_5820;
    const NODUMP: i32 = 0x40;
    const NOATIME: i32 = 0x80;
    let Some(m) = Mount::new(&[]) else { return };
    let get = |p: &std::path::Path| -> io::Result<i32> {
        let f = File::open(p)?;
        let mut v: i32 = -1;
        // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer.
        match unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), GETFLAGS, &mut v) } {
            0 => Ok(v),
            _ => Err(io::Error::last_os_error()),
        }
    };
    let set = |p: &std::path::Path, v: i32| -> io::Result<()> {
        let f = File::open(p)?;
        // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer.
        match unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), SETFLAGS, &v) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    };
    let (f, d) = (m.p("f"), m.p("d"));
    fs::write(&f, b"data").unwrap();
    fs::create_dir(&d).unwrap();
    assert_eq!(get(&f).unwrap(), 0);
    assert_eq!(get(&d).unwrap(), 0);

    let ctime = |p: &std::path::Path| {
        let md = fs::metadata(p).unwrap();
        (md.ctime(), md.ctime_nsec())
    };
    let before = ctime(&f);
    std::thread::sleep(Duration::from_millis(20));
    set(&f, NODUMP | NOATIME).unwrap();
    assert_eq!(get(&f).unwrap(), NODUMP | NOATIME);
    assert!(ctime(&f) > before, "chattr left the change time (as stat sees it)");
    // Flags tmpfs does not keep either (extents, compression): refused,
    // nothing changed. `i` and `a`: `immutable_and_append_only_files`.
    for bad in [0x8_0000, 0x4, NODUMP | 0x8_0000] {
        assert_eq!(errno(set(&f, bad)), libc::EOPNOTSUPP, "{bad:#x}");
    }
    assert_eq!(get(&f).unwrap(), NODUMP | NOATIME);

    // Inherited from a directory, as on tmpfs.
    set(&d, NODUMP).unwrap();
    fs::write(d.join("new"), b"").unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    assert_eq!(get(&d.join("new")).unwrap(), NODUMP);
    assert_eq!(get(&d.join("sub")).unwrap(), NODUMP);

    // NOATIME: a read of a file whose access time is older than its last
    // change updates it (relatime) only without the flag.
    fs::write(m.p("g"), b"data").unwrap();
    for (p, flagged) in [(&f, true), (&m.p("g"), false)] {
        set_times(p, (1000, 0), (2000, 0));
        let mut b = Vec::new();
        File::open(p).unwrap().read_to_end(&mut b).unwrap();
        let at = fs::metadata(p).unwrap().atime();
        assert_eq!(at == 1000, flagged, "{p:?}: access time {at}");
    }

    // The fsxattr pair: FS_XFLAG_NODUMP 0x80, FS_XFLAG_NOATIME 0x40.
    let file = File::open(&f).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut x = [0u32; 7];
    // SAFETY: FS_IOC_FSGETXATTR writes one struct fsxattr (28 bytes).
    assert_eq!(unsafe { libc::ioctl(fd, FSGETXATTR, x.as_mut_ptr()) }, 0, "{}", io::Error::last_os_error());
    assert_eq!(x[0], 0xc0);
    x[0] = 0x80;
    // SAFETY: FS_IOC_FSSETXATTR reads one struct fsxattr.
    assert_eq!(unsafe { libc::ioctl(fd, FSSETXATTR, x.as_ptr()) }, 0, "{}", io::Error::last_os_error());
    assert_eq!(get(&f).unwrap(), NODUMP);
    x[3] = 7; // a project id: not kept
              // SAFETY: as above.
    assert_eq!(unsafe { libc::ioctl(fd, FSSETXATTR, x.as_ptr()) }, -1);
    assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EOPNOTSUPP));
    // Any other ioctl: not this filesystem's.
    let mut v = 0i32;
    // SAFETY: an _IOR('z', 9, int): at most one int written.
    assert_eq!(unsafe { libc::ioctl(fd, 0x8004_7a09, &mut v) }, -1);
    assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::ENOTTY));
}

/// `chattr +i` and `+a` are kept and enforced, as on tmpfs: the VFS does not
/// see the flags on a FUSE inode, so the daemon refuses (EPERM, to root too)
/// every change they forbid, and the flags themselves can be cleared.
#[test]
fn immutable_and_append_only_files() {
    const SETFLAGS: libc::c_ulong = 0x4008_6602;
    const GETFLAGS: libc::c_ulong = 0x8008_6601;
    const IMMUTABLE: i32 = 0x10;
    const APPEND: i32 = 0x20;
    let Some(m) = Mount::new(&[]) else { return };
    let flags = |p: &std::path::Path, v: Option<i32>| -> io::Result<i32> {
        let f = File::open(p)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let mut out: i32 = 0;
        let r = match v {
            // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer.
            Some(v) => unsafe { libc::ioctl(fd, SETFLAGS, &v) },
            // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer.
            None => unsafe { libc::ioctl(fd, GETFLAGS, &mut out) },
        };
        if r == 0 {
            Ok(out)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let eperm = |what: &str, r: io::Result<()>| assert_eq!(errno(r), libc::EPERM, "{what}");
    let (f, g, d) = (m.p("f"), m.p("g"), m.p("d"));
    fs::write(&f, b"data").unwrap();
    fs::write(&g, b"log\n").unwrap();
    fs::create_dir(&d).unwrap();
    fs::write(d.join("in"), b"").unwrap();

    // Immutable: nothing changes but the flags.
    flags(&f, Some(IMMUTABLE)).unwrap();
    assert_eq!(flags(&f, None).unwrap(), IMMUTABLE);
    eperm("open for writing", OpenOptions::new().write(true).open(&f).map(drop));
    eperm("open for appending", OpenOptions::new().append(true).open(&f).map(drop));
    eperm(
        "truncate",
        fs::File::open(&f).and_then(|_| OpenOptions::new().write(true).truncate(true).open(&f)).map(drop),
    );
    eperm("unlink", fs::remove_file(&f));
    eperm("rename", fs::rename(&f, m.p("f2")));
    eperm("rename over it", fs::rename(&g, &f));
    eperm("link", fs::hard_link(&f, m.p("f3")));
    eperm("chmod", fs::set_permissions(&f, fs::Permissions::from_mode(0o600)));
    eperm("setxattr", setxattr(&f, "user.x", b"1", 0));
    eperm("utimes", fs::File::open(&f).and_then(|h| h.set_modified(std::time::SystemTime::now())));
    assert_eq!(fs::read(&f).unwrap(), b"data", "reads work");
    // An open handle from before the flag cannot write either.
    fs::write(m.p("h"), b"x").unwrap();
    let h = OpenOptions::new().write(true).open(m.p("h")).unwrap();
    flags(&m.p("h"), Some(IMMUTABLE)).unwrap();
    eperm("write through an older handle", h.write_at(b"y", 0).map(drop));
    flags(&m.p("h"), Some(0)).unwrap();
    flags(&f, Some(0)).unwrap();
    fs::remove_file(&f).unwrap();

    // Append-only: data goes only to the end.
    flags(&g, Some(APPEND)).unwrap();
    let mut a = OpenOptions::new().append(true).open(&g).unwrap();
    a.write_all(b"more\n").unwrap();
    eperm("open for writing without O_APPEND", OpenOptions::new().write(true).open(&g).map(drop));
    eperm("truncate", OpenOptions::new().append(true).open(&g).and_then(|h| h.set_len(0)));
    eperm("unlink", fs::remove_file(&g));
    eperm("chmod", fs::set_permissions(&g, fs::Permissions::from_mode(0o600)));
    eperm("setxattr", setxattr(&g, "user.x", b"1", 0));
    eperm("punch a hole", fallocate(&a, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 0, 2));
    fallocate(&a, libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 20).unwrap();
    assert_eq!(fs::read(&g).unwrap(), b"log\nmore\n");
    flags(&g, Some(0)).unwrap();
    fs::remove_file(&g).unwrap();

    // Directories: immutable takes no entry and loses none; append-only
    // takes entries and loses none.
    flags(&d, Some(IMMUTABLE)).unwrap();
    eperm("create in it", fs::write(d.join("new"), b"").map(drop));
    eperm("mkdir in it", fs::create_dir(d.join("sub")));
    eperm("unlink in it", fs::remove_file(d.join("in")));
    flags(&d, Some(APPEND)).unwrap();
    fs::write(d.join("new"), b"").unwrap();
    eperm("unlink in it", fs::remove_file(d.join("new")));
    eperm("rename out of it", fs::rename(d.join("new"), m.p("out")));
    eperm("rmdir it", fs::remove_dir(&d));
    flags(&d, Some(0)).unwrap();
    fs::remove_dir_all(&d).unwrap();
}

/// Under `--cache writeback` the kernel writes an append back as whole
/// pages, from below the file's old size, and writes back pages dirtied
/// before a file became immutable or append-only: both are kept.
#[test]
fn append_only_files_take_appends_through_the_page_cache() {
    const SETFLAGS: libc::c_ulong = 0x4008_6602;
    const APPEND: i32 = 0x20;
    let Some(m) = Mount::new(&["--cache", "writeback"]) else { return };
    let g = m.p("g");
    let head: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    fs::write(&g, &head).unwrap();
    let f = File::open(&g).unwrap();
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer.
    assert_eq!(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), SETFLAGS, &APPEND) }, 0);
    let mut a = OpenOptions::new().append(true).open(&g).unwrap();
    a.write_all(b"appended").unwrap();
    a.sync_all().unwrap();
    drop(a);
    let mut want = head.clone();
    want.extend_from_slice(b"appended");
    assert_eq!(fs::read(&g).unwrap(), want);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), SETFLAGS, &0i32) }, 0);

    // Written, then made immutable before the kernel wrote it back.
    const IMMUTABLE: i32 = 0x10;
    let i = m.p("i");
    fs::write(&i, &head).unwrap();
    let f = File::open(&i).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), SETFLAGS, &IMMUTABLE) }, 0);
    f.sync_all().unwrap();
    assert_eq!(fs::read(&i).unwrap(), head);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), SETFLAGS, &0i32) }, 0);
}

/// A listing ends while every entry it returns is renamed away and back
/// (which gives the name a new place at the end of the directory):
/// xfstests generic/736, 5,000 entries, never finished before; tmpfs ends
/// it. `rewinddir` (a listing read again from the start) sees what was
/// created since.
#[test]
fn a_listing_ends_while_its_entries_are_renamed() {
    let Some(m) = Mount::new(&[]) else { return };
    let d = m.p("d");
    fs::create_dir(&d).unwrap();
    for i in 0..2000 {
        File::create(d.join(format!("file{i:05}"))).unwrap();
    }
    let mut seen = 0;
    for e in fs::read_dir(&d).unwrap() {
        let p = e.unwrap().path();
        fs::rename(&p, d.join("tmp")).unwrap();
        fs::rename(d.join("tmp"), &p).unwrap();
        seen += 1;
        assert!(seen <= 2000, "the listing goes on past its 2,000 entries");
    }
    assert_eq!(seen, 2000);

    // rewinddir: the same handle read again from the start.
    let c = cstr(&d);
    // SAFETY: a NUL-terminated path; the stream is closed below.
    let dir = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!dir.is_null());
    let count = |dir: *mut libc::DIR| {
        let mut n = 0;
        // SAFETY: `dir` is an open stream.
        while !unsafe { libc::readdir(dir) }.is_null() {
            n += 1;
        }
        n
    };
    assert_eq!(count(dir), 2002);
    File::create(d.join("late")).unwrap();
    // SAFETY: `dir` is an open stream.
    unsafe { libc::rewinddir(dir) };
    assert_eq!(count(dir), 2003, "rewinddir sees the new entry");
    // SAFETY: opened above, closed once.
    unsafe { libc::closedir(dir) };
}
