//! Windows: `sectorfs mount`, `unmount` and `stats` over WinFsp.
//!
//! # Mount life cycle
//! 1. Without `-f`, the command starts itself again with `-f` as a detached
//!    process (no console) and waits for its readiness line
//!    ([`crate::background`], shared with Linux); after it the daemon points
//!    its stdout and stderr at `NUL`.
//! 2. The daemon loads WinFsp's DLL (next to `sectorfs.exe`, on the DLL
//!    path, or from WinFsp's install directory in the registry), creates the
//!    mount's unmount event (`Local\sectorfs-unmount-<mount point>`; if it
//!    exists, another sectorfs serves that mount point), builds the root
//!    security descriptor from the SDDL, creates the engine and the WinFsp
//!    host, mounts and starts the dispatcher.
//! 3. It waits on the event, which `sectorfs unmount` sets, as does Ctrl+C /
//!    Ctrl+Break / closing the console in the foreground; then it unmounts,
//!    stops the dispatcher and exits, freeing all memory at once.
//!
//! `sectorfs stats` opens the volume's root and asks with a
//! `DeviceIoControl` ([`IOCTL_SECTORFS_STATS`]), which the daemon answers.

use std::ffi::c_void;
use std::io::Write;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::os::windows::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use windows::core::HSTRING;
use windows::Win32::Foundation::{CloseHandle, GetLastError, LocalFree, ERROR_ALREADY_EXISTS, HANDLE, HLOCAL};
use windows::Win32::Security::Authorization::{ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1};
use windows::Win32::Security::{GetSecurityDescriptorLength, PSECURITY_DESCRIPTOR};
use windows::Win32::System::Console::{SetConsoleCtrlHandler, SetStdHandle, STD_ERROR_HANDLE, STD_OUTPUT_HANDLE};
use windows::Win32::System::Threading::{
    CreateEventW, OpenEventW, OpenProcess, SetEvent, WaitForSingleObject, EVENT_MODIFY_STATE, INFINITE,
    PROCESS_SYNCHRONIZE,
};
use winfsp::host::{FileSystemHost, FineGuard, VolumeParams};

use crate::background::{self, READY};
use crate::cli::{self, format_bytes};
use crate::stats::{self as st, Format, Report};
use crate::win_args::{self, MountTarget, WinMountArgs, WinSettings};
use crate::winfsp_glue::Glue;
use crate::winfsp_logic::{self, NtStatus, WinFs, IOCTL_SECTORFS_STATS};

/// `DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP`: no console, no Ctrl+C from the caller's.
const DETACH_FLAGS: u32 = 0x0000_0008 | 0x0000_0200;
/// `FILE_READ_ATTRIBUTES`.
const FILE_READ_ATTRIBUTES: u32 = 0x80;
/// `FILE_FLAG_BACKUP_SEMANTICS`: lets `CreateFile` open a directory.
const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;

/// The stop event, for the console control handler (a raw `HANDLE` value).
static STOP_EVENT: AtomicIsize = AtomicIsize::new(0);

/// Physical memory of this machine in bytes.
pub(crate) fn total_ram() -> Option<u64> {
    use windows::Win32::System::SystemInformation::{GlobalMemoryStatusEx, MEMORYSTATUSEX};
    let mut m = MEMORYSTATUSEX { dwLength: std::mem::size_of::<MEMORYSTATUSEX>() as u32, ..Default::default() };
    // SAFETY: `m` is a valid MEMORYSTATUSEX with its length set, as the call requires.
    unsafe { GlobalMemoryStatusEx(&mut m) }.ok()?;
    Some(m.ullTotalPhys)
}

