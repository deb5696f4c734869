//! JSON-object elements masked and written back as JSON: what
//! `labelgate.enforce.masking._mask_json` gives for an element of a shape the classifier knew
//! (the element it read, byte for byte), for the masks this module can vouch for.
//!
//! Per shape a `Plan`: the leaves that masks name (by ordinal in document order, as
//! `JsonShape.locations` lists them) with their masks, and the shape's skeleton signature
//! (`jsonpaths.native_signature` of `JsonShape.skeleton`: every leaf a null). Per element the
//! detector spans its masks select, leaf by leaf. The element is read by `json::Reader` (never
//! more permissively than Python's `json`), masked as `Masker.json_value`, `_partial` and
//! `replace_spans` mask, and written as `jsonpaths.dumps` writes (compact, not ASCII-escaped).
//!
//! Whatever is not common and exact gives `None`, and Python masks the element: a `hash`
//! mask (its HMAC is Python's), a float anywhere in the element (the reader refuses it), a span on
//! a leaf other than a string or an integer, a span that does not fit, a masked span that is
//! not UTF-8 (Python would empty the element, or keep a lone surrogate), an element whose
//! structure is not the plan's, or one the reader refuses.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PySet, PyString, PyTuple, PyType};

use crate::json::{self, Reader, Value};

/// What a mask does to a value (`enforce.strategies`); `Python` for what stays Python's
/// (`hash`, or a replacement that is not UTF-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Null,
    Redact,
    Partial,
    Python,
}

impl Strategy {
    /// The code the Python wrapper (`labelgate.enforce.native`) sends.
    fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Null,
            1 => Self::Redact,
            3 => Self::Partial,
            _ => Self::Python,
        }
    }
}

/// One mask: its strategy, `keep_last`, the replacement's UTF-8, and its rank by
/// `Mask.strength()` (lower is more protective; equal strengths, equal ranks).
#[derive(Clone, Debug)]
pub struct MaskSpec {
    pub strategy: Strategy,
    pub keep_last: usize,
    pub replacement: Vec<u8>,
    pub rank: usize,
}

/// What masks name in every element of one shape.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// `(leaf ordinal, mask)` per masked leaf.
    pub nodes: Vec<(usize, usize)>,
    /// The shape's signature with every leaf a null (`NULL`).
    pub skeleton: Vec<u8>,
}

/// A detector span in a leaf's UTF-8 text and its mask (offsets as the classifier gave them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
    pub mask: usize,
}

/// A leaf with spans to mask: its ordinal and its spans (a range of the spans list).
pub type Selection = (usize, Range<usize>);

/// What an element becomes.
#[derive(Debug, PartialEq, Eq)]
pub enum Masked {
    /// Nothing in it is masked: the element itself.
    Unchanged,
    Rewritten(Vec<u8>),
}

/// A masked leaf's new value.
#[derive(Clone, Debug)]
enum Replacement {
    Null,
    /// A string: its UTF-8 text in `ElementMasker::texts`.
    Text(Range<usize>),
}

/// Masks elements one after the other, reusing its buffers.
pub struct ElementMasker {
    reader: Reader,
    /// Per leaf, its new value if masked.
    replaced: Vec<Option<Replacement>>,
    /// Per leaf, the mask of the plan's node masking it, if any (its spans are not written:
    /// the leaf is masked whole, by a span's mask where the node's does not cover it).
    by_node: Vec<Option<usize>>,
    texts: Vec<u8>,
    merged: Vec<Span>,
}

impl Default for ElementMasker {
    fn default() -> Self {
        Self {
            reader: Reader::keeping_values(),
            replaced: Vec::new(),
            by_node: Vec::new(),
            texts: Vec::new(),
            merged: Vec::new(),
        }
    }
}

impl ElementMasker {
    /// `data` with `plan`'s nodes and `selections` (leaves, spans of `spans`) masked by `masks`;
    /// `None` when Python must mask it (see the module comment).
    pub fn mask(
        &mut self,
        data: &[u8],
        plan: &Plan,
        masks: &[MaskSpec],
        selections: &[Selection],
        spans: &[Span],
    ) -> Option<Masked> {
        if plan.nodes.is_empty() && selections.is_empty() {
            return Some(Masked::Unchanged); // as `_mask_json`, without reading it
        }
        self.reader.parse_values(data)?;
        let values = self.reader.values();
        if !same_skeleton(self.reader.signature(), &plan.skeleton) {
            return None;
        }
        let count = values.len();
        self.replaced.clear();
        self.replaced.resize(count, None);
        self.by_node.clear();
        self.by_node.resize(count, None);
        self.texts.clear();
        for &(leaf, mask) in &plan.nodes {
            let replacement = self.node_value(data, leaf, masks.get(mask)?)?;
            self.replaced[leaf] = Some(replacement);
            *self.by_node.get_mut(leaf)? = Some(mask);
        }
        let mut done = false;
        for (leaf, range) in selections {
            let leaf = *leaf;
            if let Some(node) = *self.by_node.get(leaf)? {
                // A masked leaf: `_leaf_spans` masks it whole by the most protective of its
                // spans' masks instead, when the leaf's own does not cover that one.
                let stronger = strongest(spans.get(range.clone())?, masks)?;
                if !covers(masks.get(node)?, stronger) {
                    // A partial keeping characters covers no partial part: `covering`
                    // redacts the leaf (Python's case).
                    if stronger.strategy == Strategy::Partial && stronger.keep_last > 0 {
                        return None;
                    }
                    self.replaced[leaf] = Some(self.node_value(data, leaf, stronger)?);
                }
                continue;
            }
            // A leaf already rewritten: `_rewrite` skips it.
            if self.replaced[leaf].is_some() {
                continue;
            }
            let from = self.texts.len();
            self.replace_spans(data, leaf, spans.get(range.clone())?, masks)?;
            // `_mask_leaf_spans` decodes the result; anything but UTF-8 is Python's case.
            std::str::from_utf8(&self.texts[from..]).ok()?;
            self.replaced[leaf] = Some(Replacement::Text(from..self.texts.len()));
            done = true;
        }
        if plan.nodes.is_empty() && !done {
            return Some(Masked::Unchanged);
        }
        Some(Masked::Rewritten(self.write(data)))
    }

