//! The data path's two rules on a real mount (issue 15), in the default
//! caching mode, `--cache direct` (given explicitly, so that a run of the
//! suite in another mode through `SECTORFS_TEST_MOUNT_ARGS` still checks
//! it; `writeback_mode_is_an_explicit_option` checks it is the default):
//!
//! 1. a write that returns success is stored, and at the limit the failing
//!    call is the one that would exceed it (as on tmpfs: never a deferred
//!    `ENOSPC` at close, never acknowledged bytes lost, also when the daemon
//!    dies);
//! 2. each byte of file data is held in RAM once (daemon memory, not daemon
//!    memory plus a page-cache copy).
//!
//! Plus the coherence the kernel's caches owe the user: `SEEK_DATA`,
//! `st_blocks` and cleared set-user-ID bits are right at once, and mmap and
//! exec of a binary work.
#![cfg(target_os = "linux")]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::*;

const MIB: usize = 1 << 20;

/// Writes 1 MiB chunks until `write(2)` fails; returns the bytes it
/// acknowledged and the error.
fn fill(f: &mut File, chunk: &[u8], max: usize) -> (usize, Option<i32>) {
    let mut acked = 0;
    while acked < max {
        match f.write(chunk) {
            Ok(n) => acked += n,
            Err(e) => return (acked, Some(e.raw_os_error().unwrap_or(0))),
        }
    }
    (acked, None)
}

/// Drops the page cache of `p` (and, as root, every clean page), so that a
/// read afterwards comes from the daemon.
fn drop_cache(p: &Path) {
    let f = File::open(p).unwrap();
    // SAFETY: `f` is an open descriptor for the duration of the call.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if is_root() {
        let _ = fs::write("/proc/sys/vm/drop_caches", b"1");
    }
}

/// The expected contents of a file filled by `fill` with `chunk`.
fn check_prefix(p: &Path, chunk: &[u8], acked: usize) {
    drop_cache(p);
    let md = fs::metadata(p).unwrap();
    assert_eq!(md.len() as usize, acked, "{}: the size is what was acknowledged", p.display());
    let mut f = File::open(p).unwrap();
    let mut buf = vec![0u8; chunk.len()];
    let mut off = 0;
    while off < acked {
        let n = (acked - off).min(chunk.len());
        f.read_exact(&mut buf[..n]).unwrap();
        assert!(buf[..n] == chunk[..n], "{}: bytes at {off} differ from what was acknowledged", p.display());
        off += n;
    }
}

