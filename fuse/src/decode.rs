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

use crate::abi;

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
    /// An opcode this layer knows but sectorfs does not serve (locks, bmap,
    /// ioctl, poll, notify replies, DAX mappings): answered `ENOSYS`.
    Unsupported,
    /// An opcode this layer does not know: answered `ENOSYS`.
    Unknown,
}

/// The entries of a `FUSE_BATCH_FORGET`, read one by one from the message
/// (at most as many as the message holds, whatever its count says).
#[derive(Debug, Clone)]
pub struct Forgets<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for Forgets<'a> {
    /// (nodeid, nlookup)
    type Item = (u64, u64);
    fn next(&mut self) -> Option<(u64, u64)> {
        todo!()
    }
}

/// Decodes a message read from `/dev/fuse`: a `fuse_in_header` and its
/// arguments, `len` bytes in all (extensions, `total_extlen`, ignored).
pub fn decode_classic(msg: &[u8], proto: Proto) -> Result<Request<'_>, BadRequest> {
    let _ = (msg, proto);
    todo!()
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
    let _ = (in_header, op_in, payload, proto);
    todo!()
}
