//! Linux: `sectorfs mount`, `unmount` and `stats`.
//!
//! # Mount life cycle
//! 1. Without `-f`, the command re-executes itself with `-f` and the
//!    environment variable [`background::DAEMON_ENV`] set, its stdout on a pipe, and
//!    waits: the daemon writes one line to stdout once the mount is ready
//!    and serving, then detaches (new session, cwd `/`, stdio on
//!    `/dev/null`), and the command exits 0. If the daemon exits instead,
//!    its one-line error has already gone to the shared stderr and the
//!    command exits with its status. (Threads do not survive `fork`,
//!    hence the re-exec.)
//! 2. The daemon checks the mountpoint (exists, is a directory, is empty, is
//!    not mounted), blocks the stop signals (SIGINT, SIGTERM, SIGHUP,
//!    SIGQUIT, SIGPWR, SIGXCPU) and those it ignores in every thread, mounts
//!    (`mount(2)` as root; otherwise the setuid `fusermount3`), answers
//!    the kernel's `INIT`, and starts the worker threads.
//! 3. A signal thread waits for a stop signal and unmounts (lazily if
//!    the mount is busy); `sectorfs unmount` or `umount` do the same from
//!    outside. Either way the workers see the mount go away and the daemon
//!    exits 0, freeing all memory at once.
//! 4. With `--image FILE`: the image is read (header first, to fill in the
//!    settings the command line leaves open; then all of it, every record
//!    checked) before anything is mounted, so a bad image is a one-line
//!    error and an untouched mountpoint. After the workers end (the unmount,
//!    from any side), the daemon waits for a `sectorfs save` in flight,
//!    saves to FILE (`save::save_to`: temporary file, fsync, rename, fsync
//!    of the directory) and only then exits: 1 if that save failed.
//!    `sectorfs unmount` waits for the daemon to be gone, so the image is
//!    complete when it returns. A plain `umount` does not wait, but the
//!    image's lock (`image_lock.rs`), taken before the image is read and
//!    held until that save is done, makes the next mount with the image
//!    wait for it (and refuses a second disk with the image meanwhile).

use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use sectorfs_fuse::session::Session;

use crate::background::{self, READY};
use crate::cli::{self, format_bytes};
use crate::fuse_fs::{SectorFs, TransportInfo};
use crate::stats::{self as st, Format, NoAnswer, Report, STATS_XATTR};
use crate::telemetry::Telemetry;
use crate::{MountArgs, Transport};