    /// `Masker.json_value` (and `_partial` for a string) on leaf `leaf`.
    fn node_value(&mut self, data: &[u8], leaf: usize, mask: &MaskSpec) -> Option<Replacement> {
        let value = *self.reader.values().get(leaf)?;
        if mask.strategy == Strategy::Python {
            return None;
        }
        if value == Value::Null || mask.strategy == Strategy::Null {
            return Some(Replacement::Null);
        }
        let from = self.texts.len();
        if mask.strategy == Strategy::Redact {
            self.texts.extend_from_slice(&mask.replacement);
        } else {
            // `partial` keeps characters of strings only: a number or a boolean is null (starred,
            // `false` would read `*alse` and a number show its magnitude).
            let Value::String(text) = value else {
                return Some(Replacement::Null);
            };
            partial_chars(
                self.reader.text(data, text),
                mask.keep_last,
                &mut self.texts,
            )?;
        }
        Some(Replacement::Text(from..self.texts.len()))
    }

    /// `replace_spans` on leaf `leaf`'s text, onto the end of `texts`; `None` when a span does
    /// not fit, the leaf is neither a string nor an integer, or a mask is Python's.
    fn replace_spans(
        &mut self,
        data: &[u8],
        leaf: usize,
        spans: &[Span],
        masks: &[MaskSpec],
    ) -> Option<()> {
        let text: &[u8] = match *self.reader.values().get(leaf)? {
            Value::String(text) => self.reader.text(data, text),
            Value::Integer(start, end) => &data[start..end],
            _ => return None, // `scannable` is None: Python empties the element
        };
        let length = i64::try_from(text.len()).ok()?;
        // In a text that may read as UTF-16 or UTF-32 Python stars a `partial` span whole
        // where that encoding is confirmed (`replace_spans`): its call.
        let wide = crate::tensors::may_read_wide(text);
        self.merged.clear();
        self.merged.extend_from_slice(spans);
        // Sorted by (start, end), stably; overlaps merged, the lowest rank winning ties to
        // the first, exactly as `replace_spans` does.
        self.merged.sort_by_key(|span| (span.start, span.end));
        let mut kept = 0;
        for index in 0..self.merged.len() {
            let span = self.merged[index];
            if span.start < 0 || span.end > length || span.start >= span.end {
                return None;
            }
            if kept > 0 && span.start < self.merged[kept - 1].end {
                let last = &mut self.merged[kept - 1];
                last.end = last.end.max(span.end);
                if masks.get(span.mask)?.rank < masks.get(last.mask)?.rank {
                    last.mask = span.mask;
                }
            } else {
                self.merged[kept] = span;
                kept += 1;
            }
        }
        let mut position = 0;
        for span in &self.merged[..kept] {
            // Offsets were checked against the text's length above.
            let (start, end) = (span.start as usize, span.end as usize);
            self.texts.extend_from_slice(&text[position..start]);
            let mask = masks.get(span.mask)?;
            match mask.strategy {
                Strategy::Null => {}
                Strategy::Redact => self.texts.extend_from_slice(&mask.replacement),
                Strategy::Partial if wide => return None,
                Strategy::Partial => {
                    partial_chars(&text[start..end], mask.keep_last, &mut self.texts)?
                }
                Strategy::Python => return None,
            }
            position = end;
        }
        self.texts.extend_from_slice(&text[position..]);
        Some(())
    }

