//! The Unicode Bidirectional Algorithm (UAX #9) as `labelgate.classify.display_order` runs it:
//! the order a reader sees text in. The rules, step for step, of the numpy and regular
//! expression code it replaced, which stays the reference in
//! `tests/classify/display_order_reference.py`; `tests/classify/test_display_order_native.py`
//! holds the two equal, permutation for permutation.
//!
//! The Unicode data stays in Python: each character comes as its bidi class, a letter of
//! `display_order._CODES`, and its code point (read only to find brackets), with the bracket
//! pairs. Input that is not that (lengths that do not match, a letter that names no class,
//! unsorted pairs or block starts) is refused before any work.
//!
//! `bidi_order` reads the texts of a call one way; `bidi_orders` reads them every way
//! `display_order.display_orders_of` asks for and keeps each text's distinct orders but the
//! stored one (the tests hold it to `bidi_order` and that dedupe). Each block reads on its
//! own (one that nothing can reorder not at all), each isolating run sequence resolves in
//! two passes (W1-W7 and N1's first half, then N1-N2's second half with I1-I2), long runs of
//! one strong or neutral class at once, and a thread keeps its buffers from call to call.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

use crate::unlocked_if_large;

// The class letters (`display_order._CODES`).
const L: u8 = b'L';
const R: u8 = b'R';
const AL: u8 = b'A';
const EN: u8 = b'E';
const ES: u8 = b's';
const ET: u8 = b't';
const AN: u8 = b'N';
const CS: u8 = b'c';
const NSM: u8 = b'm';
const BN: u8 = b'b';
const B: u8 = b'B';
const S: u8 = b'S';
const WS: u8 = b'w';
const ON: u8 = b'o';
const LRE: u8 = b'x';
const RLE: u8 = b'y';
const LRO: u8 = b'X';
const RLO: u8 = b'Y';
const PDF: u8 = b'p';
const LRI: u8 = b'i';
const RLI: u8 = b'j';
const FSI: u8 = b'f';
const PDI: u8 = b'q';

const LETTERS: [u8; 23] = [
    L, R, AL, EN, ES, ET, AN, CS, NSM, BN, B, S, WS, ON, LRE, RLE, LRO, RLO, PDF, LRI, RLI, FSI,
    PDI,
];
/// Whether each byte is one of `LETTERS`.
const IS_LETTER: [bool; 256] = {
    let mut table = [false; 256];
    let mut index = 0;
    while index < LETTERS.len() {
        table[LETTERS[index] as usize] = true;
        index += 1;
    }
    table
};
/// The deepest explicit level (BD2).
const MAX_DEPTH: u8 = 125;
/// At most this many brackets open in a sequence (BD16); past it, no more pairs there.
const MAX_BRACKETS: usize = 63;
/// No position: a sequence's sos or eos, an isolate without its match, a run continuing none.
const NONE: u32 = u32::MAX;
/// The code points of the Basic Multilingual Plane.
const BMP: usize = 0x10000;

const fn is_initiator(code: u8) -> bool {
    matches!(code, LRI | RLI | FSI)
}

const fn is_isolate(code: u8) -> bool {
    matches!(code, LRI | RLI | FSI | PDI)
}

/// The embeddings, overrides and isolates, and PDF: what X1-X8 act on.
const fn is_explicit(code: u8) -> bool {
    matches!(code, LRE | RLE | LRO | RLO | PDF | LRI | RLI | FSI | PDI)
}

/// X9: embeddings, overrides, PDF and boundary neutrals.
const fn is_removed(code: u8) -> bool {
    matches!(code, LRE | RLE | LRO | RLO | PDF | BN)
}

/// NI: what N1 and N2 resolve.
const fn is_neutral(code: u8) -> bool {
    matches!(code, B | S | WS | ON | LRI | RLI | FSI | PDI)
}

/// A paragraph without one of these reads as stored (left to right whatever the base).
const fn is_trigger(code: u8) -> bool {
    matches!(
        code,
        R | AL | AN | LRE | RLE | LRO | RLO | LRI | RLI | FSI | PDI
    )
}

/// L1's whitespace: reset to the paragraph's level before a separator or at the end.
const fn is_trailing(code: u8) -> bool {
    matches!(
        code,
        WS | LRI | RLI | FSI | PDI | LRE | RLE | LRO | RLO | PDF | BN
    )
}

const fn is_separator(code: u8) -> bool {
    matches!(code, S | B)
}

/// Strong for N0 (numbers as R).
const fn is_strong(code: u8) -> bool {
    matches!(code, L | R | EN | AN)
}

/// The bracket pairs (BD14, BD15): each opening code point and its closing one.
pub struct Pairs {
    /// Every bracket's code point, ascending, with its closing bracket's when it opens one.
    brackets: Vec<(u32, Option<u32>)>,
    /// Above it, no code point is a bracket.
    highest: u32,
    /// A bit per code point of the BMP, set for each bracket there (a lookup a character).
    in_bmp: Vec<u64>,
}

impl Pairs {
    /// `openers` ascending, each without a repeat; `closers[i]` closes `openers[i]`.
    pub fn new(openers: Vec<u32>, closers: Vec<u32>) -> Result<Self, String> {
        if openers.len() != closers.len() {
            return Err("as many closing brackets as opening ones are needed".into());
        }
        if openers.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err("opening brackets must be in ascending order, none twice".into());
        }
        let mut brackets: Vec<(u32, Option<u32>)> = closers
            .iter()
            .filter(|closer| openers.binary_search(closer).is_err())
            .map(|&closer| (closer, None))
            .collect();
        brackets.extend(
            openers
                .iter()
                .zip(&closers)
                .map(|(&opener, &closer)| (opener, Some(closer))),
        );
        brackets.sort_unstable();
        brackets.dedup();
        let highest = brackets.last().map_or(0, |&(code, _)| code);
        let mut in_bmp = vec![0u64; BMP / 64];
        for &(code, _) in brackets.iter().filter(|&&(code, _)| code < BMP as u32) {
            in_bmp[code as usize / 64] |= 1 << (code % 64);
        }
        Ok(Pairs {
            brackets,
            highest,
            in_bmp,
        })
    }

    /// Whether `code` is a bracket.
    fn is_bracket(&self, code: u32) -> bool {
        match self.in_bmp.get(code as usize / 64) {
            Some(bits) => bits >> (code % 64) & 1 == 1,
            None => self.bracket(code).is_some(),
        }
    }

    /// None when `code` is no bracket, else the closing bracket when it opens one.
    fn bracket(&self, code: u32) -> Option<Option<u32>> {
        if code > self.highest {
            return None;
        }
        self.brackets
            .binary_search_by_key(&code, |&(bracket, _)| bracket)
            .ok()
            .map(|index| self.brackets[index].1)
    }
}

