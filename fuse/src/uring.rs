//! FUSE over io_uring: one queue per possible CPU, one pinned thread per queue.
//!
//! # Protocol (Linux `fs/fuse/dev_uring.c`)
//!
//! After an `INIT` reply that grants `FUSE_OVER_IO_URING`, the daemon
//! registers *entries* with `IORING_OP_URING_CMD` SQEs on the `/dev/fuse` fd.
//! An entry is two user buffers: a [`abi::fuse_uring_req_header`] (the
//! request's `fuse_in_header` in `in_out`, its fixed argument struct in
//! `op_in`, and `ring_ent_in_out` with the `commit_id` and the payload size)
//! and a payload buffer of at least the connection's largest payload
//! (`max(max_write, max_pages * PAGE_SIZE, FUSE_MIN_READ_BUFFER)`). A
//! `REGISTER` command completes when the kernel has copied a request into the
//! entry; the reply goes back in the same buffers with `COMMIT_AND_FETCH`,
//! which also hands the entry back for the next request.
//!
//! - The kernel has one queue per *possible* CPU and puts a request on the
//!   queue of the CPU its caller runs on. The ring is used only once every
//!   queue has an entry registered; from the `INIT` reply until then, new
//!   requests wait in the kernel (Linux 6.14 and later; older kernels sent them
//!   over `read(2)` meanwhile). `FORGET`s and `INTERRUPT`s always come over
//!   `read(2)`: the classic loop must keep running.
//! - If a `REGISTER` fails, the kernel drops io_uring for the connection and
//!   requests go back to `read(2)`. [`Ring::start`] uses that on its own
//!   failures (see there), so a failed start leaves a working connection.
//! - At unmount (or abort) the kernel completes the waiting entries with
//!   `-ENOTCONN`, and commits fail with it: the threads end by themselves.
//!
//! # Threads and buffers
//!
//! [`Ring`] owns, per queue, one anonymous mapping holding `depth` entries
//! (each: one page for the header, then the payload buffer rounded up to
//! pages), an eventfd, and the queue's thread. The thread owns everything
//! else: its io_uring (the `/dev/fuse` fd registered as fixed file 0;
//! `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has them, see `prepare`), the
//! iovecs that point the kernel at the buffers, each entry's `commit_id`,
//! and a scratch `Vec<u8>` for replies.
//!
//! Who touches an entry's buffers, and when:
//!
//! 1. While an entry's command is in flight, only the kernel does, and only in
//!    the context of the queue's thread (inside its `io_uring_enter`, or task
//!    work or an io-wq worker on its behalf). The thread does not touch the
//!    entry.
//! 2. From the entry's CQE until its next command is pushed, only the queue's
//!    thread does. It lends `&[u8]` views of `in_out`, `op_in` and the payload
//!    to [`RingHandler::handle`] and writes nothing those views cover while
//!    they live: a reply to a request that has a payload is staged in the
//!    scratch vector and copied in after `handle` returns; the
//!    `fuse_out_header` and `payload_sz` are written after `handle` returns.
//!    Only a request without payload (`payload_sz == 0`, e.g. `READ`) gets its
//!    reply copied straight into the payload buffer by the [`Sink`], which the
//!    handler has no view of (it gets `&[]`).
//! 3. The mapping is unmapped only after the queue's thread has been joined:
//!    a thread that has exited can no longer have the kernel write into its
//!    buffers (its io_uring is closed, its task work is dead).
//!
//! Every entry is always either in the kernel or being served by its thread
//! (but for entries whose registration the kernel refused, which stay
//! unused): a handler that does not reply, or panics before replying, gets
//! `-EIO` committed; a reply too large for the buffer is committed as `-EIO`.
//!
//! The only state shared between threads is the per-queue served counter
//! (relaxed atomics, read by [`Ring::served`]) and the eventfds (written by
//! [`Ring::stop`]).

use std::io::{self, IoSlice};
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};

use io_uring::{cqueue, opcode, squeue, types, IoUring, SubmissionQueue, Submitter};
use zerocopy::IntoBytes;

use crate::abi;
use crate::reply::Sink;

/// What the ring hands each request to (the session's dispatch).
pub trait RingHandler: Send + Sync + 'static {
    /// Serves one request. `in_header` is the entry's 128-byte `in_out` area
    /// (a `fuse_in_header` at its start), `op_in` the 128-byte area holding
    /// the opcode's fixed argument struct (stale bytes beyond it, and for
    /// opcodes without one), `payload` the request's payload (names, values,
    /// write data), empty when it has none.
    ///
    /// Calls `sink.send` at most once; a second call fails and is ignored.
    /// Returning without a reply, or panicking before it, answers `-EIO`.
    fn handle(&self, in_header: &[u8], op_in: &[u8], payload: &[u8], sink: &mut dyn Sink);
}

