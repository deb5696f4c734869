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

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

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
/// No position: a sequence's sos or eos in the resolved string, an isolate without its match.
const NONE: usize = usize::MAX;

fn is_initiator(code: u8) -> bool {
    matches!(code, LRI | RLI | FSI)
}

fn is_isolate(code: u8) -> bool {
    matches!(code, LRI | RLI | FSI | PDI)
}

/// The embeddings, overrides and isolates, and PDF: what X1-X8 act on.
fn is_explicit(code: u8) -> bool {
    matches!(code, LRE | RLE | LRO | RLO | PDF | LRI | RLI | FSI | PDI)
}

/// X9: embeddings, overrides, PDF and boundary neutrals.
fn is_removed(code: u8) -> bool {
    matches!(code, LRE | RLE | LRO | RLO | PDF | BN)
}

/// NI: what N1 and N2 resolve.
fn is_neutral(code: u8) -> bool {
    matches!(code, B | S | WS | ON | LRI | RLI | FSI | PDI)
}

/// A paragraph without one of these reads as stored (left to right whatever the base).
fn is_trigger(code: u8) -> bool {
    matches!(
        code,
        R | AL | AN | LRE | RLE | LRO | RLO | LRI | RLI | FSI | PDI
    )
}

/// L1's whitespace: reset to the paragraph's level before a separator or at the end.
fn is_trailing(code: u8) -> bool {
    matches!(
        code,
        WS | LRI | RLI | FSI | PDI | LRE | RLE | LRO | RLO | PDF | BN
    )
}

fn is_separator(code: u8) -> bool {
    matches!(code, S | B)
}

/// Strong for N0 (numbers as R).
fn is_strong(code: u8) -> bool {
    matches!(code, L | R | EN | AN)
}

