//! A directory's entries: each name stored once, found by (folded) name
//! through a hash index, listed in cookie order.
//!
//! # Layout (issue 17: per-file cost)
//! * `slots`: the entries in the order they were inserted, which is cookie
//!   order (cookies only grow). Each slot (40 bytes) holds its cookie, the
//!   inode, the kind and the name as stored, followed by the key (the
//!   folded name) only when the key differs (case-insensitive mounts): in
//!   the slot itself up to 20 bytes, else in one allocation.
//!   A removed entry leaves a *tombstone* (no name) that keeps its cookie,
//!   so the slots stay sorted by cookie and `readdir` finds where to resume
//!   by binary search.
//! * `index`: slot numbers of the live entries, hashed by key
//!   (`hashbrown::HashTable`, no second copy of the name): 2 bytes a bucket
//!   (and hashbrown's control byte) up to 65,536 slots, 4 past them
//!   (`Index`).
//! * When tombstones outnumber live entries (and there are more than a
//!   few), the slots are compacted (order kept, cookies kept) and the index
//!   rebuilt: O(n) after at least n/2 removals, so O(1) amortised.
//!
//! Before this (a `HashMap` by key plus a `BTreeMap` by cookie) a name was
//! stored three times and an entry of a 12-byte name cost about 225 bytes;
//! it now costs a slot (40 bytes) and a few bytes of index.
//!
//! # Cookies
//! 1 and 2 are `.` and `..`; entries get increasing cookies at insertion
//! ([`FIRST_COOKIE`] on), never reused. Resuming at a cookie never repeats
//! or skips an entry that stayed in the directory
//! (`engine/tests/ns_readdir.rs`). A rename within the directory is a
//! removal and an insertion (a new cookie); an exchange keeps both cookies.
//!
//! Every method runs under the directory's lock (the caller's `RwLock`).

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::types::{FileType, Ino};

/// The first cookie of a real entry (1 and 2 are `.` and `..`).
pub(crate) const FIRST_COOKIE: u64 = 3;

/// Fewer slots than this are never compacted (tombstones there cost less
/// than the work).
const COMPACT_MIN: usize = 16;

/// One directory entry, as looked up (the name stays in the directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ent {
    pub(crate) ino: Ino,
    pub(crate) kind: FileType,
    pub(crate) cookie: u64,
}

/// Bytes of a slot's text kept in the slot itself.
const SMALL: usize = 20;

/// A slot's text (the name as stored, then the key if it differs) with the
/// name's length and the entry's kind, which sit in the enum's spare bytes
/// (a slot is 40 bytes): the text in the slot up to [`SMALL`] bytes (most
/// names: no allocation at all), else on the heap. Empty: a removed entry
/// (a name is never empty).
#[derive(Debug)]
enum Text {
    Small { name_len: u8, len: u8, kind: FileType, bytes: [u8; SMALL] },
    Big { name_len: u8, kind: FileType, bytes: Box<[u8]> },
}

impl Text {
    const EMPTY: Text = Text::Small { name_len: 0, len: 0, kind: FileType::Regular, bytes: [0; SMALL] };