/// The shape of a [`Ring`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// Queues: exactly the kernel's, one per possible CPU ([`possible_cpus`]).
    pub queues: usize,
    /// Entries per queue: how many requests one queue can hold at once.
    pub depth: usize,
    /// Each entry's payload buffer, in bytes: at least the connection's
    /// largest payload ([`payload_size`]).
    pub payload_size: usize,
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`), which is
/// the kernel's number of queues: every one needs entries before the ring is
/// used. CPU `n` is queue `n`.
///
/// # Errors
///
/// The file cannot be read, or its contents are not a CPU list.
pub fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    parse_cpu_list(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad CPU list {text:?}")))
}

/// The number of CPUs in a list such as `0-3,8,10-11`.
fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut count = 0usize;
    for range in text.trim().split(',') {
        let (lo, hi) = match range.split_once('-') {
            Some((lo, hi)) => (lo.parse::<usize>().ok()?, hi.parse::<usize>().ok()?),
            None => {
                let cpu = range.parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        count = count.checked_add(hi.checked_sub(lo)? + 1)?;
    }
    Some(count)
}

/// The payload buffer the kernel requires of each entry, for the `max_write`
/// and `max_pages` granted at `INIT`: `max(max_write, max_pages * PAGE_SIZE,
/// FUSE_MIN_READ_BUFFER)` (the kernel rejects smaller registrations).
pub fn payload_size(max_write: u32, max_pages: u16) -> usize {
    (max_write as usize).max(usize::from(max_pages) * page_size()).max(abi::FUSE_MIN_READ_BUFFER)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|p| p.is_power_of_two()).unwrap_or(4096)
}

/// A running FUSE-over-io_uring transport: `queues` threads named
/// `sectorfs-ring-N`, thread `N` pinned to CPU `N`.
///
/// Dropping it is [`Ring::stop`].
#[derive(Debug)]
pub struct Ring {
    /// In queue order. Each stops and joins its thread when dropped.
    queues: Vec<Queue>,
    served: Arc<[Served]>,
    cfg: RingConfig,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Ring>();
};

/// Requests a [`Ring`] served, readable from anywhere (and after it stopped).
#[derive(Debug, Clone)]
pub struct RingCounter(Arc<[Served]>);

impl RingCounter {
    /// Requests served through every queue so far.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// A request counter on its own cache lines (each is written by one thread).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Served(AtomicU64);

impl Ring {
    /// Registers `cfg.depth` entries on each of `cfg.queues` queues on the
    /// `/dev/fuse` fd `fd` (the session's, with `INIT` already answered with
    /// `FUSE_OVER_IO_URING`; the ring keeps its own reference to the device)
    /// and starts one thread per queue. Returns once every queue has submitted
    /// its registrations; the kernel serves through the ring from then on.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a config the kernel would not use (no queues or
    /// entries, fewer queues than possible CPUs, a payload buffer below
    /// `FUSE_MIN_READ_BUFFER`); the error of the first queue that could not be
    /// set up (io_uring, mapping, thread) or whose registration the kernel
    /// refused at once (`EOPNOTSUPP`: io_uring is off; `EINVAL`: the payload
    /// buffer is too small).
    ///
    /// After an error every thread started is stopped, and `start` has handed
    /// the connection back to `/dev/fuse` (it submits a registration the
    /// kernel must refuse, which turns io_uring off for the connection): the
    /// session can go on with its classic loop. If even that failed (logged),
    /// every request waits for a ring that never comes: abort the connection.
    pub fn start(fd: BorrowedFd<'_>, cfg: RingConfig, handler: Arc<dyn RingHandler>) -> io::Result<Ring> {
        match Ring::start_queues(fd, &cfg, handler) {
            Ok(ring) => Ok(ring),
            Err(e) => {
                log::error!("FUSE over io_uring could not start ({cfg:?}): {e}; using /dev/fuse alone");
                if let Err(e2) = hand_back_to_dev(fd) {
                    log::error!("could not turn io_uring off for the connection: {e2}; requests will hang");
                }
                Err(e)
            }
        }
    }

    fn start_queues(fd: BorrowedFd<'_>, cfg: &RingConfig, handler: Arc<dyn RingHandler>) -> io::Result<Ring> {
        let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if cfg.queues == 0 || cfg.queues > usize::from(u16::MAX) + 1 || cfg.depth == 0 {
            return invalid(format!("{cfg:?}: need 1..=65536 queues and at least one entry each"));
        }
        if let Ok(cpus) = possible_cpus() {
            if cfg.queues < cpus {
                return invalid(format!("{} queues: the kernel waits for one per possible CPU ({cpus})", cfg.queues));
            }
        }
        if cfg.payload_size < abi::FUSE_MIN_READ_BUFFER || u32::try_from(cfg.payload_size).is_err() {
            return invalid(format!("payload buffer of {} bytes", cfg.payload_size));
        }
        let page = page_size();
        let stride = page + cfg.payload_size.next_multiple_of(page);
        let len = stride.checked_mul(cfg.depth).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // Each queue registers the device in its own io_uring; this reference
        // lives until the last thread has done so.
        let dev = Arc::new(fd.try_clone_to_owned()?);

        let served: Arc<[Served]> = (0..cfg.queues).map(|_| Served::default()).collect();
        let mut ring = Ring { queues: Vec::with_capacity(cfg.queues), served: Arc::clone(&served), cfg: cfg.clone() };
        let (report, reports) = mpsc::channel();
        for qid in 0..cfg.queues {
            let mem = Mapping::new(len)?;
            // SAFETY: eventfd has no memory-safety preconditions.
            let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if wake < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `wake` is a new descriptor nothing else owns.
            let wake = unsafe { OwnedFd::from_raw_fd(wake) };
            let setup = Setup {
                qid: qid as u16,
                base: Base(mem.ptr),
                depth: cfg.depth,
                stride,
                payload_size: cfg.payload_size,
                dev: Arc::clone(&dev),
                wake: wake.as_raw_fd(),
                handler: Arc::clone(&handler),
                served: Arc::clone(&served),
                report: report.clone(),
            };
            let thread = thread::Builder::new().name(format!("sectorfs-ring-{qid}")).spawn(move || setup.run())?;
            ring.queues.push(Queue { thread: Some(thread), wake, _mem: mem });
        }
        drop(report);
        for _ in 0..cfg.queues {
            match reports.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => return Err(io::Error::other("a ring thread died while starting")),
            }
        }
        Ok(ring)
    }

