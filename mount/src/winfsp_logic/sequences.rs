//! What Windows programs send, replayed through the model of WinFsp's FSD
//! and DLL (`fsd`) against the translation and the real engine: Explorer
//! copying a file, `cmd` (`copy`, `type`, `dir`, `del`, `rmdir /s`, `move`),
//! a compiler and linker (include probing, delete-on-close temporaries,
//! memory-mapped output, replace-by-rename), and `git` (loose objects made
//! read-only, lock files, symlinks, deleting files that are open). The call
//! shapes are those of the Win32 functions these programs use (CopyFileEx,
//! DeleteFile with POSIX semantics, MoveFileEx, CreateSymbolicLink,
//! CreateFileMapping, FILE_FLAG_DELETE_ON_CLOSE), as WinFsp turns them into
//! file system calls. Each runs with the Windows cache manager off (the
//! default) and on (`-t infinite`): a write acknowledged into the cache must
//! never be refused by the lazy writer.

use super::fsd::{status, Disp, Fsd, Req};
use super::nt::{self, attr};
use super::tests::volume;
use super::wire::{filetime, tests::symlink_reparse};

fn fsd(max_bytes: u64, cached: bool) -> Fsd {
    Fsd::new(volume(max_bytes, 10_000, true), cached)
}

fn used(f: &Fsd) -> u64 {
    f.fs.engine.stats().pool.used
}

fn inodes(f: &Fsd) -> u64 {
    f.fs.engine.stats().inodes
}

fn mkdir(f: &mut Fsd, path: &str) {
    let h = f.create_file(path, Req::new(Disp::Create).dir()).unwrap();
    f.close(h);
}

/// `echo ... > path` (CREATE_ALWAYS, one write).
fn put(f: &mut Fsd, path: &str, data: &[u8]) {
    let h = f.create_file(path, Req::new(Disp::OverwriteIf).file().write()).unwrap();
    f.write(h, 0, data).unwrap();
    f.close(h);
}

/// `type path`: read to the end of file.
fn slurp(f: &mut Fsd, path: &str) -> Vec<u8> {
    let h = f.create_file(path, Req::new(Disp::Open).file()).unwrap();
    let mut out = Vec::new();
    loop {
        match f.read(h, out.len() as u64, 1000) {
            Ok(b) => out.extend(b),
            Err(s) => {
                assert_eq!(s, nt::STATUS_END_OF_FILE, "{}", status(s));
                break;
            }
        }
    }
    f.close(h);
    out
}

/// `DeleteFile` (Windows 10+: POSIX semantics), with its first error.
fn delete(f: &mut Fsd, path: &str) -> Result<(), i32> {
    let h = f.create_file(path, Req::new(Disp::Open).reparse())?;
    let r = f.set_disposition(h, true, true);
    f.close(h);
    r
}

/// `RemoveDirectory`.
fn rmdir(f: &mut Fsd, path: &str) -> Result<(), i32> {
    let h = f.create_file(path, Req::new(Disp::Open).dir().reparse())?;
    let r = f.set_disposition(h, true, false);
    f.close(h);
    r
}

/// `MoveFileEx(from, to, replace ? MOVEFILE_REPLACE_EXISTING : 0)` (POSIX rename).
fn move_file(f: &mut Fsd, from: &str, to: &str, replace: bool) -> Result<(), i32> {
    let h = f.create_file(from, Req::new(Disp::Open).reparse())?;
    let r = f.rename(h, to, replace, true);
    f.close(h);
    r
}

/// `rmdir /s /q path`.
fn rmdir_s(f: &mut Fsd, path: &str) {
    let h = f.create_file(path, Req::new(Disp::Open).dir()).unwrap();
    let entries = f.list(h, "*").unwrap();
    f.close(h);
    for (name, a, _) in entries {
        if name == "." || name == ".." {
            continue;
        }
        let child = format!("{path}\\{name}");
        if a & attr::DIRECTORY != 0 {
            rmdir_s(f, &child);
        } else {
            if a & attr::READONLY != 0 {
                let h = f.create_file(&child, Req::new(Disp::Open)).unwrap();
                f.set_basic(h, attr::NORMAL, [0; 4]).unwrap();
                f.close(h);
            }
            delete(f, &child).unwrap();
        }
    }
    rmdir(f, path).unwrap();
}

