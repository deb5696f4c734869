//! Cards written as floats: `patterns._float_cards` and `_integer_part`, token for token.

use crate::bytes::{digit_run_end, find_byte, is_digit, isolated};
use crate::rules::is_card as card_number;
use crate::scan::{Hit, CREDIT_CARD};

/// The longest exponent read (`_FLOAT_EXPONENT_DIGITS`, leading zeros aside).
const EXPONENT_DIGITS: usize = 4;

/// `_FLOAT_LEAD.search(data, from)`: a run of digits not preceded by a digit and followed
/// by `.`, `e` or `E`; its start and where the run ends (at that byte).
fn float_lead(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut start = from;
    while start < data.len() {
        start = find_byte(data, start, is_digit)?;
        if start > 0 && is_digit(data[start - 1]) {
            start = digit_run_end(data, start);
            continue;
        }
        let end = digit_run_end(data, start);
        if matches!(data.get(end), Some(b'.' | b'e' | b'E')) {
            return Some((start, end));
        }
        start = end;
    }
    None
}

/// `_float_cards`: every card written as a float (its exact integer part, or its whole value
/// parsed as a double), in the order of the tokens.
pub fn float_cards(data: &[u8], index: usize, hits: &mut Vec<(usize, Hit)>) {
    let mut position = 0;
    while let Some((start, int_end)) = float_lead(data, position) {
        let mut end = int_end;
        let mut frac_end = int_end;
        if data[int_end] == b'.' {
            frac_end = digit_run_end(data, int_end + 1);
            end = frac_end;
        }
        let mut exponent: &[u8] = b"";
        if matches!(data.get(end), Some(b'e' | b'E')) {
            let sign = end + 1 + usize::from(matches!(data.get(end + 1), Some(b'+' | b'-')));
            let exponent_end = digit_run_end(data, sign);
            if exponent_end > sign {
                exponent = &data[end + 1..exponent_end];
                end = exponent_end;
            }
        }
        if (frac_end == int_end + 1 && exponent.is_empty()) || end == int_end {
            position = int_end; // "12." or "12e": not a float
            continue;
        }
        position = end;
        let fraction: &[u8] = if frac_end > int_end {
            &data[int_end + 1..frac_end]
        } else {
            b""
        };
        if !may_reach_a_card(&data[start..int_end], exponent) {
            continue; // most decimals in prose ("3.5", "v2.1"): no parse
        }
        let exact = integer_part(&data[start..int_end], fraction, exponent);
        if (is_card(exact.as_deref()) || is_card(parsed_whole(&data[start..end]).as_deref()))
            && isolated(data, start, end, b"-.")
        {
            hits.push((
                index,
                Hit {
                    detector: CREDIT_CARD,
                    start,
                    end,
                },
            ));
        }
    }
}

/// Whether the token's value may reach 10^12 (a card has 13 digits or more), read either way:
/// it is below 10^(L + E), L its integer digits past leading zeros, E its exponent. A
/// necessary condition only, so Python's reference, which has no such shortcut, finds the same.
fn may_reach_a_card(integer: &[u8], exponent: &[u8]) -> bool {
    let length = integer.iter().skip_while(|&&digit| digit == b'0').count() as i64;
    let negative = exponent.first() == Some(&b'-');
    let digits: Vec<u8> = exponent
        .iter()
        .copied()
        .filter(u8::is_ascii_digit)
        .skip_while(|&digit| digit == b'0')
        .collect();
    if digits.len() > 6 {
        return !negative; // a huge exponent: a parse may still read anything positive
    }
    let value = digits
        .iter()
        .fold(0i64, |total, &digit| total * 10 + i64::from(digit - b'0'));
    length + if negative { -value } else { value } >= 13
}

/// `_is_card`.
fn is_card(number: Option<&[u8]>) -> bool {
    number.is_some_and(card_number)
}

