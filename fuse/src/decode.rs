//! Request decoding: one message's bytes to a [`Request`].
//!
//! Both transports share it. The classic channel hands over the whole
//! message as read from `/dev/fuse` ([`decode_classic`]); an io_uring entry
//! hands over its three areas ([`decode_ring`]): the `fuse_in_header`, the
//! opcode's fixed argument struct (`op_in`, the kernel's `in_args[0]`, empty
//! for opcodes without one such as `LOOKUP`), and the payload (names,
//! values, write data: `in_args[1..]`). On the classic channel the same
//! pieces follow each other, so one decoder serves both: the fixed struct
//! comes from `op_in`, the rest from `payload`.
//!
//! Decoding is defensive: every length is checked against the bytes there
//! are, names must end in their NUL, a struct shorter than its opcode's
//! needs is [`BadRequest`] (answered `EINVAL` when the header could be read),
//! and nothing panics or reads out of bounds. Structs are copied out of the
//! buffer (`zerocopy::FromBytes::read_from_prefix`): no alignment is assumed.
//!
//! The rules, beyond the structs' sizes:
//!
//! - Classic: the header's `len` must equal the bytes read. Ring: `len` is
//!   not checked (`payload_sz` bounds the payload; the op area's length
//!   says nothing about the struct's).
//! - A name is the bytes before the first NUL; bytes after the last name
//!   are ignored (the kernel appends extensions there, `total_extlen`).
//! - `WRITE` data, the `SETXATTR` value and the `IOCTL` input are exactly
//!   `size` (`in_size`) bytes: nothing
//!   may follow them (the kernel never appends to these), so a message cut
//!   short or a `Proto` that disagrees with the kernel shows up as `EINVAL`.
//! - `INIT` takes the 64-byte `fuse_init_in` or the 16-byte one of kernels
//!   before 7.36 (the rest zero); `SETXATTR` the 8-byte compat form unless
//!   [`Proto::setxattr_ext`]. `BATCH_FORGET` yields at most the entries the
//!   message holds.
//! - On the ring, only the opcode's struct is read from the op area (the
//!   kernel writes nothing else there; the rest is stale).

use zerocopy::{FromBytes, IntoBytes};

use crate::abi;
use crate::abi::opcode::*;

/// The `fuse_in_header` fields a handler uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The request's id; its reply carries it back.
    pub unique: u64,
    pub opcode: u32,
    /// The inode the request is about (`FUSE_ROOT_ID` for the root).
    pub nodeid: u64,
    /// The caller's credentials and process (`FUSE_INVALID_UIDGID` when the
    /// kernel could not map them into the mount's namespace).
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// One decoded request.
#[derive(Debug)]
pub struct Request<'a> {
    pub header: Header,
    pub op: Op<'a>,
}

/// A message that could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRequest {
    /// The request's id, when its header could be read (then the request is
    /// answered with `errno`); `None` when even the header was short.
    pub unique: Option<u64>,
    /// The error the request is answered with (a positive errno).
    pub errno: i32,
}

/// What the connection agreed on at `INIT`, as far as decoding depends on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proto {
    /// `FUSE_SETXATTR_EXT` was negotiated: `fuse_setxattr_in` is 16 bytes
    /// (with `setxattr_flags`), not 8.
    pub setxattr_ext: bool,
}

/// A request, by opcode. Names are the bytes without their NUL. Fixed
/// structs are copied (they are at most 88 bytes); names, values and write
/// data borrow from the message.
#[derive(Debug)]
pub enum Op<'a> {
    Init(abi::fuse_init_in),
    Destroy,
    Lookup {
        name: &'a [u8],
    },
    /// No reply.
    Forget {
        nlookup: u64,
    },
    /// No reply. Each entry is (nodeid, nlookup).
    BatchForget(Forgets<'a>),
    Getattr {
        fh: Option<u64>,
    },
    Setattr(abi::fuse_setattr_in),
    Readlink,
    Symlink {
        name: &'a [u8],
        target: &'a [u8],
    },
    Mknod {
        name: &'a [u8],
        mode: u32,
        rdev: u32,
        umask: u32,
    },
    Mkdir {
        name: &'a [u8],
        mode: u32,
        umask: u32,
    },
    Unlink {
        name: &'a [u8],
    },
    Rmdir {
        name: &'a [u8],
    },
    /// `FUSE_RENAME` (flags 0) and `FUSE_RENAME2`.
    Rename {
        newdir: u64,
        flags: u32,
        name: &'a [u8],
        newname: &'a [u8],
    },
    /// `header.nodeid` is the new parent; `oldnodeid` the inode linked.
    Link {
        oldnodeid: u64,
        name: &'a [u8],
    },
    Open {
        flags: u32,
        open_flags: u32,
    },
    Read(abi::fuse_read_in),
    /// `data` is exactly `arg.size` bytes.
    Write {
        arg: abi::fuse_write_in,
        data: &'a [u8],
    },
    Statfs,
    Release(abi::fuse_release_in),
    Fsync {
        fh: u64,
        datasync: bool,
    },
    /// `setxattr_flags` is 0 without `FUSE_SETXATTR_EXT`.
    Setxattr {
        name: &'a [u8],
        value: &'a [u8],
        flags: u32,
        setxattr_flags: u32,
    },
    Getxattr {
        name: &'a [u8],
        size: u32,
    },
    Listxattr {
        size: u32,
    },
    Removexattr {
        name: &'a [u8],
    },
    Flush(abi::fuse_flush_in),
    Opendir {
        flags: u32,
    },
    Readdir(abi::fuse_read_in),
    Releasedir(abi::fuse_release_in),
    Fsyncdir {
        fh: u64,
        datasync: bool,
    },
    Access {
        mask: u32,
    },
    Create {
        arg: abi::fuse_create_in,
        name: &'a [u8],
    },
    /// No reply. `unique` is the interrupted request's.
    Interrupt {
        unique: u64,
    },
    Fallocate(abi::fuse_fallocate_in),
    Readdirplus(abi::fuse_read_in),
    Lseek(abi::fuse_lseek_in),
    /// `FUSE_COPY_FILE_RANGE` (`wide` false: the reply is a `fuse_write_out`)
    /// and `FUSE_COPY_FILE_RANGE_64` (`wide`: a `fuse_copy_file_range_out`).
    CopyFileRange {
        arg: abi::fuse_copy_file_range_in,
        wide: bool,
    },
    /// `O_TMPFILE`: the kernel sends a `fuse_create_in` and a placeholder name.
    Tmpfile {
        arg: abi::fuse_create_in,
    },
    Statx(abi::fuse_statx_in),
    Syncfs,
    /// `FUSE_IOCTL`: `data` is the `arg.in_size` bytes copied in (a
    /// restricted ioctl's, sized by its command; no retries).
    Ioctl {
        arg: abi::fuse_ioctl_in,
        data: &'a [u8],
    },
    /// An opcode this layer knows but sectorfs does not serve (locks, bmap,
    /// poll, notify replies, DAX mappings): answered `ENOSYS`.
    Unsupported,
    /// An opcode this layer does not know: answered `ENOSYS`.
    Unknown,
}

