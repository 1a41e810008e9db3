//! Regression (found by `prop_model`): a write that grows an inline file into
//! sectors and overwrites part of the old inline bytes was silently dropped.
//!
//! The converted sector 0 is exclusive to the working copy, so the planner
//! reserved no fresh sector for it (write in place). Applying, the sector was
//! cloned out of the table before the exclusivity check, the extra `Arc` made
//! it look shared, the copy-on-write branch found no fresh sector, and the
//! write was skipped while the size still grew.

mod support;

use engine::ROOT;
use support::*;

#[test]
fn write_growing_an_inline_file_over_its_bytes() {
    for (ss, inline, old, off, len) in
        [(4096usize, 1024usize, 380usize, 0u64, 1025usize), (16, 8, 4, 3, 6), (64, 64, 40, 0, 65), (64, 64, 64, 1, 64)]
    {
        let e = tiny(ss, 64 << 20, inline);
        let f = put(&e, ROOT, b"f", &vec![7; old]);
        e.write(f, off, &vec![1; len]).unwrap();
        let mut want = vec![7; old];
        want.resize(want.len().max(off as usize + len), 0);
        want[off as usize..off as usize + len].fill(1);
        assert_eq!(read_all(&e, f), want, "ss {ss} inline {inline}");
        teardown(&e);
    }
}

#[test]
fn punch_in_a_sector_written_in_the_same_file_version() {
    // Punching the partial edge of a sector: content must be right whether
    // the sector is zeroed in place or copied.
    for ss in [16usize, 4096] {
        let e = tiny(ss, 64 << 20, 0);
        let f = put(&e, ROOT, b"f", &vec![3; 2 * ss]);
        e.fallocate(f, engine::data::FALLOC_PUNCH_HOLE | engine::data::FALLOC_KEEP_SIZE, 1, 2).unwrap();
        let mut want = vec![3; 2 * ss];
        want[1..3].fill(0);
        assert_eq!(read_all(&e, f), want);
        teardown(&e);
    }
}
