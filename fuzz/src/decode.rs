//! Fuzzing the FUSE request decoder (`sectorfs_fuse::decode`, issue 16).
//!
//! [`run`] takes one byte string. Its first byte picks the mode:
//!
//! * even: the rest is a classic message, as read from `/dev/fuse` (the
//!   corpus seeds are real messages in this form);
//! * odd: the rest drives a structured generator through [`Unstructured`]:
//!   an opcode (mostly a known one), a `fuse_in_header`, an op area of the
//!   opcode's struct size or a hostile one, and a payload of names (with
//!   their NUL or without), raw bytes and NULs, then fix-ups that make the
//!   request likely to be valid (`WRITE`'s `size` equal to its data,
//!   `SETXATTR`'s to its value, `BATCH_FORGET`'s count to its entries, the
//!   classic `len` right), or off by one. Random bytes alone would almost
//!   never get past the `len` check.
//!
//! Each message is decoded under both [`Proto`] values, on both transports:
//! as a classic message ([`decode_classic`]) and as a ring entry's three
//! areas ([`decode_ring`]), the classic message split where the kernel
//! would split it (the opcode's fixed struct to the op area, the rest to the
//! payload, by this file's own table of struct sizes, [`fixed_len`]). The
//! checks:
//!
//! * no panic, in the decoder or here;
//! * an error is `EINVAL`, with the request's `unique` when the header was
//!   whole and `None` when it was short;
//! * a decoded request has the header's fields, an [`Op`] variant that
//!   belongs to its opcode (unknown opcodes `Unknown`, locks, poll, DAX
//!   `Unsupported`), names without NUL, `WRITE` data of exactly `size`
//!   bytes and `IOCTL` input of exactly `in_size`, no `setxattr_flags` without `FUSE_SETXATTR_EXT`, at most
//!   `count` forget entries, and every borrowed slice inside the input;
//! * the two transports agree: the classic message and its ring split give
//!   the same result (the same `Op` with the same bytes, or the same error).

use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Unstructured;
use sectorfs_fuse::abi::{self, opcode::*};
use sectorfs_fuse::decode::{decode_classic, decode_ring, BadRequest, Op, Proto, Request};

/// Byte strings run by [`run`] in this process.
pub static CASES: AtomicU64 = AtomicU64::new(0);
/// Calls of `decode_classic` and `decode_ring` made by [`run`].
pub static DECODES: AtomicU64 = AtomicU64::new(0);
/// Of those, the ones that decoded (the rest were refused).
pub static DECODED: AtomicU64 = AtomicU64::new(0);

const HEADER: usize = size_of::<abi::fuse_in_header>();
const EINVAL: i32 = 22;
const PROTOS: [Proto; 2] = [Proto { setxattr_ext: false }, Proto { setxattr_ext: true }];

/// The opcodes of `enum fuse_opcode` that the decoder serves or refuses by
/// name; everything else is `Op::Unknown`.
const KNOWN: [u32; 51] = [
    FUSE_LOOKUP,
    FUSE_FORGET,
    FUSE_GETATTR,
    FUSE_SETATTR,
    FUSE_READLINK,
    FUSE_SYMLINK,
    FUSE_MKNOD,
    FUSE_MKDIR,
    FUSE_UNLINK,
    FUSE_RMDIR,
    FUSE_RENAME,
    FUSE_LINK,
    FUSE_OPEN,
    FUSE_READ,
    FUSE_WRITE,
    FUSE_STATFS,
    FUSE_RELEASE,
    FUSE_FSYNC,
    FUSE_SETXATTR,
    FUSE_GETXATTR,
    FUSE_LISTXATTR,
    FUSE_REMOVEXATTR,
    FUSE_FLUSH,
    FUSE_INIT,
    FUSE_OPENDIR,
    FUSE_READDIR,
    FUSE_RELEASEDIR,
    FUSE_FSYNCDIR,
    FUSE_GETLK,
    FUSE_SETLK,
    FUSE_SETLKW,
    FUSE_ACCESS,
    FUSE_CREATE,
    FUSE_INTERRUPT,
    FUSE_BMAP,
    FUSE_DESTROY,
    FUSE_IOCTL,
    FUSE_POLL,
    FUSE_NOTIFY_REPLY,
    FUSE_BATCH_FORGET,
    FUSE_FALLOCATE,
    FUSE_READDIRPLUS,
    FUSE_RENAME2,
    FUSE_LSEEK,
    FUSE_COPY_FILE_RANGE,
    FUSE_SETUPMAPPING,
    FUSE_REMOVEMAPPING,
    FUSE_SYNCFS,
    FUSE_TMPFILE,
    FUSE_STATX,
    FUSE_COPY_FILE_RANGE_64,
];

