//! The sector table: a persistent radix tree from sector index to sector.
//!
//! A [`Table`] is a value: cloning it is O(1) (one `Arc` increment), and a
//! change copies only the path from the root to the touched leaf (16-way
//! nodes, so a path has `log16(sectors)` nodes); untouched subtrees and the
//! sectors themselves stay shared between versions. That makes publishing a
//! new version O(log n) per touched sector, never O(file size).
//!
//! Mutation goes through `&mut Table` and uses copy-on-write per node: a node
//! whose `Arc` is unique (count 1) belongs only to this working copy and is
//! changed in place; a shared node is copied first. The published version
//! always holds a count on its root, so nothing a reader can reach is ever
//! changed in place.

use super::Sector;
use crate::sync::Arc;

const BITS: u32 = 4;
const FAN: usize = 1 << BITS;
const MASK: u64 = FAN as u64 - 1;
/// Levels above the leaves needed for any `u64` index.
const MAX_HEIGHT: u32 = 64_u32.div_ceil(BITS) - 1;

#[derive(Clone)]
enum Node {
    // The slots live inside the node's `Arc` allocation (no `Box`): one
    // allocation per copied node, one pointer chase per level.
    Leaf([Option<Arc<Sector>>; FAN]),
    Inner([Option<Arc<Node>>; FAN]),
}

impl Node {
    fn new(height: u32) -> Node {
        if height == 0 {
            Node::Leaf(std::array::from_fn(|_| None))
        } else {
            Node::Inner(std::array::from_fn(|_| None))
        }
    }
}

/// Copy-on-write access to a node: in place if unique, else a private copy.
fn make_mut(a: &mut Arc<Node>) -> &mut Node {
    if Arc::get_mut(a).is_none() {
        *a = Arc::new((**a).clone());
    }
    Arc::get_mut(a).expect("a fresh Arc is unique")
}

/// Sectors one subtree at `height` covers (saturating at `u64::MAX`).
fn span(height: u32) -> u64 {
    let bits = BITS * (height + 1);
    if bits >= 64 {
        u64::MAX
    } else {
        1u64 << bits
    }
}

fn slot_of(idx: u64, height: u32) -> usize {
    ((idx >> (BITS * height)) & MASK) as usize
}

/// A persistent map from sector index to sector.
#[derive(Clone, Default)]
pub struct Table {
    root: Option<Arc<Node>>,
    height: u32,
    count: u64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("height", &self.height).field("count", &self.count).finish()
    }
}

impl Table {
    /// Number of sectors present.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sector at `idx`, if any.
    pub fn get(&self, idx: u64) -> Option<&Arc<Sector>> {
        if idx >= span(self.height) && self.height < MAX_HEIGHT {
            return None;
        }
        let mut node = self.root.as_deref()?;
        let mut h = self.height;
        loop {
            match node {
                Node::Inner(kids) => {
                    node = kids[slot_of(idx, h)].as_deref()?;
                    h = h.checked_sub(1)?;
                }
                Node::Leaf(secs) => return secs[slot_of(idx, 0)].as_ref(),
            }
        }
    }

    /// Whether the sector at `idx` is reachable only from this table (every
    /// node on its path and the sector itself have an `Arc` count of 1).
    pub fn is_exclusive(&self, idx: u64) -> bool {
        let Some(root) = self.root.as_ref() else { return false };
        if Arc::strong_count(root) != 1 {
            return false;
        }
        let mut node: &Node = root;
        let mut h = self.height;
        loop {
            match node {
                Node::Inner(kids) => match kids[slot_of(idx, h)].as_ref() {
                    Some(k) if Arc::strong_count(k) == 1 => {
                        node = k;
                        h -= 1;
                    }
                    _ => return false,
                },
                Node::Leaf(secs) => return secs[slot_of(idx, 0)].as_ref().is_some_and(|s| Arc::strong_count(s) == 1),
            }
        }
    }

