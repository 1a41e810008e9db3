//! Sparse files and holes: zeros for never-written ranges, truncate and
//! extend never exposing stale bytes, fallocate modes, SEEK_DATA/SEEK_HOLE.

mod support;

use engine::data::{FALLOC_KEEP_SIZE as KEEP, FALLOC_PUNCH_HOLE as PUNCH, FALLOC_ZERO_RANGE as ZERO};
use engine::{Engine, Error, Ino, ROOT};
use support::*;

/// Geometries: (sector size, inline threshold).
const GEOMS: [(usize, usize); 6] = [(16, 0), (16, 8), (4096, 0), (4096, 1024), (65536, 0), (65536, 4096)];

fn blocks(e: &Engine, ino: Ino) -> u64 {
    e.getattr(ino).unwrap().blocks
}

/// Fills the pool's free lists with sectors full of `0xEE`, so that a bug
/// exposing uninitialised sector bytes shows as non-zero data.
fn dirty_pool(e: &Engine, sectors: usize) {
    let ss = e.config().sector_size;
    let junk = mkfile(e, ROOT, b"junk");
    e.write(junk, 0, &vec![0xEE; ss * sectors]).unwrap();
    e.unlink(ROOT, b"junk").unwrap();
}

#[test]
fn sparse_file_reads_zeros_and_holds_little() {
    for (ss, inline) in GEOMS {
        let e = tiny(ss, 64 << 20, inline);
        dirty_pool(&e, 8);
        let f = mkfile(&e, ROOT, b"f");
        let big = 100 * ss as u64 + 3;
        truncate(&e, f, big).unwrap();
        assert_eq!(e.getattr(f).unwrap().size, big);
        assert_eq!(e.stats().pool.used, 0, "ss {ss}: a pure hole holds no memory");
        assert!(read_at(&e, f, 0, 3 * ss).iter().all(|&b| b == 0));
        assert!(read_at(&e, f, big - 10, 100).iter().all(|&b| b == 0));
        assert_eq!(read_at(&e, f, big - 10, 100).len(), 10);
        e.write(f, 50 * ss as u64 + 1, b"island").unwrap();
        assert!(e.stats().pool.used <= ss as u64, "ss {ss}: one sector for one small write");
        let got = read_at(&e, f, 50 * ss as u64 - 2, ss + 8);
        let mut want = vec![0u8; ss + 8];
        want[3..9].copy_from_slice(b"island");
        assert_eq!(got, want, "ss {ss}");
        teardown(&e);
    }
}

/// Write data, truncate down, truncate up: the regrown range is zeros,
/// never the old bytes, in every geometry and across sector boundaries.
#[test]
fn truncate_up_exposes_zeros_not_stale_bytes() {
    for (ss, inline) in GEOMS {
        for cut in [0, 1, ss / 2, ss - 1, ss, ss + 1, 2 * ss + 3] {
            let e = tiny(ss, 64 << 20, inline);
            dirty_pool(&e, 4);
            let f = put(&e, ROOT, b"f", &vec![0xFF; 3 * ss + 7]);
            truncate(&e, f, cut as u64).unwrap();
            truncate(&e, f, 4 * ss as u64).unwrap();
            let got = read_all(&e, f);
            assert_eq!(got.len(), 4 * ss);
            assert!(got[..cut].iter().all(|&b| b == 0xFF), "ss {ss} cut {cut}: prefix kept");
            assert!(got[cut..].iter().all(|&b| b == 0), "ss {ss} cut {cut}: regrown bytes are zeros");
            // Growing by a write past the end also zeroes the gap.
            truncate(&e, f, cut as u64).unwrap();
            e.write(f, 3 * ss as u64, b"w").unwrap();
            let got = read_all(&e, f);
            assert!(got[cut..3 * ss].iter().all(|&b| b == 0), "ss {ss} cut {cut}: gap before a write");
            // And fallocate that extends.
            truncate(&e, f, cut as u64).unwrap();
            e.fallocate(f, 0, cut as u64, 2 * ss as u64).unwrap();
            let got = read_all(&e, f);
            assert_eq!(got.len(), cut + 2 * ss);
            assert!(got[cut..].iter().all(|&b| b == 0), "ss {ss} cut {cut}: fallocated bytes are zeros");
            teardown(&e);
        }
    }
}

