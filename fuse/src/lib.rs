//! sectorfs's own FUSE session layer.
//!
//! fuser 0.18 cannot speak FUSE over io_uring and has no `FUSE_TMPFILE`,
//! `FUSE_STATX` or `FUSE_SYNCFS`, so the project owns the layer between
//! `/dev/fuse` and the filesystem:
//!
//! - [`abi`]: the kernel's structs and constants (`linux/fuse.h`, 7.45).
//! - [`decode`]: one request's bytes to an [`decode::Op`], defensively: a
//!   truncated or malformed message is an error reply, never a panic or an
//!   out-of-bounds read (fuzzed in `fuzz/`).
//! - [`reply`]: the reply encoders, writing into a [`reply::Sink`]; a sink is
//!   one transport's way of sending (`writev(2)` on the classic channel, a
//!   copy into a ring entry's buffer for io_uring).
//! - [`session`]: the [`session::Filesystem`] trait, `INIT` negotiation and
//!   the dispatch that both transports share.
//! - `dev` (Linux): `/dev/fuse`, `mount(2)`, the classic read/write loop.
//! - `uring` (Linux): FUSE over io_uring, one queue per CPU.
//!
//! Everything but `dev` and `uring` is platform-neutral and tested on any host.

pub mod abi;
pub mod decode;
pub mod reply;
pub mod session;

#[cfg(target_os = "linux")]
pub mod dev;
#[cfg(target_os = "linux")]
pub mod uring;