/// `sectorfs mount`.
pub(crate) fn mount(args: &MountArgs) -> Result<ExitCode> {
    // The image's header fills in what the command line leaves open.
    let image = args.image.as_deref().map(crate::save::absolute_image_path).transpose()?;
    // Before the lock, which is a file beside the image: in the mountpoint,
    // it made the mountpoint "not empty", which is not what is wrong.
    if let (Some(p), Ok(mp)) = (&image, args.mountpoint.canonicalize()) {
        if p.starts_with(&mp) {
            bail!("the image {} is inside the mountpoint {}", p.display(), mp.display());
        }
    }
    // The daemon holds the image's lock before it reads the image: no other
    // disk is mounted with it, and the last one's final save is done
    // (`image_lock.rs`).
    let lock = match (&image, args.foreground) {
        (Some(p), true) => {
            let shown = args.mountpoint.canonicalize().unwrap_or_else(|_| args.mountpoint.clone());
            crate::image_lock::ImageLock::take(p, &shown)?
        }
        _ => None,
    };
    let info = match &image {
        Some(p) => crate::save::read_info(p)?,
        None => None,
    };
    // Bad values are refused here, before any daemon starts (exit status 2;
    // 1 for a bad value the image's header holds).
    let ram = cli::total_ram();
    let set = settings(args, ram, cli::open_file_limit(), info.as_ref()).map_err(|e| match (e, &image) {
        // A bad value the image brought is a damaged image, not bad input.
        (Bad::Saved(e), Some(p)) => anyhow!("cannot load image {}: {e}", p.display()),
        (Bad::Saved(e) | Bad::Given(e), _) => anyhow::Error::new(cli::Usage(e)),
    })?;
    if let Some(ram) = ram.filter(|&r| set.size > r && !background::is_daemon()) {
        // As tmpfs, a limit above memory is allowed; but here the daemon
        // holds the disk, and the OOM killer ends it, disk and all.
        let _ = writeln!(
            std::io::stderr(),
            "sectorfs: warning: the limit ({}) is more than the memory this process may use ({}); \
             filling past that gets the daemon killed by the kernel's OOM killer, and the disk with it",
            cli::format_bytes(set.size),
            cli::format_bytes(ram)
        );
    }
    if !args.foreground {
        return spawn_background(args);
    }
    // A background daemon stays in the caller's session until it is ready:
    // a ^C while it loads an image ends it (and `sectorfs mount`) with
    // nothing mounted, where it went on and mounted the disk anyway (a
    // probe). From the mount on, the stop signals are blocked and a ^C
    // unmounts cleanly; once ready, it leaves the session (below).
    let daemon = background::is_daemon();
    crate::fault::setup();
    // (An image inside the mountpoint was refused above, before its lock.)
    let mp = check_mountpoint(&args.mountpoint)?;
    let Settings { size, sector_size, max_files, threads, .. } = set;
    // One /dev/fuse clone per worker, plus what the daemon itself keeps open.
    cli::raise_open_file_limit(threads as u64 + cli::FD_RESERVE);
    let cfg = engine::Config {
        sector_size,
        max_bytes: size,
        max_inodes: max_files,
        case_insensitive: args.case_insensitive || info.as_ref().is_some_and(|i| i.config.case_insensitive),
        root_mode: set.mode,
        root_uid: set.uid,
        root_gid: set.gid,
        // POSIX ACLs as on tmpfs (FUSE_POSIX_ACL, negotiated in `init`).
        posix_acl: true,
        // A read-only mount changes nothing on read (as Linux).
        atime: if args.kernel_options.ro { engine::Atime::Never } else { args.atime.engine() },
        ..engine::Config::default()
    };
    let engine = match (&image, &info) {
        (Some(p), Some(_)) => crate::save::load(p, cfg)?,
        _ => engine::Engine::new(cfg).map_err(|e| anyhow!("bad settings: {e}"))?,
    };
    let engine = Arc::new(engine);
    let saver = Arc::new(crate::save::Saver::new(engine.clone(), image.clone(), mp.clone(), set.label.clone()));
    if info.is_some() {
        saver.loaded();
    }

    let name = set.label;
    // Block the stop signals before any thread starts, so that every thread
    // inherits the mask and only the signal thread receives them.
    let mut stop = SigSet::empty();
    for s in STOP_SIGNALS.iter().chain(IGNORED_SIGNALS) {
        stop.add(*s);
    }
    stop.thread_block().context("cannot block signals")?;
    // The sampler thread starts after the block, so it inherits the mask.
    let telemetry =
        Telemetry::start(engine.clone(), Some(args.reserve)).context("cannot start the telemetry thread")?;
    let mut fs = SectorFs::new(engine, args.cache, telemetry);
    fs.set_saver(saver.clone());
    let want_uring = want_uring(args.transport)?;
    fs.want_uring(want_uring);

    // As root, mount(2) directly. Other users go through the setuid
    // fusermount3, which we drive ourselves. It opens /dev/fuse with the
    // user's rights (libfuse 3), so the device must be open to the user
    // (0666, as distributions ship it); a 0600 one gets a hint.
    let k = args.kernel_options;
    let (fd, unmounter) = if nix::unistd::geteuid().is_root() {
        let fd = sectorfs_fuse::dev::open_dev().context("cannot open /dev/fuse (is the fuse module loaded?)")?;
        let opts = sectorfs_fuse::dev::MountOptions {
            fsname: name.clone(),
            subtype: "sectorfs".into(),
            flags: mount_flags(&k.words()) | args.atime.ms_flag(),
            default_permissions: true,
            allow_other: args.allow_other,
        };
        sectorfs_fuse::dev::mount(&mp, fd.as_fd(), &opts).map_err(|e| anyhow!("cannot mount {}: {e}", mp.display()))?;
        (fd, Unmounter::Root(mp.clone()))
    } else {
        let mut opts: Vec<String> = vec![
            format!("fsname={}", escape_mount_option(&name)),
            "subtype=sectorfs".into(),
            "default_permissions".into(),
        ];
        opts.extend(k.words().into_iter().map(String::from));
        // fusermount3 knows `noatime` (older ones not `relatime`, the
        // kernel's default anyway); `strictatime` is ours to apply.
        if args.atime == crate::AtimeMode::Noatime {
            opts.push("noatime".into());
        }
        if args.allow_other {
            opts.push("allow_other".into());
        }
        (fusermount_mount(&mp, &opts)?, Unmounter::Fusermount(mp.clone()))
    };
    fs.set_notifier(fd.try_clone().context("cannot duplicate the /dev/fuse descriptor")?);
    // INIT, before any worker starts: the mount answers once this returns.
    let mut session = Session::new(fs);
    if !args.allow_other {
        session.owner_only(nix::unistd::geteuid().as_raw());
    }
    let neg = match sectorfs_fuse::dev::handshake(&mut session, fd.as_fd()) {
        Ok(n) => n,
        Err(e) => {
            lazy_unmount(&mp);
            bail!("cannot start FUSE on {}: {e}", mp.display());
        }
    };
    let session = Arc::new(session);
    // The ring, where INIT granted it. Requests wait in the kernel until
    // every queue has its entries; a ring that fails to start hands the
    // connection back to /dev/fuse.
    let ring = if neg.has(sectorfs_fuse::abi::FUSE_OVER_IO_URING) {
        match sectorfs_fuse::uring::start(&session, fd.as_fd(), sectorfs_fuse::uring::DEFAULT_DEPTH) {
            Ok(r) => Some(r),
            Err(e) if args.transport == Transport::Uring => {
                lazy_unmount(&mp);
                bail!("cannot start FUSE over io_uring on {}: {e}", mp.display());
            }
            Err(e) => {
                log::warn!("FUSE over io_uring did not start ({e}); serving with the classic transport");
                None
            }
        }
    } else {
        if args.transport == Transport::Uring {
            lazy_unmount(&mp);
            bail!("cannot mount {} with --transport uring: the kernel did not grant FUSE over io_uring", mp.display());
        }
        None
    };
    // With the ring, one classic worker is enough: FORGETs and INTERRUPTs
    // still come over /dev/fuse.
    let workers = if ring.is_some() { 1 } else { threads };
    let classic_buffers = (workers * neg.buffer_size()) as u64;
    session.fs().set_transport(match &ring {
        Some(r) => TransportInfo {
            kind: "uring",
            buffer_bytes: r.config().buffer_bytes() as u64 + classic_buffers,
            ring: Some(r.counter()),
        },
        None => TransportInfo { kind: "classic", buffer_bytes: classic_buffers, ring: None },
    });
    let sig_mp = mp.clone();
    std::thread::Builder::new()
        .name("sectorfs-signals".into())
        .spawn(move || {
            while let Ok(sig) = stop.wait() {
                if IGNORED_SIGNALS.contains(&sig) {
                    log::warn!("{sig:?} ignored (the disk stays mounted; SIGTERM or `sectorfs unmount` stop it)");
                    continue;
                }
                log::info!("{sig:?}: unmounting {}", sig_mp.display());
                unmounter.unmount(&sig_mp);
                break;
            }
        })
        .context("cannot start the signal thread")?;

    // The mount is live (INIT is done): report readiness. Requests that come
    // before the workers start wait in the kernel's queue.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{READY} {} (limit {}, {} files, {} sectors, {}, pid {})",
        mp.display(),
        format_bytes(size),
        max_files,
        format_bytes(sector_size as u64),
        match &ring {
            Some(r) => format!("io_uring, {} queues", r.config().queues),
            None => format!("{workers} threads"),
        },
        std::process::id()
    );
    let _ = out.flush();
    drop(out);
    if daemon {
        // Leave the caller's session and terminal: a ^C there must not
        // reach a disk that serves.
        let _ = nix::unistd::setsid();
        detach_stdio();
        crate::log_to_syslog();
    }
    let served = sectorfs_fuse::dev::run(&session, fd, workers).context("FUSE session failed");
    // Its descriptor must not keep the connection open (after an error
    // without an unmount, programs would wait instead of failing).
    session.fs().close_notifier();
    // Unmounted: the ring's threads have ended (or end now).
    drop(ring);
    // Nothing changes the engine any more: the last save is its final state.
    // Another disk may load the image once it is written.
    if let Some(l) = &lock {
        l.unmounted();
    }
    let saved = saver.finish();
    drop(lock);
    served?;
    match saved {
        Some(crate::save::Outcome { error: Some(e), path, .. }) => {
            log::error!("the image {path} was not saved: {e}");
            let _ = writeln!(std::io::stderr(), "sectorfs: the image {path} was not saved: {e}");
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The checked values of `sectorfs mount`'s options.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    /// The memory limit, rounded up to whole sectors.
    size: u64,
    sector_size: usize,
    max_files: u64,
    threads: usize,
    uid: u32,
    gid: u32,
    mode: u32,
    label: String,
}

/// A bad value for `sectorfs mount`: one the command line gave, or one the
/// image saved (whose header is then damaged: the save checks them).
#[derive(Debug, PartialEq, Eq)]
enum Bad {
    Given(String),
    Saved(String),
}

impl From<String> for Bad {
    fn from(e: String) -> Bad {
        Bad::Given(e)
    }
}

/// Checks, with `check`, the command line's value if it gave one
/// (`given`), else the image's (`saved`), else the `default`; an error
/// names the option, or the image's setting (`what`) when the value came
/// from the image.
fn checked<T: Copy + std::fmt::Display, U>(
    given: Option<T>,
    saved: Option<T>,
    default: impl FnOnce() -> T,
    what: &str,
    check: impl FnOnce(T) -> Result<U, String>,
) -> Result<U, Bad> {
    match (given, saved) {
        (Some(v), _) => check(v).map_err(Bad::Given),
        // The check's message names the option ("--max-files 0: ..."): the
        // image's says what is wrong with its own setting instead.
        (None, Some(v)) => check(v).map_err(|e| {
            let why = e.split_once(": ").map_or(e.as_str(), |(_, why)| why);
            Bad::Saved(format!("its {what} {v} is out of range: {why}"))
        }),
        (None, None) => check(default()).map_err(Bad::Given),
    }
}

/// Checks every option of `args` (`ram`: the machine's memory, for `50%`;
/// `nofile`: the hard open-file limit) and fills in the defaults: the
/// image's settings (`image`) where it has one, else sectorfs's. The
/// error is one line naming the option, or the image's setting.
fn settings(
    args: &MountArgs,
    ram: Option<u64>,
    nofile: Option<u64>,
    image: Option<&engine::image::ImageInfo>,
) -> Result<Settings, Bad> {
    let saved = image.map(|i| &i.config);
    let sector_size = checked(
        args.sector_size,
        saved.map(|c| c.sector_size as u64),
        || engine::DEFAULT_SECTOR_SIZE as u64,
        "sector size",
        cli::check_sector_size,
    )?;
    let size = match (args.size, saved) {
        (Some(s), _) => s.resolve(ram)?,
        (None, Some(c)) => c.max_bytes,
        (None, None) => cli::DEFAULT_SIZE.resolve(ram)?,
    };
    let size = cli::round_limit(size, sector_size as u64);
    // Each inode of the limit brings PER_INODE bytes of metadata limit (as
    // tmpfs's nr_inodes brings its inode space); past this the product
    // overflows and `df -i` would count nonsense.
    let most = u64::MAX / engine::budget::PER_INODE;
    let max_files = checked(
        args.max_files,
        saved.map(|c| c.max_inodes),
        || cli::default_max_files(size, ram),
        "inode limit",
        |n| match n {
            0 => Err("--max-files 0: at least 1 (the root directory is one)".to_string()),
            n if n > most => Err(format!("--max-files {n}: at most {most}")),
            n => Ok(n),
        },
    )?;
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let threads = cli::check_threads(args.threads.unwrap_or_else(|| cli::default_threads(cores)), cores, nofile)?;
    let euid = || nix::unistd::geteuid().as_raw();
    let egid = || nix::unistd::getegid().as_raw();
    let uid =
        checked(args.uid, saved.map(|c| c.root_uid), euid, "root directory's owner", |u| cli::check_id("--uid", u))?;
    let gid =
        checked(args.gid, saved.map(|c| c.root_gid), egid, "root directory's group", |g| cli::check_id("--gid", g))?;
    let mode = args.mode.or(saved.map(|c| c.root_mode)).unwrap_or(0o1777);
    let saved_label = image.and_then(|i| i.extras.iter().find(|(k, _)| k == "label").map(|(_, v)| v.clone()));
    let label = match (&args.label, saved_label) {
        (Some(l), _) => {
            cli::check_label(l)?;
            l.clone()
        }
        (None, Some(l)) => {
            cli::check_label(&l).map_err(|_| {
                Bad::Saved(format!(
                    "its label {l:?} is not one a disk can have (1 to {} bytes, no control characters)",
                    cli::LABEL_MAX
                ))
            })?;
            l
        }
        (None, None) => "sectorfs".to_string(),
    };
    Ok(Settings { size, sector_size, max_files, threads, uid, gid, mode, label })
}

/// Whether to ask for FUSE over io_uring at INIT: `uring` needs it (and
/// turns on the kernel's `enable_uring` as root), `auto` takes it where the
/// kernel has it and the switch is on or can be turned on.
fn want_uring(t: Transport) -> Result<bool> {
    match t {
        Transport::Classic => Ok(false),
        Transport::Uring => {
            sectorfs_fuse::dev::enable_uring().map_err(|e| anyhow!("--transport uring: {e}"))?;
            Ok(true)
        }
        Transport::Auto => Ok(match sectorfs_fuse::dev::uring_enabled() {
            Some(true) => true,
            Some(false) if nix::unistd::geteuid().is_root() => match sectorfs_fuse::dev::enable_uring() {
                Ok(()) => true,
                Err(e) => {
                    log::info!("FUSE over io_uring not available ({e}); classic transport");
                    false
                }
            },
            _ => false,
        }),
    }
}

/// The `MS_*` flags for the kernel options (`ro`, `nosuid`, ...): `nosuid`
/// and `nodev` unless asked otherwise, as fusermount3 does.
fn mount_flags(words: &[&str]) -> libc::c_ulong {
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    for w in words {
        match *w {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => flags &= !libc::MS_RDONLY,
            "suid" => flags &= !libc::MS_NOSUID,
            "nosuid" => flags |= libc::MS_NOSUID,
            "dev" => flags &= !libc::MS_NODEV,
            "nodev" => flags |= libc::MS_NODEV,
            "exec" => flags &= !libc::MS_NOEXEC,
            "noexec" => flags |= libc::MS_NOEXEC,
            _ => {}
        }
    }
    flags
}

/// Signals that unmount the disk (and save it with `--image`), as
/// `sectorfs unmount` does: the usual three, `SIGQUIT` (Ctrl-\\ on a
/// foreground mount), `SIGPWR` (a UPS on battery) and `SIGXCPU` (a CPU time
/// limit, which a `SIGKILL` follows). Their default action would kill the
/// daemon and lose every file since the last save.
const STOP_SIGNALS: &[Signal] =
    &[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGPWR, Signal::SIGXCPU];

/// Signals whose default action would also kill the daemon, which nothing
/// sends it on purpose: taken by the signal thread and logged, the disk
/// stays. `SIGXFSZ`: a save past the daemon's file size limit then fails
/// with `EFBIG` instead (the kernel directs it at the writing thread, where
/// it stays blocked). Blocked, not ignored: children (`fusermount3`) get
/// an empty mask from `Command` but would inherit an ignored disposition.
const IGNORED_SIGNALS: &[Signal] = &[
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGSTKFLT,
    Signal::SIGXFSZ,
];

/// How the signal thread takes the mount down.
enum Unmounter {
    /// mount(2) mounted it (as root).
    Root(PathBuf),
    /// `fusermount3` mounted it (as another user).
    Fusermount(PathBuf),
}

impl Unmounter {
    /// Unmounts `mp`, lazily if it is busy.
    fn unmount(mut self, mp: &Path) {
        match &mut self {
            Unmounter::Root(p) => {
                if let Err(e) = nix::mount::umount2(p.as_path(), nix::mount::MntFlags::empty()) {
                    log::warn!("unmount failed ({e}); detaching lazily");
                    lazy_unmount(mp);
                }
            }
            Unmounter::Fusermount(p) => {
                if let Err(e) = fusermount_unmount(p, false) {
                    log::warn!("unmount failed ({e}); detaching lazily");
                    let _ = fusermount_unmount(p, true);
                }
            }
        }
    }
}

/// The error for a `fusermount3` that could not be started: when no
/// directory of `PATH` holds it, that it is not installed (the search's own
/// error is then about some directory of `PATH` the user may not read: a
/// probe was told "Permission denied").
fn fusermount_missing(e: std::io::Error) -> anyhow::Error {
    fusermount_missing_in(std::env::var_os("PATH"), e)
}

fn fusermount_missing_in(path: Option<std::ffi::OsString>, e: std::io::Error) -> anyhow::Error {
    let found = path.is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()));
    if found {
        anyhow!("cannot run fusermount3: {e}")
    } else {
        anyhow!(
            "fusermount3 is not installed (Debian/Ubuntu: apt-get install fuse3); a user other than root needs it to \
             mount and unmount"
        )
    }
}