const UNSUPPORTED: [u32; 8] = [
    FUSE_GETLK,
    FUSE_SETLK,
    FUSE_SETLKW,
    FUSE_BMAP,
    FUSE_POLL,
    FUSE_NOTIFY_REPLY,
    FUSE_SETUPMAPPING,
    FUSE_REMOVEMAPPING,
];

/// The size of the struct the kernel puts first (`in_args[0]`, the ring's
/// op area) for `opcode`: 0 for opcodes without one and for those the
/// decoder does not read. Written from the header independently of the
/// decoder, so a wrong struct there shows up as a disagreement.
pub fn fixed_len(opcode: u32, proto: Proto) -> usize {
    match opcode {
        FUSE_INIT => size_of::<abi::fuse_init_in>(),
        FUSE_FORGET => size_of::<abi::fuse_forget_in>(),
        FUSE_BATCH_FORGET => size_of::<abi::fuse_batch_forget_in>(),
        FUSE_GETATTR => size_of::<abi::fuse_getattr_in>(),
        FUSE_SETATTR => size_of::<abi::fuse_setattr_in>(),
        FUSE_MKNOD => size_of::<abi::fuse_mknod_in>(),
        FUSE_MKDIR => size_of::<abi::fuse_mkdir_in>(),
        FUSE_RENAME => size_of::<abi::fuse_rename_in>(),
        FUSE_RENAME2 => size_of::<abi::fuse_rename2_in>(),
        FUSE_LINK => size_of::<abi::fuse_link_in>(),
        FUSE_OPEN | FUSE_OPENDIR => size_of::<abi::fuse_open_in>(),
        FUSE_READ | FUSE_READDIR | FUSE_READDIRPLUS => size_of::<abi::fuse_read_in>(),
        FUSE_WRITE => size_of::<abi::fuse_write_in>(),
        FUSE_RELEASE | FUSE_RELEASEDIR => size_of::<abi::fuse_release_in>(),
        FUSE_FSYNC | FUSE_FSYNCDIR => size_of::<abi::fuse_fsync_in>(),
        FUSE_SETXATTR if proto.setxattr_ext => size_of::<abi::fuse_setxattr_in>(),
        FUSE_SETXATTR => abi::FUSE_COMPAT_SETXATTR_IN_SIZE,
        FUSE_GETXATTR | FUSE_LISTXATTR => size_of::<abi::fuse_getxattr_in>(),
        FUSE_FLUSH => size_of::<abi::fuse_flush_in>(),
        FUSE_ACCESS => size_of::<abi::fuse_access_in>(),
        FUSE_CREATE | FUSE_TMPFILE => size_of::<abi::fuse_create_in>(),
        FUSE_INTERRUPT => size_of::<abi::fuse_interrupt_in>(),
        FUSE_FALLOCATE => size_of::<abi::fuse_fallocate_in>(),
        FUSE_LSEEK => size_of::<abi::fuse_lseek_in>(),
        FUSE_IOCTL => size_of::<abi::fuse_ioctl_in>(),
        FUSE_COPY_FILE_RANGE | FUSE_COPY_FILE_RANGE_64 => size_of::<abi::fuse_copy_file_range_in>(),
        FUSE_STATX => size_of::<abi::fuse_statx_in>(),
        FUSE_SYNCFS => size_of::<abi::fuse_syncfs_in>(),
        // LOOKUP, READLINK, SYMLINK, UNLINK, RMDIR, STATFS, REMOVEXATTR,
        // DESTROY; unsupported and unknown opcodes.
        _ => 0,
    }
}

/// Runs one input (see the module doc).
pub fn run(data: &[u8]) {
    CASES.fetch_add(1, Ordering::Relaxed);
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        classic_and_split(rest);
    } else {
        structured(rest);
    }
}

/// `msg` as a classic message, and, when its `len` is right, split into a
/// ring entry's areas: both must give the same result.
fn classic_and_split(msg: &[u8]) {
    for proto in PROTOS {
        let classic = decode_classic(msg, proto);
        check(&classic, msg, proto, &[msg]);
        let Some(h) = Fields::read(msg) else { continue };
        if h.len as usize != msg.len() {
            assert!(classic.is_err(), "decoded with len {} != {} bytes", h.len, msg.len());
            continue;
        }
        let (head, body) = msg.split_at(HEADER);
        let (op_in, payload) = body.split_at(fixed_len(h.opcode, proto).min(body.len()));
        let ring = decode_ring(head, op_in, payload, proto);
        check(&ring, head, proto, &[op_in, payload]);
        same(&classic, &ring);
    }
}

