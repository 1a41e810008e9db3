//! The image loader target: hostile images against `Engine::load_image`.
//!
//! The first input byte picks how the rest is used:
//! * even: the rest is an image as it stands (checksums and all), so the
//!   fuzzer explores the header, record framing and checksum paths;
//! * odd: the rest is a list of edits (offset u16, xor u8) applied to a
//!   valid image of a small tree with every kind of node ([`seed_image`]),
//!   whose checksums are then recomputed (`engine::image::reseal`), so the
//!   edits reach the checks behind the checksums: types, names, inode
//!   numbers, links, loops, sizes, data offsets, xattrs, counts.
//!
//! Checks, for every input:
//! * no panic;
//! * the loader's heap peak stays under 2 MiB plus 64 bytes per input byte
//!   (with [`crate::CountingAlloc`] installed): memory follows what the
//!   image holds, never what a length field claims; file data goes to
//!   sectors under a 16 MiB limit, never the heap;
//! * every inode of a loaded image is reachable from the root (no loops,
//!   no nameless nodes: a snapshot, which walks from the root, has them all);
//! * an image that loads saves again, and that image loads to the same
//!   tree (every node's attributes, names, data and xattrs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use engine::{Config, Engine, FileType, Ino, ROOT};

/// Inputs run.
pub static CASES: AtomicU64 = AtomicU64::new(0);
/// Inputs that loaded.
pub static LOADED: AtomicU64 = AtomicU64::new(0);

/// The settings every input is loaded with (bounded whatever it says).
fn settings(saved: &Config) -> Config {
    Config {
        max_bytes: saved.max_bytes.min(16 << 20),
        max_inodes: saved.max_inodes.min(4096),
        cache_slots: 2,
        ..saved.clone()
    }
}

/// A valid image of a small tree: directories, a small and a sparse file,
/// a clone, hard links, a symlink, a fifo, a device, xattrs and an ACL.
pub fn seed_image() -> &'static [u8] {
    static SEED: OnceLock<Vec<u8>> = OnceLock::new();
    SEED.get_or_init(|| {
        let e = Engine::new(Config { max_bytes: 1 << 20, posix_acl: true, sector_size: 4096, ..Config::default() })
            .expect("engine");
        let d = e.mkdir(ROOT, b"d", 0o755, 1, 2).expect("mkdir").ino;
        let f = e.create(d, b"f", 0o644, 3, 4).expect("create").ino;
        e.write(f, 0, b"hello").expect("write");
        let s = e.create(ROOT, b"s", 0o600, 0, 0).expect("create").ino;
        e.write(s, 9000, b"x").expect("write");
        e.link(f, ROOT, b"g").expect("link");
        e.symlink(d, b"l", b"../g", 0, 0).expect("symlink");
        e.mknod(ROOT, b"p", 0o010644, 0, 0, 0).expect("fifo");
        e.mknod(ROOT, b"c", 0o020600, 0x0103, 0, 0).expect("chr");
        e.setxattr(f, b"user.a", b"b", 0).expect("xattr");
        // A clone (a CLONE record): `k`'s first page shared with `k2`.
        let k = e.create(ROOT, b"k", 0o644, 0, 0).expect("create").ino;
        e.write(k, 0, &[7u8; 4097]).expect("write");
        let k2 = e.create(d, b"k2", 0o644, 0, 0).expect("create").ino;
        e.copy_file_range(k, 0, k2, 4096, 4096).expect("clone");
        let acl = [
            2u8, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255, 32, 0, 0, 0, 255, 255, 255,
            255,
        ];
        e.setxattr(d, engine::acl::DEFAULT, &acl, 0).expect("acl");
        let mut v = Vec::new();
        e.snapshot().write_to(&mut v, &[("label", "seed")]).expect("save");
        v
    })
}

/// Everything a round trip must keep, in a canonical order (also the ops
/// target's image round trip).
/// Names of files beyond each file's first, over the tree.
fn extra_names(e: &Engine) -> u64 {
    let mut names: std::collections::HashMap<Ino, u64> = std::collections::HashMap::new();
    let mut stack = vec![ROOT];
    while let Some(dir) = stack.pop() {
        let _ = e.readdir(dir, 0, |x| {
            if x.name != b"." && x.name != b".." {
                if x.kind == FileType::Directory {
                    stack.push(x.ino);
                } else {
                    *names.entry(x.ino).or_default() += 1;
                }
            }
            true
        });
    }
    names.values().map(|n| n - 1).sum()
}

pub(crate) fn dump(e: &Engine) -> Vec<String> {
    let mut out = Vec::new();
    let ss = e.config().sector_size as u64;
    let mut stack: Vec<(Ino, String)> = vec![(ROOT, "/".into())];
    while let Some((dir, path)) = stack.pop() {
        let mut kids = Vec::new();
        let _ = e.readdir(dir, 0, |x| {
            if x.name != b"." && x.name != b".." {
                kids.push((x.ino, String::from_utf8_lossy(x.name).into_owned(), x.kind));
            }
            true
        });
        for (ino, name, kind) in kids {
            let p = format!("{path}{name}");
            if kind == FileType::Directory {
                stack.push((ino, format!("{p}/")));
            }
            let mut line = format!(
                "{p} {:?}",
                e.getattr(ino).map(|mut a| {
                    a.blksize = 0;
                    a.blocks = 0;
                    a
                })
            );
            if let Ok(names) = e.listxattr(ino) {
                for n in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    line += &format!(" {n:?}={:?}", e.getxattr(ino, n));
                }
            }
            if kind == FileType::Regular {
                let size = e.getattr(ino).map_or(0, |a| a.size).min(1 << 20);
                let mut buf = vec![0u8; size as usize];
                let n = e.read(ino, 0, &mut buf).unwrap_or(0);
                let h = buf[..n].iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                line += &format!(" data {n} {h:x}");
            }
            if kind == FileType::Symlink {
                line += &format!(" -> {:?}", e.readlink(ino));
            }
            out.push(line);
        }
    }
    let _ = ss;
    out.sort();
    out
}

/// One input (see the module doc).
pub fn run(data: &[u8]) {
    CASES.fetch_add(1, Ordering::Relaxed);
    let Some((&mode, rest)) = data.split_first() else { return };
    let img: std::borrow::Cow<'_, [u8]> = if mode % 2 == 0 {
        rest.into()
    } else {
        let mut v = seed_image().to_vec();
        for e in rest.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % v.len();
            v[at] ^= e[2];
        }
        engine::image::reseal(&mut v);
        v.into()
    };
    let mark = crate::heap_mark();
    let loaded = Engine::load_image(&img[..], |i| Ok(settings(&i.config)));
    let peak = crate::heap_peak_since(mark);
    let bound = (2 << 20) + 64 * img.len() as isize;
    assert!(peak <= bound, "loading a {}-byte image took {peak} bytes of heap (bound {bound})", img.len());
    let Ok(e) = loaded else { return };
    LOADED.fetch_add(1, Ordering::Relaxed);
    // Every inode loaded is reachable from the root (a snapshot walks from
    // it); the engine counts each name of a file beyond its first as an
    // inode too (as tmpfs).
    let snap = e.snapshot();
    assert_eq!(snap.nodes() + extra_names(&e), e.stats().inodes, "a loaded image has inodes the root cannot reach");
    let mut again = Vec::new();
    snap.write_to(&mut again, &[]).expect("saving into a Vec cannot fail");
    drop(snap);
    let back = Engine::load_image(&again[..], |i| Ok(settings(&i.config))).expect("a saved image loads");
    assert_eq!(dump(&back), dump(&e), "a loaded image saved and loaded again differs");
}
