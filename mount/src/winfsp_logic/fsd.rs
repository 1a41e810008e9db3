//! A model of WinFsp's kernel driver (FSD) and user-mode DLL, enough to turn
//! the NT calls a Windows program makes (`NtCreateFile` with a disposition,
//! `NtWriteFile`, `NtSetInformationFile`, `NtQueryDirectoryFile`, closing a
//! handle, ...) into the calls a WinFsp file system receives, in the order
//! and with the flags WinFsp sends them. The rules are WinFsp's own:
//! * create dispositions and access checks: `src/dll/fsop.c`
//!   (`FspFileSystemOpCreate*`) and `src/dll/security.c` (`FspAccessCheckEx`:
//!   directory / non-directory / read-only checks from `GetSecurityByName`);
//! * delete-pending and cleanup flags: `src/sys/file.c` (`FspFileNodeCleanup`)
//!   and `src/sys/cleanup.c` (archive bit, times, `TruncateOnClose`);
//! * disposition: `src/dll/fsop.c` (read-only files cannot be deleted);
//! * cached writes that extend a file set the end of file first
//!   (`src/sys/write.c`, `FspFsvolWriteCached`); the lazy writer later
//!   writes pages inside the size (`ConstrainedIo`);
//! * directory listings with `DirectoryMarkerAsNextOffset` (`src/sys/dirctl.c`),
//!   the pattern matched by the FSD.
//!
//! Sharing modes, oplocks and change notifications are the FSD's business
//! alone and are not modelled.

use std::collections::{BTreeMap, HashMap};

use super::nt::{self, attr, cleanup as cf, create as co, NtStatus};
use super::tests::w;
use super::wire::decode_dir;
use super::{ByName, Handle, WinFs, WinResult};
use engine::Ino;

/// `NtCreateFile`'s disposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disp {
    Supersede,
    Open,
    Create,
    OpenIf,
    Overwrite,
    OverwriteIf,
}

impl Disp {
    fn code(self) -> u32 {
        match self {
            Disp::Supersede => co::FILE_SUPERSEDE,
            Disp::Open => co::FILE_OPEN,
            Disp::Create => co::FILE_CREATE,
            Disp::OpenIf => co::FILE_OPEN_IF,
            Disp::Overwrite => co::FILE_OVERWRITE,
            Disp::OverwriteIf => co::FILE_OVERWRITE_IF,
        }
    }
}

/// What a program asks `NtCreateFile` for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Req {
    pub(super) disp: Disp,
    /// `FILE_DIRECTORY_FILE`, `FILE_NON_DIRECTORY_FILE`, `FILE_DELETE_ON_CLOSE`, ...
    pub(super) options: u32,
    pub(super) attributes: u32,
    pub(super) allocation: u64,
    /// Asks for write access (read-only files refuse it).
    pub(super) write: bool,
    /// Asks for `FILE_APPEND_DATA` only: every write goes to the end.
    pub(super) append: bool,
}

impl Req {
    pub(super) fn new(disp: Disp) -> Req {
        Req { disp, options: 0, attributes: 0, allocation: 0, write: false, append: false }
    }
    pub(super) fn dir(mut self) -> Req {
        self.options |= co::FILE_DIRECTORY_FILE;
        self
    }
    pub(super) fn file(mut self) -> Req {
        self.options |= co::FILE_NON_DIRECTORY_FILE;
        self
    }
    pub(super) fn write(mut self) -> Req {
        self.write = true;
        self
    }
    pub(super) fn delete_on_close(mut self) -> Req {
        self.options |= co::FILE_DELETE_ON_CLOSE;
        self
    }
    pub(super) fn reparse(mut self) -> Req {
        self.options |= co::FILE_OPEN_REPARSE_POINT;
        self
    }
    pub(super) fn attrs(mut self, a: u32) -> Req {
        self.attributes = a;
        self
    }
    pub(super) fn alloc(mut self, n: u64) -> Req {
        self.allocation = n;
        self
    }
    pub(super) fn append(mut self) -> Req {
        self.append = true;
        self.write = true;
        self
    }
}

/// The FSD's per-file state (`FSP_FILE_NODE`).
#[derive(Default)]
struct Node {
    path: Vec<u16>,
    handles: u32,
    delete_pending: bool,
    posix_deleted: bool,
    truncate_on_close: bool,
    /// Dirty pages in the Windows cache: offset -> bytes.
    dirty: BTreeMap<u64, Vec<u8>>,
    size: u64,
}