/// Waits (at most 10 s) until the mount charges `want` bytes.
fn wait_used(m: &Mount, want: u64) {
    let start = std::time::Instant::now();
    while m.stat("used_bytes") != want {
        assert!(start.elapsed() < Duration::from_secs(10), "used_bytes stays at {}", m.stat("used_bytes"));
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn full_fs_write_fails_at_the_limit_and_keeps_every_acknowledged_byte() {
    let Some(m) = Mount::new(&["--size", "64M", "--cache", "direct"]) else { return };
    let chunk = Aligned::new(MIB, 7);
    let limit = 64 * MIB;
    // Each kind of writer in turn fills the whole file system, and gets
    // ENOSPC from the write(2) that would pass the limit.
    let kinds: [(&str, i32, bool); 4] = [
        ("buffered", 0, false),
        ("o_sync", libc::O_SYNC, false),
        ("o_direct", libc::O_DIRECT, false),
        ("o_append", 0, true),
    ];
    for (name, flags, append) in kinds {
        let p = m.p(name);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(!append)
            .append(append)
            .custom_flags(flags)
            .open(&p)
            .unwrap();
        let (acked, err) = fill(&mut f, chunk.as_ref(), 2 * limit);
        assert_eq!(err, Some(libc::ENOSPC), "{name}: write(2) must fail with ENOSPC at the limit");
        assert!(acked <= limit && acked + MIB > limit, "{name}: {acked} bytes acknowledged under a {limit} limit");
        // Nothing is deferred: closing succeeds.
        // SAFETY: `f`'s descriptor is closed once, here, and `f` is forgotten.
        let rc = unsafe { libc::close(f.as_raw_fd()) };
        std::mem::forget(f);
        assert_eq!(rc, 0, "{name}: close must not report a deferred error");
        check_prefix(&p, chunk.as_ref(), acked);

        // A small write on the full file system fails at once, and leaves
        // the new file empty (tmpfs: `echo x > f` fails with ENOSPC).
        let small = m.p("small");
        let mut s = File::create(&small).unwrap();
        assert_eq!(errno(s.write(b"x\n")), libc::ENOSPC, "{name}: small write on a full fs");
        drop(s);
        assert_eq!(fs::metadata(&small).unwrap().len(), 0);
        // So do fallocate and copy_file_range into new space.
        let g = File::create(m.p("g")).unwrap();
        assert_eq!(errno(fallocate(&g, 0, 0, MIB as i64)), libc::ENOSPC, "{name}: fallocate on a full fs");
        let src = File::open(&p).unwrap();
        // (Offsets that differ modulo the page size: a copy, not a clone.)
        assert_eq!(errno(copy_file_range(&src, 0, &g, 1, MIB)), libc::ENOSPC, "{name}: copy_file_range");
        assert_eq!(fs::metadata(m.p("g")).unwrap().len(), 0);
        // A clone of whole sectors (cp's offsets) takes no page, but its
        // table slots count (issue 20): on a full file system it is
        // refused too, and changes nothing.
        assert_eq!(errno(copy_file_range(&src, 0, &g, 0, MIB)), libc::ENOSPC, "{name}: clone on a full fs");
        assert_eq!(fs::metadata(m.p("g")).unwrap().len(), 0);
        drop((src, g));
        fs::remove_file(m.p("g")).unwrap();
        fs::remove_file(&small).unwrap();
        // The data is still all there; free it for the next writer.
        check_prefix(&p, chunk.as_ref(), acked);
        fs::remove_file(&p).unwrap();
        // The kernel sends RELEASE after close(2) returns (asynchronously),
        // so the space of a file that was just closed and deleted comes back
        // a moment later: wait for it (bounded) before the next writer.
        wait_used(&m, 0);
    }
}

/// POSIX's partial write at the end of a medium, as on tmpfs: a write(2)
/// that does not fit stores what does and returns that count; the next one
/// fails with ENOSPC; the disk fills to the byte (the limit is whole
/// sectors), and the file holds exactly what was acknowledged.
#[test]
fn a_write_past_the_limit_is_short_and_fills_the_disk() {
    let Some(m) = Mount::new(&["--size", "64M", "--cache", "direct"]) else { return };
    let limit = 64 * MIB;
    // 1,000,003 bytes a write: no write ends on a sector boundary.
    let chunk: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
    let p = m.p("f");
    let mut f = File::create(&p).unwrap();
    let (mut acked, mut shorts) = (0usize, 0);
    let err = loop {
        match f.write(&chunk) {
            Ok(n) if n == chunk.len() => acked += n,
            Ok(n) => {
                acked += n;
                shorts += 1;
            }
            Err(e) => break e.raw_os_error(),
        }
        assert!(acked <= limit, "{acked} bytes acknowledged under a {limit} limit");
    };
    assert_eq!(err, Some(libc::ENOSPC));
    assert_eq!(shorts, 1, "one short write, then ENOSPC");
    assert_eq!(acked, limit, "the disk fills to the byte");
    drop(f);
    check_prefix(&p, &chunk, acked);
}

#[test]
fn a_killed_daemon_fails_the_next_writes() {
    let Some(mut m) = Mount::new(&["--size", "1G", "--cache", "direct"]) else { return };
    let chunk = vec![5u8; MIB];
    let mut f = File::create(m.p("log")).unwrap();
    for _ in 0..8 {
        f.write_all(&chunk).unwrap();
    }
    // SAFETY: kill has no memory preconditions; the pid is this test's daemon.
    assert_eq!(unsafe { libc::kill(m.pid(), libc::SIGKILL) }, 0);
    assert!(m.wait_exit(Duration::from_secs(10)), "the daemon did not die");
    // Writes after the death must fail within 16 MiB (the bound);
    // with direct I/O the very first one does.
    let mut acked_after = 0usize;
    let mut failed = false;
    for _ in 0..64 {
        match f.write(&chunk) {
            Ok(n) => acked_after += n,
            Err(e) => {
                failed = true;
                let code = e.raw_os_error();
                // ECONNABORTED, ECANCELED: the io_uring transport's teardown
                // (mount_cli, killed_daemon_leaves_enotconn_until_unmounted).
                assert!(
                    matches!(code, Some(libc::ENOTCONN | libc::EIO | libc::ECONNABORTED | libc::ECANCELED)),
                    "a write to a dead mount fails with ENOTCONN, ECONNABORTED, ECANCELED or EIO, got {e}"
                );
                break;
            }
        }
    }
    assert!(failed, "writes kept succeeding after the daemon died");
    assert!(acked_after <= 16 * MIB, "{acked_after} bytes acknowledged after the daemon died");
}

#[test]
fn seek_data_and_blocks_right_after_pwrite() {
    let Some(m) = Mount::new(&["--size", "64M", "--cache", "direct"]) else { return };
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(m.p("s")).unwrap();
    f.write_all_at(b"data", MIB as u64).unwrap();
    // No fsync, no close: the daemon already has it.
    assert_eq!(lseek(&f, 0, libc::SEEK_DATA).unwrap(), MIB as i64);
    assert_eq!(lseek(&f, MIB as i64, libc::SEEK_HOLE).unwrap(), MIB as i64 + 4);
    let md = f.metadata().unwrap();
    assert_eq!(md.len(), MIB as u64 + 4);
    assert!(md.blocks() > 0, "st_blocks is 0 right after a write");
}

/// Writes larger than one FUSE request (1 MiB) from several writers to one
/// range: each `pwrite` is atomic against the others (POSIX 2.9.7, and
/// tmpfs), so after every round the range holds one writer's record whole.
/// With `FOPEN_PARALLEL_DIRECT_WRITES` the kernel split each into several
/// WRITE requests without the inode's lock, and a probe found 13 rounds of
/// 30 mixed.
#[test]
fn large_writes_to_one_range_do_not_interleave() {
    let Some(m) = Mount::new(&["--size", "256M", "--cache", "direct"]) else { return };
    let path = m.p("torn");
    let len = 2 * MIB + 4096 + 1000;
    File::create(&path).unwrap().set_len(len as u64 + 1000).unwrap();
    let mut mixed = Vec::new();
    for round in 0..30 {
        let go = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for w in 0..4u8 {
                let (path, go) = (&path, &go);
                s.spawn(move || {
                    let f = OpenOptions::new().write(true).open(path).unwrap();
                    let rec = vec![b'a' + w; len];
                    go.wait();
                    for _ in 0..3 {
                        // One system call per record, not write_all_at's loop.
                        assert_eq!(f.write_at(&rec, 1000).unwrap(), len, "a short write");
                    }
                });
            }
        });
        let got = fs::read(&path).unwrap();
        let range = &got[1000..1000 + len];
        if range.iter().any(|&b| b != range[0]) {
            let split = range.iter().position(|&b| b != range[0]).unwrap();
            mixed.push((round, split));
        }
    }
    assert!(
        mixed.is_empty(),
        "rounds whose range holds two writers' records (round, first byte of the second): {mixed:?}"
    );
}

