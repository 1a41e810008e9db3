//! The FUSE transports on real mounts: `--transport uring` serves through the
//! io_uring queues (and says so in `stats`), `classic` through `/dev/fuse`
//! reads, `auto` picks io_uring where the kernel has it; the same operations
//! give the same results on both. (CI also runs every mount test once per
//! transport: `SECTORFS_TEST_MOUNT_ARGS="--transport classic"`.)
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn stats_json(m: &Mount) -> String {
    let out = Command::new(BIN).arg("stats").arg(&m.path).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn uring_possible() -> bool {
    is_root() && std::path::Path::new("/sys/module/fuse/parameters/enable_uring").exists()
}

/// Creates, writes, reads back, lists and deletes files; returns what it saw.
fn workload(m: &Mount) -> Vec<String> {
    let mut seen = Vec::new();
    fs::create_dir(m.p("d")).unwrap();
    for i in 0..300 {
        fs::write(m.p(&format!("d/{i}")), vec![i as u8; i * 37]).unwrap();
    }
    let big = Aligned::new(3 << 20, 9);
    fs::write(m.p("big"), big.as_ref()).unwrap();
    assert_eq!(fs::read(m.p("big")).unwrap(), big.as_ref(), "3 MiB round trip");
    let mut names: Vec<String> =
        fs::read_dir(m.p("d")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    seen.push(names.join(","));
    for i in (0..300).step_by(7) {
        seen.push(format!("{i}:{}", fs::read(m.p(&format!("d/{i}"))).unwrap().len()));
    }
    fs::remove_dir_all(m.p("d")).unwrap();
    seen
}

#[test]
fn uring_serves_through_the_ring() {
    if !uring_possible() {
        eprintln!("SKIP: needs root and a kernel with FUSE over io_uring");
        return;
    }
    let Some(u) = Mount::new(&["--transport", "uring"]) else { return };
    let on_ring = workload(&u);
    let j = stats_json(&u);
    assert!(j.contains("\"transport\":\"uring\""), "{j}");
    let ring = json_field(&j, "ring_requests");
    let creates = json_field(&j, "req_create");
    assert!(creates >= 300 && ring >= creates, "ring {ring} requests, creates {creates}: {j}");
    assert!(json_field(&j, "transport_buffer_bytes") > 0);

    let Some(c) = Mount::new(&["--transport", "classic"]) else { return };
    assert_eq!(workload(&c), on_ring, "the same results on both transports");
    let j = stats_json(&c);
    assert!(j.contains("\"transport\":\"classic\"") && !j.contains("ring_requests"), "{j}");

    // auto: io_uring here (the kernel has it; as root it is switched on).
    let Some(a) = Mount::new(&["--transport", "auto"]) else { return };
    let j = stats_json(&a);
    assert!(j.contains("\"transport\":\"uring\""), "{j}");
}

#[test]
fn transport_option_is_checked() {
    let out = Command::new(BIN).args(["mount", "/nonexistent", "--transport", "pigeon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pigeon") && err.contains("uring") && err.contains("classic"), "{err}");
}