    /// Puts `sector` at `idx` (copying the path), returning the old one.
    pub fn set(&mut self, idx: u64, sector: Option<Arc<Sector>>) -> Option<Arc<Sector>> {
        if sector.is_none() && self.get(idx).is_none() {
            return None;
        }
        while idx >= span(self.height) && self.height < MAX_HEIGHT {
            self.height += 1;
            if let Some(old) = self.root.take() {
                let mut n = Node::new(self.height);
                if let Node::Inner(kids) = &mut n {
                    kids[0] = Some(old);
                }
                self.root = Some(Arc::new(n));
            }
        }
        let height = self.height;
        let mut node = self.root.get_or_insert_with(|| Arc::new(Node::new(height)));
        let mut h = height;
        let old = loop {
            match make_mut(node) {
                Node::Inner(kids) => {
                    node = kids[slot_of(idx, h)].get_or_insert_with(|| Arc::new(Node::new(h - 1)));
                    h -= 1;
                }
                Node::Leaf(secs) => break std::mem::replace(&mut secs[slot_of(idx, 0)], sector.clone()),
            }
        };
        match (&old, &sector) {
            (None, Some(_)) => self.count += 1,
            (Some(_), None) => self.count -= 1,
            _ => {}
        }
        if sector.is_none() {
            self.prune();
        }
        old
    }

    /// Removes every sector with index in `from..to`.
    pub fn remove_range(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        let Some(root) = self.root.as_mut() else { return };
        let removed = remove_in(root, self.height, 0, from, to);
        self.count -= removed;
        if self.count == 0 {
            self.root = None;
            self.height = 0;
        } else {
            self.prune();
        }
    }

    /// Drops empty levels at the top.
    fn prune(&mut self) {
        if self.count == 0 {
            self.root = None;
            self.height = 0;
            return;
        }
        while self.height > 0 {
            let Some(Node::Inner(kids)) = self.root.as_deref() else { break };
            if kids[1..].iter().any(Option::is_some) {
                break;
            }
            self.root = kids[0].clone();
            self.height -= 1;
        }
    }

    /// How many sectors have an index in `from..to`: O(height × 64) plus
    /// the sectors counted, never O(`to - from`).
    pub fn count_range(&self, from: u64, to: u64) -> u64 {
        match self.root.as_deref() {
            Some(root) if from < to => count_range_in(root, self.height, 0, from, to),
            _ => 0,
        }
    }

    /// The first index `>= from` holding a sector.
    pub fn next_present(&self, from: u64) -> Option<u64> {
        self.next_present_before(from, u64::MAX)
    }

    /// The first index in `from..to` holding a sector: visits only the nodes
    /// that overlap `from..to` (never the rest of the file).
    pub fn next_present_before(&self, from: u64, to: u64) -> Option<u64> {
        let root = self.root.as_deref()?;
        next_in(root, self.height, 0, from, to, true)
    }

    /// The first index in `from..to` holding no sector, visiting only the
    /// nodes that overlap `from..to`.
    pub fn next_absent_before(&self, from: u64, to: u64) -> Option<u64> {
        if from >= to {
            return None;
        }
        let k = match self.root.as_deref() {
            None => from,
            Some(_) if from >= span(self.height) && self.height < MAX_HEIGHT => from,
            Some(root) => next_in(root, self.height, 0, from, to, false).unwrap_or(span(self.height).max(from)),
        };
        (k < to).then_some(k)
    }

    /// The first index `>= from` holding no sector.
    pub fn next_absent(&self, from: u64) -> u64 {
        match self.root.as_deref() {
            None => from,
            Some(root) => {
                if from >= span(self.height) && self.height < MAX_HEIGHT {
                    return from;
                }
                next_in(root, self.height, 0, from, u64::MAX, false).unwrap_or(span(self.height).max(from))
            }
        }
    }
}

/// Removes sectors in `from..to` below `node` (covering `base..base+span(h)`),
/// returning how many were removed.
fn remove_in(node: &mut Arc<Node>, h: u32, base: u64, from: u64, to: u64) -> u64 {
    let n = make_mut(node);
    let mut removed = 0;
    match n {
        Node::Leaf(secs) => {
            for (i, s) in secs.iter_mut().enumerate() {
                let idx = base + i as u64;
                if idx >= from && idx < to && s.take().is_some() {
                    removed += 1;
                }
            }
        }
        Node::Inner(kids) => {
            let child_span = span(h - 1);
            for (i, k) in kids.iter_mut().enumerate() {
                let cbase = base + i as u64 * child_span;
                let cend = cbase.saturating_add(child_span);
                if cend <= from || cbase >= to {
                    continue;
                }
                if let Some(child) = k.as_mut() {
                    if from <= cbase && to >= cend {
                        removed += count_in(child);
                        *k = None;
                    } else {
                        removed += remove_in(child, h - 1, cbase, from, to);
                        if is_empty(child) {
                            *k = None;
                        }
                    }
                }
            }
        }
    }
    removed
}

