//! Model-based property test (STYLE convention 12): random operation
//! sequences run against the engine and a small reference model (a map of
//! inodes with `Vec<u8>` contents and `BTreeMap` directories); every result
//! (the `Ok` value or the `Err` variant) and, after every step, the whole
//! tree (names, kinds, link counts, sizes, contents, xattrs) must agree.
//!
//! Geometry is tiny (16- and 64-byte sectors, inline thresholds 0 and 8) to
//! stress the sector code, plus one 4 KiB configuration. Memory limits are
//! small so that `NoSpace` happens: the engine may refuse a write that needs
//! memory, and then the file (and the model) must be exactly as before. A
//! refusal while plenty of memory is free is a failure. At the end everything
//! is deleted and every byte and inode must be back.

mod support;

use std::collections::BTreeMap;

use engine::data::{FALLOC_KEEP_SIZE as KEEP, FALLOC_PUNCH_HOLE as PUNCH, FALLOC_ZERO_RANGE as ZERO};
use engine::rename_flags::{EXCHANGE, NOREPLACE, WHITEOUT};
use engine::xattr_flags::{CREATE, REPLACE};
use engine::{Config, Engine, Error, FileType, Ino, SetAttr, ROOT, XATTR_SIZE_MAX};
use proptest::prelude::*;

const NAMES: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
const XNAMES: [&[u8]; 5] = [b"user.a", b"user.b", b"trusted.c", b"bad.x", b""];
const FALLOC_MODES: [u32; 6] = [0, KEEP, PUNCH | KEEP, ZERO, ZERO | KEEP, PUNCH];
const XFLAGS: [u32; 4] = [0, CREATE, REPLACE, CREATE | REPLACE];
const RFLAGS: [u32; 4] = [0, NOREPLACE, EXCHANGE, EXCHANGE | NOREPLACE];

#[derive(Debug, Clone)]
enum Op {
    Create {
        dir: u8,
        name: u8,
    },
    Mkdir {
        dir: u8,
        name: u8,
    },
    Mkfifo {
        dir: u8,
        name: u8,
    },
    Write {
        dir: u8,
        name: u8,
        off: u32,
        len: u32,
        byte: u8,
    },
    Append {
        dir: u8,
        name: u8,
        len: u32,
        byte: u8,
    },
    Truncate {
        dir: u8,
        name: u8,
        size: u32,
    },
    Read {
        dir: u8,
        name: u8,
        off: u32,
        len: u32,
    },
    Unlink {
        dir: u8,
        name: u8,
    },
    Rmdir {
        dir: u8,
        name: u8,
    },
    Rename {
        sdir: u8,
        sname: u8,
        ddir: u8,
        dname: u8,
        flags: u8,
    },
    Link {
        sdir: u8,
        sname: u8,
        ddir: u8,
        dname: u8,
    },
    Fallocate {
        dir: u8,
        name: u8,
        mode: u8,
        off: u32,
        len: u32,
    },
    Copy {
        sdir: u8,
        sname: u8,
        ddir: u8,
        dname: u8,
        off_in: u32,
        off_out: u32,
        len: u32,
    },
    /// A copy at offsets equal modulo the sector size: whole sectors are
    /// cloned (issue 20). `skew` moves both off the sector boundary.
    Clone {
        sdir: u8,
        sname: u8,
        ddir: u8,
        dname: u8,
        k_in: u8,
        k_out: u8,
        skew: u8,
        len: u32,
    },
    SetXattr {
        dir: u8,
        name: u8,
        x: u8,
        vlen: u8,
        flags: u8,
    },
    RemoveXattr {
        dir: u8,
        name: u8,
        x: u8,
    },
    Open {
        dir: u8,
        name: u8,
    },
    Release {
        h: u8,
    },
    WriteH {
        h: u8,
        off: u32,
        len: u32,
        byte: u8,
    },
    ReadH {
        h: u8,
        off: u32,
        len: u32,
    },
    TruncH {
        h: u8,
        size: u32,
    },
    Tmpfile {
        dir: u8,
    },
    LinkH {
        h: u8,
        ddir: u8,
        dname: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let n = || 0u8..4;
    let d = || any::<u8>();
    let u = || any::<u32>();
    prop_oneof![
        4 => (d(), n()).prop_map(|(dir, name)| Op::Create { dir, name }),
        2 => (d(), n()).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        1 => (d(), n()).prop_map(|(dir, name)| Op::Mkfifo { dir, name }),
        8 => (d(), n(), u(), u(), any::<u8>()).prop_map(|(dir, name, off, len, byte)| Op::Write { dir, name, off, len, byte }),
        2 => (d(), n(), u(), any::<u8>()).prop_map(|(dir, name, len, byte)| Op::Append { dir, name, len, byte }),
        4 => (d(), n(), u()).prop_map(|(dir, name, size)| Op::Truncate { dir, name, size }),
        3 => (d(), n(), u(), u()).prop_map(|(dir, name, off, len)| Op::Read { dir, name, off, len }),
        3 => (d(), n()).prop_map(|(dir, name)| Op::Unlink { dir, name }),
        2 => (d(), n()).prop_map(|(dir, name)| Op::Rmdir { dir, name }),
        4 => (d(), n(), d(), n(), 0u8..18).prop_map(|(sdir, sname, ddir, dname, flags)| Op::Rename { sdir, sname, ddir, dname, flags }),
        2 => (d(), n(), d(), n()).prop_map(|(sdir, sname, ddir, dname)| Op::Link { sdir, sname, ddir, dname }),
        4 => (d(), n(), any::<u8>(), u(), u()).prop_map(|(dir, name, mode, off, len)| Op::Fallocate { dir, name, mode, off, len }),
        2 => (d(), n(), d(), n(), u(), u(), u()).prop_map(|(sdir, sname, ddir, dname, off_in, off_out, len)| Op::Copy { sdir, sname, ddir, dname, off_in, off_out, len }),
        2 => (d(), n(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(dir, name, x, vlen, flags)| Op::SetXattr { dir, name, x, vlen, flags }),
        1 => (d(), n(), any::<u8>()).prop_map(|(dir, name, x)| Op::RemoveXattr { dir, name, x }),
        2 => (d(), n()).prop_map(|(dir, name)| Op::Open { dir, name }),
        2 => any::<u8>().prop_map(|h| Op::Release { h }),
        3 => (any::<u8>(), u(), u(), any::<u8>()).prop_map(|(h, off, len, byte)| Op::WriteH { h, off, len, byte }),
        2 => (any::<u8>(), u(), u()).prop_map(|(h, off, len)| Op::ReadH { h, off, len }),
        2 => (any::<u8>(), u()).prop_map(|(h, size)| Op::TruncH { h, size }),
        4 => (d(), n(), d(), n(), (any::<u8>(), any::<u8>(), any::<u8>()), u()).prop_map(|(sdir, sname, ddir, dname, (k_in, k_out, skew), len)| Op::Clone { sdir, sname, ddir, dname, k_in, k_out, skew, len: len.wrapping_mul(3) }),
        1 => d().prop_map(|dir| Op::Tmpfile { dir }),
        1 => (any::<u8>(), d(), n()).prop_map(|(h, ddir, dname)| Op::LinkH { h, ddir, dname }),
    ]
}

// ------------------------------------------------------------------ model

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Dir {
        parent: Ino,
        entries: BTreeMap<Vec<u8>, Ino>,
    },
    Fifo,
    /// A whiteout left by `rename` with `WHITEOUT`: a character device 0/0.
    Whiteout,
}

#[derive(Debug, Clone)]
struct MNode {
    kind: Kind,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    opens: u32,
}

#[derive(Debug, Clone, Copy)]
struct Geom {
    ss: u64,
    /// Page size (0: the default, the sector size when it is smaller than 4 KiB).
    ps: usize,
    inline: usize,
    limit: u64,
    max_inodes: u64,
}

impl Geom {
    fn max_size(&self) -> u64 {
        7 * self.ss + 3
    }
    fn off(&self, raw: u32) -> u64 {
        u64::from(raw) % (6 * self.ss + 1)
    }
    fn len(&self, raw: u32) -> u64 {
        u64::from(raw) % (2 * self.ss + self.ss / 2 + 1)
    }
}

struct Harness {
    g: Geom,
    e: Engine,
    nodes: BTreeMap<Ino, MNode>,
    handles: Vec<Ino>,
    step: usize,
}

type R<T> = Result<T, Error>;

/// Whether an operation may be refused for memory: it needs some.
#[derive(PartialEq)]
enum Mem {
    Never,
    /// May need up to this many bytes.
    Upto(u64),
}

impl Harness {
    fn new(g: Geom) -> Harness {
        let e = Engine::new_unchecked(Config {
            sector_size: g.ss as usize,
            max_bytes: g.limit,
            max_inodes: g.max_inodes,
            inline_max: g.inline,
            max_file_size: g.max_size(),
            page_size: g.ps,
            ..Config::default()
        });
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            MNode { kind: Kind::Dir { parent: ROOT, entries: BTreeMap::new() }, xattrs: BTreeMap::new(), opens: 0 },
        );
        Harness { g, e, nodes, handles: Vec::new(), step: 0 }
    }