/// CopyFileEx onto the volume, as Explorer and `copy` do: create the
/// target (CREATE_ALWAYS with the source's attributes), set its end of file
/// to the source size, write in chunks, copy the last-write time, close. On
/// failure it deletes the partial target.
fn copy_file(f: &mut Fsd, data: &[u8], mtime: u64, to: &str) -> Result<(), i32> {
    let h = f.create_file(to, Req::new(Disp::OverwriteIf).file().write().attrs(attr::ARCHIVE))?;
    let mut r = f.set_eof(h, data.len() as u64);
    if r.is_ok() {
        for (i, chunk) in data.chunks(64 << 10).enumerate() {
            r = f.write(h, (i * (64 << 10)) as u64, chunk);
            if r.is_err() {
                break;
            }
        }
    }
    if r.is_ok() {
        r = f.set_basic(h, 0, [0, 0, mtime, 0]);
    }
    if r.is_err() {
        f.set_disposition(h, true, false).unwrap();
    }
    f.close(h);
    r
}

fn both(test: impl Fn(bool)) {
    test(false);
    test(true);
}

#[test]
fn explorer_copies_a_file_in() {
    both(|cached| {
        let mut f = fsd(4 << 20, cached);
        let base = used(&f);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mtime = filetime(engine::Time { secs: 1_600_000_000, nanos: 500 });
        // Explorer checks whether the name is taken, then copies.
        assert_eq!(f.attributes_of("\\report.docx"), Err(nt::STATUS_OBJECT_NAME_NOT_FOUND));
        copy_file(&mut f, &data, mtime, "\\report.docx").unwrap();
        // The end of file was set (and its memory reserved) before any data came.
        let set = f.calls.iter().position(|c| c.starts_with("SetFileSize(300000")).unwrap();
        let first_write = f.calls.iter().position(|c| c.starts_with("Write")).unwrap();
        assert!(set < first_write, "{:?}", f.calls);
        if cached {
            assert!(f.calls.iter().filter(|c| c.starts_with("Write")).all(|c| c.starts_with("Write(paging")));
        }
        // The folder refreshes; the file shows its size, time and attributes.
        let root = f.create_file("\\", Req::new(Disp::Open).dir()).unwrap();
        let listed = f.list(root, "*").unwrap();
        f.close(root);
        assert_eq!(listed, [("report.docx".to_string(), attr::ARCHIVE, 300_000)]);
        let h = f.create_file("\\REPORT.DOCX", Req::new(Disp::Open)).unwrap();
        let i = f.info(h).unwrap();
        assert_eq!((i.file_size, i.last_write_time, i.allocation_size), (300_000, mtime, 303_104));
        f.close(h);
        assert_eq!(slurp(&mut f, "\\report.docx"), data);
        assert_eq!(used(&f) - base, 300_000u64.div_ceil(4096) * 4096);
        // Copy over it again (CREATE_ALWAYS overwrites), then delete it.
        copy_file(&mut f, &data[..10], mtime, "\\report.docx").unwrap();
        assert_eq!(slurp(&mut f, "\\report.docx"), &data[..10]);
        delete(&mut f, "\\report.docx").unwrap();
        assert_eq!((used(&f), inodes(&f), f.open_handles()), (base, 1, 0));
    });
}

#[test]
fn explorer_copy_onto_a_full_volume_fails_cleanly() {
    both(|cached| {
        let mut f = fsd(1 << 20, cached);
        put(&mut f, "\\keep.txt", b"kept");
        let (base, files) = (used(&f), inodes(&f));
        let big = vec![1u8; 2 << 20];
        // CopyFile's end-of-file step is refused: nothing was acknowledged.
        assert_eq!(copy_file(&mut f, &big, 0, "\\big.iso"), Err(nt::STATUS_DISK_FULL));
        assert_eq!(f.attributes_of("\\big.iso"), Err(nt::STATUS_OBJECT_NAME_NOT_FOUND), "partial copy deleted");
        assert_eq!((used(&f), inodes(&f), f.open_handles()), (base, files, 0));
        // A copy that fits still works, to the last byte of the volume.
        let free = f.fs.volume_info().free_size;
        copy_file(&mut f, &vec![2u8; free as usize], 0, "\\fits.bin").unwrap();
        assert_eq!(f.fs.volume_info().free_size, 0);
        assert_eq!(slurp(&mut f, "\\fits.bin").len() as u64, free);
        assert_eq!(slurp(&mut f, "\\keep.txt"), b"kept");
    });
}

