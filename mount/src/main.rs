//! `sectorfs`: mount a sectorfs RAM disk (Linux: FUSE through the project's
//! own session layer, `sectorfs-fuse`;
//! Windows: WinFsp through `winfsp`).
//!
//! # Modules
//! * `cli`: sizes, modes and defaults (platform-neutral, unit-tested).
//! * `stats`: the counters a mount reports through the virtual
//!   `user.sectorfs.stats` attribute of its root, and how `sectorfs stats`
//!   shows them (platform-neutral).
//! * `telemetry`: usage over time: the sampler's ring, rates, trends and
//!   the time-to-full forecast (platform-neutral).
//! * `fuse_fs` (Linux): the FUSE frontend, a thin adapter onto the engine.
//! * `daemon` (Linux): mount (backgrounding, signals), unmount, stats, save.
//! * `save` (Linux): images: `--image`, `sectorfs save`, the atomic file write.
//! * `winfsp_logic`, `win_args` (platform-neutral, tested everywhere): the
//!   WinFsp frontend's translation to engine calls, and the Windows options.
//! * `winfsp_glue`, `win_daemon` (Windows): the `winfsp` host glue; mount,
//!   unmount, stats.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// `--features mimalloc`: mimalloc instead of the system allocator, to
/// compare the two (`docs/BENCHMARKS.md`, "Allocators": glibc stays).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(any(target_os = "linux", windows))]
mod background;
mod cli;
mod fault;
#[cfg(not(windows))]
mod fstab;
#[cfg(target_os = "linux")]
mod image_lock;
mod requests;
#[cfg(target_os = "linux")]
mod save;
mod stats;
mod telemetry;

#[cfg(target_os = "linux")]
mod daemon;
#[cfg(target_os = "linux")]
mod fuse_fs;
// The WinFsp translation: built for Windows, and tested everywhere (off
// Windows only the tests use it).
#[cfg(any(windows, test))]
#[cfg_attr(not(windows), allow(dead_code))]
mod win_args;
#[cfg(windows)]
mod win_daemon;
#[cfg(windows)]
mod winfsp_glue;
#[cfg(any(windows, test))]
#[cfg_attr(not(windows), allow(dead_code))]
mod winfsp_logic;

/// The options of `sectorfs mount` on this platform.
#[cfg(not(windows))]
type MountOptions = MountArgs;
#[cfg(windows)]
type MountOptions = win_args::WinMountArgs;

#[cfg(not(windows))]
const EXAMPLES: &str = "\
Examples:
  mkdir -p /tmp/ramdisk && sectorfs mount /tmp/ramdisk     # half of RAM, in the background
  sectorfs mount /mnt/build --size 8G --max-files 2000000  # 8 GiB limit, 2M inodes
  sectorfs mount /mnt/r --size 25% --allow-other -f        # a quarter of RAM, foreground, all users
  sectorfs stats /tmp/ramdisk                              # used / free, trend, time to full, requests
  sectorfs stats /tmp/ramdisk --watch 2                    # one line every 2 s, like vmstat
  sectorfs stats /tmp/ramdisk --json
  sectorfs stats /tmp/ramdisk --prometheus > /var/lib/node_exporter/ramdisk.prom
  sectorfs mount /mnt/work --image ~/work.img              # load ~/work.img (if any), save it at unmount
  sectorfs save /mnt/work                                  # save now, while it serves
  sectorfs unmount /tmp/ramdisk                            # as root or as the user who mounted";
#[cfg(windows)]
const EXAMPLES: &str = "\
Examples:
  sectorfs mount R:                                  # half of RAM, in the background
  sectorfs mount R: -s 8G -n 2000000 -i -l BUILD     # 8 GiB, 2M files, case-insensitive, label BUILD
  sectorfs mount -m * -u \\ram\\share -F NTFS    # memfs-style options: next free drive, UNC share
  sectorfs stats R: [--json]                         # used / free bytes, files, sectors
  sectorfs unmount R:

Served through WinFsp - Windows File System Proxy, Copyright (C) Bill Zissimopoulos,
https://github.com/winfsp/winfsp (this executable is GPL-3.0: see docs/WINDOWS.md).";

