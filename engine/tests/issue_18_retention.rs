//! A reader holding an old version keeps what that version reaches, and
//! nothing that only versions made after it reached (issue 18; `node.rs`,
//! "Versions", rules 1 and 3): memory and the limit stay bounded however
//! many batches run while it holds it.
use engine::{Config, Engine, SetAttr, ROOT};

fn engine(limit: u64) -> Engine {
    Engine::new(Config { sector_size: 4096, max_bytes: limit, inline_max: 0, ..Config::default() }).unwrap()
}

/// 1,000 overwrites of one page while a reader holds the first version:
/// the held page and the current one, not 1,000 pages.
#[test]
fn overwrites_under_a_held_version_keep_two_pages() {
    let e = engine(1 << 20);
    let f = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
    e.write(f, 0, &[1u8; 4096]).unwrap();
    let (pages_in, seen) = e
        .read_with(f, 0, 4096, |s| {
            for i in 0..1000u32 {
                e.write(f, 0, &[(i % 250) as u8 + 2; 4096]).unwrap();
            }
            let seen: Vec<u8> = s.iter().flat_map(|p| p.iter().copied()).collect();
            (e.stats().pool.pages, seen)
        })
        .unwrap();
    assert_eq!(seen, vec![1u8; 4096], "the held version changed");
    assert!(pages_in <= 3, "{pages_in} pages held while one old version is read");
    assert_eq!(e.stats().pool.pages, 1, "after the reader let go");
    let mut buf = [0u8; 4096];
    e.read(f, 0, &mut buf).unwrap();
    assert_eq!(buf, [(999 % 250) as u8 + 2; 4096]);
}

/// Overwrites that alternate between pages (each page retired two batches
/// after it was made, not by the next one) under a held version: still only
/// what the held version and the current one reach.
#[test]
fn alternating_overwrites_under_a_held_version() {
    let e = engine(1 << 20);
    let f = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
    e.write(f, 0, &[1u8; 3 * 4096]).unwrap();
    let pages_in = e
        .read_with(f, 0, 4096, |_| {
            for i in 0..600u32 {
                let off = (i % 3) as u64 * 4096;
                e.write(f, off, &[i as u8; 4096]).unwrap();
            }
            e.stats().pool.pages
        })
        .unwrap();
    assert!(pages_in <= 6, "{pages_in} pages held");
    assert_eq!(e.stats().pool.pages, 3);
}

/// The same churn does not make an unrelated writer run out of space.
#[test]
fn a_held_version_does_not_fill_the_limit() {
    let e = engine(256 << 10);
    let f = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
    let g = e.create(ROOT, b"g", 0o644, 0, 0).unwrap().ino;
    e.write(f, 0, &[1u8; 4096]).unwrap();
    let r = e
        .read_with(f, 0, 4096, |_| {
            for i in 0..200u32 {
                e.write(f, 0, &[i as u8; 4096]).unwrap();
            }
            e.write(g, 0, &[9u8; 4096])
        })
        .unwrap();
    assert_eq!(r, Ok(4096));
}

/// Nested readers of two old versions, dropped newest first, while a writer
/// grows, overwrites and truncates: each keeps seeing its version, and
/// everything goes back once both let go.
#[test]
fn nested_old_versions_dropped_newest_first() {
    let e = engine(4 << 20);
    let f = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
    e.write(f, 0, &[1u8; 16384]).unwrap();
    e.read_with(f, 0, 16384, |outer| {
        e.write(f, 4096, &[2u8; 4096]).unwrap();
        e.read_with(f, 0, 16384, |inner| {
            for i in 0..50u8 {
                e.write(f, 0, &[i; 8192]).unwrap();
                e.write(f, 65536, &[i; 4096]).unwrap();
                e.setattr(f, &SetAttr { size: Some(8192), ..SetAttr::default() }).unwrap();
            }
            let v: Vec<u8> = inner.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(&v[..4096], &[1u8; 4096][..]);
            assert_eq!(&v[4096..8192], &[2u8; 4096][..]);
            assert_eq!(&v[8192..], &[1u8; 8192][..]);
        })
        .unwrap();
        let v: Vec<u8> = outer.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(v, vec![1u8; 16384]);
        assert!(e.stats().pool.pages <= 4 + 2 + 2, "{} pages", e.stats().pool.pages);
    })
    .unwrap();
    assert_eq!(e.stats().pool.pages, 2);
    e.unlink(ROOT, b"f").unwrap();
    e.forget(f, 1);
    assert_eq!(e.stats().pool.pages, 0);
    assert_eq!(e.stats().pool.used, 0);
}

/// Issue 18 (sequential overwrites at 4 KiB sectors): a write that covers
/// whole leaves of one-page sectors goes through one leaf walk per leaf when
/// the leaf's sectors are all present or all holes, and sector by sector
/// otherwise. Every mix, across leaf boundaries and at unaligned ends, gives
/// the bytes a plain buffer does.
#[test]
fn one_page_sectors_written_leaf_by_leaf_match_a_buffer() {
    let e =
        engine::Engine::new(engine::Config { sector_size: 4096, max_bytes: 64 << 20, ..Default::default() }).unwrap();
    let f = e.create(engine::ROOT, b"f", 0o644, 0, 0).unwrap().ino;
    let leaf = 64 * 4096u64;
    let mut model = Vec::new();
    let write = |off: u64, len: usize, byte: u8, model: &mut Vec<u8>| {
        let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
        assert_eq!(e.write(f, off, &data).unwrap(), len);
        let end = off as usize + len;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&data);
    };
    // Leaf 0 full, leaf 1 half (every other sector), leaves 2-3 holes, leaf
    // 4 full; then a file end inside leaf 5.
    write(0, leaf as usize, 1, &mut model);
    for s in (0..64).step_by(2) {
        write(leaf + s * 4096, 4096, 2, &mut model);
    }
    write(4 * leaf, leaf as usize, 3, &mut model);
    write(5 * leaf + 100, 5000, 4, &mut model);
    // One write across all of it, unaligned at both ends.
    write(1000, (5 * leaf + 3000) as usize, 9, &mut model);
    // Whole aligned leaves again (all present now).
    write(leaf, 2 * leaf as usize, 11, &mut model);
    let size = e.getattr(f).unwrap().size as usize;
    assert_eq!(size, model.len());
    let mut got = vec![0u8; size];
    assert_eq!(e.read(f, 0, &mut got).unwrap(), size);
    assert!(got == model, "contents differ from the buffer");
}
