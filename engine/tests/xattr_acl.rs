//! POSIX ACLs through the engine API (issue 20): the mode follows a set
//! access ACL, chmod rewrites it, equivalent ACLs are not stored, default
//! ACLs are inherited on create, and bad values change nothing.

use engine::acl::{tag, Acl, AclKind, Entry, ACCESS, DEFAULT};
use engine::{Config, Cred, Engine, Error, SetAttr, ROOT};

const U: u32 = u32::MAX;

fn engine(posix_acl: bool) -> Engine {
    Engine::new(Config { max_bytes: 16 << 20, posix_acl, ..Config::default() }).unwrap()
}

fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    Acl { entries: entries.iter().map(|&(tag, perm, id)| Entry { tag, perm, id }).collect() }.to_bytes()
}

/// `u::rw-,u:65534:r--,g::r--,m::r--,o::---`
fn reader_acl() -> Vec<u8> {
    acl(&[(tag::USER_OBJ, 6, U), (tag::USER, 4, 65534), (tag::GROUP_OBJ, 4, U), (tag::MASK, 4, U), (tag::OTHER, 0, U)])
}

#[test]
fn off_by_default() {
    let e = engine(false);
    let f = e.create(ROOT, b"f", 0o600, 0, 0).unwrap().ino;
    assert_eq!(e.setxattr(f, ACCESS, &reader_acl(), 0), Err(Error::NotSupported));
    assert_eq!(e.getxattr(f, ACCESS), Err(Error::NotSupported));
    assert_eq!(e.set_acl(f, AclKind::Access, None, 0, false), Err(Error::NotSupported));
}

#[test]
fn access_acl_sets_mode_and_chmod_sets_acl() {
    let e = engine(true);
    let f = e.create(ROOT, b"f", 0o4600, 0, 0).unwrap().ino;
    e.setxattr(f, ACCESS, &reader_acl(), 0).unwrap();
    // The mask gives the group bits; set-user-ID stays.
    assert_eq!(e.getattr(f).unwrap().perm, 0o4640);
    assert_eq!(e.getxattr(f, ACCESS).unwrap(), reader_acl());
    assert!(e.listxattr(f).unwrap().windows(ACCESS.len()).any(|w| w == ACCESS));
    // chmod rewrites owner, mask and other; the named entry stays.
    e.setattr(f, &SetAttr { mode: Some(0o751), ..SetAttr::default() }).unwrap();
    let want = acl(&[
        (tag::USER_OBJ, 7, U),
        (tag::USER, 4, 65534),
        (tag::GROUP_OBJ, 4, U),
        (tag::MASK, 5, U),
        (tag::OTHER, 1, U),
    ]);
    assert_eq!(e.getxattr(f, ACCESS).unwrap(), want);
    assert_eq!(e.getattr(f).unwrap().perm, 0o751);
    // Removing the ACL keeps the mode; removing it again succeeds.
    e.removexattr(f, ACCESS).unwrap();
    assert_eq!(e.getxattr(f, ACCESS), Err(Error::NoData));
    assert_eq!(e.getattr(f).unwrap().perm, 0o751);
    e.removexattr(f, ACCESS).unwrap();
}

#[test]
fn equivalent_acl_is_not_stored_and_sgid_can_drop() {
    let e = engine(true);
    let f = e.create(ROOT, b"f", 0o2670, 0, 0).unwrap().ino;
    e.setxattr(f, ACCESS, &reader_acl(), 0).unwrap();
    e.setxattr(f, ACCESS, &acl(&[(tag::USER_OBJ, 7, U), (tag::GROUP_OBJ, 5, U), (tag::OTHER, 4, U)]), 0).unwrap();
    assert_eq!(e.getxattr(f, ACCESS), Err(Error::NoData), "a minimal ACL replaces and removes the old one");
    assert_eq!(e.getattr(f).unwrap().perm, 0o2754);
    e.set_acl(f, AclKind::Access, Some(&reader_acl()), 0, true).unwrap();
    assert_eq!(e.getattr(f).unwrap().perm, 0o640, "set-group-ID dropped for an outsider");
}