    /// `name` (at most 255 bytes), then `key` if it differs.
    fn new(key: &[u8], name: &[u8], kind: FileType) -> Text {
        let name_len = name.len() as u8;
        let both = if key == name { &[name][..] } else { &[name, key][..] };
        let len: usize = both.iter().map(|p| p.len()).sum();
        if len <= SMALL {
            let mut bytes = [0; SMALL];
            let mut at = 0;
            for p in both {
                bytes[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            Text::Small { name_len, len: len as u8, kind, bytes }
        } else {
            Text::Big { name_len, kind, bytes: both.concat().into_boxed_slice() }
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Text::Small { len, bytes, .. } => &bytes[..*len as usize],
            Text::Big { bytes, .. } => bytes,
        }
    }

    fn name_len(&self) -> usize {
        match self {
            Text::Small { name_len, .. } | Text::Big { name_len, .. } => *name_len as usize,
        }
    }

    fn kind(&self) -> FileType {
        match self {
            Text::Small { kind, .. } | Text::Big { kind, .. } => *kind,
        }
    }

    fn set_kind(&mut self, k: FileType) {
        match self {
            Text::Small { kind, .. } | Text::Big { kind, .. } => *kind = k,
        }
    }
}

#[derive(Debug)]
struct Slot {
    cookie: u64,
    ino: Ino,
    text: Text,
}

impl Slot {
    fn live(&self) -> bool {
        !self.text.bytes().is_empty()
    }
    fn name(&self) -> &[u8] {
        &self.text.bytes()[..self.text.name_len()]
    }
    fn key(&self) -> &[u8] {
        let t = self.text.bytes();
        let n = self.text.name_len();
        if t.len() > n {
            &t[n..]
        } else {
            t
        }
    }
    fn ent(&self) -> Ent {
        Ent { ino: self.ino, kind: self.text.kind(), cookie: self.cookie }
    }
}

/// A directory's entries (see the module docs).
#[derive(Debug)]
pub(crate) struct Dir {
    slots: Vec<Slot>,
    index: Index,
    hasher: RandomState,
    next_cookie: u64,
    /// Set by rmdir (and rename over it): nothing may be created inside.
    pub(crate) dead: bool,
}

impl Dir {
    pub(crate) fn new() -> Dir {
        Dir {
            slots: Vec::new(),
            index: Index::Narrow(HashTable::new()),
            hasher: RandomState::new(),
            next_cookie: FIRST_COOKIE,
            dead: false,
        }
    }

    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The cookie the next entry inserted will get: every entry here now
    /// has a lower one.
    pub(crate) fn next_cookie(&self) -> u64 {
        self.next_cookie
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        let h = self.hasher.hash_one(key);
        self.index.find(h, |i| self.slots[i].key() == key)
    }

    /// The entry whose key is `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Ent> {
        self.find(key).map(|i| self.slots[i].ent())
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.find(key).is_some()
    }

    /// The name (as stored) of the entry whose key is `key`.
    pub(crate) fn name_of(&self, key: &[u8]) -> Option<&[u8]> {
        self.find(key).map(|i| self.slots[i].name())
    }

    /// Adds an entry (the caller checked that `key` is not there and that
    /// `name` is a valid name: 1 to 255 bytes) with the next cookie.
    pub(crate) fn insert(&mut self, key: &[u8], name: &[u8], ino: Ino, kind: FileType) {
        debug_assert!(!name.is_empty() && !key.is_empty() && name.len() <= crate::types::NAME_MAX);
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let i = self.slots.len();
        self.slots.push(Slot { cookie, ino, text: Text::new(key, name, kind) });
        let Dir { slots, index, hasher, .. } = self;
        index.insert(hasher.hash_one(key), i, |j| hasher.hash_one(slots[j].key()));
    }

    /// Removes the entry of `key`; returns it and its stored name.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<(Ent, Box<[u8]>)> {
        let h = self.hasher.hash_one(key);
        let Dir { slots, index, .. } = self;
        let i = index.remove(h, |i| slots[i].key() == key)?;
        let s = &mut slots[i];
        let ent = s.ent();
        let name = match std::mem::replace(&mut s.text, Text::EMPTY) {
            Text::Big { name_len, bytes, .. } if bytes.len() == name_len as usize => bytes,
            t => t.bytes()[..t.name_len()].into(),
        };
        self.maybe_compact();
        Some((ent, name))
    }

    /// The length of the name stored for `key`.
    pub(crate) fn name_len(&self, key: &[u8]) -> Option<usize> {
        self.find(key).map(|i| self.slots[i].name().len())
    }

    /// Points the entry of `key` at another inode (`RENAME_EXCHANGE`),
    /// keeping its name and cookie.
    pub(crate) fn set_target(&mut self, key: &[u8], ino: Ino, kind: FileType) {
        if let Some(i) = self.find(key) {
            let s = &mut self.slots[i];
            s.ino = ino;
            s.text.set_kind(kind);
        }
    }

    /// Changes the stored name of the entry of `key` (a case-only rename on
    /// a case-insensitive mount: the key stays).
    pub(crate) fn set_name(&mut self, key: &[u8], name: &[u8]) {
        if let Some(i) = self.find(key) {
            let s = &mut self.slots[i];
            s.text = Text::new(key, name, s.text.kind());
        }
    }

    /// Live entries with a cookie of at least `from`, in cookie order: the
    /// stored name and the entry.
    pub(crate) fn iter_from(&self, from: u64) -> impl Iterator<Item = (&[u8], Ent)> + '_ {
        let start = self.slots.partition_point(|s| s.cookie < from);
        self.slots[start..].iter().filter(|s| s.live()).map(|s| (s.name(), s.ent()))
    }

    /// Bytes of one slot (for the per-file memory bench).
    pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

    /// Drops the tombstones once they outnumber the live entries.
    fn maybe_compact(&mut self) {
        let live = self.index.len();
        if self.slots.len() < COMPACT_MIN || live * 2 >= self.slots.len() {
            return;
        }
        self.slots.retain(Slot::live);
        if self.slots.capacity() > 4 * self.slots.len().max(4) {
            self.slots.shrink_to(2 * self.slots.len());
        }
        let Dir { slots, index, hasher, .. } = self;
        *index = Index::for_slots(slots.len());
        for (i, s) in slots.iter().enumerate() {
            index.insert(hasher.hash_one(s.key()), i, |j| hasher.hash_one(slots[j].key()));
        }
    }
}

