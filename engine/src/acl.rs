//! POSIX access control lists: the `posix_acl_xattr` format, validation,
//! and keeping an ACL and the mode bits in step, as Linux's `fs/posix_acl.c`
//! does for tmpfs. Platform-neutral and pure; the engine stores ACLs as the
//! extended attributes [`ACCESS`] and [`DEFAULT`] (only when
//! `Config::posix_acl` is on) and applies the rules below in the node's
//! actor (set, chmod) and in `make` (inheritance on create).
//!
//! # Format
//! A little-endian header `u32` version ([`VERSION`] = 2), then 8-byte
//! entries: tag `u16`, permission `u16` (`rwx` = 4/2/1), id `u32` (a uid for
//! [`tag::USER`], a gid for [`tag::GROUP`], unused otherwise). A valid ACL
//! is ordered as Linux requires: one `USER_OBJ`, `USER`s, one `GROUP_OBJ`,
//! `GROUP`s, a `MASK` (required when there is a `USER` or `GROUP`), one
//! `OTHER`.
//!
//! # Rules (Linux `posix_acl_equiv_mode`, `__posix_acl_chmod`,
//! `posix_acl_create_masq`)
//! * Setting an access ACL sets the permission bits from it (owner from
//!   `USER_OBJ`, group from `MASK` or else `GROUP_OBJ`, other from `OTHER`);
//!   an ACL with only those three entries says nothing more than the mode
//!   and is not stored.
//! * `chmod` rewrites the stored access ACL's `USER_OBJ`, `MASK` (or
//!   `GROUP_OBJ`) and `OTHER` from the new mode.
//! * A node made in a directory with a default ACL inherits it: the access
//!   ACL is the default ACL with `USER_OBJ`, `MASK` (or `GROUP_OBJ`) and
//!   `OTHER` cut down to the requested mode, and the mode cut down to the
//!   ACL; the umask is not applied. Directories also take it as their own
//!   default ACL. Symlinks inherit nothing.

use crate::{Error, Result};

/// The access ACL's extended attribute name.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
/// The default ACL's extended attribute name (directories only).
pub const DEFAULT: &[u8] = b"system.posix_acl_default";
/// The format version in the header.
pub const VERSION: u32 = 2;

/// Entry tags.
pub mod tag {
    /// The owner.
    pub const USER_OBJ: u16 = 0x01;
    /// A named user.
    pub const USER: u16 = 0x02;
    /// The owning group.
    pub const GROUP_OBJ: u16 = 0x04;
    /// A named group.
    pub const GROUP: u16 = 0x08;
    /// The upper bound for the group class.
    pub const MASK: u16 = 0x10;
    /// Everyone else.
    pub const OTHER: u16 = 0x20;
}

/// Which ACL of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclKind {
    /// The access ACL ([`ACCESS`]).
    Access,
    /// The default ACL of a directory ([`DEFAULT`]).
    Default,
}

impl AclKind {
    /// The kind an extended attribute name stands for, if it is an ACL name.
    pub fn of_name(name: &[u8]) -> Option<AclKind> {
        match name {
            ACCESS => Some(AclKind::Access),
            DEFAULT => Some(AclKind::Default),
            _ => None,
        }
    }

    /// The extended attribute name.
    pub fn name(self) -> &'static [u8] {
        match self {
            AclKind::Access => ACCESS,
            AclKind::Default => DEFAULT,
        }
    }
}

/// One entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// One of [`tag`].
    pub tag: u16,
    /// `rwx` bits (4/2/1).
    pub perm: u16,
    /// User or group id (`USER`, `GROUP`); kept as given for other tags.
    pub id: u32,
}

/// A parsed, valid ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    /// Entries in the order Linux requires.
    pub entries: Vec<Entry>,
}

