//! readdir and readdir_plus: order, resumable offsets, stability under
//! concurrent creates and deletes, and the lookup references of readdir_plus.

mod support;

use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use engine::{Engine, Error, FileType, Ino, ROOT};
use support::*;

/// `(name, next)` of every entry from `from`, including `.` and `..`.
fn list(e: &Engine, dir: Ino, from: u64) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    e.readdir(dir, from, |d| {
        out.push((d.name.to_vec(), d.next));
        true
    })
    .unwrap();
    out
}

#[test]
fn dots_then_creation_order() {
    let e = small();
    let d = mkdir(&e, ROOT, b"d");
    for n in [&b"zeta"[..], b"alpha", b"mid"] {
        mkfile(&e, d, n);
    }
    let mut seen = Vec::new();
    e.readdir(d, 0, |x| {
        seen.push((x.name.to_vec(), x.ino, x.kind));
        true
    })
    .unwrap();
    assert_eq!(seen[0], (b".".to_vec(), d, FileType::Directory));
    assert_eq!(seen[1], (b"..".to_vec(), ROOT, FileType::Directory));
    let rest: Vec<_> = seen[2..].iter().map(|x| x.0.clone()).collect();
    assert_eq!(rest, vec![b"zeta".to_vec(), b"alpha".to_vec(), b"mid".to_vec()]);
    // Offsets strictly increase.
    let l = list(&e, d, 0);
    assert!(l.windows(2).all(|w| w[0].1 < w[1].1));
    // An empty directory still has `.` and `..`.
    let empty = mkdir(&e, ROOT, b"empty");
    assert_eq!(list(&e, empty, 0).len(), 2);
    teardown(&e);
}

#[test]
fn resume_from_every_offset() {
    let e = small();
    for i in 0..50 {
        mkfile(&e, ROOT, format!("f{i}").as_bytes());
    }
    let all = list(&e, ROOT, 0);
    assert_eq!(all.len(), 52);
    // Resuming after entry i gives exactly the rest.
    for i in 0..all.len() {
        let rest = list(&e, ROOT, all[i].1);
        assert_eq!(rest, all[i + 1..].to_vec(), "resume after {i}");
    }
    // Listing one entry per call (the callback says stop) visits everything once.
    let mut off = 0;
    let mut one_by_one = Vec::new();
    loop {
        let mut got = None;
        e.readdir(ROOT, off, |d| {
            got = Some((d.name.to_vec(), d.next));
            false
        })
        .unwrap();
        match got {
            Some(x) => {
                off = x.1;
                one_by_one.push(x);
            }
            None => break,
        }
    }
    assert_eq!(one_by_one, all);
    // Past the end: nothing.
    assert!(list(&e, ROOT, u64::MAX).is_empty());
    teardown(&e);
}

#[test]
fn stable_while_entries_come_and_go() {
    let e = small();
    let stay: Vec<Vec<u8>> = (0..40).map(|i| format!("stay{i}").into_bytes()).collect();
    for (i, n) in stay.iter().enumerate() {
        mkfile(&e, ROOT, n);
        mkfile(&e, ROOT, format!("tmp{i}").as_bytes());
    }
    // Read in small chunks; between chunks, delete temporaries, create new
    // names, and rename some temporaries (a rename may show the entry under
    // both names or neither, but names present throughout appear once).
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut off = 0;
    let mut round = 0;
    loop {
        let mut n = 0;
        let mut last = None;
        e.readdir(ROOT, off, |d| {
            *seen.entry(d.name.to_vec()).or_default() += 1;
            last = Some(d.next);
            n += 1;
            n < 3
        })
        .unwrap();
        let Some(next) = last else { break };
        off = next;
        if round == stay.len() {
            continue;
        }
        let t = format!("tmp{round}");
        if round % 2 == 0 {
            let _ = e.unlink(ROOT, t.as_bytes());
        } else {
            let _ = e.rename(ROOT, t.as_bytes(), ROOT, format!("moved{round}").as_bytes(), 0);
        }
        mkfile(&e, ROOT, format!("new{round}").as_bytes());
        round += 1;
    }
    for n in &stay {
        assert_eq!(seen.get(n), Some(&1), "{}", String::from_utf8_lossy(n));
    }
    assert!(seen.values().all(|&c| c == 1), "no entry is reported twice");
    teardown(&e);
}

#[test]
fn readdir_errors() {
    let e = small();
    let f = mkfile(&e, ROOT, b"f");
    assert_eq!(e.readdir(f, 0, |_| true), Err(Error::NotDir));
    assert_eq!(e.readdir(9999, 0, |_| true), Err(Error::NotFound));
    assert_eq!(e.readdir_plus(f, 0, |_, _| true).err(), Some(Error::NotDir));
    assert_eq!(e.readdir_plus(9999, 0, |_, _| true).err(), Some(Error::NotFound));
    teardown(&e);
}

#[test]
fn readdir_plus_takes_references_for_accepted_entries() {
    let e = small();
    let d = mkdir(&e, ROOT, b"d");
    let a = put(&e, d, b"a", b"12345");
    let b = mkdir(&e, d, b"b");
    let c = mkfile(&e, d, b"c");
    let mut got = Vec::new();
    e.readdir_plus(d, 0, |x, attr| {
        assert_eq!(x.ino, attr.ino);
        assert_eq!(x.kind, attr.kind);
        got.push((x.name.to_vec(), attr.ino, attr.size, attr.nlink));
        true
    })
    .unwrap();
    assert_eq!(got[0], (b".".to_vec(), d, e.getattr(d).unwrap().size, 3));
    assert_eq!(got[1].0, b"..".to_vec());
    assert_eq!(got[1].1, ROOT);
    assert_eq!(got[2], (b"a".to_vec(), a, 5, 1));
    assert_eq!(got[3].1, b);
    assert_eq!(got[4].1, c);
    // a, b and c each hold one reference now: removing them keeps them.
    e.unlink(d, b"a").unwrap();
    e.rmdir(d, b"b").unwrap();
    e.unlink(d, b"c").unwrap();
    for ino in [a, b, c] {
        assert!(e.getattr(ino).is_ok(), "referenced by readdir_plus");
        e.forget(ino, 1);
        assert_eq!(e.getattr(ino), Err(Error::NotFound));
    }
    // `.` and `..` take none: d goes away with its name.
    e.rmdir(ROOT, b"d").unwrap();
    assert_eq!(e.getattr(d), Err(Error::NotFound));
    assert_empty(&e);
}

