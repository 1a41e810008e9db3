//! Clones on a real mount (issue 20): `cp` uses `copy_file_range`, which
//! the engine answers by sharing whole sectors between the two files: the
//! copy charges nothing until one side is written, and writing the copy
//! leaves the original as it was.
#![cfg(target_os = "linux")]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::Command;
use std::time::Instant;

use common::*;

const MIB: u64 = 1 << 20;

/// A 256 MiB file of a pattern that differs per MiB, written in 1 MiB steps.
fn write_pattern(path: &std::path::Path, mib: u64) {
    let mut f = File::create(path).unwrap();
    let mut chunk = vec![0u8; MIB as usize];
    for i in 0..mib {
        for (k, b) in chunk.iter_mut().enumerate() {
            *b = (k as u64).wrapping_mul(31).wrapping_add(i * 7) as u8;
        }
        f.write_all(&chunk).unwrap();
    }
}

/// Whether two files hold the same bytes (read in 1 MiB steps).
fn same(a: &std::path::Path, b: &std::path::Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Whether `path` holds [`write_pattern`]'s bytes except the one write the
/// test made into it.
fn same_prefix_pattern(path: &std::path::Path) -> bool {
    let mut f = File::open(path).unwrap();
    let mut chunk = vec![0u8; MIB as usize];
    for i in 0..256u64 {
        f.read_exact(&mut chunk).unwrap();
        for (k, &b) in chunk.iter().enumerate() {
            let at = i * MIB + k as u64;
            let want = (k as u64).wrapping_mul(31).wrapping_add(i * 7) as u8;
            if b != want && !(100 * MIB + 5..100 * MIB + 26).contains(&at) {
                return false;
            }
        }
    }
    true
}

#[test]
fn cp_of_256_mib_shares_its_sectors() {
    let Some(m) = Mount::new(&["--size", "1G"]) else { return };
    let (a, b) = (m.p("a"), m.p("b"));
    write_pattern(&a, 256);
    let used = m.stat("used_bytes");
    let start = Instant::now();
    let st = Command::new("cp").arg(&a).arg(&b).status().unwrap();
    let took = start.elapsed();
    assert!(st.success());
    eprintln!("cp of 256 MiB on the mount: {took:?}");
    let grew = m.stat("used_bytes").saturating_sub(used);
    assert!(grew < MIB, "cp charged {grew} bytes");
    assert_eq!(m.stat("shared_bytes"), 256 * MIB);
    assert!(same(&a, &b), "the copy differs");
    // Write the copy: the original stays; only the pages written are new.
    let mut f = OpenOptions::new().write(true).open(&b).unwrap();
    f.seek(SeekFrom::Start(100 * MIB + 5)).unwrap();
    f.write_all(b"written into the copy").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let before = m.stat("used_bytes");
    assert!(before - used <= 2 * 4096 + MIB, "one page copied, grew {}", before - used);
    let mut orig = vec![0u8; 21];
    let mut fa = File::open(&a).unwrap();
    fa.seek(SeekFrom::Start(100 * MIB + 5)).unwrap();
    fa.read_exact(&mut orig).unwrap();
    drop(fa);
    assert_ne!(&orig, b"written into the copy", "the original changed");
    assert!(!same(&a, &b));
    // Deleting the original frees only what the copy does not share.
    // (The daemon frees an unlinked file once the kernel forgets it: poll.)
    fs::remove_file(&a).unwrap();
    let start = Instant::now();
    while m.stat("shared_bytes") != 0 && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(m.stat("shared_bytes"), 0);
    let after = m.stat("used_bytes");
    assert!(after + MIB >= 256 * MIB && after <= 257 * MIB, "after deleting a: {after}");
    assert!(same_prefix_pattern(&b), "the copy lost data when the original went");
    fs::remove_file(&b).unwrap();
    let start = Instant::now();
    while m.stat("used_bytes") >= MIB && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(m.stat("used_bytes") < MIB, "used {} after deleting both", m.stat("used_bytes"));
}

/// The probe's case: on a 24 MiB disk, `cp` of a 10 MiB file fits (shared
/// pages); `fallocate` over the copy then gives it memory of its own, or
/// fails with ENOSPC where that does not fit, so that an overwrite of an
/// allocated range never fails for lack of space.
#[test]
fn fallocate_over_a_copy_makes_its_overwrites_safe() {
    let Some(m) = Mount::new(&["--size", "24M"]) else { return };
    let (a, b) = (m.p("a"), m.p("b"));
    write_pattern(&a, 10);
    assert!(Command::new("cp").arg(&a).arg(&b).status().unwrap().success());
    assert!(m.stat("shared_bytes") >= 10 * MIB, "cp cloned");
    // With an 8 MiB filler, ~6 MiB are left: 10 MiB of copies do not fit.
    let filler = m.p("filler");
    fs::write(&filler, vec![1u8; 8 * MIB as usize]).unwrap();
    let fb = OpenOptions::new().write(true).open(&b).unwrap();
    assert_eq!(errno(fallocate(&fb, 0, 0, 10 * MIB as i64)), libc::ENOSPC, "does not fit: refused");
    assert!(m.stat("shared_bytes") >= 10 * MIB, "and nothing unshared");
    // Half of it fits; then fill the disk and overwrite that half.
    fallocate(&fb, 0, 0, 5 * MIB as i64).unwrap();
    let mut fill = File::create(m.p("fill")).unwrap();
    let chunk = vec![2u8; MIB as usize];
    while fill.write(&chunk).is_ok() {}
    drop(fill);
    let mut fb = fb;
    fb.write_all(&vec![9u8; 5 * MIB as usize]).expect("an overwrite of the allocated range");
    drop(fb);
    let got = fs::read(&b).unwrap();
    assert!(got[..5 * MIB as usize].iter().all(|&x| x == 9));
    assert!(same_prefix_pattern_from(&a, &got, 5 * MIB as usize), "the rest is still the copy of a");
}

/// Whether `got[from..]` equals the same bytes of `a`.
fn same_prefix_pattern_from(a: &std::path::Path, got: &[u8], from: usize) -> bool {
    let want = fs::read(a).unwrap();
    want.len() == got.len() && want[from..] == got[from..]
}
