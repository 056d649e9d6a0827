//! A queue's ready messages: a head in memory, then pages on disk, then a
//! tail in memory (issue 9, ADR 0019).
//!
//! A queue with a backlog keeps in memory only the messages a consumer
//! takes next (the head) and those published last (the tail); every full
//! tail becomes a page, written to the node's store through a [`Pager`]
//! and represented here by its handle, its key range and its totals. When
//! the head runs out, the next page is read back into it. The order is the
//! queue's order throughout: every key in the head is below every key in
//! the pages, and those below every key in the tail.
//!
//! Paging is physical, not logical: a node pages only when the state
//! machine has installed a pager on the applying thread ([`with_pager`]),
//! and two replicas that paged differently hold the same queue. The core's
//! own tests and nodes without a body store keep everything in the head.

use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::message::{Body, StoredBody};
use crate::queue::QueuedMessage;

/// Messages in a page, and how many the head holds before new messages go
/// to the tail.
pub const PAGE_LEN: usize = 1024;

/// Body bytes held in memory (bodies not in the body store) that end a
/// page before it has [`PAGE_LEN`] messages.
pub const PAGE_INLINE_BYTES: u64 = 4 * 1024 * 1024;

/// Where pages are kept: the node's body store.
pub trait Pager: Send + Sync {
    /// Writes `entries` as one page.
    ///
    /// # Errors
    /// The store cannot write it; the text says why.
    fn write_page(&self, entries: &[QueuedMessage]) -> Result<StoredBody, String>;

    /// Reads back the page at `at`.
    ///
    /// # Errors
    /// The store cannot read it, or it does not decode; the text says why.
    fn read_page(&self, at: &StoredBody) -> Result<Vec<QueuedMessage>, String>;

    /// Told of a page that could not be written or read: the state this
    /// node holds is no longer every replica's, and the node must stop.
    fn failed(&self, why: String);

    /// Messages in a page (tests make it small).
    fn page_len(&self) -> usize {
        PAGE_LEN
    }
}

/// How many pages a stream's reads keep loaded (ADR 0030): consumers of
/// a stream read the same pages one after another.
const READ_CACHE_PAGES: usize = 8;

/// A page's messages as a read loaded them, while the read cache keeps
/// them.
type Loaded = Arc<std::sync::Mutex<std::sync::Weak<Vec<QueuedMessage>>>>;

thread_local! {
    /// The pages streams read last, newest last: what keeps [`Loaded`]
    /// alive.
    static READ_CACHE: std::cell::RefCell<VecDeque<Arc<Vec<QueuedMessage>>>> =
        const { std::cell::RefCell::new(VecDeque::new()) };
    static PAGER: std::cell::RefCell<Option<Arc<dyn Pager>>> = const { std::cell::RefCell::new(None) };
    static PLAIN: std::cell::RefCell<bool> = const { std::cell::RefCell::new(false) };
}

/// Runs `f` (an apply, or a snapshot decode, on this thread) with `pager`
/// taking the pages of queues that grow past a page.
pub fn with_pager<R>(pager: Arc<dyn Pager>, f: impl FnOnce() -> R) -> R {
    crate::message::with_local(&PAGER, Some(pager), f)
}

/// Runs `f` (a decode on this thread) reading ready messages as codec
/// version 2 and earlier encoded them: one list, no pages.
pub fn with_plain_ready<R>(f: impl FnOnce() -> R) -> R {
    crate::message::with_local(&PLAIN, true, f)
}

fn current_pager() -> Option<Arc<dyn Pager>> {
    PAGER.with(|slot| slot.borrow().clone())
}

type Key = (Reverse<u8>, u64);

