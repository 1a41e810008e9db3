//! One call at a time: each WinFsp operation against the real engine.

use super::nt::{self, attr, cleanup as cf, create as co};
use super::wire::{decode_dir, tests::sample_sd, tests::symlink_reparse};
use super::*;

pub(super) fn w(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// A volume with 4 KiB sectors, 1 KiB inline files, `max_bytes` of memory
/// and `max_inodes` inodes.
pub(super) fn volume(max_bytes: u64, max_inodes: u64, case_insensitive: bool) -> WinFs {
    let cfg = engine::Config {
        sector_size: 4096,
        max_bytes,
        max_inodes,
        inline_max: 1024,
        case_insensitive,
        ..engine::Config::default()
    };
    WinFs::new(Arc::new(Engine::new(cfg).unwrap()), "RAMDISK", &sample_sd()).unwrap()
}

fn fs() -> WinFs {
    volume(1 << 20, 1000, false)
}

fn file(v: &WinFs, path: &str) -> Opened {
    v.create(&w(path), co::FILE_CREATE << 24, 0, Some(&sample_sd()), 0, None, false).unwrap()
}

fn dir(v: &WinFs, path: &str) -> Opened {
    v.create(&w(path), co::FILE_CREATE << 24 | co::FILE_DIRECTORY_FILE, 0, Some(&sample_sd()), 0, None, false).unwrap()
}

fn used(v: &WinFs) -> u64 {
    v.engine().stats().pool.used
}

fn contents(v: &WinFs, h: &Handle) -> Vec<u8> {
    let size = v.get_file_info(h).unwrap().file_size as usize;
    let mut buf = vec![0; size];
    if size > 0 {
        assert_eq!(v.read(h, 0, &mut buf), Ok(size as u32));
    }
    buf
}

fn listing(v: &WinFs, h: &Handle, bufsize: usize) -> Vec<String> {
    let mut names = Vec::new();
    let mut marker = None;
    loop {
        let mut buf = vec![0u8; bufsize];
        let n = v.read_directory(h, marker, &mut buf).unwrap() as usize;
        let (entries, ended) = decode_dir(&buf[..n]);
        if let Some(last) = entries.last() {
            marker = Some(last.next_offset);
        }
        names.extend(entries.into_iter().map(|e| e.name));
        if ended {
            return names;
        }
        assert!(n > 0, "no progress");
    }
}

#[test]
fn path_errors_tell_name_from_path() {
    let v = fs();
    let f = file(&v, "\\f.txt");
    let gsbn = |p: &str| v.get_security_by_name(&w(p), false);
    assert_eq!(gsbn("\\nope"), Err(nt::STATUS_OBJECT_NAME_NOT_FOUND));
    assert_eq!(gsbn("\\nope\\x"), Err(nt::STATUS_OBJECT_PATH_NOT_FOUND));
    assert_eq!(gsbn("\\f.txt\\x"), Err(nt::STATUS_NOT_A_DIRECTORY));
    assert_eq!(v.open(&w("\\nope\\x"), 0).unwrap_err(), nt::STATUS_OBJECT_PATH_NOT_FOUND);
    let c = v.create(&w("\\nope\\x"), co::FILE_CREATE << 24, 0, None, 0, None, false);
    assert_eq!(c.unwrap_err(), nt::STATUS_OBJECT_PATH_NOT_FOUND);
    let c = v.create(&w("\\f.txt\\x"), co::FILE_CREATE << 24, 0, None, 0, None, false);
    assert_eq!(c.unwrap_err(), nt::STATUS_NOT_A_DIRECTORY);
    // An unpaired surrogate cannot be stored as UTF-8.
    let bad = vec![u16::from(b'\\'), 0xD800, u16::from(b'x')];
    assert_eq!(v.get_security_by_name(&bad, false), Err(nt::STATUS_OBJECT_NAME_INVALID));
    assert_eq!(gsbn("\\.."), Err(nt::STATUS_OBJECT_NAME_INVALID));
    assert_eq!(gsbn("\\a/b"), Err(nt::STATUS_OBJECT_NAME_INVALID));
    // 255 UTF-16 units fit when they are ASCII; 255 CJK characters do not fit 255 bytes.
    let long = format!("\\{}", "a".repeat(255));
    file(&v, &long);
    let cjk = format!("\\{}", "\u{6587}".repeat(100));
    let c = v.create(&w(&cjk), co::FILE_CREATE << 24, 0, None, 0, None, false);
    assert_eq!(c.unwrap_err(), nt::STATUS_NAME_TOO_LONG);
    v.close(f.handle);
}

#[test]
fn create_open_and_security() {
    let v = fs();
    let root = v.get_security_by_name(&w("\\"), true).unwrap();
    assert_eq!(root, ByName::Found { attributes: attr::DIRECTORY, security: Some(sample_sd()) });
    let f = file(&v, "\\a.txt");
    assert_eq!(f.info.file_attributes, attr::ARCHIVE, "new files get the archive bit");
    assert_eq!(f.info.file_size, 0);
    assert_eq!(f.info.index_number, f.handle.ino());
    let d = dir(&v, "\\d");
    assert_eq!(d.info.file_attributes, attr::DIRECTORY);
    let c = v.create(&w("\\a.txt"), co::FILE_CREATE << 24, 0, None, 0, None, false);
    assert_eq!(c.unwrap_err(), nt::STATUS_OBJECT_NAME_COLLISION);
    assert_eq!(
        v.create(&w("\\"), co::FILE_CREATE << 24, 0, None, 0, None, false).unwrap_err(),
        nt::STATUS_OBJECT_NAME_COLLISION
    );
    // Hidden + system + a bit the volume does not keep (compressed).
    let h = v
        .create(&w("\\h"), co::FILE_CREATE << 24, attr::HIDDEN | attr::SYSTEM | attr::COMPRESSED, None, 0, None, false)
        .unwrap();
    assert_eq!(h.info.file_attributes, attr::HIDDEN | attr::SYSTEM | attr::ARCHIVE);
    assert_eq!(
        v.get_security_by_name(&w("\\a.txt"), true).unwrap(),
        ByName::Found { attributes: attr::ARCHIVE, security: Some(sample_sd()) }
    );
    assert_eq!(
        v.get_security_by_name(&w("\\h"), true).unwrap(),
        ByName::Found { attributes: attr::HIDDEN | attr::SYSTEM | attr::ARCHIVE, security: None }
    );
    assert_eq!(v.get_security(&f.handle), Ok(sample_sd()));
    // Open checks the directory options.
    assert_eq!(v.open(&w("\\a.txt"), co::FILE_DIRECTORY_FILE).unwrap_err(), nt::STATUS_NOT_A_DIRECTORY);
    assert_eq!(v.open(&w("\\d"), co::FILE_NON_DIRECTORY_FILE).unwrap_err(), nt::STATUS_FILE_IS_A_DIRECTORY);
    let o = v.open(&w("\\a.txt"), co::FILE_NON_DIRECTORY_FILE).unwrap();
    assert_eq!(o.handle, Handle { ino: f.handle.ino(), dir: false });
    // A descriptor over the limit, or malformed: refused, and nothing is left behind.
    let inodes = v.engine().stats().inodes;
    let mut big = sample_sd();
    big.resize(SD_MAX + 1, 0);
    let c = v.create(&w("\\big"), co::FILE_CREATE << 24, 0, Some(&big), 0, None, false);
    assert_eq!(c.unwrap_err(), nt::STATUS_INSUFFICIENT_RESOURCES);
    let c = v.create(&w("\\bad"), co::FILE_CREATE << 24, 0, Some(&[1, 0, 0, 0]), 0, None, false);
    assert_eq!(c.unwrap_err(), nt::STATUS_INVALID_SECURITY_DESCR);
    assert_eq!(v.engine().stats().inodes, inodes);
    // set_security stores what the glue computed.
    let mut sd2 = sample_sd();
    let last = sd2.len() - 1;
    sd2[last] = 9;
    v.store_security(&f.handle, &sd2).unwrap();
    assert_eq!(v.get_security(&f.handle), Ok(sd2));
    assert_eq!(v.store_security(&f.handle, &big), Err(nt::STATUS_INSUFFICIENT_RESOURCES));
    // Extended attributes are not offered.
    let c = v.create(&w("\\ea"), co::FILE_CREATE << 24, 0, None, 0, Some(&[1, 2, 3]), false);
    assert_eq!(c.unwrap_err(), nt::STATUS_EAS_NOT_SUPPORTED);
    for h in [f.handle, d.handle, h.handle, o.handle] {
        v.close(h);
    }
    assert!(WinFs::new(Arc::clone(v.engine()), "x", &big).is_err());
}

#[test]
fn limits_are_disk_full_and_leave_nothing() {
    let v = volume(64 << 10, 4, false);
    // The allocation size is reserved at create.
    let before = used(&v);
    let a = v.create(&w("\\a"), co::FILE_CREATE << 24, 0, None, 40 << 10, None, false).unwrap();
    assert_eq!(used(&v) - before, 40 << 10);
    assert_eq!(a.info.allocation_size, 40 << 10);
    assert_eq!(a.info.file_size, 0);
    let c = v.create(&w("\\b"), co::FILE_CREATE << 24, 0, None, 40 << 10, None, false);
    assert_eq!(c.unwrap_err(), nt::STATUS_DISK_FULL);
    assert_eq!(v.get_security_by_name(&w("\\b"), false), Err(nt::STATUS_OBJECT_NAME_NOT_FOUND), "removed again");
    // The inode limit (root + a + two more).
    let x = file(&v, "\\x");
    let y = dir(&v, "\\y");
    let c = v.create(&w("\\z"), co::FILE_CREATE << 24, 0, None, 0, None, false);
    assert_eq!(c.unwrap_err(), nt::STATUS_DISK_FULL);
    for h in [a.handle, x.handle, y.handle] {
        v.close(h);
    }
}

#[test]
fn read_write_and_end_of_file() {
    let v = fs();
    let f = file(&v, "\\f");
    let h = &f.handle;
    let mut buf = [0u8; 8];
    assert_eq!(v.read(h, 0, &mut buf), Err(nt::STATUS_END_OF_FILE));
    let (n, info) = v.write(h, b"hello", 0, false, false).unwrap();
    assert_eq!((n, info.file_size), (5, 5));
    assert_eq!(v.read(h, 0, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(v.read(h, 5, &mut buf), Err(nt::STATUS_END_OF_FILE));
    assert_eq!(v.read(h, 99, &mut buf), Err(nt::STATUS_END_OF_FILE));
    assert_eq!(v.read(h, 1, &mut []), Ok(0));
    // FILE_APPEND_DATA / offset -1: at the end.
    assert_eq!(v.write(h, b" world", 1, true, false).unwrap().1.file_size, 11);
    // A paging write never extends.
    let (n, info) = v.write(h, b"WORLD!!!", 6, false, true).unwrap();
    assert_eq!((n, info.file_size), (5, 11));
    assert_eq!(v.write(h, b"x", 11, false, true).unwrap().0, 0);
    assert_eq!(contents(&v, h), b"hello WORLD");
    // Writing over the limit fails and changes nothing.
    let before = used(&v);
    assert_eq!(v.write(h, &vec![7; 2 << 20], 0, false, false).unwrap_err(), nt::STATUS_DISK_FULL);
    assert_eq!(contents(&v, h), b"hello WORLD");
    assert_eq!(used(&v), before);
    assert_eq!(v.flush(Some(h)).unwrap().unwrap().file_size, 11);
    assert_eq!(v.flush(None), Ok(None));
    v.close(f.handle);
}

/// The rule that makes the Windows cache manager safe: a cached write that
/// extends a file first sets the end of file, which reserves the memory, so
/// the lazy writer's later (paging) writes inside the size never fail, even
/// on a volume full to the byte.
#[test]
fn extending_reserves_so_paging_writes_never_fail() {
    let v = volume(256 << 10, 100, false);
    let f = file(&v, "\\big");
    let h = &f.handle;
    let free = v.volume_info().free_size;
    assert_eq!(v.set_file_size(h, free + 1, false).unwrap_err(), nt::STATUS_DISK_FULL);
    assert_eq!(v.get_file_info(h).unwrap().file_size, 0, "unchanged");
    let info = v.set_file_size(h, free, false).unwrap();
    assert_eq!(info.file_size, free);
    assert_eq!(v.volume_info().free_size, 0, "the whole range is reserved");
    // Small files too (inline data).
    let g = file(&v, "\\small");
    assert_eq!(v.set_file_size(&g.handle, 10, false).unwrap_err(), nt::STATUS_DISK_FULL);
    // The lazy writer flushes every page of the big file: all succeed.
    let page = vec![0x5A; 4096];
    for off in (0..free).step_by(4096) {
        assert_eq!(v.write(h, &page, off, false, true).unwrap().0, 4096, "paging write at {off}");
    }
    let mut back = vec![0; 4096];
    assert_eq!(v.read(h, free - 4096, &mut back), Ok(4096));
    assert_eq!(back, page);
    // A non-cached extending write at the limit is refused at once.
    assert_eq!(v.write(h, b"x", free, false, false).unwrap_err(), nt::STATUS_DISK_FULL);
    v.close(f.handle);
    v.close(g.handle);
}

#[test]
fn allocation_size() {
    let v = fs();
    let f = file(&v, "\\f");
    let h = &f.handle;
    v.write(h, &[1; 5000], 0, false, false).unwrap();
    let base = used(&v);
    assert_eq!(base, 8192);
    let info = v.set_file_size(h, 40000, true).unwrap();
    assert_eq!((info.file_size, info.allocation_size), (5000, 40960));
    assert_eq!(used(&v), 40960);
    // Shrinking the allocation (still above the size) gives the rest back.
    let info = v.set_file_size(h, 20000, true).unwrap();
    assert_eq!((info.file_size, info.allocation_size), (5000, 20480));
    // Cleanup drops what lies past the end (the file keeps its bytes and mtime).
    let mtime = info.last_write_time;
    v.cleanup(h, None, cf::SET_ALLOCATION_SIZE);
    let info = v.get_file_info(h).unwrap();
    assert_eq!((info.file_size, info.allocation_size, info.last_write_time), (5000, 8192, mtime));
    assert_eq!(used(&v), base);
    // An allocation below the size truncates.
    let info = v.set_file_size(h, 100, true).unwrap();
    assert_eq!(info.file_size, 100);
    assert_eq!(contents(&v, h), vec![1; 100]);
    // End of file down and up: zeros, never old bytes.
    v.set_file_size(h, 10, false).unwrap();
    v.set_file_size(h, 20, false).unwrap();
    let mut want = vec![1; 10];
    want.resize(20, 0);
    assert_eq!(contents(&v, h), want);
    v.close(f.handle);
    let d = dir(&v, "\\d");
    assert_eq!(v.set_file_size(&d.handle, 1, false).unwrap_err(), nt::STATUS_INVALID_PARAMETER);
    v.close(d.handle);
}

#[test]
fn overwrite_empties_and_sets_attributes() {
    let v = fs();
    let f = v.create(&w("\\f"), co::FILE_CREATE << 24, attr::HIDDEN, None, 0, None, false).unwrap();
    v.write(&f.handle, &[1; 3000], 0, false, false).unwrap();
    let info = v.overwrite(&f.handle, attr::READONLY, false, 0).unwrap();
    assert_eq!(info.file_size, 0);
    assert_eq!(info.file_attributes, attr::HIDDEN | attr::READONLY | attr::ARCHIVE, "merged");
    let info = v.overwrite(&f.handle, attr::SYSTEM, true, 8192).unwrap();
    assert_eq!(info.file_attributes, attr::SYSTEM | attr::ARCHIVE, "replaced (FILE_SUPERSEDE)");
    assert_eq!((info.file_size, info.allocation_size), (0, 8192));
    v.close(f.handle);
    let d = dir(&v, "\\d");
    assert_eq!(v.overwrite(&d.handle, 0, false, 0).unwrap_err(), nt::STATUS_FILE_IS_A_DIRECTORY);
    v.close(d.handle);
}

#[test]
fn delete_on_cleanup() {
    let v = fs();
    let d = dir(&v, "\\d");
    let f = file(&v, "\\d\\f");
    v.write(&f.handle, b"data", 0, false, false).unwrap();
    // A non-empty directory may not be deleted.
    assert_eq!(v.set_delete(&d.handle, true), Err(nt::STATUS_DIRECTORY_NOT_EMPTY));
    assert_eq!(v.set_delete(&d.handle, false), Ok(()));
    assert_eq!(v.set_delete(&f.handle, true), Ok(()));
    let second = v.open(&w("\\d\\f"), 0).unwrap();
    v.cleanup(&f.handle, Some(&w("\\d\\f")), cf::DELETE);
    assert_eq!(v.get_security_by_name(&w("\\d\\f"), false), Err(nt::STATUS_OBJECT_NAME_NOT_FOUND));
    // Handles still open read the data (POSIX semantics); the last close frees it.
    assert_eq!(contents(&v, &second.handle), b"data");
    let inodes = v.engine().stats().inodes;
    v.close(f.handle);
    v.close(second.handle);
    assert_eq!(v.engine().stats().inodes, inodes - 1);
    // Cleanup with delete of a directory that gained an entry: it stays.
    let g = file(&v, "\\d\\g");
    v.cleanup(&d.handle, Some(&w("\\d")), cf::DELETE);
    assert!(v.get_security_by_name(&w("\\d"), false).is_ok());
    v.cleanup(&g.handle, Some(&w("\\d\\g")), cf::DELETE);
    v.close(g.handle);
    assert_eq!(v.set_delete(&d.handle, true), Ok(()));
    v.cleanup(&d.handle, Some(&w("\\d")), cf::DELETE);
    assert_eq!(v.get_security_by_name(&w("\\d"), false), Err(nt::STATUS_OBJECT_NAME_NOT_FOUND));
    v.close(d.handle);
    // A name that now belongs to another file is not removed.
    let a = file(&v, "\\a");
    let b = file(&v, "\\b");
    v.rename(&a.handle, &w("\\a"), &w("\\c"), false).unwrap();
    v.rename(&b.handle, &w("\\b"), &w("\\a"), false).unwrap();
    v.cleanup(&a.handle, Some(&w("\\a")), cf::DELETE);
    assert!(v.get_security_by_name(&w("\\a"), false).is_ok(), "b, now named a, stays");
    v.close(a.handle);
    v.close(b.handle);
    assert_eq!(v.engine().stats().inodes, 3, "root, c and a");
}

#[test]
fn cleanup_sets_archive_bit_and_times() {
    let v = fs();
    let f = file(&v, "\\f");
    let h = &f.handle;
    let old = wire::filetime(engine::Time { secs: 1000, nanos: 0 });
    v.set_basic_info(h, attr::NORMAL, old, old, old, old).unwrap();
    let info = v.get_file_info(h).unwrap();
    assert_eq!(info.file_attributes, 0, "NORMAL is no attribute");
    assert_eq!(
        (info.creation_time, info.last_access_time, info.last_write_time, info.change_time),
        (old, old, old, old)
    );
    v.cleanup(h, None, cf::SET_ARCHIVE_BIT | cf::SET_LAST_WRITE_TIME);
    let info = v.get_file_info(h).unwrap();
    assert_eq!(info.file_attributes, attr::ARCHIVE);
    assert!(info.last_write_time > old);
    assert_eq!((info.last_access_time, info.change_time, info.creation_time), (old, old, old));
    v.cleanup(h, None, cf::SET_LAST_ACCESS_TIME | cf::SET_CHANGE_TIME);
    let info = v.get_file_info(h).unwrap();
    assert!(info.last_access_time > old && info.change_time > old);
    // set_basic_info: INVALID_FILE_ATTRIBUTES and zero times leave things be.
    let before = v.get_file_info(h).unwrap();
    let after = v.set_basic_info(h, attr::INVALID, 0, 0, 0, 0).unwrap();
    assert_eq!(after.file_attributes, before.file_attributes);
    assert_eq!((after.creation_time, after.last_write_time), (before.creation_time, before.last_write_time));
    let after = v.set_basic_info(h, attr::READONLY | attr::DIRECTORY, 0, 0, u64::MAX, 0).unwrap();
    assert_eq!(after.file_attributes, attr::READONLY, "the directory bit follows the node");
    assert_eq!(after.last_write_time, before.last_write_time, "-1: leave the time");
    v.close(f.handle);
}

#[test]
fn rename_semantics() {
    let v = volume(1 << 20, 1000, true);
    let d = dir(&v, "\\d");
    let e = dir(&v, "\\e");
    let a = file(&v, "\\a");
    v.write(&a.handle, b"A", 0, false, false).unwrap();
    let b = file(&v, "\\b");
    v.write(&b.handle, b"B", 0, false, false).unwrap();
    assert_eq!(v.rename(&a.handle, &w("\\a"), &w("\\b"), false), Err(nt::STATUS_OBJECT_NAME_COLLISION));
    assert_eq!(
        v.rename(&a.handle, &w("\\a"), &w("\\d"), true),
        Err(nt::STATUS_ACCESS_DENIED),
        "never over a directory"
    );
    assert_eq!(v.rename(&a.handle, &w("\\a"), &w("\\nope\\x"), false), Err(nt::STATUS_OBJECT_PATH_NOT_FOUND));
    // Replace: the old b, still open, keeps its data until closed.
    v.rename(&a.handle, &w("\\a"), &w("\\b"), true).unwrap();
    assert_eq!(contents(&v, &b.handle), b"B");
    let o = v.open(&w("\\B"), 0).unwrap(); // case-insensitive
    assert_eq!(contents(&v, &o.handle), b"A");
    // Across directories, and a directory with its contents.
    v.rename(&a.handle, &w("\\b"), &w("\\d\\a"), false).unwrap();
    v.rename(&d.handle, &w("\\d"), &w("\\e\\d"), false).unwrap();
    assert!(v.get_security_by_name(&w("\\E\\D\\A"), false).is_ok());
    assert_eq!(v.rename(&e.handle, &w("\\e"), &w("\\e\\d\\x"), false), Err(nt::STATUS_INVALID_PARAMETER));
    // Case-only rename keeps the node and changes the stored name.
    v.rename(&a.handle, &w("\\e\\d\\a"), &w("\\e\\d\\A"), false).unwrap();
    let names = listing(&v, &d.handle, 4096);
    assert_eq!(names, [".", "..", "A"]);
    for h in [a.handle, b.handle, d.handle, e.handle, o.handle] {
        v.close(h);
    }
}

#[test]
fn read_directory_markers_and_entries() {
    let v = fs();
    let root = v.open(&w("\\"), 0).unwrap();
    let d = dir(&v, "\\d");
    let f = file(&v, "\\d\\f");
    v.write(&f.handle, b"12345", 0, false, false).unwrap();
    assert_eq!(listing(&v, &root.handle, 4096), ["d"], "the root has no dot entries");
    let mut buf = vec![0u8; 4096];
    let n = v.read_directory(&d.handle, None, &mut buf).unwrap() as usize;
    let (entries, ended) = decode_dir(&buf[..n]);
    assert!(ended);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, [".", "..", "f"]);
    assert_eq!(entries[0].index_number, d.handle.ino());
    assert_eq!(entries[0].attributes, attr::DIRECTORY);
    assert_eq!(entries[1].index_number, engine::ROOT);
    assert_eq!((entries[2].file_size, entries[2].attributes), (5, attr::ARCHIVE));
    // Resuming after the last entry gives just the end mark.
    let n = v.read_directory(&d.handle, Some(entries[2].next_offset), &mut buf).unwrap() as usize;
    assert_eq!(decode_dir(&buf[..n]), (vec![], true));
    assert_eq!(v.read_directory(&f.handle, None, &mut buf), Err(nt::STATUS_NOT_A_DIRECTORY));
    // Many entries, a buffer that holds a few: every name once.
    let mut want = Vec::new();
    for i in 0..200 {
        let name = format!("file-{i:03}-with-a-longer-name");
        let o = file(&v, &format!("\\{name}"));
        v.close(o.handle);
        want.push(name);
    }
    want.insert(0, "d".to_string());
    let mut got = listing(&v, &root.handle, 600);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for h in [root.handle, d.handle, f.handle] {
        v.close(h);
    }
}

/// Entries present for the whole listing are listed exactly once while
/// other threads create and delete names in the same directory.
#[test]
fn read_directory_is_stable_under_concurrent_changes() {
    let v = Arc::new(volume(8 << 20, 100_000, false));
    let mut keep = Vec::new();
    for i in 0..300 {
        let o = file(&v, &format!("\\keep{i}"));
        v.close(o.handle);
        keep.push(format!("keep{i}"));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (v, stop) = (Arc::clone(&v), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = w(&format!("\\tmp{i}"));
                let o = v.create(&p, co::FILE_CREATE << 24, 0, None, 0, None, false).unwrap();
                v.cleanup(&o.handle, Some(&p), cf::DELETE);
                v.close(o.handle);
                i += 1;
            }
        })
    };
    let root = v.open(&w("\\"), 0).unwrap();
    for _ in 0..20 {
        let mut got: Vec<String> =
            listing(&v, &root.handle, 1000).into_iter().filter(|n| n.starts_with("keep")).collect();
        got.sort();
        let mut want = keep.clone();
        want.sort();
        assert_eq!(got, want);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    v.close(root.handle);
}

#[test]
fn reparse_points() {
    let v = fs();
    // mklink /D: create a directory, then set the reparse point on it.
    let l = dir(&v, "\\link");
    let data = symlink_reparse("target");
    v.set_reparse_point(&l.handle, &data).unwrap();
    let info = v.get_file_info(&l.handle).unwrap();
    assert_eq!(info.file_attributes, attr::DIRECTORY | attr::REPARSE_POINT);
    assert_eq!(info.reparse_tag, nt::reparse::TAG_SYMLINK);
    let mut buf = vec![0u8; 1024];
    assert_eq!(v.get_reparse_point(&l.handle, &mut buf), Ok(data.len()));
    assert_eq!(&buf[..data.len()], &data[..]);
    assert_eq!(v.get_reparse_point_by_name(&w("\\link"), &mut buf), Ok(data.len()));
    assert_eq!(v.get_reparse_point_by_name(&w("\\link"), &mut buf[..4]), Err(nt::STATUS_BUFFER_TOO_SMALL));
    // A path through it is for WinFsp to resolve.
    assert_eq!(v.get_security_by_name(&w("\\link\\x"), false), Ok(ByName::ReparseInPath));
    assert_eq!(v.open(&w("\\link\\x"), 0).unwrap_err(), nt::STATUS_OBJECT_PATH_NOT_FOUND);
    let ByName::Found { attributes, .. } = v.get_security_by_name(&w("\\link"), false).unwrap() else { panic!() };
    assert_eq!(attributes, attr::DIRECTORY | attr::REPARSE_POINT);
    // Listed with its tag in the attributes.
    let root = v.open(&w("\\"), 0).unwrap();
    let n = v.read_directory(&root.handle, None, &mut buf).unwrap() as usize;
    assert_eq!(decode_dir(&buf[..n]).0[0].attributes, attr::DIRECTORY | attr::REPARSE_POINT);
    // Replace needs the same tag; delete too.
    v.set_reparse_point(&l.handle, &symlink_reparse("elsewhere")).unwrap();
    let mut junction = symlink_reparse("x");
    junction[..4].copy_from_slice(&nt::reparse::TAG_MOUNT_POINT.to_le_bytes());
    assert_eq!(v.set_reparse_point(&l.handle, &junction), Err(nt::STATUS_IO_REPARSE_TAG_MISMATCH));
    assert_eq!(v.delete_reparse_point(&l.handle, &junction), Err(nt::STATUS_IO_REPARSE_TAG_MISMATCH));
    // FSCTL_DELETE_REPARSE_POINT passes just the header (tag, length 0).
    let mut header = nt::reparse::TAG_SYMLINK.to_le_bytes().to_vec();
    header.extend_from_slice(&[0; 4]);
    v.delete_reparse_point(&l.handle, &header).unwrap();
    assert_eq!(v.get_file_info(&l.handle).unwrap().file_attributes, attr::DIRECTORY);
    assert_eq!(v.get_reparse_point(&l.handle, &mut buf), Err(nt::STATUS_NOT_A_REPARSE_POINT));
    assert_eq!(v.delete_reparse_point(&l.handle, &data), Err(nt::STATUS_NOT_A_REPARSE_POINT));
    // Not on a directory with entries; not with malformed data.
    let x = file(&v, "\\link\\x");
    assert_eq!(v.set_reparse_point(&l.handle, &data), Err(nt::STATUS_DIRECTORY_NOT_EMPTY));
    assert_eq!(v.set_reparse_point(&x.handle, &data[..7]), Err(nt::STATUS_IO_REPARSE_DATA_INVALID));
    // Created with the data in one go (WSL-style CreateEx with a reparse buffer).
    let s = v.create(&w("\\s"), co::FILE_CREATE << 24, 0, None, 0, Some(&data), true).unwrap();
    assert_eq!(s.info.file_attributes, attr::ARCHIVE | attr::REPARSE_POINT);
    assert_eq!(s.info.reparse_tag, nt::reparse::TAG_SYMLINK);
    for h in [l.handle, root.handle, x.handle, s.handle] {
        v.close(h);
    }
}

#[test]
fn volume_label_and_stats() {
    let v = volume(1 << 20, 1000, false);
    let vi = v.volume_info();
    assert_eq!((vi.total_size, vi.free_size, vi.label.clone()), (1 << 20, 1 << 20, w("RAMDISK")));
    let f = file(&v, "\\f");
    v.write(&f.handle, &[0; 5000], 0, false, false).unwrap();
    assert_eq!(v.volume_info().free_size, (1 << 20) - 8192);
    let long = w(&"L".repeat(40));
    assert_eq!(v.set_volume_label(&long).label.len(), LABEL_MAX);
    let mut with_nul = w("NEW");
    with_nul.extend([0, u16::from(b'x')]);
    assert_eq!(v.set_volume_label(&with_nul).label, w("NEW"));
    let mut out = vec![0u8; nt::DEVICECONTROL_SIZEMAX];
    let n = v.control(IOCTL_SECTORFS_STATS, &mut out).unwrap() as usize;
    let s = crate::stats::Report::from_json(std::str::from_utf8(&out[..n]).unwrap()).unwrap();
    assert_eq!((s.used_bytes, s.files), (8192, 2));
    assert_eq!((s.seconds_to_full, s.alloc_rate_bytes_per_s.is_some()), (None, true));
    assert_eq!(v.control(IOCTL_SECTORFS_STATS, &mut out[..10]), Err(nt::STATUS_BUFFER_TOO_SMALL));
    assert_eq!(v.control(0x1234, &mut out), Err(nt::STATUS_INVALID_DEVICE_REQUEST));
    v.close(f.handle);
}