/// The bracket pairs (BD14, BD15): each opening code point and its closing one.
pub struct Pairs {
    /// Every bracket's code point, ascending, with its closing bracket's when it opens one.
    brackets: Vec<(u32, Option<u32>)>,
    /// Above it, no code point is a bracket.
    highest: u32,
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
        Ok(Pairs { brackets, highest })
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

/// The code point of character `at` (`points`: little-endian u32s, checked to fit).
fn point(points: &[u8], at: usize) -> u32 {
    let bytes = &points[4 * at..4 * at + 4];
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The blocks of one call (`_order`): each text's paragraphs, and each paragraph separator
/// alone unless the text is read whole. Nothing of one block reorders another.
struct Blocks {
    /// The block of each character.
    of: Vec<usize>,
    /// Each block's characters, `start..end`.
    ranges: Vec<(usize, usize)>,
    /// Each block's paragraph level: the base when it holds a `is_trigger` character, else 0.
    bases: Vec<u8>,
}

impl Blocks {
    fn new(codes: &[u8], whole: bool, starts: &[usize], base: u8) -> Self {
        let size = codes.len();
        let mut of = Vec::with_capacity(size);
        let mut ranges = Vec::new();
        let mut next = 0;
        let mut start = 0;
        for at in 0..size {
            while next < starts.len() && starts[next] < at {
                next += 1;
            }
            let opens = at > 0
                && ((next < starts.len() && starts[next] == at)
                    || (!whole && (codes[at] == B || codes[at - 1] == B)));
            if opens {
                ranges.push((start, at));
                start = at;
            }
            of.push(ranges.len());
        }
        ranges.push((start, size));
        let bases = ranges
            .iter()
            .map(|&(start, end)| {
                if codes[start..end].iter().any(|&code| is_trigger(code)) {
                    base
                } else {
                    0
                }
            })
            .collect();
        Blocks { of, ranges, bases }
    }

    fn base_of(&self, at: usize) -> u8 {
        self.bases[self.of[at]]
    }
}

/// What the bidi classes `classes` (one letter each, checked), code points `points`
/// (little-endian u32s, one each, checked) and the texts starting at `starts` (ascending, none
/// past the end) show as, each paragraph of direction `base` (0 or 1) but one without a
/// character that can reorder it, separators read as spaces when `whole`: each position's
/// character, in the order shown (`display_order._order`).
pub fn display_order(
    classes: &[u8],
    points: &[u8],
    base: u8,
    whole: bool,
    starts: &[usize],
    pairs: &Pairs,
) -> Vec<i64> {
    let size = classes.len();
    if size == 0 {
        return Vec::new();
    }
    let codes: Vec<u8> = if whole {
        classes
            .iter()
            .map(|&code| if code == B || code == S { WS } else { code })
            .collect()
    } else {
        classes.to_vec()
    };
    let blocks = Blocks::new(&codes, whole, starts, base);
    let mut levels: Vec<u8> = blocks.of.iter().map(|&block| blocks.bases[block]).collect();
    let mut types = codes.clone();
    for (block, &(start, end)) in blocks.ranges.iter().enumerate() {
        if codes[start..end].iter().any(|&code| is_explicit(code)) {
            explicit(
                &codes[start..end],
                blocks.bases[block],
                &mut levels[start..end],
                &mut types[start..end],
            );
        }
    }
    implicit(&codes, &types, &mut levels, points, &blocks, pairs);
    // X9's removed characters take the level of the one before them (or the paragraph's):
    // they show as nothing, but each must have a place.
    let mut before = NONE;
    for at in 0..size {
        if !is_removed(codes[at]) {
            before = at;
        } else if before != NONE && blocks.of[before] == blocks.of[at] {
            levels[at] = levels[before];
        } else {
            levels[at] = blocks.base_of(at);
        }
    }
    // L1: separators, and whitespace before one or at a paragraph's end, at its level.
    let mut after = size;
    for at in (0..size).rev() {
        let code = codes[at];
        if !is_trailing(code) {
            after = at;
        }
        let reset = is_separator(code)
            || (is_trailing(code)
                && (after == size
                    || is_separator(codes[after])
                    || blocks.of[after] != blocks.of[at]));
        if reset {
            levels[at] = blocks.base_of(at);
        }
    }
    reversed_runs(&levels, &blocks.ranges)
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
fn explicit(classes: &[u8], base: u8, levels: &mut [u8], types: &mut [u8]) {
    let size = classes.len();
    let controls: Vec<usize> = (0..size).filter(|&at| is_explicit(classes[at])).collect();
    if controls.is_empty() {
        return;
    }
    // BD9: each isolate initiator's matching PDI.
    let mut matching = vec![NONE; size];
    let mut opened = Vec::new();
    for &at in &controls {
        let code = classes[at];
        if is_initiator(code) {
            opened.push(at);
        } else if code == PDI {
            if let Some(first) = opened.pop() {
                matching[first] = at;
            }
        }
    }
    let mut stack = vec![Entry {
        level: base,
        overriding: 0,
        isolate: false,
    }];
    let (mut overflow_isolates, mut overflow_embeddings, mut valid_isolates) = (0usize, 0usize, 0);
    let mut start = 0;
    for &at in &controls {
        let entry = top(&stack, base);
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
                            matching[at]
                        };
                        first_strong(classes, at + 1, end, &matching) == R
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
                    while stack.len() > 1 && !top(&stack, base).isolate {
                        stack.pop();
                    }
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    valid_isolates -= 1;
                }
                let entry = top(&stack, base);
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
                levels[at] = top(&stack, base).level;
            }
        }
        start = at + 1;
    }
    let entry = top(&stack, base);
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

/// P2-P3 over `classes[start..end]`: `R` when its first strong character (skipping
/// isolates) is R or AL, else `L`.
fn first_strong(classes: &[u8], mut at: usize, end: usize, matching: &[usize]) -> u8 {
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
        at = closing + 1;
    }
}

/// BD9 over every block: each isolate initiator with its matching PDI, a paragraph separator
/// or a block's end closing every isolate open.
fn matching_isolates(codes: &[u8], blocks: &[usize]) -> Vec<(usize, usize)> {
    let mut matching = Vec::new();
    let mut opened: Vec<usize> = Vec::new();
    for (at, &code) in codes.iter().enumerate() {
        if !(is_isolate(code) || code == B) {
            continue;
        }
        if opened
            .last()
            .is_some_and(|&last| blocks[last] != blocks[at])
        {
            opened.clear();
        }
        if code == B {
            opened.clear();
        } else if is_initiator(code) {
            opened.push(at);
        } else if let Some(first) = opened.pop() {
            matching.push((first, at));
        }
    }
    matching
}