/// The FSD's per-handle state (`FSP_FILE_DESC` and the file object).
struct Desc {
    h: Handle,
    delete_on_close: bool,
    posix_delete: bool,
    append: bool,
    modified: bool,
    did_set_attributes: bool,
    did_set_write_time: bool,
    did_set_change_time: bool,
    did_set_access_time: bool,
    did_set_metadata: bool,
}

/// A handle a program holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct H(u64);

/// One volume as programs see it through WinFsp.
pub(super) struct Fsd {
    pub(super) fs: WinFs,
    /// `FileInfoTimeout = INFINITE`: the Windows cache manager is on.
    cached: bool,
    nodes: HashMap<Ino, Node>,
    descs: HashMap<H, Desc>,
    next: u64,
    /// Every call made into the file system, for the sequence tests to check.
    pub(super) calls: Vec<String>,
}

/// The Windows page size, the unit of the lazy writer.
const PAGE: u64 = 4096;

fn parent_of(path: &[u16]) -> Vec<u16> {
    match path.iter().rposition(|&c| c == u16::from(b'\\')) {
        Some(0) | None => w("\\"),
        Some(i) => path[..i].to_vec(),
    }
}

/// `FsRtlIsNameInExpression` for `*` and `?` (what `dir` and `FindFirstFile` send).
fn matches(pattern: &str, name: &str, ci: bool) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = if ci {
        (pattern.to_uppercase().chars().collect(), name.to_uppercase().chars().collect())
    } else {
        (pattern.chars().collect(), name.chars().collect())
    };
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

impl Fsd {
    pub(super) fn new(fs: WinFs, cached: bool) -> Fsd {
        Fsd { fs, cached, nodes: HashMap::new(), descs: HashMap::new(), next: 1, calls: Vec::new() }
    }

    fn log(&mut self, s: String) {
        self.calls.push(s);
    }

    fn ci(&self) -> bool {
        self.fs.engine.config().case_insensitive
    }

    /// `FspAccessCheckEx` for an existing file (`CheckParentOrMain` false):
    /// the attributes `GetSecurityByName` returns decide.
    fn access_check(&mut self, path: &[u16], r: &Req) -> WinResult<u32> {
        self.log(format!("GetSecurityByName({})", String::from_utf16_lossy(path)));
        match self.fs.get_security_by_name(path, true)? {
            ByName::ReparseInPath => Err(nt::STATUS_REPARSE),
            ByName::Found { attributes, .. } => {
                if attributes & attr::REPARSE_POINT != 0 && r.options & co::FILE_OPEN_REPARSE_POINT == 0 {
                    return Err(nt::STATUS_REPARSE);
                }
                if r.options & co::FILE_DIRECTORY_FILE != 0 && attributes & attr::DIRECTORY == 0 {
                    return Err(nt::STATUS_NOT_A_DIRECTORY);
                }
                if r.options & co::FILE_NON_DIRECTORY_FILE != 0 && attributes & attr::DIRECTORY != 0 {
                    return Err(nt::STATUS_FILE_IS_A_DIRECTORY);
                }
                if attributes & (attr::READONLY | attr::DIRECTORY) == attr::READONLY && r.write {
                    return Err(nt::STATUS_ACCESS_DENIED);
                }
                Ok(attributes)
            }
        }
    }

    /// The parent check of a create, and the descriptor WinFsp computes for
    /// the new file (here: the parent's, as inheritance would give).
    fn parent_check(&mut self, path: &[u16]) -> WinResult<Option<Vec<u8>>> {
        let parent = parent_of(path);
        self.log(format!("GetSecurityByName({})", String::from_utf16_lossy(&parent)));
        match self.fs.get_security_by_name(&parent, true) {
            Ok(ByName::Found { attributes, security }) => {
                if attributes & attr::REPARSE_POINT != 0 {
                    return Err(nt::STATUS_REPARSE);
                }
                if attributes & attr::DIRECTORY == 0 {
                    return Err(nt::STATUS_NOT_A_DIRECTORY);
                }
                Ok(security)
            }
            Ok(ByName::ReparseInPath) => Err(nt::STATUS_REPARSE),
            // The parent itself missing: the path is not found.
            Err(s) if s == nt::STATUS_OBJECT_NAME_NOT_FOUND => Err(nt::STATUS_OBJECT_PATH_NOT_FOUND),
            Err(s) => Err(s),
        }
    }