    /// The shape it was started with.
    pub fn config(&self) -> &RingConfig {
        &self.cfg
    }

    /// A handle on the served counters that outlives the ring (for `stats`).
    pub fn counter(&self) -> RingCounter {
        RingCounter(Arc::clone(&self.served))
    }

    /// Requests served so far, per queue.
    pub fn served(&self) -> Vec<u64> {
        self.served.iter().map(|s| s.0.load(Ordering::Relaxed)).collect()
    }

    /// Stops the threads and joins them, then frees the buffers.
    ///
    /// Call it after the unmount (the threads have then ended already) or
    /// when the session ends: stopping a ring on a live mount leaves its
    /// entries unusable, and requests wait until the connection is aborted.
    pub fn stop(self) {
        drop(self);
    }
}

/// A queue as [`Ring`] holds it. Dropping it wakes its thread, joins it, and
/// only then closes the eventfd and unmaps the buffers (module docs, rule 3).
#[derive(Debug)]
struct Queue {
    thread: Option<JoinHandle<()>>,
    wake: OwnedFd,
    /// Dropped after `drop` below has joined the thread.
    _mem: Mapping,
}

impl Drop for Queue {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own.
        let n = unsafe { libc::write(self.wake.as_raw_fd(), ptr::addr_of!(one).cast(), size_of::<u64>()) };
        if n != size_of::<u64>() as isize {
            log::error!("waking a ring thread: {}", io::Error::last_os_error());
        }
        if let Some(thread) = self.thread.take() {
            let name = thread.thread().name().unwrap_or("?").to_owned();
            if thread.join().is_err() {
                log::error!("{name} panicked");
            }
        }
    }
}

/// An anonymous private mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a `Mapping` is an address range plus the duty to unmap it. Nothing
// reads or writes memory through a `&Mapping` or a moved `Mapping`; the queue
// thread accesses the range through its own pointer (`Base`), under rules 1-3
// of the module docs.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`: no method of `&Mapping` touches the memory.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping aliases nothing; the kernel picks
        // the address.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is our mapping, and nothing uses it any more:
        // `Queue::drop` has joined the thread that did (module docs, rule 3).
        if unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) } != 0 {
            log::error!("munmap of a ring queue: {}", io::Error::last_os_error());
        }
    }
}

/// The base of a queue's [`Mapping`], sent to the queue's thread.
struct Base(NonNull<u8>);

// SAFETY: only the queue's thread uses the pointer (rules 1-2 of the module
// docs); the `Mapping` it points into outlives that thread (rule 3).
unsafe impl Send for Base {}

/// What a queue's thread starts from.
struct Setup {
    qid: u16,
    base: Base,
    depth: usize,
    stride: usize,
    payload_size: usize,
    dev: Arc<OwnedFd>,
    wake: RawFd,
    handler: Arc<dyn RingHandler>,
    served: Arc<[Served]>,
    report: mpsc::Sender<io::Result<()>>,
}

/// `user_data` of the eventfd poll; entries use their index.
const WAKE: u64 = u64::MAX;

/// Offsets in `fuse_uring_req_header`.
const OP_IN: usize = abi::FUSE_URING_IN_OUT_HEADER_SZ;
const ENT_IN_OUT: usize = OP_IN + abi::FUSE_URING_OP_IN_OUT_SZ;
const COMMIT_ID: usize = ENT_IN_OUT + 8;
const PAYLOAD_SZ: usize = ENT_IN_OUT + 16;
const _: () = assert!(size_of::<abi::fuse_uring_req_header>() == ENT_IN_OUT + 32);
const _: () = assert!(size_of::<abi::fuse_out_header>() <= abi::FUSE_URING_IN_OUT_HEADER_SZ);

/// The command an entry last sent, to resend it on `EINTR`/`EAGAIN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Register,
    Commit,
}

/// How a queue's thread ended.
enum End {
    /// Woken by [`Ring::stop`].
    Stopped,
    /// The connection is gone (unmount or abort).
    Disconnected,
    /// Anything else (logged).
    Failed,
}

/// A queue's thread state (everything but its io_uring).
struct Server {
    qid: u16,
    base: NonNull<u8>,
    stride: usize,
    payload_size: usize,
    /// Per entry: the iovecs its `REGISTER` points at. Never written after
    /// creation: the kernel may read them whenever a `REGISTER` is issued.
    iovs: Box<[[libc::iovec; 2]]>,
    /// Per entry: the `commit_id` of the request it holds, and its last command.
    commit: Vec<(u64, Cmd)>,
    /// Replies to requests with a payload are staged here (module docs, rule 2).
    scratch: Vec<u8>,
    handler: Arc<dyn RingHandler>,
    served: Arc<[Served]>,
}