/// The entries of a `FUSE_BATCH_FORGET`, read one by one from the message
/// (at most as many as the message holds, whatever its count says).
#[derive(Debug, Clone)]
pub struct Forgets<'a> {
    /// Whole `fuse_forget_one` entries only: at most `count` of them, and
    /// no trailing partial entry.
    bytes: &'a [u8],
}

const FORGET_ONE: usize = size_of::<abi::fuse_forget_one>();

impl<'a> Forgets<'a> {
    /// The first `count` entries of `bytes`, or as many as it holds.
    fn new(count: u32, bytes: &'a [u8]) -> Self {
        let n = (bytes.len() / FORGET_ONE).min(usize::try_from(count).unwrap_or(usize::MAX));
        Forgets { bytes: &bytes[..n * FORGET_ONE] }
    }
}

impl Iterator for Forgets<'_> {
    /// (nodeid, nlookup)
    type Item = (u64, u64);
    fn next(&mut self) -> Option<(u64, u64)> {
        let (one, rest) = abi::fuse_forget_one::read_from_prefix(self.bytes).ok()?;
        self.bytes = rest;
        Some((one.nodeid, one.nlookup))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.bytes.len() / FORGET_ONE;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Forgets<'_> {}
impl std::iter::FusedIterator for Forgets<'_> {}

/// `EINVAL`, the answer to a malformed request. Written out because `libc`
/// is a Linux-only dependency and this module is platform-neutral.
const EINVAL: i32 = 22;
/// The `fuse_init_in` of kernels before 7.36 (`major`, `minor`,
/// `max_readahead`, `flags`); the rest reads as zero.
const INIT_IN_V1: usize = 16;

/// Decodes a message read from `/dev/fuse`: a `fuse_in_header` and its
/// arguments, `len` bytes in all (extensions, `total_extlen`, ignored).
pub fn decode_classic(msg: &[u8], proto: Proto) -> Result<Request<'_>, BadRequest> {
    let (h, body) = read_in_header(msg)?;
    // The header's `len` is the message's length: a read returns one whole
    // message, so any disagreement is a corrupt one.
    if usize::try_from(h.len) != Ok(msg.len()) {
        return Err(bad(&h));
    }
    decode_op(&h, Args { op_in: body, payload: None }, proto)
}

/// Decodes an io_uring entry's request: `in_header` (the entry's 128-byte
/// `in_out` area), `op_in` (its 128-byte op area) and `payload` (the first
/// `payload_sz` bytes of its payload buffer).
pub fn decode_ring<'a>(
    in_header: &'a [u8],
    op_in: &'a [u8],
    payload: &'a [u8],
    proto: Proto,
) -> Result<Request<'a>, BadRequest> {
    // The header's `len` is not checked here: it counts the fixed struct,
    // whose size the op area does not carry, and `payload_sz` already says
    // where the payload ends.
    let (h, _) = read_in_header(in_header)?;
    decode_op(&h, Args { op_in, payload: Some(payload) }, proto)
}

/// The `fuse_in_header` at the front of `bytes`, and what follows it.
fn read_in_header(bytes: &[u8]) -> Result<(abi::fuse_in_header, &[u8]), BadRequest> {
    abi::fuse_in_header::read_from_prefix(bytes).map_err(|_| BadRequest { unique: None, errno: EINVAL })
}

fn bad(h: &abi::fuse_in_header) -> BadRequest {
    BadRequest { unique: Some(h.unique), errno: EINVAL }
}

/// A request's arguments could not be decoded (the caller adds `unique`).
struct Malformed;

/// A request's arguments after its header, as a transport hands them over.
#[derive(Clone, Copy)]
struct Args<'a> {
    /// Classic: everything after the header. Ring: the op area, whose bytes
    /// past the opcode's struct are stale (the kernel writes only the struct).
    op_in: &'a [u8],
    /// Ring: the payload. Classic: `None`, the rest follows the struct in
    /// `op_in`.
    payload: Option<&'a [u8]>,
}

impl<'a> Args<'a> {
    /// The opcode's fixed struct and the bytes after it.
    fn fixed<T: FromBytes>(self) -> Result<(T, &'a [u8]), Malformed> {
        let (arg, after) = T::read_from_prefix(self.op_in).map_err(|_| Malformed)?;
        Ok((arg, self.payload.unwrap_or(after)))
    }

    /// The first `len` bytes of a `T`, the rest of it zero (a short, older
    /// form of the struct), and the bytes after those `len`.
    fn fixed_short<T: FromBytes + IntoBytes>(self, len: usize) -> Result<(T, &'a [u8]), Malformed> {
        let mut arg = T::new_zeroed();
        let (head, after) = self.op_in.split_at_checked(len).ok_or(Malformed)?;
        arg.as_mut_bytes().get_mut(..len).ok_or(Malformed)?.copy_from_slice(head);
        Ok((arg, self.payload.unwrap_or(after)))
    }

    /// The arguments of an opcode without a fixed struct (the ring's op area
    /// is then empty, and ignored).
    fn rest(self) -> &'a [u8] {
        self.payload.unwrap_or(self.op_in)
    }
}

/// The name at the front of `bytes` (without its NUL), and what follows the
/// NUL. A name must end in a NUL.
fn split_name(bytes: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let nul = bytes.iter().position(|&b| b == 0).ok_or(Malformed)?;
    Ok((&bytes[..nul], &bytes[nul + 1..]))
}

fn name(bytes: &[u8]) -> Result<&[u8], Malformed> {
    split_name(bytes).map(|(name, _)| name)
}

/// Two names, each ending in its NUL (RENAME, SYMLINK).
fn two_names(bytes: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let (first, rest) = split_name(bytes)?;
    Ok((first, name(rest)?))
}

/// `bytes` is exactly `size` long (WRITE data, SETXATTR value).
fn exactly(bytes: &[u8], size: u32) -> Result<&[u8], Malformed> {
    if usize::try_from(size) == Ok(bytes.len()) {
        Ok(bytes)
    } else {
        Err(Malformed)
    }
}

/// The one decoder behind both transports: `h` is the header, `args` where
/// the fixed struct and the rest are.
fn decode_op<'a>(h: &abi::fuse_in_header, args: Args<'a>, proto: Proto) -> Result<Request<'a>, BadRequest> {
    let header = Header { unique: h.unique, opcode: h.opcode, nodeid: h.nodeid, uid: h.uid, gid: h.gid, pid: h.pid };
    let op = op(h.opcode, args, proto).map_err(|Malformed| bad(h))?;
    Ok(Request { header, op })
}