    fn do_create(&mut self, path: &[u16], r: &Req) -> WinResult<Handle> {
        let sd = self.parent_check(path)?;
        self.log(format!("Create({}, alloc {})", String::from_utf16_lossy(path), r.allocation));
        let o = self.fs.create(
            path,
            r.disp.code() << 24 | r.options,
            r.attributes,
            sd.as_deref(),
            r.allocation,
            None,
            false,
        )?;
        Ok(o.handle)
    }

    fn do_open(&mut self, path: &[u16], r: &Req) -> WinResult<Handle> {
        self.access_check(path, r)?;
        self.log(format!("Open({})", String::from_utf16_lossy(path)));
        Ok(self.fs.open(path, r.disp.code() << 24 | r.options)?.handle)
    }

    /// `NtCreateFile`.
    pub(super) fn create_file(&mut self, path: &str, r: Req) -> WinResult<H> {
        let path = w(path);
        let root = path == w("\\");
        if root && !matches!(r.disp, Disp::Open | Disp::OpenIf) {
            return Err(nt::STATUS_ACCESS_DENIED);
        }
        if root && r.options & co::FILE_DELETE_ON_CLOSE != 0 {
            return Err(nt::STATUS_CANNOT_DELETE);
        }
        let (h, overwrite) = match r.disp {
            Disp::Create => (self.do_create(&path, &r)?, false),
            Disp::Open => (self.do_open(&path, &r)?, false),
            Disp::OpenIf => match self.do_open(&path, &r) {
                Err(s) if s == nt::STATUS_OBJECT_NAME_NOT_FOUND => (self.do_create(&path, &r)?, false),
                other => (other?, false),
            },
            Disp::Overwrite => (self.do_open(&path, &r)?, true),
            Disp::OverwriteIf | Disp::Supersede => match self.do_open(&path, &r) {
                Err(s) if s == nt::STATUS_OBJECT_NAME_NOT_FOUND => (self.do_create(&path, &r)?, false),
                other => (other?, true),
            },
        };
        let ino = h.ino;
        if self.nodes.get(&ino).is_some_and(|n| n.delete_pending) {
            // FspFileNodeOpen refuses a new handle to a file being deleted.
            self.fs.close(h);
            return Err(nt::STATUS_DELETE_PENDING);
        }
        if overwrite {
            // Overwriting needs the hidden and system attributes the file has (create.c).
            let info = self.fs.get_file_info(&h)?;
            let given = r.attributes;
            if (info.file_attributes & attr::HIDDEN != 0 && given & attr::HIDDEN == 0)
                || (info.file_attributes & attr::SYSTEM != 0 && given & attr::SYSTEM == 0)
            {
                self.fs.close(h);
                return Err(nt::STATUS_ACCESS_DENIED);
            }
            self.log(format!("Overwrite(alloc {})", r.allocation));
            if let Err(s) = self.fs.overwrite(&h, r.attributes, r.disp == Disp::Supersede, r.allocation) {
                self.fs.close(h);
                return Err(s);
            }
        }
        let size = self.fs.get_file_info(&h)?.file_size;
        let node = self.nodes.entry(ino).or_default();
        node.path = path;
        node.handles += 1;
        node.size = size;
        if r.allocation > 0 {
            node.truncate_on_close = true;
        }
        let id = H(self.next);
        self.next += 1;
        self.descs.insert(
            id,
            Desc {
                h,
                delete_on_close: r.options & co::FILE_DELETE_ON_CLOSE != 0,
                posix_delete: false,
                append: r.append,
                modified: overwrite,
                did_set_attributes: false,
                did_set_write_time: false,
                did_set_change_time: false,
                did_set_access_time: false,
                did_set_metadata: false,
            },
        );
        Ok(id)
    }

    fn desc(&self, id: H) -> &Desc {
        &self.descs[&id]
    }

    fn ino(&self, id: H) -> Ino {
        self.desc(id).h.ino
    }

    /// The lazy writer: dirty pages of `ino` go to the file system as paging
    /// writes inside the size. Any failure is a write the program was told
    /// had succeeded: the tests require there are none.
    fn flush_cache(&mut self, ino: Ino, via: H) -> WinResult<()> {
        let dirty = std::mem::take(&mut self.nodes.get_mut(&ino).expect("open node").dirty);
        for (off, data) in dirty {
            self.log(format!("Write(paging, {off}, {})", data.len()));
            let h = &self.descs[&via].h;
            if let Err(s) = self.fs.write(h, &data, off, false, true) {
                panic!("the lazy writer was refused a page at {off}: {}", status(s));
            }
        }
        Ok(())
    }