/// A run of ready messages written to the node's store.
#[derive(Clone)]
pub struct Page {
    at: StoredBody,
    /// Order keys of its first and last message.
    first: Key,
    last: Key,
    /// Lowest and highest `seq` in it (a `Tick` finds expired messages by
    /// seq).
    min_seq: u64,
    max_seq: u64,
    count: u64,
    /// Body bytes of its messages (as `x-max-length-bytes` counts them).
    bytes: u64,
    /// Body store segments it depends on: its own and its bodies'.
    segments: Vec<u32>,
    source: Arc<dyn Pager>,
    /// Its messages while a stream's read cache holds them.
    loaded: Loaded,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("at", &self.at)
            .field("seqs", &(self.min_seq..=self.max_seq))
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Page {
    /// Writes `entries` (in queue order, not empty) through `pager`.
    fn write(pager: &Arc<dyn Pager>, entries: &[QueuedMessage]) -> Result<Page, String> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Err("an empty page".to_owned());
        };
        // In the node's own form (body handles), also while a snapshot travels.
        let at = crate::message::without_body_codec(|| pager.write_page(entries))?;
        let mut segments: BTreeSet<u32> = entries
            .iter()
            .filter_map(|entry| match &entry.message.body {
                Body::Stored(stored) => Some(stored.segment),
                Body::Inline(_) => None,
            })
            .collect();
        segments.insert(at.segment);
        Ok(Page {
            at,
            first: first.order_key(),
            last: last.order_key(),
            min_seq: entries.iter().map(|e| e.seq).min().unwrap_or(0),
            max_seq: entries.iter().map(|e| e.seq).max().unwrap_or(0),
            count: entries.len() as u64,
            bytes: entries.iter().map(|e| e.message.body_len()).sum(),
            segments: segments.into_iter().collect(),
            source: Arc::clone(pager),
            loaded: Loaded::default(),
        })
    }

    /// Its messages, read back.
    ///
    /// # Errors
    /// The store cannot read it; the text says why.
    pub fn load(&self) -> Result<Vec<QueuedMessage>, String> {
        let entries = crate::message::without_body_codec(|| self.source.read_page(&self.at))?;
        if entries.len() as u64 != self.count {
            return Err(format!(
                "page {}:{} holds {} messages, {} expected",
                self.at.segment,
                self.at.offset,
                entries.len(),
                self.count
            ));
        }
        Ok(entries)
    }

    /// [`Page::load`] through the read cache of streams.
    fn load_cached(&self) -> Result<Arc<Vec<QueuedMessage>>, String> {
        let mut loaded = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entries) = loaded.upgrade() {
            return Ok(entries);
        }
        let entries = Arc::new(self.load()?);
        *loaded = Arc::downgrade(&entries);
        READ_CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.len() >= READ_CACHE_PAGES {
                cache.pop_front();
            }
            cache.push_back(Arc::clone(&entries));
        });
        Ok(entries)
    }

    /// Where it is in the node's store.
    pub fn at(&self) -> StoredBody {
        self.at
    }

    /// The body store segments it needs kept: its own and its bodies'.
    pub fn segments(&self) -> &[u32] {
        &self.segments
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn may_hold_any(&self, seqs: &BTreeSet<u64>) -> bool {
        seqs.range(self.min_seq..=self.max_seq).next().is_some()
    }
}

/// A queue's ready messages in queue order ([`QueuedMessage::order_key`]).
#[derive(Clone, Debug, Default)]
pub struct Ready {
    head: VecDeque<QueuedMessage>,
    pages: VecDeque<Page>,
    tail: VecDeque<QueuedMessage>,
    /// Messages in `pages`.
    paged: u64,
    /// Body bytes of the tail's messages held in memory.
    tail_inline: u64,
}

impl Ready {
    /// Every ready message, in memory or paged.
    pub fn len(&self) -> usize {
        self.head.len() + usize::try_from(self.paged).unwrap_or(usize::MAX) + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.paged == 0 && self.tail.is_empty()
    }

    /// Ready messages held in memory (not paged).
    pub fn in_memory_len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// The messages held in memory, head then tail.
    pub fn in_memory(&self) -> impl Iterator<Item = &QueuedMessage> {
        self.head.iter().chain(self.tail.iter())
    }

    /// The pages, in queue order.
    pub fn pages(&self) -> impl Iterator<Item = &Page> {
        self.pages.iter()
    }

    /// Every ready message in queue order, pages read back.
    ///
    /// # Errors
    /// A page cannot be read; the text says why.
    pub fn entries(&self) -> Result<Vec<QueuedMessage>, String> {
        let mut all = Vec::with_capacity(self.len());
        all.extend(self.head.iter().cloned());
        for page in &self.pages {
            all.extend(page.load()?);
        }
        all.extend(self.tail.iter().cloned());
        Ok(all)
    }

