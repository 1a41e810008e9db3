//! The exact memory limit and the inode limit: a refused mutation leaves the
//! file exactly as it was, reads and deletes work when full, and deleting
//! returns every byte.

mod support;

use engine::data::{FALLOC_KEEP_SIZE as KEEP, FALLOC_PUNCH_HOLE as PUNCH, FALLOC_ZERO_RANGE as ZERO};
use engine::{Config, Engine, Error, Ino, ROOT};
use support::*;

/// An engine whose limit is `sectors` sectors of `ss` bytes.
fn limited(ss: usize, sectors: u64, inline: usize) -> Engine {
    tiny(ss, ss as u64 * sectors, inline)
}

fn snapshot(e: &Engine, ino: Ino) -> (u64, Vec<u8>) {
    (e.getattr(ino).unwrap().size, read_all(e, ino))
}

#[test]
fn write_over_the_limit_changes_nothing() {
    for (ss, inline) in [(4096usize, 0usize), (4096, 4096), (65536, 1024), (16, 0), (16, 8), (64, 32)] {
        let e = limited(ss, 8, inline);
        let a = put(&e, ROOT, b"a", &vec![1; 5 * ss + ss / 2]);
        let b = put(&e, ROOT, b"b", &vec![2; inline.max(1)]);
        let used = e.stats().pool.used;
        assert!(used <= e.stats().pool.limit);
        let sa = snapshot(&e, a);
        let sb = snapshot(&e, b);
        // Growth past the limit, in one call (`write` would store what
        // fits: `a_write_past_the_limit_stores_what_fits`).
        assert_eq!(e.write_whole(a, 0, &vec![3; 9 * ss]), Err(Error::NoSpace), "ss {ss}");
        assert_eq!(e.write_whole(a, sa.0, &vec![3; 3 * ss]), Err(Error::NoSpace), "ss {ss}");
        assert_eq!(e.write_whole(b, 100 * ss as u64, &vec![3; 3 * ss]), Err(Error::NoSpace), "ss {ss}");
        assert_eq!(e.append(a, &vec![3; 3 * ss]), Err(Error::NoSpace), "ss {ss}");
        assert_eq!(e.fallocate(a, 0, 0, 20 * ss as u64), Err(Error::NoSpace), "ss {ss}");
        assert_eq!(e.fallocate(a, KEEP, 0, 20 * ss as u64), Err(Error::NoSpace), "ss {ss}");
        assert_eq!(e.fallocate(a, ZERO, 0, 20 * ss as u64), Err(Error::NoSpace), "ss {ss}");
        assert_eq!(snapshot(&e, a), sa, "ss {ss}: a unchanged");
        assert_eq!(snapshot(&e, b), sb, "ss {ss}: b unchanged");
        assert_eq!(e.stats().pool.used, used, "ss {ss}: nothing charged by refused writes");
        teardown(&e);
    }
}

/// POSIX's partial write at the end of a medium, as tmpfs makes it: a
/// write that does not fit stores the prefix that does (up to a sector
/// boundary) and returns its length; the next write fails. What a short
/// write counted is stored; what it did not is not. `copy_file_range`
/// stops short the same way.
#[test]
fn a_write_past_the_limit_stores_what_fits() {
    for (ss, inline) in [(4096usize, 0usize), (4096, 4096), (65536, 1024), (16, 0), (16, 8), (64, 32)] {
        let e = limited(ss, 8, inline);
        let a = put(&e, ROOT, b"a", &vec![1; 5 * ss + ss / 2]);
        let free = (e.stats().pool.limit - e.stats().pool.used) / ss as u64;
        assert_eq!(free, 2, "ss {ss}");
        let data: Vec<u8> = (0..4 * ss).map(|i| (i % 251) as u8 + 2).collect();
        let at = 5 * ss + ss / 2;
        // The rest of a's last sector and two new ones.
        let n = e.write(a, at as u64, &data).unwrap();
        assert_eq!(n, ss / 2 + 2 * ss, "ss {ss}");
        assert_eq!(e.stats().pool.used, e.stats().pool.limit, "ss {ss}: filled to the byte");
        let mut want = vec![1; at];
        want.extend_from_slice(&data[..n]);
        assert_eq!(snapshot(&e, a), (want.len() as u64, want.clone()), "ss {ss}");
        // The next write of the rest: nothing fits.
        assert_eq!(e.write(a, (at + n) as u64, &data[n..]), Err(Error::NoSpace), "ss {ss}");
        assert_eq!(snapshot(&e, a), (want.len() as u64, want.clone()), "ss {ss}");
        // Four sectors free again; four sectors' worth copied one byte in
        // needs five: the copy stops at the end of c's fourth.
        truncate(&e, a, (4 * ss) as u64).unwrap();
        let c = mkfile(&e, ROOT, b"c");
        let copied = e.copy_file_range(a, 0, c, 1, (4 * ss) as u64).unwrap();
        assert_eq!(copied, ss as u64 * 4 - 1, "ss {ss}: up to the end of c's fourth sector");
        assert_eq!(read_all(&e, c)[1..], want[..copied as usize], "ss {ss}");
        assert_eq!(e.stats().pool.used, e.stats().pool.limit, "ss {ss}");
        teardown(&e);
    }
}