type Uring = IoUring<squeue::Entry128, cqueue::Entry>;

impl Setup {
    fn run(self) {
        let qid = self.qid;
        pin_to_cpu(usize::from(qid));
        let (depth, wake) = (self.depth, self.wake);
        let (mut server, dev, report) = self.into_server();
        // Declared after `server`, so dropped (closed) before it: the kernel
        // is done with the iovecs before they are freed, and with the buffers
        // before `Ring` unmaps them (after joining this thread).
        let mut ring = match prepare(&dev, depth) {
            Ok(ring) => ring,
            Err(e) => {
                log::error!("sectorfs-ring-{qid}: setup: {e}");
                let _ = report.send(Err(e));
                return;
            }
        };
        let backlog = match server.register(&mut ring, wake) {
            Ok(backlog) => backlog,
            Err(e) => {
                log::error!("sectorfs-ring-{qid}: registration refused: {e}");
                let _ = report.send(Err(e));
                return;
            }
        };
        // Every registration is with the kernel: the device reference (held
        // by the io_uring now) and the report channel are no longer needed.
        drop(dev);
        let _ = report.send(Ok(()));
        drop(report);
        match server.serve(&mut ring, backlog) {
            End::Stopped | End::Disconnected => log::debug!("sectorfs-ring-{qid}: ended"),
            End::Failed => log::error!("sectorfs-ring-{qid}: ended by an error; requests on CPU {qid} will wait"),
        }
    }

    fn into_server(self) -> (Server, Arc<OwnedFd>, mpsc::Sender<io::Result<()>>) {
        let base = self.base.0;
        let page = self.stride - self.payload_size.next_multiple_of(page_size());
        let iovs = (0..self.depth)
            .map(|i| {
                // SAFETY: `i * stride + stride <= len` of the mapping; these
                // are addresses only.
                let header = unsafe { base.as_ptr().add(i * self.stride) };
                // SAFETY: as above; the payload starts one page in.
                let payload = unsafe { header.add(page) };
                [
                    libc::iovec { iov_base: header.cast(), iov_len: size_of::<abi::fuse_uring_req_header>() },
                    libc::iovec { iov_base: payload.cast(), iov_len: self.payload_size },
                ]
            })
            .collect();
        let server = Server {
            qid: self.qid,
            base,
            stride: self.stride,
            payload_size: self.payload_size,
            iovs,
            commit: vec![(0, Cmd::Register); self.depth],
            scratch: Vec::new(),
            handler: self.handler,
            served: self.served,
        };
        (server, self.dev, self.report)
    }
}

/// Creates a queue's io_uring: room for every entry's command and the
/// eventfd poll, a completion queue that cannot overflow, the device as fixed
/// file 0.
///
/// The ring is `SINGLE_ISSUER | DEFER_TASKRUN` where the kernel has them
/// (6.1 and later): only the queue's thread, which creates it, ever submits
/// or waits, and it always waits in `io_uring_enter(GETEVENTS)`, which is
/// where deferred task work runs. The kernel hands a request to an entry as
/// task work (`io_uring_cmd_complete_in_task`); deferred, that is a push onto
/// the ring's own list and a wake-up of the waiting thread, instead of a
/// `task_work_add` with a signal notification. Measured on the null fs
/// (2-core VM, `docs/BENCHMARKS.md`): ~7% less daemon CPU per request,
/// 5-7% more creates, stats, deletes and 4 KiB writes per second
/// (libfuse 3.19 leaves these flags off: its comment found `SINGLE_ISSUER`
/// with `COOP_TASKRUN` slower; `COOP_TASKRUN | TASKRUN_FLAG` changed nothing
/// here). A kernel that refuses the flags gets the plain ring.
fn prepare(dev: &OwnedFd, depth: usize) -> io::Result<Uring> {
    let sqes = u32::try_from(depth + 1).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let build = |deferred: bool| {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(sqes.saturating_mul(2)).setup_submit_all();
        if deferred {
            builder.setup_single_issuer().setup_defer_taskrun();
        }
        builder.build(sqes)
    };
    let ring: Uring = match build(true) {
        Ok(ring) => ring,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            log::debug!("io_uring without SINGLE_ISSUER | DEFER_TASKRUN (kernel before 6.1)");
            build(false)?
        }
        Err(e) => return Err(e),
    };
    ring.submitter().register_files(&[dev.as_raw_fd()])?;
    Ok(ring)
}

/// Pins the calling thread to `cpu`; logs (at `info`: nothing is wrong) if
/// it cannot (e.g. the CPU is offline, or outside our cpuset): the queue
/// then still works, from anywhere. (A warning reached the terminal of
/// every mount made while a CPU was offline: xfstests generic/650.)
fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * size_of::<libc::cpu_set_t>() {
        log::warn!("sectorfs-ring-{cpu}: CPU beyond cpu_set_t, not pinned");
        return;
    }
    // SAFETY: `cpu` is below the set's bit count (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: passes a live cpu_set_t and its size.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        log::info!("sectorfs-ring-{cpu}: not pinned to CPU {cpu}: {}", io::Error::last_os_error());
    }
}