/// Readers that loaded the file before a truncate keep seeing their version;
/// the regrown file is zeros (copy-on-write of the shared tail sector).
#[test]
fn truncate_down_up_after_a_snapshot_copy() {
    for ss in [4096usize, 65536] {
        let e = tiny(ss, 64 << 20, 0);
        let f = put(&e, ROOT, b"f", &vec![0xAB; ss + 100]);
        let copy = mkfile(&e, ROOT, b"copy");
        // copy_file_range reads a snapshot; then mutate the source.
        assert_eq!(e.copy_file_range(f, 0, copy, 0, ss as u64 + 100).unwrap(), ss as u64 + 100);
        truncate(&e, f, 10).unwrap();
        truncate(&e, f, ss as u64 + 100).unwrap();
        let got = read_all(&e, f);
        assert!(got[..10].iter().all(|&b| b == 0xAB));
        assert!(got[10..].iter().all(|&b| b == 0));
        assert!(read_all(&e, copy).iter().all(|&b| b == 0xAB));
        teardown(&e);
    }
}

#[test]
fn fallocate_mode_zero_allocates_and_extends() {
    for (ss, inline) in GEOMS {
        let e = tiny(ss, 64 << 20, inline);
        dirty_pool(&e, 8);
        let f = put(&e, ROOT, b"f", b"head");
        e.fallocate(f, 0, 2, 3 * ss as u64).unwrap();
        let a = e.getattr(f).unwrap();
        assert_eq!(a.size, 2 + 3 * ss as u64);
        let got = read_all(&e, f);
        assert_eq!(&got[..4], b"head", "ss {ss}: data kept");
        assert!(got[4..].iter().all(|&b| b == 0), "ss {ss}");
        assert!(a.blocks * 512 >= 3 * ss as u64, "ss {ss}: memory reserved");
        // Inside the file: nothing visible changes.
        e.fallocate(f, 0, 0, 3).unwrap();
        assert_eq!(read_all(&e, f), got);
        teardown(&e);
    }
}

#[test]
fn fallocate_keep_size_beyond_eof_then_extend() {
    for (ss, inline) in GEOMS {
        let e = tiny(ss, 64 << 20, inline);
        dirty_pool(&e, 8);
        let f = put(&e, ROOT, b"f", b"abc");
        let b0 = blocks(&e, f);
        e.fallocate(f, KEEP, 0, 4 * ss as u64).unwrap();
        assert_eq!(e.getattr(f).unwrap().size, 3, "ss {ss}: KEEP_SIZE keeps the size");
        assert_eq!(read_all(&e, f), b"abc");
        if inline < 3 && ss >= 512 {
            assert!(blocks(&e, f) > b0, "ss {ss}: memory reserved past EOF");
        }
        // Seeking never reports the reserved range past EOF as data.
        assert_eq!(e.seek(f, 0, false).unwrap(), 3);
        assert_eq!(e.seek(f, 3, true), Err(Error::NoSuchOffset));
        // Extending over the reserved range shows zeros, not recycled bytes.
        truncate(&e, f, 2 * ss as u64 + 5).unwrap();
        let got = read_all(&e, f);
        assert_eq!(&got[..3], b"abc");
        assert!(got[3..].iter().all(|&b| b == 0), "ss {ss}: extended over reserved sectors");
        // Writing into the reserved range past EOF.
        e.write(f, 3 * ss as u64 + 1, b"X").unwrap();
        let got = read_all(&e, f);
        assert_eq!(got.len(), 3 * ss + 2);
        assert!(got[3..3 * ss + 1].iter().all(|&b| b == 0), "ss {ss}");
        assert_eq!(got[3 * ss + 1], b'X');
        // Truncating below the reserved range frees it.
        truncate(&e, f, 0).unwrap();
        assert_eq!(e.stats().pool.used, 0, "ss {ss}");
        teardown(&e);
    }
}

