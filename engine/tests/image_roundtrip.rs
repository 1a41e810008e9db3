//! Images (issue 21): a save and a load give back every file type, hard
//! link, hole, xattr (ACLs too), owner, mode, nanosecond time and the
//! settings; a corrupt or truncated image at any byte is an error (never a
//! panic, never a different file system); the limit is checked with the
//! numbers; a snapshot is one point in time while writers keep going.

use std::collections::BTreeMap;

use engine::acl::{tag, Acl, Entry, ACCESS, DEFAULT};
use engine::image::{self, ImageError};
use engine::{inode_flags, Config, Engine, FileType, Ino, SetAttr, SetTime, Time, ROOT};

fn cfg() -> Config {
    Config { max_bytes: 64 << 20, max_inodes: 1000, posix_acl: true, sector_size: 4096, ..Config::default() }
}

/// Everything an image must keep, by path.
fn dump(e: &Engine) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let ss = e.config().sector_size as u64;
    let mut stack = vec![(ROOT, String::from("/"))];
    while let Some((dir, path)) = stack.pop() {
        let mut kids = Vec::new();
        e.readdir(dir, 0, |d| {
            if d.name != b"." && d.name != b".." {
                kids.push((d.ino, String::from_utf8_lossy(d.name).into_owned(), d.kind));
            }
            true
        })
        .unwrap();
        let mut order = Vec::new();
        for (ino, name, kind) in kids {
            order.push(name.clone());
            let p = format!("{path}{name}");
            if kind == FileType::Directory {
                stack.push((ino, format!("{p}/")));
            }
            out.insert(p, describe(e, ino, ss));
        }
        out.insert(format!("{path}."), format!("{} order {order:?}", describe(e, dir, ss)));
    }
    out
}

fn describe(e: &Engine, ino: Ino, ss: u64) -> String {
    let a = e.getattr(ino).unwrap();
    let mut s = format!("{a:?}");
    let names = e.listxattr(ino).unwrap();
    for n in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        s += &format!(" x[{}]={:?}", String::from_utf8_lossy(n), e.getxattr(ino, n).unwrap());
    }
    match a.kind {
        FileType::Symlink => s += &format!(" -> {:?}", e.readlink(ino).unwrap()),
        FileType::Regular => {
            let mut buf = vec![0u8; a.size as usize];
            assert_eq!(e.read(ino, 0, &mut buf).unwrap(), buf.len());
            let h = buf.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            s += &format!(" data {h:x}");
            // The hole map.
            let mut pos = 0;
            while let Ok(d) = e.seek(ino, pos, true) {
                let h = e.seek(ino, d, false).unwrap();
                s += &format!(" [{d}..{h})");
                pos = h;
            }
            let _ = ss;
        }
        _ => {}
    }
    s
}

/// Equal dumps, or a panic naming the first path that differs (short).
fn same(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) {
    let cut = |s: Option<&String>| s.map(|s| s.chars().take(400).collect::<String>());
    for k in a.keys().chain(b.keys()) {
        assert_eq!(cut(a.get(k)), cut(b.get(k)), "{k:?} differs");
    }
}

fn save(e: &Engine) -> Vec<u8> {
    let mut v = Vec::new();
    e.snapshot().write_to(&mut v, &[("label", "test")]).unwrap();
    v
}

fn load(img: &[u8]) -> Result<Engine, ImageError> {
    Engine::load_image(img, |i| Ok(i.config.clone()))
}

fn t(secs: i64, nanos: u32) -> Time {
    Time { secs, nanos }
}

fn times(e: &Engine, ino: Ino, base: i64) {
    let set = SetAttr {
        atime: Some(SetTime::At(t(base, 1))),
        mtime: Some(SetTime::At(t(base + 1, 999_999_999))),
        ctime: Some(t(base + 2, 3)),
        crtime: Some(t(base - 100, 4)),
        ..SetAttr::default()
    };
    e.setattr(ino, &set).unwrap();
}

fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    Acl { entries: entries.iter().map(|&(tag, perm, id)| Entry { tag, perm, id }).collect() }.to_bytes()
}