/// A `COMMIT_AND_FETCH` SQE for entry `user_data` of queue `qid`.
fn commit_cmd(qid: u16, commit_id: u64, user_data: u64) -> squeue::Entry128 {
    opcode::UringCmd80::new(types::Fixed(0), abi::FUSE_IO_URING_CMD_COMMIT_AND_FETCH)
        .cmd(uring_cmd_bytes(qid, commit_id))
        .build()
        .user_data(user_data)
}

/// Offset of `len` in the kernel's `struct io_uring_sqe`
/// (`opcode, flags, ioprio, fd, off, addr, len`).
const SQE_LEN: usize = 24;
const _: () = assert!(size_of::<squeue::Entry128>() == 128);

/// A `REGISTER` SQE: `sqe->addr` points at the entry's two iovecs and
/// `sqe->len` is 2, which `UringCmd80` has no setter for.
fn register_cmd(qid: u16, user_data: u64, iovs: *const libc::iovec) -> squeue::Entry128 {
    let mut sqe = opcode::UringCmd80::new(types::Fixed(0), abi::FUSE_IO_URING_CMD_REGISTER)
        .cmd(uring_cmd_bytes(qid, 0))
        .addr(Some(iovs as u64))
        .build()
        .user_data(user_data);
    // SAFETY: `Entry128` is `#[repr(C)]` and starts with the kernel's 64-byte
    // `io_uring_sqe` (size checked above), whose `len: u32` is at byte 24 and
    // which holds only integers, so any bits are valid; the write is in bounds
    // of our own local.
    unsafe { ptr::addr_of_mut!(sqe).cast::<u8>().add(SQE_LEN).cast::<u32>().write_unaligned(2) };
    sqe
}

fn uring_cmd_bytes(qid: u16, commit_id: u64) -> [u8; 80] {
    let req = abi::fuse_uring_cmd_req { flags: 0, commit_id, qid, padding: [0; 6] };
    let mut cmd = [0u8; 80];
    cmd[..size_of::<abi::fuse_uring_cmd_req>()].copy_from_slice(req.as_bytes());
    cmd
}

/// Turns io_uring off for the connection on `fd`, so that requests go back to
/// `read(2)`: the kernel does so when a `REGISTER` fails, and a `REGISTER`
/// with `sqe->len = 0` (no iovecs) must fail with `EINVAL`. Any failure but
/// `EAGAIN` (`INIT` not answered yet) leaves io_uring off, or the connection
/// dead.
fn hand_back_to_dev(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut ring: Uring = IoUring::builder().build(1)?;
    let sqe = opcode::UringCmd80::new(types::Fd(fd.as_raw_fd()), abi::FUSE_IO_URING_CMD_REGISTER)
        .cmd(uring_cmd_bytes(0, 0))
        .build()
        .user_data(0);
    // SAFETY: the SQE points at no memory (no `addr`); `fd` outlives the call.
    unsafe { ring.submission().push(&sqe) }.map_err(|_| io::Error::other("io_uring SQ full"))?;
    let limit = types::Timespec::from(std::time::Duration::from_secs(1));
    match ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&limit)) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
        Err(e) => return Err(e),
    }
    let res = ring.completion().next().map(|c| c.result());
    match res {
        Some(r) if r == -libc::EAGAIN => Err(io::Error::other("INIT is not answered yet")),
        Some(r) if r < 0 => Ok(()),
        _ => Err(io::Error::other("the kernel accepted a REGISTER without buffers")),
    }
}

/// Pushes `sqe`; if the SQ is full (it cannot be: it has a slot per entry and
/// one for the poll, and each is pushed at most once per submit), submits first.
///
/// # Safety
///
/// The memory `sqe` points the kernel at must stay valid until its CQE: for
/// our commands, an entry's iovecs and buffers (held until the thread ends
/// and, for the buffers, until `Ring` has joined it).
unsafe fn push(
    submitter: &Submitter<'_>,
    sq: &mut SubmissionQueue<'_, squeue::Entry128>,
    sqe: &squeue::Entry128,
) -> io::Result<()> {
    // SAFETY: forwarded to the caller.
    if unsafe { sq.push(sqe) }.is_ok() {
        return Ok(());
    }
    sq.sync();
    submitter.submit()?;
    sq.sync();
    // SAFETY: forwarded to the caller.
    unsafe { sq.push(sqe) }.map_err(|_| io::Error::other("io_uring SQ full after a submit"))
}

impl Server {
    fn header(&self, idx: usize) -> *mut u8 {
        // SAFETY: `idx < depth`, so the offset is inside the mapping.
        unsafe { self.base.as_ptr().add(idx * self.stride) }
    }

    fn payload(&self, idx: usize) -> *mut u8 {
        self.iovs[idx][1].iov_base.cast()
    }