    /// The key of the first message after the head, if any.
    fn after_head(&self) -> Option<Key> {
        match self.pages.front() {
            Some(page) => Some(page.first),
            None => self.tail.front().map(QueuedMessage::order_key),
        }
    }

    /// Adds `entry` at its place in queue order. Only a queue whose
    /// messages come in order (`pageable`: no priorities, so a new message
    /// goes last and a requeued one before every page) is paged: in a
    /// priority queue a message may belong in the middle of a page.
    pub fn insert(&mut self, entry: QueuedMessage, pageable: bool) {
        let key = entry.order_key();
        // Read in place: a publish clones the pager only to write a page.
        let page_len = if pageable {
            PAGER.with(|slot| slot.borrow().as_ref().map(|p| p.page_len()))
        } else {
            None
        };
        let paged_or_tailed = !self.pages.is_empty() || !self.tail.is_empty();
        if !pageable && paged_or_tailed {
            self.page_in_all();
        }
        let paging = page_len.is_some();
        let page_len = page_len.unwrap_or(usize::MAX);
        let to_head = match self.after_head() {
            Some(first) => key < first,
            None => self.head.len() < page_len || self.head.back().is_some_and(|last| key < last.order_key()),
        };
        if to_head {
            let position = self.head.partition_point(|m| m.order_key() < key);
            self.head.insert(position, entry);
            return;
        }
        if self.pages.back().is_some_and(|last| key < last.last) {
            self.insert_into_pages(entry);
            return;
        }
        self.tail_inline += entry.message.body.inline_len();
        let position = self.tail.partition_point(|m| m.order_key() < key);
        self.tail.insert(position, entry);
        if paging && (self.tail.len() >= page_len || self.tail_inline >= PAGE_INLINE_BYTES) {
            if let Some(pager) = current_pager() {
                self.page_out_tail(&pager);
            }
        }
    }

    /// Puts `entry` into the page it belongs in, rewritten. A requeue can
    /// need it: messages requeued into an emptied queue are paged like any
    /// others, and one requeued after them may come before some of them.
    fn insert_into_pages(&mut self, entry: QueuedMessage) {
        let key = entry.order_key();
        let Some(index) = self.pages.iter().position(|page| key < page.last) else {
            return;
        };
        let page = &self.pages[index];
        let written = page.load().and_then(|mut entries| {
            let position = entries.partition_point(|m| m.order_key() < key);
            entries.insert(position, entry.clone());
            Page::write(&page.source, &entries)
        });
        match written {
            Ok(rewritten) => {
                self.paged += 1;
                self.pages[index] = rewritten;
            }
            Err(why) => {
                // Kept in memory, out of place; the node stops.
                page.source.failed(why);
                self.head.push_back(entry);
            }
        }
    }

    fn page_out_tail(&mut self, pager: &Arc<dyn Pager>) {
        let entries: Vec<QueuedMessage> = self.tail.iter().cloned().collect();
        match Page::write(pager, &entries) {
            Ok(page) => {
                self.paged += page.count;
                self.pages.push_back(page);
                self.tail.clear();
                self.tail_inline = 0;
            }
            // The tail stays in memory; the node stops.
            Err(why) => pager.failed(why),
        }
    }

    /// Brings every page back into the head (a queue that may no longer
    /// be paged).
    fn page_in_all(&mut self) {
        while let Some(page) = self.pages.front() {
            match page.load() {
                Ok(entries) => {
                    self.paged -= page.count;
                    self.pages.pop_front();
                    self.head.extend(entries);
                }
                Err(why) => {
                    page.source.failed(why);
                    return;
                }
            }
        }
        self.head.append(&mut self.tail);
        self.tail_inline = 0;
    }

    /// Makes the head hold the next messages if it is empty.
    fn refill(&mut self) {
        if !self.head.is_empty() {
            return;
        }
        if let Some(page) = self.pages.front() {
            match page.load() {
                Ok(entries) => {
                    self.paged -= page.count;
                    self.pages.pop_front();
                    self.head = entries.into();
                }
                // The page stays; the node stops (the queue looks empty
                // to this command meanwhile).
                Err(why) => page.source.failed(why),
            }
            return;
        }
        std::mem::swap(&mut self.head, &mut self.tail);
        self.tail_inline = 0;
    }

    /// The first message.
    pub fn front(&mut self) -> Option<&QueuedMessage> {
        self.refill();
        self.head.front()
    }