#[test]
fn punch_hole_keep_size() {
    for (ss, inline) in GEOMS {
        let e = tiny(ss, 64 << 20, inline);
        let len = 4 * ss + ss / 2;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
        let f = put(&e, ROOT, b"f", &data);
        let b0 = blocks(&e, f);
        let mut want = data.clone();
        // A partial range inside one sector.
        let (a, b) = (ss / 4, ss / 2);
        e.fallocate(f, PUNCH | KEEP, a as u64, (b - a) as u64).unwrap();
        want[a..b].fill(0);
        assert_eq!(read_all(&e, f), want, "ss {ss}: partial punch");
        // From mid-sector 1 to mid-sector 3: sector 2 becomes a hole.
        let (a, b) = (ss + ss / 2, 3 * ss + 1);
        e.fallocate(f, PUNCH | KEEP, a as u64, (b - a) as u64).unwrap();
        want[a..b].fill(0);
        assert_eq!(read_all(&e, f), want, "ss {ss}: spanning punch");
        if ss >= 512 {
            assert!(blocks(&e, f) < b0, "ss {ss}: a whole punched sector is freed");
        }
        assert_eq!(e.seek(f, ss as u64, false).unwrap(), 2 * ss as u64, "ss {ss}: the hole is visible");
        // Past EOF: clipped, size unchanged.
        e.fallocate(f, PUNCH | KEEP, len as u64 - 3, 10 * ss as u64).unwrap();
        want[len - 3..].fill(0);
        assert_eq!(read_all(&e, f), want);
        e.fallocate(f, PUNCH | KEEP, 100 * ss as u64, 1).unwrap();
        assert_eq!(e.getattr(f).unwrap().size, len as u64);
        // Then writing into a punched range works as usual.
        e.write(f, 2 * ss as u64 + 1, b"new").unwrap();
        want[2 * ss + 1..2 * ss + 4].copy_from_slice(b"new");
        assert_eq!(read_all(&e, f), want);
        // Punching everything frees everything.
        e.fallocate(f, PUNCH | KEEP, 0, len as u64).unwrap();
        assert!(read_all(&e, f).iter().all(|&b| b == 0));
        assert_eq!(e.stats().pool.used, 0, "ss {ss}: nothing left to hold");
        teardown(&e);
    }
}

#[test]
fn punch_hole_of_an_inline_file() {
    let e = tiny(4096, 1 << 20, 4096);
    let f = put(&e, ROOT, b"f", b"0123456789");
    e.fallocate(f, PUNCH | KEEP, 2, 3).unwrap();
    assert_eq!(read_all(&e, f), b"01\0\0\0".iter().chain(b"56789").copied().collect::<Vec<u8>>());
    assert_eq!(e.stats().pool.used, 10);
    teardown(&e);
}

#[test]
fn zero_range() {
    for (ss, inline) in GEOMS {
        let e = tiny(ss, 64 << 20, inline);
        dirty_pool(&e, 8);
        let len = 3 * ss + 5;
        let f = put(&e, ROOT, b"f", &vec![0x11; len]);
        let mut want = vec![0x11; len];
        e.fallocate(f, ZERO, 3, (2 * ss) as u64).unwrap();
        want[3..3 + 2 * ss].fill(0);
        assert_eq!(read_all(&e, f), want, "ss {ss}");
        // Beyond EOF with KEEP_SIZE: size unchanged, tail zeroed.
        e.fallocate(f, ZERO | KEEP, len as u64 - 2, 4 * ss as u64).unwrap();
        want[len - 2..].fill(0);
        assert_eq!(read_all(&e, f), want, "ss {ss}");
        // Beyond EOF without KEEP_SIZE: extends with zeros.
        e.fallocate(f, ZERO, len as u64 + 1, ss as u64).unwrap();
        want.resize(len + 1 + ss, 0);
        assert_eq!(read_all(&e, f), want, "ss {ss}");
        // Zeroed ranges read back as written later.
        e.write(f, 4, b"after").unwrap();
        want[4..9].copy_from_slice(b"after");
        assert_eq!(read_all(&e, f), want, "ss {ss}");
        teardown(&e);
    }
}

