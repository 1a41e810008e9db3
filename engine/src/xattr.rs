//! Extended attributes: read from the node's published snapshot, changed
//! through its actor.

use std::borrow::Cow;

use crate::node::Op;
use crate::types::*;
use crate::{Engine, Error, Result};

impl Engine {
    /// Sets extended attribute `name` (`flags`: [`xattr_flags`]).
    ///
    /// # Errors
    /// `NotFound`, `Exists` (`CREATE`), `NoData` (`REPLACE`), `Range` (empty
    /// or over-long name), `TooBig` (value over 64 KiB), `NotSupported`
    /// (namespace other than `user.`, `trusted.`, `security.`), `InvalidArgument`.
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        let n = self.node(ino)?;
        let op = Op::SetXattr { name: Cow::Borrowed(name), value: Cow::Borrowed(value), flags };
        n.submit(&self.cx(), &self.logical, op).map(|_| ())
    }

    /// The value of extended attribute `name`.
    ///
    /// # Errors
    /// `NotFound`, `NoData`, name errors as [`Engine::setxattr`].
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        crate::node::check_xattr_name(name)?;
        let n = self.node(ino)?;
        let s = n.snap.load();
        s.xattrs.as_ref().and_then(|x| x.get(name)).map(|v| v.to_vec()).ok_or(Error::NoData)
    }

    /// The names of all extended attributes, each followed by a NUL.
    ///
    /// # Errors
    /// `NotFound`.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let n = self.node(ino)?;
        let s = n.snap.load();
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
        let n = self.node(ino)?;
        n.submit(&self.cx(), &self.logical, Op::RemoveXattr { name: Cow::Borrowed(name) }).map(|_| ())
    }
}
