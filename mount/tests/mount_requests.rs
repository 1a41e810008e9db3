//! Round trips: how many FUSE requests each user operation costs, read from
//! the daemon's per-opcode counters (`req_*` in `sectorfs stats --json`).
//! The table it prints is the one in `docs/BENCHMARKS.md`; the assertions
//! keep each operation at or under today's count, so a change that adds a
//! round trip fails here. Counts depend on the kernel's caching (one kernel
//! here: 6.18), not on timing.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::process::Command;

use common::*;

/// The request counters of the mount.
fn requests(m: &Mount) -> BTreeMap<String, u64> {
    let out = Command::new(BIN).arg("stats").arg(&m.path).arg("--json").output().unwrap();
    assert!(out.status.success());
    let json = String::from_utf8(out.stdout).unwrap();
    let v: BTreeMap<String, u64> = json
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            let k = k.trim().trim_matches('"').strip_prefix("req_")?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect();
    assert!(v.contains_key("lookup") && v.contains_key("write"), "no request counters in {json}");
    v
}

/// Runs `f` `n` times and returns the requests per run, by opcode (the
/// `stats` call's own GETXATTR taken out), and the total.
fn per_op(m: &Mount, n: u64, mut f: impl FnMut(u64)) -> (BTreeMap<String, f64>, f64) {
    let a = requests(m);
    for i in 0..n {
        f(i);
    }
    let mut b = requests(m);
    *b.get_mut("getxattr").unwrap() -= 1;
    let d: BTreeMap<String, f64> =
        b.iter().filter(|(k, v)| **v != a[*k]).map(|(k, v)| (k.clone(), (v - a[k]) as f64 / n as f64)).collect();
    let total = d.values().sum::<f64>().max(0.0);
    (d, total)
}

fn show(name: &str, (d, total): &(BTreeMap<String, f64>, f64)) {
    let mut items: Vec<_> = d.iter().collect();
    items.sort_by(|a, b| b.1.total_cmp(a.1));
    let items: Vec<String> = items.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
    eprintln!("| {name} | {total:.2} | {} |", items.join(", "));
}

#[test]
fn requests_per_user_operation() {
    let Some(m) = Mount::new(&["--size", "256M", "--cache", "direct"]) else { return };
    fs::create_dir(m.p("d")).unwrap();
    let data = vec![7u8; 4096];
    let n = 200;
    eprintln!("| operation (default mode) | requests | by opcode |");
    eprintln!("|---|---|---|");

    let create = per_op(&m, n, |i| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(m.p(&format!("d/f{i}"))).unwrap();
        f.write_all(&data).unwrap();
    });
    show("create + write 4 KiB + close", &create);
    let stat1 = per_op(&m, n, |i| {
        fs::symlink_metadata(m.p(&format!("d/f{i}"))).unwrap();
    });
    show("stat, first after the write", &stat1);
    let stat2 = per_op(&m, n, |i| {
        fs::symlink_metadata(m.p(&format!("d/f{i}"))).unwrap();
    });
    show("stat again", &stat2);
    let read = per_op(&m, n, |i| {
        let mut f = File::open(m.p(&format!("d/f{i}"))).unwrap();
        let mut buf = vec![0u8; 4096];
        f.read_exact(&mut buf).unwrap();
    });
    show("open + read 4 KiB + close", &read);
    let trunc = per_op(&m, n, |i| {
        drop(OpenOptions::new().write(true).truncate(true).open(m.p(&format!("d/f{i}"))).unwrap());
    });
    show("open(O_TRUNC) existing + close", &trunc);
    let rename = per_op(&m, n, |i| fs::rename(m.p(&format!("d/f{i}")), m.p(&format!("d/g{i}"))).unwrap());
    show("rename", &rename);
    let unlink = per_op(&m, n, |i| fs::remove_file(m.p(&format!("d/g{i}"))).unwrap());
    show("unlink", &unlink);
    let mkdir = per_op(&m, n, |i| fs::create_dir(m.p(&format!("d/m{i}"))).unwrap());
    show("mkdir", &mkdir);
    fs::create_dir(m.p("big")).unwrap();
    for i in 0..1000 {
        File::create(m.p(&format!("big/e{i:04}"))).unwrap();
    }
    let readdir = per_op(&m, 10, |_| assert_eq!(fs::read_dir(m.p("big")).unwrap().count(), 1000));
    show("readdir of 1,000 entries", &readdir);
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.p("w")).unwrap();
    // A page-aligned 1 MiB buffer: one request (an unaligned one spans 257
    // pages and the kernel splits it at its 256-page limit).
    let big = Aligned::new(1 << 20, 0);
    let mib = per_op(&m, 20, |_| f.write_all_at(big.as_ref(), 0).unwrap());
    show("1 MiB write (aligned buffer)", &mib);
    let small = per_op(&m, n, |i| f.write_all_at(&data, (i % 256) * 4096).unwrap());
    show("4 KiB write", &small);

    // Today's counts on this kernel, as ceilings (a small margin for the
    // kernel's own cache decisions, e.g. a dentry evicted under pressure).
    let at_most = |name: &str, got: &(BTreeMap<String, f64>, f64), max: f64| {
        assert!(got.1 <= max + 0.05, "{name}: {:.2} requests per operation (at most {max}): {:?}", got.1, got.0);
    };
    at_most("create + write + close", &create, 5.0);
    at_most("stat again", &stat2, 0.0);
    at_most("open + read + close", &read, 3.0);
    at_most("rename", &rename, 3.0);
    at_most("unlink", &unlink, 3.0);
    at_most("mkdir", &mkdir, 3.0);
    at_most("1 MiB write", &mib, 1.0);
    at_most("4 KiB write", &small, 1.0);
    // The truncate of an O_TRUNC open is a SETATTR, under the inode's lock
    // (not FUSE_ATOMIC_O_TRUNC: mount_datapath::o_trunc_beside_an_appender).
    at_most("open(O_TRUNC) existing + close", &trunc, 4.0);
    assert_eq!(trunc.0.get("setattr").copied(), Some(1.0), "O_TRUNC open: {:?}", trunc.0);
    // OPENDIR and RELEASEDIR with each listing (no FUSE_NO_OPENDIR_SUPPORT:
    // mount_ops::an_open_listing_sees_deletions).
    at_most("readdir of 1,000 entries", &readdir, 6.0);
}
