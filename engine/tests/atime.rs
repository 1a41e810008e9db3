//! Access times on read (`Config::atime`, the mount's `--atime`): `relatime`
//! updates on the first read after a change or a day after the last update,
//! and never twice for one change; `noatime` never; `strictatime` on every
//! read. Reads of data (`read`, `read_with`), directory listings and symlink
//! reads count; an access changes no other time.

mod support;

use engine::{inode_flags, Atime, Config, Engine, SetAttr, SetTime, Time, ROOT};
use support::*;

fn engine(atime: Atime) -> Engine {
    Engine::new(Config { atime, ..cfg(4096, 64 << 20, 4096) }).unwrap()
}

fn set_atime(e: &Engine, ino: u64, t: Time) {
    e.setattr(ino, &SetAttr { atime: Some(SetTime::At(t)), ..SetAttr::default() }).unwrap();
}

fn atime(e: &Engine, ino: u64) -> Time {
    e.getattr(ino).unwrap().atime
}

/// A kind of read: its name, the node it reads, the read.
type Read<'a> = (&'static str, u64, Box<dyn Fn() + 'a>);

/// Each kind of read, on a node of each kind.
fn reads(e: &Engine, f: u64, d: u64, l: u64) -> [Read<'_>; 4] {
    [
        ("read", f, Box::new(move || assert!(e.read(f, 0, &mut [0u8; 4]).is_ok()))),
        ("read_with", f, Box::new(move || e.read_with(f, 0, 4, |s| assert!(!s.is_empty())).unwrap())),
        ("readdir", d, Box::new(move || e.readdir(d, 0, |_| true).unwrap())),
        ("readlink", l, Box::new(move || assert_eq!(e.readlink(l).unwrap(), b"f"))),
    ]
}

#[test]
fn relatime_updates_once_per_change() {
    let e = engine(Atime::Relative);
    let d = mkdir(&e, ROOT, b"d");
    let f = put(&e, d, b"f", &vec![1u8; 10_000]);
    let l = e.symlink(d, b"l", b"f", 0, 0).unwrap().ino;
    for (what, ino, read) in reads(&e, f, d, l) {
        // Accessed after its last change (setting it is a change, so an
        // access time after it is in the future): reads leave it.
        set_atime(&e, ino, Time { secs: Time::now().secs + 60, nanos: 0 });
        let before = e.getattr(ino).unwrap();
        read();
        assert_eq!(e.getattr(ino).unwrap(), before, "{what}: an access after the last change updated");
        // Older than its last change: the next read updates it, once.
        set_atime(&e, ino, Time { secs: 1, nanos: 0 });
        let stale = e.getattr(ino).unwrap();
        read();
        let after = e.getattr(ino).unwrap();
        assert!(after.atime >= stale.ctime, "{what}: not updated ({:?} < {:?})", after.atime, stale.ctime);
        assert_eq!((after.mtime, after.ctime, after.size), (stale.mtime, stale.ctime, stale.size), "{what}");
        read();
        assert_eq!(e.getattr(ino).unwrap().atime, after.atime, "{what}: updated twice for one change");
    }
    e.forget(l, 1);
    teardown(&e);
}

/// The rule itself, with a day-old access time (which no `setattr` can
/// make: setting it changes the change time).
#[test]
fn relatime_is_due_after_a_change_or_a_day() {
    let now = Time::now().secs;
    let t = |secs| Time { secs, nanos: 0 };
    let r = Atime::Relative;
    assert!(r.due(t(now - 10), t(now - 5), t(now - 20)), "modified after the access");
    assert!(r.due(t(now - 10), t(now - 20), t(now - 10)), "changed at the access");
    assert!(!r.due(t(now - 10), t(now - 20), t(now - 20)), "accessed since");
    assert!(r.due(t(now - 86_400 - 60), t(0), t(0)), "a day old");
    assert!(!r.due(t(now - 86_400 + 60), t(0), t(0)), "less than a day old");
    // The ends of the range: no overflow.
    assert!(r.due(t(i64::MIN), t(i64::MIN), t(i64::MIN)));
    assert!(!r.due(t(i64::MAX), t(0), t(0)), "far in the future");
    assert!(r.due(t(i64::MIN + 1), t(i64::MIN), t(i64::MIN)), "far in the past");
    assert!(!Atime::Never.due(t(0), t(now), t(now)));
    assert!(Atime::Always.due(t(now + 100), t(0), t(0)));
}

#[test]
fn a_write_makes_the_next_read_update() {
    let e = engine(Atime::Relative);
    let f = put(&e, ROOT, b"f", b"hello");
    let mut buf = [0u8; 5];
    e.read(f, 0, &mut buf).unwrap();
    let a1 = atime(&e, f);
    e.read(f, 0, &mut buf).unwrap();
    assert_eq!(atime(&e, f), a1, "two reads, one change");
    std::thread::sleep(std::time::Duration::from_millis(5));
    e.write(f, 0, b"HELLO").unwrap();
    let m = e.getattr(f).unwrap().mtime;
    assert!(a1 < m);
    e.read(f, 0, &mut buf).unwrap();
    assert!(atime(&e, f) >= m, "the read after a write did not update");
    teardown(&e);
}

