//! Build-server smoke test: unpack a real source tarball (this workspace, as
//! `tar czf` makes it) onto a sectorfs mount, `cargo build --release` the
//! `sectorfs` binary there with `CARGO_TARGET_DIR` on the mount, run what was
//! built, and do the same on tmpfs (`/dev/shm`). The two output trees must
//! hold the same files with the same bytes (paths to the build root are
//! remapped; cargo's fingerprints, which hash paths and mtimes, are compared
//! by name only).
//!
//! The dependencies come from the local cargo registry (`--offline`), which
//! building this test has filled. The timings are printed for information;
//! the timed comparison lives in the benchmarks.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;

/// The workspace root (this crate's parent).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs `cmd`, returning stderr on failure.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Unpacks `tarball` under `root/src`, builds the `sectorfs` binary with its
/// target dir at `root/target`, and runs it; returns its `--version` line.
fn unpack_build_run(tarball: &Path, root: &Path) -> Result<String, String> {
    let src = root.join("src");
    fs::create_dir(&src).map_err(|e| e.to_string())?;
    run(Command::new("tar").arg("xzf").arg(tarball).arg("-C").arg(&src))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let start = Instant::now();
    run(Command::new(cargo)
        .args(["build", "--release", "--offline", "--locked", "--quiet", "-p", "sectorfs", "-j", "2"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .env("CARGO_INCREMENTAL", "0")
        .env("RUSTFLAGS", format!("--remap-path-prefix={}=/build", root.display()))
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("RUSTC_WRAPPER"))?;
    eprintln!("build on {}: {:.1?}", root.display(), start.elapsed());
    run(Command::new(root.join("target/release/sectorfs")).arg("--version"))
}

/// Every file under `root` (relative path, and its bytes with `root`
/// replaced by `ROOT`, or `None` where only the name is compared).
fn snapshot(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>)>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.push((format!("{rel}/"), None));
                walk(root, &p, out);
            } else if rel.contains(".fingerprint/") || rel.ends_with(".rustc_info.json") {
                out.push((rel, None));
            } else {
                let bytes = fs::read(&p).unwrap();
                out.push((rel, Some(replace(&bytes, root.as_os_str().as_encoded_bytes(), b"ROOT"))));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn cargo_build_on_the_mount_matches_tmpfs() {
    if !Path::new("/dev/shm").is_dir() {
        eprintln!("SKIP: /dev/shm is missing: no tmpfs to compare with");
        return;
    }
    let scratch = tempfile::Builder::new().prefix("sectorfs-build-").tempdir().unwrap();
    let tarball = scratch.path().join("src.tar.gz");
    // Every workspace member, as the root manifest lists them (a member
    // missing from the tarball fails the build).
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("members = ["))
        .expect("a one-line `members = [...]` in the workspace Cargo.toml");
    let members: Vec<&str> = members
        .trim_end_matches(']')
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .collect();
    assert!(members.contains(&"mount"), "members: {members:?}");
    run(Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .args(["--exclude=target", "--exclude=.git", "-C"])
        .arg(workspace())
        .args(["Cargo.toml", "Cargo.lock"])
        .args(&members))
    .unwrap();

    let shm = tempfile::Builder::new().prefix("sectorfs-build-").tempdir_in("/dev/shm").unwrap();
    let shm_root = shm.path().canonicalize().unwrap();
    let want = match unpack_build_run(&tarball, &shm_root) {
        Ok(v) => v,
        // Not our failure: the registry cache lacks a crate (an offline
        // build cannot fetch it). Anything else is a broken test.
        Err(e) if e.contains("offline") || e.contains("download") => {
            eprintln!("SKIP: the reference build on tmpfs could not get its crates: {e}");
            return;
        }
        Err(e) => panic!("the reference build on tmpfs failed: {e}"),
    };
    let Some(m) = Mount::new(&["--size", "4G"]) else { return };
    let got = unpack_build_run(&tarball, &m.path).unwrap();
    assert_eq!(got, want);
    assert!(got.starts_with("sectorfs "), "{got}");

    let (a, b) = (snapshot(&m.path), snapshot(&shm_root));
    let names = |s: &[(String, Option<Vec<u8>>)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "the output trees hold different files");
    let mut compared = 0;
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        if x.is_some() {
            compared += 1;
        }
        assert!(x == y, "{name} differs between sectorfs and tmpfs");
    }
    eprintln!("build trees: {} entries, {compared} files byte-identical", a.len());
    drop(m);
}