fn op(opcode: u32, args: Args<'_>, proto: Proto) -> Result<Op<'_>, Malformed> {
    Ok(match opcode {
        FUSE_INIT => {
            // Kernels before 7.36 send the 16-byte form; the classic message
            // then ends there (a ring never carries INIT).
            let len = args.op_in.len().min(size_of::<abi::fuse_init_in>());
            if len < INIT_IN_V1 {
                return Err(Malformed);
            }
            Op::Init(args.fixed_short(len)?.0)
        }
        FUSE_DESTROY => Op::Destroy,
        FUSE_LOOKUP => Op::Lookup { name: name(args.rest())? },
        FUSE_FORGET => Op::Forget { nlookup: args.fixed::<abi::fuse_forget_in>()?.0.nlookup },
        FUSE_BATCH_FORGET => {
            let (arg, entries) = args.fixed::<abi::fuse_batch_forget_in>()?;
            Op::BatchForget(Forgets::new(arg.count, entries))
        }
        FUSE_GETATTR => {
            let (arg, _) = args.fixed::<abi::fuse_getattr_in>()?;
            Op::Getattr { fh: (arg.getattr_flags & abi::FUSE_GETATTR_FH != 0).then_some(arg.fh) }
        }
        FUSE_SETATTR => Op::Setattr(args.fixed()?.0),
        FUSE_READLINK => Op::Readlink,
        FUSE_SYMLINK => {
            let (name, target) = two_names(args.rest())?;
            Op::Symlink { name, target }
        }
        FUSE_MKNOD => {
            let (arg, rest) = args.fixed::<abi::fuse_mknod_in>()?;
            Op::Mknod { name: name(rest)?, mode: arg.mode, rdev: arg.rdev, umask: arg.umask }
        }
        FUSE_MKDIR => {
            let (arg, rest) = args.fixed::<abi::fuse_mkdir_in>()?;
            Op::Mkdir { name: name(rest)?, mode: arg.mode, umask: arg.umask }
        }
        FUSE_UNLINK => Op::Unlink { name: name(args.rest())? },
        FUSE_RMDIR => Op::Rmdir { name: name(args.rest())? },
        FUSE_RENAME => {
            let (arg, rest) = args.fixed::<abi::fuse_rename_in>()?;
            let (name, newname) = two_names(rest)?;
            Op::Rename { newdir: arg.newdir, flags: 0, name, newname }
        }
        FUSE_RENAME2 => {
            let (arg, rest) = args.fixed::<abi::fuse_rename2_in>()?;
            let (name, newname) = two_names(rest)?;
            Op::Rename { newdir: arg.newdir, flags: arg.flags, name, newname }
        }
        FUSE_LINK => {
            let (arg, rest) = args.fixed::<abi::fuse_link_in>()?;
            Op::Link { oldnodeid: arg.oldnodeid, name: name(rest)? }
        }
        FUSE_OPEN => {
            let (arg, _) = args.fixed::<abi::fuse_open_in>()?;
            Op::Open { flags: arg.flags, open_flags: arg.open_flags }
        }
        FUSE_READ => Op::Read(args.fixed()?.0),
        FUSE_WRITE => {
            let (arg, data) = args.fixed::<abi::fuse_write_in>()?;
            Op::Write { arg, data: exactly(data, arg.size)? }
        }
        FUSE_STATFS => Op::Statfs,
        FUSE_RELEASE => Op::Release(args.fixed()?.0),
        FUSE_FSYNC | FUSE_FSYNCDIR => {
            let (arg, _) = args.fixed::<abi::fuse_fsync_in>()?;
            let (fh, datasync) = (arg.fh, arg.fsync_flags & abi::FUSE_FSYNC_FDATASYNC != 0);
            if opcode == FUSE_FSYNC {
                Op::Fsync { fh, datasync }
            } else {
                Op::Fsyncdir { fh, datasync }
            }
        }
        FUSE_SETXATTR => {
            // 16 bytes with FUSE_SETXATTR_EXT, else the 8-byte compat form
            // (on the ring the op area's next 8 bytes are then stale: not read).
            let (arg, rest) = if proto.setxattr_ext {
                args.fixed::<abi::fuse_setxattr_in>()?
            } else {
                args.fixed_short::<abi::fuse_setxattr_in>(abi::FUSE_COMPAT_SETXATTR_IN_SIZE)?
            };
            let (name, value) = split_name(rest)?;
            Op::Setxattr {
                name,
                value: exactly(value, arg.size)?,
                flags: arg.flags,
                setxattr_flags: arg.setxattr_flags,
            }
        }
        FUSE_GETXATTR => {
            let (arg, rest) = args.fixed::<abi::fuse_getxattr_in>()?;
            Op::Getxattr { name: name(rest)?, size: arg.size }
        }
        FUSE_LISTXATTR => Op::Listxattr { size: args.fixed::<abi::fuse_getxattr_in>()?.0.size },
        FUSE_REMOVEXATTR => Op::Removexattr { name: name(args.rest())? },
        FUSE_FLUSH => Op::Flush(args.fixed()?.0),
        FUSE_OPENDIR => Op::Opendir { flags: args.fixed::<abi::fuse_open_in>()?.0.flags },
        FUSE_READDIR => Op::Readdir(args.fixed()?.0),
        FUSE_RELEASEDIR => Op::Releasedir(args.fixed()?.0),
        FUSE_ACCESS => Op::Access { mask: args.fixed::<abi::fuse_access_in>()?.0.mask },
        FUSE_CREATE => {
            let (arg, rest) = args.fixed::<abi::fuse_create_in>()?;
            Op::Create { arg, name: name(rest)? }
        }
        FUSE_INTERRUPT => Op::Interrupt { unique: args.fixed::<abi::fuse_interrupt_in>()?.0.unique },
        FUSE_FALLOCATE => Op::Fallocate(args.fixed()?.0),
        FUSE_READDIRPLUS => Op::Readdirplus(args.fixed()?.0),
        FUSE_LSEEK => Op::Lseek(args.fixed()?.0),
        FUSE_COPY_FILE_RANGE | FUSE_COPY_FILE_RANGE_64 => {
            Op::CopyFileRange { arg: args.fixed()?.0, wide: opcode == FUSE_COPY_FILE_RANGE_64 }
        }
        // The placeholder name after the struct is not used.
        FUSE_TMPFILE => Op::Tmpfile { arg: args.fixed()?.0 },
        FUSE_STATX => Op::Statx(args.fixed()?.0),
        FUSE_SYNCFS => {
            args.fixed::<abi::fuse_syncfs_in>()?;
            Op::Syncfs
        }
        FUSE_IOCTL => {
            let (arg, data) = args.fixed::<abi::fuse_ioctl_in>()?;
            Op::Ioctl { arg, data: exactly(data, arg.in_size)? }
        }
        FUSE_GETLK | FUSE_SETLK | FUSE_SETLKW | FUSE_BMAP | FUSE_POLL | FUSE_NOTIFY_REPLY | FUSE_SETUPMAPPING
        | FUSE_REMOVEMAPPING => Op::Unsupported,
        _ => Op::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::Immutable;

    const UNIQUE: u64 = 0x0123_4567_89ab_cdef;
    const COMPAT: Proto = Proto { setxattr_ext: false };
    const EXT: Proto = Proto { setxattr_ext: true };
    const BAD: Result<(), BadRequest> = Err(BadRequest { unique: Some(UNIQUE), errno: EINVAL });
    /// What the ring's areas hold past what the kernel wrote: left over from
    /// earlier requests, never to be read.
    const STALE: u8 = 0xa5;

    /// One request as the kernel builds it: the opcode's fixed struct
    /// (`in_args[0]`, empty for opcodes without one) and the rest
    /// (`in_args[1..]`: names, values, data, extensions).
    #[derive(Clone, Debug)]
    struct Msg {
        opcode: u32,
        op_in: Vec<u8>,
        payload: Vec<u8>,
        total_extlen: u16,
    }

    impl Msg {
        fn new(opcode: u32) -> Self {
            Msg { opcode, op_in: Vec::new(), payload: Vec::new(), total_extlen: 0 }
        }
        fn arg<T: IntoBytes + Immutable>(mut self, arg: T) -> Self {
            self.op_in = arg.as_bytes().to_vec();
            self
        }
        /// The first `len` bytes of the struct only (a short form).
        fn arg_cut(mut self, len: usize) -> Self {
            self.op_in.truncate(len);
            self
        }
        fn payload(mut self, parts: &[&[u8]]) -> Self {
            self.payload = parts.concat();
            self
        }
        fn header(&self, len: usize) -> abi::fuse_in_header {
            abi::fuse_in_header {
                len: u32::try_from(len).unwrap(),
                opcode: self.opcode,
                unique: UNIQUE,
                nodeid: 42,
                uid: 1000,
                gid: 100,
                pid: 4242,
                total_extlen: self.total_extlen,
                padding: 0,
            }
        }
        fn expected_header(&self) -> Header {
            Header { unique: UNIQUE, opcode: self.opcode, nodeid: 42, uid: 1000, gid: 100, pid: 4242 }
        }
        fn len(&self) -> usize {
            size_of::<abi::fuse_in_header>() + self.op_in.len() + self.payload.len()
        }
        /// The message as read from `/dev/fuse`.
        fn classic(&self) -> Vec<u8> {
            [self.header(self.len()).as_bytes(), &self.op_in, &self.payload].concat()
        }
        /// A ring entry's areas: the 128-byte header area and op area (each
        /// with stale bytes after what the kernel wrote), and the payload.
        fn ring(&self) -> Ring {
            let mut in_out = vec![STALE; abi::FUSE_URING_IN_OUT_HEADER_SZ];
            let h = self.header(self.len());
            in_out[..size_of::<abi::fuse_in_header>()].copy_from_slice(h.as_bytes());
            let mut op_in = vec![STALE; abi::FUSE_URING_OP_IN_OUT_SZ];
            op_in[..self.op_in.len()].copy_from_slice(&self.op_in);
            Ring { in_out, op_in, payload: self.payload.clone() }
        }
    }

    struct Ring {
        in_out: Vec<u8>,
        op_in: Vec<u8>,
        payload: Vec<u8>,
    }

    impl Ring {
        fn decode(&self, proto: Proto) -> Result<Request<'_>, BadRequest> {
            decode_ring(&self.in_out, &self.op_in, &self.payload, proto)
        }
    }

    /// A valid request, the protocol it is decoded under, and what it must
    /// decode to.
    struct Case {
        msg: Msg,
        proto: Proto,
        check: fn(&Op<'_>) -> bool,
    }

    fn case(msg: Msg, check: fn(&Op<'_>) -> bool) -> Case {
        Case { msg, proto: COMPAT, check }
    }

    fn init_in() -> abi::fuse_init_in {
        abi::fuse_init_in {
            major: 7,
            minor: 45,
            max_readahead: 1 << 17,
            flags: 0xdead_beef,
            flags2: 3,
            unused: [0; 11],
        }
    }
    fn read_in() -> abi::fuse_read_in {
        abi::fuse_read_in { fh: 3, offset: 8192, size: 4096, read_flags: 2, lock_owner: 99, flags: 0o2, padding: 0 }
    }
    fn release_in() -> abi::fuse_release_in {
        abi::fuse_release_in { fh: 4, flags: 2, release_flags: abi::FUSE_RELEASE_FLUSH, lock_owner: 99 }
    }
    fn create_in() -> abi::fuse_create_in {
        abi::fuse_create_in { flags: 0o101, mode: 0o100_644, umask: 0o022, open_flags: 1 }
    }
    fn copy_in() -> abi::fuse_copy_file_range_in {
        abi::fuse_copy_file_range_in { fh_in: 1, off_in: 2, nodeid_out: 3, fh_out: 4, off_out: 5, len: 6, flags: 0 }
    }
    fn write_in(size: u32) -> abi::fuse_write_in {
        abi::fuse_write_in { fh: 3, offset: 10, size, write_flags: 0, lock_owner: 0, flags: 2, padding: 0 }
    }
    fn setxattr_in(size: u32) -> abi::fuse_setxattr_in {
        abi::fuse_setxattr_in { size, flags: 1, setxattr_flags: abi::FUSE_SETXATTR_ACL_KILL_SGID, padding: 0 }
    }

    /// Every opcode, as the kernel sends it. Each must decode to the same
    /// `Op` on both transports (`INIT`'s old 16-byte form only on the
    /// classic channel, see `init_accepts_the_old_16_byte_form`).
    fn cases() -> Vec<Case> {
        let forgets = [abi::fuse_forget_one { nodeid: 5, nlookup: 1 }, abi::fuse_forget_one { nodeid: 6, nlookup: 2 }];
        let mut v = vec![
            case(
                Msg::new(FUSE_INIT).arg(init_in()),
                |op| matches!(op, Op::Init(a) if (a.major, a.minor, a.max_readahead, a.flags, a.flags2) == (7, 45, 1 << 17, 0xdead_beef, 3)),
            ),
            case(Msg::new(FUSE_DESTROY), |op| matches!(op, Op::Destroy)),
            case(Msg::new(FUSE_LOOKUP).payload(&[b"hello\0"]), |op| matches!(op, Op::Lookup { name: b"hello" })),
            case(Msg::new(FUSE_LOOKUP).payload(&[b"\0"]), |op| matches!(op, Op::Lookup { name: b"" })),
            case(Msg::new(FUSE_FORGET).arg(abi::fuse_forget_in { nlookup: 3 }), |op| {
                matches!(op, Op::Forget { nlookup: 3 })
            }),
            case(
                Msg::new(FUSE_BATCH_FORGET)
                    .arg(abi::fuse_batch_forget_in { count: 2, dummy: 0 })
                    .payload(&[forgets.as_bytes()]),
                |op| matches!(op, Op::BatchForget(f) if f.len() == 2 && f.clone().eq([(5, 1), (6, 2)])),
            ),
            case(
                Msg::new(FUSE_GETATTR).arg(abi::fuse_getattr_in {
                    getattr_flags: abi::FUSE_GETATTR_FH,
                    dummy: 0,
                    fh: 77,
                }),
                |op| matches!(op, Op::Getattr { fh: Some(77) }),
            ),
            case(Msg::new(FUSE_GETATTR).arg(abi::fuse_getattr_in { getattr_flags: 0, dummy: 0, fh: 77 }), |op| {
                matches!(op, Op::Getattr { fh: None })
            }),
            case(
                Msg::new(FUSE_SETATTR).arg(abi::fuse_setattr_in {
                    valid: abi::FATTR_SIZE | abi::FATTR_MODE,
                    size: 4096,
                    mode: 0o644,
                    uid: 7,
                    ctimensec: 999,
                    ..Default::default()
                }),
                |op| {
                    matches!(op, Op::Setattr(a) if a.valid == abi::FATTR_SIZE | abi::FATTR_MODE
                        && (a.size, a.mode, a.uid, a.ctimensec) == (4096, 0o644, 7, 999))
                },
            ),
            case(Msg::new(FUSE_READLINK), |op| matches!(op, Op::Readlink)),
            case(Msg::new(FUSE_SYMLINK).payload(&[b"link\0", b"../target/path\0"]), |op| {
                matches!(op, Op::Symlink { name: b"link", target: b"../target/path" })
            }),
            case(
                Msg::new(FUSE_MKNOD)
                    .arg(abi::fuse_mknod_in { mode: 0o20_644, rdev: 0x0801, umask: 0o022, padding: 0 })
                    .payload(&[b"dev\0"]),
                |op| matches!(op, Op::Mknod { name: b"dev", mode: 0o20_644, rdev: 0x0801, umask: 0o022 }),
            ),
            case(
                Msg::new(FUSE_MKDIR).arg(abi::fuse_mkdir_in { mode: 0o755, umask: 0o022 }).payload(&[b"dir\0"]),
                |op| matches!(op, Op::Mkdir { name: b"dir", mode: 0o755, umask: 0o022 }),
            ),
            case(Msg::new(FUSE_UNLINK).payload(&[b"gone\0"]), |op| matches!(op, Op::Unlink { name: b"gone" })),
            case(Msg::new(FUSE_RMDIR).payload(&[b"empty\0"]), |op| matches!(op, Op::Rmdir { name: b"empty" })),
            case(Msg::new(FUSE_RENAME).arg(abi::fuse_rename_in { newdir: 9 }).payload(&[b"a\0", b"bb\0"]), |op| {
                matches!(op, Op::Rename { newdir: 9, flags: 0, name: b"a", newname: b"bb" })
            }),
            case(
                Msg::new(FUSE_RENAME2)
                    .arg(abi::fuse_rename2_in { newdir: 9, flags: 2, padding: 0 })
                    .payload(&[b"a\0", b"bb\0"]),
                |op| matches!(op, Op::Rename { newdir: 9, flags: 2, name: b"a", newname: b"bb" }),
            ),
            case(Msg::new(FUSE_LINK).arg(abi::fuse_link_in { oldnodeid: 11 }).payload(&[b"alias\0"]), |op| {
                matches!(op, Op::Link { oldnodeid: 11, name: b"alias" })
            }),
            case(
                Msg::new(FUSE_OPEN).arg(abi::fuse_open_in { flags: 0o2, open_flags: abi::FUSE_OPEN_KILL_SUIDGID }),
                |op| matches!(op, Op::Open { flags: 0o2, open_flags: abi::FUSE_OPEN_KILL_SUIDGID }),
            ),
            case(
                Msg::new(FUSE_READ).arg(read_in()),
                |op| matches!(op, Op::Read(a) if (a.fh, a.offset, a.size, a.read_flags, a.lock_owner) == (3, 8192, 4096, 2, 99)),
            ),
            case(
                Msg::new(FUSE_WRITE).arg(write_in(5)).payload(&[b"ab\0de"]),
                |op| matches!(op, Op::Write { arg, data: b"ab\0de" } if (arg.fh, arg.offset, arg.size, arg.flags) == (3, 10, 5, 2)),
            ),
            case(Msg::new(FUSE_WRITE).arg(write_in(0)), |op| matches!(op, Op::Write { data: b"", .. })),
            case(Msg::new(FUSE_STATFS), |op| matches!(op, Op::Statfs)),
            case(
                Msg::new(FUSE_RELEASE).arg(release_in()),
                |op| matches!(op, Op::Release(a) if (a.fh, a.flags, a.release_flags, a.lock_owner) == (4, 2, 1, 99)),
            ),
            case(Msg::new(FUSE_FSYNC).arg(abi::fuse_fsync_in { fh: 3, fsync_flags: 1, padding: 0 }), |op| {
                matches!(op, Op::Fsync { fh: 3, datasync: true })
            }),
            case(Msg::new(FUSE_FSYNC).arg(abi::fuse_fsync_in { fh: 3, fsync_flags: 0, padding: 0 }), |op| {
                matches!(op, Op::Fsync { fh: 3, datasync: false })
            }),
            case(Msg::new(FUSE_FSYNCDIR).arg(abi::fuse_fsync_in { fh: 4, fsync_flags: 1, padding: 0 }), |op| {
                matches!(op, Op::Fsyncdir { fh: 4, datasync: true })
            }),
            Case {
                msg: Msg::new(FUSE_SETXATTR).arg(setxattr_in(3)).payload(&[b"user.x\0", b"v\0l"]),
                proto: EXT,
                check: |op| {
                    matches!(
                        op,
                        Op::Setxattr {
                            name: b"user.x",
                            value: b"v\0l",
                            flags: 1,
                            setxattr_flags: abi::FUSE_SETXATTR_ACL_KILL_SGID
                        }
                    )
                },
            },
            // The compat form: 8 bytes, no setxattr_flags (on the ring the
            // op area's stale bytes 8..16 must not be read as them).
            case(Msg::new(FUSE_SETXATTR).arg(setxattr_in(3)).arg_cut(8).payload(&[b"user.x\0", b"v\0l"]), |op| {
                matches!(op, Op::Setxattr { name: b"user.x", value: b"v\0l", flags: 1, setxattr_flags: 0 })
            }),
            case(Msg::new(FUSE_SETXATTR).arg(setxattr_in(0)).arg_cut(8).payload(&[b"user.empty\0"]), |op| {
                matches!(op, Op::Setxattr { name: b"user.empty", value: b"", .. })
            }),
            case(
                Msg::new(FUSE_GETXATTR).arg(abi::fuse_getxattr_in { size: 256, padding: 0 }).payload(&[b"user.x\0"]),
                |op| matches!(op, Op::Getxattr { name: b"user.x", size: 256 }),
            ),
            case(Msg::new(FUSE_LISTXATTR).arg(abi::fuse_getxattr_in { size: 1024, padding: 0 }), |op| {
                matches!(op, Op::Listxattr { size: 1024 })
            }),
            case(Msg::new(FUSE_REMOVEXATTR).payload(&[b"user.x\0"]), |op| {
                matches!(op, Op::Removexattr { name: b"user.x" })
            }),
            case(
                Msg::new(FUSE_FLUSH).arg(abi::fuse_flush_in { fh: 3, unused: 0, padding: 0, lock_owner: 99 }),
                |op| matches!(op, Op::Flush(a) if (a.fh, a.lock_owner) == (3, 99)),
            ),
            case(Msg::new(FUSE_OPENDIR).arg(abi::fuse_open_in { flags: 0o200_000, open_flags: 0 }), |op| {
                matches!(op, Op::Opendir { flags: 0o200_000 })
            }),
            case(
                Msg::new(FUSE_READDIR).arg(read_in()),
                |op| matches!(op, Op::Readdir(a) if (a.fh, a.offset, a.size) == (3, 8192, 4096)),
            ),
            case(
                Msg::new(FUSE_RELEASEDIR).arg(release_in()),
                |op| matches!(op, Op::Releasedir(a) if (a.fh, a.flags, a.release_flags, a.lock_owner) == (4, 2, 1, 99)),
            ),
            case(Msg::new(FUSE_ACCESS).arg(abi::fuse_access_in { mask: 4, padding: 0 }), |op| {
                matches!(op, Op::Access { mask: 4 })
            }),
            case(
                Msg::new(FUSE_CREATE).arg(create_in()).payload(&[b"new\0"]),
                |op| matches!(op, Op::Create { arg, name: b"new" } if (arg.flags, arg.mode, arg.umask, arg.open_flags) == (0o101, 0o100_644, 0o022, 1)),
            ),
            case(Msg::new(FUSE_INTERRUPT).arg(abi::fuse_interrupt_in { unique: 7 }), |op| {
                matches!(op, Op::Interrupt { unique: 7 })
            }),
            case(
                Msg::new(FUSE_FALLOCATE).arg(abi::fuse_fallocate_in {
                    fh: 3,
                    offset: 1,
                    length: 1 << 20,
                    mode: 1,
                    padding: 0,
                }),
                |op| matches!(op, Op::Fallocate(a) if (a.fh, a.offset, a.length, a.mode) == (3, 1, 1 << 20, 1)),
            ),
            case(
                Msg::new(FUSE_READDIRPLUS).arg(read_in()),
                |op| matches!(op, Op::Readdirplus(a) if (a.fh, a.offset, a.size) == (3, 8192, 4096)),
            ),
            case(
                Msg::new(FUSE_LSEEK).arg(abi::fuse_lseek_in { fh: 3, offset: 100, whence: 3, padding: 0 }),
                |op| matches!(op, Op::Lseek(a) if (a.fh, a.offset, a.whence) == (3, 100, 3)),
            ),
            case(
                Msg::new(FUSE_COPY_FILE_RANGE).arg(copy_in()),
                |op| matches!(op, Op::CopyFileRange { arg, wide: false } if (arg.fh_in, arg.off_in, arg.nodeid_out, arg.fh_out, arg.off_out, arg.len) == (1, 2, 3, 4, 5, 6)),
            ),
            case(
                Msg::new(FUSE_COPY_FILE_RANGE_64).arg(copy_in()),
                |op| matches!(op, Op::CopyFileRange { arg, wide: true } if (arg.fh_in, arg.len) == (1, 6)),
            ),
            case(
                Msg::new(FUSE_TMPFILE).arg(create_in()).payload(&[b"/\0"]),
                |op| matches!(op, Op::Tmpfile { arg } if (arg.flags, arg.mode, arg.umask) == (0o101, 0o100_644, 0o022)),
            ),
            case(
                Msg::new(FUSE_STATX).arg(abi::fuse_statx_in {
                    getattr_flags: abi::FUSE_GETATTR_FH,
                    reserved: 0,
                    fh: 5,
                    sx_flags: 0x4000,
                    sx_mask: 0xfff,
                }),
                |op| matches!(op, Op::Statx(a) if (a.getattr_flags, a.fh, a.sx_flags, a.sx_mask) == (1, 5, 0x4000, 0xfff)),
            ),
            case(Msg::new(FUSE_SYNCFS).arg(abi::fuse_syncfs_in { padding: 0 }), |op| matches!(op, Op::Syncfs)),
            // Extensions (a security context here) follow the last name.
            case(
                Msg { total_extlen: 2, ..Msg::new(FUSE_MKDIR) }
                    .arg(abi::fuse_mkdir_in { mode: 0o700, umask: 0 })
                    .payload(&[b"d\0", abi::fuse_ext_header { size: 16, r#type: 0 }.as_bytes(), b"ctx\0\0\0\0\0"]),
                |op| matches!(op, Op::Mkdir { name: b"d", mode: 0o700, umask: 0 }),
            ),
        ];
        let lk_in = abi::fuse_lk_in { fh: 1, owner: 2, ..Default::default() };
        for opcode in [FUSE_GETLK, FUSE_SETLK, FUSE_SETLKW] {
            v.push(case(Msg::new(opcode).arg(lk_in), |op| matches!(op, Op::Unsupported)));
        }
        let ioctl_in =
            |in_size| abi::fuse_ioctl_in { fh: 4, flags: 16, cmd: 0x4008_6602, arg: 0, in_size, out_size: 0 };
        v.push(case(Msg::new(FUSE_IOCTL).arg(ioctl_in(4)).payload(&[&[1, 2, 3, 4]]), |op| {
            matches!(op, Op::Ioctl { arg, data: [1, 2, 3, 4] } if (arg.fh, arg.flags, arg.cmd) == (4, 16, 0x4008_6602))
        }));
        for opcode in [FUSE_BMAP, FUSE_POLL, FUSE_NOTIFY_REPLY, FUSE_SETUPMAPPING, FUSE_REMOVEMAPPING] {
            v.push(case(Msg::new(opcode).arg([0u64; 2]), |op| matches!(op, Op::Unsupported)));
        }
        for opcode in [0, 7, 19, 54, 4096, 436_207_616, u32::MAX] {
            v.push(case(Msg::new(opcode).payload(&[b"x"]), |op| matches!(op, Op::Unknown)));
        }
        v
    }

    fn err<T: std::fmt::Debug>(r: Result<T, BadRequest>) -> Result<(), BadRequest> {
        r.map(|ok| panic!("decoded, but must be refused: {ok:?}"))
    }

    #[test]
    fn every_opcode_decodes_the_same_on_both_transports() {
        for Case { msg, proto, check } in cases() {
            let bytes = msg.classic();
            let classic = decode_classic(&bytes, proto).unwrap_or_else(|e| panic!("{msg:?}: classic {e:?}"));
            assert_eq!(classic.header, msg.expected_header(), "{msg:?}");
            assert!(check(&classic.op), "{msg:?}: classic decoded to {:?}", classic.op);
            let areas = msg.ring();
            let ring = areas.decode(proto).unwrap_or_else(|e| panic!("{msg:?}: ring {e:?}"));
            assert_eq!(ring.header, msg.expected_header(), "{msg:?}");
            assert!(check(&ring.op), "{msg:?}: ring decoded to {:?}", ring.op);
            assert_eq!(format!("{:?}", ring.op), format!("{:?}", classic.op), "{msg:?}");
        }
    }

    #[test]
    fn every_opcode_of_the_header_has_a_case() {
        // Each opcode 1..=53 of the header appears in `cases` (7 and 19 are
        // holes in the enum, decoded as unknown).
        let seen: Vec<u32> = cases().iter().map(|c| c.msg.opcode).collect();
        for opcode in 1..=FUSE_COPY_FILE_RANGE_64 {
            assert!(seen.contains(&opcode), "opcode {opcode} has no case");
        }
    }

    #[test]
    fn every_truncation_is_refused_or_decodes_without_panic() {
        for Case { msg, proto, .. } in cases() {
            let bytes = msg.classic();
            let hlen = size_of::<abi::fuse_in_header>();
            for cut in 0..bytes.len() {
                // Fewer bytes than `len` says.
                let want = if cut < hlen { None } else { Some(UNIQUE) };
                let r = decode_classic(&bytes[..cut], proto).map(|_| ());
                assert_eq!(r, Err(BadRequest { unique: want, errno: EINVAL }), "{msg:?} cut to {cut}");
                if cut < hlen {
                    let ring = msg.ring();
                    let r = decode_ring(&bytes[..cut], &ring.op_in, &ring.payload, proto).map(|_| ());
                    assert_eq!(r, Err(BadRequest { unique: None, errno: EINVAL }), "{msg:?} ring header cut to {cut}");
                    continue;
                }
                // A shorter `len` with the whole message: refused.
                let mut short = bytes.clone();
                short[..4].copy_from_slice(&u32::try_from(cut).unwrap().to_ne_bytes());
                assert_eq!(decode_classic(&short, proto).map(|_| ()), BAD, "{msg:?} len {cut}");
                // A message cut short whose `len` agrees: refused or decoded.
                if let Err(e) = decode_classic(&short[..cut], proto) {
                    assert_eq!(e, BadRequest { unique: Some(UNIQUE), errno: EINVAL }, "{msg:?} cut to {cut}");
                }
            }
            // The ring: every cut of the struct (without the op area's stale
            // bytes) and of the payload.
            let h = msg.ring().in_out;
            for q in 0..=msg.op_in.len() {
                for r in 0..=msg.payload.len() {
                    if let Err(e) = decode_ring(&h, &msg.op_in[..q], &msg.payload[..r], proto) {
                        assert_eq!(e, BadRequest { unique: Some(UNIQUE), errno: EINVAL }, "{msg:?} ring {q} {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_struct_one_byte_short_is_refused() {
        for Case { msg, proto, .. } in cases() {
            let Some(len) = msg.op_in.len().checked_sub(1) else { continue };
            if matches!(msg.opcode, FUSE_INIT)
                || decode_classic(&msg.classic(), proto).is_ok_and(|r| matches!(r.op, Op::Unsupported | Op::Unknown))
            {
                continue;
            }
            // Without the rest, so the bytes after the struct cannot stand in.
            let short = Msg { payload: Vec::new(), ..msg.clone() }.arg_cut(len);
            assert_eq!(err(decode_classic(&short.classic(), proto)), BAD, "{msg:?}");
            let h = short.ring().in_out;
            assert_eq!(err(decode_ring(&h, &short.op_in, &msg.payload, proto)), BAD, "{msg:?}");
        }
    }

    #[test]
    fn init_accepts_the_old_16_byte_form() {
        let old = Msg::new(FUSE_INIT).arg(init_in()).arg_cut(16);
        let bytes = old.classic();
        let r = decode_classic(&bytes, COMPAT).unwrap();
        assert!(
            matches!(r.op, Op::Init(a) if (a.major, a.minor, a.max_readahead, a.flags, a.flags2) == (7, 45, 1 << 17, 0xdead_beef, 0)),
            "{:?}",
            r.op
        );
        let short = Msg::new(FUSE_INIT).arg(init_in()).arg_cut(15);
        assert_eq!(err(decode_classic(&short.classic(), COMPAT)), BAD);
        // Bytes past the 64-byte struct are ignored.
        let long = Msg::new(FUSE_INIT).arg(init_in()).payload(&[&[0xff; 8]]);
        let bytes = long.classic();
        assert!(matches!(decode_classic(&bytes, COMPAT).unwrap().op, Op::Init(a) if a.flags2 == 3));
    }

    #[test]
    fn names_without_their_nul_are_refused() {
        let mkdir = abi::fuse_mkdir_in { mode: 0o755, umask: 0 };
        let msgs = [
            Msg::new(FUSE_LOOKUP).payload(&[b"hello"]),
            Msg::new(FUSE_LOOKUP),
            Msg::new(FUSE_UNLINK).payload(&[b"x"]),
            Msg::new(FUSE_RMDIR).payload(&[b"x"]),
            Msg::new(FUSE_REMOVEXATTR).payload(&[b"user.x"]),
            Msg::new(FUSE_SYMLINK).payload(&[b"link\0", b"target"]),
            Msg::new(FUSE_SYMLINK).payload(&[b"link"]),
            Msg::new(FUSE_MKDIR).arg(mkdir).payload(&[b"dir"]),
            Msg::new(FUSE_MKNOD).arg(abi::fuse_mknod_in::default()).payload(&[b"dev"]),
            Msg::new(FUSE_CREATE).arg(create_in()).payload(&[b"new"]),
            Msg::new(FUSE_LINK).arg(abi::fuse_link_in { oldnodeid: 3 }).payload(&[b"alias"]),
            Msg::new(FUSE_RENAME).arg(abi::fuse_rename_in { newdir: 1 }).payload(&[b"a\0", b"b"]),
            Msg::new(FUSE_RENAME2).arg(abi::fuse_rename2_in::default()).payload(&[b"a"]),
            Msg::new(FUSE_GETXATTR).arg(abi::fuse_getxattr_in::default()).payload(&[b"user.x"]),
            Msg::new(FUSE_SETXATTR).arg(setxattr_in(0)).arg_cut(8).payload(&[b"user.x"]),
        ];
        for m in msgs {
            assert_eq!(err(decode_classic(&m.classic(), COMPAT)), BAD, "{m:?}");
            assert_eq!(err(m.ring().decode(COMPAT)), BAD, "{m:?}");
        }
    }

    #[test]
    fn write_data_must_be_exactly_size_bytes() {
        for (size, data) in [(5, &b"abcd"[..]), (5, b"abcdef"), (0, b"a"), (u32::MAX, b"abcde"), (1, b"")] {
            let m = Msg::new(FUSE_WRITE).arg(write_in(size)).payload(&[data]);
            assert_eq!(err(decode_classic(&m.classic(), COMPAT)), BAD, "size {size}, {} bytes", data.len());
            assert_eq!(err(m.ring().decode(COMPAT)), BAD, "size {size}, {} bytes", data.len());
        }
    }

    #[test]
    fn ioctl_input_must_be_exactly_in_size_bytes() {
        for (size, data) in [(4, &b"abc"[..]), (4, b"abcde"), (0, b"a"), (u32::MAX, b"abcd")] {
            let arg = abi::fuse_ioctl_in { in_size: size, ..Default::default() };
            let m = Msg::new(FUSE_IOCTL).arg(arg).payload(&[data]);
            assert_eq!(err(decode_classic(&m.classic(), COMPAT)), BAD, "in_size {size}, {} bytes", data.len());
            assert_eq!(err(m.ring().decode(COMPAT)), BAD, "in_size {size}, {} bytes", data.len());
        }
    }

    #[test]
    fn setxattr_value_must_be_exactly_size_bytes() {
        for (size, value) in [(3, &b"ab"[..]), (3, b"abcd"), (0, b"a")] {
            let compat = Msg::new(FUSE_SETXATTR).arg(setxattr_in(size)).arg_cut(8).payload(&[b"user.x\0", value]);
            let ext = Msg::new(FUSE_SETXATTR).arg(setxattr_in(size)).payload(&[b"user.x\0", value]);
            for (m, proto) in [(compat, COMPAT), (ext, EXT)] {
                assert_eq!(err(decode_classic(&m.classic(), proto)), BAD, "{m:?}");
                assert_eq!(err(m.ring().decode(proto)), BAD, "{m:?}");
            }
        }
    }

    #[test]
    fn header_short_or_len_wrong() {
        for n in 0..size_of::<abi::fuse_in_header>() {
            let r = decode_classic(&vec![0; n], COMPAT).map(|_| ());
            assert_eq!(r, Err(BadRequest { unique: None, errno: EINVAL }));
            let r = decode_ring(&vec![0; n], &[0; 128], &[], COMPAT).map(|_| ());
            assert_eq!(r, Err(BadRequest { unique: None, errno: EINVAL }));
        }
        let m = Msg::new(FUSE_LOOKUP).payload(&[b"hello\0"]);
        let bytes = m.classic();
        for len in [0, 1, 39, 40, bytes.len() as u32 - 1, bytes.len() as u32 + 1, u32::MAX] {
            let mut b = bytes.clone();
            b[..4].copy_from_slice(&len.to_ne_bytes());
            assert_eq!(err(decode_classic(&b, COMPAT)), BAD, "len {len}");
        }
        // A message with no arguments at all is exactly its header.
        let statfs = Msg::new(FUSE_STATFS).classic();
        assert_eq!(statfs.len(), 40);
        assert!(matches!(decode_classic(&statfs, COMPAT).unwrap().op, Op::Statfs));
    }

    #[test]
    fn batch_forget_yields_at_most_what_the_message_holds() {
        let one = |nodeid| abi::fuse_forget_one { nodeid, nlookup: nodeid * 10 };
        let entries = [one(1), one(2)];
        for (count, extra, want) in [
            (2, 0, &[(1, 10), (2, 20)][..]),
            (3, 8, &[(1, 10), (2, 20)]),
            (1, 0, &[(1, 10)]),
            (0, 0, &[]),
            (u32::MAX, 15, &[(1, 10), (2, 20)]),
        ] {
            let m = Msg::new(FUSE_BATCH_FORGET)
                .arg(abi::fuse_batch_forget_in { count, dummy: 0 })
                .payload(&[entries.as_bytes(), &vec![0xee; extra]]);
            let (bytes, ring) = (m.classic(), m.ring());
            for r in [decode_classic(&bytes, COMPAT).unwrap(), ring.decode(COMPAT).unwrap()] {
                let Op::BatchForget(f) = r.op else { panic!("{:?}", r.op) };
                assert_eq!(f.len(), want.len());
                assert_eq!(f.collect::<Vec<_>>(), want, "count {count}, {extra} extra bytes");
            }
        }
        let none = Msg::new(FUSE_BATCH_FORGET).arg(abi::fuse_batch_forget_in { count: 5, dummy: 0 });
        let bytes = none.classic();
        let Op::BatchForget(mut f) = decode_classic(&bytes, COMPAT).unwrap().op else { panic!() };
        assert_eq!((f.len(), f.next(), f.next()), (0, None, None));
    }

    #[test]
    fn the_ring_reads_nothing_of_the_op_area_for_opcodes_without_a_struct() {
        // `Msg::ring` fills the op area with stale bytes; a LOOKUP must take
        // its name from the payload alone, and a payload-less name is refused
        // even when the op area holds one.
        let m = Msg::new(FUSE_LOOKUP).payload(&[b"n\0"]);
        let ring = m.ring();
        assert!(matches!(ring.decode(COMPAT).unwrap().op, Op::Lookup { name: b"n" }));
        assert_eq!(err(decode_ring(&ring.in_out, b"name\0", b"", COMPAT)), BAD);
    }
}