#[test]
fn cmd_copy_type_dir_del_rmdir() {
    both(|cached| {
        let mut f = fsd(4 << 20, cached);
        let base = used(&f);
        // cd into a directory that is not there: "The system cannot find the path specified."
        assert_eq!(f.attributes_of("\\build\\x"), Err(nt::STATUS_OBJECT_PATH_NOT_FOUND));
        mkdir(&mut f, "\\build");
        assert_eq!(
            f.create_file("\\build", Req::new(Disp::Create).dir()).unwrap_err(),
            nt::STATUS_OBJECT_NAME_COLLISION
        );
        put(&mut f, "\\build\\a.txt", b"hello\r\n");
        // echo >> appends (FILE_APPEND_DATA).
        let h = f.create_file("\\build\\a.txt", Req::new(Disp::OpenIf).file().append()).unwrap();
        f.write(h, 0, b"world\r\n").unwrap();
        f.close(h);
        assert_eq!(slurp(&mut f, "\\build\\a.txt"), b"hello\r\nworld\r\n");
        // copy a.txt b.txt
        let src = slurp(&mut f, "\\build\\a.txt");
        let (_, size) = f.attributes_of("\\build\\a.txt").unwrap();
        copy_file(&mut f, &src, 0, "\\build\\b.txt").unwrap();
        assert_eq!(slurp(&mut f, "\\build\\b.txt"), src);
        assert_eq!(size, 14);
        // attrib +r b.txt (it keeps the other attributes); then copy onto it, and del it, are refused.
        let h = f.create_file("\\build\\b.txt", Req::new(Disp::Open)).unwrap();
        let a = f.info(h).unwrap().file_attributes;
        f.set_basic(h, a | attr::READONLY, [0; 4]).unwrap();
        f.close(h);
        assert_eq!(copy_file(&mut f, b"x", 0, "\\build\\b.txt"), Err(nt::STATUS_ACCESS_DENIED));
        assert_eq!(delete(&mut f, "\\build\\b.txt"), Err(nt::STATUS_CANNOT_DELETE));
        // dir \build\*.TXT (case-insensitive volume), and a directory inside.
        mkdir(&mut f, "\\build\\sub");
        put(&mut f, "\\build\\sub\\c.obj", &[0; 5000]);
        let h = f.create_file("\\build", Req::new(Disp::Open).dir()).unwrap();
        let mut txt = f.list(h, "*.TXT").unwrap();
        txt.sort();
        assert_eq!(
            txt,
            [("a.txt".to_string(), attr::ARCHIVE, 14), ("b.txt".to_string(), attr::ARCHIVE | attr::READONLY, 14)]
        );
        let all: Vec<String> = f.list(h, "*").unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(all.len(), 5, "{all:?}"); // . .. a.txt b.txt sub
        f.close(h);
        // rmdir of a non-empty directory is refused; move renames it with its contents.
        assert_eq!(rmdir(&mut f, "\\build"), Err(nt::STATUS_DIRECTORY_NOT_EMPTY));
        move_file(&mut f, "\\build", "\\out", false).unwrap();
        assert_eq!(slurp(&mut f, "\\out\\sub\\c.obj"), vec![0; 5000]);
        assert_eq!(f.attributes_of("\\build\\a.txt"), Err(nt::STATUS_OBJECT_PATH_NOT_FOUND));
        // rmdir /s /q clears everything (read-only file included), memory comes back.
        rmdir_s(&mut f, "\\out");
        assert_eq!((used(&f), inodes(&f), f.open_handles()), (base, 1, 0));
    });
}