/// X10, W1-W7, N0-N2, I1-I2 over the isolating run sequences of the characters X9 keeps:
/// `levels` raised in place. The sequences are one string, each between a character of its
/// sos and one of its eos (both strong: no rule reaches past them).
fn implicit(
    codes: &[u8],
    types: &[u8],
    levels: &mut [u8],
    points: &[u8],
    blocks: &Blocks,
    pairs: &Pairs,
) {
    let kept: Vec<usize> = (0..codes.len())
        .filter(|&at| !is_removed(codes[at]))
        .collect();
    let count = kept.len();
    if count == 0 {
        return;
    }
    // The level runs, by index into `kept`.
    let mut run_starts = vec![0];
    for index in 1..count {
        let (at, previous) = (kept[index], kept[index - 1]);
        if levels[at] != levels[previous] || blocks.of[at] != blocks.of[previous] {
            run_starts.push(index);
        }
    }
    let runs = run_starts.len();
    let run_end = |run: usize| run_starts.get(run + 1).copied().unwrap_or(count);
    // BD13: a run ending with an isolate initiator continues with the run its matching PDI
    // opens, which starts no sequence of its own.
    let mut continues = vec![NONE; runs];
    let mut continued = vec![false; runs];
    if codes.iter().any(|&code| is_isolate(code)) {
        for (first, closing) in matching_isolates(codes, &blocks.of) {
            let ends_at = kept.partition_point(|&at| at < first);
            let opens_at = kept.partition_point(|&at| at < closing);
            let run = run_starts
                .partition_point(|&start| start <= ends_at)
                .saturating_sub(1);
            let following = run_starts.partition_point(|&start| start < opens_at);
            if run_end(run) == ends_at + 1 && following < runs && run_starts[following] == opens_at
            {
                continues[run] = following;
                continued[following] = true;
            }
        }
    }
    let size = count + 2 * runs;
    let mut string = Vec::with_capacity(size);
    let mut level_at = Vec::with_capacity(size);
    let mut index_at = Vec::with_capacity(size);
    let mut sequence_starts = Vec::new();
    for run in 0..runs {
        if continued[run] {
            continue;
        }
        let mut last_run = run;
        while continues[last_run] != NONE {
            last_run = continues[last_run];
        }
        let (first, last) = (run_starts[run], run_end(last_run) - 1);
        let (first_at, last_at) = (kept[first], kept[last]);
        let level = levels[first_at];
        let base = blocks.base_of(first_at);
        let before = if first > 0 && blocks.of[kept[first - 1]] == blocks.of[first_at] {
            levels[kept[first - 1]]
        } else {
            base
        };
        let after = if last + 1 < count
            && blocks.of[kept[last + 1]] == blocks.of[last_at]
            && !is_initiator(codes[last_at])
        {
            levels[kept[last + 1]]
        } else {
            base
        };
        let direction = |other: u8| if level.max(other) & 1 == 1 { R } else { L };
        sequence_starts.push(string.len());
        string.push(direction(before));
        level_at.push(level);
        index_at.push(NONE);
        let mut each = run;
        loop {
            for &at in &kept[run_starts[each]..run_end(each)] {
                string.push(types[at]);
                level_at.push(level);
                index_at.push(at);
            }
            if continues[each] == NONE {
                break;
            }
            each = continues[each];
        }
        string.push(direction(after));
        level_at.push(level);
        index_at.push(NONE);
    }
    let point_at = |position: usize| match index_at[position] {
        NONE => 0,
        at => point(points, at),
    };
    resolve(&mut string, &level_at, point_at, &sequence_starts, pairs);
    // I1-I2.
    for (position, &at) in index_at.iter().enumerate() {
        if at == NONE {
            continue;
        }
        let resolved = string[position];
        let number = resolved == EN || resolved == AN;
        let raised = if level_at[position] & 1 == 1 {
            u8::from(resolved == L || number)
        } else if resolved == R {
            1
        } else if number {
            2
        } else {
            0
        };
        levels[at] += raised;
    }
}