#[test]
fn bad_values_and_wrong_kinds_change_nothing() {
    let e = engine(true);
    let f = e.create(ROOT, b"f", 0o600, 0, 0).unwrap().ino;
    let d = e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino;
    let l = e.symlink(ROOT, b"l", b"f", 0, 0).unwrap().ino;
    let mut bad = reader_acl();
    bad.pop();
    assert_eq!(e.setxattr(f, ACCESS, &bad, 0), Err(Error::InvalidArgument));
    // A named user without a mask.
    let no_mask = acl(&[(tag::USER_OBJ, 6, U), (tag::USER, 4, 7), (tag::GROUP_OBJ, 4, U), (tag::OTHER, 0, U)]);
    assert_eq!(e.setxattr(f, ACCESS, &no_mask, 0), Err(Error::InvalidArgument));
    let mut v1 = reader_acl();
    v1[0] = 1;
    assert_eq!(e.setxattr(f, ACCESS, &v1, 0), Err(Error::NotSupported));
    assert_eq!(e.setxattr(f, DEFAULT, &reader_acl(), 0), Err(Error::Access));
    assert_eq!(e.removexattr(f, DEFAULT), Ok(()));
    assert_eq!(e.setxattr(l, ACCESS, &reader_acl(), 0), Err(Error::NotSupported));
    assert_eq!(e.getattr(f).unwrap().perm, 0o600);
    assert_eq!(e.listxattr(f).unwrap(), b"");
    // Other system. names stay refused.
    assert_eq!(e.setxattr(d, b"system.other", b"x", 0), Err(Error::NotSupported));
}

#[test]
fn default_acl_is_inherited_atomically_with_create() {
    let e = engine(true);
    let d = e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino;
    let def = acl(&[
        (tag::USER_OBJ, 7, U),
        (tag::USER, 7, 65534),
        (tag::GROUP_OBJ, 5, U),
        (tag::MASK, 7, U),
        (tag::OTHER, 5, U),
    ]);
    e.setxattr(d, DEFAULT, &def, 0).unwrap();
    assert_eq!(e.getattr(d).unwrap().perm, 0o755, "a default ACL leaves the mode");

    let f = e.create_umask(d, b"f", 0o666, 0o077, 0, 0).unwrap();
    assert_eq!(f.perm, 0o664, "the umask is ignored, the mode cut by the ACL");
    let fa = acl(&[
        (tag::USER_OBJ, 6, U),
        (tag::USER, 7, 65534),
        (tag::GROUP_OBJ, 5, U),
        (tag::MASK, 6, U),
        (tag::OTHER, 4, U),
    ]);
    assert_eq!(e.getxattr(f.ino, ACCESS).unwrap(), fa);
    assert_eq!(e.getxattr(f.ino, DEFAULT), Err(Error::NoData));

    let sub = e.mkdir_umask(d, b"sub", 0o777, 0o077, 0, 0).unwrap();
    assert_eq!(sub.perm, 0o775);
    assert_eq!(e.getxattr(sub.ino, DEFAULT).unwrap(), def);
    assert_eq!(
        e.getxattr(sub.ino, ACCESS).unwrap(),
        acl(&[
            (tag::USER_OBJ, 7, U),
            (tag::USER, 7, 65534),
            (tag::GROUP_OBJ, 5, U),
            (tag::MASK, 7, U),
            (tag::OTHER, 5, U)
        ])
    );
    // Grandchildren inherit through the subdirectory.
    let g = e.create_umask(sub.ino, b"g", 0o600, 0o022, 0, 0).unwrap();
    assert_eq!(g.perm, 0o600);
    let node = e.mknod_umask(d, b"p", 0o010644, 0o022, 0, Cred::default()).unwrap();
    assert_eq!(node.perm, 0o644);
    assert!(e.getxattr(node.ino, ACCESS).is_ok());
    // Symlinks inherit nothing.
    let l = e.symlink(d, b"l", b"f", 0, 0).unwrap();
    assert_eq!(e.listxattr(l.ino).unwrap(), b"");

    // Without a default ACL: the umask.
    let plain = e.create_umask(ROOT, b"plain", 0o666, 0o022, 0, 0).unwrap();
    assert_eq!(plain.perm, 0o644);
    assert_eq!(e.listxattr(plain.ino).unwrap(), b"");
    // A minimal default ACL gives the mode and no access ACL.
    let m = e.mkdir(ROOT, b"m", 0o755, 0, 0).unwrap().ino;
    e.setxattr(m, DEFAULT, &acl(&[(tag::USER_OBJ, 7, U), (tag::GROUP_OBJ, 5, U), (tag::OTHER, 0, U)]), 0).unwrap();
    let mf = e.create_umask(m, b"f", 0o666, 0o000, 0, 0).unwrap();
    assert_eq!(mf.perm, 0o640);
    assert_eq!(e.getxattr(mf.ino, ACCESS), Err(Error::NoData));
}

