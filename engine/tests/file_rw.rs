//! read, write, append, writes past the end, the maximum file size,
//! overflowing offsets, and copy_file_range.

mod support;

use engine::{Config, Engine, Error, ROOT};
use support::*;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn read_write_basics() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    let mut buf = [0u8; 8];
    assert_eq!(e.read(f, 0, &mut buf).unwrap(), 0, "empty file");
    assert_eq!(e.write(f, 0, b"hello").unwrap(), 5);
    assert_eq!(e.read(f, 0, &mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(e.read(f, 3, &mut buf).unwrap(), 2, "short read at the end");
    assert_eq!(&buf[..2], b"lo");
    assert_eq!(e.read(f, 5, &mut buf).unwrap(), 0, "at EOF");
    assert_eq!(e.read(f, u64::MAX, &mut buf).unwrap(), 0, "far past EOF");
    assert_eq!(e.read(f, 0, &mut []).unwrap(), 0);
    // Overwrite in the middle; zero-length writes change nothing.
    e.write(f, 1, b"EL").unwrap();
    assert_eq!(e.write(f, 100, b"").unwrap(), 0);
    assert_eq!(e.write(f, u64::MAX, b"").unwrap(), 0);
    assert_eq!(read_all(&e, f), b"hELlo");
    // Errors.
    assert_eq!(e.read(ROOT, 0, &mut buf), Err(Error::IsDir));
    assert_eq!(e.write(ROOT, 0, b"x"), Err(Error::IsDir));
    assert_eq!(e.append(ROOT, b"x"), Err(Error::IsDir));
    assert_eq!(e.read(9999, 0, &mut buf), Err(Error::NotFound));
    assert_eq!(e.write(9999, 0, b"x"), Err(Error::NotFound));
    assert_eq!(e.append(9999, b"x"), Err(Error::NotFound));
    teardown(&e);
}

#[test]
fn write_updates_times() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    let old = engine::Time { secs: 10, nanos: 0 };
    let set = engine::SetAttr {
        mtime: Some(engine::SetTime::At(old)),
        ctime: Some(old),
        atime: Some(engine::SetTime::At(old)),
        ..Default::default()
    };
    e.setattr(f, &set).unwrap();
    e.write(f, 0, b"").unwrap();
    assert_eq!(e.getattr(f).unwrap().mtime, old, "an empty write is not a change");
    e.write(f, 0, b"x").unwrap();
    let a = e.getattr(f).unwrap();
    assert!(a.mtime > old && a.ctime > old);
    assert_eq!(a.atime, old, "reads and writes do not set atime");
    teardown(&e);
}

#[test]
fn writes_past_eof_leave_zeros() {
    for (ss, inline) in [(4096, 0), (4096, 4096), (65536, 4096), (16, 0), (16, 8), (64, 64)] {
        let e = tiny(ss, 64 << 20, inline);
        let f = put(&e, ROOT, b"f", b"abc");
        let off = 3 * ss as u64 + 5;
        e.write(f, off, b"tail").unwrap();
        let got = read_all(&e, f);
        assert_eq!(got.len() as u64, off + 4);
        assert_eq!(&got[..3], b"abc");
        assert!(got[3..off as usize].iter().all(|&b| b == 0), "ss {ss}: the gap reads as zeros");
        assert_eq!(&got[off as usize..], b"tail");
        // A write far past the end of a small file.
        let g = mkfile(&e, ROOT, b"g");
        e.write(g, 1 << 40, b"x").unwrap();
        assert_eq!(e.getattr(g).unwrap().size, (1 << 40) + 1);
        assert_eq!(read_at(&e, g, (1 << 40) - 2, 10), [0, 0, b'x']);
        assert!(e.getattr(g).unwrap().blocks <= (ss as u64).div_ceil(512), "sparse: one sector at most");
        teardown(&e);
    }
}

#[test]
fn large_writes_and_reads_across_sectors() {
    for ss in [4096usize, 65536] {
        let e = tiny(ss, 64 << 20, 1024);
        let f = mkfile(&e, ROOT, b"f");
        let data = pattern(5 * ss + 123, 1);
        e.write(f, 7, &data).unwrap();
        let mut want = vec![0u8; 7];
        want.extend_from_slice(&data);
        assert_eq!(read_all(&e, f), want);
        // Unaligned reads of every length around sector boundaries.
        for off in [0u64, 1, ss as u64 - 1, ss as u64, 2 * ss as u64 + 3] {
            for len in [1usize, ss - 1, ss, ss + 1, 3 * ss] {
                let got = read_at(&e, f, off, len);
                let end = (off as usize + len).min(want.len());
                assert_eq!(got, &want[off as usize..end], "ss {ss} off {off} len {len}");
            }
        }
        // Overwrite a range straddling three sectors.
        let patch = pattern(2 * ss + 2, 9);
        let at = ss - 1;
        e.write(f, at as u64, &patch).unwrap();
        want[at..at + patch.len()].copy_from_slice(&patch);
        assert_eq!(read_all(&e, f), want);
        teardown(&e);
    }
}