/// The slot numbers of the live entries, hashed by key: `u16`s while the
/// slots fit them (3 bytes a bucket with hashbrown's control byte, not 5:
/// about 4 bytes less per entry, issue 17, per-file cost), `u32`s once a
/// directory has more than 65,536 slots (2^32 slots of 40 bytes would be
/// 160 GiB of slots alone: the memory limit comes first). Every method
/// takes the slot number's key hash (`rehash` for the entries a growing
/// table moves).
#[derive(Debug)]
enum Index {
    Narrow(HashTable<u16>),
    Wide(HashTable<u32>),
}

/// A slot number as an index stores it.
trait SlotNo: Copy {
    fn get(self) -> usize;
    fn make(i: usize) -> Option<Self>;
}

impl SlotNo for u16 {
    fn get(self) -> usize {
        usize::from(self)
    }
    fn make(i: usize) -> Option<u16> {
        u16::try_from(i).ok()
    }
}

impl SlotNo for u32 {
    fn get(self) -> usize {
        self as usize
    }
    fn make(i: usize) -> Option<u32> {
        u32::try_from(i).ok()
    }
}

fn find_in<T: SlotNo>(t: &HashTable<T>, h: u64, eq: impl Fn(usize) -> bool) -> Option<usize> {
    t.find(h, |&i| eq(i.get())).map(|&i| i.get())
}

fn remove_in<T: SlotNo>(t: &mut HashTable<T>, h: u64, eq: impl Fn(usize) -> bool) -> Option<usize> {
    Some(t.find_entry(h, |&i| eq(i.get())).ok()?.remove().0.get())
}

impl Index {
    /// An empty index for slots numbered below `n`, with room for `n`.
    fn for_slots(n: usize) -> Index {
        if u16::make(n.saturating_sub(1)).is_some() {
            Index::Narrow(HashTable::with_capacity(n))
        } else {
            Index::Wide(HashTable::with_capacity(n))
        }
    }