#[test]
fn fallocate_errors() {
    let e = small();
    let f = put(&e, ROOT, b"f", b"data");
    assert_eq!(e.fallocate(f, PUNCH, 0, 1), Err(Error::NotSupported), "punch needs KEEP_SIZE");
    assert_eq!(e.fallocate(f, PUNCH | ZERO | KEEP, 0, 1), Err(Error::InvalidArgument));
    for mode in [0x04u32, 0x08, 0x20, 0x40, 0x100, u32::MAX] {
        assert_eq!(e.fallocate(f, mode, 0, 1), Err(Error::NotSupported), "mode {mode:#x}");
    }
    for mode in [0, KEEP, PUNCH | KEEP, ZERO, ZERO | KEEP] {
        assert_eq!(e.fallocate(f, mode, 0, 0), Err(Error::InvalidArgument), "zero length, mode {mode:#x}");
    }
    assert_eq!(e.fallocate(ROOT, 0, 0, 1), Err(Error::IsDir));
    assert_eq!(e.fallocate(9999, 0, 0, 1), Err(Error::NotFound));
    assert_eq!(read_all(&e, f), b"data");
    teardown(&e);
}

#[test]
fn seek_data_and_hole() {
    for ss in [16usize, 4096, 65536] {
        let e = tiny(ss, 64 << 20, 0);
        let s = ss as u64;
        let f = mkfile(&e, ROOT, b"f");
        // data in sector 0, holes in 1 and 2, data in 3, size 4.5 sectors (4 is a hole).
        e.write(f, 0, &vec![1; ss]).unwrap();
        e.write(f, 3 * s + 1, b"x").unwrap();
        truncate(&e, f, 4 * s + s / 2).unwrap();
        let size = 4 * s + s / 2;
        assert_eq!(e.seek(f, 0, true), Ok(0));
        assert_eq!(e.seek(f, 5, true), Ok(5));
        assert_eq!(e.seek(f, 0, false), Ok(s));
        assert_eq!(e.seek(f, s + 3, false), Ok(s + 3));
        assert_eq!(e.seek(f, s, true), Ok(3 * s));
        assert_eq!(e.seek(f, 3 * s, false), Ok(4 * s));
        assert_eq!(e.seek(f, 4 * s, true), Err(Error::NoSuchOffset), "only a hole follows");
        assert_eq!(e.seek(f, 4 * s + 1, false), Ok(4 * s + 1));
        assert_eq!(e.seek(f, size, true), Err(Error::NoSuchOffset));
        assert_eq!(e.seek(f, size, false), Err(Error::NoSuchOffset));
        assert_eq!(e.seek(f, u64::MAX, false), Err(Error::NoSuchOffset));
        // A file ending in data: the hole at EOF.
        let g = put(&e, ROOT, b"g", &vec![2; 2 * ss + 1]);
        assert_eq!(e.seek(g, 0, false), Ok(2 * s + 1));
        assert_eq!(e.seek(g, 2 * s, true), Ok(2 * s));
        teardown(&e);
    }
    // Inline, empty and all-hole files.
    let e = small();
    let f = put(&e, ROOT, b"f", b"tiny");
    assert_eq!(e.seek(f, 1, true), Ok(1));
    assert_eq!(e.seek(f, 1, false), Ok(4));
    assert_eq!(e.seek(f, 4, true), Err(Error::NoSuchOffset));
    let z = mkfile(&e, ROOT, b"z");
    assert_eq!(e.seek(z, 0, true), Err(Error::NoSuchOffset));
    assert_eq!(e.seek(z, 0, false), Err(Error::NoSuchOffset));
    truncate(&e, z, 100_000).unwrap();
    assert_eq!(e.seek(z, 10, true), Err(Error::NoSuchOffset));
    assert_eq!(e.seek(z, 10, false), Ok(10));
    assert_eq!(e.seek(ROOT, 0, true), Err(Error::InvalidArgument));
    assert_eq!(e.seek(9999, 0, true), Err(Error::NotFound));
    teardown(&e);
}
