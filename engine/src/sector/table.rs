//! The page table: a persistent radix tree from page index to page.
//!
//! A [`Table`] maps the pages of one file (page `p` holds bytes
//! `p * page_size..`) to [`Page`] handles: leaves of 64 consecutive pages
//! (256 KiB of data, 8 bytes a page), under 16-way inner nodes. A 1 GiB file
//! is 4096 leaves and 273 inner nodes, 2.7 MB in all, four levels deep
//! (issue 18: 16-page leaves of 16-byte handles were 21 MB and five levels,
//! and a random 4 KiB read paid a cache miss on each of the lower two). It is
//! persistent: a new version shares every node and page it does not change
//! with the versions before it, and a change copies only the nodes on the
//! path from the root to the touched leaf.
//!
//! # Nodes without reference counts (issue 18)
//! Children are plain pointers: copying a node copies 16 pointers and
//! touches none of the children (the `Arc` tables before this paid 16
//! reference-count increments per copied node, mostly cache misses on cold
//! siblings, and 16 decrements when the old version dropped). Who owns a
//! node is decided by versions instead (`crate::node`, "Versions"):
//!
//! * every node carries the number (`gen`) of the version whose batch made
//!   it. While a batch builds its *draft* (version `gen`), a node with that
//!   `gen` is *private*: reachable from the draft only, never published, so
//!   the runner changes it in place. Any other node may be reachable from a
//!   published version and is never written: a change copies it (path copy)
//!   and *retires* the original into the batch's retired list;
//! * a leaf also marks its *fresh* pages (taken in this batch, never
//!   published): those are the pages the page contract (rule 3, in
//!   `sector/mod.rs`) lets the runner write below `init`;
//! * and its *shared* pages (issue 20): put in this slot by a clone, or
//!   handed to one, so another table slot may hold the page too (the
//!   pool's share counts say whether one still does). A shared page has
//!   `init` at the page size and is never written in place, even if fresh
//!   (`Leaf::marked_fresh` and `LeafMut::is_fresh` say "writable in
//!   place": fresh and not shared); a copy-on-write of one that another
//!   slot still holds needs a limit-checked reservation (`data.rs`). The
//!   mark is kept by copies and cleared when the slot gets another page;
//!   it may outlive the sharing (the cautious side);
//! * what is retired (a node, a page, or a whole detached subtree) is
//!   reachable from the version being replaced (and older ones) but from no
//!   newer one; it is freed when that version and every older one are gone
//!   (`free_retired`), and the nodes go to a per-thread cache of spare
//!   nodes that the next path copy takes, so a steady stream of writes
//!   allocates nothing.
//!
//! Every way of creating a changed table goes through an `Edit`, whose
//! constructor is `unsafe`: its caller promises that `gen` is newer than
//! every node any published version reaches, which is what makes "private"
//! mean private. loom: a node carries a `Stamp` that readers observe and
//! the runner renews on reuse and on every change (`node_mut`), so a node
//! recycled, or changed in place, while a reader can still walk it is a
//! loom error (`reclaim.rs`, `read_with.rs`; injected bug
//! `draft_reuses_gen`). Under loom, leaves hold 2 pages and inner nodes 2
//! children, so the models' few pages span inner nodes.

use std::cell::RefCell;
use std::ptr::NonNull;

use super::Pool;
use crate::sync::{thread_local, Page, Stamp};

// Under loom, 2-page leaves under 2-way nodes: the models' files have a few
// pages, and at the real geometry (64-page leaves) they never reach an inner
// node; so small they path-copy inner nodes, grow and prune the height and
// retire whole subtrees (issue 18).
#[cfg(not(loom))]
const BITS: u32 = 4;
#[cfg(loom)]
const BITS: u32 = 1;
/// Children of an inner node.
const FAN: usize = 1 << BITS;
const MASK: u64 = FAN as u64 - 1;
#[cfg(not(loom))]
const LEAF_BITS: u32 = 6;
#[cfg(loom)]
const LEAF_BITS: u32 = 1;
/// Pages of a leaf.
pub const LEAF: usize = 1 << LEAF_BITS;
/// Levels above the leaves needed for any `u64` index.
const MAX_HEIGHT: u32 = (64 - LEAF_BITS).div_ceil(BITS);

/// What one more table slot holding a page costs, charged against the
/// limit for each page a clone puts in a second slot (issue 20: the copy's
/// leaves are not file data, and without a charge any number of clones of
/// one file would take table memory without bound): a leaf's bytes over
/// its pages, rounded up (11 bytes per 4 KiB page). Under loom one byte: the
/// models' limits are a few 8-byte pages, and a clone's slots must not
/// make room for one.
#[cfg(not(loom))]
pub const SLOT_COST: u64 = (std::mem::size_of::<TNode>() as u64).div_ceil(LEAF as u64);
#[cfg(loom)]
pub const SLOT_COST: u64 = 1;

/// One node: `FAN` children (16), or a leaf of `LEAF` pages (64).
pub(crate) struct TNode {
    /// The version whose batch made (or last reinitialised) this node.
    gen: u64,
    stamp: Stamp,
    body: Body,
}

// One node type for both kinds, so a spare node serves either (a leaf is
// 648 bytes, an inner node's slots 128; there are ~15 leaves per inner node).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy)]
enum Body {
    Inner([Option<NodePtr>; FAN]),
    Leaf(Leaf),
}

/// 64 consecutive pages of a file.
#[derive(Clone, Copy)]
pub struct Leaf {
    pages: [Option<Page>; LEAF],
    /// Per page: bytes ever written (the page contract's `init`); runner
    /// only. Pages are at most 64 KiB: `u16::MAX` stands for 65535 or
    /// 65536, read as 65536 (rounding `init` up only ever makes the runner
    /// copy where it could have written in place, never the reverse).
    init: [u16; LEAF],
    /// Per page: taken in the batch of `gen` (valid only in a private leaf).
    fresh: u64,
    /// Per page: taken in a batch newer than version `young_w` (see
    /// [`Edit::young_after`]); no version up to `young_w` reaches it.
    /// Runner only, like `init`.
    young: u64,
    /// The version `young` is relative to.
    young_w: u64,
    /// Per page: put here by a clone or handed to one (see the module
    /// docs); never written in place. Runner only, like `init`.
    shared: u64,
}

