//! Shared code for the engine benches: one workload trait, three file systems.
//!
//! * [`EngineFs`]: sectorfs's engine.
//! * [`VecFs`]: the "original memfs" model: one contiguous buffer per file,
//!   grown to exactly the new size on every extending write (allocate, copy,
//!   free), as a RAM disk without preallocation does.
//! * [`MutexFs`]: a single global lock over a map of `Vec<u8>` (amortised
//!   doubling growth): the simple baseline for concurrency.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::sync::Mutex;

/// The operations a workload needs.
pub trait BenchFs: Sync {
    fn name(&self) -> &'static str;
    fn create(&self, name: &str) -> u64;
    fn write(&self, id: u64, off: u64, data: &[u8]);
    fn read(&self, id: u64, off: u64, buf: &mut [u8]) -> usize;
    fn remove(&self, name: &str, id: u64);
}

pub struct EngineFs(pub engine::Engine);

impl EngineFs {
    pub fn new(limit: u64, sector_size: usize) -> EngineFs {
        Self::with_page(limit, sector_size, 0)
    }

    /// With pages (the unit of copy-on-write) of `page_size` bytes (0: the
    /// default, 4 KiB).
    pub fn with_page(limit: u64, sector_size: usize, page_size: usize) -> EngineFs {
        let cfg = engine::Config { max_bytes: limit, sector_size, page_size, ..engine::Config::default() };
        EngineFs(engine::Engine::new(cfg).expect("valid config"))
    }
}

impl BenchFs for EngineFs {
    fn name(&self) -> &'static str {
        "sectorfs"
    }
    fn create(&self, name: &str) -> u64 {
        self.0.create(engine::ROOT, name.as_bytes(), 0o644, 0, 0).expect("create").ino
    }
    fn write(&self, id: u64, off: u64, data: &[u8]) {
        self.0.write(id, off, data).expect("write");
    }
    fn read(&self, id: u64, off: u64, buf: &mut [u8]) -> usize {
        self.0.read(id, off, buf).expect("read")
    }
    fn remove(&self, name: &str, id: u64) {
        self.0.unlink(engine::ROOT, name.as_bytes()).expect("unlink");
        self.0.forget(id, 1);
    }
}

#[derive(Default)]
pub struct VecFs {
    files: Mutex<HashMap<u64, Vec<u8>>>,
    next: Mutex<u64>,
}

impl BenchFs for VecFs {
    fn name(&self) -> &'static str {
        "vecfs (contiguous, exact growth)"
    }
    fn create(&self, _name: &str) -> u64 {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        self.files.lock().unwrap().insert(*n, Vec::new());
        *n
    }
    fn write(&self, id: u64, off: u64, data: &[u8]) {
        let mut files = self.files.lock().unwrap();
        let f = files.get_mut(&id).expect("file");
        let end = off as usize + data.len();
        if end > f.len() {
            // Grow to exactly the new size: a new buffer, a copy, a free.
            let mut g = Vec::with_capacity(end);
            g.extend_from_slice(f);
            g.resize(end, 0);
            *f = g;
        }
        f[off as usize..end].copy_from_slice(data);
    }
    fn read(&self, id: u64, off: u64, buf: &mut [u8]) -> usize {
        let files = self.files.lock().unwrap();
        let f = &files[&id];
        let off = (off as usize).min(f.len());
        let n = buf.len().min(f.len() - off);
        buf[..n].copy_from_slice(&f[off..off + n]);
        n
    }
    fn remove(&self, _name: &str, id: u64) {
        self.files.lock().unwrap().remove(&id);
    }
}

#[derive(Default)]
pub struct MutexFs {
    files: Mutex<(u64, HashMap<u64, Vec<u8>>)>,
}

impl BenchFs for MutexFs {
    fn name(&self) -> &'static str {
        "mutexfs (one lock, Vec doubling)"
    }
    fn create(&self, _name: &str) -> u64 {
        let mut g = self.files.lock().unwrap();
        g.0 += 1;
        let id = g.0;
        g.1.insert(id, Vec::new());
        id
    }
    fn write(&self, id: u64, off: u64, data: &[u8]) {
        let mut g = self.files.lock().unwrap();
        let f = g.1.get_mut(&id).expect("file");
        let end = off as usize + data.len();
        if end > f.len() {
            f.resize(end, 0);
        }
        f[off as usize..end].copy_from_slice(data);
    }
    fn read(&self, id: u64, off: u64, buf: &mut [u8]) -> usize {
        let g = self.files.lock().unwrap();
        let f = &g.1[&id];
        let off = (off as usize).min(f.len());
        let n = buf.len().min(f.len() - off);
        buf[..n].copy_from_slice(&f[off..off + n]);
        n
    }
    fn remove(&self, _name: &str, id: u64) {
        self.files.lock().unwrap().1.remove(&id);
    }
}

/// Appends `total` bytes to a new file in `chunk`-byte writes, then removes it.
pub fn append_file(fs: &dyn BenchFs, name: &str, total: u64, chunk: &[u8]) {
    let id = fs.create(name);
    let mut off = 0;
    while off < total {
        fs.write(id, off, chunk);
        off += chunk.len() as u64;
    }
    fs.remove(name, id);
}

/// `n` bytes of `b` starting on a 4 KiB boundary. Every buffer the rows
/// copy from or into is one of these, so no row's copy is slowed by the
/// source's alignment (a 1 MiB `Vec` from malloc starts 16 bytes past a
/// page, or anywhere on the heap once malloc has raised its mmap threshold,
/// which moved single rows by 25% between runs) and every row of one run
/// copies from the same alignment as its `memcpy` baseline.
pub struct Buf {
    v: Vec<u8>,
    at: usize,
    n: usize,
}

impl Buf {
    pub fn new(n: usize, b: u8) -> Buf {
        let v = vec![b; n + 4096];
        let at = v.as_ptr().align_offset(4096);
        Buf { v, at, n }
    }
}

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.v[self.at..self.at + self.n]
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.at..self.at + self.n]
    }
}

/// Offsets of `size`-byte slots of a `file`-byte file, aligned to `size`,
/// from a fixed xorshift sequence (the same for every run and row; `x` may
/// be xored with a seed for a second sequence).
pub struct Offsets {
    pub x: u64,
    slots: u64,
    size: u64,
}

impl Offsets {
    pub fn new(file: u64, size: u64) -> Offsets {
        Offsets { x: 0x9E37_79B9_7F4A_7C15, slots: file / size, size }
    }
    pub fn pick(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        (self.x % self.slots) * self.size
    }
}