/// A write on a full disk over sectors the file already has (fallocated,
/// or written) and on into a hole or past them stores every byte of the
/// sectors it has, up to the first one it would need anew, in one call: a
/// page-cache write-back takes a short count as a failure of the whole
/// request, and a probe lost fallocated pages that way (the search
/// started from the free sectors alone and stored one sector).
#[test]
fn a_full_disk_stores_a_write_up_to_its_first_new_sector() {
    for ss in [4096usize, 65536, 16] {
        let e = limited(ss, 8, 0);
        let a = mkfile(&e, ROOT, b"a");
        // Sectors 0..3 fallocated, 4 a hole, 5..6 written, 7 free.
        e.fallocate(a, 0, 0, 4 * ss as u64).unwrap();
        e.write(a, 5 * ss as u64, &vec![5; 2 * ss]).unwrap();
        let b = put(&e, ROOT, b"b", &vec![9; ss]);
        let c = put(&e, ROOT, b"c", &vec![9; ss]);
        assert_eq!(e.stats().pool.used, e.stats().pool.limit, "ss {ss}: full");
        let data: Vec<u8> = (0..9 * ss).map(|i| (i % 253) as u8 + 1).collect();
        // From inside sector 1 through the hole: sectors 1..3 are stored.
        let n = e.write(a, (ss + 7) as u64, &data).unwrap();
        assert_eq!(n, 3 * ss - 7, "ss {ss}");
        let got = read_all(&e, a);
        assert_eq!(got[ss + 7..4 * ss], data[..n], "ss {ss}");
        assert_eq!(e.write(a, 4 * ss as u64, &data[..1]), Err(Error::NoSpace), "ss {ss}: the hole needs a sector");
        // One sector free: the hole takes it, the written ones follow, and
        // the write stops before sector 7, which it would need anew.
        e.unlink(ROOT, b"b").unwrap();
        e.forget(b, 1);
        let n = e.write(a, 4 * ss as u64, &data).unwrap();
        assert_eq!(n, 3 * ss, "ss {ss}");
        assert_eq!(read_all(&e, a)[4 * ss..7 * ss], data[..3 * ss], "ss {ss}");
        assert_eq!(e.stats().pool.used, e.stats().pool.limit, "ss {ss}");
        e.forget(c, 1);
        teardown(&e);
    }
}

#[test]
fn fill_exactly_to_the_limit() {
    let e = limited(4096, 16, 0);
    let limit = e.stats().pool.limit;
    let f = mkfile(&e, ROOT, b"f");
    for k in 0..16u64 {
        e.write(f, k * 4096, &[k as u8 + 1; 4096]).unwrap();
    }
    assert_eq!(e.stats().pool.used, limit, "every byte usable");
    assert_eq!((e.statfs().bfree, e.statfs().bavail), (0, 0));
    assert_eq!(e.write(f, 16 * 4096, b"x"), Err(Error::NoSpace));
    let g = mkfile(&e, ROOT, b"g");
    assert_eq!(e.write(g, 0, b"x"), Err(Error::NoSpace));
    // Reads work when full.
    let got = read_all(&e, f);
    assert!((0..16).all(|k| got[k * 4096..(k + 1) * 4096].iter().all(|&b| b == k as u8 + 1)));
    // Growing without data (a hole) needs no memory.
    truncate(&e, f, 100 * 4096).unwrap();
    truncate(&e, f, 16 * 4096).unwrap();
    // Shrinking and punching work when full, even where they must copy.
    let h = e.link(f, ROOT, b"h").unwrap();
    e.fallocate(f, PUNCH | KEEP, 4096 + 10, 4096).unwrap();
    truncate(&e, f, 15 * 4096 + 7).unwrap();
    assert!(e.stats().pool.used <= limit);
    let got = read_all(&e, f);
    assert_eq!(got.len(), 15 * 4096 + 7);
    assert!(got[4096 + 10..2 * 4096 + 10].iter().all(|&b| b == 0));
    assert_eq!(got[4096 + 9], 2);
    assert_eq!(got[2 * 4096 + 10], 3);
    // Deleting works when full and gives the memory back.
    e.forget(h.ino, 1);
    e.unlink(ROOT, b"h").unwrap();
    e.unlink(ROOT, b"f").unwrap();
    assert_eq!(e.stats().pool.used, 0);
    e.write(g, 0, &vec![9; 16 * 4096]).unwrap();
    teardown(&e);
}

