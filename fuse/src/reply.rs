//! Reply encoding and the [`Sink`] a transport sends replies through.
//!
//! A handler answers each request through its [`Reply`], once: the encoders
//! consume it. A `Reply` dropped without an answer (a handler that forgot,
//! or one that panicked) answers `EIO`, so the kernel never waits forever.

use std::io::{self, IoSlice};

use zerocopy::IntoBytes;

use crate::abi;

/// Where replies go. A transport implements it once: the classic channel
/// puts a `fuse_out_header` in front of `parts` and sends them with one
/// `writev(2)` (so a read's reply goes out straight from sector memory); an
/// io_uring entry writes the header into its `in_out` area and copies
/// `parts` into its payload buffer, then commits.
pub trait Sink {
    /// Sends the reply to request `unique`: `error` is 0 or a negative
    /// errno (then `parts` is empty), `parts` the reply's bytes after the
    /// `fuse_out_header`, at most the connection's largest reply in all.
    fn send(&mut self, unique: u64, error: i32, parts: &[IoSlice<'_>]) -> io::Result<()>;
}

/// The answer to one request.
pub struct Reply<'s> {
    unique: u64,
    /// `None` once answered, or for a request that takes no reply.
    sink: Option<&'s mut dyn Sink>,
}

impl<'s> Reply<'s> {
    /// The reply to request `unique`, sent through `sink`.
    pub fn new(unique: u64, sink: &'s mut dyn Sink) -> Reply<'s> {
        Reply { unique, sink: Some(sink) }
    }

    /// A request that takes no reply (`FORGET`, `BATCH_FORGET`, `INTERRUPT`).
    pub fn none(unique: u64) -> Reply<'s> {
        Reply { unique, sink: None }
    }

    /// The request's id.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    fn send(mut self, error: i32, parts: &[IoSlice<'_>]) {
        let Some(sink) = self.sink.take() else { return };
        let Err(e) = send_checked(sink, self.unique, error, parts) else { return };
        match e.raw_os_error() {
            // The request was interrupted and the kernel no longer waits
            // for it, or the mount is gone.
            Some(ENOENT | ENODEV) => {}
            // The kernel refused the reply (or the write failed): the
            // caller would wait forever. Answer EIO instead, once.
            _ => {
                log::error!("reply to request {} not sent ({e}); answering EIO", self.unique);
                if let Err(e) = sink.send(self.unique, -EIO, &[]) {
                    log::error!("EIO to request {} not sent either: {e}", self.unique);
                }
            }
        }
    }

    /// Fails the request with `errno` (positive, e.g. `libc::ENOENT`).
    pub fn error(self, errno: i32) {
        let errno = if errno <= 0 { EIO } else { errno };
        self.send(-errno, &[]);
    }

    /// Success without data.
    pub fn ok(self) {
        self.send(0, &[]);
    }

    /// For a request that takes no reply: consumes it without sending.
    pub fn no_reply(mut self) {
        self.sink = None;
    }

    /// Bytes (a read, a symlink target, an xattr value, a directory listing).
    pub fn data(self, data: &[u8]) {
        self.send(0, &[IoSlice::new(data)]);
    }

