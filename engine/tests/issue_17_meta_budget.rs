//! Issue 17, item 4: metadata has a figure and a limit of its own
//! (`engine::budget`), so the sector limit and it together bound the heap.
//! Every way a user makes metadata grow (inodes, names, symlink targets,
//! extended attributes, ACLs, whiteouts, images) is charged; past the limit
//! the call that would exceed it fails with `NoSpace` and changes nothing;
//! removing things gives the charge back to the byte, whatever the path.

mod support;

use engine::acl::AclKind;
use engine::budget::{ENTRY_COST, EXTRA_COST, INODE_COST, PER_INODE, XATTR_COST};
use engine::image::ImageError;
use engine::{rename_flags, xattr_flags, Config, Engine, Error, FileType, ROOT};
use support::*;

fn engine(max_meta_bytes: u64) -> Engine {
    Engine::new(Config { max_meta_bytes, ..Config::default() }).unwrap()
}

fn meta(e: &Engine) -> u64 {
    e.stats().meta_bytes
}

/// What an empty engine charges: its root directory.
const ROOT_COST: u64 = INODE_COST + EXTRA_COST;

#[test]
fn the_default_limit_is_tmpfs_inode_space() {
    let e = Engine::new(Config { max_inodes: 5000, ..Config::default() }).unwrap();
    let st = e.stats();
    assert_eq!((st.meta_bytes, st.max_meta_bytes), (ROOT_COST, 5000 * PER_INODE));
}

#[test]
fn each_kind_of_metadata_is_charged_and_given_back() {
    let e = engine(1 << 20);
    let name = b"file.o";
    let f = mkfile(&e, ROOT, name);
    let file = INODE_COST + ENTRY_COST + name.len() as u64;
    assert_eq!(meta(&e), ROOT_COST + file);
    let d = mkdir(&e, ROOT, b"dir");
    let dir = INODE_COST + EXTRA_COST + ENTRY_COST + 3;
    assert_eq!(meta(&e), ROOT_COST + file + dir);
    let target = vec![b't'; 1000];
    let s = e.symlink(ROOT, b"ln", &target, 0, 0).unwrap().ino;
    e.forget(s, 1);
    let link = INODE_COST + EXTRA_COST + 1000 + ENTRY_COST + 2;
    assert_eq!(meta(&e), ROOT_COST + file + dir + link);
    // A hard link: an entry. An attribute: its cost, name and value.
    e.forget(e.link(f, d, b"again").unwrap().ino, 1);
    e.setxattr(f, b"user.k", &[1; 300], 0).unwrap();
    let extra = ENTRY_COST + 5 + XATTR_COST + 6 + 300;
    assert_eq!(meta(&e), ROOT_COST + file + dir + link + extra);
    // Replacing the value charges the new one and gives the old back.
    e.setxattr(f, b"user.k", &[2; 100], xattr_flags::REPLACE).unwrap();
    assert_eq!(meta(&e), ROOT_COST + file + dir + link + extra - 200);
    e.removexattr(f, b"user.k").unwrap();
    assert_eq!(meta(&e), ROOT_COST + file + dir + link + ENTRY_COST + 5);
    e.unlink(d, b"again").unwrap();
    e.unlink(ROOT, b"ln").unwrap();
    e.rmdir(ROOT, b"dir").unwrap();
    assert_eq!(meta(&e), ROOT_COST + file);
    // An attribute goes with its file.
    e.setxattr(f, b"user.k", &[1; 300], 0).unwrap();
    e.unlink(ROOT, name).unwrap();
    assert_eq!(meta(&e), ROOT_COST);
}

#[test]
fn an_open_unlinked_file_keeps_its_inode_charge_until_released() {
    let e = engine(1 << 20);
    let f = e.create(ROOT, b"f", 0o644, 0, 0).unwrap().ino;
    e.open(f).unwrap();
    e.unlink(ROOT, b"f").unwrap();
    assert_eq!(meta(&e), ROOT_COST + INODE_COST, "the entry is gone, the inode is not");
    e.release(f);
    e.forget(f, 1);
    assert_eq!(meta(&e), ROOT_COST);
    let t = e.tmpfile(ROOT, 0o600, 0, 0).unwrap().ino;
    assert_eq!(meta(&e), ROOT_COST + INODE_COST);
    e.release(t);
    e.forget(t, 1);
    assert_eq!(meta(&e), ROOT_COST);
}