#[test]
fn readdir_plus_rejected_entry_takes_no_reference() {
    let e = small();
    let a = mkfile(&e, ROOT, b"a");
    let b = mkfile(&e, ROOT, b"b");
    let mut taken = Vec::new();
    // Accept `.`, `..`, `a`; reject `b` (the buffer is full): `b` is not
    // referenced, and the listing resumes at `b`.
    let mut next = 0;
    e.readdir_plus(ROOT, 0, |x, _| {
        if x.name == b"b" {
            return false;
        }
        taken.push(x.ino);
        next = x.next;
        true
    })
    .unwrap();
    assert_eq!(taken, vec![ROOT, ROOT, a]);
    e.unlink(ROOT, b"b").unwrap();
    assert_eq!(e.getattr(b), Err(Error::NotFound), "the rejected entry was not referenced");
    e.unlink(ROOT, b"a").unwrap();
    assert!(e.getattr(a).is_ok());
    e.forget(a, 1);
    mkfile(&e, ROOT, b"c");
    let rest: Vec<_> = list(&e, ROOT, next).into_iter().map(|x| x.0).collect();
    assert_eq!(rest, vec![b"c".to_vec()]);
    teardown(&e);
}

/// readdir_plus reports `.` and `..` with their attributes; a directory's
/// attributes read its entry count. Doing that under the directory's own
/// read lock (recursively) deadlocks as soon as a writer queues in between:
/// std's RwLock blocks new readers while a writer waits.
#[test]
fn readdir_plus_with_a_concurrent_writer_does_not_deadlock() {
    let e = Arc::new(small());
    for i in 0..4 {
        mkfile(&e, ROOT, format!("f{i}").as_bytes());
    }
    let d = mkdir(&e, ROOT, b"d");
    for dir in [ROOT, d] {
        let (tx, rx) = mpsc::channel();
        let e1 = Arc::clone(&e);
        std::thread::spawn(move || {
            let e2 = Arc::clone(&e1);
            let mut writer = None;
            let mut accepted = Vec::new();
            let r = e1.readdir_plus(dir, 0, |x, _| {
                if writer.is_none() {
                    // While this listing holds the directory, a writer queues up.
                    let e3 = Arc::clone(&e2);
                    writer = Some(std::thread::spawn(move || e3.create(dir, b"late", 0o644, 0, 0)));
                    std::thread::sleep(Duration::from_millis(100));
                }
                accepted.push(x.ino);
                true
            });
            let late = writer.unwrap().join().unwrap().unwrap();
            let _ = tx.send((r, accepted, late.ino));
        });
        let (r, accepted, late) = rx.recv_timeout(Duration::from_secs(20)).expect("readdir_plus deadlocked");
        r.unwrap();
        for ino in accepted.iter().skip(2) {
            e.forget(*ino, 1);
        }
        e.forget(late, 1);
    }
    teardown(&e);
}

#[test]
fn directory_size_grows_with_entries() {
    let e = small();
    let d = mkdir(&e, ROOT, b"d");
    let s0 = e.getattr(d).unwrap().size;
    mkfile(&e, d, b"x");
    assert!(e.getattr(d).unwrap().size > s0);
    e.unlink(d, b"x").unwrap();
    assert_eq!(e.getattr(d).unwrap().size, s0);
    teardown(&e);
}

/// A listing that stops at `readdir_end` taken when it starts lists each
/// entry once, even while every entry it returns is renamed away and back
/// (which moves the name to the end): xfstests generic/736 never finished.
#[test]
fn a_listing_to_its_end_survives_renames() {
    let e = Engine::new(engine::Config::default()).unwrap();
    let d = mkdir(&e, ROOT, b"d");
    for i in 0..100 {
        e.forget(e.create(d, format!("f{i}").as_bytes(), 0o644, 0, 0).unwrap().ino, 1);
    }
    let end = e.readdir_end(d).unwrap();
    let mut seen = Vec::new();
    let mut from = 0;
    loop {
        let mut batch = Vec::new();
        e.readdir_to(d, from, end, |x| {
            batch.push((x.name.to_vec(), x.next));
            batch.len() < 7
        })
        .unwrap();
        let Some(&(_, next)) = batch.last() else { break };
        from = next;
        for (name, _) in batch {
            if name != b"." && name != b".." {
                e.rename(d, &name, d, b"tmp", 0).unwrap();
                e.rename(d, b"tmp", d, &name, 0).unwrap();
            }
            seen.push(name);
        }
        assert!(seen.len() <= 102, "the listing did not end");
    }
    assert_eq!(seen.len(), 102, "each entry once, with . and ..");
    // A new listing sees them all (at their new cookies), and what came after.
    e.forget(e.create(d, b"late", 0o644, 0, 0).unwrap().ino, 1);
    let mut n = 0;
    e.readdir_to(d, 0, e.readdir_end(d).unwrap(), |_| {
        n += 1;
        true
    })
    .unwrap();
    assert_eq!(n, 103);
}