/// Little-endian u32s, one per character.
fn u32s(data: &[u8]) -> Result<Vec<u32>, String> {
    if !data.len().is_multiple_of(4) {
        return Err("a buffer of 32-bit code points has a length that is a multiple of 4".into());
    }
    Ok(data
        .chunks_exact(4)
        .map(|chunk| u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect())
}

/// How a text is read (`display_order._order`): its paragraphs' direction (0: left to right,
/// 1: right to left) and whether separators read as spaces (`whole`: one paragraph).
#[derive(Clone, Copy)]
struct Reading {
    base: u8,
    whole: bool,
}

/// The readings `display_order.display_orders_of` keeps the distinct orders of, in its
/// order: paragraphs apart, then the text whole (only when it holds a separator: else the
/// same reading), each left to right and right to left.
const READINGS: [Reading; 4] = [
    Reading {
        base: 0,
        whole: false,
    },
    Reading {
        base: 1,
        whole: false,
    },
    Reading {
        base: 0,
        whole: true,
    },
    Reading {
        base: 1,
        whole: true,
    },
];

/// One text (or block of one) as its readings take it: each character's class letter, code
/// point and whether it is a bracket (BD14, BD15: one of `pairs`), worked out once for all
/// of them.
struct Text<'a> {
    classes: &'a [u8],
    /// Its code points, little-endian u32s.
    points: &'a [u8],
    /// Where it starts in the call's characters.
    start: u32,
    /// The positions of its brackets in the call's characters, ascending.
    brackets: &'a [u32],
    pairs: &'a Pairs,
    /// Whether it may hold a run of more than `RUN` classes L, R or ON (`weak_types` then
    /// looks for them; most text has none, and a look costs a little).
    long_runs: bool,
}

impl<'a> Text<'a> {
    /// The part of it from `start` to `end` (its positions).
    fn part(&self, start: usize, end: usize) -> Text<'a> {
        let (first, last) = (self.start + start as u32, self.start + end as u32);
        let from = self.brackets.partition_point(|&at| at < first);
        let to = from + self.brackets[from..].partition_point(|&at| at < last);
        Text {
            classes: &self.classes[start..end],
            points: &self.points[4 * start..4 * end],
            start: first,
            brackets: &self.brackets[from..to],
            pairs: self.pairs,
            long_runs: self.long_runs,
        }
    }

    /// Its part from `start` to `end` as a text of its own (`long_runs` worked out).
    fn text(&self, start: usize, end: usize) -> Text<'a> {
        let mut text = self.part(start, end);
        let mut run = 0;
        text.long_runs = text.classes.windows(2).any(|pair| {
            run = if pair[0] == pair[1] { run + 1 } else { 0 };
            run >= RUN && matches!(pair[0], L | R | ON)
        });
        text
    }

    /// The code point at `at`.
    fn point(&self, at: usize) -> u32 {
        let bytes = &self.points[4 * at..4 * at + 4];
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

/// Buffers one call reuses from block to block and reading to reading: a block costs no
/// allocation once the first has grown them.
#[derive(Default)]
struct Scratch {
    /// The block's classes with separators as spaces, when read whole.
    codes: Vec<u8>,
    /// Its types, overrides applied (X6).
    types: Vec<u8>,
    levels: Vec<u8>,
    explicit: Explicit,
    implicit: Implicit,
    /// L2's level runs: start, end, level.
    runs: Vec<(u32, u32, u8)>,
    /// The call's brackets (`Text::brackets`), a reading's order, and the orders kept.
    brackets: Vec<u32>,
    order: Vec<u32>,
    shown: Vec<u32>,
}

/// X1-X8's buffers.
#[derive(Default)]
struct Explicit {
    controls: Vec<u32>,
    matching: Vec<u32>,
    opened: Vec<u32>,
    stack: Vec<Entry>,
}

/// X10 to I2's buffers.
#[derive(Default)]
struct Implicit {
    /// The characters X9 keeps, and those it removes.
    kept: Vec<u32>,
    removed: Vec<u32>,
    /// The level runs, by index into `kept`, and each one's level.
    run_starts: Vec<u32>,
    run_levels: Vec<u8>,
    /// BD13: the run each run continues with, and whether a run continues another.
    continues: Vec<u32>,
    continued: Vec<bool>,
    isolates: Vec<(u32, u32)>,
    opened: Vec<u32>,
    sequence: Sequence,
}

/// One isolating run sequence between its sos and its eos, as W1-N2 resolve it.
#[derive(Default)]
struct Sequence {
    /// Its types: sos, each character's, eos.
    string: Vec<u8>,
    /// Each one's position in the block (`NONE`: sos or eos).
    index: Vec<u32>,
    /// The positions of its brackets.
    brackets: Vec<u32>,
    found: Vec<(u32, u32)>,
    open: Vec<(u32, u32)>,
    /// The last strong type before each opening of `found`.
    befores: Vec<u32>,
    closings: BinaryHeap<Reverse<u32>>,
}

/// Each class letter's properties, a bit each (the `is_` functions'), for passes that ask
/// several at once or of every character.
const TRIGGER: u16 = 1;
const EXPLICIT: u16 = 2;
const REMOVED: u16 = 4;
const NEUTRAL: u16 = 8;
const TRAILING: u16 = 16;
const SEPARATOR: u16 = 32;
const ISOLATE: u16 = 64;
/// Not a class's: a block holding a bracket (`Text::brackets`).
const BRACKETED: u16 = 128;
const PROPERTIES: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut index = 0;
    while index < LETTERS.len() {
        let code = LETTERS[index];
        let mut bits = 0;
        if is_trigger(code) {
            bits |= TRIGGER;
        }
        if is_explicit(code) {
            bits |= EXPLICIT;
        }
        if is_removed(code) {
            bits |= REMOVED;
        }
        if is_neutral(code) {
            bits |= NEUTRAL;
        }
        if is_trailing(code) {
            bits |= TRAILING;
        }
        if is_separator(code) {
            bits |= SEPARATOR;
        }
        if is_isolate(code) {
            bits |= ISOLATE;
        }
        table[code as usize] = bits;
        index += 1;
    }
    table
};

fn has(code: u8, property: u16) -> bool {
    PROPERTIES[usize::from(code)] & property != 0
}

/// The properties any of `codes` has.
fn properties(codes: &[u8]) -> u16 {
    codes
        .iter()
        .fold(0, |found, &code| found | PROPERTIES[usize::from(code)])
}

/// The order `reading` shows `text` in, each position's character, into `order` (cleared
/// first). Each block (the whole text when read whole, else each paragraph and each
/// paragraph separator) reads on its own; one without a character that can reorder it reads
/// as stored.
fn read_text(text: &Text<'_>, reading: Reading, scratch: &mut Scratch, order: &mut Vec<u32>) {
    let classes = text.classes;
    let size = classes.len();
    order.clear();
    order.extend(0..size as u32);
    let mut start = 0;
    while start < size {
        let end = if reading.whole {
            size
        } else if classes[start] == B {
            start + 1
        } else {
            classes[start..]
                .iter()
                .position(|&code| code == B)
                .map_or(size, |at| start + at)
        };
        let mut found = properties(&classes[start..end]);
        if found & TRIGGER != 0 {
            let block = text.part(start, end);
            if !block.brackets.is_empty() {
                found |= BRACKETED;
            }
            read_block(&block, found, reading, scratch, &mut order[start..end]);
        }
        start = end;
    }
}