/// An `O_TMPFILE` file inherits as `open(O_CREAT)` does: the directory's
/// default ACL (the umask ignored), or the umask; the group of a
/// set-group-ID directory. (It took none of them before.)
#[test]
fn tmpfile_inherits_as_create() {
    let e = engine(true);
    let d = e.mkdir(ROOT, b"d", 0o2777, 0, 100).unwrap().ino;
    let def = acl(&[
        (tag::USER_OBJ, 7, U),
        (tag::USER, 7, 65534),
        (tag::GROUP_OBJ, 5, U),
        (tag::MASK, 7, U),
        (tag::OTHER, 0, U),
    ]);
    e.setxattr(d, DEFAULT, &def, 0).unwrap();
    let t = e.tmpfile_umask(d, 0o666, 0o022, 65534, 65534).unwrap();
    assert_eq!((t.perm, t.uid, t.gid, t.nlink), (0o660, 65534, 100, 0));
    let want = acl(&[
        (tag::USER_OBJ, 6, U),
        (tag::USER, 7, 65534),
        (tag::GROUP_OBJ, 5, U),
        (tag::MASK, 6, U),
        (tag::OTHER, 0, U),
    ]);
    assert_eq!(e.getxattr(t.ino, ACCESS).unwrap(), want);
    assert_eq!(e.getxattr(t.ino, DEFAULT), Err(Error::NoData));
    // The same as a created file.
    let c = e.create_umask(d, b"c", 0o666, 0o022, 65534, 65534).unwrap();
    assert_eq!((c.perm, c.gid), (t.perm, t.gid));
    assert_eq!(e.getxattr(c.ino, ACCESS).unwrap(), want);
    // Without a default ACL: the umask; outside a set-group-ID directory:
    // the caller's group.
    let p = e.tmpfile_umask(ROOT, 0o666, 0o022, 5, 6).unwrap();
    assert_eq!((p.perm, p.uid, p.gid), (0o644, 5, 6));
    assert_eq!(e.listxattr(p.ino).unwrap(), b"");
}

/// A node's names stay listable: a new attribute that would make the list
/// of names pass 64 KiB (`XATTR_LIST_MAX`, what `listxattr(2)` can return)
/// is refused with `NoSpace`; replacing an existing one still works.
#[test]
fn the_list_of_names_stays_listable() {
    let e = Engine::new(Config { max_meta_bytes: 64 << 20, ..Config::default() }).unwrap();
    let f = e.create(ROOT, b"f", 0o600, 0, 0).unwrap().ino;
    let name = |i: usize| format!("user.{i:0>250}").into_bytes();
    let mut i = 0;
    let err = loop {
        match e.setxattr(f, &name(i), b"v", 0) {
            Ok(()) => i += 1,
            Err(err) => break err,
        }
        assert!(i < 1000, "never refused");
    };
    assert_eq!(err, Error::NoSpace);
    let list = e.listxattr(f).unwrap();
    assert!(list.len() <= engine::XATTR_LIST_MAX && list.len() + 256 > engine::XATTR_LIST_MAX, "{}", list.len());
    assert_eq!(i, engine::XATTR_LIST_MAX / 256);
    e.setxattr(f, &name(0), b"replaced", 0).unwrap();
    assert_eq!(e.getxattr(f, &name(0)).unwrap(), b"replaced");
}
