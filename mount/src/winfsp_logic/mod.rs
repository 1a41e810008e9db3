//! The WinFsp frontend's behaviour, platform-neutral: every call WinFsp's
//! user-mode DLL makes into a file system (`FSP_FILE_SYSTEM_INTERFACE`),
//! translated into engine calls, with the answer as an NTSTATUS or as the
//! bytes WinFsp expects. The `cfg(windows)` glue (`winfsp_glue`) only
//! converts types and copies bytes; everything here is tested on Linux
//! (unit tests below, and call sequences of real Windows programs replayed
//! through a model of WinFsp's FSD and DLL in `sequences`).
//!
//! # How WinFsp's calls map
//! * **Names.** WinFsp passes full paths (`\dir\file`, UTF-16). Each call
//!   resolves the path from the root, one engine `lookup` per component
//!   (the lookup reference is given back at once: an open handle keeps a node
//!   alive through the engine's open count). A missing parent is
//!   `STATUS_OBJECT_PATH_NOT_FOUND`, a missing last component
//!   `STATUS_OBJECT_NAME_NOT_FOUND`, a file used as a directory
//!   `STATUS_NOT_A_DIRECTORY` (as memfs). Names are stored as UTF-8, so a
//!   name with an unpaired surrogate is `STATUS_OBJECT_NAME_INVALID`, and a
//!   component must fit the engine's 255 bytes of UTF-8
//!   (`STATUS_NAME_TOO_LONG` otherwise; 255 UTF-16 units of ASCII fit).
//!   Case-insensitive mounts use the engine's case folding.
//! * **Handles.** `open`/`create` take one engine open; `close` gives it
//!   back. A handle is the inode number and whether it is a directory.
//! * **Delete.** WinFsp's FSD keeps the delete-pending state
//!   (`FILE_DISPOSITION_INFORMATION(_EX)`, `FILE_DELETE_ON_CLOSE`, POSIX
//!   semantics) and asks `set_delete` only whether the file may go (a
//!   non-empty directory may not); the name is removed in `cleanup` with
//!   `FspCleanupDelete`. An open handle of a deleted file keeps working
//!   until it is closed (the engine keeps unlinked-but-open nodes).
//! * **Sizes and memory.** Extending a file (`set_file_size`, and so every
//!   cached write that extends it: the FSD sets the end of file first)
//!   reserves the memory of the new range (engine `fallocate`), as NTFS
//!   allocates clusters; so a write the cache manager acknowledged is never
//!   refused later by the lazy writer, whose writes stay inside the size
//!   (`constrained_io`) and never fail for space. The allocation size maps
//!   to `fallocate(KEEP_SIZE)`; cleanup's `FspCleanupSetAllocationSize`
//!   gives back what lies past the end. Reported allocation: the memory the
//!   file holds (or its size, if more), rounded up to [`ALLOCATION_UNIT`].
//! * **Attributes** are the engine's `flags`; directory and reparse-point
//!   bits follow the node. **Times** are the engine's nanosecond times as
//!   `FILETIME`s (creation = `crtime`, change = `ctime`).
//! * **Security descriptors** are kept as given (self-relative bytes) in the
//!   node's `trusted.sectorfs.ntsd` extended attribute; WinFsp does the
//!   access checks. At most [`SD_MAX`] bytes: winfsp-rs 0.13 cannot tell
//!   WinFsp that a descriptor needs a larger buffer than the 1 KiB it offers
//!   in `get_security_by_name`, so larger ones are refused when stored.
//! * **Reparse points** (symlinks, junctions, any tag) are kept as the
//!   reparse data buffer in `trusted.sectorfs.reparse`, with
//!   `FILE_ATTRIBUTE_REPARSE_POINT`; WinFsp resolves them.
//! * **Directories** are listed in the engine's order with
//!   `DirectoryMarkerAsNextOffset`: each entry carries the engine's resume
//!   cookie, so a listing continues exactly where it stopped while entries
//!   are created and deleted (no name lookup of the last entry, no buffer of
//!   the whole directory). Not sorted by name, as on FAT.
//! * **Not supported** (the volume says so, WinFsp refuses them): named
//!   streams, extended attributes, hard links.
//!
//! # Concurrency
//! Calls come on several WinFsp threads at once (`FineGuard`). WinFsp
//! serializes name-space changes (create, rename, delete) against opens and
//! takes each file's lock exclusively around anything that changes its size
//! (write, set_file_size, overwrite, cleanup), so the read-then-set steps
//! below (e.g. clip a paging write to the size) see no concurrent change of
//! the same file. The engine is safe under any interleaving in any case.

mod nt;
mod wire;

#[cfg(test)]
mod fsd;
#[cfg(test)]
mod sequences;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use engine::data::FALLOC_KEEP_SIZE;
use engine::{rename_flags, Attr, Engine, Error, FileType, Ino, SetAttr, SetTime, ROOT};