/// `: > log` beside a process that appends to the log: the truncate and
/// the appends are ordered (tmpfs: the inode's lock), so the file never
/// holds NUL bytes. With FUSE_ATOMIC_O_TRUNC the truncate ran in the OPEN,
/// outside that lock, and an append that had taken the old size as its
/// offset wrote there after it: a probe found 111,083 NUL bytes in 69
/// truncations.
#[test]
fn o_trunc_beside_an_appender() {
    let Some(m) = Mount::new(&["--size", "64M", "--cache", "direct"]) else { return };
    let log = m.p("app.log");
    File::create(&log).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut nuls = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut f = OpenOptions::new().append(true).open(&log).unwrap();
            for i in 0..100_000 {
                f.write_all(format!("line {i}\n").as_bytes()).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            nuls += fs::read(&log).unwrap().iter().filter(|&&b| b == 0).count();
            drop(OpenOptions::new().write(true).truncate(true).open(&log).unwrap());
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    nuls += fs::read(&log).unwrap().iter().filter(|&&b| b == 0).count();
    assert_eq!(nuls, 0, "NUL bytes in a log truncated beside its appender");
}

/// Resident pages of `p` in the page cache (`mincore` of a mapping that is
/// never touched, so mapping it caches nothing).
fn cached_bytes(p: &Path) -> u64 {
    let f = File::open(p).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    let page = 4096usize;
    // SAFETY: a fresh shared read-only mapping of an open file; it is never
    // read through (mincore only asks the kernel), and unmapped below.
    let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0) };
    assert_ne!(addr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `addr` maps `len` bytes; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(addr, len) };
    assert_eq!(rc, 0);
    vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * page as u64
}