    /// Takes the first message.
    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        self.refill();
        self.head.pop_front()
    }

    /// Takes every message whose `seq` is in `seqs`, in queue order.
    pub fn remove_seqs(&mut self, seqs: &BTreeSet<u64>) -> Vec<QueuedMessage> {
        if seqs.is_empty() {
            return Vec::new();
        }
        let mut removed = Vec::new();
        take_where(&mut self.head, seqs, &mut removed);
        let mut pages = VecDeque::with_capacity(self.pages.len());
        for page in std::mem::take(&mut self.pages) {
            if !page.may_hold_any(seqs) {
                pages.push_back(page);
                continue;
            }
            let entries = match page.load() {
                Ok(entries) => entries,
                Err(why) => {
                    page.source.failed(why);
                    pages.push_back(page);
                    continue;
                }
            };
            let (gone, kept): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| seqs.contains(&e.seq));
            if gone.is_empty() {
                pages.push_back(page);
                continue;
            }
            let rewritten = if kept.is_empty() {
                None
            } else {
                match Page::write(&page.source, &kept) {
                    Ok(rewritten) => Some(rewritten),
                    Err(why) => {
                        // The page stays as it was, nothing taken from it;
                        // the node stops.
                        page.source.failed(why);
                        pages.push_back(page);
                        continue;
                    }
                }
            };
            self.paged -= page.count;
            removed.extend(gone);
            if let Some(rewritten) = rewritten {
                self.paged += rewritten.count;
                pages.push_back(rewritten);
            }
        }
        self.pages = pages;
        take_where(&mut self.tail, seqs, &mut removed);
        self.tail_inline = self.tail.iter().map(|e| e.message.body.inline_len()).sum();
        removed
    }

    /// Up to `max` messages from the one with `seq` on, cloned, without
    /// taking them: a stream's read (ADR 0030), whose order is by `seq`
    /// alone. Pages are read back through a small cache; one that cannot
    /// be read ends the read (and stops the node).
    pub fn read_from(&self, seq: u64, max: usize) -> Vec<QueuedMessage> {
        let mut out = Vec::new();
        take_from(&self.head, seq, max, &mut out);
        // Pages are in seq order: skip those wholly before `seq`.
        let first_page = self.pages.partition_point(|page| page.max_seq < seq);
        for page in self.pages.range(first_page..) {
            if out.len() >= max {
                return out;
            }
            match page.load_cached() {
                Ok(entries) => take_from_slice(&entries, seq, max, &mut out),
                Err(why) => {
                    page.source.failed(why);
                    return out;
                }
            }
        }
        take_from(&self.tail, seq, max, &mut out);
        out
    }

    /// The `seq` of the first message appended at or after `ms` (a
    /// stream's `x-stream-offset` by time), if any: a binary search over
    /// the pages, whose messages come in time order.
    pub fn first_appended_at_or_after(&self, ms: u64) -> Option<u64> {
        let first_in = |list: &[QueuedMessage]| list.iter().find(|m| m.appended_ms >= ms).map(|m| m.seq);
        if let Some(seq) = first_in(self.head.as_slices().0).or_else(|| first_in(self.head.as_slices().1)) {
            return Some(seq);
        }
        // The first page whose last message is at or after `ms`.
        let (mut low, mut high) = (0, self.pages.len());
        while low < high {
            let middle = (low + high) / 2;
            let last_ms = match self.pages[middle].load_cached() {
                Ok(entries) => entries.last().map_or(0, |m| m.appended_ms),
                Err(why) => {
                    self.pages[middle].source.failed(why);
                    return None;
                }
            };
            if last_ms >= ms {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        if let Some(page) = self.pages.get(low) {
            if let Ok(entries) = page.load_cached() {
                if let Some(seq) = first_in(&entries) {
                    return Some(seq);
                }
            }
        }
        first_in(self.tail.as_slices().0).or_else(|| first_in(self.tail.as_slices().1))
    }

    /// Removes every message; returns how many there were.
    pub fn clear(&mut self) -> u64 {
        let count = self.len() as u64;
        *self = Ready::default();
        count
    }
}

/// [`take_from_slice`] of both halves of a head or a tail.
fn take_from(list: &VecDeque<QueuedMessage>, from: u64, max: usize, out: &mut Vec<QueuedMessage>) {
    let (front, back) = list.as_slices();
    take_from_slice(front, from, max, out);
    take_from_slice(back, from, max, out);
}

/// Appends to `out`, up to `max` in all, the messages of `list` (in seq
/// order) with `seq` at or after `from`.
fn take_from_slice(list: &[QueuedMessage], from: u64, max: usize, out: &mut Vec<QueuedMessage>) {
    let start = list.partition_point(|m| m.seq < from);
    let wanted = max.saturating_sub(out.len());
    out.extend(list[start..].iter().take(wanted).cloned());
}

fn take_where(list: &mut VecDeque<QueuedMessage>, seqs: &BTreeSet<u64>, removed: &mut Vec<QueuedMessage>) {
    if !list.iter().any(|e| seqs.contains(&e.seq)) {
        return;
    }
    let (gone, kept): (VecDeque<_>, VecDeque<_>) =
        std::mem::take(list).into_iter().partition(|e| seqs.contains(&e.seq));
    *list = kept;
    removed.extend(gone);
}

impl From<VecDeque<QueuedMessage>> for Ready {
    fn from(head: VecDeque<QueuedMessage>) -> Self {
        Ready {
            head,
            ..Ready::default()
        }
    }
}

/// Two ready lists are equal when they hold the same messages in the same
/// order, however each is paged (a page that cannot be read is unequal).
impl PartialEq for Ready {
    fn eq(&self, other: &Self) -> bool {
        if self.len() != other.len() {
            return false;
        }
        if self.pages.is_empty() && other.pages.is_empty() {
            return self.in_memory().eq(other.in_memory());
        }
        match (self.entries(), other.entries()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

/// A page as encoded: its handle and totals in this node's own snapshots;
/// its messages, when a snapshot travels to another node (the body codec
/// is set, see [`crate::message::with_body_codec`]).
#[derive(Serialize, Deserialize)]
enum PageRepr {
    Stored {
        at: StoredBody,
        first: (u8, u64),
        last: (u8, u64),
        min_seq: u64,
        max_seq: u64,
        count: u64,
        bytes: u64,
        segments: Vec<u32>,
    },
    Inline(Vec<QueuedMessage>),
}

impl PageRepr {
    fn stored(page: &Page) -> Self {
        PageRepr::Stored {
            at: page.at,
            first: (page.first.0 .0, page.first.1),
            last: (page.last.0 .0, page.last.1),
            min_seq: page.min_seq,
            max_seq: page.max_seq,
            count: page.count,
            bytes: page.bytes,
            segments: page.segments.clone(),
        }
    }
}

/// One page on its way out: read back (for another node) only when it is
/// its turn, so a backlog is never in memory whole.
struct PageOut<'a> {
    page: &'a Page,
    portable: bool,
}

impl Serialize for PageOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.portable {
            let entries = self.page.load().map_err(serde::ser::Error::custom)?;
            PageRepr::Inline(entries).serialize(serializer)
        } else {
            PageRepr::stored(self.page).serialize(serializer)
        }
    }
}

struct PagesOut<'a>(&'a VecDeque<Page>);