    /// The element as `jsonpaths.dumps` writes it, masked leaves replaced.
    fn write(&self, data: &[u8]) -> Vec<u8> {
        let signature = self.reader.signature();
        let values = self.reader.values();
        let mut out = Vec::with_capacity(data.len() + 16);
        let mut leaf = 0;
        let mut after_value = false; // a value was just written: the next one needs a comma
        let mut at = 0;
        while at < signature.len() {
            let token = signature[at];
            at += 1;
            match token {
                json::OBJECT_END | json::ARRAY_END => {
                    out.push(token);
                    after_value = true;
                    continue;
                }
                json::KEY => {
                    let mut length = [0; 4];
                    length.copy_from_slice(&signature[at..at + 4]);
                    let length = u32::from_le_bytes(length) as usize;
                    at += 4;
                    if after_value {
                        out.push(b',');
                    }
                    write_string(&mut out, &signature[at..at + length]);
                    out.push(b':');
                    at += length;
                    after_value = false;
                    continue;
                }
                _ => {}
            }
            if after_value {
                out.push(b',');
            }
            after_value = true;
            match token {
                json::OBJECT | json::ARRAY => {
                    out.push(token);
                    after_value = false;
                }
                _ => {
                    match &self.replaced[leaf] {
                        Some(Replacement::Null) => out.extend_from_slice(b"null"),
                        Some(Replacement::Text(range)) => {
                            write_string(&mut out, &self.texts[range.clone()]);
                        }
                        None => match values[leaf] {
                            // Without escapes a string holds nothing `dumps` escapes: as is.
                            Value::String(json::Text::Element(start, end)) => {
                                out.push(b'"');
                                out.extend_from_slice(&data[start..end]);
                                out.push(b'"');
                            }
                            Value::String(text) => {
                                write_string(&mut out, self.reader.text(data, text))
                            }
                            // A JSON integer (no `-0`, no leading zero) is its `repr`.
                            Value::Integer(start, end) => out.extend_from_slice(&data[start..end]),
                            Value::Boolean(true) => out.extend_from_slice(b"true"),
                            Value::Boolean(false) => out.extend_from_slice(b"false"),
                            Value::Null => out.extend_from_slice(b"null"),
                        },
                    }
                    leaf += 1;
                }
            }
        }
        out
    }
}

/// The most protective mask of `spans` (the lowest rank, the first of equals); `None` when
/// one is Python's (its place among the strategies is not known here) or out of range.
fn strongest<'m>(spans: &[Span], masks: &'m [MaskSpec]) -> Option<&'m MaskSpec> {
    let mut chosen: Option<&MaskSpec> = None;
    for span in spans {
        let mask = masks.get(span.mask)?;
        if mask.strategy == Strategy::Python {
            return None;
        }
        if chosen.is_none_or(|current| mask.rank < current.rank) {
            chosen = Some(mask);
        }
    }
    chosen
}

/// `strategies.covers`: whether a value masked whole by `outer` shows no more of a part of it
/// than `inner` would. Strategies in `STRATEGIES` order (null, redact, hash, partial); the
/// same one covers unless it is `partial` keeping characters, and other than the part's
/// `keep_last` (a part no longer than its own `keep_last` is starred whole).
fn covers(outer: &MaskSpec, inner: &MaskSpec) -> bool {
    let order = |strategy: Strategy| match strategy {
        Strategy::Null => 0,
        Strategy::Redact => 1,
        Strategy::Python => 2, // hash; a plan never masks a node with it
        Strategy::Partial => 3,
    };
    let (outer_order, inner_order) = (order(outer.strategy), order(inner.strategy));
    if outer_order != inner_order {
        return outer_order < inner_order;
    }
    outer.strategy != Strategy::Partial
        || outer.keep_last == 0
        || outer.keep_last == inner.keep_last
}

/// Whether `signature` (the reader's) is `skeleton` once every leaf is taken for a null.
fn same_skeleton(signature: &[u8], skeleton: &[u8]) -> bool {
    if signature.len() != skeleton.len() {
        return false; // each leaf is one token either way
    }
    let mut at = 0;
    while at < signature.len() {
        match signature[at] {
            json::KEY => {
                let Some(length) = signature.get(at + 1..at + 5) else {
                    return false;
                };
                let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]);
                let end = at + 5 + length as usize;
                if signature.get(at..end) != skeleton.get(at..end) {
                    return false;
                }
                at = end;
            }
            token @ (json::OBJECT | json::OBJECT_END | json::ARRAY | json::ARRAY_END) => {
                if skeleton[at] != token {
                    return false;
                }
                at += 1;
            }
            _ => {
                if skeleton[at] != json::NULL {
                    return false;
                }
                at += 1;
            }
        }
    }
    true
}

/// `_partial` on ASCII `text` without a NUL, onto `out`; `None` for any other text: Python
/// keeps the characters that read as at most `keep_last` once folded (`folding.read_length`:
/// `⑪` is two digits), which needs Unicode's tables, and stars text that reads as UTF-16 or
/// UTF-32 whole (`folding.reads_wide`, which a NUL may mean).
fn partial_chars(text: &[u8], keep_last: usize, out: &mut Vec<u8>) -> Option<()> {
    if !text.is_ascii() || text.contains(&0) {
        return None;
    }
    // A text no longer than keep_last is starred whole, never shown.
    let shown = if text.len() <= keep_last {
        0
    } else {
        keep_last
    };
    out.resize(out.len() + text.len() - shown, b'*');
    out.extend_from_slice(&text[text.len() - shown..]);
    Some(())
}