    /// Bytes in pieces (a read straight from the sectors that hold it).
    pub fn data_vectored(self, parts: &[IoSlice<'_>]) {
        self.send(0, parts);
    }

    /// One struct.
    pub fn value<T: IntoBytes + zerocopy::Immutable>(self, v: &T) {
        self.send(0, &[IoSlice::new(v.as_bytes())]);
    }

    /// `LOOKUP`, `MKNOD`, `MKDIR`, `SYMLINK`, `LINK`.
    pub fn entry(self, e: &abi::fuse_entry_out) {
        self.value(e);
    }

    /// `GETATTR`, `SETATTR`.
    pub fn attr(self, a: &abi::fuse_attr_out) {
        self.value(a);
    }

    /// `OPEN`, `OPENDIR`.
    pub fn open(self, fh: u64, open_flags: u32) {
        self.value(&abi::fuse_open_out { fh, open_flags, backing_id: 0 });
    }

    /// `CREATE`, `TMPFILE`: the new entry and its open file.
    pub fn create(self, e: &abi::fuse_entry_out, fh: u64, open_flags: u32) {
        let o = abi::fuse_open_out { fh, open_flags, backing_id: 0 };
        self.send(0, &[IoSlice::new(e.as_bytes()), IoSlice::new(o.as_bytes())]);
    }

    /// `WRITE`, `COPY_FILE_RANGE`: bytes written.
    pub fn written(self, size: u32) {
        self.value(&abi::fuse_write_out { size, padding: 0 });
    }

    /// `COPY_FILE_RANGE_64`: bytes copied.
    pub fn copied(self, bytes_copied: u64) {
        self.value(&abi::fuse_copy_file_range_out { bytes_copied });
    }

    /// `STATFS`.
    pub fn statfs(self, st: abi::fuse_kstatfs) {
        self.value(&abi::fuse_statfs_out { st });
    }

    /// `GETXATTR`/`LISTXATTR` with size 0: the size the value needs.
    pub fn xattr_size(self, size: u32) {
        self.value(&abi::fuse_getxattr_out { size, padding: 0 });
    }

    /// `LSEEK`.
    pub fn offset(self, offset: u64) {
        self.value(&abi::fuse_lseek_out { offset });
    }

    /// `STATX`.
    pub fn statx(self, out: &abi::fuse_statx_out) {
        self.value(out);
    }

    /// `IOCTL`: the ioctl's return value and the bytes it copies out (at
    /// most the request's `out_size`; no retry).
    pub fn ioctl(self, result: i32, out: &[u8]) {
        let o = abi::fuse_ioctl_out { result, flags: 0, in_iovs: 0, out_iovs: 0 };
        self.send(0, &[IoSlice::new(o.as_bytes()), IoSlice::new(out)]);
    }
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            log::error!("request {} was not answered: EIO", self.unique);
            let _ = sink.send(self.unique, -EIO, &[]);
        }
    }
}

const EIO: i32 = 5;
const ENOENT: i32 = 2;
const ENODEV: i32 = 19;

/// `sink.send`, behind the test-only `fuse.reply` failpoint (a failed reply
/// write: `fuse.reply=1*return`).
fn send_checked(sink: &mut dyn Sink, unique: u64, error: i32, parts: &[IoSlice<'_>]) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("fuse.reply", |_| Err(io::Error::from_raw_os_error(EIO)));
    sink.send(unique, error, parts)
}

/// A directory listing being built for `READDIR` or `READDIRPLUS`: records
/// of `fuse_dirent` (or `fuse_direntplus`) and the name, each padded to 8
/// bytes, up to the size the kernel asked for.
pub struct DirBuf<'b> {
    buf: &'b mut Vec<u8>,
    max: usize,
}