/// A RAM disk whose file data lives in fixed-size sectors.
#[derive(Debug, Parser)]
#[command(name = "sectorfs", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Save a mounted RAM disk to an image file while it keeps serving: one
    /// point in time (every write that returned before this command started
    /// is in it), written to a temporary file and renamed over FILE, so the
    /// previous image stays whole until the new one is.
    #[command(after_help = EXAMPLES)]
    Save {
        /// Where the RAM disk is mounted.
        mountpoint: PathBuf,
        /// The image file. [default: the mount's --image]
        file: Option<PathBuf>,
    },
    /// Mount a new, empty RAM disk on MOUNTPOINT (Linux: an empty directory;
    /// Windows: a drive letter or a new directory).
    #[command(after_help = EXAMPLES)]
    Mount(MountOptions),
    /// Unmount a sectorfs RAM disk (its contents are gone, unless it was
    /// mounted with --image: then it is saved first, and this waits for it).
    #[command(visible_alias = "umount")]
    Unmount {
        /// Where the RAM disk is mounted.
        mountpoint: PathBuf,
        /// Detach now even if busy; the kernel finishes when it is no longer used.
        #[arg(short = 'z', long)]
        lazy: bool,
        /// For a daemon that does not answer (stopped, or hung): abort its
        /// connection without asking it (root only), then detach. Requests in
        /// flight fail with an error, nothing is saved first, and the files
        /// are lost (a daemon with --image saves when it runs again).
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Show a mounted RAM disk's memory and file counters, its usage trend
    /// and when it will be full.
    ///
    /// The daemon samples its counters every second and keeps the last 5
    /// minutes. It reports sector allocation and free rates (last 10 s), the
    /// trend of used bytes (least-squares slope, bytes/s, over the last 10 s
    /// and 5 min; negative when shrinking), and the seconds until the limit
    /// is reached at that trend (none when usage is flat, falling, or the
    /// trend is lost in noise).
    #[command(after_help = EXAMPLES)]
    Stats {
        /// Where the RAM disk is mounted.
        mountpoint: PathBuf,
        /// Print one JSON object instead of a table (with --watch: one per line).
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Print the Prometheus text format (node_exporter's textfile
        /// collector, or a scrape), labelled with the mountpoint.
        #[arg(long, conflicts_with = "watch")]
        prometheus: bool,
        /// Print one line every SECS seconds (default 1) until Ctrl-C: used,
        /// free, use%, trend, time to full, requests/s. Exits with status 1
        /// and a message if the mount goes away.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1",
              value_parser = parse_interval)]
        watch: Option<Duration>,
    },
}