/// `value` (UTF-8) as a JSON string, escaped as Python's `json` does with
/// `ensure_ascii=False`: `"`, `\`, and control characters only.
fn write_string(out: &mut Vec<u8>, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut plain = 0;
    let mut at = 0;
    let mut unicode = *b"\\u0000";
    while at < value.len() {
        // Eight bytes at a time while none needs escaping (keys and most text).
        if let Some(chunk) = value.get(at..at + 8) {
            if !needs_escape(u64::from_le_bytes(chunk.try_into().unwrap_or_default())) {
                at += 8;
                continue;
            }
        }
        let byte = value[at];
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                unicode[4] = HEX[usize::from(byte >> 4)];
                unicode[5] = HEX[usize::from(byte & 0xf)];
                &unicode
            }
            _ => {
                at += 1;
                continue;
            }
        };
        out.extend_from_slice(&value[plain..at]);
        out.extend_from_slice(escape);
        at += 1;
        plain = at;
    }
    out.extend_from_slice(&value[plain..]);
    out.push(b'"');
}

/// Whether one of the eight bytes of `word` is a control character, `"` or `\` (the
/// classic "has a byte less than n" and "has a zero byte" tests: exact as a yes or no).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |value: u64| value.wrapping_sub(ONES) & !value & HIGHS != 0;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    below_space
        || has_zero(word ^ (ONES * u64::from(b'"')))
        || has_zero(word ^ (ONES * u64::from(b'\\')))
}

/// A plan as `labelgate.enforce.native` sends it: the shape's leaf ordinals by location (a
/// dict), `(leaf ordinal, mask)` per masked leaf, the skeleton signature.
type PlanArgs<'py> = (Bound<'py, PyDict>, Vec<(usize, usize)>, PyBackedBytes);
/// A mask as it sends it: strategy code, keep_last, replacement (UTF-8), rank.
type MaskArgs = (u8, usize, PyBackedBytes, usize);

/// The classification's `LeafSpans` and `Detection` types: a leaf's or a hit's fields are
/// read by position only from objects of exactly these (named tuples).
type Kinds<'py> = (Bound<'py, PyType>, Bound<'py, PyType>);

/// Mask the JSON-object elements of one tensor whose shape has a plan, into `masked`.
///
/// `objects`: element index -> its `LeafSpans` list, `shapes`: element index -> (the bytes
/// classified, their `JsonShape`), as the classification holds them; `values`: the tensor's
/// elements. An element is masked here when it is the one classified (the same bytes), its
/// shape has a plan (`plans`: shape -> index of `plan_args`) and the masker is sure of it;
/// then `masked[index]` becomes the masked element (the element itself if nothing in it is
/// masked; left as it is when `nested` is false and no span of it is masked, as Python
/// leaves it). `span_masks`: detector name -> index of `masks`; `kinds`: the `LeafSpans` and
/// `Detection` types (anything else is Python's to read). Returns the keys of
/// `objects` whose elements are left to Python, in order.
#[pyfunction]
#[allow(clippy::too_many_arguments)] // one call per tensor: everything it needs at once
pub fn mask_json<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    masked: &Bound<'py, PyList>,
    objects: &Bound<'py, PyDict>,
    shapes: &Bound<'py, PyDict>,
    plans: &Bound<'py, PyDict>,
    plan_args: Vec<PlanArgs<'py>>,
    masks: Vec<MaskArgs>,
    span_masks: &Bound<'py, PyDict>,
    nested: bool,
    kinds: Kinds<'py>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let masks: Vec<MaskSpec> = masks
        .iter()
        .map(|(code, keep_last, replacement, rank)| MaskSpec {
            strategy: Strategy::from_code(*code),
            keep_last: *keep_last,
            replacement: replacement.to_vec(),
            rank: *rank,
        })
        .collect();
    let shaped: Vec<Plan> = plan_args
        .iter()
        .map(|(_, nodes, skeleton)| Plan {
            nodes: nodes.clone(),
            skeleton: skeleton.to_vec(),
        })
        .collect();
    let mut masker = ElementMasker::default();
    let mut leaves_seen = LeafCache::new(kinds);
    let mut selections = Vec::new();
    let mut left = Vec::new();
    for (position, leaves) in objects.iter() {
        let Ok(index) = position.extract::<usize>() else {
            left.push(position);
            continue;
        };
        let Some((raw, plan_index)) = planned(values, shapes, plans, &position, index) else {
            left.push(position);
            continue;
        };
        let (Some(plan), Some((ordinals, _, _))) =
            (shaped.get(plan_index), plan_args.get(plan_index))
        else {
            left.push(position);
            continue;
        };
        if leaves_seen
            .select(&leaves, plan_index, ordinals, span_masks, &mut selections)
            .is_none()
        {
            left.push(position);
            continue;
        }
        let data = raw.downcast_exact::<PyBytes>()?.as_bytes();
        match masker.mask(data, plan, &masks, &selections, &leaves_seen.spans) {
            None => left.push(position),
            Some(Masked::Rewritten(data)) => masked.set_item(index, PyBytes::new(py, &data))?,
            Some(Masked::Unchanged) => {
                // `_mask_json` gives the element itself; unless nothing reached it at all.
                if nested || !selections.is_empty() {
                    masked.set_item(index, raw)?;
                }
            }
        }
    }
    Ok(left)
}