    fn dirs(&self) -> Vec<Ino> {
        self.nodes.iter().filter(|(_, n)| matches!(n.kind, Kind::Dir { .. })).map(|(i, _)| *i).collect()
    }

    fn dir(&self, pick: u8) -> Ino {
        let d = self.dirs();
        d[pick as usize % d.len()]
    }

    fn entries(&self, dir: Ino) -> &BTreeMap<Vec<u8>, Ino> {
        match &self.nodes[&dir].kind {
            Kind::Dir { entries, .. } => entries,
            _ => unreachable!("not a dir"),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> &mut BTreeMap<Vec<u8>, Ino> {
        match &mut self.nodes.get_mut(&dir).unwrap().kind {
            Kind::Dir { entries, .. } => entries,
            _ => unreachable!("not a dir"),
        }
    }

    fn get(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        self.entries(dir).get(name).copied()
    }

    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.nodes[&ino].kind, Kind::Dir { .. })
    }

    fn ftype(&self, ino: Ino) -> FileType {
        match self.nodes[&ino].kind {
            Kind::File(_) => FileType::Regular,
            Kind::Dir { .. } => FileType::Directory,
            Kind::Fifo => FileType::Fifo,
            Kind::Whiteout => FileType::CharDevice,
        }
    }

    fn is_ancestor(&self, anc: Ino, mut ino: Ino) -> bool {
        loop {
            if ino == anc {
                return true;
            }
            if ino == ROOT {
                return false;
            }
            match &self.nodes[&ino].kind {
                Kind::Dir { parent, .. } => ino = *parent,
                _ => return false,
            }
        }
    }

    /// Inodes counted against `max_inodes`: every node, and every name of a
    /// file beyond its first (as tmpfs).
    fn inodes(&self) -> u64 {
        let extra: u64 =
            self.nodes.keys().filter(|&&i| !self.is_dir(i)).map(|&i| u64::from(self.nlink(i).saturating_sub(1))).sum();
        self.nodes.len() as u64 + extra
    }