pub(crate) use nt::{NtStatus, IOCTL_SECTORFS_STATS};
pub(crate) use wire::FileInfo;

use nt::{attr, cleanup as cf, create as co};

/// A WinFsp answer: the value, or the NTSTATUS of the failure.
pub(crate) type WinResult<T> = Result<T, NtStatus>;

/// Where a node's security descriptor is kept.
const SD_XATTR: &[u8] = b"trusted.sectorfs.ntsd";
/// Where a node's reparse data buffer is kept.
const REPARSE_XATTR: &[u8] = b"trusted.sectorfs.reparse";

/// Largest security descriptor stored (see the module doc).
pub(crate) const SD_MAX: usize = 1024;
/// The allocation unit reported to Windows (volume sector size x sectors per unit).
pub(crate) const ALLOCATION_UNIT: u64 = 4096;
/// Longest volume label, in UTF-16 units (`FSP_FSCTL_VOLUME_INFO`).
pub(crate) const LABEL_MAX: usize = 32;

/// Now, as a Windows `FILETIME`.
pub(crate) fn now_filetime() -> u64 {
    wire::filetime(engine::Time::now())
}

fn st(e: Error) -> NtStatus {
    e.ntstatus()
}

/// An open file or directory (WinFsp's file context).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Handle {
    ino: Ino,
    dir: bool,
}

#[cfg(test)]
impl Handle {
    /// The inode behind this handle.
    pub(crate) fn ino(&self) -> Ino {
        self.ino
    }
}

/// What `open` and `create` return.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) handle: Handle,
    pub(crate) info: FileInfo,
}

/// What `get_security_by_name` returns.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ByName {
    /// The file exists: its attributes, and its security descriptor if asked
    /// for (`None`: it has none, and WinFsp grants every access).
    Found { attributes: u32, security: Option<Vec<u8>> },
    /// A component before the last is a reparse point: WinFsp must resolve
    /// it (the glue calls winfsp-rs's resolver, which answers `STATUS_REPARSE`).
    ReparseInPath,
}

/// `FSP_FSCTL_VOLUME_INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VolumeInfo {
    pub(crate) total_size: u64,
    pub(crate) free_size: u64,
    pub(crate) label: Vec<u16>,
}

/// Why a path did not resolve to a node.
enum Miss {
    Status(NtStatus),
    Reparse,
}

impl Miss {
    /// As an NTSTATUS, for calls that cannot answer `STATUS_REPARSE`
    /// (WinFsp resolves reparse points before it calls them).
    fn status(self) -> NtStatus {
        match self {
            Miss::Status(s) => s,
            Miss::Reparse => nt::STATUS_OBJECT_PATH_NOT_FOUND,
        }
    }
}

/// A path's components as engine names.
fn split(path: &[u16]) -> WinResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for comp in path.split(|&c| c == u16::from(b'\\')) {
        if comp.is_empty() {
            continue;
        }
        let s = String::from_utf16(comp).map_err(|_| nt::STATUS_OBJECT_NAME_INVALID)?;
        if s == "." || s == ".." || s.contains('/') {
            return Err(nt::STATUS_OBJECT_NAME_INVALID);
        }
        out.push(s.into_bytes());
    }
    Ok(out)
}

/// The sectorfs volume as WinFsp sees it.
pub(crate) struct WinFs {
    engine: Arc<Engine>,
    label: Mutex<Vec<u16>>,
    pid: u32,
    /// Usage over time (`sectorfs stats`).
    telemetry: Arc<crate::telemetry::Telemetry>,
}

impl WinFs {
    /// A volume over `engine` (a fresh one: its root gets `root_sd`).
    ///
    /// # Errors
    /// `STATUS_INVALID_SECURITY_DESCR` for a malformed descriptor,
    /// `STATUS_INSUFFICIENT_RESOURCES` for one over [`SD_MAX`] bytes.
    pub(crate) fn new(engine: Arc<Engine>, label: &str, root_sd: &[u8]) -> WinResult<WinFs> {
        Self::check_sd(root_sd)?;
        engine.setxattr(ROOT, SD_XATTR, root_sd, 0).map_err(st)?;
        let label: Vec<u16> = label.encode_utf16().take(LABEL_MAX).collect();
        // The sampler thread on Windows; tests off Windows tick by hand.
        #[cfg(windows)]
        // No memory return on Windows yet (the pool's `discard` is a no-op there).
        let telemetry = crate::telemetry::Telemetry::start(engine.clone(), None)
            .unwrap_or_else(|_| Arc::new(crate::telemetry::Telemetry::new(engine.clone())));
        #[cfg(not(windows))]
        let telemetry = Arc::new(crate::telemetry::Telemetry::new(engine.clone()));
        Ok(WinFs { engine, label: Mutex::new(label), pid: std::process::id(), telemetry })
    }

