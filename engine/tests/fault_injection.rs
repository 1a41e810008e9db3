//! Faults injected through the engine's failpoints (`engine/src/fault.rs`):
//! the OS refusing memory for a new region, and a panic inside a file's
//! actor. Built only with `--features failpoints` (`scripts/test-all` runs
//! it in the debug profile).
#![cfg(feature = "failpoints")]

mod support;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use engine::{Engine, Error, SetAttr, ROOT};
use fail::FailScenario;
use support::*;

/// Waits (bounded) until `ino` has `n` requests counted in its actor.
fn wait_pending(e: &Engine, ino: u64, n: usize) {
    let t0 = Instant::now();
    while e.pending_requests(ino) != n {
        assert!(t0.elapsed() < Duration::from_secs(120), "never reached {n} pending requests");
        thread::sleep(Duration::from_millis(1));
    }
}

/// The expected panics of these tests print nothing; any other panic keeps
/// the default message.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.contains("node.publish") && !msg.contains("data.apply") && !msg.contains("injected") {
                default(info);
            }
        }));
    });
}

#[test]
fn oom_on_region_map_is_enomem_and_leaks_nothing() {
    let scenario = FailScenario::setup();
    let e = Engine::new(cfg(64 << 10, 64 << 20, 1024)).unwrap();
    let f = mkfile(&e, ROOT, b"f");
    fail::cfg("region.map", "return").unwrap();
    assert_eq!(e.write(f, 0, &vec![7; 100_000]), Err(Error::OutOfMemory));
    assert_eq!(e.getattr(f).unwrap().size, 0, "nothing changed");
    let s = e.stats().pool;
    assert_eq!((s.used, s.sectors, s.mapped), (0, 0, 0), "the reservation was returned");
    // Small files live inline (process heap, not regions): still served.
    assert_eq!(e.write(f, 0, b"small"), Ok(5));
    assert_eq!(read_all(&e, f), b"small");

    // The first region maps, the second is refused: a 3 MiB write needs two.
    fail::cfg("region.map", "1*off->return").unwrap();
    let g = mkfile(&e, ROOT, b"g");
    assert_eq!(e.write(g, 0, &vec![1; 3 << 20]), Err(Error::OutOfMemory));
    assert_eq!(e.getattr(g).unwrap().size, 0);
    let s = e.stats().pool;
    assert_eq!((s.used, s.sectors), (5, 0), "only f's inline bytes are charged");
    assert_eq!(s.mapped, 2 << 20, "one region mapped");
    assert_eq!(e.pool().free_sectors(), 32, "every sector of the mapped region is back in the pool");
    // A write that fits in the mapped region works while mapping still fails.
    assert_eq!(e.write(g, 0, &vec![2; 1 << 20]), Ok(1 << 20));

    fail::remove("region.map");
    assert_eq!(e.write(g, 0, &vec![3; 3 << 20]), Ok(3 << 20), "served again once the OS gives memory");
    assert_eq!(read_all(&e, g), vec![3; 3 << 20]);
    e.unlink(ROOT, b"f").unwrap();
    e.unlink(ROOT, b"g").unwrap();
    let s = e.stats().pool;
    assert_eq!((s.used, s.sectors), (0, 0), "nothing leaked");
    scenario.teardown();
}

#[test]
fn panic_in_a_request_is_eio_and_publishes_nothing() {
    quiet_injected_panics();
    let scenario = FailScenario::setup();
    let e = Engine::new(cfg(4096, 64 << 20, 1024)).unwrap();
    let f = put(&e, ROOT, b"f", &vec![5; 10_000]);
    let other = put(&e, ROOT, b"other", b"other");
    let before = e.stats();
    let attr = e.getattr(f).unwrap();

    fail::cfg("node.publish", "1*panic").unwrap();
    // A write that grows the file into fresh sectors, panicking before publish.
    assert_eq!(e.write(f, 5000, &vec![9; 20_000]), Err(Error::Internal));
    assert_eq!(read_all(&e, f), vec![5; 10_000], "the file is at its last published state");
    assert_eq!(e.getattr(f).unwrap().mtime, attr.mtime);
    let after = e.stats();
    assert_eq!(after.pool.used, before.pool.used, "the batch's sectors went back");
    assert_eq!(after.pool.sectors, before.pool.sectors);
    assert_eq!(after.logical_bytes, before.logical_bytes);
    assert_eq!(e.pending_requests(f), 0, "the runner role was released");

    // Every kind of request fails the same way, then the file works again.
    fail::cfg("node.publish", "1*panic").unwrap();
    assert_eq!(e.setattr(f, &SetAttr { size: Some(1), ..SetAttr::default() }).err(), Some(Error::Internal));
    assert_eq!(e.getattr(f).unwrap().size, 10_000);
    assert_eq!(e.write(f, 10_000, b"tail"), Ok(4), "the same file is served after the panic");
    assert_eq!(read_at(&e, f, 9_998, 10), b"\x05\x05tail");
    assert_eq!(read_all(&e, other), b"other");
    e.unlink(ROOT, b"f").unwrap();
    e.unlink(ROOT, b"other").unwrap();
    assert_eq!(e.stats().pool.used, 0, "nothing leaked");
    scenario.teardown();
}

