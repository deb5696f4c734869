//! UTF-16 digits without a NUL (`labelgate.classify.other_encodings.digit_encoding`): which
//! texts, read as UTF-16 in either byte order, hold a run of `RUN_DIGITS` digits with only
//! fillers between them. ASCII text can: Devanagari's digits are `f\t`..`o\t` in UTF-16-LE,
//! superscripts a letter beside a space, circled digits a letter beside `$`. Such text folds
//! to itself, so the classifier's other gates pass it; this one asks every text, at about a
//! third of a nanosecond a byte (one table lookup per two bytes, for both byte orders).
//!
//! What a code unit is to a run comes from Python (`other_encodings._UNIT_KINDS`, derived
//! from the Unicode data folding reads), handed over once at import (`set_unit_kinds`): the
//! rule is `_DIGIT_RUN`'s over those kinds, and Python reads every text found here again
//! (`read_as_digits`). A prefilter that finds exactly what that reading finds, never less
//! (`tests/classify/test_native_wide_digits.py` compares the two).
//!
//! A JSON string is read from its own first byte (`other_encodings.string_readings`): so a
//! text holding a quote is read from its second byte too, and a text not so named that holds
//! a quote and a backslash (an escaped string, which Python decodes and asks again) is named
//! apart (`quoted_digit_runs`). The quote and the backslash are seen in the pass that counts
//! the digits: text without a quote pays a bitwise or a unit.

use std::sync::{Arc, RwLock};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList};

use crate::tensors::walk_elements;
use crate::unlocked_if_large;

/// `other_encodings._OTHER`, `_FILLER`, `_DIGIT`: what a code unit is to a run.
const OTHER: u8 = 0;
const FILLER: u8 = 1;
const DIGIT: u8 = 2;
const UNITS: usize = 1 << 16;

/// What the code unit two bytes make is to a run, by that unit in UTF-16-LE (the bytes as
/// written, `u16::from_le_bytes`): bits 0-1 its kind, bits 2-3 the kind of the unit the same
/// bytes make in UTF-16-BE, bits 4-5 how many of the two are digits; bit 6 set when one of
/// its bytes is a quote, bit 7 when one is a backslash (`QUOTE`, `BACKSLASH`). One lookup
/// reads a pair in both byte orders.
struct PairKinds {
    // A fixed size: a lookup by any `u16` is in bounds, so it needs no check.
    kinds: Box<[u8; UNITS]>,
    run_digits: u32,
}

const QUOTE: u8 = 1 << 6;
const BACKSLASH: u8 = 1 << 7;

/// `QUOTE` or `BACKSLASH` for a byte that is one, else nothing.
#[inline]
fn marks(byte: u8) -> u8 {
    match byte {
        b'"' => QUOTE,
        b'\\' => BACKSLASH,
        _ => 0,
    }
}

impl PairKinds {
    fn new(units: &[u8], run_digits: u32) -> Self {
        let mut kinds = Box::new([0u8; UNITS]);
        for (unit, slot) in kinds.iter_mut().enumerate() {
            let (little, big) = (units[unit], units[(unit & 0xFF) << 8 | unit >> 8]);
            let digits = u8::from(little == DIGIT) + u8::from(big == DIGIT);
            let [low, high] = u16::try_from(unit).unwrap_or(0).to_le_bytes();
            *slot = little | big << 2 | digits << 4 | marks(low) | marks(high);
        }
        Self { kinds, run_digits }
    }

    /// The kinds of the code unit `unit` (in UTF-16-LE) and its bytes swapped.
    #[inline]
    fn of(&self, unit: u16) -> u8 {
        self.kinds[usize::from(unit)]
    }

    /// Whether `text`, read as UTF-16 in either byte order, holds `run_digits` digits with
    /// only fillers between them (an odd last byte read as no unit, as numpy's view of
    /// `digit_encoding` leaves it). Its digits are counted first, without a branch per unit
    /// (most text has fewer than a run needs, in both orders together); then, per order, the
    /// digits since the last unit of neither kind: `_DIGIT_RUN` matches where one reaches
    /// `run_digits`.
    fn holds_run(&self, text: &[u8]) -> bool {
        text.len() / 2 >= self.run_units()
            && self.digits(text).0 >= self.run_digits
            && self.runs(text)
    }

    /// How many code units a run needs at least.
    fn run_units(&self) -> usize {
        usize::try_from(self.run_digits).unwrap_or(usize::MAX)
    }

    /// Whether `text`'s code units, in either byte order, hold a run (`holds_run`'s second
    /// pass).
    fn runs(&self, text: &[u8]) -> bool {
        let (mut little, mut big) = (0u32, 0u32);
        for unit in units(text) {
            let both = self.of(unit);
            little = counted(little, both & 3);
            big = counted(big, both >> 2 & 3);
            if little.max(big) >= self.run_digits {
                return true;
            }
        }
        false
    }