#[test]
fn creating_past_the_limit_fails_and_changes_nothing() {
    let per = INODE_COST + ENTRY_COST + 8;
    let e = engine(ROOT_COST + 10 * per + per / 2);
    for i in 0..10 {
        mkfile(&e, ROOT, format!("f{i:07}").as_bytes());
    }
    let full = meta(&e);
    assert_eq!(e.create(ROOT, b"f0000010", 0o644, 0, 0).err(), Some(Error::NoSpace));
    assert_eq!(e.mkdir(ROOT, b"d0000010", 0o755, 0, 0).err(), Some(Error::NoSpace));
    assert_eq!(e.symlink(ROOT, b"s", b"t", 0, 0).err(), Some(Error::NoSpace));
    assert_eq!(e.tmpfile(ROOT, 0o600, 0, 0).err(), Some(Error::NoSpace));
    assert_eq!(e.stats().inodes, 11, "no inode was taken");
    let f0 = e.lookup(ROOT, b"f0000000").unwrap().ino;
    e.forget(f0, 1);
    // A link's name does not fit (the half left is less than an entry)...
    let long = vec![b'l'; 255];
    assert_eq!(e.link(f0, ROOT, &long).err(), Some(Error::NoSpace));
    assert_eq!(e.getattr(f0).unwrap().nlink, 1);
    // ...nor does an attribute that needs more than is left.
    assert_eq!(e.setxattr(f0, b"user.a", &vec![0; (per / 2) as usize], 0).err(), Some(Error::NoSpace));
    assert_eq!(e.getxattr(f0, b"user.a").err(), Some(Error::NoData));
    assert_eq!(meta(&e), full, "nothing was charged by the failures");
    // Renaming to a name no longer than the old one always works at the
    // limit; a longer one that does not fit fails and changes nothing.
    e.rename(ROOT, b"f0000000", ROOT, b"g", 0).unwrap();
    assert_eq!(meta(&e), full - 7);
    let longer = vec![b'x'; 250];
    assert_eq!(e.rename(ROOT, b"g", ROOT, &longer, 0).err(), Some(Error::NoSpace));
    assert_eq!(e.lookup(ROOT, b"g").map(|a| a.ino), Ok(f0));
    e.forget(f0, 1);
    // Deleting makes room again.
    e.unlink(ROOT, b"g").unwrap();
    e.unlink(ROOT, b"f0000001").unwrap();
    mkfile(&e, ROOT, b"f0000010");
    mkfile(&e, ROOT, b"f0000011");
}

#[test]
fn many_attributes_on_one_file_stop_at_the_limit() {
    // Before: nothing bounded the attributes of one inode (ARCHITECTURE,
    // departures): 64 KiB values, as many as asked.
    let e = engine(4 << 20);
    let f = mkfile(&e, ROOT, b"f");
    let value = vec![7u8; 65536];
    let mut set = 0;
    let err = loop {
        match e.setxattr(f, format!("user.{set}").as_bytes(), &value, 0) {
            Ok(()) => set += 1,
            Err(err) => break err,
        }
    };
    assert_eq!(err, Error::NoSpace);
    assert_eq!(set, 63, "4 MiB of 64 KiB values, less the costs");
    assert!(meta(&e) <= 4 << 20);
    e.unlink(ROOT, b"f").unwrap();
    assert_eq!(meta(&e), ROOT_COST);
}

