//! Extended attributes: read from the node's published snapshot, changed
//! through its actor.

use std::borrow::Cow;

use crate::acl::{Acl, AclKind};
use crate::node::Op;
use crate::types::*;
use crate::{Engine, Error, Result};

impl Engine {
    /// Sets extended attribute `name` (`flags`: [`xattr_flags`]).
    ///
    /// # Errors
    /// `NotFound`, `Exists` (`CREATE`), `NoData` (`REPLACE`), `Range` (empty
    /// or over-long name), `TooBig` (value over 64 KiB), `NotSupported`
    /// (namespace other than `user.`, `trusted.`, `security.`), `InvalidArgument`,
    /// `NoSpace` (the metadata limit, [`crate::budget`]: the new value is
    /// charged before the old one is given back).
    /// With `Config::posix_acl`, the ACL names go to [`Engine::set_acl`].
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        let _gate = self.gate.enter();
        if let Some(kind) = self.acl_kind(name) {
            return self.set_acl(ino, kind, Some(value), flags, false);
        }
        let n = self.node(ino)?;
        let op = Op::SetXattr { name: Cow::Borrowed(name), value: Cow::Borrowed(value), flags };
        n.submit(&self.cx(), &self.logical, op).map(|_| ())
    }

    /// The value of extended attribute `name`.
    ///
    /// # Errors
    /// `NotFound`, `NoData`, name errors as [`Engine::setxattr`].
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        if self.acl_kind(name).is_none() {
            crate::node::check_xattr_name(name)?;
        }
        let n = self.node(ino)?;
        let s = n.load();
        s.xattrs.as_ref().and_then(|x| x.get(name)).map(|v| v.to_vec()).ok_or(Error::NoData)
    }

    /// The names of all extended attributes, each followed by a NUL.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let n = self.node(ino)?;
        let s = n.load();
        let mut out = Vec::new();
        if let Some(x) = &s.xattrs {
            for k in x.keys() {
                out.extend_from_slice(k);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// Removes extended attribute `name`.
    ///
    /// # Errors
    /// `NotFound`, `NoData`, name errors.
    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        let _gate = self.gate.enter();
        if let Some(kind) = self.acl_kind(name) {
            return self.set_acl(ino, kind, None, 0, false);
        }
        let n = self.node(ino)?;
        n.submit(&self.cx(), &self.logical, Op::RemoveXattr { name: Cow::Borrowed(name) }).map(|_| ())
    }

    /// The ACL an attribute name stands for, when `Config::posix_acl` is on.
    fn acl_kind(&self, name: &[u8]) -> Option<AclKind> {
        if self.cfg.posix_acl {
            AclKind::of_name(name)
        } else {
            None
        }
    }

    /// Sets (`value`: a `posix_acl_xattr` value) or removes (`None`, or a
    /// value with no entries) the access or default ACL of `ino`, as
    /// Linux's tmpfs does: setting an access ACL sets the permission bits
    /// from it and stores it only if it says more than they do; removing
    /// one leaves the mode as it is, and removing an absent ACL succeeds.
    /// `kill_sgid`: the caller is unprivileged and outside the file's
    /// group, so setting an access ACL clears the set-group-ID bit. Who may
    /// set an ACL (the owner, or a privileged caller) is the frontend's
    /// check; the Linux kernel makes it before the request reaches us.
    ///
    /// # Errors
    /// `NotFound`; `NotSupported` (ACLs off in the `Config`, a symlink, a
    /// format version other than 2); `InvalidArgument` (a malformed or
    /// invalid ACL, see [`Acl::parse`]); `Access` (a default ACL on a
    /// non-directory); `TooBig`; `Exists`/`NoData` (`flags`: [`xattr_flags`]);
    /// `NoSpace` (the metadata limit).
    ///
    /// # References
    /// `acl(5)`, `setfacl(1)`, Linux `fs/posix_acl.c`
    pub fn set_acl(&self, ino: Ino, kind: AclKind, value: Option<&[u8]>, flags: u32, kill_sgid: bool) -> Result<()> {
        if !self.cfg.posix_acl {
            return Err(Error::NotSupported);
        }
        if flags & !(xattr_flags::CREATE | xattr_flags::REPLACE) != 0
            || flags == xattr_flags::CREATE | xattr_flags::REPLACE
        {
            return Err(Error::InvalidArgument);
        }
        let acl = match value {
            Some(v) => Acl::parse(v)?,
            None => None,
        };
        let n = self.node(ino)?;
        let _gate = self.gate.enter();
        n.submit(&self.cx(), &self.logical, Op::SetAcl { kind, acl, flags, kill_sgid }).map(|_| ())
    }
}