impl Leaf {
    const EMPTY: Leaf = Leaf { pages: [None; LEAF], init: [0; LEAF], fresh: 0, young: 0, young_w: u64::MAX, shared: 0 };

    /// The page in slot `i`.
    pub fn page(&self, i: usize) -> Option<Page> {
        self.pages[i]
    }

    /// Slot `i`'s `init` (runner only: meaningful in the draft's leaves).
    pub(crate) fn init(&self, i: usize) -> usize {
        init_of(self.init[i])
    }

    /// Whether slot `i` is marked fresh and not shared: writable in place
    /// (meaningful only in a leaf of the draft's own `gen`: see
    /// [`Table::leaf`]).
    pub(crate) fn marked_fresh(&self, i: usize) -> bool {
        (self.fresh & !self.shared) & (1 << i) != 0
    }

    /// Whether slot `i` is marked shared (a clone's page: see the module
    /// docs).
    pub(crate) fn marked_shared(&self, i: usize) -> bool {
        self.shared & (1 << i) != 0
    }

    /// Whether any slot is marked shared.
    pub(crate) fn any_marked_shared(&self) -> bool {
        self.shared != 0
    }

    /// The slots `i..j` that overlap pages `from..to` of a leaf at `base`.
    fn slots(base: u64, from: u64, to: u64) -> (usize, usize) {
        let i = from.saturating_sub(base).min(LEAF as u64) as usize;
        let j = to.saturating_sub(base).min(LEAF as u64) as usize;
        (i, j.max(i))
    }
}

/// A pointer to a node, which the version protocol keeps alive.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodePtr(NonNull<TNode>);

// SAFETY: a node is shared between threads only while a published version
// reaches it, and such a node is never written (only a draft's private
// nodes are, by the runner alone); nodes are freed only when no version
// that reaches them can be read (`free_retired`, `Table::free_all`).
unsafe impl Send for NodePtr {}
// SAFETY: as for `Send`.
unsafe impl Sync for NodePtr {}

/// Spare nodes kept per thread for the next path copy (of each kind).
const SPARE_MAX: usize = 128;

thread_local! {
    // Boxes: a node's address is what tables point to (`Box::leak`). One
    // stack per kind, so a copy reuses a node of its own kind and writes
    // only its slots (128 bytes for an inner node, not the leaf's 648).
    #[allow(clippy::missing_const_for_thread_local, clippy::vec_box)] // loom's thread_local! has no const form
    static SPARE: RefCell<[Vec<Box<TNode>>; 2]> = RefCell::new([Vec::new(), Vec::new()]);
}

impl Body {
    /// 0 for an inner node, 1 for a leaf (the spare stack it goes to).
    fn kind(&self) -> usize {
        match self {
            Body::Inner(_) => 0,
            Body::Leaf(_) => 1,
        }
    }
}

/// A new private node of version `gen` (a spare one if this thread has
/// one), whose body `init` writes in place: a copy of a node's slots, or an
/// empty node (`init` gets a node of kind `kind`, with stale slots).
fn alloc(gen: u64, kind: usize, init: impl FnOnce(&mut Body)) -> NodePtr {
    let spare = SPARE.try_with(|s| s.borrow_mut()[kind].pop()).ok().flatten();
    let node = match spare {
        Some(mut n) => {
            n.gen = gen;
            n.stamp.renew();
            init(&mut n.body);
            n
        }
        None => {
            let body = if kind == 0 { Body::Inner([None; FAN]) } else { Body::Leaf(Leaf::EMPTY) };
            let mut n = Box::new(TNode { gen, stamp: Stamp::new(), body });
            init(&mut n.body);
            n
        }
    };
    NodePtr(NonNull::from(Box::leak(node)))
}

/// A new private empty node for `height` (0: a leaf).
fn alloc_empty(gen: u64, height: u32) -> NodePtr {
    if height == 0 {
        alloc(gen, 1, |b| *b = Body::Leaf(Leaf::EMPTY))
    } else {
        alloc(gen, 0, |b| *b = Body::Inner([None; FAN]))
    }
}

/// A new private copy of `src` (a leaf's copy has no fresh pages: all of
/// `src`'s were published), its young pages relative to version `w`.
fn alloc_copy(gen: u64, w: u64, src: &TNode) -> NodePtr {
    alloc(gen, src.body.kind(), |b| match (b, &src.body) {
        (Body::Inner(d), Body::Inner(k)) => *d = *k,
        #[cfg(not(loom_bug = "leaf_copy_keeps_fresh"))]
        (Body::Leaf(d), Body::Leaf(l)) => {
            d.pages = l.pages;
            d.init = l.init;
            d.fresh = 0;
            // Young relative to `w`: the original's fresh pages if its batch
            // came after `w`, and what was young in it relative to `w` too
            // (relative to an older version it says nothing about `w`).
            d.young = if src.gen > w && w != u64::MAX { l.fresh } else { 0 } | if l.young_w == w { l.young } else { 0 };
            d.young_w = w;
            d.shared = l.shared;
        }
        // Injected bug (loom-tests/tests/table_publish.rs): the copy keeps
        // the marks of the batch that made the original, so pages published
        // since look fresh (writable in place).
        #[cfg(loom_bug = "leaf_copy_keeps_fresh")]
        (Body::Leaf(d), Body::Leaf(l)) => *d = *l,
        (b, body) => *b = *body,
    })
}

/// Frees a node (into this thread's spares).
///
/// # Safety
/// `p` came from [`alloc`], is not freed yet, and no table that anyone can
/// still read reaches it (so nothing dereferences it after this).
unsafe fn free_node(p: NodePtr) {
    // SAFETY: made by `alloc` from a `Box` (`Box::leak`), freed once (the
    // caller's contract), and nobody else uses it any more.
    let b = unsafe { Box::from_raw(p.0.as_ptr()) };
    let kind = b.body.kind();
    let _ = SPARE.try_with(move |s| {
        let s = &mut s.borrow_mut()[kind];
        if s.len() < SPARE_MAX {
            s.push(b);
        }
    });
}