/// Escapes `,` and `\` for a `-o` list of fusermount3 (as libfuse does).
fn escape_mount_option(s: &str) -> String {
    s.replace('\\', "\\\\").replace(',', "\\,")
}

/// Mounts `mp` through the setuid `fusermount3` and returns the `/dev/fuse`
/// descriptor it passes back over a socket (`_FUSE_COMMFD`, `SCM_RIGHTS`).
fn fusermount_mount(mp: &Path, opts: &[String]) -> Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    // Our end is close-on-exec; fusermount3's end must survive its exec.
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::empty())
        .context("cannot create a socket for fusermount3")?;
    nix::fcntl::fcntl(&ours, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
        .context("cannot set close-on-exec")?;
    let child = Command::new("fusermount3")
        .arg("-o")
        .arg(opts.join(","))
        .arg("--")
        .arg(mp)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(fusermount_missing)?;
    drop(theirs);
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut fd = None;
    if let Ok(msg) = recvmsg::<()>(ours.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    // SAFETY: `f` was just received through SCM_RIGHTS: the
                    // kernel installed it as a new descriptor of this process
                    // that nothing else refers to, so it may be owned once.
                    let owned = unsafe { OwnedFd::from_raw_fd(f) };
                    fd.get_or_insert(owned);
                }
            }
        }
    }
    let out = child.wait_with_output().context("cannot wait for fusermount3")?;
    match fd {
        Some(fd) if out.status.success() => Ok(fd),
        _ => bail!("cannot mount {}: {}", mp.display(), with_hint(fusermount_message(&out.stderr), dev_fuse_mode())),
    }
}