#[test]
fn inline_files_count_exact_bytes() {
    let e = tiny(4096, 1000, 4096);
    let a = put(&e, ROOT, b"a", &[1; 600]);
    assert_eq!(e.stats().pool.used, 600);
    let b = put(&e, ROOT, b"b", &[2; 400]);
    assert_eq!(e.stats().pool.used, 1000);
    assert_eq!(e.write(b, 400, b"x"), Err(Error::NoSpace));
    assert_eq!(read_all(&e, b), vec![2; 400]);
    // Shrinking an inline file when full.
    truncate(&e, a, 100).unwrap();
    assert_eq!(e.stats().pool.used, 500);
    assert_eq!(read_all(&e, a), vec![1; 100]);
    e.fallocate(b, PUNCH | KEEP, 0, 10).unwrap();
    assert_eq!(e.stats().pool.used, 500);
    teardown(&e);
}

#[test]
fn overwrite_when_full_is_all_or_nothing() {
    // Overwriting published data needs a copy (readers may hold the old
    // version), so at the limit it may be refused; if so, nothing changed.
    for ss in [16usize, 4096] {
        let e = limited(ss, 4, 0);
        let f = put(&e, ROOT, b"f", &vec![5; 4 * ss]);
        let before = snapshot(&e, f);
        match e.write(f, 1, &vec![6; 2 * ss]) {
            Ok(n) => {
                assert_eq!(n, 2 * ss);
                let got = read_all(&e, f);
                assert!(got[1..1 + 2 * ss].iter().all(|&b| b == 6));
            }
            Err(err) => {
                assert_eq!(err, Error::NoSpace);
                assert_eq!(snapshot(&e, f), before);
            }
        }
        assert_eq!(e.stats().pool.used, 4 * ss as u64);
        teardown(&e);
    }
}

#[test]
fn inode_limit() {
    let e = Engine::new(Config { max_inodes: 4, sector_size: 4096, ..Config::default() }).unwrap();
    let a = mkfile(&e, ROOT, b"a");
    let d = mkdir(&e, ROOT, b"d");
    let l = e.symlink(d, b"l", b"t", 0, 0).unwrap();
    e.forget(l.ino, 1);
    assert_eq!(e.stats().inodes, 4);
    assert_eq!(e.statfs().ffree, 0);
    assert_eq!(e.create(ROOT, b"x", 0o644, 0, 0).err(), Some(Error::NoInodes));
    assert_eq!(e.mkdir(ROOT, b"x", 0o755, 0, 0).err(), Some(Error::NoInodes));
    assert_eq!(e.mknod(ROOT, b"x", 0o010644, 0, 0, 0).err(), Some(Error::NoInodes));
    assert_eq!(e.symlink(ROOT, b"x", b"t", 0, 0).err(), Some(Error::NoInodes));
    assert_eq!(e.tmpfile(ROOT, 0o600, 0, 0).err(), Some(Error::NoInodes));
    assert_eq!(names(&e, ROOT), vec![b"a".to_vec(), b"d".to_vec()], "nothing created");
    // Existing-name errors come first; a second name is an inode too, as
    // on tmpfs (each pins a dentry there).
    assert_eq!(e.create(ROOT, b"a", 0o644, 0, 0).err(), Some(Error::Exists));
    assert_eq!(e.link(a, d, b"a2").err(), Some(Error::NoInodes));
    assert_eq!(names(&e, d), vec![b"l".to_vec()], "no name added");
    // Reads and deletes work at the limit; deleting frees an inode.
    e.write(a, 0, b"data").unwrap();
    assert_eq!(read_all(&e, a), b"data");
    e.unlink(d, b"l").unwrap();
    assert_eq!(e.stats().inodes, 3);
    e.forget(e.link(a, d, b"a2").unwrap().ino, 1);
    assert_eq!((e.stats().inodes, e.statfs().ffree), (4, 0));
    assert_eq!(e.create(ROOT, b"x", 0o644, 0, 0).err(), Some(Error::NoInodes));
    // Removing a name while another stays gives its inode back.
    e.unlink(ROOT, b"a").unwrap();
    assert_eq!(e.stats().inodes, 3);
    assert_eq!(read_all(&e, a), b"data");
    let t = e.tmpfile(ROOT, 0o600, 0, 0).unwrap();
    assert_eq!(e.create(ROOT, b"x", 0o644, 0, 0).err(), Some(Error::NoInodes));
    // An `O_TMPFILE` file's first name takes no inode more: it has one.
    e.forget(e.link(t.ino, ROOT, b"t").unwrap().ino, 1);
    assert_eq!(e.stats().inodes, 4);
    e.release(t.ino);
    e.forget(t.ino, 1);
    e.unlink(ROOT, b"t").unwrap();
    assert_eq!(e.stats().inodes, 3);
    e.forget(e.create(ROOT, b"x", 0o644, 0, 0).unwrap().ino, 1);
    teardown(&e);
}