/// Something a version reaches and newer versions do not: freed once that
/// version and every older one are gone.
#[derive(Clone, Copy)]
pub(crate) enum Retired {
    /// A node replaced by its copy (its children stay: they are shared).
    Node(NodePtr),
    /// A detached subtree: the node and everything below it.
    Tree(NodePtr),
    /// A page replaced or cut off.
    Page(Page),
    /// A node made after version [`Edit::young_after`]: no version up to
    /// that one reaches it.
    YoungNode(NodePtr),
    /// A page taken after version [`Edit::young_after`] (as `YoungNode`).
    YoungPage(Page),
}

impl Retired {
    /// Whether it was made after the edit's [`Edit::young_after`] version
    /// (so versions up to that one, which readers may still hold, do not
    /// reach it: `crate::node`, "Versions").
    pub(crate) fn is_young(&self) -> bool {
        matches!(self, Retired::YoungNode(_) | Retired::YoungPage(_))
    }
}

/// The right to change a draft table: its version number, where what it
/// replaces goes, and the pool for what it frees at once.
pub(crate) struct Edit<'a> {
    gen: u64,
    /// Items made in batches after this version are retired as young.
    young_after: u64,
    retired: &'a mut Vec<Retired>,
    pool: &'a Pool,
}

impl<'a> Edit<'a> {
    /// An edit of the draft of version `gen`.
    ///
    /// # Safety
    /// `gen` is newer than every node that any published version (current
    /// or still held by a reader) reaches, and newer than every node of any
    /// other table: so a node with this `gen` is reachable only from the
    /// draft this edit changes, which only the caller (the runner) uses.
    /// Everything put in `retired` stays reachable from the version the
    /// draft replaces until the caller frees it by the version protocol.
    pub(crate) unsafe fn new(gen: u64, retired: &'a mut Vec<Retired>, pool: &'a Pool) -> Self {
        Edit { gen, young_after: u64::MAX, retired, pool }
    }

    /// Sets the version after which what the draft retires counts as
    /// *young*: the newest version a reader may hold other than the one the
    /// draft replaces (`crate::node`, "Versions"). Without it nothing is
    /// young.
    pub(crate) fn young_after(mut self, w: u64) -> Self {
        self.young_after = w;
        self
    }

    /// The draft's version number.
    pub(crate) fn gen(&self) -> u64 {
        self.gen
    }

    /// Retires a published node `n` (at `p`) that the draft no longer
    /// reaches.
    fn retire_node(&mut self, p: NodePtr, n: &TNode) {
        #[cfg(not(loom_bug = "retired_all_young"))]
        let own = n.gen > self.young_after && self.young_after != u64::MAX;
        // Injected bug (loom-tests/tests/read_with.rs): everything a batch
        // retires counts as young, so it goes back while an older version
        // that still reaches it is held.
        #[cfg(loom_bug = "retired_all_young")]
        let own = {
            let _ = n;
            true
        };
        self.retired.push(if own { Retired::YoungNode(p) } else { Retired::Node(p) });
    }

    /// Retires a published page the draft no longer reaches, from slot `i`
    /// of a private leaf.
    fn retire_page(&mut self, m: Page, l: &Leaf, i: usize) {
        #[cfg(not(loom_bug = "retired_all_young"))]
        let young = l.young_w == self.young_after && l.young & (1 << i) != 0;
        #[cfg(loom_bug = "retired_all_young")]
        let young = {
            let _ = (l, i);
            true
        };
        self.retired.push(if young { Retired::YoungPage(m) } else { Retired::Page(m) });
    }

    /// Frees a page that was never published (fresh in this draft).
    ///
    /// # Safety
    /// `m` is marked fresh in a private leaf of this edit's draft (taken in
    /// this batch), and the caller has just taken it out of that leaf (or
    /// cut the leaf out of the draft): nothing reaches it afterwards, and
    /// it is freed once.
    unsafe fn free_fresh(&self, m: Page) {
        // SAFETY: a fresh page was taken in this batch and never published
        // (`Edit::new`'s contract makes "fresh" mean that), so no reader
        // can reach it; it leaves the draft here (this function's contract),
        // so the runner does not reach it either.
        unsafe { self.pool.free_pages(&[m]) }
    }
}

/// Pages one subtree at `height` covers (saturating at `u64::MAX`).
fn span(height: u32) -> u64 {
    let bits = LEAF_BITS + BITS * height;
    if bits >= 64 {
        u64::MAX
    } else {
        1u64 << bits
    }
}

/// The slot of `idx` in its node at `height` (`height` 0: a leaf).
fn slot_of(idx: u64, height: u32) -> usize {
    if height == 0 {
        (idx % LEAF as u64) as usize
    } else {
        ((idx >> (LEAF_BITS + BITS * (height - 1))) & MASK) as usize
    }
}

/// A persistent map from page index to page.
///
/// A `Table` value lives inside one version of a file (or the runner's
/// draft of the next one); the nodes and pages it reaches stay alive for as
/// long as that version does (the version protocol), which is what makes
/// its `&self` methods sound. It is not `Clone`: `Table::share` (unsafe)
/// is the one way to make a second value over the same nodes.
///
/// 16 bytes (issue 17, per-file cost: every version of every file holds
/// one, and 8 bytes more put a version in the next allocator size class):
/// the height a byte (at most `MAX_HEIGHT`, 15), the page count in 48 bits.
#[derive(Default)]
pub struct Table {
    root: Option<NodePtr>,
    height: u8,
    /// Pages present.
    count: Count,
    /// log2 of the page size.
    shift: Shift,
}

#[cfg(all(not(loom), target_pointer_width = "64"))]
const _: () = assert!(std::mem::size_of::<Table>() == 16);