/// `/dev/fuse`'s permission bits, if it can be seen.
fn dev_fuse_mode() -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata("/dev/fuse").ok().map(|m| m.permissions().mode() & 0o777)
}

/// fusermount3's complaint, with what to do when it could not open
/// `/dev/fuse` (mode `mode`) with the user's rights.
fn with_hint(msg: String, mode: Option<u32>) -> String {
    if !(msg.contains("/dev/fuse") && msg.contains("Permission denied")) {
        return msg;
    }
    let now = mode.map_or(String::new(), |m| format!(" (it is {m:04o} here)"));
    format!("{msg}: fusermount3 opens /dev/fuse as you, so it must be readable and writable by you{now}; most systems ship it 0666 (`chmod 0666 /dev/fuse` as root, or a udev rule), or mount as root")
}

/// fusermount3's one-line complaint, without its name.
fn fusermount_message(stderr: &[u8]) -> String {
    let msg = String::from_utf8_lossy(stderr);
    let msg = msg.trim().trim_start_matches("fusermount3: ");
    if msg.is_empty() {
        "fusermount3 failed".into()
    } else {
        msg.into()
    }
}

/// `fusermount3 -u [-z] mp`; the error is fusermount3's own message.
fn fusermount_unmount(mp: &Path, lazy: bool) -> Result<()> {
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg("--").arg(mp).stdin(Stdio::null()).output().map_err(fusermount_missing)?;
    if !out.status.success() {
        bail!("{}", fusermount_message(&out.stderr));
    }
    Ok(())
}

/// Starts the daemon (this binary with `-f`) and waits until it reports the
/// mount ready, or exits.
fn spawn_background(_args: &MountArgs) -> Result<ExitCode> {
    Ok(ExitCode::from(background::start(background::daemon_command()?)?))
}

