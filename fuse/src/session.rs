//! The filesystem trait, `INIT`, and the dispatch both transports share.
//!
//! A [`Session`] is made with a [`Filesystem`], takes the kernel's `INIT`
//! ([`Session::handshake`], before any worker runs, so the filesystem can
//! still be changed then), and from then on is shared by every worker of
//! every transport: [`Session::dispatch_classic`] for a message read from
//! `/dev/fuse`, [`Session::dispatch_ring`] for an io_uring entry. Both decode
//! ([`crate::decode`]), answer what the layer answers itself (unknown
//! opcodes, `DESTROY`, malformed requests), and hand the rest to
//! [`Filesystem::handle`] under `catch_unwind`: a panic answers `EIO` (the
//! [`Reply`]'s drop) and the worker keeps serving.

use std::io::{self, IoSlice};
use std::panic::{catch_unwind, AssertUnwindSafe};

use zerocopy::IntoBytes;

use crate::abi;
use crate::decode::{self, BadRequest, Op, Proto, Request};
use crate::reply::{Reply, Sink};

const EIO: i32 = 5;
const EACCES: i32 = 13;
const ENOSYS: i32 = 38;
const EPROTO: i32 = 71;

/// What the filesystem asks for at `INIT`.
#[derive(Debug, Clone)]
pub struct InitConfig {
    /// Capabilities (`abi::FUSE_*` init flags) wanted; the kernel grants
    /// those it offered.
    pub want: u64,
    /// Largest `WRITE` (and the payload a ring entry must hold).
    pub max_write: u32,
    /// Largest readahead; at most what the kernel offered.
    pub max_readahead: u32,
    /// Requests the kernel keeps in flight in the background.
    pub max_background: u16,
    pub congestion_threshold: u16,
    /// Timestamp granularity in nanoseconds.
    pub time_gran: u32,
}

impl Default for InitConfig {
    fn default() -> InitConfig {
        InitConfig {
            want: abi::FUSE_ASYNC_READ | abi::FUSE_BIG_WRITES | abi::FUSE_MAX_PAGES,
            max_write: 1 << 20,
            max_readahead: 1 << 20,
            max_background: 64,
            congestion_threshold: 48,
            time_gran: 1,
        }
    }
}

/// A FUSE filesystem on this layer.
pub trait Filesystem: Send + Sync + 'static {
    /// `INIT`: `offered` is what the kernel can do (`abi::FUSE_*` flags);
    /// the filesystem adds what it wants to `cfg.want`. What is granted is
    /// `cfg.want & offered`.
    fn init(&mut self, offered: u64, cfg: &mut InitConfig);

    /// Answers one request through `reply` (`FORGET`, `BATCH_FORGET` get a
    /// reply that sends nothing). `DESTROY`, `INIT`, `INTERRUPT` and opcodes
    /// the layer does not serve never come here.
    fn handle(&self, req: Request<'_>, reply: Reply<'_>);

    /// `DESTROY`: the kernel is done with the mount.
    fn destroy(&self) {}
}

/// What `INIT` settled.
#[derive(Debug, Clone, Copy, Default)]
pub struct Negotiated {
    /// The kernel's protocol minor (the connection speaks the lower of it and ours).
    pub minor: u32,
    /// Capabilities granted.
    pub granted: u64,
    /// Largest `WRITE`: a classic read buffer is this plus a page.
    pub max_write: u32,
    /// Largest request in pages (`max_pages` of the `INIT` reply).
    pub max_pages: u16,
}

impl Negotiated {
    /// A capability was granted.
    pub fn has(&self, cap: u64) -> bool {
        self.granted & cap != 0
    }

    /// The size a request buffer must have: the largest write and its headers.
    pub fn buffer_size(&self) -> usize {
        self.max_write as usize + 4096
    }
}

/// One FUSE connection's filesystem and what was negotiated for it.
pub struct Session<F> {
    fs: F,
    proto: Proto,
    negotiated: Option<Negotiated>,
    /// Only this user's requests are served ([`Session::owner_only`]).
    owner: Option<u32>,
}

impl<F: Filesystem> Session<F> {
    /// A session for `fs`, before `INIT`.
    pub fn new(fs: F) -> Session<F> {
        Session { fs, proto: Proto::default(), negotiated: None, owner: None }
    }

    /// Refuses (`EACCES`) requests from users other than `uid`, as a mount
    /// without `allow_other` should. The kernel checks the caller's real
    /// and effective ids, not its file-system ids, so a root process acting
    /// as another user (`setfsuid`) would otherwise get in. Requests the
    /// kernel sends on behalf of an open file (reads, writes, releases,
    /// forgets) pass: the open was checked.
    pub fn owner_only(&mut self, uid: u32) {
        self.owner = Some(uid);
    }

    /// The filesystem.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// What `INIT` settled (`None` before it).
    pub fn negotiated(&self) -> Option<Negotiated> {
        self.negotiated
    }