/// `--watch` SECS: 0.1 to 3600 seconds.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("bad interval {s:?} (seconds, e.g. 1 or 0.5)"))?;
    if !(0.1..=3600.0).contains(&v) {
        return Err(format!("interval {s:?} out of range (0.1 to 3600 seconds)"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// The output format `stats` was asked for.
fn stats_format(json: bool, prometheus: bool) -> stats::Format {
    match (json, prometheus) {
        (true, _) => stats::Format::Json,
        (_, true) => stats::Format::Prometheus,
        _ => stats::Format::Table,
    }
}

/// Options of `sectorfs mount`.
#[cfg(not(windows))]
#[derive(Debug, clap::Args)]
pub(crate) struct MountArgs {
    /// An existing, empty directory.
    pub(crate) mountpoint: PathBuf,
    /// Memory limit for file data: bytes with a unit (512M, 8G) or a share of RAM (50%),
    /// rounded up to whole sectors. [default: 50%]
    #[arg(long, value_name = "SIZE")]
    pub(crate) size: Option<cli::SizeArg>,
    /// Most files, directories and links (inodes); also bounds metadata (names, symlink
    /// targets, xattrs) at 1 KiB per inode, as tmpfs; e.g. 2000000 or 2m. [default: as tmpfs, half as many as memory has 4 KiB pages; at least one per 4 KiB of --size]
    #[arg(long, value_name = "N", value_parser = cli::parse_count)]
    pub(crate) max_files: Option<u64>,
    /// Bytes per sector: a power of two from 4K to 1M. [default: the image's, else 4K]
    #[arg(long, value_name = "SIZE", value_parser = cli::parse_bytes)]
    pub(crate) sector_size: Option<u64>,
    /// FUSE worker threads, at most 64 per core and within the open-file limit.
    /// [default: the number of cores, at least 2]
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<usize>,
    /// Permission bits of the root directory, in octal. [default: the image's, else 1777]
    #[arg(long, value_name = "MODE", value_parser = cli::parse_mode)]
    pub(crate) mode: Option<u32>,
    /// Owner of the root directory. [default: the user who mounts]
    #[arg(long, value_name = "UID")]
    pub(crate) uid: Option<u32>,
    /// Group of the root directory. [default: the group of the user who mounts]
    #[arg(long, value_name = "GID")]
    pub(crate) gid: Option<u32>,
    /// Let other users (and root) use the mount; permissions are still checked.
    /// For non-root mounts this needs `user_allow_other` in /etc/fuse.conf.
    #[arg(long)]
    pub(crate) allow_other: bool,
    /// Stay in the foreground (otherwise: return once the mount is ready, like sshfs).
    #[arg(short, long)]
    pub(crate) foreground: bool,
    /// Case-insensitive, case-preserving names (like Windows).
    #[arg(long)]
    pub(crate) case_insensitive: bool,
    /// Volume label (shown as the source in mount and df): 1 to 255 bytes.
    #[arg(long, value_name = "NAME")]
    pub(crate) label: Option<String>,
    /// How the kernel caches file data (see docs/ARCHITECTURE.md, "Data path"):
    /// `direct` (default) keeps both rules: a write that returns success is
    /// stored and ENOSPC comes from the write(2) that would pass the limit,
    /// and each byte is held in RAM once (no page-cache copy, except pages of
    /// mmapped files); `writethrough` adds the page cache for reads (same
    /// write guarantee, but read data is held twice until the kernel reclaims
    /// it); `writeback` is the kernel's writeback cache: fastest small writes,
    /// but writes past the limit are acknowledged and fail only at fsync or
    /// close (data is LOST), a killed daemon loses acknowledged writes, and
    /// data is held twice.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = CacheMode::Direct)]
    pub(crate) cache: CacheMode,
    /// Free memory kept warm for reuse after deletes (rewriting into it is
    /// ~10x cheaper than first-touching new memory); free memory beyond it
    /// goes back to the system a second or two after it became free. `0`
    /// gives everything back.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = cli::parse_reserve)]
    pub(crate) reserve: u64,
    /// How requests travel between the kernel and the daemon: `uring` (FUSE
    /// over io_uring, Linux 6.14+: one ring per CPU, a request and its reply
    /// in one step, about 2-3x the request rate of the classic loop), `classic`
    /// (a read(2) and a write(2) on /dev/fuse per request), or `auto`
    /// (default): `uring` where the kernel offers it (as root, sectorfs turns
    /// on the fuse module's `enable_uring` parameter), `classic` otherwise.
    /// `sectorfs stats` shows the one in use.
    #[cfg(not(windows))]
    #[arg(long, value_name = "KIND", value_enum, default_value_t = Transport::Auto)]
    pub(crate) transport: Transport,
    /// Load the RAM disk from this image file at mount (an absent file: an
    /// empty disk) and save it there at unmount (also on SIGTERM/SIGINT) and
    /// on `sectorfs save`. The image's limit, sector size, file limit, root
    /// mode and owner, case sensitivity and label apply unless given here;
    /// a corrupt image, or one larger than --size, is refused and nothing is
    /// mounted.
    #[arg(long, value_name = "FILE")]
    pub(crate) image: Option<PathBuf>,
    /// When reads update access times: `relatime` (default, as Linux
    /// mounts: the first read after a change, or a day after the last
    /// update), `noatime` (never), `strictatime` (every read: each one then
    /// costs a small update).
    #[arg(long, value_name = "MODE", value_enum, default_value_t = AtimeMode::Relatime)]
    pub(crate) atime: AtimeMode,
    /// Kernel mount flags from `mount -o` (nosuid, nodev, noexec, ro), set by
    /// the `mount -t fuse.sectorfs` translation (src/fstab.rs).
    #[arg(long, value_name = "FLAGS", hide = true, value_parser = fstab::parse_kernel_options, default_value = "")]
    pub(crate) kernel_options: fstab::KernelOptions,
}

/// When reads update access times (`--atime`).
#[cfg(not(windows))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum AtimeMode {
    /// The first read after a change, or a day after the last update.
    Relatime,
    /// Never.
    Noatime,
    /// Every read.
    Strictatime,
}

#[cfg(not(windows))]
impl AtimeMode {
    /// The engine's setting.
    pub(crate) fn engine(self) -> engine::Atime {
        match self {
            AtimeMode::Relatime => engine::Atime::Relative,
            AtimeMode::Noatime => engine::Atime::Never,
            AtimeMode::Strictatime => engine::Atime::Always,
        }
    }

    /// The kernel mount flag that shows it in /proc/mounts.
    pub(crate) fn ms_flag(self) -> libc::c_ulong {
        match self {
            AtimeMode::Relatime => libc::MS_RELATIME,
            AtimeMode::Noatime => libc::MS_NOATIME,
            AtimeMode::Strictatime => libc::MS_STRICTATIME,
        }
    }
}

/// The data path's caching mode (`--cache`).
#[cfg(not(windows))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CacheMode {
    /// `FOPEN_DIRECT_IO` with `FUSE_DIRECT_IO_ALLOW_MMAP`: reads and writes go
    /// to the daemon; only mmapped files use the page cache.
    Direct,
    /// Page cache for reads, every write sent to the daemon at once.
    Writethrough,
    /// The kernel's writeback cache (breaks the limit and durability rules).
    Writeback,
}

/// How FUSE requests travel (`--transport`).
#[cfg(not(windows))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Transport {
    /// io_uring where the kernel offers it, classic otherwise.
    Auto,
    /// FUSE over io_uring; the mount fails where the kernel cannot.
    Uring,
    /// The read/write loop on /dev/fuse.
    Classic,
}

