//! A panic inside a file's actor on a real mount: the request fails with
//! EIO, the file stays at its last published state, and the mount keeps
//! serving. A reply the kernel refuses: the caller gets EIO instead of
//! waiting forever. The panic is injected through the daemon's failpoints
//! (`mount/src/fault.rs`), so this test exists only with
//! `--features failpoints` (`scripts/test-all` runs it in the debug profile).
#![cfg(all(target_os = "linux", feature = "failpoints"))]

mod common;

use std::io::Write;

use common::*;

/// Arms `name=ACTIONS` in the daemon through the root attribute.
fn arm(m: &Mount, spec: &str) {
    setxattr(&m.path, "user.sectorfs.failpoint", spec.as_bytes(), 0).expect("arm a failpoint");
}

#[test]
fn panic_in_a_request_is_eio_and_the_mount_keeps_serving() {
    let Some(m) = Mount::new(&["--threads", "2"]) else { return };
    let f = m.path.join("f");
    {
        let mut file = std::fs::File::create(&f).unwrap();
        file.write_all(b"hello world").unwrap();
        file.sync_all().unwrap();
    }
    setxattr(&f, "user.kept", b"1", 0).unwrap();

    // A truncate whose batch panics in the daemon before it publishes.
    arm(&m, "node.publish=1*panic");
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    assert_eq!(errno(file.set_len(3)), libc::EIO, "the panicking request fails with EIO");
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 11, "the file keeps its size");
    assert_eq!(std::fs::read(&f).unwrap(), b"hello world", "and its bytes");

    // An xattr change, same story.
    arm(&m, "node.publish=1*panic");
    assert_eq!(errno(setxattr(&f, "user.new", b"2", 0)), libc::EIO);
    assert_eq!(errno(getxattr(&f, "user.new")), libc::ENODATA, "nothing was published");
    assert_eq!(getxattr(&f, "user.kept").unwrap(), b"1");

    // The same file (its runner role was released) and the rest of the mount still work.
    file.set_len(5).unwrap();
    drop(file);
    assert_eq!(std::fs::read(&f).unwrap(), b"hello");
    let g = m.path.join("g");
    std::fs::write(&g, vec![7u8; 300_000]).unwrap();
    assert_eq!(std::fs::read(&g).unwrap(), vec![7u8; 300_000]);
    std::fs::create_dir(m.path.join("d")).unwrap();
    assert_eq!(std::fs::read_dir(&m.path).unwrap().count(), 3);

    // A refused region is ENOMEM, and the mount serves again afterwards.
    arm(&m, "region.map=return");
    let h = m.path.join("h");
    let mut file = std::fs::File::create(&h).unwrap();
    let r = file.write_all(&vec![1u8; 4 << 20]).and_then(|()| file.sync_all());
    drop(file);
    arm(&m, "region.map=");
    assert_eq!(errno(r), libc::ENOMEM, "a write the OS has no memory for fails with ENOMEM");
    std::fs::write(&h, vec![2u8; 4 << 20]).unwrap();
    assert_eq!(std::fs::read(&h).unwrap(), vec![2u8; 4 << 20]);
}

#[test]
fn a_reply_that_cannot_be_sent_becomes_eio() {
    let Some(m) = Mount::new(&[]) else { return };
    std::fs::write(m.path.join("f"), b"x").unwrap();
    // The arming request's own reply passes; the next reply write fails
    // once (as if the kernel had refused it), then all pass again.
    arm(&m, "fuse.reply=1*off->1*return->off");
    assert_eq!(errno(std::fs::File::create(m.path.join("g"))), libc::EIO, "the caller gets EIO, not a hang");
    arm(&m, "fuse.reply=");
    std::fs::write(m.path.join("h"), b"y").unwrap();
    assert_eq!(std::fs::read(m.path.join("h")).unwrap(), b"y", "the mount keeps serving");
    assert_eq!(std::fs::read(m.path.join("f")).unwrap(), b"x");
}