/// A page count in 48 bits and 6 bytes (aligned to 2, so that it packs into
/// [`Table`] beside the height and shift). A table's pages each hold memory
/// or a clone's slot charged against the limit (`SLOT_COST`, 11 bytes), so
/// 2^48 of them are far beyond any machine.
#[derive(Clone, Copy, Default)]
#[repr(C, packed(2))]
struct Count {
    lo: u32,
    hi: u16,
}

impl Count {
    fn get(self) -> u64 {
        u64::from(self.lo) | u64::from(self.hi) << 32
    }

    fn set(&mut self, n: u64) {
        debug_assert!(n < 1 << 48, "a table of {n} pages");
        (self.lo, self.hi) = (n as u32, (n >> 32) as u16);
    }
}

/// log2 of a page size (pages are 1 byte to 64 KiB, `Pool::with_page_size`).
/// A closed set of values rather than a `u32`, so that the spare values
/// hold the variant of `data::Content`: 24 bytes instead of 32 in every
/// version of every file (issue 17, per-file cost).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
#[repr(u8)]
#[rustfmt::skip]
enum Shift {
    #[default]
    P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16,
}

impl Shift {
    /// The shift of `page_size`, a power of two up to 64 KiB.
    fn of(page_size: usize) -> Shift {
        use Shift::*;
        const ALL: [Shift; 17] = [P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16];
        assert!(page_size.is_power_of_two() && page_size <= 1 << 16, "page size {page_size}");
        ALL[page_size.trailing_zeros() as usize]
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("height", &self.height).field("pages", &self.count()).finish()
    }
}

/// The node behind `p`, for reading.
///
/// # Safety
/// `p` is reachable from a table the caller holds for `'a` (so it is alive
/// and, if published, never written during `'a`), or private to the caller.
unsafe fn node<'a>(p: NodePtr) -> &'a TNode {
    // SAFETY: alive for `'a` and not written meanwhile (caller's contract).
    let n = unsafe { p.0.as_ref() };
    n.stamp.observe();
    n
}

/// The node behind `p`, for changing: it must be private.
///
/// # Safety
/// `p` has the draft's `gen` (private: only the draft reaches it, and only
/// the caller changes the draft), and no other reference to it is live.
unsafe fn node_mut<'a>(p: NodePtr) -> &'a mut TNode {
    // SAFETY: private to the caller, no other reference (caller's contract).
    let n = unsafe { &mut *p.0.as_ptr() };
    // A loom-tracked write (nothing in real builds): a node changed in place
    // while a reader can walk it (a published node taken for private) is a
    // loom error at once, not only if its pages are written too.
    n.stamp.renew();
    n
}

impl Table {
    /// An empty table of pages of `page_size` bytes (a power of two).
    pub fn new(page_size: usize) -> Table {
        Table { root: None, height: 0, count: Count::default(), shift: Shift::of(page_size) }
    }

    /// Bytes of one page.
    pub fn page_size(&self) -> u64 {
        1 << self.shift as u32
    }

    /// Levels above the leaves.
    fn height(&self) -> u32 {
        u32::from(self.height)
    }

    /// Number of pages present.
    pub fn count(&self) -> u64 {
        self.count.get()
    }

    /// The node behind `p`, for as long as `self` is borrowed.
    ///
    /// # Safety
    /// `p` is reachable from `self` (its root or below): a pointer from
    /// another table may be freed while `self` is still borrowed.
    unsafe fn node(&self, p: NodePtr) -> &TNode {
        // SAFETY: `p` is reachable from `self` (this function's contract),
        // which lives inside a version the caller holds (or the runner's
        // draft): alive, and if shared, never written (the type's
        // invariant, kept by the version protocol).
        unsafe { node(p) }
    }

    /// The leaf holding page `p`, its version number, and `p`'s slot in it.
    pub fn leaf(&self, p: u64) -> Option<(&Leaf, u64, usize)> {
        if p >= span(self.height()) && self.height() < MAX_HEIGHT {
            return None;
        }
        // SAFETY: the root of `self`.
        let mut n = unsafe { self.node(self.root?) };
        let mut h = self.height();
        loop {
            match &n.body {
                Body::Inner(kids) => {
                    // SAFETY: a child of a node reachable from `self`.
                    n = unsafe { self.node(kids[slot_of(p, h)]?) };
                    h = h.checked_sub(1)?;
                }
                Body::Leaf(l) => return Some((l, n.gen, slot_of(p, 0))),
            }
        }
    }

    /// The page at `p`, if any.
    pub fn get(&self, p: u64) -> Option<Page> {
        self.leaf(p).and_then(|(l, _, i)| l.pages[i])
    }

    /// A second value over the same nodes: the start of a draft.
    ///
    /// # Safety
    /// The copy is used only as the draft of the next version of the
    /// version holding `self`, while that version is alive (the runner
    /// holds it for the batch), through [`Edit`]s of a newer `gen`.
    pub(crate) unsafe fn share(&self) -> Table {
        Table { root: self.root, height: self.height, count: self.count, shift: self.shift }
    }

    /// The private node for `slot` at `height` (copying and retiring a
    /// shared one, making an empty one if absent).
    fn make_private(slot: &mut Option<NodePtr>, height: u32, ed: &mut Edit<'_>) -> NodePtr {
        let p = match *slot {
            None => alloc_empty(ed.gen, height),
            Some(p) => {
                // SAFETY: reachable from the draft, so alive (and if shared,
                // not written while we read it).
                let n = unsafe { node(p) };
                if n.gen == ed.gen {
                    return p;
                }
                ed.retire_node(p, n);
                alloc_copy(ed.gen, ed.young_after, n)
            }
        };
        *slot = Some(p);
        p
    }