/// A request built from `bytes` (see the module doc), decoded on the ring
/// and as the classic message the kernel would have sent.
fn structured(bytes: &[u8]) {
    let mut u = Unstructured::new(bytes);
    let opcode = match byte(&mut u) {
        0..=239 => KNOWN[usize::from(byte(&mut u)) % KNOWN.len()],
        240..=247 => u32::from(byte(&mut u)),
        _ => u.arbitrary().unwrap_or(0),
    };
    let proto = PROTOS[usize::from(byte(&mut u) & 1)];
    let fixups = byte(&mut u);
    let mut h = Fields {
        len: 0,
        opcode,
        unique: u.arbitrary().unwrap_or(0),
        nodeid: u.arbitrary().unwrap_or(0),
        uid: u.arbitrary().unwrap_or(0),
        gid: u.arbitrary().unwrap_or(0),
        pid: u.arbitrary().unwrap_or(0),
        total_extlen: u.arbitrary().unwrap_or(0),
    };
    // The op area: the opcode's struct, one byte short, empty, the whole
    // 128-byte area, or any length up to it.
    let k = fixed_len(opcode, proto);
    let op_len = match byte(&mut u) % 8 {
        0..=3 => k,
        4 => k.saturating_sub(1),
        5 => 0,
        6 => abi::FUSE_URING_OP_IN_OUT_SZ,
        _ => usize::from(byte(&mut u)) % (abi::FUSE_URING_OP_IN_OUT_SZ + 1),
    };
    let mut op_in = take(&mut u, op_len);
    // The payload: up to 4 pieces.
    let mut payload = Vec::new();
    for _ in 0..byte(&mut u) % 5 {
        match byte(&mut u) % 4 {
            0 => {
                let n = usize::from(byte(&mut u) % 16);
                payload.extend(take(&mut u, n).into_iter().map(|b| b.max(1)));
                payload.push(0);
            }
            1 => {
                let n = usize::from(byte(&mut u) % 64);
                payload.extend(take(&mut u, n));
            }
            2 => payload.push(0),
            _ => {
                let n = usize::from(byte(&mut u) % 64);
                payload.extend(take(&mut u, n).into_iter().map(|b| b.max(1)));
            }
        }
    }
    // Sizes that agree with the payload, or are one off either way.
    let mut fix = |n: usize| match byte(&mut u) % 4 {
        0 | 1 => len32(n),
        2 => len32(n) + 1,
        _ => len32(n).wrapping_sub(1),
    };
    if fixups & 1 != 0 {
        match opcode {
            FUSE_WRITE => put_u32(&mut op_in, 16, fix(payload.len())),
            FUSE_SETXATTR => {
                let value = payload.iter().position(|&b| b == 0).map_or(0, |nul| payload.len() - nul - 1);
                put_u32(&mut op_in, 0, fix(value));
            }
            FUSE_BATCH_FORGET => put_u32(&mut op_in, 0, fix(payload.len() / 16)),
            _ => {}
        }
    }

    // The ring: the header area whole, cut short, or padded with stale bytes.
    let classic_op_in = &op_in[..k.min(op_in.len())];
    h.len = len32(HEADER + classic_op_in.len() + payload.len());
    let mut in_out = h.bytes().to_vec();
    match fixups >> 5 {
        0 => in_out.truncate(usize::from(byte(&mut u)) % HEADER),
        1 | 2 => in_out.resize(abi::FUSE_URING_IN_OUT_HEADER_SZ, 0xa5),
        _ => {}
    }
    for proto in PROTOS {
        let ring = decode_ring(&in_out, &op_in, &payload, proto);
        check(&ring, &in_out, proto, &[&op_in, &payload]);
    }

    // The classic message the kernel would have sent for it: the header,
    // the struct, the payload; its `len` right or (1 in 8) off by one.
    if fixups & 0x1c == 0x1c {
        h.len = h.len.wrapping_add(if byte(&mut u) & 1 != 0 { 1 } else { u32::MAX });
    }
    let msg = [&h.bytes()[..], classic_op_in, &payload].concat();
    for proto in PROTOS {
        let classic = decode_classic(&msg, proto);
        check(&classic, &msg, proto, &[&msg]);
        if h.len as usize != msg.len() {
            assert!(classic.is_err(), "decoded with len {} != {} bytes", h.len, msg.len());
        } else if fixed_len(opcode, proto) == k && op_in.len() >= k && in_out.len() >= HEADER {
            // The op area holds the whole struct, and the classic message
            // carries the struct of this `proto`: both say the same.
            let ring = decode_ring(&in_out, &op_in, &payload, proto);
            same(&classic, &ring);
        }
    }
    classic_and_split(&msg);
}