/// `SetSecurity`'s first half: the descriptor `current` changed by the
/// caller's `modification`, computed by WinFsp's `FspSetSecurityDescriptor`
/// (which applies `SECURITY_INFORMATION` and inheritance like NTFS).
pub(crate) fn modify_security(current: &[u8], info: u32, modification: *mut c_void) -> Result<Vec<u8>, NtStatus> {
    use winfsp_sys::{FspDeleteSecurityDescriptor, FspSetSecurityDescriptor};
    let mut input = current.to_vec();
    let mut out: winfsp_sys::PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    let input_ptr = if input.is_empty() { std::ptr::null_mut() } else { input.as_mut_ptr().cast::<c_void>() };
    // SAFETY: `input_ptr` is null or our own buffer holding a self-relative
    // descriptor, alive for the call; `modification` is the descriptor
    // WinFsp passed to SetSecurity; `out` receives a new descriptor that
    // only FspDeleteSecurityDescriptor frees.
    let status = unsafe { FspSetSecurityDescriptor(input_ptr, info, modification, &mut out) };
    if status < 0 {
        return Err(status);
    }
    // SAFETY: `out` is the valid descriptor FspSetSecurityDescriptor just
    // made; its length is what GetSecurityDescriptorLength reports, and it
    // is freed exactly once, after the copy, by the function that pairs
    // with the one that made it (WinFsp's documented contract).
    unsafe {
        let len = GetSecurityDescriptorLength(PSECURITY_DESCRIPTOR(out)) as usize;
        let bytes = std::slice::from_raw_parts(out.cast::<u8>(), len).to_vec();
        type SetFn = unsafe extern "C" fn(
            winfsp_sys::PSECURITY_DESCRIPTOR,
            u32,
            winfsp_sys::PSECURITY_DESCRIPTOR,
            *mut winfsp_sys::PSECURITY_DESCRIPTOR,
        ) -> i32;
        let create: SetFn = FspSetSecurityDescriptor;
        FspDeleteSecurityDescriptor(out, Some(std::mem::transmute::<SetFn, unsafe extern "C" fn() -> i32>(create)));
        Ok(bytes)
    }
}

/// A self-relative security descriptor from SDDL.
fn sddl_to_sd(sddl: &str) -> Result<Vec<u8>> {
    let mut psd = PSECURITY_DESCRIPTOR::default();
    let mut len = 0u32;
    // SAFETY: the SDDL string lives across the call; `psd` and `len` receive
    // a LocalAlloc'ed descriptor and its size, which we copy and free once.
    unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            &HSTRING::from(sddl),
            SDDL_REVISION_1,
            &mut psd,
            Some(&mut len),
        )
        .with_context(|| format!("bad --root-sddl {sddl:?}"))?;
        let bytes = std::slice::from_raw_parts(psd.0.cast::<u8>(), len as usize).to_vec();
        LocalFree(Some(HLOCAL(psd.0)));
        Ok(bytes)
    }
}

/// WinFsp's install directory, from the registry (32-bit view, as its installer writes it).
fn winfsp_install_dir() -> Option<String> {
    use windows::Win32::System::Registry::{RegGetValueW, HKEY_LOCAL_MACHINE, RRF_RT_REG_SZ};
    let mut buf = [0u16; 1024];
    let mut size = (buf.len() * 2) as u32;
    // SAFETY: `buf` has `size` writable bytes, and `size` is updated to what was written.
    let r = unsafe {
        RegGetValueW(
            HKEY_LOCAL_MACHINE,
            &HSTRING::from("SOFTWARE\\WOW6432Node\\WinFsp"),
            &HSTRING::from("InstallDir"),
            RRF_RT_REG_SZ,
            None,
            Some(buf.as_mut_ptr().cast()),
            Some(&mut size),
        )
    };
    if r.is_err() {
        return None;
    }
    let n = (size as usize / 2).min(buf.len());
    let s = String::from_utf16_lossy(&buf[..n]);
    Some(s.trim_end_matches('\0').to_string())
}

/// Loads `winfsp-x64.dll`: next to the program or on the DLL path first,
/// else from WinFsp's install directory.
fn load_winfsp() -> Result<()> {
    if winfsp::winfsp_init().is_ok() {
        return Ok(());
    }
    let missing = "WinFsp is not installed (get it from https://winfsp.dev/rel/), \
                   and winfsp-x64.dll is not next to sectorfs.exe";
    let dir = winfsp_install_dir().ok_or_else(|| anyhow!(missing))?;
    let dll = Path::new(&dir).join("bin").join("winfsp-x64.dll");
    // SAFETY: loading WinFsp's own DLL runs only its initialization; the
    // module stays loaded for the life of the process (the delay-load stubs
    // resolve to it by name).
    unsafe { windows::Win32::System::LibraryLoader::LoadLibraryW(&HSTRING::from(dll.as_os_str())) }
        .with_context(|| format!("cannot load {}", dll.display()))?;
    winfsp::winfsp_init().map_err(|e| anyhow!("cannot initialize WinFsp: {e:?}"))?;
    Ok(())
}

/// Ctrl+C, Ctrl+Break, console close: unmount (the main thread does it).
unsafe extern "system" fn on_console_event(_kind: u32) -> windows::core::BOOL {
    let h = STOP_EVENT.load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: the event handle stays open for the life of the process.
        let _ = unsafe { SetEvent(HANDLE(h as *mut c_void)) };
    }
    true.into()
}

