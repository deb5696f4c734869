//! IBANs: `patterns._IBAN`, `_check_iban` and `_iban_ok` (ISO 7064 mod 97-10 and the BBAN
//! format of python-stdnum's IBAN registry).
//!
//! The registry is not written out here: Python hands it over once (`set_iban_registry`),
//! built from stdnum's data as `_iban_country` builds its patterns. Countries for which
//! stdnum has national rules are python-stdnum's call: when a candidate of one of those
//! passes every check that comes before (isolation, mod 97), the element's whole IBAN pass
//! goes back to Python (`Pass::Deferred`), which keeps `_confirmed`'s resumption exact.

use std::sync::{Arc, RwLock};

use crate::bytes::{find_byte, isolated, past_next_separator};
use crate::scan::{Hit, IBAN};

/// A BBAN character class of the registry: `n` digits, `a` capitals, `c` letters or digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Digit,
    Capital,
    Alphanumeric,
}

impl Class {
    pub fn from_code(code: char) -> Option<Self> {
        match code {
            'n' => Some(Self::Digit),
            'a' => Some(Self::Capital),
            'c' => Some(Self::Alphanumeric),
            _ => None,
        }
    }

    fn admits(self, byte: u8) -> bool {
        match self {
            Self::Digit => byte.is_ascii_digit(),
            Self::Capital => byte.is_ascii_uppercase(),
            Self::Alphanumeric => byte.is_ascii_alphanumeric(),
        }
    }
}

/// What the registry says of a two-capital country code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Country {
    /// Not an IBAN country: no candidate of it is valid.
    #[default]
    Unknown,
    /// The BBAN is these runs of these classes, exactly (`^...$`).
    Format(Vec<(usize, Class)>),
    /// python-stdnum has national rules: `stdnum.iban.is_valid` decides, in Python.
    Python,
}

/// Every two-capital code, indexed `(first - 'A') * 26 + (second - 'A')`.
pub struct Registry(Vec<Country>);

impl Registry {
    pub fn new() -> Self {
        Self(vec![Country::Unknown; 26 * 26])
    }

    fn slot(code: &[u8]) -> Option<usize> {
        match code {
            [first @ b'A'..=b'Z', second @ b'A'..=b'Z'] => {
                Some(usize::from(first - b'A') * 26 + usize::from(second - b'A'))
            }
            _ => None,
        }
    }

    /// False when `code` is not two capitals.
    pub fn set(&mut self, code: &[u8], country: Country) -> bool {
        match Self::slot(code) {
            Some(slot) => {
                self.0[slot] = country;
                true
            }
            None => false,
        }
    }

    fn get(&self, code: &[u8]) -> &Country {
        Self::slot(code).map_or(&Country::Unknown, |slot| &self.0[slot])
    }
}

static REGISTRY: RwLock<Option<Arc<Registry>>> = RwLock::new(None);

pub fn install(registry: Registry) {
    let mut installed = REGISTRY
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *installed = Some(Arc::new(registry));
}