#[test]
fn noatime_never_and_strictatime_always() {
    for (mode, updates) in [(Atime::Never, false), (Atime::Always, true)] {
        let e = engine(mode);
        let d = mkdir(&e, ROOT, b"d");
        let f = put(&e, d, b"f", &vec![1u8; 10_000]);
        let l = e.symlink(d, b"l", b"f", 0, 0).unwrap().ino;
        for (what, ino, read) in reads(&e, f, d, l) {
            // Stale by every rule.
            set_atime(&e, ino, Time { secs: 1, nanos: 0 });
            read();
            assert_eq!(atime(&e, ino) != Time { secs: 1, nanos: 0 }, updates, "{mode:?} {what}");
            // Fresh by every rule: only strictatime updates.
            let fresh = Time { secs: Time::now().secs + 60, nanos: 0 };
            set_atime(&e, ino, fresh);
            read();
            assert_eq!(atime(&e, ino) != fresh, updates, "{mode:?} {what}");
        }
        e.forget(l, 1);
        teardown(&e);
    }
}

/// The engine's default is `noatime` (embedders and benches unchanged).
#[test]
fn the_default_is_never() {
    assert_eq!(Config::default().atime, Atime::Never);
}

/// `chattr +A` (`inode_flags::NOATIME`): no read updates the access time,
/// on any kind of node, whatever the mount's rule; new nodes in a
/// directory that has it (or `NODUMP`) inherit it, as on tmpfs.
#[test]
fn noatime_flag_keeps_the_access_time_and_is_inherited() {
    let e = engine(Atime::Always);
    let d = mkdir(&e, ROOT, b"d");
    let flags = |f| SetAttr { inode_flags: Some(f), ..SetAttr::default() };
    e.setattr(d, &flags(inode_flags::NOATIME | inode_flags::NODUMP)).unwrap();
    let f = put(&e, d, b"f", &vec![1u8; 10_000]);
    let l = e.symlink(d, b"l", b"f", 0, 0).unwrap().ino;
    let sub = mkdir(&e, d, b"sub");
    for ino in [f, l, sub] {
        let got = e.getattr(ino).unwrap().flags & inode_flags::ALL;
        assert_eq!(got, inode_flags::NOATIME | inode_flags::NODUMP, "inode {ino} did not inherit");
    }
    for (what, ino, read) in reads(&e, f, d, l) {
        set_atime(&e, ino, Time { secs: 1, nanos: 0 });
        read();
        assert_eq!(atime(&e, ino), Time { secs: 1, nanos: 0 }, "{what}: updated under NOATIME");
    }
    // Cleared: reads update it again; the other flag stays.
    e.setattr(f, &flags(inode_flags::NODUMP)).unwrap();
    e.read(f, 0, &mut [0u8; 4]).unwrap();
    assert!(atime(&e, f).secs > 1, "not updated once NOATIME was cleared");
    assert_eq!(e.getattr(f).unwrap().flags & inode_flags::ALL, inode_flags::NODUMP);
    // Flags the engine does not keep are refused, and change nothing.
    for bad in [1 << 28, 1 << 31, inode_flags::NODUMP | 1 << 30] {
        assert_eq!(e.setattr(f, &flags(bad)), Err(engine::Error::NotSupported), "{bad:#x}");
    }
    assert_eq!(e.getattr(f).unwrap().flags & inode_flags::ALL, inode_flags::NODUMP);
    e.forget(l, 1);
}

/// The Windows attributes and the inode flags share `Attr::flags` and are
/// set apart: setting one leaves the other.
#[test]
fn windows_attributes_leave_the_inode_flags() {
    let e = engine(Atime::Never);
    let f = put(&e, ROOT, b"f", b"x");
    e.setattr(f, &SetAttr { inode_flags: Some(inode_flags::NODUMP), ..SetAttr::default() }).unwrap();
    e.setattr(f, &SetAttr { flags: Some(0x21), ..SetAttr::default() }).unwrap();
    assert_eq!(e.getattr(f).unwrap().flags, 0x21 | inode_flags::NODUMP);
    e.setattr(f, &SetAttr { flags: Some(u32::MAX), ..SetAttr::default() }).unwrap();
    assert_eq!(e.getattr(f).unwrap().flags, !inode_flags::ALL | inode_flags::NODUMP);
    e.setattr(f, &SetAttr { inode_flags: Some(0), ..SetAttr::default() }).unwrap();
    assert_eq!(e.getattr(f).unwrap().flags, !inode_flags::ALL);
}