/// The element at `index` and its plan, if it is the element classified (bytes equal to
/// the classified ones) and its shape has a plan.
fn planned<'py>(
    values: &Bound<'py, PyList>,
    shapes: &Bound<'py, PyDict>,
    plans: &Bound<'py, PyDict>,
    position: &Bound<'py, PyAny>,
    index: usize,
) -> Option<(Bound<'py, PyAny>, usize)> {
    let shaped = shapes.get_item(position).ok()??;
    let shaped = shaped.downcast::<PyTuple>().ok()?;
    let raw = values.get_item(index).ok()?;
    let classified = shaped.get_item(0).ok()?;
    if !raw.is(&classified) {
        let (Ok(now), Ok(then)) = (
            raw.downcast_exact::<PyBytes>(),
            classified.downcast_exact::<PyBytes>(),
        ) else {
            return None;
        };
        if now.as_bytes() != then.as_bytes() {
            return None;
        }
    }
    raw.downcast_exact::<PyBytes>().ok()?;
    let plan = plans.get_item(shaped.get_item(1).ok()?).ok()??;
    Some((raw, plan.extract().ok()?))
}

/// What `_leaf_spans` selects in one `LeafSpans` (a leaf's detections) under one plan.
#[derive(Clone)]
enum Selected {
    /// No detection of it is masked.
    Nothing,
    /// Its leaf ordinal and its masked spans (a range of `LeafCache::spans`).
    Leaf(usize, Range<usize>),
    /// Something unexpected (a location not in the shape, offsets past 64 bits): Python's.
    Python,
}

/// The selection of each `LeafSpans` met in one call, by object and plan: the classifier
/// shares one `LeafSpans` between the elements of a shape with the same hit, and they are
/// immutable tuples (kept alive here, so an address is never reused within the call).
struct LeafCache<'py> {
    selected: AddressMap<(usize, usize), Selected>,
    kept: Vec<Bound<'py, PyAny>>,
    spans: Vec<Span>,
    kinds: Kinds<'py>,
}

impl<'py> LeafCache<'py> {
    fn new(kinds: Kinds<'py>) -> Self {
        Self {
            selected: AddressMap::default(),
            kept: Vec::new(),
            spans: Vec::new(),
            kinds,
        }
    }

    /// The selections of an element's `leaves` (a `LeafSpans` list) into `selections`
    /// (spans in `self.spans`); `None` when Python must mask it.
    fn select(
        &mut self,
        leaves: &Bound<'py, PyAny>,
        plan: usize,
        ordinals: &Bound<'py, PyDict>,
        span_masks: &Bound<'py, PyDict>,
        selections: &mut Vec<Selection>,
    ) -> Option<()> {
        selections.clear();
        if span_masks.is_empty() {
            return Some(());
        }
        for leaf in leaves.downcast::<PyList>().ok()? {
            let key = (leaf.as_ptr() as usize, plan);
            let selected = match self.selected.get(&key) {
                Some(selected) => selected.clone(),
                None => {
                    let selected = self
                        .read(&leaf, ordinals, span_masks)
                        .unwrap_or(Selected::Python);
                    self.selected.insert(key, selected.clone());
                    self.kept.push(leaf);
                    selected
                }
            };
            match selected {
                Selected::Nothing => {}
                Selected::Leaf(ordinal, spans) => selections.push((ordinal, spans)),
                Selected::Python => return None,
            }
        }
        Some(())
    }

    /// What `leaf` selects (`None`: Python's).
    fn read(
        &mut self,
        leaf: &Bound<'py, PyAny>,
        ordinals: &Bound<'py, PyDict>,
        span_masks: &Bound<'py, PyDict>,
    ) -> Option<Selected> {
        let (leaf_kind, hit_kind) = &self.kinds;
        if !leaf.get_type().is(leaf_kind) {
            return None;
        }
        let leaf = leaf.downcast::<PyTuple>().ok()?; // LeafSpans(location, path, detections)
        let from = self.spans.len();
        for hit in leaf.get_item(2).ok()?.downcast::<PyTuple>().ok()? {
            if !hit.get_type().is(hit_kind) {
                return None;
            }
            let hit = hit.downcast_into::<PyTuple>().ok()?; // Detection(detector, label, start, end)
            let name = hit.get_item(0).ok()?;
            name.downcast_exact::<PyString>().ok()?; // hashed without running Python code
            if let Some(mask) = span_masks.get_item(name).ok()? {
                self.spans.push(Span {
                    start: hit.get_item(2).ok()?.extract().ok()?,
                    end: hit.get_item(3).ok()?.extract().ok()?,
                    mask: mask.extract().ok()?,
                });
            }
        }
        if self.spans.len() == from {
            return Some(Selected::Nothing);
        }
        let ordinal = ordinals.get_item(leaf.get_item(0).ok()?).ok()??;
        Some(Selected::Leaf(
            ordinal.extract().ok()?,
            from..self.spans.len(),
        ))
    }
}