/// W1-W7 and N0-N2 over the sequences' string (`implicit`): each type L, R, EN or AN.
fn resolve(
    string: &mut [u8],
    level_at: &[u8],
    point_at: impl Fn(usize) -> u32,
    sequence_starts: &[usize],
    pairs: &Pairs,
) {
    let stored = string.to_vec();
    let size = string.len();
    // W1: a mark takes its base's type (after an isolate control: ON).
    let mut base = 0;
    for code in string.iter_mut() {
        if *code != NSM {
            base = *code;
        } else if base != 0 {
            *code = if is_isolate(base) { ON } else { base };
        }
    }
    // W2: European digits after Arabic letters are Arabic numbers; W3: AL is R.
    let mut last = 0;
    for code in string.iter_mut() {
        match *code {
            L | R => last = *code,
            AL => {
                last = AL;
                *code = R;
            }
            EN if last == AL => *code = AN,
            _ => {}
        }
    }
    // W4: a single separator between two numbers of a kind is one.
    for at in 1..size.saturating_sub(1) {
        if matches!(string[at], ES | CS) && string[at - 1] == EN && string[at + 1] == EN {
            string[at] = EN;
        }
    }
    for at in 1..size.saturating_sub(1) {
        if string[at] == CS && string[at - 1] == AN && string[at + 1] == AN {
            string[at] = AN;
        }
    }
    // W5: terminators next to European digits are digits.
    let mut at = 0;
    while at < size {
        if string[at] != ET {
            at += 1;
            continue;
        }
        let first = at;
        while at < size && string[at] == ET {
            at += 1;
        }
        if (first > 0 && string[first - 1] == EN) || (at < size && string[at] == EN) {
            string[first..at].fill(EN);
        }
    }
    // W6: other separators and terminators are neutrals; W7: European digits after L are L.
    let mut last = 0;
    for code in string.iter_mut() {
        match *code {
            ES | ET | CS => *code = ON,
            L | R => last = *code,
            EN if last == L => *code = L,
            _ => {}
        }
    }
    if string.contains(&ON) {
        brackets(string, level_at, point_at, &stored, sequence_starts, pairs);
    }
    // N1-N2: a run of neutrals between two of one direction (numbers as R) takes it, any
    // other the embedding direction.
    let direction = |code: u8| if code == L { L } else { R };
    let mut at = 0;
    while at < size {
        if !is_neutral(string[at]) {
            at += 1;
            continue;
        }
        let first = at;
        while at < size && is_neutral(string[at]) {
            at += 1;
        }
        let before = direction(string[first.saturating_sub(1)]);
        let after = direction(string[at.min(size - 1)]);
        for position in first..at {
            string[position] = if before == after {
                before
            } else if level_at[position] & 1 == 1 {
                R
            } else {
                L
            };
        }
    }
}

/// N0 in place: bracket pairs (BD16, per sequence, at most `MAX_BRACKETS` open) take the
/// embedding direction when a strong type of it is inside, else the other one's when inside
/// and before them (numbers as R; a sequence's sos is its first character); marks after
/// them follow.
fn brackets(
    string: &mut [u8],
    level_at: &[u8],
    point_at: impl Fn(usize) -> u32,
    stored: &[u8],
    sequence_starts: &[usize],
    pairs: &Pairs,
) {
    let size = string.len();
    let mut found = Vec::new();
    let mut stack: Vec<(u32, usize)> = Vec::new(); // (closing code point, position)
    let (mut current, mut full) = (NONE, false);
    for (position, &code) in string.iter().enumerate() {
        if code != ON {
            continue;
        }
        let code = point_at(position);
        let Some(opens) = pairs.bracket(code) else {
            continue;
        };
        let sequence = sequence_starts
            .partition_point(|&start| start <= position)
            .saturating_sub(1);
        if sequence != current {
            (current, full) = (sequence, false);
            stack.clear();
        }
        if full {
            continue;
        }
        if let Some(closing) = opens {
            if stack.len() >= MAX_BRACKETS {
                full = true;
            } else {
                stack.push((closing, position));
            }
            continue;
        }
        if let Some(depth) = stack.iter().rposition(|&(closing, _)| closing == code) {
            found.push((stack[depth].1, position));
            stack.truncate(depth);
        }
    }
    if found.is_empty() {
        return;
    }
    found.sort_unstable();
    // The last strong type before each opening bracket, before N0 (sos and eos are strong).
    let strong_at: Vec<usize> = (0..size).filter(|&at| is_strong(string[at])).collect();
    // Brackets N0 resolves are strong for the pairs after them: the last opening resolved,
    // and the closings resolved that an opening comes after (pairs nest or follow).
    let mut last_opening = None;
    let mut closings = BinaryHeap::new(); // the closings resolved, not yet passed
    let mut last_closing = None;
    for (opening, closing) in found {
        let before = strong_at
            .get(
                strong_at
                    .partition_point(|&at| at < opening)
                    .saturating_sub(1),
            )
            .copied()
            .unwrap_or(0);
        while let Some(&Reverse(passed)) = closings.peek() {
            if passed >= opening {
                break;
            }
            closings.pop();
            last_closing = Some(last_closing.map_or(passed, |last: usize| last.max(passed)));
        }
        let embedding = if level_at[opening] & 1 == 1 { R } else { L };
        let inside = &string[opening + 1..closing];
        let left = inside.contains(&L);
        let right = inside.iter().any(|&code| matches!(code, R | EN | AN));
        let direction = if (left && embedding == L) || (right && embedding == R) {
            embedding
        } else if left || right {
            // The other direction when the strong type before is of it too (N0 c).
            let last = before
                .max(last_opening.unwrap_or(0))
                .max(last_closing.unwrap_or(0));
            if string[last] == L {
                L
            } else {
                R
            }
        } else {
            continue;
        };
        last_opening = Some(opening);
        closings.push(Reverse(closing));
        for position in [opening, closing] {
            string[position] = direction;
            let mut after = position + 1;
            while after < size && stored[after] == NSM {
                string[after] = direction;
                after += 1;
            }
        }
    }
}