fn main() -> ExitCode {
    init_log();
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "sectorfs: {e}");
            return ExitCode::from(cli::USAGE_EXIT);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes.
            // Not eprintln!, which panics when stderr cannot be written.
            let _ = writeln!(std::io::stderr(), "sectorfs: {e:#}");
            if e.downcast_ref::<cli::Usage>().is_some() {
                ExitCode::from(cli::USAGE_EXIT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Mount(args) => daemon::mount(&args),
        Cmd::Unmount { mountpoint, lazy, force } => daemon::unmount(&mountpoint, lazy, force),
        Cmd::Stats { mountpoint, json, prometheus, watch } => {
            daemon::stats(&mountpoint, stats_format(json, prometheus), watch)
        }
        Cmd::Save { mountpoint, file } => daemon::save(&mountpoint, file.as_deref()),
    }
}

#[cfg(windows)]
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = stats::STATS_XATTR;
    match cli.cmd {
        Cmd::Mount(args) => win_daemon::mount(&args),
        Cmd::Unmount { mountpoint, lazy, force } => win_daemon::unmount(&mountpoint, lazy, force),
        Cmd::Stats { mountpoint, json, prometheus, watch } => {
            win_daemon::stats(&mountpoint, stats_format(json, prometheus), watch)
        }
        Cmd::Save { .. } => anyhow::bail!("images are not built for Windows yet"),
    }
}

#[cfg(not(any(target_os = "linux", windows)))]
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = (cli.cmd, stats::STATS_XATTR);
    anyhow::bail!("mounting is implemented on Linux (FUSE) and Windows (WinFsp) only")
}

/// The command line; on Linux also the `mount.fuse3` helper form
/// (`sectorfs SOURCE MOUNTPOINT -o OPTIONS`, from `mount -t fuse.sectorfs`
/// and `/etc/fstab`), translated by [`fstab::helper_args`].
fn parse_cli() -> Result<Cli, String> {
    #[cfg(not(windows))]
    {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        let subcommands: Vec<String> = <Cli as clap::CommandFactory>::command()
            .get_subcommands()
            .flat_map(|c| std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(str::to_string)))
            .chain(["help".to_string()])
            .collect();
        let subs: Vec<&str> = subcommands.iter().map(String::as_str).collect();
        if fstab::is_helper_form(&args, &subs) {
            #[cfg(target_os = "linux")]
            if let Some((flags, mp)) = fstab::remount_request(&args)? {
                fstab::remount(flags, &mp)?;
                std::process::exit(0);
            }
            let translated = fstab::helper_args(&args)?;
            return Cli::try_parse_from(std::iter::once("sectorfs".into()).chain(translated)).map_err(|e| {
                e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_string()
            });
        }
    }
    Ok(Cli::parse())
}