    /// Submits every entry's `REGISTER` and the eventfd poll. Returns the
    /// completions already posted (requests may arrive at once), or the error
    /// the kernel refused this queue's registrations with right away.
    ///
    /// If it refuses only some (it treats each alone: a failed allocation),
    /// the queue serves with the rest, and the refused entries stay unused:
    /// the ring may already be in use, and stopping now would strand requests.
    fn register(&mut self, ring: &mut Uring, wake: RawFd) -> io::Result<Vec<(u64, i32)>> {
        {
            let (submitter, mut sq, _) = ring.split();
            for idx in 0..self.iovs.len() {
                let sqe = register_cmd(self.qid, idx as u64, self.iovs[idx].as_ptr());
                // SAFETY: the iovecs live in `self.iovs` until this thread ends,
                // and the buffers they describe until `Ring` has joined it.
                unsafe { push(&submitter, &mut sq, &sqe)? };
            }
            let poll = opcode::PollAdd::new(types::Fd(wake), libc::POLLIN as u32).build().user_data(WAKE);
            // SAFETY: a poll points at no memory; the eventfd outlives this thread.
            unsafe { push(&submitter, &mut sq, &poll.into())? };
        }
        ring.submit()?;
        let mut backlog = Vec::with_capacity(self.iovs.len() + 1);
        let mut refused = Vec::new();
        for (user_data, res) in ring.completion().map(|c| (c.user_data(), c.result())) {
            if user_data != WAKE && res < 0 && res != -libc::EINTR && res != -libc::EAGAIN {
                refused.push(-res);
            } else {
                backlog.push((user_data, res));
            }
        }
        match refused.first() {
            None => {}
            Some(&errno) if refused.len() == self.iovs.len() => return Err(io::Error::from_raw_os_error(errno)),
            Some(&errno) => log::warn!(
                "sectorfs-ring-{}: {} of {} entries refused ({}); serving with the rest",
                self.qid,
                refused.len(),
                self.iovs.len(),
                io::Error::from_raw_os_error(errno)
            ),
        }
        Ok(backlog)
    }
}

impl Server {
    /// The loop: handle every completion that is ready, then one
    /// `io_uring_enter` submits all their commits and waits for more.
    fn serve(&mut self, ring: &mut Uring, mut cqes: Vec<(u64, i32)>) -> End {
        let mut end = None;
        loop {
            {
                let (submitter, mut sq, mut cq) = ring.split();
                cqes.extend(cq.by_ref().map(|c| (c.user_data(), c.result())));
                drop(cq);
                for &(user_data, res) in &cqes {
                    match self.complete(user_data, res, &submitter, &mut sq) {
                        Ok(None) => {}
                        Ok(Some(e)) => end = end.or(Some(e)),
                        Err(e) => {
                            log::error!("sectorfs-ring-{}: submitting: {e}", self.qid);
                            end = Some(End::Failed);
                        }
                    }
                }
                cqes.clear();
                sq.sync();
            }
            // Ending or not, the commits of this batch go out: after a stop
            // they are replies the callers wait for.
            let res = if end.is_some() { ring.submit() } else { ring.submit_and_wait(1) };
            match res {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
                Err(e) => {
                    log::error!("sectorfs-ring-{}: io_uring_enter: {e}", self.qid);
                    return End::Failed;
                }
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// One completion: a request to serve, a command to resend, or the end.
    fn complete(
        &mut self,
        user_data: u64,
        res: i32,
        submitter: &Submitter<'_>,
        sq: &mut SubmissionQueue<'_, squeue::Entry128>,
    ) -> io::Result<Option<End>> {
        let qid = self.qid;
        if user_data == WAKE {
            if res < 0 {
                log::error!("sectorfs-ring-{qid}: eventfd poll: {}", io::Error::from_raw_os_error(-res));
                return Ok(Some(End::Failed));
            }
            return Ok(Some(End::Stopped));
        }
        let Some(idx) = usize::try_from(user_data).ok().filter(|&i| i < self.commit.len()) else {
            log::error!("sectorfs-ring-{qid}: completion for unknown entry {user_data}");
            return Ok(None);
        };
        let sqe = match -res {
            0 => {
                let commit_id = self.answer(idx);
                self.commit[idx] = (commit_id, Cmd::Commit);
                self.served[usize::from(qid)].0.fetch_add(1, Ordering::Relaxed);
                commit_cmd(qid, commit_id, user_data)
            }
            libc::EINTR | libc::EAGAIN => match self.commit[idx] {
                (_, Cmd::Register) => register_cmd(qid, user_data, self.iovs[idx].as_ptr()),
                (commit_id, Cmd::Commit) => commit_cmd(qid, commit_id, user_data),
            },
            libc::ENOTCONN | libc::ENODEV | libc::ECONNABORTED => return Ok(Some(End::Disconnected)),
            errno => {
                let (_, cmd) = self.commit[idx];
                let e = io::Error::from_raw_os_error(errno);
                log::error!("sectorfs-ring-{qid}: {cmd:?} of entry {idx} failed: {e}");
                return Ok(Some(End::Failed));
            }
        };
        // SAFETY: a commit points the kernel at no memory of its own; a
        // `REGISTER` at `self.iovs[idx]`, which lives until this thread ends.
        // The buffers both use live until `Ring` has joined this thread.
        unsafe { push(submitter, sq, &sqe)? };
        Ok(None)
    }

    /// Serves the request in entry `idx` (its CQE has arrived) and writes the
    /// reply into the entry. Returns the `commit_id` to commit it with.
    fn answer(&mut self, idx: usize) -> u64 {
        let header = self.header(idx);
        let buf = self.payload(idx);
        // SAFETY: (this and every access to the entry below) the entry's
        // command has completed and the next is not yet pushed, so only this
        // thread accesses its buffers (module docs, rule 2); the offsets are
        // inside the 288-byte header and the `payload_size`-byte buffer.
        let (commit_id, payload_sz, unique) = unsafe {
            (
                header.add(COMMIT_ID).cast::<u64>().read_unaligned(),
                header.add(PAYLOAD_SZ).cast::<u32>().read_unaligned() as usize,
                header.add(8).cast::<u64>().read_unaligned(),
            )
        };
        let (unique, error, len) = if payload_sz > self.payload_size {
            log::error!("sectorfs-ring-{}: request {unique} claims {payload_sz} payload bytes", self.qid);
            (unique, -libc::EIO, 0)
        } else {
            let staged = payload_sz > 0;
            let dest = if staged { Dest::Staged(&mut self.scratch) } else { Dest::Direct(buf) };
            let mut sink = EntrySink { dest, cap: self.payload_size, reply: None };
            // SAFETY: see above. These views live until `handle` returns;
            // nothing writes the header page meanwhile, and the sink writes
            // the payload buffer only when `payload` is not a view of it.
            let (in_header, op_in, payload) = unsafe {
                (
                    std::slice::from_raw_parts(header.cast_const(), abi::FUSE_URING_IN_OUT_HEADER_SZ),
                    std::slice::from_raw_parts(header.add(OP_IN).cast_const(), abi::FUSE_URING_OP_IN_OUT_SZ),
                    if staged { std::slice::from_raw_parts(buf.cast_const(), payload_sz) } else { &[][..] },
                )
            };
            let handler = &*self.handler;
            // A panic leaves nothing half-done that is used again: `reply` is
            // set only once a reply is complete, and the scratch is cleared
            // before each use.
            let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(in_header, op_in, payload, &mut sink)));
            let reply = sink.reply;
            match (reply, outcome) {
                (Some((unique, error, len)), _) => {
                    if staged && len > 0 {
                        // SAFETY: see above; the handler's views are gone, and
                        // `len <= payload_size` (checked by the sink).
                        unsafe { ptr::copy_nonoverlapping(self.scratch.as_ptr(), buf, len) };
                    }
                    (unique, error, len)
                }
                (None, Ok(())) => {
                    log::error!("sectorfs-ring-{}: request {unique} got no reply; answering EIO", self.qid);
                    (unique, -libc::EIO, 0)
                }
                (None, Err(_)) => {
                    log::error!("sectorfs-ring-{}: handler panicked on request {unique}; answering EIO", self.qid);
                    (unique, -libc::EIO, 0)
                }
            }
        };
        let out = abi::fuse_out_header {
            len: u32::try_from(size_of::<abi::fuse_out_header>() + len).unwrap_or(u32::MAX),
            error,
            unique,
        };
        // SAFETY: see above; no view of the entry is alive any more.
        unsafe {
            ptr::copy_nonoverlapping(out.as_bytes().as_ptr(), header, size_of::<abi::fuse_out_header>());
            header.add(PAYLOAD_SZ).cast::<u32>().write_unaligned(len as u32);
        }
        commit_id
    }
}

/// Where an entry's [`EntrySink`] puts the reply bytes.
enum Dest<'a> {
    /// Straight into the payload buffer (the request had no payload, so the
    /// handler holds no view of it).
    Direct(*mut u8),
    /// Into the queue's scratch vector; copied in after `handle` returns.
    Staged(&'a mut Vec<u8>),
}

/// The [`Sink`] of one ring entry: it records the reply (unique, error,
/// length) and stores its bytes; the entry's headers are written after
/// `handle` returns (module docs, rule 2).
struct EntrySink<'a> {
    dest: Dest<'a>,
    /// The payload buffer's size: the largest reply.
    cap: usize,
    reply: Option<(u64, i32, usize)>,
}