fn byte(u: &mut Unstructured<'_>) -> u8 {
    u.arbitrary().unwrap_or(0)
}

/// `n` bytes from `u`, zeros once it is spent.
fn take(u: &mut Unstructured<'_>, n: usize) -> Vec<u8> {
    let mut v = u.bytes(n.min(u.len())).unwrap_or_default().to_vec();
    v.resize(n, 0);
    v
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("small")
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(dst) = b.get_mut(at..at + 4) {
        dst.copy_from_slice(&v.to_ne_bytes());
    }
}

/// A `fuse_in_header`, read and written by hand (this crate does not
/// depend on zerocopy).
#[derive(Debug, Clone, Copy)]
struct Fields {
    len: u32,
    opcode: u32,
    unique: u64,
    nodeid: u64,
    uid: u32,
    gid: u32,
    pid: u32,
    total_extlen: u16,
}

impl Fields {
    fn read(b: &[u8]) -> Option<Fields> {
        let b = b.get(..HEADER)?;
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(Fields {
            len: u32_at(0),
            opcode: u32_at(4),
            unique: u64_at(8),
            nodeid: u64_at(16),
            uid: u32_at(24),
            gid: u32_at(28),
            pid: u32_at(32),
            total_extlen: u16::from_ne_bytes([b[36], b[37]]),
        })
    }

    fn bytes(&self) -> [u8; HEADER] {
        let mut b = [0; HEADER];
        b[0..4].copy_from_slice(&self.len.to_ne_bytes());
        b[4..8].copy_from_slice(&self.opcode.to_ne_bytes());
        b[8..16].copy_from_slice(&self.unique.to_ne_bytes());
        b[16..24].copy_from_slice(&self.nodeid.to_ne_bytes());
        b[24..28].copy_from_slice(&self.uid.to_ne_bytes());
        b[28..32].copy_from_slice(&self.gid.to_ne_bytes());
        b[32..36].copy_from_slice(&self.pid.to_ne_bytes());
        b[36..38].copy_from_slice(&self.total_extlen.to_ne_bytes());
        b
    }
}

/// The transports agree: the same request, or the same refusal.
fn same(classic: &Result<Request<'_>, BadRequest>, ring: &Result<Request<'_>, BadRequest>) {
    assert_eq!(format!("{classic:?}"), format!("{ring:?}"), "classic and ring disagree");
}