#[test]
fn one_copy_in_ram() {
    let Some(m) = Mount::new(&["--size", "2G", "--cache", "direct"]) else { return };
    let before = rss(m.pid());
    let p = m.p("big");
    let chunk = vec![9u8; MIB];
    let gib = 1usize << 30;
    let mut f = File::create(&p).unwrap();
    for _ in 0..gib / MIB {
        f.write_all(&chunk).unwrap();
    }
    drop(f);
    let mut f = File::open(&p).unwrap();
    let mut buf = vec![0u8; MIB];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == 9));
        total += n;
    }
    assert_eq!(total, gib);
    let daemon = rss(m.pid()).saturating_sub(before);
    let cache = cached_bytes(&p);
    eprintln!("daemon RSS growth {} MiB, page cache of the file {} MiB", daemon >> 20, cache >> 20);
    assert!(
        daemon + cache <= gib as u64 + gib as u64 / 4,
        "1 GiB written and read back costs {} MiB (daemon {} MiB + page cache {} MiB)",
        (daemon + cache) >> 20,
        daemon >> 20,
        cache >> 20
    );
}

#[test]
fn set_user_id_bits_cleared_at_once_by_a_non_owner_write() {
    if !is_root() {
        return;
    }
    let Some(m) = Mount::new(&["--allow-other", "--cache", "direct"]) else { return };
    let p = m.p("suid");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o6777)).unwrap();
    // Cache the attributes with the bits set.
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o6777);
    as_user(65534, 65534, || {
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"y").unwrap();
    });
    // No wait and no cache bypass: the very next stat shows them cleared.
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o0777, "set-user-ID bits still shown after the write");
    assert_eq!(fs::read(&p).unwrap(), b"xy");
}

#[test]
fn mmap_and_exec_work() {
    let Some(m) = Mount::new(&["--cache", "direct"]) else { return };
    // A binary copied onto the mount runs (exec maps it).
    let bin = m.p("true");
    fs::copy("/bin/true", &bin).unwrap();
    let st = std::process::Command::new(&bin).status().unwrap();
    assert!(st.success());
    // A shared mapping and read/write stay coherent both ways.
    let p = m.p("mapped");
    let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
    f.write_all_at(&[b'A'; 8192], 0).unwrap();
    let len = 8192;
    // SAFETY: a fresh shared mapping of 8 KiB of an open 8 KiB file,
    // accessed only through `map` below and unmapped at the end.
    let addr = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), 0)
    };
    assert_ne!(addr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    // SAFETY: `addr` maps `len` bytes, readable and writable, until munmap.
    let map = unsafe { std::slice::from_raw_parts_mut(addr.cast::<u8>(), len) };
    assert_eq!(&map[..4], b"AAAA");
    f.write_all_at(b"BBBB", 0).unwrap();
    assert_eq!(&map[..4], b"BBBB", "a write(2) shows in the mapping");
    map[4..8].copy_from_slice(b"CCCC");
    let mut buf = [0u8; 8];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"BBBBCCCC", "a store through the mapping shows in read(2)");
    // SAFETY: `addr`/`len` are the mapping made above; `map` is not used after.
    assert_eq!(unsafe { libc::msync(addr, len, libc::MS_SYNC) }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::munmap(addr, len) }, 0);
    drop(f);
    drop_cache(&p);
    assert_eq!(&fs::read(&p).unwrap()[..8], b"BBBBCCCC");
}