    /// The draft's private leaf holding page `p` (path-copied from the
    /// published nodes, or made if absent), to change pages in.
    pub(crate) fn leaf_mut(&mut self, p: u64, ed: &mut Edit<'_>) -> LeafMut<'_> {
        while p >= span(self.height()) && self.height() < MAX_HEIGHT {
            self.height += 1;
            if let Some(old) = self.root {
                let mut kids = [None; FAN];
                kids[0] = Some(old);
                self.root = Some(alloc(ed.gen, 0, |b| *b = Body::Inner(kids)));
            }
        }
        let mut h = self.height();
        let mut n = Self::make_private(&mut self.root, h, ed);
        loop {
            // SAFETY: `n` is private (`make_private`), and the only
            // reference to it is this one (each loop step moves down).
            let nm = unsafe { node_mut(n) };
            match &mut nm.body {
                Body::Inner(kids) => {
                    n = Self::make_private(&mut kids[slot_of(p, h)], h - 1, ed);
                    h -= 1;
                }
                Body::Leaf(leaf) => return LeafMut { leaf, count: &mut self.count },
            }
        }
    }

    /// Removes every page with index in `from..to`: what is private goes
    /// back at once, what a published version reaches is retired.
    pub(crate) fn remove_range(&mut self, from: u64, to: u64, ed: &mut Edit<'_>) {
        if from >= to || self.root.is_none() {
            return;
        }
        let h = self.height();
        let removed = remove_in(&mut self.root, h, 0, from, to, ed);
        self.count.set(self.count() - removed);
        self.prune(ed);
    }

    /// Drops empty levels at the top.
    fn prune(&mut self, ed: &mut Edit<'_>) {
        if self.count() == 0 {
            if let Some(r) = self.root.take() {
                // SAFETY: the draft's root, just cut out of it.
                unsafe { unlink(r, ed) };
            }
            self.height = 0;
            return;
        }
        while self.height() > 0 {
            let Some(r) = self.root else { break };
            // SAFETY: the root of `self`.
            let rn = unsafe { self.node(r) };
            let Body::Inner(kids) = rn.body else { break };
            if kids[1..].iter().any(Option::is_some) {
                break;
            }
            if rn.gen == ed.gen {
                // SAFETY: private (never published), and nothing reaches it
                // once the root moves to its only child.
                unsafe { free_node(r) };
            } else {
                ed.retire_node(r, rn);
            }
            self.root = kids[0];
            self.height -= 1;
        }
    }

    /// How many pages have an index in `from..to`: O(height × 16) plus
    /// the pages counted, never O(`to - from`).
    pub fn count_range(&self, from: u64, to: u64) -> u64 {
        match self.root {
            // SAFETY: the root of `self`.
            Some(root) if from < to => count_range_in(unsafe { self.node(root) }, self.height(), 0, from, to),
            _ => 0,
        }
    }

    /// The first index `>= from` holding a page.
    pub fn next_present(&self, from: u64) -> Option<u64> {
        self.next_present_before(from, u64::MAX)
    }

    /// The first index in `from..to` holding a page: visits only the nodes
    /// that overlap `from..to` (never the rest of the file).
    pub fn next_present_before(&self, from: u64, to: u64) -> Option<u64> {
        // SAFETY: the root of `self`.
        let root = unsafe { self.node(self.root?) };
        next_in(root, self.height(), 0, from, to, true)
    }

    /// The first index in `from..to` holding no page, visiting only the
    /// nodes that overlap `from..to`.
    pub fn next_absent_before(&self, from: u64, to: u64) -> Option<u64> {
        if from >= to {
            return None;
        }
        let k = match self.root {
            None => from,
            Some(_) if from >= span(self.height()) && self.height() < MAX_HEIGHT => from,
            Some(root) => {
                // SAFETY: the root of `self`.
                let n = unsafe { self.node(root) };
                next_in(n, self.height(), 0, from, to, false).unwrap_or(span(self.height()).max(from))
            }
        };
        (k < to).then_some(k)
    }

    /// The first index `>= from` holding no page.
    pub fn next_absent(&self, from: u64) -> u64 {
        self.next_absent_before(from, u64::MAX).unwrap_or(u64::MAX)
    }

    /// Frees every node and page of the table (tests).
    ///
    /// # Safety
    /// No other table that anyone can still read shares any node or page
    /// with this one.
    #[cfg(test)]
    pub(crate) unsafe fn free_all(&mut self, pool: &Pool) {
        if let Some(r) = self.take_tree() {
            // SAFETY: the caller's contract.
            unsafe { free_one(r, pool) };
        }
    }

    /// Takes the whole tree out (the last version of a file going away),
    /// to be freed as one retired subtree, leaving the table empty.
    pub(crate) fn take_tree(&mut self) -> Option<Retired> {
        self.count = Count::default();
        self.height = 0;
        self.root.take().map(Retired::Tree)
    }

    /// Undoes a draft that will not be published: frees what it made (its
    /// private nodes and fresh pages) and leaves everything it shares.
    ///
    /// # Safety
    /// `self` is the draft of `gen` (a table changed only through [`Edit`]s
    /// of `gen`), it is never published, and it is not used afterwards.
    pub(crate) unsafe fn abort(&mut self, gen: u64, pool: &Pool) {
        fn walk(p: NodePtr, gen: u64, pool: &Pool) {
            // SAFETY: reachable from the draft, so alive.
            let n = unsafe { node(p) };
            if n.gen != gen {
                return;
            }
            match &n.body {
                Body::Inner(kids) => kids.iter().flatten().for_each(|&k| walk(k, gen, pool)),
                Body::Leaf(l) => {
                    for (i, m) in l.pages.iter().enumerate() {
                        if let Some(m) = m.filter(|_| l.fresh & (1 << i) != 0) {
                            // SAFETY: a fresh page of a draft that is never
                            // published: nobody else reaches it.
                            unsafe { pool.free_pages(&[m]) };
                        }
                    }
                }
            }
            // SAFETY: private to the draft, which is dropped unpublished.
            unsafe { free_node(p) };
        }
        if let Some(r) = self.root.take() {
            walk(r, gen, pool);
        }
    }
}

/// Detaches `p` (cut out of the draft): a shared node is retired with its
/// whole subtree; a private one is freed, its fresh pages with it, and its
/// shared parts are retired.
///
/// # Safety
/// `p` was reachable from the draft of `ed` (so it is alive) and the caller
/// has just cut it out: no slot of the draft points to it any more, and it
/// is not used after this call (a private node is freed here).
unsafe fn unlink(p: NodePtr, ed: &mut Edit<'_>) {
    // SAFETY: reachable from the draft until now, so alive.
    let n = unsafe { node(p) };
    if n.gen != ed.gen {
        ed.retired.push(Retired::Tree(p));
        return;
    }
    match n.body {
        Body::Inner(kids) => {
            for &k in kids.iter().flatten() {
                // SAFETY: a child of `p`, which is cut out with `p`; a
                // private `p` is its only parent in the draft (a path copy
                // makes one parent per node), and `p` is freed below without
                // reading its slots again.
                unsafe { unlink(k, ed) };
            }
        }
        Body::Leaf(l) => {
            for (i, m) in l.pages.iter().enumerate() {
                let Some(m) = *m else { continue };
                if l.fresh & (1 << i) != 0 {
                    // SAFETY: fresh in this private leaf, which is cut out
                    // of the draft and freed below.
                    unsafe { ed.free_fresh(m) };
                } else {
                    ed.retire_page(m, &l, i);
                }
            }
        }
    }
    // SAFETY: private (never published) and cut out of the draft.
    unsafe { free_node(p) };
}

/// A private leaf of the draft, to change pages in.
pub(crate) struct LeafMut<'t> {
    leaf: &'t mut Leaf,
    count: &'t mut Count,
}