/// The checks on one result (see the module doc). `head` is the header's
/// bytes as handed to the decoder (maybe short), `inputs` every buffer a
/// decoded request may borrow from.
fn check(r: &Result<Request<'_>, BadRequest>, head: &[u8], proto: Proto, inputs: &[&[u8]]) {
    DECODES.fetch_add(1, Ordering::Relaxed);
    let h = Fields::read(head);
    let req = match r {
        Err(e) => {
            assert_eq!(e.errno, EINVAL, "{e:?}");
            assert_eq!(e.unique, h.map(|h| h.unique), "{e:?}: unique of a {}-byte header", head.len());
            return;
        }
        Ok(req) => req,
    };
    DECODED.fetch_add(1, Ordering::Relaxed);
    let h = h.expect("decoded without a whole header");
    let got = req.header;
    assert_eq!(
        (got.unique, got.opcode, got.nodeid, got.uid, got.gid, got.pid),
        (h.unique, h.opcode, h.nodeid, h.uid, h.gid, h.pid),
        "header"
    );
    let opcode = h.opcode;
    let inside = |s: &[u8]| {
        let (p, n) = (s.as_ptr() as usize, s.len());
        let ok = n == 0
            || inputs.iter().any(|b| {
                let q = b.as_ptr() as usize;
                p >= q && p + n <= q + b.len()
            });
        assert!(ok, "{:?}: a {n}-byte slice outside the input", req.op);
    };
    let name = |s: &[u8]| {
        inside(s);
        assert!(!s.contains(&0), "{:?}: a name with a NUL", req.op);
    };
    let is = |ops: &[u32]| assert!(ops.contains(&opcode), "opcode {opcode} decoded to {:?}", req.op);
    match &req.op {
        Op::Init(_) => is(&[FUSE_INIT]),
        Op::Destroy => is(&[FUSE_DESTROY]),
        Op::Lookup { name: n } => {
            is(&[FUSE_LOOKUP]);
            name(n);
        }
        Op::Forget { .. } => is(&[FUSE_FORGET]),
        Op::BatchForget(f) => {
            is(&[FUSE_BATCH_FORGET]);
            let n = f.len();
            assert_eq!(f.clone().count(), n, "Forgets::len");
            let bytes: usize = inputs.iter().map(|b| b.len()).sum();
            assert!(n * size_of::<abi::fuse_forget_one>() <= bytes, "{n} forgets in {bytes} bytes");
        }
        Op::Getattr { .. } => is(&[FUSE_GETATTR]),
        Op::Setattr(_) => is(&[FUSE_SETATTR]),
        Op::Readlink => is(&[FUSE_READLINK]),
        Op::Symlink { name: n, target } => {
            is(&[FUSE_SYMLINK]);
            name(n);
            name(target);
        }
        Op::Mknod { name: n, .. } => {
            is(&[FUSE_MKNOD]);
            name(n);
        }
        Op::Mkdir { name: n, .. } => {
            is(&[FUSE_MKDIR]);
            name(n);
        }
        Op::Unlink { name: n } => {
            is(&[FUSE_UNLINK]);
            name(n);
        }
        Op::Rmdir { name: n } => {
            is(&[FUSE_RMDIR]);
            name(n);
        }
        Op::Rename { flags, name: n, newname, .. } => {
            is(&[FUSE_RENAME, FUSE_RENAME2]);
            assert!(opcode == FUSE_RENAME2 || *flags == 0, "RENAME with flags {flags}");
            name(n);
            name(newname);
        }
        Op::Link { name: n, .. } => {
            is(&[FUSE_LINK]);
            name(n);
        }
        Op::Open { .. } => is(&[FUSE_OPEN]),
        Op::Read(_) => is(&[FUSE_READ]),
        Op::Write { arg, data } => {
            is(&[FUSE_WRITE]);
            inside(data);
            assert_eq!(data.len(), arg.size as usize, "WRITE data");
        }
        Op::Ioctl { arg, data } => {
            is(&[FUSE_IOCTL]);
            inside(data);
            assert_eq!(data.len(), arg.in_size as usize, "IOCTL input");
        }
        Op::Statfs => is(&[FUSE_STATFS]),
        Op::Release(_) => is(&[FUSE_RELEASE]),
        Op::Fsync { .. } => is(&[FUSE_FSYNC]),
        Op::Setxattr { name: n, value, setxattr_flags, .. } => {
            is(&[FUSE_SETXATTR]);
            name(n);
            inside(value);
            assert!(proto.setxattr_ext || *setxattr_flags == 0, "setxattr_flags without FUSE_SETXATTR_EXT");
        }
        Op::Getxattr { name: n, .. } => {
            is(&[FUSE_GETXATTR]);
            name(n);
        }
        Op::Listxattr { .. } => is(&[FUSE_LISTXATTR]),
        Op::Removexattr { name: n } => {
            is(&[FUSE_REMOVEXATTR]);
            name(n);
        }
        Op::Flush(_) => is(&[FUSE_FLUSH]),
        Op::Opendir { .. } => is(&[FUSE_OPENDIR]),
        Op::Readdir(_) => is(&[FUSE_READDIR]),
        Op::Releasedir(_) => is(&[FUSE_RELEASEDIR]),
        Op::Fsyncdir { .. } => is(&[FUSE_FSYNCDIR]),
        Op::Access { .. } => is(&[FUSE_ACCESS]),
        Op::Create { name: n, .. } => {
            is(&[FUSE_CREATE]);
            name(n);
        }
        Op::Interrupt { .. } => is(&[FUSE_INTERRUPT]),
        Op::Fallocate(_) => is(&[FUSE_FALLOCATE]),
        Op::Readdirplus(_) => is(&[FUSE_READDIRPLUS]),
        Op::Lseek(_) => is(&[FUSE_LSEEK]),
        Op::CopyFileRange { wide, .. } => {
            is(&[FUSE_COPY_FILE_RANGE, FUSE_COPY_FILE_RANGE_64]);
            assert_eq!(*wide, opcode == FUSE_COPY_FILE_RANGE_64, "COPY_FILE_RANGE width");
        }
        Op::Tmpfile { .. } => is(&[FUSE_TMPFILE]),
        Op::Statx(_) => is(&[FUSE_STATX]),
        Op::Syncfs => is(&[FUSE_SYNCFS]),
        Op::Unsupported => is(&UNSUPPORTED),
        Op::Unknown => assert!(!KNOWN.contains(&opcode), "known opcode {opcode} decoded as Unknown"),
    }
}