/// Points stdin, stdout and stderr at `/dev/null` (they must stay open: fd
/// numbers 0..2 must not be reused by the FUSE device).
fn detach_stdio() {
    let _ = std::env::set_current_dir("/");
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: `dup2` onto fds 0..2 only replaces what those numbers
            // refer to; `null` stays open until after the calls, and no Rust
            // object owns fds 0..2 exclusively (std's handles re-borrow them).
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
}

/// Refuses a mountpoint that is missing, not a directory, already mounted
/// (or a dead mount), or not empty; returns its canonical path.
fn check_mountpoint(p: &Path) -> Result<PathBuf> {
    let shown = p.display();
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("mountpoint {shown} does not exist"),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            bail!("{shown} is already mounted by a daemon that is gone; run `sectorfs unmount {shown}`")
        }
        Err(e) => bail!("cannot use mountpoint {shown}: {e}"),
    };
    if !meta.is_dir() {
        bail!("mountpoint {shown} is not a directory");
    }
    let mp = p.canonicalize().with_context(|| format!("cannot resolve {shown}"))?;
    if let Some(parent) = mp.parent() {
        let pm = std::fs::metadata(parent).with_context(|| format!("cannot stat {}", parent.display()))?;
        if pm.dev() != meta.dev() || mount_entry(&mp).is_some() {
            bail!("{shown} is already mounted");
        }
    } else {
        bail!("cannot mount over /");
    }
    let mut entries = std::fs::read_dir(&mp).with_context(|| format!("cannot read {shown}"))?;
    if entries.next().is_some() {
        bail!("mountpoint {shown} is not empty");
    }
    Ok(mp)
}

/// One line of `/proc/self/mountinfo`: file system type and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    fstype: String,
    source: String,
    /// `user_id=` of a FUSE mount's super options: who mounted it.
    user_id: Option<u32>,
}

/// The mount whose mount point is exactly `mp` (the last one if stacked).
pub(crate) fn mount_entry(mp: &Path) -> Option<MountEntry> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo(&info, mp.as_os_str().as_bytes())
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn parse_mountinfo(info: &str, mp: &[u8]) -> Option<MountEntry> {
    let mut found = None;
    for line in info.lines() {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        if unescape_mountinfo(point) == mp {
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = String::from_utf8_lossy(&unescape_mountinfo(r.next().unwrap_or(""))).into_owned();
            let user_id = r
                .next()
                .and_then(|opts| opts.split(',').find_map(|o| o.strip_prefix("user_id=")))
                .and_then(|u| u.parse().ok());
            found = Some(MountEntry { fstype, source, user_id });
        }
    }
    found
}

/// The absolute path of `p` without touching `p` itself (a dead FUSE mount
/// cannot be stat'ed): the parent is canonicalized and the name appended.
fn resolve_without_stat(p: &Path) -> Result<PathBuf> {
    let abs = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) };
    let name = abs.file_name().map(OsStr::to_os_string);
    match (abs.parent(), name) {
        (Some(parent), Some(name)) => {
            Ok(parent.canonicalize().with_context(|| format!("cannot resolve {}", parent.display()))?.join(name))
        }
        _ => Ok(abs),
    }
}

/// `p` with its final component's symlinks followed (without touching what
/// the last link points to: a dead FUSE mount cannot be stat'ed), so that
/// `sectorfs unmount LINK` unmounts where LINK points.
fn follow_symlinks(p: &Path) -> Result<PathBuf> {
    let mut p = p.to_path_buf();
    for _ in 0..40 {
        // A mount point is never looked at (its daemon may not answer).
        if resolve_without_stat(&p).is_ok_and(|r| mount_entry(&r).is_some()) {
            return Ok(p);
        }
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p).with_context(|| format!("cannot read the link {}", p.display()))?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(p),
        }
    }
    bail!("{}: too many levels of symbolic links", p.display())
}

/// Detaches `mp` now; the kernel finishes the unmount when it is no longer busy.
fn lazy_unmount(mp: &Path) {
    if nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH).is_err() {
        let _ = fusermount_unmount(mp, true);
    }
}

