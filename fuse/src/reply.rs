//! Reply encoding and the [`Sink`] a transport sends replies through.

use std::io::{self, IoSlice};

/// Where replies go. A transport implements it once: the classic channel
/// puts a `fuse_out_header` in front of `parts` and sends them with one
/// `writev(2)` (so a read's reply goes out straight from sector memory); an
/// io_uring entry writes the header into its `in_out` area and copies
/// `parts` into its payload buffer, then commits.
pub trait Sink {
    /// Sends the reply to request `unique`: `error` is 0 or a negative
    /// errno (then `parts` is empty), `parts` the reply's bytes after the
    /// `fuse_out_header`, at most the connection's largest reply in all.
    fn send(&mut self, unique: u64, error: i32, parts: &[IoSlice<'_>]) -> io::Result<()>;
}