/// A tree with every kind of node and attribute.
fn build() -> Engine {
    let e = Engine::new(cfg()).unwrap();
    let d = e.mkdir(ROOT, b"dir", 0o2755, 1000, 100).unwrap().ino;
    let sub = e.mkdir(d, b"sub", 0o700, 1000, 100).unwrap().ino;
    let _empty_dir = e.mkdir(ROOT, b"empty", 0o755, 0, 0).unwrap().ino;
    // Small (inline), large (sectors), sparse, empty, extended without data.
    let small = e.create(d, b"small", 0o644, 1000, 100).unwrap().ino;
    e.write(small, 0, b"hello, image").unwrap();
    let big = e.create(ROOT, b"big", 0o600, 0, 0).unwrap().ino;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    e.write(big, 0, &data).unwrap();
    let sparse = e.create(sub, b"sparse", 0o640, 5, 6).unwrap().ino;
    e.write(sparse, 3 * 4096 + 100, b"island one").unwrap();
    e.write(sparse, 40 * 4096, &[9u8; 9000]).unwrap();
    e.setattr(sparse, &SetAttr { size: Some(100 * 4096 + 17), ..SetAttr::default() }).unwrap();
    let _empty = e.create(ROOT, b"empty-file", 0o4755, 0, 0).unwrap().ino;
    let ext = e.create(ROOT, b"extended", 0o644, 0, 0).unwrap().ino;
    e.setattr(ext, &SetAttr { size: Some(1 << 20), ..SetAttr::default() }).unwrap();
    // Hard links across directories.
    e.link(small, ROOT, b"small-link").unwrap();
    e.link(small, sub, b"small-link-2").unwrap();
    // Special files.
    e.symlink(ROOT, b"link", b"dir/small", 7, 8).unwrap();
    e.mknod(ROOT, b"fifo", 0o010644, 0, 1, 2).unwrap();
    e.mknod(ROOT, b"chr", 0o020600, 0x0501, 0, 0).unwrap();
    e.mknod(ROOT, b"blk", 0o060660, 0x0803, 0, 6).unwrap();
    e.mknod(ROOT, b"sock", 0o140755, 0, 3, 4).unwrap();
    // Names that need care.
    e.create(d, &[b'x'; 255], 0o644, 0, 0).unwrap();
    e.create(d, "é ünïcødé\n\t".as_bytes(), 0o644, 0, 0).unwrap();
    // Xattrs, ACLs.
    e.setxattr(small, b"user.k", b"v", 0).unwrap();
    e.setxattr(small, b"trusted.t", &[0u8, 1, 2, 255], 0).unwrap();
    e.setxattr(d, b"security.s", &[7u8; 65536], 0).unwrap();
    let u = u32::MAX;
    let a = acl(&[
        (tag::USER_OBJ, 6, u),
        (tag::USER, 4, 65534),
        (tag::GROUP_OBJ, 4, u),
        (tag::MASK, 4, u),
        (tag::OTHER, 0, u),
    ]);
    e.setxattr(big, ACCESS, &a, 0).unwrap();
    e.setxattr(d, DEFAULT, &a, 0).unwrap();
    // Inode flags (chattr +d, +A).
    let flags = |f| SetAttr { inode_flags: Some(f), ..SetAttr::default() };
    e.setattr(sub, &flags(inode_flags::NODUMP)).unwrap();
    e.setattr(big, &flags(inode_flags::NODUMP | inode_flags::NOATIME)).unwrap();
    // Times last (changes above move them).
    let mut base = -5_000_000_000;
    let mut all = Vec::new();
    e.readdir(ROOT, 0, |x| {
        all.push(x.ino);
        true
    })
    .unwrap();
    all.extend([sub, small, sparse]);
    for ino in all {
        times(&e, ino, base);
        base += 1_000_000_007;
    }
    e
}

#[test]
fn round_trip_keeps_everything() {
    let e = build();
    let before = dump(&e);
    let img = save(&e);
    let info = image::read_info(&img[..]).unwrap();
    assert_eq!(info.extras, [("label".to_string(), "test".to_string())]);
    // The header counts nodes; the engine counts every name of a file
    // beyond its first as an inode too (as tmpfs), here two.
    assert_eq!(info.nodes + 2, e.stats().inodes);
    let l = load(&img).unwrap();
    same(&dump(&l), &before);
    assert_eq!(l.stats().inodes, e.stats().inodes);
    // Settings and counters.
    let (c0, c1) = (e.config(), l.config());
    assert_eq!(
        (c0.sector_size, c0.max_bytes, c0.max_inodes, c0.inline_max, c0.case_insensitive, c0.posix_acl),
        (c1.sector_size, c1.max_bytes, c1.max_inodes, c1.inline_max, c1.case_insensitive, c1.posix_acl)
    );
    let (s0, s1) = (e.stats(), l.stats());
    assert_eq!((s0.inodes, s0.logical_bytes, s0.pool.used), (s1.inodes, s1.logical_bytes, s1.pool.used));
    // New inodes do not collide with loaded ones; a second round trip is byte-stable but for the time stamp.
    let n = l.create(ROOT, b"new", 0o644, 0, 0).unwrap().ino;
    l.unlink(ROOT, b"new").unwrap();
    l.forget(n, 1);
    let after = dump(&l);
    let again = save(&l);
    same(&dump(&load(&again).unwrap()), &after);
}

#[test]
fn overrides_apply_and_holes_stay_holes() {
    let e = build();
    let img = save(&e);
    let l = Engine::load_image(&img[..], |i| {
        Ok(Config { sector_size: 64 << 10, max_bytes: 32 << 20, root_mode: 0o700, root_uid: 42, ..i.config.clone() })
    })
    .unwrap();
    assert_eq!(l.config().sector_size, 64 << 10);
    let root = l.getattr(ROOT).unwrap();
    assert_eq!((root.perm, root.uid), (0o700, 42));
    // Content identical at another sector size; holes stay holes.
    let (a, b) = (dump(&e), dump(&l));
    assert_eq!(a.len(), b.len());
    let data = |s: &str| s.find(" data ").map(|i| s[i..].split(' ').nth(2).unwrap().to_string());
    for (k, v) in &a {
        assert_eq!(data(v), data(&b[k]), "{k}");
    }
    let sparse = &b["/dir/sub/sparse"];
    assert_eq!(sparse.matches(" [").count(), 2, "{sparse}");
}

