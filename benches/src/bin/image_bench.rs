//! Images (issue 21): how fast a whole engine is saved to a file and loaded
//! back, beside baselines on the same machine in the same run.
//!
//! Two trees, each built once in an engine and once as real files on tmpfs
//! (`/dev/shm`):
//! * `large`: 4 files of 256 MiB (1 GiB), 64 KiB sectors;
//! * `small`: 100,000 files of 1 KiB in 1,000 directories.
//!
//! For each target directory (`--dir DIR`, repeatable; default `/dev/shm`
//! and `/var/tmp`) and each round (`--rounds N`, default 3) it times:
//! * `save`: `Engine::snapshot` + `Snapshot::write_to` a temporary file
//!   through `ImageWriter` (`O_DIRECT` where DIR takes it), `fsync`,
//!   `rename` over the last round's image (held open, and closed on a
//!   thread after), `fsync` of the directory (what `sectorfs save` does);
//! * `load`: `Engine::load_image` from that file through `ImageReader`
//!   (which drops what it has read from the page cache), as the save left
//!   it: on a disk, not in the page cache (as at boot);
//! * baselines: `raw write` (the image's bytes from one buffer, 4 MiB
//!   writes, `fsync`), the same with `O_DIRECT` (the disk's own speed),
//!   `raw read` (of the `O_DIRECT` one into one 4 MiB buffer: from the
//!   disk), `raw read into new memory` (the same file again, now in the page
//!   cache, in one read into a buffer of the file's size never touched
//!   before: the page faults any loader pays), `tar -cf` of the tmpfs tree into DIR
//!   (`fsync`ed), `tar -xf` of it into a fresh tmpfs directory, `cp -a` of
//!   the tmpfs tree to another tmpfs directory;
//! * with `--zstd`: `zstd -1 -T0` of the image (does compression pay?).
//!
//! It prints the median of the rounds, as MiB/s of file data or files/s (for
//! save and load also the best and worst round), and the ratio of save and
//! load to each baseline. `--quick` cuts the trees by 8.
//! With `IMAGE_BENCH_PHASES=1` in the environment it also prints each
//! round's save in parts (write, `fsync`, `rename`) and each load.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use engine::image::{ImageReader, ImageWriter, WRITE_ALIGN};
use engine::{Config, Engine, ROOT};

struct Tree {
    name: &'static str,
    files: u64,
    data: u64,
    engine: Engine,
    on_tmpfs: PathBuf,
}

fn build_large(scale: u64) -> Tree {
    let per = (256u64 << 20) / scale;
    let e = Engine::new(Config { max_bytes: 4 << 30, max_inodes: 1 << 20, ..Config::default() }).unwrap();
    let dir = tmpfs_dir("large");
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..4u64 {
        let name = format!("f{i}");
        let ino = e.create(ROOT, name.as_bytes(), 0o644, 0, 0).unwrap().ino;
        let mut f = std::fs::File::create(dir.join(&name)).unwrap();
        let mut off = 0;
        while off < per {
            for (j, b) in buf.iter_mut().enumerate() {
                *b = (j as u64 * 31 + off / 4096 + i) as u8;
            }
            e.write(ino, off, &buf).unwrap();
            f.write_all(&buf).unwrap();
            off += buf.len() as u64;
        }
    }
    Tree { name: "large", files: 4, data: 4 * per, engine: e, on_tmpfs: dir }
}

fn build_small(scale: u64) -> Tree {
    let n = 100_000 / scale;
    let e = Engine::new(Config { max_bytes: 4 << 30, max_inodes: 1 << 20, ..Config::default() }).unwrap();
    let dir = tmpfs_dir("small");
    let body: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    let dirs = (n / 100).max(1);
    let mut inos = Vec::new();
    for d in 0..dirs {
        let name = format!("d{d}");
        inos.push(e.mkdir(ROOT, name.as_bytes(), 0o755, 0, 0).unwrap().ino);
        std::fs::create_dir(dir.join(&name)).unwrap();
    }
    for i in 0..n {
        let d = i % dirs;
        let name = format!("file{i}");
        let ino = e.create(inos[d as usize], name.as_bytes(), 0o644, 0, 0).unwrap().ino;
        e.write(ino, 0, &body).unwrap();
        std::fs::write(dir.join(format!("d{d}")).join(&name), &body).unwrap();
    }
    Tree { name: "small", files: n + dirs, data: n * 1024, engine: e, on_tmpfs: dir }
}