fn volume_params(s: &WinSettings) -> VolumeParams {
    let mut p = VolumeParams::new();
    let now = winfsp_logic::now_filetime();
    p.sector_size(winfsp_logic::ALLOCATION_UNIT as u16)
        .sectors_per_allocation_unit(1)
        .max_component_length(255)
        .volume_creation_time(now)
        .volume_serial_number((now / 10_000_000) as u32)
        .file_info_timeout(s.file_info_timeout)
        .case_sensitive_search(!s.case_insensitive)
        .case_preserved_names(true)
        .unicode_on_disk(true)
        .persistent_acls(true)
        .reparse_points(true)
        .reparse_points_access_check(false)
        .named_streams(false)
        .extended_attributes(false)
        .post_cleanup_when_modified_only(true)
        .post_disposition_only_when_necessary(true)
        .allow_open_in_kernel_mode(true)
        .supports_posix_unlink_rename(true)
        .directory_marker_as_next_offset(true)
        .device_control(true)
        .filesystem_name(&s.fs_name);
    if let Some(prefix) = &s.unc_prefix {
        p.prefix(prefix);
    }
    p
}

/// `sectorfs mount` on Windows.
pub(crate) fn mount(args: &WinMountArgs) -> Result<ExitCode> {
    // Bad values are refused here, before any daemon starts (exit status 2).
    let mut s = args.settings(cli::total_ram()).map_err(cli::Usage)?;
    if !args.foreground {
        return spawn_background();
    }
    let daemon = background::is_daemon();
    crate::fault::setup();
    load_winfsp()?;
    if s.target == MountTarget::NextFreeDrive {
        // SAFETY: no arguments; returns a bit mask.
        let used = unsafe { windows::Win32::Storage::FileSystem::GetLogicalDrives() };
        s.target = MountTarget::Drive(win_args::last_free_drive(used).ok_or_else(|| anyhow!("no free drive letter"))?);
    }
    let event_name = win_args::unmount_event_name(&s.target, s.unc_prefix.as_deref()).map_err(|e| anyhow!(e))?;
    // SAFETY: default security, a name we own across the call.
    let stop = unsafe { CreateEventW(None, true, false, &HSTRING::from(event_name.as_str())) }
        .context("cannot create the unmount event")?;
    // SAFETY: reads this thread's last error, set by CreateEventW just above.
    if unsafe { GetLastError() } == ERROR_ALREADY_EXISTS {
        bail!("{} is already served by another sectorfs (unmount it first)", shown(&s));
    }
    STOP_EVENT.store(stop.0 as isize, Ordering::Release);
    let root_sd = sddl_to_sd(&s.root_sddl)?;
    let cfg = engine::Config {
        sector_size: usize::try_from(s.sector_size).unwrap_or(usize::MAX),
        max_bytes: s.size,
        max_inodes: s.max_files,
        case_insensitive: s.case_insensitive,
        ..engine::Config::default()
    };
    let engine = engine::Engine::new(cfg).map_err(|e| anyhow!("bad settings: {e}"))?;
    let fs = WinFs::new(Arc::new(engine), &s.label, &root_sd).map_err(|st| {
        anyhow!(
            "root security descriptor refused (NTSTATUS {:#x}); it must be at most {} bytes",
            st as u32,
            winfsp_logic::SD_MAX
        )
    })?;
    // FineGuard: WinFsp calls us on several threads at once, serializing
    // only name-space changes (see winfsp_logic's module doc).
    let mut host = FileSystemHost::<Glue, FineGuard>::new(volume_params(&s), Glue { fs }).map_err(|e| {
        anyhow!("cannot create the WinFsp file system ({e}); is WinFsp installed and its driver running?")
    })?;
    match &s.target {
        MountTarget::Drive(c) => host.mount(format!("{c}:")),
        MountTarget::Dir(d) => host.mount(d.as_str()),
        MountTarget::NextFreeDrive | MountTarget::None => Ok(()),
    }
    .map_err(|e| anyhow!("cannot mount {}: {e}", shown(&s)))?;
    host.start_with_threads(s.threads).map_err(|e| anyhow!("cannot start the WinFsp dispatcher: {e}"))?;
    // SAFETY: `on_console_event` is a valid handler for the life of the process.
    unsafe { SetConsoleCtrlHandler(Some(on_console_event), true) }.ok();

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{READY} {} (limit {}, {} files, {} sectors, pid {})",
        shown(&s),
        format_bytes(s.size),
        s.max_files,
        format_bytes(s.sector_size),
        std::process::id()
    );
    let _ = out.flush();
    drop(out);
    if daemon {
        detach_stdio();
    }
    // SAFETY: `stop` is our open event handle.
    unsafe { WaitForSingleObject(stop, INFINITE) };
    log::info!("unmounting {}", shown(&s));
    host.unmount();
    host.stop();
    drop(host);
    Ok(ExitCode::SUCCESS)
}