#[test]
fn limits_are_checked_with_the_numbers() {
    let e = build();
    let img = save(&e);
    let err = Engine::load_image(&img[..], |i| Ok(Config { max_bytes: 100_000, ..i.config.clone() })).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::TooLarge { limit: 100_000, .. }), "{msg}");
    assert!(msg.contains("100000") && msg.contains("bytes of file data"), "{msg}");
    let err = Engine::load_image(&img[..], |i| Ok(Config { max_inodes: 5, ..i.config.clone() })).unwrap_err();
    assert!(matches!(err, ImageError::TooManyFiles { limit: 5, .. }), "{err}");
    // Just enough memory: loads (the data fits when stored as it was).
    let used = e.stats().pool.used;
    Engine::load_image(&img[..], |i| Ok(Config { max_bytes: used, ..i.config.clone() })).unwrap();
    // Sector rounding can need more than the data: refused while loading, with the numbers.
    let err =
        Engine::load_image(&img[..], |i| Ok(Config { max_bytes: 400_000, sector_size: 1 << 20, ..i.config.clone() }))
            .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::TooLargeInMemory { limit: 400_000, sector_size: 1048576, .. }), "{msg}");
    assert!(msg.contains("1048576-byte sectors") && !msg.contains("more than the limit of 400000 bytes ("), "{msg}");
}

fn small_image() -> Vec<u8> {
    let e = Engine::new(cfg()).unwrap();
    let d = e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino;
    let f = e.create(d, b"f", 0o644, 0, 0).unwrap().ino;
    e.write(f, 0, b"abc").unwrap();
    e.write(f, 100, b"def").unwrap();
    e.setxattr(f, b"user.a", b"b", 0).unwrap();
    e.symlink(ROOT, b"s", b"d/f", 0, 0).unwrap();
    e.link(f, ROOT, b"g").unwrap();
    save(&e)
}

#[test]
fn every_flipped_byte_and_every_truncation_is_an_error() {
    let img = small_image();
    assert!(img.len() < 1000, "{}", img.len());
    load(&img).unwrap();
    for i in 0..img.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut bad = img.clone();
            bad[i] ^= x;
            assert!(load(&bad).is_err(), "flipping byte {i} with {x:#x} went unnoticed");
        }
    }
    for n in 0..img.len() {
        let err = load(&img[..n]).unwrap_err();
        assert!(err.to_string().lines().count() == 1, "{err}");
    }
    let mut longer = img.clone();
    longer.push(0);
    assert!(load(&longer).unwrap_err().to_string().contains("after the END"));
    assert!(matches!(load(b"not an image at all"), Err(ImageError::NotAnImage)));
    assert!(matches!(load(b""), Err(ImageError::NotAnImage)));
    let mut v3 = img.clone();
    v3[8] = 3;
    assert!(matches!(load(&v3), Err(ImageError::Version(3))));
}

/// Past the checksums: every byte changed and the checksums recomputed
/// (what a buggy or hostile writer makes) is an error or a valid file
/// system, never a panic; the loaded file system saves again.
#[test]
fn resealed_changes_never_panic() {
    let img = small_image();
    for i in 0..img.len() {
        for x in [0x01u8, 0x02, 0x10, 0x80, 0xff] {
            let mut bad = img.clone();
            bad[i] ^= x;
            image::reseal(&mut bad);
            if let Ok(e) = load(&bad) {
                let again = save(&e);
                load(&again).unwrap();
            }
        }
    }
}

/// A header whose sector size no engine takes is corrupt, and says so
/// with the number, even with its checksum right (`read_info` too: the
/// CLI chooses its settings from it).
#[test]
fn a_bad_sector_size_in_the_header_is_corrupt() {
    let img = small_image();
    for ss in [0u64, 3000, 2048, 2 << 20, u64::MAX] {
        let mut bad = img.clone();
        bad[24..32].copy_from_slice(&ss.to_le_bytes());
        image::reseal(&mut bad);
        let err = image::read_info(&bad[..]).unwrap_err().to_string();
        assert!(err.contains(&format!("sector size {ss} is not a power of two")), "{err}");
        assert!(matches!(load(&bad), Err(ImageError::Corrupt { at: 0, .. })), "{ss}");
    }
}

/// A header that counts less file data than the image holds is damaged,
/// and says so where the data passes the count, even with its checksum
/// right and a limit the data would not fit (not "too large": the limit
/// was checked against the count).
#[test]
fn more_data_than_the_header_counts_is_corrupt() {
    let img = small_image();
    let data = u64::from_le_bytes(img[88..96].try_into().unwrap());
    assert!(data > 0, "the small image holds file data");
    for claimed in [0, 1, data - 1] {
        let mut bad = img.clone();
        bad[88..96].copy_from_slice(&claimed.to_le_bytes());
        image::reseal(&mut bad);
        match load(&bad) {
            Err(ImageError::Corrupt { at, what }) => {
                assert!(at > 0 && what.contains(&format!("more file data than the header's {claimed} bytes")), "{what}")
            }
            other => panic!("{claimed}: {other:?}"),
        }
    }
}

#[test]
fn snapshot_is_unaffected_by_later_changes() {
    let e = Engine::new(cfg()).unwrap();
    let f = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
    e.write(f, 0, &vec![1u8; 100_000]).unwrap();
    let s = e.snapshot();
    e.write(f, 0, &vec![2u8; 100_000]).unwrap();
    e.unlink(ROOT, b"f").unwrap();
    e.create(ROOT, b"g", 0o644, 0, 0).unwrap();
    let mut img = Vec::new();
    s.write_to(&mut img, &[]).unwrap();
    drop(s);
    let l = load(&img).unwrap();
    let a = l.lookup(ROOT, b"f").unwrap();
    let mut buf = vec![0u8; 100_000];
    l.read(a.ino, 0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 1));
    assert!(l.lookup(ROOT, b"g").is_err());
}