    /// `holds_run`, and for a text holding a quote `holds_run` from its second byte too
    /// (`other_encodings.reads_as_digits` with `quoted`): a JSON string in the text may start
    /// at an odd offset, and a reader of it reads its code units from there. And whether a
    /// text not so named holds a quote and a backslash (a JSON string in it may be escaped:
    /// Python decodes those, `other_encodings.string_candidates`), of a text long enough for
    /// a quote and a run after it. The quote and the backslash are seen in the pass that
    /// counts the digits: a text without a quote pays nothing more.
    fn quoted_reading(&self, text: &[u8]) -> (bool, bool) {
        if text.len() / 2 < self.run_units() {
            return (false, false);
        }
        let (digits, mut found) = self.digits(text);
        if text.len() % 2 == 1 {
            found |= marks(text[text.len() - 1]);
        }
        if digits >= self.run_digits && self.runs(text) {
            return (true, false);
        }
        if found & QUOTE == 0 || (text.len() - 1) / 2 < self.run_units() {
            return (false, false);
        }
        let shifted = &text[1..];
        if self.digits(shifted).0 >= self.run_digits && self.runs(shifted) {
            return (true, false);
        }
        (false, found & BACKSLASH != 0)
    }

    /// How many of `text`'s code units are digits, in both byte orders together: four
    /// units a word, each with its own sum, so no sum waits on the one before; and the
    /// `QUOTE` and `BACKSLASH` marks of its units, joined.
    #[inline(always)]
    fn digits(&self, text: &[u8]) -> (u32, u8) {
        let mut sums = [0u32; 4];
        let mut found = 0u8;
        let mut words = text.chunks_exact(8);
        for word in &mut words {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            let word = u64::from_le_bytes(bytes);
            for (lane, sum) in sums.iter_mut().enumerate() {
                // The lane's unit: the cast keeps its 16 bits.
                let both = self.of((word >> (16 * lane)) as u16);
                *sum += u32::from(both >> 4 & 3);
                found |= both;
            }
        }
        let mut rest = 0u32;
        for unit in units(words.remainder()) {
            let both = self.of(unit);
            rest += u32::from(both >> 4 & 3);
            found |= both;
        }
        (sums.iter().sum::<u32>() + rest, found & (QUOTE | BACKSLASH))
    }
}

/// `text`'s code units in UTF-16-LE (an odd last byte left out).
fn units(text: &[u8]) -> impl Iterator<Item = u16> + '_ {
    text.chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
}

/// A run's digit count after a unit of `kind`: none after a unit that ends it, one more
/// after a digit.
#[inline]
fn counted(count: u32, kind: u8) -> u32 {
    if kind == OTHER {
        0
    } else {
        count + u32::from(kind == DIGIT)
    }
}

static KINDS: RwLock<Option<Arc<PairKinds>>> = RwLock::new(None);

fn installed() -> PyResult<Arc<PairKinds>> {
    KINDS
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
        .ok_or_else(|| PyRuntimeError::new_err("no unit kinds set (set_unit_kinds)"))
}

/// Hand over the kind of each UTF-16 code unit (`kinds[unit]`: 0 ends a run, 1 a filler, 2
/// a digit; 65,536 of them) and the digits a run needs. Replaces any earlier ones.
#[pyfunction]
pub fn set_unit_kinds(kinds: &[u8], run_digits: u32) -> PyResult<()> {
    let known = |kind: &u8| matches!(*kind, OTHER | FILLER | DIGIT);
    if kinds.len() != UNITS || !kinds.iter().all(known) || run_digits == 0 {
        return Err(PyValueError::new_err(
            "unit kinds are 65,536 bytes of 0, 1 or 2, and a run at least one digit",
        ));
    }
    let table = PairKinds::new(kinds, run_digits);
    *KINDS
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(table));
    Ok(())
}

/// The indices (ascending) of the texts of `texts` that read as UTF-16 digits
/// (`PairKinds::holds_run`); `None` when an item is not exactly `bytes` (the caller then
/// asks Python).
#[pyfunction]
pub fn wide_digit_runs(texts: &Bound<'_, PyList>) -> PyResult<Option<Vec<usize>>> {
    named_texts(texts)
}

/// `wide_digit_runs`, a text holding a quote read from its second byte too
/// (`PairKinds::quoted_reading`); and the indices (ascending) of the texts not so named that
/// hold a quote and a backslash, long enough for a run after the quote.
#[pyfunction]
pub fn quoted_digit_runs(texts: &Bound<'_, PyList>) -> PyResult<Option<(Vec<usize>, Vec<usize>)>> {
    let table = installed()?;
    let (mut found, mut escaped) = (Vec::new(), Vec::new());
    for (index, text) in texts.iter().enumerate() {
        let Ok(text) = text.downcast_exact::<PyBytes>() else {
            return Ok(None);
        };
        match table.quoted_reading(text.as_bytes()) {
            (true, _) => found.push(index),
            (false, true) => escaped.push(index),
            (false, false) => {}
        }
    }
    Ok(Some((found, escaped)))
}

