//! The gates in front of the folded and rendered readings (`labelgate.classify.markup`,
//! `labelgate.classify.folding`), with exactly their semantics: whether text holds markup a
//! renderer drops next to a character a value is made of (`markup.NEAR_VALUE`), and whether
//! its folded form may differ from it (`folding.may_hide`). Python asks these of every text
//! buffer of a reply; there they cost a translated copy of the buffer and a regular
//! expression's search, here one pass that copies nothing.

use pyo3::prelude::*;

use crate::unlocked_if_large;

/// `markup._DIGIT`: a digit, or a byte past ASCII (another script's digit).
fn digit(byte: u8) -> bool {
    byte.is_ascii_digit() || byte >= 0x80
}

/// `markup._SEPARATOR`.
fn separator(byte: u8) -> bool {
    matches!(byte, b'.' | b',' | b'-' | b'+' | b'/' | b'(' | b')' | b'@')
}

/// `markup._OPENER`: a tag's or comment's start, a marker, a link's start.
fn opener(byte: u8) -> bool {
    matches!(byte, b'<' | b'*' | b'~' | b'`' | b'[')
}

/// `markup._CLOSER`: a tag's or comment's end, a marker, a link's end.
fn closer(byte: u8) -> bool {
    matches!(byte, b'>' | b'*' | b'~' | b'`' | b')')
}

/// `markup._PUNCTUATION`: what a backslash escapes.
fn punctuation(byte: u8) -> bool {
    byte.is_ascii_punctuation()
}

// The byte tests below use `|` and `&`, not `||` and `&&`: without branches, the compiler
// turns a test of a whole chunk into vector compares (`any_at`).

/// The bytes `NEAR_VALUE` opens with.
fn markup_byte(byte: u8) -> bool {
    (byte == b'<')
        | (byte == b'>')
        | (byte == b'*')
        | (byte == b'_')
        | (byte == b'~')
        | (byte == b'`')
        | (byte == b'\\')
        | (byte == b'[')
        | (byte == b')')
}

/// The bytes `markup.may_render`'s first look stops at: past ASCII, `markup.MARKUP_BYTES`.
fn gate_byte(byte: u8) -> bool {
    (byte >= 0x80)
        | (byte == b'<')
        | (byte == b'>')
        | (byte == b'*')
        | (byte == b'_')
        | (byte == b'~')
        | (byte == b'`')
        | (byte == b'\\')
        | (byte == b'[')
        | (byte == b']')
}

/// `folding.CONTROLS`: C0 controls and DEL but tab, newline and return.
pub(crate) fn control(byte: u8) -> bool {
    ((byte < 0x20) & (byte != b'\t') & (byte != b'\n') & (byte != b'\r')) | (byte == 0x7F)
}

/// Bytes tested at a time before any is looked at alone.
const CHUNK: usize = 64;

/// Whether `check` holds at some index of `text` whose byte `wanted` holds for. Each chunk
/// is tested whole first, without a branch per byte (`holds_any`): most chunks of most text
/// hold no such byte.
fn any_at(
    text: &[u8],
    wanted: impl Fn(u8) -> bool + Copy,
    mut check: impl FnMut(usize) -> bool,
) -> bool {
    let mut chunks = text.chunks_exact(CHUNK);
    let mut start = 0;
    for chunk in chunks.by_ref() {
        let chunk: &[u8; CHUNK] = chunk.try_into().expect("chunks_exact");
        if holds_any(chunk, wanted) && visits(chunk, start, wanted, &mut check) {
            return true;
        }
        start += CHUNK;
    }
    visits(chunks.remainder(), start, wanted, &mut check)
}

/// Whether any byte of `chunk` is `wanted`: a fixed number of byte tests OR-ed together as
/// bytes, which the compiler turns into vector compares (OR-ed as `bool`s they were not: 1.5
/// against 0.2 ns a byte, measured on the `notes` column of the benchmark's reply).
#[inline(always)]
fn holds_any(chunk: &[u8; CHUNK], wanted: impl Fn(u8) -> bool) -> bool {
    chunk
        .iter()
        .fold(0u8, |any, &byte| any | u8::from(wanted(byte)))
        != 0
}

/// Whether `check` holds at the index (`start` and its offset) of a `wanted` byte of `piece`.
fn visits(
    piece: &[u8],
    start: usize,
    wanted: impl Fn(u8) -> bool,
    check: &mut impl FnMut(usize) -> bool,
) -> bool {
    (0..piece.len()).any(|offset| wanted(piece[offset]) && check(start + offset))
}

/// Whether the bytes at `at` (when in `text`) satisfy `test`; out of bounds reads as false,
/// as a lookaround past either end of the text fails.
fn at(text: &[u8], at: Option<usize>, test: impl Fn(u8) -> bool) -> bool {
    at.and_then(|index| text.get(index))
        .is_some_and(|&byte| test(byte))
}