    /// `CloseHandle`: cleanup (with WinFsp's flags), then close.
    pub(super) fn close(&mut self, id: H) {
        let ino = self.ino(id);
        let _ = self.flush_cache(ino, id);
        let d = self.descs.remove(&id).expect("open handle");
        let n = self.nodes.get_mut(&ino).expect("open node");
        if d.delete_on_close {
            n.delete_pending = true;
        }
        let set_alloc = !n.delete_pending && n.truncate_on_close;
        let single = n.handles == 1;
        let mut delete = false;
        if !n.posix_deleted {
            if d.posix_delete {
                n.posix_deleted = true;
                delete = true;
            } else if single {
                delete = n.delete_pending;
            }
        }
        let mut flags = if delete { cf::DELETE } else { 0 };
        if single && set_alloc {
            flags |= cf::SET_ALLOCATION_SIZE;
        }
        if (d.modified || d.did_set_metadata) && !d.did_set_attributes {
            flags |= cf::SET_ARCHIVE_BIT;
        }
        if d.modified && !d.did_set_write_time {
            flags |= cf::SET_LAST_WRITE_TIME;
        }
        if (d.modified || d.did_set_metadata) && !d.did_set_change_time {
            flags |= cf::SET_CHANGE_TIME;
        }
        // PostCleanupWhenModifiedOnly: nothing to say, no Cleanup.
        if flags != 0 {
            if !d.did_set_access_time {
                flags |= cf::SET_LAST_ACCESS_TIME;
            }
            let path = n.path.clone();
            if single {
                n.truncate_on_close = false;
            }
            self.calls.push(format!("Cleanup({}, {flags:#x})", String::from_utf16_lossy(&path)));
            self.fs.cleanup(&d.h, (flags & cf::DELETE != 0).then_some(&path[..]), flags);
        }
        n.handles -= 1;
        if n.handles == 0 {
            self.nodes.remove(&ino);
        }
        self.calls.push("Close".into());
        self.fs.close(d.h);
    }

    /// `NtReadFile`: through the Windows cache when it holds dirty pages.
    pub(super) fn read(&mut self, id: H, off: u64, len: usize) -> WinResult<Vec<u8>> {
        let ino = self.ino(id);
        let size = self.nodes[&ino].size;
        if off >= size {
            return Err(nt::STATUS_END_OF_FILE);
        }
        let len = len.min((size - off) as usize);
        let mut buf = vec![0u8; len];
        match self.fs.read(&self.desc(id).h, off, &mut buf) {
            Ok(n) => buf.truncate(n as usize),
            // Inside the size but past what reached the file system: zeros.
            Err(s) if s == nt::STATUS_END_OF_FILE && self.cached => {}
            Err(s) => return Err(s),
        }
        buf.resize(len, 0);
        for (&o, data) in &self.nodes[&ino].dirty {
            for (i, b) in data.iter().enumerate() {
                let p = o + i as u64;
                if p >= off && p < off + len as u64 {
                    buf[(p - off) as usize] = *b;
                }
            }
        }
        Ok(buf)
    }

    /// `NtWriteFile`. Cached: an extending write sets the end of file first
    /// (the file system's answer decides), then the bytes go to the cache.
    pub(super) fn write(&mut self, id: H, off: u64, data: &[u8]) -> WinResult<()> {
        let ino = self.ino(id);
        let append = self.desc(id).append;
        let off = if append { self.nodes[&ino].size } else { off };
        if self.cached {
            let end = off + data.len() as u64;
            if end > self.nodes[&ino].size {
                self.set_eof(id, end)?;
            }
            self.cache_write(id, off, data);
        } else {
            self.log(format!("Write({off}, {})", data.len()));
            let (_, info) = self.fs.write(&self.desc(id).h, data, off, append, false)?;
            self.nodes.get_mut(&ino).expect("open node").size = info.file_size;
        }
        self.descs.get_mut(&id).expect("open handle").modified = true;
        Ok(())
    }