    fn len(&self) -> usize {
        match self {
            Index::Narrow(t) => t.len(),
            Index::Wide(t) => t.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(&self, h: u64, eq: impl Fn(usize) -> bool) -> Option<usize> {
        match self {
            Index::Narrow(t) => find_in(t, h, eq),
            Index::Wide(t) => find_in(t, h, eq),
        }
    }

    /// Adds slot `i` (not in the index) under hash `h`; a narrow index
    /// turns wide first if `i` does not fit it.
    fn insert(&mut self, h: u64, i: usize, rehash: impl Fn(usize) -> u64) {
        if let Index::Narrow(t) = self {
            if let Some(n) = u16::make(i) {
                t.insert_unique(h, n, |&j| rehash(j.get()));
                return;
            }
            let mut wide = HashTable::with_capacity(t.len() + 1);
            for &j in t.iter() {
                wide.insert_unique(rehash(j.get()), u32::from(j), |&k: &u32| rehash(k.get()));
            }
            *self = Index::Wide(wide);
        }
        if let Index::Wide(t) = self {
            let n = u32::make(i).expect("fewer than 2^32 slots (the memory limit comes first)");
            t.insert_unique(h, n, |&j| rehash(j.get()));
        }
    }

    /// Takes out the slot number whose entry `eq` finds under hash `h`.
    fn remove(&mut self, h: u64, eq: impl Fn(usize) -> bool) -> Option<usize> {
        match self {
            Index::Narrow(t) => remove_in(t, h, eq),
            Index::Wide(t) => remove_in(t, h, eq),
        }
    }
}

// A slot is 40 bytes: the name's length and the kind fit in the text's
// spare bytes.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Slot>() == 40);

#[cfg(test)]
mod tests {
    use super::*;

    fn names(d: &Dir, from: u64) -> Vec<(Vec<u8>, u64)> {
        d.iter_from(from).map(|(n, e)| (n.to_vec(), e.cookie)).collect()
    }

    /// Past 65,536 slots the index turns wide and still finds every
    /// entry; once removals compact the slots below that, narrow again.
    #[test]
    fn the_index_widens_past_65536_slots() {
        let mut d = Dir::new();
        let n = 70_000u64;
        let key = |i: u64| format!("f{i}").into_bytes();
        for i in 0..n {
            d.insert(&key(i), &key(i), 100 + i, FileType::Regular);
            if i == 65_535 {
                assert!(matches!(d.index, Index::Narrow(_)), "65,536 slots fit u16 numbers");
            }
        }
        assert!(matches!(d.index, Index::Wide(_)));
        assert!((0..n).all(|i| d.get(&key(i)).map(|e| e.ino) == Some(100 + i)));
        for i in 0..60_000 {
            assert_eq!(d.remove(&key(i)).map(|(e, _)| e.ino), Some(100 + i));
        }
        assert_eq!(d.len(), 10_000);
        assert!(matches!(d.index, Index::Narrow(_)), "compacted below 65,536 slots");
        assert!((60_000..n).all(|i| d.get(&key(i)).map(|e| e.ino) == Some(100 + i)));
        assert!((0..60_000).all(|i| !d.contains(&key(i))));
        let listed: Vec<u64> = d.iter_from(0).map(|(_, e)| e.ino).collect();
        assert_eq!(listed, (60_100..n + 100).collect::<Vec<_>>(), "cookie order kept");
    }

    #[test]
    fn cookies_stay_across_removals_and_compaction() {
        let mut d = Dir::new();
        for i in 0..100u64 {
            let n = format!("f{i}");
            d.insert(n.as_bytes(), n.as_bytes(), 100 + i, FileType::Regular);
        }
        // Remove 80 (compacts on the way), keep every fifth.
        for i in (0..100u64).filter(|i| i % 5 != 0) {
            let n = format!("f{i}");
            let (e, name) = d.remove(n.as_bytes()).unwrap();
            assert_eq!((e.ino, &*name), (100 + i, n.as_bytes()));
        }
        assert!(d.slots.len() < 100, "compacted");
        assert_eq!(d.len(), 20);
        let all = names(&d, 0);
        let want: Vec<_> =
            (0..100u64).filter(|i| i % 5 == 0).map(|i| (format!("f{i}").into_bytes(), FIRST_COOKIE + i)).collect();
        assert_eq!(all, want);
        // Resuming after any cookie gives the rest, exactly.
        for (k, (_, c)) in want.iter().enumerate() {
            assert_eq!(names(&d, c + 1), want[k + 1..].to_vec());
        }
        for i in (0..100u64).filter(|i| i % 5 == 0) {
            assert_eq!(d.get(format!("f{i}").as_bytes()).map(|e| e.ino), Some(100 + i));
        }
        assert!(d.get(b"f1").is_none());
        // New entries get new, larger cookies.
        d.insert(b"f1", b"f1", 7, FileType::Regular);
        assert_eq!(names(&d, 0).last().unwrap(), &(b"f1".to_vec(), FIRST_COOKIE + 100));
    }

    #[test]
    fn long_names_and_keys_on_the_heap() {
        let mut d = Dir::new();
        let long = [b'a'; 255];
        let name = [b'A'; 255];
        d.insert(&long, &name, 9, FileType::Regular);
        d.insert(b"0123456789abcdefghijk", b"0123456789ABCDEFGHIJK", 10, FileType::Regular);
        d.insert(b"0123456789abcdefghij", b"0123456789abcdefghij", 11, FileType::Fifo);
        assert_eq!(d.get(&long).map(|e| e.ino), Some(9));
        assert_eq!(names(&d, 0).iter().map(|(n, _)| n.len()).collect::<Vec<_>>(), [255, 21, 20]);
        assert_eq!(d.get(b"0123456789abcdefghij").map(|e| (e.ino, e.kind)), Some((11, FileType::Fifo)));
        assert_eq!(&*d.remove(&long).unwrap().1, &name[..]);
        assert_eq!(&*d.remove(b"0123456789abcdefghijk").unwrap().1, b"0123456789ABCDEFGHIJK");
    }

    #[test]
    fn folded_keys_keep_the_stored_name() {
        let mut d = Dir::new();
        d.insert(b"readme", b"README", 5, FileType::Regular);
        assert_eq!(d.get(b"readme").map(|e| e.ino), Some(5));
        assert!(d.get(b"README").is_none());
        assert_eq!(names(&d, 0)[0].0, b"README");
        d.set_name(b"readme", b"ReadMe");
        assert_eq!(names(&d, 0)[0].0, b"ReadMe");
        d.set_target(b"readme", 6, FileType::Symlink);
        let (e, name) = d.remove(b"readme").unwrap();
        assert_eq!((e.ino, e.kind, &*name), (6, FileType::Symlink, &b"ReadMe"[..]));
        assert!(d.is_empty());
    }
}