impl Serialize for PagesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let portable = crate::message::body_codec_set();
        serializer.collect_seq(self.0.iter().map(|page| PageOut { page, portable }))
    }
}

#[derive(Serialize)]
struct ReadyRef<'a> {
    head: &'a VecDeque<QueuedMessage>,
    pages: PagesOut<'a>,
    tail: &'a VecDeque<QueuedMessage>,
}

impl Serialize for Ready {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ReadyRef {
            head: &self.head,
            pages: PagesOut(&self.pages),
            tail: &self.tail,
        }
        .serialize(serializer)
    }
}

/// The pages as they are decoded, one at a time: a page's handle becomes a
/// [`Page`] of this node's pager; a page's messages (from another node)
/// are paged again at once, or, on a node that cannot page, kept to join
/// the head.
struct PagesIn {
    pager: Option<Arc<dyn Pager>>,
}

/// What [`PagesIn`] decoded.
#[derive(Default)]
struct Decoded {
    pages: VecDeque<Page>,
    paged: u64,
    /// Messages of pages kept in memory; no page may follow them.
    spilled_back: Vec<QueuedMessage>,
}

impl PagesIn {
    fn take<E: serde::de::Error>(&self, repr: PageRepr, into: &mut Decoded) -> Result<(), E> {
        let page = match (repr, &self.pager) {
            (PageRepr::Stored { .. }, _) if crate::message::body_codec_set() => {
                return Err(E::custom(
                    "a page handle of another node's store (a snapshot must carry the messages)",
                ));
            }
            (
                PageRepr::Stored {
                    at,
                    first,
                    last,
                    min_seq,
                    max_seq,
                    count,
                    bytes,
                    segments,
                },
                Some(pager),
            ) => Page {
                at,
                first: (Reverse(first.0), first.1),
                last: (Reverse(last.0), last.1),
                min_seq,
                max_seq,
                count,
                bytes,
                segments,
                source: Arc::clone(pager),
                loaded: Loaded::default(),
            },
            (PageRepr::Stored { .. }, None) => {
                return Err(E::custom("a paged queue, and no store to read its pages"));
            }
            (PageRepr::Inline(entries), Some(pager)) if into.spilled_back.is_empty() && !entries.is_empty() => {
                Page::write(pager, &entries).map_err(E::custom)?
            }
            (PageRepr::Inline(entries), _) => {
                into.spilled_back.extend(entries);
                return Ok(());
            }
        };
        into.paged += page.count;
        into.pages.push_back(page);
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for PagesIn {
    type Value = Decoded;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Decoded, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PagesIn {
    type Value = Decoded;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a queue's pages")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Decoded, A::Error> {
        let mut decoded = Decoded::default();
        while let Some(repr) = seq.next_element::<PageRepr>()? {
            self.take(repr, &mut decoded)?;
        }
        Ok(decoded)
    }
}

/// Decodes a [`Ready`] (head, pages, tail), a page at a time.
struct ReadyIn;

impl<'de> serde::de::Visitor<'de> for ReadyIn {
    type Value = Ready;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a queue's ready messages")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Ready, A::Error> {
        use serde::de::Error;
        let head: VecDeque<QueuedMessage> = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(0, &self))?;
        let decoded = seq
            .next_element_seed(PagesIn { pager: current_pager() })?
            .ok_or_else(|| A::Error::invalid_length(1, &self))?;
        let tail: VecDeque<QueuedMessage> = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(2, &self))?;
        let mut ready = Ready {
            head,
            pages: decoded.pages,
            paged: decoded.paged,
            ..Ready::default()
        };
        if decoded.spilled_back.is_empty() {
            ready.tail_inline = tail.iter().map(|e| e.message.body.inline_len()).sum();
            ready.tail = tail;
        } else {
            ready.head.extend(decoded.spilled_back);
            ready.head.extend(tail);
        }
        Ok(ready)
    }
}