fn tmpfs_dir(what: &str) -> PathBuf {
    let p = PathBuf::from(format!("/dev/shm/sectorfs-image-bench.{}.{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn fsync_dir(d: &Path) {
    std::fs::File::open(d).unwrap().sync_all().unwrap();
}

fn save(e: &Engine, path: &Path) -> (Duration, Duration, u64) {
    let t0 = Instant::now();
    let tmp = path.with_extension("tmp");
    let f = std::fs::File::create(&tmp).unwrap();
    let snap = e.snapshot();
    let held = snap.held();
    let r = snap.write_to(ImageWriter::new(&f), &[]).unwrap();
    drop(snap);
    let t1 = Instant::now();
    f.sync_all().unwrap();
    let t2 = Instant::now();
    // As the daemon: the replaced image's blocks are freed on a thread.
    let replaced = std::fs::File::open(path).ok();
    std::fs::rename(&tmp, path).unwrap();
    fsync_dir(path.parent().unwrap());
    std::thread::spawn(move || drop(replaced));
    if std::env::var_os("IMAGE_BENCH_PHASES").is_some() {
        eprintln!("phases: write {:?} fsync {:?} rename {:?}", t1 - t0, t2 - t1, t2.elapsed());
    }
    (t0.elapsed(), held, r.image_bytes)
}

fn load(path: &Path) -> Duration {
    let t0 = Instant::now();
    let f = std::fs::File::open(path).unwrap();
    let e = Engine::load_image(ImageReader::new(f), |i| Ok(i.config.clone())).unwrap();
    let t = t0.elapsed();
    drop(e);
    if std::env::var_os("IMAGE_BENCH_PHASES").is_some() {
        eprintln!("phases: load {t:?}");
    }
    t
}

/// `bytes` from a 4 MiB buffer, through the page cache or (`direct`) past
/// it where the file system allows.
fn raw_write(path: &Path, bytes: u64, direct: bool) -> Duration {
    let mem = vec![0x5au8; (4 << 20) + WRITE_ALIGN];
    let at = mem.as_ptr().addr().wrapping_neg() % WRITE_ALIGN;
    let buf = &mem[at..at + (4 << 20)];
    let t0 = Instant::now();
    let f = std::fs::File::create(path).unwrap();
    let mut w: Box<dyn Write> = if direct { Box::new(ImageWriter::new(&f)) } else { Box::new(&f) };
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        w.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
    t0.elapsed()
}

fn raw_read(path: &Path) -> Duration {
    let mut buf = vec![0u8; 4 << 20];
    let t0 = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    while f.read(&mut buf).unwrap() > 0 {}
    t0.elapsed()
}

/// A read into memory never touched before (what a loader must fill).
fn raw_read_fresh(path: &Path) -> Duration {
    let t0 = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    let mut v = vec![0u8; f.metadata().unwrap().len() as usize];
    f.read_exact(&mut v).unwrap();
    let t = t0.elapsed();
    drop(v);
    t
}

fn timed(cmd: &mut Command) -> Duration {
    let t0 = Instant::now();
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?}");
    t0.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut dirs = Vec::new();
    let mut rounds = 3;
    let mut scale = 1;
    let mut zstd = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dirs.push(PathBuf::from(args.next().expect("--dir DIR"))),
            "--rounds" => rounds = args.next().and_then(|n| n.parse().ok()).expect("--rounds N"),
            "--quick" => scale = 8,
            "--zstd" => zstd = true,
            _ => panic!("usage: image_bench [--dir DIR]... [--rounds N] [--quick] [--zstd]"),
        }
    }
    if dirs.is_empty() {
        dirs = vec![PathBuf::from("/dev/shm"), PathBuf::from("/var/tmp")];
    }
    println!("image_bench: {rounds} rounds, median; file data MiB/s or files/s; ratios: this / baseline");
    for build in [build_large as fn(u64) -> Tree, build_small] {
        let tree = build(scale);
        let unit = |d: Duration| -> f64 {
            if tree.name == "large" {
                tree.data as f64 / (1 << 20) as f64 / d.as_secs_f64()
            } else {
                tree.files as f64 / d.as_secs_f64()
            }
        };
        let u = if tree.name == "large" { "MiB/s" } else { "files/s" };
        for dir in &dirs {
            let work = dir.join(format!("sectorfs-image-bench.{}", std::process::id()));
            std::fs::create_dir_all(&work).unwrap();
            let img = work.join("img");
            let (mut sv, mut ld, mut rw, mut rd, mut rr, mut rf, mut tc, mut tx, mut cp, mut held, mut zs) =
                (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
            let mut size = 0;
            for _ in 0..rounds {
                let (t, h, n) = save(&tree.engine, &img);
                sv.push(t);
                held.push(h);
                size = n;
                ld.push(load(&img));
                let raw = work.join("raw");
                rw.push(raw_write(&raw, size, false));
                std::fs::remove_file(&raw).unwrap();
                rd.push(raw_write(&raw, size, true));
                rr.push(raw_read(&raw));
                rf.push(raw_read_fresh(&raw));
                std::fs::remove_file(&raw).unwrap();
                let tar = work.join("t.tar");
                tc.push(timed(Command::new("sh").arg("-c").arg(format!(
                    "tar -cf {} -C {} . && sync -f {}",
                    tar.display(),
                    tree.on_tmpfs.display(),
                    tar.display()
                ))));
                let out = tmpfs_dir("untar");
                tx.push(timed(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&out)));
                std::fs::remove_dir_all(&out).unwrap();
                std::fs::remove_file(&tar).unwrap();
                let copy = tmpfs_dir("copy");
                cp.push(timed(Command::new("cp").arg("-a").arg(format!("{}/.", tree.on_tmpfs.display())).arg(&copy)));
                std::fs::remove_dir_all(&copy).unwrap();
                if zstd {
                    let z = work.join("img.zst");
                    zs.push(timed(Command::new("zstd").args(["-q", "-1", "-T0", "-f"]).arg(&img).arg("-o").arg(&z)));
                    std::fs::remove_file(&z).unwrap();
                }
            }
            // Best and worst beside the median: on a VM the rounds that got
            // warm memory and those that got fresh memory differ up to 3x.
            let spread = |v: &[Duration]| {
                let best = v.iter().min().copied().unwrap_or_default();
                let worst = v.iter().max().copied().unwrap_or_default();
                format!("best {:.0}, worst {:.0}", unit(best), unit(worst))
            };
            let (save_spread, load_spread) = (spread(&sv), spread(&ld));
            let (s, l) = (median(sv), median(ld));
            println!(
                "\n{} tree ({} files, {} MiB of data, image {} MiB) -> {}",
                tree.name,
                tree.files,
                tree.data >> 20,
                size >> 20,
                dir.display()
            );
            println!(
                "  save {:>9.0} {u} ({:.3} s; {save_spread}; writers held off {:.1} ms)",
                unit(s),
                s.as_secs_f64(),
                median(held).as_secs_f64() * 1e3
            );
            println!("  load {:>9.0} {u} ({:.3} s; {load_spread})", unit(l), l.as_secs_f64());
            for (name, v, ours) in [
                ("raw write+fsync", median(rw), s),
                ("raw write O_DIRECT+fsync", median(rd), s),
                ("tar -cf (tmpfs tree) +fsync", median(tc), s),
                ("raw read", median(rr), l),
                ("raw read into new memory", median(rf), l),
                ("tar -xf into tmpfs", median(tx), l),
                ("cp -a tmpfs to tmpfs", median(cp), s),
            ] {
                println!(
                    "  {name:<28} {:>9.0} {u} ({:.3} s)  {} / it = {:.2}x",
                    unit(v),
                    v.as_secs_f64(),
                    if ours == s { "save" } else { "load" },
                    v.as_secs_f64() / ours.as_secs_f64()
                );
            }
            if zstd {
                let z = median(zs);
                println!("  zstd -1 -T0 of the image    {:>9.0} {u} ({:.3} s)", unit(z), z.as_secs_f64());
            }
            std::fs::remove_dir_all(&work).unwrap();
        }
        std::fs::remove_dir_all(&tree.on_tmpfs).unwrap();
    }
}