#[test]
fn inline_files_grow_into_sectors_and_back() {
    let e = tiny(4096, 64 << 20, 1000);
    let f = put(&e, ROOT, b"f", &pattern(900, 3));
    assert_eq!(e.stats().pool.used, 900, "inline: exact size");
    assert_eq!(e.stats().pool.sectors, 0);
    e.write(f, 900, &pattern(200, 4)).unwrap();
    assert_eq!(e.stats().pool.sectors, 1, "grown past inline_max into a sector");
    let mut want = pattern(900, 3);
    want.extend(pattern(200, 4));
    assert_eq!(read_all(&e, f), want);
    truncate(&e, f, 10).unwrap();
    assert_eq!(read_all(&e, f), &want[..10]);
    truncate(&e, f, 0).unwrap();
    assert_eq!(e.stats().pool.used, 0);
    e.write(f, 0, b"small again").unwrap();
    assert_eq!(e.stats().pool.used, 11);
    teardown(&e);
}

#[test]
fn append_is_at_the_end() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    assert_eq!(e.append(f, b"one").unwrap(), 0);
    assert_eq!(e.append(f, b"two").unwrap(), 3);
    assert_eq!(e.append(f, b"").unwrap(), 6);
    truncate(&e, f, 10_000).unwrap();
    assert_eq!(e.append(f, b"end").unwrap(), 10_000);
    let got = read_all(&e, f);
    assert_eq!(&got[..6], b"onetwo");
    assert_eq!(&got[10_000..], b"end");
    teardown(&e);
}

#[test]
fn max_file_size_and_overflow() {
    let max = 100_000u64;
    let e = Engine::new(Config { sector_size: 4096, max_file_size: max, ..Config::default() }).unwrap();
    let f = put(&e, ROOT, b"f", b"keep");
    assert_eq!(e.write(f, max - 1, b"x").unwrap(), 1, "up to the maximum");
    assert_eq!(e.getattr(f).unwrap().size, max);
    assert_eq!(e.write(f, max - 1, b"xy"), Err(Error::FileTooBig));
    assert_eq!(e.write(f, max, b"x"), Err(Error::FileTooBig));
    assert_eq!(e.append(f, b"x"), Err(Error::FileTooBig));
    assert_eq!(truncate(&e, f, max + 1).err(), Some(Error::FileTooBig));
    assert_eq!(e.fallocate(f, 0, max, 1), Err(Error::FileTooBig));
    assert_eq!(e.fallocate(f, engine::data::FALLOC_KEEP_SIZE, 0, max + 1), Err(Error::FileTooBig));
    // Offsets whose end overflows u64.
    assert_eq!(e.write(f, u64::MAX, b"x"), Err(Error::FileTooBig));
    assert_eq!(e.write(f, u64::MAX - 1, b"xyz"), Err(Error::FileTooBig));
    assert_eq!(e.fallocate(f, 0, u64::MAX, 2), Err(Error::FileTooBig));
    assert_eq!(e.fallocate(f, 0, 1, u64::MAX), Err(Error::FileTooBig));
    assert_eq!(truncate(&e, f, u64::MAX).err(), Some(Error::FileTooBig));
    assert_eq!(e.getattr(f).unwrap().size, max, "nothing changed");
    assert_eq!(&read_at(&e, f, 0, 4), b"keep");
    // Default maximum: i64::MAX.
    let e2 = small();
    let g = mkfile(&e2, ROOT, b"g");
    assert_eq!(e2.write(g, i64::MAX as u64, b"x"), Err(Error::FileTooBig));
    e2.write(g, i64::MAX as u64 - 1, b"x").unwrap();
    assert_eq!(e2.getattr(g).unwrap().size, i64::MAX as u64);
    assert_eq!(read_at(&e2, g, i64::MAX as u64 - 2, 8), [0, b'x']);
    assert_eq!(e2.seek(g, 0, true).unwrap() / 4096, (i64::MAX as u64 - 1) / 4096);
    teardown(&e2);
    teardown(&e);
}