/// `sectorfs unmount`.
pub(crate) fn unmount(mountpoint: &Path, lazy: bool, force: bool) -> Result<ExitCode> {
    // A mount point is never looked at itself: the kernel would ask the
    // daemon, which may not answer (stopped, hung); `follow_symlinks` stops
    // at one.
    let mp = resolve_without_stat(&follow_symlinks(mountpoint)?)?;
    let shown = mountpoint.display();
    let entry = mount_entry(&mp).ok_or_else(|| anyhow!("{shown} is not mounted"))?;
    // Every sectorfs mount has the subtype (`fuse.sectorfs`), as root and
    // through fusermount3: another FUSE file system's mount is not ours to
    // take down (nor, with --force, its connection to abort).
    if entry.fstype != "fuse.sectorfs" {
        bail!("{shown} is not a sectorfs mount (it is {}); not unmounting it", entry.fstype);
    }
    let me = nix::unistd::geteuid();
    if let Some(owner) = entry.user_id.filter(|&u| !me.is_root() && u != me.as_raw()) {
        let who = nix::unistd::User::from_uid(owner.into()).ok().flatten().map_or(format!("uid {owner}"), |u| u.name);
        bail!("cannot unmount {shown}: it was mounted by {who}; only that user or root can unmount it");
    }
    if force {
        return force_unmount(&mp, &shown.to_string());
    }
    // The daemon's pid, to wait for it to exit (its memory is freed then,
    // and its image saved).
    let pid = match read_stats(&mp) {
        Ok(s) => Some(s.pid),
        Err(e) if e.is::<NoAnswer>() => return Err(e),
        Err(_) => None,
    };
    let image = read_save_status(&mp).ok().and_then(|s| s.image).map(PathBuf::from);
    // A save that cannot begin would lose the disk: keep it mounted.
    if let (Some(img), false) = (&image, lazy) {
        if let Err(e) = crate::save::can_save(img) {
            bail!(
                "{shown} stays mounted: its image {} cannot be saved ({e}). Make its directory writable, or save \
                 it elsewhere with `sectorfs save {shown} FILE`; `umount {shown}` unmounts without saving",
                img.display()
            );
        }
    }
    // Save first, while the disk still serves: a save that fails partway
    // (the image's file system full, an I/O error, a quota) keeps the disk
    // mounted with its data, where the daemon's save after the unmount
    // could only report the loss. That final save (of the state after the
    // last request) then follows as before; should it fail, the image
    // holds the disk as it was just before the unmount.
    let mut saved_first = false;
    if let (Some(img), false) = (&image, lazy) {
        if let Err(e) = save_now(&mp, &shown.to_string(), None) {
            bail!(
                "{shown} stays mounted: its image {} could not be saved ({e:#}). Make room there, or save it \
                 elsewhere with `sectorfs save {shown} FILE`; `umount {shown}` unmounts without saving",
                img.display()
            );
        }
        saved_first = true;
    }
    let before = image.as_deref().and_then(image_id);
    if nix::unistd::geteuid().is_root() {
        let flags = if lazy { nix::mount::MntFlags::MNT_DETACH } else { nix::mount::MntFlags::empty() };
        nix::mount::umount2(&mp, flags).map_err(|e| match e {
            nix::errno::Errno::EBUSY => anyhow!("{shown} is busy (in use); close what uses it or add --lazy"),
            e => anyhow!("cannot unmount {shown}: {}", e.desc()),
        })?;
    } else {
        fusermount_unmount(&mp, lazy).map_err(|e| anyhow!("cannot unmount {shown}: {e:#}"))?;
    }
    let pid = pid.and_then(|p| i32::try_from(p).ok());
    match (&image, pid) {
        (Some(img), Some(_)) if lazy => {
            let _ = writeln!(
                std::io::stderr(),
                "sectorfs: {shown} is detached; it is saved to {} once nothing uses it",
                img.display()
            );
        }
        (Some(img), Some(pid)) => {
            // No time limit: the daemon saves the whole disk before it exits.
            let start = Instant::now();
            let mut told = false;
            while !gone(pid) {
                if !told && start.elapsed() > Duration::from_secs(2) {
                    let _ = writeln!(std::io::stderr(), "sectorfs: saving {shown} to {}...", img.display());
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // A saved image is a new file (renamed over the old one), or
            // the same one with new times (current: `save::Saver::save`).
            if image_id(img).is_none_or(|id| Some(id) == before) {
                let pid = u32::try_from(pid).unwrap_or_default();
                if let Some(r) = crate::save::rescue_path(img, pid, false).into_iter().find(|p| p.exists()) {
                    bail!(
                        "{shown} is unmounted, but its final save to {} failed; the disk was saved to {} instead: \
                         mount it with `--image {}` (or move it over the image once there is room)",
                        img.display(),
                        r.display(),
                        r.display()
                    );
                }
                if saved_first {
                    bail!(
                        "{shown} is unmounted, but its final save to {} failed: the image holds the disk as it \
                         was saved just before the unmount",
                        img.display()
                    );
                }
                bail!(
                    "{shown} is unmounted, but its image {} was not saved (the previous one, if any, is unchanged)",
                    img.display()
                );
            }
        }
        (_, Some(pid)) => wait_gone(pid, Duration::from_secs(10)),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// `sectorfs unmount --force`: for a daemon that does not answer. Nothing
/// here touches the mount (a request to it would wait for the daemon, and
/// on the io_uring transport even `SIGKILL` does not end that wait):
/// `MNT_FORCE` makes the kernel abort the connection (FUSE's
/// `umount_begin`), which fails every request in flight and wakes whoever
/// waits for one; `MNT_DETACH` then takes the mount away however busy.
fn force_unmount(mp: &Path, shown: &str) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("--force needs root (it aborts the kernel's connection to the daemon); `sectorfs unmount --lazy {shown}` detaches the mount");
    }
    let flags = nix::mount::MntFlags::MNT_FORCE | nix::mount::MntFlags::MNT_DETACH;
    nix::mount::umount2(mp, flags).map_err(|e| anyhow!("cannot unmount {shown}: {}", e.desc()))?;
    let _ = writeln!(
        std::io::stderr(),
        "sectorfs: {shown}: connection aborted and unmounted; the daemon exits once it runs again (a stopped one: \
         kill -CONT), and requests it had already taken wait for that"
    );
    Ok(ExitCode::SUCCESS)
}

/// The identity of a file (device, inode) and its times, if it exists: a
/// save makes a new file (renamed over the old one); a save that finds
/// the image current sets its modification time to the clock's now (to
/// the nanosecond, where the change time may be as coarse as a tick).
fn image_id(p: &Path) -> Option<(u64, u64, i64, i64, i64, i64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
}

/// Whether process `pid` has exited (a zombie counts as gone).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

/// Reads the save status attribute of the mount at `mp`.
fn read_save_status(mp: &Path) -> Result<crate::save::Status> {
    let v = getxattr(mp, crate::save::SAVE_XATTR)?;
    serde_json::from_slice(&v).map_err(|e| anyhow!("bad save status from {}: {e}", mp.display()))
}

/// `getxattr(2)` of `name` on `p` (up to 1 MiB).
fn getxattr(p: &Path, name: &str) -> Result<Vec<u8>> {
    let path = CString::new(p.as_os_str().as_bytes())?;
    let name = CString::new(name)?;
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: both strings are NUL-terminated and live across the call, and
    // the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => anyhow!("{} is not a sectorfs mount", p.display()),
            _ => anyhow!("cannot ask {}: {e}", p.display()),
        });
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// `sectorfs save MOUNTPOINT [FILE]`: asks the daemon to save (module
/// `save`) and waits for its outcome.
pub(crate) fn save(mountpoint: &Path, file: Option<&Path>) -> Result<ExitCode> {
    let shown = mountpoint.display();
    let mp = mountpoint.canonicalize().with_context(|| format!("cannot resolve {shown}"))?;
    let status = read_save_status(&mp)?;
    let file = match file {
        Some(f) => {
            let f = crate::save::absolute_image_path(f)?;
            if f.starts_with(&mp) || crate::save::on_the_mount(&f, &mp) {
                bail!("the image {} would be inside the mount {shown}", f.display());
            }
            Some(f)
        }
        None if status.image.is_none() => bail!("{shown} was mounted without --image: name the FILE to save to"),
        None => None,
    };
    let o = save_now(&mp, &shown.to_string(), file.as_deref())?;
    if o.unchanged {
        writeln!(std::io::stdout(), "{} is current: nothing changed on {shown} since it was saved or loaded", o.path)
            .context("saved, but the report cannot be written to stdout")?;
        return Ok(ExitCode::SUCCESS);
    }
    let secs = o.seconds.max(1e-6);
    // Not println!: it panics when stdout cannot be written (`> /dev/full`),
    // after the save has succeeded.
    writeln!(
        std::io::stdout(),
        "saved {shown} to {}: {} files, {} of data ({} image) in {:.2} s ({}/s); writers held off {:.1} ms",
        o.path,
        o.files,
        format_bytes(o.data_bytes),
        format_bytes(o.image_bytes),
        o.seconds,
        format_bytes((o.image_bytes as f64 / secs) as u64),
        o.held_ms
    )
    .context("saved, but the report cannot be written to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Asks the daemon serving `mp` (shown as `shown`) to save to `file` (its
/// own image if `None`) and waits for the outcome: `Err` if the request was
/// refused, the mount went away, or the save failed.
fn save_now(mp: &Path, shown: &str, file: Option<&Path>) -> Result<crate::save::Outcome> {
    let token = crate::save::token();
    let value = crate::save::request_value(&token, file);
    let path = CString::new(mp.as_os_str().as_bytes())?;
    let name = CString::new(crate::save::SAVE_XATTR)?;
    loop {
        // SAFETY: both strings are NUL-terminated and `value` is a live
        // buffer of `value.len()` bytes; the kernel only reads them.
        let r = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        if r == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            // Another save runs: wait for it, then ask again.
            Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(20)),
            Some(libc::EPERM) => bail!("only the user who mounted {shown} (or root) can save it"),
            Some(libc::EINVAL) => bail!("{shown} refused the save (the file must be outside the mount)"),
            _ => bail!("cannot save {shown}: {e}"),
        }
    }
    let start = Instant::now();
    loop {
        let st = read_save_status(mp).with_context(|| format!("{shown} went away before the save finished"))?;
        if let Some(o) = st.done.into_iter().find(|o| o.token == token) {
            if let Some(e) = &o.error {
                bail!("cannot save {shown} to {}: {e}", o.path);
            }
            return Ok(o);
        }
        std::thread::sleep(Duration::from_millis(if start.elapsed() < Duration::from_secs(1) { 5 } else { 50 }));
    }
}

/// Waits (bounded) until process `pid` has exited.
fn wait_gone(pid: i32, limit: Duration) {
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && start.elapsed() < limit {
        // A zombie (already exited, not yet reaped by its parent) counts as gone.
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long `sectorfs stats` and `sectorfs unmount` wait for the daemon's
/// answer before they say it does not answer (a stopped or hung daemon
/// would otherwise hold them forever, `--watch` included).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Reads the stats attribute of the mount at `mp`, or fails with
/// [`NoAnswer`] if its daemon does not answer within [`ANSWER_WITHIN`].
///
/// The request runs in a child process: a request the daemon has taken and
/// not answered (on io_uring, where the kernel hands requests to the
/// daemon's ring at once, even while it is stopped) cannot be interrupted,
/// not even by the exit of the process that made it, so a thread of ours
/// would keep this command from ending. The child is left to finish (when
/// the daemon runs again, or its connection is aborted by `unmount
/// --force`); this command returns at once.
fn read_stats(mp: &Path) -> Result<Report> {
    use nix::unistd::ForkResult;
    use std::io::Read;
    // Fork only a process of one thread (the command's own: nothing here
    // starts another); otherwise ask directly, without the bound.
    if std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0) != 1 {
        return read_stats_now(mp);
    }
    let (r, w) = nix::unistd::pipe()?;
    // SAFETY: the process has one thread (checked above), so the child
    // starts with a consistent heap and may allocate; it ends with `_exit`,
    // without running down anything of the parent's.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop(r);
            // The command's own output stays the command's: a child left
            // waiting must not keep its pipes open (a shell's `$(...)`, a
            // caller reading them to their end, would wait with it).
            if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
                for fd in 0..3 {
                    // SAFETY: `dup2` onto the standard descriptors, which
                    // nothing in this child holds a handle to.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            let answer = match read_stats_now(mp) {
                Ok(rep) => format!("o{}", rep.to_json()),
                Err(e) => format!("e{e:#}"),
            };
            let _ = std::fs::File::from(w).write_all(answer.as_bytes());
            // SAFETY: ends the child at once; nothing of it is needed.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let deadline = Instant::now() + ANSWER_WITHIN;
            let mut pipe = std::fs::File::from(r);
            let mut out = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let ms = nix::poll::PollTimeout::try_from(left.as_millis().min(60_000) as u32)
                    .unwrap_or(nix::poll::PollTimeout::MAX);
                let mut fds = [nix::poll::PollFd::new(pipe.as_fd(), nix::poll::PollFlags::POLLIN)];
                match nix::poll::poll(&mut fds, ms) {
                    Ok(0) => {
                        return Err(NoAnswer { mountpoint: mp.display().to_string(), within: ANSWER_WITHIN }.into())
                    }
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let mut buf = [0u8; 16 << 10];
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let _ = nix::sys::wait::waitpid(child, None);
            match out.split_first() {
                Some((b'o', json)) => Report::from_json(&String::from_utf8_lossy(json))
                    .map_err(|e| anyhow!("bad stats from {}: {e}", mp.display())),
                Some((b'e', msg)) => Err(anyhow!("{}", String::from_utf8_lossy(msg))),
                _ => Err(anyhow!("the stats request for {} ended without an answer", mp.display())),
            }
        }
    }
}

/// Reads the stats attribute of the mount at `mp`, waiting as long as its
/// daemon takes.
fn read_stats_now(mp: &Path) -> Result<Report> {
    let path = CString::new(mp.as_os_str().as_bytes())?;
    let name = CString::new(STATS_XATTR)?;
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: both strings are NUL-terminated and live across the call, and
    // the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => anyhow!("{} is not a sectorfs mount", mp.display()),
            _ => anyhow!("cannot read the stats of {}: {e}", mp.display()),
        });
    }
    buf.truncate(n as usize);
    Report::from_json(&String::from_utf8_lossy(&buf)).map_err(|e| anyhow!("bad stats from {}: {e}", mp.display()))
}