/// The indices (ascending) of the texts of `texts` that read as UTF-16 digits
/// (`PairKinds::holds_run`); `None` when an item is not exactly `bytes` (the caller then
/// asks Python).
fn named_texts(texts: &Bound<'_, PyList>) -> PyResult<Option<Vec<usize>>> {
    let table = installed()?;
    let mut found = Vec::new();
    for (index, text) in texts.iter().enumerate() {
        let Ok(text) = text.downcast_exact::<PyBytes>() else {
            return Ok(None);
        };
        if table.holds_run(text.as_bytes()) {
            found.push(index);
        }
    }
    Ok(Some(found))
}

/// `wide_digit_runs` of the `count` elements of a raw BYTES tensor (`data`: each element a
/// 4-byte little-endian length, then its bytes; nothing after the last), each read from
/// its own first byte; `None` when `data` is not exactly `count` well-formed elements.
#[pyfunction]
pub fn wide_digit_runs_raw(
    py: Python<'_>,
    data: PyBackedBytes,
    count: usize,
) -> PyResult<Option<Vec<usize>>> {
    named_elements(py, &data, count, PairKinds::holds_run)
}

/// `quoted_digit_runs` of the `count` elements of a raw BYTES tensor, as
/// `wide_digit_runs_raw` reads them.
#[pyfunction]
pub fn quoted_digit_runs_raw(
    py: Python<'_>,
    data: PyBackedBytes,
    count: usize,
) -> PyResult<Option<Vec<usize>>> {
    named_elements(py, &data, count, |table, text| table.quoted_reading(text).0)
}

fn named_elements(
    py: Python<'_>,
    data: &[u8],
    count: usize,
    holds: impl Fn(&PairKinds, &[u8]) -> bool + Sync,
) -> PyResult<Option<Vec<usize>>> {
    let table = installed()?;
    Ok(unlocked_if_large(py, data.len(), || {
        let mut found = Vec::new();
        let mut index = 0;
        let whole = walk_elements(data, count, |start, end| {
            if holds(&table, &data[start..end]) {
                found.push(index);
            }
            index += 1;
        });
        whole.then_some(found)
    }))
}

#[cfg(test)]
mod tests {
    use super::{PairKinds, DIGIT, FILLER, UNITS};

    /// Devanagari's digits (U+0966..) and a thin space (U+2009) as digits and a filler.
    fn devanagari(run_digits: u32) -> PairKinds {
        let mut units = vec![0u8; UNITS];
        units[0x0966..0x0970].fill(DIGIT);
        units[0x2009] = FILLER;
        PairKinds::new(&units, run_digits)
    }

    #[test]
    fn a_run_in_either_byte_order() {
        let kinds = devanagari(4);
        assert!(kinds.holds_run(b"f\tg\th\ti\t")); // LE
        assert!(kinds.holds_run(b"\tf\tg\th\ti")); // BE
        assert!(kinds.holds_run(b"f\tg\t\t h\ti\t")); // a filler between
        assert!(kinds.holds_run(b"xyf\tg\th\ti\tz")); // from an even offset
    }

    #[test]
    fn no_run() {
        let kinds = devanagari(4);
        assert!(!kinds.holds_run(b"f\tg\th\t"));
        assert!(!kinds.holds_run(b"f\tg\tzzh\ti\t")); // a unit of neither kind between
        assert!(!kinds.holds_run(b"xf\tg\th\ti\t")); // an odd offset is no unit's start
        assert!(!kinds.holds_run(b"f\tg\t\th\ti")); // byte orders mixed
        assert!(!kinds.holds_run(b"f\tg\th\ti")); // the last unit cut short
        assert!(!kinds.holds_run(b""));
        assert!(
            devanagari(5).holds_run(b"f\tg\th\ti\tj\t")
                && !devanagari(5).holds_run(b"f\tg\th\ti\t")
        );
    }

    #[test]
    fn a_quoted_text_from_its_second_byte_too() {
        let kinds = devanagari(4);
        let named = |text: &[u8]| kinds.quoted_reading(text);
        assert_eq!(named(b"\"f\tg\th\ti\t\""), (true, false)); // a JSON string at offset 1
        assert_eq!(named(b"xf\tg\th\ti\t\""), (true, false)); // the quote anywhere, last too
        assert_eq!(named(b"f\tg\th\ti\t"), (true, false)); // from the first byte, as before
        assert_eq!(named(b"xf\tg\th\ti\t"), (false, false)); // no quote: no string there
                                                             // Not read, but a quote and a backslash: Python decodes the escapes.
        assert_eq!(named(b"{\"a\": \"f\\tg\\t\"}"), (false, true));
        assert_eq!(named(b"{\"a\": \"f\\tg\\t}"), (false, true));
        assert_eq!(named(b"{a: f\\tg\\th\\t}"), (false, false)); // no quote
        assert_eq!(named(b"\"\\t\""), (false, false)); // too short for a run
        assert_eq!(named(b"\""), (false, false));
        assert_eq!(named(b""), (false, false));
    }
}