/// A batch of three requests from three threads: the runner's own batch
/// publishes, the next batch (two requests) panics, both get EIO, and the
/// file holds exactly what the first batch wrote.
#[test]
fn panic_fails_the_whole_batch_and_only_it() {
    quiet_injected_panics();
    let scenario = FailScenario::setup();
    let e = Arc::new(Engine::new(cfg(4096, 64 << 20, 1024)).unwrap());
    let f = mkfile(&e, ROOT, b"f");
    // The first publish blocks until released (so two more requests queue up
    // behind the runner), the second panics, later ones publish.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let calls = Mutex::new(0);
    fail::cfg_callback("node.publish", move || {
        let n = {
            let mut c = calls.lock().unwrap();
            *c += 1;
            *c
        };
        match n {
            1 => release_rx.lock().unwrap().recv().unwrap(),
            2 => panic!("injected panic in the second batch"),
            _ => {}
        }
    })
    .unwrap();
    let spawn_write = |off: u64, data: Vec<u8>| {
        let e = Arc::clone(&e);
        thread::spawn(move || e.write(f, off, &data))
    };
    let a = spawn_write(0, vec![b'a'; 6000]);
    wait_pending(&e, f, 1);
    let b = spawn_write(6000, vec![b'b'; 6000]);
    wait_pending(&e, f, 2);
    let c = spawn_write(12_000, vec![b'c'; 6000]);
    wait_pending(&e, f, 3);
    release_tx.send(()).unwrap();
    assert_eq!(a.join().unwrap(), Ok(6000), "the runner's own batch published");
    assert_eq!(b.join().unwrap(), Err(Error::Internal), "b shared the panicking batch");
    assert_eq!(c.join().unwrap(), Err(Error::Internal), "c shared the panicking batch");
    assert_eq!(read_all(&e, f), vec![b'a'; 6000]);
    assert_eq!(e.pending_requests(f), 0);
    assert_eq!(e.write(f, 6000, b"next"), Ok(4), "the file is served after the panic");
    assert_eq!(e.getattr(f).unwrap().size, 6004);
    e.unlink(ROOT, b"f").unwrap();
    assert_eq!(e.stats().pool.used, 0, "nothing leaked");
    scenario.teardown();
}

/// Issue 18: a panic inside `FileData::apply`, after the first of three hole
/// sectors a write grows into was applied, fails the batch and leaks
/// nothing: the table is changed in place in the draft, so the draft's drop
/// gives back the private nodes and fresh pages made so far.
#[test]
fn panic_mid_apply_gives_everything_back() {
    quiet_injected_panics();
    let scenario = FailScenario::setup();
    let e = Engine::new(cfg(4096, 1 << 20, 0)).unwrap();
    let f = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
    e.write(f, 0, &[1u8; 4096]).unwrap();
    let before = e.stats().pool;
    // `data.apply` is evaluated after each sector: off once, then panic.
    fail::cfg("data.apply", "1*off->1*panic").unwrap();
    // Grows into sectors 1, 2, 3: sector 1 is applied, then it panics.
    assert_eq!(e.write(f, 4096, &[2u8; 3 * 4096]), Err(Error::Internal));
    fail::remove("data.apply");
    let after = e.stats().pool;
    assert_eq!((after.used, after.pages), (before.used, before.pages), "the batch's pages went back");
    assert_eq!(read_all(&e, f), vec![1u8; 4096], "the file is at its last published state");
    // The file is served again, and the same write now works.
    assert_eq!(e.write(f, 4096, &[2u8; 3 * 4096]), Ok(3 * 4096));
    e.unlink(ROOT, b"f").unwrap();
    e.forget(f, 1);
    let end = e.stats().pool;
    assert_eq!((end.used, end.pages), (0, 0), "nothing leaked");
    scenario.teardown();
}

/// Issue 20: a clone whose destination batch panics after its pages went
/// into the draft's table fails, leaves the destination as it was, and
/// gives back the holders the clone took: the pages stay the source's
/// alone (none shared), and deleting the source frees every one.
#[test]
fn panic_after_a_clone_installs_gives_its_holders_back() {
    quiet_injected_panics();
    let scenario = FailScenario::setup();
    let e = Engine::new(cfg(4096, 64 << 20, 0)).unwrap();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let src = put(&e, ROOT, b"src", &data);
    let dst = put(&e, ROOT, b"dst", &[3u8; 8192]);
    let before = e.stats().pool;
    // The source's batch (`Share`) publishes; the destination's
    // (`Install`) panics after its pages are in the draft.
    fail::cfg("node.publish", "1*off->1*panic").unwrap();
    assert_eq!(e.copy_file_range(src, 0, dst, 0, data.len() as u64), Err(Error::Internal));
    fail::remove("node.publish");
    let after = e.stats().pool;
    assert_eq!((after.used, after.pages), (before.used, before.pages), "nothing charged");
    assert_eq!((after.shared_pages, after.shared_extra), (0, 0), "the clone's holders went back");
    assert_eq!(read_all(&e, dst), vec![3u8; 8192], "the destination is at its last published state");
    assert_eq!(read_all(&e, src), data);
    // The same clone now works, and shares every page.
    assert_eq!(e.copy_file_range(src, 0, dst, 0, data.len() as u64), Ok(data.len() as u64));
    assert_eq!(e.stats().pool.shared_pages, (1 << 20) / 4096);
    assert_eq!(read_all(&e, dst), data);
    for (name, ino) in [(&b"src"[..], src), (b"dst", dst)] {
        e.unlink(ROOT, name).unwrap();
        e.forget(ino, 1);
    }
    let end = e.stats().pool;
    assert_eq!((end.used, end.pages, end.shared_pages), (0, 0, 0), "nothing leaked");
    scenario.teardown();
}