#[test]
fn a_compiler_and_linker() {
    both(|cached| {
        let mut f = fsd(8 << 20, cached);
        let base = used(&f);
        mkdir(&mut f, "\\inc");
        mkdir(&mut f, "\\obj");
        put(&mut f, "\\inc\\app.h", b"#pragma once\n");
        put(&mut f, "\\main.c", b"#include <app.h>\nint main(){}\n");
        // Include search: a missing header in an existing directory, and in a missing one.
        assert_eq!(f.attributes_of("\\inc\\stdio.h"), Err(nt::STATUS_OBJECT_NAME_NOT_FOUND));
        assert_eq!(f.attributes_of("\\sdk\\stdio.h"), Err(nt::STATUS_OBJECT_PATH_NOT_FOUND));
        assert_eq!(f.attributes_of("\\inc\\APP.H").unwrap().1, 13);
        // A temporary with FILE_FLAG_DELETE_ON_CLOSE, read through a second handle.
        let t = f.create_file("\\obj\\_CL_1234.tmp", Req::new(Disp::Create).file().write().delete_on_close()).unwrap();
        f.write(t, 0, &[9; 10_000]).unwrap();
        let r = f.create_file("\\obj\\_CL_1234.tmp", Req::new(Disp::Open)).unwrap();
        assert_eq!(f.read(r, 9_990, 100).unwrap(), vec![9; 10]);
        f.close(t);
        assert_eq!(f.read(r, 0, 3).unwrap(), vec![9; 3], "still readable until its last handle closes");
        f.close(r);
        assert_eq!(f.attributes_of("\\obj\\_CL_1234.tmp"), Err(nt::STATUS_OBJECT_NAME_NOT_FOUND));
        // cl writes main.obj in pieces.
        let h = f.create_file("\\obj\\main.obj", Req::new(Disp::OverwriteIf).file().write()).unwrap();
        let mut want = Vec::new();
        for i in 0..50u8 {
            let piece = vec![i; 1000 + usize::from(i)];
            f.write(h, want.len() as u64, &piece).unwrap();
            want.extend(piece);
        }
        f.close(h);
        assert_eq!(slurp(&mut f, "\\obj\\main.obj"), want);
        // link maps its output: the mapping's size is set first, then pages are written in the view.
        let exe = 1_000_000u64;
        let h = f.create_file("\\obj\\app.exe.tmp", Req::new(Disp::OverwriteIf).file().write()).unwrap();
        f.set_eof(h, exe).unwrap();
        for off in (0..exe).step_by(100_000) {
            f.mapped_write(h, off, &(off as u32).to_le_bytes());
        }
        f.flush(h).unwrap();
        f.close(h);
        // Replace the previous output by rename while a debugger still has it open.
        put(&mut f, "\\obj\\app.exe", b"old build");
        let dbg = f.create_file("\\obj\\app.exe", Req::new(Disp::Open)).unwrap();
        move_file(&mut f, "\\obj\\app.exe.tmp", "\\obj\\app.exe", true).unwrap();
        assert_eq!(f.read(dbg, 0, 100).unwrap(), b"old build", "the open old file is intact");
        f.close(dbg);
        let out = slurp(&mut f, "\\obj\\app.exe");
        assert_eq!(out.len() as u64, exe);
        assert_eq!(&out[200_000..200_004], &200_000u32.to_le_bytes());
        assert!(out[200_004..300_000].iter().all(|&b| b == 0));
        // A clean build.
        rmdir_s(&mut f, "\\obj");
        rmdir_s(&mut f, "\\inc");
        delete(&mut f, "\\main.c").unwrap();
        assert_eq!((used(&f), inodes(&f), f.open_handles()), (base, 1, 0));
    });
}

/// A loose object as git for Windows writes one: a temporary file, made
/// read-only, renamed (without replace) to its hash; an existing object
/// means the temporary is deleted, after clearing its read-only bit.
fn git_write_object(f: &mut Fsd, dir: &str, name: &str, data: &[u8]) {
    let _ = f.create_file(dir, Req::new(Disp::OpenIf).dir()).map(|h| f.close(h));
    let tmp = format!("{dir}\\tmp_obj_{}", data.len());
    let h = f.create_file(&tmp, Req::new(Disp::Create).file().write()).unwrap();
    f.write(h, 0, data).unwrap();
    f.set_basic(h, attr::READONLY, [0; 4]).unwrap();
    f.close(h);
    match move_file(f, &tmp, &format!("{dir}\\{name}"), false) {
        Ok(()) => {}
        Err(s) => {
            assert_eq!(s, nt::STATUS_OBJECT_NAME_COLLISION, "{}", status(s));
            assert_eq!(delete(f, &tmp), Err(nt::STATUS_CANNOT_DELETE));
            let h = f.create_file(&tmp, Req::new(Disp::Open)).unwrap();
            f.set_basic(h, attr::NORMAL, [0; 4]).unwrap();
            f.close(h);
            delete(f, &tmp).unwrap();
        }
    }
}