impl Acl {
    /// Parses and validates an ACL attribute value. `Ok(None)`: a header
    /// with no entries, which Linux reads as "no ACL".
    ///
    /// # Errors
    /// `InvalidArgument` (short, ragged, unknown tag, permission bits beyond
    /// `rwx`, entries out of order or missing, a `USER`/`GROUP` without
    /// `MASK`), `NotSupported` (another version), `TooBig` (over 64 KiB).
    pub fn parse(v: &[u8]) -> Result<Option<Acl>> {
        if v.len() > crate::types::XATTR_SIZE_MAX {
            return Err(Error::TooBig);
        }
        if v.len() < 4 || (v.len() - 4) % 8 != 0 {
            return Err(Error::InvalidArgument);
        }
        if u32::from_le_bytes([v[0], v[1], v[2], v[3]]) != VERSION {
            return Err(Error::NotSupported);
        }
        let entries: Vec<Entry> = v[4..]
            .chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        let acl = Acl { entries };
        acl.validate()?;
        Ok(Some(acl))
    }

    /// Checks the order and contents (Linux `posix_acl_valid`).
    fn validate(&self) -> Result<()> {
        // States: 0 want USER_OBJ, 1 in USERs, 2 in GROUPs, 3 after MASK, 4 done.
        let mut state = 0;
        let mut needs_mask = false;
        for e in &self.entries {
            if e.perm & !7 != 0 {
                return Err(Error::InvalidArgument);
            }
            state = match (e.tag, state) {
                (tag::USER_OBJ, 0) => 1,
                (tag::USER, 1) => {
                    needs_mask = true;
                    1
                }
                (tag::GROUP_OBJ, 1) => 2,
                (tag::GROUP, 2) => {
                    needs_mask = true;
                    2
                }
                (tag::MASK, 2) => 3,
                (tag::OTHER, 3) => 4,
                (tag::OTHER, 2) if !needs_mask => 4,
                _ => return Err(Error::InvalidArgument),
            };
        }
        if state == 4 {
            Ok(())
        } else {
            Err(Error::InvalidArgument)
        }
    }

    /// The attribute value.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 * self.entries.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    /// The permission bits (`0o777`) this ACL gives, and whether it says
    /// more than they can (it has a `USER`, `GROUP` or `MASK` entry).
    /// Linux `posix_acl_equiv_mode`.
    pub fn equiv_mode(&self) -> (u32, bool) {
        let mut mode = 0u32;
        let mut extended = false;
        for e in &self.entries {
            let p = u32::from(e.perm & 7);
            match e.tag {
                tag::USER_OBJ => mode |= p << 6,
                tag::GROUP_OBJ => mode |= p << 3,
                tag::OTHER => mode |= p,
                tag::MASK => {
                    mode = (mode & !0o070) | (p << 3);
                    extended = true;
                }
                _ => extended = true,
            }
        }
        (mode, extended)
    }

    /// Rewrites the owner, group class and other entries from `mode`
    /// (`chmod` of a node with this access ACL). Linux `__posix_acl_chmod`.
    pub fn chmod(&mut self, mode: u32) {
        let has_mask = self.entries.iter().any(|e| e.tag == tag::MASK);
        for e in &mut self.entries {
            match e.tag {
                tag::USER_OBJ => e.perm = ((mode >> 6) & 7) as u16,
                tag::OTHER => e.perm = (mode & 7) as u16,
                tag::MASK => e.perm = ((mode >> 3) & 7) as u16,
                tag::GROUP_OBJ if !has_mask => e.perm = ((mode >> 3) & 7) as u16,
                _ => {}
            }
        }
    }