/// Whether warnings and errors also go to the system log: set once a
/// background daemon has pointed its stderr at `/dev/null` ([`log_to_syslog`]).
#[cfg(unix)]
static SYSLOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, warnings and errors go to the system log too (`LOG_DAEMON`,
/// tagged `sectorfs[PID]`; journald keeps them): what a background daemon
/// says after it detached, such as a final save that failed at shutdown,
/// otherwise reached nobody (a probe).
#[cfg(unix)]
pub(crate) fn log_to_syslog() {
    // SAFETY: the identity is a static NUL-terminated string, which openlog
    // may keep a pointer to for the life of the process.
    unsafe { libc::openlog(c"sectorfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    SYSLOG.store(true, std::sync::atomic::Ordering::Release);
}

/// A minimal `log` backend: messages at or above `SECTORFS_LOG`
/// (`error`, `warn`, `info`, `debug`, `trace`; default `warn`) go to stderr,
/// and warnings and errors to the system log too once [`log_to_syslog`].
fn init_log() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::max_level()
        }
        fn log(&self, r: &log::Record<'_>) {
            let args = r.args().to_string();
            if self.enabled(r.metadata()) {
                // Not eprintln!: a daemon whose stderr went away must not panic.
                let _ = writeln!(std::io::stderr(), "sectorfs[{}] {}: {args}", std::process::id(), r.level());
                #[cfg(unix)]
                if r.level() <= log::Level::Warn && SYSLOG.load(std::sync::atomic::Ordering::Acquire) {
                    let prio = if r.level() == log::Level::Error { libc::LOG_ERR } else { libc::LOG_WARNING };
                    if let Ok(msg) = std::ffi::CString::new(args.replace('\0', " ")) {
                        // SAFETY: a constant "%s" format and one NUL-terminated
                        // string argument, alive across the call.
                        unsafe { libc::syslog(prio, c"%s".as_ptr(), msg.as_ptr()) };
                    }
                }
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let level = std::env::var("SECTORFS_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(log::LevelFilter::Warn);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    #[cfg(not(windows))] // the Windows options: win_args's tests
    fn parses_mount_options() {
        let c = Cli::try_parse_from([
            "sectorfs",
            "mount",
            "/mnt/x",
            "--size",
            "512M",
            "--max-files",
            "10",
            "--sector-size",
            "4K",
            "--threads",
            "3",
            "--mode",
            "0755",
            "--uid",
            "5",
            "--gid",
            "6",
            "--allow-other",
            "-f",
            "--case-insensitive",
            "--label",
            "L",
        ])
        .unwrap();
        let Cmd::Mount(m) = c.cmd else { panic!("not mount") };
        assert_eq!(m.size, Some(cli::SizeArg::Bytes(512 << 20)));
        assert_eq!((m.max_files, m.sector_size, m.threads, m.mode), (Some(10), Some(4096), Some(3), Some(0o755)));
        assert_eq!((m.uid, m.gid), (Some(5), Some(6)));
        assert!(m.allow_other && m.foreground && m.case_insensitive);
        assert_eq!(m.label.as_deref(), Some("L"));
    }

    #[test]
    #[cfg(not(windows))]
    fn mount_defaults_and_errors() {
        let c = Cli::try_parse_from(["sectorfs", "mount", "/mnt/x"]).unwrap();
        let Cmd::Mount(m) = c.cmd else { panic!("not mount") };
        assert_eq!((m.size, m.sector_size, m.mode, m.foreground), (None, None, None, false));
        assert!(Cli::try_parse_from(["sectorfs", "mount", "/m", "--size", "lots"]).is_err());
        assert!(Cli::try_parse_from(["sectorfs", "mount", "/m", "--mode", "999"]).is_err());
        assert!(Cli::try_parse_from(["sectorfs", "mount", "/m", "--sector-size", "10%"]).is_err());
        let c = Cli::try_parse_from(["sectorfs", "mount", "/m", "--size", "50%"]).unwrap();
        let Cmd::Mount(m) = c.cmd else { panic!("not mount") };
        assert_eq!(m.size, Some(cli::SizeArg::PercentOfRam(50)));
    }

    #[test]
    fn other_commands() {
        let c = Cli::try_parse_from(["sectorfs", "umount", "-z", "/m"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Unmount { lazy: true, .. }));
        let c = Cli::try_parse_from(["sectorfs", "stats", "/m", "--json"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Stats { json: true, watch: None, .. }));
        let c = Cli::try_parse_from(["sectorfs", "stats", "/m", "--watch"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Stats { watch: Some(d), .. } if d == Duration::from_secs(1)));
        let c = Cli::try_parse_from(["sectorfs", "stats", "/m", "--watch", "0.5", "--json"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Stats { watch: Some(d), json: true, .. } if d == Duration::from_millis(500)));
        let c = Cli::try_parse_from(["sectorfs", "save", "/m", "/tmp/x.img"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Save { file: Some(_), .. }));
        let c = Cli::try_parse_from(["sectorfs", "save", "/m"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Save { file: None, .. }));
        let c = Cli::try_parse_from(["sectorfs", "stats", "/m", "--prometheus"]).unwrap();
        assert!(matches!(c.cmd, Cmd::Stats { prometheus: true, .. }));
        for bad in [&["--watch", "0"][..], &["--watch", "x"], &["--json", "--prometheus"], &["--prometheus", "--watch"]]
        {
            assert!(Cli::try_parse_from(["sectorfs", "stats", "/m"].iter().chain(bad)).is_err(), "{bad:?}");
        }
    }
}