#[test]
fn git_objects_locks_symlinks_and_open_deletes() {
    both(|cached| {
        let mut f = fsd(8 << 20, cached);
        let base = used(&f);
        for d in ["\\repo", "\\repo\\.git", "\\repo\\.git\\objects", "\\repo\\.git\\refs"] {
            mkdir(&mut f, d);
        }
        git_write_object(&mut f, "\\repo\\.git\\objects\\ab", "cdef01", b"blob 5\0hello");
        git_write_object(&mut f, "\\repo\\.git\\objects\\ab", "cdef01", b"blob 5\0hello"); // again: exists
        let (a, size) = f.attributes_of("\\repo\\.git\\objects\\ab\\cdef01").unwrap();
        assert_eq!((a & attr::READONLY, size), (attr::READONLY, 12));
        let h = f.create_file("\\repo\\.git\\objects\\ab", Req::new(Disp::Open).dir()).unwrap();
        let names: Vec<String> = f.list(h, "*").unwrap().into_iter().map(|e| e.0).collect();
        f.close(h);
        assert_eq!(names, [".", "..", "cdef01"], "no temporary left behind");
        // index.lock: exclusive create, a second writer is told it exists.
        put(&mut f, "\\repo\\.git\\index", b"index v1");
        let lock = f.create_file("\\repo\\.git\\index.lock", Req::new(Disp::Create).file().write()).unwrap();
        assert_eq!(
            f.create_file("\\repo\\.git\\index.lock", Req::new(Disp::Create).file().write()).unwrap_err(),
            nt::STATUS_OBJECT_NAME_COLLISION
        );
        f.write(lock, 0, b"index v2").unwrap();
        f.flush(lock).unwrap();
        f.close(lock);
        // Commit the lock over the index while a reader (an IDE) has it open.
        let reader = f.create_file("\\repo\\.git\\index", Req::new(Disp::Open)).unwrap();
        move_file(&mut f, "\\repo\\.git\\index.lock", "\\repo\\.git\\index", true).unwrap();
        assert_eq!(f.read(reader, 0, 100).unwrap(), b"index v1");
        f.close(reader);
        assert_eq!(slurp(&mut f, "\\repo\\.git\\index"), b"index v2");
        // A checkout deletes a file an editor has open, and writes it anew at once.
        put(&mut f, "\\repo\\main.rs", b"fn main() {}");
        let editor = f.create_file("\\repo\\main.rs", Req::new(Disp::Open)).unwrap();
        delete(&mut f, "\\repo\\main.rs").unwrap();
        assert_eq!(
            f.attributes_of("\\repo\\main.rs"),
            Err(nt::STATUS_OBJECT_NAME_NOT_FOUND),
            "POSIX delete: the name is gone"
        );
        put(&mut f, "\\repo\\main.rs", b"fn main() { v2 }");
        assert_eq!(f.read(editor, 0, 100).unwrap(), b"fn main() {}");
        f.close(editor);
        assert_eq!(slurp(&mut f, "\\repo\\main.rs"), b"fn main() { v2 }");
        // Without POSIX semantics the name stays until the last handle is closed.
        let a = f.create_file("\\repo\\main.rs", Req::new(Disp::Open)).unwrap();
        let b = f.create_file("\\repo\\main.rs", Req::new(Disp::Open)).unwrap();
        f.set_disposition(a, true, false).unwrap();
        f.close(a);
        assert_eq!(f.create_file("\\repo\\main.rs", Req::new(Disp::Open)).unwrap_err(), nt::STATUS_DELETE_PENDING);
        f.close(b);
        assert_eq!(f.attributes_of("\\repo\\main.rs"), Err(nt::STATUS_OBJECT_NAME_NOT_FOUND));
        // core.symlinks: CreateSymbolicLink makes the file, then sets the reparse point.
        let data = symlink_reparse("target.txt");
        let l = f.create_file("\\repo\\link", Req::new(Disp::Create).file().reparse().write()).unwrap();
        f.set_reparse(l, &data).unwrap();
        f.close(l);
        assert_eq!(f.create_file("\\repo\\link", Req::new(Disp::Open)).unwrap_err(), nt::STATUS_REPARSE);
        let l = f.create_file("\\repo\\link", Req::new(Disp::Open).reparse()).unwrap();
        assert_eq!(f.get_reparse(l).unwrap(), data, "readlink");
        f.close(l);
        // mklink /D: a directory symlink; paths through it are WinFsp's to resolve.
        let d = f.create_file("\\repo\\dlink", Req::new(Disp::Create).dir().reparse()).unwrap();
        f.set_reparse(d, &symlink_reparse(".git")).unwrap();
        f.close(d);
        assert_eq!(f.attributes_of("\\repo\\dlink\\index"), Err(nt::STATUS_REPARSE));
        let h = f.create_file("\\repo", Req::new(Disp::Open).dir()).unwrap();
        let listed = f.list(h, "*link").unwrap();
        f.close(h);
        assert_eq!(
            listed,
            [
                ("link".to_string(), attr::ARCHIVE | attr::REPARSE_POINT, 0),
                ("dlink".to_string(), attr::DIRECTORY | attr::REPARSE_POINT, 0)
            ]
        );
        // git gc / rm -rf: everything goes, memory comes back.
        delete(&mut f, "\\repo\\link").unwrap();
        rmdir(&mut f, "\\repo\\dlink").unwrap();
        rmdir_s(&mut f, "\\repo");
        assert_eq!((used(&f), inodes(&f), f.open_handles()), (base, 1, 0));
    });
}