/// Writers go on during snapshots: each snapshot is one point in time. A
/// writer sets files f0..f7 to round r in order, and moves a file between
/// two directories; every image must show rounds that never increase along
/// f0..f7 and differ by at most one, and the moved file exactly once.
#[test]
fn snapshots_are_points_in_time_under_writers() {
    let e = Engine::new(cfg()).unwrap();
    let files: Vec<Ino> =
        (0..8).map(|i| e.create(ROOT, format!("f{i}").as_bytes(), 0o644, 0, 0).unwrap().ino).collect();
    let a = e.mkdir(ROOT, b"a", 0o755, 0, 0).unwrap().ino;
    let b = e.mkdir(ROOT, b"b", 0o755, 0, 0).unwrap().ino;
    e.create(a, b"x", 0o644, 0, 0).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop = Stop(&stop);
        s.spawn(|| {
            let mut r = 1u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for &f in &files {
                    e.write(f, 0, &r.to_le_bytes()).unwrap();
                }
                let (from, to) = if r % 2 == 1 { (a, b) } else { (b, a) };
                e.rename(from, b"x", to, b"x", 0).unwrap();
                r += 1;
            }
        });
        for _ in 0..300 {
            let mut img = Vec::new();
            e.snapshot().write_to(&mut img, &[]).unwrap();
            let l = load(&img).unwrap();
            let rounds: Vec<u64> = (0..8)
                .map(|i| {
                    let ino = l.lookup(ROOT, format!("f{i}").as_bytes()).unwrap().ino;
                    let mut v = [0u8; 8];
                    l.read(ino, 0, &mut v).unwrap();
                    u64::from_le_bytes(v)
                })
                .collect();
            assert!(rounds.windows(2).all(|w| w[0] >= w[1]) && rounds[0] - rounds[7] <= 1, "{rounds:?}");
            let la = l.lookup(ROOT, b"a").unwrap().ino;
            let lb = l.lookup(ROOT, b"b").unwrap().ino;
            let n = [la, lb].iter().filter(|&&d| l.lookup(d, b"x").is_ok()).count();
            assert_eq!(n, 1, "the moved file is in {n} places");
            // Where it is agrees with the rounds: in the middle of round r
            // (files differ) it is where round r - 1 moved it.
            let in_b = l.lookup(lb, b"x").is_ok();
            if rounds[0] != rounds[7] {
                assert_eq!(in_b, (rounds[0] - 1) % 2 == 1, "{rounds:?}");
            }
        }
    });
}