/// Every name of a file beyond its first counts against `max_inodes`, as on
/// tmpfs: `link` takes one, `unlink` and a rename over a name give it back
/// when the file keeps another name, and an image load counts them.
#[test]
fn names_beyond_the_first_are_inodes() {
    let e = Engine::new(Config { max_inodes: 10, sector_size: 4096, ..Config::default() }).unwrap();
    let a = mkfile(&e, ROOT, b"a");
    for n in [&b"l0"[..], b"l1", b"l2"] {
        e.forget(e.link(a, ROOT, n).unwrap().ino, 1);
    }
    assert_eq!((e.stats().inodes, e.statfs().ffree), (5, 5), "the root, a, three more names");
    let b = mkfile(&e, ROOT, b"b");
    e.rename(ROOT, b"b", ROOT, b"l0", 0).unwrap();
    assert_eq!(e.stats().inodes, 5, "a lost a name to the rename");
    assert_eq!(e.getattr(a).unwrap().nlink, 3);
    let mut img = Vec::new();
    e.snapshot().write_to(&mut img, &[]).unwrap();
    let l = Engine::load_image(&img[..], |i| Ok(i.config.clone())).unwrap();
    assert_eq!(l.stats().inodes, 5, "loaded: the same count");
    let err = Engine::load_image(&img[..], |i| Ok(Config { max_inodes: 4, ..i.config.clone() })).unwrap_err();
    assert!(matches!(err, engine::image::ImageError::TooManyFiles { nodes: 5, limit: 4 }), "{err}");
    for n in [&b"a"[..], b"l1", b"l2"] {
        e.unlink(ROOT, n).unwrap();
    }
    e.forget(a, 1);
    assert_eq!(e.stats().inodes, 2, "the root and b");
    e.forget(b, 1);
    teardown(&e);
}

#[test]
fn deleting_everything_returns_all_memory() {
    let e = tiny(4096, 256 << 20, 1024);
    let mut rng = 0x1234_5678_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let dirs = [ROOT, mkdir(&e, ROOT, b"d1"), mkdir(&e, ROOT, b"d2")];
    let mut held = Vec::new();
    for i in 0..300 {
        let dir = dirs[i % 3];
        let a = e.create(dir, format!("f{i}").as_bytes(), 0o644, 0, 0).unwrap();
        let len = (next() % 50_000) as usize;
        e.write(a.ino, next() % 20_000, &vec![i as u8; len]).unwrap();
        match i % 5 {
            0 => e.fallocate(a.ino, PUNCH | KEEP, next() % 30_000, 10_000).unwrap(),
            1 => {
                truncate(&e, a.ino, next() % 80_000).unwrap();
            }
            2 => e.setxattr(a.ino, b"user.x", &[1; 100], 0).unwrap(),
            3 => {
                e.open(a.ino).unwrap();
                held.push(a.ino);
            }
            _ => {
                e.link(a.ino, dirs[(i + 1) % 3], format!("l{i}").as_bytes()).unwrap();
            }
        }
        e.forget(a.ino, if i % 5 == 4 { 2 } else { 1 });
    }
    assert!(e.stats().pool.used > 0);
    assert!(e.stats().logical_bytes > 0);
    remove_tree(&e, ROOT);
    assert!(e.stats().pool.used > 0, "open orphans still hold data");
    for ino in held {
        e.release(ino);
    }
    assert_empty(&e);
    assert!(e.stats().pool.peak > 0);
}