#[test]
fn copy_file_range_between_files() {
    let e = tiny(4096, 64 << 20, 0);
    let src = put(&e, ROOT, b"src", &pattern(20_000, 5));
    let dst = put(&e, ROOT, b"dst", b"0123456789");
    assert_eq!(e.copy_file_range(src, 100, dst, 5, 9000).unwrap(), 9000);
    let got = read_all(&e, dst);
    assert_eq!(got.len(), 9005);
    assert_eq!(&got[..5], b"01234");
    assert_eq!(&got[5..], &pattern(20_000, 5)[100..9100]);
    // Short at the end of the input; nothing past it.
    assert_eq!(e.copy_file_range(src, 19_990, dst, 0, 100).unwrap(), 10);
    assert_eq!(e.copy_file_range(src, 20_000, dst, 0, 100).unwrap(), 0);
    assert_eq!(e.copy_file_range(src, u64::MAX, dst, 0, 100).unwrap(), 0);
    assert_eq!(e.copy_file_range(src, 0, dst, 0, 0).unwrap(), 0);
    // Past the destination's end: a gap of zeros.
    let far = mkfile(&e, ROOT, b"far");
    assert_eq!(e.copy_file_range(src, 0, far, 50_000, 10).unwrap(), 10);
    let got = read_all(&e, far);
    assert!(got[..50_000].iter().all(|&b| b == 0));
    assert_eq!(&got[50_000..], &pattern(20_000, 5)[..10]);
    // Holes copy as zeros.
    let sparse = mkfile(&e, ROOT, b"sparse");
    e.write(sparse, 30_000, b"z").unwrap();
    let out = mkfile(&e, ROOT, b"out");
    assert_eq!(e.copy_file_range(sparse, 0, out, 0, 40_000).unwrap(), 30_001);
    assert_eq!(read_all(&e, out), read_all(&e, sparse));
    teardown(&e);
}

#[test]
fn copy_file_range_within_one_file() {
    let e = small();
    let f = put(&e, ROOT, b"f", &pattern(10_000, 1));
    // Disjoint ranges of one file are fine.
    assert_eq!(e.copy_file_range(f, 0, f, 10_000, 5000).unwrap(), 5000);
    assert_eq!(read_at(&e, f, 10_000, 5000), &pattern(10_000, 1)[..5000]);
    assert_eq!(e.copy_file_range(f, 0, f, 5000, 5000).unwrap(), 5000, "adjacent");
    // Overlap is refused.
    let before = read_all(&e, f);
    assert_eq!(e.copy_file_range(f, 0, f, 4999, 5000), Err(Error::InvalidArgument));
    assert_eq!(e.copy_file_range(f, 100, f, 50, 100), Err(Error::InvalidArgument));
    assert_eq!(e.copy_file_range(f, 7, f, 7, 1), Err(Error::InvalidArgument));
    assert_eq!(read_all(&e, f), before);
    // Overflowing ranges of one file.
    assert_eq!(e.copy_file_range(f, u64::MAX, f, 0, 2), Err(Error::Overflow));
    assert_eq!(e.copy_file_range(f, 0, f, u64::MAX, 2), Err(Error::Overflow));
    teardown(&e);
}

#[test]
fn copy_file_range_errors() {
    let e = small();
    let f = put(&e, ROOT, b"f", b"data");
    let d = mkdir(&e, ROOT, b"d");
    let p = e.mknod(ROOT, b"p", 0o010644, 0, 0, 0).unwrap();
    assert_eq!(e.copy_file_range(d, 0, f, 0, 1), Err(Error::IsDir));
    assert_eq!(e.copy_file_range(f, 0, d, 0, 1), Err(Error::IsDir));
    assert_eq!(e.copy_file_range(p.ino, 0, f, 0, 1), Err(Error::InvalidArgument));
    assert_eq!(e.copy_file_range(f, 0, p.ino, 0, 1), Err(Error::InvalidArgument));
    assert_eq!(e.copy_file_range(9999, 0, f, 0, 1), Err(Error::NotFound));
    assert_eq!(e.copy_file_range(f, 0, 9999, 0, 1), Err(Error::NotFound));
    assert_eq!(e.copy_file_range(f, 0, f, u64::MAX - 1, 4), Err(Error::Overflow));
    let g = mkfile(&e, ROOT, b"g");
    assert_eq!(e.copy_file_range(f, 0, g, u64::MAX - 1, 4), Err(Error::FileTooBig));
    assert_eq!(read_all(&e, g), b"");
    e.forget(p.ino, 1);
    teardown(&e);
}
