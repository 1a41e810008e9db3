//! Issue 22 (found while writing the WinFsp frontend, whose lazy writer
//! rewrites cached pages inside the file size):
//! * an overwrite of an inline (small) file failed with `NoSpace` on a full
//!   file system, although it does not grow the file (sectors were fine);
//! * truncating to the current size did not return the sectors reserved past
//!   the end by `fallocate(KEEP_SIZE)` (tmpfs does; WinFsp's cleanup relies
//!   on it to drop a file's allocation beyond its size);
//! * `fallocate(KEEP_SIZE)` reserved nothing for an empty or inline file
//!   (Windows programs preallocate with the allocation size at create).

mod support;

use engine::data::FALLOC_KEEP_SIZE as KEEP;
use engine::{Error, SetAttr, ROOT};
use support::*;

#[test]
fn inline_overwrite_works_on_a_full_file_system() {
    let e = tiny(4096, 2 * 4096 + 3000, 4096);
    let a = put(&e, ROOT, b"a", &[1; 3000]);
    let b = put(&e, ROOT, b"b", &[1; 4096 + 1000]);
    let st = e.stats().pool;
    assert_eq!(st.used, st.limit, "full to the byte");
    assert_eq!(e.write(a, 10, &[2; 100]), Ok(100));
    assert_eq!(e.write(b, 10, &[2; 100]), Ok(100));
    let mut buf = vec![0; 3000];
    assert_eq!(e.read(a, 0, &mut buf), Ok(3000));
    assert!(
        buf[..10].iter().all(|&x| x == 1) && buf[10..110].iter().all(|&x| x == 2) && buf[110..].iter().all(|&x| x == 1)
    );
    assert_eq!(e.stats().pool.used, st.limit, "the old buffer went back");
    // Growth is still refused, and changes nothing.
    assert_eq!(e.write(a, 2990, &[3; 20]), Err(Error::NoSpace));
    assert_eq!(e.getattr(a).unwrap().size, 3000);
    assert_eq!(e.stats().pool.used, st.limit);
}

#[test]
fn truncate_to_the_same_size_drops_the_reservation_past_the_end() {
    let e = tiny(4096, 100 * 4096, 1024);
    let c = put(&e, ROOT, b"c", &[1; 5000]);
    let used = e.stats().pool.used;
    assert_eq!(used, 2 * 4096);
    e.fallocate(c, KEEP, 0, 40000).unwrap();
    assert_eq!(e.stats().pool.used, 10 * 4096);
    assert_eq!(e.getattr(c).unwrap().size, 5000);
    e.setattr(c, &SetAttr { size: Some(5000), ..Default::default() }).unwrap();
    assert_eq!(e.stats().pool.used, used);
    assert_eq!(e.getattr(c).unwrap().size, 5000);
    let mut buf = vec![0; 5000];
    assert_eq!(e.read(c, 0, &mut buf), Ok(5000));
    assert!(buf.iter().all(|&x| x == 1));
}

/// `fallocate(KEEP_SIZE)` on an empty or inline file reserved nothing (the
/// inline path ignored the range past the end), so a preallocation promised
/// memory it did not hold.
#[test]
fn keep_size_reserves_for_empty_and_inline_files() {
    let e = tiny(4096, 100 * 4096, 1024);
    let a = mkfile(&e, ROOT, b"a");
    e.fallocate(a, KEEP, 0, 40000).unwrap();
    assert_eq!(e.stats().pool.used, 10 * 4096);
    assert_eq!(e.getattr(a).unwrap().size, 0);
    let b = put(&e, ROOT, b"b", &[7; 500]);
    let before = e.stats().pool.used;
    e.fallocate(b, KEEP, 0, 8000).unwrap();
    assert_eq!(e.stats().pool.used, before - 500 + 2 * 4096);
    assert_eq!(e.getattr(b).unwrap().size, 500);
    let mut buf = vec![0; 600];
    assert_eq!(e.read(b, 0, &mut buf), Ok(500));
    assert!(buf[..500].iter().all(|&x| x == 7));
    // Within the size, an inline file stays inline.
    let c = put(&e, ROOT, b"c", &[1; 300]);
    let before = e.stats().pool.used;
    e.fallocate(c, KEEP, 0, 300).unwrap();
    assert_eq!(e.stats().pool.used, before);
    // At the limit: refused, nothing changed.
    let full = tiny(4096, 4096, 1024);
    let d = mkfile(&full, ROOT, b"d");
    assert_eq!(full.fallocate(d, KEEP, 0, 8192), Err(Error::NoSpace));
    assert_eq!(full.stats().pool.used, 0);
}