/// X1-L2 over one block that holds a character that can reorder it (`found`: the
/// `properties` of its characters), its paragraph of direction `reading.base`: `order` (the
/// block's positions, ascending) in the order shown.
fn read_block(
    block: &Text<'_>,
    found: u16,
    reading: Reading,
    scratch: &mut Scratch,
    order: &mut [u32],
) {
    let Scratch {
        codes,
        types,
        levels,
        explicit: explicit_work,
        implicit: implicit_work,
        runs,
        ..
    } = scratch;
    let base = reading.base;
    let codes: &[u8] = if reading.whole && found & SEPARATOR != 0 {
        codes.clear();
        codes.extend(
            block
                .classes
                .iter()
                .map(|&code| if code == B || code == S { WS } else { code }),
        );
        codes
    } else {
        block.classes
    };
    let size = codes.len();
    levels.clear();
    levels.resize(size, base);
    types.clear();
    types.extend_from_slice(codes);
    if found & EXPLICIT != 0 {
        explicit(codes, base, levels, types, explicit_work);
    }
    implicit(codes, types, levels, block, found, base, implicit_work);
    // X9's removed characters take the level of the one before them (or the paragraph's):
    // they show as nothing, but each must have a place. (In order: one after another takes
    // the level the one before it took.)
    for &at in &implicit_work.removed {
        let at = at as usize;
        levels[at] = if at == 0 { base } else { levels[at - 1] };
    }
    // L1: separators, and whitespace before one or at the paragraph's end, at its level.
    let trailing = |levels: &mut [u8], end: usize| {
        for at in (0..end).rev() {
            if !has(codes[at], TRAILING) {
                break;
            }
            levels[at] = base;
        }
    };
    if found & SEPARATOR != 0 {
        for at in (0..size).filter(|&at| is_separator(codes[at])) {
            levels[at] = base;
            trailing(levels, at);
        }
    }
    trailing(levels, size);
    reversed_runs(levels, order, runs);
}

/// One entry of X1-X8's stack.
#[derive(Clone, Copy)]
struct Entry {
    level: u8,
    /// `L` or `R` under an override, else 0.
    overriding: u8,
    isolate: bool,
}

fn top(stack: &[Entry], base: u8) -> Entry {
    stack.last().copied().unwrap_or(Entry {
        level: base,
        overriding: 0,
        isolate: false,
    })
}

/// X1-X8 over one block: each character's embedding level and its type, overrides applied.
fn explicit(classes: &[u8], base: u8, levels: &mut [u8], types: &mut [u8], work: &mut Explicit) {
    let size = classes.len();
    let Explicit {
        controls,
        matching,
        opened,
        stack,
    } = work;
    controls.clear();
    controls.extend((0..size as u32).filter(|&at| is_explicit(classes[at as usize])));
    if controls.is_empty() {
        return;
    }
    // BD9: each isolate initiator's matching PDI.
    matching.clear();
    matching.resize(size, NONE);
    opened.clear();
    for &at in controls.iter() {
        let code = classes[at as usize];
        if is_initiator(code) {
            opened.push(at);
        } else if code == PDI {
            if let Some(first) = opened.pop() {
                matching[first as usize] = at;
            }
        }
    }
    stack.clear();
    stack.push(Entry {
        level: base,
        overriding: 0,
        isolate: false,
    });
    let (mut overflow_isolates, mut overflow_embeddings, mut valid_isolates) = (0usize, 0usize, 0);
    let mut start = 0;
    for &at in controls.iter() {
        let at = at as usize;
        let entry = top(stack, base);
        assign(&mut levels[start..at], &mut types[start..at], entry);
        let code = classes[at];
        let level = entry.level;
        match code {
            LRE | RLE | LRO | RLO => {
                let new = if matches!(code, RLE | RLO) {
                    (level + 1) | 1
                } else {
                    (level + 2) & !1
                };
                if new <= MAX_DEPTH && overflow_isolates == 0 && overflow_embeddings == 0 {
                    let overriding = match code {
                        LRO => L,
                        RLO => R,
                        _ => 0,
                    };
                    stack.push(Entry {
                        level: new,
                        overriding,
                        isolate: false,
                    });
                } else if overflow_isolates == 0 {
                    overflow_embeddings += 1;
                }
                levels[at] = level;
            }
            LRI | RLI | FSI => {
                levels[at] = level;
                if entry.overriding != 0 {
                    types[at] = entry.overriding;
                }
                let right = match code {
                    FSI => {
                        let end = if matching[at] == NONE {
                            size
                        } else {
                            matching[at] as usize
                        };
                        first_strong(classes, at + 1, end, matching) == R
                    }
                    _ => code == RLI,
                };
                let new = if right {
                    (level + 1) | 1
                } else {
                    (level + 2) & !1
                };
                if new <= MAX_DEPTH && overflow_isolates == 0 && overflow_embeddings == 0 {
                    valid_isolates += 1;
                    stack.push(Entry {
                        level: new,
                        overriding: 0,
                        isolate: true,
                    });
                } else {
                    overflow_isolates += 1;
                }
            }
            PDI => {
                if overflow_isolates > 0 {
                    overflow_isolates -= 1;
                } else if valid_isolates > 0 {
                    overflow_embeddings = 0;
                    while stack.len() > 1 && !top(stack, base).isolate {
                        stack.pop();
                    }
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    valid_isolates -= 1;
                }
                let entry = top(stack, base);
                levels[at] = entry.level;
                if entry.overriding != 0 {
                    types[at] = entry.overriding;
                }
            }
            _ => {
                // PDF
                if overflow_isolates > 0 {
                    // Inside an isolate past the deepest level: nothing of it to end.
                } else if overflow_embeddings > 0 {
                    overflow_embeddings -= 1;
                } else if !entry.isolate && stack.len() >= 2 {
                    stack.pop();
                }
                levels[at] = top(stack, base).level;
            }
        }
        start = at + 1;
    }
    let entry = top(stack, base);
    assign(&mut levels[start..], &mut types[start..], entry);
}

/// Characters with no explicit control among them at `entry`'s level, their types
/// overridden by its override (X6).
fn assign(levels: &mut [u8], types: &mut [u8], entry: Entry) {
    levels.fill(entry.level);
    if entry.overriding != 0 {
        for code in types.iter_mut() {
            if !(*code == B || is_removed(*code) || is_isolate(*code)) {
                *code = entry.overriding;
            }
        }
    }
}

/// P2-P3 over `classes[at..end]`: `R` when its first strong character (skipping isolates)
/// is R or AL, else `L`.
fn first_strong(classes: &[u8], mut at: usize, end: usize, matching: &[u32]) -> u8 {
    let end = end.min(classes.len());
    loop {
        let Some(found) =
            (at..end).find(|&index| matches!(classes[index], L | R | AL | LRI | RLI | FSI))
        else {
            return L;
        };
        match classes[found] {
            R | AL => return R,
            L => return L,
            _ => {}
        }
        let closing = matching[found];
        if closing == NONE {
            return L;
        }
        at = closing as usize + 1;
    }
}