impl Sink for EntrySink<'_> {
    fn send(&mut self, unique: u64, error: i32, parts: &[IoSlice<'_>]) -> io::Result<()> {
        if self.reply.is_some() {
            return Err(io::Error::other("a second reply to one request"));
        }
        if error != 0 {
            // The kernel reads no payload with an error.
            self.reply = Some((unique, error, 0));
            return Ok(());
        }
        let len = parts.iter().try_fold(0usize, |n, p| n.checked_add(p.len())).unwrap_or(usize::MAX);
        if len > self.cap {
            self.reply = Some((unique, -libc::EIO, 0));
            log::error!(
                "reply of {len} bytes to request {unique} exceeds the ring's {}-byte buffer; answering EIO",
                self.cap
            );
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("reply of {len} bytes exceeds the ring's {}-byte buffer", self.cap),
            ));
        }
        match &mut self.dest {
            Dest::Direct(buf) => {
                let mut at = 0;
                for part in parts {
                    // SAFETY: `at + part.len() <= len <= cap`, the buffer's
                    // size; only this thread accesses the buffer now (module
                    // docs, rule 2), and no `&` view of it is alive (`Direct`
                    // is used only when the handler got `&[]`), so `part`,
                    // borrowed from elsewhere, does not overlap it.
                    unsafe { ptr::copy_nonoverlapping(part.as_ptr(), buf.add(at), part.len()) };
                    at += part.len();
                }
            }
            Dest::Staged(scratch) => {
                scratch.clear();
                for part in parts {
                    scratch.extend_from_slice(part);
                }
            }
        }
        self.reply = Some((unique, 0, len));
        Ok(())
    }
}

impl<F: crate::session::Filesystem> RingHandler for crate::session::Session<F> {
    fn handle(&self, in_header: &[u8], op_in: &[u8], payload: &[u8], sink: &mut dyn Sink) {
        self.dispatch_ring(in_header, op_in, payload, sink);
    }
}