    /// Answers the kernel's `INIT` (`msg`, read from `/dev/fuse`). `Ok(None)`:
    /// the kernel speaks a newer major version and sends `INIT` again after
    /// our answer. An error has been answered too (and ends the mount).
    pub fn handshake(&mut self, msg: &[u8], sink: &mut dyn Sink) -> io::Result<Option<Negotiated>> {
        let req = match decode::decode_classic(msg, self.proto) {
            Ok(r) => r,
            Err(bad) => {
                if let Some(u) = bad.unique {
                    Reply::new(u, sink).error(bad.errno);
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed FUSE INIT"));
            }
        };
        let unique = req.header.unique;
        let Op::Init(init) = req.op else {
            Reply::new(unique, sink).error(EIO);
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the kernel's first request was not INIT"));
        };
        if init.major > abi::FUSE_KERNEL_VERSION {
            // Tell the kernel our major; it answers with a new INIT.
            let out = abi::fuse_init_out {
                major: abi::FUSE_KERNEL_VERSION,
                minor: abi::FUSE_KERNEL_MINOR_VERSION,
                ..Default::default()
            };
            Reply::new(unique, sink).value(&out);
            return Ok(None);
        }
        if init.major < abi::FUSE_KERNEL_VERSION || init.minor < abi::FUSE_MIN_MINOR_VERSION {
            Reply::new(unique, sink).error(EPROTO);
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the kernel speaks FUSE {}.{}; sectorfs needs 7.{} or later",
                    init.major,
                    init.minor,
                    abi::FUSE_MIN_MINOR_VERSION
                ),
            ));
        }
        let ext = u64::from(init.flags) & abi::FUSE_INIT_EXT != 0;
        let offered = u64::from(init.flags) | if ext { u64::from(init.flags2) << 32 } else { 0 };
        let mut cfg = InitConfig { max_readahead: init.max_readahead, ..InitConfig::default() };
        self.fs.init(offered, &mut cfg);
        let granted = cfg.want & offered & !abi::FUSE_INIT_EXT;
        let max_readahead = cfg.max_readahead.min(init.max_readahead);
        let max_write = cfg.max_write.max(abi::FUSE_MIN_READ_BUFFER as u32 - 4096);
        let max_pages = max_write.max(max_readahead).div_ceil(4096).clamp(1, u32::from(u16::MAX)) as u16;
        let mut flags = granted as u32;
        if ext {
            flags |= abi::FUSE_INIT_EXT as u32;
        }
        let out = abi::fuse_init_out {
            major: abi::FUSE_KERNEL_VERSION,
            minor: abi::FUSE_KERNEL_MINOR_VERSION,
            max_readahead,
            flags,
            max_background: cfg.max_background,
            congestion_threshold: cfg.congestion_threshold.min(cfg.max_background),
            max_write,
            time_gran: cfg.time_gran,
            max_pages,
            flags2: (granted >> 32) as u32,
            ..Default::default()
        };
        sink.send(unique, 0, &[IoSlice::new(out.as_bytes())])?;
        self.proto.setxattr_ext = granted & abi::FUSE_SETXATTR_EXT != 0;
        let n = Negotiated { minor: init.minor, granted, max_write, max_pages };
        self.negotiated = Some(n);
        Ok(Some(n))
    }

    /// Serves a message read from `/dev/fuse`.
    pub fn dispatch_classic(&self, msg: &[u8], sink: &mut dyn Sink) {
        self.dispatch(decode::decode_classic(msg, self.proto), sink);
    }

    /// Serves an io_uring entry's request (see [`decode::decode_ring`]).
    pub fn dispatch_ring(&self, in_header: &[u8], op_in: &[u8], payload: &[u8], sink: &mut dyn Sink) {
        self.dispatch(decode::decode_ring(in_header, op_in, payload, self.proto), sink);
    }

    fn dispatch(&self, req: Result<Request<'_>, BadRequest>, sink: &mut dyn Sink) {
        let req = match req {
            Ok(r) => r,
            Err(BadRequest { unique: Some(u), errno }) => {
                log::warn!("malformed FUSE request {u}: answered errno {errno}");
                return Reply::new(u, sink).error(errno);
            }
            Err(BadRequest { unique: None, .. }) => {
                log::error!("FUSE message shorter than its header: dropped");
                return;
            }
        };
        let unique = req.header.unique;
        if self.owner.is_some_and(|o| o != req.header.uid) && !on_behalf_of_open_file(&req.op) {
            return Reply::new(unique, sink).error(EACCES);
        }
        match req.op {
            Op::Forget { .. } | Op::BatchForget(_) => {
                let reply = Reply::none(unique);
                if catch_unwind(AssertUnwindSafe(|| self.fs.handle(req, reply))).is_err() {
                    log::error!("panic while forgetting (request {unique})");
                }
            }
            // Requests are answered as soon as they are served; nothing
            // waits that an interrupt could cut short.
            Op::Interrupt { .. } => {}
            Op::Init(_) => Reply::new(unique, sink).error(EIO),
            Op::Destroy => {
                let _ = catch_unwind(AssertUnwindSafe(|| self.fs.destroy()));
                Reply::new(unique, sink).ok();
            }
            Op::Unsupported | Op::Unknown => Reply::new(unique, sink).error(ENOSYS),
            _ => {
                let reply = Reply::new(unique, sink);
                // A panic drops `reply`, which answers EIO.
                if catch_unwind(AssertUnwindSafe(|| self.fs.handle(req, reply))).is_err() {
                    log::error!("panic while serving request {unique}: answered EIO");
                }
            }
        }
    }
}

/// Requests the kernel may send for an open file or a cached inode, whoever
/// the current process is (so never refused by [`Session::owner_only`]).
fn on_behalf_of_open_file(op: &Op<'_>) -> bool {
    matches!(
        op,
        Op::Read(_)
            | Op::Write { .. }
            | Op::Readdir(_)
            | Op::Readdirplus(_)
            | Op::Release(_)
            | Op::Releasedir(_)
            | Op::Fsync { .. }
            | Op::Fsyncdir { .. }
            | Op::Flush(_)
            | Op::Forget { .. }
            | Op::BatchForget(_)
            | Op::Interrupt { .. }
            | Op::Destroy
    )
}