/// BD9 over one block: each isolate initiator with its matching PDI, a paragraph separator
/// closing every isolate open.
fn matching_isolates(codes: &[u8], matching: &mut Vec<(u32, u32)>, opened: &mut Vec<u32>) {
    matching.clear();
    opened.clear();
    for (at, &code) in codes.iter().enumerate() {
        if code == B {
            opened.clear();
        } else if is_initiator(code) {
            opened.push(at as u32);
        } else if code == PDI {
            if let Some(first) = opened.pop() {
                matching.push((first, at as u32));
            }
        }
    }
}

/// X10, W1-W7, N0-N2, I1-I2 over the isolating run sequences of the characters X9 keeps in
/// one block (`block`, its `codes`; paragraph level `base`; `found`: its characters'
/// `properties`): `levels` raised in place. Each sequence resolves on its own,
/// between a character of its sos and one of its eos (both strong: no rule reaches past
/// them).
fn implicit(
    codes: &[u8],
    types: &[u8],
    levels: &mut [u8],
    block: &Text<'_>,
    found: u16,
    base: u8,
    work: &mut Implicit,
) {
    let Implicit {
        kept,
        removed,
        run_starts,
        run_levels,
        continues,
        continued,
        isolates,
        opened,
        sequence,
    } = work;
    kept.clear();
    removed.clear();
    if found & REMOVED != 0 {
        // Each position written to both, the next write kept in the one it goes to: no branch.
        kept.resize(codes.len(), 0);
        removed.resize(codes.len(), 0);
        let (mut count, mut gone) = (0, 0);
        for (at, &code) in codes.iter().enumerate() {
            let x9 = has(code, REMOVED);
            kept[count] = at as u32;
            removed[gone] = at as u32;
            count += usize::from(!x9);
            gone += usize::from(x9);
        }
        kept.truncate(count);
        removed.truncate(gone);
    } else {
        kept.extend(0..codes.len() as u32);
    }
    let count = kept.len();
    if count == 0 {
        return;
    }
    // The level runs, by index into `kept`, and their levels before I1-I2 raise any.
    run_starts.clear();
    run_levels.clear();
    let mut level = levels[kept[0] as usize];
    run_starts.push(0);
    run_levels.push(level);
    if found & EXPLICIT != 0 {
        for (index, &at) in kept.iter().enumerate().skip(1) {
            if levels[at as usize] != level {
                level = levels[at as usize];
                run_starts.push(index as u32);
                run_levels.push(level);
            }
        }
    }
    let runs = run_starts.len();
    let run_end = |run: usize| run_starts.get(run + 1).map_or(count, |&end| end as usize);
    // BD13: a run ending with an isolate initiator continues with the run its matching PDI
    // opens, which starts no sequence of its own.
    continues.clear();
    continues.resize(runs, NONE);
    continued.clear();
    continued.resize(runs, false);
    if found & ISOLATE != 0 {
        matching_isolates(codes, isolates, opened);
        for &(first, closing) in isolates.iter() {
            let ends_at = kept.partition_point(|&at| at < first);
            let opens_at = kept.partition_point(|&at| at < closing) as u32;
            let run = run_starts
                .partition_point(|&start| start as usize <= ends_at)
                .saturating_sub(1);
            let following = run_starts.partition_point(|&start| start < opens_at);
            if run_end(run) == ends_at + 1 && following < runs && run_starts[following] == opens_at
            {
                continues[run] = following as u32;
                continued[following] = true;
            }
        }
    }
    for run in 0..runs {
        if continued[run] {
            continue;
        }
        let mut last_run = run;
        while continues[last_run] != NONE {
            last_run = continues[last_run] as usize;
        }
        let level = run_levels[run];
        let before = if run > 0 { run_levels[run - 1] } else { base };
        let last_at = kept[run_end(last_run) - 1] as usize;
        let after = if last_run + 1 < runs && !is_initiator(codes[last_at]) {
            run_levels[last_run + 1]
        } else {
            base
        };
        let direction = |other: u8| if level.max(other) & 1 == 1 { R } else { L };
        let Sequence {
            string,
            index,
            brackets,
            ..
        } = sequence;
        string.clear();
        index.clear();
        brackets.clear();
        string.push(direction(before));
        index.push(NONE);
        let mut each = run;
        loop {
            let ats = &kept[run_starts[each] as usize..run_end(each)];
            let (first, last) = (ats[0] as usize, ats[ats.len() - 1] as usize);
            let from = string.len() as u32;
            if last - first + 1 == ats.len() {
                // Nothing removed in the run: its characters as they are.
                string.extend_from_slice(&types[first..=last]);
                index.extend(first as u32..=last as u32);
            } else {
                string.extend(ats.iter().map(|&at| types[at as usize]));
                index.extend_from_slice(ats);
            }
            if found & BRACKETED != 0 {
                let run = block.part(first, last + 1);
                // Brackets are ON: X9 keeps them.
                brackets.extend(run.brackets.iter().map(|&at| {
                    let at = at - block.start;
                    from + ats.partition_point(|&kept| kept < at) as u32
                }));
            }
            if continues[each] == NONE {
                break;
            }
            each = continues[each] as usize;
        }
        string.push(direction(after));
        index.push(NONE);
        resolve(sequence, level, types, block, levels);
    }
}

/// I1-I2: how much a resolved type raises a level, at an even level and at an odd one.
const RAISED: [[u8; 256]; 2] = {
    let mut table = [[0u8; 256]; 2];
    table[0][R as usize] = 1;
    table[0][EN as usize] = 2;
    table[0][AN as usize] = 2;
    table[1][L as usize] = 1;
    table[1][EN as usize] = 1;
    table[1][AN as usize] = 1;
    table
};

/// A mark's type after W1, by its base's (the type before it that is no mark): the base's,
/// but ON after an isolate control; with no base (0), a mark still.
const MARKED: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = code as u8;
        code += 1;
    }
    table[0] = NSM;
    table[LRI as usize] = ON;
    table[RLI as usize] = ON;
    table[FSI as usize] = ON;
    table[PDI as usize] = ON;
    table
};