/// Whether `NEAR_VALUE` matches at `index`, where `text[index]` is one of its opening bytes.
fn near_value_at(text: &[u8], index: usize) -> bool {
    let byte = text[index];
    let before = |back: usize| index.checked_sub(back);
    let after = |ahead: usize| index.checked_add(ahead);
    // An optional separator, then a digit: what a closer or an escape must stand before.
    let digit_ahead =
        at(text, after(1), digit) || (at(text, after(1), separator) && at(text, after(2), digit));
    if byte != b'_' {
        let digit_before = at(text, before(1), digit);
        let digit_separator_before = at(text, before(2), digit) && at(text, before(1), separator);
        return (opener(byte) && (digit_before || digit_separator_before))
            || (byte == b'\\'
                && (digit_before || digit_separator_before)
                && at(text, after(1), punctuation))
            || ((closer(byte) || byte == b'\\') && digit_ahead);
    }
    let word_after = at(text, after(1), |byte| byte.is_ascii_alphanumeric());
    let word_before = at(text, before(1), |byte| byte.is_ascii_alphanumeric());
    (at(text, before(1), digit) && !word_after)
        || (at(text, before(2), digit) && at(text, before(1), separator))
        || (!word_before && at(text, after(1), digit))
        || (at(text, after(1), separator) && at(text, after(2), digit))
}

/// `markup.NEAR_VALUE.search(text) is not None`.
fn near_value(text: &[u8]) -> bool {
    any_at(text, markup_byte, |index| near_value_at(text, index))
}

/// The first look of `markup.may_render` (its `_GATE`): a byte past ASCII, a markup byte but
/// `_` (`markup.MARKUP_BYTES`; a `)` alone opens nothing), or an underscore not within a word.
fn gate_open(text: &[u8]) -> bool {
    let word = |index: Option<usize>| at(text, index, |byte| byte.is_ascii_alphanumeric());
    any_at(text, gate_byte, |index| {
        text[index] != b'_' || !word(index.checked_sub(1)) || !word(Some(index + 1))
    })
}

/// `markup.may_render`: markup a renderer drops next to a character a value is made of.
pub(crate) fn may_render(text: &[u8]) -> bool {
    gate_open(text) && near_value(text)
}

/// `folding.may_hide`: not ASCII, a control character folding drops, or markup near a value.
pub(crate) fn may_hide(text: &[u8]) -> bool {
    !text.is_ascii() || any_at(text, control, |_| true) || may_render(text)
}

/// `markup.may_render`, in one pass over `text`.
#[pyfunction]
#[pyo3(name = "may_render")]
pub fn may_render_py(py: Python<'_>, text: &[u8]) -> bool {
    unlocked_if_large(py, text.len(), || may_render(text))
}

/// `folding.may_hide`, in passes over `text` that copy nothing.
#[pyfunction]
#[pyo3(name = "may_hide")]
pub fn may_hide_py(py: Python<'_>, text: &[u8]) -> bool {
    unlocked_if_large(py, text.len(), || may_hide(text))
}

#[cfg(test)]
mod tests {
    use super::{may_hide, may_render, near_value};

    #[test]
    fn markup_next_to_a_value_s_character() {
        for text in [
            &b"123<b></b>-45-6789"[..],
            b"4111<!---->1111",
            b"123\\-45",
            b"12**3**-45",
            b"12[3][r]-45",
            b"3-<b>",
            b">-4",
            b"1_",
            b"1-_",
            b" _1",
            b"_-1",
            b"_1",
            b"\xc3\xa9<",
        ] {
            assert!(near_value(text), "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn markup_away_from_values_and_underscores_within_words() {
        for text in [
            &b"see <b>bold</b>, and"[..],
            b"sk_live_5",
            b"v1_2",
            b"a_1",
            b"1_a",
            b"card_number",
            b"1 <b> 2",
            b"",
            b"1\\a",
        ] {
            assert!(!near_value(text), "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn a_closing_parenthesis_alone_opens_no_gate() {
        assert!(near_value(b"(555)1"));
        assert!(!may_render(b"(555)1"));
        assert!(may_render(b"(555)1 <"));
        assert!(!may_render(b"sk_live_5)1"));
        assert!(may_render(b"sk_live_ )1"));
    }

    #[test]
    fn hiding_is_past_ascii_controls_or_markup() {
        assert!(may_hide(b"caf\xc3\xa9"));
        assert!(may_hide(b"12\x0034"));
        assert!(may_hide(b"1\x7f"));
        assert!(may_hide(b"1<b>"));
        assert!(!may_hide(b"tab\tnew\nline\r 123-45-6789"));
    }
}