    fn nlink(&self, ino: Ino) -> u32 {
        if self.is_dir(ino) {
            // `.`, the entry in the parent (the root: its own `..`), and `..` of each subdirectory.
            let subdirs = self.entries(ino).values().filter(|&&i| self.is_dir(i)).count();
            return 2 + subdirs as u32;
        }
        let mut n = 0;
        for node in self.nodes.values() {
            if let Kind::Dir { entries, .. } = &node.kind {
                n += entries.values().filter(|&&i| i == ino).count() as u32;
            }
        }
        n
    }

    /// Frees `ino` in the model if nothing names or holds it.
    fn settle(&mut self, ino: Ino) {
        if self.is_dir(ino) {
            return;
        }
        if self.nlink(ino) == 0 && self.nodes[&ino].opens == 0 {
            self.nodes.remove(&ino);
        }
    }

    fn data(&self, ino: Ino) -> &Vec<u8> {
        match &self.nodes[&ino].kind {
            Kind::File(d) => d,
            _ => unreachable!(),
        }
    }

    fn data_mut(&mut self, ino: Ino) -> &mut Vec<u8> {
        match &mut self.nodes.get_mut(&ino).unwrap().kind {
            Kind::File(d) => d,
            _ => unreachable!(),
        }
    }

    /// The error data operations give for a non-regular node.
    fn not_regular(&self, ino: Ino) -> Option<Error> {
        match self.nodes[&ino].kind {
            Kind::File(_) => None,
            Kind::Dir { .. } => Some(Error::IsDir),
            Kind::Fifo | Kind::Whiteout => Some(Error::InvalidArgument),
        }
    }

    /// Compares a result with the expectation. `mem`: the operation may be
    /// refused with `NoSpace` (then nothing changed). Returns whether the
    /// model should apply the change.
    fn agree<T: PartialEq + std::fmt::Debug>(&self, what: &str, got: R<T>, want: R<T>, mem: Mem, used: u64) -> bool {
        match (&got, &want) {
            (Err(Error::NoSpace), Ok(_)) => {
                let Mem::Upto(need) = mem else {
                    panic!("step {}: {what}: NoSpace from an op that needs no memory", self.step)
                };
                let free = self.g.limit.saturating_sub(used);
                assert!(free < need, "step {}: {what}: NoSpace with {free} bytes free for at most {need}", self.step);
                false
            }
            _ => {
                assert_eq!(got, want, "step {}: {what}", self.step);
                got.is_ok()
            }
        }
    }

    /// Upper bound of memory a data mutation can need: the sectors of the
    /// range it touches plus a few (copy-on-write edges, conversion of an
    /// inline file), and an inline buffer of the new size.
    fn need(&self, range: u64, new_len: u64) -> Mem {
        Mem::Upto((range / self.g.ss + 4) * self.g.ss + new_len)
    }

    fn used(&self) -> u64 {
        self.e.stats().pool.used
    }

    fn lookup(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        let got = self.e.lookup(dir, name);
        let want = self.get(dir, name);
        match (got, want) {
            (Ok(a), Some(w)) => {
                assert_eq!(a.ino, w, "step {}: lookup {:?}", self.step, name);
                assert_eq!(a.kind, self.ftype(w));
                self.e.forget(a.ino, 1);
                Some(w)
            }
            (Err(Error::NotFound), None) => None,
            (g, w) => panic!("step {}: lookup {name:?} in {dir}: engine {g:?}, model {w:?}", self.step),
        }
    }

    fn handle(&self, h: u8) -> Option<Ino> {
        (!self.handles.is_empty()).then(|| self.handles[h as usize % self.handles.len()])
    }

    fn bytes(len: u64, byte: u8) -> Vec<u8> {
        vec![byte; len as usize]
    }

    // -------------------------------------------------------------- ops

    fn make(&mut self, dir: Ino, name: &[u8], kind: Kind) {
        let want = if self.get(dir, name).is_some() {
            Err(Error::Exists)
        } else if self.inodes() >= self.g.max_inodes {
            Err(Error::NoInodes)
        } else {
            Ok(())
        };
        let got = match kind {
            Kind::File(_) => self.e.create(dir, name, 0o644, 0, 0),
            Kind::Dir { .. } => self.e.mkdir(dir, name, 0o755, 0, 0),
            Kind::Fifo => self.e.mknod(dir, name, 0o010644, 0, 0, 0),
            Kind::Whiteout => self.e.mknod(dir, name, 0o020000, 0, 0, 0),
        };
        match (got, want) {
            (Ok(a), Ok(())) => {
                self.e.forget(a.ino, 1);
                let kind = match kind {
                    Kind::Dir { .. } => Kind::Dir { parent: dir, entries: BTreeMap::new() },
                    k => k,
                };
                self.nodes.insert(a.ino, MNode { kind, xattrs: BTreeMap::new(), opens: 0 });
                self.entries_mut(dir).insert(name.to_vec(), a.ino);
            }
            (g, w) => assert_eq!(g.map(|_| ()), w, "step {}: make {name:?}", self.step),
        }
    }

    fn write(&mut self, ino: Ino, off: u64, data: &[u8]) {
        let used = self.used();
        let end = off + data.len() as u64;
        let want = if let Some(e) = self.not_regular(ino) {
            Err(e)
        } else if data.is_empty() {
            Ok(0)
        } else if end > self.g.max_size() {
            Err(Error::FileTooBig)
        } else {
            Ok(data.len())
        };
        let new_len = end.max(self.file_len(ino));
        let need = self.need(data.len() as u64, new_len);
        let got = self.e.write(ino, off, data);
        // At the limit a write may store a prefix (up to a sector boundary)
        // and return its length: then the model takes that prefix.
        let mut end = end;
        match (&got, &want) {
            (Ok(n), Ok(len)) if n < len => {
                let (n, ss) = (*n as u64, self.g.ss);
                let Mem::Upto(at_most) = need else { unreachable!("a write needs memory") };
                let free = self.g.limit.saturating_sub(used);
                assert!(free < at_most, "step {}: short write {n} of {len} with {free} bytes free", self.step);
                assert!(
                    n > 0 && (off + n) % ss == 0,
                    "step {}: short write {n} at {off}: not to a sector's end",
                    self.step
                );
                end = off + n;
            }
            _ => {
                if !self.agree("write", got, want, need, used) || data.is_empty() {
                    return;
                }
            }
        }
        let d = self.data_mut(ino);
        if d.len() < end as usize {
            d.resize(end as usize, 0);
        }
        d[off as usize..end as usize].copy_from_slice(&data[..(end - off) as usize]);
    }