/// L2 in each block: from its highest level down to its lowest odd one, each run at that
/// level or higher reversed; the order that makes.
fn reversed_runs(levels: &[u8], ranges: &[(usize, usize)]) -> Vec<i64> {
    let mut order: Vec<i64> = (0..levels.len() as i64).collect();
    let mut shown = levels.to_vec();
    for &(start, end) in ranges {
        let block = &levels[start..end];
        let (Some(&lowest), Some(&highest)) = (block.iter().min(), block.iter().max()) else {
            continue;
        };
        let lowest = lowest | 1;
        let mut present = [false; 256];
        for &level in block {
            present[usize::from(level)] = true;
        }
        // Between two levels the block holds, each level reverses the same runs (those at
        // the higher one or above): twice is as stored, so an odd count reverses them once.
        let mut level = highest;
        while level >= lowest {
            let mut next = level - 1;
            while next >= lowest && !present[usize::from(next)] {
                next -= 1;
            }
            if (level - next) % 2 == 1 {
                let mut at = start;
                while at < end {
                    if shown[at] < level {
                        at += 1;
                        continue;
                    }
                    let first = at;
                    while at < end && shown[at] >= level {
                        at += 1;
                    }
                    order[first..at].reverse();
                    shown[first..at].reverse();
                }
            }
            level = next;
        }
    }
    order
}

/// Refuses what `display_order` cannot read: a class letter of no class, points that are
/// not one u32 per character, block starts out of order or past the end, a base not 0 or 1.
fn checked_starts(
    classes: &[u8],
    points: &[u8],
    base: i64,
    starts: &[i64],
) -> Result<Vec<usize>, String> {
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
    if base != 0 && base != 1 {
        return Err(format!("the base direction is 0 or 1, not {base}"));
    }
    if starts.windows(2).any(|pair| pair[0] > pair[1]) {
        return Err("block starts must be in ascending order".into());
    }
    starts
        .iter()
        .map(|&start| {
            usize::try_from(start)
                .ok()
                .filter(|&start| start <= classes.len())
                .ok_or_else(|| format!("a block start past the text: {start}"))
        })
        .collect()
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
    let pairs = u32s(openers)
        .and_then(|openers| Pairs::new(openers, u32s(closers)?))
        .map_err(PyValueError::new_err)?;
    let base = u8::from(base == 1);
    let order = unlocked_if_large(py, points.len(), || {
        display_order(classes, points, base, whole, &starts, &pairs)
    });
    PyBytes::new_with(py, order.len() * 8, |buffer| {
        for (bytes, position) in buffer.chunks_exact_mut(8).zip(&order) {
            bytes.copy_from_slice(&position.to_ne_bytes());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::{checked_starts, display_order, Pairs};

    fn shown(classes: &[u8], base: u8) -> Vec<i64> {
        let points = vec![0u8; classes.len() * 4];
        let pairs = Pairs::new(vec![0x28], vec![0x29]).unwrap();
        display_order(classes, &points, base, false, &[0], &pairs)
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
    fn malformed_input_is_refused() {
        assert!(checked_starts(b"LZ", &[0; 8], 0, &[0]).is_err());
        assert!(checked_starts(b"LR", &[0; 7], 0, &[0]).is_err());
        assert!(checked_starts(b"LR", &[0; 8], 2, &[0]).is_err());
        assert!(checked_starts(b"LR", &[0; 8], 0, &[1, 0]).is_err());
        assert!(checked_starts(b"LR", &[0; 8], 0, &[0, 3]).is_err());
        assert!(checked_starts(b"LR", &[0; 8], 0, &[-1]).is_err());
        assert!(checked_starts(b"LR", &[0; 8], 0, &[0, 2]).is_ok());
        assert!(Pairs::new(vec![0x5b, 0x28], vec![0x5d, 0x29]).is_err());
        assert!(Pairs::new(vec![0x28], vec![]).is_err());
    }
}