/// W1-W7, N0-N2 and I1-I2 over one isolating run sequence at `level` (`types`: its block's,
/// read for the marks after a bracket; `block`, read for its brackets): `levels` of its
/// characters raised. Two passes where the rules took nine (three or four with brackets to
/// pair).
fn resolve(sequence: &mut Sequence, level: u8, types: &[u8], block: &Text<'_>, levels: &mut [u8]) {
    let (string, runs) = (&mut sequence.string, block.long_runs);
    if sequence.brackets.is_empty() {
        if runs {
            weak_types::<true, true>(string);
        } else {
            weak_types::<true, false>(string);
        }
    } else {
        // N0 comes between W7 and N1.
        if runs {
            weak_types::<false, true>(string);
        } else {
            weak_types::<false, false>(string);
        }
        pair_brackets(sequence, level, types, block);
        let mut before = L;
        for code in sequence.string.iter_mut() {
            *code = neutral_before(*code, &mut before);
        }
    }
    // N1-N2's second half, then I1-I2: a neutral takes the direction on both sides of it
    // when they agree (numbers as R), else the embedding's; each character's level rises
    // by its type.
    let embedding = if level & 1 == 1 { R } else { L };
    let raise = &RAISED[usize::from(level & 1)];
    let last = sequence.string.len() - 1;
    let mut after = if sequence.string[last] == L { L } else { R }; // eos, strong
    for (&typed, &at) in sequence.string[1..last]
        .iter()
        .zip(&sequence.index[1..last])
        .rev()
    {
        let neutral = typed & RESOLVING != 0;
        let agreed = if typed & !RESOLVING == after {
            after
        } else {
            embedding
        };
        let resolved = if neutral { agreed } else { typed };
        after = if neutral {
            after
        } else {
            DIRECTION[usize::from(typed)]
        };
        levels[at as usize] += raise[usize::from(resolved)];
    }
}

/// N1's first half on one type: a neutral becomes the direction of the last type before it
/// that is none (`before`), marked `RESOLVING`; another sets `before`.
fn neutral_before(typed: u8, before: &mut u8) -> u8 {
    let neutral = has(typed, NEUTRAL);
    let marked = *before | RESOLVING;
    *before = if neutral {
        *before
    } else {
        DIRECTION[usize::from(typed)]
    };
    if neutral {
        marked
    } else {
        typed
    }
}

/// W6-W7 (and N1's first half, `NEUTRALS`) on one type after another, as `weak_types`
/// finishes them. W6: other separators and terminators are neutrals; W7: European digits
/// after L are L.
struct Finish<const NEUTRALS: bool> {
    after_left: u8,
    before: u8,
}

impl<const NEUTRALS: bool> Finish<NEUTRALS> {
    fn type_of(&mut self, typed: u8) -> u8 {
        let resolved = if (typed == EN) & (self.after_left != 0) {
            L
        } else {
            W6[usize::from(typed)]
        };
        self.after_left = (self.after_left & KEEPS_LEFT[usize::from(typed)]) | u8::from(typed == L);
        if NEUTRALS {
            neutral_before(resolved, &mut self.before)
        } else {
            resolved
        }
    }
}

/// W1-W7 (and N1's first half: `NEUTRALS`) in one pass over a sequence's types (`string`: sos,
/// its characters', eos). W1: a mark takes its base's type (after an isolate control: ON);
/// W2: European digits after Arabic letters are Arabic numbers; W3: AL is R; W4: a single
/// separator between two numbers of a kind is one; W5: terminators next to European digits
/// are digits; then `Finish`. W1-W3 look back only; W4 reads the types W1-W3 made on both
/// sides (one character ahead: a separator made a number is next to no other separator
/// made one); a run of terminators waits for what follows it (W5 may make it digits).
#[inline(never)] // one copy a variant: inlined, it slows the loops around it
fn weak_types<const NEUTRALS: bool, const RUNS: bool>(string: &mut [u8]) {
    let size = string.len();
    let mut early = Early {
        mark_base: 0,
        after_arabic: false,
    };
    let mut finish = Finish::<NEUTRALS> {
        after_left: 0,
        before: L,
    };
    // sos (strong) and eos (strong, last) are no separators or terminators.
    let (mut previous, mut current) = (early.type_of(string[0]), early.type_of(string[1]));
    string[0] = finish.type_of(previous);
    let mut last = previous; // the type W5 made before `at`
    let mut terminators = NONE; // where the run of terminators before `at` starts
    let mut at = 1;
    while at < size {
        // A run of L, R or ON (`RUNS`: the text holds one longer than `RUN`, as a tensor of
        // token ids does): W1-W7 and N1's first half make each what they make the first, and
        // each leaves every rule's state as the first does. (Only runs longer than most
        // words: a word's letters go as fast one by one.)
        if RUNS
            && terminators == NONE
            && matches!(current, L | R | ON)
            && at + RUN < size - 1
            && string[at + RUN] == current
        {
            let same = run_after(string, at, current);
            if same > 0 {
                let shown = finish.type_of(current);
                string[at..=at + same].fill(shown);
                early.mark_base = current;
                early.after_arabic &= current == ON;
                (last, previous) = (current, current);
                at += same + 1;
                current = early.type_of(string[at]);
                continue;
            }
        }
        let typed = if at < size - 1 {
            let next = early.type_of(string[at + 1]);
            let european = (current == ES || current == CS) & (previous == EN) & (next == EN);
            let arabic = (current == CS) & (previous == AN) & (next == AN);
            let typed = if arabic { AN } else { current };
            let typed = if european { EN } else { typed };
            (previous, current) = (current, next);
            typed
        } else {
            current
        };
        let typed = if (typed == ET) & (last == EN) {
            EN
        } else {
            typed
        };
        last = typed;
        if typed == ET {
            terminators = terminators.min(at as u32);
            at += 1;
            continue;
        }
        if terminators != NONE {
            let made = if typed == EN { EN } else { ET };
            for code in &mut string[terminators as usize..at] {
                *code = finish.type_of(made);
            }
            terminators = NONE;
        }
        string[at] = finish.type_of(typed);
        at += 1;
    }
}

/// How many characters of one type after the first make a run `weak_types` takes at once.
const RUN: usize = 8;

/// How many of the types after `at` (not the sequence's eos) are `current`, when `RUN` at
/// least are, else 0. Out of line: the loop that asks keeps its state in registers.
#[inline(never)]
fn run_after(string: &[u8], at: usize, current: u8) -> usize {
    let end = string.len() - 1;
    let same = string[at + 1..end]
        .iter()
        .take_while(|&&code| code == current)
        .count();
    if same >= RUN {
        same
    } else {
        0
    }
}

/// W1-W3 on one type after another, as `weak_types` reads them. W1: a mark takes its base's
/// type (the last type before it that is no mark; after an isolate control: ON); W2:
/// European digits after Arabic letters (the last strong type AL) are Arabic numbers; W3:
/// AL is R.
struct Early {
    mark_base: u8,
    after_arabic: bool,
}

impl Early {
    fn type_of(&mut self, code: u8) -> u8 {
        let mark = code == NSM;
        let typed = if mark {
            MARKED[usize::from(self.mark_base)]
        } else {
            code
        };
        self.mark_base = if mark { self.mark_base } else { typed };
        match typed {
            L | R => {
                self.after_arabic = false;
                typed
            }
            AL => {
                self.after_arabic = true;
                R
            }
            EN if self.after_arabic => AN,
            _ => typed,
        }
    }
}

/// Tables of class letters for passes that must not branch on one: W6's (separators and
/// terminators are neutrals), each type's direction for N1 (numbers as R), and which types
/// leave W7's last strong type as it was.
const W6: [u8; 256] = mapped(&[(ES, ON), (ET, ON), (CS, ON)]);
const DIRECTION: [u8; 256] = {
    let mut table = [R; 256];
    table[L as usize] = L;
    table
};
const KEEPS_LEFT: [u8; 256] = flags(&[L, R], 0, 1);