/// The detector names of every detection in the `LeafSpans` lists that are `objects`'
/// values (`Classification.json_elements` of one tensor), as a set; `None` when something
/// there is not exactly a `LeafSpans` of `Detection`s named by a `str` (Python reads those).
#[pyfunction]
pub fn json_detectors<'py>(
    py: Python<'py>,
    objects: &Bound<'py, PyDict>,
    kinds: Kinds<'py>,
) -> PyResult<Option<Bound<'py, PySet>>> {
    let (leaf_kind, hit_kind) = &kinds;
    let names = PySet::empty(py)?;
    // Elements of one shape share their `LeafSpans` for the same hit: each is read once.
    // Only exact `str` names are hashed (no Python code runs), so no object goes away.
    let mut seen: HashSet<usize, BuildHasherDefault<AddressHasher>> = HashSet::default();
    for (_, leaves) in objects.iter() {
        let Ok(leaves) = leaves.downcast::<PyList>() else {
            return Ok(None);
        };
        for leaf in leaves {
            if !seen.insert(leaf.as_ptr() as usize) {
                continue;
            }
            if !leaf.get_type().is(leaf_kind) {
                return Ok(None);
            }
            let Ok(hits) = leaf
                .downcast::<PyTuple>()?
                .get_item(2)?
                .downcast_into::<PyTuple>()
            else {
                return Ok(None);
            };
            for hit in hits {
                if !hit.get_type().is(hit_kind) {
                    return Ok(None);
                }
                let name = hit.downcast::<PyTuple>()?.get_item(0)?;
                if name.downcast_exact::<PyString>().is_err() {
                    return Ok(None);
                }
                names.add(name)?;
            }
        }
    }
    Ok(Some(names))
}