    /// Cuts this (inherited default) ACL and the requested `mode` down to
    /// each other; returns the new mode (bits beyond `0o777` kept) and
    /// whether the ACL says more than the mode. Linux `posix_acl_create_masq`.
    pub fn create_masq(&mut self, mode: u32) -> (u32, bool) {
        let mut m = mode & 0o777;
        let mut extended = false;
        let has_mask = self.entries.iter().any(|e| e.tag == tag::MASK);
        for e in &mut self.entries {
            match e.tag {
                tag::USER_OBJ => {
                    e.perm &= ((m >> 6) & 7) as u16;
                    m &= (u32::from(e.perm) << 6) | !0o700;
                }
                tag::OTHER => {
                    e.perm &= (m & 7) as u16;
                    m &= u32::from(e.perm) | !0o007;
                }
                tag::GROUP_OBJ => {}
                _ => extended = true,
            }
        }
        // The group class: the mask if there is one, else the owning group.
        let class = if has_mask { tag::MASK } else { tag::GROUP_OBJ };
        if let Some(e) = self.entries.iter_mut().find(|e| e.tag == class) {
            e.perm &= ((m >> 3) & 7) as u16;
            m &= (u32::from(e.perm) << 3) | !0o070;
        }
        ((mode & !0o777) | m, extended)
    }
}

/// What a node made in a directory gets from that directory's default ACL
/// (`default`: its value, if any).
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    /// The permission bits.
    pub(crate) perm: u32,
    /// The new node's access ACL value, if it says more than `perm`.
    pub(crate) access: Option<Vec<u8>>,
    /// The new directory's default ACL value.
    pub(crate) default: Option<Vec<u8>>,
}