/// Every byte as itself but those `changed`.
const fn mapped(changed: &[(u8, u8)]) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = code as u8;
        code += 1;
    }
    let mut index = 0;
    while index < changed.len() {
        table[changed[index].0 as usize] = changed[index].1;
        index += 1;
    }
    table
}

/// `set` for each of `codes`, `other` for any other byte.
const fn flags(codes: &[u8], set: u8, other: u8) -> [u8; 256] {
    let mut table = [other; 256];
    let mut index = 0;
    while index < codes.len() {
        table[codes[index] as usize] = set;
        index += 1;
    }
    table
}

/// N1-N2's mark on a neutral between its passes (class letters are ASCII).
const RESOLVING: u8 = 0x80;

/// N0 in place: bracket pairs (BD16, at most `MAX_BRACKETS` open) take the embedding
/// direction when a strong type of it is inside, else the other one's when inside and
/// before them (numbers as R; the sequence's sos is its first character); marks after them
/// (in `types`) follow.
fn pair_brackets(sequence: &mut Sequence, level: u8, types: &[u8], block: &Text<'_>) {
    let Sequence {
        string,
        index,
        brackets,
        found,
        open,
        befores,
        closings,
    } = sequence;
    let size = string.len();
    found.clear();
    open.clear(); // (closing code point, position)
    for &position in brackets.iter() {
        if string[position as usize] != ON {
            continue; // overridden
        }
        let code = block.point(index[position as usize] as usize);
        let Some(opens) = block.pairs.bracket(code) else {
            continue;
        };
        if let Some(closing) = opens {
            if open.len() >= MAX_BRACKETS {
                break; // BD16's stack is full: no more pairs in this sequence
            }
            open.push((closing, position));
            continue;
        }
        if let Some(depth) = open.iter().rposition(|&(closing, _)| closing == code) {
            found.push((open[depth].1, position));
            open.truncate(depth);
        }
    }
    if found.is_empty() {
        return;
    }
    found.sort_unstable();
    // The last strong type before each opening bracket, before N0 (sos is strong).
    befores.clear();
    let (mut at, mut strong) = (0, 0);
    for &(opening, _) in found.iter() {
        while at < opening {
            strong = if is_strong(string[at as usize]) {
                at
            } else {
                strong
            };
            at += 1;
        }
        befores.push(strong);
    }
    // Brackets N0 resolves are strong for the pairs after them: the last opening resolved,
    // and the closings resolved that an opening comes after (pairs nest or follow).
    let embedding = if level & 1 == 1 { R } else { L };
    let mut last_opening = None;
    closings.clear(); // the closings resolved, not yet passed
    let mut last_closing = None;
    for (&(opening, closing), &before) in found.iter().zip(befores.iter()) {
        while let Some(&Reverse(passed)) = closings.peek() {
            if passed >= opening {
                break;
            }
            closings.pop();
            last_closing = Some(last_closing.map_or(passed, |last: u32| last.max(passed)));
        }
        let inside = &string[opening as usize + 1..closing as usize];
        let left = inside.contains(&L);
        let right = inside.iter().any(|&code| matches!(code, R | EN | AN));
        let direction = if (left && embedding == L) || (right && embedding == R) {
            embedding
        } else if left || right {
            // The other direction when the strong type before is of it too (N0 c).
            let last = before
                .max(last_opening.unwrap_or(0))
                .max(last_closing.unwrap_or(0));
            if string[last as usize] == L {
                L
            } else {
                R
            }
        } else {
            continue;
        };
        last_opening = Some(opening);
        closings.push(Reverse(closing));
        for position in [opening as usize, closing as usize] {
            string[position] = direction;
            let mut after = position + 1;
            while after < size - 1 && types[index[after] as usize] == NSM {
                string[after] = direction;
                after += 1;
            }
        }
    }
}

/// L2 over one block: from its highest level down to its lowest odd one, each run at that
/// level or higher reversed; `order` (the block's positions as stored, ascending) in the
/// order that makes. The reversals move level runs whole, so they are made on the runs
/// (`runs`' buffer), then the positions written once.
fn reversed_runs(levels: &[u8], order: &mut [u32], runs: &mut Vec<(u32, u32, u8)>) {
    let size = levels.len();
    runs.clear();
    let mut start = 0;
    for at in 1..size {
        if levels[at] != levels[at - 1] {
            runs.push((start as u32, at as u32, levels[start]));
            start = at;
        }
    }
    runs.push((start as u32, size as u32, levels[start]));
    let (Some(lowest), Some(highest)) = (
        runs.iter().map(|run| run.2).min(),
        runs.iter().map(|run| run.2).max(),
    ) else {
        return;
    };
    let lowest = lowest | 1;
    if highest < lowest {
        return; // every level even and the same: as stored
    }
    let mut present = [false; 256];
    for run in runs.iter() {
        present[usize::from(run.2)] = true;
    }
    // A run reversed an odd number of times shows its characters last to first: the top bit
    // of its level marks it (levels stay under 128).
    const BACKWARDS: u8 = 0x80;
    let level_of = |run: &(u32, u32, u8)| run.2 & !BACKWARDS;
    // Between two levels the block holds, each level reverses the same runs (those at the
    // higher one or above): twice is as stored, so an odd count reverses them once.
    let mut level = highest;
    while level >= lowest {
        let mut next = level - 1;
        while next >= lowest && !present[usize::from(next)] {
            next -= 1;
        }
        if (level - next) % 2 == 1 {
            let mut at = 0;
            while at < runs.len() {
                if level_of(&runs[at]) < level {
                    at += 1;
                    continue;
                }
                let first = at;
                while at < runs.len() && level_of(&runs[at]) >= level {
                    runs[at].2 ^= BACKWARDS;
                    at += 1;
                }
                runs[first..at].reverse();
            }
        }
        level = next;
    }
    let offset = order[0];
    let mut shown = order.iter_mut();
    for &(start, end, level) in runs.iter() {
        let positions = (start..end).map(|at| offset + at);
        if level & BACKWARDS != 0 {
            for (at, slot) in positions.rev().zip(shown.by_ref()) {
                *slot = at;
            }
        } else {
            for (at, slot) in positions.zip(shown.by_ref()) {
                *slot = at;
            }
        }
    }
}