/// `sectorfs stats`: once, or every `watch` until Ctrl-C or the mount goes.
pub(crate) fn stats(mountpoint: &Path, format: Format, watch: Option<Duration>) -> Result<ExitCode> {
    let Some(every) = watch else {
        let report = read_stats(mountpoint)?;
        // The label of Prometheus samples: the absolute path, however it was
        // given (only then: resolving it costs the mount a request or two).
        let label = match format {
            Format::Prometheus => std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf()),
            _ => mountpoint.to_path_buf(),
        };
        return st::print(&report, format, &label.to_string_lossy());
    };
    // SIGINT/SIGTERM are blocked and taken synchronously between lines, so
    // Ctrl-C ends the watch after a whole line, with status 0.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    stop.thread_block().context("cannot block signals")?;
    let wait = |d: Duration| {
        let ts = libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos().into() };
        // SAFETY: `stop` is a valid signal set and `ts` a valid timespec,
        // both alive across the call; a null `siginfo_t` is allowed.
        let sig = unsafe { libc::sigtimedwait(stop.as_ref(), std::ptr::null_mut(), &ts) };
        sig > 0
    };
    let shown = mountpoint.display().to_string();
    st::watch(&shown, every, format, || read_stats(mountpoint), wait, &mut std::io::stdout().lock())
}