/// The cleanup flags WinFsp sends, as the FSD computes them: modified files
/// get the archive bit and times; a handle that set the write time keeps it;
/// a preallocated file gives back what lies past its end.
#[test]
fn cleanup_flags_follow_the_fsd() {
    let mut f = fsd(4 << 20, false);
    let h = f.create_file("\\f", Req::new(Disp::Create).file().write().alloc(100_000)).unwrap();
    assert_eq!(f.info(h).unwrap().allocation_size, 102_400);
    let before = used(&f);
    f.write(h, 0, b"abc").unwrap();
    let t = filetime(engine::Time { secs: 1_000_000_000, nanos: 0 });
    f.set_basic(h, 0, [0, 0, t, 0]).unwrap();
    f.close(h);
    let cleanup = f.calls.iter().rev().find(|c| c.starts_with("Cleanup")).unwrap().clone();
    // SET_ALLOCATION_SIZE | SET_ARCHIVE_BIT | SET_LAST_ACCESS_TIME | SET_CHANGE_TIME, not the write time.
    assert_eq!(cleanup, "Cleanup(\\f, 0xb2)");
    let h = f.create_file("\\f", Req::new(Disp::Open)).unwrap();
    let i = f.info(h).unwrap();
    assert_eq!((i.last_write_time, i.allocation_size, i.file_attributes), (t, 4096, attr::ARCHIVE));
    assert!(used(&f) < before, "the preallocation went back");
    // A handle that only reads sends no cleanup at all.
    let n = f.calls.len();
    f.read(h, 0, 3).unwrap();
    f.close(h);
    assert!(!f.calls[n..].iter().any(|c| c.starts_with("Cleanup")), "{:?}", &f.calls[n..]);
    // TRUNCATE_EXISTING (FILE_OVERWRITE), then a preallocation (FileAllocationInfo).
    assert_eq!(f.create_file("\\g", Req::new(Disp::Overwrite)).unwrap_err(), nt::STATUS_OBJECT_NAME_NOT_FOUND);
    let h = f.create_file("\\f", Req::new(Disp::Overwrite).file().write()).unwrap();
    assert_eq!(f.info(h).unwrap().file_size, 0);
    f.set_allocation(h, 50_000).unwrap();
    assert_eq!(f.info(h).unwrap().allocation_size, 53_248);
    f.close(h);
    let h = f.create_file("\\f", Req::new(Disp::Open)).unwrap();
    assert_eq!(f.info(h).unwrap().allocation_size, 0, "cleanup gave the preallocation back");
    f.close(h);
}
