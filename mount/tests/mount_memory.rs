//! Memory follows use on a real mount (issue 17): after files are deleted,
//! the daemon's resident memory comes back down to an empty mount's, less a
//! bounded warm reserve (`--reserve`, 64 MiB by default), within seconds.
#![cfg(target_os = "linux")]

mod common;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;

#[test]
fn rss_returns_after_deleting_2_gib() {
    let Some(m) = Mount::new(&["--size", "4G"]) else { return };
    let pid = m.pid();
    let empty = rss(pid);
    let chunk = vec![0x5au8; MIB as usize];
    for i in 0..32 {
        let mut f = File::create(m.p(&format!("f{i}"))).unwrap();
        for _ in 0..64 {
            f.write_all(&chunk).unwrap();
        }
    }
    let full = rss(pid);
    assert!(full >= empty + 1900 * MIB, "2 GiB written but RSS grew only {} MiB", (full - empty) / MIB);
    for i in 0..32 {
        fs::remove_file(m.p(&format!("f{i}"))).unwrap();
    }
    let start = Instant::now();
    let goal = empty + 128 * MIB;
    let mut now = rss(pid);
    while now > goal && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
        now = rss(pid);
    }
    eprintln!(
        "RSS: empty {} MiB, full {} MiB, {} MiB {:.1} s after the deletes",
        empty / MIB,
        full / MIB,
        now / MIB,
        start.elapsed().as_secs_f64()
    );
    assert!(now <= goal, "RSS still {} MiB over an empty mount's after 30 s", (now - empty) / MIB);
    assert!(m.stat("returned_bytes") >= 1800 * MIB, "returned_bytes {}", m.stat("returned_bytes"));
    assert!(m.stat("reserve_bytes") <= 128 * MIB, "reserve_bytes {}", m.stat("reserve_bytes"));

    // The memory given back is used again, and reads back right.
    let p = m.p("again");
    let mut f = File::create(&p).unwrap();
    for _ in 0..256 {
        f.write_all(&chunk).unwrap();
    }
    drop(f);
    let mut buf = Vec::new();
    File::open(&p).unwrap().read_to_end(&mut buf).unwrap();
    assert_eq!(buf.len() as u64, 256 * MIB);
    assert!(buf.iter().all(|&b| b == 0x5a));
    assert_eq!(m.stat("used_bytes"), 256 * MIB);
}