    fn file_len(&self, ino: Ino) -> u64 {
        match &self.nodes[&ino].kind {
            Kind::File(d) => d.len() as u64,
            _ => 0,
        }
    }

    fn append(&mut self, ino: Ino, data: &[u8]) {
        let used = self.used();
        let off = self.file_len(ino);
        let end = off + data.len() as u64;
        let want = if let Some(e) = self.not_regular(ino) {
            Err(e)
        } else if !data.is_empty() && end > self.g.max_size() {
            Err(Error::FileTooBig)
        } else {
            Ok(off)
        };
        let got = self.e.append(ino, data);
        if self.agree("append", got, want, self.need(data.len() as u64, end), used) {
            self.data_mut(ino).extend_from_slice(data);
        }
    }

    fn truncate(&mut self, ino: Ino, size: u64) {
        let used = self.used();
        let want = if self.is_dir(ino) {
            Err(Error::IsDir)
        } else if self.not_regular(ino).is_some() {
            Err(Error::InvalidArgument)
        } else if size > self.g.max_size() {
            Err(Error::FileTooBig)
        } else {
            Ok(size)
        };
        let got = self.e.setattr(ino, &SetAttr { size: Some(size), ..SetAttr::default() }).map(|a| a.size);
        let grow = size.saturating_sub(self.file_len(ino));
        let mem = if grow > 0 { self.need(grow, size) } else { Mem::Never };
        if self.agree("truncate", got, want, mem, used) {
            self.data_mut(ino).resize(size as usize, 0);
        }
    }

    fn read(&self, ino: Ino, off: u64, len: u64) {
        let mut buf = vec![0xA5; len as usize];
        let got = self.e.read(ino, off, &mut buf);
        let want = match self.not_regular(ino) {
            Some(e) => Err(e),
            None => {
                let d = self.data(ino);
                let from = (off as usize).min(d.len());
                let to = (off as usize + len as usize).min(d.len());
                Ok(to - from)
            }
        };
        assert_eq!(got, want, "step {}: read", self.step);
        if let Some(n) = got.ok().filter(|&n| n > 0) {
            let d = self.data(ino);
            assert_eq!(&buf[..n], &d[off as usize..off as usize + n], "step {}: read bytes", self.step);
        }
        // The zero-copy read lends the same bytes (issue 16).
        let lent = self.e.read_with(ino, off, len as usize, |s| {
            let mut all = Vec::new();
            for p in s {
                all.extend_from_slice(p);
            }
            all
        });
        assert_eq!(lent.as_ref().map(Vec::len), want.as_ref().copied(), "step {}: read_with", self.step);
        if let Ok(lent) = lent {
            assert_eq!(&lent[..], &buf[..lent.len()], "step {}: read_with bytes", self.step);
        }
    }

    fn fallocate(&mut self, ino: Ino, mode: u32, off: u64, len: u64) {
        let used = self.used();
        let end = off + len;
        let cur = self.file_len(ino);
        let want = if let Some(e) = self.not_regular(ino) {
            Err(e)
        } else if len == 0 {
            Err(Error::InvalidArgument)
        } else if end > self.g.max_size() {
            Err(Error::FileTooBig)
        } else if mode == PUNCH {
            Err(Error::NotSupported)
        } else {
            Ok(())
        };
        let got = self.e.fallocate(ino, mode, off, len);
        let keep = mode & KEEP != 0;
        let new_len = if keep { cur } else { cur.max(end) };
        // A punch copies at most two partial pages; only a copy of a page
        // another file shares (a clone's, issue 20) takes memory, since the
        // page it replaces is not freed.
        let mem = if mode & PUNCH == 0 {
            self.need(len, new_len)
        } else if self.e.stats().pool.shared_pages > 0 {
            Mem::Upto(2 * self.g.ss)
        } else {
            Mem::Never
        };
        if self.agree("fallocate", got, want, mem, used) {
            let d = self.data_mut(ino);
            if mode & (PUNCH | ZERO) != 0 {
                let a = (off as usize).min(d.len());
                let b = (end as usize).min(d.len());
                d[a..b].fill(0);
            }
            d.resize(new_len as usize, 0);
        }
    }

    fn unlink(&mut self, dir: Ino, name: &[u8]) {
        let target = self.get(dir, name);
        let want = match target {
            None => Err(Error::NotFound),
            Some(i) if self.is_dir(i) => Err(Error::IsDir),
            Some(_) => Ok(()),
        };
        let got = self.e.unlink(dir, name);
        assert_eq!(got, want, "step {}: unlink {name:?}", self.step);
        if got.is_ok() {
            let ino = target.unwrap();
            self.entries_mut(dir).remove(name);
            self.settle(ino);
            if !self.nodes.contains_key(&ino) {
                assert_eq!(self.e.getattr(ino), Err(Error::NotFound), "step {}: freed on unlink", self.step);
            }
        }
    }