    /// The engine behind the volume.
    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    fn check_sd(sd: &[u8]) -> WinResult<()> {
        wire::check_security_descriptor(sd)?;
        if sd.len() > SD_MAX {
            return Err(nt::STATUS_INSUFFICIENT_RESOURCES);
        }
        Ok(())
    }

    // ------------------------------------------------------------ lookup

    /// Resolves `comps` from the root. With `last_is_target`, a missing last
    /// component is "name not found"; otherwise every component is a
    /// directory on the way (a missing one is "path not found").
    fn walk(&self, comps: &[Vec<u8>], last_is_target: bool) -> Result<Attr, Miss> {
        let mut cur = self.engine.getattr(ROOT).map_err(|e| Miss::Status(st(e)))?;
        for (i, name) in comps.iter().enumerate() {
            if cur.flags & attr::REPARSE_POINT != 0 {
                return Err(Miss::Reparse);
            }
            let last = i + 1 == comps.len() && last_is_target;
            match self.engine.lookup(cur.ino, name) {
                Ok(a) => {
                    self.engine.forget(a.ino, 1);
                    cur = a;
                }
                Err(Error::NotFound) => {
                    return Err(Miss::Status(if last {
                        nt::STATUS_OBJECT_NAME_NOT_FOUND
                    } else {
                        nt::STATUS_OBJECT_PATH_NOT_FOUND
                    }))
                }
                Err(e) => return Err(Miss::Status(st(e))),
            }
        }
        Ok(cur)
    }

    /// The node named by `path`.
    fn resolve(&self, path: &[u16]) -> Result<Attr, Miss> {
        let comps = split(path).map_err(Miss::Status)?;
        self.walk(&comps, true)
    }

    /// The parent directory of `path` and the last name (`None` for the root).
    fn resolve_parent(&self, path: &[u16]) -> Result<(Attr, Option<Vec<u8>>), Miss> {
        let mut comps = split(path).map_err(Miss::Status)?;
        let Some(name) = comps.pop() else {
            return Ok((self.engine.getattr(ROOT).map_err(|e| Miss::Status(st(e)))?, None));
        };
        let parent = self.walk(&comps, false)?;
        if parent.flags & attr::REPARSE_POINT != 0 {
            return Err(Miss::Reparse);
        }
        if parent.kind != FileType::Directory {
            return Err(Miss::Status(nt::STATUS_NOT_A_DIRECTORY));
        }
        Ok((parent, Some(name)))
    }