/// `_parsed_whole`: the whole number below 2**64 a correctly rounded double parse reads the
/// token as (`str::parse::<f64>` rounds as Python's `float` does).
fn parsed_whole(token: &[u8]) -> Option<Vec<u8>> {
    let value: f64 = std::str::from_utf8(token).ok()?.parse().ok()?;
    if value.is_finite() && value.fract() == 0.0 && value < 18_446_744_073_709_551_616.0 {
        // Whole, non-negative (the token has no sign) and below 2**64: exact as a u64.
        return Some((value as u64).to_string().into_bytes());
    }
    None
}

/// `_integer_part`: the digits of the integer part of `integer fraction` x
/// 10^(`exponent` - len(`fraction`)) when it has 1-19 digits (exact, no double rounding).
fn integer_part(integer: &[u8], fraction: &[u8], exponent: &[u8]) -> Option<Vec<u8>> {
    let negative = exponent.first() == Some(&b'-');
    let unsigned = exponent
        .iter()
        .position(|&byte| byte != b'+' && byte != b'-')
        .map_or(&exponent[exponent.len()..], |at| &exponent[at..]);
    let magnitude = unsigned
        .iter()
        .position(|&byte| byte != b'0')
        .map_or(&unsigned[unsigned.len()..], |at| &unsigned[at..]);
    if magnitude.len() > EXPONENT_DIGITS {
        return None;
    }
    let value = magnitude
        .iter()
        .fold(0i64, |total, &digit| total * 10 + i64::from(digit - b'0'));
    let shift = if negative { -value } else { value } - fraction.len() as i64;
    let mantissa: Vec<u8> = integer.iter().chain(fraction).copied().collect();
    let first = mantissa.iter().position(|&digit| digit != b'0')?;
    let significant = &mantissa[first..];
    if shift >= 0 {
        let zeros = shift as usize;
        if significant.len() + zeros > 19 {
            return None;
        }
        let mut digits = significant.to_vec();
        digits.resize(significant.len() + zeros, b'0');
        return Some(digits);
    }
    let kept = significant.len() as i64 + shift;
    if !(1..=19).contains(&kept) {
        return None; // below 1, or too long
    }
    Some(significant[..kept as usize].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(data: &[u8]) -> Vec<(usize, usize)> {
        let mut hits = Vec::new();
        float_cards(data, 0, &mut hits);
        hits.iter().map(|(_, hit)| (hit.start, hit.end)).collect()
    }

    #[test]
    fn cards_written_as_floats_are_found() {
        assert_eq!(found(b"4111111111111111.0"), [(0, 18)]);
        assert_eq!(found(b"[4.111111111111111e15]"), [(1, 21)]);
        assert_eq!(found(b"4.111111111111111E+15"), [(0, 21)]);
        assert_eq!(found(b"41111111111111110e-1"), [(0, 20)]);
        assert_eq!(found(b"0.4111111111111111e16"), [(0, 21)]);
        assert_eq!(found(b"card 4111111111111111.000 ok"), [(5, 25)]);
        // Rounded to the card when parsed as a double.
        assert_eq!(found(b"4111111111111111.1"), [(0, 18)]);
        assert_eq!(found(b"4.1111111111111109e15"), [(0, 21)]);
        // A fraction: the integer part is the card.
        assert_eq!(found(b"4111111111111111.7"), [(0, 18)]);
        assert_eq!(found(b"total 4111111111111111.25e0 due"), [(6, 27)]);
        assert_eq!(found(b"0004111111111111111.5"), [(0, 21)]);
    }

    #[test]
    fn other_numbers_are_not() {
        for text in [
            &b"4111111111111111"[..],
            b"4111111111111111.",
            b"4111111111111111e",
            b"4111111111111112.7",
            b"4111111111111111.5e-1",
            b"4111111111111111.0.1",
            b"x4111111111111111.0",
            b"1e99999",
            b"4.1e15",
            b"1.2.3",
        ] {
            assert!(found(text).is_empty(), "{}", String::from_utf8_lossy(text));
        }
    }
}