    fn rmdir(&mut self, dir: Ino, name: &[u8]) {
        let target = self.get(dir, name);
        let want = match target {
            None => Err(Error::NotFound),
            Some(i) if !self.is_dir(i) => Err(Error::NotDir),
            Some(i) if !self.entries(i).is_empty() => Err(Error::NotEmpty),
            Some(_) => Ok(()),
        };
        let got = self.e.rmdir(dir, name);
        assert_eq!(got, want, "step {}: rmdir {name:?}", self.step);
        if got.is_ok() {
            let ino = target.unwrap();
            self.entries_mut(dir).remove(name);
            self.nodes.remove(&ino);
            assert_eq!(self.e.getattr(ino), Err(Error::NotFound), "step {}: dir freed", self.step);
        }
    }

    fn rename_want(&self, sd: Ino, sn: &[u8], dd: Ino, dn: &[u8], flags: u32) -> R<()> {
        if flags & !(EXCHANGE | NOREPLACE | WHITEOUT) != 0
            || (flags & EXCHANGE != 0 && flags & (NOREPLACE | WHITEOUT) != 0)
        {
            return Err(Error::InvalidArgument);
        }
        let src = self.get(sd, sn).ok_or(Error::NotFound)?;
        let dst = self.get(dd, dn);
        let cross = sd != dd;
        if self.is_dir(src) && cross && self.is_ancestor(src, dd) {
            return Err(Error::WouldLoop);
        }
        if let Some(t) = dst {
            if flags & NOREPLACE != 0 {
                return Err(Error::Exists);
            }
            if t == src {
                return Ok(());
            }
            if cross && self.is_dir(t) && self.is_ancestor(t, sd) {
                return Err(if flags & EXCHANGE != 0 { Error::WouldLoop } else { Error::NotEmpty });
            }
        }
        if flags & EXCHANGE != 0 {
            dst.ok_or(Error::NotFound)?;
            return Ok(());
        }
        if let Some(t) = dst {
            match (self.is_dir(src), self.is_dir(t)) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                (true, true) if !self.entries(t).is_empty() => return Err(Error::NotEmpty),
                _ => {}
            }
        }
        // The whiteout needs an inode (the replaced target is freed only after).
        if flags & WHITEOUT != 0 && self.inodes() >= self.g.max_inodes {
            return Err(Error::NoInodes);
        }
        Ok(())
    }

    fn set_parent(&mut self, ino: Ino, p: Ino) {
        if let Kind::Dir { parent, .. } = &mut self.nodes.get_mut(&ino).unwrap().kind {
            *parent = p;
        }
    }

    fn rename(&mut self, sd: Ino, sn: &[u8], dd: Ino, dn: &[u8], flags: u32) {
        let want = self.rename_want(sd, sn, dd, dn, flags);
        let got = self.e.rename(sd, sn, dd, dn, flags);
        assert_eq!(got, want, "step {}: rename {sd}/{sn:?} -> {dd}/{dn:?} flags {flags}", self.step);
        if got.is_err() {
            return;
        }
        let src = self.get(sd, sn).unwrap();
        let dst = self.get(dd, dn);
        if dst == Some(src) {
            return;
        }
        if flags & EXCHANGE != 0 {
            let dst = dst.unwrap();
            self.entries_mut(sd).insert(sn.to_vec(), dst);
            self.entries_mut(dd).insert(dn.to_vec(), src);
            self.set_parent(src, dd);
            self.set_parent(dst, sd);
            return;
        }
        self.entries_mut(sd).remove(sn);
        self.entries_mut(dd).insert(dn.to_vec(), src);
        self.set_parent(src, dd);
        if flags & WHITEOUT != 0 {
            let a = self.e.lookup(sd, sn).unwrap_or_else(|e| panic!("step {}: no whiteout: {e:?}", self.step));
            self.e.forget(a.ino, 1);
            assert_eq!(
                (a.kind, a.perm, a.rdev, a.nlink),
                (FileType::CharDevice, 0, 0, 1),
                "step {}: whiteout",
                self.step
            );
            self.nodes.insert(a.ino, MNode { kind: Kind::Whiteout, xattrs: BTreeMap::new(), opens: 0 });
            self.entries_mut(sd).insert(sn.to_vec(), a.ino);
        }
        if let Some(t) = dst {
            if self.is_dir(t) {
                self.nodes.remove(&t);
            } else {
                self.settle(t);
            }
            if !self.nodes.contains_key(&t) {
                assert_eq!(self.e.getattr(t), Err(Error::NotFound), "step {}: replaced target freed", self.step);
            }
        }
    }

    fn link(&mut self, ino: Ino, dd: Ino, dn: &[u8]) {
        let want = if self.is_dir(ino) {
            Err(Error::Permission)
        } else if self.get(dd, dn).is_some() {
            Err(Error::Exists)
        } else if self.nlink(ino) > 0 && self.inodes() >= self.g.max_inodes {
            // A name beyond the first is an inode (not an `O_TMPFILE` file's first).
            Err(Error::NoInodes)
        } else {
            Ok(ino)
        };
        let got = self.e.link(ino, dd, dn).map(|a| a.ino);
        assert_eq!(got, want, "step {}: link {ino} -> {dd}/{dn:?}", self.step);
        if got.is_ok() {
            self.e.forget(ino, 1);
            self.entries_mut(dd).insert(dn.to_vec(), ino);
        }
    }

    fn copy(&mut self, src: Ino, off_in: u64, dst: Ino, off_out: u64, len: u64) {
        let used = self.used();
        let want: R<u64> = (|| {
            if src == dst && off_in < off_out + len && off_out < off_in + len {
                return Err(Error::InvalidArgument);
            }
            if let Some(e) = self.not_regular(src) {
                return Err(e);
            }
            if let Some(e) = self.not_regular(dst) {
                return Err(e);
            }
            let total = len.min(self.file_len(src).saturating_sub(off_in));
            if total > 0 && off_out + total > self.g.max_size() {
                return Err(Error::FileTooBig);
            }
            Ok(total)
        })();
        let got = self.e.copy_file_range(src, off_in, dst, off_out, len);
        let mut total = *want.as_ref().unwrap_or(&0);
        // A copy may stop short at the limit once some of it is done (a
        // clone of whole sectors takes no memory, its copied tail may):
        // then what it did is what it says.
        let got = match (got, &want) {
            (Ok(n), Ok(t)) if n < *t => {
                // What the rest needed: a sector to copy, the table slots
                // of the pages a clone of it would share, or (an inline
                // destination) the sectors of the whole file it becomes.
                let free = self.g.limit.saturating_sub(self.used());
                let ps = self.e.pool().page_size() as u64;
                let slots = (t - n).div_ceil(ps).saturating_mul(engine::sector::SLOT_COST);
                let whole = (off_out + t).div_ceil(self.g.ss) * self.g.ss;
                assert!(
                    free < 2 * self.g.ss || free < slots || free < whole,
                    "step {}: short copy {n} of {t} with {free} bytes free",
                    self.step
                );
                total = n;
                Ok(*t)
            }
            (g, _) => g,
        };
        let new_len = (off_out + total).max(self.file_len(dst));
        if self.agree("copy_file_range", got, want, self.need(total, new_len), used) && total > 0 {
            let bytes = self.data(src)[off_in as usize..(off_in + total) as usize].to_vec();
            let d = self.data_mut(dst);
            let end = (off_out + total) as usize;
            if d.len() < end {
                d.resize(end, 0);
            }
            d[off_out as usize..end].copy_from_slice(&bytes);
        }
    }

    fn setxattr(&mut self, ino: Ino, x: u8, vlen: u8, flags: u8) {
        let name = XNAMES[x as usize % XNAMES.len()];
        let value = if vlen == 255 { vec![1; XATTR_SIZE_MAX + 1] } else { vec![vlen; vlen as usize % 4] };
        let flags = XFLAGS[flags as usize % XFLAGS.len()];
        let exists = self.nodes[&ino].xattrs.contains_key(name);
        let want = if name.is_empty() {
            Err(Error::Range)
        } else if name == b"bad.x" {
            Err(Error::NotSupported)
        } else if value.len() > XATTR_SIZE_MAX {
            Err(Error::TooBig)
        } else if flags & CREATE != 0 && exists {
            Err(Error::Exists)
        } else if flags & REPLACE != 0 && !exists {
            Err(Error::NoData)
        } else {
            Ok(())
        };
        let got = self.e.setxattr(ino, name, &value, flags);
        assert_eq!(got, want, "step {}: setxattr {name:?}", self.step);
        if got.is_ok() {
            self.nodes.get_mut(&ino).unwrap().xattrs.insert(name.to_vec(), value);
        }
        let gx = self.e.getxattr(ino, name);
        let wx = if name.is_empty() {
            Err(Error::Range)
        } else if name == b"bad.x" {
            Err(Error::NotSupported)
        } else {
            self.nodes[&ino].xattrs.get(name).cloned().ok_or(Error::NoData)
        };
        assert_eq!(gx, wx, "step {}: getxattr {name:?}", self.step);
    }

    fn removexattr(&mut self, ino: Ino, x: u8) {
        let name = XNAMES[x as usize % XNAMES.len()];
        let want = if name.is_empty() {
            Err(Error::Range)
        } else if name == b"bad.x" {
            Err(Error::NotSupported)
        } else if self.nodes[&ino].xattrs.contains_key(name) {
            Ok(())
        } else {
            Err(Error::NoData)
        };
        let got = self.e.removexattr(ino, name);
        assert_eq!(got, want, "step {}: removexattr {name:?}", self.step);
        if got.is_ok() {
            self.nodes.get_mut(&ino).unwrap().xattrs.remove(name);
        }
    }

    fn apply(&mut self, op: &Op) {
        let g = self.g;
        match *op {
            Op::Create { dir, name } => self.make(self.dir(dir), NAMES[name as usize], Kind::File(Vec::new())),
            Op::Mkdir { dir, name } => {
                self.make(self.dir(dir), NAMES[name as usize], Kind::Dir { parent: 0, entries: BTreeMap::new() })
            }
            Op::Mkfifo { dir, name } => self.make(self.dir(dir), NAMES[name as usize], Kind::Fifo),
            Op::Write { dir, name, off, len, byte } => {
                if let Some(ino) = self.lookup(self.dir(dir), NAMES[name as usize]) {
                    self.write(ino, g.off(off), &Self::bytes(g.len(len), byte));
                }
            }
            Op::Append { dir, name, len, byte } => {
                if let Some(ino) = self.lookup(self.dir(dir), NAMES[name as usize]) {
                    self.append(ino, &Self::bytes(g.len(len), byte));
                }
            }
            Op::Truncate { dir, name, size } => {
                if let Some(ino) = self.lookup(self.dir(dir), NAMES[name as usize]) {
                    self.truncate(ino, u64::from(size) % (g.max_size() + 3));
                }
            }
            Op::Read { dir, name, off, len } => {
                if let Some(ino) = self.lookup(self.dir(dir), NAMES[name as usize]) {
                    self.read(ino, g.off(off), g.len(len));
                }
            }
            Op::Unlink { dir, name } => self.unlink(self.dir(dir), NAMES[name as usize]),
            Op::Rmdir { dir, name } => self.rmdir(self.dir(dir), NAMES[name as usize]),
            Op::Rename { sdir, sname, ddir, dname, flags } => {
                let f = match flags {
                    12 | 17 => WHITEOUT,
                    13 => WHITEOUT | NOREPLACE,
                    14 => RFLAGS[3],
                    15 => 8,
                    16 => EXCHANGE | WHITEOUT,
                    f => RFLAGS[f as usize % 3],
                };
                self.rename(self.dir(sdir), NAMES[sname as usize], self.dir(ddir), NAMES[dname as usize], f)
            }
            Op::Link { sdir, sname, ddir, dname } => {
                if let Some(ino) = self.lookup(self.dir(sdir), NAMES[sname as usize]) {
                    self.link(ino, self.dir(ddir), NAMES[dname as usize]);
                }
            }
            Op::Fallocate { dir, name, mode, off, len } => {
                if let Some(ino) = self.lookup(self.dir(dir), NAMES[name as usize]) {
                    let mode = FALLOC_MODES[mode as usize % FALLOC_MODES.len()];
                    self.fallocate(ino, mode, g.off(off), g.len(len));
                }
            }
            Op::Copy { sdir, sname, ddir, dname, off_in, off_out, len } => {
                let s = self.lookup(self.dir(sdir), NAMES[sname as usize]);
                let d = self.lookup(self.dir(ddir), NAMES[dname as usize]);
                if let (Some(s), Some(d)) = (s, d) {
                    self.copy(s, g.off(off_in), d, g.off(off_out), g.len(len));
                }
            }
            Op::Clone { sdir, sname, ddir, dname, k_in, k_out, skew, len } => {
                // Both files made if missing (a clone needs two).
                for (dir, name) in [(sdir, sname), (ddir, dname)] {
                    let dir = self.dir(dir);
                    if self.lookup(dir, NAMES[name as usize]).is_none() {
                        self.make(dir, NAMES[name as usize], Kind::File(Vec::new()));
                    }
                }
                let s = self.lookup(self.dir(sdir), NAMES[sname as usize]);
                let d = self.lookup(self.dir(ddir), NAMES[dname as usize]);
                if let (Some(s), Some(d)) = (s, d) {
                    // Mostly on the sector boundary (a clone of whole sectors).
                    let skew = if skew < 160 { 0 } else { u64::from(skew) % g.ss };
                    // Whole pages apart, mostly (clones at offsets equal
                    // modulo the page but not the sector).
                    let ps = if g.ps == 0 { g.ss.min(4096) } else { g.ps as u64 };
                    let ks = 3 * g.ss / ps + 1;
                    let (k_in, k_out) = (u64::from(k_in) % ks, u64::from(k_out) % ks);
                    let (off_in, off_out) = (k_in * ps + skew, k_out * ps + skew);
                    // Mostly over whole sectors of data first (random
                    // writes rarely leave any), bytes that say where they are.
                    if len % 4 != 0 && matches!(self.nodes[&s].kind, Kind::File(_)) {
                        let data: Vec<u8> =
                            (0..3 * g.ss + ps).map(|i| (i as u8).wrapping_mul(7) ^ skew as u8).collect();
                        self.write(s, 0, &data);
                    }
                    self.copy(s, off_in, d, off_out, u64::from(len) % (6 * g.ss + 1));
                }
            }
            Op::SetXattr { dir, name, x, vlen, flags } => {
                if let Some(ino) = self.lookup(self.dir(dir), NAMES[name as usize]) {
                    self.setxattr(ino, x, vlen, flags);
                }
            }
            Op::RemoveXattr { dir, name, x } => {
                if let Some(ino) = self.lookup(self.dir(dir), NAMES[name as usize]) {
                    self.removexattr(ino, x);
                }
            }
            Op::Open { dir, name } => {
                if let Some(ino) = self.lookup(self.dir(dir), NAMES[name as usize]) {
                    if matches!(self.nodes[&ino].kind, Kind::File(_)) {
                        let a = self.e.open(ino).unwrap();
                        assert_eq!(a.size, self.file_len(ino));
                        self.nodes.get_mut(&ino).unwrap().opens += 1;
                        self.handles.push(ino);
                    }
                }
            }
            Op::Release { h } => {
                if !self.handles.is_empty() {
                    let ino = self.handles.remove(h as usize % self.handles.len());
                    self.e.release(ino);
                    self.nodes.get_mut(&ino).unwrap().opens -= 1;
                    self.settle(ino);
                    if !self.nodes.contains_key(&ino) {
                        assert_eq!(self.e.getattr(ino), Err(Error::NotFound), "step {}: orphan freed", self.step);
                    }
                }
            }
            Op::WriteH { h, off, len, byte } => {
                if let Some(ino) = self.handle(h) {
                    self.write(ino, g.off(off), &Self::bytes(g.len(len), byte));
                }
            }
            Op::ReadH { h, off, len } => {
                if let Some(ino) = self.handle(h) {
                    self.read(ino, g.off(off), g.len(len));
                }
            }
            Op::TruncH { h, size } => {
                if let Some(ino) = self.handle(h) {
                    self.truncate(ino, u64::from(size) % (g.max_size() + 3));
                }
            }
            Op::Tmpfile { dir } => {
                let want = if self.inodes() >= g.max_inodes { Err(Error::NoInodes) } else { Ok(()) };
                match (self.e.tmpfile(self.dir(dir), 0o600, 0, 0), want) {
                    (Ok(a), Ok(())) => {
                        self.e.forget(a.ino, 1);
                        self.nodes
                            .insert(a.ino, MNode { kind: Kind::File(Vec::new()), xattrs: BTreeMap::new(), opens: 1 });
                        self.handles.push(a.ino);
                    }
                    (got, want) => assert_eq!(got.map(|_| ()), want, "step {}: tmpfile", self.step),
                }
            }
            Op::LinkH { h, ddir, dname } => {
                if let Some(ino) = self.handle(h) {
                    self.link(ino, self.dir(ddir), NAMES[dname as usize]);
                }
            }
        }
    }

    /// The whole engine state equals the model.
    fn check(&self) {
        let s = self.step;
        let mut blocks = 0u64;
        let mut files = 0u64;
        for (&ino, node) in &self.nodes {
            let a = self.e.getattr(ino).unwrap_or_else(|e| panic!("step {s}: getattr {ino}: {e:?}"));
            assert_eq!(a.kind, self.ftype(ino), "step {s}: kind of {ino}");
            assert_eq!(a.nlink, self.nlink(ino), "step {s}: nlink of {ino}");
            let xl: Vec<u8> = node.xattrs.keys().flat_map(|k| k.iter().copied().chain([0])).collect();
            assert_eq!(self.e.listxattr(ino).unwrap(), xl, "step {s}: xattrs of {ino}");
            match &node.kind {
                Kind::File(d) => {
                    assert_eq!(a.size, d.len() as u64, "step {s}: size of {ino}");
                    let mut buf = vec![0x5A; d.len() + 3];
                    let n = self.e.read(ino, 0, &mut buf).unwrap();
                    assert_eq!(n, d.len(), "step {s}: read length of {ino}");
                    assert!(buf[..n] == d[..], "step {s}: content of {ino}");
                    blocks += a.blocks * 512;
                    files += 1;
                }
                Kind::Dir { parent, entries } => {
                    let mut got = BTreeMap::new();
                    let mut dots = Vec::new();
                    self.e
                        .readdir(ino, 0, |d| {
                            if d.name == b"." || d.name == b".." {
                                dots.push(d.ino);
                            } else {
                                let dup = got.insert(d.name.to_vec(), (d.ino, d.kind));
                                assert!(dup.is_none(), "step {s}: duplicate entry");
                            }
                            true
                        })
                        .unwrap();
                    assert_eq!(dots, vec![ino, *parent], "step {s}: dots of {ino}");
                    let want: BTreeMap<_, _> = entries.iter().map(|(n, &i)| (n.clone(), (i, self.ftype(i)))).collect();
                    assert_eq!(got, want, "step {s}: entries of {ino}");
                }
                Kind::Fifo => assert_eq!(a.size, 0),
                Kind::Whiteout => assert_eq!((a.size, a.perm, a.rdev), (0, 0, 0)),
            }
        }
        let st = self.e.stats();
        assert_eq!(st.inodes, self.inodes(), "step {s}: inode count");
        assert!(st.pool.used <= self.g.limit, "step {s}: used {} over the limit {}", st.pool.used, self.g.limit);
        // Memory is exactly what live files hold (st_blocks rounds each up
        // to 512, and counts a page shared by clones once per holder).
        let held =
            st.pool.used - st.pool.shared_extra * engine::sector::SLOT_COST + st.pool.shared_extra * st.pool.page_size;
        assert!(held <= blocks, "step {s}: used {} (+ shared) > held {blocks}: leak", st.pool.used);
        assert!(blocks < held + 512 * files.max(1), "step {s}: held {blocks} vs used {}", st.pool.used);
        let logical: u64 =
            self.nodes.values().map(|n| if let Kind::File(d) = &n.kind { d.len() as u64 } else { 0 }).sum();
        assert_eq!(st.logical_bytes, logical, "step {s}: logical bytes");
    }

    /// Deletes everything and checks that every inode and byte is back.
    fn teardown(&mut self) {
        support::remove_tree(&self.e, ROOT);
        for ino in std::mem::take(&mut self.handles) {
            self.e.release(ino);
        }
        support::assert_empty(&self.e);
    }
}

