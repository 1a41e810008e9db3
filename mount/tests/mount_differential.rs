//! Differential test: one seeded random sequence of file system operations
//! applied to a sectorfs mount and to a directory on tmpfs (`/dev/shm`).
//! Every result (value or errno) and the final trees (names, types, sizes,
//! modes, contents, link counts, symlink targets, xattrs) must match.
//!
//! A sequential phase runs first, then several threads at once, each in its
//! own subtree plus disjoint stripes of one shared file and distinct names in
//! one shared directory, so that results do not depend on the interleaving.
//! Set `SECTORFS_DIFF_SEED` and `SECTORFS_DIFF_OPS` to reproduce or extend.
#![cfg(target_os = "linux")]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use common::*;

/// splitmix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write { p: String, off: u64, len: usize, byte: u8, append: bool },
    Read { p: String, off: u64, len: usize },
    Truncate { p: String, len: u64 },
    CreateExcl { p: String },
    Mkdir { p: String, mode: u32 },
    Rmdir { p: String },
    Unlink { p: String },
    Rename { a: String, b: String, flags: u32 },
    Link { a: String, b: String },
    Symlink { target: String, p: String },
    Readlink { p: String },
    Mkfifo { p: String },
    Chmod { p: String, mode: u32 },
    SetXattr { p: String, name: String, value: Vec<u8>, flags: i32 },
    GetXattr { p: String, name: String },
    ListXattr { p: String },
    RemoveXattr { p: String, name: String },
    Stat { p: String },
    Readdir { p: String },
    Fallocate { p: String, mode: i32, off: u64, len: u64 },
    Copy { a: String, b: String, off_a: u64, off_b: u64, len: usize },
}

type Outcome = Result<String, i32>;

fn os_err(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// FNV-1a of a byte string, to report contents compactly.
fn hash(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3))
}

fn kind_of(md: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    }
}

fn describe(md: &fs::Metadata) -> String {
    let size = if md.is_dir() { 0 } else { md.len() };
    format!("{} size={} mode={:o} nlink={}", kind_of(md), size, md.mode() & 0o7777, md.nlink())
}

/// Opens read-only without blocking on a FIFO (a FIFO opened for writing
/// without a reader fails with ENXIO on both file systems instead).
fn ro(p: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(p)
}