#[test]
fn case_insensitive_and_collisions() {
    let e = Engine::new(Config { case_insensitive: true, ..cfg() }).unwrap();
    e.create(ROOT, b"Readme", 0o644, 0, 0).unwrap();
    let img = save(&e);
    let l = load(&img).unwrap();
    assert!(l.config().case_insensitive);
    assert!(l.lookup(ROOT, b"README").is_ok());
    // A case-sensitive image with names that differ only in case cannot be
    // loaded case-insensitively.
    let e = Engine::new(cfg()).unwrap();
    e.create(ROOT, b"a", 0o644, 0, 0).unwrap();
    e.create(ROOT, b"A", 0o644, 0, 0).unwrap();
    let img = save(&e);
    let err = Engine::load_image(&img[..], |i| Ok(Config { case_insensitive: true, ..i.config.clone() })).unwrap_err();
    // Said as such: the image is fine, only the option does not fit it
    // (it was "corrupt ... appears twice", a probe).
    assert!(matches!(err, ImageError::Refused(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("differ only in case (\"a\" and \"A\"") && msg.contains("without --case-insensitive"),
        "{msg}"
    );
}

#[test]
fn load_frees_everything_on_error() {
    let e = build();
    let mut img = save(&e);
    // Cut the END record: everything before it was loaded, then dropped.
    img.truncate(img.len() - 10);
    assert!(matches!(load(&img), Err(ImageError::Truncated { .. })));
}

/// An image with enough data to start the prefault thread (32 MiB and up)
/// loads the same bytes, and a load that fails halfway stops that thread
/// and gives its memory back (`Pool::prefault`).
#[test]
fn large_loads_prefault_and_failed_ones_stop() {
    let e = Engine::new(Config { max_bytes: 256 << 20, sector_size: 64 << 10, ..Config::default() }).unwrap();
    let mut want = Vec::new();
    for i in 0..3u8 {
        let ino = e.create(ROOT, format!("f{i}").as_bytes(), 0o644, 0, 0).unwrap().ino;
        let data: Vec<u8> = (0..(16u32 << 20)).map(|k| (k as u8).wrapping_mul(31).wrapping_add(i)).collect();
        e.write(ino, 0, &data).unwrap();
        want.push(data);
    }
    let img = save(&e);
    drop(e);
    let l = load(&img).unwrap();
    for (i, data) in want.iter().enumerate() {
        let ino = l.lookup(ROOT, format!("f{i}").as_bytes()).unwrap().ino;
        let mut got = vec![0u8; data.len()];
        assert_eq!(l.read(ino, 0, &mut got).unwrap(), data.len());
        assert!(got == *data, "file {i} differs after the load");
    }
    assert_eq!(l.stats().pool.used, 48 << 20);
    drop(l);
    let mut cut = img.clone();
    cut.truncate(img.len() / 2);
    assert!(load(&cut).is_err());
}

/// Files that share pages (clones, issue 20) in an engine of sector `ss`:
/// `a` (3 MiB), `b` a clone of it with its second page overwritten (a
/// copy-on-write of that page), `c` a sector of its own, a hole, then a
/// clone of `a`'s second MiB, `f` two sectors of `a` from 2 MiB + 4 KiB
/// and three pages copied.
fn cloned(ss: usize) -> Engine {
    let e = Engine::new(Config { sector_size: ss, ..cfg() }).unwrap();
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let a = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino;
    e.write(a, 0, &data).unwrap();
    let b = e.create(ROOT, b"b", 0o644, 0, 0).unwrap().ino;
    assert_eq!(e.copy_file_range(a, 0, b, 0, 3 << 20).unwrap(), 3 << 20);
    e.write(b, 4096, &[7u8; 4096]).unwrap();
    let d = e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino;
    let c = e.create(d, b"c", 0o600, 0, 0).unwrap().ino;
    assert_eq!(e.copy_file_range(a, 1 << 20, c, 2 * ss as u64, 1 << 20).unwrap(), 1 << 20);
    e.write(c, 0, &vec![9u8; ss]).unwrap();
    // A clone from a source offset that is page- but not sector-aligned
    // (64 KiB sectors): still shared, and stored as a CLONE.
    let f = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
    let n = 2 * ss as u64 + 3 * 4096;
    assert_eq!(e.copy_file_range(a, (2 << 20) + 4096, f, 0, n).unwrap(), n);
    // Capabilities on a clone's destination survive the replay at load.
    e.setxattr(b, b"security.capability", b"caps", 0).unwrap();
    times(&e, b, 1_000);
    times(&e, c, 2_000);
    times(&e, f, 3_000);
    e
}

/// Clones are saved once (CLONE records) and load shared, under a limit
/// the cloned bytes written out in full would pass; the loaded files are
/// the same (times too), still share their pages, and stay independent.
#[test]
fn clones_are_saved_once_and_load_shared() {
    for ss in [4096u64, 64 << 10] {
        let e = cloned(ss as usize);
        let before = dump(&e);
        let (shared, used) = (e.stats().pool.shared_pages, e.stats().pool.used);
        assert_eq!(shared, 768 - 1, "sector {ss}: every page of a but the one b overwrote");
        let img = save(&e);
        let info = image::read_info(&img[..]).unwrap();
        assert_eq!(info.version, 2, "an image with clones is version 2");
        // `a`, `b`'s first sector (a page of its own in it), `c`'s own,
        // `f`'s three copied pages (64 KiB sectors; whole clones at 4 KiB).
        let stored = (3 << 20) + 2 * ss + if ss > 4096 { 3 * 4096 } else { 0 };
        assert_eq!(info.data_bytes, stored, "sector {ss}: cloned bytes are not stored");
        assert!((img.len() as u64) < stored + (64 << 10), "sector {ss}: image of {} bytes", img.len());
        // 7 MiB of file data, 3.x MiB held: loads under 4 MiB.
        assert!(e.stats().logical_bytes > 7 << 20);
        let l = Engine::load_image(&img[..], |i| Ok(Config { max_bytes: 4 << 20, ..i.config.clone() })).unwrap();
        same(&before, &dump(&l));
        let pps = ss / 4096;
        let p = l.stats().pool;
        // `b`'s first sector was stored whole: its other pages are its own now.
        assert_eq!(p.shared_pages, shared - (pps - 1), "sector {ss}: the same pages shared");
        // (And its 15 other pages' slots in `b` are no clone's now.)
        let slots = (pps - 1) * engine::sector::SLOT_COST;
        assert_eq!(p.used, used + ss - 4096 - slots, "sector {ss}: charged once");
        // Writing a clone leaves the other side alone.
        let a = l.lookup(ROOT, b"a").unwrap().ino;
        let b = l.lookup(ROOT, b"b").unwrap().ino;
        let mut was = vec![0u8; 4096];
        l.read(a, 2 * ss, &mut was).unwrap();
        l.write(b, 2 * ss, &[1u8; 4096]).unwrap();
        let mut now = vec![0u8; 4096];
        l.read(a, 2 * ss, &mut now).unwrap();
        assert_eq!(was, now);
        // Saved again: `b`'s changed sector is stored too.
        assert_eq!(image::read_info(&save(&l)[..]).unwrap().data_bytes, stored + ss, "sector {ss}");
    }
}

/// An image without clones is written as version 1 (older engines read it).
#[test]
fn an_image_without_clones_is_version_1() {
    assert_eq!(image::read_info(&small_image()[..]).unwrap().version, 1);
    // A clone whose other side is gone leaves nothing to share.
    let e = cloned(4096);
    e.unlink(ROOT, b"a").unwrap();
    let d = e.lookup(ROOT, b"d").unwrap().ino;
    e.unlink(d, b"c").unwrap();
    e.unlink(ROOT, b"f").unwrap();
    e.write(e.lookup(ROOT, b"b").unwrap().ino, 0, &[0u8; 4096]).unwrap();
    assert_eq!(image::read_info(&save(&e)[..]).unwrap().version, 1);
}

/// CLONE records past the checksums: every byte of a small image with
/// clones changed and resealed is an error or a file system that saves
/// and loads again, never a panic.
#[test]
fn resealed_clone_records_never_panic() {
    let e = Engine::new(cfg()).unwrap();
    let a = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino;
    e.write(a, 0, &[5u8; 8192]).unwrap();
    let b = e.create(ROOT, b"b", 0o644, 0, 0).unwrap().ino;
    e.copy_file_range(a, 0, b, 4096, 4096).unwrap();
    e.copy_file_range(a, 4096, a, 12288, 4096).unwrap();
    let img = save(&e);
    assert_eq!(image::read_info(&img[..]).unwrap().version, 2);
    let l = load(&img).unwrap();
    same(&dump(&e), &dump(&l));
    for i in 128..img.len() {
        // Inside the file bytes (all 5s) a byte in 256 is enough.
        if img[i - 1..=(i + 1).min(img.len() - 1)].iter().all(|&b| b == 5) && i % 256 != 0 {
            continue;
        }
        for x in [0x01u8, 0x10, 0x80, 0xff] {
            let mut bad = img.clone();
            bad[i] ^= x;
            image::reseal(&mut bad);
            if let Ok(e) = load(&bad) {
                load(&save(&e)).unwrap();
            }
        }
    }
}

/// Files that end near `u64::MAX` (`Config::max_file_size` allows it),
/// with data and a clone in their last sectors, save and load: no offset
/// sum of the saver or the loader passes `u64::MAX`.
#[test]
fn files_near_the_largest_offset_save_and_load() {
    let e = Engine::new(Config { max_file_size: u64::MAX, ..cfg() }).unwrap();
    let a = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino;
    let end = u64::MAX - u64::MAX % 4096;
    e.write(a, end - 8192, &[3u8; 8192]).unwrap();
    e.write(a, end, &[4u8; 100]).unwrap();
    let b = e.create(ROOT, b"b", 0o644, 0, 0).unwrap().ino;
    assert_eq!(e.copy_file_range(a, end - 8192, b, end - 4096, 4096).unwrap(), 4096);
    assert!(e.stats().pool.shared_pages > 0);
    let img = save(&e);
    assert_eq!(image::read_info(&img[..]).unwrap().version, 2);
    let l = load(&img).unwrap();
    let mut buf = [0u8; 4096];
    for (ino, at, want) in [(a, end - 8192, 3u8), (a, end, 4), (b, end - 4096, 3)] {
        let ino = l.lookup(ROOT, if ino == a { b"a" } else { b"b" }).map_or(ino, |x| x.ino);
        let n = l.read(ino, at, &mut buf).unwrap();
        assert!(n > 0 && buf[..n].iter().all(|&x| x == want), "{at}");
    }
    assert_eq!(l.getattr(l.lookup(ROOT, b"a").unwrap().ino).unwrap().size, end + 100);
}

/// An image whose clones' table slots do not fit the chosen limit is
/// refused with the numbers (CLONE records cannot make a load take memory
/// without bound), and loads under the limit it was saved with.
#[test]
fn clones_past_the_limit_are_refused() {
    let e = Engine::new(Config { max_bytes: 8 << 20, ..cfg() }).unwrap();
    let a = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino;
    e.write(a, 0, &vec![7u8; 1 << 20]).unwrap();
    for i in 0..200 {
        let c = e.create(ROOT, format!("c{i}").as_bytes(), 0o644, 0, 0).unwrap().ino;
        assert_eq!(e.copy_file_range(a, 0, c, 0, 1 << 20).unwrap(), 1 << 20);
    }
    let used = e.stats().pool.used;
    let img = save(&e);
    assert!(img.len() < (1 << 20) + (64 << 10), "{}", img.len());
    let l = load(&img).unwrap();
    assert_eq!(l.stats().pool.used, used);
    // 1 MiB of data, 200 clones' slots (~560 KiB): not in 1.25 MiB.
    let small = Engine::load_image(&img[..], |i| Ok(Config { max_bytes: 5 << 18, ..i.config.clone() }));
    assert!(matches!(small, Err(ImageError::TooLargeInMemory { data: 1048576, .. })), "{small:?}");
}

/// A tree whose image takes several of the saver's 4 MiB buffers, with
/// records of every size between them.
fn several_buffers() -> Engine {
    let e = build();
    let data: Vec<u8> = (0..(9u32 << 20) + 123).map(|i| (i * 13 + i / 4093) as u8).collect();
    let big = e.create(ROOT, b"nine-megs", 0o644, 0, 0).unwrap().ino;
    e.write(big, 0, &data).unwrap();
    for i in 0..300u32 {
        let f = e.create(ROOT, format!("f{i}").as_bytes(), 0o644, 0, 0).unwrap().ino;
        e.write(f, 0, &data[..(i as usize * 977) % 70_000 + 1]).unwrap();
    }
    e
}

#[test]
fn every_write_but_the_last_is_aligned_for_o_direct() {
    struct Rec {
        writes: Vec<(usize, usize)>,
        bytes: Vec<u8>,
    }
    impl std::io::Write for Rec {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.writes.push((b.as_ptr().addr() % image::WRITE_ALIGN, b.len()));
            self.bytes.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let e = several_buffers();
    let mut rec = Rec { writes: Vec::new(), bytes: Vec::new() };
    let report = e.snapshot().write_to(&mut rec, &[]).unwrap();
    assert!(rec.writes.len() >= 3, "{:?}", rec.writes);
    let (last, whole) = rec.writes.split_last().unwrap();
    for &(addr, len) in whole {
        assert_eq!((addr, len % image::WRITE_ALIGN), (0, 0), "{:?}", rec.writes);
    }
    assert_eq!(last.0, 0);
    assert_eq!(report.image_bytes, rec.bytes.len() as u64);
    same(&dump(&load(&rec.bytes).unwrap()), &dump(&e));
}

/// A file in the temporary directory, removed on drop.
#[cfg(target_os = "linux")]
struct TempFile(std::path::PathBuf);

#[cfg(target_os = "linux")]
impl TempFile {
    fn new(what: &str) -> TempFile {
        TempFile::in_dir(&std::env::temp_dir(), what)
    }

    fn in_dir(dir: &std::path::Path, what: &str) -> TempFile {
        let p = dir.join(format!("sectorfs-image-test.{}.{what}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempFile(p)
    }
}

#[cfg(target_os = "linux")]
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Pages of the file at `path` in the page cache, and pages in all.
#[cfg(target_os = "linux")]
fn resident(path: &std::path::Path) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    let page = 4096;
    let pages = len.div_ceil(page);
    // SAFETY: a shared read-only mapping of a file we hold open, unmapped
    // below; only mincore looks at it (no byte is read through it).
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
    assert_ne!(p, libc::MAP_FAILED);
    let mut v = vec![0u8; pages];
    // SAFETY: `p` maps `len` bytes; `v` has one byte per page of them.
    let r = unsafe { libc::mincore(p, len, v.as_mut_ptr()) };
    // SAFETY: the mapping made above, not used after.
    unsafe { libc::munmap(p, len) };
    assert_eq!(r, 0);
    (v.iter().filter(|&&b| b & 1 != 0).count(), pages)
}

/// A save through `ImageWriter` goes around the page cache where the file
/// system allows it (an 8 GiB disk's image would otherwise take another
/// 8 GiB of memory for a while), and the file holds the same image.
#[cfg(target_os = "linux")]
#[test]
fn an_image_writer_keeps_the_image_out_of_the_page_cache() {
    let e = several_buffers();
    let tmp = TempFile::new("direct");
    let f = std::fs::File::create(&tmp.0).unwrap();
    let w = image::ImageWriter::new(&f);
    let direct = w.is_direct();
    // ext4 or XFS (this project's CI: ext4) take it.
    assert_eq!(direct, image::is_on_local_disk(&f));
    e.snapshot().write_to(w, &[]).unwrap();
    f.sync_all().unwrap();
    let (cached, pages) = resident(&tmp.0);
    if direct {
        // The tail (under 4 KiB) goes through the page cache.
        assert!(cached <= 1, "{cached} of {pages} pages cached");
    } else {
        eprintln!("note: {} takes no O_DIRECT; the page cache was used", tmp.0.display());
    }
    let img = std::fs::read(&tmp.0).unwrap();
    same(&dump(&load(&img).unwrap()), &dump(&e));
}

/// On tmpfs (memory either way) an image is written through the page cache.
#[cfg(target_os = "linux")]
#[test]
fn an_image_writer_leaves_tmpfs_alone() {
    let p = std::path::Path::new("/dev/shm");
    if !p.is_dir() {
        return;
    }
    let tmp = TempFile::in_dir(p, "tmpfs");
    let f = std::fs::File::create(&tmp.0).unwrap();
    assert!(!image::ImageWriter::new(&f).is_direct());
}

/// An unaligned write turns O_DIRECT off for good and loses nothing.
#[cfg(target_os = "linux")]
#[test]
fn an_image_writer_takes_unaligned_writes() {
    use std::io::Write;
    let tmp = TempFile::new("unaligned");
    let f = std::fs::File::create(&tmp.0).unwrap();
    let mut w = image::ImageWriter::new(&f);
    let mem: Vec<u8> = (0..5 * image::WRITE_ALIGN as u32).map(|i| (i % 251) as u8).collect();
    let at = mem.as_ptr().addr().wrapping_neg() % image::WRITE_ALIGN;
    let aligned = &mem[at..at + 2 * image::WRITE_ALIGN];
    let direct = w.is_direct();
    w.write_all(aligned).unwrap();
    assert_eq!(w.is_direct(), direct);
    w.write_all(&mem[1..100]).unwrap();
    assert!(!w.is_direct());
    w.write_all(aligned).unwrap();
    let want: Vec<u8> = [aligned, &mem[1..100], aligned].concat();
    assert_eq!(std::fs::read(&tmp.0).unwrap(), want);
}

/// A load through `ImageReader` leaves none of the image in the page cache
/// (the engine holds its data now).
#[cfg(target_os = "linux")]
#[test]
fn an_image_reader_drops_what_it_read() {
    let e = several_buffers();
    let tmp = TempFile::new("reader");
    let f = std::fs::File::create(&tmp.0).unwrap();
    if !image::is_on_local_disk(&f) {
        // tmpfs, say: the cache is the file, and nothing can be dropped.
        eprintln!("note: {} is on no local disk file system; skipped", tmp.0.display());
        return;
    }
    e.snapshot().write_to(&f, &[]).unwrap();
    f.sync_all().unwrap();
    let (cached, pages) = resident(&tmp.0);
    assert!(cached > pages / 2, "written through the page cache, the image is in it: {cached} of {pages}");
    let l = Engine::load_image(image::ImageReader::new(std::fs::File::open(&tmp.0).unwrap()), |i| Ok(i.config.clone()))
        .unwrap();
    let (cached, pages) = resident(&tmp.0);
    assert_eq!(cached, 0, "{cached} of {pages} pages left in the page cache");
    same(&dump(&l), &dump(&e));
    // A load refused half-way (a byte flipped in the middle) leaves none
    // either, of what it read or of what it did not.
    let mut img = std::fs::read(&tmp.0).unwrap();
    let mid = img.len() / 2;
    img[mid] ^= 0xff;
    std::fs::write(&tmp.0, &img).unwrap();
    std::fs::File::open(&tmp.0).unwrap().sync_all().unwrap();
    assert!(resident(&tmp.0).0 > pages / 2);
    let f = std::fs::File::open(&tmp.0).unwrap();
    assert!(Engine::load_image(image::ImageReader::new(f), |i| Ok(i.config.clone())).is_err());
    let (cached, pages) = resident(&tmp.0);
    assert_eq!(cached, 0, "{cached} of {pages} pages left after a failed load");
}

/// Inode flags the engine does not keep (`i`, `a`, unknown bits: an
/// embedder's `SetAttr::flags` could set any bit in images of older
/// builds) are dropped at load; the Windows attributes and the kept
/// flags stay.
#[test]
fn unknown_inode_flags_are_dropped_at_load() {
    let e = Engine::new(cfg()).unwrap();
    let f = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
    e.setattr(f, &SetAttr { flags: Some(0x21), inode_flags: Some(inode_flags::NODUMP), ..SetAttr::default() }).unwrap();
    let mut img = save(&e);
    let was = (0x21 | inode_flags::NODUMP).to_le_bytes();
    let at = img.windows(4).position(|w| w == was).expect("the flags in the image");
    img[at..at + 4].copy_from_slice(&(0x21 | inode_flags::ALL).to_le_bytes());
    image::reseal(&mut img);
    let e = load(&img).unwrap();
    let a = e.lookup(ROOT, b"f").unwrap();
    assert_eq!(a.flags, 0x21 | inode_flags::SETTABLE);
}

/// Immutable and append-only files come back with their flags, even a
/// clone's destination, whose replay at load is a change they forbid.
#[test]
fn immutable_clones_load() {
    let e = Engine::new(cfg()).unwrap();
    let a = e.create(ROOT, b"a", 0o644, 0, 0).unwrap().ino;
    e.write(a, 0, &vec![7u8; 64 << 10]).unwrap();
    let b = e.create(ROOT, b"b", 0o644, 0, 0).unwrap().ino;
    assert_eq!(e.copy_file_range(a, 0, b, 0, 64 << 10).unwrap(), 64 << 10);
    assert!(e.stats().pool.shared_pages > 0, "cloned");
    let flag = |ino, f| e.setattr(ino, &SetAttr { inode_flags: Some(f), ..SetAttr::default() }).unwrap();
    flag(b, inode_flags::IMMUTABLE);
    flag(a, inode_flags::APPEND | inode_flags::NODUMP);
    let before = e.getattr(b).unwrap();
    let l = load(&save(&e)).unwrap();
    let (la, lb) = (l.lookup(ROOT, b"a").unwrap(), l.lookup(ROOT, b"b").unwrap());
    assert_eq!(la.flags & inode_flags::ALL, inode_flags::APPEND | inode_flags::NODUMP);
    assert_eq!(lb.flags & inode_flags::ALL, inode_flags::IMMUTABLE);
    assert_eq!((lb.mtime, lb.ctime), (before.mtime, before.ctime), "times kept");
    assert!(l.stats().pool.shared_pages > 0, "still a clone");
    assert_eq!(l.write(lb.ino, 0, b"x"), Err(engine::Error::Permission));
}

/// `Engine::changes` tells whether a snapshot is still current: it moves
/// with every kind of change an image holds (data, namespace, attributes,
/// xattrs) and not with reads; a snapshot records it at its capture.
#[test]
fn changes_tell_whether_a_snapshot_is_current() {
    let e = Engine::new(cfg()).unwrap();
    let f = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
    e.write(f, 0, b"data").unwrap();
    let snap = e.snapshot();
    assert_eq!(snap.changes(), e.changes());
    let mut buf = [0u8; 4];
    e.read(f, 0, &mut buf).unwrap();
    let _ = e.lookup(ROOT, b"f").unwrap();
    let _ = e.getattr(f).unwrap();
    assert_eq!(e.changes(), snap.changes(), "reads change nothing");
    let changes: [&dyn Fn(&Engine); 5] = [
        &|e| assert_eq!(e.write(f, 0, b"x").unwrap(), 1),
        &|e| assert!(e.mkdir(ROOT, b"d", 0o755, 0, 0).is_ok()),
        &|e| assert!(e.setattr(f, &SetAttr { mode: Some(0o600), ..SetAttr::default() }).is_ok()),
        &|e| e.setxattr(f, b"user.a", b"v", 0).unwrap(),
        &|e| e.rename(ROOT, b"d", ROOT, b"d2", 0).unwrap(),
    ];
    let mut last = e.changes();
    for (i, change) in changes.iter().enumerate() {
        change(&e);
        assert!(e.changes() > last, "change {i} did not count");
        last = e.changes();
    }
}