    fn cache_write(&mut self, id: H, off: u64, data: &[u8]) {
        let ino = self.ino(id);
        let mut pos = off;
        let mut rest = data;
        while !rest.is_empty() {
            let page = pos / PAGE * PAGE;
            let within = (pos - page) as usize;
            let take = rest.len().min(PAGE as usize - within);
            // A page is read in before it is changed: the lazy writer writes it whole.
            if !self.nodes[&ino].dirty.contains_key(&page) {
                let mut old = vec![0u8; PAGE as usize];
                let n = self.fs.read(&self.descs[&id].h, page, &mut old).unwrap_or(0);
                old.truncate(n as usize);
                self.nodes.get_mut(&ino).expect("open node").dirty.insert(page, old);
            }
            let n = self.nodes.get_mut(&ino).expect("open node");
            let entry = n.dirty.get_mut(&page).expect("page read in");
            if entry.len() < within + take {
                entry.resize(within + take, 0);
            }
            entry[within..within + take].copy_from_slice(&rest[..take]);
            pos += take as u64;
            rest = &rest[take..];
        }
    }

    /// A write into a memory-mapped view: a dirty page, written back later
    /// by the mapped page writer (a paging write inside the size).
    pub(super) fn mapped_write(&mut self, id: H, off: u64, data: &[u8]) {
        let ino = self.ino(id);
        assert!(off + data.len() as u64 <= self.nodes[&ino].size, "a view does not extend the file");
        self.cache_write(id, off, data);
        self.descs.get_mut(&id).expect("open handle").modified = true;
    }

    /// `FlushFileBuffers`.
    pub(super) fn flush(&mut self, id: H) -> WinResult<()> {
        let ino = self.ino(id);
        self.flush_cache(ino, id)?;
        self.log("Flush".into());
        self.fs.flush(Some(&self.desc(id).h)).map(|_| ())
    }

    fn set_size(&mut self, id: H, size: u64, alloc: bool) -> WinResult<()> {
        let ino = self.ino(id);
        if !alloc || size < self.nodes[&ino].size {
            // The cache is flushed up to the new end and cut there.
            let n = self.nodes.get_mut(&ino).expect("open node");
            n.dirty.retain(|&o, _| o < size);
            if let Some((&o, d)) = n.dirty.iter_mut().next_back() {
                d.truncate((size - o).min(d.len() as u64) as usize);
            }
        }
        self.log(format!("SetFileSize({size}, alloc {alloc})"));
        let info = self.fs.set_file_size(&self.desc(id).h, size, alloc)?;
        let n = self.nodes.get_mut(&ino).expect("open node");
        n.size = info.file_size;
        n.truncate_on_close = true;
        self.descs.get_mut(&id).expect("open handle").modified = true;
        Ok(())
    }

    /// `SetFileInformationByHandle(FileEndOfFileInfo)` / `SetEndOfFile`.
    pub(super) fn set_eof(&mut self, id: H, size: u64) -> WinResult<()> {
        self.set_size(id, size, false)
    }

    /// `FileAllocationInfo`.
    pub(super) fn set_allocation(&mut self, id: H, size: u64) -> WinResult<()> {
        self.set_size(id, size, true)
    }

    /// `SetFileInformationByHandle(FileBasicInfo)`: attributes (0: leave)
    /// and times (0: leave).
    pub(super) fn set_basic(&mut self, id: H, attributes: u32, times: [u64; 4]) -> WinResult<()> {
        // The FSD turns 0 into "leave" and drops NORMAL (fileinfo.c).
        let a = if attributes == 0 { attr::INVALID } else { attributes & !attr::NORMAL };
        self.log(format!("SetBasicInfo({a:#x})"));
        let [c, acc, wr, ch] = times;
        self.fs.set_basic_info(&self.desc(id).h, a, c, acc, wr, ch)?;
        let d = self.descs.get_mut(&id).expect("open handle");
        d.did_set_metadata = true;
        d.did_set_attributes |= a != attr::INVALID;
        d.did_set_access_time |= acc != 0;
        d.did_set_write_time |= wr != 0;
        d.did_set_change_time |= ch != 0;
        Ok(())
    }

    /// `GetFileInformationByHandle`.
    pub(super) fn info(&mut self, id: H) -> WinResult<super::FileInfo> {
        let mut i = self.fs.get_file_info(&self.desc(id).h)?;
        i.file_size = self.nodes[&self.ino(id)].size; // the cache's view
        Ok(i)
    }

    /// `FileDispositionInformation(Ex)`: `posix` for
    /// `FILE_DISPOSITION_POSIX_SEMANTICS` (what `DeleteFile` uses on Windows 10+).
    pub(super) fn set_disposition(&mut self, id: H, delete: bool, posix: bool) -> WinResult<()> {
        if delete {
            let i = self.fs.get_file_info(&self.desc(id).h)?;
            if i.file_attributes & attr::READONLY != 0 {
                return Err(nt::STATUS_CANNOT_DELETE);
            }
        }
        self.log(format!("SetDelete({delete})"));
        self.fs.set_delete(&self.desc(id).h, delete)?;
        let ino = self.ino(id);
        self.nodes.get_mut(&ino).expect("open node").delete_pending = delete;
        self.descs.get_mut(&id).expect("open handle").posix_delete = delete && posix;
        Ok(())
    }