fn apply(root: &Path, op: &Op) -> Outcome {
    let p = |s: &str| root.join(s);
    let r: std::io::Result<String> = (|| match op {
        Op::Write { p: f, off, len, byte, append } => {
            let data: Vec<u8> = (0..*len).map(|i| byte.wrapping_add((i % 251) as u8)).collect();
            if *append {
                let mut fh = OpenOptions::new()
                    .custom_flags(libc::O_NONBLOCK)
                    .append(true)
                    .create(true)
                    .mode(0o644)
                    .open(p(f))?;
                fh.write_all(&data)?;
            } else {
                let fh = OpenOptions::new()
                    .custom_flags(libc::O_NONBLOCK)
                    .write(true)
                    .create(true)
                    .mode(0o644)
                    .open(p(f))?;
                fh.write_all_at(&data, *off)?;
            }
            Ok(format!("wrote {len}"))
        }
        Op::Read { p: f, off, len } => {
            let fh = ro(&p(f))?;
            let mut buf = vec![0u8; *len];
            let mut got = 0;
            while got < buf.len() {
                let n = fh.read_at(&mut buf[got..], off + got as u64)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            Ok(format!("read {got} {:x}", hash(&buf[..got])))
        }
        Op::Truncate { p: f, len } => {
            OpenOptions::new().custom_flags(libc::O_NONBLOCK).write(true).open(p(f))?.set_len(*len)?;
            Ok(String::new())
        }
        Op::CreateExcl { p: f } => {
            OpenOptions::new().custom_flags(libc::O_NONBLOCK).write(true).create_new(true).mode(0o640).open(p(f))?;
            Ok(String::new())
        }
        Op::Mkdir { p: d, mode } => {
            fs::create_dir(p(d))?;
            fs::set_permissions(p(d), fs::Permissions::from_mode(*mode))?;
            Ok(String::new())
        }
        Op::Rmdir { p: d } => fs::remove_dir(p(d)).map(|_| String::new()),
        Op::Unlink { p: f } => fs::remove_file(p(f)).map(|_| String::new()),
        Op::Rename { a, b, flags } => renameat2(&p(a), &p(b), *flags).map(|_| String::new()),
        Op::Link { a, b } => fs::hard_link(p(a), p(b)).map(|_| String::new()),
        Op::Symlink { target, p: l } => std::os::unix::fs::symlink(target, p(l)).map(|_| String::new()),
        Op::Readlink { p: l } => fs::read_link(p(l)).map(|t| t.display().to_string()),
        Op::Mkfifo { p: f } => mknod(&p(f), libc::S_IFIFO | 0o600, 0).map(|_| String::new()),
        Op::Chmod { p: f, mode } => fs::set_permissions(p(f), fs::Permissions::from_mode(*mode)).map(|_| String::new()),
        Op::SetXattr { p: f, name, value, flags } => setxattr(&p(f), name, value, *flags).map(|_| String::new()),
        Op::GetXattr { p: f, name } => getxattr(&p(f), name).map(|v| format!("{v:?}")),
        Op::ListXattr { p: f } => listxattr(&p(f)).map(|v| v.join(",")),
        Op::RemoveXattr { p: f, name } => removexattr(&p(f), name).map(|_| String::new()),
        Op::Stat { p: f } => fs::symlink_metadata(p(f)).map(|md| describe(&md)),
        Op::Readdir { p: d } => {
            let mut names = Vec::new();
            for e in fs::read_dir(p(d))? {
                names.push(e?.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            Ok(names.join(","))
        }
        Op::Fallocate { p: f, mode, off, len } => {
            let fh = OpenOptions::new().custom_flags(libc::O_NONBLOCK).write(true).open(p(f))?;
            fallocate(&fh, *mode, *off as i64, *len as i64)?;
            Ok(String::new())
        }
        Op::Copy { a, b, off_a, off_b, len } => {
            let fa = ro(&p(a))?;
            let fb = OpenOptions::new().custom_flags(libc::O_NONBLOCK).write(true).open(p(b))?;
            copy_file_range(&fa, *off_a as i64, &fb, *off_b as i64, *len).map(|n| format!("copied {n}"))
        }
    })();
    r.map_err(os_err)
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn gen_path(rng: &mut Rng, prefix: &str) -> String {
    let depth = match rng.below(10) {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    let mut s = prefix.to_string();
    for _ in 0..depth {
        if !s.is_empty() {
            s.push('/');
        }
        let name: &&str = rng.pick(&NAMES);
        s.push_str(name);
    }
    s
}

fn gen_op(rng: &mut Rng, prefix: &str) -> Op {
    let p = gen_path(rng, prefix);
    let xname = || ["user.x", "user.y", "user.long.attribute.name"];
    match rng.below(100) {
        0..=17 => {
            let big = rng.chance(5);
            let len = if big { rng.below(1 << 20) as usize + 1 } else { rng.below(70_000) as usize };
            let off = if rng.chance(50) { 0 } else { rng.below(300_000) };
            Op::Write { p, off, len, byte: rng.next() as u8, append: rng.chance(15) }
        }
        18..=27 => Op::Read { p, off: rng.below(200_000), len: rng.below(150_000) as usize + 1 },
        28..=31 => Op::Truncate { p, len: if rng.chance(30) { 0 } else { rng.below(400_000) } },
        32..=34 => Op::CreateExcl { p },
        35..=42 => Op::Mkdir { p, mode: *rng.pick(&[0o755, 0o700, 0o1777, 0o2755]) },
        43..=46 => Op::Rmdir { p },
        47..=51 => Op::Unlink { p },
        52..=58 => {
            let flags = match rng.below(10) {
                0 => libc::RENAME_NOREPLACE,
                1 => libc::RENAME_EXCHANGE,
                _ => 0,
            };
            Op::Rename { a: p, b: gen_path(rng, prefix), flags }
        }
        59..=62 => Op::Link { a: p, b: gen_path(rng, prefix) },
        // Targets stay inside the tree: a write through a dangling link
        // creates its target, and the two roots' surroundings differ.
        63..=65 => Op::Symlink { target: rng.pick(&["a", "d/../b", "c/d", "b/c"]).to_string(), p },
        66..=67 => Op::Readlink { p },
        68 => Op::Mkfifo { p },
        69..=71 => Op::Chmod { p, mode: *rng.pick(&[0o644, 0o600, 0o755, 0o4755, 0o1777, 0o000]) },
        72..=75 => {
            let value: Vec<u8> = (0..rng.below(300)).map(|i| i as u8).collect();
            let flags = *rng.pick(&[0, 0, libc::XATTR_CREATE, libc::XATTR_REPLACE]);
            Op::SetXattr { p, name: rng.pick(&xname()).to_string(), value, flags }
        }
        76..=77 => Op::GetXattr { p, name: rng.pick(&xname()).to_string() },
        78..=79 => Op::ListXattr { p },
        80..=81 => Op::RemoveXattr { p, name: rng.pick(&xname()).to_string() },
        82..=89 => Op::Stat { p },
        90..=93 => Op::Readdir { p: if rng.chance(30) { prefix.to_string() } else { p } },
        94..=96 => {
            let mode =
                *rng.pick(&[0, libc::FALLOC_FL_KEEP_SIZE, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE]);
            // (tmpfs has no FALLOC_FL_ZERO_RANGE; mount_ops tests it.)
            Op::Fallocate { p, mode, off: rng.below(200_000), len: rng.below(200_000) + 1 }
        }
        _ => Op::Copy {
            a: p,
            b: gen_path(rng, prefix),
            off_a: rng.below(100_000),
            off_b: rng.below(100_000),
            len: rng.below(200_000) as usize,
        },
    }
}

/// A description of every node under `root`, one line each, sorted by path.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<String>) {
        let dir = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
        let mut names: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        for n in names {
            let r = if rel.is_empty() { n.clone() } else { format!("{rel}/{n}") };
            let full = root.join(&r);
            let md = fs::symlink_metadata(&full).unwrap();
            let mut line = format!("{r}: {}", describe(&md));
            if md.is_file() {
                line += &format!(" content={:x}", hash(&fs::read(&full).unwrap()));
            }
            if md.file_type().is_symlink() {
                line += &format!(" -> {}", fs::read_link(&full).unwrap().display());
            }
            if md.is_file() || md.is_dir() {
                for x in listxattr(&full).unwrap() {
                    line += &format!(" {x}={:x}", hash(&getxattr(&full, &x).unwrap()));
                }
            }
            out.push(line);
            if md.is_dir() {
                walk(root, &r, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Operations that succeeded and that failed (on both sides alike).
static OUTCOMES: [std::sync::atomic::AtomicU64; 2] =
    [std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)];

/// Applies `op` to both roots and insists on the same outcome.
fn both(reference: &Path, sfs: &Path, op: &Op, step: &str) {
    let want = apply(reference, op);
    let got = apply(sfs, op);
    if std::env::var_os("SECTORFS_DIFF_TRACE").is_some() {
        eprintln!("{step}: {op:?} -> {want:?}");
    }
    assert_eq!(got, want, "step {step}: {op:?}\n  sectorfs: {got:?}\n  tmpfs:    {want:?}");
    OUTCOMES[usize::from(got.is_err())].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn sectorfs_matches_tmpfs() {
    if !Path::new("/dev/shm").is_dir() {
        eprintln!("SKIP: /dev/shm is missing: no tmpfs to compare with");
        return;
    }
    let Some(m) = Mount::new(&["--size", "2G", "--threads", "4"]) else { return };
    let shm = tempfile::Builder::new().prefix("sectorfs-diff-").tempdir_in("/dev/shm").unwrap();
    let reference = shm.path();
    let seed = env_u64("SECTORFS_DIFF_SEED", 0x05ec_70f5);
    let n_seq = env_u64("SECTORFS_DIFF_OPS", 3000);
    eprintln!("differential seed {seed:#x}, {n_seq} sequential ops");

    // Phase 1: sequential.
    let mut rng = Rng(seed);
    for i in 0..n_seq {
        let op = gen_op(&mut rng, "");
        both(reference, &m.path, &op, &format!("seq {i}"));
    }
    assert_eq!(tree(&m.path), tree(reference), "trees differ after the sequential phase");

    // Phase 2: threads at once, in disjoint subtrees, plus disjoint stripes of
    // one shared file and distinct names in one shared directory.
    const THREADS: u64 = 3;
    const STRIPE: u64 = 100_000;
    for root in [reference, m.path.as_path()] {
        fs::create_dir(root.join("common")).unwrap();
        File::create(root.join("shared")).unwrap();
        for t in 0..THREADS {
            fs::create_dir(root.join(format!("t{t}"))).unwrap();
        }
    }
    let n_par = n_seq / 3;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (reference, sfs) = (reference, m.path.as_path());
            s.spawn(move || {
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x1234_5678_9abc_def1));
                let prefix = format!("t{t}");
                for i in 0..n_par {
                    let step = format!("thread {t} op {i}");
                    let op = match rng.below(100) {
                        0..=9 => {
                            let off = rng.below(STRIPE);
                            let len = rng.below(STRIPE - off) as usize;
                            let byte = rng.next() as u8;
                            Op::Write { p: "shared".into(), off: t * STRIPE + off, len, byte, append: false }
                        }
                        10..=14 => Op::Write {
                            p: format!("common/t{t}-{}", rng.below(20)),
                            off: rng.below(10_000),
                            len: rng.below(10_000) as usize,
                            byte: rng.next() as u8,
                            append: false,
                        },
                        15..=16 => Op::Unlink { p: format!("common/t{t}-{}", rng.below(20)) },
                        _ => gen_op(&mut rng, &prefix),
                    };
                    both(reference, sfs, &op, &step);
                }
            });
        }
    });
    let (a, b) = (tree(&m.path), tree(reference));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "first difference in the final trees");
    }
    assert_eq!(a.len(), b.len(), "final trees differ in length");
    let [ok, err] = &OUTCOMES;
    let (ok, err) = (ok.load(std::sync::atomic::Ordering::Relaxed), err.load(std::sync::atomic::Ordering::Relaxed));
    eprintln!("differential: {ok} ops succeeded and {err} failed alike; {} nodes match", a.len());
    assert!(ok >= err / 4, "too few operations succeed to test much: {ok} ok, {err} failed");
}