#[test]
fn mmap_store_past_the_limit_fails_at_msync() {
    let Some(m) = Mount::new(&["--size", "64M", "--cache", "direct"]) else { return };
    // Fill the mount.
    let chunk = vec![3u8; MIB];
    let mut f = File::create(m.p("full")).unwrap();
    let (acked, err) = fill(&mut f, &chunk, 128 * MIB);
    assert_eq!(err, Some(libc::ENOSPC));
    drop(f);
    // A sparse file (no memory needed), mapped and stored into: the pages
    // live in the kernel until writeback, which the full mount refuses.
    let p = m.p("mapped");
    let g = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
    g.set_len(MIB as u64).unwrap();
    // SAFETY: a fresh shared mapping of the 1 MiB file, used only through
    // `map` below and unmapped at the end.
    let addr = unsafe {
        libc::mmap(std::ptr::null_mut(), MIB, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, g.as_raw_fd(), 0)
    };
    assert_ne!(addr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    // SAFETY: `addr` maps MIB bytes, readable and writable, until munmap.
    let map = unsafe { std::slice::from_raw_parts_mut(addr.cast::<u8>(), MIB) };
    map.fill(0x77);
    // SAFETY: the mapping made above.
    let rc = unsafe { libc::msync(addr, MIB, libc::MS_SYNC) };
    let e = std::io::Error::last_os_error().raw_os_error();
    // SAFETY: the mapping made above; `map` is not used after.
    unsafe { libc::munmap(addr, MIB) };
    assert_eq!(rc, -1, "msync of stores past the limit must fail");
    assert!(e == Some(libc::ENOSPC) || e == Some(libc::EIO), "msync failed with {e:?}");
    // The full file is intact, and the refused stores were not stored.
    drop(g);
    check_prefix(&m.p("full"), &chunk, acked);
    assert_eq!(m.stat("used_bytes"), 64 * MIB as u64);
}

/// A 64 MiB mount with `opts`, all but `free` bytes of it taken by a file
/// `fallocate`d to that size (which goes to the daemon in every cache mode).
fn nearly_full(opts: &[&str], free: usize) -> Option<Mount> {
    let mut all = vec!["--size", "64M"];
    all.extend_from_slice(opts);
    let m = Mount::new(&all)?;
    let f = File::create(m.p("full")).unwrap();
    // SAFETY: `f` is an open descriptor for the duration of the call.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, (64 * MIB - free) as libc::off_t) };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    assert_eq!(m.stat("free_bytes"), free as u64);
    Some(m)
}

/// `close(2)`, with its error.
fn close_fd(f: File) -> Result<(), Option<i32>> {
    use std::os::fd::IntoRawFd;
    // SAFETY: the descriptor is `f`'s own, given up by `into_raw_fd`.
    let rc = unsafe { libc::close(f.into_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error())
    }
}

/// Stores through a mapping of which only a part fits: page-cache
/// writeback takes any count the daemon answers as the whole write (the
/// rest would be dropped as written), so the daemon fails a writeback it
/// stored only part of, and the kernel reports ENOSPC at the file's close
/// (or fsync, or msync). rust-lld writes its output this way and checks
/// close: a full disk fails the link instead of leaving a binary with
/// zeroed pages. `stats` counts the refused bytes.
#[test]
fn mmap_stores_that_partly_fit_fail_at_close_and_fsync() {
    let Some(m) = nearly_full(&["--cache", "direct"], 8192) else { return };
    let mut before = 0;
    for (i, sync) in [false, true].into_iter().enumerate() {
        let p = m.p(&format!("mapped{i}"));
        let g = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        g.set_len(MIB as u64).unwrap();
        // SAFETY: a fresh shared mapping of the 1 MiB file, used only
        // through `map` below and unmapped at the end.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MIB,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                g.as_raw_fd(),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        // SAFETY: `addr` maps MIB bytes, readable and writable, until munmap.
        unsafe { std::slice::from_raw_parts_mut(addr.cast::<u8>(), MIB) }.fill(0x77);
        // SAFETY: the mapping made above, not used after.
        assert_eq!(unsafe { libc::munmap(addr, MIB) }, 0);
        if sync {
            assert_eq!(g.sync_all().map_err(|e| e.raw_os_error()), Err(Some(libc::ENOSPC)), "fsync");
            drop(g);
        } else {
            assert_eq!(close_fd(g), Err(Some(libc::ENOSPC)), "close after stores that did not fit");
        }
        // All of what did not fit: the stores past the 8 KiB that did.
        let refused = m.stat("writeback_refused_bytes");
        assert_eq!(refused - before, MIB as u64 - 8192, "stats counts the refused writeback");
        before = refused;
        assert_eq!(m.stat("free_bytes"), 0, "what fit is stored");
        fs::remove_file(&p).unwrap();
        assert!(eventually(|| m.stat("free_bytes") == 8192), "freed again");
    }
}

/// Stores through a mapping over a file `fallocate`d to fill the disk and
/// grown on past it as a hole: the fallocated pages are all kept (their
/// space was taken: tmpfs keeps them too, and raises SIGBUS only for the
/// hole's), only the hole's stores fail, reported at msync. A probe lost
/// up to 163 fallocated pages: a write-back request that ran from them
/// into the hole stored one sector and failed, and the kernel dropped the
/// rest of it. Likewise one `write(2)` over them stores all of them.
#[test]
fn mmap_stores_into_fallocated_space_are_kept_on_a_full_disk() {
    // The fallocated range ends 100 KiB before a 1 MiB boundary, so the
    // write-back request that covers its end runs on into the hole.
    let Some(m) = nearly_full(&["--cache", "direct"], MIB + 100 * 1024) else { return };
    let p = m.p("mapped");
    let g = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
    let kept = MIB + 100 * 1024;
    fallocate(&g, 0, 0, kept as i64).unwrap();
    assert_eq!(m.stat("free_bytes"), 0);
    let len = 2 * MIB;
    g.set_len(len as u64).unwrap();
    // SAFETY: a fresh shared mapping of the file, used only through the
    // slice below and unmapped at the end.
    let addr = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, g.as_raw_fd(), 0)
    };
    assert_ne!(addr, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    let pattern = |i: usize| (i / 4096 % 251) as u8 + 1;
    // SAFETY: `addr` maps `len` bytes, readable and writable, until munmap.
    let map = unsafe { std::slice::from_raw_parts_mut(addr.cast::<u8>(), len) };
    for (i, b) in map.iter_mut().enumerate() {
        *b = pattern(i);
    }
    // SAFETY: the mapping made above.
    let rc = unsafe { libc::msync(addr, len, libc::MS_SYNC) };
    let e = std::io::Error::last_os_error().raw_os_error();
    // SAFETY: the mapping made above; the slice is not used after.
    unsafe { libc::munmap(addr, len) };
    assert_eq!((rc, e), (-1, Some(libc::ENOSPC)), "the hole's stores cannot be kept");
    let mut got = vec![0u8; kept];
    g.read_exact_at(&mut got, 0).unwrap();
    let lost = (0..kept / 4096).filter(|&pg| (0..4096).any(|j| got[pg * 4096 + j] != pattern(pg * 4096 + j))).count();
    assert_eq!(lost, 0, "fallocated pages lost");
    // write(2) across the same end: one call stores all the fallocated bytes.
    let data = vec![0xabu8; MIB];
    let at = kept - MIB / 2;
    assert_eq!(g.write_at(&data, at as u64).unwrap(), MIB / 2);
}

/// With `--cache writeback` every write(2) is page-cache writeback: one
/// past the limit is acknowledged into the cache, and its loss is reported
/// at fsync (the documented cost of that mode), even when part of it fit.
#[test]
fn writeback_mode_reports_a_write_past_the_limit_at_fsync() {
    let Some(m) = nearly_full(&["--cache", "writeback"], 8192) else { return };
    let mut f = File::create(m.p("late")).unwrap();
    f.write_all(&vec![9u8; MIB]).unwrap();
    assert_eq!(f.sync_all().map_err(|e| e.raw_os_error()), Err(Some(libc::ENOSPC)));
    assert!(m.stat("writeback_refused_bytes") > 0);
}

#[test]
fn writeback_mode_is_an_explicit_option() {
    // The old mode stays available for those who want its speed, and says
    // what it costs; the default keeps the rules.
    let out = std::process::Command::new(BIN).args(["mount", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--cache <MODE>"), "{help}");
    assert!(help.contains("writeback"), "{help}");
    assert!(help.contains("[default: direct]"), "{help}");
}