/// Sectors in `from..to` below `node` (covering `base..base+span(h)`):
/// visits only the slots that overlap the range.
fn count_range_in(node: &Node, h: u32, base: u64, from: u64, to: u64) -> u64 {
    match node {
        Node::Leaf(secs) => {
            let (i, j) = slots_in(base, 1, from, to);
            secs[i..j].iter().filter(|s| s.is_some()).count() as u64
        }
        Node::Inner(kids) => {
            let child_span = span(h - 1);
            let (i, j) = slots_in(base, child_span, from, to);
            let mut n = 0;
            for (i, k) in kids.iter().enumerate().take(j).skip(i) {
                let Some(child) = k.as_deref() else { continue };
                let cbase = base + i as u64 * child_span;
                let cend = cbase.saturating_add(child_span);
                n += if from <= cbase && to >= cend {
                    count_in(child)
                } else {
                    count_range_in(child, h - 1, cbase, from, to)
                };
            }
            n
        }
    }
}

/// The slots `i..j` of a node at `base` with children of `child_span`
/// indices that overlap `from..to` (`from < to`).
fn slots_in(base: u64, child_span: u64, from: u64, to: u64) -> (usize, usize) {
    let i = (from.saturating_sub(base) / child_span).min(FAN as u64) as usize;
    let j = (to.saturating_sub(base).div_ceil(child_span)).min(FAN as u64) as usize;
    (i, j.max(i))
}

fn is_empty(node: &Node) -> bool {
    match node {
        Node::Leaf(s) => s.iter().all(Option::is_none),
        Node::Inner(k) => k.iter().all(Option::is_none),
    }
}

fn count_in(node: &Node) -> u64 {
    match node {
        Node::Leaf(s) => s.iter().filter(|s| s.is_some()).count() as u64,
        Node::Inner(k) => k.iter().flatten().map(|c| count_in(c)).sum(),
    }
}

/// The first index in `from..to` below `node` that is present (`want =
/// true`) or absent (`want = false`); nodes past `to` are not visited.
fn next_in(node: &Node, h: u32, base: u64, from: u64, to: u64, want: bool) -> Option<u64> {
    match node {
        Node::Leaf(secs) => {
            let start = from.saturating_sub(base).min(FAN as u64) as usize;
            let end = to.saturating_sub(base).min(FAN as u64) as usize;
            (start..end).find(|&i| secs[i].is_some() == want).map(|i| base + i as u64)
        }
        Node::Inner(kids) => {
            let child_span = span(h - 1);
            let first = (from.saturating_sub(base) / child_span).min(FAN as u64) as usize;
            for (i, k) in kids.iter().enumerate().skip(first) {
                let cbase = base + i as u64 * child_span;
                if cbase >= to {
                    return None;
                }
                let cfrom = from.max(cbase);
                match k {
                    None if !want => return Some(cfrom),
                    None => {}
                    Some(c) => {
                        if let Some(r) = next_in(c, h - 1, cbase, cfrom, to, want) {
                            return Some(r);
                        }
                    }
                }
            }
            None
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sector::Pool;

    /// `next_*_before` agree with a plain scan, and stay inside their range.
    #[test]
    fn bounded_searches_match_a_scan() {
        let pool = Pool::new(4096, 1 << 30, 1);
        let mut res = pool.reserve(300 * 4096).unwrap();
        let mut t = Table::default();
        let present: Vec<u64> = (0..5000).filter(|k| k % 7 == 0 || (100..4200).contains(k)).take(300).collect();
        for &k in &present {
            t.set(k, Some(res.sector().unwrap()));
        }
        let is = |k: u64| present.contains(&k);
        for from in [0, 1, 63, 64, 99, 100, 101, 4095, 4096, 4199, 4200, 4999] {
            for to in [from, from + 1, from + 5, from + 64, from + 5000, u64::MAX] {
                let want_p = (from..to.min(6000)).find(|&k| is(k));
                assert_eq!(t.next_present_before(from, to), want_p, "present {from}..{to}");
                let want_n = present.iter().filter(|&&k| (from..to).contains(&k)).count() as u64;
                assert_eq!(t.count_range(from, to), want_n, "count {from}..{to}");
                let want_a = (from..to).find(|&k| !is(k));
                assert_eq!(t.next_absent_before(from, to), want_a, "absent {from}..{to}");
            }
        }
    }
}