fn run(g: Geom, ops: &[Op]) {
    let mut h = Harness::new(g);
    for (i, op) in ops.iter().enumerate() {
        h.step = i;
        h.apply(op);
        h.check();
    }
    h.teardown();
}

fn cfg() -> ProptestConfig {
    // 256 cases unless PROPTEST_CASES says otherwise.
    ProptestConfig { max_shrink_iters: 20_000, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn model_ss16_sectors_only(ops in proptest::collection::vec(op(), 1..80)) {
        run(Geom { ss: 16, ps: 0, inline: 0, limit: 24 * 16, max_inodes: 1 << 20 }, &ops);
    }

    #[test]
    fn model_ss16_inline8_few_inodes(ops in proptest::collection::vec(op(), 1..80)) {
        run(Geom { ss: 16, ps: 0, inline: 8, limit: 20 * 16, max_inodes: 12 }, &ops);
    }

    #[test]
    fn model_ss64_inline64(ops in proptest::collection::vec(op(), 1..80)) {
        run(Geom { ss: 64, ps: 0, inline: 64, limit: 30 * 64, max_inodes: 1 << 20 }, &ops);
    }

    #[test]
    fn model_ss16_unlimited(ops in proptest::collection::vec(op(), 1..80)) {
        // No memory pressure: NoSpace must never happen (`need` is far below).
        run(Geom { ss: 16, ps: 0, inline: 8, limit: 1 << 30, max_inodes: 1 << 20 }, &ops);
    }

    #[test]
    fn model_ss64_pages16(ops in proptest::collection::vec(op(), 1..80)) {
        // Four pages a sector: clones at offsets equal modulo the page but
        // not the sector (issue 20), copy-on-write of one page of a sector.
        run(Geom { ss: 64, ps: 16, inline: 16, limit: 40 * 64, max_inodes: 1 << 20 }, &ops);
    }

    #[test]
    fn model_4k(ops in proptest::collection::vec(op(), 1..60)) {
        run(Geom { ss: 4096, ps: 0, inline: 1024, limit: 16 * 4096, max_inodes: 1 << 20 }, &ops);
    }
}