/// Applies a parent's default ACL or the umask to a new node's `perm`
/// (Linux `posix_acl_create`). `default` is the parent's default ACL
/// attribute value (already validated when it was stored).
pub(crate) fn inherit(default: Option<&[u8]>, perm: u32, umask: u32, dir: bool) -> Inherited {
    let parsed = default.and_then(|v| Acl::parse(v).ok().flatten());
    let Some(mut acl) = parsed else {
        return Inherited { perm: perm & !(umask & 0o777), ..Inherited::default() };
    };
    let (perm, extended) = acl.create_masq(perm);
    Inherited {
        perm,
        access: extended.then(|| acl.to_bytes()),
        default: if dir { default.map(<[u8]>::to_vec) } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: u32 = u32::MAX; // ACL_UNDEFINED_ID, as Linux writes it

    fn e(tag: u16, perm: u16, id: u32) -> Entry {
        Entry { tag, perm, id }
    }

    fn acl(entries: &[Entry]) -> Acl {
        Acl { entries: entries.to_vec() }
    }

    fn minimal(mode: u32) -> Acl {
        acl(&[
            e(tag::USER_OBJ, ((mode >> 6) & 7) as u16, U),
            e(tag::GROUP_OBJ, ((mode >> 3) & 7) as u16, U),
            e(tag::OTHER, (mode & 7) as u16, U),
        ])
    }

    /// `u::rw-,u:65534:r--,g::r--,m::r--,o::---`
    fn extended() -> Acl {
        acl(&[
            e(tag::USER_OBJ, 6, U),
            e(tag::USER, 4, 65534),
            e(tag::GROUP_OBJ, 4, U),
            e(tag::MASK, 4, U),
            e(tag::OTHER, 0, U),
        ])
    }

    #[test]
    fn round_trip_and_layout() {
        let a = extended();
        let b = a.to_bytes();
        assert_eq!(b.len(), 4 + 5 * 8);
        assert_eq!(&b[..4], &[2, 0, 0, 0]);
        assert_eq!(&b[12..20], &[2, 0, 4, 0, 0xfe, 0xff, 0, 0]);
        assert_eq!(Acl::parse(&b).unwrap(), Some(a));
        assert_eq!(Acl::parse(&[2, 0, 0, 0]).unwrap(), None);
    }

    #[test]
    fn bad_values_are_refused() {
        let good = extended().to_bytes();
        assert_eq!(Acl::parse(&[]), Err(Error::InvalidArgument));
        assert_eq!(Acl::parse(&good[..good.len() - 1]), Err(Error::InvalidArgument));
        let mut v1 = good.clone();
        v1[0] = 1;
        assert_eq!(Acl::parse(&v1), Err(Error::NotSupported));
        let bad = |entries: &[Entry]| Acl::parse(&acl(entries).to_bytes());
        // USER without MASK; wrong order; duplicate USER_OBJ; unknown tag; perm > rwx; no OTHER.
        assert_eq!(
            bad(&[e(tag::USER_OBJ, 6, U), e(tag::USER, 4, 1), e(tag::GROUP_OBJ, 4, U), e(tag::OTHER, 0, U)]),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            bad(&[e(tag::GROUP_OBJ, 4, U), e(tag::USER_OBJ, 6, U), e(tag::OTHER, 0, U)]),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            bad(&[e(tag::USER_OBJ, 6, U), e(tag::USER_OBJ, 6, U), e(tag::GROUP_OBJ, 4, U), e(tag::OTHER, 0, U)]),
            Err(Error::InvalidArgument)
        );
        assert_eq!(bad(&[e(tag::USER_OBJ, 6, U), e(0x40, 4, U), e(tag::OTHER, 0, U)]), Err(Error::InvalidArgument));
        assert_eq!(
            bad(&[e(tag::USER_OBJ, 8, U), e(tag::GROUP_OBJ, 4, U), e(tag::OTHER, 0, U)]),
            Err(Error::InvalidArgument)
        );
        assert_eq!(bad(&[e(tag::USER_OBJ, 6, U), e(tag::GROUP_OBJ, 4, U)]), Err(Error::InvalidArgument));
        // A MASK without named entries is valid.
        assert!(
            bad(&[e(tag::USER_OBJ, 6, U), e(tag::GROUP_OBJ, 4, U), e(tag::MASK, 0, U), e(tag::OTHER, 0, U)]).is_ok()
        );
    }

    #[test]
    fn equivalence_and_mode() {
        assert_eq!(minimal(0o640).equiv_mode(), (0o640, false));
        // The mask, not the owning group, gives the group bits.
        assert_eq!(extended().equiv_mode(), (0o640, true));
        let mut a = extended();
        a.entries[3].perm = 7;
        assert_eq!(a.equiv_mode(), (0o670, true));
    }

    #[test]
    fn chmod_updates_owner_mask_other() {
        let mut a = extended();
        a.chmod(0o751);
        assert_eq!(a.entries[0].perm, 7);
        assert_eq!(a.entries[1].perm, 4, "named entries stay");
        assert_eq!(a.entries[2].perm, 4, "the owning group stays when there is a mask");
        assert_eq!(a.entries[3].perm, 5);
        assert_eq!(a.entries[4].perm, 1);
        let mut m = minimal(0o600);
        m.chmod(0o754);
        assert_eq!(m, minimal(0o754));
    }

    #[test]
    fn inheritance_masks_both_ways() {
        // Default ACL u::rwx,u:65534:rwx,g::r-x,m::rwx,o::r-x; create with 0o644.
        let d = acl(&[
            e(tag::USER_OBJ, 7, U),
            e(tag::USER, 7, 65534),
            e(tag::GROUP_OBJ, 5, U),
            e(tag::MASK, 7, U),
            e(tag::OTHER, 5, U),
        ])
        .to_bytes();
        let f = inherit(Some(&d), 0o644, 0o077, false);
        assert_eq!(f.perm, 0o644, "the umask is not applied");
        let a = Acl::parse(f.access.as_deref().unwrap()).unwrap().unwrap();
        assert_eq!(a.entries.iter().map(|e| e.perm).collect::<Vec<_>>(), [6, 7, 5, 4, 4]);
        assert!(f.default.is_none());
        let dir = inherit(Some(&d), 0o2777, 0o077, true);
        assert_eq!(dir.perm, 0o2775);
        assert_eq!(dir.default.as_deref(), Some(&d[..]));
        // A minimal default ACL gives no access ACL, only the mode.
        let f = inherit(Some(&minimal(0o750).to_bytes()), 0o666, 0o022, false);
        assert_eq!((f.perm, f.access), (0o640, None));
        // No default ACL: the umask.
        let f = inherit(None, 0o666, 0o022, false);
        assert_eq!((f.perm, f.access, f.default), (0o644, None, None));
    }
}
