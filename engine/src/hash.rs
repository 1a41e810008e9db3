//! A hasher for integer keys the engine assigns itself (inode numbers,
//! page-group numbers): one multiply instead of SipHash's rounds. Not for
//! keys a user chooses (names use the maps' default hashers): nothing here
//! resists collisions made on purpose, and nothing needs to.

use std::hash::{BuildHasher, Hasher};

/// Builds [`IntHasher`]s.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct BuildIntHasher;

/// Fibonacci hashing of one integer.
#[derive(Default)]
pub(crate) struct IntHasher(u64);

impl BuildHasher for BuildIntHasher {
    type Hasher = IntHasher;
    fn build_hasher(&self) -> IntHasher {
        IntHasher(0)
    }
}

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        // The high bits of the product mix every input bit; hashbrown uses
        // the top 7 bits as its tag and the low ones as the index (and
        // dashmap picks a shard from the bits below the top 7), so rotate
        // the good bits into all of them.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consecutive keys (inode numbers are) spread over buckets and shards.
    #[test]
    fn consecutive_keys_spread() {
        let h = |k: u64| BuildIntHasher.hash_one(k);
        let mut low = std::collections::HashSet::new();
        let mut shard = std::collections::HashSet::new();
        for k in 0..1024u64 {
            low.insert(h(k) & 1023);
            shard.insert((h(k) << 7) >> (64 - 6));
        }
        assert!(low.len() > 600, "{} low-bit buckets of 1024", low.len());
        assert_eq!(shard.len(), 64, "dashmap's shard bits");
    }
}