    fn xattr(&self, ino: Ino, name: &[u8]) -> WinResult<Option<Vec<u8>>> {
        match self.engine.getxattr(ino, name) {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoData) => Ok(None),
            Err(e) => Err(st(e)),
        }
    }

    /// The Windows view of a node.
    fn info(&self, a: &Attr) -> FileInfo {
        let dir = a.kind == FileType::Directory;
        let mut attributes = a.flags & (attr::SETTABLE | attr::REPARSE_POINT);
        if dir {
            attributes |= attr::DIRECTORY;
        }
        let reparse_tag = if attributes & attr::REPARSE_POINT != 0 {
            match self.engine.getxattr(a.ino, REPARSE_XATTR) {
                Ok(d) => wire::reparse_tag(&d).unwrap_or(0),
                Err(_) => 0,
            }
        } else {
            0
        };
        let (file_size, allocation_size) =
            if dir { (0, 0) } else { (a.size, a.size.max(a.blocks * 512).next_multiple_of(ALLOCATION_UNIT)) };
        FileInfo {
            file_attributes: attributes,
            reparse_tag,
            allocation_size,
            file_size,
            creation_time: wire::filetime(a.crtime),
            last_access_time: wire::filetime(a.atime),
            last_write_time: wire::filetime(a.mtime),
            change_time: wire::filetime(a.ctime),
            index_number: a.ino,
            hard_links: 0,
            ea_size: 0,
        }
    }

    fn info_of(&self, ino: Ino) -> WinResult<FileInfo> {
        Ok(self.info(&self.engine.getattr(ino).map_err(st)?))
    }

    fn is_empty_dir(&self, ino: Ino) -> WinResult<bool> {
        let mut empty = true;
        // Offsets 0 and 1 are `.` and `..`.
        self.engine
            .readdir(ino, 2, |_| {
                empty = false;
                false
            })
            .map_err(st)?;
        Ok(empty)
    }

    // ------------------------------------------------------------ volume

    /// `GetVolumeInfo`: the memory limit and what is left of it.
    /// Free space is counted in whole sectors: a file of that size fits.
    pub(crate) fn volume_info(&self) -> VolumeInfo {
        let s = self.engine.stats().pool;
        let ss = self.engine.config().sector_size as u64;
        let label = self.label.lock().unwrap_or_else(|p| p.into_inner()).clone();
        VolumeInfo { total_size: s.limit, free_size: s.limit.saturating_sub(s.used) / ss * ss, label }
    }

    /// `SetVolumeLabel` (at most [`LABEL_MAX`] units are kept, as NTFS).
    pub(crate) fn set_volume_label(&self, label: &[u16]) -> VolumeInfo {
        let end = label.iter().position(|&c| c == 0).unwrap_or(label.len());
        *self.label.lock().unwrap_or_else(|p| p.into_inner()) = label[..end.min(LABEL_MAX)].to_vec();
        self.volume_info()
    }

    // ------------------------------------------------------------ open

    /// `GetSecurityByName`: attributes and security descriptor of `path`,
    /// which WinFsp uses for its access checks before opening or creating.
    ///
    /// # Errors
    /// Path errors (module doc).
    pub(crate) fn get_security_by_name(&self, path: &[u16], want_sd: bool) -> WinResult<ByName> {
        let a = match self.resolve(path) {
            Ok(a) => a,
            Err(Miss::Reparse) => return Ok(ByName::ReparseInPath),
            Err(Miss::Status(s)) => return Err(s),
        };
        let security = if want_sd { self.xattr(a.ino, SD_XATTR)? } else { None };
        Ok(ByName::Found { attributes: self.info(&a).file_attributes, security })
    }

    /// `Open` an existing file or directory.
    ///
    /// # Errors
    /// Path errors; `STATUS_NOT_A_DIRECTORY` / `STATUS_FILE_IS_A_DIRECTORY`
    /// against `FILE_DIRECTORY_FILE` / `FILE_NON_DIRECTORY_FILE`.
    pub(crate) fn open(&self, path: &[u16], create_options: u32) -> WinResult<Opened> {
        let a = self.resolve(path).map_err(Miss::status)?;
        let dir = a.kind == FileType::Directory;
        if create_options & co::FILE_DIRECTORY_FILE != 0 && !dir {
            return Err(nt::STATUS_NOT_A_DIRECTORY);
        }
        if create_options & co::FILE_NON_DIRECTORY_FILE != 0 && dir {
            return Err(nt::STATUS_FILE_IS_A_DIRECTORY);
        }
        let a = self.engine.open(a.ino).map_err(|_| nt::STATUS_OBJECT_NAME_NOT_FOUND)?;
        Ok(Opened { handle: Handle { ino: a.ino, dir }, info: self.info(&a) })
    }

    /// `Create` a file (or a directory with `FILE_DIRECTORY_FILE`) with the
    /// given attributes, security descriptor, allocation size and, if
    /// `reparse` is set, reparse data. All or nothing: if any step fails the
    /// new name is removed again.
    ///
    /// # Errors
    /// `STATUS_OBJECT_NAME_COLLISION`, path errors, `STATUS_DISK_FULL` (inode
    /// or memory limit), descriptor and reparse-data errors.
    #[allow(clippy::too_many_arguments)] // WinFsp's CreateEx, one for one
    pub(crate) fn create(
        &self,
        path: &[u16],
        create_options: u32,
        attributes: u32,
        sd: Option<&[u8]>,
        allocation_size: u64,
        extra: Option<&[u8]>,
        extra_is_reparse: bool,
    ) -> WinResult<Opened> {
        let (parent, name) = self.resolve_parent(path).map_err(Miss::status)?;
        let name = name.ok_or(nt::STATUS_OBJECT_NAME_COLLISION)?;
        if let Some(sd) = sd {
            Self::check_sd(sd)?;
        }
        let reparse = match (extra, extra_is_reparse) {
            (Some(d), true) => {
                wire::reparse_tag(d)?;
                Some(d)
            }
            // Extended attributes: the volume does not offer them.
            (Some(d), false) if !d.is_empty() => return Err(nt::STATUS_EAS_NOT_SUPPORTED),
            _ => None,
        };
        let dir = create_options & co::FILE_DIRECTORY_FILE != 0;
        let made = if dir {
            self.engine.mkdir(parent.ino, &name, 0o777, 0, 0)
        } else {
            self.engine.create(parent.ino, &name, 0o666, 0, 0)
        };
        let a = made.map_err(st)?;
        let finish = || -> WinResult<Attr> {
            let mut flags = attributes & attr::SETTABLE;
            if !dir {
                flags |= attr::ARCHIVE;
            }
            if let Some(r) = reparse {
                self.engine.setxattr(a.ino, REPARSE_XATTR, r, 0).map_err(st)?;
                flags |= attr::REPARSE_POINT;
            }
            if let Some(sd) = sd {
                self.engine.setxattr(a.ino, SD_XATTR, sd, 0).map_err(st)?;
            }
            if flags != 0 {
                let set = SetAttr { flags: Some(flags), ctime: Some(a.ctime), ..SetAttr::default() };
                self.engine.setattr(a.ino, &set).map_err(st)?;
            }
            if !dir && allocation_size > 0 {
                self.engine.fallocate(a.ino, FALLOC_KEEP_SIZE, 0, allocation_size).map_err(st)?;
            }
            self.engine.open(a.ino).map_err(st)
        };
        let result = finish();
        if result.is_err() {
            let _ = if dir { self.engine.rmdir(parent.ino, &name) } else { self.engine.unlink(parent.ino, &name) };
        }
        self.engine.forget(a.ino, 1);
        let a = result?;
        Ok(Opened { handle: Handle { ino: a.ino, dir }, info: self.info(&a) })
    }

    /// `Overwrite` (`FILE_OVERWRITE`, `FILE_SUPERSEDE`): empty the file, set
    /// (or add to) its attributes, reserve `allocation_size`.
    ///
    /// # Errors
    /// `STATUS_FILE_IS_A_DIRECTORY`; `STATUS_DISK_FULL` for the allocation
    /// (the file is empty by then, as the caller asked).
    pub(crate) fn overwrite(
        &self,
        h: &Handle,
        attributes: u32,
        replace_attributes: bool,
        allocation_size: u64,
    ) -> WinResult<FileInfo> {
        if h.dir {
            return Err(nt::STATUS_FILE_IS_A_DIRECTORY);
        }
        let cur = self.engine.getattr(h.ino).map_err(st)?;
        let given = attributes & attr::SETTABLE;
        let kept = cur.flags & attr::REPARSE_POINT;
        let flags = if replace_attributes { given } else { cur.flags | given } | attr::ARCHIVE | kept;
        let set = SetAttr {
            size: Some(0),
            flags: Some(flags),
            atime: Some(SetTime::Now),
            mtime: Some(SetTime::Now),
            ..SetAttr::default()
        };
        self.engine.setattr(h.ino, &set).map_err(st)?;
        if allocation_size > 0 {
            self.engine.fallocate(h.ino, FALLOC_KEEP_SIZE, 0, allocation_size).map_err(st)?;
        }
        self.info_of(h.ino)
    }

    /// `Cleanup`: the last handle of a file object went away. `flags` are
    /// WinFsp's `FspCleanup*`: remove the name (delete pending), give back
    /// the allocation past the end, set the archive bit and the times.
    pub(crate) fn cleanup(&self, h: &Handle, path: Option<&[u16]>, flags: u32) {
        if flags & cf::DELETE != 0 {
            if let Some(path) = path {
                self.remove(h, path);
            }
            return;
        }
        let Ok(cur) = self.engine.getattr(h.ino) else { return };
        let mut set = SetAttr { ctime: Some(cur.ctime), ..SetAttr::default() };
        let mut any = false;
        if flags & cf::SET_ARCHIVE_BIT != 0 && !h.dir {
            set.flags = Some(cur.flags | attr::ARCHIVE);
            any = true;
        }
        if flags & cf::SET_ALLOCATION_SIZE != 0 && !h.dir {
            // The same size: the engine drops the sectors past the end.
            set.size = Some(cur.size);
            set.mtime = Some(SetTime::At(cur.mtime));
            any = true;
        }
        if flags & cf::SET_LAST_ACCESS_TIME != 0 {
            set.atime = Some(SetTime::Now);
            any = true;
        }
        if flags & cf::SET_LAST_WRITE_TIME != 0 {
            set.mtime = Some(SetTime::Now);
            any = true;
        }
        if flags & cf::SET_CHANGE_TIME != 0 {
            set.ctime = None; // now
            any = true;
        }
        if any {
            let _ = self.engine.setattr(h.ino, &set);
        }
    }

    /// Removes the name `path` if it still names `h` (a directory only if
    /// empty: one may have gained entries since `set_delete`).
    fn remove(&self, h: &Handle, path: &[u16]) {
        let Ok((parent, Some(name))) = self.resolve_parent(path) else { return };
        let Ok(a) = self.engine.lookup(parent.ino, &name) else { return };
        self.engine.forget(a.ino, 1);
        if a.ino != h.ino {
            return;
        }
        let _ = if h.dir { self.engine.rmdir(parent.ino, &name) } else { self.engine.unlink(parent.ino, &name) };
    }

    /// `Close`: the handle is gone; an unlinked file is freed with its last one.
    pub(crate) fn close(&self, h: Handle) {
        self.engine.release(h.ino);
    }

    // ------------------------------------------------------------ data

    /// `Read` at `off`.
    ///
    /// # Errors
    /// `STATUS_END_OF_FILE` at or past the end.
    pub(crate) fn read(&self, h: &Handle, off: u64, buf: &mut [u8]) -> WinResult<u32> {
        let n = self.engine.read(h.ino, off, buf).map_err(st)?;
        if n == 0 && !buf.is_empty() {
            return Err(nt::STATUS_END_OF_FILE);
        }
        Ok(n as u32)
    }

    /// `Write` at `off`, or at the end (`write_to_eof`); a paging write
    /// (`constrained_io`) never extends the file.
    ///
    /// # Errors
    /// `STATUS_DISK_FULL` at the limit (the file is unchanged).
    pub(crate) fn write(
        &self,
        h: &Handle,
        data: &[u8],
        off: u64,
        write_to_eof: bool,
        constrained_io: bool,
    ) -> WinResult<(u32, FileInfo)> {
        let cur = self.engine.getattr(h.ino).map_err(st)?;
        let n = if constrained_io {
            let size = cur.size;
            if off >= size {
                0
            } else {
                let n = (size - off).min(data.len() as u64) as usize;
                self.engine.write_whole(h.ino, off, &data[..n]).map_err(st)?;
                n
            }
        } else if write_to_eof {
            self.engine.append(h.ino, data).map_err(st)?;
            data.len()
        } else {
            self.engine.write_whole(h.ino, off, data).map_err(st)?;
            data.len()
        };
        self.keep_times(&cur)?;
        Ok((n as u32, self.info_of(h.ino)?))
    }

    /// Puts back the write and change times a data call changed: under
    /// WinFsp they are set by `cleanup` (`FspCleanupSetLastWriteTime`, unless
    /// the handle set them itself), as memfs does; the lazy writer's
    /// writes in particular must not move a time a program set.
    fn keep_times(&self, before: &Attr) -> WinResult<()> {
        let a = self.engine.getattr(before.ino).map_err(st)?;
        if (a.mtime, a.ctime) != (before.mtime, before.ctime) {
            let set =
                SetAttr { mtime: Some(SetTime::At(before.mtime)), ctime: Some(before.ctime), ..SetAttr::default() };
            self.engine.setattr(before.ino, &set).map_err(st)?;
        }
        Ok(())
    }

    /// `Flush`: nothing to write back (every write is stored when it returns).
    pub(crate) fn flush(&self, h: Option<&Handle>) -> WinResult<Option<FileInfo>> {
        h.map(|h| self.info_of(h.ino)).transpose()
    }

    /// `GetFileInfo`.
    pub(crate) fn get_file_info(&self, h: &Handle) -> WinResult<FileInfo> {
        self.info_of(h.ino)
    }

    /// `SetBasicInfo`: attributes (unless `INVALID_FILE_ATTRIBUTES`) and
    /// the times that are not 0 (WinFsp's "leave it").
    pub(crate) fn set_basic_info(
        &self,
        h: &Handle,
        attributes: u32,
        creation: u64,
        access: u64,
        write: u64,
        change: u64,
    ) -> WinResult<FileInfo> {
        let cur = self.engine.getattr(h.ino).map_err(st)?;
        // 0 leaves a time as it is; -1 and -2 are the "stop / resume updating
        // it for this handle" requests of FILE_BASIC_INFORMATION, which the
        // FSD keeps for itself.
        let given = |t: u64| (t != 0 && t < u64::MAX - 1).then(|| wire::from_filetime(t));
        let set = SetAttr {
            flags: (attributes != attr::INVALID)
                .then_some((attributes & attr::SETTABLE) | (cur.flags & attr::REPARSE_POINT)),
            crtime: given(creation),
            atime: given(access).map(SetTime::At),
            mtime: given(write).map(SetTime::At),
            ctime: given(change),
            ..SetAttr::default()
        };
        let a = self.engine.setattr(h.ino, &set).map_err(st)?;
        Ok(self.info(&a))
    }

    /// `SetFileSize`: the end of file, or (`set_allocation_size`) the
    /// allocation. Growing the end of file reserves the new range's memory;
    /// an allocation below the size truncates, above it reserves.
    ///
    /// # Errors
    /// `STATUS_DISK_FULL` (nothing changed), `STATUS_FILE_TOO_LARGE`.
    pub(crate) fn set_file_size(&self, h: &Handle, new: u64, set_allocation_size: bool) -> WinResult<FileInfo> {
        if h.dir {
            return Err(nt::STATUS_INVALID_PARAMETER);
        }
        let cur = self.engine.getattr(h.ino).map_err(st)?;
        let held = cur.blocks * 512;
        if set_allocation_size {
            if new < cur.size {
                self.engine.setattr(h.ino, &SetAttr { size: Some(new), ..SetAttr::default() }).map_err(st)?;
            } else if new > held {
                self.engine.fallocate(h.ino, FALLOC_KEEP_SIZE, 0, new).map_err(st)?;
            } else if new < held {
                // Give back what lies past the end, then keep `new` reserved.
                let keep = SetAttr {
                    size: Some(cur.size),
                    mtime: Some(SetTime::At(cur.mtime)),
                    ctime: Some(cur.ctime),
                    ..SetAttr::default()
                };
                self.engine.setattr(h.ino, &keep).map_err(st)?;
                if new > cur.size {
                    self.engine.fallocate(h.ino, FALLOC_KEEP_SIZE, 0, new).map_err(st)?;
                }
            }
        } else if new > cur.size {
            // Allocate and extend (zeros): the memory for the new range is
            // reserved now, before the cache manager acknowledges any write
            // into it.
            self.engine.fallocate(h.ino, 0, cur.size, new - cur.size).map_err(st)?;
        } else if new < cur.size {
            self.engine.setattr(h.ino, &SetAttr { size: Some(new), ..SetAttr::default() }).map_err(st)?;
        }
        self.keep_times(&cur)?;
        self.info_of(h.ino)
    }

    /// `SetDelete`: may the file be deleted when its handles close? WinFsp
    /// keeps the flag; only a non-empty directory may not.
    ///
    /// # Errors
    /// `STATUS_DIRECTORY_NOT_EMPTY`.
    pub(crate) fn set_delete(&self, h: &Handle, delete: bool) -> WinResult<()> {
        if delete && h.dir && !self.is_empty_dir(h.ino)? {
            return Err(nt::STATUS_DIRECTORY_NOT_EMPTY);
        }
        Ok(())
    }

    /// `Rename` `path` (the file of `h`) to `new_path`, replacing an existing
    /// file if `replace` (never a directory, as on NTFS).
    ///
    /// # Errors
    /// `STATUS_OBJECT_NAME_COLLISION` (target exists, no `replace`),
    /// `STATUS_ACCESS_DENIED` (target is a directory), path errors,
    /// `STATUS_INVALID_PARAMETER` (a directory moved below itself).
    pub(crate) fn rename(&self, h: &Handle, path: &[u16], new_path: &[u16], replace: bool) -> WinResult<()> {
        let (p1, n1) = self.resolve_parent(path).map_err(Miss::status)?;
        let (p2, n2) = self.resolve_parent(new_path).map_err(Miss::status)?;
        let (Some(n1), Some(n2)) = (n1, n2) else { return Err(nt::STATUS_ACCESS_DENIED) };
        let mut flags = if replace { 0 } else { rename_flags::NOREPLACE };
        match self.engine.lookup(p2.ino, &n2) {
            Ok(t) => {
                self.engine.forget(t.ino, 1);
                if t.ino == h.ino {
                    // The same file (a case-only rename): nothing is replaced.
                    flags = 0;
                } else {
                    if !replace {
                        return Err(nt::STATUS_OBJECT_NAME_COLLISION);
                    }
                    if t.kind == FileType::Directory {
                        return Err(nt::STATUS_ACCESS_DENIED);
                    }
                }
            }
            Err(Error::NotFound) => {}
            Err(e) => return Err(st(e)),
        }
        self.engine.rename(p1.ino, &n1, p2.ino, &n2, flags).map_err(|e| match e {
            Error::IsDir | Error::NotDir => nt::STATUS_ACCESS_DENIED,
            Error::NotFound => nt::STATUS_OBJECT_NAME_NOT_FOUND,
            e => st(e),
        })
    }

    // ------------------------------------------------------------ security

    /// `GetSecurity`: the descriptor of `h` (empty: none).
    pub(crate) fn get_security(&self, h: &Handle) -> WinResult<Vec<u8>> {
        Ok(self.xattr(h.ino, SD_XATTR)?.unwrap_or_default())
    }

    /// `SetSecurity`, second half: store `sd`, which the glue computed from
    /// [`WinFs::get_security`] and the caller's change with WinFsp's
    /// `FspSetSecurityDescriptor`.
    ///
    /// # Errors
    /// `STATUS_INVALID_SECURITY_DESCR`, `STATUS_INSUFFICIENT_RESOURCES` (over [`SD_MAX`]).
    pub(crate) fn store_security(&self, h: &Handle, sd: &[u8]) -> WinResult<()> {
        Self::check_sd(sd)?;
        self.engine.setxattr(h.ino, SD_XATTR, sd, 0).map_err(st)
    }

    // ------------------------------------------------------------ dirs

    /// `ReadDirectory`: entries of `h` after `marker` (the `next_offset` of
    /// the last entry WinFsp received; `None` from the start) into `buf`.
    /// The root has no `.` and `..` (as NTFS).
    ///
    /// # Errors
    /// `STATUS_NOT_A_DIRECTORY`.
    pub(crate) fn read_directory(&self, h: &Handle, marker: Option<u64>, buf: &mut [u8]) -> WinResult<u32> {
        if !h.dir {
            return Err(nt::STATUS_NOT_A_DIRECTORY);
        }
        let me = self.engine.getattr(h.ino).map_err(st)?;
        let mut out = wire::DirBuf::new(buf);
        let mut full = false;
        let mut name16 = Vec::with_capacity(64);
        self.engine
            .readdir(h.ino, marker.unwrap_or(0), |e| {
                let dots = e.name == b"." || e.name == b"..";
                if dots && h.ino == ROOT {
                    return true;
                }
                let a = if e.name == b"." { Ok(me) } else { self.engine.getattr(e.ino) };
                // An entry removed while we list is skipped.
                let Ok(a) = a else { return true };
                name16.clear();
                name16.extend(String::from_utf8_lossy(e.name).encode_utf16());
                if !out.push(&name16, &self.info(&a), e.next) {
                    full = true;
                    return false;
                }
                true
            })
            .map_err(st)?;
        if !full {
            out.finish();
        }
        Ok(out.len() as u32)
    }

    // ------------------------------------------------------------ reparse

    fn reparse_data(&self, a: &Attr) -> WinResult<Vec<u8>> {
        if a.flags & attr::REPARSE_POINT == 0 {
            return Err(nt::STATUS_NOT_A_REPARSE_POINT);
        }
        self.xattr(a.ino, REPARSE_XATTR)?.ok_or(nt::STATUS_NOT_A_REPARSE_POINT)
    }

    fn copy_out(data: &[u8], buf: &mut [u8]) -> WinResult<usize> {
        let dst = buf.get_mut(..data.len()).ok_or(nt::STATUS_BUFFER_TOO_SMALL)?;
        dst.copy_from_slice(data);
        Ok(data.len())
    }

    /// `GetReparsePointByName` (WinFsp calls it to resolve reparse points
    /// in paths): the reparse data of `path` into `buf`.
    ///
    /// # Errors
    /// `STATUS_NOT_A_REPARSE_POINT`, `STATUS_BUFFER_TOO_SMALL`, path errors.
    pub(crate) fn get_reparse_point_by_name(&self, path: &[u16], buf: &mut [u8]) -> WinResult<usize> {
        let a = self.resolve(path).map_err(Miss::status)?;
        Self::copy_out(&self.reparse_data(&a)?, buf)
    }

    /// `GetReparsePoint` (`FSCTL_GET_REPARSE_POINT`).
    ///
    /// # Errors
    /// As [`WinFs::get_reparse_point_by_name`].
    pub(crate) fn get_reparse_point(&self, h: &Handle, buf: &mut [u8]) -> WinResult<usize> {
        let a = self.engine.getattr(h.ino).map_err(st)?;
        Self::copy_out(&self.reparse_data(&a)?, buf)
    }

    /// `SetReparsePoint` (`FSCTL_SET_REPARSE_POINT`): `mklink` creates the
    /// file or directory, then sets this.
    ///
    /// # Errors
    /// `STATUS_IO_REPARSE_DATA_INVALID`, `STATUS_DIRECTORY_NOT_EMPTY`,
    /// `STATUS_IO_REPARSE_TAG_MISMATCH` / `STATUS_REPARSE_ATTRIBUTE_CONFLICT`
    /// (replacing another kind of reparse point).
    pub(crate) fn set_reparse_point(&self, h: &Handle, data: &[u8]) -> WinResult<()> {
        wire::reparse_tag(data)?;
        if h.dir && !self.is_empty_dir(h.ino)? {
            return Err(nt::STATUS_DIRECTORY_NOT_EMPTY);
        }
        let a = self.engine.getattr(h.ino).map_err(st)?;
        if let Ok(cur) = self.reparse_data(&a) {
            wire::can_replace_reparse(&cur, data)?;
        }
        self.engine.setxattr(h.ino, REPARSE_XATTR, data, 0).map_err(st)?;
        let set = SetAttr { flags: Some(a.flags | attr::REPARSE_POINT), ..SetAttr::default() };
        self.engine.setattr(h.ino, &set).map_err(st)?;
        Ok(())
    }

    /// `DeleteReparsePoint` (`FSCTL_DELETE_REPARSE_POINT`): `data` names the
    /// tag (and GUID) to remove.
    ///
    /// # Errors
    /// `STATUS_NOT_A_REPARSE_POINT`, tag and GUID mismatches.
    pub(crate) fn delete_reparse_point(&self, h: &Handle, data: &[u8]) -> WinResult<()> {
        let a = self.engine.getattr(h.ino).map_err(st)?;
        let cur = self.reparse_data(&a)?;
        wire::can_replace_reparse(&cur, data)?;
        let set = SetAttr { flags: Some(a.flags & !attr::REPARSE_POINT), ..SetAttr::default() };
        self.engine.setattr(h.ino, &set).map_err(st)?;
        self.engine.removexattr(h.ino, REPARSE_XATTR).map_err(st)
    }

    // ------------------------------------------------------------ control

    /// `Control` (`DeviceIoControl` on a handle of the volume):
    /// [`IOCTL_SECTORFS_STATS`] answers the stats JSON of `sectorfs stats`.
    ///
    /// # Errors
    /// `STATUS_INVALID_DEVICE_REQUEST` for other codes,
    /// `STATUS_BUFFER_TOO_SMALL`.
    pub(crate) fn control(&self, code: u32, output: &mut [u8]) -> WinResult<u32> {
        if code != IOCTL_SECTORFS_STATS {
            return Err(nt::STATUS_INVALID_DEVICE_REQUEST);
        }
        let json = crate::stats::Report::new(&self.engine, self.pid, Some(&self.telemetry.trends())).to_json();
        Ok(Self::copy_out(json.as_bytes(), output)? as u32)
    }
}