#[test]
fn acls_inherited_and_set_are_charged() {
    let e = Engine::new(Config { posix_acl: true, max_meta_bytes: 1 << 20, ..Config::default() }).unwrap();
    let d = mkdir(&e, ROOT, b"d");
    // user::rwx, user:1000:r-x, group::r-x, mask::r-x, other::---
    let acl: Vec<u8> = {
        let mut v = vec![2, 0, 0, 0];
        for (tag, perm, id) in
            [(1u16, 7u16, u32::MAX), (2, 5, 1000), (4, 5, u32::MAX), (0x10, 5, u32::MAX), (0x20, 0, u32::MAX)]
        {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    };
    let before = meta(&e);
    e.set_acl(d, AclKind::Default, Some(&acl), 0, false).unwrap();
    let one = XATTR_COST + b"system.posix_acl_default".len() as u64 + acl.len() as u64;
    assert_eq!(meta(&e), before + one);
    // A file made in it inherits an access ACL; a directory both.
    let f = mkfile(&e, d, b"f");
    let sub = mkdir(&e, d, b"sub");
    let st = e.stats().meta_bytes;
    assert!(st > before + one + 2 * INODE_COST + EXTRA_COST + 2 * 3 * XATTR_COST / 2, "{st}");
    e.unlink(d, b"f").unwrap();
    e.rmdir(d, b"sub").unwrap();
    assert_eq!(meta(&e), before + one);
    let _ = (f, sub);
}

/// A device with a number keeps it in a boxed part of its node, and is
/// charged for it; a 0/0 device (a whiteout) has none.
#[test]
fn device_numbers_are_charged() {
    let e = engine(1 << 20);
    let before = meta(&e);
    let a = e.mknod(ROOT, b"tty", 0o020_644, 0x0501, 0, 0).unwrap();
    assert_eq!((a.kind, a.rdev), (FileType::CharDevice, 0x0501));
    assert_eq!(meta(&e), before + INODE_COST + EXTRA_COST + ENTRY_COST + 3);
    let z = e.mknod(ROOT, b"zero", 0o020_644, 0, 0, 0).unwrap();
    assert_eq!(z.rdev, 0);
    assert_eq!(meta(&e), before + 2 * INODE_COST + EXTRA_COST + 2 * ENTRY_COST + 7);
    assert_eq!(e.getattr(a.ino).unwrap().rdev, 0x0501);
    for (name, ino) in [(&b"tty"[..], a.ino), (b"zero", z.ino)] {
        e.forget(ino, 1);
        e.unlink(ROOT, name).unwrap();
    }
    assert_eq!(meta(&e), before);
}

#[test]
fn whiteouts_are_charged_like_the_nodes_they_are() {
    let e = engine(1 << 20);
    mkfile(&e, ROOT, b"src");
    let before = meta(&e);
    e.rename(ROOT, b"src", ROOT, b"dst", rename_flags::WHITEOUT).unwrap();
    let w = e.lookup(ROOT, b"src").unwrap();
    assert_eq!(w.kind, FileType::CharDevice);
    e.forget(w.ino, 1);
    assert_eq!(meta(&e), before + INODE_COST + ENTRY_COST + 3);
    e.unlink(ROOT, b"src").unwrap();
    e.unlink(ROOT, b"dst").unwrap();
    assert_eq!(meta(&e), ROOT_COST);
}

#[test]
fn a_random_namespace_gives_every_byte_back() {
    // Case-insensitive too: stored names and keys differ there.
    for ci in [false, true] {
        let e = Engine::new(Config { case_insensitive: ci, max_meta_bytes: 64 << 20, ..Config::default() }).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let d = [mkdir(&e, ROOT, b"a"), mkdir(&e, ROOT, b"B"), ROOT];
        let name = |i: u64| {
            let mut s = format!("n{i}").into_bytes();
            s.resize(1 + (i as usize * 37) % 200, b'Q');
            s
        };
        for _ in 0..20_000 {
            let (p, q) = (d[rnd(3) as usize], d[rnd(3) as usize]);
            let (a, b) = (name(rnd(64)), name(rnd(64)));
            let _ = match rnd(8) {
                0 => e.create(p, &a, 0o644, 0, 0).map(|at| e.forget(at.ino, 1)),
                1 => e.symlink(p, &a, &b, 0, 0).map(|at| e.forget(at.ino, 1)),
                2 => e.lookup(p, &a).and_then(|at| {
                    e.forget(at.ino, 1);
                    e.link(at.ino, q, &b).map(|l| e.forget(l.ino, 1))
                }),
                3 => e.rename(p, &a, q, &b, [0, rename_flags::NOREPLACE, rename_flags::WHITEOUT][rnd(3) as usize]),
                4 => e.rename(p, &a, q, &b, rename_flags::EXCHANGE),
                5 => e.lookup(p, &a).and_then(|at| {
                    e.forget(at.ino, 1);
                    e.setxattr(at.ino, &[b"user.", &b[..b.len().min(20)]].concat(), &b, 0)
                }),
                6 => e.rename(p, &a, p, &a.to_ascii_uppercase(), 0),
                _ => e.unlink(p, &a),
            };
        }
        for p in d {
            let mut names = Vec::new();
            e.readdir(p, 0, |de| {
                if de.kind != FileType::Directory {
                    names.push(de.name.to_vec());
                }
                true
            })
            .unwrap();
            for n in names {
                e.unlink(p, &n).unwrap();
            }
        }
        e.rmdir(ROOT, b"a").unwrap();
        e.rmdir(ROOT, b"B").unwrap();
        assert_eq!(meta(&e), ROOT_COST, "case-insensitive: {ci}");
    }
}

#[test]
fn an_image_with_more_metadata_than_the_limit_is_refused() {
    let e = engine(1 << 20);
    for i in 0..100 {
        let f = mkfile(&e, ROOT, format!("file{i}").as_bytes());
        e.setxattr(f, b"user.x", &[1; 1000], 0).unwrap();
    }
    let charged = meta(&e);
    let mut img = Vec::new();
    e.snapshot().write_to(&mut img, &[]).unwrap();
    // Loaded with room: the same charge.
    let ok = Engine::load_image(&img[..], |i| Ok(Config { max_inodes: 1000, ..i.config.clone() })).unwrap();
    assert_eq!(ok.stats().meta_bytes, charged);
    assert_eq!(ok.stats().max_meta_bytes, 1000 * PER_INODE);
    // With a whole number of inodes' worth just short of it (about 36 KB of
    // inodes and names and 117 KB of attributes) it does not fit.
    let n = charged / PER_INODE;
    assert!(n * PER_INODE < charged && n >= 101);
    let err = Engine::load_image(&img[..], |i| Ok(Config { max_inodes: n, ..i.config.clone() })).err();
    match err {
        Some(ImageError::TooMuchMetadata { needed, limit }) => assert_eq!((needed, limit), (charged, n * PER_INODE)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn free_inodes_follow_the_metadata_left() {
    // 100 inodes' worth: an empty engine shows 99 free (the root takes one),
    // whichever limit binds; attributes that use up the metadata leave none.
    let e = Engine::new(Config { max_inodes: 100, ..Config::default() }).unwrap();
    assert_eq!(e.statfs().ffree, 99);
    mkfile(&e, ROOT, b"a");
    assert_eq!(e.statfs().ffree, 98, "an empty file charges less than 1 KiB: the count binds");
    let f = mkfile(&e, ROOT, b"f");
    let mut i = 0;
    for size in [4000, 1] {
        while e.setxattr(f, format!("user.{i}").as_bytes(), &vec![0; size], 0).is_ok() {
            i += 1;
        }
    }
    assert_eq!(e.statfs().ffree, 0, "no metadata left for another inode: df -i shows it full");
    assert_eq!(e.create(ROOT, b"g", 0o644, 0, 0).err(), Some(Error::NoSpace));
    e.unlink(ROOT, b"f").unwrap();
    assert_eq!(e.statfs().ffree, 98);
}

/// An image whose attributes alone pass the metadata limit is refused as
/// soon as they do, not after all of them were loaded (a probe's 250 MiB
/// of attributes took 250 MiB of heap under a limit of 1 MB first).
#[test]
fn an_image_over_the_metadata_limit_is_refused_early() {
    let e = engine(1 << 24);
    for i in 0..200 {
        let f = mkfile(&e, ROOT, format!("file{i}").as_bytes());
        e.setxattr(f, b"user.x", &[1; 60_000], 0).unwrap();
    }
    let charged = meta(&e);
    let mut img = Vec::new();
    e.snapshot().write_to(&mut img, &[]).unwrap();
    let err = Engine::load_image(&img[..], |i| Ok(Config { max_inodes: 300, ..i.config.clone() })).err();
    match err {
        Some(ImageError::TooMuchMetadata { needed, limit }) => {
            assert_eq!(limit, 300 * PER_INODE);
            assert!(needed > limit && needed < limit + 70_000, "refused after {needed} of {charged} bytes");
        }
        other => panic!("{other:?}"),
    }
}