#[cfg(test)]
mod tests {
    /// A bad setting an image brought (its header damaged) is the image's
    /// fault: the message says so and names no option the user did not
    /// give; the same value on the command line is still a usage error.
    #[test]
    fn an_images_bad_settings_name_the_image() {
        use clap::Parser;
        let parse = |a: &[&str]| {
            let c = crate::Cli::try_parse_from(a).unwrap();
            let crate::Cmd::Mount(m) = c.cmd else { panic!("not mount") };
            m
        };
        let plain = parse(&["sectorfs", "mount", "/m"]);
        let info = |f: &dyn Fn(&mut engine::Config)| {
            let mut config = engine::Config::default();
            f(&mut config);
            engine::image::ImageInfo {
                version: 2,
                config,
                nodes: 1,
                data_bytes: 0,
                used_bytes: 0,
                saved_at: engine::Time { secs: 0, nanos: 0 },
                extras: Vec::new(),
            }
        };
        let ram = Some(1 << 30);
        let saved = |f: &dyn Fn(&mut engine::Config)| settings(&plain, ram, None, Some(&info(f))).unwrap_err();
        assert_eq!(
            saved(&|c| c.max_inodes = 0),
            Bad::Saved("its inode limit 0 is out of range: at least 1 (the root directory is one)".into())
        );
        assert!(
            matches!(saved(&|c| c.max_inodes = u64::MAX), Bad::Saved(e) if e.starts_with("its inode limit 18446744073709551615 is out of range: at most "))
        );
        assert_eq!(
            saved(&|c| c.root_uid = u32::MAX),
            Bad::Saved(
                "its root directory's owner 4294967295 is out of range: not a valid id (it is -1, \"no id\")".into()
            )
        );
        assert!(
            matches!(saved(&|c| c.root_gid = u32::MAX), Bad::Saved(e) if e.starts_with("its root directory's group 4294967295"))
        );
        assert!(
            matches!(saved(&|c| c.sector_size = 3000), Bad::Saved(e) if e.starts_with("its sector size 3000 is out of range: must be"))
        );
        // The command line's value wins, and is checked as the user's.
        let given = parse(&["sectorfs", "mount", "/m", "--max-files", "0"]);
        assert_eq!(
            settings(&given, ram, None, Some(&info(&|_| {}))).unwrap_err(),
            Bad::Given("--max-files 0: at least 1 (the root directory is one)".into())
        );
        let fixed = parse(&["sectorfs", "mount", "/m", "--max-files", "10"]);
        assert_eq!(settings(&fixed, ram, None, Some(&info(&|c| c.max_inodes = 0))).map(|s| s.max_files), Ok(10));
    }

    #[test]
    fn a_closed_dev_fuse_gets_a_hint() {
        let m = super::with_hint("failed to open /dev/fuse: Permission denied".into(), Some(0o600));
        assert!(m.starts_with("failed to open /dev/fuse: Permission denied: fusermount3 opens"), "{m}");
        assert!(m.contains("(it is 0600 here)"), "{m}");
        assert_eq!(super::with_hint("mountpoint is not empty".into(), Some(0o600)), "mountpoint is not empty");
    }

    /// fusermount3 missing from every directory of PATH is said so, not as
    /// the search's error about one of them (a probe got "Permission denied").
    #[test]
    fn a_missing_fusermount3_is_named() {
        let denied = || std::io::Error::from_raw_os_error(libc::EACCES);
        let empty = tempfile::tempdir().unwrap();
        let m = super::fusermount_missing_in(Some(empty.path().into()), denied()).to_string();
        assert!(m.starts_with("fusermount3 is not installed") && m.contains("fuse3"), "{m}");
        let with = tempfile::tempdir().unwrap();
        std::fs::write(with.path().join("fusermount3"), b"").unwrap();
        let path = std::env::join_paths([empty.path(), with.path()]).unwrap();
        let m = super::fusermount_missing_in(Some(path), denied()).to_string();
        assert!(m.starts_with("cannot run fusermount3: Permission denied"), "{m}");
    }

    use super::*;

    const INFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/root rw
88 22 0:50 / /tmp/a\\040b rw,nosuid,nodev,relatime shared:40 - fuse sectorfs rw,user_id=0,group_id=0
89 22 0:51 / /dev/shm rw - tmpfs tmpfs rw
";

    #[test]
    fn mountinfo() {
        assert_eq!(
            parse_mountinfo(INFO, b"/tmp/a b"),
            Some(MountEntry { fstype: "fuse".into(), source: "sectorfs".into(), user_id: Some(0) })
        );
        assert_eq!(parse_mountinfo(INFO, b"/dev/shm").map(|e| e.fstype), Some("tmpfs".into()));
        assert_eq!(parse_mountinfo(INFO, b"/tmp/a"), None);
        assert_eq!(unescape_mountinfo("a\\134b\\011"), b"a\\b\t");
    }

    #[test]
    fn mountpoint_checks() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("nope");
        assert!(check_mountpoint(&missing).unwrap_err().to_string().contains("does not exist"));
        let file = t.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(check_mountpoint(&file).unwrap_err().to_string().contains("not a directory"));
        assert!(check_mountpoint(t.path()).unwrap_err().to_string().contains("not empty"));
        let empty = t.path().join("d");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(check_mountpoint(&empty).unwrap(), empty.canonicalize().unwrap());
    }
}