/// The positions of the brackets of `pairs` among `points` (little-endian u32s), into
/// `brackets` (cleared first).
fn brackets_of(points: &[u8], pairs: &Pairs, brackets: &mut Vec<u32>) {
    brackets.clear();
    let codes = points
        .chunks_exact(4)
        .map(|bytes| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
    brackets.extend(
        (0..)
            .zip(codes)
            .filter(|&(_, code)| pairs.is_bracket(code))
            .map(|(at, _)| at),
    );
}

thread_local! {
    /// Each thread's buffers, kept from call to call: a call of a few thousand characters
    /// costs about as much again when it must fault fresh pages in for them.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Above this many characters a call's buffers are let go rather than kept (they hold a
/// few dozen bytes a character: a thread keeps a few megabytes at most).
const KEPT_CHARACTERS: usize = 1 << 16;

/// `work` with this thread's buffers (fresh ones, should they be in use).
fn with_scratch<R>(characters: usize, work: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|kept| match kept.try_borrow_mut() {
        Ok(mut scratch) => {
            let result = work(&mut scratch);
            if characters > KEPT_CHARACTERS {
                *scratch = Scratch::default();
            }
            result
        }
        Err(_) => work(&mut Scratch::default()),
    })
}

/// The order `display_order._order` gives: the texts starting at `starts` (ascending, none
/// past the end; the first starts at 0 whatever they say) joined, each read as `reading`;
/// each position's character, in the order shown.
fn display_order(
    classes: &[u8],
    points: &[u8],
    reading: Reading,
    starts: &[usize],
    pairs: &Pairs,
) -> Vec<i64> {
    let size = classes.len();
    let mut shown = Vec::with_capacity(size);
    with_scratch(size, |scratch| {
        over_call(classes, points, pairs, scratch, |call, scratch, order| {
            let mut start = 0;
            for end in starts
                .iter()
                .copied()
                .filter(|&at| at > 0 && at < size)
                .chain([size])
            {
                if end == start {
                    continue;
                }
                read_text(&call.text(start, end), reading, scratch, order);
                shown.extend(order.iter().map(|&at| (start + at as usize) as i64));
                start = end;
            }
        });
    });
    shown
}

/// `work` over the whole call's text (its brackets found once for all its texts) with the
/// thread's reading buffer; both buffers go back to `scratch` for the next call.
fn over_call<R>(
    classes: &[u8],
    points: &[u8],
    pairs: &Pairs,
    scratch: &mut Scratch,
    work: impl FnOnce(&Text, &mut Scratch, &mut Vec<u32>) -> R,
) -> R {
    let mut brackets = std::mem::take(&mut scratch.brackets);
    let mut order = std::mem::take(&mut scratch.order);
    brackets_of(points, pairs, &mut brackets);
    let call = Text {
        classes,
        points,
        start: 0,
        brackets: &brackets,
        pairs,
        long_runs: false,
    };
    let result = work(&call, scratch, &mut order);
    (scratch.brackets, scratch.order) = (brackets, order);
    result
}

/// What `display_order.display_orders_of` keeps of each text (`classes` and `points` joined,
/// the texts `sizes` long, in turn): its distinct orders but the one stored, in the order
/// of `READINGS`, as `display_orders` of it alone (the indices of its characters, in the
/// order shown), every text's joined; and how many each text has.
fn display_orders(
    classes: &[u8],
    points: &[u8],
    sizes: &[usize],
    pairs: &Pairs,
    scratch: &mut Scratch,
    shown: &mut Vec<u32>,
) -> Vec<u8> {
    let mut counts = Vec::with_capacity(sizes.len());
    shown.clear();
    over_call(classes, points, pairs, scratch, |call, scratch, order| {
        let mut start = 0;
        for &size in sizes {
            let text = call.text(start, start + size);
            start += size;
            let found = properties(text.classes);
            // Without a character that can reorder it, every reading reads it as stored.
            if found & TRIGGER == 0 {
                counts.push(0);
                continue;
            }
            // Without a separator, reading it whole is reading it by paragraphs.
            let readings = if found & SEPARATOR != 0 {
                &READINGS[..]
            } else {
                &READINGS[..2]
            };
            let first = shown.len();
            let mut count = 0;
            for &reading in readings {
                read_text(&text, reading, scratch, order);
                let stored = order
                    .iter()
                    .enumerate()
                    .all(|(at, &each)| at == each as usize);
                if stored
                    || shown[first..]
                        .chunks_exact(size)
                        .any(|seen: &[u32]| seen == order.as_slice())
                {
                    continue;
                }
                shown.extend_from_slice(order);
                count += 1;
            }
            counts.push(count);
        }
    });
    counts
}

/// Refuses what `display_order` cannot read: a class letter of no class, points that are
/// not one u32 per character (or more characters than a u32 counts).
fn checked_text(classes: &[u8], points: &[u8]) -> Result<(), String> {
    if let Some(code) = classes.iter().find(|&&code| !IS_LETTER[usize::from(code)]) {
        return Err(format!("not a bidi class letter: {:?}", char::from(*code)));
    }
    if points.len() != classes.len().saturating_mul(4) {
        return Err(format!(
            "{} code point bytes for {} classes (4 each)",
            points.len(),
            classes.len()
        ));
    }
    if u32::try_from(classes.len()).is_err() {
        return Err(format!("{} characters: too many to read", classes.len()));
    }
    Ok(())
}

/// Refuses what `display_order` cannot read (`checked_text`), block starts out of order or
/// past the end, a base not 0 or 1.
fn checked_starts(
    classes: &[u8],
    points: &[u8],
    base: i64,
    starts: &[i64],
) -> Result<Vec<usize>, String> {
    checked_text(classes, points)?;
    if base != 0 && base != 1 {
        return Err(format!("the base direction is 0 or 1, not {base}"));
    }
    if starts.windows(2).any(|pair| pair[0] > pair[1]) {
        return Err("block starts must be in ascending order".into());
    }
    let starts = starts
        .iter()
        .map(|&start| {
            usize::try_from(start)
                .ok()
                .filter(|&start| start <= classes.len())
                .ok_or_else(|| format!("a block start past the text: {start}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(starts)
}

/// Refuses what `display_orders` cannot read (`checked_text`), text sizes that are negative
/// or do not add up to the characters given.
fn checked_sizes(classes: &[u8], points: &[u8], sizes: &[i64]) -> Result<Vec<usize>, String> {
    checked_text(classes, points)?;
    let sizes: Vec<usize> = sizes
        .iter()
        .map(|&size| usize::try_from(size).map_err(|_| format!("a negative text size: {size}")))
        .collect::<Result<_, _>>()?;
    let total = sizes
        .iter()
        .try_fold(0usize, |total, &size| total.checked_add(size));
    if total != Some(classes.len()) {
        return Err(format!(
            "text sizes that do not add up to the {} characters given",
            classes.len()
        ));
    }
    Ok(sizes)
}

/// The bracket pairs as `display_order` passes them (`openers` ascending, `closers` each
/// one's closing bracket, little-endian u32s).
fn checked_pairs(openers: &[u8], closers: &[u8]) -> PyResult<Pairs> {
    u32s(openers)
        .and_then(|openers| Pairs::new(openers, u32s(closers)?))
        .map_err(PyValueError::new_err)
}

/// `display_order._order` over `classes` (the class letters, `display_order._CODES`),
/// `points` (the code points, little-endian u32s), `base` (0 or 1), `whole`, the starts of the
/// texts it joins (ascending) and the bracket pairs (`openers` ascending, `closers` each one's
/// closing bracket, little-endian u32s): the order shown as native-endian int64s, one per
/// character. ValueError for anything malformed.
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(name = "bidi_order")]
pub fn bidi_order_py<'py>(
    py: Python<'py>,
    classes: &[u8],
    points: &[u8],
    base: i64,
    whole: bool,
    starts: Vec<i64>,
    openers: &[u8],
    closers: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let starts = checked_starts(classes, points, base, &starts).map_err(PyValueError::new_err)?;
    let pairs = checked_pairs(openers, closers)?;
    let reading = Reading {
        base: u8::from(base == 1),
        whole,
    };
    let order = unlocked_if_large(py, points.len(), || {
        display_order(classes, points, reading, &starts, &pairs)
    });
    PyBytes::new_with(py, order.len() * 8, |buffer| {
        for (bytes, position) in buffer.chunks_exact_mut(8).zip(&order) {
            bytes.copy_from_slice(&position.to_ne_bytes());
        }
        Ok(())
    })
}

/// `display_order.display_orders_of` in one call: of each text (`classes`, the class
/// letters, and `points`, the code points as little-endian u32s, of the texts `sizes` long,
/// joined; the bracket pairs as `bidi_order` takes them), the distinct orders it may show in
/// but the one stored (paragraphs apart then whole, left to right then right to left; whole
/// only when a text holds a separator), each the indices of its characters in the order
/// shown. Returns them joined as native-endian int64s (a bytearray: the arrays made on it
/// are writable, as copies were) and each text's count (bytes, one a text). ValueError for
/// anything malformed.
#[pyfunction]
#[pyo3(name = "bidi_orders")]
pub fn bidi_orders_py<'py>(
    py: Python<'py>,
    classes: &[u8],
    points: &[u8],
    sizes: Vec<i64>,
    openers: &[u8],
    closers: &[u8],
) -> PyResult<(Bound<'py, PyByteArray>, Bound<'py, PyBytes>)> {
    let sizes = checked_sizes(classes, points, &sizes).map_err(PyValueError::new_err)?;
    let pairs = checked_pairs(openers, closers)?;
    with_scratch(classes.len(), |scratch| {
        let mut shown = std::mem::take(&mut scratch.shown);
        let counts = unlocked_if_large(py, points.len(), || {
            display_orders(classes, points, &sizes, &pairs, scratch, &mut shown)
        });
        let orders = PyByteArray::new_with(py, shown.len() * 8, |buffer| {
            for (bytes, &position) in buffer.chunks_exact_mut(8).zip(&shown) {
                bytes.copy_from_slice(&i64::from(position).to_ne_bytes());
            }
            Ok(())
        });
        scratch.shown = shown;
        Ok((orders?, PyBytes::new(py, &counts)))
    })
}

#[cfg(test)]
mod tests {
    use super::{
        checked_sizes, checked_starts, display_order, display_orders, Pairs, Reading, Scratch,
        READINGS,
    };

    fn pairs() -> Pairs {
        Pairs::new(vec![0x28], vec![0x29]).unwrap()
    }

    fn shown(classes: &[u8], base: u8) -> Vec<i64> {
        let points = vec![0u8; 4 * classes.len()];
        let reading = Reading { base, whole: false };
        display_order(classes, &points, reading, &[0], &pairs())
    }

    #[test]
    fn an_override_shows_its_characters_reversed() {
        // ssn <RLO>987<PDF> x: the PDF takes the level of the 7 before it.
        assert_eq!(shown(b"LLLwYEEEpwL", 0), [0, 1, 2, 3, 4, 8, 7, 6, 5, 9, 10]);
    }

    #[test]
    fn text_without_a_right_to_left_character_reads_as_stored_either_way() {
        for base in [0, 1] {
            assert_eq!(shown(b"LLwEEEpw", base), (0..8).collect::<Vec<_>>());
        }
    }

    #[test]
    fn deep_nesting_and_unmatched_controls_do_not_panic() {
        let mut classes = b"jY".repeat(200);
        classes.extend(b"ERAmqqpfB".repeat(50));
        for base in [0, 1] {
            let mut order = shown(&classes, base);
            order.sort_unstable();
            assert_eq!(order, (0..classes.len() as i64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn each_text_keeps_its_distinct_orders_but_the_stored_one() {
        // A text that reads as stored, one shown reversed by every reading (kept once), one
        // whose separator splits it (more readings), and an empty one.
        let texts: [&[u8]; 4] = [b"LLwEE", b"RRwR", b"RwELBLwR", b""];
        let classes = texts.concat();
        let points = vec![0u8; 4 * classes.len()];
        let sizes: Vec<usize> = texts.iter().map(|text| text.len()).collect();
        let mut orders = Vec::new();
        let mut scratch = Scratch::default();
        let counts = display_orders(
            &classes,
            &points,
            &sizes,
            &pairs(),
            &mut scratch,
            &mut orders,
        );
        let mut expected = Vec::new();
        let mut expected_counts = Vec::new();
        for text in texts {
            let points = vec![0u8; 4 * text.len()];
            let mut kept: Vec<Vec<i64>> = Vec::new();
            for reading in READINGS {
                let order = display_order(text, &points, reading, &[0], &pairs());
                let stored = order
                    .iter()
                    .enumerate()
                    .all(|(at, &each)| at as i64 == each);
                if !stored && !kept.contains(&order) {
                    kept.push(order);
                }
            }
            expected_counts.push(kept.len() as u8);
            expected.extend(kept.into_iter().flatten().map(|at| at as u32));
        }
        assert_eq!(counts, expected_counts);
        assert_eq!(counts[..2], [0, 1]);
        assert_eq!(orders, expected);
    }

    #[test]
    fn malformed_input_is_refused() {
        assert!(checked_starts(b"LZ", &[0; 8], 0, &[0]).is_err());
        assert!(checked_starts(b"LR", &[0; 7], 0, &[0]).is_err());
        assert!(checked_starts(b"LR", &[0; 8], 2, &[0]).is_err());
        assert!(checked_starts(b"LR", &[0; 8], 0, &[1, 0]).is_err());
        assert!(checked_starts(b"LR", &[0; 8], 0, &[0, 3]).is_err());
        assert!(checked_starts(b"LR", &[0; 8], 0, &[-1]).is_err());
        assert!(checked_starts(b"LR", &[0; 8], 0, &[0, 2]).is_ok());
        assert!(checked_sizes(b"LR", &[0; 8], &[1, 1]).is_ok());
        assert!(checked_sizes(b"LR", &[0; 8], &[1, 2]).is_err());
        assert!(checked_sizes(b"LR", &[0; 8], &[3, -1]).is_err());
        assert!(checked_sizes(b"LR", &[0; 8], &[i64::MAX, i64::MAX, 4]).is_err());
        assert!(checked_sizes(b"Lr", &[0; 8], &[2]).is_err());
        assert!(checked_sizes(b"LR", &[0; 4], &[2]).is_err());
        assert!(Pairs::new(vec![0x5b, 0x28], vec![0x5d, 0x29]).is_err());
        assert!(Pairs::new(vec![0x28], vec![]).is_err());
    }
}