/// Entries per queue by default: requests one CPU's queue holds at once
/// (each entry is a page of header and a payload buffer of `max_write`).
pub const DEFAULT_DEPTH: usize = 8;

/// Starts the ring for `session` (whose `INIT` granted `FUSE_OVER_IO_URING`)
/// on its fd: one queue per possible CPU, `depth` entries each, payload
/// buffers as the connection needs. On error the connection is back on
/// `/dev/fuse` (see [`Ring::start`]).
pub fn start<F: crate::session::Filesystem>(
    session: &Arc<crate::session::Session<F>>,
    fd: BorrowedFd<'_>,
    depth: usize,
) -> io::Result<Ring> {
    let neg = session
        .negotiated()
        .filter(|n| n.has(abi::FUSE_OVER_IO_URING))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "INIT did not grant FUSE_OVER_IO_URING"))?;
    let cfg = RingConfig { queues: possible_cpus()?, depth, payload_size: payload_size(neg.max_write, neg.max_pages) };
    let handler: Arc<dyn RingHandler> = Arc::clone(session) as Arc<dyn RingHandler>;
    Ring::start(fd, cfg, handler)
}

impl RingConfig {
    /// The address space the ring's buffers take (resident only as far as
    /// requests fill them).
    pub fn buffer_bytes(&self) -> usize {
        let page = page_size();
        self.queues * self.depth * (page + self.payload_size.next_multiple_of(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Some(1));
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list(""), None);
    }

    #[test]
    fn payload_sizes() {
        let page = page_size();
        assert_eq!(payload_size(0, 0), abi::FUSE_MIN_READ_BUFFER);
        assert_eq!(payload_size(1 << 20, 256), (1 << 20usize).max(256 * page));
        assert_eq!(payload_size(4096, 1), abi::FUSE_MIN_READ_BUFFER.max(page));
    }

    /// The SQE bytes the kernel reads: `IORING_OP_URING_CMD` on fixed file
    /// 0, `cmd_op`, `addr`, `len`, `user_data`, and `fuse_uring_cmd_req` at
    /// the start of the 80-byte command area (byte 48).
    #[test]
    fn register_sqe_layout() {
        let iovs = [libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 }; 2];
        let sqe = register_cmd(7, 5, iovs.as_ptr());
        // SAFETY: `Entry128` is 128 bytes of plain integers (asserted above).
        let bytes: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
        assert_eq!(bytes[0], io_uring::opcode::UringCmd80::CODE);
        assert_eq!(bytes[1], io_uring::squeue::Flags::FIXED_FILE.bits());
        assert_eq!(u32_at(4), 0, "fixed file 0");
        assert_eq!(u32_at(8), abi::FUSE_IO_URING_CMD_REGISTER);
        assert_eq!(u64_at(16), iovs.as_ptr() as u64);
        assert_eq!(u32_at(SQE_LEN), 2);
        assert_eq!(u64_at(32), 5);
        assert_eq!(u64_at(48), 0, "flags");
        assert_eq!(u64_at(56), 0, "commit_id");
        assert_eq!(u16::from_ne_bytes([bytes[64], bytes[65]]), 7, "qid");

        let commit = commit_cmd(3, 0x1234, 9);
        // SAFETY: as above.
        let bytes: [u8; 128] = unsafe { std::mem::transmute(commit) };
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), abi::FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
        assert_eq!(u64::from_ne_bytes(bytes[56..64].try_into().unwrap()), 0x1234);
        assert_eq!(u16::from_ne_bytes([bytes[64], bytes[65]]), 3);
    }

    #[test]
    fn sink_stages_and_bounds() {
        let mut scratch = Vec::new();
        let mut sink = EntrySink { dest: Dest::Staged(&mut scratch), cap: 8, reply: None };
        sink.send(3, 0, &[IoSlice::new(b"abc"), IoSlice::new(b"de")]).unwrap();
        assert!(sink.send(3, 0, &[]).is_err(), "a second reply is refused");
        assert_eq!(sink.reply, Some((3, 0, 5)));
        assert_eq!(scratch, b"abcde");

        let mut buf = [0u8; 8];
        let mut sink = EntrySink { dest: Dest::Direct(buf.as_mut_ptr()), cap: 8, reply: None };
        assert!(sink.send(4, 0, &[IoSlice::new(&[1; 9])]).is_err(), "9 bytes do not fit 8");
        assert_eq!(sink.reply, Some((4, -libc::EIO, 0)));
        assert_eq!(buf, [0; 8], "nothing written");

        let mut sink = EntrySink { dest: Dest::Direct(buf.as_mut_ptr()), cap: 8, reply: None };
        sink.send(5, 0, &[IoSlice::new(&[7; 6]), IoSlice::new(&[8; 2])]).unwrap();
        assert_eq!(sink.reply, Some((5, 0, 8)));
        assert_eq!(buf, [7, 7, 7, 7, 7, 7, 8, 8]);

        let mut sink = EntrySink { dest: Dest::Direct(buf.as_mut_ptr()), cap: 8, reply: None };
        sink.send(6, -libc::ENOENT, &[]).unwrap();
        assert_eq!(sink.reply, Some((6, -libc::ENOENT, 0)));
    }
}