impl<'de> Deserialize<'de> for Ready {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if PLAIN.with(|flag| *flag.borrow()) {
            let list = VecDeque::<QueuedMessage>::deserialize(deserializer)?;
            return Ok(Ready::from_ordered(list));
        }
        deserializer.deserialize_struct("ReadyRef", &["head", "pages", "tail"], ReadyIn)
    }
}

impl Ready {
    /// Ready messages already in queue order (an earlier version's one
    /// list): paged as they are added, if a pager is installed.
    fn from_ordered(list: VecDeque<QueuedMessage>) -> Ready {
        if current_pager().is_none() {
            return Ready::from(list);
        }
        let mut ready = Ready::default();
        for entry in list {
            // In key order, each goes last: pages stay in order whatever
            // the priorities (a priority queue pages back in on its next
            // publish).
            ready.insert(entry, true);
        }
        ready
    }
}

/// A pager for tests: pages in memory, encoded as a node's store would.
#[cfg(test)]
pub(crate) mod test_pager {
    use super::*;
    use std::sync::Mutex;

    /// Pages kept in memory, encoded as bincode like a node's store would.
    pub(crate) struct MemPager {
        pub(crate) page_len: usize,
        pub(crate) reads: std::sync::atomic::AtomicUsize,
        pub(crate) pages: Mutex<Vec<Vec<u8>>>,
        pub(crate) failures: Mutex<Vec<String>>,
        pub(crate) fail_reads: std::sync::atomic::AtomicBool,
    }