    /// `FileRenameInformation(Ex)`: `posix` for `FILE_RENAME_POSIX_SEMANTICS`
    /// (replace a target that is open).
    pub(super) fn rename(&mut self, id: H, new_path: &str, replace: bool, posix: bool) -> WinResult<()> {
        let ino = self.ino(id);
        let old = self.nodes[&ino].path.clone();
        let new = w(new_path);
        let ci = self.ci();
        let key = |p: &[u16]| {
            let s = String::from_utf16_lossy(p);
            if ci {
                s.to_uppercase()
            } else {
                s
            }
        };
        // FspFileNodeRenameCheck: an open target, or open files below a
        // renamed directory, refuse (unless POSIX semantics for the target).
        let (old_k, new_k) = (key(&old), key(&new));
        for (&other, n) in &self.nodes {
            let k = key(&n.path);
            if other != ino && k == new_k && !posix {
                return Err(nt::STATUS_ACCESS_DENIED);
            }
            if other != ino && k.starts_with(&format!("{old_k}\\")) {
                return Err(nt::STATUS_ACCESS_DENIED);
            }
        }
        self.log(format!("Rename({} -> {new_path}, replace {replace})", String::from_utf16_lossy(&old)));
        self.fs.rename(&self.desc(id).h, &old, &new, replace)?;
        for n in self.nodes.values_mut() {
            if key(&n.path) == old_k {
                n.path = new.clone();
            }
        }
        Ok(())
    }

    /// `NtQueryDirectoryFile` until `STATUS_NO_MORE_FILES`, the FSD matching
    /// `pattern`: (name, attributes, size) of each entry.
    pub(super) fn list(&mut self, id: H, pattern: &str) -> WinResult<Vec<(String, u32, u64)>> {
        let ci = self.ci();
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let mut buf = vec![0u8; 4096];
            self.log("ReadDirectory".into());
            let n = self.fs.read_directory(&self.desc(id).h, marker, &mut buf)? as usize;
            let (entries, ended) = decode_dir(&buf[..n]);
            if let Some(last) = entries.last() {
                marker = Some(last.next_offset);
            }
            out.extend(
                entries
                    .into_iter()
                    .filter(|e| matches(pattern, &e.name, ci))
                    .map(|e| (e.name, e.attributes, e.file_size)),
            );
            if ended {
                return Ok(out);
            }
        }
    }

    /// `FSCTL_SET_REPARSE_POINT`.
    pub(super) fn set_reparse(&mut self, id: H, data: &[u8]) -> WinResult<()> {
        self.log("SetReparsePoint".into());
        self.fs.set_reparse_point(&self.desc(id).h, data)?;
        self.descs.get_mut(&id).expect("open handle").did_set_metadata = true;
        Ok(())
    }

    /// `FSCTL_GET_REPARSE_POINT`.
    pub(super) fn get_reparse(&mut self, id: H) -> WinResult<Vec<u8>> {
        let mut buf = vec![0u8; nt::reparse::MAX];
        let n = self.fs.get_reparse_point(&self.desc(id).h, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// `GetFileAttributesEx(path)`: open for attributes, query, close.
    pub(super) fn attributes_of(&mut self, path: &str) -> WinResult<(u32, u64)> {
        let h = self.create_file(path, Req::new(Disp::Open))?;
        let i = self.info(h)?;
        self.close(h);
        Ok((i.file_attributes, i.file_size))
    }

    /// Open handles (a leak check for the sequences).
    pub(super) fn open_handles(&self) -> usize {
        self.descs.len()
    }
}

/// `NtStatus` as text in assertion messages.
pub(super) fn status(s: NtStatus) -> String {
    format!("{:#010x}", s as u32)
}

#[test]
fn pattern_matching() {
    assert!(matches("*", "a.txt", false));
    assert!(matches("*.TXT", "a.txt", true) && !matches("*.TXT", "a.txt", false));
    assert!(matches("a?c", "abc", false) && !matches("a?c", "ac", false));
    assert!(matches("*o*", "foo.o", false) && !matches("*.obj", "x.o", false));
}