/// Hashes addresses (and small numbers): keys here are never chosen by the data.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type AddressMap<K, V> = HashMap<K, V, BuildHasherDefault<AddressHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    /// `text`'s signature with every leaf a null: the plan's skeleton for it.
    fn skeleton(text: &str) -> Vec<u8> {
        let mut reader = Reader::keeping_values();
        reader.parse_values(text.as_bytes()).expect("valid");
        let signature = reader.signature();
        let mut out = Vec::new();
        let mut at = 0;
        while at < signature.len() {
            if signature[at] == json::KEY {
                let length = u32::from_le_bytes(signature[at + 1..at + 5].try_into().unwrap());
                let end = at + 5 + length as usize;
                out.extend_from_slice(&signature[at..end]);
                at = end;
                continue;
            }
            out.push(match signature[at] {
                token @ (json::OBJECT | json::OBJECT_END | json::ARRAY | json::ARRAY_END) => token,
                _ => json::NULL,
            });
            at += 1;
        }
        out
    }

    fn spec(strategy: Strategy, keep_last: usize, replacement: &str, rank: usize) -> MaskSpec {
        MaskSpec {
            strategy,
            keep_last,
            replacement: replacement.as_bytes().to_vec(),
            rank,
        }
    }

    /// [null, redact "[R]", partial 4, partial 0, hash, redact "é"], ranked by strength.
    fn masks() -> Vec<MaskSpec> {
        vec![
            spec(Strategy::Null, 4, "[REDACTED]", 0),
            spec(Strategy::Redact, 4, "[R]", 1),
            spec(Strategy::Partial, 4, "[REDACTED]", 4),
            spec(Strategy::Partial, 0, "[REDACTED]", 3),
            spec(Strategy::Python, 4, "[REDACTED]", 2),
            spec(Strategy::Redact, 4, "\u{e9}", 1),
        ]
    }
    const NULL: usize = 0;
    const REDACT: usize = 1;
    const PARTIAL: usize = 2;
    const PARTIAL_0: usize = 3;
    const HASH: usize = 4;
    const REDACT_E: usize = 5;

    fn masked(
        text: &str,
        nodes: &[(usize, usize)],
        spans: &[(usize, i64, i64, usize)],
    ) -> Option<String> {
        let plan = Plan {
            nodes: nodes.to_vec(),
            skeleton: skeleton(text),
        };
        let mut selections: Vec<Selection> = Vec::new();
        let mut flat = Vec::new();
        for &(leaf, start, end, mask) in spans {
            match selections.last_mut() {
                Some((last, range)) if *last == leaf => range.end += 1,
                _ => selections.push((leaf, flat.len()..flat.len() + 1)),
            }
            flat.push(Span { start, end, mask });
        }
        let mut masker = ElementMasker::default();
        match masker.mask(text.as_bytes(), &plan, &masks(), &selections, &flat)? {
            Masked::Unchanged => Some("<unchanged>".into()),
            Masked::Rewritten(data) => Some(String::from_utf8(data).unwrap()),
        }
    }

    #[test]
    fn unmasked_leaves_are_written_as_dumps_writes_them() {
        let text = r#" {"a" : "x\u00e9\n\"\/", "b": [ 1, true, false, null, {}, [], {"c": [-12, "\ud83d\ude00"]} ],
            "k\"\\\u0001": "\u001f\u007f", "z": "1234567"} "#;
        let text = text.trim_start(); // the reader takes `{` first only
        assert_eq!(
            masked(text, &[(8, PARTIAL)], &[]).unwrap(),
            "{\"a\":\"x\u{e9}\\n\\\"/\",\"b\":[1,true,false,null,{},[],{\"c\":[-12,\"\u{1f600}\"]}],\
             \"k\\\"\\\\\\u0001\":\"\\u001f\u{7f}\",\"z\":\"***4567\"}"
        );
    }

    #[test]
    fn strings_are_escaped_as_python_escapes_them() {
        let mut out = Vec::new();
        write_string(
            &mut out,
            "a\"b\\c\u{8}\u{c}\n\r\t\u{0}\u{1b}\u{7f}\u{2028}/".as_bytes(),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0000\\u001b\u{7f}\u{2028}/\""
        );
    }

    #[test]
    fn words_needing_escapes_are_found_wherever_the_byte_is() {
        let escaped = |byte: u8| byte < 0x20 || byte == b'"' || byte == b'\\';
        for byte in 0..=255u8 {
            for position in 0..8 {
                for filler in [b'a', 0xff, 0x80, 0x21, 0x5d, 0x7f] {
                    let mut word = [filler; 8];
                    word[position] = byte;
                    assert_eq!(
                        needs_escape(u64::from_le_bytes(word)),
                        escaped(byte) || escaped(filler),
                        "{byte:#x} at {position} among {filler:#x}"
                    );
                }
            }
        }
        // Escapes at every offset of a longer text, chunks and tail alike.
        for at in 0..20 {
            let mut text = vec![b'x'; 20];
            text[at] = 0x01;
            let mut out = Vec::new();
            write_string(&mut out, &text);
            let mut expected = b"\"".to_vec();
            expected.extend_from_slice(&text[..at]);
            expected.extend_from_slice(b"\\u0001");
            expected.extend_from_slice(&text[at + 1..]);
            expected.push(b'"');
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn partial_stars_ascii_and_leaves_other_text_to_python() {
        let partial = |text: &str, keep_last| {
            let mut out = Vec::new();
            partial_chars(text.as_bytes(), keep_last, &mut out)
                .map(|()| String::from_utf8(out).unwrap())
        };
        assert_eq!(partial("123456789", 4).unwrap(), "*****6789");
        assert_eq!(partial("1234", 4).unwrap(), "****");
        assert_eq!(partial("12", 4).unwrap(), "**");
        assert_eq!(partial("", 4).unwrap(), "");
        assert_eq!(partial("abc", 0).unwrap(), "***");
        assert_eq!(partial("abc", usize::MAX).unwrap(), "***");
        assert!(partial("h\u{e9}llo w\u{f6}rld", 3).is_none());
        assert!(partial("\u{246a}\u{246a}\u{246a}", 4).is_none());
        assert!(partial_chars(b"\xc3", 1, &mut Vec::new()).is_none());
        // A NUL: it may read as UTF-16 (`\x11\x18` a Mongolian digit), Python's to decide.
        assert!(partial("S\0S\0N\0 \0\x11\x18\x12\x18", 4).is_none());
    }

    #[test]
    fn node_masks_follow_json_value() {
        let text = r#"{"s":"abcdef","i":-1234567,"t":true,"f":false,"n":null}"#;
        assert_eq!(
            masked(
                text,
                &[
                    (0, PARTIAL),
                    (1, PARTIAL),
                    (2, PARTIAL),
                    (3, PARTIAL),
                    (4, PARTIAL)
                ],
                &[]
            )
            .unwrap(),
            r#"{"s":"**cdef","i":null,"t":null,"f":null,"n":null}"#
        );
        assert_eq!(
            masked(
                text,
                &[(0, REDACT), (1, REDACT_E), (2, REDACT), (4, REDACT)],
                &[]
            )
            .unwrap(),
            r#"{"s":"[R]","i":"é","t":"[R]","f":false,"n":null}"#
        );
        assert_eq!(
            masked(text, &[(0, NULL), (1, NULL), (3, NULL), (4, NULL)], &[]).unwrap(),
            r#"{"s":null,"i":null,"t":true,"f":null,"n":null}"#
        );
        assert_eq!(
            masked(text, &[(0, PARTIAL_0)], &[]).unwrap(),
            r#"{"s":"******","i":-1234567,"t":true,"f":false,"n":null}"#
        );
    }

    #[test]
    fn spans_merge_with_the_most_protective_mask() {
        let text = r#"{"a":"0123456789","b":4111111111111111,"c":"x"}"#;
        // Overlapping: one span [2, 8) under redact (stronger than partial).
        assert_eq!(
            masked(text, &[], &[(0, 2, 6, PARTIAL), (0, 4, 8, REDACT)]).unwrap(),
            r#"{"a":"01[R]89","b":4111111111111111,"c":"x"}"#
        );
        // Adjacent spans stay two; given out of order, they are sorted.
        assert_eq!(
            masked(text, &[], &[(0, 5, 10, NULL), (0, 0, 5, PARTIAL)]).unwrap(),
            r#"{"a":"*1234","b":4111111111111111,"c":"x"}"#
        );
        // A span in an integer turns it into a string; at the leaf's edges.
        assert_eq!(
            masked(text, &[], &[(1, 0, 16, PARTIAL), (2, 0, 1, REDACT_E)]).unwrap(),
            r#"{"a":"0123456789","b":"************1111","c":"é"}"#
        );
        // Spans inside a masked leaf are not looked at, even ones that do not fit.
        assert_eq!(
            masked(text, &[(0, NULL)], &[(0, 5, 99, PARTIAL)]).unwrap(),
            r#"{"a":null,"b":4111111111111111,"c":"x"}"#
        );
        // Unless the leaf's mask does not cover a span's: then the leaf is masked whole by the
        // most protective span mask (`strategies.covering`); a hashed one is Python's.
        assert_eq!(
            masked(
                text,
                &[(0, PARTIAL)],
                &[(0, 2, 4, PARTIAL), (0, 5, 9, NULL)]
            )
            .unwrap(),
            r#"{"a":null,"b":4111111111111111,"c":"x"}"#
        );
        assert_eq!(
            masked(text, &[(0, PARTIAL)], &[(0, 2, 4, PARTIAL_0)]).unwrap(),
            r#"{"a":"**********","b":4111111111111111,"c":"x"}"#
        );
        assert_eq!(
            masked(text, &[(0, REDACT)], &[(0, 2, 4, PARTIAL_0)]).unwrap(),
            r#"{"a":"[R]","b":4111111111111111,"c":"x"}"#
        );
        assert_eq!(masked(text, &[(0, PARTIAL)], &[(0, 2, 4, HASH)]), None);
        // A second selection of a leaf already rewritten is skipped.
        assert_eq!(
            masked(
                text,
                &[],
                &[(2, 0, 1, NULL), (0, 0, 1, NULL), (2, 0, 1, REDACT)]
            )
            .unwrap(),
            r#"{"a":"123456789","b":4111111111111111,"c":""}"#
        );
    }

    #[test]
    fn nothing_masked_leaves_the_element_as_it_is() {
        assert_eq!(masked(r#"{"a": true}"#, &[], &[]).unwrap(), "<unchanged>");
    }

    #[test]
    fn what_only_python_does_is_left_to_python() {
        let text = r#"{"a":"0123456789","b":true,"c":null,"d":[1]}"#;
        assert!(masked(text, &[(0, HASH)], &[]).is_none());
        assert!(masked(text, &[], &[(0, 0, 2, HASH)]).is_none());
        assert!(masked(text, &[], &[(0, 0, 2, PARTIAL), (0, 1, 3, HASH)]).is_none());
        // A float: the reader leaves the element to Python (jsonpaths.scannable reads it).
        let mut reader = Reader::keeping_values();
        assert!(reader.parse_values(br#"{"a":"x","f":1.0}"#).is_none());
        assert!(masked(text, &[], &[(1, 0, 2, NULL)]).is_none()); // a span on a boolean
        assert!(masked(text, &[], &[(2, 0, 2, NULL)]).is_none()); // on a null
        assert!(masked(text, &[], &[(0, 0, 11, NULL)]).is_none()); // past the end
        assert!(masked(text, &[], &[(0, -1, 2, NULL)]).is_none());
        assert!(masked(text, &[], &[(0, 2, 2, NULL)]).is_none()); // empty
        assert!(masked(text, &[], &[(9, 0, 1, NULL)]).is_none()); // no such leaf
        assert!(masked(text, &[(9, NULL)], &[]).is_none());
        assert!(masked(text, &[(0, 99)], &[]).is_none()); // no such mask
                                                          // Half a character left behind: not UTF-8.
        assert!(masked(r#"{"a":"\u00e9x"}"#, &[], &[(0, 1, 3, NULL)]).is_none());
        assert!(masked(r#"{"a":"\u00e9x"}"#, &[], &[(0, 0, 1, PARTIAL)]).is_none());
        // A leaf with a NUL may read as UTF-16: a partial span or node in it is Python's.
        let nul = r#"{"a":"x\u0000 4111111111111111"}"#;
        assert!(masked(nul, &[], &[(0, 3, 19, PARTIAL)]).is_none());
        assert!(masked(nul, &[(0, PARTIAL)], &[]).is_none());
        assert_eq!(
            masked(nul, &[], &[(0, 3, 19, REDACT)]).unwrap(),
            r#"{"a":"x\u0000 [R]"}"#
        );
        let mut masker = ElementMasker::default();
        let plan = Plan {
            nodes: vec![(0, NULL)],
            skeleton: skeleton(r#"{"a":1,"b":2}"#),
        };
        for other in [
            r#"{"a":1,"c":2}"#,
            r#"{"a":1}"#,
            r#"{"a":[1],"b":2}"#,
            r#"{"a":1,"b":2"#,
        ] {
            assert!(
                masker
                    .mask(other.as_bytes(), &plan, &masks(), &[], &[])
                    .is_none(),
                "{other}"
            );
        }
        let written = masker.mask(br#"{"a":"x","b":true}"#, &plan, &masks(), &[], &[]);
        assert_eq!(
            written,
            Some(Masked::Rewritten(br#"{"a":null,"b":true}"#.to_vec()))
        );
    }

    #[test]
    fn skeletons_compare_keys_and_structure() {
        let plain = skeleton(r#"{"a":[1,{"b":"x"}]}"#);
        assert!(same_skeleton(&plain, &plain));
        let mut reader = Reader::keeping_values();
        reader.parse_values(br#"{"a":["s",{"b":true}]}"#).unwrap();
        assert!(same_skeleton(reader.signature(), &plain));
        reader.parse_values(br#"{"a":["s",{"c":true}]}"#).unwrap();
        assert!(!same_skeleton(reader.signature(), &plain));
        reader.parse_values(br#"{"a":["s",[true]]}"#).unwrap();
        assert!(!same_skeleton(reader.signature(), &plain));
    }
}
