//! Cards, US SSNs and US phone numbers: `patterns._DIGIT_LED` and `_check_digit_led`.
//!
//! The regex is a leftmost-first alternation; `find` tries the same alternatives in the
//! same order, each greedy quantifier taking as much as it can (none of them is followed
//! by anything it could give back to).

use crate::bytes::{
    at, digit_at, digit_run, digit_run_end, digits_at, find_byte, is_digit, isolated,
    with_country_code,
};
use crate::rules::{is_card, luhn_ok, nanp_ok, ssn_ok};
use crate::scan::{Candidate, Hit, Wanted, CREDIT_CARD, PHONE, US_SSN};
use crate::thousands;

pub enum Kind {
    /// `tail`: where an optional fifth group of a 4-4-4-4 card starts, if it matched one.
    Card {
        tail: Option<usize>,
    },
    Ssn,
    UsPhone,
    /// Three digits and three groups of three after one separator (`thousands::card`).
    Thousands,
}

/// The leftmost candidate starting at or after `from`.
pub fn find(data: &[u8], from: usize) -> Option<Candidate<Kind>> {
    let mut start = from;
    while start + 9 <= data.len() {
        start = find_byte(data, start, |byte| byte.is_ascii_digit())?;
        if start + 9 > data.len() {
            return None;
        }
        // Every form starts with three digits: a non-digit among them rules out every start
        // up to it.
        if let Some(gap) = (0..3).find(|&offset| !is_digit(data[start + offset])) {
            start += gap + 1;
            continue;
        }
        if let Some((end, kind)) = match_at(data, start) {
            return Some(Candidate { start, end, kind });
        }
        start += 1;
    }
    None
}

fn match_at(data: &[u8], p: usize) -> Option<(usize, Kind)> {
    if !digits_at(data, p, 3) {
        return None;
    }
    if digit_at(data, p + 3) {
        // 13-19 contiguous digits.
        let run = digit_run(data, p + 4, 15);
        if run >= 9 {
            return Some((p + 4 + run, Kind::Card { tail: None }));
        }
        if let Some(separator @ (b' ' | b'\t' | b'-')) = at(data, p + 4) {
            let same = |index: usize| at(data, index) == Some(separator);
            // 4-4-4-4, and up to three more digits after one more separator.
            if digits_at(data, p + 5, 4)
                && same(p + 9)
                && digits_at(data, p + 10, 4)
                && same(p + 14)
                && digits_at(data, p + 15, 4)
            {
                if same(p + 19) {
                    let tail = digit_run(data, p + 20, 3);
                    if tail >= 1 {
                        return Some((p + 20 + tail, Kind::Card { tail: Some(p + 19) }));
                    }
                }
                return Some((p + 19, Kind::Card { tail: None }));
            }
            // 4-6-5 (Amex), 4-6-4 (Diners).
            if digits_at(data, p + 5, 6) && same(p + 11) {
                let last = digit_run(data, p + 12, 5);
                if last >= 4 {
                    return Some((p + 12 + last, Kind::Card { tail: None }));
                }
            }
        }
    }
    let separator = at(data, p + 3);
    if let Some(separator @ (b'-' | b' ' | b'\t')) = separator {
        if digits_at(data, p + 4, 2)
            && at(data, p + 6) == Some(separator)
            && digits_at(data, p + 7, 4)
        {
            return Some((p + 11, Kind::Ssn));
        }
    }
    if let Some(separator @ (b'-' | b'.')) = separator {
        if digits_at(data, p + 4, 3)
            && at(data, p + 7) == Some(separator)
            && digits_at(data, p + 8, 4)
        {
            return Some((p + 12, Kind::UsPhone));
        }
    }
    if let Some(separator @ (b',' | b'.' | b'\'' | b' ' | b'_' | b'\t')) = separator {
        if digits_at(data, p + 4, 3) && more_groups(data, p + 7, separator) {
            return Some((p + 15, Kind::Thousands));
        }
    }
    None
}

/// Two more groups of three digits from `from`, each after `separator`. Not inlined: in the
/// loop of `find` it costs the common case (no such group) more than the call.
#[inline(never)]
fn more_groups(data: &[u8], from: usize, separator: u8) -> bool {
    let group = |at_separator: usize| {
        at(data, at_separator) == Some(separator) && digits_at(data, at_separator + 1, 3)
    };
    group(from) && group(from + 4)
}

/// A card candidate that starts with `0`: zero-padded to a fixed width (a numeric column
/// written out), read past its zeros; a contiguous one is the whole run of digits, however
/// many zeros pad it.
#[inline(never)]
fn padded_card(data: &[u8], start: usize, end: usize, tail: Option<usize>) -> Option<Hit> {
    let mut ends = [Some(end), tail];
    if is_digit(data[start + 4]) {
        ends = [Some(digit_run_end(data, end)), None];
    }
    for card_end in ends.into_iter().flatten() {
        if !isolated(data, start, card_end, b"-.") {
            continue;
        }
        let number: Vec<u8> = data[start..card_end]
            .iter()
            .copied()
            .filter(|&byte| byte != b' ' && byte != b'\t' && byte != b'-')
            .skip_while(|&digit| digit == b'0')
            .collect();
        if is_card(&number) {
            return Some(Hit {
                detector: CREDIT_CARD,
                start,
                end: card_end,
            });
        }
    }
    None
}

/// `_check_digit_led`.
pub fn check(data: &[u8], candidate: &Candidate<Kind>, wanted: Wanted) -> Option<Hit> {
    let (start, end) = (candidate.start, candidate.end);
    match candidate.kind {
        Kind::Card { tail } => {
            if !wanted.has(CREDIT_CARD) {
                return None;
            }
            if data[start] == b'0' {
                return padded_card(data, start, end, tail);
            }
            if !(b'2'..=b'6').contains(&data[start]) {
                return None;
            }
            // "4111 1111 1111 1111 10:30": the optional fifth group may belong to what follows.
            let ends = [Some(end), tail];
            for card_end in ends.into_iter().flatten() {
                if !isolated(data, start, card_end, b"-.") {
                    continue;
                }
                let digits = data[start..card_end]
                    .iter()
                    .copied()
                    .filter(|&byte| byte != b' ' && byte != b'\t' && byte != b'-');
                if luhn_ok(digits) {
                    return Some(Hit {
                        detector: CREDIT_CARD,
                        start,
                        end: card_end,
                    });
                }
            }
            None
        }
        Kind::Thousands => wanted
            .has(CREDIT_CARD)
            .then(|| thousands::card(data, start))
            .flatten(),
        Kind::Ssn => (wanted.has(US_SSN)
            && isolated(data, start, end, b"-.")
            && ssn_ok(
                &data[start..start + 3],
                &data[start + 4..start + 6],
                &data[start + 7..end],
            ))
        .then_some(Hit {
            detector: US_SSN,
            start,
            end,
        }),
        Kind::UsPhone => {
            if !wanted.has(PHONE) || !nanp_ok(&data[start..start + 3], &data[start + 4..start + 7])
            {
                return None;
            }
            let start = with_country_code(data, start);
            isolated(data, start, end, b"-.").then_some(Hit {
                detector: PHONE,
                start,
                end,
            })
        }
    }
}