impl<'b> DirBuf<'b> {
    /// An empty listing of at most `max` bytes in `buf` (cleared; its
    /// capacity is kept, so a worker's buffer is allocated once).
    pub fn new(buf: &'b mut Vec<u8>, max: usize) -> DirBuf<'b> {
        buf.clear();
        DirBuf { buf, max }
    }

    /// Adds an entry: `off` is the offset of the entry after it, `typ` the
    /// file type in `st_mode` bits >> 12 (`DT_*`). False, and nothing added,
    /// when it does not fit.
    pub fn add(&mut self, ino: u64, off: u64, typ: u32, name: &[u8]) -> bool {
        let d = abi::fuse_dirent { ino, off, namelen: name.len() as u32, r#type: typ };
        self.push(&[d.as_bytes(), name])
    }

    /// Adds a `READDIRPLUS` entry (`entry` carries the attributes); as [`DirBuf::add`].
    pub fn add_plus(&mut self, entry: &abi::fuse_entry_out, off: u64, typ: u32, name: &[u8]) -> bool {
        let d = abi::fuse_dirent { ino: entry.attr.ino, off, namelen: name.len() as u32, r#type: typ };
        self.push(&[entry.as_bytes(), d.as_bytes(), name])
    }

    fn push(&mut self, pieces: &[&[u8]]) -> bool {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        let padded = (len + 7) & !7;
        if self.buf.len() + padded > self.max {
            return false;
        }
        for p in pieces {
            self.buf.extend_from_slice(p);
        }
        self.buf.resize(self.buf.len() + padded - len, 0);
        true
    }

    /// The listing so far.
    pub fn bytes(&self) -> &[u8] {
        self.buf
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what was sent.
    #[derive(Default)]
    struct Record(Vec<(u64, i32, Vec<u8>)>);

    impl Sink for Record {
        fn send(&mut self, unique: u64, error: i32, parts: &[IoSlice<'_>]) -> io::Result<()> {
            self.0.push((unique, error, parts.iter().flat_map(|p| p.iter().copied()).collect()));
            Ok(())
        }
    }

    #[test]
    fn each_encoder_sends_once() {
        let mut r = Record::default();
        Reply::new(1, &mut r).error(ENOENT);
        Reply::new(2, &mut r).written(7);
        Reply::new(3, &mut r).create(&abi::fuse_entry_out::default(), 9, 1);
        Reply::none(4).no_reply();
        Reply::new(5, &mut r).no_reply();
        assert_eq!(r.0.len(), 3);
        assert_eq!(r.0[0], (1, -2, vec![]));
        assert_eq!(r.0[1].2, 7u32.to_ne_bytes().iter().chain(&[0; 4]).copied().collect::<Vec<_>>());
        assert_eq!(r.0[2].2.len(), 128 + 16);
    }

    /// Fails its first send with `errno`.
    struct FailOnce(Record, Option<i32>);

    impl Sink for FailOnce {
        fn send(&mut self, unique: u64, error: i32, parts: &[IoSlice<'_>]) -> io::Result<()> {
            match self.1.take() {
                Some(e) => Err(io::Error::from_raw_os_error(e)),
                None => self.0.send(unique, error, parts),
            }
        }
    }

    #[test]
    fn a_refused_reply_becomes_eio_but_an_interrupted_one_does_not() {
        let mut s = FailOnce(Record::default(), Some(22));
        Reply::new(1, &mut s).written(7);
        assert_eq!(s.0 .0, vec![(1, -EIO, vec![])]);
        let mut s = FailOnce(Record::default(), Some(ENOENT));
        Reply::new(2, &mut s).written(7);
        assert!(s.0 .0.is_empty());
    }

    #[test]
    fn an_unanswered_request_gets_eio() {
        let mut r = Record::default();
        drop(Reply::new(8, &mut r));
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _reply = Reply::new(9, &mut r);
            panic!("handler bug");
        }));
        assert!(res.is_err());
        assert_eq!(r.0, vec![(8, -EIO, vec![]), (9, -EIO, vec![])]);
    }

    #[test]
    fn dir_records_are_padded_and_bounded() {
        let mut v = Vec::new();
        let mut d = DirBuf::new(&mut v, 64);
        assert!(d.add(5, 1, 8, b"abc")); // 24 + 3 -> 32
        assert!(d.add(6, 2, 4, b"12345678")); // 24 + 8 -> 32
        assert!(!d.add(7, 3, 8, b"x"));
        assert_eq!(d.bytes().len(), 64);
        assert_eq!(&d.bytes()[24..27], b"abc");
        let mut v = Vec::new();
        let mut d = DirBuf::new(&mut v, 4096);
        assert!(d.add_plus(&abi::fuse_entry_out::default(), 1, 8, b"name"));
        assert_eq!(d.bytes().len(), 128 + 24 + 8);
    }
}
