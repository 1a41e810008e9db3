//! `sectorfs mount` in the background, the same way on Linux and Windows:
//! the command starts this program again with `--foreground` and
//! [`DAEMON_ENV`] set, its stdout on a pipe, and waits for one line. The
//! daemon writes [`READY`] once the mount serves, and the command exits 0;
//! if the daemon exits instead (its error went to the shared stderr), the
//! command exits with the daemon's status. Platform-neutral: tested here.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

/// Set (to `1`) in the environment of the background daemon.
pub(crate) const DAEMON_ENV: &str = "SECTORFS_DAEMON";

/// The first words of the daemon's readiness line.
pub(crate) const READY: &str = "sectorfs: mounted";

/// Whether this process is the background daemon.
pub(crate) fn is_daemon() -> bool {
    std::env::var_os(DAEMON_ENV).is_some()
}

/// The daemon's command: this program with the same arguments and
/// `--foreground`; the caller may add platform settings before [`start`].
pub(crate) fn daemon_command() -> Result<Command> {
    let exe = std::env::current_exe().context("cannot find the sectorfs executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).arg("--foreground").env(DAEMON_ENV, "1");
    Ok(cmd)
}

/// Starts `cmd` and waits until it reports readiness (0) or exits (its
/// status, at least 1).
pub(crate) fn start(mut cmd: Command) -> Result<u8> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the sectorfs daemon")?;
    let stdout = child.stdout.take().context("no pipe to the daemon")?;
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    if line.starts_with(READY) {
        // Ready and serving; the daemon runs on by itself.
        return Ok(0);
    }
    let status = child.wait().context("cannot wait for the sectorfs daemon")?;
    match status.code() {
        // It has said why on the shared stderr.
        Some(c) if c != 0 => Ok(u8::try_from(c).unwrap_or(1)),
        // It has not: killed (the OOM killer while it loaded an image, a
        // kill -9), or ended without a word.
        _ => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "sectorfs: {}", not_ready(status));
            Ok(1)
        }
    }
}

/// Why a daemon that ended without reporting readiness or an error failed.
fn not_ready(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name =
                nix::sys::signal::Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.to_string());
            return format!(
                "the daemon was killed by {name} before the mount was ready{}",
                if sig == libc::SIGKILL { " (out of memory? the OOM killer sends SIGKILL)" } else { "" }
            );
        }
    }
    format!("the daemon ended ({status}) before the mount was ready")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn readiness_or_the_daemons_status() {
        assert_eq!(start(sh(&format!("echo '{READY} /x'; sleep 5 &"))).unwrap(), 0);
        assert_eq!(start(sh("echo 'sectorfs: bad option' >&2; exit 3")).unwrap(), 3);
        assert_eq!(start(sh("kill -9 $$")).unwrap(), 1, "killed: no code");
        assert_eq!(start(sh("echo something else; exit 0")).unwrap(), 1, "no readiness line is a failure");
    }

    /// A daemon that died without a word (killed while it loaded an image)
    /// is reported, not an exit status of 1 and silence (a probe).
    #[test]
    fn a_daemon_that_died_silently_is_named() {
        use std::os::unix::process::ExitStatusExt;
        let killed = not_ready(std::process::ExitStatus::from_raw(libc::SIGKILL));
        assert!(killed.contains("killed by SIGKILL before the mount was ready") && killed.contains("OOM"), "{killed}");
        let segv = not_ready(std::process::ExitStatus::from_raw(libc::SIGSEGV));
        assert!(segv.contains("killed by SIGSEGV") && !segv.contains("OOM"), "{segv}");
        assert!(not_ready(std::process::ExitStatus::from_raw(0)).contains("ended (exit status: 0)"));
    }
}
