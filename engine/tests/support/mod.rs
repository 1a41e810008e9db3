//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use engine::{Attr, Config, Engine, FileType, Ino, SetAttr, ROOT};

/// A config with `sector_size`, `max_bytes` and an inline threshold.
pub(crate) fn cfg(sector_size: usize, max_bytes: u64, inline_max: usize) -> Config {
    Config { sector_size, max_bytes, inline_max, ..Config::default() }
}

/// An engine with 4 KiB sectors, 64 MiB of memory and default limits.
pub(crate) fn small() -> Engine {
    Engine::new(cfg(4096, 64 << 20, 1024)).unwrap()
}

/// An engine with `sector_size`, `max_bytes` and `inline_max` (sizes below
/// 4 KiB allowed: tiny geometry for stressing the sector code).
pub(crate) fn tiny(sector_size: usize, max_bytes: u64, inline_max: usize) -> Engine {
    Engine::new_unchecked(cfg(sector_size, max_bytes, inline_max))
}

/// Creates a regular file `name` in `parent` and drops the lookup reference
/// right away (as a kernel that does not cache the dentry would).
pub(crate) fn mkfile(e: &Engine, parent: Ino, name: &[u8]) -> Ino {
    let a = e.create(parent, name, 0o644, 0, 0).unwrap();
    e.forget(a.ino, 1);
    a.ino
}

/// Creates directory `name` in `parent`, dropping the lookup reference.
pub(crate) fn mkdir(e: &Engine, parent: Ino, name: &[u8]) -> Ino {
    let a = e.mkdir(parent, name, 0o755, 0, 0).unwrap();
    e.forget(a.ino, 1);
    a.ino
}

/// Creates `name` in `parent` holding `data`, dropping the lookup reference.
pub(crate) fn put(e: &Engine, parent: Ino, name: &[u8], data: &[u8]) -> Ino {
    let ino = mkfile(e, parent, name);
    assert_eq!(e.write(ino, 0, data).unwrap(), data.len());
    ino
}

/// The whole content of a regular file, checked against its size.
pub(crate) fn read_all(e: &Engine, ino: Ino) -> Vec<u8> {
    let size = e.getattr(ino).unwrap().size as usize;
    let mut buf = vec![0xAA; size + 17];
    let n = e.read(ino, 0, &mut buf).unwrap();
    assert_eq!(n, size, "read returns exactly the file size");
    buf.truncate(n);
    buf
}

/// `len` bytes at `off`.
pub(crate) fn read_at(e: &Engine, ino: Ino, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xAA; len];
    let n = e.read(ino, off, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Sets the size of `ino`.
pub(crate) fn truncate(e: &Engine, ino: Ino, size: u64) -> engine::Result<Attr> {
    e.setattr(ino, &SetAttr { size: Some(size), ..SetAttr::default() })
}

/// The names in directory `ino` (without `.` and `..`), in readdir order.
pub(crate) fn names(e: &Engine, ino: Ino) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    e.readdir(ino, 0, |d| {
        if d.name != b"." && d.name != b".." {
            out.push(d.name.to_vec());
        }
        true
    })
    .unwrap();
    out
}

/// `(name, ino, kind)` of every entry of `ino` (without `.` and `..`).
pub(crate) fn entries(e: &Engine, ino: Ino) -> Vec<(Vec<u8>, Ino, FileType)> {
    let mut out = Vec::new();
    e.readdir(ino, 0, |d| {
        if d.name != b"." && d.name != b".." {
            out.push((d.name.to_vec(), d.ino, d.kind));
        }
        true
    })
    .unwrap();
    out
}

/// Looks `name` up and releases the reference at once.
pub(crate) fn peek(e: &Engine, parent: Ino, name: &[u8]) -> engine::Result<Attr> {
    let a = e.lookup(parent, name)?;
    e.forget(a.ino, 1);
    Ok(a)
}

/// Removes everything below `dir` (depth first), then checks that the
/// engine holds no inode but the root and no byte of memory. Callers must
/// have released every lookup reference and handle they took.
pub(crate) fn remove_tree(e: &Engine, dir: Ino) {
    for (name, ino, kind) in entries(e, dir) {
        if kind == FileType::Directory {
            remove_tree(e, ino);
            e.rmdir(dir, &name).unwrap();
        } else {
            e.unlink(dir, &name).unwrap();
        }
    }
}

/// Asserts that only the root is left and no memory is charged.
pub(crate) fn assert_empty(e: &Engine) {
    let s = e.stats();
    assert_eq!(s.inodes, 1, "only the root is left");
    assert_eq!(s.pool.used, 0, "all memory returned");
    assert_eq!(s.pool.sectors, 0, "no sector held");
    assert_eq!(s.logical_bytes, 0, "no logical bytes");
}

/// Removes everything and asserts the engine is empty.
pub(crate) fn teardown(e: &Engine) {
    remove_tree(e, ROOT);
    assert_empty(e);
}