    impl Pager for MemPager {
        fn write_page(&self, entries: &[QueuedMessage]) -> Result<StoredBody, String> {
            let bytes = bincode::serialize(entries).map_err(|e| e.to_string())?;
            let mut pages = self.pages.lock().unwrap();
            pages.push(bytes);
            Ok(StoredBody {
                segment: 7,
                offset: u32::try_from(pages.len() - 1).unwrap(),
                len: 0,
            })
        }

        fn read_page(&self, at: &StoredBody) -> Result<Vec<QueuedMessage>, String> {
            if self.fail_reads.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("read failed".to_owned());
            }
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let pages = self.pages.lock().unwrap();
            let bytes = pages.get(at.offset as usize).ok_or("no such page")?;
            bincode::deserialize(bytes).map_err(|e| e.to_string())
        }

        fn failed(&self, why: String) {
            self.failures.lock().unwrap().push(why);
        }

        fn page_len(&self) -> usize {
            self.page_len
        }
    }

    impl MemPager {
        pub(crate) fn new(page_len: usize) -> Arc<Self> {
            Arc::new(MemPager {
                page_len,
                reads: std::sync::atomic::AtomicUsize::new(0),
                pages: Mutex::default(),
                failures: Mutex::default(),
                fail_reads: std::sync::atomic::AtomicBool::new(false),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_pager::MemPager;
    use super::*;
    use crate::ids::MessageId;
    use crate::message::{Message, Properties};

    fn entry(seq: u64) -> QueuedMessage {
        QueuedMessage {
            id: MessageId(seq + 100),
            seq,
            message: Arc::new(Message {
                exchange: "".into(),
                routing_key: format!("k{seq}"),
                properties: Arc::new(Properties::default()),
                body: Body::Inline(bytes::Bytes::from(vec![b'x'; usize::try_from(seq % 5).unwrap()])),
            }),
            redelivered: false,
            expires_at_ms: None,
            priority: 0,
            returns: 0,
            appended_ms: 0,
        }
    }

    fn seqs(entries: &[QueuedMessage]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    /// Messages `0..n` added through `pager`.
    fn paged(pager: &Arc<MemPager>, n: u64) -> Ready {
        let mut ready = Ready::default();
        with_pager(pager.clone(), || {
            for seq in 0..n {
                ready.insert(entry(seq), true);
            }
        });
        ready
    }

    /// A body codec, set while a snapshot travels to another node; the
    /// bodies of these tests are in memory, so it is never asked.
    struct Portable;

    impl crate::message::BodyCodec for Portable {
        fn load(&self, _: &StoredBody) -> Result<bytes::Bytes, String> {
            Err("not expected".to_owned())
        }
        fn store(&self, _: &bytes::Bytes) -> Result<StoredBody, String> {
            Err("not expected".to_owned())
        }
    }

    #[test]
    fn a_backlog_is_paged_and_read_back_in_order() {
        let pager = MemPager::new(3);
        let mut ready = paged(&pager, 20);
        assert_eq!(ready.len(), 20);
        assert_eq!(ready.in_memory_len(), 3 + 2, "a head and a partial tail stay in memory");
        assert_eq!(ready.pages().count(), 5);
        assert_eq!(seqs(&ready.entries().unwrap()), (0..20).collect::<Vec<_>>());
        let mut taken = Vec::new();
        while let Some(e) = ready.pop_front() {
            taken.push(e.seq);
        }
        assert_eq!(taken, (0..20).collect::<Vec<_>>());
        assert!(ready.is_empty());
        assert!(pager.failures.lock().unwrap().is_empty());
    }

    #[test]
    fn a_requeued_message_goes_back_before_the_pages() {
        let pager = MemPager::new(3);
        let mut ready = paged(&pager, 12);
        with_pager(pager.clone(), || {
            let first = ready.pop_front().unwrap();
            let second = ready.pop_front().unwrap();
            ready.insert(second, true);
            ready.insert(first, true);
            ready.insert(entry(12), true);
        });
        assert_eq!(seqs(&ready.entries().unwrap()), (0..13).collect::<Vec<_>>());
    }

    #[test]
    fn expired_messages_are_taken_from_pages_too() {
        let pager = MemPager::new(3);
        let mut ready = paged(&pager, 14);
        with_pager(pager.clone(), || {
            let doomed: BTreeSet<u64> = [1, 4, 5, 6, 9, 13].into_iter().collect();
            let removed = ready.remove_seqs(&doomed);
            assert_eq!(seqs(&removed), vec![1, 4, 5, 6, 9, 13]);
        });
        assert_eq!(ready.len(), 8);
        assert_eq!(seqs(&ready.entries().unwrap()), vec![0, 2, 3, 7, 8, 10, 11, 12]);
        assert!(ready.pages().all(|p| !p.is_empty()), "a page emptied is dropped");
    }

    #[test]
    fn without_a_pager_everything_stays_in_memory() {
        let mut ready = Ready::default();
        for seq in 0..5000 {
            ready.insert(entry(seq), true);
        }
        assert_eq!(ready.in_memory_len(), 5000);
        assert_eq!(ready.pages().count(), 0);
    }

    #[test]
    fn encoded_pages_stay_handles_locally_and_travel_as_messages() {
        let pager = MemPager::new(3);
        let ready = paged(&pager, 10);
        let local = bincode::serialize(&ready).unwrap();
        let decoded: Ready = with_pager(pager.clone(), || bincode::deserialize(&local).unwrap());
        assert_eq!(decoded, ready);
        assert_eq!(decoded.pages().count(), ready.pages().count(), "the same pages");
        assert!(
            bincode::deserialize::<Ready>(&local).is_err(),
            "page handles mean nothing without the store"
        );

        let travelling =
            crate::message::with_body_codec(std::rc::Rc::new(Portable), || bincode::serialize(&ready).unwrap());
        let received: Ready = bincode::deserialize(&travelling).unwrap();
        assert_eq!(received, ready);
        assert_eq!(received.pages().count(), 0, "no pager on the receiver: all in memory");
        assert_eq!(received.in_memory_len(), 10);
        let other = MemPager::new(3);
        let repaged: Ready = with_pager(other.clone(), || bincode::deserialize(&travelling).unwrap());
        assert_eq!(repaged, ready);
        assert_eq!(repaged.pages().count(), ready.pages().count(), "paged again on arrival");
        assert_eq!(other.pages.lock().unwrap().len(), ready.pages().count());
    }

    #[test]
    fn the_plain_encoding_of_earlier_versions_still_decodes() {
        let list: VecDeque<QueuedMessage> = (0..4).map(entry).collect();
        let encoded = bincode::serialize(&list).unwrap();
        let decoded: Ready = with_plain_ready(|| bincode::deserialize(&encoded).unwrap());
        assert_eq!(seqs(&decoded.entries().unwrap()), vec![0, 1, 2, 3]);

        // A node with a pager pages an old backlog as it decodes it.
        let long: VecDeque<QueuedMessage> = (0..10).map(entry).collect();
        let encoded = bincode::serialize(&long).unwrap();
        let pager = MemPager::new(3);
        let decoded: Ready = with_pager(pager.clone(), || {
            with_plain_ready(|| bincode::deserialize(&encoded).unwrap())
        });
        assert_eq!(seqs(&decoded.entries().unwrap()), (0..10).collect::<Vec<_>>());
        assert_eq!(decoded.pages().count(), 2, "paged on decode");
        assert_eq!(decoded.in_memory_len(), 4);
    }

    #[test]
    fn a_page_handle_arriving_from_another_node_is_refused() {
        let pager = MemPager::new(3);
        let ready = paged(&pager, 10);
        let local = bincode::serialize(&ready).unwrap();
        let decoded = with_pager(pager.clone(), || {
            crate::message::with_body_codec(std::rc::Rc::new(Portable), || bincode::deserialize::<Ready>(&local))
        });
        assert!(decoded.is_err(), "handles into another node's store mean nothing here");
    }

    #[test]
    fn a_page_that_cannot_be_read_is_reported_and_kept() {
        let pager = MemPager::new(3);
        let mut ready = paged(&pager, 9);
        for _ in 0..3 {
            ready.pop_front().unwrap();
        }
        pager.fail_reads.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(ready.pop_front().is_none());
        assert_eq!(pager.failures.lock().unwrap().len(), 1);
        assert_eq!(ready.len(), 6, "nothing was lost from the count");
        pager.fail_reads.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(ready.pop_front().map(|e| e.seq), Some(3));
    }
}