/// An engine whose first 2 MiB region is exactly filled by file `f`
/// (64 KiB sectors of 4 KiB pages), so the next page needs a new region.
fn full_region() -> (Engine, u64) {
    let e = Engine::new(cfg(64 << 10, 64 << 20, 1024)).unwrap();
    let f = put(&e, ROOT, b"f", &vec![7; 2 << 20]);
    assert_eq!(e.stats().pool.mapped, 2 << 20, "one region mapped");
    assert_eq!(e.pool().free_sectors(), 0, "and all of it used");
    (e, f)
}

/// Issue 18: a punch (and `Op::Zero`, a hole copied by `copy_file_range`)
/// that must copy a published partial page fails with `OutOfMemory` when the
/// OS refuses memory for the copy, and changes nothing; it used to skip the
/// page and report success without zeroing it.
#[test]
fn punch_and_zero_refused_memory_change_nothing() {
    let scenario = FailScenario::setup();
    let (e, f) = full_region();
    let hole = mkfile(&e, ROOT, b"hole");
    e.setattr(hole, &SetAttr { size: Some(64 << 10), ..SetAttr::default() }).unwrap();
    let before = e.stats().pool;
    fail::cfg("region.map", "return").unwrap();
    // Zeroes part of page 0 and of page 17 (whole sector 1 in between).
    let punch = engine::data::FALLOC_PUNCH_HOLE | engine::data::FALLOC_KEEP_SIZE;
    assert_eq!(e.fallocate(f, punch, 100, (64 << 10) + 5000), Err(Error::OutOfMemory));
    assert_eq!(e.copy_file_range(hole, 0, f, 100, 1000), Err(Error::OutOfMemory));
    assert_eq!(read_all(&e, f), vec![7; 2 << 20], "nothing was zeroed");
    assert_eq!(e.seek(f, 0, false), Ok(2 << 20), "no hole was made");
    let s = e.stats().pool;
    assert_eq!((s.used, s.pages), (before.used, before.pages), "nothing taken, nothing leaked");

    fail::remove("region.map");
    assert_eq!(e.fallocate(f, punch, 100, (64 << 10) + 5000), Ok(()));
    assert_eq!(e.copy_file_range(hole, 0, f, 200_000, 1000), Ok(1000));
    let mut want = vec![7; 2 << 20];
    want[100..(64 << 10) + 5100].fill(0);
    want[200_000..201_000].fill(0);
    assert_eq!(read_all(&e, f), want);
    e.unlink(ROOT, b"f").unwrap();
    e.unlink(ROOT, b"hole").unwrap();
    assert_eq!(e.stats().pool.used, 0, "nothing leaked");
    scenario.teardown();
}

/// Issue 18: a write that fails because the OS refuses memory leaves no
/// partly present sector behind: every page is taken before the table
/// changes. Hole counts (`SEEK_HOLE`, blocks) stay as they were, and the
/// same write succeeds whole once memory is back (a partly present sector
/// used to make later writes into its missing pages vanish).
#[test]
fn refused_write_leaves_no_partial_sector() {
    let scenario = FailScenario::setup();
    let (e, f) = full_region();
    let blocks = e.getattr(f).unwrap().blocks;
    fail::cfg("region.map", "return").unwrap();
    // Overwrites published page 511 (a copy) and grows into 3 hole sectors.
    let data = vec![9; 3 << 16];
    assert_eq!(e.write(f, (2 << 20) - 100, &data), Err(Error::OutOfMemory));
    assert_eq!(e.getattr(f).unwrap().size, 2 << 20);
    assert_eq!(e.getattr(f).unwrap().blocks, blocks);
    assert_eq!(e.seek(f, 0, false), Ok(2 << 20));
    assert_eq!(read_all(&e, f), vec![7; 2 << 20]);
    fail::remove("region.map");
    assert_eq!(e.write(f, (2 << 20) - 100, &data), Ok(data.len()));
    let mut want = vec![7; 2 << 20];
    want.truncate((2 << 20) - 100);
    want.extend_from_slice(&data);
    assert_eq!(read_all(&e, f), want);
    e.unlink(ROOT, b"f").unwrap();
    assert_eq!(e.stats().pool.used, 0, "nothing leaked");
    scenario.teardown();
}