fn shown(s: &WinSettings) -> String {
    match (&s.target, &s.unc_prefix) {
        (MountTarget::Drive(c), _) => format!("{c}:"),
        (MountTarget::Dir(d), _) => d.clone(),
        (_, Some(p)) => format!("\\{p}"),
        _ => "*".into(),
    }
}

/// Points stdout and stderr at `NUL`: the command that started us is gone.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("NUL") {
        let h = HANDLE(null.as_raw_handle());
        // SAFETY: `h` is a valid handle we leak on purpose (it must stay open
        // as the process's standard handle); std reads the standard handles
        // on each write.
        unsafe {
            let _ = SetStdHandle(STD_OUTPUT_HANDLE, h);
            let _ = SetStdHandle(STD_ERROR_HANDLE, h);
        }
        std::mem::forget(null);
    }
}

/// Starts the daemon (this program with `-f`, detached from the console)
/// and waits until it reports the mount ready, or exits.
fn spawn_background() -> Result<ExitCode> {
    let mut cmd = background::daemon_command()?;
    cmd.creation_flags(DETACH_FLAGS);
    Ok(ExitCode::from(background::start(cmd)?))
}

fn target_of(mountpoint: &Path) -> Result<MountTarget> {
    win_args::parse_mount_target(&mountpoint.to_string_lossy()).map_err(|e| anyhow!(e))
}

/// `sectorfs unmount` on Windows: sets the mount's unmount event and waits
/// (bounded) for its daemon to exit.
pub(crate) fn unmount(mountpoint: &Path, lazy: bool, force: bool) -> Result<ExitCode> {
    if lazy {
        bail!("--lazy has no meaning on Windows (WinFsp unmounts at once)");
    }
    if force {
        bail!("--force is for Linux (it aborts the kernel's FUSE connection); end the daemon's process instead");
    }
    let shown = mountpoint.display();
    let target = target_of(mountpoint)?;
    let name = win_args::unmount_event_name(&target, None).map_err(|e| anyhow!(e))?;
    let pid = read_stats(mountpoint).ok().and_then(|s| u32::try_from(s.pid).ok());
    // SAFETY: a name we own across the call.
    let ev = unsafe { OpenEventW(EVENT_MODIFY_STATE, false, &HSTRING::from(name.as_str())) }
        .map_err(|_| anyhow!("{shown} is not a sectorfs mount of this session"))?;
    // SAFETY: `ev` is the handle just opened; closed once.
    unsafe {
        SetEvent(ev).with_context(|| format!("cannot unmount {shown}"))?;
        let _ = CloseHandle(ev);
    }
    if let Some(pid) = pid {
        // SAFETY: the process handle (if any) is waited on and closed once.
        unsafe {
            if let Ok(p) = OpenProcess(PROCESS_SYNCHRONIZE, false, pid) {
                WaitForSingleObject(p, 10_000);
                let _ = CloseHandle(p);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the mount at `mountpoint` for its counters.
fn read_stats(mountpoint: &Path) -> Result<Report> {
    let target = target_of(mountpoint)?;
    let root = target.root_path(None).ok_or_else(|| anyhow!("give the drive letter or directory of the mount"))?;
    let f = std::fs::OpenOptions::new()
        .access_mode(FILE_READ_ATTRIBUTES)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(&root)
        .with_context(|| format!("cannot open {root}"))?;
    let mut buf = vec![0u8; 4096];
    let mut n = 0u32;
    // SAFETY: `f` is an open handle for the call; `buf` has `buf.len()` writable bytes.
    unsafe {
        windows::Win32::System::IO::DeviceIoControl(
            HANDLE(f.as_raw_handle()),
            IOCTL_SECTORFS_STATS,
            None,
            0,
            Some(buf.as_mut_ptr().cast()),
            buf.len() as u32,
            Some(&mut n),
            None,
        )
    }
    .map_err(|_| anyhow!("{} is not a sectorfs mount", mountpoint.display()))?;
    buf.truncate(n as usize);
    Report::from_json(&String::from_utf8_lossy(&buf))
        .map_err(|e| anyhow!("bad stats from {}: {e}", mountpoint.display()))
}

/// `sectorfs stats` on Windows (Ctrl-C ends `--watch` the default way).
pub(crate) fn stats(mountpoint: &Path, format: Format, watch: Option<std::time::Duration>) -> Result<ExitCode> {
    let shown = mountpoint.display().to_string();
    match watch {
        None => st::print(&read_stats(mountpoint)?, format, &shown),
        Some(every) => {
            let wait = |d| {
                std::thread::sleep(d);
                false
            };
            st::watch(&shown, every, format, || read_stats(mountpoint), wait, &mut std::io::stdout().lock())
        }
    }
}