/// The registry handed over by Python, if it was (without it, every pass is Python's).
pub fn registry() -> Option<Arc<Registry>> {
    REGISTRY
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// A capital or digit: `[A0]` in the shape.
#[inline]
fn is_shape_char(byte: u8) -> bool {
    byte.is_ascii_uppercase() || byte.is_ascii_digit()
}

/// How many capitals or digits follow from `start`, counting at most `limit`.
fn shape_run(data: &[u8], start: usize, limit: usize) -> usize {
    data.get(start..).map_or(0, |rest| {
        rest.iter()
            .take(limit)
            .take_while(|&&byte| is_shape_char(byte))
            .count()
    })
}

/// `AA00(?:[A0]{11,30}|(?: [A0]{4}){2,7}(?: [A0]{1,4})?)` at `p`, leftmost-first and greedy
/// (no quantifier is followed by anything it could give back to): the match's end.
fn match_at(data: &[u8], p: usize) -> Option<usize> {
    let head = data.get(p..p + 4)?;
    if !(head[0].is_ascii_uppercase()
        && head[1].is_ascii_uppercase()
        && head[2].is_ascii_digit()
        && head[3].is_ascii_digit())
    {
        return None;
    }
    let body = p + 4;
    let run = shape_run(data, body, 30);
    if run >= 11 {
        return Some(body + run);
    }
    let space_then = |at: usize, count: usize| {
        data.get(at) == Some(&b' ') && shape_run(data, at + 1, count) == count
    };
    let (mut end, mut groups) = (body, 0);
    while groups < 7 && space_then(end, 4) {
        end += 5;
        groups += 1;
    }
    if groups < 2 {
        return None;
    }
    if data.get(end) == Some(&b' ') {
        let tail = shape_run(data, end + 1, 4);
        if tail >= 1 {
            end += 1 + tail;
        }
    }
    Some(end)
}

/// The leftmost candidate `(start, end)` starting at or after `from`.
fn find(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut start = from;
    while start + 4 <= data.len() {
        start = find_byte(data, start, |byte| byte.is_ascii_uppercase())?;
        if let Some(end) = match_at(data, start) {
            return Some((start, end));
        }
        start += 1;
    }
    None
}

/// ISO 7064 mod 97-10 over the IBAN's characters (capitals and digits) with the first four
/// moved to the end, letters read as two-digit numbers (A=10 ... Z=35): `int(...) % 97 == 1`.
fn mod97_ok(compact: &[u8]) -> bool {
    let (head, bban) = compact.split_at(4);
    let remainder = bban.iter().chain(head).fold(0u32, |remainder, &byte| {
        if byte.is_ascii_digit() {
            (remainder * 10 + u32::from(byte - b'0')) % 97
        } else {
            (remainder * 100 + u32::from(byte - b'A' + 10)) % 97
        }
    });
    remainder == 1
}

fn bban_ok(format: &[(usize, Class)], bban: &[u8]) -> bool {
    let mut rest = bban;
    for &(count, class) in format {
        if rest.len() < count || !rest[..count].iter().all(|&byte| class.admits(byte)) {
            return false;
        }
        rest = &rest[count..];
    }
    rest.is_empty()
}

/// `_iban_ok`, or None where python-stdnum's national rules must decide.
fn iban_ok(registry: &Registry, compact: &[u8]) -> Option<bool> {
    if !mod97_ok(compact) {
        return Some(false);
    }
    match registry.get(&compact[..2]) {
        Country::Unknown => Some(false),
        Country::Format(format) => Some(bban_ok(format, &compact[4..])),
        Country::Python => None,
    }
}

/// `_check_iban`: the candidate, then (a grouped one may have swallowed a following word)
/// without its last group, and so on, while 15 bytes or more. `Err(())`: Python must decide.
fn check(registry: &Registry, data: &[u8], start: usize, end: usize) -> Result<Option<Hit>, ()> {
    let mut end = end;
    let mut compact = Vec::with_capacity(end - start);
    while end - start >= 15 {
        if isolated(data, start, end, b"") {
            compact.clear();
            compact.extend(data[start..end].iter().filter(|&&byte| byte != b' '));
            match iban_ok(registry, &compact) {
                Some(true) => {
                    return Ok(Some(Hit {
                        detector: IBAN,
                        start,
                        end,
                    }))
                }
                Some(false) => {}
                None => return Err(()),
            }
        }
        match data[start..end].iter().rposition(|&byte| byte == b' ') {
            Some(space) => end = start + space,
            None => break,
        }
    }
    Ok(None)
}

/// How an element's IBAN pass went.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    Done,
    /// A candidate needs python-stdnum's national rules: Python runs this element's whole
    /// pass (the hits pushed for it were taken back).
    Deferred,
}

/// `_confirmed(_IBAN, ..., _check_iban, ...)` over one element: a confirmed hit resumes the
/// search at its end, a rejected candidate just past the next separator after its start.
pub fn pass(registry: &Registry, data: &[u8], index: usize, hits: &mut Vec<(usize, Hit)>) -> Pass {
    let before = hits.len();
    let mut position = 0;
    while let Some((start, end)) = find(data, position) {
        match check(registry, data, start, end) {
            Ok(Some(hit)) => {
                position = hit.end;
                hits.push((index, hit));
            }
            Ok(None) => position = past_next_separator(data, start),
            Err(()) => {
                hits.truncate(before);
                return Pass::Deferred;
            }
        }
    }
    Pass::Done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn german() -> Registry {
        let mut registry = Registry::new();
        registry.set(
            b"DE",
            Country::Format(vec![(8, Class::Digit), (10, Class::Digit)]),
        );
        registry.set(b"BE", Country::Python);
        registry
    }

    fn found(data: &[u8]) -> (Vec<(usize, usize)>, Pass) {
        let mut hits = Vec::new();
        let outcome = pass(&german(), data, 0, &mut hits);
        (
            hits.iter().map(|(_, hit)| (hit.start, hit.end)).collect(),
            outcome,
        )
    }

    #[test]
    fn grouped_and_contiguous_ibans_are_found() {
        assert_eq!(
            found(b"pay DE89 3704 0044 0532 0130 00 now"),
            (vec![(4, 31)], Pass::Done)
        );
        assert_eq!(
            found(b"DE89370400440532013000"),
            (vec![(0, 22)], Pass::Done)
        );
    }

    #[test]
    fn a_swallowed_word_is_dropped_and_a_bad_check_is_not_found() {
        assert_eq!(
            found(b"DE89 3704 0044 0532 0130 00 ABCD"),
            (vec![(0, 27)], Pass::Done)
        );
        assert_eq!(found(b"DE88370400440532013000"), (vec![], Pass::Done));
        assert_eq!(found(b"xDE89370400440532013000"), (vec![], Pass::Done));
    }

    #[test]
    fn national_rules_send_the_element_back() {
        assert_eq!(
            found(b"DE89370400440532013000 BE68539007547034"),
            (vec![], Pass::Deferred)
        );
        // A failing mod 97 needs no national rule.
        assert_eq!(found(b"BE68539007547035"), (vec![], Pass::Done));
    }
}