impl LeafMut<'_> {
    /// The page in slot `i`.
    pub(crate) fn page(&self, i: usize) -> Option<Page> {
        self.leaf.pages[i]
    }

    /// Slot `i`'s `init`.
    pub(crate) fn init(&self, i: usize) -> usize {
        init_of(self.leaf.init[i])
    }

    /// Whether slot `i`'s page was taken in this batch (never published)
    /// and is not shared: writable in place.
    pub(crate) fn is_fresh(&self, i: usize) -> bool {
        (self.leaf.fresh & !self.leaf.shared) & (1 << i) != 0
    }

    /// Marks slot `i`'s page shared (a clone hands it to another slot):
    /// never written in place from now on.
    pub(crate) fn mark_shared(&mut self, i: usize, page_size: usize) {
        self.leaf.shared |= 1 << i;
        self.leaf.init[i] = stored_init(page_size);
    }

    /// Puts `m`, a page another slot holds too (a clone's, with one holder
    /// counted for this slot: `Pool::share_pages`), in slot `i`, marked
    /// shared with `init` at the page size; the page it replaces goes back
    /// at once if it was fresh, else is retired.
    pub(crate) fn put_shared(&mut self, i: usize, m: Page, page_size: usize, ed: &mut Edit<'_>) {
        self.replace(i, m, ed);
        self.leaf.init[i] = stored_init(page_size);
        self.leaf.fresh &= !(1 << i);
        self.leaf.young &= !(1 << i);
        self.leaf.shared |= 1 << i;
    }

    /// Puts `m` in slot `i`, freeing (fresh) or retiring what was there.
    fn replace(&mut self, i: usize, m: Page, ed: &mut Edit<'_>) {
        match self.leaf.pages[i].replace(m) {
            None => self.count.set(self.count.get() + 1),
            // SAFETY: `old` was fresh in this private leaf and has just
            // been replaced in its slot: nothing reaches it any more (a
            // shared one loses this slot's holder only: `free_pages`).
            Some(old) if self.leaf.fresh & (1 << i) != 0 => unsafe { ed.free_fresh(old) },
            Some(old) => ed.retire_page(old, self.leaf, i),
        }
    }

    /// Raises slot `i`'s `init` to `v` (it never goes down).
    pub(crate) fn raise_init(&mut self, i: usize, v: usize) {
        self.leaf.init[i] = self.leaf.init[i].max(stored_init(v));
    }

    /// Puts `m`, a page taken in this batch, in slot `i` with `init`; the
    /// page it replaces goes back at once if it was fresh too, else is
    /// retired (a published version may reach it).
    pub(crate) fn put_fresh(&mut self, i: usize, m: Page, init: usize, ed: &mut Edit<'_>) {
        self.replace(i, m, ed);
        self.leaf.init[i] = stored_init(init);
        self.leaf.fresh |= 1 << i;
        self.leaf.young &= !(1 << i);
        self.leaf.shared &= !(1 << i);
    }
}

/// `init` as a leaf stores it (see `Leaf::init`).
fn stored_init(v: usize) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// `init` as a leaf stores it, read back (rounded up at the top).
fn init_of(s: u16) -> usize {
    if s == u16::MAX {
        1 << 16
    } else {
        s as usize
    }
}

/// Removes pages in `from..to` below `slot` (covering `base..base+span(h)`),
/// returning how many were removed.
fn remove_in(slot: &mut Option<NodePtr>, h: u32, base: u64, from: u64, to: u64, ed: &mut Edit<'_>) -> u64 {
    let Some(p) = *slot else { return 0 };
    let end = base.saturating_add(span(h));
    if end <= from || base >= to {
        return 0;
    }
    if from <= base && to >= end {
        // SAFETY: reachable from the draft, so alive.
        let n = count_in(unsafe { node(p) });
        *slot = None;
        // SAFETY: reachable from the draft through `slot`, just cleared.
        unsafe { unlink(p, ed) };
        return n;
    }
    let p = Table::make_private(slot, h, ed);
    // SAFETY: private (`make_private`), and the only reference to it.
    let nm = unsafe { node_mut(p) };
    let gen = nm.gen;
    let mut removed = 0;
    let empty = match &mut nm.body {
        Body::Leaf(l) => {
            let (i, j) = Leaf::slots(base, from, to);
            for k in i..j {
                let Some(m) = l.pages[k].take() else { continue };
                removed += 1;
                if l.fresh & (1 << k) != 0 {
                    // SAFETY: fresh in this private leaf, and just taken
                    // out of its slot.
                    unsafe { ed.free_fresh(m) };
                } else {
                    ed.retire_page(m, l, k);
                }
                l.fresh &= !(1 << k);
                l.young &= !(1 << k);
                l.shared &= !(1 << k);
            }
            l.pages.iter().all(Option::is_none)
        }
        Body::Inner(kids) => {
            let cs = span(h - 1);
            let (i, j) = slots_in(base, cs, from, to);
            for (k, kid) in kids.iter_mut().enumerate().take(j).skip(i) {
                removed += remove_in(kid, h - 1, base + k as u64 * cs, from, to, ed);
            }
            kids.iter().all(Option::is_none)
        }
    };
    debug_assert_eq!(gen, ed.gen);
    if empty {
        // SAFETY: private (never published) and about to be cut out.
        unsafe { free_node(p) };
        *slot = None;
    }
    removed
}

