//! Test-only fault injection in the daemon, on top of the engine's
//! failpoints (`engine/src/fault.rs`, the `fail` crate).
//!
//! Built only with `--features failpoints` (`scripts/test-all` builds it in
//! the debug profile for `tests/mount_faults.rs`); a release binary has none
//! of it. Two ways to arm a failpoint of the engine or of this crate:
//!
//! * at start: `FAILPOINTS='name=ACTIONS;name2=ACTIONS'` in the daemon's
//!   environment (the `fail` crate's `FailScenario`);
//! * at run time, at one precise moment of a real-mount test:
//!   `setfattr -n user.sectorfs.failpoint -v 'name=ACTIONS' MOUNTPOINT` (on the
//!   root; `name=` with nothing after it disarms `name`).
//!
//! ACTIONS is `fail`'s syntax: `panic`, `return`, `1*off->return`, `pause`, ...
//!
//! The session layer has its own: `fuse.reply` (a reply write that fails,
//! `fuse/src/reply.rs`). To add a site here, write
//! `fail_point!("daemon.site", |_| Err(io::Error::from_raw_os_error(libc::EIO)))`
//! with the macro below, and list it in `docs/RELIABILITY.md`.

/// The root attribute that arms a failpoint at run time.
#[cfg(feature = "failpoints")]
pub(crate) const ARM_XATTR: &str = "user.sectorfs.failpoint";

/// A failpoint site (`fail::fail_point!`); nothing without `failpoints`.
#[allow(unused_macros)]
macro_rules! fail_point {
    ($($t:tt)*) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($($t)*);
    };
}
#[allow(unused_imports)]
pub(crate) use fail_point;

/// Arms the failpoints named in `FAILPOINTS` for the life of the process.
pub(crate) fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}

/// Arms (or, with empty actions, disarms) one failpoint from `name=ACTIONS`.
///
/// # Errors
/// A one-line reason if the value is not `name=ACTIONS` or `fail` refuses
/// the actions.
#[cfg(feature = "failpoints")]
pub(crate) fn arm(value: &[u8]) -> Result<(), String> {
    let s = std::str::from_utf8(value).map_err(|_| "not UTF-8".to_string())?;
    let (name, actions) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected name=ACTIONS"))?;
    if actions.trim().is_empty() {
        fail::remove(name.trim());
        return Ok(());
    }
    log::warn!("failpoint {name} armed: {actions}");
    fail::cfg(name.trim(), actions.trim())
}