/// Overwriting data a reader could see copies its sector (the contract); on a
/// full file system that copy must not fail: the file's use does not grow,
/// and the old sector is freed once the new table is published.
#[test]
fn overwrite_works_when_full() {
    for (ss, sectors) in [(4096usize, 16u64), (16, 8), (65536, 4)] {
        let e = limited(ss, sectors, 0);
        let limit = e.stats().pool.limit;
        let f = mkfile(&e, ROOT, b"f");
        e.write(f, 0, &vec![1; ss * sectors as usize]).unwrap();
        assert_eq!(e.stats().pool.used, limit, "ss {ss}: full");
        // One byte, a span across two sectors, and every sector at once.
        e.write(f, 3, b"x").unwrap();
        e.write(f, ss as u64 - 2, b"abcd").unwrap();
        e.write(f, 0, &vec![7; ss * sectors as usize]).unwrap();
        e.write(f, 1, b"yz").unwrap();
        assert_eq!(e.stats().pool.used, limit, "ss {ss}: replacements returned their twins");
        let mut want = vec![7; ss * sectors as usize];
        want[1..3].copy_from_slice(b"yz");
        assert_eq!(read_all(&e, f), want, "ss {ss}");
        // Growth is still refused.
        assert_eq!(e.write(f, ss as u64 * sectors, b"x"), Err(Error::NoSpace), "ss {ss}");
        teardown(&e);
    }
}

/// An overwrite whose replaced pages a reader still holds does not take
/// another file's room: the copy is outside `used` (`forced`) until the
/// replaced page is freed, so a write that grows another file into what
/// is left succeeds, as on tmpfs, where an overwrite takes no memory.
/// (A probe saw appenders get short writes at 95% full while another
/// process overwrote in place.)
#[test]
fn an_overwrite_a_reader_holds_leaves_the_room_to_other_files() {
    for (ss, inline) in [(4096usize, 0usize), (65536, 1024), (16, 0)] {
        let e = limited(ss, 3, inline);
        let a = put(&e, ROOT, b"a", &vec![1; 2 * ss]);
        let b = put(&e, ROOT, b"b", b"");
        let held = e
            .read_with(a, 0, 2 * ss, |slices| {
                // A reader holds the version that reaches `a`'s pages: both
                // overwrites copy, and the replaced pages stay until it is done.
                assert_eq!(e.write(a, 0, &vec![2; 2 * ss]), Ok(2 * ss), "ss {ss}");
                assert_eq!(e.write(b, 0, &vec![3; ss]), Ok(ss), "ss {ss}: the room left is b's");
                assert_eq!(e.write(b, ss as u64, &[3]), Err(Error::NoSpace), "ss {ss}: and no more");
                let st = e.stats().pool;
                assert_eq!((st.used, st.forced), (3 * ss as u64, 2 * ss as u64), "ss {ss}");
                slices.iter().flat_map(|s| s.iter().copied()).collect::<Vec<u8>>()
            })
            .unwrap();
        assert_eq!(held, vec![1; 2 * ss], "ss {ss}: the reader saw the old bytes");
        let st = e.stats().pool;
        assert_eq!((st.used, st.forced), (3 * ss as u64, 0), "ss {ss}: exact once the reader is done");
        assert!(st.peak <= st.limit, "ss {ss}: peak past the limit");
        assert_eq!(read_all(&e, a), vec![2; 2 * ss]);
        assert_eq!(read_all(&e, b), vec![3; ss]);
        e.unlink(ROOT, b"a").unwrap();
        e.unlink(ROOT, b"b").unwrap();
        e.forget(a, 1);
        e.forget(b, 1);
        assert_eq!((e.stats().pool.used, e.stats().pool.forced), (0, 0), "ss {ss}");
    }
}

/// An image whose names alone pass the inode limit is refused as soon as
/// they do: every name is an inode or a further name that counts as one (a
/// probe's million hard links took 91 MB of heap, loaded under a limit of
/// 60,000 files, before the refusal at the end).
#[test]
fn an_image_with_too_many_names_is_refused_early() {
    let e = Engine::new(Config { sector_size: 4096, ..Config::default() }).unwrap();
    let a = mkfile(&e, ROOT, b"a");
    for i in 0..50 {
        e.forget(e.link(a, ROOT, format!("l{i}").as_bytes()).unwrap().ino, 1);
    }
    let mut img = Vec::new();
    e.snapshot().write_to(&mut img, &[]).unwrap();
    let err = Engine::load_image(&img[..], |i| Ok(Config { max_inodes: 10, ..i.config.clone() })).unwrap_err();
    assert!(matches!(err, engine::image::ImageError::TooManyFiles { nodes: 11, limit: 10 }), "{err}");
}