/// Pages in `from..to` below `node` (covering `base..base+span(h)`):
/// visits only the slots that overlap the range.
fn count_range_in(n: &TNode, h: u32, base: u64, from: u64, to: u64) -> u64 {
    match &n.body {
        Body::Leaf(l) => {
            let (i, j) = Leaf::slots(base, from, to);
            l.pages[i..j].iter().filter(|s| s.is_some()).count() as u64
        }
        Body::Inner(kids) => {
            let cs = span(h - 1);
            let (i, j) = slots_in(base, cs, from, to);
            let mut total = 0;
            for (k, kid) in kids.iter().enumerate().take(j).skip(i) {
                let Some(kid) = *kid else { continue };
                // SAFETY: reachable from the table being read (held).
                let c = unsafe { node(kid) };
                let cbase = base + k as u64 * cs;
                let cend = cbase.saturating_add(cs);
                total +=
                    if from <= cbase && to >= cend { count_in(c) } else { count_range_in(c, h - 1, cbase, from, to) };
            }
            total
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

fn count_in(n: &TNode) -> u64 {
    match &n.body {
        Body::Leaf(l) => l.pages.iter().filter(|s| s.is_some()).count() as u64,
        // SAFETY: reachable from a table the caller holds.
        Body::Inner(kids) => kids.iter().flatten().map(|&k| count_in(unsafe { node(k) })).sum(),
    }
}

/// The first index in `from..to` below `n` that is present (`want =
/// true`) or absent (`want = false`); nodes past `to` are not visited.
fn next_in(n: &TNode, h: u32, base: u64, from: u64, to: u64, want: bool) -> Option<u64> {
    match &n.body {
        Body::Leaf(l) => {
            let (start, end) = Leaf::slots(base, from, to);
            (start..end).find(|&i| l.pages[i].is_some() == want).map(|i| base + i as u64)
        }
        Body::Inner(kids) => {
            let cs = span(h - 1);
            let first = (from.saturating_sub(base) / cs).min(FAN as u64) as usize;
            for (i, k) in kids.iter().enumerate().skip(first) {
                let cbase = base + i as u64 * cs;
                if cbase >= to {
                    return None;
                }
                let cfrom = from.max(cbase);
                match k {
                    None if !want => return Some(cfrom),
                    None => {}
                    Some(c) => {
                        // SAFETY: reachable from a table the caller holds.
                        if let Some(r) = next_in(unsafe { node(*c) }, h - 1, cbase, cfrom, to, want) {
                            return Some(r);
                        }
                    }
                }
            }
            None
        }
    }
}

/// Pages on their way back to the pool, in batches (one slot lock each).
struct Bin<'a> {
    pool: &'a Pool,
    buf: Option<[Page; 32]>,
    n: usize,
}

impl<'a> Bin<'a> {
    fn new(pool: &'a Pool) -> Self {
        Bin { pool, buf: None, n: 0 }
    }

    /// # Safety
    /// As for [`Pool::free_pages`] for `m`.
    unsafe fn put(&mut self, m: Page) {
        if self.n == 32 {
            self.flush();
        }
        let b = self.buf.get_or_insert([m; 32]);
        b[self.n] = m;
        self.n += 1;
    }

    fn flush(&mut self) {
        let n = std::mem::take(&mut self.n);
        if let Some(b) = &self.buf {
            // SAFETY: each of the first `n` pages was `put` under
            // `free_pages`' contract (the rest are copies, not freed).
            unsafe { self.pool.free_pages(&b[..n]) };
        }
    }
}

impl Drop for Bin<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Frees a subtree: every node and page below `p`.
///
/// # Safety
/// No table that anyone can still read reaches any of it.
unsafe fn free_tree(p: NodePtr, bin: &mut Bin<'_>) {
    // SAFETY: alive until freed below; nobody else reads it (contract).
    let n = unsafe { node(p) };
    match &n.body {
        Body::Inner(kids) => {
            for &k in kids.iter().flatten() {
                // SAFETY: below `p`, so unreachable too.
                unsafe { free_tree(k, bin) };
            }
        }
        Body::Leaf(l) => {
            for &m in l.pages.iter().flatten() {
                // SAFETY: below `p`, so unreachable too.
                unsafe { bin.put(m) };
            }
        }
    }
    // SAFETY: unreachable (contract), freed once.
    unsafe { free_node(p) };
}

/// Frees what a version retired (`list` is emptied, its capacity kept).
///
/// # Safety
/// Nothing anyone can still read reaches any of it: every version that did
/// is gone (`crate::node`, "Versions"; newer versions never do: it was cut
/// out of the draft that became the next version).
pub(crate) unsafe fn free_retired(list: &mut Vec<Retired>, pool: &Pool) {
    let mut bin = Bin::new(pool);
    for r in list.drain(..) {
        // SAFETY: the caller's contract, for each item.
        unsafe { free_into(r, &mut bin) };
    }
}

/// Frees one retired item (as [`free_retired`]).
///
/// # Safety
/// As for [`free_retired`].
pub(crate) unsafe fn free_one(r: Retired, pool: &Pool) {
    // SAFETY: the caller's contract.
    unsafe { free_into(r, &mut Bin::new(pool)) };
}

/// # Safety
/// As for [`free_retired`].
unsafe fn free_into(r: Retired, bin: &mut Bin<'_>) {
    match r {
        // SAFETY: unreachable (contract); its children are not freed
        // (they are shared with the newer version).
        Retired::Node(p) | Retired::YoungNode(p) => unsafe { free_node(p) },
        // SAFETY: unreachable with everything below it (contract).
        Retired::Tree(p) => unsafe { free_tree(p, bin) },
        // SAFETY: unreachable (contract), retired once.
        Retired::Page(m) | Retired::YoungPage(m) => unsafe { bin.put(m) },
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn pages(pool: &Pool, n: usize) -> Vec<Page> {
        let mut res = pool.reserve((n * pool.page_size()) as u64).unwrap();
        let mut v = Vec::new();
        res.take_pages(n, &mut |m| v.push(m)).unwrap();
        v
    }

    /// `next_*_before` agree with a plain scan, and stay inside their range.
    #[test]
    fn bounded_searches_match_a_scan() {
        let pool = Pool::new(4096, 1 << 30, 1);
        let mut t = Table::new(4096);
        let present: Vec<u64> = (0..5000).filter(|k| k % 7 == 0 || (100..4200).contains(k)).take(300).collect();
        let mut retired = Vec::new();
        // SAFETY: a table of this test only (no published version).
        let mut ed = unsafe { Edit::new(1, &mut retired, &pool) };
        for (&k, m) in present.iter().zip(pages(&pool, present.len())) {
            t.leaf_mut(k, &mut ed).put_fresh(slot_of(k, 0), m, 4096, &mut ed);
        }
        assert_eq!(t.count(), present.len() as u64);
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
        assert!(retired.is_empty(), "nothing shared, nothing retired");
        // SAFETY: the only version; dropped here.
        unsafe { t.free_all(&pool) };
        assert_eq!(pool.stats().pages, 0);
    }

    /// A draft shares the published version's nodes, copies only the path
    /// it changes, retires what it replaced; freeing the retired list after
    /// the old version and the whole new version gives every page back.
    #[test]
    fn drafts_copy_paths_and_retire_what_they_replace() {
        let pool = Pool::new(4096, 1 << 30, 1);
        let mut v1 = Table::new(4096);
        let mut r1 = Vec::new();
        {
            // SAFETY: version 1's draft; nothing published yet.
            let mut ed = unsafe { Edit::new(1, &mut r1, &pool) };
            for (k, m) in (0..1000u64).zip(pages(&pool, 1000)) {
                let mut l = v1.leaf_mut(k, &mut ed);
                l.put_fresh(slot_of(k, 0), m, 4096, &mut ed);
            }
        }
        assert!(r1.is_empty());
        // Version 2: replace page 500, cut everything from 900 on.
        // SAFETY: v1 stays alive (this test holds it) while v2 is the draft.
        let mut v2 = unsafe { v1.share() };
        let mut r2 = Vec::new();
        {
            // SAFETY: gen 2 is newer than every node of v1.
            let mut ed = unsafe { Edit::new(2, &mut r2, &pool) };
            let m = pages(&pool, 1)[0];
            let mut l = v2.leaf_mut(500, &mut ed);
            assert!(!l.is_fresh(slot_of(500, 0)));
            l.put_fresh(slot_of(500, 0), m, 4096, &mut ed);
            v2.remove_range(900, u64::MAX, &mut ed);
        }
        assert_eq!(v2.count(), 900);
        assert_eq!(v1.count(), 1000);
        assert_ne!(v1.get(500), v2.get(500));
        assert_eq!(v1.get(499), v2.get(499));
        assert!(v2.get(950).is_none() && v1.get(950).is_some());
        // Retired: the path to 500 (3 nodes), the page, and the cut parts.
        assert!(r2.iter().any(|r| matches!(r, Retired::Page(m) if Some(*m) == v1.get(500))));
        assert_eq!(pool.stats().pages, 1001);
        // v1 goes: free what v2 retired; then v2 is the last version.
        // SAFETY: v1 is no longer used.
        unsafe { free_retired(&mut r2, &pool) };
        assert_eq!(pool.stats().pages, 900);
        // SAFETY: the last version.
        unsafe { v2.free_all(&pool) };
        assert_eq!(pool.stats().pages, 0);
    }

    /// An aborted draft gives back its fresh pages and private nodes and
    /// leaves the published version whole.
    #[test]
    fn abort_frees_only_what_the_draft_made() {
        let pool = Pool::new(4096, 1 << 30, 1);
        let mut v1 = Table::new(4096);
        let mut r = Vec::new();
        {
            // SAFETY: the first draft.
            let mut ed = unsafe { Edit::new(1, &mut r, &pool) };
            for (k, m) in (0..40u64).zip(pages(&pool, 40)) {
                v1.leaf_mut(k, &mut ed).put_fresh(slot_of(k, 0), m, 4096, &mut ed);
            }
        }
        // SAFETY: v1 outlives the draft.
        let mut d = unsafe { v1.share() };
        let mut r2 = Vec::new();
        {
            // SAFETY: gen 2 is newer than v1's nodes.
            let mut ed = unsafe { Edit::new(2, &mut r2, &pool) };
            for (k, m) in (30..60u64).zip(pages(&pool, 30)) {
                d.leaf_mut(k, &mut ed).put_fresh(slot_of(k, 0), m, 4096, &mut ed);
            }
            d.remove_range(0, 5, &mut ed);
        }
        assert_eq!(pool.stats().pages, 70);
        // SAFETY: `d` is the draft of gen 2, never published.
        unsafe { d.abort(2, &pool) };
        r2.clear();
        assert_eq!(pool.stats().pages, 40);
        assert_eq!(v1.count_range(0, 40), 40);
        // SAFETY: the last version.
        unsafe { v1.free_all(&pool) };
        assert_eq!(pool.stats().pages, 0);
    }
}
